/*
 * preload/shim/fork.c: fork handling.
 *
 * prepare/parent: hold the engine and registry locks across fork() so the
 * child never inherits them mid-update. child: the engine thread does not
 * exist there; its descriptors are closed and, for every intercepted
 * connection the child inherited, the child's copy is switched onto a new
 * socketpair served by a new engine of its own, so parent and child never
 * share one stream (prefork servers that connect before forking). If the
 * child cannot have its own (no engine thread, no descriptor), its copy is
 * closed rather than shared: it reads EOF, as from a server that went away.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "preload/core/alloc.h"
#include "preload/engine/engine.h"
#include "preload/lib/fdtab.h"
#include "preload/lib/log.h"
#include "preload/lib/real.h"
#include "preload/shim/shim.h"

struct fork_list {
    int *fds;
    size_t n;
    size_t cap;
};

static void
collect_vconn(int fd, uintptr_t v, void *arg)
{
    struct fork_list *l = arg;
    if (v & MCS_FD_INTERNAL_BIT) {
        return;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        int *p = mcs_realloc(l->fds, cap * sizeof(*p));
        if (p == NULL) {
            return;
        }
        l->fds = p;
        l->cap = cap;
    }
    l->fds[l->n++] = fd;
}

/* Lock order: fd table, then the engine's (connect holds the table while it
 * hands a connection to the engine). */
static void
fork_prepare(void)
{
    mcs_fdtab_lock();
    mcs_engine_atfork_prepare();
}

static void
fork_parent(void)
{
    mcs_engine_atfork_parent();
    mcs_fdtab_unlock();
}

/* The child's copy of a connection that cannot have a stream of its own: a
 * socketpair end whose peer is closed takes the number (reads EOF, writes
 * EPIPE), so the child never shares the parent's stream (replies would go to
 * whichever process reads first). With no descriptor for that, an unconnected
 * socket (reads EINVAL, writes ENOTCONN). Flags are kept; errno too. */
static void
sever(int fd)
{
    int saved = errno;
    int fdflags = mcs_real.fcntl(fd, F_GETFD);
    int fl = mcs_real.fcntl(fd, F_GETFL);
    int sv[2] = { -1, -1 };
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        sv[0] = mcs_real.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    }
    if (sv[0] >= 0) {
        mcs_real.dup3(sv[0], fd, (fdflags > 0 && (fdflags & FD_CLOEXEC)) ? O_CLOEXEC : 0);
        mcs_real.fcntl(fd, F_SETFL, fl < 0 ? 0 : fl & (O_NONBLOCK | O_ASYNC));
        mcs_real.close(sv[0]);
    }
    if (sv[1] >= 0) {
        mcs_real.close(sv[1]);
    }
    errno = saved;
}

static void
fork_child(void)
{
    int saved = errno;
    mcs_fdtab_child_reinit();
    mcs_vconn_atfork_child();
    mcs_engine_atfork_child();
    const struct mcs_config *cfg = mcs_shim_config();
    struct fork_list l = { 0 };
    mcs_fdtab_foreach(collect_vconn, &l);
    for (size_t i = 0; i < l.n; i++) {
        int fd = l.fds[i];
        struct mcs_vconn *vc = mcs_vconn_lookup_locked(fd);
        if (vc == NULL) {
            continue;
        }
        /* The parent's fast-path handle belongs to the parent's engine (gone
         * here, its lock maybe held): forgotten, never released. */
        atomic_store(&vc->fast, NULL);
        if (vc->fork_fd >= 0) {
            /* Another copy of this connection already has its new stream: share it. */
            int fdflags = mcs_real.fcntl(fd, F_GETFD);
            mcs_real.dup3(vc->fork_fd, fd, (fdflags > 0 && (fdflags & FD_CLOEXEC)) ? O_CLOEXEC : 0);
            continue;
        }
        if (cfg == NULL || mcs_vconn_restream(cfg, fd, vc) != 0) {
            mcs_log(MCS_LOG_ERROR, "fork: cannot give the child its own memcached stream (%s); its copy is closed",
                    strerror(errno));
            mcs_vconn_forget_locked(fd);
            sever(fd);
            continue;
        }
        vc->fork_fd = fd;
    }
    for (size_t i = 0; i < l.n; i++) {
        struct mcs_vconn *vc = (struct mcs_vconn *)mcs_fdtab_get(l.fds[i]);
        if (vc != NULL && !((uintptr_t)vc & MCS_FD_INTERNAL_BIT)) {
            vc->fork_fd = -1;
        }
    }
    mcs_free(l.fds);
    errno = saved;
}

void
mcs_fork_register(void)
{
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}
