"""The host, not the process: server health, the probe and the log of missed writes
are shared by the shim processes of a host through the state segment (MCSHIM_SHARED).

Real memcached servers (3 primaries and a backup pool of 1, so every key has a copy),
real application processes (pymemcache under LD_PRELOAD, clients/shared_worker.py; the
C client tests/tools/mclat.c for the kill -9 loop), one segment file per test.

- one detection serves the host: 16 processes take turns on a frozen server's keys;
  at most 2 requests over the whole host wait, and a process started afterwards waits
  for none;
- recycled writers: processes that wrote and deleted keys during a cut have exited
  when the server comes back; new processes read no stale value and no deleted key
  (and the same scenario without sharing does read stale values: the test can fail);
- kill -9 of processes in a loop while others use the segment: it stays usable,
  `mcshim stats` lists live processes only, no process hangs; a process that lives
  less than a second is counted, and gives its slot back at exit;
- random bytes written over the segment while processes run: no crash, no wrong
  answer; the next process rebuilds it;
- a segment with the wrong mode, owner or a symlink is refused (one line) and the
  process runs on its own state.
"""
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
import unittest

import cutproxy
import harness

WORKER = os.path.join(harness.HERE, "clients", "shared_worker.py")
TIMEOUT_MS = 300
SLOW_S = TIMEOUT_MS / 1000.0 / 2   # "waited": longer than half the timeout
STATS_TOOL = os.path.join(harness.ROOT, "scripts", "mcshim")


class Worker:
    """One application process (shared_worker.py) under the shim."""

    def __init__(self, env, intercept):
        self.proc = subprocess.Popen(["/usr/bin/python3", WORKER, intercept], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)

    def cmd(self, line, timeout=10.0):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], harness.scaled(timeout))
        if not ready:
            raise AssertionError("worker %d did not answer %r within %ss" % (self.proc.pid, line, timeout))
        out = self.proc.stdout.readline()
        if not out:
            raise AssertionError("worker %d exited on %r: %s" % (self.proc.pid, line, self.stderr()))
        return json.loads(out)

    def stderr(self):
        self.stop(keep_stderr=True)
        text = self.proc.stderr.read()
        self.proc.stderr.close()
        return text

    def stop(self, keep_stderr=False):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=harness.scaled(10))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout) + (() if keep_stderr else (self.proc.stderr,)):
            if not f.closed:
                f.close()


@unittest.skipIf(harness.DIRECT, "the host-wide segment is the shim's")
class SharedStateTest(unittest.TestCase):

    def setUp(self):
        if not os.path.exists(harness.LIB):
            raise AssertionError("%s is not built" % harness.LIB)
        # primary 0 (the victim) behind a cut proxy: a partition keeps its data
        self.victim = harness.Memcached()
        self.proxy = cutproxy.CutProxy(self.victim.host, self.victim.port)
        self.others = harness.Cluster(2)
        self.backup = harness.Cluster(1)
        self.servers = ",".join([self.proxy.addr] + [m.addr for m in self.others.nodes])
        self.intercept = "127.0.0.1:%d" % harness.free_port()
        self.seg = harness.segment_path(self.servers, self.id())
        self.workers = []

    def tearDown(self):
        for w in self.workers:
            w.stop()
        self.proxy.close()
        self.victim.stop()
        self.others.stop()
        self.backup.stop()
        if os.path.exists(self.seg):
            os.unlink(self.seg)

    def env(self, extra=None):
        e = {"MCSHIM_BACKUP": self.backup.servers, "MCSHIM_TIMEOUT_MS": str(TIMEOUT_MS),
             "MCSHIM_RETRY_MS": "500", "MCSHIM_WARMUP_S": "60", "MCSHIM_SHARED": self.seg}
        e.update(extra or {})
        return harness.preload_env(self.servers, self.intercept, e)

    def worker(self, extra=None):
        w = Worker(self.env(extra), self.intercept)
        self.workers.append(w)
        return w

    def keys_of(self, index, n, prefix):
        """n keys whose primary is server `index` of self.servers (0: the victim)."""
        cands = ["%s-%d" % (prefix, i) for i in range(n * 8)]
        owners = harness.ring_owner(self.servers, cands)
        keys = [k for k, o in zip(cands, owners) if o == index][:n]
        self.assertEqual(len(keys), n)
        return keys

    def seed(self, keys, value):
        """Sets keys through the shim and waits for their copies on the backup."""
        w = self.worker()
        for k in keys:
            r = w.cmd("set %s %s" % (k, value))
            self.assertTrue(r["ok"], r)
        ok = harness.wait_until(lambda: all(self.backup.nodes[0].get(k) == value.encode() for k in keys), 5.0)
        self.assertTrue(ok, "copies on the backup")
        w.stop()

    def stats(self, fmt="--json"):
        out = subprocess.run([STATS_TOOL, "stats"] + ([fmt] if fmt else []) + ["--file", self.seg],
                             capture_output=True, text=True,
                             env=dict(os.environ, MCSHIM_LIB=harness.LIB), timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        return json.loads(out.stdout) if fmt == "--json" else out.stdout

    # ---- one detection serves the host ----

    def test_one_detection_serves_the_host(self):
        keys = self.keys_of(0, 66, "frozen")
        self.seed(keys, "v1")
        workers = [self.worker() for _ in range(16)]
        for i, w in enumerate(workers):   # every process has used the server before it freezes
            r = w.cmd("get %s" % keys[i])
            self.assertEqual(r["value"], "v1", r)
        self.victim.pause()
        slow = []
        gap = 1.2 * TIMEOUT_MS / 1000.0
        for i, w in enumerate(workers):
            start = time.monotonic()
            r = w.cmd("get %s" % keys[i])
            self.assertIsNone(r["error"], r)
            self.assertEqual(r["value"], "v1", "worker %d, key %s: %r" % (i, keys[i], r))
            if r["elapsed"] > SLOW_S:
                slow.append((i, round(r["elapsed"], 3)))
            time.sleep(max(0.0, gap - (time.monotonic() - start)))
        print("\nmeasured: 16 processes in turn on a frozen server's keys: %d waited over %.0f ms %s"
              % (len(slow), SLOW_S * 1000, slow), file=sys.stderr)
        self.assertLessEqual(len(slow), 2, "requests that waited (worker, seconds): %s" % slow)
        late = self.worker()
        waited = []
        for k in keys[16:66]:
            r = late.cmd("get %s" % k)
            self.assertEqual(r["value"], "v1", r)
            if r["elapsed"] > SLOW_S:
                waited.append((k, round(r["elapsed"], 3)))
        self.assertEqual(waited, [], "a process started after the detection waited")
        view = self.stats()
        frozen = [s for s in view["servers"] if s["server"] == self.proxy.addr]
        self.assertEqual(len(frozen), 1, view)
        self.assertEqual(frozen[0]["state"], "down", frozen)
        self.assertLessEqual(frozen[0]["counters"]["downs"], 2, frozen)
        self.victim.resume()

    # ---- the outside view against the servers' own counters ----

    def test_stats_match_the_servers_counters(self):
        """Requests the host sent to each server, as `mcshim stats` shows them in its three
        formats, against what each memcached counted (cmd_get + cmd_set; plus the one
        `stats` each process sends a server on first contact, to know its instance)."""
        workers = [self.worker() for _ in range(3)]
        for i in range(90):
            w = workers[i % 3]
            self.assertTrue(w.cmd("set sm-%d v%d" % (i, i))["ok"])
            self.assertEqual(w.cmd("get sm-%d" % (i * 7 % 90))["value"], None if i * 7 % 90 > i else "v%d" % (i * 7 % 90))
        nodes = {self.proxy.addr: self.victim, self.backup.nodes[0].addr: self.backup.nodes[0]}
        nodes.update({m.addr: m for m in self.others.nodes})

        def own(m):
            st = dict(line.split()[1:3] for line in m.request(b"stats\r\n").decode().splitlines()
                      if line.startswith("STAT "))
            return int(st["cmd_get"]) + int(st["cmd_set"])

        want = {addr: own(m) + len(workers) for addr, m in nodes.items()}
        self.assertEqual(sum(want.values()) - len(want) * len(workers), 90 * 2 + 90,
                         "sets (primary and backup) and gets")

        def shown():
            return {s["server"]: s["counters"]["requests"] for s in self.stats()["servers"]}
        harness.wait_until(lambda: shown() == want, 5.0, interval=0.2)   # counters arrive every second
        self.assertEqual(shown(), want)
        prom = self.stats("--prometheus")
        for addr, n in want.items():
            self.assertIn('mcshim_server_requests_total{server="%s"} %d\n' % (addr, n), prom)
        table = self.stats("")
        rows = [line.split() for line in table.splitlines()]
        header = [r for r in rows if r[:2] == ["SERVER", "requests"]]
        self.assertEqual(len(header), 1, table)
        for addr, n in want.items():
            row = [r for r in rows if r and r[0] == addr and len(r) == len(header[0])]
            self.assertEqual(len(row), 1, table)
            self.assertEqual(int(row[0][1]), n, table)
        listed = sorted(p["pid"] for p in self.stats()["processes"])
        self.assertEqual(listed, sorted(w.proc.pid for w in workers))
        self.assertEqual(sum(p["requests"] for p in self.stats()["processes"]), 180)

    def test_a_process_shorter_than_a_second_is_counted_and_leaves_no_slot(self):
        """A process that exits (normally) before its first heartbeat: its requests are in
        the host's counters as soon as it is gone, and its slot is given back at exit
        rather than left for the others to reclaim."""
        w = self.worker()
        for i in range(20):
            self.assertTrue(w.cmd("set short-%d v" % i)["ok"])
        w.stop()   # stdin closed: the worker returns from main, well within a second
        self.assertEqual(w.proc.returncode, 0)
        st = self.stats()
        self.assertEqual(st["processes"], [], "the exited process gave its slot back")
        primaries = sum(s["counters"]["requests"] for s in st["servers"] if s["server"] != self.backup.nodes[0].addr)
        backup = [s["counters"]["requests"] for s in st["servers"] if s["server"] == self.backup.nodes[0].addr]
        # 20 sets on their primaries (+1 identifying stats per server contacted), 20 copies on the backup
        self.assertGreaterEqual(primaries, 20)
        self.assertEqual(backup, [20 + 1])

    # ---- recycled writers ----

    def recycled_writers(self, extra):
        """Writers overwrite and delete keys of a cut-off server, then exit; the server
        comes back (same instance, old values); new processes read for 3 s.
        Returns (reads, stale values, deleted keys returned)."""
        keys = self.keys_of(0, 400, "cut")
        writes = {w: (keys[w * 100:w * 100 + 50], keys[w * 100 + 50:w * 100 + 100]) for w in range(4)}
        self.seed(keys, "old")
        self.proxy.cut()
        for w, (overwrite, delete) in writes.items():
            p = self.worker(extra)
            for k in overwrite:
                r = p.cmd("set %s new%d" % (k, w))
                self.assertIsNone(r["error"], r)
                self.assertTrue(r["ok"], r)
            for k in delete:
                r = p.cmd("delete %s" % k)
                self.assertIsNone(r["error"], r)
            p.stop()
        self.proxy.heal()
        self.assertEqual(self.victim.get(keys[0]), b"old", "the cut server kept its old values")
        readers = [self.worker(extra) for _ in range(4)]
        reads = stale = resurrected = 0
        end = time.monotonic() + 3.0
        i = 0
        while time.monotonic() < end:
            w = i % 4
            for k in keys[w * 100:w * 100 + 100:5]:
                r = readers[i % 4].cmd("get %s" % k)
                self.assertIsNone(r["error"], r)
                reads += 1
                idx = keys.index(k)
                owner, off = divmod(idx, 100)
                if off < 50:
                    stale += r["value"] != "new%d" % owner
                else:
                    resurrected += r["value"] is not None
            i += 1
        return reads, stale, resurrected

    def test_recycled_writers_leave_no_stale_reads(self):
        reads, stale, resurrected = self.recycled_writers(None)
        print("\nmeasured: shared: %d reads, %d stale values, %d deleted keys returned" % (reads, stale, resurrected),
              file=sys.stderr)
        self.assertGreater(reads, 100)
        self.assertEqual((stale, resurrected), (0, 0), "of %d reads" % reads)
        srv = [s for s in self.stats()["servers"] if s["server"] == self.proxy.addr][0]
        self.assertEqual(srv["state"], "warming", srv)
        # host events are counted when they happen, by whichever process: the writers
        # that logged the keys have exited, the reader that replayed them still runs
        self.assertEqual(srv["counters"]["invalidations_logged"], 400, srv)
        self.assertEqual(srv["counters"]["invalidations_replayed"], 400, srv)
        self.assertEqual((srv["counters"]["downs"], srv["counters"]["rejoins"]), (1, 1), srv)

    def test_recycled_writers_without_sharing_read_stale(self):
        """The same scenario with MCSHIM_SHARED=off: the check above can fail."""
        reads, stale, resurrected = self.recycled_writers({"MCSHIM_SHARED": "off"})
        print("\nmeasured: MCSHIM_SHARED=off: %d reads, %d stale values, %d deleted keys returned"
              % (reads, stale, resurrected), file=sys.stderr)
        self.assertGreater(stale + resurrected, 0, "of %d reads" % reads)

    # ---- kill -9, corruption, permissions ----

    def test_kill9_loop_leaves_a_usable_segment(self):
        keys = self.keys_of(0, 20, "k9")
        self.seed(keys, "v1")
        self.victim.pause()
        mclat = os.path.join(os.path.dirname(harness.LIB), "tools", "mclat")
        host, port = self.intercept.rsplit(":", 1)
        env = self.env()
        kills = 0
        rnd = random.Random(9)
        end = time.monotonic() + harness.scaled(10)
        while time.monotonic() < end and kills < 2000:
            batch = [subprocess.Popen([mclat, "-h", host, "-p", port, "-n", "100000", "-k", "300", "-r", "50",
                                       "-T", "5", "-q"], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL) for _ in range(4)]
            time.sleep(rnd.uniform(0.002, 0.05))
            for p in batch:
                p.kill()
                p.wait()
                kills += 1
        print("\nmeasured: %d processes killed with -9 while using the segment" % kills, file=sys.stderr)
        self.assertGreater(kills, 100)
        self.victim.resume()
        view = self.stats()
        self.assertEqual(view["processes"], [], "only live processes are listed")
        w = self.worker()
        for k in keys:
            r = w.cmd("get %s" % k, timeout=10)
            self.assertIsNone(r["error"], r)
        self.assertEqual(w.cmd("pid")["error"], None)
        listed = [p["pid"] for p in self.stats()["processes"]]
        self.assertEqual(listed, [w.proc.pid])
        log = w.stderr()
        self.assertNotIn("keeps server health", log)

    def test_corrupted_segment_no_crash_no_wrong_answer(self):
        keys = self.keys_of(0, 30, "corrupt") + self.keys_of(1, 30, "corrupt")
        self.seed(keys, "v1")
        workers = [self.worker() for _ in range(4)]
        for w in workers:
            self.assertEqual(w.cmd("get %s" % keys[0])["value"], "v1")
        size = os.path.getsize(self.seg)
        rnd = random.Random(7)
        end = time.monotonic() + 2.0
        n = 0
        with open(self.seg, "r+b") as f:
            while time.monotonic() < end:
                for _ in range(50):
                    # the header page, the server table and beyond
                    off = rnd.choice([rnd.randrange(0, 4096), rnd.randrange(4096, 4096 + 128 * 296),
                                      rnd.randrange(0, size - 64)])
                    f.seek(off)
                    f.write(rnd.randbytes(rnd.randrange(1, 64)))
                f.flush()
                for w in workers:
                    k = keys[n % len(keys)]
                    r = w.cmd("get %s" % k)
                    self.assertIsNone(r["error"], r)
                    self.assertEqual(r["value"], "v1", "key %s: %r" % (k, r))
                    n += 1
        for w in workers:
            self.assertIsNone(w.proc.poll(), "a worker died")
        fresh = self.worker()
        for k in keys:
            self.assertEqual(fresh.cmd("get %s" % k)["value"], "v1")
        self.stats()   # a valid segment again (rebuilt if its header was hit)

    def refused(self, prepare, want):
        w = self.worker()
        self.assertIsNone(w.cmd("get x")["error"])   # creates the segment
        w.stop()
        prepare()
        keys = self.keys_of(0, 5, "perm")
        p = self.worker()
        for k in keys:
            r = p.cmd("set %s v" % k)
            self.assertTrue(r["ok"], r)
            self.assertEqual(p.cmd("get %s" % k)["value"], "v")
        lines = [l for l in p.stderr().splitlines() if "MCSHIM_SHARED" in l]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn(want, lines[0])

    def test_wrong_mode_is_refused(self):
        self.refused(lambda: os.chmod(self.seg, 0o644), "has mode 0644, expected 0600")

    def test_wrong_owner_is_refused(self):
        if os.geteuid() != 0:
            self.skipTest("chown to another user needs root")
        self.refused(lambda: os.chown(self.seg, 65534, 65534), "belongs to uid 65534")

    def test_symlink_is_refused(self):
        def swap():
            os.rename(self.seg, self.seg + ".real")
            os.symlink(self.seg + ".real", self.seg)
        self.addCleanup(lambda: os.path.exists(self.seg + ".real") and os.unlink(self.seg + ".real"))
        self.refused(swap, "cannot open")


if __name__ == "__main__":
    unittest.main(verbosity=2)
