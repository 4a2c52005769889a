#!/usr/bin/python3
"""A load generator built on real, unmodified clients (pymemcache or pylibmc), run under
LD_PRELOAD by the availability tests while they kill, pause or cut servers.

    loadgen.py HOST:PORT [options]            load: set every key, print READY, then loop
    loadgen.py HOST:PORT --verify FILE        read every key of FILE ({key: value}) once

Load mode: --keys N keys named PREFIX:<i> are first set to an initial value (each set
checked); "READY" is printed on stdout; then --conns threads, each with its own client
(so its own connection), run for --seconds: gets, small multi-gets and sets of the
thread's own keys (key i belongs to thread i % conns, so each key has one writer and
the value a read must return is known exactly). A set that fails or times out leaves
the key with two possible values (the old and the new) until the next acknowledged set.

Every error (exception, False from a set) is counted with its message, every read of a
key that was written before and missed is a miss, every read returning anything else
than the possible values is stale. Latencies of every operation are recorded.

The report (one JSON line, last on stdout):
  {"client", "ops", "gets", "sets", "errors", "error_messages" (first 20), "misses",
   "miss_keys" (first 20), "stale", "stale_samples" (first 20), "max_latency",
   "p99_latency", "p50_latency", "slow" (per connection: ops slower than --slow-ms),
   "slow_samples" (per connection, first 10 as [t, op, key, seconds]),
   "acked": {key: last acknowledged value}, "uncertain": [keys with an unacknowledged set],
   "setup_seconds", "loop_seconds"}
Verify mode report: {"checked", "misses", "miss_keys", "wrong", "wrong_samples", "errors",
"error_messages"}.

Exit status is 0 whenever a report was printed; the test judges the numbers.
"""
import argparse
import json
import os
import random
import threading
import time

SAMPLES = 20


# MCSHIM_TEST_BLOCKING=1 (make test's fast-path pass): pymemcache uses blocking sockets.
BLOCKING = os.environ.get("MCSHIM_TEST_BLOCKING") == "1"


def shim_fast_requests(args):
    """The shim's fast_requests counter (stats mcshim), or None without a shim."""
    if args.client != "pymemcache":
        return None
    try:
        st = make_client(args.client, args.addr, args.timeout).stats("mcshim")
        v = st.get(b"fast_requests", st.get("fast_requests"))
        return int(v) if v is not None else None
    except Exception:  # noqa: BLE001 (a direct run has no such stats)
        return None


def parse_addr(addr):
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def make_client(kind, addr, timeout):
    """One client with its own connection to addr. timeout: seconds for each reply."""
    if kind == "pymemcache":
        from pymemcache.client.base import Client
        if BLOCKING:
            # blocking sockets (no timeout): the shim's fast path carries the load and
            # the shim's own timeout bounds every wait
            return Client(parse_addr(addr), default_noreply=False)
        return Client(parse_addr(addr), connect_timeout=timeout, timeout=timeout, default_noreply=False)
    if kind == "pylibmc":
        import pylibmc
        ms = int(timeout * 1000)
        # receive/send timeouts are in microseconds; libmemcached's failure handling as shipped
        behaviors = {"connect_timeout": ms, "receive_timeout": ms * 1000, "send_timeout": ms * 1000,
                     "tcp_nodelay": True}
        return pylibmc.Client([addr], binary=False, behaviors=behaviors)
    raise SystemExit("loadgen: unknown client %r" % kind)


class Ops:
    """The few operations the load needs, the same on both clients."""

    def __init__(self, kind, client):
        self.kind = kind
        self.c = client

    def set(self, key, value):
        return bool(self.c.set(key, value))

    def get(self, key):
        return self.c.get(key)

    def get_many(self, keys):
        if self.kind == "pymemcache":
            return self.c.get_many(keys)
        return self.c.get_multi(keys)


class Worker:
    """One connection's share of the load and what it saw."""

    def __init__(self, idx, args, keys, acked):
        self.idx = idx
        self.args = args
        self.keys = keys
        self.acked = acked              # shared {key: value}, this worker writes only its keys
        self.possible = {k: {acked[k]} for k in keys}
        self.uncertain = set()
        self.rng = random.Random(args.seed * 1000 + idx)
        self.lat = []
        self.counts = {"ops": 0, "gets": 0, "sets": 0, "errors": 0, "misses": 0, "stale": 0, "slow": 0}
        self.errors, self.miss_keys, self.stale_samples, self.slow_samples = [], [], [], []
        self.counter = 0
        self.start = 0.0

    def note_error(self, what, key, exc):
        self.counts["errors"] += 1
        if len(self.errors) < SAMPLES:
            self.errors.append("%.3fs conn %d %s %s: %s: %s" % (
                time.monotonic() - self.start, self.idx, what, key, type(exc).__name__, exc))

    def check_read(self, key, got):
        if got is None:
            self.counts["misses"] += 1
            if len(self.miss_keys) < SAMPLES:
                self.miss_keys.append(key)
            return
        if got not in self.possible[key]:
            self.counts["stale"] += 1
            if len(self.stale_samples) < SAMPLES:
                self.stale_samples.append([key, got.decode("latin-1"),
                                           sorted(v.decode("latin-1") for v in self.possible[key])])

    def timed(self, what, key, fn):
        t0 = time.monotonic()
        try:
            return fn(), None
        except Exception as e:  # every client exception is a client-visible error
            return None, e
        finally:
            dt = time.monotonic() - t0
            self.lat.append(dt)
            self.counts["ops"] += 1
            if self.args.slow_ms is not None and dt * 1000 > self.args.slow_ms:
                self.counts["slow"] += 1
                if len(self.slow_samples) < 10:
                    self.slow_samples.append([round(t0 - self.start, 3), what, key, round(dt, 4)])

    def one(self, ops):
        r = self.rng.random()
        key = self.rng.choice(self.keys)
        if r < self.args.write_ratio:
            self.counter += 1
            value = ("%s|%d|%d" % (key, self.idx, self.counter)).encode()
            self.counts["sets"] += 1
            ok, exc = self.timed("set", key, lambda: ops.set(key, value))
            if exc is None and ok:
                self.acked[key] = value
                self.possible[key] = {value}
                self.uncertain.discard(key)
            else:
                self.note_error("set", key, exc or RuntimeError("set answered not stored"))
                self.possible[key].add(value)
                self.uncertain.add(key)
        elif r < self.args.write_ratio + self.args.multi_ratio:
            many = self.rng.sample(self.keys, min(len(self.keys), self.args.multi))
            self.counts["gets"] += 1
            got, exc = self.timed("get_many", many[0], lambda: ops.get_many(many))
            if exc is not None:
                self.note_error("get_many", many[0], exc)
                return
            for k in many:
                self.check_read(k, got.get(k))
        else:
            self.counts["gets"] += 1
            got, exc = self.timed("get", key, lambda: ops.get(key))
            if exc is not None:
                self.note_error("get", key, exc)
                return
            self.check_read(key, got)

    def run(self, deadline):
        try:
            ops = Ops(self.args.client, make_client(self.args.client, self.args.addr, self.args.timeout))
        except Exception as e:
            self.note_error("connect", "-", e)
            return
        while time.monotonic() < deadline:
            self.one(ops)
            if self.args.pause_ms:
                time.sleep(self.args.pause_ms / 1000.0)


def percentile(sorted_values, p):
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, int(len(sorted_values) * p))
    return sorted_values[i]


def setup_keys(args):
    """Sets every key to its first value (each checked). Returns {key: value}."""
    ops = Ops(args.client, make_client(args.client, args.addr, args.timeout))
    acked = {}
    for i in range(args.keys):
        key = "%s:%d" % (args.prefix, i)
        value = ("%s|init" % key).encode()
        if not ops.set(key, value):
            raise SystemExit("loadgen: setup set %s was not stored" % key)
        acked[key] = value
    return acked


def load(args):
    t0 = time.monotonic()
    acked = setup_keys(args)
    setup_seconds = time.monotonic() - t0
    print("READY", flush=True)
    keys = sorted(acked, key=lambda k: int(k.rsplit(":", 1)[1]))
    workers = [Worker(i, args, keys[i::args.conns], acked) for i in range(args.conns)]
    start = time.monotonic()
    deadline = start + args.seconds
    threads = []
    for w in workers:
        w.start = start
        t = threading.Thread(target=w.run, args=(deadline,), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 2 * args.timeout + 2)
    loop_seconds = time.monotonic() - start
    lat = sorted(x for w in workers for x in w.lat)
    total = {k: sum(w.counts[k] for w in workers) for k in workers[0].counts} if workers else {}
    report = {
        "client": args.client,
        "conns": args.conns,
        "ops": total.get("ops", 0), "gets": total.get("gets", 0), "sets": total.get("sets", 0),
        "errors": total.get("errors", 0),
        "error_messages": [m for w in workers for m in w.errors][:SAMPLES],
        "misses": total.get("misses", 0),
        "miss_keys": [k for w in workers for k in w.miss_keys][:SAMPLES],
        "stale": total.get("stale", 0),
        "stale_samples": [s for w in workers for s in w.stale_samples][:SAMPLES],
        "max_latency": lat[-1] if lat else 0.0,
        "p99_latency": percentile(lat, 0.99),
        "p50_latency": percentile(lat, 0.50),
        "slow": [w.counts["slow"] for w in workers],
        "slow_samples": [w.slow_samples for w in workers],
        "acked": {k: v.decode("latin-1") for k, v in acked.items()},
        "uncertain": sorted(k for w in workers for k in w.uncertain),
        "setup_seconds": round(setup_seconds, 3),
        "loop_seconds": round(loop_seconds, 3),
        "stuck_threads": sum(1 for t in threads if t.is_alive()),
        "blocking": BLOCKING,
        "fast_requests": shim_fast_requests(args),
    }
    return report


def verify(args):
    with open(args.verify) as f:
        want = {k: v.encode("latin-1") for k, v in json.load(f).items()}
    ops = Ops(args.client, make_client(args.client, args.addr, args.timeout))
    res = {"checked": 0, "misses": 0, "miss_keys": [], "wrong": 0, "wrong_samples": [], "errors": 0,
           "error_messages": []}
    keys = sorted(want)
    for i in range(0, len(keys), args.multi):
        part = keys[i:i + args.multi]
        try:
            # single gets and multi-gets alternate, so both paths are read back
            got = ops.get_many(part) if (i // args.multi) % 2 else {k: ops.get(k) for k in part}
        except Exception as e:
            res["errors"] += 1
            if len(res["error_messages"]) < SAMPLES:
                res["error_messages"].append("%s: %s: %s" % (part[0], type(e).__name__, e))
            continue
        for k in part:
            res["checked"] += 1
            v = got.get(k)
            if v is None:
                res["misses"] += 1
                if len(res["miss_keys"]) < SAMPLES:
                    res["miss_keys"].append(k)
            elif v != want[k]:
                res["wrong"] += 1
                if len(res["wrong_samples"]) < SAMPLES:
                    res["wrong_samples"].append([k, v.decode("latin-1"), want[k].decode("latin-1")])
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("addr")
    ap.add_argument("--client", default="pymemcache", choices=("pymemcache", "pylibmc"))
    ap.add_argument("--keys", type=int, default=300)
    ap.add_argument("--prefix", default="lg")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--conns", type=int, default=4)
    ap.add_argument("--write-ratio", type=float, default=0.3)
    ap.add_argument("--multi-ratio", type=float, default=0.1)
    ap.add_argument("--multi", type=int, default=5, help="keys per multi-get")
    ap.add_argument("--timeout", type=float, default=5.0, help="client reply timeout, seconds")
    ap.add_argument("--slow-ms", type=float, default=None)
    ap.add_argument("--pause-ms", type=float, default=0.0, help="sleep between a thread's operations")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("LOADGEN_SEED", "1")))
    ap.add_argument("--verify", metavar="FILE", default=None)
    args = ap.parse_args()
    if args.conns < 1 or args.keys < args.conns:
        raise SystemExit("loadgen: need conns >= 1 and keys >= conns")
    report = verify(args) if args.verify else load(args)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
