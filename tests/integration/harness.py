"""Shared helpers for the integration tests.

Real memcached servers on free loopback ports, the shim library under
LD_PRELOAD, direct queries to each server to see where keys landed.
Every process a test starts is tracked and stopped by pid (never by name).

Environment:
  MCSHIM_BUILD            build directory holding libmcshim.so and tools/ (default build/)
  SANITIZE=1              preload the ASan/UBSan runtimes too; waits scaled by 4
  MCSHIM_TEST_TIME_SCALE  multiplier for every wait and deadline
  MCSHIM_TEST_DIRECT=1    debug the tests themselves: no shim, one real memcached
                          is the "intercept" address, placement checks expect that
                          one server, shim-only tests are skipped
"""
import atexit
import binascii
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HERE = os.path.dirname(os.path.abspath(__file__))
CLIENTS = os.path.join(HERE, "clients")
BUILD = os.environ.get("MCSHIM_BUILD", os.path.join(ROOT, "build"))
LIB = os.path.join(BUILD, "libmcshim.so")
TOOLS = os.path.join(BUILD, "tools")
SANITIZE = os.environ.get("SANITIZE") == "1"
# Sanitizer and valgrind runs are slower: scale every wait by this.
TIME_SCALE = float(os.environ.get("MCSHIM_TEST_TIME_SCALE", "4" if SANITIZE else "1"))
MEMCACHED = shutil.which("memcached") or "/usr/bin/memcached"
# The Debian interpreter that has pymemcache/pylibmc (the first python3 on PATH may not).
PY = "/usr/bin/python3"
DIRECT = os.environ.get("MCSHIM_TEST_DIRECT") == "1"

if CLIENTS not in sys.path:
    sys.path.insert(0, CLIENTS)

# Every memcached this process started, so they can be stopped at exit (by pid).
_STARTED = []


def _stop_all():
    for m in list(_STARTED):
        try:
            m.stop()
        except Exception:
            pass


atexit.register(_stop_all)


def _on_term(signum, frame):
    _stop_all()
    os._exit(128 + signum)


# run.py stops a test file that overran with SIGTERM first: leave no server behind.
if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
    signal.signal(signal.SIGTERM, _on_term)


def scaled(seconds):
    return seconds * TIME_SCALE


def free_port(host="127.0.0.1", family=None):
    """A TCP port that was free a moment ago on host (IPv6 if host has a ':')."""
    if family is None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def wait_port(host, port, timeout=5.0):
    deadline = time.time() + timeout * TIME_SCALE
    while time.time() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


def listener_inodes(port):
    """Socket inodes of the TCP listeners (IPv4 and IPv6) on port, from /proc/net."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    # local_address is ADDR:PORT in hex; state 0A is LISTEN; field 9 the inode
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        found.add(fields[9])
        except OSError:
            pass
    return found


def owns_listener(pid, port):
    """True when process pid holds a socket listening on TCP port. A port that was free a
    moment ago (free_port) may be taken by another process before the server started on
    it binds: connecting to the port then reaches that other process."""
    inodes = listener_inodes(port)
    if not inodes:
        return False
    fd_dir = "/proc/%d/fd" % pid
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return False
    for name in names:
        try:
            link = os.readlink(os.path.join(fd_dir, name))
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


def wait_until(pred, timeout, interval=0.02):
    """Polls pred() until it is true or timeout (scaled) passes. Returns its last value."""
    deadline = time.time() + timeout * TIME_SCALE
    while True:
        v = pred()
        if v or time.time() >= deadline:
            return v
        time.sleep(interval)


def parse_values(out):
    """VALUE items of a get/gets reply: {key: (flags, data, cas or None)}."""
    items = {}
    pos = 0
    while True:
        eol = out.find(b"\r\n", pos)
        if eol < 0:
            break
        line = out[pos:eol]
        if not line.startswith(b"VALUE "):
            break
        parts = line.split()
        n = int(parts[3])
        data = out[eol + 2:eol + 2 + n]
        cas = int(parts[4]) if len(parts) > 4 else None
        items[parts[1].decode("latin-1")] = (int(parts[2]), data, cas)
        pos = eol + 2 + n + 2
    return items


class Memcached:
    """One real memcached server on a free loopback port."""

    def __init__(self, host="127.0.0.1", port=None, extra=()):
        self.host = host
        self.fixed_port = port is not None
        self.port = port or free_port(host)
        self.extra = list(extra)
        self.proc = None
        self.paused = False
        self.started = False
        self.start()

    def start(self):
        """Starts memcached and waits until it listens. Another process may take a port
        picked by free_port before memcached binds it (tests and files run in parallel):
        the server counts as started only when its own process holds the listener, and a
        server whose port was picked here is started again on another port (a restart
        keeps its port: the shim knows the server by it)."""
        for _attempt in range(1 if self.fixed_port or self.started else 5):
            if self._start_once():
                self.started = True
                return
            self.port = free_port(self.host)
        raise RuntimeError("memcached did not start on %s:%d" % (self.host, self.port))

    def _start_once(self):
        args = [MEMCACHED, "-U", "0", "-l", self.host, "-p", str(self.port), "-t", "1", "-m", "64"]
        if os.geteuid() == 0:
            args += ["-u", "root"]
        self.proc = subprocess.Popen(args + self.extra, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.paused = False
        if self not in _STARTED:
            _STARTED.append(self)
        proc = self.proc
        if wait_until(lambda: proc.poll() is not None or owns_listener(proc.pid, self.port), 5.0) \
                and proc.poll() is None and wait_port(self.host, self.port):
            return True
        self.stop()
        return False

    def stop(self):
        """kill -9 (works on a paused server too)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self.paused = False

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def addr(self):
        return "%s:%d" % (self.host, self.port) if ":" not in self.host else "[%s]:%d" % (self.host, self.port)

    def request(self, data, until=b"END\r\n", timeout=2.0):
        """Send raw bytes straight to this server (no shim) and read until `until`."""
        with socket.create_connection((self.host, self.port), timeout=timeout * TIME_SCALE) as s:
            s.sendall(data)
            out = b""
            while not out.endswith(until):
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                out += chunk
            return out

    def get(self, key):
        """Value of key on this server, or None."""
        out = self.request(b"get " + _b(key) + b"\r\n")
        if not out.startswith(b"VALUE "):
            return None
        header, rest = out.split(b"\r\n", 1)
        n = int(header.split()[3])
        return rest[:n]

    def get_item(self, key):
        """(flags, value, cas) of key on this server, or None."""
        return self.get_many([key]).get(_s(key))

    def get_many(self, keys, chunk=100):
        """{key: (flags, value, cas)} for the keys this server holds (batched gets)."""
        keys = [_b(k) for k in keys]
        res = {}
        for i in range(0, len(keys), chunk):
            part = keys[i:i + chunk]
            out = self.request(b"gets " + b" ".join(part) + b"\r\n", until=b"END\r\n", timeout=5.0)
            if not out.endswith(b"END\r\n"):
                raise AssertionError("direct gets to %s: %r" % (self.addr, out[-200:]))
            res.update(parse_values(out))
        return res

    def set(self, key, value, flags=0, exptime=0):
        value = _b(value)
        out = self.request(b"set %s %d %d %d\r\n%s\r\n" % (_b(key), flags, exptime, len(value), value),
                           until=b"\r\n")
        if out != b"STORED\r\n":
            raise AssertionError("direct set to %s: %r" % (self.addr, out))

    def flush(self):
        self.request(b"flush_all\r\n", until=b"OK\r\n")

    def has(self, key):
        return self.get(key) is not None

    def stats(self):
        out = self.request(b"stats\r\n")
        res = {}
        for line in out.split(b"\r\n"):
            parts = line.split()
            if len(parts) == 3 and parts[0] == b"STAT":
                res[parts[1].decode()] = parts[2].decode()
        return res


def _b(x):
    return x if isinstance(x, bytes) else x.encode("latin-1")


def _s(x):
    return x.decode("latin-1") if isinstance(x, bytes) else x


class Cluster:
    """n memcached servers; .servers is the MCSHIM_SERVERS value."""

    def __init__(self, n=4):
        self.nodes = []
        try:
            for _ in range(n):
                self.nodes.append(Memcached())
        except Exception:
            self.stop()
            raise

    @property
    def servers(self):
        return ",".join(m.addr for m in self.nodes)

    def stop(self):
        for m in self.nodes:
            m.stop()

    def ensure_running(self):
        """Restart stopped servers (same port) and resume paused ones."""
        for m in self.nodes:
            if m.proc is None or m.proc.poll() is not None:
                m.proc = None
                m.start()
            elif m.paused:
                m.resume()

    def flush(self):
        for m in self.nodes:
            m.flush()

    def owner_of(self, key):
        """Indices of the servers that hold key (asked directly)."""
        return [i for i, m in enumerate(self.nodes) if m.has(key)]

    def locate(self, keys):
        """{key: [(index, flags, value), ...]} over every server (batched gets)."""
        res = {_s(k): [] for k in keys}
        for i, m in enumerate(self.nodes):
            if m.proc is None or m.paused:
                continue  # a stopped or paused server holds nothing we can see
            for k, (flags, value, _cas) in m.get_many(keys).items():
                res.setdefault(k, []).append((i, flags, value))
        return res


# The host-wide state segment (MCSHIM_SHARED) of the shim processes a test starts:
# one file per test and server list, in a directory removed when the run ends, so
# a server one test left down is not down for the next test's processes.
SEG_DIR = tempfile.mkdtemp(prefix="mcshim-seg-")
atexit.register(shutil.rmtree, SEG_DIR, True)
_current_test = [""]
_unittest_run = unittest.TestCase.run


def _run_noting_test(self, result=None):
    _current_test[0] = self.id()
    return _unittest_run(self, result)


unittest.TestCase.run = _run_noting_test


def segment_path(servers, test=None):
    """The MCSHIM_SHARED file preload_env gives the current test's processes for servers."""
    tag = "%s|%s" % (_current_test[0] if test is None else test, servers)
    return os.path.join(SEG_DIR, hashlib.sha1(tag.encode()).hexdigest()[:16] + ".seg")


def preload_env(servers, intercept, extra=None, base=None):
    """Environment for a client process running under the shim. Unless extra or
    base sets MCSHIM_SHARED, the process shares host-wide state with the other
    processes of the same test and server list only (segment_path)."""
    env = dict(base if base is not None else os.environ)
    if "MCSHIM_SHARED" not in env or base is None:
        env["MCSHIM_SHARED"] = segment_path(servers)
    preload = [LIB]
    if SANITIZE:
        # The sanitizer runtime must come first in LD_PRELOAD for an uninstrumented host.
        asan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
        ubsan = subprocess.run(["gcc", "-print-file-name=libubsan.so"], capture_output=True, text=True).stdout.strip()
        preload = [asan, ubsan] + preload
        env["ASAN_OPTIONS"] = "detect_leaks=0:verify_asan_link_order=0:abort_on_error=1"
        env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    env["LD_PRELOAD"] = " ".join(preload)
    # make test's engine-path pass: every shim in the run without the fast path
    if os.environ.get("MCSHIM_TEST_FAST_PATH"):
        env["MCSHIM_FAST_PATH"] = os.environ["MCSHIM_TEST_FAST_PATH"]
    if servers is not None:
        env["MCSHIM_SERVERS"] = servers
    if intercept is not None:
        env["MCSHIM_INTERCEPT"] = intercept
    if extra:
        for k, v in extra.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
    return env


def plain_env(base=None):
    """Environment without the shim (for direct runs)."""
    env = dict(base if base is not None else os.environ)
    env.pop("LD_PRELOAD", None)
    for k in list(env):
        if k.startswith("MCSHIM_") and not k.startswith("MCSHIM_TEST_") and k != "MCSHIM_BUILD":
            del env[k]
    return env


# ---------------------------------------------------------------------------------------
# Ring: the tool under test's own answer (build/tools/mcshim_ring) and an independent
# reference written from twemproxy's nc_ketama.c / nc_modula.c (md5, crc32a, fnv1a_32,
# one_at_a_time key hashes), used when the tool is missing and to cross-check it.

def _f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def _md5_word(data, i=0):
    d = hashlib.md5(data).digest()
    return struct.unpack_from("<I", d, 4 * i)[0]


def _key_hash(name, key):
    if name == "md5":
        return _md5_word(key)
    if name == "crc32a":
        return binascii.crc32(key) & 0xffffffff
    if name == "fnv1a_32":
        h = 0x811c9dc5
        for c in key:
            h ^= (c | 0xffffff00) if c >= 128 else c  # (uint32_t)(signed char)
            h = (h * 0x01000193) & 0xffffffff
        return h
    if name == "one_at_a_time":
        h = 0
        for c in key:
            c = c - 256 if c >= 128 else c  # signed char, as twemproxy on x86-64
            h = (h + c) & 0xffffffff
            h = (h + (h << 10)) & 0xffffffff
            h ^= h >> 6
        h = (h + (h << 3)) & 0xffffffff
        h ^= h >> 11
        h = (h + (h << 15)) & 0xffffffff
        return h
    raise ValueError("reference ring has no hash %r" % name)


def _parse_servers(servers):
    out = []
    for entry in servers.split(","):
        name = None
        if " " in entry:
            entry, name = entry.split(" ", 1)
        if entry.startswith("["):
            host, rest = entry[1:].split("]", 1)
            parts = [host] + rest.lstrip(":").split(":")
        else:
            parts = entry.split(":")
        host, port = parts[0], int(parts[1])
        weight = int(parts[2]) if len(parts) > 2 else 1
        out.append((host, port, weight, name))
    return out


def ring_points_ref(servers, hash_name="md5"):
    """The ketama continuum of the reference ring: sorted (point, rank, index)."""
    srv = _parse_servers(servers)
    names = [name if name else (host if port == 11211 else "%s:%d" % (host, port)) for host, port, _w, name in srv]
    order = sorted(range(len(srv)), key=lambda i: (len(names[i].encode()), names[i].encode()))
    rank = {i: r for r, i in enumerate(order)}
    total = sum(w for _h, _p, w, _n in srv)
    points = []
    for i, (_host, _port, w, _name) in enumerate(srv):
        pct = _f32(_f32(float(w)) / _f32(float(total)))
        # (float)(pct * 160 / 4 * (float)n + 0.0000000001), each float op rounded
        x = _f32(_f32(_f32(pct * 160.0) / 4.0) * _f32(float(len(srv))))
        per = int(_f32(x + 0.0000000001) // 1) * 4
        for k in range(per // 4):
            label = ("%s-%d" % (names[i], k)).encode()
            for a in range(4):
                points.append((_md5_word(label, a), rank[i], i))
    points.sort()
    return points


def ring_owner_ref(servers, keys, hash_name="md5", dist="ketama"):
    """Reference placement (twemproxy's formulas), independent of the C code."""
    srv = _parse_servers(servers)
    names = [name if name else (host if port == 11211 else "%s:%d" % (host, port)) for host, port, _w, name in srv]
    # nutcracker sorts its pool by name (shorter first, then bytewise) while checking for
    # duplicates, and that order is its server order: modula slots and ketama ties follow it.
    order = sorted(range(len(srv)), key=lambda i: (len(names[i].encode()), names[i].encode()))
    if dist == "modula":
        slots = []
        for i in order:
            slots += [i] * srv[i][2]
        return [slots[_key_hash(hash_name, _b(k)) % len(slots)] for k in keys]
    if dist != "ketama":
        raise ValueError(dist)
    points = ring_points_ref(servers, hash_name)
    values = [p[0] for p in points]
    import bisect
    res = []
    for k in keys:
        h = _key_hash(hash_name, _b(k))
        j = bisect.bisect_left(values, h)
        if j == len(points):
            j = 0
        res.append(points[j][2])
    return res


def ring_tool():
    tool = os.path.join(TOOLS, "mcshim_ring")
    return tool if os.access(tool, os.X_OK) else None


def ring_owner(servers, keys, hash_name="md5", dist="ketama"):
    """Server index ketama assigns to each key, from build/tools/mcshim_ring
    (the reference implementation above when the tool is not built)."""
    tool = ring_tool()
    if tool is None:
        return ring_owner_ref(servers, keys, hash_name, dist)
    out = subprocess.run([tool, "-s", servers, "-H", hash_name, "-d", dist],
                         input=b"\n".join(_b(k) for k in keys) + b"\n", capture_output=True,
                         check=True).stdout
    res = [int(line.split(b"\t")[1]) for line in out.split(b"\n") if line]
    if len(res) != len(keys):
        raise AssertionError("mcshim_ring printed %d lines for %d keys" % (len(res), len(keys)))
    return res


def run(args, env, timeout=30, input=None, check=True):
    """Run a client command; fail the test with its output if it fails."""
    p = subprocess.run(args, env=env, capture_output=True, timeout=timeout * TIME_SCALE, input=input)
    if check and p.returncode != 0:
        raise AssertionError("%s exited %d\nstdout: %s\nstderr: %s" % (
            args, p.returncode, p.stdout.decode(errors="replace")[-3000:], p.stderr.decode(errors="replace")[-3000:]))
    return p


def run_json(args, env, timeout=30, input=None):
    """Run a client that prints one JSON document as its last stdout line."""
    p = run(args, env, timeout=timeout, input=input)
    lines = p.stdout.decode(errors="replace").strip().splitlines()
    if not lines:
        raise AssertionError("%s printed nothing; stderr: %s" % (args, p.stderr.decode(errors="replace")[-2000:]))
    return json.loads(lines[-1])


def shim_stderr_lines(p):
    """stderr lines of a finished client, without sanitizer noise."""
    return [l for l in p.stderr.decode(errors="replace").splitlines() if l.strip()]


def requires_shim(f):
    """Skip in MCSHIM_TEST_DIRECT mode (the test is about the shim itself)."""
    return unittest.skipIf(DIRECT, "shim-only test (MCSHIM_TEST_DIRECT=1)")(f)


class Driver:
    """A long-lived raw socket client (clients/driver.py) under the shim, driven step by
    step so the test can kill, pause and resume servers between requests."""

    def __init__(self, env, intercept):
        self.proc = subprocess.Popen([PY, os.path.join(CLIENTS, "driver.py"), intercept], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.stderr_path = None

    def call(self, timeout=10.0, **cmd):
        """Send one command; returns its result dict. Bounded by timeout (scaled)."""
        if "data" in cmd:
            cmd["data"] = binascii.b2a_base64(_b(cmd["data"]), newline=False).decode()
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()
        import select
        deadline = time.time() + timeout * TIME_SCALE
        line = b""
        fd = self.proc.stdout.fileno()
        while not line.endswith(b"\n"):
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError("driver gave no answer to %r within %.1fs" % (cmd.get("op"), timeout))
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise AssertionError("driver exited (rc=%s): %s" % (
                        self.proc.poll(), self.proc.stderr.read().decode(errors="replace")[-2000:]))
                line += chunk
        res = json.loads(line)
        if "reply" in res and res["reply"] is not None:
            res["reply"] = binascii.a2b_base64(res["reply"])
        return res

    def req(self, data, kind="line", conn="a", timeout=5.0):
        """Send data on connection conn and read one reply of `kind` (line, get, eof).
        Returns (reply bytes, elapsed seconds, error or None)."""
        r = self.call(timeout=timeout + 5, op="req", conn=conn, data=data, kind=kind,
                      read_timeout=timeout * TIME_SCALE)
        return r.get("reply"), r.get("elapsed"), r.get("error")

    def send(self, data, conn="a"):
        r = self.call(op="send", conn=conn, data=data)
        if r.get("error"):
            raise AssertionError("driver send: %s" % r["error"])

    def recv(self, kind="line", conn="a", timeout=5.0):
        """Reads the reply to an earlier send. Returns (reply, seconds since the send, error)."""
        r = self.call(timeout=timeout + 5, op="recv", conn=conn, kind=kind, read_timeout=timeout * TIME_SCALE)
        return r.get("reply"), r.get("elapsed"), r.get("error")

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=5 * TIME_SCALE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        err = self.proc.stderr.read().decode(errors="replace")
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.proc.returncode, err

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ClusterTest(unittest.TestCase):
    """Base class: a fresh 4-server cluster per test class and an unused intercept port."""

    nservers = 4

    @classmethod
    def setUpClass(cls):
        if DIRECT:
            cls.cluster = Cluster(1)
            cls.intercept_port = cls.cluster.nodes[0].port
            cls.intercept = cls.cluster.nodes[0].addr
        else:
            if not os.path.exists(LIB):
                raise AssertionError("%s is not built (make all, or set MCSHIM_BUILD)" % LIB)
            cls.cluster = Cluster(cls.nservers)
            cls.intercept_port = free_port()
            cls.intercept = "127.0.0.1:%d" % cls.intercept_port
        cls.tmp = tempfile.mkdtemp(prefix="mcshim-test-")

    @classmethod
    def tearDownClass(cls):
        cls.cluster.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.cluster.ensure_running()
        for m in self.cluster.nodes:
            m.request(b"flush_all\r\n", until=b"OK\r\n")

    def env(self, extra=None):
        if DIRECT:
            return plain_env()
        return preload_env(self.cluster.servers, self.intercept, extra)

    def owners(self, keys, hash_name="md5", dist="ketama", servers=None):
        if DIRECT:
            return [0] * len(keys)
        return ring_owner(servers or self.cluster.servers, keys, hash_name, dist)

    def assert_on_ring(self, keys, hash_name="md5", dist="ketama", values=None, servers=None):
        """Each key is on exactly the server the ring names, and nowhere else.
        values: optional {key: bytes or {"len":, "sha1":, "flags":}} to check the stored item too.
        servers: the MCSHIM_SERVERS string used (weights, names), default the cluster's."""
        keys = [_s(k) for k in keys]
        want = self.owners(keys, hash_name, dist, servers)
        found = self.cluster.locate(keys)
        for key, idx in zip(keys, want):
            where = [i for i, _f, _v in found[key]]
            self.assertEqual(where, [idx], "key %r: on servers %s, ring says %d" % (key, where, idx))
            if values is not None and key in values:
                _i, flags, value = found[key][0]
                check_value(self, key, values[key], flags, value)

    def assert_absent(self, keys):
        """None of keys is on any server."""
        found = self.cluster.locate(keys)
        for key in keys:
            self.assertEqual(found[_s(key)], [], "key %r should be gone" % key)

    def check_report(self, report, min_servers=None, **ring):
        """A client's JSON report {"expect": {key: spec}, "absent": [keys]}: every expected
        key is on its ring server only, with that content; absent keys are nowhere.
        Returns the number of keys checked."""
        expect = report.get("expect", {})
        if expect:
            self.assert_on_ring(list(expect), values=expect, **ring)
            if min_servers:
                self.assert_spread(list(expect), min_servers)
        if report.get("absent"):
            self.assert_absent(report["absent"])
        return len(expect)

    def run_client(self, args, extra=None, timeout=60, min_servers=None, **ring):
        """Runs a client (under the shim) that prints a report; checks the report.
        ring: hash_name/dist/servers for the placement check (match extra's MCSHIM_*)."""
        report = run_json(args, self.env(extra), timeout=timeout)
        n = self.check_report(report, min_servers, **ring)
        return report, n

    def assert_spread(self, keys, min_servers=None):
        """The test's keys span several servers, so it really exercises the pool.

        Where keys land depends on the ring, which depends on the (random) ports, so a
        small key set cannot be required to reach every server: the guard asks for
        min_servers only when the keys are many enough to make missing one a
        one-in-a-million event (16 per server), else for at least two servers."""
        if DIRECT:
            return
        used = set(self.owners(keys))
        want = min_servers or len(self.cluster.nodes)
        if len(keys) < 16 * want:
            want = min(want, 2)
        self.assertGreaterEqual(len(used), want, "keys %r all on servers %r" % (keys[:8], used))


class ToolFiles:
    """Mixin for a ClusterTest that runs the libmemcached CLI tools (memccp, memccat, ...):
    files written to the class's tmp dir, and tool() to run one against the intercept
    address with the test's environment."""

    tool_flags = ()  # options every tool call gets before --servers (e.g. "--binary")

    @staticmethod
    def small_files(prefix, n):
        """{"<prefix>-small-NN.txt": a few short lines} for NN in 0..n-1."""
        return {"%s-small-%02d.txt" % (prefix, i): ("file %d\n" % i).encode() * (i + 1) for i in range(n)}

    def write_files(self, contents):
        """Writes {name: bytes} into the tmp dir; sets self.files = {name: (path, bytes)}."""
        self.files = {}
        for name, data in contents.items():
            path = os.path.join(self.tmp, name)
            with open(path, "wb") as f:
                f.write(data)
            self.files[name] = (path, data)

    def tool(self, *args, check=True, timeout=30):
        return run(list(args) + list(self.tool_flags) + ["--servers=" + self.intercept], self.env(), timeout=timeout,
                   check=check)


def check_value(tc, key, want, flags, value):
    if isinstance(want, (bytes, str)):
        tc.assertEqual(value, _b(want), "value of %r on its server" % key)
        return
    if "len" in want:
        tc.assertEqual(len(value), want["len"], "length of %r on its server" % key)
    if "sha1" in want:
        tc.assertEqual(hashlib.sha1(value).hexdigest(), want["sha1"], "sha1 of %r on its server" % key)
    if "value" in want:
        tc.assertEqual(value, _b(want["value"]), "value of %r on its server" % key)
    if "flags" in want:
        tc.assertEqual(flags, want["flags"], "flags of %r on its server" % key)


# ---------------------------------------------------------------------------------------
# Replica placement: the servers a key's copies go to along the primary ring.

def ring_walk_ref(servers, keys, n, hash_name="md5"):
    """For each key, the first n distinct server indices met walking the ketama
    continuum clockwise from the key's point: [owner, next distinct, ...]
    (MCSHIM_REPLICAS=n places a key's copies on exactly these)."""
    import bisect
    points = ring_points_ref(servers, hash_name)
    values = [p[0] for p in points]
    nservers = len(_parse_servers(servers))
    n = min(n, nservers)
    res = []
    for k in keys:
        j = bisect.bisect_left(values, _key_hash(hash_name, _b(k)))
        walk = []
        for step in range(len(points)):
            idx = points[(j + step) % len(points)][2]
            if idx not in walk:
                walk.append(idx)
                if len(walk) == n:
                    break
        res.append(walk)
    return res
