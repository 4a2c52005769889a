/*
 * preload/lib/log.c: see log.h.
 */
#include "preload/lib/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static _Atomic int log_level = MCS_LOG_NOTICE;
static _Atomic long window_start;
static _Atomic int window_count;
static _Atomic int suppressed;

void
mcs_log_set_level(enum mcs_log_level level)
{
    atomic_store(&log_level, (int)level);
}

static void
write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(2, p, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

void
mcs_log_raw(const char *msg)
{
    int saved = errno;
    char line[600];
    int n = snprintf(line, sizeof(line), "%s\n", msg);
    if (n > 0) {
        write_all(line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
    }
    errno = saved;
}

void
mcs_log(enum mcs_log_level level, const char *fmt, ...)
{
    if ((int)level > atomic_load(&log_level)) {
        return;
    }
    int saved = errno;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long start = atomic_load(&window_start);
    if (ts.tv_sec - start >= MCS_LOG_WINDOW_S) {
        atomic_store(&window_start, (long)ts.tv_sec);
        atomic_store(&window_count, 0);
    }
    if (atomic_fetch_add(&window_count, 1) >= MCS_LOG_BURST) {
        atomic_fetch_add(&suppressed, 1);
        errno = saved;
        return;
    }
    char line[600];
    int off = snprintf(line, sizeof(line), "mcshim[%ld]: %s: ", (long)getpid(), mcs_log_level_name(level));
    int dropped = atomic_exchange(&suppressed, 0);
    if (dropped > 0 && off > 0 && (size_t)off < sizeof(line)) {
        off += snprintf(line + off, sizeof(line) - (size_t)off, "(%d lines suppressed) ", dropped);
    }
    va_list ap;
    va_start(ap, fmt);
    if (off > 0 && (size_t)off < sizeof(line)) {
        int n = vsnprintf(line + off, sizeof(line) - (size_t)off, fmt, ap);
        off = n < 0 ? off : off + n;
    }
    va_end(ap);
    if (off < 0) {
        off = 0;
    }
    if ((size_t)off >= sizeof(line) - 1) {
        off = (int)sizeof(line) - 2;
    }
    line[off++] = '\n';
    write_all(line, (size_t)off);
    errno = saved;
}
