/*
 * preload/shim/io.c: write, writev, send, sendto, sendmsg, sendmmsg.
 *
 * On a descriptor that is not an intercepted connection these are libc's (one
 * lock-free table load first). On an intercepted one, a write on a blocking
 * descriptor is offered to the fast path (preload/engine/fast.c): the calling
 * thread does the round trips itself and the replies are on the socketpair
 * when the call returns. A write the fast path does not take (non-blocking
 * descriptor, MSG_DONTWAIT, a destination address, the connection busy, ...)
 * goes to the socketpair as before, and is counted so that the fast path
 * never overtakes bytes the engine has not read yet (mcs_fast_unread).
 *
 * Before the library has resolved libc's functions (a call from another
 * library's constructor), the system call is made directly.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "preload/lib/fdtab.h"
#include "preload/lib/real.h"
#include "preload/shim/shim.h"

/* The fast-path handle of fd with a reference, or NULL (most descriptors: one load). */
static inline struct mcs_fast *
fast_of(int fd)
{
    uintptr_t v = mcs_fdtab_get(fd);
    if (__builtin_expect(v == 0 || (v & MCS_FD_INTERNAL_BIT), 1)) {
        return NULL;
    }
    return mcs_vconn_fast(fd);
}


void
mcs_shim_nonblock_changed(int fd, bool nonblock)
{
    struct mcs_fast *h = fast_of(fd);
    if (h != NULL) {
        mcs_fast_set_nonblock(h, nonblock);
        mcs_fast_unref(h);
    }
}

/* The write the fast path did not take: made, then counted before the call
 * returns, so this thread's next write cannot overtake it. (Counted after, not
 * before: the engine may read first, and the count is then briefly negative,
 * which also keeps the fast path away.) */
#define ENGINE_PATH(h, call)                       \
    do {                                           \
        ssize_t r_ = (call);                       \
        int e_ = errno;                            \
        mcs_fast_declined(h);                      \
        if (r_ > 0) {                              \
            mcs_fast_unread(h, (int64_t)r_);       \
        }                                          \
        mcs_fast_unref(h);                         \
        errno = e_;                                \
        return r_;                                 \
    } while (0)

/* The call may block (blocking descriptor, no MSG_DONTWAIT): the fast path may wait in it. */
static bool
try_fast(struct mcs_fast *h, int fd, int flags, const struct iovec *iov, int n, ssize_t *r)
{
    if ((flags & (MSG_DONTWAIT | MSG_OOB)) || !mcs_fast_blocking(h, fd) || !mcs_fast_write(h, iov, n, r)) {
        return false;
    }
    mcs_fast_unref(h);
    return true;
}

MCS_EXPORT ssize_t
write(int fd, const void *buf, size_t len)
{
    struct mcs_fast *h = fast_of(fd);
    if (h == NULL) {
        return mcs_real.write != NULL ? mcs_real.write(fd, buf, len) : syscall(SYS_write, fd, buf, len);
    }
    struct iovec iov = { (void *)(uintptr_t)buf, len };
    ssize_t r;
    if (try_fast(h, fd, 0, &iov, 1, &r)) {
        return r;
    }
    ENGINE_PATH(h, mcs_real.write(fd, buf, len));
}

MCS_EXPORT ssize_t
writev(int fd, const struct iovec *iov, int n)
{
    struct mcs_fast *h = fast_of(fd);
    if (h == NULL) {
        return mcs_real.writev != NULL ? mcs_real.writev(fd, iov, n) : syscall(SYS_writev, fd, iov, n);
    }
    ssize_t r;
    if (n > 0 && n <= IOV_MAX && try_fast(h, fd, 0, iov, n, &r)) {
        return r;
    }
    ENGINE_PATH(h, mcs_real.writev(fd, iov, n));
}

MCS_EXPORT ssize_t
send(int fd, const void *buf, size_t len, int flags)
{
    struct mcs_fast *h = fast_of(fd);
    if (h == NULL) {
        return mcs_real.send != NULL ? mcs_real.send(fd, buf, len, flags)
                                     : syscall(SYS_sendto, fd, buf, len, flags, NULL, 0);
    }
    struct iovec iov = { (void *)(uintptr_t)buf, len };
    ssize_t r;
    if (try_fast(h, fd, flags, &iov, 1, &r)) {
        return r;
    }
    ENGINE_PATH(h, mcs_real.send(fd, buf, len, flags));
}

MCS_EXPORT ssize_t
sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to, socklen_t tolen)
{
    struct mcs_fast *h = fast_of(fd);
    if (h == NULL) {
        return mcs_real.sendto != NULL ? mcs_real.sendto(fd, buf, len, flags, to, tolen)
                                       : syscall(SYS_sendto, fd, buf, len, flags, to, tolen);
    }
    struct iovec iov = { (void *)(uintptr_t)buf, len };
    ssize_t r;
    if (to == NULL && try_fast(h, fd, flags, &iov, 1, &r)) {
        return r;
    }
    ENGINE_PATH(h, mcs_real.sendto(fd, buf, len, flags, to, tolen));
}

MCS_EXPORT ssize_t
sendmsg(int fd, const struct msghdr *msg, int flags)
{
    struct mcs_fast *h = fast_of(fd);
    if (h == NULL) {
        return mcs_real.sendmsg != NULL ? mcs_real.sendmsg(fd, msg, flags) : syscall(SYS_sendmsg, fd, msg, flags);
    }
    ssize_t r;
    bool plain = msg != NULL && msg->msg_name == NULL && msg->msg_controllen == 0 && msg->msg_iovlen > 0
                 && msg->msg_iovlen <= IOV_MAX;
    if (plain && try_fast(h, fd, flags, msg->msg_iov, (int)msg->msg_iovlen, &r)) {
        return r;
    }
    ENGINE_PATH(h, mcs_real.sendmsg(fd, msg, flags));
}

/* Never on the fast path; counted, so that it cannot overtake what it sends. */
MCS_EXPORT int
sendmmsg(int fd, struct mmsghdr *vec, unsigned int n, int flags)
{
    struct mcs_fast *h = fast_of(fd);
    if (h == NULL) {
        return mcs_real.sendmmsg != NULL ? mcs_real.sendmmsg(fd, vec, n, flags)
                                         : (int)syscall(SYS_sendmmsg, fd, vec, n, flags);
    }
    int r = mcs_real.sendmmsg(fd, vec, n, flags);
    int e = errno;
    int64_t sent = 0;
    for (int i = 0; i < r; i++) {
        sent += vec[i].msg_len;
    }
    mcs_fast_declined(h);
    mcs_fast_unread(h, sent);
    mcs_fast_unref(h);
    errno = e;
    return r;
}
