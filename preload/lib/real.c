/*
 * preload/lib/real.c: dlsym(RTLD_NEXT) table of the interposed libc functions.
 */
#include "preload/lib/real.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>

struct mcs_real_fns mcs_real;

static pthread_once_t real_once = PTHREAD_ONCE_INIT;
static int real_status = -1;

static void *
resolve(const char *name)
{
    return dlsym(RTLD_NEXT, name);
}

static void
real_resolve_all(void)
{
    mcs_real.socket = (int (*)(int, int, int))resolve("socket");
    mcs_real.connect = (int (*)(int, const struct sockaddr *, socklen_t))resolve("connect");
    mcs_real.close = (int (*)(int))resolve("close");
    mcs_real.dup = (int (*)(int))resolve("dup");
    mcs_real.dup2 = (int (*)(int, int))resolve("dup2");
    mcs_real.dup3 = (int (*)(int, int, int))resolve("dup3");
    mcs_real.fcntl = (int (*)(int, int, ...))resolve("fcntl");
    mcs_real.ioctl = (int (*)(int, unsigned long, ...))resolve("ioctl");
    mcs_real.close_range = (int (*)(unsigned int, unsigned int, int))resolve("close_range");
    mcs_real.closefrom = (void (*)(int))resolve("closefrom");
    mcs_real.fclose = (int (*)(FILE *))resolve("fclose");
    mcs_real.setsockopt = (int (*)(int, int, int, const void *, socklen_t))resolve("setsockopt");
    mcs_real.getsockopt = (int (*)(int, int, int, void *, socklen_t *))resolve("getsockopt");
    mcs_real.getpeername = (int (*)(int, struct sockaddr *, socklen_t *))resolve("getpeername");
    mcs_real.getsockname = (int (*)(int, struct sockaddr *, socklen_t *))resolve("getsockname");
    mcs_real.write = (ssize_t(*)(int, const void *, size_t))resolve("write");
    mcs_real.writev = (ssize_t(*)(int, const struct iovec *, int))resolve("writev");
    mcs_real.send = (ssize_t(*)(int, const void *, size_t, int))resolve("send");
    mcs_real.sendto = (ssize_t(*)(int, const void *, size_t, int, const struct sockaddr *, socklen_t))resolve("sendto");
    mcs_real.sendmsg = (ssize_t(*)(int, const struct msghdr *, int))resolve("sendmsg");
    mcs_real.sendmmsg = (int (*)(int, struct mmsghdr *, unsigned int, int))resolve("sendmmsg");
    real_status = (mcs_real.socket && mcs_real.connect && mcs_real.close && mcs_real.dup && mcs_real.dup2
                   && mcs_real.dup3 && mcs_real.fcntl && mcs_real.ioctl && mcs_real.fclose && mcs_real.setsockopt
                   && mcs_real.getsockopt && mcs_real.getpeername && mcs_real.getsockname)
                      ? 0
                      : -1;
}

int
mcs_real_init(void)
{
    pthread_once(&real_once, real_resolve_all);
    return real_status;
}
