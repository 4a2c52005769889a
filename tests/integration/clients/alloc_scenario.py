#!/usr/bin/python3
"""A fixed scenario of requests (text, multi-get across servers, arithmetic, binary,
meta, stats) for the allocation-failure sweep (test_alloc_sweep.py). Run under
LD_PRELOAD with MCSHIM_TEST_ALLOC_FAIL=N: one allocation of the library fails.

    alloc_scenario.py HOST:PORT -> one JSON line: {"steps": [[name, verdict, detail], ...]}

Verdicts: "ok" (the exact expected reply), "error" (an answer memcached itself may
give when it cannot serve: SERVER_ERROR ..., a miss, binary status 0x0082/0x0086/
0x0001, or the connection closed by the shim), "bad" (anything else: wrong bytes,
a truncated reply left hanging). A step that waits longer than its time limit
is "hang". The process must exit normally whatever happens.
"""
import json
import os
import socket
import struct
import sys
import time

LIMIT = float(os.environ.get("ALLOC_STEP_LIMIT", "3"))


def connect(addr):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=LIMIT)
    return s


def read_until(s, done):
    """Reads until done(buf) is true, EOF, or the limit. Returns (bytes, how)."""
    buf = b""
    deadline = time.monotonic() + LIMIT
    while not done(buf):
        left = deadline - time.monotonic()
        if left <= 0:
            return buf, "hang"
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            return buf, "hang"
        except OSError:
            return buf, "closed"
        if not chunk:
            return buf, "closed"
        buf += chunk
    return buf, "done"


def text_step(addr, name, req, want):
    """want: the exact reply expected when nothing fails."""
    try:
        s = connect(addr)
    except OSError as e:
        return [name, "error", "connect: %s" % e]
    with s:
        try:
            s.sendall(req)
        except OSError as e:
            return [name, "error", "send: %s" % e]
        n = answers(want)
        got, how = read_until(s, lambda b: answers(b) >= n)
    if got == want:
        return [name, "ok", ""]
    if how == "hang":
        return [name, "hang", repr(got[:200])]
    if how == "closed":
        return [name, "error", "closed after %d bytes" % len(got)]
    if got.startswith(b"SERVER_ERROR ") or degraded(got, want):
        # the first answer failed (what follows in the step depends on it), or
        # some answers became errors or misses
        return [name, "error", repr(got[:200])]
    return [name, "bad", repr(got[:300])]


def degraded(got, want):
    """got is want with some answers replaced by SERVER_ERROR lines, or some hits
    of a retrieval missing (the rest exact and in order)."""
    items, wanted = split_items(got), split_items(want)
    if items is None or wanted is None:
        return False
    i = 0
    for it in items:
        if it.startswith(b"SERVER_ERROR "):
            i += 1
            continue
        while i < len(wanted) and wanted[i] != it:
            if not wanted[i].startswith(b"VALUE "):
                return False   # only hits may go missing
            i += 1
        if i == len(wanted):
            return False
        i += 1
    return True


def answers(b):
    """Complete answers in b: every item but a VALUE/VA block ends one (a retrieval's
    END, a status line, an error line that cut a retrieval short)."""
    items = split_items(b, partial=True)
    return sum(1 for it in items if not it.startswith((b"VALUE ", b"VA ")))


def split_items(b, partial=False):
    """Reply lines and whole VALUE blocks, or None if b does not end on a whole one."""
    out = []
    while b:
        nl = b.find(b"\r\n")
        if nl < 0:
            return out if partial else None
        line = b[:nl + 2]
        if line.startswith((b"VALUE ", b"VA ")):
            parts = line.split()
            size = parts[3] if line.startswith(b"VALUE ") and len(parts) > 3 else parts[1] if len(parts) > 1 else b""
            if not size.isdigit():
                return out if partial else None
            total = nl + 2 + int(size) + 2
            if len(b) < total:
                return out if partial else None
            line = b[:total]
        out.append(line)
        b = b[len(line):]
    return out


def binary_step(addr, name):
    """Binary set then get of one key: status 0 twice with the value back."""
    def pkt(op, key, extras=b"", value=b"", opaque=0):
        return struct.pack(">BBHBBHIIQ", 0x80, op, len(key), len(extras), 0, 0,
                           len(extras) + len(key) + len(value), opaque, 0) + extras + key + value
    try:
        s = connect(addr)
    except OSError as e:
        return [name, "error", "connect: %s" % e]
    with s:
        try:
            s.sendall(pkt(0x01, b"bk", struct.pack(">II", 0, 0), b"bval", 1) + pkt(0x00, b"bk", opaque=2))
        except OSError as e:
            return [name, "error", "send: %s" % e]
        got, how = b"", "done"
        replies = []
        while len(replies) < 2:
            got, how = read_until(s, lambda b: len(b) >= 24 and len(b) >= 24 + struct.unpack(">I", b[8:12])[0])
            if how != "done":
                break
            body = struct.unpack(">I", got[8:12])[0]
            replies.append(got[:24 + body])
            rest = got[24 + body:]
            while rest and len(replies) < 2 and len(rest) >= 24 and len(rest) >= 24 + struct.unpack(">I", rest[8:12])[0]:
                b2 = struct.unpack(">I", rest[8:12])[0]
                replies.append(rest[:24 + b2])
                rest = rest[24 + b2:]
            if len(replies) < 2:
                # keep reading for the second packet
                more, how = read_until(s, lambda b: len(b) >= 24 and len(b) >= 24 + struct.unpack(">I", b[8:12])[0])
                if how != "done":
                    break
                replies.append(more)
    if how == "hang":
        return [name, "hang", repr(got[:100])]
    stats = []
    for r in replies:
        if len(r) < 24 or r[0] != 0x81:
            return [name, "bad", repr(r[:60])]
        stats.append(struct.unpack(">H", r[6:8])[0])
    if len(replies) == 2 and stats == [0, 0] and replies[1].endswith(b"bval"):
        return [name, "ok", ""]
    if all(st in (0, 0x0001, 0x0082, 0x0086) for st in stats):
        return [name, "error", "statuses %r, %s" % (stats, how)]
    return [name, "bad", "statuses %r, %s" % (stats, how)]


def main():
    addr = sys.argv[1]
    keys = [b"k%d" % i for i in range(16)]
    sets = b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (k, len(k), k) for k in keys)
    values = b"".join(b"VALUE %s 0 %d\r\n%s\r\n" % (k, len(k), k) for k in keys)
    steps = [
        text_step(addr, "set", b"set a 0 0 1\r\nx\r\n", b"STORED\r\n"),
        text_step(addr, "get", b"set g 0 0 1\r\nx\r\nget g\r\n", b"STORED\r\nVALUE g 0 1\r\nx\r\nEND\r\n"),
        text_step(addr, "sets", sets, b"STORED\r\n" * len(keys)),
        text_step(addr, "multi-get", sets + b"get %s\r\n" % b" ".join(keys), b"STORED\r\n" * len(keys) + values + b"END\r\n"),
        text_step(addr, "incr", b"set n 0 0 1\r\n5\r\nincr n 2\r\n", b"STORED\r\n7\r\n"),
        text_step(addr, "delete", b"set d 0 0 1\r\nx\r\ndelete d\r\nget d\r\n", b"STORED\r\nDELETED\r\nEND\r\n"),
        text_step(addr, "meta", b"ms mk 2\r\nhi\r\nmg mk v\r\n", b"HD\r\nVA 2\r\nhi\r\n"),
        binary_step(addr, "binary"),
        text_step(addr, "too-large", b"set a 0 0 2000000\r\n" + b"z" * 2000000 + b"\r\nget a\r\n",
                  b"SERVER_ERROR object too large for cache\r\nEND\r\n"),
    ]
    print(json.dumps({"steps": steps}))


if __name__ == "__main__":
    main()
