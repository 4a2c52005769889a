#!/usr/bin/python3
"""Raw memcached META command exchanges (mg, ms, md, ma, mn, me) over a plain socket.

The same contract as mcraw.py, whose socket handling and sentinel it reuses: imported
by a test against a direct memcached, run as a script by /usr/bin/python3 under
LD_PRELOAD against the shim:

    metaraw.py HOST:PORT < {"steps": [{"data": base64, "eof": false}, ...],
                            "timeout": seconds, "trickle": 0}
    -> {"replies": [base64, ...]}

    metaraw.py HOST:PORT --session     a long-lived client, one request per stdin line:
    {"data": base64, "mns": 1, "timeout": seconds}
    -> {"reply": base64, "elapsed": seconds, "error": null|"timeout"|"eof"|"reset"|"connect: ..."}
    The data is sent on one connection (opened on first use, reopened after an error)
    and the reply is read until it holds "mns" MN replies (the data must end with as
    many `mn` commands): the test can kill servers between requests of one process.

Each step is followed by mcraw's ASCII sentinel (`set` + `get` of a unique value), so
meta and classic commands share the connection as they may on a real server. "{cas}"
in a step is replaced by the value of the last `c<cas>` return flag seen in a meta
reply on this connection, "{badcas}" by that value plus 1000. A reply that did not
complete ends with "<TIMEOUT>", "<EOF>" or "<RESET>" as in mcraw.py.

Also: split()/items() split a reply stream into (line, data block or None) pairs, and
probe() reads keys (any bytes, sent base64-encoded with the b flag) straight from one
server.
"""
import base64
import binascii
import json
import os
import re
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcraw  # noqa: E402

META_CODES = (b"VA", b"HD", b"EN", b"NF", b"NS", b"EX", b"MN", b"ME")
CAS_FLAG = re.compile(rb"^c(\d+)$")


def split(reply):
    """([(line without \\r\\n, data block or None), ...], incomplete tail) of a reply
    stream: the data block follows `VA <size> ...` and `VALUE <key> <flags> <size> ...`
    lines."""
    out = []
    pos = 0
    while pos < len(reply):
        eol = reply.find(b"\r\n", pos)
        if eol < 0:
            break
        line = reply[pos:eol]
        tok = line.split(b" ")
        size = None
        try:
            if tok[0] == b"VA" and len(tok) > 1:
                size = int(tok[1])
            elif tok[0] == b"VALUE" and len(tok) > 3:
                size = int(tok[3])
        except ValueError:
            size = None
        if size is None:
            out.append((line, None))
            pos = eol + 2
            continue
        if len(reply) < eol + 2 + size + 2:
            break
        out.append((line, reply[eol + 2:eol + 2 + size]))
        pos = eol + 2 + size + 2
    return out, reply[pos:]


def items(reply):
    """split() with an incomplete tail appended as (bytes, None)."""
    out, rest = split(reply)
    if rest:
        out.append((rest, None))
    return out


def last_cas(reply, cas):
    """The value of the last c<cas> return flag in the meta reply lines, else cas."""
    for line, _data in items(reply):
        tok = line.split(b" ")
        if tok[0] in META_CODES:
            for t in tok[1:]:
                m = CAS_FLAG.match(t)
                if m:
                    cas = m.group(1)
    return cas


def fill_cas(data, cas):
    """A step's bytes with "{cas}" replaced by the last c<cas> value, "{badcas}" by it plus 1000."""
    return data.replace(b"{cas}", cas).replace(b"{badcas}", b"%d" % (int(cas) + 1000))


def exchange(addr, steps, timeout=5.0, trickle=0):
    """Runs the steps on one connection; returns the replies (bytes) step by step
    (mcraw.exchange with the meta CAS placeholders)."""
    return mcraw.exchange(addr, steps, timeout, trickle, fill=fill_cas, seen=last_cas)


def b64(key):
    return base64.b64encode(key)


def probe(host, port, keys, timeout=5.0):
    """{key: (flags, value)} for the keys (bytes) that server host:port holds, read
    with `mg <key> f v` pipelined and ended by `mn` (no shim involved). Keys with bytes
    outside printable ASCII are sent base64-encoded with the b flag (memcached limits
    the encoded form to 250 bytes, so such keys must be at most 186 bytes)."""
    keys = list(keys)
    req = b"".join(b"mg %s f v\r\n" % k if all(33 <= c < 127 for c in k) else b"mg %s b f v\r\n" % b64(k)
                   for k in keys) + b"mn\r\n"
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(req)
        buf = b""
        while True:
            done, rest = split(buf)
            if not rest and done and done[-1] == (b"MN", None):
                break
            chunk = s.recv(1 << 20)
            if not chunk:
                raise AssertionError("probe of %s:%d: connection closed after %r" % (host, port, buf[-200:]))
            buf += chunk
    res = {}
    replies = items(buf)
    if len(replies) != len(keys) + 1 or replies[-1][0] != b"MN":
        raise AssertionError("probe of %s:%d: %d replies for %d keys: %r" % (host, port, len(replies), len(keys),
                                                                             buf[-300:]))
    for key, (line, data) in zip(keys, replies):
        tok = line.split(b" ")
        if tok[0] == b"EN":
            continue
        if tok[0] != b"VA":
            raise AssertionError("probe of %s:%d key %r: %r" % (host, port, key, line))
        flags = [int(t[1:]) for t in tok[2:] if t.startswith(b"f")]
        res[key] = (flags[0] if flags else None, data)
    return res


def _mn_count(buf):
    """Number of complete MN replies in buf, or -1 when buf ends inside a reply."""
    done, rest = split(buf)
    if rest:
        return -1
    return sum(1 for line, data in done if line == b"MN" and data is None)


def session(addr):
    import time
    s = None
    for raw in sys.stdin:
        cmd = json.loads(raw)
        timeout = float(cmd.get("timeout", 5.0))
        mns = int(cmd.get("mns", 1))
        start = time.monotonic()
        if s is None:
            try:
                s = mcraw.connect(addr, timeout)
            except OSError as e:
                print(json.dumps({"reply": "", "elapsed": time.monotonic() - start, "error": "connect: %s" % e}),
                      flush=True)
                continue
        out, status = mcraw.transfer(s, binascii.a2b_base64(cmd["data"]), lambda b: _mn_count(b) >= mns, timeout)
        if status is not None:
            s.close()
            s = None
        res = {"reply": mcraw.text64(out), "elapsed": time.monotonic() - start,
               "error": status}
        print(json.dumps(res), flush=True)
    if s is not None:
        s.close()


def main():
    if "--session" in sys.argv[2:]:
        session(sys.argv[1])
        return
    mcraw.main(exchange)


if __name__ == "__main__":
    main()
