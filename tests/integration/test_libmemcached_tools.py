"""libmemcached-tools (memccp, memccat, memcrm, memcexist, memctouch, memcflush, memcstat,
memcping, memcslap, memcdump) through the shim, each with --servers=the intercept address.

Values are checked through the tools and on the real servers (placement by the ring,
bytes and flags). memcdump needs `stats items`/`lru_crawler metadump`, which a router
does not merge (docs/protocol.md: `stats <other>` -> ERROR): it must fail cleanly and fast.
"""
import hashlib
import random
import time
import unittest

import harness


class ToolsTest(harness.ToolFiles, harness.ClusterTest):

    def setUp(self):
        super().setUp()
        rnd = random.Random(11)
        contents = {
            "tool-text.txt": b"hello world\nsecond line\n",
            "tool-empty.txt": b"",
            "tool-bin.dat": bytes(rnd.getrandbits(8) for _ in range(300000)),
            "tool-900k.dat": (b"\r\nEND\r\n" + bytes(range(256))) * 3500,
        }
        contents.update(self.small_files("tool", 12))
        self.write_files(contents)

    def copy_all(self, *opts):
        self.tool("memccp", *opts, *[p for p, _ in self.files.values()])

    def test_memccp_memccat(self):
        self.copy_all("--flags=77", "--expire=1000")
        self.assert_on_ring(list(self.files),
                            values={k: {"len": len(d), "sha1": hashlib.sha1(d).hexdigest(), "flags": 77}
                                    for k, (_p, d) in self.files.items()})
        self.assert_spread(list(self.files), 4)
        for name, (_p, data) in self.files.items():
            out = self.tool("memccat", name).stdout
            self.assertEqual(out, data + b"\n", name)  # memccat adds a newline
        out = self.tool("memccat", "-F", "tool-text.txt").stdout
        self.assertEqual(out, b"77\n" + self.files["tool-text.txt"][1] + b"\n")
        # several keys in one memccat
        names = sorted(self.files)[:6]
        out = self.tool("memccat", *names).stdout
        self.assertEqual(out, b"".join(self.files[n][1] + b"\n" for n in names))
        p = self.tool("memccat", "tool-missing", check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertEqual(p.stdout, b"")

    def test_memccp_add_replace(self):
        path, data = self.files["tool-text.txt"]
        p = self.tool("memccp", "--replace", path, check=False)
        self.assertNotEqual(p.returncode, 0, "replace of a missing key must fail")
        self.assert_absent(["tool-text.txt"])
        self.tool("memccp", "--add", path)
        self.assert_on_ring(["tool-text.txt"], values={"tool-text.txt": data})
        p = self.tool("memccp", "--add", path, check=False)
        self.assertNotEqual(p.returncode, 0, "add of an existing key must fail")

    def test_memcexist_memctouch_memcrm(self):
        self.copy_all()
        names = sorted(self.files)
        for name in names[:5]:
            self.assertEqual(self.tool("memcexist", name, check=False).returncode, 0, name)
            self.assertEqual(self.tool("memctouch", "--expire=500", name, check=False).returncode, 0, name)
        self.assertNotEqual(self.tool("memcexist", "tool-nope", check=False).returncode, 0)
        self.assertNotEqual(self.tool("memctouch", "--expire=500", "tool-nope", check=False).returncode, 0)
        self.assert_absent(["tool-nope"])  # memcexist must not create it
        gone, kept = names[:7], names[7:]
        self.tool("memcrm", *gone)
        self.assert_absent(gone)
        self.assert_on_ring(kept)
        self.assertNotEqual(self.tool("memcrm", gone[0], check=False).returncode, 0)
        self.assertNotEqual(self.tool("memcexist", gone[0], check=False).returncode, 0)

    def test_memctouch_expires(self):
        self.copy_all()
        self.tool("memctouch", "--expire=1", "tool-text.txt")
        self.assertTrue(harness.wait_until(lambda: self.cluster.locate(["tool-text.txt"])["tool-text.txt"] == [], 4),
                        "touched key did not expire")
        self.assert_on_ring(["tool-bin.dat"])

    def test_memcflush(self):
        self.copy_all()
        self.assert_on_ring(list(self.files))
        self.tool("memcflush")
        self.assert_absent(list(self.files))

    def test_memcstat_memcping(self):
        out = self.tool("memcstat").stdout.decode()
        host, port = self.intercept.rsplit(":", 1)
        self.assertIn("Server: %s (%s)" % (host, port), out)
        stats = dict(l.strip().split(": ", 1) for l in out.splitlines()[1:] if ": " in l)
        self.assertIn("pid", stats)
        self.assertIn("uptime", stats)
        if not harness.DIRECT:
            self.assertTrue(stats["version"].startswith("mcshim"), stats.get("version"))
        self.tool("memcping")

    def test_memcslap_threads(self):
        # 4 threads, each its own connection through the same engine
        for test in ("set", "get", "mget"):
            p = self.tool("memcslap", "--concurrency=4", "--execute-number=300", "--test=" + test, timeout=60)
            self.assertNotIn(b"rror", p.stderr + p.stdout, test)

    def test_memcdump_fails_cleanly(self):
        self.copy_all()
        start = time.time()
        p = self.tool("memcdump", check=False, timeout=20)
        took = time.time() - start
        self.assertGreaterEqual(p.returncode, 0, "memcdump killed by a signal")
        self.assertLess(took, harness.scaled(10))
        if not harness.DIRECT:
            # the router cannot list keys: no key may be printed as if the pool were listed
            listed = set(p.stdout.decode(errors="replace").split())
            self.assertTrue(p.returncode != 0 or not listed or listed >= set(self.files),
                            "memcdump printed a partial listing: %r" % sorted(listed)[:10])


if __name__ == "__main__":
    unittest.main()
