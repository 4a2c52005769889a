/*
 * preload/lib/fdtab.c: two-level table of atomics indexed by fd (see fdtab.h),
 * the identity marks of the library's own descriptors, and moving them high.
 */
#include "preload/core/alloc.h"
#include "preload/lib/fdtab.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "preload/lib/real.h"

_Static_assert(sizeof(uintptr_t) >= 8, "internal fd marks need 64-bit entries");

#define INO_MASK ((uintptr_t)0xffffffffu << 1)

static _Atomic(_Atomic uintptr_t *) chunks[MCS_FDTAB_MAX / MCS_FDTAB_CHUNK];
static pthread_mutex_t fdtab_mutex = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(int (*)(int, uint32_t)) prover;
static __thread uint32_t thread_owner;

/* The slot of fd, created if create; NULL if out of range or out of memory. */
static _Atomic uintptr_t *
slot(int fd, bool create)
{
    if (fd < 0 || fd >= MCS_FDTAB_MAX) {
        return NULL;
    }
    _Atomic uintptr_t *c = atomic_load_explicit(&chunks[fd / MCS_FDTAB_CHUNK], memory_order_acquire);
    if (c == NULL && create) {
        c = mcs_calloc(MCS_FDTAB_CHUNK, sizeof(*c));
        if (c == NULL) {
            return NULL;
        }
        _Atomic uintptr_t *expected = NULL;
        if (!atomic_compare_exchange_strong(&chunks[fd / MCS_FDTAB_CHUNK], &expected, c)) {
            mcs_free(c);
            c = expected;
        }
    }
    return c != NULL ? &c[fd % MCS_FDTAB_CHUNK] : NULL;
}

uintptr_t
mcs_fdtab_get(int fd)
{
    _Atomic uintptr_t *s = slot(fd, false);
    return s != NULL ? atomic_load_explicit(s, memory_order_acquire) : 0;
}

uintptr_t
mcs_fdtab_swap(int fd, uintptr_t v)
{
    _Atomic uintptr_t *s = slot(fd, v != 0);
    if (s == NULL) {
        return (fd < 0 || fd >= MCS_FDTAB_MAX || v != 0) ? v : 0;
    }
    return atomic_exchange_explicit(s, v, memory_order_acq_rel);
}

bool
mcs_fdtab_cas(int fd, uintptr_t expected, uintptr_t v)
{
    _Atomic uintptr_t *s = slot(fd, v != 0);
    if (s == NULL) {
        return expected == 0 && v == 0;
    }
    return atomic_compare_exchange_strong(s, &expected, v);
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

void
mcs_fdtab_set_thread_owner(uint32_t owner)
{
    thread_owner = owner & MCS_FD_OWNER_MASK;
}

uint32_t
mcs_fdtab_thread_owner(void)
{
    return thread_owner;
}

void
mcs_fdtab_set_prover(int (*fn)(int fd, uint32_t owner))
{
    atomic_store(&prover, fn);
}

/* The mark of the file fd is now, or 0 if fstat fails. */
static uintptr_t
mark_of(int fd, uint32_t owner, bool shared)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        return 0;
    }
    return ((uintptr_t)(owner & MCS_FD_OWNER_MASK) << MCS_FD_OWNER_SHIFT) | (shared ? MCS_FD_SHARED_BIT : 0)
           | (((uintptr_t)st.st_ino << 1) & INO_MASK) | MCS_FD_INTERNAL_BIT;
}

void
mcs_fdtab_mark_owned(int fd, uint32_t owner, bool shared)
{
    int saved = errno;
    uintptr_t v = mark_of(fd, owner, shared);
    /* fstat failing (the number is not open) leaves a mark that never validates */
    mcs_fdtab_swap(fd, v != 0 ? v : (((uintptr_t)(owner & MCS_FD_OWNER_MASK) << MCS_FD_OWNER_SHIFT)
                                     | MCS_FD_INTERNAL_BIT));
    errno = saved;
}

void
mcs_fdtab_mark_internal(int fd)
{
    mcs_fdtab_mark_owned(fd, thread_owner, false);
}

uint32_t
mcs_fdtab_owner(uintptr_t v)
{
    return (v & MCS_FD_INTERNAL_BIT) ? (uint32_t)(v >> MCS_FD_OWNER_SHIFT) & MCS_FD_OWNER_MASK : 0;
}

/* fd is still the file v was made for (inode only). */
static bool
same_inode(int fd, uintptr_t v)
{
    struct stat st;
    if (!(v & MCS_FD_INTERNAL_BIT) || (v & INO_MASK) == 0 || fstat(fd, &st) != 0) {
        return false;
    }
    return (((uintptr_t)st.st_ino << 1) & INO_MASK) == (v & INO_MASK);
}

int
mcs_fdtab_internal_valid(int fd, uintptr_t v)
{
    int saved = errno;
    bool ok = same_inode(fd, v);
    if (ok && (v & MCS_FD_SHARED_BIT)) {
        int (*fn)(int, uint32_t) = atomic_load(&prover);
        ok = fn != NULL && fn(fd, mcs_fdtab_owner(v)) != 0;
    }
    errno = saved;
    return ok;
}

bool
mcs_fdtab_release(int fd, uint32_t owner, bool proven)
{
    if (fd < 0) {
        return false;
    }
    int saved = errno;
    bool closed = false;
    if (fd >= MCS_FDTAB_MAX) {
        closed = mcs_real.close(fd) == 0;
    } else {
        uintptr_t v = mcs_fdtab_get(fd);
        if ((v & MCS_FD_INTERNAL_BIT) && mcs_fdtab_owner(v) == (owner & MCS_FD_OWNER_MASK)) {
            bool ours = (v & MCS_FD_SHARED_BIT) && !proven ? mcs_fdtab_internal_valid(fd, v) : same_inode(fd, v);
            /* Clear first: whoever clears the entry is the one that may close the number. */
            if (mcs_fdtab_cas(fd, v, 0) && ours) {
                mcs_real.close(fd);
                closed = true;
            }
        }
    }
    errno = saved;
    return closed;
}

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
