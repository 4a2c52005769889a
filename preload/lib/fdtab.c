/*
 * preload/lib/fdtab.c: two-level table of atomics indexed by fd (see fdtab.h).
 */
#include "preload/lib/fdtab.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

static _Atomic(_Atomic uintptr_t *) chunks[MCS_FDTAB_MAX / MCS_FDTAB_CHUNK];
static pthread_mutex_t fdtab_mutex = PTHREAD_MUTEX_INITIALIZER;

uintptr_t
mcs_fdtab_get(int fd)
{
    if (fd < 0 || fd >= MCS_FDTAB_MAX) {
        return 0;
    }
    _Atomic uintptr_t *c = atomic_load_explicit(&chunks[fd / MCS_FDTAB_CHUNK], memory_order_acquire);
    return c ? atomic_load_explicit(&c[fd % MCS_FDTAB_CHUNK], memory_order_acquire) : 0;
}

uintptr_t
mcs_fdtab_swap(int fd, uintptr_t v)
{
    if (fd < 0 || fd >= MCS_FDTAB_MAX) {
        return v;
    }
    _Atomic uintptr_t *c = atomic_load_explicit(&chunks[fd / MCS_FDTAB_CHUNK], memory_order_acquire);
    if (c == NULL) {
        if (v == 0) {
            return 0;
        }
        c = calloc(MCS_FDTAB_CHUNK, sizeof(*c));
        if (c == NULL) {
            return v;
        }
        _Atomic uintptr_t *expected = NULL;
        if (!atomic_compare_exchange_strong(&chunks[fd / MCS_FDTAB_CHUNK], &expected, c)) {
            free(c);
            c = expected;
        }
    }
    return atomic_exchange_explicit(&c[fd % MCS_FDTAB_CHUNK], v, memory_order_acq_rel);
}

void
mcs_fdtab_lock(void)
{
    pthread_mutex_lock(&fdtab_mutex);
}

void
mcs_fdtab_unlock(void)
{
    pthread_mutex_unlock(&fdtab_mutex);
}

void
mcs_fdtab_child_reinit(void)
{
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    fdtab_mutex = fresh;
}

void
mcs_fdtab_foreach(void (*fn)(int fd, uintptr_t v, void *arg), void *arg)
{
    for (int ci = 0; ci < MCS_FDTAB_MAX / MCS_FDTAB_CHUNK; ci++) {
        _Atomic uintptr_t *c = atomic_load(&chunks[ci]);
        if (c == NULL) {
            continue;
        }
        for (int i = 0; i < MCS_FDTAB_CHUNK; i++) {
            uintptr_t v = atomic_load(&c[i]);
            if (v != 0) {
                fn(ci * MCS_FDTAB_CHUNK + i, v, arg);
            }
        }
    }
}

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "preload/lib/real.h"

int
mcs_fd_move_high(int fd)
{
    static _Atomic int floor_fd = -1;
    int floor = atomic_load(&floor_fd);
    if (floor < 0) {
        struct rlimit rl;
        floor = 0;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur >= 256) {
            rlim_t f = rl.rlim_cur * 3 / 4;
            floor = f > 4096 ? 4096 : (int)f;
        }
        atomic_store(&floor_fd, floor);
    }
    if (floor == 0 || fd >= floor) {
        return fd;
    }
    int hi = mcs_real.fcntl(fd, F_DUPFD_CLOEXEC, floor);
    if (hi < 0) {
        return fd;
    }
    mcs_real.close(fd);
    return hi;
}

void
mcs_fdtab_mark_internal(int fd)
{
    struct stat st;
    uintptr_t ino = fstat(fd, &st) == 0 ? (uintptr_t)st.st_ino : 0;
    mcs_fdtab_swap(fd, (ino << 1) | MCS_FD_INTERNAL_BIT);
}

int
mcs_fdtab_internal_valid(int fd, uintptr_t v)
{
    struct stat st;
    if (!(v & MCS_FD_INTERNAL_BIT) || fstat(fd, &st) != 0) {
        return 0;
    }
    return (((uintptr_t)st.st_ino << 1) | MCS_FD_INTERNAL_BIT) == v;
}
