#!/usr/bin/env python3
"""Run every tests/integration/test_*.py in its own process, with a time limit.

Each file runs in its own process group (its own session). When it overruns its
limit the whole group gets SIGTERM, then SIGKILL, so no memcached or client it
started is left behind; after a normal exit any survivor of the group is killed too.

MCSHIM_TEST_PATTERN narrows the files (glob, or several separated by commas),
e.g. MCSHIM_TEST_PATTERN='test_php*'. MCSHIM_TEST_LIMIT overrides the per-file limit
(seconds, before the time scale). Exit status 0 only if every file passed and every
skipped test gave a reason on ALLOWED_SKIPS (a skip is a check not made).
"""
import fnmatch
import os
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCALE = float(os.environ.get("MCSHIM_TEST_TIME_SCALE", "4" if os.environ.get("SANITIZE") == "1" else "1"))
LIMIT = float(os.environ.get("MCSHIM_TEST_LIMIT", "240")) * SCALE


# A skipped test is a check not made: a skip fails the run unless its reason is on
# this list. Each entry: (reason as the test states it, when it is allowed, why).
SANITIZED = os.environ.get("SANITIZE") == "1"
ALLOWED_SKIPS = [
    # MCSHIM_TEST_DIRECT=1 runs the tests against one plain memcached to debug the
    # tests themselves; make test never sets it.
    ("shim-only test (MCSHIM_TEST_DIRECT=1)", os.environ.get("MCSHIM_TEST_DIRECT") == "1",
     "debug mode of the tests"),
    ("compares direct and shim runs itself (MCSHIM_TEST_DIRECT=1)", os.environ.get("MCSHIM_TEST_DIRECT") == "1",
     "debug mode of the tests"),
    # Under ASan/UBSan only; the same tests run in the plain pass of make test.
    ("ASan's own dlopen interceptor", SANITIZED, "ASan replaces the dlopen caller; checked in the plain run"),
    ("php's RTLD_DEEPBIND dlopen aborts under ASan", SANITIZED, "checked in the plain run"),
    ("valgrind not usable in this build", SANITIZED, "valgrind cannot run an ASan build; checked in the plain run"),
    # ASan aborts in Ruby's own thread teardown (it cannot unmap the alternate signal
    # stack Ruby's threads leave behind), before any result is printed.
    ("Ruby threads abort under ASan", SANITIZED, "checked in the plain run"),
]
# unittest prints the reason with repr(): in double quotes when it holds a single quote
SKIP_LINE = re.compile(r"^(test\S+) \(([^)]*)\)(?:\s*\n.*?)? \.\.\. skipped (['\"])(.*)\3$", re.M)


def skips_not_allowed(text):
    """The skips in a file's unittest -v output whose reason is not allowed here."""
    bad = []
    for m in SKIP_LINE.finditer(text):
        reason = m.group(4)
        if not any(reason.startswith(r) and when for r, when, _ in ALLOWED_SKIPS):
            bad.append("%s: %s" % (m.group(2) or m.group(1), reason))
    return bad


def kill_group(pgid, grace=2.0):
    """SIGTERM the group, wait up to grace seconds, then SIGKILL whatever is left."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.time() + grace
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_file(f):
    """Returns (ok, counts dict, seconds)."""
    start = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "unittest", "-v", f[:-3]], cwd=HERE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    pgid = proc.pid  # session leader: its pid is the group id
    timed_out = False
    # Echo the output as it comes; stop at the limit even if the file prints nothing.
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    while True:
        left = start + LIMIT - time.time()
        if left <= 0:
            timed_out = True
            break
        if not sel.select(timeout=min(left, 1.0)):
            continue
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
        buf += chunk
    sel.close()
    if timed_out:
        print("%s: timed out after %ds, killing its process group" % (f, LIMIT), flush=True)
        kill_group(pgid)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        kill_group(pgid, grace=0)
        proc.wait()
    kill_group(pgid, grace=1.0)  # orphans (servers, clients) of a crashed test
    proc.stdout.close()
    text = buf.decode(errors="replace")
    counts = {"ran": 0, "failures": 0, "errors": 0, "skipped": 0}
    m = re.search(r"^Ran (\d+) test", text, re.M)
    if m:
        counts["ran"] = int(m.group(1))
    m = re.search(r"^(?:FAILED|OK) \((.*)\)$", text, re.M)
    if m:
        for part in m.group(1).split(","):
            k, _, v = part.strip().partition("=")
            if k in counts:
                counts[k] = int(v)
    ok = proc.returncode == 0 and not timed_out
    bad = skips_not_allowed(text)
    if counts["skipped"] > 0 and not bad and not SKIP_LINE.search(text):
        bad = ["%d skip(s) whose reason could not be read" % counts["skipped"]]
    for b in bad:
        print("%s: skipped, and not on the allow-list in run.py: %s" % (f, b), flush=True)
    ok = ok and not bad
    return ok, counts, time.time() - start


def main():
    patterns = os.environ.get("MCSHIM_TEST_PATTERN", "test_*.py").split(",")
    files = sorted(f for f in os.listdir(HERE)
                   if f.endswith(".py") and any(fnmatch.fnmatch(f, p.strip()) for p in patterns))
    failed = []
    summary = []
    for f in files:
        print("== %s" % f, flush=True)
        ok, counts, secs = run_file(f)
        print("== %s %s (%.1fs)" % (f, "ok" if ok else "FAILED", secs), flush=True)
        summary.append((f, ok, counts, secs))
        if not ok:
            failed.append(f)
    print("\nintegration summary:")
    for f, ok, c, secs in summary:
        print("  %-32s %-6s ran %3d  fail %2d  error %2d  skip %2d  %6.1fs" % (
            f, "ok" if ok else "FAILED", c["ran"], c["failures"], c["errors"], c["skipped"], secs))
    if failed:
        print("integration: failed: %s" % " ".join(failed))
        return 1
    print("integration: %d files passed" % len(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
