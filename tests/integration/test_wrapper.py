"""scripts/mcshim, the wrapper: it runs an unmodified client under the shim, and
its usage errors are one line on stderr with exit status 2.

The end-to-end tests run `scripts/mcshim -s SERVERS -l 127.0.0.1:PORT --
/usr/bin/python3 client.py` (pymemcache, one server address) and ask each
memcached directly where the keys landed. The wrapper's own behaviour (flags to
variables, LD_PRELOAD order, exec, install path substitution) is checked with
programs that print their environment.
"""
import json
import os
import re
import subprocess
import tempfile
import unittest

import harness
from harness import LIB, ROOT, TOOLS, ClusterTest, free_port, preload_env, run

WRAPPER = os.path.join(ROOT, "scripts", "mcshim")
PY = "/usr/bin/python3"
HAVE_LIB = os.path.isfile(LIB)
HAVE_RING = os.access(os.path.join(TOOLS, "mcshim_ring"), os.X_OK)

CLIENT = r'''
import sys
from pymemcache.client.base import Client

host, port = sys.argv[1].rsplit(":", 1)
n = int(sys.argv[2])
mc = Client((host, int(port)), connect_timeout=5, timeout=5)
keys = ["wrap:%d" % i for i in range(n)]
for k in keys:
    if not mc.set(k, ("v-" + k).encode(), noreply=False):
        sys.exit("set %s not stored" % k)
bad = [k for k in keys if mc.get(k) != ("v-" + k).encode()]
if bad:
    sys.exit("read back wrong values for %d keys, first %s" % (len(bad), bad[0]))
many = mc.get_many(keys)
if len(many) != n or any(many[k] != ("v-" + k).encode() for k in keys):
    sys.exit("get_many returned %d of %d keys" % (len(many), n))
print("ok %d" % n)
'''


def base_env(extra=None, lib=LIB):
    """The environment the tests give the wrapper: MCSHIM_LIB set, no MCSHIM_SERVERS/INTERCEPT
    (the wrapper must set them), sanitizer runtimes in LD_PRELOAD when SANITIZE=1."""
    env = preload_env("unused", "unused")
    for v in list(env):
        if v.startswith("MCSHIM_"):
            del env[v]
    env["LD_PRELOAD"] = " ".join(p for p in env["LD_PRELOAD"].split() if p != LIB)
    if not env["LD_PRELOAD"]:
        del env["LD_PRELOAD"]
    env["MCSHIM_LIB"] = lib
    if extra:
        env.update(extra)
    return env


def wrapper(args, env, timeout=30, input=None):
    return subprocess.run([WRAPPER] + args, env=env, capture_output=True, text=True,
                          timeout=timeout * harness.TIME_SCALE, input=input)


class WrapperRunsClient(ClusterTest):
    """The wrapper puts an unmodified pymemcache client onto the pool."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.client = os.path.join(cls.tmp, "client.py")
        with open(cls.client, "w") as f:
            f.write(CLIENT)

    def run_client(self, flags, n=200):
        args = [WRAPPER, "-s", self.cluster.servers, "-l", self.intercept] + flags + \
               ["--", PY, self.client, self.intercept, str(n)]
        p = run(args, base_env())
        self.assertEqual(p.stdout.decode().strip(), "ok %d" % n)
        return ["wrap:%d" % i for i in range(n)]

    def assert_spread(self, keys):
        holders = [self.cluster.owner_of(k) for k in keys]
        for key, h in zip(keys, holders):
            self.assertEqual(len(h), 1, "key %r is on servers %s" % (key, h))
        self.assertGreater(len({h[0] for h in holders}), 1, "every key landed on one server")

    @unittest.skipUnless(HAVE_LIB, "libmcshim.so not built")
    def test_keys_stored_and_read_back(self):
        keys = self.run_client([])
        self.assert_spread(keys)
        if HAVE_RING:
            self.assert_on_ring(keys)

    @unittest.skipUnless(HAVE_LIB, "libmcshim.so not built")
    def test_hash_and_distribution_flags_reach_the_library(self):
        keys = self.run_client(["-H", "crc32", "-d", "modula", "-t", "500", "-r", "1000"], n=100)
        self.assert_spread(keys)
        if HAVE_RING:
            self.assert_on_ring(keys, "crc32", "modula")

    @unittest.skipUnless(HAVE_LIB, "libmcshim.so not built")
    def test_nothing_listens_on_the_intercept_address(self):
        """The client's success above is the shim's: the intercept port is not served by anyone."""
        p = subprocess.run([PY, self.client, self.intercept, "1"], env=base_env(), capture_output=True,
                           timeout=30 * harness.TIME_SCALE)
        self.assertNotEqual(p.returncode, 0, "something answers on %s without the shim" % self.intercept)


@unittest.skipUnless(HAVE_LIB, "libmcshim.so not built")
class WrapperEnvironment(unittest.TestCase):
    """Flags become MCSHIM_* variables; LD_PRELOAD is prepended, kept, not duplicated; exec."""

    servers = "127.0.0.1:%d,127.0.0.1:%d:3" % (free_port(), free_port())

    def env_of(self, flags, env):
        p = wrapper(flags + ["--", PY, "-c", "import os, json; print(json.dumps(dict(os.environ)))"], env)
        self.assertEqual(p.returncode, 0, p.stderr)
        return json.loads(p.stdout)

    def test_flags_set_variables(self):
        out = self.env_of(["-s", self.servers, "-l", "127.0.0.1:7,127.0.0.1:8", "-H", "fnv1a_64",
                           "-d", "modula", "-t", "250", "-r", "900"], base_env())
        self.assertEqual(out["MCSHIM_SERVERS"], self.servers)
        self.assertEqual(out["MCSHIM_INTERCEPT"], "127.0.0.1:7,127.0.0.1:8")
        self.assertEqual(out["MCSHIM_HASH"], "fnv1a_64")
        self.assertEqual(out["MCSHIM_DISTRIBUTION"], "modula")
        self.assertEqual(out["MCSHIM_TIMEOUT_MS"], "250")
        self.assertEqual(out["MCSHIM_RETRY_MS"], "900")

    def test_backup_and_replicas_flags(self):
        out = self.env_of(["-s", self.servers, "-b", "127.0.0.1:9:2,127.0.0.1:10", "-R", "2"], base_env())
        self.assertEqual(out["MCSHIM_BACKUP"], "127.0.0.1:9:2,127.0.0.1:10")
        self.assertEqual(out["MCSHIM_REPLICAS"], "2")

    def test_unset_flags_leave_library_defaults(self):
        out = self.env_of(["-s", self.servers], base_env())
        for v in ("MCSHIM_INTERCEPT", "MCSHIM_HASH", "MCSHIM_DISTRIBUTION", "MCSHIM_TIMEOUT_MS", "MCSHIM_RETRY_MS",
                  "MCSHIM_BACKUP", "MCSHIM_REPLICAS"):
            self.assertNotIn(v, out)

    def test_library_is_prepended_and_existing_preload_kept(self):
        other = libm_path()
        env = base_env()
        before = env.get("LD_PRELOAD", "")
        env["LD_PRELOAD"] = (before + " " + other).strip()
        parts = self.env_of(["-s", self.servers], env)["LD_PRELOAD"].split()
        self.assertIn(LIB, parts)
        self.assertIn(other, parts)
        self.assertLess(parts.index(LIB), parts.index(other))
        # Sanitizer runtimes (SANITIZE=1) stay ahead of the library.
        for p in before.split():
            self.assertLess(parts.index(p), parts.index(LIB))
        self.assertEqual(parts.count(LIB), 1)

    def test_library_not_added_twice(self):
        env = base_env()
        env["LD_PRELOAD"] = (env.get("LD_PRELOAD", "") + " " + LIB).strip()
        parts = self.env_of(["-s", self.servers], env)["LD_PRELOAD"].split()
        self.assertEqual(parts.count(LIB), 1)

    def test_exec_keeps_pid_and_arguments(self):
        p = subprocess.Popen([WRAPPER, "-s", self.servers, "--", PY, "-c",
                              "import os, sys; print(os.getpid()); print(sys.argv[1:])", "a b", "", "*", "-s"],
                             env=base_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = p.communicate(timeout=30 * harness.TIME_SCALE)
        self.assertEqual(p.returncode, 0, err)
        lines = out.splitlines()
        self.assertEqual(int(lines[0]), p.pid, "the wrapper did not exec the command")
        self.assertEqual(lines[1], repr(["a b", "", "*", "-s"]))

    def test_exit_status_is_the_commands(self):
        p = wrapper(["-s", self.servers, "--", PY, "-c", "import sys; sys.exit(7)"], base_env())
        self.assertEqual(p.returncode, 7)

    def test_verbose_prints_settings(self):
        p = wrapper(["-v", "-s", self.servers, "--", "/bin/true"], base_env())
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("MCSHIM_SERVERS=" + self.servers, p.stderr)
        self.assertIn(LIB, p.stderr)


class WrapperErrors(unittest.TestCase):
    """Usage errors: exit 2, exactly one line on stderr naming the problem, nothing on stdout."""

    servers = "127.0.0.1:%d" % free_port()

    def assert_usage_error(self, args, pattern, env=None, status=2):
        p = wrapper(args, env or base_env())
        self.assertEqual(p.returncode, status, "stdout=%r stderr=%r" % (p.stdout, p.stderr))
        self.assertEqual(p.stdout, "")
        lines = p.stderr.splitlines()
        self.assertEqual(len(lines), 1, "stderr: %r" % p.stderr)
        self.assertTrue(lines[0].startswith("mcshim: "), lines[0])
        self.assertRegex(lines[0], pattern)

    def test_missing_servers(self):
        self.assert_usage_error(["--", "/bin/true"], r"servers")

    def test_missing_servers_and_command(self):
        self.assert_usage_error([], r"servers")

    def test_missing_command(self):
        self.assert_usage_error(["-s", self.servers], r"command")
        self.assert_usage_error(["-s", self.servers, "--"], r"command")

    def test_library_not_found(self):
        missing = os.path.join(ROOT, "no-such-dir", "libmcshim.so")
        self.assert_usage_error(["-s", self.servers, "--", "/bin/true"], r"library not found: .*no-such-dir",
                                env=base_env(lib=missing))

    def test_unknown_option(self):
        self.assert_usage_error(["-Z", "-s", self.servers, "--", "/bin/true"], r"unknown option -Z")

    def test_option_without_value(self):
        self.assert_usage_error(["-s"], r"-s needs a value")

    def test_bad_values(self):
        for flags, pattern in (
                (["-s", "127.0.0.1"], r"no port"),
                (["-s", "127.0.0.1:0"], r"bad port"),
                (["-s", "127.0.0.1:70000"], r"bad port"),
                (["-s", "127.0.0.1:11211:0"], r"bad entry"),
                (["-s", "127.0.0.1:1,,127.0.0.1:2"], r"bad list"),
                (["-s", self.servers, "-l", "127.0.0.1"], r"no port"),
                (["-s", self.servers, "-l", "127.0.0.1:5:2"], r"bad entry"),
                (["-s", self.servers, "-d", "rendezvous"], r"unknown distribution"),
                (["-s", self.servers, "-t", "10ms"], r"timeout"),
                (["-s", self.servers, "-r", "0"], r"retry"),
                (["-s", self.servers, "-b", "127.0.0.1"], r"no port"),
                (["-s", self.servers, "-R", "0"], r"replicas"),
                (["-s", self.servers, "-R", "9"], r"replicas"),
                (["-s", self.servers, "-H", "MD5;"], r"hash")):
            with self.subTest(flags=flags):
                self.assert_usage_error(flags + ["--", "/bin/true"], pattern)

    def test_command_not_found_is_127(self):
        if not HAVE_LIB:
            self.skipTest("libmcshim.so not built")
        self.assert_usage_error(["-s", self.servers, "--", "no-such-command-mcshim"], r"not found", status=127)

    def test_help(self):
        p = wrapper(["-h"], base_env())
        self.assertEqual(p.returncode, 0)
        self.assertIn("usage: mcshim -s", p.stdout)
        self.assertEqual(p.stderr, "")


class WrapperLibraryPath(unittest.TestCase):
    """Where the wrapper looks for the library when MCSHIM_LIB is not set."""

    def env_without_lib(self):
        env = base_env()
        del env["MCSHIM_LIB"]
        return env

    def test_source_tree_uses_build_dir_next_to_script(self):
        p = wrapper(["-v", "-s", "127.0.0.1:%d" % free_port(), "--", "/bin/true"], self.env_without_lib())
        m = re.search(r"(/\S*/build/libmcshim\.so)", p.stderr)
        self.assertIsNotNone(m, p.stderr)
        self.assertEqual(os.path.realpath(m.group(1)), os.path.realpath(os.path.join(ROOT, "build", "libmcshim.so")))

    def test_installed_copy_uses_prefix_lib(self):
        """The Makefile's install rule: sed 's|@LIBDIR@|$(PREFIX)/lib|' scripts/mcshim."""
        with tempfile.TemporaryDirectory(prefix="mcshim-install-") as prefix:
            os.makedirs(os.path.join(prefix, "bin"))
            os.makedirs(os.path.join(prefix, "lib"))
            installed = os.path.join(prefix, "bin", "mcshim")
            with open(WRAPPER) as f:
                text = "\n".join(re.sub("@LIBDIR@", prefix + "/lib", line, count=1) for line in f.read().split("\n"))
            with open(installed, "w") as f:
                f.write(text)
            os.chmod(installed, 0o755)
            p = subprocess.run([installed, "-s", "127.0.0.1:%d" % free_port(), "--", "/bin/true"],
                               env=self.env_without_lib(), capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, 2)
            self.assertIn("library not found: %s/lib/libmcshim.so" % prefix, p.stderr)
            if HAVE_LIB:
                os.symlink(LIB, os.path.join(prefix, "lib", "libmcshim.so"))
                p = subprocess.run([installed, "-v", "-s", "127.0.0.1:%d" % free_port(), "--", "/bin/true"],
                                   env=self.env_without_lib(), capture_output=True, text=True, timeout=30)
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertRegex(p.stderr, r"LD_PRELOAD=.*%s/lib/libmcshim\.so" % re.escape(prefix))


def libm_path():
    """Path of a shared library that is harmless to preload: libm, which python3 already maps."""
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1]
            if re.search(r"/libm\.so\.\d+$", path):
                return path
    raise unittest.SkipTest("no libm in /proc/self/maps")


if __name__ == "__main__":
    unittest.main()
