/*
 * preload/shim/vconn.c: the registry of intercepted connections (see shim.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "preload/core/alloc.h"
#include "preload/lib/fdtab.h"
#include "preload/shim/shim.h"

static struct mcs_vconn *
as_vconn(uintptr_t v)
{
    return (v == 0 || (v & MCS_FD_INTERNAL_BIT)) ? NULL : (struct mcs_vconn *)v;
}

static pthread_mutex_t recycle_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mcs_vconn *recycled;   /* linked through the peer address's place (no reader looks there) */
static struct mcs_vconn **recycled_next(struct mcs_vconn *vc) { return (struct mcs_vconn **)&vc->peer; }

struct mcs_vconn *
mcs_vconn_new(void)
{
    pthread_mutex_lock(&recycle_lock);
    struct mcs_vconn *vc = recycled;
    if (vc != NULL) {
        recycled = *recycled_next(vc);
    }
    pthread_mutex_unlock(&recycle_lock);
    if (vc == NULL) {
        vc = mcs_calloc(1, sizeof(*vc));   /* never freed (shim.h) */
        if (vc == NULL) {
            return NULL;
        }
    } else {
        /* Everything but the atomic first member, which readers may be loading. */
        memset((char *)vc + sizeof(vc->fast), 0, sizeof(*vc) - sizeof(vc->fast));
    }
    vc->fork_fd = -1;
    return vc;
}

void
mcs_vconn_atfork_child(void)
{
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    recycle_lock = fresh;
}

void
mcs_vconn_drop(struct mcs_vconn *vc)
{
    mcs_fast_unref(atomic_exchange(&vc->fast, NULL));
    pthread_mutex_lock(&recycle_lock);
    *recycled_next(vc) = recycled;
    recycled = vc;
    pthread_mutex_unlock(&recycle_lock);
}

static void
vconn_unref(struct mcs_vconn *vc)
{
    if (vc != NULL && --vc->refs == 0) {
        mcs_vconn_drop(vc);
    }
}

struct mcs_fast *
mcs_vconn_fast(int fd)
{
    uintptr_t v = mcs_fdtab_get(fd);
    if (v == 0 || (v & MCS_FD_INTERNAL_BIT)) {
        return NULL;
    }
    struct mcs_vconn *vc = (struct mcs_vconn *)v;
    struct mcs_fast *h = atomic_load(&vc->fast);
    if (h == NULL || !mcs_fast_ref(h)) {
        return NULL;
    }
    if (mcs_fdtab_get(fd) != v || atomic_load(&vc->fast) != h) {
        mcs_fast_unref(h);   /* recycled meanwhile */
        return NULL;
    }
    return h;
}

bool
mcs_fd_maybe_ours(int fd)
{
    return mcs_fdtab_get(fd) != 0;
}

struct mcs_vconn *
mcs_vconn_enter(int fd)
{
    if (!mcs_fd_maybe_ours(fd)) {
        return NULL;
    }
    int saved = errno;
    mcs_fdtab_lock();
    struct mcs_vconn *vc = mcs_vconn_lookup_locked(fd);
    if (vc == NULL) {
        mcs_fdtab_unlock();
    }
    errno = saved;
    return vc;
}

void
mcs_vconn_forget_locked(int fd)
{
    uintptr_t old = mcs_fdtab_swap(fd, 0);
    vconn_unref(as_vconn(old));
}

struct mcs_vconn *
mcs_vconn_lookup_locked(int fd)
{
    struct mcs_vconn *vc = as_vconn(mcs_fdtab_get(fd));
    if (vc == NULL) {
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_ino != vc->ino || st.st_dev != vc->dev) {
        mcs_vconn_forget_locked(fd);
        return NULL;
    }
    return vc;
}

void
mcs_vconn_alias_locked(int from, int to)
{
    struct mcs_vconn *vc = mcs_vconn_lookup_locked(from);
    if (vc == NULL) {
        mcs_vconn_forget_locked(to);
        return;
    }
    vc->refs++;
    uintptr_t old = mcs_fdtab_swap(to, (uintptr_t)vc);
    if (old == (uintptr_t)vc) {
        vc->refs--;                 /* `to` already was a copy */
    } else {
        vconn_unref(as_vconn(old)); /* NULL for nothing or a stale internal entry */
    }
}

struct mcs_vconn_opt *
mcs_vconn_opt(struct mcs_vconn *vc, int level, int name, bool create)
{
    for (size_t i = 0; i < vc->nopts; i++) {
        if (vc->opts[i].level == level && vc->opts[i].name == name) {
            return &vc->opts[i];
        }
    }
    if (!create || vc->nopts == MCS_VCONN_MAX_OPTS) {
        return NULL;
    }
    struct mcs_vconn_opt *o = &vc->opts[vc->nopts++];
    memset(o, 0, sizeof(*o));
    o->level = level;
    o->name = name;
    return o;
}
