/*
 * preload/shim/shim.h: the interposer's internal interface.
 *
 * Each exported libc-named function (one concern per file: connect.c,
 * close.c, dup.c, sockopt.c, sockname.c, socket.c) is a thin stub: make sure
 * the library is initialised, save errno, ask the internal function whether
 * the descriptor is ours, restore errno unless the call itself fails.
 *
 * An intercepted connection is a struct mcs_vconn: what the application
 * believes about its socket (TCP peer and local address, options it set).
 * Every descriptor that refers to it (dup copies) holds a reference through
 * the fd table; the last reference frees it. Entries are validated against
 * the descriptor's inode before use, so a number the host closed behind our
 * back (glibc's fclose, raw syscalls) and reused is never acted on.
 *
 * The write family (io.c) looks a descriptor up on every call without the
 * registry's lock, so a record may be freed while a writer reads it: records
 * are therefore never returned to the allocator (mcs_vconn_new recycles them),
 * and a writer checks, after taking a reference on the fast-path handle it
 * found, that the descriptor still names that record and the record that
 * handle.
 */
#ifndef MCS_SHIM_H
#define MCS_SHIM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "preload/core/config.h"
#include "preload/engine/engine.h"

#define MCS_VCONN_MAX_OPTS 24
#define MCS_VCONN_OPT_MAX  32

struct mcs_vconn_opt {
    int level;
    int name;
    socklen_t len;
    unsigned char value[MCS_VCONN_OPT_MAX];
};

struct mcs_vconn {
    _Atomic(struct mcs_fast *) fast;     /* the fast-path handle (one reference), or NULL; first (see above) */
    int refs;                            /* descriptors referring to it (fd table lock) */
    int family;                          /* what the application created: AF_INET/AF_INET6/AF_UNIX */
    ino_t ino;                           /* identity of the application end */
    dev_t dev;
    int fork_fd;                         /* fork child only: the new application end */
    struct sockaddr_storage peer;
    socklen_t peerlen;
    struct sockaddr_storage local;
    socklen_t locallen;
    size_t nopts;
    struct mcs_vconn_opt opts[MCS_VCONN_MAX_OPTS];
};

/* init.c: the configuration once parsed; NULL while inert or initialising. */
const struct mcs_config *mcs_shim_config(void);

/* vconn.c (callers hold mcs_fdtab_lock for the *_locked functions) */
struct mcs_vconn *mcs_vconn_new(void);               /* zeroed (refs 0, fork_fd -1), or NULL */
void mcs_vconn_drop(struct mcs_vconn *vc);            /* one that no descriptor names: recycled */
void mcs_vconn_atfork_child(void);                    /* the recycling lock may be a dead thread's */
/* The fast-path handle of fd's intercepted connection, with a reference taken
 * (mcs_fast_unref), or NULL. Lock-free. */
struct mcs_fast *mcs_vconn_fast(int fd);
struct mcs_vconn *mcs_vconn_lookup_locked(int fd);   /* validated, or NULL (and a stale entry dropped) */
void mcs_vconn_forget_locked(int fd);                /* drops whatever the table says about fd */
void mcs_vconn_alias_locked(int from, int to);       /* `to` is now a copy of `from` */
struct mcs_vconn_opt *mcs_vconn_opt(struct mcs_vconn *vc, int level, int name, bool create);
bool mcs_fd_maybe_ours(int fd);                       /* lock-free: table has anything for fd */
/* The intercepted connection on fd with the table locked (the caller unlocks),
 * or NULL with the table unlocked and errno as it was. */
struct mcs_vconn *mcs_vconn_enter(int fd);

/* connect.c */
/* *handled false: not ours, the caller passes the call to libc. true: taken
 * over (0) or refused (-1, errno set: fail closed, never libc). */
int mcs_shim_connect(int fd, const struct sockaddr *addr, socklen_t len, bool *handled);
/* Puts fd (an intercepted connection) on a new socketpair served by the
 * current engine. Returns 0, or -1 with errno set and fd untouched. */
int mcs_vconn_restream(const struct mcs_config *cfg, int fd, struct mcs_vconn *vc);

/* io.c: O_NONBLOCK of fd was set or cleared (fcntl F_SETFL, ioctl FIONBIO) */
void mcs_shim_nonblock_changed(int fd, bool nonblock);

/* fork.c */
void mcs_fork_register(void);

#endif

/* Exported interposed functions (the library is built with hidden visibility). */
#define MCS_EXPORT __attribute__((visibility("default")))
