"""PHP through the shim: php-cli loads php-memcached (libmemcached) and php-memcache
(its own protocol code) with dlopen after the shim is already in the process.

Memcached class: set/get/getMulti (+GET_EXTENDED)/setMulti/delete/deleteMulti/increment/
decrement/cas/touch, serialized arrays, ~1MB values; Memcache class: connect/set/get/
multi-get/delete/increment/decrement, binary values. Replies are checked in PHP, then
placement and contents on the real servers.
"""
import os
import shutil
import unittest

import harness

PHP = shutil.which("php") or "/usr/bin/php"
CLIENT = os.path.join(harness.CLIENTS, "php_client.php")


@unittest.skipUnless(os.path.exists(PHP), "php-cli not installed")
# php dlopens its extensions with RTLD_DEEPBIND, which the ASan runtime refuses outright
# (google/sanitizers#611): php cannot run with the sanitizer runtimes preloaded.
@unittest.skipIf(harness.SANITIZE, "php's RTLD_DEEPBIND dlopen aborts under ASan")
class PhpTest(harness.ClusterTest):

    def scenario(self, name):
        host, port = self.intercept.rsplit(":", 1)
        return self.run_client([PHP, CLIENT, host, port, name], min_servers=4)

    def test_memcached_class(self):
        report, n = self.scenario("memcached")
        self.assertEqual(n, 150)
        self.assertEqual(len(report["absent"]), 6)

    def test_memcached_class_no_block(self):
        _, n = self.scenario("memcached_noblock")
        self.assertEqual(n, 150)

    def test_memcache_class(self):
        _, n = self.scenario("memcache")
        self.assertEqual(n, 102)

    def test_sockets_extension_raw_client(self):
        # ext/sockets calls connect() itself from a dlopen(RTLD_DEEPBIND)ed module: the
        # smallest PHP case of an extension reaching the shim.
        host, port = self.intercept.rsplit(":", 1)
        code = ('$s = socket_create(AF_INET, SOCK_STREAM, SOL_TCP);'
                'if (!@socket_connect($s, "%s", %s)) { echo "connect failed: ", socket_strerror(socket_last_error($s)); exit(1); }'
                '$req = "set phpsock 0 0 2\r\nok\r\nget phpsock\r\n"; socket_write($s, $req, strlen($req));'
                '$out = ""; while (substr($out, -5) !== "END\r\n") { $d = socket_read($s, 65536); if ($d === false || $d === "") break; $out .= $d; }'
                'echo $out;') % (host, port)
        p = harness.run([PHP, "-r", code], self.env(), check=False)
        self.assertEqual(p.stdout, b"STORED\r\nVALUE phpsock 0 2\r\nok\r\nEND\r\n", p.stderr + p.stdout)
        self.assert_on_ring(["phpsock"], values={"phpsock": b"ok"})

    def test_extensions_loaded(self):
        p = harness.run([PHP, "-m"], self.env())
        mods = p.stdout.decode().split()
        self.assertIn("memcached", mods)
        self.assertIn("memcache", mods)
        self.assertEqual(harness.shim_stderr_lines(p), [])


if __name__ == "__main__":
    unittest.main()
