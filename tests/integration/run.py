#!/usr/bin/env python3
"""Run every tests/integration/test_*.py in its own process, with a time limit.

MCSHIM_TEST_PATTERN narrows the files (glob), e.g. MCSHIM_TEST_PATTERN='test_php*'.
Exit status 0 only if every file passed.
"""
import fnmatch
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCALE = float(os.environ.get("MCSHIM_TEST_TIME_SCALE", "4" if os.environ.get("SANITIZE") == "1" else "1"))
LIMIT = 240 * SCALE


def main():
    pattern = os.environ.get("MCSHIM_TEST_PATTERN", "test_*.py")
    files = sorted(f for f in os.listdir(HERE) if fnmatch.fnmatch(f, pattern) and f.endswith(".py"))
    failed = []
    for f in files:
        start = time.time()
        print("== %s" % f, flush=True)
        try:
            p = subprocess.run([sys.executable, "-m", "unittest", "-v", f[:-3]], cwd=HERE, timeout=LIMIT)
            ok = p.returncode == 0
        except subprocess.TimeoutExpired:
            print("%s: timed out after %ds" % (f, LIMIT), flush=True)
            ok = False
        print("== %s %s (%.1fs)" % (f, "ok" if ok else "FAILED", time.time() - start), flush=True)
        if not ok:
            failed.append(f)
    if failed:
        print("integration: failed: %s" % " ".join(failed))
        return 1
    print("integration: %d files passed" % len(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
