/*
 * preload/shim/sockopt.c: setsockopt/getsockopt on an intercepted descriptor.
 *
 * The descriptor is really an AF_UNIX stream socket, which refuses TCP and
 * IP level options. Those are remembered and read back as set (unset ones
 * read as zero), so clients that assert on TCP_NODELAY or TCP_KEEPIDLE (e.g.
 * libmemcached) keep working. SOL_SOCKET options go to the real socket
 * (timeouts, keepalive, buffer sizes all work on AF_UNIX); one it refuses is
 * remembered the same way. SO_DOMAIN and SO_PROTOCOL answer what the
 * application created (AF_INET/AF_INET6, TCP).
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/time.h>

#include "preload/lib/fdtab.h"
#include "preload/lib/real.h"
#include "preload/shim/shim.h"

static bool
emulated_level(int level)
{
    return level == IPPROTO_TCP || level == IPPROTO_IP || level == IPPROTO_IPV6;
}

/* TCP options Linux accepts with an int value; others answer ENOPROTOOPT as
 * the kernel would (TCP_CONGESTION takes a name). */
static const int tcp_int_opts[] = {
    TCP_NODELAY, TCP_MAXSEG, TCP_CORK, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_SYNCNT,
    TCP_LINGER2, TCP_DEFER_ACCEPT, TCP_WINDOW_CLAMP, TCP_QUICKACK, TCP_USER_TIMEOUT,
    TCP_NOTSENT_LOWAT, TCP_FASTOPEN, TCP_FASTOPEN_CONNECT, TCP_THIN_LINEAR_TIMEOUTS, TCP_THIN_DUPACK,
};

/* 0 if (level, name, len) is something TCP would accept, else the errno TCP gives. */
static int
tcp_check(int level, int name, socklen_t len, bool set)
{
    if (level != IPPROTO_TCP) {
        return 0;
    }
    if (name == TCP_CONGESTION) {
        return 0;
    }
    if (name == TCP_INFO) {
        return set ? ENOPROTOOPT : 0;
    }
    for (size_t i = 0; i < sizeof(tcp_int_opts) / sizeof(tcp_int_opts[0]); i++) {
        if (tcp_int_opts[i] == name) {
            return set && len < sizeof(int) ? EINVAL : 0;
        }
    }
    return ENOPROTOOPT;
}

/* The socket's SO_RCVTIMEO or SO_SNDTIMEO (name) is not zero (as the kernel keeps it). */
static bool
timeout_set(int fd, int name)
{
    struct timeval tv = { 0, 0 };
    socklen_t l = sizeof(tv);
    return mcs_real.getsockopt(fd, SOL_SOCKET, name, &tv, &l) == 0 && (tv.tv_sec != 0 || tv.tv_usec != 0);
}

static int
store(struct mcs_vconn *vc, int level, int name, const void *val, socklen_t len)
{
    struct mcs_vconn_opt *o = mcs_vconn_opt(vc, level, name, true);
    if (o == NULL || len > MCS_VCONN_OPT_MAX || (len > 0 && val == NULL)) {
        errno = o == NULL ? ENOMEM : EINVAL;
        return -1;
    }
    memcpy(o->value, val, len);
    o->len = len;
    return 0;
}

MCS_EXPORT int
setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
    mcs_real_init();
    struct mcs_vconn *vc = mcs_vconn_enter(fd);
    if (vc == NULL) {
        return mcs_real.setsockopt(fd, level, name, val, len);
    }
    int saved = errno;
    int rc;
    int bad = tcp_check(level, name, len, true);
    if (bad != 0) {
        errno = bad;
        rc = -1;
    } else if (emulated_level(level)) {
        rc = store(vc, level, name, val, level == IPPROTO_TCP && name != TCP_CONGESTION ? sizeof(int) : len);
    } else {
        rc = mcs_real.setsockopt(fd, level, name, val, len);
        if (rc != 0 && level == SOL_SOCKET && (errno == EOPNOTSUPP || errno == ENOPROTOOPT)) {
            rc = store(vc, level, name, val, len);
        }
        struct mcs_fast *h = atomic_load(&vc->fast);
        if (rc == 0 && h != NULL && level == SOL_SOCKET && (name == SO_RCVTIMEO || name == SO_SNDTIMEO)) {
            mcs_fast_app_timeout(h, name, timeout_set(fd, name));
        }
    }
    mcs_fdtab_unlock();
    if (rc == 0) {
        errno = saved;
    }
    return rc;
}

static void
answer(void *val, socklen_t *len, const void *src, socklen_t srclen)
{
    socklen_t n = *len < srclen ? *len : srclen;
    memcpy(val, src, n);
    *len = n;
}

MCS_EXPORT int
getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
    mcs_real_init();
    struct mcs_vconn *vc = val != NULL && len != NULL ? mcs_vconn_enter(fd) : NULL;
    if (vc == NULL) {
        return mcs_real.getsockopt(fd, level, name, val, len);
    }
    int saved = errno;
    int rc = 0;
    int v;
    struct mcs_vconn_opt *o;
    int bad = tcp_check(level, name, *len, false);
    if (bad != 0) {
        errno = bad;
        rc = -1;
    } else if (level == SOL_SOCKET && name == SO_DOMAIN) {
        v = vc->family;
        answer(val, len, &v, sizeof(v));
    } else if (level == SOL_SOCKET && name == SO_PROTOCOL) {
        v = vc->family == AF_UNIX ? 0 : IPPROTO_TCP;
        answer(val, len, &v, sizeof(v));
    } else if ((o = mcs_vconn_opt(vc, level, name, false)) != NULL) {
        answer(val, len, o->value, o->len);
    } else if (emulated_level(level)) {
        /* Never set: zero, except the TCP state, which is "established". */
        memset(val, 0, *len);
        if (level == IPPROTO_TCP && name == TCP_INFO && *len > 0) {
            ((unsigned char *)val)[0] = TCP_ESTABLISHED;
        }
        if (*len > sizeof(int) && name != TCP_INFO) {
            *len = sizeof(int);
        }
    } else {
        rc = mcs_real.getsockopt(fd, level, name, val, len);
    }
    mcs_fdtab_unlock();
    if (rc == 0) {
        errno = saved;
    }
    return rc;
}
