"""UNIX sockets: an application that talks to memcached over a UNIX socket path
(MCSHIM_INTERCEPT=unix:/path), and servers reached over UNIX sockets
(MCSHIM_SERVERS=unix:/path,...). Nothing listens on the intercepted path."""
import os
import subprocess
import unittest

import harness

CLIENT = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
def ask(data, until):
    s.sendall(data)
    out = b""
    while not out.endswith(until):
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    return out
for i in range(50):
    assert ask(b"set ukey%d 0 0 2\r\nv%d\r\n" % (i, i % 10), b"\r\n") == b"STORED\r\n"
out = ask(b"get " + b" ".join(b"ukey%d" % i for i in range(50)) + b"\r\n", b"END\r\n")
assert out.count(b"VALUE ") == 50, out
print(s.getpeername())
"""


class UnixTest(unittest.TestCase):

    def setUp(self):
        self.tmp = __import__("tempfile").mkdtemp(prefix="mcshim-unix-")
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            p.kill()
            p.wait()
        __import__("shutil").rmtree(self.tmp, ignore_errors=True)

    def unix_memcached(self, name):
        path = os.path.join(self.tmp, name)
        args = [harness.MEMCACHED, "-U", "0", "-s", path, "-t", "1", "-m", "16"]
        if os.geteuid() == 0:
            args += ["-u", "root"]
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        for _ in range(int(200 * harness.TIME_SCALE)):
            if os.path.exists(path):
                return path
            __import__("time").sleep(0.01)
        self.fail("memcached did not create " + path)

    def run_client(self, servers, intercept_path):
        env = harness.preload_env(servers, "unix:" + intercept_path)
        return harness.run(["/usr/bin/python3", "-c", CLIENT, intercept_path], env)

    def test_unix_intercept_tcp_servers(self):
        cluster = harness.Cluster(2)
        try:
            p = self.run_client(cluster.servers, os.path.join(self.tmp, "app.sock"))
            self.assertIn(b"app.sock", p.stdout)   # getpeername answers the path it connected to
            self.assertEqual(sum(len(cluster.owner_of("ukey%d" % i)) for i in range(50)), 50)
        finally:
            cluster.stop()

    def test_unix_servers(self):
        a, b = self.unix_memcached("a.sock"), self.unix_memcached("b.sock")
        self.run_client("unix:%s,unix:%s" % (a, b), os.path.join(self.tmp, "app.sock"))
        counts = []
        for path in (a, b):
            s = __import__("socket").socket(__import__("socket").AF_UNIX)
            s.connect(path)
            s.sendall(b"stats\r\n")
            out = b""
            while not out.endswith(b"END\r\n"):
                out += s.recv(65536)
            counts.append(int(out.split(b"curr_items ")[1].split(b"\r\n")[0]))
            s.close()
        self.assertEqual(sum(counts), 50)
        self.assertTrue(all(c > 0 for c in counts), counts)


if __name__ == "__main__":
    unittest.main()
