"""Host safety (issue #8): a hostile or broken server, or a greedy client, must never
hurt the application that loads the shim.

The shim runs inside the application, so whatever a server sends, the application
must get a memcached answer, promptly, with none of the server's bad bytes, and
without the shim's memory growing with what a server or the client does. Each client
below is a process of its own under LD_PRELOAD (clients/hostile_client.py, a raw
socket client that reports its own peak RSS; binclient.py; pymemcache), talking to an
intercept address where nothing listens. Its servers are fakeserver.FakeServer
instances scripted per test (exact bytes checked, replies injected), or real
memcached, also behind a bandwidth throttle (fakeserver.ThrottleProxy).

What is checked, by class:
  HostileServerTest   garbage, mismatched replies, bogus VALUEs and floods, binary
                      mismatches, trickle, silence, reset
  SlowLinkTest        a healthy server behind a 20 MB/s link: a 40 MB multi-get is
                      not cut short by MCSHIM_TIMEOUT_MS=300
  GreedyClientTest    a client that pipelines 3000 1 MB gets without reading, one
                      get line naming a 1 MB key 1000 times: bounded memory, prompt
                      first byte; MCSHIM_TIMEOUT_MS bounds (below 10 refused, 10 works)

Memory: a client's peak RSS (VmHWM, read by the client itself) must stay under its
baseline + 64 MiB. To keep the machine safe when it does not, the big-reply clients run
with RLIMIT_AS (not under SANITIZE=1: ASan needs a huge address space) and a watchdog
kills any client whose RSS passes WATCHDOG_KB.
"""
import binascii
import hashlib
import json
import os
import random
import re
import resource
import select
import subprocess
import tempfile
import threading
import time
import unittest

import fakeserver
import harness
import binclient  # noqa: E402 (clients/, put on sys.path by harness)
import hostile_client  # noqa: E402

HOSTILE_CLIENT = os.path.join(harness.CLIENTS, "hostile_client.py")
MIB = 1 << 20
RSS_MARGIN_KB = 64 * 1024          # peak RSS may grow this much over the baseline
RLIMIT_AS = 1536 * MIB             # address-space cap of the big-reply clients
WATCHDOG_KB = 1536 * 1024          # a client over this RSS is killed
SERVER_ERROR_RE = re.compile(rb"\ASERVER_ERROR [^\r\n]*\r\n\Z")
SENTINEL = b"mn\r\n"               # answered by the shim after every earlier reply
SENTINEL_REPLY = b"MN\r\n"
UNTIL_SENTINEL = "until:" + binascii.b2a_base64(SENTINEL_REPLY, newline=False).decode()


class Client:
    """clients/hostile_client.py under the shim, driven one command at a time; stderr
    goes to a file (never a pipe nobody reads). rlimit_as: address-space cap (bytes);
    watchdog_kb: kill the client if its RSS passes this (the peak seen is kept)."""

    def __init__(self, env, intercept, rlimit_as=None, watchdog_kb=None):
        self.err = tempfile.TemporaryFile()
        preexec = None
        if rlimit_as and not harness.SANITIZE:
            def preexec():
                resource.setrlimit(resource.RLIMIT_AS, (rlimit_as, rlimit_as))
        self.proc = subprocess.Popen([harness.PY, HOSTILE_CLIENT, intercept], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.err, preexec_fn=preexec)
        self.max_rss_kb = 0
        self.killed_for_rss = False
        self._stop = threading.Event()
        self._watch = None
        if watchdog_kb:
            self._watch = threading.Thread(target=self._watchdog, args=(watchdog_kb,), daemon=True)
            self._watch.start()

    def _watchdog(self, limit_kb):
        path = "/proc/%d/status" % self.proc.pid
        while not self._stop.is_set() and self.proc.poll() is None:
            try:
                with open(path) as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            kb = int(line.split()[1])
                            self.max_rss_kb = max(self.max_rss_kb, kb)
                            if kb > limit_kb and self.proc.poll() is None:
                                self.killed_for_rss = True
                                self.proc.kill()   # our own child, by pid
            except (OSError, ValueError):
                return
            self._stop.wait(0.02)

    def call(self, timeout, **cmd):
        """One command; its JSON result. timeout (scaled) bounds the wait."""
        for k in ("data", "prefix", "unit_head", "unit_tail", "suffix"):
            if k in cmd:
                cmd[k] = binascii.b2a_base64(cmd[k], newline=False).decode()
        try:
            self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
            self.proc.stdin.flush()
        except OSError as e:
            raise AssertionError("client gone (%s): %s" % (e, self.describe_exit()))
        deadline = time.time() + harness.scaled(timeout)
        line = b""
        fd = self.proc.stdout.fileno()
        while not line.endswith(b"\n"):
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError("client gave no answer to %r within %.1fs (scaled)" % (cmd["op"], timeout))
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise AssertionError("client exited during %r: %s" % (cmd["op"], self.describe_exit()))
                line += chunk
        res = json.loads(line)
        if "reply" in res and res["reply"] is not None:
            res["reply"] = binascii.a2b_base64(res["reply"])
        return res

    def req(self, data, kind="line", timeout=5.0, keep=MIB, linger=0.0):
        """Sends data on connection "a" and reads one reply of kind (hostile_client.py).
        timeout: the read bound (scaled)."""
        return self.call(timeout + 10, op="req", data=data, kind=kind, read_timeout=harness.scaled(timeout),
                         keep=keep, linger=linger)

    def rss(self):
        return self.call(10, op="rss")

    def stats(self):
        """`stats mcshim` on connection "a": {name: value}."""
        r = self.req(b"stats mcshim\r\n", kind="stats")
        if r["error"]:
            raise AssertionError("stats mcshim: %s after %r" % (r["error"], r["reply"][-200:]))
        out = {}
        for line in r["reply"].split(b"\r\n"):
            parts = line.split(b" ", 2)
            if len(parts) == 3 and parts[0] == b"STAT":
                out[parts[1].decode()] = parts[2].decode()
        return out

    def describe_exit(self):
        rc = self.proc.poll()
        if rc is None:
            try:
                rc = self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                rc = None
        return "rc=%s%s, peak RSS seen %d MiB, stderr: %s" % (
            rc, " (killed by the RSS watchdog)" if self.killed_for_rss else "", self.max_rss_kb // 1024,
            self.stderr()[-1500:])

    def stderr(self):
        self.err.seek(0)
        return self.err.read().decode(errors="replace")

    def close(self):
        self._stop.set()
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=harness.scaled(5))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._watch:
            self._watch.join(timeout=2)
        self.proc.stdout.close()
        self.err.close()


def pymemcache_script(body):
    """A pymemcache client program: argv[1] is HOST:PORT, c is the client (no noreply),
    the body sets `out` (a dict), printed as JSON at the end."""
    return ("import json, sys, time, hashlib\n"
            "from pymemcache.client.base import Client\n"
            "host, port = sys.argv[1].rsplit(':', 1)\n"
            "c = Client((host, int(port)), connect_timeout=10, timeout=%r, default_noreply=False)\n"
            "out = {}\n"
            "%s\n"
            "print(json.dumps(out), flush=True)\n") % (harness.scaled(30.0), body)


class ShimTest(unittest.TestCase):
    """Helpers: fake servers and clients stopped at the end of each test."""

    @classmethod
    def setUpClass(cls):
        if not os.path.exists(harness.LIB):
            raise AssertionError("%s is not built (make all, or set MCSHIM_BUILD)" % harness.LIB)
        cls.intercept = "127.0.0.1:%d" % harness.free_port()

    def fake(self, on_request=None, **kw):
        srv = fakeserver.FakeServer(on_request, **kw)
        self.addCleanup(srv.stop)
        return srv

    def env(self, servers, **extra):
        env = harness.preload_env(servers, self.intercept, extra)
        if harness.SANITIZE:
            # ASan keeps freed blocks in a 256 MB quarantine by default, which would
            # count against the clients' RSS bounds; a smaller one still catches reuse.
            env["ASAN_OPTIONS"] += ":quarantine_size_mb=16"
        return env

    def client(self, servers, rlimit_as=None, watchdog_kb=WATCHDOG_KB, **extra):
        c = Client(self.env(servers, **extra), self.intercept, rlimit_as=rlimit_as, watchdog_kb=watchdog_kb)
        self.addCleanup(c.close)
        return c

    def run_py(self, servers, script, timeout=30, **extra):
        """Runs a python program under the shim; its last stdout line as JSON."""
        try:
            p = harness.run([harness.PY, "-c", script, self.intercept], self.env(servers, **extra), timeout=timeout,
                            check=False)
        except subprocess.TimeoutExpired as e:
            raise AssertionError("the client hung: no exit within %.0fs (killed); stdout %r" % (
                e.timeout, (e.stdout or b"")[-300:]))
        lines = p.stdout.decode(errors="replace").strip().splitlines()
        if p.returncode != 0 or not lines:
            raise AssertionError("client exited %d: stdout %r stderr %s" % (
                p.returncode, p.stdout[-500:], p.stderr.decode(errors="replace")[-2000:]))
        return json.loads(lines[-1])

    def assert_server_error_line(self, reply, what):
        """reply is exactly `SERVER_ERROR <text>\\r\\n` followed by the sentinel's MN."""
        self.assertTrue(reply.endswith(SENTINEL_REPLY), "%s: no sentinel reply; got %r" % (what, reply[:300]))
        self.assertTrue(SERVER_ERROR_RE.match(reply[:-len(SENTINEL_REPLY)]),
                        "%s: the application must get exactly one SERVER_ERROR line, got %r" % (what, reply[:300]))


def answer_once(cmd, reply, then="drain"):
    """An on_request that answers the first request of cmd with reply (bytes, or a
    function of the request giving them), then drains the connection (or resets it);
    every other request gets the default behaviour."""
    state = {"done": False}

    def on_request(conn, req):
        if req.cmd == cmd and not state["done"]:
            state["done"] = True
            conn.send(reply(req) if callable(reply) else reply)
            if then == "reset":
                conn.reset()
            else:
                conn.drain(10)
            return
        conn.server.default(conn, req)
    return on_request


@harness.requires_shim
class HostileServerTest(ShimTest):
    """Scripted fake servers that answer wrong."""

    # -- 1. garbage --------------------------------------------------------------------
    def garbage_variants(self):
        out = [b"\x00GARB\nAGE\r\n"]
        for seed in range(6):
            rnd = random.Random(0x8008 + seed)
            g = rnd.randbytes(rnd.randrange(1, 300))
            if seed % 2 == 0:
                g += b"\r\n"   # some end like a line, some do not
            out.append(g)
        return out

    def test_garbage_reply_to_set(self):
        request = b"set k 0 0 1\r\nx\r\n"
        for i, garbage in enumerate(self.garbage_variants()):
            with self.subTest(variant=i, garbage=garbage[:40]):
                srv = self.fake(answer_once("set", garbage))
                c = self.client(srv.addr)
                r = c.req(request + SENTINEL, kind=UNTIL_SENTINEL, timeout=5)
                self.assertIsNone(r["error"], "set answered with garbage %r: the application got %r then %s" % (
                    garbage[:40], r["reply"][:200], r["error"]))
                self.assert_server_error_line(r["reply"], "set answered with garbage %r" % garbage[:40])
                core = garbage.strip(b"\r\n")
                if len(core) >= 4:
                    self.assertNotIn(core, r["reply"], "the garbage reached the application")
                self.assertEqual(srv.requests(), [request], "the set must have reached the server as sent")
                st = c.stats()
                self.assertGreaterEqual(int(st.get("server:0:errors", 0)), 1,
                                        "server:0:errors must count the garbage reply: %r" % {
                                            k: v for k, v in st.items() if k.startswith("server:0:")})
                srv.check()

    def test_garbage_reply_to_set_pymemcache(self):
        script = pymemcache_script(
            "t = time.monotonic()\n"
            "try:\n"
            "    out['result'] = repr(c.set('k', b'x', noreply=False))\n"
            "except Exception as e:\n"
            "    out['raised'] = type(e).__name__ + ': ' + str(e)[:200]\n"
            "out['elapsed'] = time.monotonic() - t\n")
        for i, garbage in enumerate(self.garbage_variants()):
            with self.subTest(variant=i, garbage=garbage[:40]):
                srv = self.fake(answer_once("set", garbage))
                out = self.run_py(srv.addr, script, timeout=10)
                self.assertTrue("raised" in out or out.get("result") == "False",
                                "pymemcache set answered with garbage %r must fail, got %r" % (garbage[:40], out))
                self.assertEqual(srv.requests(), [b"set k 0 0 1\r\nx\r\n"])

    # -- 2. replies that do not match the request ---------------------------------------
    BOGUS = [
        (b"set k 0 0 1\r\nx\r\n", b"VALUE k 0 1\r\nx\r\nEND\r\n"),
        (b"set k 0 0 1\r\nx\r\n", b"END\r\n"),
        (b"set k 0 0 1\r\nx\r\n", b"DELETED\r\n"),
        (b"set k 0 0 1\r\nx\r\n", b"42\r\n"),
        (b"set k 0 0 1\r\nx\r\n", b"STORED\n"),
        (b"incr k 1\r\n", b"STORED\r\n"),
        (b"incr k 1\r\n", b"-5\r\n"),
        (b"incr k 1\r\n", b"12a\r\n"),
        (b"incr k 1\r\n", b"5\n"),
        (b"delete k\r\n", b"STORED\r\n"),
        (b"delete k\r\n", b"DELETED\n"),
        (b"touch k 10\r\n", b"STORED\r\n"),
    ]

    VALID = [
        (b"set k 0 0 1\r\nx\r\n", b"STORED\r\n"),
        (b"set k 0 0 1\r\nx\r\n", b"NOT_STORED\r\n"),
        (b"set k 0 0 1\r\nx\r\n", b"EXISTS\r\n"),
        (b"set k 0 0 1\r\nx\r\n", b"NOT_FOUND\r\n"),
        (b"set k 0 0 1\r\nx\r\n", b"ERROR\r\n"),
        (b"set k 0 0 1\r\nx\r\n", b"CLIENT_ERROR x\r\n"),
        (b"set k 0 0 1\r\nx\r\n", b"SERVER_ERROR x\r\n"),
        (b"add k 0 0 1\r\nx\r\n", b"NOT_STORED\r\n"),
        (b"cas k 0 0 1 7\r\nx\r\n", b"EXISTS\r\n"),
        (b"incr k 1\r\n", b"5\r\n"),
        (b"incr k 1\r\n", b"18446744073709551615\r\n"),
        (b"incr k 1\r\n", b"NOT_FOUND\r\n"),
        # what memcached itself answers for a non-numeric value
        (b"incr k 1\r\n", b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"),
        (b"decr k 1\r\n", b"0\r\n"),
        (b"delete k\r\n", b"DELETED\r\n"),
        (b"delete k\r\n", b"NOT_FOUND\r\n"),
        (b"touch k 10\r\n", b"TOUCHED\r\n"),
        (b"touch k 10\r\n", b"NOT_FOUND\r\n"),
    ]

    def exchange_one(self, request, reply):
        cmd = request.split()[0].decode()
        srv = self.fake(answer_once(cmd, reply))
        c = self.client(srv.addr)
        r = c.req(request + SENTINEL, kind=UNTIL_SENTINEL, timeout=5)
        return srv, r

    def test_mismatched_replies_are_failures(self):
        for request, reply in self.BOGUS:
            with self.subTest(request=request, reply=reply):
                srv, r = self.exchange_one(request, reply)
                what = "%r answered %r" % (request, reply)
                self.assertIsNone(r["error"], "%s: the application got %r then %s" % (what, r["reply"], r["error"]))
                self.assert_server_error_line(r["reply"], what)
                self.assertEqual(srv.requests(), [request], "%s: the request must have reached the server" % what)
                srv.check()

    def test_valid_replies_pass_through(self):
        for request, reply in self.VALID:
            with self.subTest(request=request, reply=reply):
                srv, r = self.exchange_one(request, reply)
                self.assertIsNone(r["error"])
                self.assertEqual(r["reply"], reply + SENTINEL_REPLY, "%r answered %r" % (request, reply))
                self.assertEqual(srv.requests(), [request])
                srv.check()

    # -- 3. bogus VALUEs ----------------------------------------------------------------
    FLOOD_UNIT = b"VALUE %s 0 1\r\nx\r\n"
    FLOOD_BYTES = 96 * MIB
    FLOOD_SECONDS = 8.0

    def bogus_get(self):
        """{name: on_request} answering `get <key>` wrongly, each its own way (the key
        is the request's first)."""
        unit, limit, seconds = self.FLOOD_UNIT, self.FLOOD_BYTES, self.FLOOD_SECONDS

        def flood(conn, req):
            if req.cmd != "get":
                return conn.server.default(conn, req)
            conn.flood(unit % req.args[0], limit, seconds)
            conn.drain(10)

        big = 2 * MIB
        return {
            "unasked key": answer_once("get", b"VALUE other 0 1\r\nx\r\nEND\r\n"),
            "two VALUEs for one key": answer_once(
                "get", lambda req: b"VALUE %s 0 1\r\nx\r\nVALUE %s 0 1\r\ny\r\nEND\r\n" % (req.args[0], req.args[0])),
            "VALUE over MCSHIM_ITEM_MAX": answer_once(
                "get", lambda req: b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (req.args[0], big, b"z" * big)),
            "endless VALUE flood": flood,
        }

    # A server's VALUE for a key asked, in order, is passed on as soon as it is
    # whole (replies stream); what breaks the rules after it fails the server and
    # ends the reply. So for these two the key's first VALUE may or may not have
    # reached the application, depending on timing; never a second one.
    FIRST_VALUE_MAY_PASS = ("two VALUEs for one key", "endless VALUE flood")

    def check_get(self, c, request, want, what):
        r = c.req(SENTINEL, kind=UNTIL_SENTINEL)   # engine up before the baseline
        self.assertEqual(r["reply"], SENTINEL_REPLY)
        base = c.rss()
        r = c.req(request, kind="get", timeout=15, linger=0.3)
        peak = c.rss()
        growth = peak["hwm_kb"] - base["hwm_kb"]
        self.assertIsNone(r["error"], "%s: the application got %d bytes (%r...) then %s; peak RSS +%d MiB" % (
            what, r["total"], r["reply"][:120], r["error"], growth // 1024))
        if not isinstance(want, (list, tuple)):
            want = [want]
        got = r["reply"] if r["reply"] in want else None
        self.assertEqual((got, r["total"], r["extra"]), (r["reply"], len(r["reply"]), 0),
                         "%s: the application got %d bytes (%d VALUE lines) starting %r, plus %d more after; "
                         "peak RSS +%d MiB" % (what, r["total"], r["values"], r["reply"][:200], r["extra"],
                                               growth // 1024))
        self.assertLess(growth, RSS_MARGIN_KB, "%s: client peak RSS grew %d MiB (baseline %d MiB)" % (
            what, growth // 1024, base["hwm_kb"] // 1024))

    def test_bogus_values_single_get(self):
        for name, handler in self.bogus_get().items():
            with self.subTest(reply=name):
                srv = self.fake(handler)
                c = self.client(srv.addr)
                want = [b"END\r\n"]
                if name in self.FIRST_VALUE_MAY_PASS:
                    want.append(b"VALUE k 0 1\r\nx\r\nEND\r\n")
                self.check_get(c, b"get k\r\n", want, "get k answered with %s" % name)
                self.assertEqual(srv.requests(), [b"get k\r\n"])
                srv.check()

    def test_bogus_values_multi_get(self):
        for name, handler in self.bogus_get().items():
            with self.subTest(reply=name):
                good = self.fake()
                bad = self.fake(handler)
                servers = "%s,%s" % (good.addr, bad.addr)
                cand = ["key%d" % i for i in range(200)]
                owners = harness.ring_owner(servers, cand)
                kg = next(k for k, o in zip(cand, owners) if o == 0).encode()
                kb = next(k for k, o in zip(cand, owners) if o == 1).encode()
                good.store[kg] = (0, b"ok", 1)
                c = self.client(servers)
                want = [b"VALUE %s 0 2\r\nok\r\nEND\r\n" % kg]
                if name in self.FIRST_VALUE_MAY_PASS:
                    want.append(b"VALUE %s 0 2\r\nok\r\nVALUE %s 0 1\r\nx\r\nEND\r\n" % (kg, kb))
                self.check_get(c, b"get %s %s\r\n" % (kg, kb), want,
                               "get %s %s, the second answered with %s" % (kg.decode(), kb.decode(), name))
                self.assertEqual(good.requests(), [b"get %s\r\n" % kg])
                self.assertEqual(bad.requests(), [b"get %s\r\n" % kb])
                good.check()
                bad.check()

    # -- 4. binary replies that do not match ----------------------------------------------
    def test_binary_mismatched_set_replies(self):
        H = binclient.HEADER

        def ok(req):
            return H.pack(0x81, req.opcode, 0, 0, 0, 0, 0, req.opaque, 0x1234)

        variants = {
            "control: a valid reply": ok,
            "other opcode": lambda req: H.pack(0x81, 0x02, 0, 0, 0, 0, 0, req.opaque, 0x1234),
            "other opcode (get)": lambda req: H.pack(0x81, 0x00, 0, 0, 0, 0, 0, req.opaque, 0x1234),
            "other opaque": lambda req: H.pack(0x81, req.opcode, 0, 0, 0, 0, 0, req.opaque ^ 0x5a5a5a5a, 0x1234),
            "get-shaped (extras and value)": lambda req: H.pack(0x81, req.opcode, 0, 4, 0, 0, 7, req.opaque, 0x1234)
            + b"\0\0\0\0zzz",
            "extras+key longer than the body": lambda req: H.pack(0x81, req.opcode, 10, 20, 0, 0, 5, req.opaque, 0)
            + b"abcde",
            "key on a set reply": lambda req: H.pack(0x81, req.opcode, 1, 0, 0, 0, 1, req.opaque, 0x1234) + b"k",
            "request magic": lambda req: H.pack(0x80, req.opcode, 0, 0, 0, 0, 0, req.opaque, 0x1234),
            "bad magic": lambda req: H.pack(0x00, req.opcode, 0, 0, 0, 0, 0, req.opaque, 0x1234),
            "huge body length": lambda req: H.pack(0x81, req.opcode, 0, 0, 0, 0, 0xfffffff0, req.opaque, 0)
            + b"\0" * 64,
        }
        opaque = 0x5eed
        request = binclient.pkt(binclient.SET, key=b"k", extras=binclient.set_extras(3, 0), value=b"v", opaque=opaque)
        for name, make in variants.items():
            with self.subTest(reply=name):
                def on_request(conn, req, make=make):
                    if req.binary and req.opcode == binclient.SET:
                        conn.send(make(req))
                        conn.drain(10)
                    else:
                        conn.server.default(conn, req)
                srv = self.fake(on_request)
                rep = harness.run_json([harness.PY, os.path.join(harness.CLIENTS, "binclient.py"), self.intercept],
                                       self.env(srv.addr), timeout=30,
                                       input=json.dumps({"steps": [{"data": mcraw_b64(request)}],
                                                         "timeout": harness.scaled(5.0)}).encode())
                step = rep["replies"][0]
                got = [binclient.parse(binascii.a2b_base64(p))[0][0] for p in step["packets"]]
                self.assertIsNone(step["status"], "binary set answered with %s: the application's step ended %s "
                                  "after %r" % (name, step["status"], got))
                seen = [r for r in srv.log if r.binary and r.opcode == binclient.SET]
                self.assertEqual([(r.key, r.value) for r in seen], [(b"k", b"v")],
                                 "the set must have reached the server")
                self.assertEqual(len(got), 1, "%s: one response for one set, got %r" % (name, got))
                p = got[0]
                self.assertEqual((p["magic"], p["opcode"], p["opaque"]), (0x81, binclient.SET, opaque),
                                 "%s: the response must be the client's set's: %r" % (name, p))
                if name.startswith("control"):
                    self.assertEqual((p["status"], p["cas"]), (0, 0x1234), "valid reply: %r" % p)
                else:
                    self.assertNotEqual(p["status"], 0, "set answered with %s: the application got success %r" % (
                        name, p))
                srv.check()

    # -- 5. trickle -----------------------------------------------------------------------
    def test_trickled_reply_within_timeout_is_whole(self):
        value = hostile_client.value(5, 100000)
        reply = b"VALUE k 0 %d\r\n%s\r\nEND\r\n" % (len(value), value)
        pieces = 30
        piece = -(-len(reply) // pieces)

        def on_request(conn, req):
            if req.raw == b"get k\r\n":
                conn.trickle(reply, piece, 0.1)
            else:
                conn.server.default(conn, req)

        srv = self.fake(on_request)
        c = self.client(srv.addr, MCSHIM_TIMEOUT_MS="300")
        r = c.req(b"get k\r\n", kind="get", timeout=20)
        self.assertIsNone(r["error"], "trickled get: %s after %d bytes in %.2fs" % (r["error"], r["total"],
                                                                                   r["elapsed"]))
        self.assertTrue(r["reply"] == reply, "trickled get (gaps of 100 ms, timeout 300 ms): got %d bytes "
                         "in %.2fs starting %r" % (r["total"], r["elapsed"], r["reply"][:80]))
        self.assertGreater(r["elapsed"], 2.5, "the reply really was trickled")
        # not marked down: the next request goes to it
        r = c.req(b"set k2 0 0 1\r\ny\r\n", timeout=5)
        self.assertEqual(r["reply"], b"STORED\r\n")
        self.assertEqual(srv.requests(), [b"get k\r\n", b"set k2 0 0 1\r\ny\r\n"])
        st = c.stats()
        self.assertEqual((st["server:0:state"], st["server:0:downs"], st["server:0:timeouts"]), ("up", "0", "0"),
                         {k: v for k, v in st.items() if k.startswith("server:0:")})
        srv.check()

    # -- 6. silence -----------------------------------------------------------------------
    def silent_server(self):
        def on_request(conn, req):
            if req.cmd in ("get", "set"):
                conn.silent(10)
            else:
                conn.server.default(conn, req)
        return self.fake(on_request)

    def test_silent_server_get_misses_after_timeout(self):
        srv = self.silent_server()
        c = self.client(srv.addr, MCSHIM_TIMEOUT_MS="300")
        r = c.req(b"get k\r\n", kind="get", timeout=10)
        self.assertEqual((r["reply"], r["error"]), (b"END\r\n", None), "silent server: get got %r / %s after %.2fs"
                         % (r["reply"][:200], r["error"], r["elapsed"]))
        self.assertGreaterEqual(r["elapsed"], 0.29, "a miss before the timeout passed")
        self.assertLess(r["elapsed"], harness.scaled(2.0), "silent server: the miss took %.2fs" % r["elapsed"])
        self.assertEqual(srv.requests(), [b"get k\r\n"])

    def test_silent_server_set_fails_after_timeout(self):
        srv = self.silent_server()
        c = self.client(srv.addr, MCSHIM_TIMEOUT_MS="300")
        r = c.req(b"set k 0 0 1\r\nx\r\n" + SENTINEL, kind=UNTIL_SENTINEL, timeout=10)
        self.assertIsNone(r["error"], "silent server: set got %r / %s after %.2fs" % (
            r["reply"][:200], r["error"], r["elapsed"]))
        self.assert_server_error_line(r["reply"], "set to a silent server")
        self.assertGreaterEqual(r["elapsed"], 0.29)
        self.assertLess(r["elapsed"], harness.scaled(2.0), "silent server: the set took %.2fs" % r["elapsed"])
        self.assertEqual(srv.requests(), [b"set k 0 0 1\r\nx\r\n"])

    # -- 7. reset in the middle of a reply ---------------------------------------------------
    def test_reset_mid_value_is_a_miss(self):
        body = hostile_client.value(7, 1000)
        variants = {
            "half a VALUE block": b"VALUE k 0 1000\r\n" + body[:500],
            "half a VALUE line": b"VALUE k 0 10",
            "nothing": b"",
        }
        for name, part in variants.items():
            with self.subTest(sent=name):
                def on_request(conn, req, part=part):
                    if req.cmd == "get":
                        if part:
                            conn.send(part)
                            time.sleep(0.1)   # let the shim read it before the RST
                        conn.reset()
                    else:
                        conn.server.default(conn, req)
                srv = self.fake(on_request)
                c = self.client(srv.addr)
                r = c.req(b"get k\r\n" + SENTINEL, kind=UNTIL_SENTINEL, timeout=10)
                self.assertEqual((r["reply"], r["error"]), (b"END\r\n" + SENTINEL_REPLY, None),
                                 "server reset after sending %s: the application got %r / %s" % (
                                     name, r["reply"][:300], r["error"]))
                self.assertEqual(srv.requests(), [b"get k\r\n"])


def mcraw_b64(data):
    return binascii.b2a_base64(data, newline=False).decode()


@harness.requires_shim
class SlowLinkTest(ShimTest):
    """8. A healthy server behind a slow link."""

    NKEYS = 40
    VALUE_LEN = 1000000
    RATE = 20e6

    def test_big_multiget_through_throttled_link(self):
        m = harness.Memcached(extra=["-m", "256"])
        self.addCleanup(m.stop)
        keys = ["slow%02d" % i for i in range(self.NKEYS)]
        want = {}
        for i, k in enumerate(keys):
            v = hostile_client.value(1000 + i, self.VALUE_LEN)
            m.set(k, v)
            want[k] = hashlib.sha1(v).hexdigest()
        proxy = fakeserver.ThrottleProxy(m.host, m.port, self.RATE)
        self.addCleanup(proxy.close)
        script = pymemcache_script(
            "keys = %r\n"
            "t = time.monotonic()\n"
            "try:\n"
            "    got = c.get_many(keys)\n"
            "    out['sha1'] = {k: hashlib.sha1(v).hexdigest() for k, v in got.items()}\n"
            "except Exception as e:\n"
            "    out['raised'] = type(e).__name__ + ': ' + str(e)[:200]\n"
            "out['elapsed'] = time.monotonic() - t\n"
            "st = c.stats('mcshim')\n"
            "out['stats'] = {k.decode(): (v.decode() if isinstance(v, bytes) else v) for k, v in st.items()\n"
            "                if k.split(b':')[-1] in (b'state', b'downs', b'timeouts', b'errors', b'responses')}\n"
            % keys)
        out = self.run_py(proxy.addr, script, timeout=60, MCSHIM_TIMEOUT_MS="300")
        got = out.get("sha1", {})
        hits = sum(1 for k in keys if got.get(k) == want[k])
        self.assertEqual(hits, self.NKEYS, "40 x 1 MB multi-get at 20 MB/s, MCSHIM_TIMEOUT_MS=300: %d exact hits "
                         "(%d returned) in %.2fs; %s; shim stats %r" % (
                             hits, len(got), out.get("elapsed", -1), out.get("raised", "no exception"),
                             out.get("stats")))
        self.assertGreater(out["elapsed"], 1.5, "the link really was throttled")


@harness.requires_shim
class GreedyClientTest(ShimTest):
    """9-11. Real memcached (4 servers); clients that ask for much more than they read."""

    VALUE_LEN = 1000000
    SEED = 99

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.cluster = harness.Cluster(4)

    @classmethod
    def tearDownClass(cls):
        cls.cluster.stop()

    def setUp(self):
        self.cluster.ensure_running()
        self.cluster.flush()

    def greedy_client(self, **extra):
        c = self.client(self.cluster.servers, rlimit_as=RLIMIT_AS, **extra)
        r = c.call(30, op="set_value", key="a", seed=self.SEED, len=self.VALUE_LEN, read_timeout=harness.scaled(10))
        self.assertEqual((r["reply"], r["error"]), (b"STORED\r\n", None), "set a (1 MB) through the shim")
        return c

    def check_stream(self, c, r, base, what):
        peak = None
        try:
            peak = c.rss()
        except AssertionError as e:
            r.setdefault("rss_error", str(e))
        detail = "%s: %d/%d bytes matched (%d whole units), received %d, error %s, first byte %s s, %.2fs in all" \
            % (what, r["matched"], r["expected"], r["units"], r["received"], r["error"], r["first_byte"], r["elapsed"])
        if r["mismatch_at"] is not None:
            detail += "; at byte %d got %r, want %r" % (r["mismatch_at"], binascii.a2b_base64(r["got"])[:80],
                                                        binascii.a2b_base64(r["want"])[:80])
        if r["send_error"]:
            detail += "; send: %s" % r["send_error"]
        if peak is not None:
            detail += "; peak RSS %d MiB (baseline %d MiB)" % (peak["hwm_kb"] // 1024, base["hwm_kb"] // 1024)
        detail += "; watchdog saw %d MiB" % (c.max_rss_kb // 1024)
        self.assertIsNotNone(peak, "%s; the client died: %s" % (detail, c.describe_exit()))
        self.assertEqual((r["error"], r["matched"]), (None, r["expected"]), detail)
        self.assertLess(peak["hwm_kb"] - base["hwm_kb"], RSS_MARGIN_KB, detail)
        print("\nmeasured: " + detail, flush=True)   # the figures docs/performance.md quotes
        return detail

    def stream(self, c, timeout, **cmd):
        try:
            return c.call(timeout + 15, op="stream", read_timeout=harness.scaled(timeout), **cmd)
        except AssertionError as e:
            raise AssertionError("%s (watchdog saw %d MiB)" % (e, c.max_rss_kb // 1024))

    def test_pipelined_gets_without_reading(self):
        n = 3000
        c = self.greedy_client()
        base = c.rss()
        r = self.stream(c, 120, data=b"get a\r\n" * n, unit_head=b"VALUE a 0 %d\r\n" % self.VALUE_LEN,
                        seed=self.SEED, len=self.VALUE_LEN, unit_tail=b"\r\nEND\r\n", count=n, delay=3.0)
        self.check_stream(c, r, base, "%d pipelined `get a` (1 MB), unread for 3 s" % n)

    def test_one_get_naming_a_big_key_1000_times(self):
        n = 1000
        c = self.greedy_client()
        base = c.rss()
        r = self.stream(c, 60, data=b"get" + b" a" * n + b"\r\n", unit_head=b"VALUE a 0 %d\r\n" % self.VALUE_LEN,
                        seed=self.SEED, len=self.VALUE_LEN, unit_tail=b"\r\n", count=n, suffix=b"END\r\n")
        detail = self.check_stream(c, r, base, "`get a a ... a` (1000 x a 1 MB key)")
        self.assertLess(r["first_byte"], harness.scaled(2.0), detail)

    # -- 11. MCSHIM_TIMEOUT_MS bounds ---------------------------------------------------------
    HOST_SCRIPT = r"""
import sys
sys.path.insert(0, %r)
import mcraw
print("alive", flush=True)
r = mcraw.exchange(sys.argv[1], [{"data": b"set tmokey 0 0 5\r\nhello\r\nget tmokey\r\n"}], timeout=5)
print(r[0].decode(errors="replace").replace("\r\n", "|"))
""" % harness.CLIENTS

    def test_timeout_below_10ms_refused(self):
        target = harness.Memcached()
        self.addCleanup(target.stop)
        for bad in ("1", "5", "9"):
            with self.subTest(value=bad):
                target.flush()
                env = harness.preload_env(None, None, base=harness.plain_env())
                env.update(MCSHIM_SERVERS=self.cluster.servers, MCSHIM_INTERCEPT=target.addr, MCSHIM_TIMEOUT_MS=bad)
                p = harness.run([harness.PY, "-c", self.HOST_SCRIPT, target.addr], env, timeout=20, check=False)
                out = p.stdout.decode(errors="replace").splitlines()
                err = harness.shim_stderr_lines(p)
                self.assertEqual(p.returncode, 0, "host died: %r" % err)
                self.assertEqual(len(err), 1, "MCSHIM_TIMEOUT_MS=%s: want exactly one stderr line, got %r" % (bad, err))
                self.assertIn("MCSHIM_TIMEOUT_MS", err[0])
                # inert: straight to the intercept address, nothing on the pool
                self.assertEqual(out, ["alive", "STORED|VALUE tmokey 0 5|hello|END|"], out)
                self.assertEqual(target.get("tmokey"), b"hello")
                self.assertEqual(self.cluster.owner_of("tmokey"), [])

    def test_small_timeout_healthy_cluster_no_errors(self):
        script = pymemcache_script(
            "import os\n"
            "ops = errors = 0\n"
            "first = []\n"
            "end = time.monotonic() + 3.0\n"
            "i = 0\n"
            "while time.monotonic() < end and ops < 1000000:\n"
            "    k = 'tm%d' % (i % 500); v = os.urandom(8).hex().encode(); i += 1\n"
            "    try:\n"
            "        ok = c.set(k, v, noreply=False) is True and c.get(k) == v\n"
            "    except Exception as e:\n"
            "        ok = False; first.append(type(e).__name__ + ': ' + str(e)[:100])\n"
            "    ops += 1\n"
            "    if not ok:\n"
            "        errors += 1\n"
            "out.update(ops=ops, errors=errors, first=first[:3])\n"
            "st = c.stats('mcshim')\n"
            "out['downs'] = sum(int(v) for k, v in st.items() if k.endswith(b':downs'))\n"
            "out['timeouts'] = sum(int(v) for k, v in st.items() if k.endswith(b':timeouts'))\n")
        # A small timeout on healthy loopback servers fails nothing: deadlines are whole
        # milliseconds that never fire early (the old truncated clock failed most requests
        # at 1 ms). Not the 10 ms minimum itself: on a busy 2-core machine a thread can be
        # preempted for 10 ms, which is a real silence and rightly a timeout. Under
        # SANITIZE=1 everything runs ~4x slower (harness.scaled).
        tmo = str(int(harness.scaled(50)))
        out = self.run_py(self.cluster.servers, script, timeout=30, MCSHIM_TIMEOUT_MS=tmo)
        self.assertGreater(out["ops"], 100, out)
        self.assertEqual(out["errors"], 0, "MCSHIM_TIMEOUT_MS=%s, healthy servers: %r" % (tmo, out))


if __name__ == "__main__":
    unittest.main()
