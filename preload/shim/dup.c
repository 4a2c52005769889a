/*
 * preload/shim/dup.c: dup, dup2, dup3, fcntl(F_DUPFD*): a copy of an
 * intercepted descriptor is intercepted too; a descriptor replaced by dup2 is
 * forgotten. dup2/dup3 onto one of the library's own descriptors fails with
 * EBUSY rather than silently breaking the engine.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "preload/lib/fdtab.h"
#include "preload/lib/real.h"
#include "preload/shim/shim.h"

static void
after_dup(int from, int to)
{
    if (to < 0 || (!mcs_fd_maybe_ours(from) && !mcs_fd_maybe_ours(to))) {
        return;
    }
    int saved = errno;
    mcs_fdtab_lock();
    mcs_vconn_alias_locked(from, to);
    mcs_fdtab_unlock();
    errno = saved;
}

static bool
protected_target(int fd)
{
    uintptr_t v = mcs_fdtab_get(fd);
    return v != 0 && mcs_fdtab_internal_valid(fd, v);
}

MCS_EXPORT int
dup(int fd)
{
    mcs_real_init();
    int r = mcs_real.dup(fd);
    after_dup(fd, r);
    return r;
}

MCS_EXPORT int
dup2(int from, int to)
{
    mcs_real_init();
    if (from != to && protected_target(to)) {
        errno = EBUSY;
        return -1;
    }
    int r = mcs_real.dup2(from, to);
    if (from != to) {
        after_dup(from, r);
    }
    return r;
}

MCS_EXPORT int
dup3(int from, int to, int flags)
{
    mcs_real_init();
    if (from != to && protected_target(to)) {
        errno = EBUSY;
        return -1;
    }
    int r = mcs_real.dup3(from, to, flags);
    after_dup(from, r);
    return r;
}

MCS_EXPORT int
fcntl(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    mcs_real_init();
    int r = mcs_real.fcntl(fd, cmd, arg);
    if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) {
        after_dup(fd, r);
    } else if (cmd == F_SETFL && r == 0) {
        mcs_shim_nonblock_changed(fd, ((int)(intptr_t)arg & O_NONBLOCK) != 0);
    }
    return r;
}

/* ioctl: FIONBIO on an intercepted connection is noted for the fast path
 * (docs/fastpath.md); everything goes to libc. */
MCS_EXPORT int
ioctl(int fd, unsigned long request, ...)
{
    va_list ap;
    va_start(ap, request);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    mcs_real_init();
    int r = mcs_real.ioctl != NULL ? mcs_real.ioctl(fd, request, arg) : (int)syscall(SYS_ioctl, fd, request, arg);
    if (request == FIONBIO && r == 0 && arg != NULL) {
        int saved = errno;
        mcs_shim_nonblock_changed(fd, *(const int *)arg != 0);
        errno = saved;
    }
    return r;
}

/* Programs built with _FILE_OFFSET_BITS=64 call fcntl64; same thing on 64-bit. */
MCS_EXPORT int fcntl64(int fd, int cmd, ...) __attribute__((alias("fcntl")));
