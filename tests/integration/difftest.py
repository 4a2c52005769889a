"""Scaffolding of the differential tests (test_protocol_diff.py, test_meta.py,
test_binary.py): the same raw byte streams are sent once to one direct memcached and
once through the shim over the cluster, and the normalised replies must be equal.

A raw client of clients/ (mcraw.py, metaraw.py, binclient.py) serves both sides with
the same code: imported here for the direct server, run as a script by /usr/bin/python3
under LD_PRELOAD for the shim. Each case runs on one fresh connection after every
server was flushed.

A test file keeps its cases and its normalisation: it subclasses DiffTest, names its
client (script and exchange function) and normalize(), and adds its CASES with
add_cases(). A case is (name, steps, options); options: trickle=N (write N bytes at a
time), shim=[replies] for a documented difference, ring=[keys] that must be on their
ring server (only there) afterwards, absent=[keys] on no server, ring_b=[keys of any
bytes] as ring (checked with meta base64 reads).
"""
import base64
import json
import os

import harness
import metaraw  # noqa: E402 (clients/, put on sys.path by harness)


def S(data, eof=False):
    """A step: its bytes; with eof, the reply is read until the peer closes."""
    return {"data": data, "eof": eof}


def EOF(data):
    return S(data, eof=True)


def short(b, n):
    """b, or its first and last n/2 bytes around a count of the bytes left out."""
    if len(b) <= n:
        return b
    return b[:n // 2] + b"...<%d bytes>..." % (len(b) - n) + b[-n // 2:]


def run_script(script, addr, env, steps, timeout, trickle=0, limit=60):
    """Runs clients/<script> (the raw client as a script) on addr under env with the
    steps; returns its JSON "replies" (the script's own encoding). limit: seconds the
    process may take."""
    req = {"steps": [{"data": base64.b64encode(s["data"]).decode(), "eof": s.get("eof", False)} for s in steps],
           "timeout": timeout, "trickle": trickle}
    res = harness.run_json([harness.PY, os.path.join(harness.CLIENTS, script), addr], env, timeout=limit,
                           input=json.dumps(req).encode())
    return res["replies"]


class AnyKeyChecks:
    """Placement checks for keys of any bytes (read with meta base64 on every server)."""

    def holders(self, keys):
        """{key: [indices of the servers holding it]} for keys of any bytes."""
        res = {k: [] for k in keys}
        for i, m in enumerate(self.cluster.nodes):
            if m.proc is None:
                continue
            for k in metaraw.probe(m.host, m.port, keys, timeout=harness.scaled(2)):
                res[k].append(i)
        return res

    def owners_b(self, keys):
        """Ring owners of keys of any bytes. mcshim_ring reads one key per line and
        answers key<TAB>index, so keys with a TAB, CR or LF go to the reference ring
        (the two agree: test_ketama_nutcracker.py)."""
        if harness.DIRECT:
            return [0] * len(keys)
        odd = [k for k in keys if any(c in k for c in b"\t\r\n")]
        plain = [k for k in keys if k not in odd]
        owner = dict(zip(odd, harness.ring_owner_ref(self.cluster.servers, odd)))
        owner.update(zip(plain, harness.ring_owner(self.cluster.servers, plain) if plain else []))
        return [owner[k] for k in keys]

    def assert_on_ring_b(self, keys):
        found = self.holders(keys)
        for k, o in zip(keys, self.owners_b(keys)):
            self.assertEqual(found[k], [o], "key %r: on servers %s, ring says %d" % (k, found[k], o))


class DiffTest(AnyKeyChecks, harness.ClusterTest):
    """A direct memcached next to the cluster, and the comparison of one case.

    Subclasses set script (the client's file name in clients/), and exchange (its
    function, for the direct server) and normalize(reply) as static methods. decode()
    turns a reply of the script's JSON into what exchange returns; broken lists
    (marker, why) pairs a normalised direct reply must not hold; shown is how many
    bytes of a differing reply the failure message shows."""

    script = None
    broken = ((b"<TIMEOUT>", "direct memcached timed out: the case itself is broken"),)
    shown = 600

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.direct = harness.Memcached()

    @classmethod
    def tearDownClass(cls):
        cls.direct.stop()
        super().tearDownClass()

    @staticmethod
    def exchange(addr, steps, timeout, trickle):
        raise NotImplementedError

    @staticmethod
    def normalize(reply):
        raise NotImplementedError

    @staticmethod
    def decode(reply):
        return base64.b64decode(reply)

    def run_direct(self, steps, trickle):
        self.direct.flush()
        return self.exchange(self.direct.addr, steps, timeout=harness.scaled(5), trickle=trickle)

    def run_shim(self, steps, trickle):
        self.cluster.flush()
        replies = run_script(self.script, self.intercept, self.env(), steps, harness.scaled(5), trickle)
        return [self.decode(r) for r in replies]

    def assert_cases(self, cases, minimum):
        """At least minimum cases, their names distinct."""
        self.assertGreaterEqual(len(cases), minimum)
        self.assertEqual(len(set(c[0] for c in cases)), len(cases))

    def check_direct(self, reply):
        """A normalised direct reply is sound (else the case itself is broken)."""
        for mark, why in self.broken:
            self.assertNotIn(mark, reply, why)

    def count_message(self, want, got):
        return "replies per step"

    def describe(self, want, got):
        """The failure text for one step whose normalised replies differ."""
        return " direct: %r\n shim:   %r" % (short(want, self.shown), short(got, self.shown))

    def check_case(self, name, steps, opts):
        trickle = opts.get("trickle", 0)
        want = [self.normalize(r) for r in self.run_direct(steps, trickle)]
        for r in want:
            self.check_direct(r)
        got = [self.normalize(r) for r in self.run_shim(steps, trickle)]
        if "shim" in opts and not harness.DIRECT:
            # Documented difference: memcached's reply must still be what the comment says
            # it is (else the case is stale), and the shim's is the documented one.
            self.assertNotEqual(want, opts["shim"], "memcached now agrees with the shim: drop the exception")
            want = opts["shim"]
        self.assertEqual(len(got), len(want), self.count_message(want, got))
        for i, (g, w) in enumerate(zip(got, want)):
            if g != w:
                self.fail("%s step %d differs\n%s" % (name, i, self.describe(w, g)))
        if opts.get("ring"):
            self.assert_on_ring(opts["ring"])
        if opts.get("absent"):
            self.assert_absent(opts["absent"])
        if opts.get("ring_b"):
            self.assert_on_ring_b(opts["ring_b"])


def _make(name, steps, opts):
    def test(self):
        self.check_case(name, steps, opts)
    test.__name__ = "test_%s" % name
    return test


def add_cases(cls, cases):
    """One test_<name> method of cls per case."""
    for name, steps, opts in cases:
        setattr(cls, "test_%s" % name, _make(name, steps, opts))
