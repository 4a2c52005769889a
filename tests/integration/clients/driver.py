#!/usr/bin/python3
"""A long-lived raw memcached client, driven one JSON command per stdin line, one JSON
result per stdout line. Runs under LD_PRELOAD so the test can kill, pause and resume
servers between requests of the same process (same shim engine).

    driver.py HOST:PORT
    {"op": "req", "conn": "a", "data": base64, "kind": "line"|"get"|"eof"|"none",
     "read_timeout": seconds, "fresh": false}
        -> {"reply": base64, "elapsed": seconds, "error": null|"timeout"|"eof"|"reset"|"connect: ..."}
    {"op": "send", "conn": "a", "data": base64}        -> {"ok": true}  (no read)
    {"op": "recv", "conn": "a", "kind": ..., "read_timeout": s}
        -> {"reply", "elapsed" (since the send), "error"}
    {"op": "close", "conn": "a"}  -> {"ok": true}
    {"op": "ping"}                -> {"ok": true, "pid": n}

A connection whose reply timed out is closed (its late reply must not be read as the
next one's).
"""
import binascii
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcraw  # noqa: E402


def reply_complete(kind):
    def line(b):
        return b"\r\n" in b

    def get(b):
        pos = 0
        while True:
            eol = b.find(b"\r\n", pos)
            if eol < 0:
                return False
            ln = b[pos:eol]
            if ln.startswith(b"VALUE "):
                try:
                    n = int(ln.split()[3])
                except (IndexError, ValueError):
                    return True  # garbage: stop and let the test see it
                if len(b) < eol + 2 + n + 2:
                    return False
                pos = eol + 2 + n + 2
                continue
            return True  # END or an error line

    def many(check, n):
        # n consecutive replies of one kind (a pipelined burst read in one go)
        def done(b):
            rest = b
            for _ in range(n):
                end = reply_end(check, rest)
                if end is None:
                    return False
                rest = rest[end:]
            return True
        return done

    if "*" in kind:
        base, n = kind.split("*")
        return many(base, int(n))
    return {"line": line, "get": get, "eof": lambda b: False, "none": lambda b: True}[kind]


def reply_end(kind, b):
    """Length of the first complete reply of kind in b, or None."""
    if kind == "line":
        i = b.find(b"\r\n")
        return None if i < 0 else i + 2
    pos = 0
    while True:
        eol = b.find(b"\r\n", pos)
        if eol < 0:
            return None
        ln = b[pos:eol]
        if ln.startswith(b"VALUE "):
            try:
                n = int(ln.split()[3])
            except (IndexError, ValueError):
                return eol + 2
            if len(b) < eol + 2 + n + 2:
                return None
            pos = eol + 2 + n + 2
            continue
        return eol + 2


def main():
    addr = sys.argv[1]
    conns = {}
    sent_at = {}
    for raw in sys.stdin:
        cmd = json.loads(raw)
        op = cmd["op"]
        res = {}
        if op == "ping":
            res = {"ok": True, "pid": os.getpid()}
        elif op == "close":
            s = conns.pop(cmd.get("conn", "a"), None)
            if s:
                s.close()
            res = {"ok": True}
        elif op == "send":
            # write without reading; a later "recv" reads the reply
            name = cmd.get("conn", "a")
            try:
                s = conns.get(name) or mcraw.connect(addr, 5.0)
                conns[name] = s
                s.sendall(binascii.a2b_base64(cmd["data"]))
                sent_at[name] = time.monotonic()
                res = {"ok": True, "error": None}
            except OSError as e:
                res = {"ok": False, "error": "send: %s" % e}
        elif op == "recv":
            name = cmd.get("conn", "a")
            s = conns[name]
            out, status = mcraw.transfer(s, b"", reply_complete(cmd.get("kind", "line")),
                                         float(cmd.get("read_timeout", 5.0)))
            if status is not None:
                conns.pop(name).close()
            res = {"reply": binascii.b2a_base64(out, newline=False).decode(),
                   "elapsed": time.monotonic() - sent_at.get(name, time.monotonic()), "error": status}
        elif op == "req":
            name = cmd.get("conn", "a")
            timeout = float(cmd.get("read_timeout", 5.0))
            data = binascii.a2b_base64(cmd["data"])
            start = time.monotonic()
            if cmd.get("fresh") and name in conns:
                conns.pop(name).close()
            s = conns.get(name)
            if s is None:
                try:
                    s = mcraw.connect(addr, timeout)
                except OSError as e:
                    res = {"reply": "", "elapsed": time.monotonic() - start, "error": "connect: %s" % e}
                    print(json.dumps(res), flush=True)
                    continue
                conns[name] = s
            kind = cmd.get("kind", "line")
            out, status = mcraw.transfer(s, data, reply_complete(kind), timeout)
            if kind == "eof" and status == "eof":
                status = None
            if status is not None:
                conns.pop(name).close()
            res = {"reply": binascii.b2a_base64(out, newline=False).decode(),
                   "elapsed": time.monotonic() - start, "error": status}
        else:
            res = {"error": "unknown op %r" % op}
        print(json.dumps(res), flush=True)
    for s in conns.values():
        s.close()


if __name__ == "__main__":
    main()
