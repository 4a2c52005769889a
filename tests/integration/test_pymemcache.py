"""pymemcache (python3-pymemcache, pure Python, blocking sockets) through the shim.

Each scenario in clients/pymemcache_client.py checks every reply in the client, then
reports what must be stored; the test checks each key is on exactly the server the
ring names, with the right bytes and flags, and that deleted/missing keys are nowhere.
"""
import os
import unittest

import harness

CLIENT = os.path.join(harness.CLIENTS, "pymemcache_client.py")


class PymemcacheTest(harness.ClusterTest):

    def scenario(self, name, min_servers=None):
        report, n = self.run_client([harness.PY, CLIENT, self.intercept, name], min_servers=min_servers)
        return report, n

    def test_basic_commands(self):
        report, n = self.scenario("basic")
        self.assertEqual(n, 2)
        self.assertEqual(len(report["absent"]), 3)

    def test_noreply_variants(self):
        _, n = self.scenario("noreply", min_servers=4)
        self.assertEqual(n, 28)

    def test_large_and_binary_values(self):
        _, n = self.scenario("large", min_servers=3)
        self.assertEqual(n, 10)

    def test_get_many_500_keys(self):
        report, n = self.scenario("many", min_servers=4)
        self.assertEqual(n, 500)
        # every server got a fair share (ketama with 4 equal servers)
        owners = self.owners(list(report["expect"]))
        if not harness.DIRECT:
            for i in range(4):
                self.assertGreater(owners.count(i), 50)

    def test_pipelined_burst(self):
        _, n = self.scenario("pipelined", min_servers=4)
        self.assertEqual(n, 600)

    def test_threads_pooled_client(self):
        _, n = self.scenario("threads", min_servers=4)
        self.assertEqual(n, 800)


class PlacementVariantsTest(harness.ClusterTest):
    """The same client under other MCSHIM_HASH / MCSHIM_DISTRIBUTION / weights: keys land
    where that ring says (mcshim_ring, or the harness's reference from twemproxy's code)."""

    def many(self, extra, **ring):
        report, n = self.run_client([harness.PY, CLIENT, self.intercept, "many"], extra=extra, **ring)
        self.assertEqual(n, 500)
        return report

    @harness.requires_shim
    def test_fnv1a_32_ketama(self):
        self.many({"MCSHIM_HASH": "fnv1a_32"}, hash_name="fnv1a_32")

    @harness.requires_shim
    def test_crc32a_modula(self):
        self.many({"MCSHIM_HASH": "crc32a", "MCSHIM_DISTRIBUTION": "modula"}, hash_name="crc32a", dist="modula")

    @harness.requires_shim
    def test_one_at_a_time_ketama(self):
        self.many({"MCSHIM_HASH": "one_at_a_time"}, hash_name="one_at_a_time")

    @harness.requires_shim
    def test_weighted_servers(self):
        weighted = ",".join("%s:%d" % (m.addr, w) for m, w in zip(self.cluster.nodes, (1, 2, 3, 10)))
        report = self.many({"MCSHIM_SERVERS": weighted}, servers=weighted)
        owners = self.owners(list(report["expect"]), servers=weighted)
        self.assertGreater(owners.count(3), owners.count(0) * 3, "weight 10 vs 1")

    @harness.requires_shim
    def test_high_bit_keys(self):
        # bytes >= 0x80 are sign-extended by twemproxy's byte-wise hashes (docs/compatibility.md)
        import base64, json
        keys = [b"hb:\xc3\xa9%d" % i for i in range(40)] + [b"hb:\xff\x80%d" % i for i in range(40)]
        for h in ("one_at_a_time", "fnv1a_32", "md5"):
            with self.subTest(hash=h):
                self.cluster.flush()
                data = b"".join(b"set %s 0 0 2\r\nhb\r\n" % k for k in keys)
                req = {"steps": [{"data": base64.b64encode(data).decode()}], "timeout": harness.scaled(5)}
                res = harness.run_json([harness.PY, os.path.join(harness.CLIENTS, "mcraw.py"), self.intercept],
                                       self.env({"MCSHIM_HASH": h}), input=json.dumps(req).encode())
                self.assertEqual(base64.b64decode(res["replies"][0]), b"STORED\r\n" * len(keys))
                self.assert_on_ring(keys, hash_name=h)

    @harness.requires_shim
    def test_ring_tool_matches_reference(self):
        if harness.ring_tool() is None:
            self.skipTest("build/tools/mcshim_ring not built")
        keys = ["ref:%d" % i for i in range(2000)] + [b"k\xc3\xa9y", b"\xff\x80\x81", "x" * 250]
        weighted = ",".join("%s:%d" % (m.addr, w) for m, w in zip(self.cluster.nodes, (1, 2, 3, 10)))
        for servers in (self.cluster.servers, weighted):
            for h, d in (("md5", "ketama"), ("fnv1a_32", "ketama"), ("crc32a", "modula"), ("one_at_a_time", "ketama")):
                with self.subTest(servers=servers, hash=h, dist=d):
                    self.assertEqual(harness.ring_owner(servers, keys, h, d),
                                     harness.ring_owner_ref(servers, keys, h, d))


if __name__ == "__main__":
    unittest.main()
