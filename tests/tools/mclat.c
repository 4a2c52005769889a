/*
 * tests/tools/mclat.c: blocking memcached ASCII latency client.
 *
 *     mclat -h host -p port -n N [-k keys] [-s value_size] [-w warmup]
 *           [-r set_percent] [-T max_seconds] [-q]
 *
 * One TCP connection made with plain libc socket/connect/write/read, so that
 * an LD_PRELOAD library (mcshim) sees an ordinary dynamically linked client.
 * It stores `keys` keys of `value_size` bytes, runs `warmup` untimed gets,
 * then N timed iterations, each one request and its whole reply: `get key`,
 * or `set key` for set_percent of them. Every round trip is timed with
 * clock_gettime(CLOCK_MONOTONIC). The result is one line of key=value pairs
 * on stdout:
 *
 *     mclat n=100000 p50_us=21.4 p90_us=24.9 p99_us=38.0 max_us=310.2 mean_us=22.3 ops_s=44251 misses=0 errors=0
 *
 * The timed loop stops early after max_seconds (default 60); n then says how
 * many iterations ran. Exit status: 0 on success, 1 if any reply was wrong
 * (errors > 0) or the connection failed, 2 on bad usage.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define MCLAT_KEY_MAX       64
#define MCLAT_VALUE_MAX     (1024 * 1024)
#define MCLAT_KEYS_MAX      1000000
#define MCLAT_ITER_MAX      100000000L
#define MCLAT_LINE_MAX      512

/* Options, filled by mclat_parse_args(). */
struct mclat_opts {
    const char *host;
    const char *port;
    long        iterations;
    long        keys;
    long        value_size;
    long        warmup;
    long        set_percent;
    long        max_seconds;
    int         quiet;
};

/* A blocking connection with a read buffer; owned by main(). */
struct mclat_conn {
    int     fd;
    char   *buf;        /* holds [start, end) unread bytes */
    size_t  cap;
    size_t  start;
    size_t  end;
};

/* Request outcome of one round trip. */
enum mclat_result {
    MCLAT_OK,
    MCLAT_MISS,
    MCLAT_BAD,          /* unexpected reply, connection unusable afterwards */
    MCLAT_IOERR
};

static void mclat_usage(FILE *out)
{
    fprintf(out,
            "usage: mclat -h host -p port -n N [-k keys] [-s value_size] [-w warmup]\n"
            "             [-r set_percent] [-T max_seconds] [-q]\n"
            "  -n N            timed iterations (one request + reply each)\n"
            "  -k keys         distinct keys stored before timing (default 100)\n"
            "  -s value_size   value bytes (default 100)\n"
            "  -w warmup       untimed gets before timing (default 1000)\n"
            "  -r set_percent  percent of iterations that are sets (default 0)\n"
            "  -T max_seconds  stop the timed loop after this long (default 60)\n"
            "  -q              no diagnostics on stderr\n"
            "prints one line: mclat n= p50_us= p90_us= p99_us= max_us= mean_us= ops_s= misses= errors=\n");
}

/* Parses a decimal long in [lo, hi]. Returns 0 and sets *out, or -1. */
static int mclat_parse_long(const char *s, long lo, long hi, long *out)
{
    char *end = NULL;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
        return -1;
    }
    *out = v;
    return 0;
}

/* Returns 0 when the options are valid, 2 after printing a usage error. */
static int mclat_parse_args(int argc, char **argv, struct mclat_opts *o)
{
    int c;

    o->host = NULL;
    o->port = NULL;
    o->iterations = -1;
    o->keys = 100;
    o->value_size = 100;
    o->warmup = 1000;
    o->set_percent = 0;
    o->max_seconds = 60;
    o->quiet = 0;

    while ((c = getopt(argc, argv, "h:p:n:k:s:w:r:T:q")) != -1) {
        int bad = 0;
        switch (c) {
        case 'h':
            o->host = optarg;
            break;
        case 'p':
            o->port = optarg;
            break;
        case 'n':
            bad = mclat_parse_long(optarg, 1, MCLAT_ITER_MAX, &o->iterations);
            break;
        case 'k':
            bad = mclat_parse_long(optarg, 1, MCLAT_KEYS_MAX, &o->keys);
            break;
        case 's':
            bad = mclat_parse_long(optarg, 0, MCLAT_VALUE_MAX, &o->value_size);
            break;
        case 'w':
            bad = mclat_parse_long(optarg, 0, MCLAT_ITER_MAX, &o->warmup);
            break;
        case 'r':
            bad = mclat_parse_long(optarg, 0, 100, &o->set_percent);
            break;
        case 'T':
            bad = mclat_parse_long(optarg, 1, 86400, &o->max_seconds);
            break;
        case 'q':
            o->quiet = 1;
            break;
        default:
            mclat_usage(stderr);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "mclat: bad value for -%c: '%s'\n", c, optarg);
            return 2;
        }
    }
    if (optind != argc || o->host == NULL || o->port == NULL || o->iterations < 1) {
        mclat_usage(stderr);
        return 2;
    }
    return 0;
}

static uint64_t mclat_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Connects to host:port with socket() and connect() (tries each address in
 * turn). Returns the descriptor, or -1 after printing why.
 */
static int mclat_connect(const char *host, const char *port, int quiet)
{
    struct addrinfo hints;
    struct addrinfo *res = NULL;
    struct addrinfo *ai;
    int fd = -1;
    int rc;
    int one = 1;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "mclat: %s:%s: %s\n", host, port, gai_strerror(rc));
        return -1;
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0) {
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            break;
        }
        rc = errno;
        close(fd);
        fd = -1;
        errno = rc;
    }
    if (fd < 0) {
        fprintf(stderr, "mclat: connect %s:%s: %s\n", host, port, strerror(errno));
    } else if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 && !quiet) {
        /* A real TCP socket accepts this; say so if an interposer does not. */
        fprintf(stderr, "mclat: warning: setsockopt TCP_NODELAY: %s\n", strerror(errno));
    }
    freeaddrinfo(res);
    return fd;
}

/* Writes all len bytes. Returns 0, or -1 with errno set. */
static int mclat_write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads more bytes into the buffer (compacting first). Returns 0, or -1 on EOF/error. */
static int mclat_fill(struct mclat_conn *c)
{
    ssize_t n;

    if (c->start > 0) {
        memmove(c->buf, c->buf + c->start, c->end - c->start);
        c->end -= c->start;
        c->start = 0;
    }
    if (c->end == c->cap) {
        errno = EMSGSIZE;
        return -1;
    }
    for (;;) {
        n = read(c->fd, c->buf + c->end, c->cap - c->end);
        if (n > 0) {
            c->end += (size_t)n;
            return 0;
        }
        if (n == 0) {
            errno = ECONNRESET;
            return -1;
        }
        if (errno != EINTR) {
            return -1;
        }
    }
}

/*
 * Returns a pointer to the next line (without "\r\n", NUL-terminated in place)
 * and consumes it, or NULL on I/O error or an over-long line.
 */
static char *mclat_read_line(struct mclat_conn *c)
{
    for (;;) {
        char *base = c->buf + c->start;
        size_t avail = c->end - c->start;
        char *nl = memchr(base, '\n', avail);
        if (nl != NULL) {
            if (nl == base || nl[-1] != '\r') {
                return NULL;
            }
            nl[-1] = '\0';
            c->start += (size_t)(nl - base) + 1;
            return base;
        }
        if (avail > MCLAT_LINE_MAX) {
            return NULL;
        }
        if (mclat_fill(c) != 0) {
            return NULL;
        }
    }
}

/* Consumes exactly len bytes. Returns a pointer to them (valid until the next read), or NULL. */
static const char *mclat_read_bytes(struct mclat_conn *c, size_t len)
{
    const char *p;

    while (c->end - c->start < len) {
        if (mclat_fill(c) != 0) {
            return NULL;
        }
    }
    p = c->buf + c->start;
    c->start += len;
    return p;
}

/* Sends `set key 0 0 len` with value. Returns MCLAT_OK, MCLAT_BAD or MCLAT_IOERR. */
static enum mclat_result mclat_set(struct mclat_conn *c, const char *key,
                                   char *req, size_t header_cap,
                                   const char *value, size_t value_len)
{
    int h = snprintf(req, header_cap, "set %s 0 0 %zu\r\n", key, value_len);
    char *line;

    if (h < 0 || (size_t)h >= header_cap) {
        return MCLAT_BAD;
    }
    memcpy(req + h, value, value_len);
    memcpy(req + (size_t)h + value_len, "\r\n", 2);
    if (mclat_write_all(c->fd, req, (size_t)h + value_len + 2) != 0) {
        return MCLAT_IOERR;
    }
    line = mclat_read_line(c);
    if (line == NULL) {
        return MCLAT_IOERR;
    }
    return strcmp(line, "STORED") == 0 ? MCLAT_OK : MCLAT_BAD;
}

/*
 * Sends `get key` and reads the whole reply. A hit must carry expect_len bytes.
 * Returns MCLAT_OK (hit), MCLAT_MISS, MCLAT_BAD or MCLAT_IOERR.
 */
static enum mclat_result mclat_get(struct mclat_conn *c, const char *key, size_t expect_len)
{
    char req[MCLAT_KEY_MAX + 8];
    int h = snprintf(req, sizeof(req), "get %s\r\n", key);
    char *line;
    unsigned long flags;
    unsigned long len;
    char rkey[MCLAT_KEY_MAX + 1];
    const char *data;

    if (h < 0 || (size_t)h >= sizeof(req)) {
        return MCLAT_BAD;
    }
    if (mclat_write_all(c->fd, req, (size_t)h) != 0) {
        return MCLAT_IOERR;
    }
    line = mclat_read_line(c);
    if (line == NULL) {
        return MCLAT_IOERR;
    }
    if (strcmp(line, "END") == 0) {
        return MCLAT_MISS;
    }
    if (sscanf(line, "VALUE %64s %lu %lu", rkey, &flags, &len) != 3 || strcmp(rkey, key) != 0
        || len != expect_len) {
        return MCLAT_BAD;
    }
    data = mclat_read_bytes(c, (size_t)len + 2);
    if (data == NULL) {
        return MCLAT_IOERR;
    }
    if (data[len] != '\r' || data[len + 1] != '\n') {
        return MCLAT_BAD;
    }
    line = mclat_read_line(c);
    if (line == NULL) {
        return MCLAT_IOERR;
    }
    return strcmp(line, "END") == 0 ? MCLAT_OK : MCLAT_BAD;
}

static int mclat_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;

    return (x > y) - (x < y);
}

/* Nearest-rank percentile q (0..1] of n sorted samples, in microseconds. */
static double mclat_percentile_us(const uint64_t *sorted, size_t n, double q)
{
    size_t rank = (size_t)(q * (double)n + 0.999999);

    if (rank < 1) {
        rank = 1;
    }
    if (rank > n) {
        rank = n;
    }
    return (double)sorted[rank - 1] / 1000.0;
}

/* xorshift32: cheap, deterministic choice of keys and operations. */
static uint32_t mclat_next_random(uint32_t *state)
{
    uint32_t x = *state;

    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    return x;
}

int main(int argc, char **argv)
{
    struct mclat_opts o;
    struct mclat_conn conn;
    char *value = NULL;
    char *req = NULL;
    uint64_t *samples = NULL;
    size_t header_cap = MCLAT_KEY_MAX + 64;
    char key[MCLAT_KEY_MAX];
    uint32_t rnd = 2463534242u;
    long i;
    long done = 0;
    long misses = 0;
    long errors = 0;
    uint64_t start_ns;
    uint64_t deadline_ns;
    uint64_t total_ns;
    double sum_us = 0.0;
    int rc;
    int status = 1;

    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-?") == 0)) {
        mclat_usage(stdout);
        return 0;
    }
    rc = mclat_parse_args(argc, argv, &o);
    if (rc != 0) {
        return rc;
    }

    conn.fd = -1;
    conn.cap = (size_t)o.value_size + MCLAT_LINE_MAX * 4;
    conn.start = 0;
    conn.end = 0;
    conn.buf = malloc(conn.cap);
    value = malloc((size_t)o.value_size + 1);
    req = malloc(header_cap + (size_t)o.value_size + 2);
    samples = malloc(sizeof(*samples) * (size_t)o.iterations);
    if (conn.buf == NULL || value == NULL || req == NULL || samples == NULL) {
        fprintf(stderr, "mclat: out of memory\n");
        goto out;
    }
    for (i = 0; i < o.value_size; i++) {
        value[i] = (char)('a' + i % 26);
    }

    conn.fd = mclat_connect(o.host, o.port, o.quiet);
    if (conn.fd < 0) {
        goto out;
    }

    /* Preload every key so that timed gets hit. */
    for (i = 0; i < o.keys; i++) {
        snprintf(key, sizeof(key), "mclat:%ld", i);
        errno = 0;
        if (mclat_set(&conn, key, req, header_cap, value, (size_t)o.value_size) != MCLAT_OK) {
            fprintf(stderr, "mclat: preload of %s failed: %s\n", key,
                    errno != 0 ? strerror(errno) : "unexpected reply");
            goto out;
        }
    }
    for (i = 0; i < o.warmup; i++) {
        snprintf(key, sizeof(key), "mclat:%ld", (long)(mclat_next_random(&rnd) % (uint32_t)o.keys));
        if (mclat_get(&conn, key, (size_t)o.value_size) != MCLAT_OK) {
            fprintf(stderr, "mclat: warm-up get of %s failed\n", key);
            goto out;
        }
    }

    start_ns = mclat_now_ns();
    deadline_ns = start_ns + (uint64_t)o.max_seconds * 1000000000u;
    for (i = 0; i < o.iterations; i++) {
        uint32_t r = mclat_next_random(&rnd);
        int is_set = (long)(r % 100u) < o.set_percent;
        enum mclat_result res;
        uint64_t t0;
        uint64_t t1;

        snprintf(key, sizeof(key), "mclat:%ld", (long)((r >> 8) % (uint32_t)o.keys));
        errno = 0;
        t0 = mclat_now_ns();
        if (is_set) {
            res = mclat_set(&conn, key, req, header_cap, value, (size_t)o.value_size);
        } else {
            res = mclat_get(&conn, key, (size_t)o.value_size);
        }
        t1 = mclat_now_ns();
        samples[done++] = t1 - t0;
        sum_us += (double)(t1 - t0) / 1000.0;
        if (res == MCLAT_MISS) {
            misses++;
        } else if (res != MCLAT_OK) {
            errors++;
            if (!o.quiet) {
                fprintf(stderr, "mclat: %s %s: %s\n", is_set ? "set" : "get", key,
                        res == MCLAT_IOERR ? strerror(errno) : "unexpected reply");
            }
            break;  /* the stream position is unknown after a bad reply */
        }
        if ((done & 1023) == 0 && t1 > deadline_ns) {
            break;
        }
    }
    total_ns = mclat_now_ns() - start_ns;

    qsort(samples, (size_t)done, sizeof(*samples), mclat_cmp_u64);
    printf("mclat n=%ld p50_us=%.1f p90_us=%.1f p99_us=%.1f max_us=%.1f mean_us=%.1f ops_s=%.0f misses=%ld errors=%ld\n",
           done,
           mclat_percentile_us(samples, (size_t)done, 0.50),
           mclat_percentile_us(samples, (size_t)done, 0.90),
           mclat_percentile_us(samples, (size_t)done, 0.99),
           (double)samples[done - 1] / 1000.0,
           sum_us / (double)done,
           total_ns > 0 ? (double)done * 1e9 / (double)total_ns : 0.0,
           misses, errors);
    fflush(stdout);
    status = errors > 0 ? 1 : 0;

out:
    if (conn.fd >= 0) {
        close(conn.fd);
    }
    free(samples);
    free(req);
    free(value);
    free(conn.buf);
    return status;
}
