/*
 * preload/shim/sockname.c: getpeername/getsockname on an intercepted
 * descriptor answer as the TCP connection would: the peer is the address the
 * application connected to; the local side is a loopback address of the same
 * family with an ephemeral-range port.
 */
#include <errno.h>
#include <string.h>

#include "preload/lib/fdtab.h"
#include "preload/lib/real.h"
#include "preload/shim/shim.h"

typedef int (*name_fn)(int, struct sockaddr *, socklen_t *);

static int
name_of(int fd, struct sockaddr *addr, socklen_t *len, bool peer, name_fn real)
{
    struct mcs_vconn *vc = addr != NULL && len != NULL ? mcs_vconn_enter(fd) : NULL;
    if (vc == NULL) {
        return real(fd, addr, len);
    }
    int saved = errno;
    const struct sockaddr_storage *src = peer ? &vc->peer : &vc->local;
    socklen_t srclen = peer ? vc->peerlen : vc->locallen;
    memcpy(addr, src, *len < srclen ? *len : srclen);
    *len = srclen;
    mcs_fdtab_unlock();
    errno = saved;
    return 0;
}

MCS_EXPORT int
getpeername(int fd, struct sockaddr *addr, socklen_t *len)
{
    mcs_real_init();
    return name_of(fd, addr, len, true, mcs_real.getpeername);
}

MCS_EXPORT int
getsockname(int fd, struct sockaddr *addr, socklen_t *len)
{
    mcs_real_init();
    return name_of(fd, addr, len, false, mcs_real.getsockname);
}
