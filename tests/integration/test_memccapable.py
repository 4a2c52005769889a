"""libmemcached's memccapable conformance suite (ASCII tests, -a) through the shim over
4 servers. The set of passing tests must be the same as against one direct memcached
(all 27 ascii tests with memcached 1.6).
"""
import re
import shutil
import unittest

import harness

MEMCCAPABLE = shutil.which("memccapable") or "/usr/bin/memccapable"
LINE = re.compile(r"^(ascii .*?)\s+\[(pass|fail|skip)\]", re.M)


def results(out):
    return dict(LINE.findall(out))


class MemccapableTest(harness.ClusterTest):

    def run_capable(self, port, env):
        p = harness.run([MEMCCAPABLE, "-a", "-h", "127.0.0.1", "-p", str(port)], env, timeout=60, check=False)
        out = p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")
        return p.returncode, out, results(out)

    def test_ascii_suite(self):
        direct = harness.Memcached()
        try:
            rc, out, want = self.run_capable(direct.port, harness.plain_env())
        finally:
            direct.stop()
        self.assertEqual(rc, 0, out)
        want_pass = sorted(t for t, r in want.items() if r == "pass")
        self.assertGreaterEqual(len(want_pass), 27, out)

        rc, out, got = self.run_capable(self.intercept_port, self.env())
        got_pass = sorted(t for t, r in got.items() if r == "pass")
        print("\nmemccapable through the shim: %d/%d ascii tests pass" % (len(got_pass), len(want_pass)))
        for t in sorted(want):
            print("  %-36s direct %-5s shim %s" % (t, want[t], got.get(t, "(not run)")))
        self.assertEqual(got_pass, want_pass, out[-3000:])
        self.assertEqual(rc, 0, out[-3000:])


if __name__ == "__main__":
    unittest.main()
