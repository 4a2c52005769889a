"""memcached's own test suite through the shim.

The t/*.t files of the installed memcached (1.6.18) come from Debian's source package
(scripts/memcached-suite: deb-src for the configured Debian mirror, `apt-get source`,
cached in build/memcached-suite/; never kept in the repository). Each covered file runs
twice, with memcached_suite/ShimMemcached.pm loaded before it:

- direct: the stock new_memcached() of t/lib/MemcachedTest.pm starts one memcached;
- shim: perl runs under LD_PRELOAD=libmcshim.so, and new_memcached() returns a handle
  on the intercept address (where nothing listens) while 4 real memcached servers,
  started here with the file's arguments, are MCSHIM_SERVERS.

Both outputs are read as TAP. Every subtest that passes direct must pass through the
shim, except the entries of ALLOWED, each a difference inherent to a router in front of
4 servers. An ALLOWED entry that passes through the shim fails the test too, so the
list stays as short as it is honest.
"""
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
import unittest

import harness

SUITE_SCRIPT = os.path.join(harness.ROOT, "scripts", "memcached-suite")
PERL_LIB = os.path.join(harness.HERE, "memcached_suite")
PERL = "/usr/bin/perl"
# One run of one file, before the time scale (the slowest, binary.t, takes ~30 s: sleeps).
RUN_TIMEOUT = 90
# MCSHIM_TEST_SUITE_FILES=cas.t,getset.t: run only these files (debugging); the others skip.
ONLY = [f.strip() for f in os.environ.get("MCSHIM_TEST_SUITE_FILES", "").split(",") if f.strip()]

# Covered files: the arguments their first new_memcached() passes, which the pool's 4
# servers are started with. Arguments the file passes to later calls are served by the
# same pool (ShimMemcached.pm notes them); subtests that depend on them are in ALLOWED.
FILES = {
    "getset.t": "-m 128",
    "binary.t": "-o no_modern",
    "binary-get.t": "",
    "chunked-items.t": "-m 48 -o slab_chunk_max=16384",
    "cas.t": "",
    "incrdecr.t": "",
    "noreply.t": "",
    "flags.t": "",
    "flush-all.t": "",
    "touch.t": "",
    "getandtouch.t": "",
    "metaget.t": "",
    "multiversioning.t": "",
    "malicious-commands.t": "",
    "bogus-commands.t": "",
    "quit.t": "",
    "strtol-testing.t": "",
    "issue_104.t": "",
    "issue_108.t": "",
    "issue_14.t": "",
    "issue_140.t": "",  # skip_all upstream ("Fix for Issue 140 was only an illusion")
    "issue_152.t": "",
    "issue_163.t": "",
    "issue_183.t": "-o no_modern",
    "issue_192.t": "",
    "issue_22.t": "-m 3",
    "issue_260.t": "",  # skip_all upstream ("only possible under artificial conditions")
    "issue_29.t": "",
    "issue_3.t": "",
    "issue_41.t": "",
    "issue_42.t": "-o no_modern",
    # The file asks for '-B binary' (the listener accepts only binary) and sends text
    # garbage. Behind the shim the protocol is told per application connection and the
    # shim's own probes are text, so the pool runs with the default (-B auto).
    "issue_50.t": "",
    "issue_61.t": "-R 1",
    "issue_68.t": "",
    "issue_70.t": "",
}

# Files that cannot run behind a router, and why. Every t/*.t of the source package is
# either covered above or listed here (checked), so a new upstream file is not missed.
EXCLUDED = {
    "00-startup.t": "memcached's command line: bad -l/-B/-c/-t values must stop it, -vv output",
    "64bit.t": "-m 4098 and T_MEMD_INITIAL_MALLOC: one server's memory limit, read back from stats",
    "ascii-auth.t": "-Y authfile: the server's own text-protocol authentication",
    "binary-extstore.t": "extstore (-o ext_path): one server's flash storage, its stats",
    "binary-sasl.t": "-S: SASL on the server connection (and skip_all in this build)",
    "chunked-extstore.t": "extstore (-o ext_path)",
    "conn-limits.t": "-o read_buf_mem_limit -t 32 -R 500: one server's per-connection memory limits",
    "daemonize.t": "-d -P pidfile: daemon mode",
    "dash-M.t": "-M -m 2: one server's out-of-memory errors at its exact memory limit",
    "dyn-maxbytes.t": "cache_memlimit command and slab automove on a 3 MB server, read from stats",
    "error-extstore.t": "extstore (-o ext_path)",
    "evictions.t": "-m 3: evictions of one server, counted in its stats",
    "expirations.t": "debugtime (memcached's debug build only; fails direct on Debian's binary too)",
    "extstore-buckets.t": "extstore (-o ext_path)",
    "extstore-jbod.t": "extstore (-o ext_path)",
    "extstore.t": "extstore (-o ext_path)",
    "idle-timeout.t": "-o idle_timeout: the server closes idle connections (the shim keeps its own)",
    "issue_67.t": "starts memcached itself with -p/-U port options (fixed ports, 11211 among them) "
                  "and reads its port file",
    "item_size_max.t": "-I and slab_chunk_max at start-up: one server's item size limit and its stats",
    "line-lengths.t": "checks doc/protocol.txt line lengths, starts no server",
    "lru-crawler.t": "lru_crawler commands and their stats: one server's LRU internals",
    "lru-maintainer.t": "lru_maintainer/lru_crawler: one server's LRU segments, read from stats",
    "lru.t": "LRU bumps on a -o no_modern server, read from stats items/slabs",
    "maxconns.t": "1024 connections to hit one server's connection limit, its rejected_conns stat; extstore",
    "misbehave.t": "-o drop_privileges: seccomp in the server (skip_all in this build)",
    "proxy.t": "memcached's own proxy mode (skip_all: not built) on fixed port 11211",
    "refhang.t": "skip_all upstream (needs special hooks); -m 6 slab internals",
    "restart.t": "-e memory file and graceful restart of the server",
    "shutdown.t": "-A and the shutdown command stop the server process",
    "slabhang.t": "skip_all upstream (needs special hooks); slab internals",
    "slabs-reassign-chunked.t": "slab reassign/automove of one server, read from stats",
    "slabs-reassign2.t": "slab reassign/automove of one server, read from stats",
    "slabs_reassign.t": "slabs reassign commands on a 4 MB server",
    "ssl_cert_refresh.t": "TLS (-Z) on the server's listener",
    "ssl_ports.t": "TLS (-Z) on the server's listener",
    "ssl_proto_version.t": "TLS (-Z) on the server's listener",
    "ssl_session_resumption.t": "TLS (-Z) on the server's listener",
    "ssl_settings.t": "TLS (-Z) on the server's listener",
    "ssl_verify_modes.t": "TLS (-Z) on the server's listener",
    "stats-conns.t": "stats conns: one server's connection table, addresses and ports",
    "stats-detail.t": "stats detail on/dump: one server's per-prefix statistics",
    "stats.t": "the full stats/stats settings/stats slabs/stats items output of one server",
    "udp.t": "UDP protocol (the shim intercepts stream sockets only)",
    "unixsocket.t": "-s: the server's unix socket listener (these runs are over TCP: ShimMemcached.pm "
                    "reports no unix socket support, which this file does not expect)",
    "watcher.t": "watch command: one server's log stream",
    "watcher_connid.t": "watch command: one server's log stream and connection ids",
    "whitespace.t": "checks the source tree with git, starts no server",
}

# Files whose subtest numbers depend on how many packets a reply has: binary.t reads a
# binary `stat` reply with one checked packet per statistic (three subtests each), and the
# shim's own stats are fewer than a server's, so every later number shifts. Their subtests
# are matched by description and occurrence instead; the helper checks of every packet
# read (these descriptions) are not matched by count, but any of them failing through the
# shim is still a difference.
BY_NAME = {
    "binary.t": {"Expected read length", "Got proper response magic", "Expected opaque",
                 "Implicit pass since myopaque is undefined"},
}

# Files whose keys spread over the whole pool (its servers are named, so placement is
# fixed): each of the 4 servers must have served some of their requests.
SPREAD = ["binary.t", "chunked-items.t", "getset.t", "issue_14.t", "issue_22.t", "issue_41.t", "issue_42.t",
          "issue_68.t", "metaget.t"]

# Subtests that pass direct and fail through the shim for a reason inherent to a router
# in front of 4 servers: (file, subtest number), or (file, description) for a BY_NAME
# file, -> why. A difference caused by a shim bug does not belong here.
STATS_SUB = ("`stats %s` is one server's view of its slab classes; behind a router there is no one "
             "server, and the shim answers ERROR (docs/protocol.md)")
STATS_OWN = ("`stats` through the shim has the shim's own counters (docs/protocol.md); "
             "'%s' is one server's internals")
ALLOWED = {
    # The file's later servers: new_memcached('-F') (flush_all disabled) and
    # new_memcached('-C') (no CAS); the pool keeps the file's first arguments.
    ("flush-all.t", 25): "asks a server started with -F (flush_all disabled)",
    ("flush-all.t", 26): "asks a server started with -F (flush_all disabled)",
    ("flush-all.t", 27): "asks a server started with -C (no CAS: flush_all less exact)",
    ("issue_163.t", 4): STATS_SUB % "items",
    ("issue_183.t", 2): STATS_OWN % "reclaimed",
    ("issue_183.t", 5): STATS_OWN % "reclaimed",
    ("issue_22.t", 43): STATS_SUB % "items",
    ("issue_22.t", 84): STATS_SUB % "items",
    ("issue_29.t", 2): STATS_SUB % "slabs",
    ("issue_29.t", 4): STATS_SUB % "slabs",
    ("issue_42.t", 11): STATS_SUB % "slabs/items",
    # -B binary: a listener that closes a connection at its first non-binary byte. The shim
    # tells the protocol from the application connection's first byte; text garbage without
    # a newline waits for one, as on a -B auto server, and the test's 2 s alarm kills perl.
    ("issue_50.t", 1): "asks for a binary-only listener (-B binary); the shim accepts both protocols",
    ("issue_61.t", 7): STATS_OWN % "conn_yields",
    # The extstore block: new_memcached('... -o ext_path=...'), 1000 values of 100 kB to
    # push items to flash and evict from memory, then extstore counters. The pool has no
    # extstore and 4 x 64 MB of memory.
    ("metaget.t", 150): "extstore: stats get_extstore of a server started with -o ext_path",
    ("metaget.t", 151): "extstore: mfoo1 evicted from a 64 MB extstore server; the pool holds it",
    ("metaget.t", 152): "extstore: mfoo1 evicted from a 64 MB extstore server; the pool holds it",
    ("metaget.t", 153): "extstore: stats miss_from_extstore of a server started with -o ext_path",
    # `slabs automove` configures one server's slab mover; the shim does not forward slab
    # admin commands ("anything else: ERROR", docs/protocol.md).
    ("strtol-testing.t", 2): "`slabs automove invalid`: one server's slab admin; the shim answers ERROR",
}

OK_LINE = re.compile(r"^(not )?ok (\d+)(.*)$")
PLAN_LINE = re.compile(r"^1\.\.(\d+)(?:\s*#\s*(?i:skip)\b(.*))?")


class Tap:
    """The TAP output of one run: plan, and each subtest's number, result and description."""

    def __init__(self, out, rc, seconds, timed_out, err):
        self.out = out
        self.rc = rc
        self.seconds = seconds
        self.timed_out = timed_out
        self.err = err
        self.plan = None
        self.skip_all = None
        self.tests = []  # (number, passed, description) in output order
        for line in out.splitlines():
            m = PLAN_LINE.match(line)
            if m and self.plan is None:
                self.plan = int(m.group(1))
                self.skip_all = m.group(2)
                continue
            m = OK_LINE.match(line)
            if not m:
                continue
            rest = m.group(3)
            todo = re.search(r"\s#\s*TODO\b", rest, re.I)
            desc = re.sub(r"\s#\s*(TODO|SKIP)\b.*$", "", rest, flags=re.I).strip()
            desc = desc[2:] if desc.startswith("- ") else desc
            self.tests.append((int(m.group(2)), not m.group(1) or bool(todo), desc))
        self.passed = {n for n, ok, _d in self.tests if ok}
        self.names = {n: d for n, _ok, d in self.tests}

    @property
    def complete(self):
        """Ran to its end: a plan (or skip_all), every planned subtest reported, no timeout."""
        if self.timed_out or self.plan is None:
            return False
        return self.skip_all is not None or len(self.tests) == self.plan

    def by_name(self, generic):
        """{(description, occurrence): passed} for the descriptions not in generic."""
        seen = {}
        res = {}
        for _n, ok, desc in self.tests:
            if desc in generic:
                continue
            k = seen.get(desc, 0)
            seen[desc] = k + 1
            res[(desc, k)] = ok
        return res

    def summary(self):
        if self.skip_all is not None:
            return "skip_all"
        return "%d/%s" % (len(self.passed), self.plan if self.plan is not None else "?")

    def ending(self):
        return "timed out after %.0fs" % self.seconds if self.timed_out else "exit %s" % self.rc

    def excerpt(self, n, lines=10):
        """The `not ok n` line and the diagnostics after it (they go to stderr: its lines
        for that subtest), or a note that the run never reported it."""
        for num, ok, desc in self.tests:
            if num == n:
                text = "%s %d - %s" % ("ok" if ok else "not ok", n, desc)
                diag = _diag_for(self.err, desc)
                return text + ("\n" + diag if diag else "")
        return "(not reported: the run ended after %d subtests, %s)" % (len(self.tests), self.ending())


def _diag_for(err, desc, lines=8):
    """Test::More's diagnostics in err for the first failure named desc (or unnamed)."""
    out = err.splitlines()
    want = "#   Failed test '%s'" % desc if desc else "#   Failed test at "
    for i, line in enumerate(out):
        if line.startswith(want):
            return "\n".join(l[:300] for l in out[i:i + lines])
    return ""


def _short(x, n=100):
    x = str(x)
    return x if len(x) <= n else x[:n - 3] + "..."


def run_perl(tree, name, env, timeout):
    """Runs t/<name> with ShimMemcached.pm from the source tree; returns a Tap.

    perl and whatever it starts (the direct run's memcached) are one new process group,
    killed as a whole afterwards: output goes to files, so a memcached still exiting does
    not hold a pipe open."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.time()
        proc = subprocess.Popen([PERL, "-I" + PERL_LIB, "-It/lib", "-MShimMemcached", os.path.join("t", name)],
                                cwd=tree, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True)
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        seconds = time.time() - start
        out.seek(0)
        err.seek(0)
        return Tap(out.read().decode(errors="replace"), proc.returncode, seconds, timed_out,
                   err.read().decode(errors="replace"))


def suite_tree():
    """The unpacked memcached source (fetched once, then from build/memcached-suite/)."""
    p = subprocess.run([SUITE_SCRIPT], capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise AssertionError("scripts/memcached-suite failed (%d): %s" % (p.returncode, p.stderr[-3000:]))
    tree = p.stdout.strip().splitlines()[-1]
    if not os.path.isfile(os.path.join(tree, "t", "lib", "MemcachedTest.pm")):
        raise AssertionError("scripts/memcached-suite printed %r, which has no t/lib/MemcachedTest.pm" % tree)
    return tree


def differences(name, direct, shim):
    """(regressions, stale): subtests that pass direct and not through the shim and are
    not in ALLOWED, as (identity, description, excerpt) tuples; and ALLOWED entries of
    this file that pass through the shim (or are not passing direct)."""
    regressions = []
    if name in BY_NAME:
        generic = BY_NAME[name]
        allowed = {d for f, d in ALLOWED if f == name}
        d_map, s_map = direct.by_name(generic), shim.by_name(generic)
        s_num = {}
        seen = {}
        for n, _ok, desc in shim.tests:
            if desc not in generic:
                s_num[(desc, seen.get(desc, 0))] = n
                seen[desc] = seen.get(desc, 0) + 1
        for key, ok in d_map.items():
            if ok and not s_map.get(key) and key[0] not in allowed:
                n = s_num.get(key)
                regressions.append(("%r #%d" % key, key[0], shim.excerpt(n) if n else shim.excerpt(-1)))
        for n, ok, desc in shim.tests:
            if desc in generic and not ok:
                regressions.append((n, desc, shim.excerpt(n)))
        stale = sorted(d for d in allowed
                       if not any(ok for (dd, _k), ok in d_map.items() if dd == d)
                       or all(s_map.get(k) for k, ok in d_map.items() if k[0] == d and ok))
        return regressions, stale
    allowed = {n for f, n in ALLOWED if f == name}
    for n in sorted(direct.passed - shim.passed - allowed):
        regressions.append((n, direct.names.get(n, ""), shim.excerpt(n)))
    stale = sorted(n for n in allowed if n in shim.passed or n not in direct.passed)
    return regressions, stale


# Servers are started one thread at a time: free_port() is free only until someone binds it.
_START_LOCK = threading.Lock()


def shim_run(tree, name, timeout):
    """Runs t/<name> through the shim over 4 fresh servers started with the file's
    arguments; returns a Tap."""
    args = FILES[name]
    cluster = harness.Cluster(0)
    try:
        with _START_LOCK:
            for _ in range(4):
                cluster.nodes.append(harness.Memcached(extra=args.split()))
        # Named servers: the ring is built from the names, so which keys share a server
        # does not depend on the free ports this run got.
        servers = ",".join("%s:1 mc%d" % (m.addr, i + 1) for i, m in enumerate(cluster.nodes))
        intercept = "127.0.0.1:%d" % harness.free_port()
        env = harness.preload_env(servers, intercept, {
            "MCSHIM_TEST_SUITE_INTERCEPT": intercept,
            "MCSHIM_TEST_SUITE_ARGS": args,
        })
        tap = run_perl(tree, name, env, timeout)
        # Requests each server of the pool served (their own counters), to see the run
        # really went over the pool.
        tap.served = []
        for m in cluster.nodes:
            st = m.stats()
            tap.served.append(sum(int(st.get(k, 0)) for k in ("cmd_get", "cmd_set", "cmd_touch", "delete_hits",
                                                               "delete_misses", "incr_hits", "incr_misses",
                                                               "decr_hits", "decr_misses")))
        return tap
    finally:
        cluster.stop()


@unittest.skipIf(harness.DIRECT, "compares direct and shim runs itself (MCSHIM_TEST_DIRECT=1)")
class MemcachedSuiteTest(unittest.TestCase):
    """One test per covered file. Every run (direct and through the shim) is started
    from setUpClass on a few worker threads, the slowest files first: most of their time
    is sleeping (expiry tests), so runs overlap well. Each test waits for its two runs."""

    results = []  # (file, direct Tap, shim Tap) for the table printed at the end
    workers_n = 4
    slow_first = ["chunked-items.t", "binary.t", "metaget.t", "getset.t", "issue_41.t", "flush-all.t",
                  "issue_14.t"]

    @classmethod
    def setUpClass(cls):
        if not os.path.exists(harness.LIB):
            raise AssertionError("%s is not built (make all, or set MCSHIM_BUILD)" % harness.LIB)
        cls.tree = suite_tree()
        cls.timeout = harness.scaled(RUN_TIMEOUT)
        order = cls.slow_first + sorted(f for f in FILES if f not in cls.slow_first)
        order = [f for f in order if not ONLY or f in ONLY]
        cls.jobs = [(kind, name) for name in order for kind in ("shim", "direct")]
        cls.done = {job: threading.Event() for job in cls.jobs}
        cls.runs = {}
        cls.lock = threading.Lock()
        cls.workers = [threading.Thread(target=cls._worker, daemon=True) for _ in range(cls.workers_n)]
        for w in cls.workers:
            w.start()

    @classmethod
    def _worker(cls):
        env = harness.plain_env()
        for k in ("MCSHIM_TEST_SUITE_INTERCEPT", "MCSHIM_TEST_SUITE_ARGS"):
            env.pop(k, None)  # the direct run uses the stock new_memcached()
        while True:
            with cls.lock:
                if not cls.jobs:
                    return
                job = cls.jobs.pop(0)
            kind, name = job
            try:
                if kind == "direct":
                    cls.runs[job] = run_perl(cls.tree, name, env, cls.timeout)
                else:
                    cls.runs[job] = shim_run(cls.tree, name, cls.timeout)
            except Exception as e:  # reported by the file's test
                cls.runs[job] = e
            cls.done[job].set()

    @classmethod
    def tearDownClass(cls):
        with cls.lock:
            cls.jobs[:] = []
        for w in cls.workers:
            w.join()
        if cls.results:
            print("\nmemcached %s test files, subtests passed/planned:" % os.path.basename(cls.tree))
            for name, d, s in sorted(cls.results):
                print("  %-22s direct %-12s shim %-12s %5.1fs %5.1fs  served %s" % (
                    name, d.summary(), s.summary(), d.seconds, s.seconds, getattr(s, "served", "?")))

    def test_every_file_is_covered_or_excluded(self):
        files = sorted(f for f in os.listdir(os.path.join(self.tree, "t")) if f.endswith(".t"))
        unknown = [f for f in files if f not in FILES and f not in EXCLUDED]
        self.assertEqual(unknown, [], "t/ files neither covered (FILES) nor excluded (EXCLUDED)")
        both = sorted(set(FILES) & set(EXCLUDED))
        self.assertEqual(both, [], "files both covered and excluded")
        gone = sorted(f for f in list(FILES) + list(EXCLUDED) if f not in files)
        self.assertEqual(gone, [], "listed files missing from the source package")
        self.assertEqual(sorted({f for f, _n in ALLOWED} - set(FILES)), [], "ALLOWED names an uncovered file")
        self.assertEqual(sorted(set(SPREAD) - set(FILES)), [], "SPREAD names an uncovered file")
        for f, key in ALLOWED:
            self.assertIsInstance(key, str if f in BY_NAME else int, "ALLOWED key (%r, %r)" % (f, key))

    def run_file(self, name):
        if ONLY and name not in ONLY:
            self.skipTest("not in MCSHIM_TEST_SUITE_FILES")
        res = []
        for kind in ("direct", "shim"):
            self.done[(kind, name)].wait()
            run = self.runs[(kind, name)]
            if isinstance(run, Exception):
                raise run
            res.append(run)
        direct, shim = res
        self.results.append((name, direct, shim))
        self.compare(name, direct, shim)

    def compare(self, name, direct, shim):
        # The direct run is the reference: it must be a complete, passing run.
        self.assertTrue(direct.complete and direct.rc == 0 and len(direct.passed) == len(direct.tests),
                        "%s direct: %s, %s passed\n%s\n%s" % (
                            name, direct.ending(), direct.summary(), direct.out[-2000:], direct.err[-2000:]))
        if direct.skip_all is not None:
            self.assertEqual(shim.skip_all, direct.skip_all, "%s: skip_all direct, not through the shim" % name)
            return
        regressions, stale = differences(name, direct, shim)
        msg = []
        if name not in BY_NAME and shim.plan != direct.plan:
            msg.append("%s: planned %s through the shim, %s direct" % (name, shim.plan, direct.plan))
        if regressions:
            failed = [r for r in regressions if not r[2].startswith("(not reported")]
            missing = [r for r in regressions if r[2].startswith("(not reported")]
            msg.append("%s: %d subtest(s) pass direct but not through the shim (%s, %.1fs, %s):" % (
                name, len(regressions), shim.ending(), shim.seconds,
                "ran to its end" if shim.complete else "ended after %d subtests" % len(shim.tests)))
            for ident, desc, excerpt in failed[:15]:
                msg.append("  [%s] %s\n    %s" % (_short(ident), _short(desc), excerpt.replace("\n", "\n    ")))
            if len(failed) > 15:
                msg.append("  ... and %d more failed: %s" % (
                    len(failed) - 15, ", ".join(_short(r[0], 40) for r in failed[15:45])))
            if missing:
                msg.append("  %d never reported through the shim (the run ended first), from: %s" % (
                    len(missing), ", ".join(_short(r[0], 50) for r in missing[:5])))
        if name in SPREAD and not all(shim.served):
            msg.append("%s: requests served by the pool's servers: %s; expected all 4 to serve some" % (
                name, shim.served))
        if msg and shim.err.strip():
            tail = [l[:300] for l in shim.err.splitlines()[-25:]]
            msg.append("stderr of the shim run (last lines):\n  " + "\n  ".join(tail))
        if stale:
            msg.append("%s: ALLOWED entries that no longer differ (remove them): %s" % (name, stale))
        if msg:
            self.fail("\n".join(msg))


def _add_file_tests():
    for name in FILES:
        def test(self, name=name):
            self.run_file(name)
        test.__name__ = "test_" + re.sub(r"\W", "_", name[:-2])
        test.__doc__ = "t/%s through the shim over 4 servers vs direct" % name
        setattr(MemcachedSuiteTest, test.__name__, test)


_add_file_tests()


if __name__ == "__main__":
    unittest.main()
