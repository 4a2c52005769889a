/*
 * preload/shim/socket.c: socket() only clears a stale registry entry when
 * the kernel hands out a number the shim still remembers (the host closed it
 * in a way the shim could not see).
 */
#include <errno.h>

#include "preload/lib/fdtab.h"
#include "preload/lib/real.h"
#include "preload/shim/shim.h"

MCS_EXPORT int
socket(int domain, int type, int protocol)
{
    mcs_real_init();
    int fd = mcs_real.socket(domain, type, protocol);
    if (fd >= 0 && mcs_fd_maybe_ours(fd)) {
        int saved = errno;
        mcs_fdtab_lock();
        mcs_vconn_forget_locked(fd);
        mcs_fdtab_unlock();
        errno = saved;
    }
    return fd;
}
