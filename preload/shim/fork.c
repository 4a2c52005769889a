/*
 * preload/shim/fork.c: fork handling.
 *
 * prepare/parent: hold the engine and registry locks across fork() so the
 * child never inherits them mid-update. child: the engine thread does not
 * exist there; its descriptors are closed and, for every intercepted
 * connection the child inherited, the child's copy is switched onto a new
 * socketpair served by a new engine of its own, so parent and child never
 * share one stream (prefork servers that connect before forking).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>

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
        int *p = realloc(l->fds, cap * sizeof(*p));
        if (p == NULL) {
            return;
        }
        l->fds = p;
        l->cap = cap;
    }
    l->fds[l->n++] = fd;
}

static void
fork_prepare(void)
{
    mcs_engine_atfork_prepare();
    mcs_fdtab_lock();
}

static void
fork_parent(void)
{
    mcs_fdtab_unlock();
    mcs_engine_atfork_parent();
}

static void
fork_child(void)
{
    int saved = errno;
    mcs_fdtab_child_reinit();
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
        if (vc->fork_fd >= 0) {
            /* Another copy of this connection already has its new stream: share it. */
            int fdflags = mcs_real.fcntl(fd, F_GETFD);
            mcs_real.dup3(vc->fork_fd, fd, (fdflags > 0 && (fdflags & FD_CLOEXEC)) ? O_CLOEXEC : 0);
            continue;
        }
        int engine_end;
        if (cfg == NULL || mcs_engine_ensure(cfg) != 0 || mcs_vconn_restream(fd, vc, &engine_end) != 0) {
            mcs_log(MCS_LOG_ERROR, "fork: cannot give the child its own memcached stream; dropping it");
            mcs_vconn_forget_locked(fd);
            continue;
        }
        vc->fork_fd = fd;
        if (mcs_engine_attach(engine_end) != 0) {
            mcs_fdtab_swap(engine_end, 0);
            mcs_real.close(engine_end);
        }
    }
    for (size_t i = 0; i < l.n; i++) {
        struct mcs_vconn *vc = (struct mcs_vconn *)mcs_fdtab_get(l.fds[i]);
        if (vc != NULL && !((uintptr_t)vc & MCS_FD_INTERNAL_BIT)) {
            vc->fork_fd = -1;
        }
    }
    free(l.fds);
    errno = saved;
}

void
mcs_fork_register(void)
{
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}
