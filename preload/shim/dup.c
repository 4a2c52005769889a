/*
 * preload/shim/dup.c: dup, dup2, dup3, fcntl(F_DUPFD*): a copy of an
 * intercepted descriptor is intercepted too; a descriptor replaced by dup2 is
 * forgotten. dup2/dup3 onto one of the library's own descriptors fails with
 * EBUSY rather than silently breaking the engine.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
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
    }
    return r;
}

/* Programs built with _FILE_OFFSET_BITS=64 call fcntl64; same thing on 64-bit. */
MCS_EXPORT int fcntl64(int fd, int cmd, ...) __attribute__((alias("fcntl")));
