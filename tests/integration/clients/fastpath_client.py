#!/usr/bin/env python3
"""Raw-socket client for tests/integration/test_fastpath.py, run under the shim.

Usage: fastpath_client.py HOST PORT MODE [ARGS...]; prints one JSON object.

Modes:
  roundtrips N BLOCKING   N set+get pairs on one connection (BLOCKING 1: no timeout,
                          the socket blocks; 0: settimeout, non-blocking underneath;
                          rcvtimeo: blocking with SO_RCVTIMEO set);
                          then `stats mcshim` (the fast-path counters)
  mixed                   on one blocking connection: a multi-get across servers, a
                          pipeline of text requests in one write, noreply sets each
                          followed at once by a get (never the old value), a binary
                          quiet pipeline (getq...noop), meta commands, a request split
                          over two writes, and a write of several requests of which
                          the last is cut short
  threads T N [fork-first]  T threads, each with its own blocking connection, N
                          set+get pairs; then a fork: the child uses an inherited
                          connection and a new one (fork-first: the fork comes before
                          the threads)
  frozen KEY OTHER        one blocking and one non-blocking `get KEY` while the test has
                          frozen KEY's server (after one round trip with OTHER, a key
                          of another server): how long each write() took, and the reply
"""
import json
import os
import select
import socket
import struct
import sys
import threading
import time

HOST, PORT, MODE = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ARGS = sys.argv[4:]


def connect(blocking=True):
    s = socket.create_connection((HOST, PORT))
    if blocking == "rcvtimeo":
        # blocking, with the kernel's own receive timeout set
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 5, 0))
    elif not blocking:
        s.settimeout(10)
    return s


def read_until(s, ends, limit=10.0):
    """Reads until the buffer ends with one of ends (bytes or tuple)."""
    if isinstance(ends, bytes):
        ends = (ends,)
    buf = b""
    deadline = time.monotonic() + limit
    while not buf.endswith(ends):
        if time.monotonic() > deadline:
            raise SystemExit("timed out reading: %r" % buf[-200:])
        d = s.recv(65536)
        if not d:
            raise SystemExit("EOF after %r" % buf[-200:])
        buf += d
    return buf


def rt(s, req, ends=(b"END\r\n", b"STORED\r\n", b"DELETED\r\n", b"NOT_FOUND\r\n", b"ERROR\r\n")):
    s.sendall(req)
    return read_until(s, ends)


def stats(s):
    out = rt(s, b"stats mcshim\r\n", b"END\r\n").decode()
    d = {}
    for line in out.split("\r\n"):
        p = line.split(" ")
        if len(p) == 3 and p[0] == "STAT":
            d[p[1]] = p[2]
    return {k: int(d[k]) for k in ("requests", "fast_requests", "fast_declined", "fast_handoffs")}


def pairs(s, n, tag, errors):
    for i in range(n):
        key = b"%s-%d" % (tag, i)
        val = b"v%d-%s" % (i, tag)
        r = rt(s, b"set %s 0 0 %d\r\n%s\r\n" % (key, len(val), val))
        if r != b"STORED\r\n":
            errors.append("set %r: %r" % (key, r))
        r = rt(s, b"get %s\r\n" % key)
        want = b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (key, len(val), val)
        if r != want:
            errors.append("get %r: %r" % (key, r))


def mode_roundtrips():
    n, blocking = int(ARGS[0]), {"1": True, "0": False}.get(ARGS[1], ARGS[1])
    s = connect(blocking)
    errors = []
    pairs(s, n, b"rt", errors)
    print(json.dumps({"errors": errors[:10], "stats": stats(s)}))


def bin_req(opcode, key=b"", extras=b"", value=b"", opaque=0):
    return struct.pack(">BBHBBHIIQ", 0x80, opcode, len(key), len(extras), 0, 0,
                       len(extras) + len(key) + len(value), opaque, 0) + extras + key + value


def bin_read(s, until_opcode):
    """Reads binary responses until one with until_opcode; returns [(opcode, status, opaque, value)]."""
    out = []
    buf = b""
    while True:
        while len(buf) < 24:
            d = s.recv(65536)
            if not d:
                raise SystemExit("EOF in binary reply")
            buf += d
        magic, op, klen, elen, _dt, status, blen, opaque, _cas = struct.unpack(">BBHBBHIIQ", buf[:24])
        while len(buf) < 24 + blen:
            d = s.recv(65536)
            if not d:
                raise SystemExit("EOF in binary body")
            buf += d
        body = buf[24:24 + blen]
        buf = buf[24 + blen:]
        out.append((op, status, opaque, body[elen + klen:]))
        if op == until_opcode:
            return out


def mode_mixed():
    s = connect(True)
    errors = []
    # a multi-get whose keys live on several servers
    keys = [b"mg-%d" % i for i in range(40)]
    for k in keys:
        if rt(s, b"set %s 0 0 %d\r\n%s\r\n" % (k, len(k), k)) != b"STORED\r\n":
            errors.append("set %r" % k)
    r = rt(s, b"get " + b" ".join(keys) + b"\r\n")
    want = b"".join(b"VALUE %s 0 %d\r\n%s\r\n" % (k, len(k), k) for k in keys) + b"END\r\n"
    if r != want:
        errors.append("multi-get: %r" % r[:200])
    # several text requests in one write
    s.sendall(b"set p1 0 0 1\r\na\r\nget p1\r\ndelete p1\r\nget p1\r\n")
    r = read_until(s, b"DELETED\r\nEND\r\n")
    if r != b"STORED\r\nVALUE p1 0 1\r\na\r\nEND\r\nDELETED\r\nEND\r\n":
        errors.append("pipeline: %r" % r)
    # noreply, then at once a get (on the fast path the get must not overtake the set)
    stale = 0
    for i in range(300):
        v = b"%d" % i
        s.sendall(b"set nr 0 0 %d noreply\r\n%s\r\n" % (len(v), v))
        r = rt(s, b"get nr\r\n")
        if r != b"VALUE nr 0 %d\r\n%s\r\nEND\r\n" % (len(v), v):
            stale += 1
    if stale:
        errors.append("noreply: %d of 300 gets did not see the set before them" % stale)
    # a request over two writes, and a write that ends inside a request
    s.sendall(b"set split 0 0 5\r\nhel")
    time.sleep(0.01)
    s.sendall(b"lo\r\n")
    if read_until(s, b"STORED\r\n") != b"STORED\r\n":
        errors.append("split set")
    s.sendall(b"get split\r\nget spl")
    time.sleep(0.01)
    s.sendall(b"it\r\n")
    r = read_until(s, b"END\r\nVALUE split 0 5\r\nhello\r\nEND\r\n")
    if r != b"VALUE split 0 5\r\nhello\r\nEND\r\n" * 2:
        errors.append("cut write: %r" % r)
    # meta
    r = rt(s, b"ms mt 2 T0\r\nhi\r\n", (b"HD\r\n",))
    r2 = rt(s, b"mg mt v\r\n", (b"hi\r\n",))
    if r != b"HD\r\n" or r2 != b"VA 2\r\nhi\r\n":
        errors.append("meta: %r %r" % (r, r2))
    s.close()
    # binary, on its own connection: set, then a quiet pipeline getq x3 (one miss) + noop
    b = connect(True)
    b.sendall(bin_req(0x01, b"bk1", struct.pack(">II", 0, 0), b"one", 1))
    if bin_read(b, 0x01)[0][1] != 0:
        errors.append("binary set")
    b.sendall(bin_req(0x09, b"bk1", opaque=2) + bin_req(0x09, b"nobk", opaque=3) + bin_req(0x09, b"bk1", opaque=4)
              + bin_req(0x0a, opaque=5))
    got = bin_read(b, 0x0a)
    if [(op, st, op_, v) for op, st, op_, v in got] != [(0x09, 0, 2, b"one"), (0x09, 0, 4, b"one"), (0x0a, 0, 5, b"")]:
        errors.append("binary quiet pipeline: %r" % got)
    st = stats(connect(True))
    print(json.dumps({"errors": errors[:10], "stats": st}))


def fork_child(keep):
    """Forks: the child uses `keep` (inherited) and a new connection. Returns its report."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        e = []
        try:
            pairs(keep, 20, b"child-inherited", e)
            c = connect(True)
            pairs(c, 20, b"child-new", e)
            e_stats = stats(c)
        except BaseException as ex:  # noqa: BLE001
            e.append(repr(ex))
            e_stats = {}
        os.write(w, json.dumps({"errors": e, "stats": e_stats}).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while True:
        d = os.read(r, 65536)
        if not d:
            break
        data += d
    os.waitpid(pid, 0)
    return json.loads(data or b'{"errors": ["no report from the child"], "stats": {}}')


def mode_threads():
    t, n = int(ARGS[0]), int(ARGS[1])
    fork_first = len(ARGS) > 2 and ARGS[2] == "fork-first"
    errors = []
    lock = threading.Lock()

    def work(i):
        e = []
        try:
            s = connect(True)
            pairs(s, n, b"th%d" % i, e)
            s.close()
        except Exception as ex:  # noqa: BLE001 (reported)
            e.append(repr(ex))
        with lock:
            errors.extend(e)

    keep = connect(True)
    pairs(keep, 5, b"keep", errors)
    child = fork_child(keep) if fork_first else None
    threads = [threading.Thread(target=work, args=(i,)) for i in range(t)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    stuck = sum(th.is_alive() for th in threads)
    if child is None:
        child = fork_child(keep)
    pairs(keep, 20, b"parent-after-fork", errors)
    print(json.dumps({"errors": errors[:10], "stuck": stuck, "child": child, "stats": stats(keep)}))


def mode_frozen():
    key = ARGS[0].encode()
    out = {}
    s = connect(True)
    # one round trip first (to a key of another server: the first write on a new
    # connection may reach the engine before it has taken the connection over)
    rt(s, b"get %s\r\n" % ARGS[1].encode())
    t0 = time.monotonic()
    s.sendall(b"get %s\r\n" % key)
    out["blocking_write_s"] = time.monotonic() - t0
    out["blocking_reply"] = read_until(s, (b"END\r\n", b"\r\n")).decode(errors="replace")
    n = socket.create_connection((HOST, PORT))
    n.setblocking(False)
    worst = 0.0
    replies = []
    for _ in range(5):
        t0 = time.monotonic()
        n.send(b"get %s\r\n" % key)
        worst = max(worst, time.monotonic() - t0)
        buf = b""
        deadline = time.monotonic() + 30
        while not (buf.endswith(b"END\r\n") or buf.startswith(b"SERVER_ERROR")) and time.monotonic() < deadline:
            select.select([n], [], [], 1.0)
            try:
                d = n.recv(65536)
            except BlockingIOError:
                continue
            if not d:
                break
            buf += d
        replies.append(buf.decode(errors="replace"))
    out["nonblocking_write_max_s"] = worst
    out["nonblocking_replies"] = replies
    print(json.dumps(out))


{"roundtrips": mode_roundtrips, "mixed": mode_mixed, "threads": mode_threads, "frozen": mode_frozen}[MODE]()
