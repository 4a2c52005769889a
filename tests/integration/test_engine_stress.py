"""Engine regressions under bursts: many application connections whose first requests
arrive in the same event-loop batch as a backend connection completing.

Reproduces a hang found by the sanitizer run: flushing a backend from its
connect-completion event cleared its dirty flag while it was still queued, a second
queueing made the dirty list cycle, and the engine spun for ever. Each round is a
fresh process (fresh engine, unconnected backends) with one backend connection per
server, so every client's first request lands on a connecting backend.
"""
import unittest

import harness

BURST = r"""
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
for i, s in enumerate(socks):
    s.sendall(b"set burst%d 0 0 2\r\nok\r\nget burst%d\r\n" % (i, i))
deadline = time.time() + 10
for i, s in enumerate(socks):
    s.settimeout(max(0.1, deadline - time.time()))
    want = b"STORED\r\nVALUE burst%d 0 2\r\nok\r\nEND\r\n" % i
    got = b""
    while len(got) < len(want):
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    assert got == want, (i, got)
print("ok")
"""


class EngineStressTest(harness.ClusterTest):

    def test_burst_of_new_connections_on_connecting_backends(self):
        env = self.env({"MCSHIM_CONNECTIONS": "1"})
        for _ in range(15):
            p = harness.run(["/usr/bin/python3", "-c", BURST, str(self.intercept_port), "64"], env, timeout=30)
            self.assertEqual(p.stdout.strip(), b"ok")


if __name__ == "__main__":
    unittest.main()
