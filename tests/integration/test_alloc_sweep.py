"""Allocation failure never corrupts a stream (issue: host safety).

The library allocates only through core/alloc.h; MCSHIM_TEST_ALLOC_FAIL=N makes its
N-th allocation fail (preload/lib/testhooks.c). For N = 1, 2, ... until N passes
the last allocation of the scenario, an unmodified client runs a fixed scenario
(clients/alloc_scenario.py: text, multi-get over 4 servers, incr, delete, meta,
binary, a set too large) through the shim, without and with copies. Every run
must end normally (no crash, no abort, ASan clean in the sanitizer pass), and every
step must get either the exact reply or an answer memcached itself gives when it
cannot serve (SERVER_ERROR, a miss, binary 0x0082/0x0086, the connection closed):
never wrong bytes, never a reply left hanging.

Bugs this sweep found when it was written: a meta request freed while still in
its connection's pipeline (double free), and binary and meta replies silently
dropped when their buffer could not grow (the client waited for ever).
"""
import json
import subprocess
import unittest

import harness

SCENARIO = harness.os.path.join(harness.CLIENTS, "alloc_scenario.py")
MAX_ALLOCATIONS = 2000   # far above what the scenario makes (about 150-400): a bound on the sweep


@harness.requires_shim
class AllocSweepTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.cluster = harness.Cluster(4)

    @classmethod
    def tearDownClass(cls):
        cls.cluster.stop()

    def sweep(self, extra):
        intercept = "127.0.0.1:%d" % harness.free_port()
        env = harness.preload_env(self.cluster.servers, intercept, extra)
        env["ALLOC_STEP_LIMIT"] = str(harness.scaled(3))
        problems, visible, total = [], 0, None
        for n in range(1, MAX_ALLOCATIONS + 1):
            self.cluster.ensure_running()
            self.cluster.flush()
            run_env = dict(env, MCSHIM_TEST_ALLOC_FAIL=str(n))
            try:
                p = subprocess.run(["/usr/bin/python3", SCENARIO, intercept], env=run_env, capture_output=True,
                                   timeout=harness.scaled(60))
            except subprocess.TimeoutExpired:
                problems.append("N=%d: the client did not finish" % n)
                continue
            err = p.stderr.decode(errors="replace")
            report = [l for l in err.splitlines() if l.startswith("mcshim: test: ")]
            if p.returncode != 0 or not report:
                problems.append("N=%d: exit %d, stderr ...%s" % (n, p.returncode, err[-600:]))
                continue
            steps = json.loads(p.stdout)["steps"]
            for name, verdict, detail in steps:
                if verdict not in ("ok", "error"):
                    problems.append("N=%d: step %s: %s %s" % (n, name, verdict, detail))
            visible += any(v == "error" for _, v, _ in steps)
            if report[-1].endswith(" 0 failed as asked"):
                total = n - 1
                break
        self.assertFalse(problems, "%d problem(s) over the sweep:\n%s" % (len(problems), "\n".join(problems)))
        self.assertIsNotNone(total, "the sweep never passed the last allocation")
        # the failures did reach the application somewhere: the sweep is not a no-op
        self.assertGreater(visible, 0)
        print("\nmeasured: %s: %d allocations swept, %d runs answered an error somewhere"
              % (extra or "no copies", total, visible), flush=True)

    def test_sweep_without_copies(self):
        self.sweep({})

    def test_sweep_with_replicas(self):
        self.sweep({"MCSHIM_REPLICAS": "2"})


if __name__ == "__main__":
    unittest.main()
