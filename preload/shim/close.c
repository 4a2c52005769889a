/*
 * preload/shim/close.c: close, fclose, close_range, closefrom.
 *
 * Closing an intercepted descriptor drops its registry entry (the engine sees
 * EOF once the last copy is gone). The library's own descriptors are
 * protected from hosts that close everything (daemons, ssh-style fd
 * sweeps): close() on one fails with EBADF as if it were not open, and
 * close_range/closefrom skip them. fclose is wrapped because glibc closes a
 * FILE's descriptor without calling close().
 */
#include <errno.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "preload/lib/fdtab.h"
#include "preload/lib/real.h"
#include "preload/shim/shim.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

MCS_EXPORT int
close(int fd)
{
    uintptr_t v = mcs_fdtab_get(fd);
    if (mcs_real_init() != 0) {
        errno = ENOSYS;
        return -1;
    }
    if (v != 0) {
        int saved = errno;
        if (mcs_fdtab_internal_valid(fd, v)) {
            errno = EBADF;
            return -1;
        }
        mcs_fdtab_lock();
        mcs_vconn_forget_locked(fd);
        mcs_fdtab_unlock();
        errno = saved;
    }
    return mcs_real.close(fd);
}

MCS_EXPORT int
fclose(FILE *fp)
{
    mcs_real_init();
    int fd = fp != NULL ? fileno(fp) : -1;
    if (fd >= 0 && mcs_fd_maybe_ours(fd)) {
        int saved = errno;
        uintptr_t v = mcs_fdtab_get(fd);
        if (!(v & MCS_FD_INTERNAL_BIT)) {
            mcs_fdtab_lock();
            mcs_vconn_forget_locked(fd);
            mcs_fdtab_unlock();
        }
        errno = saved;
    }
    return mcs_real.fclose(fp);
}

static int
real_close_range(unsigned first, unsigned last, int flags)
{
    if (mcs_real.close_range != NULL) {
        return mcs_real.close_range(first, last, flags);
    }
    return (int)syscall(SYS_close_range, first, last, flags);
}

struct range_walk {
    unsigned first;
    unsigned last;
    unsigned next;      /* first number not yet closed */
    int flags;
    int rc;
};

static void
close_gap(int fd, uintptr_t v, void *arg)
{
    struct range_walk *w = arg;
    unsigned u = (unsigned)fd;
    if (u < w->first || u > w->last) {
        return;
    }
    if (mcs_fdtab_internal_valid(fd, v)) {
        if (u > w->next && real_close_range(w->next, u - 1, w->flags) != 0) {   /* the gap below it */
            w->rc = -1;
        }
        w->next = u + 1;
    } else {
        mcs_vconn_forget_locked(fd);
    }
}

MCS_EXPORT int
close_range(unsigned int first, unsigned int last, int flags)
{
    mcs_real_init();
    if ((flags & CLOSE_RANGE_CLOEXEC) || first > last) {
        return real_close_range(first, last, flags);   /* the kernel answers EINVAL for first > last */
    }
    int saved = errno;
    struct range_walk w = { first, last, first, flags, 0 };
    mcs_fdtab_lock();
    mcs_fdtab_foreach(close_gap, &w);
    mcs_fdtab_unlock();
    errno = saved;
    if (w.next <= last) {
        if (real_close_range(w.next, last, flags) != 0) {
            w.rc = -1;
        }
    }
    if (w.rc == 0) {
        errno = saved;
    }
    return w.rc;
}

MCS_EXPORT void
closefrom(int lowfd)
{
    int saved = errno;
    close_range(lowfd < 0 ? 0u : (unsigned)lowfd, ~0U, 0);
    errno = saved;
}
