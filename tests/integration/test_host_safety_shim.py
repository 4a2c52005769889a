"""The shim stays safe for its host when it cannot do its job (issue #8).

A real memcached listens ON the intercept address: a server outside the pool, as on
a host where the old single memcached still runs. Whatever goes wrong inside the
shim, an intercepted connect() must never reach it (docs/interposition.md):

- fail closed: out of descriptors (RLIMIT_NOFILE) or unable to start the engine
  thread (RLIMIT_NPROC of a non-root user), connect() fails with the real errno
  (EMFILE, EAGAIN) and one log line; every connection that succeeds is served by
  the pool; none reaches the outside server, and once there is room again new
  connections work;
- the engine owns its descriptors: after the host closes them by raw syscall
  (close_range over the shim's numbers, a daemon's close() loop, close_range(3, ~0U)),
  connections whose engine end was closed see EOF, new connections work through a
  new engine, and no descriptor the host now holds at one of those numbers ever
  receives a byte (the engine's wake-up token once landed in one);
- connect() of a socket whose domain does not match the address (an AF_INET6 or
  AF_UNIX socket given the intercepted AF_INET address, ...) gets the kernel's own
  answer, as without the shim;
- an inherited intercepted descriptor in an exec'd program: served by the parent's
  engine after posix_spawn/vfork, EOF after fork+exec (the child's engine died with
  the old image) and after the parent exits.

Tool: tests/tools/hostsafety.c (build/tools/hostsafety).
"""
import json
import os
import resource
import shutil
import subprocess
import tempfile
import unittest

import harness
from harness import ClusterTest, Memcached

TOOL = os.path.join(harness.TOOLS, "hostsafety")
NOBODY = 65534


def as_nobody():
    """preexec_fn: run as an unprivileged user (RLIMIT_NPROC does not bind root)."""
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)


def nofile(n):
    def set_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return set_limit


class HostSafetyTest(ClusterTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if harness.DIRECT:
            raise unittest.SkipTest("shim-only test (MCSHIM_TEST_DIRECT=1)")
        # The server outside the pool, listening on the very address the shim intercepts.
        cls.outside = Memcached(port=cls.intercept_port)

    @classmethod
    def tearDownClass(cls):
        cls.outside.stop()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.outside.flush()
        self.outside_before = self.outside.stats()

    # -- helpers -------------------------------------------------------------------
    def tool(self, args, env, preexec_fn=None, timeout=60, check=True):
        """Runs hostsafety; returns (report dict, stderr text)."""
        env = dict(env)
        env["MCSHIM_TEST_TIME_SCALE"] = str(harness.TIME_SCALE)
        p = subprocess.run([TOOL] + args, env=env, capture_output=True, preexec_fn=preexec_fn,
                           timeout=timeout * harness.TIME_SCALE)
        out = p.stdout.decode(errors="replace")
        err = p.stderr.decode(errors="replace")
        lines = out.strip().splitlines()
        if not lines or not lines[-1].startswith("{"):
            self.fail("hostsafety %s exited %d without a report\nstdout: %s\nstderr: %s" % (
                " ".join(args), p.returncode, out[-2000:], err[-3000:]))
        report = json.loads(lines[-1])
        if check:
            self.assertEqual(report["failures"], [], "hostsafety %s\nstderr: %s" % (" ".join(args), err[-3000:]))
            self.assertEqual(p.returncode, 0, err[-3000:])
        return report, err

    def assert_outside_untouched(self):
        """No connection (beside our own stats queries) and no command reached the outside server."""
        after = self.outside.stats()
        # total_connections counts the stats connection that asks, once before and once now.
        extra = int(after["total_connections"]) - int(self.outside_before["total_connections"]) - 1
        self.assertEqual(extra, 0, "%d connection(s) reached the server outside the pool" % extra)
        for k in ("cmd_set", "cmd_get"):
            self.assertEqual(int(after[k]), int(self.outside_before[k]), "the server outside the pool saw a %s" % k)
        self.assertEqual(int(after["curr_items"]), 0, "the server outside the pool holds items")

    def assert_keys_on_pool(self, keys):
        self.assertTrue(keys, "the tool stored nothing")
        self.assert_on_ring(keys, values={k: k for k in keys})

    def shim_lines(self, err, word):
        return [l for l in err.splitlines() if l.startswith("mcshim[") and word in l]

    # -- fail closed -----------------------------------------------------------------
    def test_out_of_descriptors_fails_closed(self):
        """ulimit -n 64: connect() fails with EMFILE once the socketpair cannot be made;
        never a connection to the outside server."""
        report, err = self.tool(["emfile", "127.0.0.1", str(self.intercept_port), "emfile"],
                                self.env({"MCSHIM_CONNECTIONS": "1"}), preexec_fn=nofile(64))
        self.assert_outside_untouched()
        self.assertEqual(report["connect_errno"], "EMFILE", report)
        self.assertGreater(report["connections"], 5, report)
        self.assert_keys_on_pool(report["keys"])
        lines = self.shim_lines(err, "refused")
        self.assertEqual(len(lines), 1, err[-2000:])
        self.assertIn("Too many open files", lines[0])

    def test_engine_thread_cannot_start_fails_closed(self):
        """A user at its RLIMIT_NPROC: the engine thread cannot start, connect() fails with
        EAGAIN (twice: no half-started engine is left behind); with the limit raised the
        next connect starts the engine and works."""
        report, err = self.tool(["nproc", "127.0.0.1", str(self.intercept_port), "nproc"], self.env(),
                                preexec_fn=as_nobody)
        self.assertEqual(report["limited"], "EAGAIN", report)
        self.assertEqual(report["limited_again"], "EAGAIN", report)
        self.assertEqual(report["raised"], "0", report)
        self.assertEqual(sorted(report["keys"]), ["nproc-raised"])
        self.assert_keys_on_pool(report["keys"])
        self.assert_outside_untouched()
        self.assertTrue(self.shim_lines(err, "cannot start the engine"), err[-2000:])

    def test_fork_child_without_engine_is_closed_not_shared(self):
        """fork() at the user's RLIMIT_NPROC: the child cannot start its own engine, so its
        copy of the connection is closed (EOF) rather than shared with the parent's stream
        (whose replies it could steal); the parent's connection keeps working."""
        report, err = self.tool(["forkfail", "127.0.0.1", str(self.intercept_port), "forkfail"], self.env(),
                                preexec_fn=as_nobody)
        self.assertIn(report["child"], ("EOF EPIPE", "EOF EOF"), report)
        self.assert_keys_on_pool(report["keys"])
        self.assert_outside_untouched()
        self.assertTrue(self.shim_lines(err, "its copy is closed"), err[-2000:])

    # -- the engine owns its descriptors -------------------------------------------
    def closerange(self, mode):
        report, err = self.tool(["closerange", "127.0.0.1", str(self.intercept_port), "cr-" + mode, mode],
                                self.env(), timeout=90)
        self.assertGreater(report["round0_closed"], 2, report)
        self.assertGreater(report["round1_closed"], 2, report)
        self.assert_keys_on_pool(report["keys"])
        self.assert_outside_untouched()
        # one line per engine retired (one per round)
        self.assertEqual(len(self.shim_lines(err, "closed behind its back")), 2, err[-2000:])

    def test_raw_close_range_of_the_shims_descriptors(self):
        """syscall(SYS_close_range, <the shim's lowest>, ~0U, 0): A sees EOF, B and C work,
        the numbers now held by the host never receive the wake-up token."""
        self.closerange("range")

    def test_raw_close_loop_of_a_daemon(self):
        """A daemon's sweep: syscall(SYS_close, fd) for every fd from 3 up (but the tool's own)."""
        self.closerange("loop")

    def test_raw_close_range_of_everything(self):
        """syscall(SYS_close_range, 3, ~0U, 0): the application's own connection goes too."""
        self.closerange("all")

    # -- socket domain against address family ----------------------------------------
    def test_family_mismatch_gets_the_kernels_answer(self):
        """Every pairing of socket domain, address family and length: the same rc/errno as
        the kernel gives without the shim; the ones the kernel connects are intercepted."""
        args = ["family", "127.0.0.1", str(self.intercept_port)]
        shim, _err = self.tool(args + ["fam"], self.env())
        self.assert_keys_on_pool(shim["keys"])
        self.assert_outside_untouched()
        kernel, _err = self.tool(args + ["famk"], harness.plain_env())
        self.assertEqual(shim["results"], kernel["results"])
        # the pairings the kernel connects are exactly the ones the shim took over
        self.assertEqual(sorted(k[len("fam-"):] for k in shim["keys"]),
                         sorted(k for k, v in kernel["results"].items() if v == "0"))
        self.assertEqual(kernel["results"]["inet6-in-16"], "EINVAL")
        self.assertEqual(kernel["results"]["inet6-in6mapped-24"], "0")
        self.assertEqual(kernel["results"]["inet6only-in6mapped-28"], "ENETUNREACH")

    def test_family_mismatch_unix_intercept(self):
        """MCSHIM_INTERCEPT=unix:<path>: an AF_INET/AF_INET6 socket given that sockaddr_un gets
        the kernel's error; too long an address too."""
        tmp = tempfile.mkdtemp(prefix="mcshim-fam-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "outside.sock")
        args = [harness.MEMCACHED, "-U", "0", "-s", path, "-t", "1", "-m", "16"]
        if os.geteuid() == 0:
            args += ["-u", "root"]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(proc.wait)
        self.addCleanup(proc.kill)
        self.assertTrue(harness.wait_until(lambda: os.path.exists(path), 5), "memcached did not create " + path)
        env = harness.preload_env(self.cluster.servers, "unix:" + path)
        shim, _err = self.tool(["family", path, "-", "famu"], env)
        kernel, _err = self.tool(["family", path, "-", "famuk"], harness.plain_env())
        self.assertEqual(shim["results"], kernel["results"])
        self.assertEqual(shim["keys"], ["famu-unix-un"])
        self.assert_keys_on_pool(shim["keys"])

    # -- exec with an inherited intercepted descriptor -----------------------------------
    EXEC_PARENT = r"""
import os, socket, sys
intercept_port, mode = int(sys.argv[1]), sys.argv[2]
child = sys.argv[3]
s = socket.create_connection(("127.0.0.1", intercept_port))
s.sendall(b"set inh 0 0 3\r\nabc\r\n")
assert s.recv(100) == b"STORED\r\n"
os.set_inheritable(s.fileno(), True)
args = [sys.executable, "-c", child, str(s.fileno())]
if mode == "spawn":
    pid = os.posix_spawn(sys.executable, args, os.environ)
    os.waitpid(pid, 0)
elif mode == "fork":
    pid = os.fork()
    if pid == 0:
        os.execv(sys.executable, args)
    os.waitpid(pid, 0)
elif mode == "orphan":
    r, w = os.pipe()
    os.set_inheritable(r, True)
    pid = os.posix_spawn(sys.executable, args + [str(r)], os.environ)
    os._exit(0)   # the child reads the connection once we are gone
# the parent's own copy still works (the child made the shared description non-blocking)
s.settimeout(5)
s.sendall(b"get inh\r\n")
out = b""
while not out.endswith(b"END\r\n"):
    out += s.recv(1000)
print("parent", out)
"""

    EXEC_CHILD = r"""
import os, socket, sys, time
fd = int(sys.argv[1])
if len(sys.argv) > 2:
    os.read(int(sys.argv[2]), 1)   # EOF: the parent has exited
    time.sleep(0.2)
s = socket.socket(fileno=fd)
s.setblocking(False)
try:
    print("peek", "EOF" if s.recv(100) == b"" else "data")
except BlockingIOError:
    print("peek", "open")
except OSError as e:
    print("peek", type(e).__name__)
s.settimeout(5)
try:
    s.sendall(b"get inh\r\n")
    out = b""
    while not out.endswith(b"END\r\n"):
        chunk = s.recv(1000)
        if not chunk:
            break
        out += chunk
    print("child", out)
except OSError as e:
    print("child", type(e).__name__)
"""

    def exec_case(self, mode):
        p = harness.run([harness.PY, "-c", self.EXEC_PARENT, str(self.intercept_port), mode, self.EXEC_CHILD],
                        self.env(), timeout=30)
        return p.stdout.decode().splitlines()

    def test_exec_after_posix_spawn_is_served_by_the_parent(self):
        """posix_spawn runs no fork handlers: the exec'd program shares the parent's
        stream, and the parent's engine answers it, as a shared TCP connection would."""
        lines = self.exec_case("spawn")
        self.assertIn("peek open", lines)
        self.assertIn("child b'VALUE inh 0 3\\r\\nabc\\r\\nEND\\r\\n'", lines)
        self.assertIn("parent b'VALUE inh 0 3\\r\\nabc\\r\\nEND\\r\\n'", lines)
        self.assert_outside_untouched()

    def test_exec_after_fork_sees_eof(self):
        """fork gave the child its own stream and engine; exec ends that engine, so the
        exec'd program finds the connection closed at once: reads EOF, writes EPIPE
        (never a hang, never the parent's replies)."""
        lines = self.exec_case("fork")
        self.assertIn("peek EOF", lines)
        self.assertTrue({"child b''", "child BrokenPipeError"} & set(lines), lines)
        self.assertIn("parent b'VALUE inh 0 3\\r\\nabc\\r\\nEND\\r\\n'", lines)
        self.assert_outside_untouched()

    def test_exec_after_parent_exit_sees_eof(self):
        """posix_spawn, then the parent exits: its engine is gone, the program reads EOF
        (or its write fails with EPIPE)."""
        lines = self.exec_case("orphan")
        self.assertIn("peek EOF", lines)
        self.assertTrue({"child b''", "child BrokenPipeError"} & set(lines), lines)
        self.assert_outside_untouched()


if __name__ == "__main__":
    unittest.main()
