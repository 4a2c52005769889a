/*
 * preload/engine/fast.c: the fast path: the application's own thread drives
 * the request machine for what it writes on a blocking intercepted connection.
 *
 * The engine path costs every request a thread hop each way (the engine wakes
 * to read the socketpair, the application wakes to read the reply). On the
 * fast path the thread that calls write() takes the engine's machine lock,
 * parses and dispatches the requests itself (mcs_session_step), sends them on
 * fast-path connections of its own, waits for the replies without the lock,
 * gives them to the machine, and puts the replies on the socketpair before
 * write() returns: the application's read(), poll() and epoll see the kernel's
 * own socket, as before. docs/fastpath.md has the rule and the bounds.
 *
 * When a write is taken (mcs_fast_write): the descriptor is blocking (the
 * caller checked); the connection's session is idle (nothing in its pipeline,
 * no reply waiting to be written, no unparsed bytes, nothing written to the
 * socketpair that the engine has not read: struct mcs_fast.unread), so the
 * machine's order of replies is the order of the bytes; the write holds at
 * least one whole request. Anything else goes to the engine path.
 *
 * What the machine asks while a thread runs a write (mcs_fast_send,
 * mcs_fast_ready): sends for that session's requests and for everything they
 * cause (noreply requests, copies, warm-up fetches and fills, drops of a key:
 * mcs_request_origin; the identification of a server its new connection
 * reached) go on that thread's connections, so nothing the session caused is
 * left in flight for its next request to overtake; everything else (probes,
 * rejoin batches, other sessions) goes to the engine, which is woken if it has
 * work. A send that finds no fast-path connection free (at most
 * cfg->fast_connections per server and protocol) goes to the engine too; the
 * write then ends when the thread's own subs are done and the engine finishes
 * the rest and writes the reply (counted in fast_handoffs).
 *
 * Failures are the engine's: a connection refused, reset, silent for
 * cfg->timeout_ms while a reply is owed, or answering bytes that are not
 * memcached is closed, the machine told (mcs_machine_server_failed) and its
 * subs failed (mcs_machine_failed: failover, or the error answer). A wait also
 * ends, at most MCS_FAST_SLICE_MS later, when another thread marks the server
 * down.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "preload/core/alloc.h"
#include "preload/engine/engine.h"
#include "preload/engine/internal.h"
#include "preload/lib/fdtab.h"
#include "preload/lib/log.h"
#include "preload/lib/real.h"

#define MCS_FAST_MAX_WRITE (1024 * 1024) /* larger writes go to the engine */
#define MCS_FAST_STACK     4096          /* a gathered write up to this size stays on the stack */
#define MCS_FAST_SLICE_MS  20            /* a longer wait looks at the servers' health in between */
#define MCS_FAST_MAX_CONNS 16            /* distinct servers one write may wait on at once (poll set) */
/* How long O_NONBLOCK as read by fcntl(F_GETFL) stays good (changes through
 * fcntl() and ioctl(FIONBIO) are seen at once). Every system call counts here:
 * on a virtualised host each costs 1-2 us, about a tenth of a whole round trip. */
#define MCS_FAST_RECHECK_MS 2

struct mcs_fast {
    _Atomic uint32_t refs;      /* 0: free (on the free list) */
    struct mcs_engine *e;       /* engines are never freed */
    struct mcs_client *client;  /* e->mlock: NULL until attached and once closed */
    _Atomic int64_t unread;     /* bytes written to the socketpair that the engine has not read */
    _Atomic uint8_t app_timeouts; /* bit 0: SO_RCVTIMEO set, bit 1: SO_SNDTIMEO (the engine path keeps them) */
    _Atomic bool nonblock;      /* O_NONBLOCK as last seen (mcs_fast_blocking) */
    _Atomic uint64_t nonblock_ms; /* when (coarse clock); 0: never */
    struct mcs_fast *next_free;
};

struct mcs_fast_conn {
    int      fd;                /* -1 until opened */
    uint32_t server;
    enum mcs_proto proto;
    bool     broken;            /* failed: why */
    bool     fresh;             /* opened by this write: counted and identified under the lock */
    bool     got;               /* bytes arrived since the machine last saw it */
    bool     gone;              /* a call on fd said EBADF or ENOTSOCK: closed behind our back */
    enum mcs_failure why;
    struct mcs_buf out;
    struct mcs_buf in;
    struct mcs_sub *head;       /* FIFO of subs owed a reply */
    struct mcs_sub *tail;
    struct mcs_fast_conn *next; /* in the pool, or in the write's list */
};

/* One fast-path write in progress on this thread. */
struct fast_op {
    struct mcs_engine *e;
    struct mcs_client *c;
    struct mcs_fast_conn *conns; /* held by this write */
    uint32_t nconns;
    bool     handoff;           /* a send went to the engine */
};

static __thread struct fast_op *current_op; /* set while this thread holds mlock for its write */
static __thread bool in_write;             /* re-entry (a signal handler writing) goes to the engine */

static pthread_mutex_t free_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mcs_fast *free_list;

/* ---- handles ---------------------------------------------------------------------------------- */

static struct mcs_fast *
fast_new(struct mcs_engine *e)
{
    pthread_mutex_lock(&free_lock);
    struct mcs_fast *h = free_list;
    if (h != NULL) {
        free_list = h->next_free;
    }
    pthread_mutex_unlock(&free_lock);
    if (h == NULL) {
        h = mcs_calloc(1, sizeof(*h));   /* never freed: see engine.h */
        if (h == NULL) {
            return NULL;
        }
    }
    h->e = e;
    h->client = NULL;
    h->next_free = NULL;
    atomic_store(&h->unread, 0);
    atomic_store(&h->app_timeouts, 0);
    atomic_store(&h->nonblock_ms, 0);
    atomic_store(&h->refs, 2);   /* the caller's (the descriptor's record) and the engine's */
    return h;
}

bool
mcs_fast_ref(struct mcs_fast *h)
{
    uint32_t r = atomic_load(&h->refs);
    while (r != 0) {
        if (atomic_compare_exchange_weak(&h->refs, &r, r + 1)) {
            return true;
        }
    }
    return false;
}

void
mcs_fast_unref(struct mcs_fast *h)
{
    if (h != NULL && atomic_fetch_sub(&h->refs, 1) == 1) {
        pthread_mutex_lock(&free_lock);
        h->next_free = free_list;
        free_list = h;
        pthread_mutex_unlock(&free_lock);
    }
}

void
mcs_fast_atfork_child(void)
{
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    free_lock = fresh;
}

void
mcs_fast_unread(struct mcs_fast *h, int64_t n)
{
    atomic_fetch_add(&h->unread, n);
}

void
mcs_fast_engine_read(struct mcs_fast *h, size_t n)
{
    atomic_fetch_sub(&h->unread, (int64_t)n);
}

void
mcs_fast_app_timeout(struct mcs_fast *h, int which, bool set)
{
    uint8_t bit = which == SO_SNDTIMEO ? 2 : 1;
    if (set) {
        atomic_fetch_or(&h->app_timeouts, bit);
    } else {
        atomic_fetch_and(&h->app_timeouts, (uint8_t)~bit);
    }
}

/* A coarse clock in ms: a few ns (vDSO), resolution of a few ms. */
static uint64_t
coarse_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u + 1;   /* never 0 */
}

void
mcs_fast_set_nonblock(struct mcs_fast *h, bool nonblock)
{
    atomic_store(&h->nonblock, nonblock);
    atomic_store(&h->nonblock_ms, coarse_ms());
}

bool
mcs_fast_blocking(struct mcs_fast *h, int fd)
{
    uint64_t now = coarse_ms();
    if (now - atomic_load_explicit(&h->nonblock_ms, memory_order_relaxed) > MCS_FAST_RECHECK_MS) {
        int fl = mcs_real.fcntl(fd, F_GETFL);
        if (fl < 0) {
            return false;
        }
        mcs_fast_set_nonblock(h, (fl & O_NONBLOCK) != 0);
    }
    return !atomic_load_explicit(&h->nonblock, memory_order_relaxed);
}

void
mcs_fast_declined(struct mcs_fast *h)
{
    atomic_fetch_add_explicit(&h->e->fast_declined, 1, memory_order_relaxed);
}

void
mcs_fast_bind(struct mcs_fast *h, struct mcs_client *c)
{
    h->client = c;
    c->fast = h;
}

void
mcs_fast_unbind(struct mcs_fast *h)
{
    h->client = NULL;
    mcs_fast_unref(h);
}

struct mcs_fast *
mcs_fast_for(struct mcs_engine *e)
{
    return e->cfg->fast_path ? fast_new(e) : NULL;
}

/* ---- connections -------------------------------------------------------------------------------- */

static size_t
pool_index(const struct mcs_engine *e, uint32_t server, enum mcs_proto proto)
{
    (void)e;
    return (size_t)server * MCS_PROTO_COUNT + proto;
}

static void
conn_close(struct mcs_engine *e, struct mcs_fast_conn *fc)
{
    if (fc->fd >= 0) {
        mcs_fdtab_release(fc->fd, e->gen, false);
        fc->fd = -1;
    }
    mcs_buf_free(&fc->out);
    mcs_buf_free(&fc->in);
}

/* A connection for server/proto for this write: the one it holds already, an
 * idle one, or a new one within the bound; NULL if none may be had. */
static struct mcs_fast_conn *
op_conn(struct fast_op *op, uint32_t server, enum mcs_proto proto)
{
    struct mcs_engine *e = op->e;
    for (struct mcs_fast_conn *fc = op->conns; fc != NULL; fc = fc->next) {
        if (fc->server == server && fc->proto == proto && !fc->broken) {
            return fc;
        }
    }
    if (op->nconns >= MCS_FAST_MAX_CONNS) {
        return NULL;
    }
    size_t i = pool_index(e, server, proto);
    struct mcs_fast_conn *fc;
    while ((fc = e->fast_idle[i]) != NULL) {
        e->fast_idle[i] = fc->next;
        /* The host may have closed the number behind our back (raw syscalls) and
         * have a file of its own there now. The write proved the engine's
         * descriptors intact (client_fd_valid); once a descriptor was found gone,
         * each is proven before use. */
        if (!e->fast_suspect || mcs_fdtab_internal_valid(fc->fd, mcs_fdtab_get(fc->fd))) {
            break;
        }
        mcs_fdtab_release(fc->fd, e->gen, false);   /* a stale mark: cleared, nothing closed */
        fc->fd = -1;
        conn_close(e, fc);
        mcs_free(fc);
        e->fast_open[i]--;
    }
    if (fc != NULL) {
        /* taken from the pool */
    } else if (e->fast_open[i] < e->cfg->fast_connections && !e->fast_suspect) {
        fc = mcs_calloc(1, sizeof(*fc));
        if (fc == NULL) {
            return NULL;
        }
        fc->fd = -1;
        fc->server = server;
        fc->proto = proto;
        e->fast_open[i]++;
    } else {
        return NULL;
    }
    fc->next = op->conns;
    op->conns = fc;
    op->nconns++;
    return fc;
}

/* The write's subs: its session's requests, and what they cause on their
 * connections (noreply requests, copies, warm-up fills, drops of a key): the
 * session's next request must not overtake them, and on another thread's
 * connection it could. Also the identification of a server its new connection
 * reached first: done here, it leaves the engine thread nothing to do later. */
static bool
op_owns(const struct fast_op *op, const struct mcs_sub *sub)
{
    const struct mcs_request *r = sub->req;
    const struct mcs_session *s = &op->c->s;
    if (r->session == s || r->origin == s) {
        return true;
    }
    if (r->kind == MCS_REQ_IDENTIFY) {
        return true;   /* only this write's new connections ask for it now (op_settle) */
    }
    return r->kind == MCS_REQ_COPY && r->job.copy.parent != NULL && r->job.copy.parent->session == s;
}

bool
mcs_fast_send(struct mcs_engine *e, struct mcs_sub *sub, enum mcs_proto proto, const char *a, size_t alen,
              const char *b, size_t blen)
{
    struct fast_op *op = current_op;
    if (op == NULL || op->e != e || !op_owns(op, sub)) {
        return false;
    }
    struct mcs_fast_conn *fc = op_conn(op, sub->server, proto);
    size_t before = fc != NULL ? mcs_buf_len(&fc->out) : 0;
    if (fc == NULL || mcs_buf_append(&fc->out, a, alen) != 0 || mcs_buf_append(&fc->out, b, blen) != 0) {
        if (fc != NULL) {
            fc->out.end = fc->out.start + before;
        }
        op->handoff = true;
        return false;   /* the engine takes it */
    }
    sub->next = NULL;
    sub->deadline_ms = e->m.now_ms + e->cfg->timeout_ms + 1;
    if (fc->tail != NULL) {
        fc->tail->next = sub;
    } else {
        fc->head = sub;
    }
    fc->tail = sub;
    return true;
}

bool
mcs_fast_ready(struct mcs_engine *e, struct mcs_session *s)
{
    const struct fast_op *op = current_op;
    return op != NULL && op->e == e && s == &op->c->s;
}

/* ---- the write's I/O, without the lock -------------------------------------------------------- */

static int
ms_until(uint64_t deadline, uint64_t now)
{
    return deadline <= now ? 0 : (deadline - now > INT32_MAX ? INT32_MAX : (int)(deadline - now));
}

static void
broke(struct mcs_fast_conn *fc, enum mcs_failure why)
{
    if (!fc->broken) {
        fc->broken = true;
        fc->why = why;
    }
}

/* Opens fc (non-blocking), waiting for the connection at most until deadline. */
static void
conn_open(struct mcs_engine *e, struct mcs_fast_conn *fc, uint64_t deadline)
{
    const struct mcs_endpoint *ep = e->m.router.servers[fc->server].endpoint;   /* immutable */
    if (ep->naddrs == 0) {
        broke(fc, MCS_FAILURE_CONNECT);
        return;
    }
    const struct sockaddr *sa = (const struct sockaddr *)&ep->addrs[0];
    int fd = mcs_real.socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        broke(fc, MCS_FAILURE_CONNECT);
        return;
    }
    fd = mcs_fd_move_high(fd);
    mcs_fdtab_mark_owned(fd, e->gen, false);
    fc->fd = fd;
    fc->fresh = true;
    if (sa->sa_family != AF_UNIX) {
        int one = 1;
        mcs_real.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    if (mcs_real.connect(fd, sa, ep->addrlens[0]) != 0) {
        if (errno != EINPROGRESS) {
            broke(fc, MCS_FAILURE_CONNECT);
            return;
        }
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        int n;
        do {
            n = poll(&p, 1, ms_until(deadline, mcs_engine_clock_ms()));
        } while (n < 0 && errno == EINTR);
        int err = 0;
        socklen_t len = sizeof(err);
        if (n <= 0) {
            broke(fc, n == 0 ? MCS_FAILURE_TIMEOUT : MCS_FAILURE_CONNECT);
            return;
        }
        if (mcs_real.getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
            broke(fc, MCS_FAILURE_CONNECT);
            return;
        }
    }
    /* Connected: blocking from now on, so a write that waits for one server waits
     * in one recv() (bounded by SO_RCVTIMEO), not poll() then recv(); every other
     * call passes MSG_DONTWAIT. */
    struct timeval tv = { 0, MCS_FAST_SLICE_MS * 1000 };
    mcs_real.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    mcs_real.fcntl(fd, F_SETFL, 0);
}

/* Sends what fc has queued, waiting for room at most until deadline. */
static void
conn_flush(struct mcs_fast_conn *fc, uint64_t deadline, uint64_t *bytes_out)
{
    while (!fc->broken && mcs_buf_len(&fc->out) > 0) {
        ssize_t n = send(fc->fd, mcs_buf_head(&fc->out), mcs_buf_len(&fc->out), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            mcs_buf_consume(&fc->out, (size_t)n);
            *bytes_out += (uint64_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd p = { .fd = fc->fd, .events = POLLOUT };
            int r = poll(&p, 1, ms_until(deadline, mcs_engine_clock_ms()));
            if (r == 0) {
                broke(fc, MCS_FAILURE_TIMEOUT);
            }
        } else {
            fc->gone = n < 0 && (errno == EBADF || errno == ENOTSOCK);
            broke(fc, MCS_FAILURE_RESET);
        }
    }
    if (mcs_buf_len(&fc->out) == 0) {
        mcs_buf_shrink(&fc->out, 4 * MCS_BACKEND_READ_CHUNK);
    }
}

/* Reads what fc's server sent. wait: the first read may wait (up to
 * MCS_FAST_SLICE_MS, the connection's SO_RCVTIMEO) for the first byte. */
static void
conn_read(struct mcs_fast_conn *fc, uint64_t *bytes_in, bool wait)
{
    for (int round = 0; round < 8 && !fc->broken; round++) {
        if (mcs_buf_reserve(&fc->in, MCS_BACKEND_READ_CHUNK) != 0) {
            broke(fc, MCS_FAILURE_RESET);
            return;
        }
        size_t room = fc->in.cap - fc->in.end;
        ssize_t n = recv(fc->fd, fc->in.data + fc->in.end, room, wait && round == 0 ? 0 : MSG_DONTWAIT);
        if (n > 0) {
            fc->in.end += (size_t)n;
            fc->got = true;
            *bytes_in += (uint64_t)n;
            if ((size_t)n < room) {
                return;   /* the socket is empty */
            }
        } else if (n == 0) {
            broke(fc, MCS_FAILURE_RESET);
        } else if (errno == EINTR) {
            continue;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
            fc->gone = errno == EBADF || errno == ENOTSOCK;
            broke(fc, MCS_FAILURE_RESET);
        } else {
            return;
        }
    }
}

/* One round of I/O for the write: open, send, then wait for replies until one
 * arrives, a deadline passes, or MCS_FAST_SLICE_MS. */
static void
op_io(struct fast_op *op, uint64_t now, uint64_t *bytes_out, uint64_t *bytes_in)
{
    struct pollfd pfd[MCS_FAST_MAX_CONNS];
    struct mcs_fast_conn *who[MCS_FAST_MAX_CONNS];
    nfds_t n = 0;
    uint64_t wake = now + MCS_FAST_SLICE_MS;
    for (struct mcs_fast_conn *fc = op->conns; fc != NULL; fc = fc->next) {
        if (fc->broken || fc->head == NULL) {
            continue;   /* (every request queued has its sub in the FIFO) */
        }
        if (fc->fd < 0) {
            conn_open(op->e, fc, fc->head->deadline_ms);
        }
        conn_flush(fc, fc->head->deadline_ms, bytes_out);
        if (!fc->broken && n < MCS_FAST_MAX_CONNS) {
            pfd[n].fd = fc->fd;
            pfd[n].events = POLLIN;
            pfd[n].revents = 0;
            who[n++] = fc;
            if (fc->head->deadline_ms < wake) {
                wake = fc->head->deadline_ms;
            }
        }
    }
    if (n == 0) {
        return;
    }
    if (n == 1 && wake >= now + MCS_FAST_SLICE_MS) {
        conn_read(who[0], bytes_in, true);   /* one server: one blocking recv() */
        return;
    }
    int r;
    do {
        r = poll(pfd, n, ms_until(wake, mcs_engine_clock_ms()));
    } while (r < 0 && errno == EINTR);
    for (nfds_t i = 0; r > 0 && i < n; i++) {
        if (pfd[i].revents != 0) {
            conn_read(who[i], bytes_in, false);
        }
    }
}

/* ---- the write's machine work, with the lock ---------------------------------------------------- */

/* fc failed: as the engine's backend_fail. report: tell the router (false when
 * the server was marked down by someone else). */
static void
conn_fail(struct mcs_engine *e, struct mcs_fast_conn *fc, enum mcs_failure why, bool report)
{
    struct mcs_server *srv = &e->m.router.servers[fc->server];
    conn_close(e, fc);
    fc->broken = true;
    if (report && why == MCS_FAILURE_TIMEOUT) {
        srv->stats.timeouts++;
    } else if (report && why == MCS_FAILURE_CONNECT) {
        srv->stats.connect_failures++;
    }
    mcs_log(MCS_LOG_INFO, "fast-path connection to %s closed: %s", srv->label,
            report ? mcs_failure_name(why) : "the server is down");
    if (report) {
        mcs_machine_server_failed(&e->m, fc->server, why);
    }
    struct mcs_sub *sub = fc->head;
    fc->head = fc->tail = NULL;
    while (sub != NULL) {
        struct mcs_sub *next = sub->next;
        mcs_machine_failed(&e->m, sub);
        sub = next;
    }
}

/* Gives the machine what fc's server sent. */
static void
conn_deliver(struct mcs_engine *e, struct mcs_fast_conn *fc)
{
    if (!mcs_machine_feed(&e->m, &fc->head, &fc->tail, fc->proto, &fc->in, e->m.now_ms + e->cfg->timeout_ms + 1)) {
        conn_fail(e, fc, MCS_FAILURE_PROTOCOL, true);
        return;
    }
    if (mcs_buf_len(&fc->in) == 0) {
        mcs_buf_shrink(&fc->in, 4 * MCS_BACKEND_READ_CHUNK);
    }
}

/* After a round of I/O: failures, replies, deadlines. True while the write still
 * waits on one of its connections. */
static bool
op_settle(struct fast_op *op, uint64_t bytes_out, uint64_t bytes_in)
{
    struct mcs_engine *e = op->e;
    e->m.stats.backend_bytes_out += bytes_out;
    e->m.stats.backend_bytes_in += bytes_in;
    bool waiting = false;
    for (struct mcs_fast_conn *fc = op->conns; fc != NULL; fc = fc->next) {
        if (fc->gone) {
            /* Our descriptor was closed behind our back (raw syscalls): until the
             * engine notices and retires, every descriptor is proven before use
             * and no new one is opened here. */
            e->fast_suspect = true;
        }
        if (fc->fresh) {
            fc->fresh = false;
            e->m.router.servers[fc->server].stats.connects++;
            mcs_machine_connected(&e->m, fc->server, 0);
        }
        if (fc->head == NULL) {
            continue;
        }
        if (fc->broken) {
            conn_fail(e, fc, fc->why, true);
            continue;
        }
        if (fc->got) {
            fc->got = false;
            fc->head->deadline_ms = e->m.now_ms + e->cfg->timeout_ms + 1;   /* silence, not size */
            conn_deliver(e, fc);
        }
        if (fc->broken || fc->head == NULL) {
            continue;
        }
        if (fc->head->deadline_ms <= e->m.now_ms) {
            conn_fail(e, fc, MCS_FAILURE_TIMEOUT, true);
        } else if (e->m.router.servers[fc->server].health == MCS_HEALTH_DOWN) {
            conn_fail(e, fc, MCS_FAILURE_RESET, false);   /* found down elsewhere: fail over now */
        }
    }
    /* Failures may have queued new sends (failover) on this write's connections. */
    for (struct mcs_fast_conn *fc = op->conns; fc != NULL && !waiting; fc = fc->next) {
        waiting = fc->head != NULL;
    }
    return waiting;
}

/* The write is over: its connections go back to the pool (idle) or away. */
static void
op_release(struct fast_op *op)
{
    struct mcs_engine *e = op->e;
    struct mcs_fast_conn *fc = op->conns;
    while (fc != NULL) {
        struct mcs_fast_conn *next = fc->next;
        size_t i = pool_index(e, fc->server, fc->proto);
        if (fc->broken || fc->fd < 0 || e->torn_down) {
            conn_close(e, fc);
            if (!e->torn_down) {
                e->fast_open[i]--;
            }
            mcs_free(fc);
        } else {
            fc->next = e->fast_idle[i];
            e->fast_idle[i] = fc;
        }
        fc = next;
    }
    op->conns = NULL;
    op->nconns = 0;
}

/* Writes the session's replies to the socketpair, as far as it takes them
 * without waiting; the engine writes the rest. */
static void
op_flush(struct fast_op *op)
{
    struct mcs_engine *e = op->e;
    struct mcs_client *c = op->c;
    while (mcs_buf_len(&c->s.out) > 0) {
        ssize_t n = send(c->fd, mcs_buf_head(&c->s.out), mcs_buf_len(&c->s.out), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            mcs_session_wrote(&e->m, &c->s, (size_t)n);
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            if (n < 0 && (errno == EBADF || errno == ENOTSOCK)) {
                e->fast_suspect = true;
            }
            break;   /* full, or broken: the engine's flush deals with it */
        }
    }
    if (mcs_buf_len(&c->s.out) > 0 || c->s.closing) {
        mcs_client_ready(e, c);
        op->handoff = true;
    } else {
        mcs_buf_shrink(&c->s.out, 4 * MCS_CLIENT_READ_CHUNK);
    }
}

/* The engine's descriptors are still its own: hosts that close descriptors
 * behind our back (raw close_range, a daemon's close loop) close them all, and
 * the engine's wake-up socket, proven on every fast-path write (one fstat), is
 * among them, as on every turn of the engine's loop. While the engine is
 * suspect (a send of ours found a descriptor gone), c's own descriptor is
 * proven too. */
static bool
client_fd_valid(struct mcs_engine *e, struct mcs_client *c)
{
    if (!mcs_engine_intact(e)) {
        return false;
    }
    struct stat st;
    return !e->fast_suspect || (fstat(c->fd, &st) == 0 && st.st_ino == c->ino && st.st_dev == c->dev);
}

static bool
session_idle(const struct mcs_client *c)
{
    return c->fd >= 0 && !c->fast_busy && !c->paused && !c->s.closing && c->s.head == NULL
           && c->s.unanswered == NULL && mcs_buf_len(&c->s.out) == 0 && mcs_buf_len(&c->in) == 0;
}

/* Parses and dispatches what the write holds. Returns the bytes taken (0: not
 * one whole request: the caller leaves the write to the engine). */
static size_t
op_dispatch(struct fast_op *op, const char *p, size_t len)
{
    struct mcs_engine *e = op->e;
    struct mcs_client *c = op->c;
    size_t used = 0;
    uint64_t steps = 0;
    while (used < len && !c->s.closing) {
        size_t n = mcs_session_step(&e->m, &c->s, p + used, len - used);
        if (n == 0) {
            break;
        }
        used += n;
        steps++;
    }
    e->m.stats.fast_requests += steps;
    if (used > 0 && used < len) {
        /* The rest is the start of a request: the engine finishes it when the
         * application writes the remainder (the session is no longer idle). */
        if (c->s.closing) {
            used = len;   /* after quit nothing is read (as on the engine path) */
        } else if (mcs_buf_append(&c->in, p + used, len - used) == 0) {
            used = len;
        }
    }
    return used;
}

bool
mcs_fast_write(struct mcs_fast *h, const struct iovec *iov, int iovcnt, ssize_t *result)
{
    if (in_write || iovcnt <= 0 || atomic_load_explicit(&h->app_timeouts, memory_order_relaxed) != 0) {
        return false;
    }
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++) {
        total += iov[i].iov_len;
        if (total > MCS_FAST_MAX_WRITE) {
            return false;
        }
    }
    if (total == 0) {
        return false;
    }
    int saved = errno;
    char stack[MCS_FAST_STACK];
    char *heap = NULL;
    const char *p = iov[0].iov_base;
    if (iovcnt > 1) {
        heap = total > sizeof(stack) ? mcs_malloc(total) : NULL;
        char *dst = total > sizeof(stack) ? heap : stack;
        if (dst == NULL) {
            errno = saved;
            return false;
        }
        size_t at = 0;
        for (int i = 0; i < iovcnt; i++) {
            memcpy(dst + at, iov[i].iov_base, iov[i].iov_len);
            at += iov[i].iov_len;
        }
        p = dst;
    }
    struct mcs_engine *e = h->e;
    int cancel;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel);
    in_write = true;
    bool taken = false;
    pthread_mutex_lock(&e->mlock);
    struct mcs_client *c = h->client;
    if (e->torn_down || c == NULL || !session_idle(c) || atomic_load(&h->unread) != 0) {
        goto out;
    }
    e->m.now_ms = mcs_engine_clock_ms();
    if (!client_fd_valid(e, c)) {
        goto out;
    }
    struct fast_op op = { .e = e, .c = c };
    current_op = &op;
    c->fast_busy = true;
    e->m.unix_s = (uint64_t)time(NULL);
    uint64_t tick_before = e->m.tick_ms;
    mcs_machine_sync(&e->m);
    uint64_t synced_ms = e->m.now_ms;
    size_t used = op_dispatch(&op, p, total);
    if (used == 0) {
        c->fast_busy = false;
        current_op = NULL;
        goto out;
    }
    taken = true;
    *result = (ssize_t)total;
    while (!e->torn_down) {
        bool waiting = false;
        for (struct mcs_fast_conn *fc = op.conns; fc != NULL && !waiting; fc = fc->next) {
            waiting = fc->head != NULL;
        }
        if (!waiting) {
            break;
        }
        current_op = NULL;
        pthread_mutex_unlock(&e->mlock);
        uint64_t out = 0, in = 0;
        op_io(&op, mcs_engine_clock_ms(), &out, &in);
        pthread_mutex_lock(&e->mlock);
        if (e->torn_down) {
            break;
        }
        current_op = &op;
        e->m.now_ms = mcs_engine_clock_ms();
        if (e->m.now_ms - synced_ms >= MCS_FAST_SLICE_MS / 2) {
            synced_ms = e->m.now_ms;
            mcs_machine_sync(&e->m);   /* a long wait: another process may have found the server down */
        }
        op_settle(&op, out, in);
    }
    current_op = NULL;
    op_release(&op);
    if (e->torn_down) {
        goto out;   /* the engine is gone: the application reads EOF */
    }
    c->fast_busy = false;
    if (c->fd < 0) {
        if (!c->dirty) {
            mcs_free(c);   /* closed by the engine while the write ran */
        }
        goto out;
    }
    op_flush(&op);
    if (op.handoff) {
        e->m.stats.fast_handoffs++;
    }
    e->m.stats.fast_declined = atomic_load_explicit(&e->fast_declined, memory_order_relaxed);
    if (mcs_engine_has_work(e) || e->m.tick_ms < tick_before) {
        mcs_engine_wake(e);
    }
out:
    pthread_mutex_unlock(&e->mlock);
    in_write = false;
    pthread_setcancelstate(cancel, NULL);
    mcs_free(heap);
    errno = saved;
    return taken;
}

/* ---- the engine's side ---------------------------------------------------------------------------- */

void
mcs_fast_pool_free(struct mcs_engine *e)
{
    if (e->fast_idle == NULL) {
        return;
    }
    for (size_t i = 0; i < e->cfg->nservers * MCS_PROTO_COUNT; i++) {
        while (e->fast_idle[i] != NULL) {
            struct mcs_fast_conn *fc = e->fast_idle[i];
            e->fast_idle[i] = fc->next;
            conn_close(e, fc);
            mcs_free(fc);
        }
    }
    mcs_free(e->fast_idle);
    mcs_free(e->fast_open);
    e->fast_idle = NULL;
    e->fast_open = NULL;
}
