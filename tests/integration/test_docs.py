"""Docs stay true to the code: every variable, statistic and state is documented.

The lists are read from the single definitions in the headers (X-macros), and the
live `stats mcshim` output of a running shim is checked against docs/stats.md.
"""
import os
import re
import socket
import unittest

import harness

ROOT = harness.ROOT


def read(path):
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


class DocsTest(harness.ClusterTest):
    nservers = 2

    def test_every_variable_documented_with_default(self):
        header = read("preload/core/config.h")
        doc = read("docs/configuration.md")
        found = re.findall(r'X\(\w+,\s*"(MCSHIM_\w+)",\s*(NULL|"[^"]*")', header)
        self.assertGreaterEqual(len(found), 8)
        for name, default in found:
            row = [line for line in doc.splitlines() if line.startswith("| `%s`" % name)]
            self.assertEqual(len(row), 1, "%s has no row in docs/configuration.md" % name)
            if default != "NULL":
                self.assertIn("`%s`" % default.strip('"'), row[0], "default of %s" % name)

    def test_every_stat_documented(self):
        header = read("preload/core/stats.h")
        doc = read("docs/stats.md")
        names = re.findall(r"X\((\w+),\s+\"", header)
        self.assertGreaterEqual(len(names), 15)
        for name in names:
            self.assertIn("| `%s` |" % name, doc, "stat %s missing from docs/stats.md" % name)

    def test_live_stats_keys_documented(self):
        doc = read("docs/stats.md")
        code = ("import socket,sys\n"
                "s=socket.create_connection(('127.0.0.1',%d))\n"
                "s.sendall(b'stats mcshim\\r\\n'); out=b''\n"
                "while not out.endswith(b'END\\r\\n'):\n"
                "    d=s.recv(65536)\n"
                "    if not d: break\n"
                "    out+=d\n"
                "sys.stdout.write(out.decode())\n") % self.intercept_port
        out = harness.run(["/usr/bin/python3", "-c", code], self.env()).stdout.decode()
        keys = [line.split()[1] for line in out.splitlines() if line.startswith("STAT ")]
        self.assertGreater(len(keys), 20)
        for key in keys:
            base = key.split(":")[-1]
            self.assertIn("| `%s` |" % base, doc, "live stat %s undocumented" % key)
        self.assertIn("STAT server:1:state up", out)


if __name__ == "__main__":
    unittest.main()
