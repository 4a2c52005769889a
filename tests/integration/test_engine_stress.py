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


FLOOD = r"""
import resource, socket, sys, time
port = int(sys.argv[1])
s = socket.create_connection(("127.0.0.1", port))
s.setblocking(False)
chunk = b"".join(b"set flood%d 0 0 1000 noreply\r\n" % i + b"x" * 1000 + b"\r\n" for i in range(1000))
sent, deadline = 0, time.time() + 8
while time.time() < deadline and sent < 400 * 1024 * 1024:
    try:
        sent += s.send(chunk)
    except BlockingIOError:
        time.sleep(0.01)
print(sent, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


class NoreplyFloodTest(harness.ClusterTest):
    """noreply requests leave no trace in a client's pipeline; the bytes queued to
    servers must still be bounded when a server stops reading (SIGSTOP)."""
    nservers = 1

    def test_noreply_flood_to_a_stopped_server_is_bounded(self):
        node = self.cluster.nodes[0]
        node.pause()
        try:
            env = self.env({"MCSHIM_TIMEOUT_MS": "20000"})
            p = harness.run(["/usr/bin/python3", "-c", FLOOD, str(self.intercept_port)], env, timeout=60)
        finally:
            node.resume()
        sent, maxrss_kb = (int(x) for x in p.stdout.split())
        # 32 MiB engine queue + kernel socket buffers (about 40 MiB); unbounded, it takes
        # everything the client manages to send in 8 s (well over 100 MiB here).
        self.assertLess(sent, 80 * 1024 * 1024, "the shim kept reading: %d bytes accepted" % sent)
        self.assertLess(maxrss_kb, 200 * 1024, "process grew to %d KiB" % maxrss_kb)


if __name__ == "__main__":
    unittest.main()
