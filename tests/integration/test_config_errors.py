"""Bad configuration never hurts the host (ARCHITECTURE.md principle 1).

For each bad variable the host (/usr/bin/python3 under LD_PRELOAD) must keep running
and exit 0, stderr must hold exactly one line naming the variable and the bad value,
and the shim must stay inert: the intercept address, here a real memcached, is then
reached directly (the value lands on it, not on the pool). With nothing listening
there the client gets a real ECONNREFUSED. Unset MCSHIM_SERVERS: nothing on stderr,
pass-through. A valid configuration is the control: the same connect is intercepted.
"""
import unittest

import harness

HOST_SCRIPT = r"""
import sys
sys.path.insert(0, %r)
import mcraw
print("alive", flush=True)
addr = sys.argv[1]
for i in range(2):  # two connections: still only one message
    try:
        r = mcraw.exchange(addr, [{"data": b"set cfgkey 0 0 5\r\nhello\r\nget cfgkey\r\n"}], timeout=5)
    except ConnectionRefusedError:
        print("refused")
        sys.exit(0)
    print(r[0].decode(errors="replace").replace("\r\n", "|"))
""" % harness.CLIENTS

WANT = "STORED|VALUE cfgkey 0 5|hello|END|"


class ConfigErrorsTest(harness.ClusterTest):
    nservers = 2

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if harness.DIRECT:
            raise unittest.SkipTest("shim-only test (MCSHIM_TEST_DIRECT=1)")
        cls.target = harness.Memcached()

    @classmethod
    def tearDownClass(cls):
        cls.target.stop()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.target.flush()

    def host(self, env_vars, intercept=None):
        """Runs the host with LD_PRELOAD and exactly env_vars as MCSHIM_* (MCSHIM_INTERCEPT
        defaults to the target); the host connects to `intercept` (default: the target)."""
        env = harness.preload_env(None, None, base=harness.plain_env())
        env.setdefault("MCSHIM_INTERCEPT", self.target.addr)
        env.update(env_vars)
        p = harness.run([harness.PY, "-c", HOST_SCRIPT, intercept or self.target.addr], env, timeout=20, check=False)
        return p, p.stdout.decode(errors="replace").splitlines(), harness.shim_stderr_lines(p)

    def assert_inert(self, var, value, env_vars):
        p, out, err = self.host(env_vars)
        self.assertEqual(p.returncode, 0, "host died: rc %d, stderr %r" % (p.returncode, err))
        self.assertEqual(out[:1], ["alive"])
        self.assertEqual(len(err), 1, "want exactly one stderr line, got %r" % err)
        self.assertIn(var, err[0])
        if value:
            self.assertIn(value, err[0], "the message must show the bad value")
        # inert: the connection went straight to the real server at the intercept address
        self.assertEqual(out[1:], [WANT, WANT], out)
        self.assertEqual(self.target.get("cfgkey"), b"hello")
        self.assertEqual(self.cluster.owner_of("cfgkey"), [])
        return err[0]

    def valid(self, **over):
        env = {"MCSHIM_SERVERS": self.cluster.servers}
        env.update(over)
        return env

    # -- MCSHIM_SERVERS ----------------------------------------------------------------
    def test_servers_no_port(self):
        self.assert_inert("MCSHIM_SERVERS", "foo", {"MCSHIM_SERVERS": "foo"})

    def test_servers_port_out_of_range(self):
        self.assert_inert("MCSHIM_SERVERS", "99999", {"MCSHIM_SERVERS": "127.0.0.1:99999"})

    def test_servers_zero_weight(self):
        self.assert_inert("MCSHIM_SERVERS", "127.0.0.1:11211:0", {"MCSHIM_SERVERS": "127.0.0.1:11211:0"})

    def test_servers_empty(self):
        self.assert_inert("MCSHIM_SERVERS", "", {"MCSHIM_SERVERS": ""})

    def test_servers_non_numeric_port(self):
        self.assert_inert("MCSHIM_SERVERS", "abc", {"MCSHIM_SERVERS": "127.0.0.1:abc"})

    def test_servers_one_bad_entry_of_two(self):
        self.assert_inert("MCSHIM_SERVERS", "foo", {"MCSHIM_SERVERS": self.cluster.nodes[0].addr + ",foo"})

    # -- other variables, with a valid pool --------------------------------------------
    def test_bad_hash(self):
        self.assert_inert("MCSHIM_HASH", "nosuchhash", self.valid(MCSHIM_HASH="nosuchhash"))

    def test_hash_is_case_sensitive(self):
        self.assert_inert("MCSHIM_HASH", "MD5", self.valid(MCSHIM_HASH="MD5"))

    def test_bad_distribution(self):
        self.assert_inert("MCSHIM_DISTRIBUTION", "random", self.valid(MCSHIM_DISTRIBUTION="random"))

    def test_bad_timeout(self):
        for bad in ("abc", "-5", "10x", "0"):
            with self.subTest(value=bad):
                self.target.flush()
                self.assert_inert("MCSHIM_TIMEOUT_MS", bad, self.valid(MCSHIM_TIMEOUT_MS=bad))

    def test_bad_retry(self):
        self.assert_inert("MCSHIM_RETRY_MS", "soon", self.valid(MCSHIM_RETRY_MS="soon"))

    def test_bad_intercept(self):
        # nothing to intercept then: the host connects to the target on its own
        p, out, err = self.host(self.valid(MCSHIM_INTERCEPT="nonsense"), intercept=self.target.addr)
        self.assertEqual(p.returncode, 0)
        self.assertEqual(len(err), 1, err)
        self.assertIn("MCSHIM_INTERCEPT", err[0])
        self.assertIn("nonsense", err[0])
        self.assertEqual(out, ["alive", WANT, WANT])

    def test_other_variables(self):
        for var, bad in (("MCSHIM_CONNECTIONS", "lots"), ("MCSHIM_FAILURE_LIMIT", "x"),
                         ("MCSHIM_ITEM_MAX", "huge"), ("MCSHIM_LOG_LEVEL", "loud")):
            with self.subTest(var=var):
                self.target.flush()
                self.assert_inert(var, bad, self.valid(**{var: bad}))

    def test_bad_config_nothing_listening_is_refused(self):
        port = harness.free_port()
        p, out, err = self.host({"MCSHIM_SERVERS": "foo", "MCSHIM_INTERCEPT": "127.0.0.1:%d" % port},
                                intercept="127.0.0.1:%d" % port)
        self.assertEqual(p.returncode, 0, err)
        self.assertEqual(out, ["alive", "refused"])
        self.assertEqual(len(err), 1, err)

    # -- no configuration / valid configuration ----------------------------------------
    def test_unset_servers_is_silent_pass_through(self):
        p, out, err = self.host({})
        self.assertEqual(p.returncode, 0)
        self.assertEqual(err, [])
        self.assertEqual(out, ["alive", WANT, WANT])
        self.assertEqual(self.target.get("cfgkey"), b"hello")

    def test_valid_config_intercepts_even_if_something_listens(self):
        p, out, err = self.host(self.valid())
        self.assertEqual(p.returncode, 0)
        self.assertEqual(err, [])
        self.assertEqual(out, ["alive", WANT, WANT])
        self.assertIsNone(self.target.get("cfgkey"), "the shim let the connection through to the target")
        self.assert_on_ring(["cfgkey"], values={"cfgkey": b"hello"})


if __name__ == "__main__":
    unittest.main()
