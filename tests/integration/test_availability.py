"""Replication, failover, warm-up and rejoin (issue 3), with real servers and clients.

Topology unless a test says otherwise: nodes 0-3 are the primaries (MCSHIM_SERVERS),
nodes 4-5 the backup pool (MCSHIM_BACKUP, its own ketama ring), MCSHIM_REPLICAS=1, so
each key has one copy: its owner on the backup ring. Node VICTIM is the primary that
gets killed (-9), stopped (SIGSTOP), restarted empty, or partitioned: for a partition
it is listed in MCSHIM_SERVERS at a cutproxy.CutProxy's port, so it keeps its data and
identity while the shim cannot reach it.

What is checked (the contract: docs/availability.md, docs/configuration.md, docs/stats.md):
  - under load (clients/loadgen.py: pymemcache, pylibmc, under LD_PRELOAD) a killed or
    stopped primary costs the application no error, no miss, no lost acknowledged write,
    and a stopped one at most one slow request per connection, each bounded by
    MCSHIM_TIMEOUT_MS; the shim logs a handful of lines, not one per request;
  - a restarted (empty) primary is warmed from its copies: hits are added back with
    their flags and remaining TTL; with MCSHIM_WARMUP_S=0 its keys miss;
  - a partitioned primary that comes back has the keys written meanwhile deleted
    (replay) or is flushed (MCSHIM_REJOIN=flush, or the rejoin log overflowed):
    no stale read ever;
  - MCSHIM_REPLICAS=2: each key on its owner and the next distinct server clockwise;
  - every write command keeps the invariant "a copy holds nothing the primary would
    not return", including refused writes against planted stale copies, in async
    and sync mode;
  - MCSHIM_EJECT=1 without copies: a down server leaves the ring, comes back later.
The self-tests at the top (cut proxy, load generator, no shim) also run with
MCSHIM_TEST_DIRECT=1. Every test restores its servers in cleanup and in setUp.
"""
import json
import os
import re
import select
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

import cutproxy
import harness

TIMEOUT_MS = 300
RETRY_MS = 300
SLACK = 0.4           # seconds over MCSHIM_TIMEOUT_MS for a reply (scaled)
NPRIMARY = 4
NBACKUP = 2
VICTIM = 1
LOADGEN = os.path.join(harness.CLIENTS, "loadgen.py")
LOAD_SECONDS = 4.0
LOAD_KEYS = 300
LOAD_CONNS = 4
KILL_AT = 1.2         # seconds into the load loop
SETTLE = 2.0          # bound for an async copy to arrive (scaled)
QUIET = 0.2           # extra wait after it arrived, to catch a late wrong write (scaled)
LOG_LINES_MAX = 5     # shim stderr lines about the victim in one incident


def bound():
    """Longest a single request may take while a server fails."""
    return harness.scaled(TIMEOUT_MS / 1000.0 + SLACK)


def recovery_bound():
    """Longest for a probe to notice a server is back: RETRY_MS, one probe, slack."""
    return (RETRY_MS + TIMEOUT_MS) / 1000.0 + 3.0


def meta_get(node, key):
    """(flags, ttl, value) of key read directly on node (`mg <key> t f v`), or None.
    ttl is -1 for an item that never expires."""
    key = key.encode() if isinstance(key, str) else key
    with socket.create_connection((node.host, node.port), timeout=harness.scaled(2.0)) as s:
        s.sendall(b"mg %s t f v\r\n" % key)
        buf = b""
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                raise AssertionError("mg %r on %s: connection closed after %r" % (key, node.addr, buf))
            buf += chunk
            eol = buf.find(b"\r\n")
            if eol < 0:
                continue
            head = buf[:eol].split()
            if head[0] == b"EN":
                return None
            if head[0] != b"VA":
                raise AssertionError("mg %r on %s: %r" % (key, node.addr, buf))
            size = int(head[1])
            if len(buf) < eol + 2 + size + 2:
                continue
            fields = {t[:1]: t[1:] for t in head[2:]}
            return int(fields[b"f"]), int(fields[b"t"]), buf[eol + 2:eol + 2 + size]


def parse_stats(reply):
    stats = {}
    for line in reply.split(b"\r\n"):
        if line.startswith(b"STAT "):
            parts = line.decode(errors="replace").split(" ", 2)
            if len(parts) == 3:
                stats[parts[1]] = parts[2]
    return stats


def counter(stats, name):
    """A replication counter: global `name`, else the sum of `server:<i>:name`; None if
    the shim reports neither."""
    if name in stats:
        return int(stats[name])
    per = [int(v) for k, v in stats.items() if re.fullmatch(r"server:\d+:" + re.escape(name), k)]
    return sum(per) if per else None


# ---------------------------------------------------------------------------------------
# Self-tests: the tools the availability tests rely on, without the shim.

class CutProxySelfTest(unittest.TestCase):
    """cutproxy.CutProxy in front of one real memcached."""

    def setUp(self):
        self.mc = harness.Memcached()
        self.addCleanup(self.mc.stop)
        self.proxy = cutproxy.CutProxy(self.mc.host, self.mc.port)
        self.addCleanup(self.proxy.close)

    def connect(self):
        s = socket.create_connection((self.proxy.host, self.proxy.port), timeout=harness.scaled(2.0))
        self.addCleanup(s.close)
        return s

    def exchange(self, s, data, until, timeout=2.0):
        """Sends data, reads until `until` ends the buffer. Returns (bytes, status)."""
        s.settimeout(harness.scaled(timeout))
        s.sendall(data)
        out = b""
        try:
            while not out.endswith(until):
                chunk = s.recv(1 << 20)
                if not chunk:
                    return out, "eof"
                out += chunk
        except socket.timeout:
            return out, "timeout"
        except ConnectionResetError:
            return out, "reset"
        return out, None

    def read_eof(self, s, timeout=2.0):
        s.settimeout(harness.scaled(timeout))
        try:
            while True:
                if not s.recv(65536):
                    return "eof"
        except socket.timeout:
            return "timeout"
        except ConnectionResetError:
            return "reset"

    def test_forward_cut_heal(self):
        a = self.connect()
        out, st = self.exchange(a, b"set cp:a 7 0 3\r\nabc\r\n", b"\r\n")
        self.assertEqual((out, st), (b"STORED\r\n", None))
        out, st = self.exchange(a, b"get cp:a\r\n", b"END\r\n")
        self.assertEqual(out, b"VALUE cp:a 7 3\r\nabc\r\nEND\r\n")
        pid = self.mc.stats()["pid"]

        self.proxy.cut()
        # an existing connection goes silent both ways: no reply, the request never arrives
        out, st = self.exchange(a, b"set cp:b 0 0 3\r\nnew\r\n", b"\r\n", timeout=0.5)
        self.assertEqual((out, st), (b"", "timeout"))
        # a new connection is accepted but nothing is forwarded
        b = self.connect()
        out, st = self.exchange(b, b"version\r\n", b"\r\n", timeout=0.5)
        self.assertEqual((out, st), (b"", "timeout"))
        self.assertIsNone(self.mc.get_item("cp:b"), "a write crossed the cut")
        self.assertEqual(self.mc.get_item("cp:a")[:2], (7, b"abc"), "the server kept its data")
        st = self.proxy.stats()
        self.assertTrue(st["cut"])
        self.assertEqual((st["open_pipes"], st["open_held"]), (1, 1), st)

        self.proxy.heal()
        # every connection open at heal time is closed ...
        self.assertIn(self.read_eof(a), ("eof", "reset"))
        self.assertIn(self.read_eof(b), ("eof", "reset"))
        self.assertIsNone(self.mc.get_item("cp:b"), "bytes held during the cut were delivered at heal")
        # ... and new connections reach the same instance, data intact
        c = self.connect()
        out, st = self.exchange(c, b"get cp:a\r\n", b"END\r\n")
        self.assertEqual(out, b"VALUE cp:a 7 3\r\nabc\r\nEND\r\n")
        self.assertEqual(self.mc.stats()["pid"], pid)
        st = self.proxy.stats()
        self.assertEqual((st["closed_by_heal"], st["open_pipes"], st["open_held"], st["cut"]), (2, 1, 0, False), st)

    def test_large_values_and_pipelines(self):
        s = self.connect()
        big = os.urandom(700000)
        out, st = self.exchange(s, b"set cp:big 0 0 %d\r\n%s\r\n" % (len(big), big), b"\r\n", timeout=5)
        self.assertEqual((out, st), (b"STORED\r\n", None))
        want = b"VALUE cp:big 0 %d\r\n%s\r\nEND\r\n" % (len(big), big)
        out, st = self.exchange(s, b"get cp:big\r\n" * 5, want * 5, timeout=5)
        self.assertEqual((out == want * 5, st), (True, None))

    def test_upstream_down_closes_client(self):
        self.mc.stop()
        s = self.connect()
        self.assertIn(self.read_eof(s), ("eof", "reset"))
        self.assertEqual(self.proxy.stats()["upstream_failures"], 1)
        self.mc.start()
        out, _ = self.exchange(self.connect(), b"version\r\n", b"\r\n")
        self.assertTrue(out.startswith(b"VERSION "), out)


class LoadgenSelfTest(unittest.TestCase):
    """clients/loadgen.py straight against one memcached (no shim): a clean run reports
    nothing wrong, and the verifier notices planted misses and wrong values."""

    @classmethod
    def setUpClass(cls):
        cls.mc = harness.Memcached()
        cls.tmp = tempfile.mkdtemp(prefix="mcshim-loadgen-")

    @classmethod
    def tearDownClass(cls):
        cls.mc.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def run_direct(self, client):
        self.mc.flush()
        report = harness.run_json([harness.PY, LOADGEN, self.mc.addr, "--client", client, "--seconds", "1.5",
                                   "--keys", "200", "--prefix", "self", "--slow-ms", "1000"],
                                  harness.plain_env(), timeout=30)
        for k in ("errors", "misses", "stale", "stuck_threads"):
            self.assertEqual(report[k], 0, "%s: %s" % (k, report))
        self.assertGreater(report["sets"], 50)
        self.assertGreater(report["gets"], 50)
        self.assertEqual(len(report["acked"]), 200)
        self.assertEqual(len(report["slow"]), LOAD_CONNS)
        # the server holds exactly the acknowledged values
        got = self.mc.get_many(list(report["acked"]))
        self.assertEqual({k: v[1].decode() for k, v in got.items()}, report["acked"])
        # the verifier reads them back, and notices a wrong value and a miss
        path = os.path.join(self.tmp, "acked-%s.json" % client)
        with open(path, "w") as f:
            json.dump(report["acked"], f)
        ok = harness.run_json([harness.PY, LOADGEN, self.mc.addr, "--client", client, "--verify", path],
                              harness.plain_env(), timeout=30)
        self.assertEqual((ok["checked"], ok["misses"], ok["wrong"], ok["errors"]), (200, 0, 0, 0), ok)
        keys = sorted(report["acked"])
        self.mc.set(keys[3], b"planted")
        self.mc.request(b"delete %s\r\n" % keys[7].encode(), until=b"\r\n")
        bad = harness.run_json([harness.PY, LOADGEN, self.mc.addr, "--client", client, "--verify", path],
                               harness.plain_env(), timeout=30)
        self.assertEqual((bad["misses"], bad["wrong"]), (1, 1), bad)
        self.assertEqual(bad["miss_keys"], [keys[7]])
        self.assertEqual(bad["wrong_samples"][0][:2], [keys[3], "planted"])

    def test_pymemcache_direct(self):
        self.run_direct("pymemcache")

    def test_pylibmc_direct(self):
        self.run_direct("pylibmc")

    def test_killed_server_is_reported_as_errors(self):
        # the load generator must see what a bare server failure looks like to a client
        mc = harness.Memcached()
        self.addCleanup(mc.stop)
        p = subprocess.Popen([harness.PY, LOADGEN, mc.addr, "--seconds", "1.5", "--keys", "40", "--conns", "2",
                              "--timeout", "0.3"], env=harness.plain_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        self.assertEqual(p.stdout.readline().strip(), b"READY")
        time.sleep(0.3)
        mc.stop()
        out, err = p.communicate(timeout=harness.scaled(20))
        report = json.loads(out.decode().strip().splitlines()[-1])
        self.assertGreater(report["errors"], 0, report)
        self.assertTrue(report["error_messages"])


# ---------------------------------------------------------------------------------------
# The availability tests (shim only).

class AvailabilityBase(unittest.TestCase):
    """Six servers for the file: primaries 0-3, backups 4-5 (see the module comment)."""

    @classmethod
    def setUpClass(cls):
        if harness.DIRECT:
            raise unittest.SkipTest("shim-only test (MCSHIM_TEST_DIRECT=1)")
        if not os.path.exists(harness.LIB):
            raise AssertionError("%s is not built (make all, or set MCSHIM_BUILD)" % harness.LIB)
        cls.cluster = harness.Cluster(NPRIMARY + NBACKUP)
        cls.intercept_port = harness.free_port()
        cls.intercept = "127.0.0.1:%d" % cls.intercept_port
        cls.tmp = tempfile.mkdtemp(prefix="mcshim-avail-")

    @classmethod
    def tearDownClass(cls):
        cls.cluster.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.cluster.ensure_running()
        self.cluster.flush()
        self.nodes = self.cluster.nodes
        self.victim = self.nodes[VICTIM]
        self.addCleanup(self.cluster.ensure_running)  # runs last: restart / resume

    # -- topology --------------------------------------------------------------------
    def primaries(self, proxy=None):
        """MCSHIM_SERVERS: nodes 0-3, the victim at proxy's address if given."""
        addrs = [m.addr for m in self.nodes[:NPRIMARY]]
        if proxy is not None:
            addrs[VICTIM] = proxy.addr
        return ",".join(addrs)

    def backups(self):
        return ",".join(m.addr for m in self.nodes[NPRIMARY:])

    def env(self, extra=None, servers=None, backup=True):
        e = {"MCSHIM_TIMEOUT_MS": str(TIMEOUT_MS), "MCSHIM_RETRY_MS": str(RETRY_MS),
             "MCSHIM_BACKUP": self.backups() if backup else None}
        e.update(extra or {})
        return harness.preload_env(servers or self.primaries(), self.intercept, e)

    def primary_of(self, keys, servers=None):
        return harness.ring_owner(servers or self.primaries(), keys)

    def backup_of(self, keys):
        """Node index of each key's copy in the backup pool."""
        return [NPRIMARY + i for i in harness.ring_owner(self.backups(), keys)]

    def keys_of(self, prefix, server, n, servers=None):
        """n keys whose primary is node `server` under servers (default: the primaries)."""
        cands = ["%s:%d" % (prefix, i) for i in range(max(400, 40 * n))]
        mine = [k for k, o in zip(cands, self.primary_of(cands, servers)) if o == server][:n]
        assert len(mine) == n, "not enough keys for server %d" % server
        return mine

    def new_proxy(self):
        """A cut proxy in front of the victim (closed in cleanup)."""
        p = cutproxy.CutProxy(self.victim.host, self.victim.port)
        self.addCleanup(p.close)
        return p

    # -- the shim from a long-lived raw client --------------------------------------------
    def driver(self, env):
        d = harness.Driver(env, self.intercept)

        def close():
            rc, err = d.close()
            self.assertEqual(rc, 0, err[-2000:])
        self.addCleanup(close)
        return d

    def req(self, d, data, kind="line", conn="a", limit=None):
        """One request through the shim; no client-visible error, bounded in time."""
        limit = limit or bound()
        reply, elapsed, err = d.req(data, kind=kind, conn=conn, timeout=limit + 5)
        self.assertIsNone(err, "request %r: %s after %.2fs (got %r)" % (data[:60], err, elapsed, reply))
        self.assertLess(elapsed, limit, "request %r took %.2fs" % (data[:60], elapsed))
        return reply

    def set_many(self, d, items, conn="a"):
        """items: {key: (flags, ttl, value)} set through the shim in one pipeline."""
        data = b"".join(b"set %s %d %d %d\r\n%s\r\n" % (k.encode(), f, t, len(v), v) for k, (f, t, v) in items.items())
        reply = self.req(d, data, kind="line*%d" % len(items), conn=conn, limit=harness.scaled(5.0))
        self.assertEqual(reply, b"STORED\r\n" * len(items))

    def shim_stats(self, d):
        reply, _elapsed, err = d.req(b"stats mcshim\r\n", kind="get", conn="stats", timeout=bound() + 5)
        while err is None and reply.startswith(b"STAT ") and not reply.endswith(b"END\r\n"):
            more, _e, err = d.recv(kind="line", conn="stats", timeout=2.0)
            reply += more or b""
        self.assertIsNone(err, "stats mcshim: %s (%r)" % (err, reply[-200:]))
        self.assertTrue(reply.endswith(b"END\r\n"), reply[-200:])
        return parse_stats(reply)

    def state(self, d, idx):
        return self.shim_stats(d).get("server:%d:state" % idx)

    def wait_state(self, d, idx, states, timeout):
        """Polls `stats mcshim` until server idx is in one of states; fails with the last
        stats otherwise. Returns the stats."""
        states = (states,) if isinstance(states, str) else tuple(states)
        last = {}
        deadline = time.time() + harness.scaled(timeout)
        while True:
            last = self.shim_stats(d)
            if last.get("server:%d:state" % idx) in states:
                return last
            if time.time() > deadline:
                self.fail("server %d never %s within %.1fs; last stats: %s" % (
                    idx, "/".join(states), timeout, {k: v for k, v in last.items() if k.startswith("server:")}))
            time.sleep(0.05)

    def assert_counter(self, stats, name, want):
        got = counter(stats, name)
        self.assertIsNotNone(got, "stats mcshim has no %r" % name)
        self.assertEqual(got, want, "%s: %s" % (name, {k: v for k, v in stats.items() if name in k}))

    def get_values(self, d, keys, conn="a"):
        """{key: (flags, value)} of a multi-get through the shim."""
        reply = self.req(d, b"get " + " ".join(keys).encode() + b"\r\n", kind="get", conn=conn)
        self.assertTrue(reply.endswith(b"END\r\n"), reply[-200:])
        return {k: (f, v) for k, (f, v, _c) in harness.parse_values(reply).items()}

    def assert_reads(self, got, want, what):
        """got/want: {key: (flags, value)}; fails listing each wrong key (got, want)."""
        wrong = {k: (got.get(k), want.get(k)) for k in sorted(set(got) | set(want)) if got.get(k) != want.get(k)}
        if wrong:
            self.fail("%s: %d wrong key(s), key: (got, want): %s" % (what, len(wrong), wrong))

    def get_one(self, d, key, conn="a"):
        return self.get_values(d, [key], conn).get(key)

    def holders(self, key):
        """Indices of the running servers that hold key (asked directly)."""
        return [i for i, _f, _v in self.cluster.locate([key])[key]]

    def victim_log_lines(self, text, addr):
        return [l for l in text.splitlines() if addr in l]

    # -- copies --------------------------------------------------------------------------
    def wait_copies(self, placement, values):
        """Waits (bounded) until each key is on exactly the nodes placement names,
        with values[key] = (flags, value); fails with what is where."""
        keys = list(placement)
        deadline = time.time() + harness.scaled(SETTLE)
        while True:
            found = self.cluster.locate(keys)
            bad = {}
            for k in keys:
                where = sorted(i for i, f, v in found[k] if (f, v) == values[k])
                if where != sorted(placement[k]) or len(found[k]) != len(placement[k]):
                    bad[k] = (placement[k], [(i, f, v[:30]) for i, f, v in found[k]])
            if not bad:
                return
            if time.time() > deadline:
                self.fail("%d keys not (only) on their owner and copies; key: (want nodes, found): %s" % (
                    len(bad), dict(list(bad.items())[:6])))
            time.sleep(0.05)

    # -- the load generator ---------------------------------------------------------------
    def load_run(self, env, client, action, prefix, slow_ms=None):
        """Runs loadgen under the shim; `action()` runs KILL_AT seconds into its loop.
        Returns (report, shim stderr text)."""
        errpath = os.path.join(self.tmp, "%s.stderr" % prefix)
        args = [harness.PY, LOADGEN, self.intercept, "--client", client, "--keys", str(LOAD_KEYS),
                "--conns", str(LOAD_CONNS), "--seconds", str(LOAD_SECONDS), "--prefix", prefix,
                "--pause-ms", "0.5", "--timeout", str(harness.scaled(5.0))]
        if slow_ms is not None:
            args += ["--slow-ms", str(slow_ms)]
        with open(errpath, "wb") as errf:
            p = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=errf)
        self.addCleanup(lambda: p.poll() is None and (p.kill(), p.wait()))
        r, _, _ = select.select([p.stdout], [], [], harness.scaled(20))
        first = p.stdout.readline() if r else b""
        if first.strip() != b"READY":
            p.kill()
            p.wait()
            with open(errpath, "rb") as f:
                tail = f.read()[-2000:].decode(errors="replace")
            self.fail("loadgen did not get ready: %r; stderr: %s" % (first, tail))
        time.sleep(KILL_AT)
        action()
        try:
            out, _ = p.communicate(timeout=harness.scaled(LOAD_SECONDS + 20))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            self.fail("loadgen did not finish")
        with open(errpath, "rb") as f:
            err = f.read().decode(errors="replace")
        lines = out.decode(errors="replace").strip().splitlines()
        self.assertEqual(p.returncode, 0, "loadgen exited %d: %s" % (p.returncode, err[-2000:]))
        self.assertTrue(lines, "loadgen printed no report: %s" % err[-2000:])
        report = json.loads(lines[-1])
        summary = {k: v for k, v in report.items() if k not in ("acked", "slow_samples")}
        summary["error_messages"] = summary["error_messages"][:3]
        print("\n%s: %s" % (prefix, json.dumps(summary)[:1200]))
        return report, err

    def assert_clean_load(self, report):
        self.assertEqual(report["stuck_threads"], 0, "a client thread never returned")
        self.assertEqual(report["errors"], 0, "client-visible errors, first: %s" % report["error_messages"][:5])
        self.assertEqual(report["misses"], 0, "misses of keys written before: %s" % report["miss_keys"][:10])
        self.assertEqual(report["stale"], 0, "stale reads [key, got, possible]: %s" % report["stale_samples"][:5])
        self.assertGreater(report["ops"], 200, "the load barely ran")
        if (report.get("blocking") and report.get("client") == "pymemcache" and not harness.DIRECT
                and os.environ.get("MCSHIM_TEST_FAST_PATH") != "off"):
            # make test's fast-path pass: the load went through the application's own threads
            self.assertGreater(report.get("fast_requests") or 0, report["ops"] // 2,
                               "the fast path did not carry the load")

    def verify_acked(self, env, client, report, name):
        """A fresh client under the shim reads every key: the last acknowledged value."""
        want = {k: v for k, v in report["acked"].items() if k not in report["uncertain"]}
        path = os.path.join(self.tmp, "%s.acked.json" % name)
        with open(path, "w") as f:
            json.dump(want, f)
        res = harness.run_json([harness.PY, LOADGEN, self.intercept, "--client", client, "--verify", path,
                                "--timeout", str(harness.scaled(5.0))], env, timeout=60)
        self.assertEqual((res["errors"], res["misses"], res["wrong"]), (0, 0, 0),
                         "acknowledged writes lost after the run: %s" % res)
        self.assertEqual(res["checked"], len(want), res)

    def assert_few_log_lines(self, err):
        """8. The incident is logged (state changes), in a handful of lines, never one per
        request."""
        lines = self.victim_log_lines(err, self.victim.addr)
        self.assertGreaterEqual(len(lines), 1, "the victim going down was not logged; stderr:\n" + err[-2000:])
        self.assertLessEqual(len(lines), LOG_LINES_MAX, "shim log lines about the victim:\n" + "\n".join(lines[:20]))
        self.assertLessEqual(len(err.splitlines()), 2 * LOG_LINES_MAX, "shim stderr:\n" + err[-3000:])

    def wait_down(self, d, key, timeout):
        """Reads key (a failed server's) through the shim until the server is down; each
        read must succeed (hit from a copy, or miss without copies). Returns the stats."""
        deadline = time.time() + harness.scaled(timeout)
        while True:
            self.get_one(d, key)
            stats = self.shim_stats(d)
            if stats.get("server:%d:state" % VICTIM) == "down":
                return stats
            if time.time() > deadline:
                self.fail("server %d never down; last stats: %s" % (
                    VICTIM, {k: v for k, v in stats.items() if k.startswith("server:")}))
            time.sleep(0.05)


class AvailabilityTest(AvailabilityBase):

    # -- 1. kill -9 under load ---------------------------------------------------------
    def kill9_under_load(self, client):
        env = self.env()
        report, err = self.load_run(env, client, self.victim.stop, "k9%s" % client[:3])
        self.assert_clean_load(report)
        self.verify_acked(env, client, report, "k9%s" % client)
        self.assert_few_log_lines(err)

    def test_kill9_under_load_pymemcache(self):
        self.kill9_under_load("pymemcache")

    def test_kill9_under_load_pylibmc(self):
        self.kill9_under_load("pylibmc")

    # -- 2. SIGSTOP under load ----------------------------------------------------------
    def test_sigstop_under_load(self):
        # A reply timeout marks the server down at once, whatever MCSHIM_FAILURE_LIMIT says:
        # a high limit makes "one timeout per connection" observable (else 2 backend
        # connections timing out together would reach the default limit of 2 anyway).
        env = self.env({"MCSHIM_FAILURE_LIMIT": "5"})
        slow_ms = TIMEOUT_MS / 2.0 * harness.TIME_SCALE
        report, err = self.load_run(env, "pymemcache", self.victim.pause, "stop", slow_ms=slow_ms)
        self.assert_clean_load(report)
        self.assertLessEqual(report["max_latency"], bound(),
                             "slowest request %.3fs (MCSHIM_TIMEOUT_MS=%d)" % (report["max_latency"], TIMEOUT_MS))
        for conn, n in enumerate(report["slow"]):
            self.assertLessEqual(n, 1, "connection %d had %d requests slower than %.0fms (one timeout per "
                                 "connection, not per request): %s" % (conn, n, slow_ms, report["slow_samples"][conn]))
        self.verify_acked(env, "pymemcache", report, "stop")
        self.assert_few_log_lines(err)

    # -- 3. restart and warm-up --------------------------------------------------------
    FLAGS = (0, 1, 42, 65535, 2147483653)
    TTLS = (0, 600, 3600, 86400)

    def warm_items(self):
        """Victim keys with every flags/TTL pair, and a few keys of the others."""
        vkeys = self.keys_of("warm", VICTIM, 12)
        items = {}
        for i, k in enumerate(vkeys):
            items[k] = (self.FLAGS[i % len(self.FLAGS)], self.TTLS[i % len(self.TTLS)], ("w%d-%s" % (i, k)).encode())
        okeys = [k for s in range(NPRIMARY) if s != VICTIM for k in self.keys_of("warm", s, 4)]
        for i, k in enumerate(okeys):
            items[k] = (i, 0, ("o%d" % i).encode())
        return vkeys, okeys, items

    def restart_victim(self, d, vkeys):
        """kill -9 the victim, let the shim see it down, restart it empty (same port)."""
        self.victim.stop()
        self.assertIsNotNone(self.get_one(d, vkeys[0]), "a killed primary's key must be read from its copy")
        self.wait_down(d, vkeys[0], recovery_bound())
        self.victim.start()

    def test_restart_warms_from_copies(self):
        d = self.driver(self.env({"MCSHIM_WARMUP_S": "300"}))
        vkeys, okeys, items = self.warm_items()
        set_at = time.time()
        self.set_many(d, items)
        values = {k: (f, v) for k, (f, t, v) in items.items()}
        backup = dict(zip(items, self.backup_of(list(items))))
        primary = dict(zip(items, self.primary_of(list(items))))
        self.wait_copies({k: [primary[k], backup[k]] for k in items}, values)
        stats = self.shim_stats(d)
        for i, m in enumerate(self.nodes):
            self.assertEqual(stats.get("server:%d:address" % i), m.addr, stats)
            self.assertEqual(stats.get("server:%d:role" % i), "primary" if i < NPRIMARY else "backup", stats)

        self.restart_victim(d, vkeys)
        stats = self.wait_state(d, VICTIM, "warming", recovery_bound())
        self.assert_counter(stats, "restarts", 1)
        # every key hits, right flags and value: half by single gets, the rest in one multi-get
        for k in vkeys[::2]:
            self.assertEqual(self.get_one(d, k), values[k], "key %s of the warming primary" % k)
        rest = vkeys[1::2] + okeys
        got = self.get_values(d, rest)
        self.assert_reads(got, {k: values[k] for k in rest}, "reads while warming")
        # the restarted primary was filled back: same flags, value, remaining TTL
        deadline = time.time() + harness.scaled(SETTLE)
        while True:
            filled = {k: meta_get(self.victim, k) for k in vkeys}
            if all(filled.values()) or time.time() > deadline:
                break
            time.sleep(0.05)
        missing = [k for k, v in filled.items() if v is None]
        self.assertEqual(missing, [], "keys not added back to the warming primary")
        now = time.time()
        for k in vkeys:
            flags, ttl, value = filled[k]
            want_flags, want_ttl, want_value = items[k]
            self.assertEqual((flags, value), (want_flags, want_value), k)
            if want_ttl == 0:
                self.assertEqual(ttl, -1, "key %s had no expiry, filled with ttl %d" % (k, ttl))
            else:
                remaining = want_ttl - (now - set_at)
                self.assertLessEqual(abs(ttl - remaining), 2 + harness.scaled(2.0),
                                     "key %s: ttl %d on the filled primary, about %.0f left" % (k, ttl, remaining))
        stats = self.shim_stats(d)
        self.assert_counter(stats, "warm_fills", len(vkeys))
        # nothing else was put on the restarted primary
        self.assertEqual(sorted(k for k in okeys if self.victim.has(k)), [])

    def test_restart_without_warmup_misses(self):
        d = self.driver(self.env({"MCSHIM_WARMUP_S": "0"}))
        vkeys, okeys, items = self.warm_items()
        self.set_many(d, items)
        values = {k: (f, v) for k, (f, t, v) in items.items()}
        backup = dict(zip(items, self.backup_of(list(items))))
        primary = dict(zip(items, self.primary_of(list(items))))
        self.wait_copies({k: [primary[k], backup[k]] for k in items}, values)
        self.restart_victim(d, vkeys)
        stats = self.wait_state(d, VICTIM, "up", recovery_bound())
        self.assert_counter(stats, "restarts", 1)
        got = self.get_values(d, vkeys)
        self.assert_reads(got, {}, "WARMUP_S=0: the restarted primary's keys miss (no copy consulted)")
        self.assert_reads(self.get_values(d, okeys), {k: values[k] for k in okeys}, "other servers' keys")
        self.assert_counter(self.shim_stats(d), "warm_fills", 0)

    # -- 4. partition and rejoin -------------------------------------------------------
    def partition(self, extra, n_deleted=4, n_overwritten=4, n_untouched=4, first_write=False):
        """Cut the victim off through a proxy, write around it, heal, wait for the rejoin.
        Returns (driver, stats after the rejoin, invalidations_logged during the cut,
        (deleted, overwritten, untouched) keys)."""
        proxy = self.new_proxy()
        servers = self.primaries(proxy)
        env = self.env(extra, servers=servers)
        d = self.driver(env)
        n = n_deleted + n_overwritten + n_untouched
        vkeys = self.keys_of("cut", VICTIM, n, servers)
        deleted, overwritten, untouched = (vkeys[:n_deleted], vkeys[n_deleted:n_deleted + n_overwritten],
                                           vkeys[n_deleted + n_overwritten:])
        okeys = [k for s in range(NPRIMARY) if s != VICTIM for k in self.keys_of("cut", s, 3, servers)]
        items = {k: (3, 0, ("old-" + k).encode()) for k in vkeys + okeys}
        self.set_many(d, items)
        primary = dict(zip(items, self.primary_of(list(items), servers)))
        backup = dict(zip(items, self.backup_of(list(items))))
        self.wait_copies({k: [primary[k], backup[k]] for k in items}, {k: (3, v) for k, (_f, _t, v) in items.items()})
        new = {k: ("new-" + k).encode() for k in overwritten}

        proxy.cut()
        if first_write:
            # the request that runs into the cut is itself a write
            k = overwritten[0]
            self.assertEqual(self.req(d, b"set %s 3 0 %d\r\n%s\r\n" % (k.encode(), len(new[k]), new[k])), b"STORED\r\n")
        else:
            self.assertEqual(self.get_one(d, untouched[0]), (3, items[untouched[0]][2]),
                             "read of a cut-off primary's key must come from its copy")
        self.wait_state(d, VICTIM, "down", recovery_bound())
        for k in deleted:
            self.assertEqual(self.req(d, b"delete %s\r\n" % k.encode()), b"DELETED\r\n", k)
        for k in overwritten:
            self.assertEqual(self.req(d, b"set %s 3 0 %d\r\n%s\r\n" % (k.encode(), len(new[k]), new[k])),
                             b"STORED\r\n", k)
        # reads during the cut see the writes
        want = {k: (3, new[k]) for k in overwritten}
        want.update({k: (3, items[k][2]) for k in untouched + okeys})
        self.assert_reads(self.get_values(d, vkeys + okeys), want, "reads during the cut")
        # the cut is real: the victim still holds every old value
        held = self.victim.get_many(vkeys)
        self.assertEqual({k: v[1] for k, v in held.items()}, {k: items[k][2] for k in vkeys},
                         "test bug: a write crossed the cut")
        stats = self.shim_stats(d)
        self.assertEqual(stats.get("server:%d:state" % VICTIM), "down")
        self.assertGreaterEqual(int(stats.get("server:%d:failovers" % VICTIM, "-1")), 1,
                                "server:%d:failovers after reads answered by copies" % VICTIM)
        logged = counter(stats, "invalidations_logged")
        pid = self.victim.pid

        proxy.heal()
        stats = self.wait_state(d, VICTIM, ("warming", "up"), recovery_bound())
        self.assertEqual(self.victim.pid, pid, "test bug: the victim restarted")
        # zero stale reads, first straight after the rejoin ...
        self.assert_reads(self.get_values(d, vkeys + okeys), want, "reads after the rejoin")
        # ... and no stale value left on the victim itself (the invariant)
        for k, (_f, v, _c) in self.victim.get_many(deleted + overwritten).items():
            self.assertTrue(k in overwritten and v == new[k], "stale %s=%r left on the rejoined primary" % (k, v))
        self.assert_reads(self.get_values(d, vkeys + okeys), want, "reads after the rejoin, again")
        stats = self.shim_stats(d)
        self.assert_counter(stats, "rejoins", 1)
        self.assert_counter(stats, "restarts", 0)
        self.assertGreaterEqual(counter(stats, "probes") or 0, 1, "no probe counted")
        return d, stats, logged, (deleted, overwritten, untouched)

    def test_partition_rejoin_replays_invalidations(self):
        d, stats, logged, (deleted, overwritten, _u) = self.partition({})
        self.assertEqual(logged, len(deleted) + len(overwritten), "invalidations_logged during the cut")
        self.assert_counter(stats, "invalidations_replayed", len(deleted) + len(overwritten))
        self.assert_counter(stats, "rejoin_flushes", 0)

    def test_partition_first_request_is_write(self):
        _d, stats, _logged, (deleted, overwritten, _u) = self.partition({}, first_write=True)
        self.assert_counter(stats, "invalidations_replayed", len(deleted) + len(overwritten))

    def test_partition_rejoin_flush(self):
        _d, stats, _logged, _groups = self.partition({"MCSHIM_REJOIN": "flush"})
        self.assert_counter(stats, "rejoin_flushes", 1)

    def test_partition_rejoin_log_overflow_flushes(self):
        _d, stats, _logged, _groups = self.partition({"MCSHIM_REJOIN_LOG": "3"}, n_deleted=3, n_overwritten=3)
        self.assert_counter(stats, "rejoin_flushes", 1)

    # -- 5. replicas along the primary ring ---------------------------------------------
    def test_replicas_two_no_backup(self):
        env = self.env({"MCSHIM_REPLICAS": "2"}, backup=False)
        d = self.driver(env)
        keys = ["rep:%d" % i for i in range(64)]
        items = {k: (i % 7, 0, ("r%d" % i).encode()) for i, k in enumerate(keys)}
        self.set_many(d, items)
        walks = harness.ring_walk_ref(self.primaries(), keys, 2)
        self.assertEqual([w[0] for w in walks], self.primary_of(keys), "reference ring disagrees with the tool")
        self.wait_copies(dict(zip(keys, walks)), {k: (f, v) for k, (f, _t, v) in items.items()})
        self.assertGreaterEqual(len({tuple(w) for w in walks}), 4, "keys too concentrated: %s" % walks[:8])
        report, _err = self.load_run(env, "pymemcache", self.victim.stop, "rep2")
        self.assert_clean_load(report)
        self.verify_acked(env, "pymemcache", report, "rep2")

    # -- 6. the copy invariant, command by command --------------------------------------
    # (name, primary plant, backup plant, command, reply regex, backup afterwards, ttl)
    # plants are values stored with flags 3; "same": the backup holds what the primary
    # holds; "missing": nothing; "either": one of the two. {cas} is the primary's unique,
    # {badcas} a different one.
    CASES = (
        ("set", b"old", b"old", b"set {k} 5 0 3\r\nnew\r\n", rb"STORED\r\n", "same", None),
        ("set_over_stale", b"old", b"stale", b"set {k} 5 0 3\r\nnew\r\n", rb"STORED\r\n", "same", None),
        ("add_new", None, None, b"add {k} 5 0 3\r\nnew\r\n", rb"STORED\r\n", "same", None),
        ("add_refused", b"old", b"old", b"add {k} 5 0 3\r\nnew\r\n", rb"NOT_STORED\r\n", "either", None),
        ("add_refused_no_copy", b"old", None, b"add {k} 5 0 3\r\nnew\r\n", rb"NOT_STORED\r\n", "either", None),
        ("replace", b"old", b"old", b"replace {k} 5 0 3\r\nnew\r\n", rb"STORED\r\n", "same", None),
        ("replace_not_stored_stale_copy", None, b"stale", b"replace {k} 5 0 3\r\nnew\r\n", rb"NOT_STORED\r\n",
         "missing", None),
        ("cas", b"old", b"old", b"cas {k} 5 0 3 {cas}\r\nnew\r\n", rb"STORED\r\n", "same", None),
        ("cas_exists", b"old", b"old", b"cas {k} 5 0 3 {badcas}\r\nnew\r\n", rb"EXISTS\r\n", "either", None),
        ("cas_not_found_stale_copy", None, b"stale", b"cas {k} 5 0 3 12345\r\nnew\r\n", rb"NOT_FOUND\r\n",
         "missing", None),
        ("append", b"old", b"old", b"append {k} 0 0 2\r\n+a\r\n", rb"STORED\r\n", "either", None),
        ("prepend", b"old", b"old", b"prepend {k} 0 0 2\r\np+\r\n", rb"STORED\r\n", "either", None),
        ("append_missing_stale_copy", None, b"stale", b"append {k} 0 0 2\r\n+a\r\n", rb"NOT_STORED\r\n",
         "missing", None),
        ("prepend_missing_stale_copy", None, b"stale", b"prepend {k} 0 0 2\r\np+\r\n", rb"NOT_STORED\r\n",
         "missing", None),
        ("delete", b"old", b"old", b"delete {k}\r\n", rb"DELETED\r\n", "missing", None),
        ("delete_not_found_stale_copy", None, b"stale", b"delete {k}\r\n", rb"NOT_FOUND\r\n", "missing", None),
        ("incr", b"10", b"10", b"incr {k} 5\r\n", rb"15\r\n", "same", None),
        ("incr_different_copy", b"10", b"99", b"incr {k} 1\r\n", rb"11\r\n", "missing", None),
        ("incr_missing_stale_copy", None, b"10", b"incr {k} 1\r\n", rb"NOT_FOUND\r\n", "missing", None),
        ("decr", b"10", b"10", b"decr {k} 3\r\n", rb"7\r\n", "same", None),
        ("decr_different_copy", b"10", b"3", b"decr {k} 5\r\n", rb"5\r\n", "missing", None),
        ("touch", b"old", b"old", b"touch {k} 1000\r\n", rb"TOUCHED\r\n", "same", 1000),
        ("gat", b"old", b"old", b"gat 800 {k}\r\n", rb"VALUE \S+ 3 3\r\nold\r\nEND\r\n", "same", 800),
        ("gats", b"old", b"old", b"gats 900 {k}\r\n", rb"VALUE \S+ 3 3 \d+\r\nold\r\nEND\r\n", "same", 900),
    )

    def invariant_cases(self, env, sync, names=None):
        d = self.driver(env)
        cases = [c for c in self.CASES if names is None or c[0] in names]
        keys = ["inv:%s" % c[0] for c in cases]
        pnode = dict(zip(keys, self.primary_of(keys)))
        bnode = dict(zip(keys, self.backup_of(keys)))
        for key, (name, pplant, bplant, cmd, _re, _after, _ttl) in zip(keys, cases):
            if pplant is not None:
                self.nodes[pnode[key]].set(key, pplant, flags=3)
            if bplant is not None:
                self.nodes[bnode[key]].set(key, bplant, flags=3)
        # open the shim's connections to every server before the first measured request
        self.get_values(d, ["warm:%d" % i for i in range(32)])
        checks, problems = [], []
        for key, (name, _pp, _bp, cmd, want, after, ttl) in zip(keys, cases):
            item = self.nodes[pnode[key]].get_item(key)
            cas = item[2] if item else 0
            data = cmd.replace(b"{k}", key.encode()).replace(b"{cas}", b"%d" % cas)
            data = data.replace(b"{badcas}", b"%d" % (cas + 1000))
            kind = "get" if cmd.startswith(b"ga") else "line"
            reply = self.req(d, data, kind=kind)
            if not re.fullmatch(want, reply):
                problems.append("%s: the application got %r, the primary's answer is %r" % (name, reply, want))
            if sync:
                # MCSHIM_WRITE=sync: the copy is done when the reply arrives
                problem = self.copy_problem(key, pnode[key], bnode[key], after, ttl)
                if problem:
                    problems.append("%s (key %s) right after the reply: %s" % (name, key, problem))
            checks.append((name, key, after, ttl))
        if not sync:
            deadline = time.time() + harness.scaled(SETTLE)
            pending = list(checks)
            while pending and time.time() < deadline:
                time.sleep(0.05)
                pending = [c for c in pending if not self.copy_ok(c[1], pnode[c[1]], bnode[c[1]], c[2], c[3])]
            time.sleep(harness.scaled(QUIET))
            for name, key, after, ttl in checks:
                problem = self.copy_problem(key, pnode[key], bnode[key], after, ttl)
                if problem:
                    problems.append("%s (key %s): %s" % (name, key, problem))
        if problems:
            self.fail("%d of %d cases wrong:\n  " % (len(problems), len(cases)) + "\n  ".join(problems))

    def copy_ok(self, key, p, b, after, ttl):
        return self.copy_problem(key, p, b, after, ttl) is None

    def copy_problem(self, key, p, b, after, ttl):
        """None when the copy on node b agrees with the primary node p as `after` says."""
        pv = meta_get(self.nodes[p], key)
        bv = meta_get(self.nodes[b], key)
        if bv is not None and (pv is None or bv[0] != pv[0] or bv[2] != pv[2]):
            return "INVARIANT: copy %r (flags %d) on node %d, primary %r" % (bv[2], bv[0], b, pv and (pv[2], pv[0]))
        if after == "missing" and bv is not None:
            return "copy still present on node %d: %r" % (b, bv)
        if after == "same":
            if bv is None:
                return "copy missing on node %d (primary: %r)" % (b, pv)
            if ttl is not None and not (ttl - 3 - harness.scaled(2.0) <= bv[1] <= ttl):
                return "copy ttl %d on node %d, want about %d (primary ttl %d)" % (bv[1], b, ttl, pv[1])
        return None

    def test_invariant_every_write_command_async(self):
        self.invariant_cases(self.env(), sync=False)

    def test_invariant_sync_copy_done_at_reply(self):
        # gat/gats are reads that touch: only the write commands are held for their copies
        names = [c[0] for c in self.CASES if c[0] not in ("gat", "gats")]
        self.invariant_cases(self.env({"MCSHIM_WRITE": "sync"}), sync=True, names=names)

    def test_flush_all_reaches_backups(self):
        d = self.driver(self.env())
        for i, m in enumerate(self.nodes):
            m.set("fl:%d" % i, b"x")
        self.assertEqual(self.req(d, b"flush_all\r\n"), b"OK\r\n")
        keys = ["fl:%d" % i for i in range(len(self.nodes))]
        left = harness.wait_until(lambda: not any(self.cluster.locate(keys).values()), SETTLE)
        self.assertTrue(left, "flush_all left %s" % {k: v for k, v in self.cluster.locate(keys).items() if v})

    # -- 7. eject without copies --------------------------------------------------------
    def test_eject_without_copies(self):
        d = self.driver(self.env({"MCSHIM_EJECT": "1", "MCSHIM_FAILURE_LIMIT": "1"}, backup=False))
        vkeys = self.keys_of("ej", VICTIM, 8)
        okeys = [k for s in range(NPRIMARY) if s != VICTIM for k in self.keys_of("ej", s, 3)]
        items = {k: (0, 0, ("e-" + k).encode()) for k in vkeys + okeys}
        self.set_many(d, items)
        self.victim.stop()
        self.assertIsNone(self.get_one(d, vkeys[0]), "no copies: a dead server's key misses")
        self.wait_down(d, vkeys[0], recovery_bound())
        self.assert_reads(self.get_values(d, vkeys), {}, "reads of the ejected server's keys miss")
        self.assert_reads(self.get_values(d, okeys), {k: (0, items[k][2]) for k in okeys}, "other keys stay put")
        # writes land on the owner on the ring of the live servers
        live = [i for i in range(NPRIMARY) if i != VICTIM]
        live_ring = ",".join(self.nodes[i].addr for i in live)
        for k, o in zip(vkeys[:4], harness.ring_owner(live_ring, vkeys[:4])):
            self.assertEqual(self.req(d, b"set %s 0 0 3\r\nnew\r\n" % k.encode()), b"STORED\r\n", k)
            self.assertEqual(self.holders(k), [live[o]], "key %s after ejection" % k)
            self.assertEqual(self.get_one(d, k), (0, b"new"))
        # back after restart and RETRY_MS
        self.victim.start()
        deadline = time.time() + harness.scaled(recovery_bound())
        k = vkeys[5]
        while True:
            self.assertEqual(self.req(d, b"set %s 0 0 4\r\nback\r\n" % k.encode()), b"STORED\r\n")
            if self.victim.get(k) == b"back":
                break
            self.assertLess(time.time(), deadline, "restarted server not used again")
            time.sleep(0.05)
        self.assertEqual(self.state(d, VICTIM), "up")
        for k in vkeys[6:]:
            self.assertEqual(self.req(d, b"set %s 0 0 2\r\nok\r\n" % k.encode()), b"STORED\r\n")
            self.assertEqual(self.holders(k), [VICTIM])


if __name__ == "__main__":
    unittest.main()
