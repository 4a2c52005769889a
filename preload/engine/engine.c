/*
 * preload/engine/engine.c: the engine thread: epoll loop, timers, hand-over of
 * new application connections, fork handling.
 *
 * The thread is created with every signal blocked (host handlers never run on
 * it), never exits the process and never touches host state. One iteration:
 * wait (until the earliest backend deadline), handle events (client reads
 * queue requests on backends; backend reads complete requests), expire late
 * replies, then flush every backend and client that has bytes to send, so
 * requests from many clients share one write per server.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "preload/engine/engine.h"
#include "preload/engine/internal.h"
#include "preload/lib/fdtab.h"
#include "preload/lib/log.h"
#include "preload/lib/real.h"

#define MCS_EPOLL_BATCH 256
#define MCS_TAG_WAKEUP  ((uintptr_t)0)

static pthread_mutex_t start_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(struct mcs_engine *) current;

uint64_t
mcs_engine_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int
mcs_engine_epoll(struct mcs_engine *e, int op, int fd, uint32_t events, uintptr_t tag)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = events;
    ev.data.u64 = tag;
    return epoll_ctl(e->epfd, op, fd, &ev);
}

void
mcs_engine_close_fd(int fd)
{
    if (fd < 0) {
        return;
    }
    mcs_fdtab_swap(fd, 0);
    mcs_real.close(fd);
}

static void
take_incoming(struct mcs_engine *e)
{
    uint64_t count;
    while (read(e->evfd, &count, sizeof(count)) < 0 && errno == EINTR) {
    }
    pthread_mutex_lock(&e->lock);
    int *fds = e->incoming;
    size_t n = e->nincoming;
    e->incoming = NULL;
    e->nincoming = 0;
    e->capincoming = 0;
    pthread_mutex_unlock(&e->lock);
    for (size_t i = 0; i < n; i++) {
        mcs_client_attach(e, fds[i]);
    }
    free(fds);
}

static void
flush_dirty(struct mcs_engine *e)
{
    /* Backends first (requests out), then clients (replies out, and resumed
     * clients may queue more backend work, hence the loop). */
    for (int round = 0; round < 4 && (e->dirty_backends || e->dirty_clients); round++) {
        while (e->dirty_backends) {
            struct mcs_backend *b = e->dirty_backends;
            e->dirty_backends = b->next_dirty;
            mcs_backend_flush(e, b);
        }
        while (e->dirty_clients) {
            struct mcs_client *c = e->dirty_clients;
            e->dirty_clients = c->next_dirty;
            mcs_client_flush(e, c);
        }
    }
}

static uint64_t
clock_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Waits for events. With MCSHIM_SPIN_US and replies outstanding, first polls
 * for up to that long (yielding the CPU to any runnable thread in between),
 * which saves a sleep and a wake-up per round trip on a fast network, at the
 * price of CPU time. The engine keeps score of how often polling caught a
 * reply (spin_score, 0..1024, moving average); below a quarter it stops
 * polling and only tries again every MCS_SPIN_PROBE waits, so a slow network
 * costs no CPU. */
#define MCS_SPIN_PROBE 64

static int
engine_wait(struct mcs_engine *e, struct epoll_event *evs, int timeout, bool outstanding)
{
    if (e->cfg->spin_us > 0 && outstanding && timeout != 0
        && (e->spin_score >= 256 || ++e->spin_skips % MCS_SPIN_PROBE == 0)) {
        uint64_t until = clock_us() + e->cfg->spin_us;
        do {
            int n = epoll_wait(e->epfd, evs, MCS_EPOLL_BATCH, 0);
            if (n != 0) {
                e->spin_score = e->spin_score - e->spin_score / 8 + 1024 / 8;
                return n;
            }
            sched_yield();
        } while (clock_us() < until);
        e->spin_score -= e->spin_score / 8;
    }
    return epoll_wait(e->epfd, evs, MCS_EPOLL_BATCH, timeout);
}

static void *
engine_main(void *arg)
{
    struct mcs_engine *e = arg;
    struct epoll_event evs[MCS_EPOLL_BATCH];
    for (;;) {
        e->now_ms = mcs_engine_clock_ms();
        uint64_t next = mcs_backend_next_deadline(e);
        bool outstanding = next != UINT64_MAX;
        if (e->tick_ms < next) {
            next = e->tick_ms;
        }
        int timeout = -1;
        if (next != UINT64_MAX) {
            timeout = next <= e->now_ms ? 0 : (int)(next - e->now_ms > 60000 ? 60000 : next - e->now_ms);
        }
        if (e->dirty_backends != NULL || e->dirty_clients != NULL) {
            timeout = 0;   /* the last walk stopped early: finish it before sleeping */
        }
        int n = engine_wait(e, evs, timeout, outstanding);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            /* The host closed our epoll descriptor behind our back (e.g. close_range
             * by raw syscall). Stop; the next intercepted connect starts a new engine. */
            mcs_log(MCS_LOG_ERROR, "engine stopped: epoll_wait: %s", strerror(errno));
            struct mcs_engine *expected = e;
            atomic_compare_exchange_strong(&current, &expected, NULL);
            return NULL;
        }
        e->now_ms = mcs_engine_clock_ms();
        for (int i = 0; i < n; i++) {
            uintptr_t tag = (uintptr_t)evs[i].data.u64;
            if (tag == MCS_TAG_WAKEUP) {
                take_incoming(e);
            } else if (tag & MCS_TAG_BACKEND) {
                mcs_backend_event(e, (struct mcs_backend *)(tag & ~MCS_TAG_BACKEND), evs[i].events);
            } else {
                mcs_client_event(e, (struct mcs_client *)tag, evs[i].events);
            }
        }
        mcs_backend_check_timeouts(e);
        mcs_avail_tick(e);
        flush_dirty(e);
    }
    return NULL;
}

static struct mcs_engine *
engine_create(const struct mcs_config *cfg)
{
    struct mcs_engine *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        return NULL;
    }
    e->cfg = cfg;
    e->epfd = -1;
    e->evfd = -1;
    e->pid = (long)getpid();
    e->start_ms = e->now_ms = mcs_engine_clock_ms();
    e->spin_score = 1024;
    e->memory_max = (size_t)cfg->memory_mb << 20;
    pthread_mutex_init(&e->lock, NULL);
    if (mcs_router_init(&e->router, cfg) != 0) {
        goto error;
    }
    e->failover = e->router.copies || cfg->eject;
    size_t nb = cfg->nservers * MCS_PROTO_COUNT * cfg->connections;
    e->backends = calloc(nb, sizeof(*e->backends));
    e->rejoin_pending = calloc(cfg->nservers, sizeof(*e->rejoin_pending));
    if (e->backends == NULL || e->rejoin_pending == NULL) {
        goto error;
    }
    for (size_t i = 0; i < nb; i++) {
        e->backends[i].fd = -1;
        e->backends[i].server = (uint32_t)(i / cfg->connections / MCS_PROTO_COUNT);
        e->backends[i].proto = (enum mcs_proto)(i / cfg->connections % MCS_PROTO_COUNT);
    }
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (e->epfd < 0) {
        goto error;
    }
    e->epfd = mcs_fd_move_high(e->epfd);
    mcs_fdtab_mark_internal(e->epfd);
    e->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (e->evfd < 0) {
        goto error;
    }
    e->evfd = mcs_fd_move_high(e->evfd);
    mcs_fdtab_mark_internal(e->evfd);
    if (mcs_engine_epoll(e, EPOLL_CTL_ADD, e->evfd, EPOLLIN, MCS_TAG_WAKEUP) != 0) {
        goto error;
    }
    return e;

error:
    mcs_engine_close_fd(e->epfd);
    mcs_engine_close_fd(e->evfd);
    free(e->backends);
    free(e->rejoin_pending);
    mcs_router_free(&e->router);
    free(e);
    return NULL;
}

static int
engine_start_thread(struct mcs_engine *e)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&e->thread, &attr, engine_main, e);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return rc == 0 ? 0 : -1;
}

int
mcs_engine_ensure(const struct mcs_config *cfg)
{
    if (atomic_load(&current) != NULL) {
        return 0;
    }
    int saved = errno;
    int rc = 0;
    pthread_mutex_lock(&start_lock);
    if (atomic_load(&current) == NULL) {
        struct mcs_engine *e = engine_create(cfg);
        if (e == NULL || engine_start_thread(e) != 0) {
            mcs_log(MCS_LOG_ERROR, "cannot start the engine (%s); connections pass through",
                    strerror(errno));
            if (e != NULL) {
                mcs_engine_close_fd(e->epfd);
                mcs_engine_close_fd(e->evfd);
                free(e->backends);
                mcs_router_free(&e->router);
                free(e);
            }
            rc = -1;
        } else {
            mcs_log(MCS_LOG_INFO, "engine started: %zu servers, hash %s, distribution %s", cfg->nservers,
                    mcs_hash_name(cfg->hash), mcs_dist_name(cfg->dist));
            atomic_store(&current, e);
        }
    }
    pthread_mutex_unlock(&start_lock);
    errno = saved;
    return rc;
}

int
mcs_engine_attach(int fd)
{
    struct mcs_engine *e = atomic_load(&current);
    if (e == NULL) {
        return -1;
    }
    int saved = errno;
    pthread_mutex_lock(&e->lock);
    if (e->nincoming == e->capincoming) {
        size_t cap = e->capincoming ? e->capincoming * 2 : 16;
        int *p = realloc(e->incoming, cap * sizeof(*p));
        if (p == NULL) {
            pthread_mutex_unlock(&e->lock);
            errno = saved;
            return -1;
        }
        e->incoming = p;
        e->capincoming = cap;
    }
    e->incoming[e->nincoming++] = fd;
    pthread_mutex_unlock(&e->lock);
    uint64_t one = 1;
    while (write(e->evfd, &one, sizeof(one)) < 0 && errno == EINTR) {
    }
    errno = saved;
    return 0;
}

void
mcs_engine_atfork_prepare(void)
{
    pthread_mutex_lock(&start_lock);
    struct mcs_engine *e = atomic_load(&current);
    if (e != NULL) {
        pthread_mutex_lock(&e->lock);
    }
}

void
mcs_engine_atfork_parent(void)
{
    struct mcs_engine *e = atomic_load(&current);
    if (e != NULL) {
        pthread_mutex_unlock(&e->lock);
    }
    pthread_mutex_unlock(&start_lock);
}

static void
close_internal(int fd, uintptr_t v, void *arg)
{
    (void)arg;
    if (mcs_fdtab_internal_valid(fd, v)) {
        mcs_engine_close_fd(fd);
    } else if (v & MCS_FD_INTERNAL_BIT) {
        mcs_fdtab_swap(fd, 0);
    }
}

void
mcs_engine_atfork_child(void)
{
    /* The engine thread does not exist here. Abandon its memory (it may be in
     * any state), close its descriptors (the parent keeps its own copies), and
     * let the next attach start a fresh engine. */
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    start_lock = fresh;
    atomic_store(&current, NULL);
    mcs_fdtab_foreach(close_internal, NULL);
}
