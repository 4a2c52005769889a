/*
 * preload/shim/connect.c: connect() to an intercepted address becomes a
 * socketpair served by the engine.
 *
 * The application's descriptor number, its close-on-exec flag, O_NONBLOCK
 * and its send/receive timeouts are kept; TCP-level options it set before
 * connecting are remembered so it reads them back. connect() returns 0 at
 * once, also for a non-blocking socket (Linux may do that for loopback too):
 * the stream is writable and SO_ERROR is 0.
 *
 * What is not ours goes to libc untouched: not a stream socket, or an address
 * the kernel would refuse for this socket (family against domain, length,
 * IPV6_V6ONLY), so the application gets the kernel's own error. What is ours
 * but cannot be taken over (no descriptor for the socketpair, no engine
 * thread, no memory) fails closed: connect() returns -1 with that errno and
 * one line is logged; it is never handed to libc, which would reach whatever
 * listens on the intercept address.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "preload/core/alloc.h"
#include "preload/engine/engine.h"
#include "preload/lib/fdtab.h"
#include "preload/lib/log.h"
#include "preload/lib/real.h"
#include "preload/shim/shim.h"

/* TCP options read from the real socket before it is replaced. */
static const int carried_tcp_opts[] = { TCP_NODELAY, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT };
/* Socket options replayed onto the new descriptor. Buffer sizes are not
 * carried: TCP's defaults would shrink the socketpair (docs/interposition.md). */
static const int carried_sock_opts[] = { SO_RCVTIMEO, SO_SNDTIMEO, SO_KEEPALIVE, SO_LINGER };

/* The shortest sockaddr_in6 Linux accepts (RFC 2133: no sin6_scope_id). */
#define SIN6_LEN_RFC2133 24

/* a (the application's, alen bytes) names the same endpoint as b (ours). */
static bool
same_addr(const struct sockaddr *a, socklen_t alen, const struct sockaddr *b, socklen_t blen)
{
    struct sockaddr_in mapped;
    /* ::ffff:a.b.c.d is the IPv4 address a.b.c.d */
    if (a->sa_family == AF_INET6 && alen >= SIN6_LEN_RFC2133) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)a;
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
            memset(&mapped, 0, sizeof(mapped));
            mapped.sin_family = AF_INET;
            mapped.sin_port = s6->sin6_port;
            memcpy(&mapped.sin_addr, &s6->sin6_addr.s6_addr[12], 4);
            a = (const struct sockaddr *)&mapped;
            alen = sizeof(mapped);
        }
    }
    if (a->sa_family != b->sa_family) {
        return false;
    }
    switch (a->sa_family) {
    case AF_INET: {
        const struct sockaddr_in *x = (const struct sockaddr_in *)a, *y = (const struct sockaddr_in *)b;
        return alen >= sizeof(*x) && x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    case AF_INET6: {
        const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a, *y = (const struct sockaddr_in6 *)b;
        return alen >= SIN6_LEN_RFC2133 && x->sin6_port == y->sin6_port
               && memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    case AF_UNIX: {
        const struct sockaddr_un *x = (const struct sockaddr_un *)a, *y = (const struct sockaddr_un *)b;
        size_t off = offsetof(struct sockaddr_un, sun_path);
        if (alen <= off || alen > sizeof(struct sockaddr_un)) {
            return false;   /* the kernel answers EINVAL */
        }
        size_t xl = strnlen(x->sun_path, alen - off), yl = strnlen(y->sun_path, blen - off);
        return xl == yl && xl > 0 && memcmp(x->sun_path, y->sun_path, xl) == 0;
    }
    default:
        return false;
    }
}

/* addr is one of the intercept addresses (for some socket domain). */
static bool
intercepted(const struct mcs_config *cfg, const struct sockaddr *addr, socklen_t len)
{
    for (size_t i = 0; i < cfg->nintercept; i++) {
        const struct mcs_endpoint *e = &cfg->intercept[i];
        for (size_t k = 0; k < e->naddrs; k++) {
            if (same_addr(addr, len, (const struct sockaddr *)&e->addrs[k], e->addrlens[k])) {
                return true;
            }
        }
    }
    return false;
}

/* The kernel would connect a socket of this domain to addr at all (it
 * refuses otherwise: EINVAL or EAFNOSUPPORT for a family that is not the
 * socket's, ENETUNREACH for an IPv4-mapped address on an IPV6_V6ONLY socket),
 * so the address is the application's to reach, not an error to hide. */
static bool
kernel_would_connect(int fd, int domain, const struct sockaddr *addr)
{
    if (addr->sa_family != domain) {
        return false;   /* an AF_INET6 socket takes IPv4 only as ::ffff:a.b.c.d */
    }
    if (domain == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)addr)->sin6_addr)) {
        int v6only = 0;
        socklen_t l = sizeof(v6only);
        if (mcs_real.getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &l) != 0 || v6only) {
            return false;
        }
    }
    return true;
}

/* A plausible local address for the application's side of the "TCP" connection. */
static void
fake_local(struct mcs_vconn *vc)
{
    static _Atomic unsigned next_port;
    unsigned port = 32768 + (atomic_fetch_add(&next_port, 1) + (unsigned)getpid()) % 28232;
    memset(&vc->local, 0, sizeof(vc->local));
    if (vc->family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&vc->local;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        s6->sin6_addr = in6addr_loopback;
        vc->locallen = sizeof(*s6);
    } else if (vc->family == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&vc->local;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        vc->locallen = sizeof(*s4);
    } else {
        vc->local.ss_family = AF_UNIX;
        vc->locallen = sizeof(sa_family_t);
    }
}

/* Takes fd over: makes a socketpair, hands one end to the engine, then puts
 * the other on fd's number (keeping its close-on-exec flag and the given
 * O_NONBLOCK/O_ASYNC status). The engine gets its end before fd is touched,
 * so every failure leaves fd as it was: returns 0, or -1 with errno set and
 * *what naming the step to log (NULL: the engine has logged it already). */
static int
take_over(const struct mcs_config *cfg, int fd, int status_flags, const char **what, struct mcs_fast **fast)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        *what = "no descriptor for its socketpair";
        return -1;
    }
    int engine_end = mcs_fd_move_high(sv[1]);
    mcs_real.fcntl(engine_end, F_SETFL, O_NONBLOCK);
    if (mcs_engine_attach(cfg, engine_end, fast) != 0) {
        int err = errno;
        mcs_real.close(sv[0]);
        mcs_real.close(engine_end);
        *what = NULL;   /* the engine has logged why */
        errno = err;
        return -1;
    }
    /* The engine owns engine_end now: from here on, closing sv[0] is how we let go. */
    int fdflags = mcs_real.fcntl(fd, F_GETFD);
    if (mcs_real.dup3(sv[0], fd, (fdflags > 0 && (fdflags & FD_CLOEXEC)) ? O_CLOEXEC : 0) < 0) {
        int err = errno;
        mcs_real.close(sv[0]);   /* the engine sees EOF and closes its end */
        mcs_fast_unref(*fast);
        *fast = NULL;
        *what = "cannot put it on the descriptor";
        errno = err;
        return -1;
    }
    mcs_real.close(sv[0]);
    mcs_real.fcntl(fd, F_SETFL, status_flags & (O_NONBLOCK | O_ASYNC));
    return 0;
}

/* connect() fails closed: errno err, one line unless the engine said it already. */
static int
refuse(int err, const char *what)
{
    if (what != NULL) {
        mcs_log(MCS_LOG_ERROR, "connect to an intercepted address refused: %s: %s", what, strerror(err));
    }
    errno = err;
    return -1;
}

/* Remembers which file fd now is (the socketpair end), so a number reused
 * behind our back is never taken for this connection. */
static void
record_identity(int fd, struct mcs_vconn *vc)
{
    struct stat st;
    if (fstat(fd, &st) == 0) {
        vc->ino = st.st_ino;
        vc->dev = st.st_dev;
    }
}

int
mcs_vconn_restream(const struct mcs_config *cfg, int fd, struct mcs_vconn *vc)
{
    int fl = mcs_real.fcntl(fd, F_GETFL);
    const char *what;
    struct mcs_fast *fast;
    if (take_over(cfg, fd, fl < 0 ? 0 : fl, &what, &fast) != 0) {
        return -1;
    }
    atomic_store(&vc->fast, fast);   /* (the fork child dropped the parent's handle unreleased) */
    record_identity(fd, vc);
    return 0;
}

int
mcs_shim_connect(int fd, const struct sockaddr *addr, socklen_t len, bool *handled)
{
    *handled = false;
    const struct mcs_config *cfg = mcs_shim_config();
    if (cfg == NULL || addr == NULL || len < sizeof(sa_family_t) || !intercepted(cfg, addr, len)) {
        return 0;
    }
    uintptr_t v = mcs_fdtab_get(fd);
    if (v & MCS_FD_INTERNAL_BIT) {
        if (mcs_fdtab_internal_valid(fd, v)) {
            return 0;   /* the engine's own socket */
        }
        mcs_fdtab_swap(fd, 0);
    }
    int type = 0, domain = 0;
    socklen_t tl = sizeof(type), dl = sizeof(domain);
    if (mcs_real.getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 || type != SOCK_STREAM) {
        return 0;   /* not ours: libc (the kernel) answers */
    }
    if (mcs_vconn_enter(fd) != NULL) {
        /* Already an intercepted connection (its socket is now AF_UNIX): as TCP says. */
        mcs_fdtab_unlock();
        *handled = true;
        errno = EISCONN;
        return -1;
    }
    if (mcs_real.getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &dl) != 0 || !kernel_would_connect(fd, domain, addr)) {
        return 0;
    }
    /* Ours from here on: taken over, or refused with the real errno. */
    *handled = true;
    struct mcs_vconn *vc = mcs_vconn_new();
    if (vc == NULL) {
        return refuse(ENOMEM, "out of memory");
    }
    vc->refs = 1;
    vc->family = domain;
    memcpy(&vc->peer, addr, len < sizeof(vc->peer) ? len : sizeof(vc->peer));
    vc->peerlen = len < sizeof(vc->peer) ? len : sizeof(vc->peer);
    fake_local(vc);

    /* What the application already set on the real socket. */
    struct mcs_vconn_opt carried[sizeof(carried_sock_opts) / sizeof(carried_sock_opts[0])];
    for (size_t i = 0; domain != AF_UNIX && i < sizeof(carried_tcp_opts) / sizeof(carried_tcp_opts[0]); i++) {
        struct mcs_vconn_opt *o = mcs_vconn_opt(vc, IPPROTO_TCP, carried_tcp_opts[i], true);
        o->len = sizeof(int);
        if (mcs_real.getsockopt(fd, IPPROTO_TCP, carried_tcp_opts[i], o->value, &o->len) != 0) {
            vc->nopts--;
        }
    }
    for (size_t i = 0; i < sizeof(carried_sock_opts) / sizeof(carried_sock_opts[0]); i++) {
        carried[i].name = carried_sock_opts[i];
        carried[i].len = sizeof(carried[i].value);
        if (mcs_real.getsockopt(fd, SOL_SOCKET, carried_sock_opts[i], carried[i].value, &carried[i].len) != 0) {
            carried[i].len = 0;
        }
    }
    int fl = mcs_real.fcntl(fd, F_GETFL);
    /* Lock order: fd table, then the engine's locks (fork handlers take them so too). */
    mcs_fdtab_lock();
    if (mcs_vconn_lookup_locked(fd) != NULL) {
        mcs_fdtab_unlock();
        mcs_vconn_drop(vc);
        errno = EISCONN;
        return -1;
    }
    const char *what = NULL;
    struct mcs_fast *fast;
    if (take_over(cfg, fd, fl < 0 ? 0 : fl, &what, &fast) != 0) {
        int err = errno;
        mcs_fdtab_unlock();
        mcs_vconn_drop(vc);
        return refuse(err, what);
    }
    atomic_store(&vc->fast, fast);
    for (size_t i = 0; i < sizeof(carried_sock_opts) / sizeof(carried_sock_opts[0]); i++) {
        if (carried[i].len > 0) {
            mcs_real.setsockopt(fd, SOL_SOCKET, carried[i].name, carried[i].value, carried[i].len);
        }
        if (fast != NULL && (carried[i].name == SO_RCVTIMEO || carried[i].name == SO_SNDTIMEO)
            && carried[i].len == sizeof(struct timeval)) {
            struct timeval tv;
            memcpy(&tv, carried[i].value, sizeof(tv));
            mcs_fast_app_timeout(fast, carried[i].name, tv.tv_sec != 0 || tv.tv_usec != 0);
        }
    }
    record_identity(fd, vc);
    mcs_vconn_forget_locked(fd);
    mcs_fdtab_swap(fd, (uintptr_t)vc);
    mcs_fdtab_unlock();
    return 0;
}

/* The interposed connect: ours (taken over, or refused with errno set), or libc's. */
MCS_EXPORT int
connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    mcs_real_init();
    int saved = errno;
    bool handled;
    int rc = mcs_shim_connect(fd, addr, len, &handled);
    if (handled) {
        if (rc == 0) {
            errno = saved;
        }
        return rc;
    }
    errno = saved;
    return mcs_real.connect(fd, addr, len);
}
