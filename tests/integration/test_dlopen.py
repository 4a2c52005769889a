"""dlopen: libraries loaded with RTLD_DEEPBIND (as PHP loads extensions) reach the
shim, and the application's own RUNPATH ($ORIGIN) still decides where dlopen looks
(the shim's dlopen must not become the caller).

Builds a tiny host and plugin with gcc at test time: the host has RUNPATH
$ORIGIN/lib and dlopens "libmcsplug.so" (found only there) with the mode given on
its command line; the plugin connects to the intercept address and sends `version`.
"""
import os
import subprocess
import unittest

import harness

HOST_C = r"""
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
    int mode = RTLD_NOW | (strcmp(argv[1], "deepbind") == 0 ? RTLD_DEEPBIND : 0);
    void *h = dlopen("libmcsplug.so", mode);
    if (!h) { printf("dlopen failed: %s\n", dlerror()); return 3; }
    int (*ask)(int) = (int (*)(int))dlsym(h, "plug_version");
    return ask(atoi(argv[2]));
}
"""

PLUG_C = r"""
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
int plug_version(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a; memset(&a, 0, sizeof a);
    a.sin_family = AF_INET; a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(0x7f000001);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) { printf("connect failed\n"); return 4; }
    char buf[128]; ssize_t n;
    if (write(fd, "version\r\n", 9) != 9 || (n = read(fd, buf, sizeof buf - 1)) <= 0) { printf("io failed\n"); return 5; }
    buf[n] = 0; printf("%s", buf); close(fd);
    return strncmp(buf, "VERSION ", 8) == 0 ? 0 : 6;
}
"""


@unittest.skipIf(harness.SANITIZE, "ASan's own dlopen interceptor becomes the caller and loses $ORIGIN "
                                    "(the pitfall the shim's trampoline avoids), and refuses RTLD_DEEPBIND")
class DlopenTest(harness.ClusterTest):
    nservers = 2

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        os.makedirs(os.path.join(cls.tmp, "lib"))
        for name, src in (("host.c", HOST_C), ("plug.c", PLUG_C)):
            with open(os.path.join(cls.tmp, name), "w") as f:
                f.write(src)
        subprocess.run(["gcc", "-shared", "-fPIC", "-o", os.path.join(cls.tmp, "lib", "libmcsplug.so"),
                        os.path.join(cls.tmp, "plug.c")], check=True)
        subprocess.run(["gcc", "-o", os.path.join(cls.tmp, "host"), os.path.join(cls.tmp, "host.c"),
                        "-Wl,--enable-new-dtags,-rpath,$ORIGIN/lib", "-ldl"], check=True)

    def run_host(self, mode):
        return harness.run([os.path.join(self.tmp, "host"), mode, str(self.intercept_port)], self.env(),
                           check=False)

    def test_plain_dlopen_plugin_is_intercepted(self):
        p = self.run_host("plain")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertTrue(p.stdout.startswith(b"VERSION "))

    def test_deepbind_plugin_is_intercepted_and_runpath_kept(self):
        # Nothing listens on the intercept port: only the shim can answer.
        p = self.run_host("deepbind")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertTrue(p.stdout.startswith(b"VERSION "))

    def test_inert_shim_keeps_deepbind_semantics(self):
        env = self.env()
        del env["MCSHIM_SERVERS"]
        p = harness.run([os.path.join(self.tmp, "host"), "plain", str(self.intercept_port)], env, check=False)
        self.assertIn(b"connect failed", p.stdout)   # inert: the real, refused connect


if __name__ == "__main__":
    unittest.main()
