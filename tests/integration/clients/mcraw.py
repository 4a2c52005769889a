#!/usr/bin/python3
"""Raw memcached ASCII exchanges over a plain libc socket.

Used two ways with the same code: imported by a test against a direct memcached,
and run as a script by /usr/bin/python3 under LD_PRELOAD (an unmodified client of
the shim):

    mcraw.py HOST:PORT < {"steps": [{"data": base64, "eof": false}, ...],
                          "timeout": seconds, "trickle": 0}
    -> {"replies": [base64, ...]}

Each step's bytes are sent, followed (unless "eof") by a sentinel request
`set <sentinel> ...` + `get <sentinel>` whose unique reply marks the end of the
step's replies; the sentinel reply is stripped. With "eof" the reply is read until
the peer closes. "{cas}" in a step is replaced by the CAS unique of the last
`VALUE k f n cas` line seen on this connection. A reply that did not complete ends
with "<TIMEOUT>", one cut by the peer with "<EOF>" (after the bytes received) or
"<RESET>".
"""
import binascii
import json
import os
import re
import select
import socket
import sys
import time

SENTINEL_KEY = b"__mcshim_sentinel__"
CAS_RE = re.compile(rb"VALUE \S+ \d+ \d+ (\d+)\r\n")


def sentinel():
    tag = binascii.hexlify(os.urandom(8))
    req = b"set %s 0 0 %d\r\n%s\r\nget %s\r\n" % (SENTINEL_KEY, len(tag), tag, SENTINEL_KEY)
    value = b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (SENTINEL_KEY, len(tag), tag)
    return req, value


def parse_addr(addr):
    if addr.startswith("["):
        host, port = addr[1:].split("]:")
        return socket.AF_INET6, (host, int(port))
    host, port = addr.rsplit(":", 1)
    return socket.AF_INET, (host, int(port))


def connect(addr, timeout=5.0):
    fam, sa = parse_addr(addr)
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(sa)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def transfer(s, data, done, timeout, trickle=0):
    """Sends data while reading replies (so big replies never deadlock a big send)
    until done(buffer) is true, the peer closes, or timeout. Returns (buffer, status)
    with status None, "eof", "reset" or "timeout"."""
    s.setblocking(False)
    out = b""
    pos = 0
    deadline = time.monotonic() + timeout
    try:
        while True:
            if pos >= len(data) and done(out):
                return out, None
            left = deadline - time.monotonic()
            if left <= 0:
                return out, "timeout"
            wset = [s] if pos < len(data) else []
            r, w, _ = select.select([s], wset, [], min(left, 0.5))
            if r:
                try:
                    chunk = s.recv(1 << 20)
                except (BlockingIOError, InterruptedError):
                    chunk = None
                if chunk == b"":
                    return out, "eof"
                if chunk:
                    out += chunk
            if w:
                end = pos + trickle if trickle else len(data)
                try:
                    pos += s.send(data[pos:end])
                except (BlockingIOError, InterruptedError):
                    pass
                if trickle:
                    time.sleep(0.001)
    except ConnectionResetError:
        return out, "reset"
    except BrokenPipeError:
        return out, "reset"
    finally:
        s.setblocking(True)


def incomplete(status):
    """The marker a reply that did not complete ends with (status from transfer())."""
    return {"eof": b"<EOF>", "reset": b"<RESET>"}.get(status, b"<TIMEOUT>")


def fill_cas(data, cas):
    """A step's bytes with "{cas}" replaced by the CAS unique last seen."""
    return data.replace(b"{cas}", cas)


def seen_cas(reply, cas):
    """The CAS unique of the last `VALUE k f n cas` line in reply, else cas."""
    for m in CAS_RE.finditer(reply):
        cas = m.group(1)
    return cas


def exchange(addr, steps, timeout=5.0, trickle=0, fill=fill_cas, seen=seen_cas):
    """Runs the steps on one connection; returns the replies (bytes) step by step.
    fill(data, cas) puts the CAS placeholders into a step's bytes, seen(reply, cas)
    returns the CAS the reply reveals (cas when none); metaraw.py passes its own."""
    s = connect(addr, timeout)
    replies = []
    cas = b"0"
    try:
        for step in steps:
            data = fill(step["data"], cas)
            if step.get("eof"):
                out, status = transfer(s, data, lambda b: False, timeout, trickle)
                replies.append(out + incomplete(status))
                break
            sreq, sval = sentinel()
            out, status = transfer(s, data + sreq, lambda b: b.endswith(sval), timeout, trickle)
            if status is None:
                out = out[:-len(sval)]
                if out.endswith(b"STORED\r\n"):
                    out = out[:-len(b"STORED\r\n")]
                else:
                    out += b"<SENTINEL-NOT-STORED>"
            else:
                out += incomplete(status)
            cas = seen(out, cas)
            replies.append(out)
            if status is not None:
                break
    finally:
        s.close()
    return replies


def text64(data):
    """bytes -> base64 text, as the JSON replies carry them."""
    return binascii.b2a_base64(data, newline=False).decode()


def read_request(stream=None):
    """(steps, timeout, trickle) of the JSON request on stdin (see above)."""
    req = json.load(stream or sys.stdin)
    steps = [{"data": binascii.a2b_base64(st["data"]), "eof": st.get("eof", False)} for st in req["steps"]]
    return steps, req.get("timeout", 5.0), req.get("trickle", 0)


def main(run=exchange):
    """The script: run(addr, steps, timeout, trickle) on the request, prints the replies."""
    replies = run(sys.argv[1], *read_request())
    print(json.dumps({"replies": [text64(r) for r in replies]}))


if __name__ == "__main__":
    main()
