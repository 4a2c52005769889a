/*
 * tests/tools/mclat.c: blocking memcached ASCII latency client.
 *
 *     mclat -h host -p port -n N [-k keys] [-s value_size] [-w warmup]
 *           [-r set_percent] [-T max_seconds] [-t threads] [-R rate] [-q]
 *
 * Each of `threads` threads (default 1) has one TCP connection made with plain
 * libc socket/connect/write/read, so that an LD_PRELOAD library (mcshim) sees
 * an ordinary dynamically linked, possibly multi-threaded, client. Together
 * they store `keys` keys of `value_size` bytes and run `warmup` untimed gets;
 * then each thread runs its share of the N timed iterations, each one request
 * and its whole reply: `get key`, or `set key` for set_percent of them. N = 0
 * means no count: every thread runs until max_seconds.
 *
 * Without -R (or -R 0) each thread sends its next request as soon as the
 * previous reply is in (closed loop) and every round trip is timed with
 * clock_gettime(CLOCK_MONOTONIC). With -R rate the run is open-loop: thread k
 * of T sends request i at the absolute time start + (i*T + k)/rate seconds
 * (clock_nanosleep TIMER_ABSTIME on CLOCK_MONOTONIC), so the threads together
 * offer `rate` requests per second, evenly interleaved; latency is measured
 * from that intended send time, so a request that queues behind a slow reply
 * is charged for the wait (no coordinated omission), as is the client's own
 * wake-up delay (timer slack is set to 1 ns on paced threads to keep it small).
 *
 * The timings of all threads are merged. The result is one line of key=value
 * pairs on stdout:
 *
 *     mclat n=100000 p50_us=21.4 p90_us=24.9 p99_us=38.0 max_us=310.2 mean_us=22.3 ops_s=44251 misses=0 errors=0 threads=1 rate=0 cpu_us_per_op=9.84
 *
 * ops_s is every thread's iterations over the timed phase (from the common
 * start to the last thread's end). cpu_us_per_op is the user+system CPU time
 * of the whole process over the timed phase (getrusage(RUSAGE_SELF) before and
 * after) divided by n: under LD_PRELOAD it includes the preloaded library's
 * own threads.
 *
 * The timed loop stops early after max_seconds (default 60); n then says how
 * many iterations ran. Exit status: 0 on success, 1 if any reply was wrong
 * (errors > 0) or a connection failed, 2 on bad usage.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define MCLAT_KEY_MAX       64
#define MCLAT_VALUE_MAX     (1024 * 1024)
#define MCLAT_KEYS_MAX      1000000
#define MCLAT_ITER_MAX      100000000L
#define MCLAT_LINE_MAX      512
#define MCLAT_THREADS_MAX   1024
#define MCLAT_RATE_MAX      10000000L
#define MCLAT_SAMPLES_INIT  65536

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
    long        threads;
    long        rate;           /* total requests per second, 0 = closed loop */
    int         quiet;
};

/* A blocking connection with a read buffer; owned by its worker (struct mclat_worker). */
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
            "             [-r set_percent] [-T max_seconds] [-t threads] [-R rate] [-q]\n"
            "  -n N            timed iterations (one request + reply each), shared by the\n"
            "                  threads; 0 = every thread runs until -T\n"
            "  -k keys         distinct keys stored before timing (default 100)\n"
            "  -s value_size   value bytes (default 100)\n"
            "  -w warmup       untimed gets before timing, shared by the threads (default 1000)\n"
            "  -r set_percent  percent of iterations that are sets (default 0)\n"
            "  -T max_seconds  stop the timed loop after this long (default 60)\n"
            "  -t threads      threads, each with its own blocking connection (default 1)\n"
            "  -R rate         total requests per second, paced open-loop with latency\n"
            "                  from the intended send time; 0 = as fast as possible (default)\n"
            "  -q              no diagnostics on stderr\n"
            "prints one line: mclat n= p50_us= p90_us= p99_us= max_us= mean_us= ops_s= misses= errors=\n"
            "                 threads= rate= cpu_us_per_op=\n");
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
    o->threads = 1;
    o->rate = 0;
    o->quiet = 0;

    while ((c = getopt(argc, argv, "h:p:n:k:s:w:r:T:t:R:q")) != -1) {
        int bad = 0;
        switch (c) {
        case 'h':
            o->host = optarg;
            break;
        case 'p':
            o->port = optarg;
            break;
        case 'n':
            bad = mclat_parse_long(optarg, 0, MCLAT_ITER_MAX, &o->iterations);
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
        case 't':
            bad = mclat_parse_long(optarg, 1, MCLAT_THREADS_MAX, &o->threads);
            break;
        case 'R':
            bad = mclat_parse_long(optarg, 0, MCLAT_RATE_MAX, &o->rate);
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
    if (optind != argc || o->host == NULL || o->port == NULL || o->iterations < 0) {
        mclat_usage(stderr);
        return 2;
    }
    if (o->iterations > 0 && o->iterations < o->threads) {
        fprintf(stderr, "mclat: -n %ld gives some of the %ld threads nothing to do\n", o->iterations, o->threads);
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

/*
 * What the threads of one run share; owned by main(). start_ns, deadline_ns and
 * cpu_start are written by one thread between two barrier waits and read only
 * after the second; setup_failed may be set by any thread at any time.
 */
struct mclat_run {
    const struct mclat_opts *o;
    const char              *value;         /* value_size bytes, read-only */
    pthread_barrier_t        barrier;       /* all o->threads workers */
    atomic_int               setup_failed;
    uint64_t                 start_ns;
    uint64_t                 deadline_ns;
    struct rusage            cpu_start;
};

/*
 * One thread's connection, share of the work and timings. Created and freed by
 * main(); worker 0 runs on the main thread, the others on their own threads.
 */
struct mclat_worker {
    struct mclat_run   *run;
    long                index;
    long                iterations;     /* this thread's share of -n; 0 = until the deadline */
    long                warmup;         /* this thread's share of -w */
    uint32_t            rnd;
    struct mclat_conn   conn;
    char               *req;            /* a set request: header + value + "\r\n" */
    uint64_t           *samples;        /* nanoseconds per iteration, done of cap used */
    size_t              cap;
    long                done;
    double              sum_us;
    long                misses;
    long                errors;
    uint64_t            end_ns;
    pthread_t           thread;
};

#define MCLAT_HEADER_CAP    (MCLAT_KEY_MAX + 64)

static double mclat_cpu_us(const struct rusage *ru)
{
    return (double)ru->ru_utime.tv_sec * 1e6 + (double)ru->ru_utime.tv_usec
           + (double)ru->ru_stime.tv_sec * 1e6 + (double)ru->ru_stime.tv_usec;
}

/* Intended send time of request `slot` (0, 1, 2, ... over all threads) at o->rate per second. */
static uint64_t mclat_slot_ns(const struct mclat_run *run, uint64_t slot)
{
    uint64_t rate = (uint64_t)run->o->rate;

    return run->start_ns + (slot / rate) * 1000000000u + (slot % rate) * 1000000000u / rate;
}

/* Sleeps until the CLOCK_MONOTONIC time `when` (absolute, so lateness does not accumulate). */
static void mclat_sleep_until(uint64_t when)
{
    struct timespec ts;

    ts.tv_sec = (time_t)(when / 1000000000u);
    ts.tv_nsec = (long)(when % 1000000000u);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

/* Appends one timing. Returns 0, or -1 when the array cannot grow. */
static int mclat_record(struct mclat_worker *w, uint64_t ns)
{
    if ((size_t)w->done == w->cap) {
        size_t cap = w->cap * 2;
        uint64_t *grown = realloc(w->samples, sizeof(*grown) * cap);
        if (grown == NULL) {
            return -1;
        }
        w->samples = grown;
        w->cap = cap;
    }
    w->samples[w->done++] = ns;
    w->sum_us += (double)ns / 1000.0;
    return 0;
}

/*
 * Waits for every worker. Returns 1 in exactly one of them (whichever the
 * barrier picks), 0 in the others.
 */
static int mclat_barrier(struct mclat_run *run)
{
    int rc = pthread_barrier_wait(&run->barrier);

    return rc == PTHREAD_BARRIER_SERIAL_THREAD;
}

/* Connects and stores this worker's keys (k with k % threads == index). Returns 0 or -1. */
static int mclat_worker_setup(struct mclat_worker *w)
{
    const struct mclat_opts *o = w->run->o;
    char key[MCLAT_KEY_MAX];
    long k;

    w->conn.fd = mclat_connect(o->host, o->port, o->quiet);
    if (w->conn.fd < 0) {
        return -1;
    }
    for (k = w->index; k < o->keys; k += o->threads) {
        snprintf(key, sizeof(key), "mclat:%ld", k);
        errno = 0;
        if (mclat_set(&w->conn, key, w->req, MCLAT_HEADER_CAP, w->run->value, (size_t)o->value_size) != MCLAT_OK) {
            fprintf(stderr, "mclat: preload of %s failed: %s\n", key,
                    errno != 0 ? strerror(errno) : "unexpected reply");
            return -1;
        }
    }
    return 0;
}

/* Untimed gets over all keys. Returns 0 or -1. */
static int mclat_worker_warmup(struct mclat_worker *w)
{
    const struct mclat_opts *o = w->run->o;
    char key[MCLAT_KEY_MAX];
    long i;

    for (i = 0; i < w->warmup; i++) {
        snprintf(key, sizeof(key), "mclat:%ld", (long)(mclat_next_random(&w->rnd) % (uint32_t)o->keys));
        if (mclat_get(&w->conn, key, (size_t)o->value_size) != MCLAT_OK) {
            fprintf(stderr, "mclat: warm-up get of %s failed\n", key);
            return -1;
        }
    }
    return 0;
}

/* The timed iterations of one worker, closed loop or paced at its share of o->rate. */
static void mclat_worker_timed(struct mclat_worker *w)
{
    struct mclat_run *run = w->run;
    const struct mclat_opts *o = run->o;
    char key[MCLAT_KEY_MAX];
    long i;

    for (i = 0; w->iterations == 0 || i < w->iterations; i++) {
        uint32_t r = mclat_next_random(&w->rnd);
        int is_set = (long)(r % 100u) < o->set_percent;
        enum mclat_result res;
        uint64_t t0;
        uint64_t t1;

        snprintf(key, sizeof(key), "mclat:%ld", (long)((r >> 8) % (uint32_t)o->keys));
        if (o->rate > 0) {
            t0 = mclat_slot_ns(run, (uint64_t)i * (uint64_t)o->threads + (uint64_t)w->index);
            if (t0 >= run->deadline_ns) {
                break;
            }
            if (mclat_now_ns() < t0) {
                mclat_sleep_until(t0);
            }
        } else {
            t0 = mclat_now_ns();
        }
        errno = 0;
        if (is_set) {
            res = mclat_set(&w->conn, key, w->req, MCLAT_HEADER_CAP, run->value, (size_t)o->value_size);
        } else {
            res = mclat_get(&w->conn, key, (size_t)o->value_size);
        }
        t1 = mclat_now_ns();
        if (mclat_record(w, t1 - t0) != 0) {
            fprintf(stderr, "mclat: out of memory for timings after %ld iterations\n", w->done);
            w->errors++;
            break;
        }
        if (res == MCLAT_MISS) {
            w->misses++;
        } else if (res != MCLAT_OK) {
            w->errors++;
            if (!o->quiet) {
                fprintf(stderr, "mclat: %s %s: %s\n", is_set ? "set" : "get", key,
                        res == MCLAT_IOERR ? strerror(errno) : "unexpected reply");
            }
            break;  /* the stream position is unknown after a bad reply */
        }
        if (t1 > run->deadline_ns) {
            break;
        }
    }
    w->end_ns = mclat_now_ns();
}

/*
 * One worker from connect to the end of its timed loop. Every worker passes
 * the same three barriers whatever fails, so that none waits for ever: keys
 * stored | warmed up | start time taken.
 */
static void *mclat_worker_main(void *arg)
{
    struct mclat_worker *w = arg;
    struct mclat_run *run = w->run;

    if (run->o->rate > 0) {
        /* Wake at the intended send time, not up to 50 us after it (the default slack). */
        (void)prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    }
    if (mclat_worker_setup(w) != 0) {
        atomic_store(&run->setup_failed, 1);
    }
    mclat_barrier(run);
    if (atomic_load(&run->setup_failed) == 0 && mclat_worker_warmup(w) != 0) {
        atomic_store(&run->setup_failed, 1);
    }
    if (mclat_barrier(run)) {
        getrusage(RUSAGE_SELF, &run->cpu_start);
        run->start_ns = mclat_now_ns();
        run->deadline_ns = run->start_ns + (uint64_t)run->o->max_seconds * 1000000000u;
    }
    mclat_barrier(run);
    if (atomic_load(&run->setup_failed) == 0) {
        mclat_worker_timed(w);
    }
    return NULL;
}

/* Allocates a worker's buffers. Returns 0, or -1 (what was allocated is freed by the caller). */
static int mclat_worker_init(struct mclat_worker *w, struct mclat_run *run, long index)
{
    const struct mclat_opts *o = run->o;
    long n = o->threads;

    memset(w, 0, sizeof(*w));
    w->run = run;
    w->index = index;
    w->conn.fd = -1;
    /* Split -n and -w: the first (total % n) workers take one more. */
    w->iterations = o->iterations / n + (index < o->iterations % n ? 1 : 0);
    w->warmup = o->warmup / n + (index < o->warmup % n ? 1 : 0);
    /* Worker 0 keeps mclat's historical sequence; the others get distinct non-zero seeds. */
    w->rnd = 2463534242u ^ ((uint32_t)index * 0x9e3779b9u);
    if (w->rnd == 0) {
        w->rnd = 1;
    }
    if (w->iterations > 0) {
        w->cap = (size_t)w->iterations;
    } else if (o->rate > 0) {
        w->cap = (size_t)(o->rate / n + 1) * (size_t)o->max_seconds + 16;
    } else {
        w->cap = MCLAT_SAMPLES_INIT;
    }
    w->conn.cap = (size_t)o->value_size + MCLAT_LINE_MAX * 4;
    w->conn.buf = malloc(w->conn.cap);
    w->req = malloc(MCLAT_HEADER_CAP + (size_t)o->value_size + 2);
    w->samples = malloc(sizeof(*w->samples) * w->cap);
    return w->conn.buf != NULL && w->req != NULL && w->samples != NULL ? 0 : -1;
}

static void mclat_worker_free(struct mclat_worker *w)
{
    if (w->conn.fd >= 0) {
        close(w->conn.fd);
    }
    free(w->samples);
    free(w->req);
    free(w->conn.buf);
}

int main(int argc, char **argv)
{
    struct mclat_opts o;
    struct mclat_run run;
    struct mclat_worker *workers = NULL;
    struct rusage cpu_end;
    char *value = NULL;
    uint64_t *samples = NULL;
    long nworkers = 0;
    long i;
    long done = 0;
    long misses = 0;
    long errors = 0;
    uint64_t end_ns = 0;
    uint64_t total_ns;
    double sum_us = 0.0;
    double cpu_us;
    int barrier_made = 0;
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

    memset(&run, 0, sizeof(run));
    run.o = &o;
    atomic_init(&run.setup_failed, 0);
    value = malloc((size_t)o.value_size + 1);
    workers = calloc((size_t)o.threads, sizeof(*workers));
    if (value == NULL || workers == NULL) {
        fprintf(stderr, "mclat: out of memory\n");
        goto out;
    }
    for (i = 0; i < o.value_size; i++) {
        value[i] = (char)('a' + i % 26);
    }
    run.value = value;
    for (nworkers = 0; nworkers < o.threads; nworkers++) {
        if (mclat_worker_init(&workers[nworkers], &run, nworkers) != 0) {
            nworkers++;
            fprintf(stderr, "mclat: out of memory\n");
            goto out;
        }
    }
    if (pthread_barrier_init(&run.barrier, NULL, (unsigned)o.threads) != 0) {
        fprintf(stderr, "mclat: pthread_barrier_init failed\n");
        goto out;
    }
    barrier_made = 1;

    for (i = 1; i < o.threads; i++) {
        rc = pthread_create(&workers[i].thread, NULL, mclat_worker_main, &workers[i]);
        if (rc != 0) {
            /* The workers already started wait at a barrier sized for all: no way back. */
            fprintf(stderr, "mclat: pthread_create: %s\n", strerror(rc));
            exit(1);
        }
    }
    mclat_worker_main(&workers[0]);
    for (i = 1; i < o.threads; i++) {
        pthread_join(workers[i].thread, NULL);
    }
    getrusage(RUSAGE_SELF, &cpu_end);
    if (atomic_load(&run.setup_failed) != 0) {
        goto out;
    }

    for (i = 0; i < o.threads; i++) {
        done += workers[i].done;
        misses += workers[i].misses;
        errors += workers[i].errors;
        sum_us += workers[i].sum_us;
        if (workers[i].end_ns > end_ns) {
            end_ns = workers[i].end_ns;
        }
    }
    if (done == 0) {
        fprintf(stderr, "mclat: no timed iteration ran\n");
        goto out;
    }
    samples = malloc(sizeof(*samples) * (size_t)done);
    if (samples == NULL) {
        fprintf(stderr, "mclat: out of memory\n");
        goto out;
    }
    done = 0;
    for (i = 0; i < o.threads; i++) {
        memcpy(samples + done, workers[i].samples, sizeof(*samples) * (size_t)workers[i].done);
        done += workers[i].done;
    }
    total_ns = end_ns - run.start_ns;
    cpu_us = mclat_cpu_us(&cpu_end) - mclat_cpu_us(&run.cpu_start);

    qsort(samples, (size_t)done, sizeof(*samples), mclat_cmp_u64);
    printf("mclat n=%ld p50_us=%.1f p90_us=%.1f p99_us=%.1f max_us=%.1f mean_us=%.1f ops_s=%.0f misses=%ld errors=%ld"
           " threads=%ld rate=%ld cpu_us_per_op=%.2f\n",
           done,
           mclat_percentile_us(samples, (size_t)done, 0.50),
           mclat_percentile_us(samples, (size_t)done, 0.90),
           mclat_percentile_us(samples, (size_t)done, 0.99),
           (double)samples[done - 1] / 1000.0,
           sum_us / (double)done,
           total_ns > 0 ? (double)done * 1e9 / (double)total_ns : 0.0,
           misses, errors, o.threads, o.rate, cpu_us / (double)done);
    fflush(stdout);
    status = errors > 0 ? 1 : 0;

out:
    if (barrier_made) {
        pthread_barrier_destroy(&run.barrier);
    }
    for (i = 0; i < nworkers; i++) {
        mclat_worker_free(&workers[i]);
    }
    free(samples);
    free(workers);
    free(value);
    return status;
}
