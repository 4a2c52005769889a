"""A server fails under a running client (docs/protocol.md "When a server fails").

The client is clients/driver.py, a raw /usr/bin/python3 socket client under LD_PRELOAD
that stays up while the test kills (-9), pauses (SIGSTOP) and resumes servers, so one
shim engine sees the whole story. Expected:
  reads of the failed server's keys miss, other keys hit, a multi-get spanning it
  returns the others' hits in request order, writes/deletes/incr/touch to it answer
  `SERVER_ERROR ...`, every reply within MCSHIM_TIMEOUT_MS + slack, never a hang;
  a resumed or restarted server is used again after MCSHIM_RETRY_MS, and no late reply
  of the stalled connection is ever handed to a later request.
Every server is restarted/resumed in finally and by setUp.
"""
import time
import unittest

import harness

TIMEOUT_MS = 300
RETRY_MS = 500
SLACK = 0.5  # seconds on top of the deadline (scaled by harness.TIME_SCALE)
VICTIM = 1


def bound():
    return harness.scaled(TIMEOUT_MS / 1000.0 + SLACK)


class FailureTest(harness.ClusterTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if harness.DIRECT:
            raise unittest.SkipTest("shim-only test (MCSHIM_TEST_DIRECT=1)")
        cands = ["fail:%d" % i for i in range(400)]
        owners = harness.ring_owner(cls.cluster.servers, cands)
        cls.by_owner = {i: [k for k, o in zip(cands, owners) if o == i][:8] for i in range(cls.nservers)}
        for i, keys in cls.by_owner.items():
            assert len(keys) == 8, "not enough keys for server %d" % i
        cls.vkeys = cls.by_owner[VICTIM]
        cls.okeys = [k for i in range(cls.nservers) if i != VICTIM for k in cls.by_owner[i][:3]]

    def setUp(self):
        super().setUp()
        self.victim = self.cluster.nodes[VICTIM]
        self.values = {}
        for i, keys in self.by_owner.items():
            for k in keys:
                v = ("val-%s" % k).encode()
                self.cluster.nodes[i].set(k, v)
                self.values[k] = v
        self.driver = harness.Driver(self.env({"MCSHIM_TIMEOUT_MS": str(TIMEOUT_MS),
                                               "MCSHIM_RETRY_MS": str(RETRY_MS)}), self.intercept)
        self.addCleanup(self.cleanup)
        # open backend connections to every server first
        for i in range(self.nservers):
            self.assert_hit(self.by_owner[i][0])

    def cleanup(self):
        rc, err = self.driver.close()
        self.cluster.ensure_running()
        self.assertEqual(rc, 0, err[-2000:])

    # -- helpers -------------------------------------------------------------------
    def value_reply(self, keys):
        return b"".join(b"VALUE %s 0 %d\r\n%s\r\n" % (k.encode(), len(self.values[k]), self.values[k])
                        for k in keys) + b"END\r\n"

    def timed(self, data, kind, conn="a"):
        reply, elapsed, err = self.driver.req(data, kind=kind, conn=conn, timeout=bound() + 5)
        self.assertIsNone(err, "request %r: %s after %.2fs (got %r)" % (data[:60], err, elapsed, reply))
        self.assertLess(elapsed, bound(), "request %r took %.2fs (deadline %dms)" % (data[:60], elapsed, TIMEOUT_MS))
        return reply, elapsed

    def assert_hit(self, key, conn="a"):
        reply, _ = self.timed(b"get %s\r\n" % key.encode(), "get", conn)
        self.assertEqual(reply, self.value_reply([key]))

    def assert_miss(self, key, conn="a"):
        reply, _ = self.timed(b"get %s\r\n" % key.encode(), "get", conn)
        self.assertEqual(reply, b"END\r\n", "read of a down server's key must miss")

    def assert_server_error(self, data, conn="a"):
        reply, _ = self.timed(data, "line", conn)
        self.assertTrue(reply.startswith(b"SERVER_ERROR ") and reply.endswith(b"\r\n"), reply)
        self.assertEqual(reply.count(b"\r\n"), 1, reply)
        return reply

    def check_down_behaviour(self, conn="a"):
        v, o = self.vkeys, self.okeys
        self.assert_miss(v[0], conn)
        self.assert_hit(o[0], conn)
        # multi-get spanning the failed server: the others' hits, in request order
        ask = [o[0], v[1], o[3], v[2], o[6], o[1], v[0]]
        reply, _ = self.timed(b"get " + " ".join(ask).encode() + b"\r\n", "get", conn)
        self.assertEqual(reply, self.value_reply([k for k in ask if k not in v]))
        r = self.assert_server_error(b"set %s 0 0 3\r\nnew\r\n" % v[3].encode(), conn)
        self.assertIn(self.victim.addr.encode(), r, "docs: SERVER_ERROR mcshim: server <host:port> unavailable")
        self.assert_server_error(b"delete %s\r\n" % v[4].encode(), conn)
        self.assert_server_error(b"incr %s 1\r\n" % v[5].encode(), conn)
        self.assert_server_error(b"touch %s 10\r\n" % v[6].encode(), conn)
        # writes to the others still work and land where the ring says
        reply, _ = self.timed(b"set %s 0 0 5\r\nfresh\r\n" % o[2].encode(), "line", conn)
        self.assertEqual(reply, b"STORED\r\n")
        self.values[o[2]] = b"fresh"
        self.assert_on_ring([o[2]], values={o[2]: b"fresh"})

    def shim_stats(self, conn="stats"):
        reply, _ = self.timed(b"stats mcshim\r\n", "get", conn)
        stats = {}
        for line in reply.split(b"\r\n"):
            if line.startswith(b"STAT "):
                _, k, val = line.decode().split(" ", 2)
                stats[k] = val
        return stats

    def wait_usable_again(self, key, value):
        """Polls `set key` through the shim until it is STORED on the server again.
        Returns seconds waited."""
        start = time.time()
        deadline = start + harness.scaled(RETRY_MS / 1000.0 + TIMEOUT_MS / 1000.0 + 3.0)
        last = None
        while time.time() < deadline:
            reply, _elapsed, err = self.driver.req(b"set %s 0 0 %d\r\n%s\r\n" % (key.encode(), len(value), value),
                                                   kind="line", conn="poll", timeout=bound() + 5)
            last = (reply, err)
            if reply == b"STORED\r\n":
                self.assertEqual(self.victim.get(key), value)
                return time.time() - start
            time.sleep(0.05)
        self.fail("server not used again within RETRY_MS + slack; last reply %r" % (last,))

    # -- tests ---------------------------------------------------------------------
    def test_kill9_running_client(self):
        self.victim.stop()
        self.check_down_behaviour("a")
        self.check_down_behaviour("b")  # a second application connection too
        stats = self.shim_stats()
        self.assertIn(stats.get("server:%d:state" % VICTIM), ("down", "retrying"), stats)
        for i in range(self.nservers):
            if i != VICTIM:
                self.assertEqual(stats.get("server:%d:state" % i), "up")

    def test_kill9_then_restart_is_used_again(self):
        self.victim.stop()
        self.check_down_behaviour()
        self.victim.start()  # same port, empty
        waited = self.wait_usable_again(self.vkeys[7], b"back")
        print("\nrestarted server used again after %.2fs (MCSHIM_RETRY_MS=%d)" % (waited, RETRY_MS))
        self.assert_on_ring([self.vkeys[7]], values={self.vkeys[7]: b"back"})

    def test_dead_before_client_starts(self):
        self.driver.close()
        self.victim.stop()
        self.driver = harness.Driver(self.env({"MCSHIM_TIMEOUT_MS": str(TIMEOUT_MS),
                                               "MCSHIM_RETRY_MS": str(RETRY_MS)}), self.intercept)
        self.check_down_behaviour()

    def test_sigstop_deadline_and_others_unaffected(self):
        v, o = self.vkeys, self.okeys
        self.victim.pause()
        try:
            # a request to the stalled server is pending on connection a ...
            self.driver.send(b"get %s\r\n" % v[0].encode(), conn="a")
            # ... while another connection's requests to the other servers are answered at once
            for k in o[:4]:
                reply, elapsed, err = self.driver.req(b"get %s\r\n" % k.encode(), kind="get", conn="b",
                                                      timeout=bound() + 5)
                self.assertIsNone(err)
                self.assertEqual(reply, self.value_reply([k]))
                self.assertLess(elapsed, harness.scaled(0.25), "a healthy server's key waited on the stalled one")
            reply, elapsed, err = self.driver.recv(kind="get", conn="a", timeout=bound() + 5)
            self.assertIsNone(err, "stalled read never answered: %r" % reply)
            self.assertEqual(reply, b"END\r\n")
            self.assertLess(elapsed, bound(), "stalled read answered after %.2fs" % elapsed)
            print("\nstalled read answered after %.3fs (MCSHIM_TIMEOUT_MS=%d)" % (elapsed, TIMEOUT_MS))
            # every later kind of request is bounded too
            self.check_down_behaviour("c")
            stats = self.shim_stats()
            self.assertIn(stats.get("server:%d:state" % VICTIM), ("down", "retrying"), stats)
        finally:
            self.victim.resume()
        waited = self.wait_usable_again(v[7], b"resumed")
        print("resumed server used again after %.2fs (MCSHIM_RETRY_MS=%d)" % (waited, RETRY_MS))
        # no late reply from the stalled connection may be handed to a later request
        for k in v[:7]:
            for conn in ("a", "b", "c"):
                reply, _ = self.timed(b"get %s\r\n" % k.encode(), "get", conn)
                if k in v[:3]:
                    self.assertEqual(reply, self.value_reply([k]), "late reply handed to a later request")
                else:
                    # v[3..6] got writes answered SERVER_ERROR while stalled: either state, but this key's
                    self.assertTrue(reply == b"END\r\n" or reply.startswith(b"VALUE %s " % k.encode()), reply)
        reply, _ = self.timed(b"get " + " ".join(v[:3]).encode() + b"\r\n", "get", "a")
        self.assertEqual(reply, self.value_reply(v[:3]))

    def test_sigstop_writes_bounded(self):
        v = self.vkeys
        self.victim.pause()
        try:
            for i in range(4):
                start = time.time()
                self.assert_server_error(b"set %s 0 0 1\r\nx\r\n" % v[i].encode(), conn="w")
                self.assertLess(time.time() - start, bound())
            # a pipelined burst mixing the stalled server and others: replies in order, bounded
            o = self.okeys
            burst = (b"get %s\r\n" % o[0].encode() + b"get %s\r\n" % v[0].encode() + b"get %s\r\n" % o[1].encode())
            want = self.value_reply([o[0]]) + b"END\r\n" + self.value_reply([o[1]])
            self.driver.send(burst, conn="burst")
            got, elapsed, err = self.driver.recv(kind="get*3", conn="burst", timeout=bound() + 5)
            self.assertIsNone(err, "pipelined burst: %r" % got)
            self.assertEqual(got, want)
            self.assertLess(elapsed, bound())
        finally:
            self.victim.resume()

    def test_sigstop_noreply_does_not_hold_up_later_requests(self):
        # docs/protocol.md: a noreply request's reply is read and dropped by the shim, and
        # "later requests are not held up waiting for it".
        v, o = self.vkeys, self.okeys
        self.victim.pause()
        try:
            data = b"set %s 0 0 2 noreply\r\nnr\r\nget %s\r\n" % (v[0].encode(), o[0].encode())
            reply, elapsed = self.timed(data, "get", conn="nr")
            self.assertEqual(reply, self.value_reply([o[0]]))
            self.assertLess(elapsed, harness.scaled(0.25), "get waited %.2fs behind a stalled noreply set" % elapsed)
        finally:
            self.victim.resume()

    def test_all_servers_down(self):
        for m in self.cluster.nodes:
            m.stop()
        reply, _ = self.timed(b"get %s %s\r\n" % (self.vkeys[0].encode(), self.okeys[0].encode()), "get")
        self.assertEqual(reply, b"END\r\n")
        self.assert_server_error(b"set %s 0 0 1\r\nx\r\n" % self.okeys[0].encode())
        reply, _ = self.timed(b"version\r\n", "line")
        self.assertEqual(reply, b"SERVER_ERROR mcshim: no server available\r\n")
        self.assert_server_error(b"flush_all\r\n")

    def test_flush_all_with_one_down(self):
        self.victim.stop()
        self.assert_server_error(b"flush_all\r\n")
        # the others were still flushed
        self.assert_absent(self.okeys)


ABORT_SCRIPT = r"""
import socket, sys, time
addr = sys.argv[1]
host, port = addr.rsplit(":", 1)
keys = sys.argv[2].split(",")
for i in range(20):
    s = socket.create_connection((host, int(port)), timeout=5)
    s.sendall(("get " + " ".join(keys) + "\r\n").encode())
    if i % 2:
        s.recv(1000)  # read a little of the many megabytes, then go away
    s.close()
s = socket.create_connection((host, int(port)), timeout=5)
start = time.time()
s.sendall(b"get small\r\n")
out = b""
while not out.endswith(b"END\r\n"):
    d = s.recv(65536)
    if not d:
        break
    out += d
print("%.3f %r" % (time.time() - start, out))
deadline = time.time() + 3
while True:
    s.sendall(b"stats mcshim\r\n")
    st = b""
    while not st.endswith(b"END\r\n"):
        st += s.recv(65536)
    cur = [l for l in st.split(b"\r\n") if l.startswith(b"STAT curr_connections ")][0].split()[2]
    if cur == b"1" or time.time() > deadline:
        break
    time.sleep(0.05)
print(cur.decode())
"""


class ClientAbortTest(harness.ClusterTest):
    """Application connections that vanish with megabytes of replies pending."""

    @harness.requires_shim
    def test_abort_with_replies_in_flight(self):
        big = b"z" * 500000
        keys = ["abort:%d" % i for i in range(8)]
        owners = self.owners(keys)
        for k, o in zip(keys, owners):
            self.cluster.nodes[o].set(k, big)
        self.cluster.nodes[self.owners(["small"])[0]].set("small", b"ok")
        p = harness.run([harness.PY, "-c", ABORT_SCRIPT, self.intercept, ",".join(keys)], self.env(), timeout=30)
        lines = p.stdout.decode().splitlines()
        took, reply = lines[0].split(" ", 1)
        self.assertEqual(reply, repr(b"VALUE small 0 2\r\nok\r\nEND\r\n"))
        self.assertLess(float(took), harness.scaled(2.0))
        self.assertEqual(lines[1], "1", "closed application connections still counted")
        for m in self.cluster.nodes:
            self.assertIsNotNone(m.stats(), "server unreachable")


if __name__ == "__main__":
    unittest.main()
