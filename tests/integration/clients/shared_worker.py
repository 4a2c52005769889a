#!/usr/bin/python3
"""A long-lived application process for the host-wide state tests
(test_shared_state.py): pymemcache under LD_PRELOAD, driven one command per stdin
line, one JSON result per stdout line, so a test can hold many processes open and
have them take turns.

    shared_worker.py HOST:PORT
    get KEY            -> {"value": str or null, "elapsed": s, "error": null or str}
    set KEY VALUE      -> {"ok": bool, "elapsed": s, "error": ...}
    delete KEY         -> {"ok": bool, "elapsed": s, "error": ...}
    pid                -> {"pid": n}
Every request is bounded by pymemcache's 5 s timeout.
"""
import json
import os
import sys
import time

from pymemcache.client.base import Client


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    client = Client((host, int(port)), connect_timeout=5, timeout=5)
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        out = {"error": None}
        start = time.monotonic()
        try:
            if parts[0] == "get":
                v = client.get(parts[1])
                out["value"] = None if v is None else v.decode()
            elif parts[0] == "set":
                out["ok"] = bool(client.set(parts[1], parts[2].encode(), noreply=False))
            elif parts[0] == "delete":
                out["ok"] = bool(client.delete(parts[1], noreply=False))
            elif parts[0] == "pid":
                out["pid"] = os.getpid()
            else:
                out["error"] = "unknown command"
        except Exception as e:  # reported, the test decides
            out["error"] = "%s: %s" % (type(e).__name__, e)
            client.close()
        out["elapsed"] = time.monotonic() - start
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
