"""The shim under valgrind: real clients run through it with memcheck watching.

memcheck must report no error at all (exit code), and no definite leak whose
stack goes through libmcshim. Skipped in the sanitizer build (ASan and valgrind
do not mix).
"""
import os
import re
import shutil
import unittest

import harness

VALGRIND = shutil.which("valgrind")


@unittest.skipIf(harness.SANITIZE or VALGRIND is None, "valgrind not usable in this build")
class ValgrindTest(harness.ClusterTest):

    def valgrind(self, args, timeout=240, extra=None):
        log = os.path.join(self.tmp, "vg.log")
        env = self.env(dict({"MCSHIM_TIMEOUT_MS": "5000"}, **(extra or {})))
        p = harness.run([VALGRIND, "-q", "--error-exitcode=99", "--leak-check=full",
                         "--show-leak-kinds=definite", "--errors-for-leak-kinds=definite",
                         "--log-file=" + log] + args,
                        env, timeout=timeout, check=False)
        with open(log) as f:
            report = f.read()
        self.assertNotEqual(p.returncode, 99, "memcheck errors:\n" + report[-4000:])
        blocks = re.split(r"\n==\d+== \n", report)
        ours = [b for b in blocks if "definitely lost" in b and "libmcshim" in b]
        self.assertEqual(ours, [], "leaks in the shim:\n" + "\n".join(ours)[-4000:])
        return p

    def test_memccapable_ascii(self):
        p = self.valgrind(["memccapable", "-a", "-h", "127.0.0.1", "-p", str(self.intercept_port)])
        out = p.stdout.decode()
        self.assertIn("All tests passed", out, out[-2000:])

    def test_memccapable_binary_with_replicas(self):
        """The binary protocol and the copy paths (MCSHIM_REPLICAS=2)."""
        p = self.valgrind(["memccapable", "-b", "-h", "127.0.0.1", "-p", str(self.intercept_port)],
                          extra={"MCSHIM_REPLICAS": "2"})
        out = p.stdout.decode()
        self.assertIn("All tests passed", out, out[-2000:])

    def test_pymemcache_multiget_and_failure(self):
        code = (
            "from pymemcache.client.base import Client\n"
            "c = Client(('127.0.0.1', %d), timeout=10)\n"
            "keys = ['vg%%d' %% i for i in range(300)]\n"
            "c.set_many({k: k * 3 for k in keys}, noreply=False)\n"
            "got = c.get_many(keys)\n"
            "assert len(got) == 300, len(got)\n"
            "assert c.incr('nokey', 1) is None\n"
            "c.close()\n" % self.intercept_port)
        self.valgrind(["/usr/bin/python3", "-c", code])
        self.assert_on_ring(["vg%d" % i for i in range(0, 300, 7)])


if __name__ == "__main__":
    unittest.main()
