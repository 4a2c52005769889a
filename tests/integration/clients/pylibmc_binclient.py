#!/usr/bin/python3
"""pylibmc (python3-pylibmc over libmemcached) with the BINARY protocol, under LD_PRELOAD.

    pylibmc_binclient.py HOST:PORT BEHAVIORS_JSON ops TAG
        every command round trip, checked in-process; prints
        {"expect": {key: spec}, "absent": [keys]} (see pymemcache_client.py); a spec
        with "copy": false names a key whose backup copy may be missing (its last
        write was one a copy rule may invalidate instead of copying)
    pylibmc_binclient.py HOST:PORT BEHAVIORS_JSON failover TAG NKEYS SECONDS
        sets NKEYS keys (each set checked), prints {"ready": true, "keys": {key: spec}}
        on one line, waits for a line on stdin, then for SECONDS reads every key again
        and again (get_multi in chunks, single gets) and writes fresh keys (set, then
        read back); prints {"errors", "error_messages", "misses", "miss_keys", "wrong",
        "wrong_samples", "reads", "writes", "rounds", "written": {key: spec}}.
        The test kills a primary while this loop runs.

libmemcached speaks binary to the one server it knows (the intercept address): quiet
GETKQ + NOOP for get_multi, SET/ADD/REPLACE with CAS, INCREMENT with its 20-byte
extras, TOUCH. pylibmc's flags: bytes 0, int 4, pickled 1.
"""
import json
import sys
import time

import pylibmc

import pylibmc_client as P  # the helpers and the steps ops shares with the ASCII client
from pylibmc_client import eq, raises, spec


def client():
    return P.client(binary=True, cas=True)


def ops():
    c = client()
    tag = sys.argv[4] if len(sys.argv) > 4 else "x"
    p = "plb:%s:" % tag
    exp, absent = {}, []
    P.stores(c, p)
    # binary REPLACE of a missing key answers NOT_FOUND (ASCII: NOT_STORED): pylibmc raises
    raises(pylibmc.NotFound, lambda: c.replace(p + "nope", b"x"), "replace missing")
    eq(c.replace(p + "a", b"replaced"), True, "replace")
    eq(c.append(p + "a", b"+z"), True, "append")
    eq(c.prepend(p + "a", b"a+"), True, "prepend")
    eq(c.append(p + "nope", b"+z"), False, "append missing")
    eq(c.get(p + "a"), b"a+replaced+z", "append/prepend")
    P.counter(c, p)
    eq(c.get(p + "n"), 1, "get int after incr")
    raises(pylibmc.NotFound, lambda: c.incr(p + "nope"), "incr of a missing key")
    raises(pylibmc.NotFound, lambda: c.decr(p + "nope"), "decr of a missing key")
    eq(c.delete(p + "s"), True, "delete")
    eq(c.delete(p + "s"), False, "delete missing")
    eq(c.touch(p + "a", 1000), True, "touch")
    eq(c.touch(p + "nope", 1000), False, "touch missing")
    eq(c.set(p + "obj", {"k": [1, 2]}), True, "set pickled")
    eq(c.get(p + "obj"), {"k": [1, 2]}, "get pickled")
    # cas round trip: gets -> cas ok -> cas with the stale unique refused
    v, cas = c.gets(p + "a")
    eq(v, b"a+replaced+z", "gets")
    eq(c.cas(p + "a", b"cas-new", cas), True, "cas")
    eq(c.cas(p + "a", b"cas-stale", cas), False, "cas stale")
    eq(c.get(p + "a"), b"cas-new", "get after cas")
    # set_multi / get_multi (GETKQ... NOOP) / delete_multi across servers
    data = P.multi(c, p)
    # binary-safe keys are not allowed by libmemcached (verify_key); values are
    val = bytes(range(256)) * 40
    eq(c.set(p + "bin", val), True, "set binary value")
    eq(c.get(p + "bin"), val, "get binary value")
    big = P.big(c, p)
    # "copy": false: the copy rule may drop the backup copy on append/prepend/incr/decr
    # instead of copying (a copy never differs from the primary, it may be missing)
    exp[p + "a"] = dict(spec(b"cas-new", 0), copy=False)
    exp[p + "n"] = {"value": "1 ", "flags": 4, "copy": False}  # memcached pads a shrunk number with spaces
    exp[p + "obj"] = {"flags": 1}
    exp[p + "bin"] = spec(val, 0)
    exp[p + "big"] = spec(big, 0)
    P.expect_rest(p, data, exp, absent)
    c.disconnect_all()
    return {"expect": exp, "absent": absent}


def failover():
    c = client()
    tag, nkeys, seconds = sys.argv[4], int(sys.argv[5]), float(sys.argv[6])
    p = "plbf:%s:" % tag
    values = {}
    for i in range(nkeys):
        k = p + "k%d" % i
        v = (b"v%d-" % i) * (1 + i % 13)
        eq(c.set(k, v), True, "set " + k)
        values[k] = v
    print(json.dumps({"ready": True, "keys": {k: spec(v, 0) for k, v in values.items()}}), flush=True)
    sys.stdin.readline()
    rep = {"errors": 0, "error_messages": [], "misses": 0, "miss_keys": [], "wrong": 0, "wrong_samples": [],
           "reads": 0, "writes": 0, "rounds": 0}
    written = {}

    def error(what, e):
        rep["errors"] += 1
        if len(rep["error_messages"]) < 20:
            rep["error_messages"].append("%s: %s: %s" % (what, type(e).__name__, e))

    def check(k, got, want):
        rep["reads"] += 1
        if got is None:
            rep["misses"] += 1
            if len(rep["miss_keys"]) < 20:
                rep["miss_keys"].append(k)
        elif got != want:
            rep["wrong"] += 1
            if len(rep["wrong_samples"]) < 20:
                rep["wrong_samples"].append([k, repr(got)[:60], repr(want)[:60]])

    keys = sorted(values)
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end or rep["rounds"] < 2:
        for i in range(0, len(keys), 50):
            part = keys[i:i + 50]
            try:
                got = c.get_multi(part)
            except Exception as e:  # every client exception is a client-visible error
                error("get_multi", e)
                continue
            for k in part:
                check(k, got.get(k), values[k])
        for k in keys[n % len(keys)::max(1, len(keys) // 5)]:
            try:
                check(k, c.get(k), values[k])
            except Exception as e:
                error("get " + k, e)
        k = p + "w%d" % n
        v = b"w%d" % n
        try:
            if c.set(k, v) is not True:
                raise AssertionError("set returned False")
            rep["writes"] += 1
            written[k] = spec(v, 0)
            check(k, c.get(k), v)
        except Exception as e:
            error("set " + k, e)
        n += 1
        rep["rounds"] += 1
    rep["written"] = written
    c.disconnect_all()
    return rep


if __name__ == "__main__":
    print(json.dumps(globals()[sys.argv[3]]()))
