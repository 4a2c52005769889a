"""The memcached BINARY protocol through the shim (issue 4).

A connection whose first byte is 0x80 speaks binary, as with memcached. What is checked:

1. libmemcached's memccapable conformance suite: -b (binary tests only) and with no
   flag (ASCII and binary) through the shim over 4 servers pass the same tests as
   against one direct memcached.
2. A raw differential test: binary request streams (built with struct in
   clients/binclient.py: every opcode, quiet variants interleaved with NOOP barriers,
   GETKQ of many keys spread over the servers, CAS round trips, malformed packets) are
   sent to one direct memcached and through the shim to 4 servers; the replies must be
   the same packet by packet, in the same order, opaque for opaque. Normalised, because
   they legitimately differ between one server and a pool:
     - the CAS field: compared as zero / nonzero (each server counts its own CAS);
     - the VERSION value (the shim may answer with its own version or a server's);
     - STAT: the key/value packets are dropped, only the empty-key terminator (with the
       request's opaque) is compared (the shim answers stat itself, as in ASCII);
     - the connection ending with EOF or with a reset (both: closed).
   Keys a case leaves behind must be on the server the ring names and nowhere else.
   (The scaffolding, shared with test_protocol_diff.py and test_meta.py: difftest.py.)
   Cases where memcached 1.6.18 is buggy are left out (see BUGS below).
3. pylibmc with binary=True (default behaviors, and tcp_nodelay + no_block) under the
   shim over 4 primaries + 2 backups: every command round trip, placement on primary
   and backup (the backup copy may be missing, never different, for a key last written
   by append/incr, whose copy rule may invalidate it); then a primary is killed (-9)
   while the client reads and writes: no error, no miss, no wrong value.
4. The libmemcached CLI tools with --binary (memccp, memccat, memcexist, memctouch,
   memcrm, memcflush) over the same topology, before and after a primary is killed.
   memcdump is not run: libmemcached 1.1.4's memcdump has no --binary option (it
   rejects it), and in ASCII it is covered by test_libmemcached_tools.py.

MCSHIM_TEST_DIRECT=1 runs 1, 2, 3's round trips and 4 up to the kill against a direct
memcached, which proves the streams, the normalisation and the client scripts.

BUGS: memcached 1.6.18 behaviours deliberately not encoded here (a router should not
copy them; the lead decides):
  - an unknown opcode (and VERBOSITY 0x1b, which 1.6.18 answers "Unknown command")
    with extras or a key swallows bodylen bytes AFTER reading extras+key, so it eats
    extlen+keylen bytes of the next packet (the cases below send unknown opcodes with
    a value only, or no body, where memcached is exact);
  - GAT/GATQ with a value: memcached ignores the value length and parses the value's
    bytes as the next header (then closes on the bad magic);
  - STAT with a value: answered, then the value is parsed as the next header.
"""
import base64
import hashlib
import itertools
import json
import os
import random
import re
import select
import shutil
import struct
import subprocess
import time
import unittest

import difftest
import harness
import binclient as B  # noqa: E402 (clients/, put on sys.path by harness)
from difftest import S

MEMCCAPABLE = shutil.which("memccapable") or "/usr/bin/memccapable"
PYLIBMC_CLIENT = os.path.join(harness.CLIENTS, "pylibmc_binclient.py")

# ---------------------------------------------------------------------------------------
# 1. memccapable


def capable_results(out):
    return dict(re.findall(r"^((?:ascii|binary) .*?)\s+\[(pass|fail|skip)\]", out, re.M))


class MemccapableBinaryTest(harness.ClusterTest):

    def run_capable(self, port, env, flags):
        p = harness.run([MEMCCAPABLE] + flags + ["-h", "127.0.0.1", "-p", str(port)], env, timeout=60, check=False)
        out = p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")
        return p.returncode, out, capable_results(out)

    def suite(self, flags, prefix, minimum):
        direct = harness.Memcached()
        try:
            rc, out, want = self.run_capable(direct.port, harness.plain_env(), flags)
        finally:
            direct.stop()
        self.assertEqual(rc, 0, out)
        want_pass = sorted(t for t, r in want.items() if r == "pass")
        self.assertGreaterEqual(len([t for t in want_pass if t.startswith(prefix)]), minimum, out)
        rc, out, got = self.run_capable(self.intercept_port, self.env(), flags)
        got_pass = sorted(t for t, r in got.items() if r == "pass")
        print("\nmemccapable %s through the shim: %d/%d tests pass" % (" ".join(flags) or "(all)",
                                                                        len(got_pass), len(want_pass)))
        for t in sorted(want):
            if got.get(t) != want[t]:
                print("  %-36s direct %-5s shim %s" % (t, want[t], got.get(t, "(not run)")))
        self.assertEqual(got_pass, want_pass, out[-3000:])
        self.assertEqual(rc, 0, out[-3000:])

    def test_binary_suite(self):
        # memcached 1.6.18: all 27 binary tests pass
        self.suite(["-b"], "binary ", 27)

    def test_ascii_and_binary_suite(self):
        self.suite([], "binary ", 27)


# ---------------------------------------------------------------------------------------
# 2. Raw differential test

_opaque = itertools.count(0x1001)


def P(opcode, key=b"", extras=b"", value=b"", cas=0, opaque=None, **kw):
    """A request packet with the next distinct opaque (unless given)."""
    return B.pkt(opcode, key=key, extras=extras, value=value, cas=cas,
                 opaque=next(_opaque) if opaque is None else opaque, **kw)


SX = B.set_extras
IX = B.incr_extras
TX = B.exptime_extras
NO_CREATE = 0xffffffff


def sets(keys, value=b"v", flags=0, quiet=False):
    op = B.SETQ if quiet else B.SET
    return b"".join(P(op, k, SX(flags), value + k) for k in keys)


def keys_n(prefix, n):
    return [b"%s%d" % (prefix, i) for i in range(n)]


MANY = keys_n(b"bk", 60)
ASKED = [k for pair in zip(MANY, keys_n(b"bmiss", 60)) for k in pair][:100]
BINKEYS = [b"sp ace", b"cr\r\nlf", b"nul\x00byte", b"\xff\xfe\x80high", b"tab\tkey", b"k" * 250]
K251 = b"k" * 251
BIG = (bytes(range(256)) * 4100)[:1000000]
TOO_BIG = b"y" * 2000000
PIPE_KEYS = keys_n(b"pp", 40)


def _pipeline():
    """200-odd mixed requests in one write, quiet and not."""
    rnd = random.Random(7)
    out = [sets(PIPE_KEYS[:20], quiet=True)]
    for i in range(160):
        k = rnd.choice(PIPE_KEYS)
        op = rnd.choice([B.GET, B.GETK, B.GETQ, B.GETKQ, B.SET, B.SETQ, B.DELETEQ, B.INCR, B.APPENDQ, B.TOUCH])
        if op in (B.SET, B.SETQ):
            out.append(P(op, k, SX(i), b"x%d" % i))
        elif op == B.INCR:
            out.append(P(op, k, IX(1, 5)))
        elif op == B.APPENDQ:
            out.append(P(op, k, value=b"+"))
        elif op == B.TOUCH:
            out.append(P(op, k, TX(1000)))
        else:
            out.append(P(op, k))
        if i % 37 == 36:
            out.append(P(B.NOOP))
    out.append(P(B.NOOP))
    out.append(b"".join(P(B.GETK, k) for k in PIPE_KEYS))
    return b"".join(out)


# (name, steps, options). options: trickle=N (write N bytes at a time), ring=[keys] that
# must be on their ring server (and only there) afterwards, absent=[keys] on no server.
CASES = [
    ("noop", [S(P(B.NOOP))], {}),
    ("noop_opaque_extremes", [S(P(B.NOOP, opaque=0) + P(B.NOOP, opaque=0xffffffff) + P(B.NOOP, opaque=0x80))], {}),
    ("version", [S(P(B.VERSION))], {}),
    ("set_get", [S(P(B.SET, b"k", SX(5)) + P(B.SET, b"k", SX(5), b"abc") + P(B.GET, b"k") + P(B.GETK, b"k")
                   + P(B.GET, b"nokey") + P(B.GETK, b"nokey"))], {"ring": [b"k"]}),
    ("set_flags_max_empty_value", [S(P(B.SET, b"f", SX(0xffffffff), b"") + P(B.GETK, b"f"))], {"ring": [b"f"]}),
    # binary REPLACE of a missing key is NOT_FOUND (ASCII: NOT_STORED), ADD of an
    # existing one EXISTS; GETK of a miss echoes the key with an empty body
    ("add_replace", [S(P(B.ADD, b"k", SX(1), b"a") + P(B.ADD, b"k", SX(2), b"b") + P(B.REPLACE, b"k", SX(3), b"c")
                       + P(B.REPLACE, b"nokey", SX(3), b"c") + P(B.GETK, b"k") + P(B.GETK, b"nokey"))],
     {"ring": [b"k"], "absent": [b"nokey"]}),
    ("quiet_stores", [S(P(B.SETQ, b"a", SX(1), b"A") + P(B.ADDQ, b"a", SX(1), b"X") + P(B.ADDQ, b"b", SX(2), b"B")
                        + P(B.REPLACEQ, b"nokey", SX(1), b"X") + P(B.REPLACEQ, b"b", SX(3), b"BB") + P(B.NOOP)
                        + P(B.GETK, b"a") + P(B.GETK, b"b"))], {"ring": [b"a", b"b"], "absent": [b"nokey"]}),
    ("append_prepend", [S(P(B.APPEND, b"k", value=b"a") + P(B.PREPEND, b"k", value=b"a") + P(B.SET, b"k", SX(4), b"m")
                          + P(B.APPEND, b"k", value=b"z") + P(B.PREPEND, b"k", value=b"a")
                          + P(B.APPENDQ, b"k", value=b"!")
                          + P(B.PREPENDQ, b"k", value=b"^") + P(B.APPENDQ, b"nokey", value=b"!")
                          + P(B.PREPENDQ, b"nokey", value=b"^") + P(B.NOOP) + P(B.GET, b"k"))],
     {"ring": [b"k"], "absent": [b"nokey"]}),
    ("delete", [S(P(B.SET, b"d", SX()) + P(B.DELETE, b"d") + P(B.DELETE, b"d") + P(B.SET, b"d", SX(), b"x")
                  + P(B.DELETEQ, b"d") + P(B.DELETEQ, b"d") + P(B.NOOP) + P(B.GET, b"d"))], {"absent": [b"d"]}),
    ("incr_decr", [S(P(B.INCR, b"n", IX(5, 10)) + P(B.INCR, b"n", IX(5, 10)) + P(B.DECR, b"n", IX(3))
                     + P(B.DECR, b"n", IX(100)) + P(B.INCR, b"nokey", IX(1, 0, NO_CREATE))
                     + P(B.DECR, b"nokey", IX(1, 0, NO_CREATE)) + P(B.INCRQ, b"n", IX(7)) + P(B.DECRQ, b"n", IX(2))
                     + P(B.INCRQ, b"nokey", IX(1, 0, NO_CREATE)) + P(B.NOOP) + P(B.GETK, b"n"))],
     {"ring": [b"n"], "absent": [b"nokey"]}),
    ("incr_wrap", [S(P(B.SET, b"w", SX(), b"18446744073709551615") + P(B.INCR, b"w", IX(2)) + P(B.GET, b"w"))], {}),
    ("incr_non_numeric", [S(P(B.SET, b"x", SX(), b"abc") + P(B.INCR, b"x", IX(1)) + P(B.DECR, b"x", IX(1))
                            + P(B.INCRQ, b"x", IX(1)) + P(B.NOOP) + P(B.GET, b"x"))], {}),
    ("touch", [S(P(B.SET, b"t", SX(3)) + P(B.TOUCH, b"t", TX(1000)) + P(B.TOUCH, b"nokey", TX(1000))
                 + P(B.GETK, b"t"))],
     {"ring": [b"t"]}),
    ("gat_family", [S(P(B.SET, b"g", SX(9), b"gv") + P(B.GAT, b"g", TX(1000)) + P(B.GATK, b"g", TX(1000))
                      + P(B.GATQ, b"nokey", TX(1000)) + P(B.GATKQ, b"nokey", TX(1000)) + P(B.GATQ, b"g", TX(1000))
                      + P(B.GATKQ, b"g", TX(900)) + P(B.GAT, b"nokey", TX(1)) + P(B.GATK, b"nokey", TX(1))
                      + P(B.NOOP))],
     {"ring": [b"g"], "absent": [b"nokey"]}),
    ("get_quiet_mix", [S(sets([b"a", b"b"]) + P(B.GETQ, b"nokey") + P(B.GETQ, b"a") + P(B.GETKQ, b"nokey2")
                         + P(B.GETKQ, b"b") + P(B.NOOP) + P(B.GETQ, b"a") + P(B.NOOP) + P(B.NOOP))], {}),
    ("quiet_misses_only", [S(b"".join(P(B.GETKQ, k) for k in keys_n(b"none", 30)) + P(B.NOOP))], {}),
    ("quiet_errors_in_order", [S(P(B.SETQ, b"a", SX(), b"1") + P(B.ADDQ, b"a", SX(), b"2") + P(B.GETKQ, b"a")
                                 + P(B.SETQ, b"x", SX(), b"abc") + P(B.INCRQ, b"x", IX(1)) + P(B.DELETEQ, b"nokey")
                                 + P(B.GETKQ, b"x") + P(B.NOOP))], {}),
    ("getkq_many_spread", [S(sets(MANY, quiet=True) + P(B.NOOP)),
                           S(b"".join(P(B.GETKQ, k) for k in ASKED) + P(B.NOOP)),
                           S(b"".join(P(B.GETQ, k) for k in reversed(ASKED)) + P(B.NOOP))], {"ring": MANY}),
    ("getkq_dups", [S(sets([b"d1", b"d2"]) + P(B.GETKQ, b"d1") + P(B.GETKQ, b"d1") + P(B.GETKQ, b"nokey")
                      + P(B.GETKQ, b"d2") + P(B.GETKQ, b"d1") + P(B.NOOP))], {}),
    ("cas_round_trip", [S(P(B.SET, b"c", SX(1), b"a") + P(B.GETK, b"c")),
                        S(P(B.SET, b"c", SX(2), b"b", cas=B.CAS_LAST) + P(B.GETK, b"c")),
                        S(P(B.SET, b"c", SX(3), b"x", cas=B.CAS_BAD) + P(B.REPLACE, b"c", SX(3), b"x", cas=B.CAS_BAD)
                          + P(B.APPEND, b"c", value=b"x", cas=B.CAS_BAD) + P(B.DELETE, b"c", cas=B.CAS_BAD)
                          + P(B.GETK, b"c")),
                        S(P(B.APPEND, b"c", value=b"+", cas=B.CAS_LAST) + P(B.GETK, b"c")),
                        S(P(B.DELETE, b"c", cas=B.CAS_LAST) + P(B.GETK, b"c")),
                        S(P(B.SET, b"c", SX(), b"new", cas=B.CAS_LAST) + P(B.ADD, b"c2", SX(), b"v", cas=B.CAS_BAD)
                          + P(B.SETQ, b"c2", SX(), b"v", cas=B.CAS_BAD) + P(B.NOOP))], {}),
    ("flush", [S(sets([b"a", b"b", b"c"]) + P(B.FLUSH) + P(B.GETK, b"a") + sets([b"a"]) + P(B.FLUSHQ) + P(B.NOOP)
                 + P(B.GETK, b"a") + sets([b"b"]) + P(B.FLUSH, extras=TX(0)) + P(B.GETK, b"b"))],
     {"absent": [b"a", b"b", b"c"]}),
    ("stat", [S(P(B.SET, b"s", SX()) + P(B.STAT) + P(B.NOOP))], {}),
    ("stat_unknown_group", [S(P(B.STAT, b"bogus") + P(B.NOOP))], {}),
    ("quit", [S(P(B.SET, b"q", SX(), b"v") + P(B.GETK, b"q") + P(B.QUIT) + P(B.GETK, b"q"), eof=True)],
     {"ring": [b"q"]}),
    ("quitq", [S(P(B.SETQ, b"q", SX(), b"v") + P(B.QUITQ) + P(B.GETK, b"q"), eof=True)], {"ring": [b"q"]}),
    # memcached 1.6.18 does not implement VERBOSITY in binary: Unknown command
    ("verbosity_no_extras_unknown", [S(P(B.VERBOSITY) + P(B.NOOP))], {}),
    ("sasl_unknown", [S(P(B.SASL_LIST) + P(B.NOOP))], {}),
    ("unknown_opcodes", [S(P(0x50) + P(0x30) + P(0xfe, value=b"zzz") + P(0x51, value=b"z" * 300) + P(B.NOOP))], {}),
    ("vbucket_datatype_ignored", [S(P(B.SET, b"v", SX(), b"1", vbucket=7) + P(B.GETK, b"v", datatype=1))], {}),
    ("key_250", [S(P(B.SET, b"k" * 250, SX(), b"a") + P(B.GETK, b"k" * 250))], {"ring": [b"k" * 250]}),
    ("binary_keys", [S(b"".join(P(B.SET, k, SX(i), k[::-1]) for i, k in enumerate(BINKEYS))
                       + b"".join(P(B.GETK, k) for k in BINKEYS))], {"ring_b": BINKEYS}),
    ("value_1000000", [S(P(B.SET, b"big", SX(9), BIG) + P(B.GET, b"big"))], {"ring": [b"big"]}),
    # (memcached also deletes the old value of a key on E2BIG, as in ASCII, where the
    # shim documents keeping it: only a new key here)
    ("value_too_large_new_key", [S(P(B.SET, b"huge", SX(), TOO_BIG) + P(B.SETQ, b"huge", SX(), TOO_BIG)
                                   + P(B.GET, b"huge"))], {"absent": [b"huge"]}),
    # an append that would make the item too large: NOT_STORED (not E2BIG)
    ("append_over_item_max", [S(P(B.SET, b"ap", SX(), BIG) + P(B.APPEND, b"ap", value=b"z" * 100000)
                                + P(B.GETK, b"ap", opaque=7))], {}),
    ("pipelined_mix", [S(_pipeline())], {}),
    ("trickle", [S(P(B.SET, b"tk", SX(3), b"abc" * 100) + P(B.GETK, b"tk") + P(B.GETKQ, b"nokey") + P(B.NOOP)
                   + P(B.INCR, b"tn", IX(1, 1)))], {"trickle": 5, "ring": [b"tk", b"tn"]}),
    # malformed packets: memcached answers EINVAL (or Unknown command) and closes
    ("bad_get_with_extras", [S(P(B.NOOP) + P(B.GET, b"k", extras=b"\0" * 4))], {}),
    ("bad_get_without_key", [S(P(B.GET))], {}),
    ("bad_get_with_value", [S(P(B.GET, b"k", value=b"v"))], {}),
    ("bad_getk_with_value", [S(P(B.GETK, b"k", value=b"v"))], {}),
    ("bad_set_without_extras", [S(P(B.SET, b"k", value=b"v"))], {}),
    ("bad_set_extras_4", [S(P(B.SET, b"k", extras=b"\0" * 4, value=b"v"))], {}),
    ("bad_set_without_key", [S(P(B.SET, extras=SX(), value=b"v"))], {}),
    ("bad_append_with_extras", [S(P(B.APPEND, b"k", extras=SX(), value=b"v"))], {}),
    ("bad_incr_extras_8", [S(P(B.INCR, b"k", extras=b"\0" * 8))], {}),
    ("bad_incr_with_value", [S(P(B.INCR, b"k", extras=IX(), value=b"v"))], {}),
    ("bad_delete_with_extras", [S(P(B.DELETE, b"k", extras=b"\0" * 4))], {}),
    ("bad_delete_with_value", [S(P(B.DELETE, b"k", value=b"v"))], {}),
    ("bad_touch_without_extras", [S(P(B.TOUCH, b"k"))], {}),
    ("bad_touch_extras_8", [S(P(B.TOUCH, b"k", extras=b"\0" * 8))], {}),
    ("bad_gatq_without_extras", [S(P(B.GATQ, b"k"))], {}),
    ("bad_noop_with_key", [S(P(B.NOOP, b"k"))], {}),
    ("bad_noop_with_extras", [S(P(B.NOOP, extras=b"\0" * 4))], {}),
    ("bad_version_with_key", [S(P(B.VERSION, b"k"))], {}),
    ("bad_quit_with_key", [S(P(B.QUIT, b"k"))], {}),
    ("bad_flush_extras_2", [S(P(B.FLUSH, extras=b"\0\0"))], {}),
    ("bad_flush_with_key", [S(P(B.FLUSH, b"k"))], {}),
    ("bad_key_too_long_get", [S(P(B.GET, K251))], {}),
    ("bad_key_too_long_set", [S(P(B.SET, K251, SX(), b"v"))], {}),
    ("bad_key_too_long_getkq", [S(P(B.SET, b"a", SX(), b"v") + P(B.GETKQ, b"a") + P(B.GETKQ, K251) + P(B.NOOP))], {}),
    ("bad_keylen_over_bodylen", [S(P(B.GET, b"k", bodylen=0))], {}),
    # (memcached drops the replies still queued when it meets a bad magic in the same
    # read, so the bad packet goes in its own step: it must close without a reply)
    ("bad_magic_midstream", [S(P(B.SET, b"m", SX(), b"v") + P(B.GETK, b"m")), S(P(B.GET, b"m", magic=0x81))],
     {"ring": [b"m"]}),
    ("bad_after_good_pipeline", [S(sets(keys_n(b"g", 8)) + b"".join(P(B.GETK, k) for k in keys_n(b"g", 8))
                                   + P(B.GET, extras=b"\0"))], {}),
]


def norm_packet(raw):
    p = B.parse(raw)[0][0]
    value = p["value"]
    if p["opcode"] == B.VERSION and p["status"] == 0:
        value = b"<version>"
    return (hex(p["magic"]), hex(p["opcode"]), hex(p["status"]), p["opaque"], "cas nonzero" if p["cas"] else "cas 0",
            p["datatype"], p["extras"], p["key"], value if len(value) <= 300 else hashlib.sha1(value).hexdigest())


def normalize(reply):
    """What must be equal between the shim and one memcached (see the module comment)."""
    packets = []
    for raw in reply["packets"]:
        n = norm_packet(raw)
        if n[1] == hex(B.STAT) and n[2] == "0x0" and n[7]:
            continue  # a STAT key/value: contents differ; the terminator stays
        packets.append(n)
    return {"packets": packets, "rest": reply["rest"], "closed": reply["closed"],
            "timeout": reply["status"] == "timeout"}


def decode(reply):
    """A reply of binclient.py's JSON as binclient.exchange returns it."""
    return {"packets": [base64.b64decode(p) for p in reply["packets"]], "rest": base64.b64decode(reply["rest"]),
            "status": reply["status"], "closed": reply["closed"]}


class BinaryDiffTest(difftest.DiffTest):

    script = "binclient.py"
    exchange = staticmethod(B.exchange)
    normalize = staticmethod(normalize)
    decode = staticmethod(decode)

    def check_direct(self, reply):
        self.assertFalse(reply["timeout"], "direct memcached timed out: the case itself is broken")

    def count_message(self, want, got):
        return ("steps run (a step that ends the connection ends the case): direct %s, shim %s"
                % ([r["closed"] for r in want], [r["closed"] for r in got]))

    def describe(self, want, got):
        return _diff(want, got)

    def test_cases_count(self):
        self.assert_cases(CASES, 50)
        # every opcode of the contract is exercised by some case
        sent = set()
        for _n, steps, _o in CASES:
            for st in steps:
                data = st["data"]
                pos = 0
                while pos + 24 <= len(data):
                    sent.add(data[pos + 1])
                    pos += 24 + struct.unpack_from(">I", data, pos + 8)[0]
        want = {B.GET, B.GETQ, B.GETK, B.GETKQ, B.SET, B.SETQ, B.ADD, B.ADDQ, B.REPLACE, B.REPLACEQ, B.APPEND,
                B.APPENDQ, B.PREPEND, B.PREPENDQ, B.DELETE, B.DELETEQ, B.INCR, B.INCRQ, B.DECR, B.DECRQ, B.TOUCH,
                B.GAT, B.GATQ, B.GATK, B.GATKQ, B.NOOP, B.VERSION, B.FLUSH, B.FLUSHQ, B.STAT, B.QUIT, B.QUITQ,
                B.VERBOSITY}
        self.assertEqual(sorted(want - sent), [])

    @harness.requires_shim
    def test_stat_answered_by_shim(self):
        # docs/protocol.md: the shim's own counters as stat packets, ended by an empty key
        steps = [S(P(B.GETK, b"sk") + P(B.STAT, opaque=77) + P(B.STAT, b"mcshim", opaque=78))]
        packets = [B.parse(p)[0][0] for p in self.run_shim(steps, 0)[0]["packets"]]
        self.assertEqual((packets[0]["opcode"], packets[0]["status"]), (B.GETK, B.NOT_FOUND))
        groups = {}
        for p in packets[1:]:
            self.assertEqual((p["opcode"], p["status"]), (B.STAT, B.OK), p)
            groups.setdefault(p["opaque"], []).append((p["key"], p["value"]))
        self.assertEqual(sorted(groups), [77, 78])
        for opaque, kv in groups.items():
            self.assertEqual(kv[-1], (b"", b""), "stat %d not ended by an empty key" % opaque)
        plain, mine = dict(groups[77][:-1]), dict(groups[78][:-1])
        for k in (b"pid", b"uptime", b"version", b"get_misses"):
            self.assertIn(k, plain)
        self.assertTrue(plain[b"version"].startswith(b"mcshim"), plain[b"version"])
        self.assertEqual(plain[b"get_misses"], b"1")
        self.assertEqual(mine.get(b"servers"), b"4")


def _diff(w, g):
    lines = []
    for what in ("closed", "timeout", "rest"):
        if w[what] != g[what]:
            lines.append(" %s: direct %r, shim %r" % (what, w[what], g[what]))
    wp, gp = w["packets"], g["packets"]
    lines.append(" packets: direct %d, shim %d" % (len(wp), len(gp)))
    for j in range(max(len(wp), len(gp))):
        a = wp[j] if j < len(wp) else None
        b = gp[j] if j < len(gp) else None
        if a != b:
            lines.append("  #%d direct %r\n  #%d shim   %r" % (j, _short(a), j, _short(b)))
            if len(lines) > 12:
                lines.append("  ...")
                break
    return "\n".join(lines)


def _short(p):
    return p if p is None else tuple(x[:80] if isinstance(x, bytes) else x for x in p)


difftest.add_cases(BinaryDiffTest, CASES)


# ---------------------------------------------------------------------------------------
# 3 and 4: 4 primaries + 2 backups

NPRIMARY = 4
VICTIM = 1
TIMEOUT_MS = 300
SETTLE = 3.0  # bound for an async copy to reach the backup (scaled)


class BackupPoolTest(harness.ClusterTest):
    """Nodes 0-3 are MCSHIM_SERVERS, 4-5 MCSHIM_BACKUP (its own ring); node VICTIM is
    killed. In DIRECT mode there is one server and no failover: only round trips run."""

    nservers = NPRIMARY + 2

    def setUp(self):
        super().setUp()
        self.nodes = self.cluster.nodes
        self.addCleanup(self.cluster.ensure_running)

    def primaries(self):
        return ",".join(m.addr for m in self.nodes[:NPRIMARY])

    def backups(self):
        return ",".join(m.addr for m in self.nodes[NPRIMARY:])

    def env(self, extra=None):
        if harness.DIRECT:
            return harness.plain_env()
        e = {"MCSHIM_BACKUP": self.backups(), "MCSHIM_TIMEOUT_MS": str(TIMEOUT_MS), "MCSHIM_RETRY_MS": "300"}
        e.update(extra or {})
        return harness.preload_env(self.primaries(), self.intercept, e)

    def targets(self, keys):
        """{key: [primary node, backup node]} (DIRECT: [0])."""
        if harness.DIRECT:
            return {k: [0] for k in keys}
        prim = harness.ring_owner(self.primaries(), keys)
        back = [NPRIMARY + i for i in harness.ring_owner(self.backups(), keys)]
        return {k: [p, b] for k, p, b in zip(keys, prim, back)}

    def check_report(self, report, min_servers=None, **ring):
        """Every expected key is on its primary and on its backup (the async copy is
        waited for, bounded), nowhere else, with the spec's content on both. A key whose
        spec says "copy": false (its last write was one the copy rule may invalidate
        rather than copy, e.g. append, incr) may lack the backup copy, but a copy that
        exists must hold the same content. Absent keys are on no server."""
        expect = report.get("expect", {})
        keys = list(expect)
        where = self.targets(keys)

        def problems(found):
            bad = {}
            for k in keys:
                nodes = sorted(i for i, _f, _v in found[k])
                ok = [sorted(where[k])] + ([where[k][:1]] if expect[k].get("copy", True) is False else [])
                if nodes not in ok:
                    bad[k] = (where[k], nodes)
            return bad
        deadline = time.time() + harness.scaled(SETTLE)
        while True:
            found = self.cluster.locate(keys)
            bad = problems(found)
            if not bad or time.time() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(bad, {}, "key: (want nodes, found on): %s" % dict(list(bad.items())[:8]))
        for k in keys:
            for i, flags, value in found[k]:
                harness.check_value(self, "%s on node %d" % (k, i), expect[k], flags, value)
        if report.get("absent"):
            # deletes reach the backup asynchronously too: wait (bounded), then require
            # that no copy of a deleted key is left anywhere
            absent = report["absent"]
            harness.wait_until(lambda: not any(self.cluster.locate(absent).values()), SETTLE)
            self.assert_absent(absent)
        if min_servers and not harness.DIRECT:
            self.assertGreaterEqual(len({where[k][0] for k in keys}), min_servers)
        return len(keys)

    def wait_backup_copies(self, keys):
        if harness.DIRECT:
            return
        where = self.targets(keys)
        deadline = time.time() + harness.scaled(SETTLE)
        while True:
            found = self.cluster.locate(keys)
            missing = [k for k in keys if where[k][1] not in [i for i, _f, _v in found[k]]]
            if not missing:
                return
            if time.time() > deadline:
                self.fail("%d keys never reached their backup: %s" % (len(missing), missing[:8]))
            time.sleep(0.05)


PYLIBMC_BEHAVIORS = {
    "default": {},
    "nodelay_noblock": {"tcp_nodelay": True, "no_block": True},
}


class PylibmcBinaryTest(BackupPoolTest):

    def ops(self, name):
        report, n = self.run_client([harness.PY, PYLIBMC_CLIENT, self.intercept, json.dumps(PYLIBMC_BEHAVIORS[name]),
                                     "ops", name], min_servers=4)
        self.assertEqual(n, 155)
        self.assertEqual(len(report["absent"]), 53)

    def failover(self, name):
        if harness.DIRECT:
            self.skipTest("shim-only test (MCSHIM_TEST_DIRECT=1)")
        args = [harness.PY, PYLIBMC_CLIENT, self.intercept, json.dumps(PYLIBMC_BEHAVIORS[name]), "failover", name,
                "160", str(harness.scaled(3.0))]
        p = subprocess.Popen(args, env=self.env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        self.addCleanup(lambda: p.poll() is None and (p.kill(), p.wait()))
        r, _, _ = select.select([p.stdout], [], [], harness.scaled(30))
        first = p.stdout.readline() if r else b""
        if not first.startswith(b"{"):
            p.kill()
            _out, err = p.communicate()
            self.fail("client not ready: %r; stderr: %s" % (first, err.decode(errors="replace")[-2000:]))
        keys = list(json.loads(first)["keys"])
        owners = self.targets(keys)
        victims = [k for k in keys if owners[k][0] == VICTIM]
        self.assertGreaterEqual(len(victims), 10, "too few keys on the victim")
        self.wait_backup_copies(keys)
        p.stdin.write(b"go\n")
        p.stdin.flush()
        time.sleep(harness.scaled(0.5))
        self.nodes[VICTIM].stop()  # kill -9 while the client reads
        try:
            out, err = p.communicate(timeout=harness.scaled(40))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            self.fail("client did not finish")
        self.assertEqual(p.returncode, 0, err.decode(errors="replace")[-2000:])
        rep = json.loads(out.decode().strip().splitlines()[-1])
        summary = {k: v for k, v in rep.items() if k != "written"}
        print("\npylibmc binary failover (%s): %s" % (name, json.dumps(summary)[:600]))
        self.assertEqual(rep["errors"], 0, rep["error_messages"][:5])
        self.assertEqual(rep["misses"], 0, "misses of keys written before the kill: %s" % rep["miss_keys"][:10])
        self.assertEqual(rep["wrong"], 0, rep["wrong_samples"][:5])
        self.assertGreaterEqual(rep["rounds"], 2)
        self.assertGreater(rep["writes"], 0)
        # the writes made while the primary was down are on a live server, right content
        written = rep["written"]
        found = self.cluster.locate(list(written))
        for k, spec in written.items():
            self.assertTrue(found[k], "acknowledged write %s is on no live server" % k)
            for _i, flags, value in found[k]:
                harness.check_value(self, k, spec, flags, value)

    def test_ops_default(self):
        self.ops("default")

    def test_ops_nodelay_noblock(self):
        self.ops("nodelay_noblock")

    def test_failover_default(self):
        self.failover("default")

    def test_failover_nodelay_noblock(self):
        self.failover("nodelay_noblock")


class ToolsBinaryTest(harness.ToolFiles, BackupPoolTest):

    tool_flags = ("--binary",)

    def setUp(self):
        super().setUp()
        rnd = random.Random(5)
        contents = {"btool-text.txt": b"hello binary\n", "btool-empty.txt": b"",
                    "btool-bin.dat": bytes(rnd.getrandbits(8) for _ in range(200000))}
        contents.update(self.small_files("btool", 16))
        self.write_files(contents)

    def cat_all(self, names):
        for name in names:
            out = self.tool("memccat", name).stdout
            self.assertEqual(out, self.files[name][1] + b"\n", name)  # memccat adds a newline

    def test_tools_binary_with_failover(self):
        names = sorted(self.files)
        self.tool("memccp", "--flags=31", *[self.files[n][0] for n in names])
        spec = {n: {"len": len(d), "sha1": hashlib.sha1(d).hexdigest(), "flags": 31}
                for n, (_p, d) in self.files.items()}
        self.check_report({"expect": spec}, min_servers=3)
        self.cat_all(names)
        out = self.tool("memccat", *names[:5]).stdout
        self.assertEqual(out, b"".join(self.files[n][1] + b"\n" for n in names[:5]))
        self.assertEqual(self.tool("memcexist", names[0], check=False).returncode, 0)
        self.assertNotEqual(self.tool("memcexist", "btool-nope", check=False).returncode, 0)
        self.tool("memctouch", "--expire=1000", names[1])
        self.assertNotEqual(self.tool("memccat", "btool-nope", check=False).returncode, 0)
        if harness.DIRECT:
            return
        owners = self.targets(names)
        self.assertTrue([n for n in names if owners[n][0] == VICTIM], "no file on the victim: %s" % owners)
        self.nodes[VICTIM].stop()
        # every file still readable: the victim's from their backup copies
        self.cat_all(names)
        # writes and deletes still work; a new file is readable at once
        path = os.path.join(self.tmp, "btool-after.txt")
        with open(path, "wb") as f:
            f.write(b"written after the kill\n")
        self.files["btool-after.txt"] = (path, b"written after the kill\n")
        self.tool("memccp", path)
        self.cat_all(["btool-after.txt"])
        gone = names[:4]
        self.tool("memcrm", *gone)
        for n in gone:
            self.assertNotEqual(self.tool("memccat", n, check=False).returncode, 0, n)
        self.cat_all(names[4:])
        self.tool("memcflush")
        for n in names[4:8]:
            self.assertNotEqual(self.tool("memccat", n, check=False).returncode, 0, n)
        self.assert_absent(names)


if __name__ == "__main__":
    unittest.main()
