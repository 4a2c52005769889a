/*
 * preload/engine/engine.c: the engine thread: epoll loop, timers, hand-over of
 * new application connections, descriptors closed behind its back, fork
 * handling.
 *
 * The thread is created with every signal blocked (host handlers never run on
 * it), never exits the process and never touches host state. One iteration:
 * wait (until the earliest backend deadline), handle events (client reads
 * queue requests on backends; backend reads complete requests), expire late
 * replies, then flush every backend and client that has bytes to send, so
 * requests from many clients share one write per server.
 *
 * Descriptors. Every descriptor of an engine is marked in the fd table with
 * the engine's generation (fdtab.h). Application threads wake the engine
 * through a socketpair (e->evfd is the engine's end, box->wake_wr theirs): a
 * socket has an inode of its own, so attach checks that the number is still
 * that socket before writing its wake-up byte (an eventfd shares one inode
 * with every other eventfd and epoll, and its token once landed in a host's
 * connection after a raw close_range). The loop checks its end after every
 * wait, and every MCS_ENGINE_CHECK_MS that its epoll set is its own (the
 * wake-up socket is registered in it). An engine that finds its descriptors
 * gone is retired: it leaves `current`, closes whatever is still provably its
 * own (the connections it served see EOF), forgets the rest without touching
 * the numbers, frees its buffers and exits. Its struct stays allocated (other
 * threads may still hold a pointer; a few hundred bytes per retirement), and
 * the requests in flight at that moment are leaked with it. The next attach
 * starts a new engine.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "preload/core/alloc.h"
#include "preload/engine/engine.h"
#include "preload/engine/internal.h"
#include "preload/lib/fdtab.h"
#include "preload/lib/log.h"
#include "preload/lib/real.h"
#include "preload/lib/shared.h"

#define MCS_EPOLL_BATCH 256
#define MCS_TAG_WAKEUP  ((uintptr_t)0)
#define MCS_WAKE_EVENTS EPOLLIN
/* The longest the loop sleeps, and how often it proves its epoll set is its own. */
#define MCS_ENGINE_CHECK_MS 1000

/* An engine and what engine.c alone keeps about it. Allocated by
 * engine_create, never freed once its thread started (retired ones included). */
struct engine_box {
    struct mcs_engine e;        /* first: the rest of the engine sees only this */
    uint32_t gen;               /* owner of its descriptors in the fd table */
    int      wake_wr;           /* application threads write here; e.evfd reads */
    ino_t    wake_rd_ino;
    ino_t    wake_wr_ino;
    dev_t    wake_dev;
    _Atomic bool dead;          /* retired: takes no connection, its thread leaves */
    _Atomic bool exit_wanted;   /* the process is exiting: publish what the host should see */
    _Atomic bool exit_done;     /* the engine thread did (engine_at_exit waits for it, briefly) */
    bool     machine_ready;     /* mcs_machine_init succeeded (engine_destroy frees it) */
    uint64_t next_check_ms;     /* engine thread: when to prove the epoll set next */
};

static pthread_mutex_t start_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(struct engine_box *) current;
static _Atomic uint32_t last_gen;

/* fd is still the file (ino, dev). */
static bool
is_file(int fd, ino_t ino, dev_t dev)
{
    struct stat st;
    return fd >= 0 && fstat(fd, &st) == 0 && st.st_ino == ino && st.st_dev == dev;
}

/* The epoll descriptor is still b's own: its wake-up socket is still there and
 * registered in that epoll set (EPOLL_CTL_MOD of an fd/file pair the set does
 * not hold fails; on our own registration it changes nothing). */
static bool
epoll_is_ours(struct engine_box *b)
{
    struct mcs_engine *e = &b->e;
    return is_file(e->evfd, b->wake_rd_ino, b->wake_dev)
           && mcs_engine_epoll(e, EPOLL_CTL_MOD, e->evfd, MCS_WAKE_EVENTS, MCS_TAG_WAKEUP) == 0;
}

/* The fd table's prover (shared-inode descriptors): only the current engine's
 * epoll descriptor, proven as above. */
static int
prove_epoll(int fd, uint32_t owner)
{
    struct engine_box *b = atomic_load(&current);
    return b != NULL && b->gen == owner && b->e.epfd == fd && !atomic_load(&b->dead) && epoll_is_ours(b);
}

/* Takes b out of service (any thread; idempotent): no new connection goes to
 * it, the next attach starts another engine, and its thread, when it next
 * wakes up (within MCS_ENGINE_CHECK_MS), closes what is still its own and
 * leaves. One log line. */
static void
engine_retire(struct engine_box *b, const char *why)
{
    pthread_mutex_lock(&start_lock);
    struct engine_box *expected = b;
    atomic_compare_exchange_strong(&current, &expected, NULL);
    bool first = !atomic_exchange(&b->dead, true);
    pthread_mutex_unlock(&start_lock);
    if (first) {
        mcs_log(MCS_LOG_ERROR,
                "engine stopped: %s (closed behind its back by the host); its connections are closed, "
                "the next connect starts a new engine", why);
    }
}

/* The connections handed over since last time (*n of them; the caller frees the array). */
static struct mcs_incoming *
incoming_take(struct mcs_engine *e, size_t *n)
{
    pthread_mutex_lock(&e->lock);
    struct mcs_incoming *fds = e->incoming;
    *n = e->nincoming;
    e->incoming = NULL;
    e->nincoming = 0;
    e->capincoming = 0;
    pthread_mutex_unlock(&e->lock);
    return fds;
}

/* Reads the pending wake-up bytes and attaches the connections handed over.
 * Returns false if the wake-up socket's other end is gone (nothing taken). */
static bool
take_incoming(struct mcs_engine *e)
{
    char buf[256];
    for (;;) {
        ssize_t n = recv(e->evfd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n > 0 || (n < 0 && errno == EINTR)) {
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            return false;
        }
        break;
    }
    size_t n;
    struct mcs_incoming *fds = incoming_take(e, &n);
    for (size_t i = 0; i < n; i++) {
        mcs_client_attach(e, fds[i].fd, fds[i].fast);
    }
    mcs_free(fds);
    return true;
}

/* ---- the driver the engine gives its request machine (machine.h) ---------------------------- */

static void
drv_send(void *ctx, struct mcs_sub *sub, enum mcs_proto proto, uint64_t conn, const char *a, size_t alen,
         const char *b, size_t blen)
{
    if (!mcs_fast_send(ctx, sub, proto, a, alen, b, blen)) {
        mcs_backend_send(ctx, sub, proto, conn, a, alen, b, blen);
    }
}

static void
drv_abort_server(void *ctx, uint32_t server)
{
    struct mcs_engine *e = ctx;
    e->abort_wanted[server] = 1;
    e->aborts = true;
}

static void
drv_ready(void *ctx, struct mcs_session *s)
{
    if (!mcs_fast_ready(ctx, s)) {
        mcs_client_ready(ctx, (struct mcs_client *)s);   /* the session is the client's first member */
    }
}

static void
drv_unstall(void *ctx)
{
    struct mcs_engine *e = ctx;
    e->unstall_wanted = e->stalled > 0;
}

static void
drv_log(void *ctx, enum mcs_log_level level, const char *line)
{
    (void)ctx;
    mcs_log(level, "%s", line);
}

const struct mcs_driver mcs_engine_driver = {
    .send = drv_send,
    .abort_server = drv_abort_server,
    .ready = drv_ready,
    .unstall = drv_unstall,
    .log = drv_log,
};

bool
mcs_engine_has_work(const struct mcs_engine *e)
{
    return e->dirty_backends != NULL || e->dirty_clients != NULL || e->failed_head != NULL || e->aborts
           || e->unstall_wanted || e->wake_paused;
}

bool
mcs_engine_intact(struct mcs_engine *e)
{
    struct engine_box *b = (struct engine_box *)e;   /* e is the box's first member */
    return !atomic_load(&b->dead) && is_file(b->wake_wr, b->wake_wr_ino, b->wake_dev);
}

void
mcs_engine_wake(struct mcs_engine *e)
{
    struct engine_box *b = (struct engine_box *)e;   /* e is the box's first member */
    if (!atomic_load(&b->dead) && is_file(b->wake_wr, b->wake_wr_ino, b->wake_dev)) {
        int saved = errno;
        ssize_t w;
        do {
            w = send(b->wake_wr, "", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        } while (w < 0 && errno == EINTR);
        errno = saved;
    }
}

void
mcs_engine_settle(struct mcs_engine *e)
{
    for (int round = 0; round < 64 && (e->failed_head != NULL || e->aborts || e->unstall_wanted || e->wake_paused);
         round++) {
        struct mcs_sub *sub = e->failed_head;
        e->failed_head = e->failed_tail = NULL;
        while (sub != NULL) {
            struct mcs_sub *next = sub->next;
            mcs_machine_failed(&e->m, sub);
            sub = next;
        }
        if (e->aborts) {
            e->aborts = false;
            for (uint32_t s = 0; s < e->m.router.nservers; s++) {
                if (e->abort_wanted[s]) {
                    e->abort_wanted[s] = 0;
                    mcs_backend_abort_server(e, s);
                }
            }
        }
        if (e->unstall_wanted) {
            e->unstall_wanted = false;
            mcs_backend_unstall(e);
        }
        if (e->wake_paused) {
            e->wake_paused = false;
            mcs_client_wake_paused(e);
        }
    }
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
            mcs_engine_settle(e);
        }
        while (e->dirty_clients) {
            struct mcs_client *c = e->dirty_clients;
            e->dirty_clients = c->next_dirty;
            mcs_client_flush(e, c);
            mcs_engine_settle(e);
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

/* Why b can no longer trust its descriptor numbers, or NULL. werr: the
 * epoll_wait error (0: none). Engine thread, after each wait. */
static const char *
engine_broken(struct engine_box *b, int werr)
{
    struct mcs_engine *e = &b->e;
    if (atomic_load(&b->dead)) {
        return "retired";
    }
    if (werr != 0) {
        return werr == EBADF || werr == EINVAL ? "its epoll descriptor was closed" : "epoll_wait failed";
    }
    if (!is_file(e->evfd, b->wake_rd_ino, b->wake_dev)) {
        return "its wake-up descriptor was closed";
    }
    if (e->m.now_ms >= b->next_check_ms) {
        b->next_check_ms = e->m.now_ms + MCS_ENGINE_CHECK_MS;
        if (!epoll_is_ours(b)) {
            return "its epoll descriptor was replaced";
        }
    }
    return NULL;
}

/* Engine thread of a retired engine: closes what is still provably its own
 * (connections handed over, clients, servers, epoll set, wake-up socket),
 * forgets the rest without touching the numbers, and frees the buffers. */
static void
engine_teardown(struct engine_box *b)
{
    struct mcs_engine *e = &b->e;
    e->torn_down = true;   /* a fast-path write that locks mlock next leaves everything alone */
    size_t n;
    struct mcs_incoming *fds = incoming_take(e, &n);
    for (size_t i = 0; i < n; i++) {
        mcs_fdtab_release(fds[i].fd, b->gen, false);
        mcs_fast_unref(fds[i].fast);
    }
    mcs_free(fds);
    while (e->clients != NULL) {
        struct mcs_client *c = e->clients;
        e->clients = c->next;
        mcs_fdtab_release(c->fd, b->gen, false);
        if (c->fast != NULL) {
            mcs_fast_unbind(c->fast);
        }
        mcs_buf_free(&c->in);
        mcs_buf_free(&c->s.out);
        if (!c->fast_busy) {
            mcs_free(c);   /* (a client a fast-path write holds is left to leak with the engine) */
        }
    }
    mcs_fast_pool_free(e);
    e->dirty_clients = NULL;
    e->dirty_backends = NULL;
    size_t nb = e->cfg->nservers * MCS_PROTO_COUNT * e->cfg->connections;
    for (size_t i = 0; i < nb; i++) {
        mcs_fdtab_release(e->backends[i].fd, b->gen, false);
        mcs_buf_free(&e->backends[i].in);
        mcs_buf_free(&e->backends[i].out);
    }
    mcs_fdtab_release(e->epfd, b->gen, epoll_is_ours(b));
    mcs_fdtab_release(e->evfd, b->gen, false);
    mcs_fdtab_release(b->wake_wr, b->gen, false);
    mcs_free(e->backends);
    e->backends = NULL;
    mcs_heap_free(&e->timers);
    mcs_free(e->abort_wanted);
    e->abort_wanted = NULL;
    mcs_machine_free(&e->m);
}

/* The engine thread: runs the loop until the engine's descriptors are found
 * gone (or it was retired), then tears it down and returns. */
static void *
engine_main(void *arg)
{
    struct engine_box *b = arg;
    struct mcs_engine *e = &b->e;
    struct epoll_event evs[MCS_EPOLL_BATCH];
    const char *why = NULL;
    mcs_fdtab_set_thread_owner(b->gen);
    b->next_check_ms = mcs_engine_clock_ms() + MCS_ENGINE_CHECK_MS;
    pthread_mutex_lock(&e->mlock);   /* held but while waiting for events */
    for (;;) {
        e->m.now_ms = mcs_engine_clock_ms();
        uint64_t next = mcs_backend_next_deadline(e);
        bool outstanding = next != UINT64_MAX;
        if (e->m.tick_ms < next) {
            next = e->m.tick_ms;
        }
        int timeout = MCS_ENGINE_CHECK_MS;
        if (next <= e->m.now_ms) {
            timeout = 0;
        } else if (next - e->m.now_ms < MCS_ENGINE_CHECK_MS) {
            timeout = (int)(next - e->m.now_ms);
        }
        if (e->dirty_backends != NULL || e->dirty_clients != NULL || e->failed_head != NULL || e->aborts
            || e->unstall_wanted || e->wake_paused) {
            timeout = 0;   /* the last walk (or settle) stopped early: finish it before sleeping */
        }
        pthread_mutex_unlock(&e->mlock);
        int n = engine_wait(e, evs, timeout, outstanding);
        int werr = n < 0 ? errno : 0;
        pthread_mutex_lock(&e->mlock);
        if (werr == EINTR) {
            continue;
        }
        e->m.now_ms = mcs_engine_clock_ms();
        /* Before acting on any number: are they still ours? (the host may have
         * closed them by raw syscall while we slept) */
        why = engine_broken(b, werr);
        if (why != NULL) {
            goto stop;
        }
        e->m.unix_s = (uint64_t)time(NULL);
        mcs_machine_sync(&e->m);
        mcs_engine_settle(e);
        for (int i = 0; i < n; i++) {
            uintptr_t tag = (uintptr_t)evs[i].data.u64;
            if (tag == MCS_TAG_WAKEUP) {
                if (!take_incoming(e)) {
                    why = "its wake-up descriptor was closed";
                    goto stop;
                }
            } else if (tag & MCS_TAG_BACKEND) {
                mcs_backend_event(e, (struct mcs_backend *)(tag & ~MCS_TAG_BACKEND), evs[i].events);
            } else {
                mcs_client_event(e, (struct mcs_client *)tag, evs[i].events);
            }
            mcs_engine_settle(e);
        }
        mcs_backend_check_timeouts(e);
        mcs_engine_settle(e);
        mcs_machine_tick(&e->m);
        mcs_share_tick(e);
        if (atomic_load(&b->exit_wanted) && !atomic_load(&b->exit_done)) {
            mcs_share_exit(e);
            atomic_store(&b->exit_done, true);
        }
        mcs_engine_settle(e);
        flush_dirty(e);
        e->m.stats.fast_declined = atomic_load_explicit(&e->fast_declined, memory_order_relaxed);
    }
stop:
    engine_retire(b, why);
    engine_teardown(b);
    pthread_mutex_unlock(&e->mlock);
    return NULL;
}

/* Closes what engine_create opened and frees b (its thread never ran). */
static void
engine_destroy(struct engine_box *b)
{
    struct mcs_engine *e = &b->e;
    mcs_fdtab_release(e->epfd, b->gen, true);
    mcs_fdtab_release(e->evfd, b->gen, false);
    mcs_fdtab_release(b->wake_wr, b->gen, false);
    mcs_free(e->backends);
    mcs_heap_free(&e->timers);
    mcs_free(e->abort_wanted);
    mcs_free(e->fast_idle);
    mcs_free(e->fast_open);
    if (b->machine_ready) {
        mcs_machine_free(&e->m);
    }
    pthread_mutex_destroy(&e->lock);
    pthread_mutex_destroy(&e->mlock);
    mcs_free(b);
}

/* A new engine, not yet running, or NULL with errno set. */
static struct engine_box *
engine_create(const struct mcs_config *cfg)
{
    struct engine_box *b = mcs_calloc(1, sizeof(*b));
    if (b == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    struct mcs_engine *e = &b->e;
    int err = ENOMEM;
    do {
        b->gen = (atomic_fetch_add(&last_gen, 1) + 1) & MCS_FD_OWNER_MASK;
    } while (b->gen == 0);
    b->wake_wr = -1;
    e->gen = b->gen;
    e->cfg = cfg;
    e->epfd = -1;
    e->evfd = -1;
    e->spin_score = 1024;
    pthread_mutex_init(&e->lock, NULL);
    pthread_mutex_init(&e->mlock, NULL);
    struct mcs_driver drv = mcs_engine_driver;
    drv.ctx = e;
    if (mcs_machine_init(&e->m, cfg, &drv, mcs_engine_clock_ms(), (long)getpid()) != 0) {
        goto error;
    }
    b->machine_ready = true;
    e->m.unix_s = (uint64_t)time(NULL);
    size_t nb = cfg->nservers * MCS_PROTO_COUNT * cfg->connections;
    e->backends = mcs_calloc(nb, sizeof(*e->backends));
    e->abort_wanted = mcs_calloc(cfg->nservers, sizeof(*e->abort_wanted));
    e->fast_idle = mcs_calloc(cfg->nservers * MCS_PROTO_COUNT, sizeof(*e->fast_idle));
    e->fast_open = mcs_calloc(cfg->nservers * MCS_PROTO_COUNT, sizeof(*e->fast_open));
    if (e->backends == NULL || e->abort_wanted == NULL || e->fast_idle == NULL || e->fast_open == NULL
        || mcs_heap_init(&e->timers, (uint32_t)nb) != 0) {
        goto error;
    }
    for (size_t i = 0; i < nb; i++) {
        e->backends[i].fd = -1;
        e->backends[i].server = (uint32_t)(i / cfg->connections / MCS_PROTO_COUNT);
        e->backends[i].proto = (enum mcs_proto)(i / cfg->connections % MCS_PROTO_COUNT);
    }
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (e->epfd < 0) {
        err = errno;
        goto error;
    }
    e->epfd = mcs_fd_move_high(e->epfd);
    mcs_fdtab_mark_owned(e->epfd, b->gen, true);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
        err = errno;
        goto error;
    }
    e->evfd = mcs_fd_move_high(sv[0]);
    mcs_fdtab_mark_owned(e->evfd, b->gen, false);
    b->wake_wr = mcs_fd_move_high(sv[1]);
    mcs_fdtab_mark_owned(b->wake_wr, b->gen, false);
    struct stat rd, wr;
    if (fstat(e->evfd, &rd) != 0 || fstat(b->wake_wr, &wr) != 0) {
        err = errno;
        goto error;
    }
    b->wake_rd_ino = rd.st_ino;
    b->wake_wr_ino = wr.st_ino;
    b->wake_dev = rd.st_dev;
    if (mcs_engine_epoll(e, EPOLL_CTL_ADD, e->evfd, MCS_WAKE_EVENTS, MCS_TAG_WAKEUP) != 0) {
        err = errno;
        goto error;
    }
    mcs_share_attach(e);
    return b;

error:
    engine_destroy(b);
    errno = err;
    return NULL;
}

/* Starts b's thread. Returns 0 or pthread_create's error. */
static int
engine_start_thread(struct engine_box *b)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&b->e.thread, &attr, engine_main, b);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return rc;
}

int
mcs_engine_ensure(const struct mcs_config *cfg)
{
    if (atomic_load(&current) != NULL) {
        return 0;
    }
    int saved = errno;
    int err = 0;
    pthread_mutex_lock(&start_lock);
    if (atomic_load(&current) == NULL) {
        struct engine_box *b = engine_create(cfg);
        err = b == NULL ? errno : engine_start_thread(b);
        if (err != 0) {
            mcs_log(MCS_LOG_ERROR,
                    "cannot start the engine (%s); connect() to an intercepted address fails with that error "
                    "until it can", strerror(err));
            if (b != NULL) {
                engine_destroy(b);
            }
        } else {
            mcs_fdtab_set_prover(prove_epoll);
            mcs_log(MCS_LOG_INFO, "engine started: %zu servers, hash %s, distribution %s", cfg->nservers,
                    mcs_hash_name(cfg->hash), mcs_dist_name(cfg->dist));
            atomic_store(&current, b);
        }
    }
    pthread_mutex_unlock(&start_lock);
    errno = err != 0 ? err : saved;
    return err != 0 ? -1 : 0;
}

/* Hands fd to b: checks under b's lock that b is in service and its wake-up
 * socket is still its own, marks fd as b's, queues it and writes the wake-up
 * byte. Returns 0, ENOMEM, or EPIPE (b's descriptors are gone; nothing was
 * written, fd is neither queued nor marked). */
static int
engine_take(struct engine_box *b, int fd, struct mcs_fast *fast)
{
    struct mcs_engine *e = &b->e;
    int rc = 0;
    pthread_mutex_lock(&e->lock);
    if (atomic_load(&b->dead) || !is_file(b->wake_wr, b->wake_wr_ino, b->wake_dev)) {
        rc = EPIPE;
        goto out;
    }
    if (e->nincoming == e->capincoming) {
        size_t cap = e->capincoming ? e->capincoming * 2 : 16;
        struct mcs_incoming *p = mcs_realloc(e->incoming, cap * sizeof(*p));
        if (p == NULL) {
            rc = ENOMEM;
            goto out;
        }
        e->incoming = p;
        e->capincoming = cap;
    }
    mcs_fdtab_mark_owned(fd, b->gen, false);
    e->incoming[e->nincoming].fd = fd;
    e->incoming[e->nincoming++].fast = fast;
    for (;;) {
        ssize_t w = send(b->wake_wr, "", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w == 1 || (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))) {
            break;   /* EAGAIN: wake-ups are pending already */
        }
        if (w < 0 && errno == EINTR) {
            continue;
        }
        e->nincoming--;
        mcs_fdtab_swap(fd, 0);
        rc = EPIPE;
        break;
    }
out:
    pthread_mutex_unlock(&e->lock);
    return rc;
}

int
mcs_engine_attach(const struct mcs_config *cfg, int fd, struct mcs_fast **fast)
{
    *fast = NULL;
    int saved = errno;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (mcs_engine_ensure(cfg) != 0) {
            return -1;
        }
        struct engine_box *b = atomic_load(&current);
        if (b == NULL) {
            continue;   /* retired meanwhile */
        }
        struct mcs_fast *h = mcs_fast_for(&b->e);   /* NULL when off, or out of memory: engine path only */
        int rc = engine_take(b, fd, h);
        if (rc == 0) {
            *fast = h;
            errno = saved;
            return 0;
        }
        mcs_fast_unref(h);
        mcs_fast_unref(h);
        if (rc == ENOMEM) {
            mcs_log(MCS_LOG_ERROR, "connect to an intercepted address refused: out of memory");
            errno = ENOMEM;
            return -1;
        }
        engine_retire(b, "its wake-up descriptor was closed");
    }
    mcs_log(MCS_LOG_ERROR, "connect to an intercepted address refused: the engine lost its descriptors twice");
    errno = EAGAIN;
    return -1;
}

void
mcs_engine_atfork_prepare(void)
{
    pthread_mutex_lock(&start_lock);
    struct engine_box *b = atomic_load(&current);
    if (b != NULL) {
        pthread_mutex_lock(&b->e.lock);
    }
}

void
mcs_engine_atfork_parent(void)
{
    struct engine_box *b = atomic_load(&current);
    if (b != NULL) {
        pthread_mutex_unlock(&b->e.lock);
    }
    pthread_mutex_unlock(&start_lock);
}

/* Fork child: closes fd if it is still one of the library's descriptors
 * (the parent keeps its copy); a stale mark is dropped without closing. */
static void
close_internal(int fd, uintptr_t v, void *arg)
{
    (void)arg;
    if (mcs_fdtab_internal_valid(fd, v)) {
        mcs_fdtab_swap(fd, 0);
        mcs_real.close(fd);
    } else if (v & MCS_FD_INTERNAL_BIT) {
        mcs_fdtab_swap(fd, 0);
    }
}

void
mcs_engine_atfork_child(void)
{
    /* The engine threads do not exist here. Abandon their memory (it may be in
     * any state), close their descriptors (the parent keeps its own copies; the
     * current engine still vouches for its epoll descriptor meanwhile), and let
     * the next attach start a fresh engine. */
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    start_lock = fresh;
    mcs_fast_atfork_child();
    mcs_fdtab_foreach(close_internal, NULL);
    atomic_store(&current, NULL);
}

/* At exit (exit() or a return from main; not _exit), the engine thread is asked
 * to publish this process's last counters to the host-wide segment and give its
 * process slot back (share.c mcs_share_exit), so that a process that lived less
 * than a second still shows in `mcshim stats` and leaves no slot behind. The
 * exiting thread waits for it at most MCS_EXIT_WAIT_MS; it takes no lock and
 * keeps errno. Nothing happens in a process without a running engine (a forked
 * child that never connected, or an engine already retired). */
#define MCS_EXIT_WAIT_MS 50

__attribute__((destructor)) static void
engine_at_exit(void)
{
    struct engine_box *b = atomic_load(&current);
    if (b == NULL || atomic_load(&b->dead) || !mcs_share_active()) {
        return;   /* (after fork, current is NULL until the child's own engine starts) */
    }
    int saved = errno;
    atomic_store(&b->exit_wanted, true);
    if (is_file(b->wake_wr, b->wake_wr_ino, b->wake_dev)) {
        ssize_t w;
        do {
            w = send(b->wake_wr, "", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        } while (w < 0 && errno == EINTR);
    }
    struct timespec tick = { 0, 1000000 };
    for (int i = 0; i < MCS_EXIT_WAIT_MS && !atomic_load(&b->exit_done) && !atomic_load(&b->dead); i++) {
        nanosleep(&tick, NULL);
    }
    errno = saved;
}
