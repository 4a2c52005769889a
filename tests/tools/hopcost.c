/*
 * tests/tools/hopcost.c: what one hop through a socketpair costs, the unit the
 * fast-path design is priced in (docs/performance.md "Where the time goes").
 *
 *     hopcost [-n N] [-s BYTES]
 *
 * Three loops of N iterations each, BYTES-byte messages (default 40: a `get`
 * and its short reply are of that order), one line of key=value pairs each:
 *
 *   same-thread   write then read on the two ends of one AF_UNIX stream
 *                 socketpair, in one thread: the syscall cost of carrying a
 *                 request or reply through the socketpair, without any wake-up;
 *   ping-pong     two threads bounce a message over a socketpair, each blocked
 *                 in read until the other writes: one application request
 *                 through the engine thread pays this twice (there and back),
 *                 plus the engine's work;
 *   pipe-pong     the same over a pipe pair, for comparison.
 *
 * For each: wall ns per iteration and CPU ns per iteration (user+sys of the
 * whole process, getrusage(RUSAGE_SELF)). Pin it to one CPU (taskset -c 1) to
 * price the two-threads-on-one-core case that a saturated client core sees.
 * Exit status 0, or 2 on bad usage or a failed syscall.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HOP_MAX_BYTES 65536

static long iterations = 200000;
static size_t msg_size = 40;

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t
cpu_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000u
           + ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000u;
}

static void
die(const char *what)
{
    fprintf(stderr, "hopcost: %s: %s\n", what, strerror(errno));
    exit(2);
}

/* Writes all n bytes, or dies. */
static void
put(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            die("write");
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Reads exactly n bytes, or dies. */
static void
get(int fd, char *p, size_t n)
{
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            die("read");
        }
        p += r;
        n -= (size_t)r;
    }
}

static void
report(const char *name, uint64_t wall, uint64_t cpu)
{
    printf("hopcost loop=%s n=%ld bytes=%zu wall_ns=%.0f cpu_ns=%.0f\n", name, iterations, msg_size,
           (double)wall / (double)iterations, (double)cpu / (double)iterations);
}

struct echo {
    int in;
    int out;
};

/* The other thread of a pong loop: reads a message, writes it back. */
static void *
echo_main(void *arg)
{
    struct echo *e = arg;
    char buf[HOP_MAX_BYTES];
    for (long i = 0; i < iterations; i++) {
        get(e->in, buf, msg_size);
        put(e->out, buf, msg_size);
    }
    return NULL;
}

/* Two threads bounce a message: ours writes to `to`, the echo reads `from_us`
 * and answers on `to_us`, ours reads `back`. */
static void
pong(const char *name, int to, int from_us, int to_us, int back)
{
    char buf[HOP_MAX_BYTES];
    memset(buf, 'x', msg_size);
    struct echo e = { .in = from_us, .out = to_us };
    pthread_t t;
    if (pthread_create(&t, NULL, echo_main, &e) != 0) {
        die("pthread_create");
    }
    uint64_t w0 = now_ns(), c0 = cpu_ns();
    for (long i = 0; i < iterations; i++) {
        put(to, buf, msg_size);
        get(back, buf, msg_size);
    }
    uint64_t w1 = now_ns(), c1 = cpu_ns();
    pthread_join(t, NULL);
    report(name, w1 - w0, c1 - c0);
}

int
main(int argc, char **argv)
{
    int opt;
    while ((opt = getopt(argc, argv, "n:s:")) != -1) {
        if (opt == 'n') {
            iterations = strtol(optarg, NULL, 10);
        } else if (opt == 's') {
            msg_size = (size_t)strtoul(optarg, NULL, 10);
        } else {
            fprintf(stderr, "usage: hopcost [-n N] [-s BYTES]\n");
            return 2;
        }
    }
    if (iterations <= 0 || msg_size == 0 || msg_size > HOP_MAX_BYTES) {
        fprintf(stderr, "hopcost: -n must be > 0 and -s in 1..%d\n", HOP_MAX_BYTES);
        return 2;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        die("socketpair");
    }
    char buf[HOP_MAX_BYTES];
    memset(buf, 'x', msg_size);
    uint64_t w0 = now_ns(), c0 = cpu_ns();
    for (long i = 0; i < iterations; i++) {
        put(sv[0], buf, msg_size);
        get(sv[1], buf, msg_size);
    }
    report("same-thread", now_ns() - w0, cpu_ns() - c0);

    pong("ping-pong", sv[0], sv[1], sv[1], sv[0]);

    int p1[2], p2[2];
    if (pipe(p1) != 0 || pipe(p2) != 0) {
        die("pipe");
    }
    pong("pipe-pong", p1[1], p1[0], p2[1], p2[0]);
    return 0;
}
