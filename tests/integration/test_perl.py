"""Perl clients through the shim: Cache::Memcached::Fast (XS, non-blocking, noreply in
void context, gets/cas/append/prepend/touch/set_multi) and Cache::Memcached (pure Perl,
select() on non-blocking sockets): set/get/get_multi/delete/incr/decr, ~1MB values.
Replies are checked in Perl, then placement and contents on the real servers.
"""
import os
import unittest

import harness

CLIENT = os.path.join(harness.CLIENTS, "perl_client.pl")


class PerlTest(harness.ClusterTest):

    def scenario(self, which):
        return self.run_client(["/usr/bin/perl", CLIENT, self.intercept, which], min_servers=4)

    def test_cache_memcached_fast(self):
        report, n = self.scenario("fast")
        self.assertEqual(n, 203)
        self.assertEqual(len(report["absent"]), 4)

    def test_cache_memcached(self):
        report, n = self.scenario("classic")
        self.assertEqual(n, 153)
        self.assertEqual(len(report["absent"]), 3)


if __name__ == "__main__":
    unittest.main()
