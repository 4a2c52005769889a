#!/usr/bin/python3
"""Raw memcached BINARY protocol exchanges over a plain libc socket.

Like mcraw.py (ASCII), used two ways with the same code: imported by a test against a
direct memcached (and for its packet builder and parser), and run as a script by
/usr/bin/python3 under LD_PRELOAD, an unmodified client of the shim:

    binclient.py HOST:PORT < {"steps": [{"data": base64, "eof": false}, ...],
                              "timeout": seconds, "trickle": 0}
    -> {"replies": [{"packets": [base64, ...], "rest": base64, "status": null}, ...]}

Each step's bytes (any number of request packets, well-formed or not) are sent,
followed (unless "eof") by a sentinel NOOP with a random opaque; the step's replies are
every response packet before the sentinel's NOOP response, which is stripped. With
"eof" the replies are read until the peer closes. "packets" are whole response packets
(24-byte header and body) in arrival order, "rest" the bytes after the last whole packet
(normally empty), "status" null, or "eof" / "reset" / "timeout" when the step did not
complete (later steps are then not run).

CAS placeholders: the 8 bytes CAS_LAST in a step are replaced by the last nonzero CAS
seen in any response on this connection, CAS_BAD by that value plus 1000 (a wrong CAS).
"""
import json
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcraw  # noqa: E402  (connect, transfer, read_request: as the ASCII client)

HEADER = struct.Struct(">BBHBBHIIQ")  # magic opcode keylen extlen datatype vbucket/status bodylen opaque cas
REQ_MAGIC = 0x80
RES_MAGIC = 0x81

# Opcodes (memcached protocol_binary.h)
GET, SET, ADD, REPLACE, DELETE, INCR, DECR, QUIT, FLUSH = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08
GETQ, NOOP, VERSION, GETK, GETKQ, APPEND, PREPEND, STAT = 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10
SETQ, ADDQ, REPLACEQ, DELETEQ, INCRQ, DECRQ, QUITQ, FLUSHQ = 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18
APPENDQ, PREPENDQ, VERBOSITY, TOUCH, GAT, GATQ = 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e
SASL_LIST, GATK, GATKQ = 0x20, 0x23, 0x24

# Status codes
OK, NOT_FOUND, EXISTS, E2BIG, EINVAL, NOT_STORED, DELTA_BADVAL, UNKNOWN = 0, 1, 2, 3, 4, 5, 6, 0x81

CAS_LAST = b"\xca\x5c\x1a\x57\xca\x5c\x1a\x57"
CAS_BAD = b"\xca\x5c\xba\xd0\xca\x5c\xba\xd0"


def pkt(opcode, key=b"", extras=b"", value=b"", opaque=0, cas=0, magic=REQ_MAGIC, datatype=0, vbucket=0,
        keylen=None, extlen=None, bodylen=None):
    """One request packet. cas: an int, or CAS_LAST / CAS_BAD (placeholders, see above).
    keylen/extlen/bodylen override the header fields (malformed packets)."""
    kl = len(key) if keylen is None else keylen
    el = len(extras) if extlen is None else extlen
    bl = len(extras) + len(key) + len(value) if bodylen is None else bodylen
    head = HEADER.pack(magic, opcode, kl, el, datatype, vbucket, bl, opaque, 0)
    if isinstance(cas, bytes):
        head = head[:16] + cas
    else:
        head = head[:16] + struct.pack(">Q", cas)
    return head + extras + key + value


def set_extras(flags=0, exptime=0):
    return struct.pack(">II", flags, exptime)


def incr_extras(delta=1, initial=0, exptime=0):
    return struct.pack(">QQI", delta, initial, exptime)


def exptime_extras(exptime):
    return struct.pack(">I", exptime)


def parse(buf):
    """Splits a response stream into whole packets. Returns (list of dicts, rest bytes).
    Each dict: magic, opcode, keylen, extlen, datatype, status, bodylen, opaque, cas,
    extras, key, value, raw."""
    out = []
    pos = 0
    while len(buf) - pos >= 24:
        magic, op, kl, el, dt, st, bl, opq, cas = HEADER.unpack_from(buf, pos)
        if len(buf) - pos < 24 + bl:
            break
        body = buf[pos + 24:pos + 24 + bl]
        out.append({"magic": magic, "opcode": op, "keylen": kl, "extlen": el, "datatype": dt, "status": st,
                    "bodylen": bl, "opaque": opq, "cas": cas, "extras": body[:el], "key": body[el:el + kl],
                    "value": body[el + kl:], "raw": buf[pos:pos + 24 + bl]})
        pos += 24 + bl
    return out, buf[pos:]


def _sentinel():
    opaque = struct.unpack(">I", os.urandom(4))[0] | 0x80000000
    req = pkt(NOOP, opaque=opaque)
    resp = HEADER.pack(RES_MAGIC, NOOP, 0, 0, 0, 0, 0, opaque, 0)
    return req, resp


def _ends_with_sentinel(buf, resp):
    """True once a whole packet equal to resp ends buf at a packet boundary."""
    if not buf.endswith(resp):
        return False
    packets, rest = parse(buf)
    return not rest and packets and packets[-1]["raw"] == resp


def exchange(addr, steps, timeout=5.0, trickle=0):
    """Runs the steps on one connection; returns one reply dict per step run:
    {"packets": [raw bytes], "rest": bytes, "status": None|"eof"|"reset"|"timeout"}."""
    s = mcraw.connect(addr, timeout)
    replies = []
    last_cas = 0
    try:
        for step in steps:
            data = step["data"]
            data = data.replace(CAS_LAST, struct.pack(">Q", last_cas))
            data = data.replace(CAS_BAD, struct.pack(">Q", (last_cas + 1000) & 0xffffffffffffffff))
            if step.get("eof"):
                out, status = mcraw.transfer(s, data, lambda b: False, timeout, trickle)
                if status == "eof":
                    status = None  # expected
                else:
                    status = status or "timeout"
                packets, rest = parse(out)
                replies.append({"packets": [p["raw"] for p in packets], "rest": rest,
                                "status": status, "closed": status is None})
                break
            sreq, sresp = _sentinel()
            out, status = mcraw.transfer(s, data + sreq, lambda b: _ends_with_sentinel(b, sresp), timeout, trickle)
            if status is None:
                out = out[:-len(sresp)]
            packets, rest = parse(out)
            for p in packets:
                if p["cas"]:
                    last_cas = p["cas"]
            replies.append({"packets": [p["raw"] for p in packets], "rest": rest, "status": status,
                            "closed": status in ("eof", "reset")})
            if status is not None:
                break
    finally:
        s.close()
    return replies


def request(addr, data, timeout=5.0):
    """Sends data plus a sentinel NOOP on a fresh connection; returns the parsed response
    packets (without the sentinel). Raises AssertionError when the step did not complete."""
    rep = exchange(addr, [{"data": data}], timeout)[0]
    if rep["status"] is not None:
        raise AssertionError("binary request to %s: %s after %d packets" % (addr, rep["status"], len(rep["packets"])))
    return parse(b"".join(rep["packets"]))[0]


def main():
    replies = exchange(sys.argv[1], *mcraw.read_request())
    enc = mcraw.text64
    print(json.dumps({"replies": [{"packets": [enc(p) for p in r["packets"]], "rest": enc(r["rest"]),
                                   "status": r["status"], "closed": r["closed"]} for r in replies]}))


if __name__ == "__main__":
    main()
