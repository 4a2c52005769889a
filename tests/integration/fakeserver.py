"""A scripted fake memcached for the hostile-server tests, and a bandwidth throttle.

FakeServer listens on a free loopback port and runs, in threads of the test process,
one handler per accepted connection. The test scripts what each request gets:

    def on_request(conn, req):           # req: one parsed request (Request below)
        if req.raw == b"get k\\r\\n":
            conn.send(b"VALUE other 0 1\\r\\nx\\r\\nEND\\r\\n")
        else:
            conn.server.default(conn, req)   # behave like a tiny memcached

    srv = FakeServer(on_request)
    srv.addr                             # "127.0.0.1:<port>" for MCSHIM_SERVERS
    ...
    srv.requests()                       # raw bytes of every request seen (not the auto ones)
    srv.check()                          # raises if a handler failed or an expectation broke
    srv.stop()

Default behaviour a script can rely on: the shim's own requests are answered before
on_request sees anything: `stats` (no argument) gets a minimal valid stats reply (pid,
uptime, time: what preload/core/avail.c mcs_avail_stat needs to identify an instance,
pid fixed per FakeServer, uptime counting from its start), `version` gets
`VERSION 1.6.99-fake`, and on binary connections NOOP and VERSION get their responses.
Those requests are logged with auto=True. With on_request=None every other request
goes to FakeServer.default, a small in-memory memcached (get/gets/set/add/replace/
append/prepend/cas/delete/incr/decr/touch/flush_all, binary get/set/delete).

What a handler can do on its connection (FakeConn): read the next request
(read_request / expect, with exact-byte checks recorded as failures), send bytes,
trickle them in pieces with gaps, flood a unit forever (bounded by bytes and seconds),
stay silent (read and drop until the peer closes or a bound passes), throttle a reply
to N bytes/s, reset the connection (SO_LINGER 0, so the peer sees RST), or close it.

Every loop here is bounded: by the server's stop event, by a deadline, and for
floods by a byte count; a server lives at most `lifetime` seconds (scaled).

ThrottleProxy is a forwarder in front of a real server (like cutproxy.py) that limits
the server-to-client direction to `rate` bytes per second, a healthy but slow link.
"""
import random
import socket
import struct
import threading
import time
import traceback

import harness

BIN_HEADER = struct.Struct(">BBHBBHIIQ")  # magic opcode keylen extlen datatype vbucket/status bodylen opaque cas
STORAGE = {"set", "add", "replace", "append", "prepend", "cas"}
MAX_LINE = 1 << 20        # a request line longer than this is a failure of the test's own making
MAX_BIN_BODY = 64 << 20   # likewise for a binary body


class Request:
    """One request as read by the fake server.

    raw: every byte of it (line and data block, or the whole binary packet);
    text requests: line (without the line end), cmd (str), args (list of bytes),
    data (the data block without its \\r\\n, or None);
    binary requests: binary=True, opcode, opaque, cas, key, extras, value, header fields.
    auto: answered by the default behaviour (stats, version, noop)."""

    def __init__(self, raw, conn_index):
        self.raw = raw
        self.conn = conn_index
        self.auto = False
        self.binary = False
        self.data = None
        self.line = b""
        self.cmd = ""
        self.args = []
        self.at = time.monotonic()

    @property
    def keys(self):
        return list(self.args) if self.cmd in ("get", "gets") else self.args[:1]

    def __repr__(self):
        return "Request(%r)" % (self.raw[:120],)


class Closed(Exception):
    """The connection is gone (peer closed, reset, or the handler closed it)."""


class FakeConn:
    """One accepted connection, handed to the script. Every method is bounded in time."""

    def __init__(self, server, sock, index):
        self.server = server
        self.sock = sock
        self.index = index
        self.buf = bytearray()
        self.closed = False
        self.peer_closed_at = None   # monotonic time the peer's EOF (or reset) was seen
        self.sent = 0
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(0.1)

    # -- reading -------------------------------------------------------------------
    def _fill(self, deadline):
        """Reads more bytes into buf. Returns False on EOF, stop or deadline."""
        while not self.closed and not self.server.stopping.is_set():
            if time.monotonic() >= deadline:
                return False
            try:
                chunk = self.sock.recv(1 << 16)
            except socket.timeout:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                if self.peer_closed_at is None:
                    self.peer_closed_at = time.monotonic()
                return False
            self.buf += chunk
            return True
        return False

    def _parse(self):
        """The next whole request in buf (removed from it), or None if incomplete."""
        buf = self.buf
        if not buf:
            return None
        if buf[0] == 0x80:
            if len(buf) < 24:
                return None
            magic, op, kl, el, dt, vb, bl, opq, cas = BIN_HEADER.unpack_from(buf, 0)
            if bl > MAX_BIN_BODY:
                raise AssertionError("binary request body of %d bytes" % bl)
            if len(buf) < 24 + bl:
                return None
            raw = bytes(buf[:24 + bl])
            del buf[:24 + bl]
            req = Request(raw, self.index)
            req.binary = True
            req.opcode, req.opaque, req.cas, req.datatype, req.vbucket = op, opq, cas, dt, vb
            body = raw[24:]
            req.extras, req.key, req.value = body[:el], body[el:el + kl], body[el + kl:]
            req.cmd = "bin:%02x" % op
            return req
        nl = buf.find(b"\n")
        if nl < 0:
            if len(buf) > MAX_LINE:
                raise AssertionError("request line longer than %d bytes: %r" % (MAX_LINE, bytes(buf[:100])))
            return None
        line = bytes(buf[:nl + 1])
        words = line.rstrip(b"\r\n").split()
        cmd = words[0].decode("latin-1") if words else ""
        total = len(line)
        nbytes = None
        try:
            if cmd in STORAGE and len(words) >= 5:
                nbytes = int(words[4])
            elif cmd == "ms" and len(words) >= 3:
                nbytes = int(words[2])
        except ValueError:
            nbytes = None
        if nbytes is not None:
            total += nbytes + 2
            if len(buf) < total:
                return None
        raw = bytes(buf[:total])
        del buf[:total]
        req = Request(raw, self.index)
        req.line = line.rstrip(b"\r\n")
        req.cmd = cmd
        req.args = words[1:]
        if nbytes is not None:
            req.data = raw[len(line):-2]
        return req

    def read_request(self, timeout=10.0, auto=True):
        """The next request, or None on EOF, stop or timeout (scaled). With auto, the
        shim's own stats/version (and binary noop/version) are answered here and
        reading goes on."""
        deadline = time.monotonic() + harness.scaled(timeout)
        while True:
            req = self._parse()
            if req is not None:
                if auto and self.server.auto and self.server.auto_answer(self, req):
                    req.auto = True
                    self.server.record(req)
                    continue
                self.server.record(req)
                return req
            if not self._fill(deadline):
                return None

    def expect(self, want, timeout=10.0):
        """Reads the next request and records a failure unless its bytes are exactly want.
        Returns the request (None if none came)."""
        req = self.read_request(timeout)
        got = req.raw if req is not None else None
        if got != want:
            self.server.fail("connection %d: expected request %r, got %r" % (self.index, want, got))
        return req

    # -- writing -------------------------------------------------------------------
    def send(self, data, timeout=10.0):
        """Sends all of data (bounded by timeout, scaled). Returns False if the peer is
        gone or did not take it in time."""
        deadline = time.monotonic() + harness.scaled(timeout)
        view = memoryview(data)
        while view and not self.closed and not self.server.stopping.is_set():
            if time.monotonic() >= deadline:
                return False
            try:
                n = self.sock.send(view)
            except socket.timeout:
                continue
            except OSError:
                self._peer_gone()
                return False
            self.sent += n
            view = view[n:]
        return not view

    def trickle(self, data, piece, gap):
        """Sends data in pieces of `piece` bytes with `gap` seconds between them (not
        scaled: the gap is what is under test). Returns False if the peer went away."""
        for pos in range(0, len(data), piece):
            if pos:
                if self.server.stopping.wait(gap):
                    return False
            if not self.send(data[pos:pos + piece]):
                return False
        return True

    def throttle(self, data, rate, tick=0.01):
        """Sends data at about `rate` bytes per second. Returns False if the peer went away."""
        per = max(1, int(rate * tick))
        start = time.monotonic()
        for pos in range(0, len(data), per):
            due = start + pos / float(rate)
            wait = due - time.monotonic()
            if wait > 0 and self.server.stopping.wait(wait):
                return False
            if not self.send(data[pos:pos + per]):
                return False
        return True

    def flood(self, unit, max_bytes, max_seconds):
        """Sends unit again and again until max_bytes were sent, max_seconds passed
        (not scaled), the peer goes away or the server stops. Returns the bytes sent."""
        block = unit * max(1, (256 << 10) // len(unit))
        deadline = time.monotonic() + max_seconds
        sent = 0
        while sent < max_bytes and time.monotonic() < deadline and not self.closed \
                and not self.server.stopping.is_set():
            view = memoryview(block)[:max_bytes - sent]
            try:
                n = self.sock.send(view)
            except socket.timeout:
                continue
            except OSError:
                self._peer_gone()
                break
            sent += n
            self.sent += n
        return sent

    def silent(self, seconds):
        """Says nothing: reads and drops whatever comes until the peer closes, `seconds`
        (scaled) pass, or the server stops. Returns True if the peer closed."""
        deadline = time.monotonic() + harness.scaled(seconds)
        while True:
            self.buf.clear()
            if not self._fill(deadline):
                return self.peer_closed_at is not None

    def drain(self, seconds):
        """As silent(): the usual end of a script that has said its piece."""
        return self.silent(seconds)

    def reset(self):
        """Closes with SO_LINGER 0: the peer gets a TCP RST, not a FIN."""
        if self.closed:
            return
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass

    def _peer_gone(self):
        if self.peer_closed_at is None:
            self.peer_closed_at = time.monotonic()


class FakeServer:
    """See the module comment. on_request(conn, req) is called for every request that
    the default behaviour did not answer; on_connect(conn), if given, takes the whole
    connection instead (it reads with conn.read_request itself)."""

    def __init__(self, on_request=None, on_connect=None, auto=True, lifetime=300.0, host="127.0.0.1"):
        self.on_request = on_request
        self.on_connect = on_connect
        self.auto = auto
        self.host = host
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.log = []          # every Request, in arrival order (auto ones too)
        self.failures = []     # expectation failures and handler exceptions
        self.conns = []
        self.store = {}        # key -> (flags, value, cas) for the default behaviour
        self.next_cas = 1
        self.started = time.time()
        self.pid = 400000 + random.randrange(1, 100000)
        self.deadline = time.monotonic() + harness.scaled(lifetime)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, 0))   # a free port, chosen by the kernel and kept bound
        self.listener.listen(128)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.threads = []
        self.accept_thread = threading.Thread(target=self._accept_loop, name="fake:%d" % self.port, daemon=True)
        self.accept_thread.start()

    @property
    def addr(self):
        return "%s:%d" % (self.host, self.port)

    # -- log and checks ------------------------------------------------------------
    def record(self, req):
        with self.lock:
            self.log.append(req)

    def fail(self, msg):
        with self.lock:
            self.failures.append(msg)

    def requests(self, auto=False, cmd=None):
        """Raw bytes of the requests seen, in order (without the auto-answered ones
        unless auto); cmd narrows to one command name ("get", "bin:01", ...)."""
        with self.lock:
            return [r.raw for r in self.log if (auto or not r.auto) and (cmd is None or r.cmd == cmd)]

    def wait_requests(self, n, timeout=5.0, cmd=None):
        """Waits (scaled) until at least n non-auto requests were seen. Returns them."""
        harness.wait_until(lambda: len(self.requests(cmd=cmd)) >= n, timeout)
        return self.requests(cmd=cmd)

    @property
    def accepted(self):
        with self.lock:
            return len(self.conns)

    def check(self):
        """Raises AssertionError if any expectation failed or a handler raised."""
        with self.lock:
            if self.failures:
                raise AssertionError("fake server %s: %s" % (self.addr, "\n".join(self.failures)))

    # -- default behaviour -----------------------------------------------------------
    def stats_reply(self):
        now = time.time()
        return b"STAT pid %d\r\nSTAT uptime %d\r\nSTAT time %d\r\nSTAT version 1.6.99-fake\r\nEND\r\n" % (
            self.pid, int(now - self.started), int(now))

    def auto_answer(self, conn, req):
        """Answers the shim's own requests. Returns True if req was one."""
        if req.binary:
            if req.opcode in (0x0a, 0x0b):   # noop, version
                body = b"1.6.99-fake" if req.opcode == 0x0b else b""
                conn.send(BIN_HEADER.pack(0x81, req.opcode, 0, 0, 0, 0, len(body), req.opaque, 0) + body)
                return True
            return False
        if req.cmd == "stats" and not req.args:
            conn.send(self.stats_reply())
            return True
        if req.cmd == "version" and not req.args:
            conn.send(b"VERSION 1.6.99-fake\r\n")
            return True
        return False

    def default(self, conn, req):
        """A tiny memcached: enough for a healthy server in a test."""
        if req.binary:
            return self._default_binary(conn, req)
        cmd, a = req.cmd, req.args
        noreply = bool(a) and a[-1] == b"noreply"
        out = b""
        with self.lock:
            if cmd in ("get", "gets"):
                for k in a:
                    if k in self.store:
                        f, v, cas = self.store[k]
                        out += b"VALUE %s %d %d%s\r\n%s\r\n" % (k, f, len(v), b" %d" % cas if cmd == "gets" else b"",
                                                               v)
                out += b"END\r\n"
            elif cmd in STORAGE:
                k, f = a[0], int(a[1])
                have = self.store.get(k)
                ok = {"set": True, "add": have is None, "replace": have is not None,
                      "append": have is not None, "prepend": have is not None,
                      "cas": have is not None and len(a) > 4 and have[2] == int(a[4])}[cmd]
                if cmd == "cas" and have is None:
                    out = b"NOT_FOUND\r\n"
                elif not ok:
                    out = b"EXISTS\r\n" if cmd == "cas" else b"NOT_STORED\r\n"
                else:
                    v = req.data
                    if cmd == "append":
                        v, f = have[1] + v, have[0]
                    elif cmd == "prepend":
                        v, f = v + have[1], have[0]
                    self.store[k] = (f, v, self.next_cas)
                    self.next_cas += 1
                    out = b"STORED\r\n"
            elif cmd == "delete":
                out = b"DELETED\r\n" if self.store.pop(a[0], None) is not None else b"NOT_FOUND\r\n"
            elif cmd in ("incr", "decr"):
                have = self.store.get(a[0])
                if have is None:
                    out = b"NOT_FOUND\r\n"
                else:
                    n = int(have[1]) + (int(a[1]) if cmd == "incr" else -int(a[1]))
                    n = max(n, 0) & 0xffffffffffffffff
                    self.store[a[0]] = (have[0], b"%d" % n, self.next_cas)
                    self.next_cas += 1
                    out = b"%d\r\n" % n
            elif cmd == "touch":
                out = b"TOUCHED\r\n" if a[0] in self.store else b"NOT_FOUND\r\n"
            elif cmd == "flush_all":
                self.store.clear()
                out = b"OK\r\n"
            elif cmd == "verbosity":
                out = b"OK\r\n"
            else:
                out = b"ERROR\r\n"
        if not noreply:
            conn.send(out)

    def _default_binary(self, conn, req):
        op = req.opcode
        with self.lock:
            if op in (0x00, 0x09, 0x0c, 0x0d):   # get getq getk getkq
                have = self.store.get(req.key)
                if have is None:
                    body, extras, status, cas = b"Not found", b"", 1, 0
                    key = b""
                else:
                    extras, body, status, cas = struct.pack(">I", have[0]), have[1], 0, have[2]
                    key = req.key if op in (0x0c, 0x0d) else b""
                resp = BIN_HEADER.pack(0x81, op, len(key), len(extras), 0, status, len(extras) + len(key) + len(body),
                                       req.opaque, cas) + extras + key + body
            elif op in (0x01, 0x11):   # set setq
                flags = struct.unpack(">I", req.extras[:4])[0] if len(req.extras) >= 4 else 0
                self.store[req.key] = (flags, req.value, self.next_cas)
                resp = BIN_HEADER.pack(0x81, op, 0, 0, 0, 0, 0, req.opaque, self.next_cas)
                self.next_cas += 1
            elif op in (0x04, 0x14):   # delete
                found = self.store.pop(req.key, None) is not None
                body = b"" if found else b"Not found"
                resp = BIN_HEADER.pack(0x81, op, 0, 0, 0, 0 if found else 1, len(body), req.opaque, 0) + body
            else:
                body = b"Unknown command"
                resp = BIN_HEADER.pack(0x81, op, 0, 0, 0, 0x81, len(body), req.opaque, 0) + body
        conn.send(resp)

    # -- threads -------------------------------------------------------------------
    def _accept_loop(self):
        try:
            while not self.stopping.is_set() and time.monotonic() < self.deadline:
                try:
                    sock, _ = self.listener.accept()
                except socket.timeout:
                    continue
                except OSError:
                    break
                with self.lock:
                    conn = FakeConn(self, sock, len(self.conns))
                    self.conns.append(conn)
                t = threading.Thread(target=self._serve, args=(conn,), name="fake:%d:%d" % (self.port, conn.index),
                                     daemon=True)
                self.threads.append(t)
                t.start()
        finally:
            try:
                self.listener.close()
            except OSError:
                pass

    def _serve(self, conn):
        try:
            if self.on_connect is not None:
                self.on_connect(conn)
                return
            while not self.stopping.is_set() and time.monotonic() < self.deadline and not conn.closed:
                req = conn.read_request(timeout=max(0.0, self.deadline - time.monotonic()))
                if req is None:
                    break
                if self.on_request is None:
                    self.default(conn, req)
                else:
                    self.on_request(conn, req)
        except Closed:
            pass
        except Exception:
            self.fail("handler of connection %d raised:\n%s" % (conn.index, traceback.format_exc()))
        finally:
            conn.close()

    def stop(self):
        """Stops accepting, closes every connection, waits briefly for the threads."""
        self.stopping.set()
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.accept_thread.join(timeout=2)
        for t in self.threads:
            t.join(timeout=2)
        for c in conns:
            c.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class ThrottleProxy:
    """Forwards a free loopback port to (host, port), the server-to-client direction
    limited to `rate` bytes per second (token bucket, refilled every `tick` seconds,
    bursts of at most one tick's worth). Client-to-server bytes pass unthrottled.
    Two threads per connection; all bounded by close() and by EOF on either side."""

    def __init__(self, target_host, target_port, rate, tick=0.005, listen_host="127.0.0.1"):
        self.target = (target_host, target_port)
        self.rate = float(rate)
        self.tick = tick
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.socks = []
        self.threads = []
        self.bytes_down = 0
        self.bytes_up = 0
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((listen_host, 0))
        self.listener.listen(128)
        self.listener.settimeout(0.1)
        self.host, self.port = self.listener.getsockname()[:2]
        self.accept_thread = threading.Thread(target=self._accept_loop, name="throttle:%d" % self.port, daemon=True)
        self.accept_thread.start()

    @property
    def addr(self):
        return "%s:%d" % (self.host, self.port)

    def _accept_loop(self):
        try:
            while not self.stopping.is_set():
                try:
                    down, _ = self.listener.accept()
                except socket.timeout:
                    continue
                except OSError:
                    break
                try:
                    up = socket.create_connection(self.target, timeout=harness.scaled(2.0))
                except OSError:
                    down.close()
                    continue
                for s in (down, up):
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    s.settimeout(0.1)
                with self.lock:
                    self.socks += [down, up]
                for args in ((down, up, False), (up, down, True)):
                    t = threading.Thread(target=self._pump, args=args, daemon=True)
                    self.threads.append(t)
                    t.start()
        finally:
            self.listener.close()

    def _pump(self, src, dst, limited):
        tokens = 0.0
        last = time.monotonic()
        burst = max(1024.0, self.rate * self.tick)
        try:
            while not self.stopping.is_set():
                want = 1 << 16
                if limited:
                    now = time.monotonic()
                    tokens = min(burst, tokens + (now - last) * self.rate)
                    last = now
                    if tokens < min(1024.0, burst):
                        self.stopping.wait(self.tick)
                        continue
                    want = int(min(want, tokens))
                try:
                    data = src.recv(want)
                except socket.timeout:
                    continue
                if not data:
                    break
                if limited:
                    tokens -= len(data)
                    self.bytes_down += len(data)
                else:
                    self.bytes_up += len(data)
                view = memoryview(data)
                while view and not self.stopping.is_set():
                    try:
                        view = view[dst.send(view):]
                    except socket.timeout:
                        continue
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.stopping.set()
        self.accept_thread.join(timeout=2)
        for t in self.threads:
            t.join(timeout=2)
        with self.lock:
            for s in self.socks:
                s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
