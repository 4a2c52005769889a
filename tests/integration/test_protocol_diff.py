"""Differential protocol test: the same raw ASCII byte streams sent once to a single
direct memcached and once through the shim over 4 servers must get the same replies,
byte for byte, except CAS unique numbers in `VALUE k f n cas` lines and the VERSION
string. `stats` is excluded (the shim answers it itself; its documented replies are
checked at the end). Where the shim intentionally differs (docs/protocol.md) the case
stays and asserts the documented shim reply.

The raw client is clients/mcraw.py: imported here for the direct server, and run by
/usr/bin/python3 under LD_PRELOAD for the shim. Each case runs on one fresh connection
after every server was flushed (the scaffolding, shared with test_meta.py and
test_binary.py, is difftest.py).
"""
import base64
import re
import unittest

import difftest
import harness
import mcraw
from difftest import EOF, S

CAS_LINE = re.compile(rb"^(VALUE \S+ \d+ \d+) \d+$", re.M)
VERSION_LINE = re.compile(rb"^VERSION [^\r\n]*$", re.M)


def normalize(reply):
    reply = CAS_LINE.sub(rb"\1 <cas>", reply.replace(b"\r\n", b"\n"))
    reply = VERSION_LINE.sub(b"VERSION <v>", reply)
    return reply.replace(b"\n", b"\r\n")


def keys_n(prefix, n):
    return [("%s%d" % (prefix, i)).encode() for i in range(n)]


def set_cmds(keys, value=b"v", noreply=False):
    nr = b" noreply" if noreply else b""
    return b"".join(b"set %s 0 0 %d%s\r\n%s\r\n" % (k, len(value + k), nr, value + k) for k in keys)


K250 = b"k" * 250
K251 = b"k" * 251
BIG_OK = bytes(range(256)) * 4093 + b"\r\nEND\r\n" * 8  # 1,047,872 bytes with \r\n, END and NULs
BIG_OK = (BIG_OK + b"x" * 1048000)[:1048000]
TOO_BIG = b"y" * 2000000
MANY = keys_n(b"pk", 100)
GETKEYS = keys_n(b"mk", 30)
BINARY = b"\x00\x01\r\nEND\r\nVALUE x 0 1\r\n\xff\xfe" * 10

# (name, steps, options). options: trickle=N (write N bytes at a time), shim=[replies]
# for documented differences, ring=[keys] that must be on their ring server afterwards.
CASES = [
    ("version", [S(b"version\r\n")], {}),
    ("version_extra_arg", [S(b"version x\r\n")], {}),
    ("set_get", [S(b"set k 5 0 3\r\nabc\r\nget k\r\n")], {"ring": [b"k"]}),
    ("set_flags_max", [S(b"set k 4294967295 0 1\r\na\r\nget k\r\n")], {}),
    ("set_flags_overflow", [S(b"set k 4294967296 0 1\r\na\r\nget k\r\n")], {}),
    ("set_empty_value", [S(b"set k 0 0 0\r\n\r\nget k\r\n")], {}),
    ("set_negative_exptime", [S(b"set k 0 -1 1\r\na\r\nget k\r\n")], {}),
    ("set_extra_spaces", [S(b"set  k  0 0 1\r\na\r\nget  k   \r\n")], {}),
    ("set_noreply_get", [S(b"set k 0 0 1 noreply\r\na\r\nget k\r\n")], {}),
    ("binary_value", [S(b"set bin 7 0 %d\r\n%s\r\nget bin\r\n" % (len(BINARY), BINARY))], {}),
    ("high_bit_key", [S(b"set k\xc3\xa9\xff 0 0 1\r\na\r\nget k\xc3\xa9\xff\r\n")], {}),
    ("add", [S(b"add k 0 0 1\r\na\r\nadd k 0 0 1\r\nb\r\nadd k 0 0 1 noreply\r\nc\r\nget k\r\n")], {}),
    ("replace", [S(b"replace k 0 0 1\r\na\r\nset k 0 0 1\r\nb\r\nreplace k 0 0 1\r\nc\r\n"
                   b"replace k 0 0 1 noreply\r\nd\r\nget k\r\n")], {}),
    ("append_prepend", [S(b"append k 0 0 1\r\na\r\nprepend k 0 0 1\r\na\r\nset k 0 0 1\r\nm\r\n"
                          b"append k 0 0 1\r\nz\r\nprepend k 0 0 1\r\na\r\n"
                          b"append k 0 0 1 noreply\r\n!\r\nprepend k 0 0 1 noreply\r\n^\r\nget k\r\n")], {}),
    ("cas_flow", [S(b"set k 0 0 1\r\na\r\ngets k\r\n"),
                  S(b"cas k 0 0 1 {cas}\r\nb\r\nget k\r\n"),
                  S(b"cas k 0 0 1 {cas}\r\nc\r\ngets k\r\n"),
                  S(b"cas k 0 0 1 {cas} noreply\r\nd\r\nget k\r\n")], {}),
    ("cas_mismatch_and_missing", [S(b"set k 0 0 1\r\na\r\ncas k 0 0 1 999999\r\nx\r\n"
                                    b"cas nokey 0 0 1 1\r\nx\r\nget k\r\n")], {}),
    ("cas_bad_unique", [S(b"cas k 0 0 1 abc\r\nx\r\n"), S(b"cas k 0 0 1\r\nx\r\n")], {}),
    ("delete", [S(b"set k 0 0 1\r\na\r\ndelete k\r\ndelete k\r\nset k 0 0 1\r\na\r\n"
                  b"delete k noreply\r\nget k\r\ndelete k 0\r\ndelete k 5\r\ndelete\r\n")], {}),
    ("incr_decr", [S(b"set n 0 0 2\r\n10\r\nincr n 5\r\ndecr n 3\r\ndecr n 100\r\n"
                     b"incr n 18446744073709551615\r\nincr n 1 noreply\r\ndecr n 1 noreply\r\nget n\r\n"
                     b"incr nokey 1\r\ndecr nokey 1\r\n")], {}),
    ("incr_wrap", [S(b"set n 0 0 20\r\n18446744073709551615\r\nincr n 2\r\n")], {}),
    ("incr_non_numeric", [S(b"set n 0 0 1\r\nx\r\nincr n 1\r\ndecr n 1\r\nset m 0 0 1\r\n5\r\n"
                            b"incr m abc\r\nincr m abc noreply\r\nincr m -1\r\nincr\r\nincr m\r\nget m\r\n")], {}),
    ("touch", [S(b"set k 0 0 1\r\na\r\ntouch k 100\r\ntouch nokey 100\r\ntouch k 100 noreply\r\n"
                 b"touch k abc\r\ntouch k\r\nget k\r\n")], {}),
    ("gat_gats", [S(b"set k 3 0 1\r\na\r\ngat 100 k\r\ngats 100 k nokey\r\ngat 0 nokey\r\n"
                    b"gat abc k\r\ngat\r\ngats\r\n")], {}),
    ("gat_exptime_no_keys", [S(b"gat 10\r\n"), S(b"gats 10\r\n")], {}),
    ("multiget_dups_misses", [S(set_cmds(GETKEYS) + b"get " + b" ".join(
        [GETKEYS[5], b"miss1", GETKEYS[0], GETKEYS[5], GETKEYS[29], b"miss2"] + GETKEYS[10:20]
        + [GETKEYS[0], b"miss1"]) + b"\r\n")], {"ring": GETKEYS}),
    ("gets_multi", [S(set_cmds(GETKEYS[:10]) + b"gets " + b" ".join(GETKEYS[:10] + [b"zz"]) + b"\r\n")], {}),
    ("get_noreply_is_a_key", [S(b"set k 0 0 1\r\na\r\nget k noreply\r\n")], {}),
    ("get_no_key", [S(b"get\r\ngets\r\n")], {}),
    ("get_many_keys_long_line", [S(set_cmds(MANY) + b"get " + b" ".join(keys_n(b"pk", 2000)) + b"\r\n")], {}),
    ("pipelined_burst", [S(set_cmds(MANY) + b"".join(b"get %s\r\n" % k for k in MANY)
                           + b"".join(b"delete %s\r\n" % k for k in MANY[::2])
                           + b"get " + b" ".join(MANY) + b"\r\n")], {}),
    ("pipelined_noreply_mix", [S(set_cmds(MANY, noreply=True) + b"incr %s 1\r\n" % MANY[0]
                                 + b"".join(b"delete %s noreply\r\n" % k for k in MANY[1::2])
                                 + b"get " + b" ".join(MANY) + b"\r\n")], {"ring": MANY[::2][1:]}),
    ("pipelined_trickle", [S(set_cmds(MANY[:20]) + b"get " + b" ".join(MANY[:20]) + b"\r\n"
                             + b"set big 1 0 5000\r\n" + b"b" * 5000 + b"\r\nget big\r\n")], {"trickle": 7}),
    ("bad_data_chunk_long", [S(b"set k 0 0 3\r\nabcd\r\nget k\r\n")], {}),
    ("bad_data_chunk_short", [S(b"set k 0 0 3\r\nab\r\n\r\nget k\r\n")], {}),
    ("bad_data_chunk_noreply", [S(b"set k 0 0 1 noreply\r\nab\r\nget k\r\n")], {}),
    ("data_lf_only", [S(b"set k 0 0 1\na\r\nget k\n"), S(b"set j 0 0 1\r\na\nget j\r\n")], {}),
    ("key_250_ok", [S(b"set " + K250 + b" 0 0 1\r\na\r\nget " + K250 + b"\r\n")], {}),
    # One step per bad request: memcached 1.6.18 drops the error line of a get with a
    # too-long key when the previous reply in the same read was also an error (its bug).
    ("key_too_long", [S(b"get " + K251 + b"\r\n"), S(b"get a " + K251 + b" b\r\n"),
                      S(b"set " + K251 + b" 0 0 1\r\nx\r\n"), S(b"delete " + K251 + b"\r\n"),
                      S(b"incr " + K251 + b" 1\r\n"), S(b"touch " + K251 + b" 1\r\n"),
                      S(b"gat 1 " + K251 + b"\r\n")], {}),
    ("bad_command_line", [S(b"set k abc 0 1\r\nx\r\nset k 0 0 -1\r\nset k 0 0\r\nset k 0 0 1 garbage\r\na\r\n"
                            b"set k 0 0 1 noreply extra\r\na\r\nget k\r\n")], {}),
    ("unknown_command", [S(b"foo bar\r\nGET k\r\nstat\r\n")], {}),
    # meta commands are served (test_meta.py has the rest): mn answers in pipeline order
    ("meta_noop", [S(b"mn\r\n")], {}),
    ("empty_line", [S(b"\r\n\n  \r\n")], {}),
    ("key_control_bytes", [S(b"set k\x01\x7f 0 0 1\r\na\r\nget k\x01\x7f\r\n")], {}),
    ("key_with_cr", [S(b"set k\rx 0 0 1\r\na\r\nget k\rx\r\n")], {}),
    ("tab_separator", [S(b"get\tk\r\nset\tk 0 0 1\r\na\r\n")], {}),
    ("get_trailing_space", [S(b"get \r\n"), S(b"set k 0 0 1\r\na\r\nget k \r\n")], {}),
    # (memcached 1.6.18 wraps 4294967296 to 0 and waits forever on 99999999999: not cases)
    ("set_huge_length", [S(b"set k 0 0 2147483648\r\n"), S(b"set k 0 0 2147483647\r\n")], {}),
    ("set_huge_exptime", [S(b"set k 0 99999999999 1\r\na\r\nget k\r\n")], {}),
    ("cas_unique_zero", [S(b"set k 0 0 1\r\na\r\ncas k 0 0 1 0\r\nb\r\nget k\r\n")], {}),
    ("touch_negative", [S(b"set k 0 0 1\r\na\r\ntouch k -1\r\nget k\r\n")], {}),
    ("incr_leading_zero_and_spaces", [S(b"set n 0 0 3\r\n007\r\nincr n 01\r\nincr  n  1 \r\nget n\r\n")], {}),
    ("pipelined_1000_gets", [S(set_cmds(MANY[:10]) + b"".join(b"get %s\r\n" % MANY[i % 13] for i in range(1000)))], {}),
    ("value_1048000", [S(b"set big 9 0 %d\r\n%s\r\nget big\r\n" % (len(BIG_OK), BIG_OK))], {"ring": [b"big"]}),
    # within MCSHIM_ITEM_MAX but over what this memcached stores: the server's own refusal
    ("value_near_item_max", [S(b"set k 0 0 1\r\na\r\nset k 0 0 1048560\r\n" + b"n" * 1048560 + b"\r\nget k\r\n")], {}),
    ("too_large_new_key", [S(b"set big 0 0 %d\r\n%s\r\nget big\r\n" % (len(TOO_BIG), TOO_BIG))], {}),
    # memcached deletes the old value of a set too large (t/getset.t); so does the shim
    ("too_large_replaces_old", [S(b"set k 0 0 1\r\na\r\nset k 0 0 %d\r\n%s\r\nget k\r\n" % (len(TOO_BIG), TOO_BIG))],
     {}),
    ("too_large_noreply_replaces_old",
     [S(b"set k 0 0 1\r\na\r\nset k 0 0 %d noreply\r\n%s\r\nget k\r\n" % (len(TOO_BIG), TOO_BIG))], {}),
    ("too_large_add_keeps_old",
     [S(b"set k 0 0 1\r\na\r\nadd k 0 0 %d\r\n%s\r\nappend k 0 0 %d\r\n%s\r\nget k\r\n"
        % (len(TOO_BIG), TOO_BIG, len(TOO_BIG), TOO_BIG))], {}),
    ("too_large_noreply", [S(b"set big 0 0 %d noreply\r\n%s\r\nget big\r\n" % (len(TOO_BIG), TOO_BIG))], {}),
    ("flush_all", [S(b"set k 0 0 1\r\na\r\nflush_all\r\nget k\r\nset k 0 0 1\r\na\r\nflush_all 0\r\nget k\r\n"
                     b"set k 0 0 1\r\na\r\nflush_all noreply\r\nget k\r\n")], {}),
    ("flush_all_bad_delay", [S(b"flush_all abc\r\n"), S(b"flush_all -1\r\n")], {}),
    ("verbosity", [S(b"verbosity 1\r\nverbosity 0 noreply\r\nverbosity\r\nverbosity a\r\nverbosity 1 2 3\r\n")], {}),
    ("quit", [EOF(b"set k 0 0 1\r\na\r\nget k\r\nquit\r\nget k\r\n")], {}),
    ("quit_first", [EOF(b"quit\r\nget k\r\n")], {}),
    # docs/protocol.md: a non-retrieval line over 2048 bytes without a newline gets
    # "CLIENT_ERROR line too long" before the close (memcached closes silently).
    ("line_too_long_no_newline", [EOF(b"x" * 3000)], {}),
    # A NUL inside a line: memcached ends the line there (C string). Where that is an
    # error the shim answers as memcached; where memcached would run the truncated
    # command, the shim refuses the line (docs/protocol.md).
    ("nul_in_line", [S(b"set k\x00 0 0 1\r\na\r\n")], {}),
    ("nul_key_get", [S(b"get \x00\r\n")], {}),
    ("nul_key_gets", [S(b"gets \x00abc\r\n")], {}),
    ("nul_key_incr", [S(b"incr \x00 1\r\n")], {}),
    ("nul_key_decr_delete_touch", [S(b"decr \x00 1\r\n"), S(b"delete \x00\r\n"), S(b"touch \x00 1\r\n")], {}),
    ("nul_after_key_get", [S(b"set a 0 0 1\r\nx\r\nget a\x00b\r\n")],
     {"shim": [b"STORED\r\nCLIENT_ERROR bad command line format\r\n"]}),
    # every other malformed key class, byte for byte as memcached
    ("control_bytes_in_key", [S(b"set a\x01b 0 0 1\r\nx\r\nget a\x01b\r\nget \x7f\r\nincr a\x02 1\r\n")], {}),
    # one step each: memcached 1.6.18 drops the answer to a bad-key get that is
    # pipelined right behind another error (its own quirk, not copied)
    ("key_251_every_command", [S(b"get %s\r\n" % K251), S(b"gets a %s\r\n" % K251),
                               S(b"set %s 0 0 1\r\nx\r\n" % K251), S(b"add %s 0 0 1\r\nx\r\n" % K251),
                               S(b"delete %s\r\n" % K251), S(b"incr %s 1\r\n" % K251),
                               S(b"touch %s 1\r\n" % K251), S(b"gat 1 %s\r\n" % K251)], {}),
    ("empty_key", [S(b"get \r\n"), S(b"get  \r\n"), S(b"set  0 0 1\r\nx\r\n"), S(b"delete \r\n"),
                   S(b"incr  1\r\n"), S(b"touch \r\n"), S(b"gat 1 \r\n")], {}),
    ("tab_in_key", [S(b"set a\tb 0 0 1\r\nx\r\nget a\tb\r\n")], {}),
    ("long_line_with_newline", [S(b"x" * 3000 + b"\r\n")], {}),
]


class ProtocolDiffTest(difftest.DiffTest):

    script = "mcraw.py"
    exchange = staticmethod(mcraw.exchange)
    normalize = staticmethod(normalize)

    def test_cases_count(self):
        self.assert_cases(CASES, 50)


difftest.add_cases(ProtocolDiffTest, CASES)


class ShimLocalRepliesTest(harness.ClusterTest):
    """What the shim answers itself (docs/protocol.md): stats, stats mcshim, stats <other>."""

    def shim(self, data):
        """data: bytes (one step, returns its reply) or a list of steps (returns the replies)."""
        steps = [S(d) for d in (data if isinstance(data, list) else [data])]
        replies = [base64.b64decode(r) for r in
                   difftest.run_script("mcraw.py", self.intercept, self.env(), steps, harness.scaled(5), limit=30)]
        return replies if isinstance(data, list) else replies[0]

    @staticmethod
    def stat_map(out):
        stats = {}
        for l in out.split(b"\r\n"):
            if l.startswith(b"STAT "):
                _, k, v = l.decode().split(" ", 2)
                stats[k] = v
        return stats

    @harness.requires_shim
    def test_stats_mcshim_counts_earlier_pipelined_requests(self):
        # Replies come back in request order, so a stats request pipelined after a get
        # should see that get counted, as memcached's own stats do.
        out = self.shim(b"set a 0 0 1\r\n1\r\nget a b\r\nstats mcshim\r\n")
        stats = self.stat_map(out)
        self.assertEqual((stats.get("get_hits"), stats.get("get_misses")), ("1", "1"))

    @harness.requires_shim
    def test_stats(self):
        out = self.shim(b"stats\r\n")
        self.assertTrue(out.endswith(b"END\r\n"), out)
        names = [l.split()[1] for l in out.split(b"\r\n") if l.startswith(b"STAT ")]
        for n in (b"pid", b"uptime", b"time", b"version", b"curr_connections", b"cmd_get", b"get_hits"):
            self.assertIn(n, names)
        for l in out.split(b"\r\n")[:-2]:
            self.assertRegex(l, rb"^STAT \S+ \S+$")

    @harness.requires_shim
    def test_stats_mcshim(self):
        out = self.shim([b"set a 0 0 1\r\n1\r\nget a b\r\n", b"stats mcshim\r\n"])[1]
        self.assertTrue(out.endswith(b"END\r\n"), out)
        stats = self.stat_map(out)
        self.assertEqual(stats.get("servers"), "4")
        for i, m in enumerate(self.cluster.nodes):
            self.assertEqual(stats.get("server:%d:address" % i), m.addr)
            self.assertEqual(stats.get("server:%d:state" % i), "up")
        # the first step's sentinel get (mcraw.py) is a hit too
        self.assertEqual((stats.get("get_hits"), stats.get("get_misses")), ("2", "1"))
        self.assertRegex(stats.get("pid", ""), r"^[0-9]+$")
        self.assertEqual(stats.get("cmd_set"), "2")

    @harness.requires_shim
    def test_stats_other_is_error(self):
        self.assertEqual(self.shim(b"stats slabs\r\n"), b"ERROR\r\n")


if __name__ == "__main__":
    unittest.main()
