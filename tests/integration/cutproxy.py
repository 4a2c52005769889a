"""A TCP forwarder that can cut a network path without killing either end.

The availability tests list a memcached server in MCSHIM_SERVERS at this proxy's
port; the proxy forwards to the real server. Killing or pausing the server tells
the shim "it restarted" or "it is stuck"; cutting the proxy instead produces a
partition: the server keeps running with all its data (same pid, same start time)
but the shim cannot reach it, and later the path heals.

    p = CutProxy("127.0.0.1", memcached_port)   # listens on a free loopback port
    p.addr                                      # "127.0.0.1:<port>" for MCSHIM_SERVERS
    p.cut()    # existing connections go silent: nothing forwarded either way, nothing
               # closed; new connections are accepted but never forwarded (nor read)
    p.heal()   # every connection open now (forwarded or held) is closed; new ones
               # are forwarded again
    p.close()  # stop the thread, close everything

cut() and heal() return once the proxy thread has applied the change, so a test can
act on the server right after. Everything runs in one daemon thread with a selector;
commands reach it through a socketpair. Only loopback addresses are used by the tests.
"""
import selectors
import socket
import threading

import harness

CHUNK = 65536
BUF_LIMIT = 4 << 20  # stop reading one side while this much waits for the other


class _Pipe:
    """One forwarded connection: the accepted client socket and the upstream socket,
    with the bytes read from each side and not yet written to the other."""

    def __init__(self, down, up):
        self.down = down
        self.up = up
        self.to_up = bytearray()
        self.to_down = bytearray()

    def sockets(self):
        return (self.down, self.up)


class CutProxy:
    """A forwarder from a free loopback port to (host, port); see the module comment."""

    def __init__(self, target_host, target_port, listen_host="127.0.0.1"):
        self.target = (target_host, target_port)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((listen_host, 0))
        self.listener.listen(128)
        self.listener.setblocking(False)
        self.host, self.port = self.listener.getsockname()[:2]
        self.is_cut = False
        self.pipes = []      # forwarded connections
        self.held = []       # connections accepted during a cut (never read)
        self.counts = {"accepted": 0, "forwarded": 0, "held": 0, "closed_by_heal": 0,
                       "bytes_up": 0, "bytes_down": 0, "upstream_failures": 0}
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._cmds = []
        self._lock = threading.Lock()
        self._stopping = False
        self._sel.register(self.listener, selectors.EVENT_READ, ("accept", None))
        self._sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        self._thread = threading.Thread(target=self._run, name="cutproxy:%d" % self.port, daemon=True)
        self._thread.start()

    @property
    def addr(self):
        return "%s:%d" % (self.host, self.port)

    # -- commands (any thread) ---------------------------------------------------
    def cut(self):
        """Existing connections go silent; new ones are accepted and held unread."""
        self._command("cut")

    def heal(self):
        """Close every open connection (forwarded or held); forward new ones again."""
        self._command("heal")

    def stats(self):
        """A copy of the counters plus the current connection counts."""
        return self._command("stats")

    def close(self):
        """Stop the proxy thread and close every socket. Safe to call twice."""
        if self._stopping:
            return
        self._command("stop")
        self._thread.join(timeout=5)
        self._wake_w.close()

    def _command(self, name):
        done = threading.Event()
        box = {}
        with self._lock:
            self._cmds.append((name, done, box))
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if not done.wait(timeout=harness.scaled(5.0)):
            raise RuntimeError("cutproxy thread did not apply %r" % name)
        return box.get("result")

    # -- the proxy thread ----------------------------------------------------------
    def _run(self):
        try:
            while not self._stopping:
                for key, mask in self._sel.select(timeout=1.0):
                    kind, pipe = key.data
                    if kind == "accept":
                        self._accept()
                    elif kind == "wake":
                        self._drain_commands()
                    elif pipe in self.pipes and not self.is_cut:
                        # (a pipe silenced by a cut earlier in this batch stays silent)
                        self._service(pipe, key.fileobj, mask)
        finally:
            self._close_all()
            for s in (self.listener, self._wake_r):
                try:
                    self._sel.unregister(s)
                except (KeyError, ValueError):
                    pass
                s.close()
            self._sel.close()

    def _drain_commands(self):
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        with self._lock:
            cmds, self._cmds = self._cmds, []
        for name, done, box in cmds:
            if name == "cut":
                self._apply_cut()
            elif name == "heal":
                self._apply_heal()
            elif name == "stats":
                res = dict(self.counts)
                res.update(open_pipes=len(self.pipes), open_held=len(self.held), cut=self.is_cut)
                box["result"] = res
            elif name == "stop":
                self._stopping = True
            done.set()

    def _accept(self):
        while True:
            try:
                down, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            self.counts["accepted"] += 1
            if self.is_cut:
                # accepted (the kernel did that already) but never read nor forwarded
                self.held.append(down)
                self.counts["held"] += 1
                continue
            try:
                up = socket.create_connection(self.target, timeout=harness.scaled(2.0))
            except OSError:
                self.counts["upstream_failures"] += 1
                down.close()
                continue
            for s in (down, up):
                s.setblocking(False)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pipe = _Pipe(down, up)
            self.pipes.append(pipe)
            self.counts["forwarded"] += 1
            self._update(pipe)

    def _service(self, pipe, sock, mask):
        other = pipe.up if sock is pipe.down else pipe.down
        outbuf = pipe.to_up if sock is pipe.down else pipe.to_down
        inbuf = pipe.to_down if sock is pipe.down else pipe.to_up
        if mask & selectors.EVENT_READ:
            try:
                data = sock.recv(CHUNK)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                data = b""
            if data == b"":
                self._drop(pipe)
                return
            if data:
                outbuf += data
                self.counts["bytes_up" if sock is pipe.down else "bytes_down"] += len(data)
        if mask & selectors.EVENT_WRITE and inbuf:
            try:
                n = sock.send(inbuf)
                del inbuf[:n]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._drop(pipe)
                return
        if outbuf:
            try:
                n = other.send(outbuf)
                del outbuf[:n]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._drop(pipe)
                return
        self._update(pipe)

    def _update(self, pipe):
        """(Re)register both sockets of a forwarded pipe for what they need now."""
        for s, inbuf, outbuf in ((pipe.down, pipe.to_down, pipe.to_up), (pipe.up, pipe.to_up, pipe.to_down)):
            events = 0
            if len(outbuf) < BUF_LIMIT:
                events |= selectors.EVENT_READ
            if inbuf:
                events |= selectors.EVENT_WRITE
            registered = s in self._sel.get_map()
            if events and registered:
                self._sel.modify(s, events, ("pipe", pipe))
            elif events:
                self._sel.register(s, events, ("pipe", pipe))
            elif registered:
                self._sel.unregister(s)

    def _silence(self, pipe):
        for s in pipe.sockets():
            try:
                self._sel.unregister(s)
            except (KeyError, ValueError):
                pass

    def _drop(self, pipe):
        self._silence(pipe)
        for s in pipe.sockets():
            s.close()
        if pipe in self.pipes:
            self.pipes.remove(pipe)

    def _apply_cut(self):
        self.is_cut = True
        for pipe in self.pipes:
            self._silence(pipe)

    def _apply_heal(self):
        self.counts["closed_by_heal"] += len(self.pipes) + len(self.held)
        self._close_all()
        self.is_cut = False

    def _close_all(self):
        for pipe in list(self.pipes):
            self._drop(pipe)
        for s in self.held:
            s.close()
        self.held = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
