#!/usr/bin/env python3
"""An event loop that must never be stalled by the shim (tests/integration/test_fastpath.py).

Usage: stall_loop.py asyncio|gevent HOST PORT SECONDS WORKERS KEYS [selfcheck]
Runs WORKERS concurrent tasks (asyncio streams, or gevent greenlets with a
monkey-patched pymemcache) doing set/get round trips on their own connections for
SECONDS, while a timer ticks every 10 ms and records how late each tick is. The
test freezes one server meanwhile. Prints one JSON object: the worst and the 99th
percentile lateness, the number of ticks and of operations, and the errors.
selfcheck: one worker blocks the loop for a second itself (an un-patched sleep),
so the test can prove that the measurement sees a stall.
"""
import json
import sys
import time

KIND, HOST, PORT, SECONDS, WORKERS, KEYS = (sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]),
                                            int(sys.argv[5]), int(sys.argv[6]))
TICK = 0.010
SELFCHECK = len(sys.argv) > 7 and sys.argv[7] == "selfcheck"


def summary(late, ops, errors):
    late.sort()
    return {"ticks": len(late), "max_late_s": late[-1] if late else None,
            "p99_late_s": late[int(len(late) * 0.99) - 1] if late else None, "ops": ops,
            "errors": len(errors), "error_samples": errors[:5]}


def run_asyncio():
    import asyncio

    late, errors = [], []
    ops = [0]

    async def ticker(stop):
        nxt = time.monotonic() + TICK
        while time.monotonic() < stop:
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
            late.append(max(0.0, time.monotonic() - nxt))
            nxt += TICK

    async def worker(i, stop):
        r, w = await asyncio.open_connection(HOST, PORT)
        n = 0
        while time.monotonic() < stop:
            key = b"al-%d-%d" % (i, n % KEYS)
            w.write(b"set %s 0 0 2\r\nok\r\n" % key)
            await w.drain()
            line = await r.readline()
            if line not in (b"STORED\r\n", b"SERVER_ERROR mcshim: no server available\r\n") \
                    and not line.startswith(b"SERVER_ERROR"):
                errors.append(repr(line))
            w.write(b"get %s\r\n" % key)
            await w.drain()
            while True:
                line = await r.readline()
                if line in (b"END\r\n", b"") or line.startswith(b"SERVER_ERROR"):
                    break
            ops[0] += 2
            n += 1
            if SELFCHECK and i == 0 and n == 50:
                time.sleep(1.0)   # blocks the loop
        w.close()

    async def main():
        stop = time.monotonic() + SECONDS
        await asyncio.gather(ticker(stop), *[worker(i, stop) for i in range(WORKERS)])

    asyncio.run(main())
    return summary(late, ops[0], errors)


def run_gevent():
    from gevent import monkey
    monkey.patch_all()
    import gevent
    from pymemcache.client.base import Client

    late, errors = [], []
    ops = [0]
    stop = time.monotonic() + SECONDS

    def ticker():
        nxt = time.monotonic() + TICK
        while time.monotonic() < stop:
            gevent.sleep(max(0.0, nxt - time.monotonic()))
            late.append(max(0.0, time.monotonic() - nxt))
            nxt += TICK

    def worker(i):
        c = Client((HOST, PORT), connect_timeout=5, timeout=5, default_noreply=False)
        n = 0
        while time.monotonic() < stop:
            key = "gl-%d-%d" % (i, n % KEYS)
            try:
                c.set(key, b"ok")
                c.get(key)
            except Exception as ex:  # noqa: BLE001 (the shim answers SERVER_ERROR for a down server)
                if "SERVER_ERROR" not in repr(ex):
                    errors.append(repr(ex))
            ops[0] += 2
            n += 1
            if SELFCHECK and i == 0 and n == 50:
                monkey.get_original("time", "sleep")(1.0)   # blocks the hub

    gevent.joinall([gevent.spawn(ticker)] + [gevent.spawn(worker, i) for i in range(WORKERS)])
    return summary(late, ops[0], errors)


print(json.dumps({"asyncio": run_asyncio, "gevent": run_gevent}[KIND]()))
