/*
 * preload/lib/real.h: the real libc functions behind the ones the shim
 * interposes, resolved once with dlsym(RTLD_NEXT).
 *
 * Inside the library every call to an interposed function must go through
 * mcs_real (calling plain close() from the engine would enter our own
 * wrapper). mcs_real_init() is idempotent and thread-safe; every wrapper
 * calls it before using a pointer, so a call that arrives before the library
 * constructor (another constructor, a very early thread) still works.
 */
#ifndef MCS_REAL_H
#define MCS_REAL_H

#include <stdio.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

struct mcs_real_fns {
    int (*socket)(int, int, int);
    int (*connect)(int, const struct sockaddr *, socklen_t);
    int (*close)(int);
    int (*dup)(int);
    int (*dup2)(int, int);
    int (*dup3)(int, int, int);
    int (*fcntl)(int, int, ...);
    int (*ioctl)(int, unsigned long, ...);
    int (*close_range)(unsigned int, unsigned int, int);
    void (*closefrom)(int);
    int (*fclose)(FILE *);
    int (*setsockopt)(int, int, int, const void *, socklen_t);
    int (*getsockopt)(int, int, int, void *, socklen_t *);
    int (*getpeername)(int, struct sockaddr *, socklen_t *);
    int (*getsockname)(int, struct sockaddr *, socklen_t *);
    /* the write family (preload/shim/io.c); NULL until resolved: callers fall back to the syscall */
    ssize_t (*write)(int, const void *, size_t);
    ssize_t (*writev)(int, const struct iovec *, int);
    ssize_t (*send)(int, const void *, size_t, int);
    ssize_t (*sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
    ssize_t (*sendmsg)(int, const struct msghdr *, int);
    int (*sendmmsg)(int, struct mmsghdr *, unsigned int, int);
};

extern struct mcs_real_fns mcs_real;

/* Resolves every pointer once. Returns 0, or -1 if a required symbol is missing
 * (close_range/closefrom may be NULL on old glibc). */
int mcs_real_init(void);

#endif
