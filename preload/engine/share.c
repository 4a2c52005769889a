/*
 * preload/engine/share.c: this process's part in the host-wide state segment
 * (preload/core/hostseg.h for its contents, preload/lib/shared.h for the file).
 *
 * The segment is mapped once per process (the first engine maps it; an engine
 * started again, or in a forked child, reuses the mapping), and each process
 * holds one slot in it. Every MCS_SHARE_TICK_MS the engine adds its counters,
 * refreshes its slot, and checks that the file is still the one it mapped and
 * not marked broken; every MCS_SHARE_RECLAIM_MS it frees the slots of processes
 * that are gone. If the segment cannot be used, or stops being usable, the
 * process says so once and keeps its own state, as without sharing.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "preload/engine/internal.h"
#include "preload/lib/log.h"
#include "preload/lib/shared.h"

#define MCS_SHARE_TICK_MS    1000
#define MCS_SHARE_RECLAIM_MS 10000

static pthread_mutex_t share_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mcs_shared share;     /* the mapping, for the process's life */
static bool share_tried;            /* a mapping was attempted (once per process image) */
static bool share_given_up;         /* it stopped being usable: never again in this process */
static _Atomic bool share_active;   /* an engine of this process holds a slot (read at exit) */

/* The mapped segment, mapping it on first use; NULL when off or unusable. */
static struct mcs_seg *
share_map(const struct mcs_config *cfg)
{
    struct mcs_seg *seg = NULL;
    pthread_mutex_lock(&share_lock);
    if (!share_tried) {
        share_tried = true;
        char path[sizeof(cfg->shared)];
        if (cfg->shared[0] == '\0') {
            mcs_shared_default_path(path, sizeof(path));
        } else {
            memcpy(path, cfg->shared, sizeof(path));
        }
        char err[512];
        if (strcmp(cfg->shared, "off") == 0) {
            share_given_up = true;
        } else if (mcs_shared_map(&share, path, cfg->shared_mode, true, err, sizeof(err)) != 0) {
            mcs_log(MCS_LOG_WARN, "%s; this process keeps server health and missed writes to itself", err);
            share_given_up = true;
        } else {
            mcs_log(MCS_LOG_INFO, "sharing server health and missed writes with the host's processes through %s",
                    path);
        }
    }
    if (!share_given_up) {
        seg = share.seg;
    }
    pthread_mutex_unlock(&share_lock);
    return seg;
}

static void reclaim(struct mcs_seg *seg);

/* Claims this process's slot; with the table full, frees dead processes' slots first. */
static uint32_t
proc_attach(struct mcs_seg *seg, long pid, const char *comm, uint64_t now_ms)
{
    uint64_t ticket = mcs_shared_proc_ticket(pid);
    uint32_t slot = mcs_seg_proc_attach(seg, (uint32_t)pid, ticket, comm, now_ms);
    if (slot == MCS_SEG_NONE) {
        reclaim(seg);
        slot = mcs_seg_proc_attach(seg, (uint32_t)pid, ticket, comm, now_ms);
    }
    return slot;
}

void
mcs_share_attach(struct mcs_engine *e)
{
    e->share_slot = MCS_SEG_NONE;
    struct mcs_seg *seg = share_map(e->cfg);
    if (seg == NULL) {
        return;
    }
    char comm[17] = { 0 };
    int saved = errno;
    prctl(PR_GET_NAME, comm, 0, 0, 0);
    errno = saved;
    uint32_t pid = (uint32_t)e->m.pid;
    e->share_slot = proc_attach(seg, e->m.pid, comm, e->m.now_ms);
    atomic_store(&share_active, true);
    mcs_router_share(&e->m.router, seg, pid);
    e->share_next_ms = e->m.now_ms + MCS_SHARE_TICK_MS;
    e->share_reclaim_ms = e->m.now_ms;   /* sweep at the first tick */
    mcs_machine_sync(&e->m);           /* start with the host's view */
}

/* Frees the slots of processes that are gone (or whose pid is now another process's). */
static void
reclaim(struct mcs_seg *seg)
{
    int saved = errno;
    for (uint32_t i = 0; i < MCS_SEG_PROCS; i++) {
        uint32_t pid = __atomic_load_n(&seg->procs[i].pid, __ATOMIC_ACQUIRE);
        if (pid == 0) {
            continue;
        }
        uint64_t ticket = __atomic_load_n(&seg->procs[i].ticket, __ATOMIC_ACQUIRE);
        bool gone = kill((pid_t)pid, 0) != 0 && errno == ESRCH;
        if (!gone && pid <= INT32_MAX) {
            uint64_t now = mcs_shared_proc_ticket((long)pid);
            gone = now != 0 && ticket != 0 && now != ticket;
        }
        if (gone) {
            mcs_seg_proc_reclaim(seg, i, pid, ticket);
        }
    }
    errno = saved;
}

/* The segment cannot be trusted any more: this process keeps its own state. */
static void
give_up(struct mcs_engine *e, const char *why)
{
    mcs_log(MCS_LOG_WARN, "host-wide state segment %s; this process keeps server health and missed writes to "
            "itself from now on (servers away now are flushed when they come back)", why);
    if (e->m.router.seg_corrupt && e->m.router.seg != NULL) {
        mcs_seg_set_broken(e->m.router.seg);   /* the next process to start rebuilds it */
    }
    mcs_router_unshare(&e->m.router);
    atomic_store(&share_active, false);
    pthread_mutex_lock(&share_lock);
    share_given_up = true;
    pthread_mutex_unlock(&share_lock);
}

void
mcs_share_tick(struct mcs_engine *e)
{
    struct mcs_seg *seg = e->m.router.seg;
    if (seg == NULL || e->share_exited) {
        return;
    }
    if (e->m.router.seg_corrupt) {
        give_up(e, "holds values that cannot be right");
        return;
    }
    if (e->m.now_ms < e->share_next_ms) {
        return;
    }
    e->share_next_ms = e->m.now_ms + MCS_SHARE_TICK_MS;
    if (mcs_seg_broken(seg) || !mcs_shared_current(&share)) {
        give_up(e, mcs_seg_broken(seg) ? "was marked broken" : "was replaced or removed");
        return;
    }
    mcs_router_publish(&e->m.router);
    uint32_t slot = e->share_slot;
    if (slot < MCS_SEG_PROCS && __atomic_load_n(&seg->procs[slot].pid, __ATOMIC_ACQUIRE) == (uint32_t)e->m.pid) {
        struct mcs_seg_proc *p = &seg->procs[slot];
        uint64_t away = 0;
        for (uint32_t s = 0; s < e->m.router.nservers; s++) {
            enum mcs_health h = e->m.router.servers[s].health;
            away += h == MCS_HEALTH_DOWN || h == MCS_HEALTH_REJOINING;
        }
        __atomic_store_n(&p->seen_ms, e->m.now_ms, __ATOMIC_RELEASE);
        __atomic_store_n(&p->requests, e->m.stats.requests, __ATOMIC_RELEASE);
        __atomic_store_n(&p->servers_down, away, __ATOMIC_RELEASE);
    } else {
        e->share_slot = proc_attach(seg, e->m.pid, "?", e->m.now_ms);
    }
    if (e->m.now_ms >= e->share_reclaim_ms) {
        e->share_reclaim_ms = e->m.now_ms + MCS_SHARE_RECLAIM_MS;
        reclaim(seg);
    }
}

/* The process is exiting: its counters so far go to the segment now (they
 * would be lost with the next tick), and its slot is given back (not left for
 * the others to reclaim). The slot is not taken again. */
void
mcs_share_exit(struct mcs_engine *e)
{
    struct mcs_seg *seg = e->m.router.seg;
    if (seg == NULL || e->share_exited || e->m.router.seg_corrupt) {
        return;
    }
    e->share_exited = true;
    mcs_router_publish(&e->m.router);
    mcs_seg_proc_detach(seg, e->share_slot, (uint32_t)e->m.pid);
    e->share_slot = MCS_SEG_NONE;
}

bool
mcs_share_active(void)
{
    return atomic_load(&share_active);
}
