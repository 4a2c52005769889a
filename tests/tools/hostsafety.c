/*
 * hostsafety: the shim stays safe for its host when it cannot do its job
 * (docs/interposition.md "When the shim cannot take a connection",
 * "Descriptors"). Driven by tests/integration/test_host_safety_shim.py.
 *
 *   hostsafety emfile <host> <port> <prefix>
 *       Connection 0 stores <prefix>-prime-0..63 (opens the backends), then
 *       connections 1, 2, ... each store <prefix>-<i> until socket() or
 *       connect() fails (the test lowers RLIMIT_NOFILE). Then three
 *       connections are closed and one more must work.
 *   hostsafety nproc <host> <port> <prefix>
 *       With RLIMIT_NPROC's soft limit at 1 (the test runs it as a non-root
 *       user, so the limit applies): connect; then raise the soft limit to the
 *       hard one and connect again.
 *   hostsafety forkfail <host> <port> <prefix>
 *       An intercepted connection, then fork() under the lowest RLIMIT_NPROC
 *       that lets fork succeed, so the child cannot start an engine thread:
 *       the child's copy must be closed (EOF), not shared with the parent.
 *   hostsafety closerange <host> <port> <prefix> <mode>
 *       An intercepted connection A works; then the shim's descriptors are
 *       closed by raw syscall (mode: range = close_range over the shim's
 *       numbers, loop = close() of each number from 3 up, app's A excepted,
 *       all = close_range(3, ~0U)); every number the shim had is taken by a
 *       sentinel socket the tool watches; new connections must work and no
 *       sentinel may ever receive a byte. The cycle runs twice.
 *   hostsafety family <host|path> <port|-> <prefix>
 *       connect() with every pairing of socket domain, address family and
 *       length; rc and errno of each (compared by the test with the kernel's
 *       own answers, from a run without the shim).
 *
 * The last line of output is one JSON object: "keys" (stored, for the
 * placement check), "failures" (must be empty) and command-specific fields.
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_close_range
#define SYS_close_range 436
#endif

#define IO_TIMEOUT_MS 3000
#define MAX_ITEMS 512

static char g_keys[MAX_ITEMS][96];
static int g_nkeys;
static char g_failures[64][256];
static int g_nfailures;
static char g_extra[8192];   /* command-specific JSON members, each ending in "," */
static int g_timeout_ms = IO_TIMEOUT_MS;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void
fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char msg[256];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "FAIL %s\n", msg);
    if (g_nfailures < 64) {
        /* no quotes or backslashes in JSON strings */
        for (char *p = msg; *p; p++) {
            if (*p == '"' || *p == '\\' || (unsigned char)*p < 32) {
                *p = '?';
            }
        }
        snprintf(g_failures[g_nfailures++], sizeof(g_failures[0]), "%s", msg);
    }
}

static void extra(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void
extra(const char *fmt, ...)
{
    size_t n = strlen(g_extra);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_extra + n, sizeof(g_extra) - n, fmt, ap);
    va_end(ap);
}

static void
add_key(const char *k)
{
    if (g_nkeys < MAX_ITEMS) {
        snprintf(g_keys[g_nkeys++], sizeof(g_keys[0]), "%s", k);
    }
}

static int
finish(void)
{
    printf("{%s\"keys\": [", g_extra);
    for (int i = 0; i < g_nkeys; i++) {
        printf("%s\"%s\"", i ? ", " : "", g_keys[i]);
    }
    printf("], \"failures\": [");
    for (int i = 0; i < g_nfailures; i++) {
        printf("%s\"%s\"", i ? ", " : "", g_failures[i]);
    }
    printf("]}\n");
    fflush(stdout);
    return g_nfailures == 0 ? 0 : 1;
}

static const char *
errname(int e)
{
    const char *n = e ? strerrorname_np(e) : "0";
    return n ? n : "?";
}

static void
sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ------------------------------------------------------------------ */
/* Addresses and memcached round trips                                 */

static struct sockaddr_storage g_addr;
static socklen_t g_addrlen;

static int
set_target(const char *host, const char *port)
{
    memset(&g_addr, 0, sizeof(g_addr));
    if (strcmp(port, "-") == 0) {
        struct sockaddr_un *un = (struct sockaddr_un *)&g_addr;
        un->sun_family = AF_UNIX;
        snprintf(un->sun_path, sizeof(un->sun_path), "%s", host);
        g_addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(host) + 1);
        return 0;
    }
    struct sockaddr_in *in = (struct sockaddr_in *)&g_addr;
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)atoi(port));
    if (inet_pton(AF_INET, host, &in->sin_addr) != 1) {
        return -1;
    }
    g_addrlen = sizeof(*in);
    return 0;
}

/* A connected socket to the target, or -1 with errno (the connect's). */
static int
dial(void)
{
    int fd = socket(g_addr.ss_family, SOCK_STREAM, 0);
    if (fd < 0) {
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&g_addr, g_addrlen) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -2;
    }
    return fd;
}

/* Sends req, reads until the reply ends with `until`. Returns bytes read, 0 on
 * EOF before anything, -1 on error or timeout (errno ETIMEDOUT). */
static ssize_t
ask(int fd, const char *req, const char *until, char *out, size_t cap)
{
    size_t n = strlen(req), off = 0;
    while (off < n) {
        ssize_t w = send(fd, req + off, n - off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        off += (size_t)w;
    }
    size_t got = 0, ul = strlen(until);
    out[0] = 0;
    while (got < ul || memcmp(out + got - ul, until, ul) != 0) {
        struct pollfd p = { fd, POLLIN, 0 };
        int r = poll(&p, 1, g_timeout_ms);
        if (r == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        if (got + 1 >= cap) {
            errno = EMSGSIZE;
            return -1;
        }
        ssize_t k = recv(fd, out + got, cap - 1 - got, 0);
        if (k == 0) {
            return (ssize_t)got;
        }
        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        got += (size_t)k;
        out[got] = 0;
    }
    return (ssize_t)got;
}

/* set key=value; returns 0 on STORED. */
static int
store(int fd, const char *key, const char *what)
{
    char req[256], out[256];
    snprintf(req, sizeof(req), "set %s 0 0 %zu\r\n%s\r\n", key, strlen(key), key);
    ssize_t n = ask(fd, req, "\r\n", out, sizeof(out));
    if (n <= 0 || strcmp(out, "STORED\r\n") != 0) {
        fail("%s: set %s: %s (%s)", what, key, n > 0 ? out : n == 0 ? "EOF" : "error", n < 0 ? errname(errno) : "-");
        return -1;
    }
    add_key(key);
    return 0;
}

/* get key; returns 0 if the value is the key itself. */
static int
fetch(int fd, const char *key, const char *what)
{
    char req[256], out[512], want[512];
    snprintf(req, sizeof(req), "get %s\r\n", key);
    snprintf(want, sizeof(want), "VALUE %s 0 %zu\r\n%s\r\nEND\r\n", key, strlen(key), key);
    ssize_t n = ask(fd, req, "END\r\n", out, sizeof(out));
    if (n <= 0 || strcmp(out, want) != 0) {
        fail("%s: get %s: %s (%s)", what, key, n > 0 ? out : n == 0 ? "EOF" : "error", n < 0 ? errname(errno) : "-");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* emfile                                                              */

static int
cmd_emfile(const char *prefix)
{
    static int conns[4096];
    int n = 0;
    char key[96];
    int fd = dial();
    if (fd < 0) {
        fail("first connection: %s", errname(errno));
        return finish();
    }
    for (int i = 0; i < 64; i++) {
        snprintf(key, sizeof(key), "%s-prime-%d", prefix, i);
        store(fd, key, "priming");
    }
    conns[n++] = fd;
    int sock_errno = 0, conn_errno = 0;
    while (n < 4096) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0) {
            sock_errno = errno;
            break;
        }
        if (connect(s, (struct sockaddr *)&g_addr, g_addrlen) != 0) {
            conn_errno = errno;
            close(s);
            break;
        }
        snprintf(key, sizeof(key), "%s-%d", prefix, n);
        store(s, key, "connection");
        conns[n++] = s;
    }
    extra("\"connections\": %d, \"socket_errno\": \"%s\", \"connect_errno\": \"%s\", ", n, errname(sock_errno),
          errname(conn_errno));
    /* Room again: a new connection works. */
    for (int i = 0; i < 3 && n > 1; i++) {
        close(conns[--n]);
    }
    fd = dial();
    if (fd < 0) {
        fail("connection after closing three: %s", errname(errno));
    } else {
        snprintf(key, sizeof(key), "%s-after", prefix);
        if (store(fd, key, "after") == 0) {
            fetch(fd, key, "after");
        }
        close(fd);
    }
    return finish();
}

/* ------------------------------------------------------------------ */
/* nproc                                                               */

static void
nproc_attempt(const char *name, const char *key)
{
    int fd = dial();
    int e = errno;
    extra("\"%s\": \"%s\", ", name, fd >= 0 ? "0" : errname(e));
    if (fd >= 0) {
        if (store(fd, key, name) == 0) {
            fetch(fd, key, name);
        }
        close(fd);
    }
}

static int
cmd_nproc(const char *prefix)
{
    struct rlimit rl;
    char key[96];
    getrlimit(RLIMIT_NPROC, &rl);
    struct rlimit low = { 1, rl.rlim_max };
    if (setrlimit(RLIMIT_NPROC, &low) != 0) {
        fail("setrlimit NPROC: %s", errname(errno));
        return finish();
    }
    snprintf(key, sizeof(key), "%s-limited", prefix);
    nproc_attempt("limited", key);
    snprintf(key, sizeof(key), "%s-limited-again", prefix);
    nproc_attempt("limited_again", key);
    setrlimit(RLIMIT_NPROC, &rl);
    snprintf(key, sizeof(key), "%s-raised", prefix);
    nproc_attempt("raised", key);
    return finish();
}

/* ------------------------------------------------------------------ */
/* forkfail                                                            */

/* In the child: what its copy of the connection is. Writes one word to out. */
static void
forkfail_child(int fd, const char *key, int out)
{
    char res[128], buf[256];
    ssize_t k = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    const char *peek = k == 0 ? "EOF" : k > 0 ? "data" : errno == EAGAIN ? "open" : errname(errno);
    char req[128];
    snprintf(req, sizeof(req), "get %s\r\n", key);
    ssize_t n = ask(fd, req, "END\r\n", buf, sizeof(buf));
    snprintf(res, sizeof(res), "%s %s", peek, n > 0 ? "reply" : n == 0 ? "EOF" : errname(errno));
    if (write(out, res, strlen(res)) < 0) {
        _exit(3);
    }
    _exit(0);
}

static int
cmd_forkfail(const char *prefix)
{
    char key[96];
    int fd = dial();
    if (fd < 0) {
        fail("connect: %s", errname(errno));
        return finish();
    }
    snprintf(key, sizeof(key), "%s-parent", prefix);
    store(fd, key, "parent");
    int p[2];
    if (pipe(p) != 0) {
        fail("pipe: %s", errname(errno));
        return finish();
    }
    struct rlimit rl;
    getrlimit(RLIMIT_NPROC, &rl);
    pid_t pid = -1;
    rlim_t k;
    rlim_t most = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 1000000 ? 1000000 : rl.rlim_cur;
    for (k = 1; k <= most; k++) {
        struct rlimit low = { k, rl.rlim_max };
        setrlimit(RLIMIT_NPROC, &low);
        pid = fork();
        if (pid == 0) {
            close(p[0]);
            forkfail_child(fd, key, p[1]);
        }
        if (pid > 0 || errno != EAGAIN) {
            break;
        }
    }
    setrlimit(RLIMIT_NPROC, &rl);
    close(p[1]);
    if (pid < 0) {
        fail("fork: %s", errname(errno));
        return finish();
    }
    char res[128] = "";
    ssize_t n = read(p[0], res, sizeof(res) - 1);
    res[n > 0 ? n : 0] = 0;
    int st;
    waitpid(pid, &st, 0);
    extra("\"nproc\": %lu, \"child\": \"%s\", ", (unsigned long)k, res);
    fetch(fd, key, "parent after the fork");
    close(fd);
    return finish();
}

/* ------------------------------------------------------------------ */
/* closerange                                                          */

static int
cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Descriptors >= 3 that are open, except those in skip[], ascending. */
static int
open_fds(int *out, int cap, const int *skip, int nskip)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL) {
        return -1;
    }
    int n = 0, self = dirfd(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL && n < cap) {
        if (de->d_name[0] == '.') {
            continue;
        }
        int fd = atoi(de->d_name);
        int skipped = fd < 3 || fd == self;
        for (int i = 0; i < nskip; i++) {
            skipped |= fd == skip[i];
        }
        if (!skipped) {
            out[n++] = fd;
        }
    }
    closedir(d);
    qsort(out, (size_t)n, sizeof(*out), cmp_int);
    return n;
}

struct sentinel {
    int number;   /* the shim's old number, now ours */
    int peer;     /* where bytes written to it arrive */
};

static struct sentinel g_sent[1024];
static int g_nsent;

/* Takes every number in fds[] (ascending) with a socket of our own whose peer,
 * moved above them all, we watch. */
static void
plant_sentinels(const int *fds, int n)
{
    int hi = 0;
    for (int i = 0; i < n; i++) {
        hi = fds[i] > hi ? fds[i] : hi;
    }
    for (int i = 0; i < n && g_nsent < 1024; i++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
            fail("sentinel socketpair: %s", errname(errno));
            return;
        }
        int peer = fcntl(sv[1], F_DUPFD, hi + 512);
        close(sv[1]);
        if (peer < 0) {
            fail("sentinel peer: %s", errname(errno));
            close(sv[0]);
            return;
        }
        if (sv[0] != fds[i]) {
            if (dup2(sv[0], fds[i]) != fds[i]) {
                fail("sentinel dup2 onto %d: %s", fds[i], errname(errno));
                close(sv[0]);
                close(peer);
                continue;
            }
            close(sv[0]);
        }
        g_sent[g_nsent].number = fds[i];
        g_sent[g_nsent].peer = peer;
        g_nsent++;
    }
}

static void
drop_sentinels(void)
{
    for (int i = 0; i < g_nsent; i++) {
        close(g_sent[i].number);
        close(g_sent[i].peer);
    }
    g_nsent = 0;
}

/* No sentinel received anything, and every one is still open. */
static void
check_sentinels(const char *when)
{
    for (int i = 0; i < g_nsent; i++) {
        char buf[64];
        ssize_t k = recv(g_sent[i].peer, buf, sizeof(buf), MSG_DONTWAIT);
        if (k > 0) {
            char hex[3 * 16 + 1] = "";
            for (ssize_t j = 0; j < k && j < 16; j++) {
                snprintf(hex + 3 * j, 4, "%02x ", (unsigned char)buf[j]);
            }
            fail("%s: descriptor %d (once the shim's) received %zd bytes: %s", when, g_sent[i].number, k, hex);
        } else if (k == 0) {
            fail("%s: descriptor %d (once the shim's, now the tool's) was closed", when, g_sent[i].number);
        }
        if (fcntl(g_sent[i].number, F_GETFD) < 0) {
            fail("%s: descriptor %d (now the tool's) is no longer open", when, g_sent[i].number);
        }
    }
}

/* A connection whose engine end was closed: EOF or a reset, within the timeout. */
static void
expect_dead(int fd, const char *what)
{
    char out[256];
    ssize_t n = ask(fd, "get x\r\n", "END\r\n", out, sizeof(out));
    if (n > 0) {
        fail("%s: still answered after its engine end was closed: %s", what, out);
    } else if (n < 0 && errno == ETIMEDOUT) {
        fail("%s: hangs after its engine end was closed (no EOF)", what);
    }
}

static int
raw_close_engine(const char *mode, int keep, int *closed, int cap)
{
    int skip[1] = { keep };
    int n = open_fds(closed, cap, skip, keep >= 0 ? 1 : 0);
    if (n <= 0) {
        fail("no descriptor of the shim to close (%d)", n);
        return n;
    }
    int lo = closed[0], hi = closed[0];
    for (int i = 1; i < n; i++) {
        lo = closed[i] < lo ? closed[i] : lo;
        hi = closed[i] > hi ? closed[i] : hi;
    }
    if (strcmp(mode, "range") == 0) {
        if (keep >= lo) {
            fail("the tool's own descriptor %d is inside the shim's range %d..%d", keep, lo, hi);
        }
        if (syscall(SYS_close_range, (unsigned)lo, ~0U, 0) != 0) {
            fail("close_range: %s", errname(errno));
        }
    } else if (strcmp(mode, "loop") == 0) {
        /* A daemon's sweep: close(2) of every number, by raw syscall. */
        for (int fd = 3; fd <= hi + 64; fd++) {
            if (fd != keep) {
                syscall(SYS_close, fd);
            }
        }
    } else {
        syscall(SYS_close_range, 3U, ~0U, 0);
    }
    return n;
}

static int
cmd_closerange(const char *prefix, const char *mode)
{
    char key[96], what[64];
    int all = strcmp(mode, "all") == 0;
    for (int round = 0; round < 2; round++) {
        snprintf(what, sizeof(what), "round %d A", round);
        int a = dial();
        if (a < 0) {
            fail("%s: connect: %s", what, errname(errno));
            return finish();
        }
        snprintf(key, sizeof(key), "%s-%d-a", prefix, round);
        store(a, key, what);
        fetch(a, key, what);
        int fds[1024];
        int n = raw_close_engine(mode, all ? -1 : a, fds, 1024);
        extra("\"round%d_closed\": %d, ", round, n);
        if (!all) {
            expect_dead(a, what);
            close(a);
        }
        /* Every number the shim had is now the tool's. */
        plant_sentinels(fds, n);
        int b = dial();
        snprintf(what, sizeof(what), "round %d B", round);
        if (b < 0) {
            fail("%s: connect: %s", what, errname(errno));
            return finish();
        }
        snprintf(key, sizeof(key), "%s-%d-b", prefix, round);
        if (store(b, key, what) == 0) {
            fetch(b, key, what);
        }
        check_sentinels(what);
        /* Long enough for the abandoned engine to wake up, notice and leave. */
        sleep_ms(1500);
        fetch(b, key, what);
        snprintf(what, sizeof(what), "round %d C", round);
        int c = dial();
        if (c < 0) {
            fail("%s: connect: %s", what, errname(errno));
            return finish();
        }
        snprintf(key, sizeof(key), "%s-%d-c", prefix, round);
        if (store(c, key, what) == 0) {
            fetch(c, key, what);
        }
        check_sentinels(what);
        /* A plain socketpair works. */
        int sv[2];
        char byte = 0;
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0 || write(sv[0], "z", 1) != 1 || read(sv[1], &byte, 1) != 1
            || byte != 'z') {
            fail("round %d: a plain socketpair does not work", round);
        }
        close(sv[0]);
        close(sv[1]);
        close(b);
        close(c);
        drop_sentinels();
    }
    return finish();
}

/* ------------------------------------------------------------------ */
/* family                                                              */

struct pairing {
    const char *name;
    int domain;
    int family;     /* of the sockaddr given */
    int mapped;     /* AF_INET6 ::ffff:a.b.c.d of the IPv4 target; 2: on an IPV6_V6ONLY socket */
    socklen_t len;
};

static const struct pairing inet_pairings[] = {
    { "inet-in-16", AF_INET, AF_INET, 0, 16 },
    { "inet-in-15", AF_INET, AF_INET, 0, 15 },
    { "inet-in-28", AF_INET, AF_INET, 0, 28 },
    { "inet-in6mapped-28", AF_INET, AF_INET6, 1, 28 },
    { "inet6-in6mapped-28", AF_INET6, AF_INET6, 1, 28 },
    { "inet6-in6mapped-24", AF_INET6, AF_INET6, 1, 24 },
    { "inet6-in6mapped-23", AF_INET6, AF_INET6, 1, 23 },
    { "inet6only-in6mapped-28", AF_INET6, AF_INET6, 2, 28 },
    { "inet6-in-16", AF_INET6, AF_INET, 0, 16 },
    { "inet6-in-28", AF_INET6, AF_INET, 0, 28 },
    { "unix-in-16", AF_UNIX, AF_INET, 0, 16 },
    { "unix-in-28", AF_UNIX, AF_INET, 0, 28 },
};

static const struct pairing unix_pairings[] = {
    { "unix-un", AF_UNIX, AF_UNIX, 0, 0 },
    { "inet-un", AF_INET, AF_UNIX, 0, 0 },
    { "inet6-un", AF_INET6, AF_UNIX, 0, 0 },
    { "unix-un-toolong", AF_UNIX, AF_UNIX, 0, sizeof(struct sockaddr_un) + 1 },
};

static int
cmd_family(const char *prefix)
{
    int unix_target = g_addr.ss_family == AF_UNIX;
    const struct pairing *ps = unix_target ? unix_pairings : inet_pairings;
    size_t np = unix_target ? sizeof(unix_pairings) / sizeof(unix_pairings[0])
                            : sizeof(inet_pairings) / sizeof(inet_pairings[0]);
    extra("\"results\": {");
    for (size_t i = 0; i < np; i++) {
        unsigned char buf[sizeof(struct sockaddr_storage) + 8];
        memset(buf, 0, sizeof(buf));
        socklen_t len = ps[i].len;
        if (ps[i].family == AF_UNIX) {
            memcpy(buf, &g_addr, g_addrlen);
            if (len == 0) {
                len = g_addrlen;
            }
        } else if (ps[i].mapped) {
            const struct sockaddr_in *in = (const struct sockaddr_in *)&g_addr;
            struct sockaddr_in6 s6;
            memset(&s6, 0, sizeof(s6));
            s6.sin6_family = AF_INET6;
            s6.sin6_port = in->sin_port;
            s6.sin6_addr.s6_addr[10] = 0xff;
            s6.sin6_addr.s6_addr[11] = 0xff;
            memcpy(&s6.sin6_addr.s6_addr[12], &in->sin_addr, 4);
            memcpy(buf, &s6, sizeof(s6));
        } else {
            memcpy(buf, &g_addr, sizeof(struct sockaddr_in));
        }
        int fd = socket(ps[i].domain, SOCK_STREAM, 0);
        if (fd < 0) {
            extra("%s\"%s\": \"socket:%s\"", i ? ", " : "", ps[i].name, errname(errno));
            continue;
        }
        int one = 1;
        if (ps[i].mapped == 2 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) {
            fail("IPV6_V6ONLY: %s", errname(errno));
        }
        int rc = connect(fd, (struct sockaddr *)buf, len);
        int e = rc == 0 ? 0 : errno;
        extra("%s\"%s\": \"%s\"", i ? ", " : "", ps[i].name, errname(e));
        if (rc == 0) {
            char key[96];
            snprintf(key, sizeof(key), "%s-%s", prefix, ps[i].name);
            if (store(fd, key, ps[i].name) == 0) {
                fetch(fd, key, ps[i].name);
            }
        }
        close(fd);
    }
    extra("}, ");
    return finish();
}

int
main(int argc, char **argv)
{
    const char *scale = getenv("MCSHIM_TEST_TIME_SCALE");
    if (scale != NULL && atof(scale) > 0) {
        g_timeout_ms = (int)(IO_TIMEOUT_MS * atof(scale));
    }
    if (argc < 5 || set_target(argv[2], argv[3]) != 0) {
        fprintf(stderr, "usage: hostsafety emfile|nproc|closerange|family <host> <port> <prefix> [mode]\n");
        return 2;
    }
    if (strcmp(argv[1], "emfile") == 0) {
        return cmd_emfile(argv[4]);
    }
    if (strcmp(argv[1], "nproc") == 0) {
        return cmd_nproc(argv[4]);
    }
    if (strcmp(argv[1], "forkfail") == 0) {
        return cmd_forkfail(argv[4]);
    }
    if (strcmp(argv[1], "closerange") == 0 && argc == 6) {
        return cmd_closerange(argv[4], argv[5]);
    }
    if (strcmp(argv[1], "family") == 0) {
        return cmd_family(argv[4]);
    }
    fprintf(stderr, "hostsafety: unknown command %s\n", argv[1]);
    return 2;
}
