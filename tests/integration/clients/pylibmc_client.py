#!/usr/bin/python3
"""pylibmc (python3-pylibmc over libmemcached, ASCII protocol) scenarios, under LD_PRELOAD.

    pylibmc_client.py HOST:PORT BEHAVIORS_JSON SCENARIO

Checks replies in-process, prints {"expect": {...}, "absent": [...]} (see
pymemcache_client.py). pylibmc.s own flags: bytes 0, int 4 (FLAG_LONG), pickled 1.
"""
import hashlib
import json
import sys

import pylibmc


def spec(value, flags=None):
    d = {"len": len(value), "sha1": hashlib.sha1(value).hexdigest()}
    if flags is not None:
        d["flags"] = flags
    return d


def eq(got, want, what):
    if got != want:
        g = got[:80] + b"..." if isinstance(got, bytes) and len(got) > 200 else got
        w = want[:80] + b"..." if isinstance(want, bytes) and len(want) > 200 else want
        raise AssertionError("%s: got %r, want %r" % (what, g, w))


def client():
    behaviors = json.loads(sys.argv[2])
    behaviors.setdefault("connect_timeout", 5000)
    behaviors.setdefault("receive_timeout", 10000000)
    behaviors.setdefault("send_timeout", 10000000)
    return pylibmc.Client([sys.argv[1]], binary=False, behaviors=behaviors)


def ops():
    c = client()
    tag = sys.argv[4] if len(sys.argv) > 4 else "x"
    p = "pl:%s:" % tag
    exp, absent = {}, []
    eq(c.set(p + "s", b"hello"), True, "set")
    eq(c.get(p + "s"), b"hello", "get")
    eq(c.get(p + "missing"), None, "get miss")
    eq(c.add(p + "s", b"x"), False, "add existing")
    eq(c.add(p + "a", b"added"), True, "add")
    eq(c.replace(p + "nope", b"x"), False, "replace missing")
    eq(c.replace(p + "a", b"replaced"), True, "replace")
    eq(c.append(p + "a", b"+z"), True, "append")
    eq(c.prepend(p + "a", b"a+"), True, "prepend")
    eq(c.get(p + "a"), b"a+replaced+z", "append/prepend")
    eq(c.set(p + "n", 10), True, "set int")
    eq(c.incr(p + "n", 5), 15, "incr")
    eq(c.decr(p + "n", 20), 0, "decr floors at 0")
    eq(c.incr(p + "n"), 1, "incr default delta")
    try:
        c.incr(p + "nope")
        raise AssertionError("incr of a missing key did not raise")
    except pylibmc.NotFound:
        pass
    eq(c.delete(p + "s"), True, "delete")
    eq(c.delete(p + "s"), False, "delete missing")
    eq(c.touch(p + "a", 1000), True, "touch")
    eq(c.set(p + "obj", {"k": [1, 2]}), True, "set pickled")
    eq(c.get(p + "obj"), {"k": [1, 2]}, "get pickled")
    # set_multi / get_multi / delete_multi across servers
    data = {p + "m%d" % i: (b"mv%d-" % i) * (i + 1) for i in range(200)}
    eq(c.set_multi(data), [], "set_multi failures")
    got = c.get_multi(list(data) + [p + "miss%d" % i for i in range(20)])
    eq(len(got), 200, "get_multi hits")
    for k, v in data.items():
        eq(got[k], v, "get_multi " + k)
    eq(c.delete_multi([p + "m%d" % i for i in range(0, 200, 4)]), True, "delete_multi")
    got = c.get_multi(list(data))
    eq(len(got), 150, "get_multi after delete_multi")
    # large values (no compression: min_compress_len unset)
    big = (bytes(range(256)) * 4000)[:1000000]
    eq(c.set(p + "big", big), True, "set 1MB-ish")
    eq(c.get(p + "big"), big, "get 1MB-ish")
    # cas (needs the cas behavior for gets)
    if c.behaviors.get("cas"):
        v, cas = c.gets(p + "a")
        eq(v, b"a+replaced+z", "gets")
        eq(c.cas(p + "a", b"cas-new", cas), True, "cas")
        eq(c.cas(p + "a", b"cas-stale", cas), False, "cas stale")
        exp[p + "a"] = spec(b"cas-new", 0)
    else:
        exp[p + "a"] = spec(b"a+replaced+z", 0)
    exp[p + "n"] = {"value": "1 ", "flags": 4}  # memcached pads a shrunk number with spaces
    exp[p + "big"] = spec(big, 0)
    for i in range(200):
        k = p + "m%d" % i
        if i % 4:
            exp[k] = spec(data[k], 0)
        else:
            absent.append(k)
    absent += [p + "s", p + "missing", p + "nope"]
    c.disconnect_all()
    return exp, absent


if __name__ == "__main__":
    expect, absent = globals()[sys.argv[3]]()
    print(json.dumps({"expect": expect, "absent": absent}))
