#!/usr/bin/python3
"""A raw memcached client for the host-safety tests (test_hostile.py), run under
LD_PRELOAD and driven like driver.py: one JSON command per stdin line, one JSON result
per stdout line. Unlike driver.py it never keeps an unbounded reply (a hostile server
may flood), tracks get replies by streaming, reports its own memory, and can check a
huge reply stream against its expected bytes without holding it.

    hostile_client.py HOST:PORT
    {"op": "ping"}                                   -> {"pid": n}
    {"op": "rss"}                                    -> {"hwm_kb": VmHWM, "rss_kb": VmRSS}
    {"op": "req", "conn": "a", "data": base64, "kind": K, "read_timeout": s,
     "keep": bytes kept (default 1 MiB), "linger": s}
        -> {"reply": base64 of the first `keep` bytes, "total": bytes received,
            "elapsed": s, "first_byte": s or null, "error": null|"timeout"|"eof"|"reset"|...,
            "values": VALUE items seen (kind get), "extra": bytes that came after the
            reply was complete, within `linger` seconds}
        K: "line" (one \\r\\n line), "get" (VALUE items then END or an error line,
        followed as a stream, any size), "stats" (until END), "until:<base64 suffix>"
        (until the bytes received end with it), "none" (send only)
    {"op": "set_value", "conn": "a", "key": k, "seed": n, "len": n}
        -> as req, kind line: `set k 0 0 len` with value(seed, len)
    {"op": "stream", "conn": "a", "data": base64, "prefix": base64, "unit_head": base64,
     "seed": n, "len": n, "unit_tail": base64, "count": n, "suffix": base64,
     "delay": s, "read_timeout": s}
        -> sends data from a writer thread (so a big pipeline never blocks the test),
           reads nothing for `delay` seconds, then reads and checks, byte by byte and
           without keeping it, that the stream is exactly
           prefix + (unit_head + value(seed, len) + unit_tail) * count + suffix;
           {"matched": bytes, "expected": bytes, "units": whole units matched,
            "mismatch_at": offset or null, "got": base64 around a mismatch,
            "want": base64, "received": bytes, "first_byte": s after the send,
            "elapsed": s, "error": null|"timeout"|"eof"|"reset"|"mismatch"|"extra",
            "sent": bytes written, "send_error": null|str}
    {"op": "close", "conn": "a"}

Every wait is bounded by the command's read_timeout.
"""
import binascii
import json
import os
import random
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcraw  # noqa: E402


def value(seed, n):
    """The test value of n bytes for seed (the test computes the same)."""
    return random.Random(seed).randbytes(n)


def memory():
    res = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                res[line.split(":")[0]] = int(line.split()[1])
    return {"hwm_kb": res.get("VmHWM"), "rss_kb": res.get("VmRSS")}


def b64(data):
    return binascii.b2a_base64(bytes(data), newline=False).decode()


class GetTracker:
    """Follows a get reply as a stream: VALUE items (skipping their data) until END or
    an error line. done once the reply is whole."""

    def __init__(self):
        self.line = bytearray()
        self.skip = 0
        self.values = 0
        self.done = False
        self.bad = False

    def feed(self, chunk):
        """Returns the number of bytes of chunk that belong to the reply."""
        pos = 0
        n = len(chunk)
        while pos < n and not self.done:
            if self.skip:
                take = min(self.skip, n - pos)
                self.skip -= take
                pos += take
                continue
            nl = chunk.find(b"\n", pos)
            if nl < 0:
                self.line += chunk[pos:]
                if len(self.line) > 65536:   # not a memcached line: stop following
                    self.done = self.bad = True
                return n
            self.line += chunk[pos:nl + 1]
            pos = nl + 1
            line = bytes(self.line)
            self.line.clear()
            if line.startswith(b"VALUE "):
                self.values += 1
                try:
                    self.skip = int(line.split()[3]) + 2
                except (IndexError, ValueError):
                    self.done = self.bad = True
                continue
            self.done = True   # END, or an error line, or garbage: the reply ends here
        return pos


def read_reply(s, kind, timeout, keep, linger, start):
    """Reads one reply of kind (see the module comment), keeping at most keep bytes."""
    kept = bytearray()
    tail = bytearray()
    total = 0
    first = None
    tracker = GetTracker() if kind == "get" else None
    until = None
    if kind.startswith("until:"):
        until = binascii.a2b_base64(kind[6:])
    elif kind == "stats":
        until = b"END\r\n"
    deadline = time.monotonic() + timeout
    error = None
    done = kind == "none"
    done_at = start
    extra = 0
    s.settimeout(0.05)
    while True:
        if done:
            if linger <= 0 or time.monotonic() >= done_at + linger:
                break
        elif time.monotonic() >= deadline:
            error = "timeout"
            break
        try:
            chunk = s.recv(1 << 16)
        except socket.timeout:
            continue
        except ConnectionResetError:
            error = "reset"
            break
        except OSError as e:
            error = "recv: %s" % e
            break
        if not chunk:
            if not done:
                error = "eof"
            break
        if first is None:
            first = time.monotonic() - start
        total += len(chunk)
        if done:
            extra += len(chunk)
            continue
        if len(kept) < keep:
            kept += chunk[:keep - len(kept)]
        tail += chunk[-64:]
        del tail[:-64]
        if tracker is not None:
            used = tracker.feed(chunk)
            if tracker.done:
                done = True
                extra += len(chunk) - used
        elif kind == "line":
            if b"\r\n" in (kept if total <= keep else tail) or b"\n" in chunk:
                done = True
        elif until is not None:
            if bytes(tail).endswith(until) and (kind != "stats" or total == 5 or bytes(tail).endswith(b"\r\nEND\r\n")):
                done = True
        if done:
            done_at = time.monotonic()
    return {"reply": b64(kept), "total": total, "elapsed": time.monotonic() - start, "first_byte": first,
            "error": error, "values": tracker.values if tracker else None, "extra": extra}


def send_all(s, data, deadline):
    view = memoryview(data)
    s.settimeout(0.05)
    while view:
        if time.monotonic() >= deadline:
            raise OSError("send timed out with %d bytes left" % len(view))
        try:
            n = s.send(view)
        except socket.timeout:
            continue
        view = view[n:]


class StreamCheck:
    """Compares a stream, as it arrives, with prefix + unit * count + suffix, without
    copying it (memoryview comparisons against unit + unit, so no window wraps)."""

    def __init__(self, prefix, unit, count, suffix):
        self.prefix, self.unit, self.count, self.suffix = prefix, unit, count, suffix
        self.unit2 = memoryview(unit + unit)
        self.body = len(unit) * count
        self.expected = len(prefix) + self.body + len(suffix)
        self.matched = 0
        self.mismatch_at = None
        self.got = self.want = b""

    def segment(self, pos):
        """(memoryview, offset, bytes available there) of the expected stream at pos."""
        lp = len(self.prefix)
        if pos < lp:
            return memoryview(self.prefix), pos, lp - pos
        if pos < lp + self.body:
            off = (pos - lp) % len(self.unit)
            return self.unit2, off, min(len(self.unit), lp + self.body - pos)
        off = pos - lp - self.body
        return memoryview(self.suffix), off, len(self.suffix) - off

    def expected_bytes(self, pos, n):
        """Up to n bytes of the expected stream from pos (for messages)."""
        out = b""
        while len(out) < n and pos < self.expected:
            seg, off, avail = self.segment(pos)
            piece = seg[off:off + min(avail, n - len(out))].tobytes()
            out += piece
            pos += len(piece)
        return out

    def feed(self, chunk):
        """chunk: a memoryview. False at the first byte that differs (or comes past the end)."""
        if self.mismatch_at is not None:
            return False
        pos = 0
        n = len(chunk)
        while pos < n:
            seg, off, avail = self.segment(self.matched)
            k = min(avail, n - pos)
            if k <= 0 or chunk[pos:pos + k] != seg[off:off + k]:
                got = chunk[pos:pos + k].tobytes() if k > 0 else chunk[pos:].tobytes()
                want = seg[off:off + k].tobytes() if k > 0 else b""
                i = 0
                while i < min(len(got), len(want)) and got[i] == want[i]:
                    i += 1
                self.matched += i
                self.mismatch_at = self.matched
                self.got = chunk[pos + max(0, i - 40):pos + i + 160].tobytes()
                self.want = self.expected_bytes(max(0, self.matched - min(i, 40)), 200)
                return False
            pos += k
            self.matched += k
        return True

    @property
    def complete(self):
        return self.matched == self.expected


def op_stream(s, cmd):
    dec = binascii.a2b_base64
    prefix, suffix = dec(cmd.get("prefix", "")), dec(cmd.get("suffix", ""))
    unit = dec(cmd.get("unit_head", "")) + value(cmd["seed"], cmd["len"]) + dec(cmd.get("unit_tail", ""))
    check = StreamCheck(prefix, unit, int(cmd["count"]), suffix)
    data = dec(cmd["data"])
    timeout = float(cmd.get("read_timeout", 60.0))
    start = time.monotonic()
    deadline = start + timeout
    box = {"sent": 0, "error": None}

    def writer():
        try:
            send_all(s, data, deadline)
            box["sent"] = len(data)
        except Exception as e:  # noqa: BLE001 (reported to the test)
            box["error"] = "%s: %s" % (type(e).__name__, e)

    s.settimeout(0.05)
    t = threading.Thread(target=writer, daemon=True)
    t.start()
    time.sleep(float(cmd.get("delay", 0)))
    received = 0
    first = None
    error = None
    buf = bytearray(1 << 20)
    mv = memoryview(buf)
    while True:
        if check.complete:
            # anything more, soon after, is a reply too many
            end = time.monotonic() + 0.3
            while time.monotonic() < end:
                try:
                    n = s.recv_into(buf)
                except socket.timeout:
                    continue
                except OSError:
                    break
                if n == 0:
                    break
                received += n
                error = "extra"
                break
            break
        if time.monotonic() >= deadline:
            error = "timeout"
            break
        try:
            n = s.recv_into(buf)
        except socket.timeout:
            continue
        except ConnectionResetError:
            error = "reset"
            break
        except OSError as e:
            error = "recv: %s" % e
            break
        if n == 0:
            error = "eof"
            break
        if first is None:
            first = time.monotonic() - start
        received += n
        if not check.feed(mv[:n]):
            error = "mismatch"
            break
    t.join(timeout=max(0.0, deadline - time.monotonic()) + 1)
    units = max(0, check.matched - len(prefix)) // len(unit) if unit else 0
    return {"matched": check.matched, "expected": check.expected, "units": min(units, check.count),
            "mismatch_at": check.mismatch_at, "got": b64(check.got), "want": b64(check.want),
            "received": received, "first_byte": first, "elapsed": time.monotonic() - start, "error": error,
            "sent": box["sent"], "send_error": box["error"]}


def main():
    addr = sys.argv[1]
    conns = {}

    def conn(name, timeout):
        s = conns.get(name)
        if s is None:
            s = mcraw.connect(addr, timeout)
            conns[name] = s
        return s

    for raw in sys.stdin:
        cmd = json.loads(raw)
        op = cmd["op"]
        name = cmd.get("conn", "a")
        timeout = float(cmd.get("read_timeout", 5.0))
        try:
            if op == "ping":
                res = {"pid": os.getpid()}
            elif op == "rss":
                res = memory()
            elif op == "close":
                s = conns.pop(name, None)
                if s:
                    s.close()
                res = {"ok": True}
            elif op in ("req", "set_value"):
                if op == "set_value":
                    v = value(cmd["seed"], cmd["len"])
                    data = b"set %s 0 0 %d\r\n%s\r\n" % (cmd["key"].encode(), len(v), v)
                    kind = "line"
                else:
                    data = binascii.a2b_base64(cmd["data"])
                    kind = cmd.get("kind", "line")
                start = time.monotonic()
                s = conn(name, timeout)
                send_all(s, data, start + timeout)
                res = read_reply(s, kind, timeout, int(cmd.get("keep", 1 << 20)), float(cmd.get("linger", 0)), start)
                if res["error"] is not None:
                    conns.pop(name).close()
            elif op == "stream":
                res = op_stream(conn(name, timeout), cmd)
            else:
                res = {"error": "unknown op %r" % op}
        except Exception as e:  # noqa: BLE001 (the test sees it; the process stays up)
            res = {"error": "%s: %s" % (type(e).__name__, e), "reply": "", "total": 0}
            s = conns.pop(name, None)
            if s:
                s.close()
        print(json.dumps(res), flush=True)
    for s in conns.values():
        s.close()


if __name__ == "__main__":
    main()
