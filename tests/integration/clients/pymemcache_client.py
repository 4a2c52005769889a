#!/usr/bin/python3
"""pymemcache scenarios (python3-pymemcache, unmodified), run under LD_PRELOAD.

    pymemcache_client.py HOST:PORT SCENARIO

Each scenario checks every reply in-process (AssertionError -> exit 1) and prints one
JSON line {"expect": {key: {"len", "sha1", "flags"}}, "absent": [keys]} describing
what must now be on the servers, which the test checks by asking them directly.
"""
import hashlib
import json
import os
import random
import sys
import threading

from pymemcache.client.base import Client, PooledClient
from pymemcache import serde


def addr():
    host, port = sys.argv[1].rsplit(":", 1)
    return (host, int(port))


def client(**kw):
    if os.environ.get("MCSHIM_TEST_BLOCKING") == "1":
        kw.setdefault("connect_timeout", None)   # blocking sockets: the fast path
        kw.setdefault("timeout", None)
    kw.setdefault("connect_timeout", 5)
    kw.setdefault("timeout", 10)
    return Client(addr(), **kw)


def spec(value, flags=0):
    return {"len": len(value), "sha1": hashlib.sha1(value).hexdigest(), "flags": flags}


def eq(got, want, what):
    if got != want:
        raise AssertionError("%s: got %r, want %r" % (what, got if not isinstance(got, bytes) or len(got) < 200
                                                     else got[:100] + b"...", want if not isinstance(want, bytes)
                                                     or len(want) < 200 else want[:100] + b"..."))


def basic():
    c = client(default_noreply=False)
    exp, absent = {}, []
    eq(c.set("pm:a", b"1"), True, "set")
    eq(c.get("pm:a"), b"1", "get")
    eq(c.get("pm:missing"), None, "get miss")
    eq(c.add("pm:a", b"x"), False, "add existing")
    eq(c.add("pm:b", b"bee"), True, "add new")
    eq(c.replace("pm:nope", b"x"), False, "replace missing")
    eq(c.replace("pm:b", b"bee2"), True, "replace existing")
    eq(c.append("pm:b", b"-tail"), True, "append")
    eq(c.prepend("pm:b", b"head-"), True, "prepend")
    eq(c.append("pm:nope", b"x"), False, "append missing")
    eq(c.get("pm:b"), b"head-bee2-tail", "append/prepend result")
    eq(c.incr("pm:a", 41), 42, "incr")
    eq(c.decr("pm:a", 2), 40, "decr")
    eq(c.decr("pm:a", 100), 0, "decr floors at 0")
    eq(c.incr("pm:nope", 1), None, "incr missing")
    eq(c.incr("pm:a", 5), 5, "incr from 0")
    value, cas = c.gets("pm:b")
    eq(value, b"head-bee2-tail", "gets value")
    if not isinstance(cas, bytes) or not cas.isdigit():
        raise AssertionError("gets cas %r" % (cas,))
    eq(c.cas("pm:b", b"casv", cas), True, "cas with fresh unique")
    eq(c.cas("pm:b", b"stale", cas), False, "cas with stale unique")
    eq(c.cas("pm:nope", b"x", b"1"), None, "cas missing")
    eq(c.get("pm:b"), b"casv", "after cas")
    eq(c.touch("pm:b", 1000), True, "touch")
    eq(c.touch("pm:nope", 1000), False, "touch missing")
    eq(c.delete("pm:a"), True, "delete")
    eq(c.delete("pm:a"), False, "delete again")
    eq(c.get("pm:a"), None, "deleted")
    absent += ["pm:a", "pm:nope", "pm:missing"]
    # flags through a serializer
    sc = client(default_noreply=False, serde=serde.pickle_serde)
    eq(sc.set("pm:obj", {"x": [1, 2, 3]}), True, "set object")
    eq(sc.get("pm:obj"), {"x": [1, 2, 3]}, "get object")
    eq(sc.set("pm:int", 12345), True, "set int")
    eq(sc.get("pm:int"), 12345, "get int")
    exp["pm:b"] = spec(b"casv")
    exp["pm:int"] = {"value": "12345", "flags": 2}
    # version goes to one server
    v = c.version()
    if not v:
        raise AssertionError("version %r" % v)
    c.close()
    return exp, absent


def noreply():
    c = client(default_noreply=True)
    exp, absent = {}, []
    c.set("nr:a", b"1")
    c.set("nr:b", b"b")
    c.add("nr:b", b"ignored")
    c.add("nr:c", b"c")
    c.replace("nr:c", b"c2")
    c.append("nr:c", b"+")
    c.prepend("nr:c", b"-")
    c.incr("nr:a", 9, noreply=True)
    c.decr("nr:a", 3, noreply=True)
    c.set("nr:gone", b"x")
    c.delete("nr:gone", noreply=True)
    c.touch("nr:b", 1000, noreply=True)
    c.set_many({"nr:m%d" % i: b"m%d" % i for i in range(50)})
    c.delete_many(["nr:m%d" % i for i in range(0, 50, 2)])
    # read back on the same connection: every noreply write came first
    a = c.get("nr:a")
    eq(a.strip(), b"7", "incr/decr noreply")  # memcached pads a shrunk number with spaces
    eq(c.get("nr:b"), b"b", "add noreply on existing")
    eq(c.get("nr:c"), b"-c2+", "replace/append/prepend noreply")
    eq(c.get("nr:gone"), None, "delete noreply")
    got = c.get_many(["nr:m%d" % i for i in range(50)])
    eq(sorted(got), sorted("nr:m%d" % i for i in range(1, 50, 2)), "set_many/delete_many noreply")
    exp.update({"nr:a": spec(a), "nr:b": spec(b"b"), "nr:c": spec(b"-c2+")})
    for i in range(50):
        if i % 2:
            exp["nr:m%d" % i] = spec(b"m%d" % i)
        else:
            absent.append("nr:m%d" % i)
    absent.append("nr:gone")
    c.close()
    return exp, absent


def large():
    c = client(default_noreply=False)
    rnd = random.Random(7)
    exp = {}
    sizes = [0, 1, 1000, 16383, 16384, 65537, 100000, 500000, 1000000]
    vals = {}
    for n in sizes:
        v = bytes(rnd.getrandbits(8) for _ in range(min(n, 4096)))
        v = (v * (n // 4096 + 1))[:n] if n else b""
        if n >= 16:
            v = b"\r\nEND\r\n" + v[7:n - 9] + b"\x00\r\nEND\r\n"
            v = v[:n]
        key = "big:%d" % n
        eq(c.set(key, v), True, "set %d bytes" % n)
        vals[key] = v
        exp[key] = spec(v)
    for key, v in vals.items():
        eq(c.get(key), v, "get " + key)
    got = c.get_many(list(vals))
    eq(len(got), len(vals), "get_many of big values")
    for key, v in vals.items():
        eq(got[key], v, "get_many " + key)
    # all 256 byte values, including in flags-0 binary blobs
    blob = bytes(range(256)) * 3
    eq(c.set("bin:all", blob), True, "set binary")
    eq(c.get("bin:all"), blob, "get binary")
    exp["bin:all"] = spec(blob)
    c.close()
    return exp, []


def many():
    c = client(default_noreply=False)
    keys = ["many:%04d:%s" % (i, "x" * (i % 40)) for i in range(500)]
    data = {k: ("v-%s" % k).encode() * (1 + i % 5) for i, k in enumerate(keys)}
    eq(c.set_many(data), [], "set_many failed keys")
    ask = keys + ["many:miss:%d" % i for i in range(50)]
    random.Random(3).shuffle(ask)
    got = c.get_many(ask)
    eq(len(got), 500, "get_many hit count")
    for k in keys:
        eq(got.get(k), data[k], "get_many " + k)
    # gets_many returns cas too
    gm = c.gets_many(keys[:100])
    eq(len(gm), 100, "gets_many count")
    c.close()
    return {k: spec(v) for k, v in data.items()}, ["many:miss:%d" % i for i in range(50)]


def pipelined():
    """set_many writes every command in one send and then reads every reply."""
    c = client(default_noreply=False)
    exp = {}
    burst = {"pipe:%d" % i: (b"p%d" % i) * (i % 7 + 1) for i in range(300)}
    eq(c.set_many(burst), [], "pipelined set_many")
    burst2 = {"pipe:nr:%d" % i: b"n%d" % i for i in range(300)}
    c.set_many(burst2, noreply=True)
    got = c.get_many(list(burst) + list(burst2))
    eq(len(got), 600, "get_many after bursts")
    for k, v in list(burst.items()) + list(burst2.items()):
        eq(got[k], v, k)
        exp[k] = spec(v)
    c.close()
    return exp, []


def threads():
    # MCSHIM_TEST_BLOCKING=1 (make test's fast-path pass): blocking sockets, no timeout
    t = None if os.environ.get("MCSHIM_TEST_BLOCKING") == "1" else 10
    pc = PooledClient(addr(), max_pool_size=8, connect_timeout=t and 5, timeout=t, default_noreply=False)
    errors = []
    exp = {}
    lock = threading.Lock()

    def work(t):
        try:
            for i in range(100):
                k = "thr:%d:%d" % (t, i)
                v = ("%d-%d" % (t, i)).encode() * (1 + i % 13)
                if pc.set(k, v) is not True:
                    raise AssertionError("set %s" % k)
                if pc.get(k) != v:
                    raise AssertionError("get %s" % k)
                with lock:
                    exp[k] = spec(v)
            got = pc.get_many(["thr:%d:%d" % (t, i) for i in range(100)])
            if len(got) != 100:
                raise AssertionError("thread %d get_many %d" % (t, len(got)))
        except Exception as e:  # reported below
            errors.append(repr(e))

    ts = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    if errors:
        raise AssertionError("; ".join(errors[:5]))
    return exp, []


if __name__ == "__main__":
    expect, absent = globals()[sys.argv[2]]()
    print(json.dumps({"expect": expect, "absent": absent}))
