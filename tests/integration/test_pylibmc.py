"""pylibmc (libmemcached, ASCII protocol) through the shim, under several behavior sets.

libmemcached sees one server (the intercept address); its non-blocking I/O, poll()
waits and write buffering must all work on the shim's connection. Each run checks
every reply in the client, then the keys' placement and contents on the real servers.
Binary protocol is a later milestone and stays off.
"""
import json
import os
import unittest

import harness

CLIENT = os.path.join(harness.CLIENTS, "pylibmc_client.py")

BEHAVIORS = {
    "default": {},
    "nodelay_noblock": {"tcp_nodelay": True, "no_block": True},
    # libmemcached's unweighted ketama over a single server: harmless, exercised anyway
    "ketama": {"ketama": True},
    "cas": {"cas": True},
    "noblock_cas_buffered": {"no_block": True, "cas": True, "tcp_nodelay": True, "buffer_requests": False},
}


class PylibmcTest(harness.ClusterTest):

    def ops(self, name):
        report, n = self.run_client([harness.PY, CLIENT, self.intercept, json.dumps(BEHAVIORS[name]), "ops", name],
                                    min_servers=4)
        self.assertEqual(n, 153)
        self.assertEqual(len(report["absent"]), 53)


for _name in BEHAVIORS:
    setattr(PylibmcTest, "test_ops_%s" % _name, (lambda n: lambda self: self.ops(n))(_name))


if __name__ == "__main__":
    unittest.main()
