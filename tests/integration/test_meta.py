"""Meta commands (mg, ms, md, ma, mn, me) on text connections through the shim (issue 4).

5. Differential test, as test_protocol_diff.py: raw byte streams of meta commands (every
   flag the reply or routing depends on, base64 keys, q pipelines closed by mn, ms data
   blocks of several sizes, invalid lines) are sent to one direct memcached and through
   the shim to 4 servers on one fresh connection per case (clients/metaraw.py, which
   ends each step with mcraw's ASCII sentinel, so meta and classic commands share the
   connection). The reply streams must be equal after these normalisations, applied to
   reply lines only (never to data blocks):
     - `c<cas>` return flags (VA/HD/... lines) and `cas=` in `ME` lines, and the CAS in
       `VALUE k f n cas` lines: every server counts its own CAS;
     - `t<ttl>` return flags >= 0 rounded to the nearest 10 seconds: the remaining TTL
       may tick down by a second between the two runs (-1, no expiry, is kept);
     - `l<seconds>` (time since last access) and `la=` in `ME` lines: timing.
   Everything else (flags and their order, O opaque, k/b key echo, W/X/Z, h, s, sizes,
   every error string, what q suppresses) must be identical.
6. Placement: keys written with ms/ma (plain and base64 with the b flag, whose DECODED
   bytes are hashed) are on exactly the server the ring names; md removes them there.
7. Failover: 4 primaries + 2 backups; keys written with ms (flags, plain and base64
   keys) are read back with mg from one long-lived process before and after their
   primary is killed (-9): no error, the right values and flags.

MCSHIM_TEST_DIRECT=1 runs 5 and 6 against a direct memcached (proves the streams, the
normalisation and the client). memcached 1.6.18 facts the streams rely on are noted at
the cases (e.g. q hides EN for mg and HD for ms/md/ma, but never NF/NS/EX; ms has no E
flag and md no x flag in 1.6.18; the base64 limit applies to the ENCODED key).
"""
import base64
import json
import os
import random
import re
import subprocess
import time
import unittest

import difftest
import harness
import metaraw  # noqa: E402 (clients/, put on sys.path by harness)
from difftest import S

CLIENT = os.path.join(harness.CLIENTS, "metaraw.py")

CAS_FLAG = re.compile(rb"^c\d+$")
TTL_FLAG = re.compile(rb"^t(\d+)$")
LA_FLAG = re.compile(rb"^l\d+$")
VALUE_CAS = re.compile(rb"^(VALUE \S+ \d+ \d+) \d+$")


def _norm_line(line):
    tok = line.split(b" ")
    if tok[0] in (b"VA", b"HD", b"EN", b"NF", b"NS", b"EX", b"MN"):
        out = tok[:2] if tok[0] == b"VA" else tok[:1]
        for t in tok[len(out):]:
            if CAS_FLAG.match(t):
                t = b"c<cas>"
            elif TTL_FLAG.match(t):
                t = b"t~%d" % ((int(t[1:]) + 5) // 10 * 10)
            elif LA_FLAG.match(t):
                t = b"l<la>"
            out.append(t)
        return b" ".join(out)
    if tok[0] == b"ME":
        return re.sub(rb" la=\d+", b" la=<la>", re.sub(rb" cas=\d+", b" cas=<cas>", line))
    return VALUE_CAS.sub(rb"\1 <cas>", line)


def normalize(reply):
    out = []
    for line, data in metaraw.items(reply):
        out.append(_norm_line(line) + b"\r\n")
        if data is not None:
            out.append(data + b"\r\n")
    return b"".join(out)


def keys_n(prefix, n):
    return [b"%s%d" % (prefix, i) for i in range(n)]


def ms_cmds(keys, value=b"v", flags=b"T0", quiet=False):
    q = b" q" if quiet else b""
    return b"".join(b"ms %s %d %s%s\r\n%s\r\n" % (k, len(value + k), flags, q, value + k) for k in keys)


def b64(k):
    return base64.b64encode(k)


def ms_line(key, value, flags, is_b):
    """ms of key (sent base64-encoded with b when is_b) with client flags, no TTL."""
    return b"ms %s %d%s F%d T0\r\n%s\r\n" % (b64(key) if is_b else key, len(value), b" b" if is_b else b"", flags,
                                            value)


def mg_line(key, is_b, flags=b"v f k"):
    return b"mg %s%s %s\r\n" % (b64(key) if is_b else key, b" b" if is_b else b"", flags)


K250 = b"k" * 250
K251 = b"k" * 251
SPREAD = keys_n(b"mk", 40)
ASKED = [k for pair in zip(SPREAD, keys_n(b"mmiss", 40)) for k in pair][:60]
# decoded keys with bytes a text key cannot have (routing hashes these bytes)
BKEYS = [b"sp ace", b"cr\r\nlf", b"nul\x00byte", b"\xff\xfe\x80high", b"tab\tkey", b"plain", b"\x00" * 20, b"x" * 186]
SIZES = [0, 1, 2, 100, 8192, 100000, 1000000]
BLOCK = (bytes(range(256)) * 4000 + b"\r\nVA 5 c1\r\nEN\r\nMN\r\n")


def _blocks():
    cmds = []
    for n in SIZES:
        data = (BLOCK * (n // len(BLOCK) + 1))[-n:] if n else b""
        cmds.append(b"ms blk%d %d F%d T0\r\n%s\r\n" % (n, n, n, data))
    cmds += [b"mg blk%d s f v\r\n" % n for n in SIZES]
    return b"".join(cmds)


# (name, steps, options). options: trickle=N, ring=[plain keys] / ring_b=[decoded keys]
# that must be on their ring server (only there) afterwards, absent=[keys] on no server.
CASES = [
    ("mn", [S(b"mn\r\n")], {}),
    ("mn_extra_token", [S(b"mn extra\r\nmn\r\n")], {}),
    ("ms_mg_basic", [S(b"ms k 2 T0 F5\r\nhi\r\nmg k v f t c s k O123\r\nmg k\r\nmg k v\r\nmg nokey v\r\n"
                       b"mg nokey k O5 v\r\n")], {"ring": [b"k"], "absent": [b"nokey"]}),
    ("mg_flags_order", [S(b"ms k 3 F9 T0\r\nabc\r\nmg k s v f t c k O1 h l\r\nmg k O2 k c t f s v\r\n"
                          b"mg k h l u v\r\nmg k h l v\r\nmg k f\r\nmg k P L v\r\n")], {}),
    ("ms_return_flags", [S(b"ms k 2 T0 F5 k O9 s\r\nhi\r\nms k 2 c O8\r\nhi\r\nms k 2 k O7 b\r\nhi\r\n")], {}),
    # q hides EN of mg, not HD (a hit without v)
    ("mg_quiet", [S(b"ms k 2\r\nhi\r\nmg k q\r\nmg k k q\r\nmg k v q\r\nmg nokey v q\r\nmg nokey k O1 q\r\n"
                    b"mn\r\n")], {}),
    ("mg_touch", [S(b"ms k 2 T100\r\nhi\r\nmg k t T300\r\nmg k t v\r\nmg k T0 t\r\nmg k t\r\nmg nokey T30 t\r\n")], {}),
    ("mg_vivify", [S(b"mg nk N30 v c t\r\nmg nk v c t\r\nmg nk N30 s t q\r\nmn\r\n")], {"ring": [b"nk"]}),
    ("mg_recache", [S(b"ms k 2 T100\r\nhi\r\nmg k R30 v c t\r\nmg k R200 v c t\r\nmg k R200 v c t\r\n")], {}),
    ("mg_no_E_in_1_6_18", [S(b"ms k 2\r\nhi\r\nmg k E999 v c\r\nmg k v\r\n")], {}),
    ("ms_modes", [S(b"ms k 3 MA\r\nabc\r\nms k 1 MP\r\nZ\r\nms k 1 MR\r\nx\r\nms k 1 ME\r\nx\r\nms k 1 ME\r\ny\r\n"
                    b"mg k v\r\nms k 1 MA\r\nz\r\nms k 1 MP\r\na\r\nmg k v\r\nms k 1 MR\r\nr\r\nmg k v\r\n"
                    b"ms k 1 MS\r\ns\r\nmg k v\r\n")], {"ring": [b"k"]}),
    ("ms_bad_modes", [S(b"ms k 1 MX\r\nz\r\nms k 2 Ms\r\nhi\r\nms k 2 M\r\nhi\r\nmg k v\r\n")], {}),
    # 1.6.18: N (autovivify) does not apply to append mode: NS on a missing key
    ("ms_append_vivify", [S(b"ms k 2 N30 MA\r\nhi\r\nmg k v t\r\nms k 2 N30 MA\r\nhi\r\nmg k v\r\n")], {}),
    ("ms_cas", [S(b"ms k 2 c\r\nhi\r\n"),
                S(b"ms k 2 C{cas} c\r\nyo\r\nmg k v\r\n"),
                S(b"ms k 2 C{badcas}\r\nno\r\nms k 2 C0\r\nno\r\nms nokey 2 C5\r\nno\r\nmg k v c\r\n"),
                S(b"ms k 2 C{cas} q\r\nq1\r\nms k 2 C{badcas} q\r\nq2\r\nmn\r\nmg k v\r\n")],
     {"ring": [b"k"], "absent": [b"nokey"]}),
    ("ms_no_E_in_1_6_18", [S(b"ms k 2 E12345\r\nhi\r\nmg k c\r\n")], {}),
    ("ms_invalidate", [S(b"ms k 1 I\r\na\r\nmd k I T30\r\nmg k v c\r\nmg k v c\r\nms k 1 I\r\nb\r\nmg k v\r\n")], {}),
    # q hides HD of ms; NS/EX/NF are still sent
    ("ms_quiet", [S(b"ms k 2 q\r\nhi\r\nms k 2 q MR\r\nyo\r\nms nokey 2 q MR\r\nhi\r\nms k 2 q ME\r\nhi\r\n"
                    b"ms k 2 q O5 k\r\nab\r\nmn\r\nmg k v\r\n")], {"absent": [b"nokey"]}),
    ("ms_data_sizes", [S(_blocks())], {"ring": [b"blk%d" % n for n in SIZES]}),
    # 1.6.18: F4294967296 is accepted and stored as 0; T-1 expires at once
    ("ms_flags_edges", [S(b"ms k 5 T0 F4294967295\r\nhello\r\nmg k f v\r\nms k 5 F4294967296\r\nhello\r\nmg k f\r\n"
                          b"ms k 1 T-1\r\na\r\nmg k v\r\n")], {}),
    ("ms_too_large_new_key", [S(b"ms big 2000000 T0\r\n" + b"x" * 2000000 + b"\r\nmg big v\r\n")],
     {"absent": [b"big"]}),
    # memcached drops the old value of a key whose ms is too large, in every mode
    ("ms_too_large_drops_old", [S(b"ms k 1\r\na\r\nms k 2000000\r\n" + b"x" * 2000000 + b"\r\nmg k v\r\n"),
                                S(b"ms j 1\r\na\r\nms j 2000000 MA\r\n" + b"x" * 2000000 + b"\r\nmg j v\r\n"),
                                S(b"ms a2V5 1 b\r\na\r\nms a2V5 2000000 b\r\n" + b"x" * 2000000
                                  + b"\r\nmg a2V5 b v\r\n")], {}),
    ("ms_bad_data_chunk", [S(b"ms k 3\r\nabcd\r\nmg k v\r\n"), S(b"ms j 3\r\nab\r\n\r\nmg j v\r\n")], {}),
    ("ms_bad_datalen", [S(b"ms k abc\r\nxx\r\n"), S(b"ms k -1\r\n"), S(b"ms k\r\n"), S(b"ms\r\n")], {}),
    ("ms_bad_flags", [S(b"ms k 2 Z\r\nhi\r\n"), S(b"ms k 2 S1\r\nhi\r\n"), S(b"ms k 1 Fxyz\r\na\r\n"),
                      S(b"ms k 2 T0 T0\r\nhi\r\nmg k v\r\n")], {}),
    # q hides HD of md; NF is still sent
    ("md", [S(b"ms k 2 T0\r\nhi\r\nmd k\r\nmd k\r\nms k 2\r\nhi\r\nmd k q\r\nmd k q\r\nmd k O5 k\r\nmn\r\nmg k v\r\n")],
     {"absent": [b"k"]}),
    ("md_cas", [S(b"ms k 2 c\r\nhi\r\n"),
                S(b"md k C{badcas}\r\nmd k q C{badcas}\r\nmg k v\r\nmd k C{cas}\r\nmg k v\r\n")],
     {"absent": [b"k"]}),
    ("md_no_x_no_E_in_1_6_18", [S(b"ms k 2 F3\r\nhi\r\nmd k x\r\nmg k v f\r\nmd k E5\r\nmg k v f\r\n")], {}),
    ("ma", [S(b"ma n\r\nma n N0 J10\r\nma n v\r\nma n MD D3 v\r\nma n M- D100 v t c\r\nma n MI D7 v\r\n"
              b"ma n M+ D18446744073709551615 v\r\nma n v k O3\r\n")], {"ring": [b"n"]}),
    # q hides HD of ma and, with v, the VA too; NF is still sent
    ("ma_vivify_quiet", [S(b"ma nn N100 J5 v t\r\nma nn q\r\nma nn q v\r\nma nokey q\r\nmn\r\nmg nn v\r\n")],
     {"ring": [b"nn"], "absent": [b"nokey"]}),
    ("ma_errors", [S(b"ms x 2\r\nhi\r\nma x\r\nma x q\r\nma x MX\r\nma x D-1\r\nma x Dabc\r\n"
                     b"ma x D18446744073709551616\r\nma x E5\r\n")], {}),
    ("ma_cas", [S(b"ms n 2 c\r\n10\r\n"),
                S(b"ma n C{badcas} v\r\nma n C{badcas} q\r\nma n C{cas} v c\r\nmg n v\r\n")], {}),
    # me: `ME <key> exp= la= cas= fetch= cls= size=`; EN on a miss; no key: CLIENT_ERROR
    ("me", [S(b"ms k 2 F7 T0\r\nhi\r\nme k\r\nme nokey\r\nmg k v\r\nme k\r\n"), S(b"me\r\n")], {}),
    ("me_base64", [S(b"ms a2V5 2 b T0\r\nhi\r\nme a2V5 b\r\nme bm9rZXk= b\r\n")], {"ring": [b"key"]}),
    ("base64_keys", [S(b"ms a2V5 2 b\r\nhi\r\nmg key v k\r\nmg a2V5 b k v O9\r\nmg a2V5 b s v k\r\n"
                       b"ma Y250 b N0 J4 v k\r\nmd a2V5 b k q\r\nmg a2V5 b v\r\nmg bm9rZXk= b k v\r\nmn\r\n")],
     {"ring": [b"cnt"], "absent": [b"key"]}),
    ("base64_binary_keys", [S(b"".join(b"ms %s %d b F%d T0\r\n%s\r\n" % (b64(k), len(k), i, k[::-1])
                                       for i, k in enumerate(BKEYS))
                              + b"".join(b"mg %s b k f v\r\n" % b64(k) for k in BKEYS))], {"ring_b": BKEYS}),
    # 1.6.18: a bad base64 key is "error decoding key" for mg/ms but "invalid or
    # duplicate flag" for md/ma
    ("base64_bad", [S(b"mg a2V5== b v\r\n"), S(b"mg !!!! b v\r\n"), S(b"mg a2V b v\r\n"), S(b"ms =a 1 b\r\nx\r\n"),
                    S(b"ms k 2 b\r\nhi\r\n"), S(b"md a2V b\r\n"), S(b"ma a2V b\r\n")], {}),
    # memcached limits the ENCODED key to 250 bytes: 252 bytes decoded (336 encoded) and
    # 250 decoded (336 encoded) are both refused, 187 decoded (252 encoded) too; 186 (248) is fine
    ("base64_too_long", [S(b"mg " + b64(b"a" * 252) + b" b v\r\n"), S(b"mg " + b64(b"a" * 250) + b" b v\r\n"),
                         S(b"mg " + b64(b"a" * 187) + b" b v\r\n"), S(b"mg " + b64(b"a" * 186) + b" b v\r\n")], {}),
    ("key_250_ok", [S(b"ms " + K250 + b" 1 T0\r\na\r\nmg " + K250 + b" v k\r\nma " + K250 + b"\r\nmd " + K250
                      + b"\r\n")],
     {"absent": [K250]}),
    # ms with a too-long key does not swallow its data block (the data line is read
    # as a command: ERROR), unlike ms with a bad flag
    ("key_too_long", [S(b"mg " + K251 + b" v\r\n"), S(b"ms " + K251 + b" 1\r\na\r\n"), S(b"md " + K251 + b"\r\n"),
                      S(b"ma " + K251 + b"\r\n"), S(b"me " + K251 + b"\r\n")], {}),
    ("missing_key", [S(b"mg\r\n"), S(b"mg \r\n"), S(b"md\r\n"), S(b"ma\r\n"), S(b"ms\r\n"), S(b"me\r\n"),
                     S(b"md \r\n")],
     {}),
    ("bad_flags", [S(b"mg k zz\r\n"), S(b"mg k v v\r\n"), S(b"mg k Oabc Odef\r\n"), S(b"mg k T abc\r\n"),
                   S(b"mg k Tabc v\r\n"), S(b"mg k v k k\r\n"), S(b"mg k O" + b"x" * 32 + b"\r\n"),
                   S(b"mg k O" + b"x" * 31 + b"\r\nmg k v O\r\n")], {}),
    ("whitespace", [S(b"ms k 2\r\nhi\r\nmg k   v\r\nmg  k v\r\nmg k v \r\nmg k\tv\r\nmg k v\n")], {}),
    ("case_and_prefix", [S(b"MG k\r\nmgk\r\nmgx k v\r\n")], {}),
    ("quiet_pipeline_spread", [S(ms_cmds(SPREAD, quiet=True) + b"mn\r\n"),
                               S(b"".join(b"mg %s v k q\r\n" % k for k in ASKED) + b"mn\r\n"),
                               S(b"".join(b"mg %s s f q\r\n" % k for k in reversed(ASKED)) + b"mn\r\nmn\r\n"),
                               S(b"".join(b"md %s q\r\n" % k for k in ASKED[:20]) + b"mn\r\n"
                                 + b"".join(b"mg %s v q\r\n" % k for k in ASKED[:30]) + b"mn\r\n")],
     {"ring": SPREAD[10:], "absent": SPREAD[:10]}),
    ("mn_barriers", [S(b"mg a v q\r\nmg b v q\r\nmn\r\nmg c v q\r\nmn\r\nmn\r\n")], {}),
    ("mixed_classic_and_meta", [S(b"set a 3 0 1\r\na\r\nmg a v f\r\nget a\r\nms a 1 F4\r\nb\r\ngets a\r\n"
                                  b"mg a v f q\r\ndelete a\r\nmg a v q\r\nmn\r\nincr a 1\r\nma a N0 J7 v\r\n"
                                  b"get a\r\ntouch a 100\r\nmg a t v\r\n")], {"ring": [b"a"]}),
    ("pipelined_many", [S(ms_cmds(SPREAD) + b"".join(b"mg %s s v\r\n" % k for k in SPREAD)
                          + b"".join(b"ma c%d N0 J%d v\r\n" % (i, i) for i in range(20))
                          + b"".join(b"md %s\r\n" % k for k in SPREAD[::2])
                          + b"".join(b"mg %s v k q\r\n" % k for k in SPREAD) + b"mn\r\n")],
     {"ring": SPREAD[1::2] + keys_n(b"c", 20), "absent": SPREAD[::2]}),
    ("trickle", [S(ms_cmds(SPREAD[:8], flags=b"F3 T0") + b"".join(b"mg %s v f q\r\n" % k for k in SPREAD[:8])
                   + b"mn\r\nms big 5000 T0\r\n" + b"b" * 5000 + b"\r\nmg big s\r\n")], {"trickle": 7}),
]


class MetaDiffTest(difftest.DiffTest):

    script = "metaraw.py"
    exchange = staticmethod(metaraw.exchange)
    normalize = staticmethod(normalize)
    broken = difftest.DiffTest.broken + ((b"<SENTINEL-NOT-STORED>", "the case broke the sentinel"),)
    shown = 800

    def test_cases_count(self):
        self.assert_cases(CASES, 40)

    def test_normalize(self):
        # the normalisation touches reply lines only, never data blocks
        r = (b"VA 6 c123 t99 l3 f5 kk\r\nc1 t99\r\nHD c5 t-1\r\nME k exp=-1 la=4 cas=77 fetch=no cls=1 size=66\r\n"
             b"VALUE k 0 1 42\r\nc\r\nEN\r\n")
        self.assertEqual(normalize(r), b"VA 6 c<cas> t~100 l<la> f5 kk\r\nc1 t99\r\nHD c<cas> t-1\r\n"
                         b"ME k exp=-1 la=<la> cas=<cas> fetch=no cls=1 size=66\r\nVALUE k 0 1 <cas>\r\nc\r\nEN\r\n")
        self.assertEqual(normalize(b"HD t100\r\n"), normalize(b"HD t96\r\n"))


difftest.add_cases(MetaDiffTest, CASES)


# ---------------------------------------------------------------------------------------
# 6. Placement of meta keys, plain and base64


class MetaPlacementTest(difftest.AnyKeyChecks, harness.ClusterTest):

    def shim(self, data):
        replies = difftest.run_script("metaraw.py", self.intercept, self.env(), [S(data)], harness.scaled(10))
        return base64.b64decode(replies[0])

    def test_plain_and_base64_keys_on_ring_owner(self):
        rnd = random.Random(3)
        plain = keys_n(b"place:", 64)
        # decoded keys: random bytes (NUL, space, CR/LF, high bytes), 1 to 186 long (248 encoded)
        binary = [bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 186))) for _ in range(64)]
        binary += [b"place:%d" % i for i in range(64, 80)]  # text keys written base64-encoded
        data = ms_cmds(plain, flags=b"T0 F1")
        data += b"".join(b"ms %s %d b T0 F2\r\n%s\r\n" % (b64(k), len(k), k) for k in binary)
        data += b"mn\r\n"
        self.assertEqual(self.shim(data), b"HD\r\n" * (len(plain) + len(binary)) + b"MN\r\n")
        self.assert_on_ring(plain, values={k: {"value": b"v" + k, "flags": 1} for k in plain})
        self.assert_on_ring_b(binary)
        self.assert_spread(plain, 4)
        if not harness.DIRECT:
            self.assertGreaterEqual(len(set(self.owners_b(binary))), 4)
        # the stored bytes are the decoded key's value, with its flags
        found = self.holders(binary)
        for k in binary:
            node = self.cluster.nodes[found[k][0]]
            self.assertEqual(metaraw.probe(node.host, node.port, [k])[k], (2, k), k)
        # read back through the shim: plain by key, base64 by the b flag, in order
        req = b"".join(b"mg %s b v f k\r\n" % b64(k) for k in binary) + b"mn\r\n"
        got = metaraw.items(self.shim(req))
        self.assertEqual(len(got), len(binary) + 1)
        for k, (line, value) in zip(binary, got):
            tok = line.split(b" ")
            self.assertEqual(tok[0], b"VA", (k, line))
            self.assertIn(b"k" + b64(k), tok)
            self.assertIn(b"f2", tok)
            self.assertEqual(value, k)
        # ma (autovivify) and md are routed by the decoded key too
        counters = binary[:16]
        gone = binary[16:40]
        data = b"".join(b"md %s b\r\n" % b64(k) for k in counters)
        data += b"".join(b"ma %s b N0 J%d\r\n" % (b64(k), i) for i, k in enumerate(counters))
        data += b"".join(b"md %s b q\r\n" % b64(k) for k in gone) + b"mn\r\n"
        self.assertEqual(self.shim(data), b"HD\r\n" * (2 * len(counters)) + b"MN\r\n")
        self.assert_on_ring_b(counters)
        found = self.holders(gone + plain[:8])
        self.assertEqual({k: v for k, v in found.items() if k in gone and v}, {}, "md left keys behind")
        for k in counters:
            node = self.cluster.nodes[self.owners_b([k])[0]]
            self.assertEqual(metaraw.probe(node.host, node.port, [k])[k][1], b"%d" % counters.index(k))


# ---------------------------------------------------------------------------------------
# 7. Failover: 4 primaries + 2 backups, kill -9 a primary

NPRIMARY = 4
VICTIM = 1
TIMEOUT_MS = 300
SETTLE = 3.0


class MetaFailoverTest(harness.ClusterTest):
    """Nodes 0-3 are MCSHIM_SERVERS, 4-5 MCSHIM_BACKUP; node VICTIM is killed."""

    nservers = NPRIMARY + 2

    @classmethod
    def setUpClass(cls):
        if harness.DIRECT:
            raise unittest.SkipTest("shim-only test (MCSHIM_TEST_DIRECT=1)")
        super().setUpClass()

    def setUp(self):
        super().setUp()
        self.nodes = self.cluster.nodes
        self.addCleanup(self.cluster.ensure_running)

    def env(self, extra=None):
        e = {"MCSHIM_BACKUP": ",".join(m.addr for m in self.nodes[NPRIMARY:]),
             "MCSHIM_TIMEOUT_MS": str(TIMEOUT_MS), "MCSHIM_RETRY_MS": "300"}
        return harness.preload_env(",".join(m.addr for m in self.nodes[:NPRIMARY]), self.intercept, e)

    def session(self):
        p = subprocess.Popen([harness.PY, CLIENT, self.intercept, "--session"], env=self.env(),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        def close():
            if p.poll() is None:
                p.stdin.close()
                try:
                    p.wait(timeout=harness.scaled(5))
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            p.stdout.close()
            p.stderr.close()
        self.addCleanup(close)
        return p

    def req(self, p, data, mns=1, limit=5.0):
        """One request through the session; no error, within limit seconds (scaled)."""
        import select
        p.stdin.write((json.dumps({"data": base64.b64encode(data).decode(), "mns": mns,
                                   "timeout": harness.scaled(limit)}) + "\n").encode())
        p.stdin.flush()
        r, _, _ = select.select([p.stdout], [], [], harness.scaled(limit) + 5)
        line = p.stdout.readline() if r else b""
        self.assertTrue(line, "session gave no answer: %s" % (p.poll(),))
        res = json.loads(line)
        reply = base64.b64decode(res["reply"])
        self.assertIsNone(res["error"], "request %r: %s after %.2fs (got %r)" % (
            data[:60], res["error"], res["elapsed"], reply[-200:]))
        return reply

    def check_reads(self, reply, items, what):
        """reply to `mg <key> v f k` (b for binary keys) per item, then MN."""
        got = metaraw.items(reply)
        self.assertEqual(len(got), len(items) + 1, "%s: %d replies for %d keys: %r" % (
            what, len(got), len(items), reply[-300:]))
        self.assertEqual(got[-1], (b"MN", None), what)
        wrong = []
        for (key, flags, value, is_b), (line, data) in zip(items, got):
            tok = line.split(b" ")
            want_k = b"k" + (b64(key) if is_b else key)
            if tok[0] != b"VA" or b"f%d" % flags not in tok or want_k not in tok or data != value:
                wrong.append((key, line[:80], (data or b"")[:40]))
        self.assertEqual(wrong, [], "%s: %d wrong of %d" % (what, len(wrong), len(items)))

    def test_kill9_primary_meta_reads_from_backup(self):
        rnd = random.Random(9)
        plain = keys_n(b"mf:", 96)
        binary = [b"mf\x00b %d \xff" % i for i in range(32)]
        items = [(k, 100 + i, b"val-%d-" % i * (1 + i % 7), False) for i, k in enumerate(plain)]
        items += [(k, 7000 + i, bytes(rnd.getrandbits(8) for _ in range(1 + i * 3)), True)
                  for i, k in enumerate(binary)]
        p = self.session()
        data = b"".join(ms_line(k, v, f, isb) for k, f, v, isb in items) + b"mn\r\n"
        self.assertEqual(self.req(p, data), b"HD\r\n" * len(items) + b"MN\r\n")
        # where each key's primary and backup copy are (binary keys: no newline, the tool reads them)
        keys = [k for k, _f, _v, _b in items]
        primary = harness.ring_owner(",".join(m.addr for m in self.nodes[:NPRIMARY]), keys)
        backup = [NPRIMARY + i for i in harness.ring_owner(",".join(m.addr for m in self.nodes[NPRIMARY:]), keys)]
        on_victim = [it for it, o in zip(items, primary) if o == VICTIM]
        self.assertGreaterEqual(len(on_victim), 10)
        self.assertTrue([it for it in on_victim if it[3]], "no base64 key on the victim")
        deadline = time.time() + harness.scaled(SETTLE)
        while True:
            missing = []
            for node in set(primary) | set(backup):
                mine = [k for k, pr, bk in zip(keys, primary, backup) if node in (pr, bk)]
                held = metaraw.probe(self.nodes[node].host, self.nodes[node].port, mine)
                missing += [(k, node) for k in mine if k not in held]
            if not missing or time.time() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(missing, [], "keys not on their primary and backup")

        read = b"".join(mg_line(k, isb) for k, _f, _v, isb in items) + b"mn\r\n"
        self.check_reads(self.req(p, read), items, "before the kill")
        self.nodes[VICTIM].stop()  # kill -9
        # the first read after the kill finds the dead connections: still no error, and
        # every later one too, each within MCSHIM_TIMEOUT_MS plus slack
        self.check_reads(self.req(p, read), items, "first read after the kill")
        end = time.time() + harness.scaled(1.5)
        rounds = 0
        while time.time() < end or rounds < 3:
            t0 = time.time()
            self.check_reads(self.req(p, read), items, "read %d after the kill" % rounds)
            self.assertLess(time.time() - t0, harness.scaled(TIMEOUT_MS / 1000.0 + 1.0))
            rounds += 1
        # one by one, and quiet (hits only) closed by mn
        for it in on_victim[:10]:
            self.check_reads(self.req(p, mg_line(it[0], it[3]) + b"mn\r\n"), [it], "single mg of %r" % it[0])
        quiet = b"".join(mg_line(k, isb, b"v f k q") for k, _f, _v, isb in on_victim)
        self.check_reads(self.req(p, quiet + b"mg mf:nokey v q\r\nmn\r\n"), on_victim, "quiet pipeline after the kill")
        # writes to the dead primary's keys go to the backup and read back at once
        new = [(k, f + 1, b"new-" + v[:20], isb) for k, f, v, isb in on_victim[:8]]
        data = b"".join(ms_line(k, v, f, isb) for k, f, v, isb in new) + b"mn\r\n"
        self.assertEqual(self.req(p, data), b"HD\r\n" * len(new) + b"MN\r\n")
        self.check_reads(self.req(p, b"".join(mg_line(k, isb) for k, _f, _v, isb in new) + b"mn\r\n"), new,
                         "writes after the kill")
        # a fresh process (new connections, the primary already dead) reads the same
        latest = {it[0]: it for it in items}
        latest.update({it[0]: it for it in new})
        self.check_reads(self.req(self.session(), read), [latest[it[0]] for it in items],
                         "fresh process after the kill")

if __name__ == "__main__":
    unittest.main()
