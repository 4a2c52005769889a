"""`mcshim stats`, the outside view of the host-wide state segment (docs/host.md).

No library engine and no servers: tests/tools/segwrite.c writes segment files with
the library's own code (a few server entries in every state, counters, missed keys,
flags, leases, process slots, corruption), in a temporary directory; the test runs
`scripts/mcshim stats` on them and checks, in the three formats:

- what the helper wrote is what is shown (ids, states, epochs, who/when/why, leases,
  flags, missed keys, every counter of MCS_SEG_COUNTERS, processes), and the three
  formats agree, with odd bytes in an identity shown in one printable form;
- only live processes are listed: a slot whose process exited (not detached) or whose
  pid now names another process (another ticket) is skipped, and left in place;
- the JSON parses; the Prometheus text passes the parser below (sample syntax, metric
  and label names, HELP and TYPE before the samples, families not split, label value
  escapes, counters named *_total); promtool checks it too where it is installed;
- refused files (mode, size, symlink, not a segment, missing): exit 1, one line, and
  the file is never changed; usage errors: exit 2, one line;
- --watch redraws, and follows a segment that is replaced; the installed layout
  (PREFIX/lib/mcshim/mcshim-stats) is found by the installed wrapper.
"""
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest

import harness

WRAPPER = os.path.join(harness.ROOT, "scripts", "mcshim")
SEGWRITE = os.path.join(harness.TOOLS, "segwrite")
STATS_BIN = os.path.join(harness.BUILD, "mcshim-stats")
CLEAR = "\033[H\033[2J"

# The layout (preload/core/hostseg.h): header page, 128 server entries of 304 bytes, then
# 1024 process slots of 64 bytes (pid first).
PROCS_AT = 4096 + 128 * 304
PROC_SIZE = 64


def x_list(header, macro):
    """The names of an X-macro list in a header, in order: [(first, second argument)]."""
    with open(os.path.join(harness.ROOT, header)) as f:
        text = f.read()
    block = re.search(r"#define %s\(X\)(.*?)\n\n" % macro, text, re.S).group(1)
    return re.findall(r'X\((\w+),\s*"([^"]*)"\)', block)


HEALTHS = [name for _, name in x_list("preload/core/router.h", "MCS_HEALTH_LIST")]
FAILURES = [name for _, name in x_list("preload/core/router.h", "MCS_FAILURE_LIST")]
COUNTERS = [name for name, _ in x_list("preload/core/hostseg.h", "MCS_SEG_COUNTERS")]


def shown(raw):
    """The tool's printable form of an identity's bytes (tools/mcshim-stats.c)."""
    out = []
    for b in raw:
        if b == 0x5c:
            out.append("\\\\")
        elif 0x20 <= b < 0x7f:
            out.append(chr(b))
        else:
            out.append("\\x%02x" % b)
    return "".join(out)


def arg(raw):
    """raw bytes as a segwrite ID argument (\\xHH for anything but plain letters and digits)."""
    return "".join(chr(b) if b < 0x80 and (chr(b).isalnum() or chr(b) in ".:-_") else "\\x%02x" % b for b in raw)


# ---- a parser for the Prometheus text exposition format 0.0.4 ----

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


def parse_labels(s, where):
    """'{a="x",b="y\\"z"}' at the start of s: (labels dict, rest of s)."""
    assert s[0] == "{"
    labels = {}
    i = 1
    while True:
        if s[i] == "}":
            return labels, s[i + 1:]
        m = re.match(r"([^=]*)=\"", s[i:])
        if not m or not LABEL_NAME.match(m.group(1)):
            raise AssertionError("%s: bad label name at %r" % (where, s[i:]))
        name = m.group(1)
        if name in labels:
            raise AssertionError("%s: label %s twice" % (where, name))
        i += m.end()
        value = []
        while True:
            if i >= len(s):
                raise AssertionError("%s: unterminated label value" % where)
            c = s[i]
            if c == "\\":
                esc = s[i + 1:i + 2]
                if esc not in ("\\", '"', "n"):
                    raise AssertionError("%s: bad escape \\%s in a label value" % (where, esc))
                value.append("\n" if esc == "n" else esc)
                i += 2
            elif c == '"':
                i += 1
                break
            else:
                value.append(c)
                i += 1
        labels[name] = "".join(value)
        if s[i] == ",":
            i += 1
            if s[i] == "}":
                raise AssertionError("%s: trailing comma" % where)
        elif s[i] != "}":
            raise AssertionError("%s: expected , or } after a label at %r" % (where, s[i:]))


def parse_prometheus(data):
    """Checks data (bytes) against the text format and this tool's rules; returns
    {"families": {name: (type, help)}, "samples": {(name, frozenset(labels)): value}}."""
    text = data.decode("utf-8")   # the format is UTF-8: raises on anything else
    if not text.endswith("\n"):
        raise AssertionError("the last line has no newline")
    helps, types, samples = {}, {}, {}
    done = set()       # families whose group of lines has ended
    current = None
    for n, line in enumerate(text[:-1].split("\n"), 1):
        where = "line %d %r" % (n, line)
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not METRIC_NAME.match(name):
                    raise AssertionError("%s: bad metric name" % where)
                if name != current:
                    if current is not None:
                        done.add(current)
                    if name in done:
                        raise AssertionError("%s: metric %s split in two groups" % (where, name))
                    current = name
                rest = parts[3] if len(parts) > 3 else ""
                if parts[1] == "HELP":
                    if name in helps or samples_of(samples, name):
                        raise AssertionError("%s: HELP twice or after samples" % where)
                    if re.fullmatch(r"(?:[^\\]|\\[\\n])*", rest) is None:
                        raise AssertionError("%s: bad escape in HELP (only \\\\ and \\n)" % where)
                    helps[name] = rest
                else:
                    if name in types or samples_of(samples, name):
                        raise AssertionError("%s: TYPE twice or after samples" % where)
                    if rest not in TYPES:
                        raise AssertionError("%s: unknown type" % where)
                    types[name] = rest
            continue
        if line.strip() == "":
            raise AssertionError("%s: blank line" % where)
        m = re.match(r"([^{ ]+)", line)
        name = m.group(1)
        if not METRIC_NAME.match(name):
            raise AssertionError("%s: bad metric name" % where)
        rest = line[m.end():]
        labels = {}
        if rest.startswith("{"):
            labels, rest = parse_labels(rest, where)
        fields = rest.split(" ")
        if fields[0] != "" or len(fields) not in (2, 3):
            raise AssertionError("%s: expected one space, a value and maybe a timestamp" % where)
        if fields[1] not in ("+Inf", "-Inf", "NaN"):
            try:
                value = float(fields[1])
            except ValueError:
                raise AssertionError("%s: bad value" % where)
            if math.isnan(value) or math.isinf(value):
                raise AssertionError("%s: bad value spelling" % where)
        else:
            value = float(fields[1])
        if name != current or name not in helps or name not in types:
            raise AssertionError("%s: sample without HELP and TYPE just before its group" % where)
        if types[name] == "counter" and not name.endswith("_total"):
            raise AssertionError("%s: a counter not named *_total" % where)
        if types[name] != "counter" and name.endswith("_total"):
            raise AssertionError("%s: *_total that is not a counter" % where)
        if not name.startswith("mcshim_"):
            raise AssertionError("%s: not prefixed mcshim_" % where)
        key = (name, frozenset(labels.items()))
        if key in samples:
            raise AssertionError("%s: the same series twice" % where)
        samples[key] = value
    return {"families": {k: (types.get(k), helps.get(k)) for k in set(helps) | set(types)}, "samples": samples}


def samples_of(samples, name):
    return [k for k in samples if k[0] == name]


def sample(parsed, name, **labels):
    key = (name, frozenset(labels.items()))
    if key not in parsed["samples"]:
        raise AssertionError("no sample %s%s" % (name, labels))
    return parsed["samples"][key]


class StatsToolTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        for path in (SEGWRITE, STATS_BIN):
            if not os.access(path, os.X_OK):
                raise AssertionError("%s is not built (make all, or set MCSHIM_BUILD)" % path)

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mcshim-stats-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.seg = os.path.join(self.tmp, "shared.seg")
        self.held = []
        self.addCleanup(self.release_all)

    def env(self, extra=None):
        """No shim, no MCSHIM_* of the caller; the wrapper finds this build's tool next to its library."""
        e = harness.plain_env()
        e["MCSHIM_LIB"] = harness.LIB
        e.update(extra or {})
        return e

    # ---- the helper ----

    def segwrite(self, path, *cmds, hold=False):
        """Runs segwrite; with hold, it stays alive (its slot a live process's) until release()."""
        p = subprocess.Popen([SEGWRITE, path] + list(cmds) + (["hold"] if hold else []), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env())
        line = p.stdout.readline()
        if not line:
            p.wait(timeout=harness.scaled(10))
            raise AssertionError("segwrite failed: %s" % p.stderr.read())
        info = json.loads(line)
        info["proc"] = p
        if hold:
            self.held.append(p)
        else:
            p.wait(timeout=harness.scaled(10))
            p.stdout.close()
            p.stderr.close()
            p.stdin.close()
            self.assertEqual(p.returncode, 0)
        return info

    def release(self, p):
        """Lets a held segwrite exit (without detaching its slot, as a killed process)."""
        p.stdin.close()
        p.wait(timeout=harness.scaled(10))
        p.stdout.close()
        p.stderr.close()
        if p in self.held:
            self.held.remove(p)

    def release_all(self):
        for p in list(self.held):
            if p.poll() is None:
                p.kill()
            p.wait()
            self.release(p)

    # ---- the tool ----

    def stats(self, *args, env=None, status=0, file=None):
        """Runs `scripts/mcshim stats ARGS --file FILE`; returns stdout (bytes)."""
        p = subprocess.run([WRAPPER, "stats"] + list(args) + ["--file", file or self.seg], env=env or self.env(),
                           capture_output=True, timeout=harness.scaled(30))
        self.assertEqual(p.returncode, status, "stdout=%r stderr=%r" % (p.stdout[:2000], p.stderr))
        if status == 0:
            self.assertEqual(p.stderr, b"")
        return p.stdout

    def json_view(self, file=None, env=None):
        return json.loads(self.stats("--json", file=file, env=env))

    def one_line_error(self, args, status, pattern, env=None):
        p = subprocess.run([WRAPPER, "stats"] + args, env=env or self.env(), capture_output=True, text=True,
                           timeout=harness.scaled(30))
        self.assertEqual(p.returncode, status, "stdout=%r stderr=%r" % (p.stdout, p.stderr))
        self.assertEqual(p.stdout, "")
        lines = p.stderr.splitlines()
        self.assertEqual(len(lines), 1, p.stderr)
        self.assertRegex(lines[0], pattern)
        return lines[0]

    def fingerprint(self, path):
        st = os.lstat(path)
        digest = None
        if os.path.isfile(path):
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
        return (digest, st.st_size, st.st_mode, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)

    def slot_pid(self, path, slot):
        with open(path, "rb") as f:
            f.seek(PROCS_AT + slot * PROC_SIZE)
            return int.from_bytes(f.read(4), "little")

    # ---- what was written is what is shown ----

    WEIRD = b'we"ird\\\n\xffid'     # a quote, a backslash, a newline and a byte that is no UTF-8

    def write_sample(self):
        """Servers in every state and a live helper process; returns (helper info, expected JSON servers)."""
        up, down, weird, bad, badwhy, expired = ("127.0.0.1:11211", "127.0.0.1:11212", arg(self.WEIRD), "bad",
                                                 "10.0.0.9:11211", "[::1]:11213")
        cmds = ["server", up]
        for k, c in enumerate(COUNTERS):
            cmds += ["count", up, c, str((k + 1) * 11)]
        cmds += ["log", up, "solo",
                 "move", down, "down", str(FAILURES.index("timed out")), "4242", "65000",
                 "log", down, "k1", "log", down, "k2", "log", down, "k1",      # k1 twice: one key
                 "flag", down, "overflow", "flag", down, "flush",
                 "lease", down, "4243", "600000", "count", down, "downs", "1",
                 "move", weird, "rejoining", "0", "77", "3000", "move", weird, "warming", "0", "78", "2000",
                 "server", bad, "raw", bad, "state", str(0x1717),
                 "move", badwhy, "down", "0", "4244", "1000", "raw", badwhy, "why", "99",
                 "lease", expired, "4245", "1",
                 "attach", "17", "1"]
        info = self.segwrite(self.seg, *cmds, hold=True)
        time.sleep(0.05)   # the 1 ms lease has expired
        zero = {c: 0 for c in COUNTERS}
        expect = {
            up: dict(state="up", epoch=0, changed_by=None, why=None, lease_pid=None, flags=[], missed_keys=1,
                     counters={c: (k + 1) * 11 for k, c in enumerate(COUNTERS)}),
            down: dict(state="down", epoch=1, changed_by=4242, why="timed out", lease_pid=4243,
                       flags=["overflow", "missed_flush_all"], missed_keys=2, counters=dict(zero, downs=1)),
            shown(self.WEIRD): dict(state="warming", epoch=0, changed_by=78, why=None, lease_pid=None, flags=[],
                                    missed_keys=0, counters=zero),
            bad: dict(state="corrupt", epoch=0x17, changed_by=None, why=None, lease_pid=None, flags=[],
                      missed_keys=0, counters=zero),
            badwhy: dict(state="down", epoch=1, changed_by=4244, why="corrupt", lease_pid=None, flags=[],
                         missed_keys=0, counters=zero),
            expired: dict(state="up", epoch=0, changed_by=None, why=None, lease_pid=None, flags=[], missed_keys=0,
                          counters=zero),
        }
        return info, expect

    def test_json_shows_what_was_written(self):
        info, expect = self.write_sample()
        before = self.fingerprint(self.seg)
        view = self.json_view()
        self.assertEqual(view["path"], self.seg)
        self.assertTrue(view["same_boot"])
        self.assertEqual(view["attaches"], 1)
        self.assertIsInstance(view["age_ms"], int)
        got = {s["server"]: s for s in view["servers"]}
        self.assertEqual(sorted(got), sorted(expect))
        self.assertEqual([s["server"] for s in view["servers"]], sorted(got, key=lambda s: s.encode("latin-1")))
        for server, want in expect.items():
            for field, value in want.items():
                self.assertEqual(got[server][field], value, "%s: %s" % (server, field))
        self.assertEqual(list(got["127.0.0.1:11211"]["counters"]), COUNTERS, "every counter, in the list's order")
        ago = got["127.0.0.1:11212"]["changed_ago_ms"]
        self.assertTrue(65000 <= ago < 65000 + harness.scaled(20000), ago)
        self.assertTrue(2000 <= got[shown(self.WEIRD)]["changed_ago_ms"] < 2000 + harness.scaled(20000))
        self.assertIsNone(got["127.0.0.1:11211"]["changed_ago_ms"], "never changed: unknown")
        procs = view["processes"]
        self.assertEqual(len(procs), 1, procs)
        p = procs[0]
        self.assertEqual((p["pid"], p["comm"], p["requests"], p["servers_down"]), (info["pid"], "segwrite", 17, 1))
        self.assertTrue(1500 <= p["uptime_ms"] < 1500 + harness.scaled(20000), p)
        self.assertTrue(250 <= p["heartbeat_ago_ms"] < p["uptime_ms"], p)
        self.assertEqual(self.fingerprint(self.seg), before, "the tool changed the file")

    def test_prometheus_shows_what_was_written(self):
        info, expect = self.write_sample()
        before = self.fingerprint(self.seg)
        text = self.stats("--prometheus")
        parsed = parse_prometheus(text)
        self.promtool(text)
        for server, want in expect.items():
            usable = want["state"] in ("up", "warming")
            self.assertEqual(sample(parsed, "mcshim_server_up", server=server), 1 if usable else 0, server)
            for h in HEALTHS:
                self.assertEqual(sample(parsed, "mcshim_server_health", server=server, state=h),
                                 1 if want["state"] == h else 0, (server, h))
            self.assertEqual(sample(parsed, "mcshim_server_epoch", server=server), want["epoch"])
            self.assertEqual(sample(parsed, "mcshim_server_missed_keys", server=server), want["missed_keys"])
            self.assertEqual(sample(parsed, "mcshim_server_lease_held", server=server),
                             1 if want["lease_pid"] else 0, server)
            self.assertEqual(sample(parsed, "mcshim_server_log_overflow", server=server),
                             1 if "overflow" in want["flags"] else 0)
            self.assertEqual(sample(parsed, "mcshim_server_missed_flush_all", server=server),
                             1 if "missed_flush_all" in want["flags"] else 0)
            for c in COUNTERS:
                self.assertEqual(sample(parsed, "mcshim_server_%s_total" % c, server=server), want["counters"][c])
        for c in COUNTERS:
            self.assertEqual(parsed["families"]["mcshim_server_%s_total" % c][0], "counter")
        age = sample(parsed, "mcshim_server_state_age_seconds", server="127.0.0.1:11212")
        self.assertTrue(65 <= age < 65 + harness.scaled(20), age)
        self.assertEqual(sample(parsed, "mcshim_servers"), len(expect))
        self.assertEqual(sample(parsed, "mcshim_processes"), 1)
        labels = dict(pid=str(info["pid"]), comm="segwrite")
        self.assertEqual(sample(parsed, "mcshim_process_requests_total", **labels), 17)
        self.assertEqual(sample(parsed, "mcshim_process_servers_down", **labels), 1)
        self.assertEqual(parsed["families"]["mcshim_process_requests_total"][0], "counter")
        self.assertEqual(sample(parsed, "mcshim_segment_attaches_total"), 1)
        # the odd identity, escaped per the format, reads back as the printable form the other formats show
        self.assertIn(b'server="we\\"ird\\\\\\\\\\\\x0a\\\\xffid"', text)
        self.assertEqual(self.fingerprint(self.seg), before, "the tool changed the file")

    def test_table_shows_what_was_written(self):
        info, expect = self.write_sample()
        before = self.fingerprint(self.seg)
        text = self.stats().decode()
        lines = text.split("\n")
        self.assertRegex(lines[0], r"^mcshim stats: %s  segment age \S+  processes 1  attaches 1$"
                         % re.escape(self.seg))
        tables = [t.split("\n") for t in text.strip("\n").split("\n\n")[1:]]
        self.assertEqual(len(tables), 3, text)
        servers, counters, procs = tables
        self.assert_aligned(servers, right=("EPOCH", "BY", "LEASE", "MISSED"))
        self.assert_aligned(counters, right=COUNTERS)
        self.assert_aligned(procs, right=("PID", "UPTIME", "REQUESTS", "SERVERS_DOWN", "HEARTBEAT"))
        self.assertEqual(servers[0].split(), ["SERVER", "STATE", "EPOCH", "CHANGED", "BY", "WHY", "LEASE", "FLAGS",
                                              "MISSED"])
        rows = {re.split(r" {2,}", l.strip())[0]: re.split(r" {2,}", l.strip()) for l in servers[1:]}
        self.assertEqual(sorted(rows), sorted(expect))
        for server, want in expect.items():
            row = rows[server]
            flags = ",".join(want["flags"]) or "-"
            self.assertEqual(row[1:3] + row[4:], [want["state"], str(want["epoch"]), str(want["changed_by"] or "-"),
                                                  want["why"] or "-", str(want["lease_pid"] or "-"), flags,
                                                  str(want["missed_keys"])], server)
        self.assertRegex(rows["127.0.0.1:11212"][3], r"^1m0[5-9]s$")
        self.assertEqual(rows["127.0.0.1:11211"][3], "-")
        self.assertEqual(counters[0].split(), ["SERVER"] + COUNTERS)
        for l in counters[1:]:
            cells = l.split()
            self.assertEqual([int(v) for v in cells[1:]], [expect[cells[0]]["counters"][c] for c in COUNTERS])
        self.assertEqual(procs[0].split(), ["PID", "COMM", "UPTIME", "REQUESTS", "SERVERS_DOWN", "HEARTBEAT"])
        self.assertEqual(len(procs), 2, procs)
        cells = procs[1].split()
        self.assertEqual([cells[0], cells[1], cells[3], cells[4]], [str(info["pid"]), "segwrite", "17", "1"])
        self.assertRegex(cells[2], r"^\d+\.\ds$")
        self.assertEqual(self.fingerprint(self.seg), before, "the tool changed the file")

    def assert_aligned(self, table, right):
        """Left-aligned columns start where their header starts, right-aligned ones end where it ends."""
        head = table[0]
        for m in re.finditer(r"\S+", head):
            for line in table[1:]:
                if m.group() in right:
                    self.assertNotEqual(line[m.end() - 1:m.end()], " ", "%r under %s:\n%s" % (line, m.group(), head))
                    self.assertIn(line[m.end():m.end() + 1], ("", " "), "%r under %s" % (line, m.group()))
                else:
                    self.assertNotEqual(line[m.start()], " ", "%r under %s:\n%s" % (line, m.group(), head))
                    if m.start() > 0:
                        self.assertEqual(line[m.start() - 2:m.start()], "  ", "%r under %s" % (line, m.group()))

    def promtool(self, text):
        """promtool (Debian: package prometheus) checks the exposition too, where it is installed."""
        tool = shutil.which("promtool")
        if tool is None:
            return
        p = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, timeout=harness.scaled(30))
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_the_prometheus_parser_rejects_bad_exposition(self):
        """The parser above can fail: each of these breaks one rule."""
        good = b'# HELP mcshim_x_total x\n# TYPE mcshim_x_total counter\nmcshim_x_total{a="b\\"c"} 1\n'
        parse_prometheus(good)
        for bad in (b'mcshim_x_total 1\n',                                                   # no HELP/TYPE
                    b'# HELP mcshim_x x\n# TYPE mcshim_x counter\nmcshim_x 1\n',              # counter not _total
                    good.replace(b'b\\"c', b'b"c'),                                          # unescaped quote
                    good.replace(b'b\\"c', b'b\\tc'),                                        # unknown escape
                    good.replace(b'{a=', b'{1a='),                                           # bad label name
                    good.replace(b'} 1', b'}  1'),                                           # two spaces
                    good.replace(b'} 1', b'} one'),                                          # not a number
                    good.replace(b'} 1\n', b'} 1'),                                          # no final newline
                    good + b'# HELP mcshim_y y\n# TYPE mcshim_y gauge\nmcshim_y 1\nmcshim_x_total{a="c"} 2\n',
                    good.replace(b'mcshim_x_total{', b'x-y{'),                              # bad name
                    good.replace(b'x_total x\n', b'x_total x\\y\n'),                        # bad HELP escape
                    good.replace(b'mcshim_x_total{', b'other_total{').replace(b'mcshim_x', b'other')):

            with self.subTest(bad=bad):
                with self.assertRaises(AssertionError):
                    parse_prometheus(bad)

    # ---- processes: live ones only ----

    def test_dead_and_reused_processes_are_not_listed(self):
        me = os.getpid()
        held = self.segwrite(self.seg, "server", "127.0.0.1:1", "attach", "5", "0", hold=True)
        dead = self.segwrite(self.seg, "attach", "6", "0", "proc", str(me), "12345", "proc", str(me), "0")
        listed = sorted(p["pid"] for p in self.json_view()["processes"])
        # held is alive; `dead` exited; me with another ticket is a reused pid; me with my ticket is alive
        self.assertEqual(listed, sorted([held["pid"], me]))
        self.assertEqual(self.slot_pid(self.seg, dead["slots"][str(dead["pid"])]), dead["pid"], "not reclaimed")
        self.release(held["proc"])
        view = self.json_view()
        self.assertEqual([p["pid"] for p in view["processes"]], [me])
        self.assertEqual([p["comm"] for p in view["processes"]], ["other"])
        self.assertEqual(self.slot_pid(self.seg, held["slots"][str(held["pid"])]), held["pid"],
                         "the tool does not reclaim slots: its process is gone, its slot stays")
        parsed = parse_prometheus(self.stats("--prometheus"))
        self.assertEqual(sample(parsed, "mcshim_processes"), 1)
        self.assertEqual(sorted(dict(k[1])["pid"] for k in samples_of(parsed["samples"],
                                                                        "mcshim_process_requests_total")), [str(me)])
        self.assertIn("processes 1", self.stats().decode().split("\n")[0])

    def test_segment_of_another_boot(self):
        """Times and processes of another boot mean nothing here: ages unknown, no lease, no process."""
        self.segwrite(self.seg, "move", "127.0.0.1:2", "down", "0", "99", "1000", "lease", "127.0.0.1:2", "98",
                      "600000", "attach", "1", "1", "proc", str(os.getpid()), "0", "otherboot")
        view = self.json_view()
        self.assertFalse(view["same_boot"])
        self.assertIsNone(view["age_ms"])
        srv = view["servers"][0]
        self.assertEqual((srv["state"], srv["changed_by"], srv["changed_ago_ms"], srv["lease_pid"]),
                         ("down", 99, None, None))
        self.assertEqual(view["processes"], [])
        self.assertIn("another boot", self.stats().decode().split("\n")[0])

    def test_identity_longer_than_its_field_is_bounded(self):
        self.segwrite(self.seg, "server", "abc")
        entry = [i for i in range(128) if self.entry_id(i) == b"abc"][0]
        self.poke(self.seg, 4096 + entry * 304 + 4, (100000).to_bytes(4, "little"))   # its id_len
        view = self.json_view()
        self.assertEqual(view["servers"][0]["server"], shown(b"abc" + b"\0" * 124))
        parse_prometheus(self.stats("--prometheus"))

    def entry_id(self, i):
        with open(self.seg, "rb") as f:
            f.seek(4096 + i * 304)
            claim, n = int.from_bytes(f.read(4), "little"), int.from_bytes(f.read(4), "little")
            return f.read(min(n, 127)) if claim == 2 else None

    def test_empty_segment(self):
        self.segwrite(self.seg)
        view = self.json_view()
        self.assertEqual((view["servers"], view["processes"]), ([], []))
        text = self.stats().decode()
        self.assertIn("no servers in use", text)
        self.assertIn("no processes attached", text)
        parsed = parse_prometheus(self.stats("--prometheus"))
        self.assertEqual(sample(parsed, "mcshim_servers"), 0)
        self.assertEqual(sample(parsed, "mcshim_processes"), 0)

    # ---- refused files, usage ----

    def test_refused_files_exit_1_with_one_line_and_stay_unchanged(self):
        self.segwrite(self.seg, "server", "127.0.0.1:3")
        cases = []

        def variant(name, prepare, pattern, env=None):
            path = os.path.join(self.tmp, name)
            shutil.copyfile(self.seg, path)
            os.chmod(path, 0o600)
            prepare(path)
            cases.append((path, pattern, env))

        variant("mode0644", lambda p: os.chmod(p, 0o644), r"has mode 0644, expected 0600")
        variant("mode0660", lambda p: os.chmod(p, 0o660), r"has mode 0660, expected 0600")
        variant("want0660", lambda p: None, r"has mode 0600, expected 0660", {"MCSHIM_SHARED_MODE": "0660"})
        variant("longer", lambda p: os.truncate(p, os.path.getsize(p) + 4096), r"is \d+ bytes, not a segment of")
        variant("shorter", lambda p: os.truncate(p, 4096), r"is 4096 bytes, not a segment of this version")
        variant("zeros", lambda p: self.poke(p, 0, bytes(8)), r"not a valid segment of this version")
        variant("broken", lambda p: self.poke(p, 8 + 4 + 12 + 8 + 16, (1).to_bytes(4, "little")),
                r"not a valid segment of this version")   # after magic, version, geometry, size, boot id
        link = os.path.join(self.tmp, "link")
        os.symlink(self.seg, link)
        cases.append((link, r"cannot open .*link", None))
        cases.append((os.path.join(self.tmp, "missing"), r"cannot open .*missing: No such file", None))
        os.mkdir(os.path.join(self.tmp, "dir"))
        cases.append((os.path.join(self.tmp, "dir"), r"not a regular file", None))
        for path, pattern, extra in cases:
            for fmt in ([], ["--json"], ["--prometheus"]):
                with self.subTest(path=os.path.basename(path), fmt=fmt):
                    before = self.fingerprint(path) if os.path.lexists(path) else None
                    line = self.one_line_error(fmt + ["--file", path], 1, pattern, env=self.env(extra))
                    self.assertTrue(line.startswith("MCSHIM_SHARED: "), line)
                    after = self.fingerprint(path) if os.path.lexists(path) else None
                    self.assertEqual(after, before, "the tool changed the file")
        self.assertEqual(sorted(os.listdir(self.tmp)), sorted(["shared.seg", "link", "dir"] +
                                                              [os.path.basename(c[0]) for c in cases[:7]]),
                         "the tool created nothing")

    def poke(self, path, offset, data):
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(data)

    def test_group_mode_is_accepted_with_mcshim_shared_mode_0660(self):
        self.segwrite(self.seg, "server", "127.0.0.1:4")
        os.chmod(self.seg, 0o660)
        view = self.json_view(env=self.env({"MCSHIM_SHARED_MODE": "0660"}))
        self.assertEqual([s["server"] for s in view["servers"]], ["127.0.0.1:4"])

    def test_path_from_the_environment(self):
        self.segwrite(self.seg, "server", "127.0.0.1:5")
        p = subprocess.run([WRAPPER, "stats", "--json"], env=self.env({"MCSHIM_SHARED": self.seg}),
                           capture_output=True, text=True, timeout=harness.scaled(30))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["path"], self.seg)
        # off (or unset): the default path, read-only (whether or not this user has one)
        default = "/dev/shm/mcshim-%d.seg" % os.geteuid()
        for extra in ({"MCSHIM_SHARED": "off"}, {}):
            p = subprocess.run([WRAPPER, "stats", "--json"], env=self.env(extra), capture_output=True, text=True,
                               timeout=harness.scaled(30))
            if p.returncode == 0:
                self.assertEqual(json.loads(p.stdout)["path"], default)
            else:
                self.assertEqual(p.returncode, 1)
                self.assertEqual(len(p.stderr.splitlines()), 1, p.stderr)
                self.assertIn(default, p.stderr)

    def test_usage_errors_exit_2_with_one_line(self):
        self.segwrite(self.seg)
        for args, pattern, extra in ((["--bogus"], r"unknown argument --bogus", None),
                                     (["--json", "--prometheus"], r"--json and --prometheus", None),
                                     (["--json", "--json"], r"--json and --prometheus", None),
                                     (["--watch=0"], r"--watch wants a number", None),
                                     (["--watch=-1"], r"--watch wants a number", None),
                                     (["--watch=x"], r"--watch wants a number", None),
                                     (["--watch="], r"--watch wants a number", None),
                                     (["extra"], r"unknown argument extra", None),
                                     (["--file"], r"--file needs a path", None),
                                     (["--file="], r"--file needs a path", None),
                                     (["--file", self.seg], r"MCSHIM_SHARED_MODE must be 0600 or 0660",
                                      {"MCSHIM_SHARED_MODE": "0644"})):
            with self.subTest(args=args):
                line = self.one_line_error(args, 2, pattern, env=self.env(extra))
                self.assertTrue(line.startswith("mcshim-stats: "), line)
                self.assertIn("usage: mcshim-stats", line)

    def test_help(self):
        for args in (["--help"], ["-h"]):
            p = subprocess.run([WRAPPER] + args, env=self.env(), capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, 0)
            self.assertIn("usage: mcshim -s", p.stdout)
            self.assertIn("mcshim stats [--json|--prometheus] [--watch[=SECONDS]] [--file PATH]", p.stdout)
        p = subprocess.run([WRAPPER, "stats", "--help"], env=self.env(), capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(p.stdout.startswith("usage: mcshim-stats [--json|--prometheus]"), p.stdout)

    # ---- watch, install ----

    def test_watch_redraws_and_follows_a_replaced_segment(self):
        """--watch: replaced (renamed over, as the library does), cut short under the mapping
        (SIGBUS: an error line, not a crash), removed, made again: it follows each."""
        self.segwrite(self.seg, "server", "127.0.0.1:6")
        p = subprocess.Popen([WRAPPER, "stats", "--watch=0.1", "--json", "--file", self.seg], env=self.env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            time.sleep(harness.scaled(0.6))
            fresh = os.path.join(self.tmp, "fresh.seg")
            self.segwrite(fresh, "server", "127.0.0.1:7")
            os.rename(fresh, self.seg)
            time.sleep(harness.scaled(0.6))
            os.truncate(self.seg, 4096)
            time.sleep(harness.scaled(0.4))
            os.unlink(self.seg)
            time.sleep(harness.scaled(0.4))
            self.segwrite(self.seg, "server", "127.0.0.1:8")
            time.sleep(harness.scaled(0.6))
            self.assertIsNone(p.poll(), "--watch stopped")
        finally:
            p.terminate()   # SIGINT may be ignored when the tests run in a background job
            out, err = p.communicate(timeout=harness.scaled(10))
        frames = out.decode().split(CLEAR)
        self.assertEqual(frames[0], "")
        seen = []
        for f in frames[1:]:
            if f:
                seen += [s["server"] for s in json.loads(f)["servers"]]
        self.assertGreater(len(frames), 10, "frames every 0.1 s")
        self.assertEqual([s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s],
                         ["127.0.0.1:6", "127.0.0.1:7", "127.0.0.1:8"])
        errors = err.decode().splitlines()
        kinds = ["was cut short while it was read", "is 4096 bytes, not a segment", "cannot open .*: No such file"]
        for line in errors:
            self.assertTrue(any(re.search("^MCSHIM_SHARED: .*" + k, line) for k in kinds), line)
        for k in kinds:
            self.assertTrue(any(re.search(k, line) for line in errors), "no %r in %s" % (k, errors))
        self.assertEqual(len([l for l in errors if "cut short" in l]), 1, errors)

    def test_watch_table_and_prometheus(self):
        self.segwrite(self.seg, "server", "127.0.0.1:9")
        for fmt in ([], ["--prometheus"]):
            p = subprocess.Popen([WRAPPER, "stats", "--watch"] + fmt + ["--file", self.seg], env=self.env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            time.sleep(harness.scaled(1.5))
            p.terminate()
            out, err = p.communicate(timeout=harness.scaled(10))
            frames = out.split(CLEAR.encode())[1:]
            self.assertIn(len(frames), range(2, int(harness.scaled(1.5)) + 3),
                          "about one frame a second (the default): %d" % len(frames))
            for f in frames:
                if fmt:
                    parse_prometheus(f)
                else:
                    self.assertTrue(f.startswith(b"mcshim stats: "), f)

    def test_installed_layout(self):
        """make install: PREFIX/bin/mcshim (LIBDIR filled in), PREFIX/lib/mcshim/mcshim-stats."""
        self.segwrite(self.seg, "server", "127.0.0.1:10")
        prefix = os.path.join(self.tmp, "prefix")
        os.makedirs(os.path.join(prefix, "bin"))
        os.makedirs(os.path.join(prefix, "lib", "mcshim"))
        installed = os.path.join(prefix, "bin", "mcshim")
        with open(WRAPPER) as f:
            text = "\n".join(re.sub("@LIBDIR@", prefix + "/lib", line, count=1) for line in f.read().split("\n"))
        with open(installed, "w") as f:
            f.write(text)
        os.chmod(installed, 0o755)
        env = self.env()
        del env["MCSHIM_LIB"]
        p = subprocess.run([installed, "stats", "--file", self.seg], env=env, capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(p.returncode, 2)
        self.assertEqual(p.stderr, "mcshim: mcshim-stats not found in %s/lib or %s/lib/mcshim (build it with make, "
                         "or set MCSHIM_LIB)\n" % (prefix, prefix))
        os.symlink(harness.LIB, os.path.join(prefix, "lib", "libmcshim.so"))
        os.symlink(STATS_BIN, os.path.join(prefix, "lib", "mcshim", "mcshim-stats"))
        p = subprocess.run([installed, "stats", "--json", "--file", self.seg], env=env, capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual([s["server"] for s in json.loads(p.stdout)["servers"]], ["127.0.0.1:10"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
