"""mcshim's ring against the real twemproxy (nutcracker 0.5.0).

Each test starts a nutcracker on a free loopback port in front of real memcached
servers, writes keys through it, asks every memcached directly which keys it
holds, and checks that build/tools/mcshim_ring names the same server for every
key. Covered: ketama with md5, fnv1a_64 and every other hash nutcracker has,
weights, explicit server names, the 156-points-per-server pool size (n = 25),
modula (whose slot order is nutcracker's sorted server order), a point shared
by two servers (nutcracker's server order decides), and the "host-k" point
names nutcracker uses for port 11211.

Every process started here is stopped by pid (kill, then wait).
"""
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

from harness import TIME_SCALE, TOOLS, Memcached, free_port, wait_port

NUTCRACKER = shutil.which("nutcracker") or "/usr/sbin/nutcracker"
RING = os.path.join(TOOLS, "mcshim_ring")
HASHES = ["one_at_a_time", "md5", "crc16", "crc32", "crc32a", "fnv1_64", "fnv1a_64",
          "fnv1_32", "fnv1a_32", "hsieh", "murmur", "jenkins"]
POOL = 25          # memcached servers shared by the tests of this file
BATCH = 100        # keys per direct multi-get


def make_keys(n, prefix="k"):
    """n distinct valid memcached keys (bytes): ASCII, and some with bytes >= 0x80
    (UTF-8 and Latin-1), of lengths 1..~40 so every hash tail case is hit."""
    keys = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            keys.append(("%s%d" % (prefix, i)).encode())
        elif kind == 1:
            keys.append(("user:%d:profile" % (i * 7919)).encode())
        elif kind == 2:
            keys.append(("caf\u00e9-%d-\u00fcber" % i).encode("utf-8"))
        elif kind == 3:
            keys.append(b"\xe9" * (1 + i % 7) + str(i).encode() + b"\xff")
        else:
            keys.append(("%x" % (i * 2654435761 % 2 ** 32)).encode() * (1 + i % 4))
    assert len(set(keys)) == n
    return keys


def ring_predict(servers, keys, hash_name, dist, verbose=False):
    """Server index mcshim_ring gives each key (bytes in, ints out); with
    verbose, also the tool's per-server point counts."""
    args = [RING, "-s", servers, "-H", hash_name, "-d", dist] + (["-v"] if verbose else [])
    p = subprocess.run(args, input=b"\n".join(keys) + b"\n", capture_output=True,
                       timeout=30 * TIME_SCALE)
    if p.returncode != 0:
        raise AssertionError("mcshim_ring exited %d: %s" % (p.returncode, p.stderr.decode(errors="replace")))
    lines = p.stdout.split(b"\n")[:-1]
    assert len(lines) == len(keys), (len(lines), len(keys))
    owners = []
    for key, line in zip(keys, lines):
        k, idx, _label = line.rsplit(b"\t", 2)
        assert k == key, (k, key)
        owners.append(int(idx))
    points = [int(l.rsplit(" ", 1)[1]) for l in p.stderr.decode().splitlines() if l.startswith("server ")]
    return (owners, points) if verbose else owners


class Nutcracker:
    """One nutcracker pool, listening on a free loopback port."""

    def __init__(self, tmp, entries, hash_name, dist):
        self.port = free_port()
        self.stats_port = free_port()
        self.log = os.path.join(tmp, "nutcracker-%d.log" % self.port)
        conf = os.path.join(tmp, "nutcracker-%d.yml" % self.port)
        with open(conf, "w") as f:
            f.write("pool:\n"
                    "  listen: 127.0.0.1:%d\n"
                    "  hash: %s\n"
                    "  distribution: %s\n"
                    "  auto_eject_hosts: false\n"
                    "  preconnect: false\n"
                    "  timeout: %d\n"
                    "  servers:\n" % (self.port, hash_name, dist, int(5000 * TIME_SCALE)))
            for e in entries:
                f.write("   - %s\n" % e)
        self.proc = subprocess.Popen(
            [NUTCRACKER, "-c", conf, "-o", self.log, "-s", str(self.stats_port), "-a", "127.0.0.1",
             "-p", os.path.join(tmp, "nutcracker-%d.pid" % self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_port("127.0.0.1", self.port):
            self.stop()
            raise AssertionError("nutcracker did not start: %s" % self.log_tail())

    def log_tail(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return "(no log)"

    def set_all(self, keys):
        """Stores every key through nutcracker (pipelined), expects STORED for each."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10 * TIME_SCALE) as s:
            s.sendall(b"".join(b"set " + k + b" 0 0 1\r\nx\r\n" for k in keys))
            want = b"STORED\r\n" * len(keys)
            got = b""
            while len(got) < len(want):
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        if got != want:
            raise AssertionError("nutcracker replies: %r... log: %s" % (got[:200], self.log_tail()))

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
        self.proc = None


def bindable(host, port):
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


class KetamaVsNutcracker(unittest.TestCase):
    """Every key lands where mcshim_ring says, through a real nutcracker."""

    @classmethod
    def setUpClass(cls):
        if not os.path.exists(NUTCRACKER):
            raise unittest.SkipTest("nutcracker is not installed")
        if not os.access(RING, os.X_OK):
            raise unittest.SkipTest("%s is not built" % RING)
        cls.tmp = tempfile.mkdtemp(prefix="mcshim-ketama-")
        cls.nodes = []
        try:
            for _ in range(POOL):
                cls.nodes.append(Memcached())
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for m in cls.nodes:
            m.stop()
        cls.nodes = []
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def owners(self, nodes, keys):
        """For each key, the indices (into nodes) of the servers that hold it."""
        where = {k: [] for k in keys}
        for i, m in enumerate(nodes):
            for b in range(0, len(keys), BATCH):
                out = m.request(b"get " + b" ".join(keys[b:b + BATCH]) + b"\r\n")
                for line in out.split(b"\r\n"):
                    if line.startswith(b"VALUE "):
                        where[line.split(b" ")[1]].append(i)
        return [where[k] for k in keys]

    def check(self, nodes, entries, ring_list, keys, hash_name, dist="ketama"):
        """Writes keys through a nutcracker over `entries` (YAML server lines for
        `nodes`, in order) and compares every owner with mcshim_ring -s ring_list."""
        for m in nodes:
            m.request(b"flush_all\r\n", until=b"OK\r\n")
        nc = Nutcracker(self.tmp, entries, hash_name, dist)
        try:
            nc.set_all(keys)
        finally:
            nc.stop()
        actual = self.owners(nodes, keys)
        predicted = ring_predict(ring_list, keys, hash_name, dist)
        wrong = [(k, a, p) for k, a, p in zip(keys, actual, predicted) if a != [p]]
        self.assertEqual(wrong[:5], [], "%d of %d keys differ (key, nutcracker, mcshim_ring), hash %s %s"
                         % (len(wrong), len(keys), hash_name, dist))

    def plain(self, n, weights=None):
        """The first n pool servers as YAML entries and as an mcshim_ring list."""
        nodes = self.nodes[:n]
        weights = weights or [1] * n
        entries = ["127.0.0.1:%d:%d" % (m.port, w) for m, w in zip(nodes, weights)]
        return nodes, entries, ",".join(entries)

    def test_md5_ketama(self):
        nodes, entries, ring = self.plain(5)
        self.check(nodes, entries, ring, make_keys(2000), "md5")

    def test_fnv1a_64_ketama_weighted(self):
        nodes, entries, ring = self.plain(4, [1, 2, 3, 5])
        self.check(nodes, entries, ring, make_keys(2000), "fnv1a_64")

    def test_md5_ketama_156_points(self):
        """With 25 equal servers nutcracker's float formula gives 39 digests (156
        points) per server, not 40: a 160-point ring would move ~2.5% of keys."""
        nodes, entries, ring = self.plain(25)
        _, points = ring_predict(ring, [b"x"], "md5", "ketama", verbose=True)
        self.assertEqual(points, [156] * 25)
        self.check(nodes, entries, ring, make_keys(2000), "md5")

    def test_every_hash_ketama(self):
        nodes, entries, ring = self.plain(3, [1, 2, 3])
        keys = make_keys(600, prefix="h")
        for hash_name in HASHES:
            with self.subTest(hash=hash_name):
                self.check(nodes, entries, ring, keys, hash_name)

    def test_explicit_names_ketama(self):
        nodes = self.nodes[:4]
        names = ["alpha", "beta", "gamma", "delta"]
        entries = ["127.0.0.1:%d:%d %s" % (m.port, w, nm) for m, w, nm in zip(nodes, [1, 1, 2, 1], names)]
        self.check(nodes, entries, ",".join(entries), make_keys(2000), "murmur")

    def test_modula_in_nutcracker_server_order(self):
        """nutcracker lays modula slots out in its sorted server order (shorter
        name first, then bytewise), not in configuration order."""
        nodes = self.nodes[:5]
        names = ["zz", "b", "aaa", "c", "ab"]
        entries = ["127.0.0.1:%d:%d %s" % (m.port, w, nm) for m, w, nm in zip(nodes, [1, 3, 7, 13, 29], names)]
        keys = make_keys(2000)
        self.check(nodes, entries, ",".join(entries), keys, "fnv1a_64", "modula")
        nodes, entries, ring = self.plain(4, [2, 1, 3, 1])
        self.check(nodes, entries, ring, keys, "crc32a", "modula")

    def test_equal_points_in_nutcracker_server_order(self):
        """"tieA-k" and "tie-218858-k" share the point 1638240709 (found by a
        search over names). nutcracker gives the keys just below it to "tieA",
        the shorter name, whichever comes first in the configuration."""
        keys = [b"key96", b"key111", b"key238", b"key318", b"key365"]   # md5 in (1580759012, 1638240709]
        nodes = self.nodes[:2]
        for names in (["tie-218858", "tieA"], ["tieA", "tie-218858"]):
            entries = ["127.0.0.1:%d:1 %s" % (m.port, nm) for m, nm in zip(nodes, names)]
            self.check(nodes, entries, ",".join(entries), keys, "md5")
            self.assertEqual(ring_predict(",".join(entries), keys, "md5", "ketama"),
                             [names.index("tieA")] * len(keys))

    def test_port_11211_names(self):
        """Port 11211 hashes "host-k" (the host as written), other ports
        "host:port-k". Uses 127.0.0.x:11211 loopback addresses that are free."""
        nodes = []
        candidates = list(range(2, 255))
        random.shuffle(candidates)    # concurrent runs of this file pick different addresses
        try:
            for x in candidates:
                if len(nodes) == 3:
                    break
                host = "127.0.0.%d" % x
                if not bindable(host, 11211):
                    continue
                try:
                    m = Memcached(host=host, port=11211)
                except RuntimeError:
                    continue
                time.sleep(0.1 * TIME_SCALE)
                if m.proc is None or m.proc.poll() is not None:
                    m.stop()          # lost a race for the address to another process
                    continue
                nodes.append(m)
            if len(nodes) < 3:
                self.skipTest("no three free 127.0.0.x:11211 addresses")
            nodes.append(self.nodes[0])
            entries = ["%s:%d:1" % (m.host, m.port) for m in nodes]
            self.check(nodes, entries, ",".join(entries), make_keys(2000), "md5")
        finally:
            for m in nodes:
                if m is not self.nodes[0]:
                    m.stop()


if __name__ == "__main__":
    unittest.main()
