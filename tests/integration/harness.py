"""Shared helpers for the integration tests.

Real memcached servers on free loopback ports, the shim library under
LD_PRELOAD, direct queries to each server to see where keys landed.
Every process a test starts is tracked and stopped by pid (never by name).
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("MCSHIM_BUILD", os.path.join(ROOT, "build"))
LIB = os.path.join(BUILD, "libmcshim.so")
TOOLS = os.path.join(BUILD, "tools")
SANITIZE = os.environ.get("SANITIZE") == "1"
# Sanitizer and valgrind runs are slower: scale every wait by this.
TIME_SCALE = float(os.environ.get("MCSHIM_TEST_TIME_SCALE", "4" if SANITIZE else "1"))
MEMCACHED = shutil.which("memcached") or "/usr/bin/memcached"


def free_port(host="127.0.0.1", family=socket.AF_INET):
    """A TCP port that was free a moment ago on host."""
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def wait_port(host, port, timeout=5.0):
    deadline = time.time() + timeout * TIME_SCALE
    while time.time() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


class Memcached:
    """One real memcached server on a free loopback port."""

    def __init__(self, host="127.0.0.1", port=None, extra=()):
        self.host = host
        self.port = port or free_port(host)
        self.extra = list(extra)
        self.proc = None
        self.start()

    def start(self):
        args = [MEMCACHED, "-U", "0", "-l", self.host, "-p", str(self.port), "-t", "1", "-m", "64"]
        if os.geteuid() == 0:
            args += ["-u", "root"]
        self.proc = subprocess.Popen(args + self.extra, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_port(self.host, self.port):
            self.stop()
            raise RuntimeError("memcached did not start on %s:%d" % (self.host, self.port))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    @property
    def addr(self):
        return "%s:%d" % (self.host, self.port) if ":" not in self.host else "[%s]:%d" % (self.host, self.port)

    def request(self, data, until=b"END\r\n", timeout=2.0):
        """Send raw bytes straight to this server (no shim) and read until `until`."""
        with socket.create_connection((self.host, self.port), timeout=timeout * TIME_SCALE) as s:
            s.sendall(data)
            out = b""
            while not out.endswith(until):
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
            return out

    def get(self, key):
        """Value of key on this server, or None."""
        out = self.request(b"get " + key.encode() + b"\r\n")
        if not out.startswith(b"VALUE "):
            return None
        header, rest = out.split(b"\r\n", 1)
        n = int(header.split()[3])
        return rest[:n]

    def has(self, key):
        return self.get(key) is not None

    def stats(self):
        out = self.request(b"stats\r\n")
        res = {}
        for line in out.split(b"\r\n"):
            parts = line.split()
            if len(parts) == 3 and parts[0] == b"STAT":
                res[parts[1].decode()] = parts[2].decode()
        return res


class Cluster:
    """n memcached servers; .servers is the MCSHIM_SERVERS value."""

    def __init__(self, n=4):
        self.nodes = [Memcached() for _ in range(n)]

    @property
    def servers(self):
        return ",".join(m.addr for m in self.nodes)

    def stop(self):
        for m in self.nodes:
            m.stop()

    def owner_of(self, key):
        """Indices of the servers that hold key (asked directly)."""
        return [i for i, m in enumerate(self.nodes) if m.has(key)]


def preload_env(servers, intercept, extra=None, base=None):
    """Environment for a client process running under the shim."""
    env = dict(base if base is not None else os.environ)
    preload = [LIB]
    if SANITIZE:
        # The sanitizer runtime must come first in LD_PRELOAD for an uninstrumented host.
        asan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
        ubsan = subprocess.run(["gcc", "-print-file-name=libubsan.so"], capture_output=True, text=True).stdout.strip()
        preload = [asan, ubsan] + preload
        env["ASAN_OPTIONS"] = "detect_leaks=0:verify_asan_link_order=0:abort_on_error=1"
        env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    env["LD_PRELOAD"] = " ".join(preload)
    env["MCSHIM_SERVERS"] = servers
    env["MCSHIM_INTERCEPT"] = intercept
    if extra:
        env.update(extra)
    return env


def ring_owner(servers, keys, hash_name="md5", dist="ketama"):
    """Server index ketama assigns to each key, from build/tools/mcshim_ring."""
    tool = os.path.join(TOOLS, "mcshim_ring")
    out = subprocess.run([tool, "-s", servers, "-H", hash_name, "-d", dist],
                         input="\n".join(keys) + "\n", capture_output=True, text=True, check=True).stdout
    return [int(line.split("\t")[1]) for line in out.splitlines() if line]


def run(args, env, timeout=30, input=None, check=True):
    """Run a client command; fail the test with its output if it fails."""
    p = subprocess.run(args, env=env, capture_output=True, timeout=timeout * TIME_SCALE, input=input)
    if check and p.returncode != 0:
        raise AssertionError("%s exited %d\nstdout: %s\nstderr: %s" % (
            args, p.returncode, p.stdout.decode(errors="replace")[-3000:], p.stderr.decode(errors="replace")[-3000:]))
    return p


class ClusterTest(unittest.TestCase):
    """Base class: a fresh 4-server cluster per test class and an unused intercept port."""

    nservers = 4

    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster(cls.nservers)
        cls.intercept_port = free_port()
        cls.intercept = "127.0.0.1:%d" % cls.intercept_port
        cls.tmp = tempfile.mkdtemp(prefix="mcshim-test-")

    @classmethod
    def tearDownClass(cls):
        cls.cluster.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        for m in self.cluster.nodes:
            if m.proc is None:
                m.start()
            m.request(b"flush_all\r\n", until=b"OK\r\n")

    def env(self, extra=None):
        return preload_env(self.cluster.servers, self.intercept, extra)

    def assert_on_ring(self, keys, hash_name="md5", dist="ketama"):
        """Each key is on exactly the server the ring names, and nowhere else."""
        want = ring_owner(self.cluster.servers, keys, hash_name, dist)
        for key, idx in zip(keys, want):
            self.assertEqual(self.cluster.owner_of(key), [idx], "key %r" % key)
