"""The application's socket behaves like a TCP connection to memcached.

Every check of tests/tools/sockcheck.c runs twice:
  1. directly against one real memcached, without LD_PRELOAD: proves the check
     encodes plain Linux TCP semantics (if this fails, the check or the
     environment is wrong, not the shim);
  2. under the shim (LD_PRELOAD, MCSHIM_SERVERS=a 4-server cluster) against an
     intercept address nobody listens on, with --shim: the same expectations
     must hold for the intercepted connection.
Variants: IPv4 (127.0.0.1), IPv6 ([::1]) and a host name (localhost, resolved
by getaddrinfo in sockcheck and by the shim from MCSHIM_INTERCEPT).
"""
import os
import socket
import subprocess
import unittest

import harness
from harness import ClusterTest, Memcached, free_port, preload_env

SOCKCHECK = os.path.join(harness.TOOLS, "sockcheck")

CHECKS = [
    "blocking", "nonblocking", "select", "epoll", "timeouts", "sockopts", "names", "dup",
    "highfd", "threads", "fork", "fclose", "closeall", "errno", "cloexec",
]
# The checks the host-name variant repeats (the ones where the address matters).
HOSTNAME_CHECKS = ["blocking", "nonblocking", "sockopts", "names", "dup", "errno", "fork"]

# sockcheck bounds itself (poll timeouts, a watchdog of 90 s x scale); this is the outer bound.
TIMEOUT = 150


def direct_env():
    """The environment without the shim."""
    return harness.plain_env()


def has_ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            s.bind(("::1", 0))
            return True
        finally:
            s.close()
    except OSError:
        return False


class SockcheckMixin:
    def sockcheck(self, check, host, port, env, shim):
        args = [SOCKCHECK] + (["--shim"] if shim else []) + [check, host, str(port)]
        try:
            p = subprocess.run(args, env=env, capture_output=True, timeout=TIMEOUT * harness.TIME_SCALE)
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode(errors="replace")
            self.fail("%s timed out after %ds\n%s" % (" ".join(args), TIMEOUT * harness.TIME_SCALE, out[-3000:]))
        out = p.stdout.decode(errors="replace")
        err = p.stderr.decode(errors="replace")
        if p.returncode != 0:
            fails = [l for l in out.splitlines() if l.startswith("FAIL") or l.startswith("info")]
            self.fail("%s%s exited %d\n%s\n--- stderr (tail):\n%s" % (
                "LD_PRELOAD " if shim else "", " ".join(args), p.returncode,
                "\n".join(fails)[-6000:], err[-2000:]))
        self.assertRegex(out, r"(?m)^PASS %s: 0 sub-check" % check)
        return out


def _make_test(check, variant):
    def test(self):
        # 1. Without the shim: the expectations are those of plain TCP.
        self.sockcheck(check, self.direct_host, self.direct.port, direct_env(), shim=False)
        # 2. Through the shim, on the intercept address (MCSHIM_TEST_DIRECT=1: direct half only).
        if harness.DIRECT:
            return
        self.sockcheck(check, self.intercept_host, self.intercept_port, self.env(), shim=True)
    test.__name__ = "test_%s_%s" % (variant, check)
    test.__doc__ = "%s: sockcheck %s, direct then through the shim" % (variant, check)
    return test


class SocketBehaviourIPv4(SockcheckMixin, ClusterTest):
    """MCSHIM_INTERCEPT=127.0.0.1:<unused port>."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.direct = Memcached()
        cls.direct_host = "127.0.0.1"
        cls.intercept_host = "127.0.0.1"

    @classmethod
    def tearDownClass(cls):
        cls.direct.stop()
        super().tearDownClass()

    def test_list_is_complete(self):
        """sockcheck knows exactly the checks this file runs."""
        p = subprocess.run([SOCKCHECK, "list"], capture_output=True, timeout=10, env=direct_env())
        self.assertEqual(p.returncode, 0)
        self.assertEqual(p.stdout.decode().split(), CHECKS)

    def test_unknown_check_is_an_error(self):
        p = subprocess.run([SOCKCHECK, "nosuchcheck", "127.0.0.1", "1"], capture_output=True, timeout=10,
                           env=direct_env())
        self.assertEqual(p.returncode, 2)


for _c in CHECKS:
    setattr(SocketBehaviourIPv4, "test_ipv4_%s" % _c, _make_test(_c, "ipv4"))


@unittest.skipUnless(has_ipv6_loopback(), "no IPv6 loopback")
class SocketBehaviourIPv6(SockcheckMixin, ClusterTest):
    """MCSHIM_INTERCEPT=[::1]:<unused port>; the checks then expect AF_INET6 everywhere."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.direct = Memcached(host="::1", port=free_port("::1", socket.AF_INET6))
        cls.direct_host = "::1"
        cls.intercept_host = "::1"
        if not harness.DIRECT:
            cls.intercept_port = free_port("::1", socket.AF_INET6)
            cls.intercept = "[::1]:%d" % cls.intercept_port

    @classmethod
    def tearDownClass(cls):
        cls.direct.stop()
        super().tearDownClass()


for _c in CHECKS:
    setattr(SocketBehaviourIPv6, "test_ipv6_%s" % _c, _make_test(_c, "ipv6"))


class SocketBehaviourHostname(SockcheckMixin, ClusterTest):
    """MCSHIM_INTERCEPT=localhost:<unused port>; sockcheck resolves localhost with getaddrinfo."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.direct = Memcached()
        cls.direct_host = "localhost"
        cls.intercept_host = "localhost"
        if harness.DIRECT:
            return
        # localhost may resolve to ::1 too: the port must be free on both.
        for _ in range(50):
            port = free_port()
            if not has_ipv6_loopback():
                break
            try:
                s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
                try:
                    s.bind(("::1", port))
                    break
                finally:
                    s.close()
            except OSError:
                continue
        cls.intercept_port = port
        cls.intercept = "localhost:%d" % port

    @classmethod
    def tearDownClass(cls):
        cls.direct.stop()
        super().tearDownClass()


for _c in HOSTNAME_CHECKS:
    setattr(SocketBehaviourHostname, "test_hostname_%s" % _c, _make_test(_c, "hostname"))
del _c


if __name__ == "__main__":
    unittest.main()
