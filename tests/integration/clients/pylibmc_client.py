#!/usr/bin/python3
"""pylibmc (python3-pylibmc over libmemcached, ASCII protocol) scenarios, under LD_PRELOAD.

    pylibmc_client.py HOST:PORT BEHAVIORS_JSON SCENARIO

Checks replies in-process, prints {"expect": {...}, "absent": [...]} (see
pymemcache_client.py). pylibmc.s own flags: bytes 0, int 4 (FLAG_LONG), pickled 1.
The helpers (spec, eq, raises, client and the shared steps of ops) serve
pylibmc_binclient.py too.
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


def raises(exc, fn, what):
    try:
        fn()
    except exc:
        return
    raise AssertionError("%s did not raise %s" % (what, exc.__name__))


def client(binary=False, **defaults):
    """A client of HOST:PORT (argv[1]) with the behaviors of argv[2]; defaults: more
    behaviors to set unless argv[2] has them."""
    behaviors = json.loads(sys.argv[2])
    defaults = dict({"connect_timeout": 5000, "receive_timeout": 10000000, "send_timeout": 10000000}, **defaults)
    for k, v in defaults.items():
        behaviors.setdefault(k, v)
    return pylibmc.Client([sys.argv[1]], binary=binary, behaviors=behaviors)


def stores(c, p):
    """set, get, a miss, add of an existing and of a new key (p+"s", p+"a")."""
    eq(c.set(p + "s", b"hello"), True, "set")
    eq(c.get(p + "s"), b"hello", "get")
    eq(c.get(p + "missing"), None, "get miss")
    eq(c.add(p + "s", b"x"), False, "add existing")
    eq(c.add(p + "a", b"added"), True, "add")


def counter(c, p):
    """incr/decr of p+"n" (10 -> 15 -> 0 -> 1)."""
    eq(c.set(p + "n", 10), True, "set int")
    eq(c.incr(p + "n", 5), 15, "incr")
    eq(c.decr(p + "n", 20), 0, "decr floors at 0")
    eq(c.incr(p + "n"), 1, "incr default delta")


def multi(c, p):
    """set_multi / get_multi (with 20 misses) / delete_multi of 200 keys across the
    servers; returns the keys' values."""
    data = {p + "m%d" % i: (b"mv%d-" % i) * (i + 1) for i in range(200)}
    eq(c.set_multi(data), [], "set_multi failures")
    got = c.get_multi(list(data) + [p + "miss%d" % i for i in range(20)])
    eq(len(got), 200, "get_multi hits")
    for k, v in data.items():
        eq(got[k], v, "get_multi " + k)
    eq(c.delete_multi([p + "m%d" % i for i in range(0, 200, 4)]), True, "delete_multi")
    got = c.get_multi(list(data))
    eq(len(got), 150, "get_multi after delete_multi")
    return data


def big(c, p):
    """A 1 MB-ish value (no compression: min_compress_len unset) at p+"big"; returns it."""
    value = (bytes(range(256)) * 4000)[:1000000]
    eq(c.set(p + "big", value), True, "set 1MB-ish")
    eq(c.get(p + "big"), value, "get 1MB-ish")
    return value


def expect_rest(p, data, exp, absent):
    """Adds to exp/absent what multi() left (every 4th key deleted) and the keys
    stores() deleted or never wrote."""
    for i in range(200):
        k = p + "m%d" % i
        if i % 4:
            exp[k] = spec(data[k], 0)
        else:
            absent.append(k)
    absent += [p + "s", p + "missing", p + "nope"]


def ops():
    c = client()
    tag = sys.argv[4] if len(sys.argv) > 4 else "x"
    p = "pl:%s:" % tag
    exp, absent = {}, []
    stores(c, p)
    eq(c.replace(p + "nope", b"x"), False, "replace missing")
    eq(c.replace(p + "a", b"replaced"), True, "replace")
    eq(c.append(p + "a", b"+z"), True, "append")
    eq(c.prepend(p + "a", b"a+"), True, "prepend")
    eq(c.get(p + "a"), b"a+replaced+z", "append/prepend")
    counter(c, p)
    raises(pylibmc.NotFound, lambda: c.incr(p + "nope"), "incr of a missing key")
    eq(c.delete(p + "s"), True, "delete")
    eq(c.delete(p + "s"), False, "delete missing")
    eq(c.touch(p + "a", 1000), True, "touch")
    eq(c.set(p + "obj", {"k": [1, 2]}), True, "set pickled")
    eq(c.get(p + "obj"), {"k": [1, 2]}, "get pickled")
    data = multi(c, p)
    value = big(c, p)
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
    exp[p + "big"] = spec(value, 0)
    expect_rest(p, data, exp, absent)
    c.disconnect_all()
    return exp, absent


if __name__ == "__main__":
    expect, absent = globals()[sys.argv[3]]()
    print(json.dumps({"expect": expect, "absent": absent}))
