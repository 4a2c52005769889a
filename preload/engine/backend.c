/*
 * preload/engine/backend.c: connections to the memcached servers.
 *
 * A fixed pool of cfg->connections connections per server and protocol, shared
 * by every application connection of the process. A session always uses the
 * same connection to a given server (the machine picks it: request conn), so
 * its requests reach that server in the order it sent them, noreply ones
 * included. Requests are pipelined; replies are matched to requests in FIFO
 * order: the machine parses each reply item (mcs_machine_reply) and is told
 * when a sub's reply is whole (mcs_machine_done). A connection is opened when
 * it first has bytes to send (non-blocking, by the loop's flush), and on any
 * failure (refused, reset, bytes that are not memcached, cfg->timeout_ms of
 * silence while a reply is owed) it is closed, the machine is told
 * (mcs_machine_server_failed, which may mark the server down) and every sub
 * waiting on it is failed (mcs_machine_failed). mcs_backend_send never calls
 * the machine back: a send that cannot be queued is failed by the loop.
 */
#include <errno.h>
#include <stddef.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "preload/core/alloc.h"
#include "preload/engine/internal.h"
#include "preload/lib/fdtab.h"
#include "preload/lib/log.h"
#include "preload/lib/real.h"

static void backend_fail(struct mcs_engine *e, struct mcs_backend *b, enum mcs_failure why, bool report);
static void backend_recheck(struct mcs_engine *e, struct mcs_backend *b);

/* Bytes left the out buffers (sent or dropped): wake paused clients once well below the limit. */
static void
queued_drop(struct mcs_engine *e, size_t n)
{
    e->backend_queued -= n < e->backend_queued ? n : e->backend_queued;
    if (e->backend_blocked && e->backend_queued < MCS_ENGINE_MAX_QUEUED / 2) {
        e->wake_paused = true;   /* engine.c wakes them (mcs_engine_settle) */
    }
}

/* When a wait that starts now runs out. The engine's clock is whole milliseconds,
 * truncated: one more makes sure at least timeout_ms really passed. */
static uint64_t
deadline_from_now(const struct mcs_engine *e)
{
    return e->m.now_ms + e->cfg->timeout_ms + 1;
}

static uintptr_t
tag_of(struct mcs_backend *b)
{
    return (uintptr_t)b | MCS_TAG_BACKEND;
}

static void
mark_dirty(struct mcs_engine *e, struct mcs_backend *b)
{
    if (!b->dirty) {
        b->dirty = true;
        b->next_dirty = e->dirty_backends;
        e->dirty_backends = b;
    }
}

/* Keeps b's place in the timer heap true: a connection being made must be made
 * by its deadline; a connection that is read and owes a reply must send some
 * of it by the head sub's deadline. A stalled one has none (the wait is ours). */
static void
backend_timer(struct mcs_engine *e, struct mcs_backend *b)
{
    uint64_t at = UINT64_MAX;
    if (b->state != MCS_BACKEND_CLOSED && !b->stalled && b->head != NULL) {
        at = b->head->deadline_ms;
    }
    if (b->state == MCS_BACKEND_CONNECTING && b->connect_deadline_ms < at) {
        at = b->connect_deadline_ms;
    }
    if (at == UINT64_MAX) {
        mcs_heap_remove(&e->timers, &b->timer);
    } else {
        mcs_heap_set(&e->timers, &b->timer, at);   /* room for every backend: cannot fail */
    }
}

/* Opens a non-blocking connection. Returns 0 (connected or in progress) or -1. */
static int
backend_connect(struct mcs_engine *e, struct mcs_backend *b)
{
    const struct mcs_endpoint *ep = e->m.router.servers[b->server].endpoint;
    if (ep->naddrs == 0) {
        return -1;
    }
    const struct sockaddr *sa = (const struct sockaddr *)&ep->addrs[0];
    int fd = mcs_real.socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    fd = mcs_fd_move_high(fd);
    mcs_fdtab_mark_internal(fd);
    if (sa->sa_family != AF_UNIX) {
        int one = 1;
        mcs_real.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    e->m.router.servers[b->server].stats.connects++;
    int rc = mcs_real.connect(fd, sa, ep->addrlens[0]);
    if (rc != 0 && errno != EINPROGRESS) {
        mcs_engine_close_fd(fd);
        return -1;
    }
    b->fd = fd;
    b->state = rc == 0 ? MCS_BACKEND_READY : MCS_BACKEND_CONNECTING;
    b->connect_deadline_ms = deadline_from_now(e);
    b->want_write = b->state == MCS_BACKEND_CONNECTING;
    if (mcs_engine_epoll(e, EPOLL_CTL_ADD, fd, EPOLLIN | (b->want_write ? EPOLLOUT : 0), tag_of(b)) != 0) {
        mcs_engine_close_fd(fd);
        b->fd = -1;
        b->state = MCS_BACKEND_CLOSED;
        return -1;
    }
    backend_timer(e, b);
    /* the first connection to a server: the machine learns which instance it is */
    mcs_machine_connected(&e->m, b->server, (uint64_t)(b - e->backends) % e->cfg->connections);
    return 0;
}

/* The connection conn of this protocol to server. */
static struct mcs_backend *
backend_of(struct mcs_engine *e, uint32_t server, enum mcs_proto proto, uint64_t conn)
{
    uint32_t conns = e->cfg->connections;
    return &e->backends[((size_t)server * MCS_PROTO_COUNT + proto) * conns + conn % conns];
}

/* Queues a sub whose send failed; the loop fails it (mcs_engine_settle). */
static void
fail_later(struct mcs_engine *e, struct mcs_sub *sub)
{
    sub->next = NULL;
    if (e->failed_tail != NULL) {
        e->failed_tail->next = sub;
    } else {
        e->failed_head = sub;
    }
    e->failed_tail = sub;
}

void
mcs_backend_send(struct mcs_engine *e, struct mcs_sub *sub, enum mcs_proto proto, uint64_t conn, const char *a,
                 size_t alen, const char *bytes, size_t blen)
{
    struct mcs_backend *b = backend_of(e, sub->server, proto, conn);
    size_t before = mcs_buf_len(&b->out);
    if (mcs_buf_append(&b->out, a, alen) != 0 || mcs_buf_append(&b->out, bytes, blen) != 0) {
        b->out.end = b->out.start + before;   /* drop a half-appended request */
        fail_later(e, sub);
        return;
    }
    e->backend_queued += alen + blen;
    sub->next = NULL;
    sub->deadline_ms = deadline_from_now(e);
    if (b->tail) {
        b->tail->next = sub;
    } else {
        b->head = sub;
    }
    b->tail = sub;
    mark_dirty(e, b);
    /* A stalled connection may now carry what its client waits for (a failover
     * re-sent the client's next request here): nothing else would look again. */
    backend_recheck(e, b);
    backend_timer(e, b);
}

/* Flow control on the reply path: may b be read now? Not when no reply in its
 * FIFO can be delivered: every client it answers has a full out buffer (it does
 * not read), or holds too much for requests that are not its turn yet, or the
 * process is over MCSHIM_MEMORY_MB (then only a client's own next reply is read,
 * MCS_SESSION_MIN_OUT at a time). A sub some client is waiting for anywhere in
 * the FIFO keeps it readable, so stalls never wait on each other. */
static bool
backend_may_read(const struct mcs_engine *e, const struct mcs_backend *b)
{
    bool over = e->m.reply_held + e->m.reply_out >= e->m.memory_max;
    for (const struct mcs_sub *s = b->head; s != NULL; s = s->next) {
        const struct mcs_session *w = mcs_machine_waiter(s);
        if (w != NULL) {
            if (mcs_buf_len(&w->out) < (over ? MCS_SESSION_MIN_OUT : MCS_SESSION_MAX_OUT)) {
                return true;
            }
            continue;
        }
        if (s != b->head) {
            continue;
        }
        const struct mcs_request *r = s->req;
        const struct mcs_session *c = r->session;
        if (r->kind != MCS_REQ_CLIENT || c == NULL) {
            return true;   /* the machine's own, or nobody's: dropped or tiny */
        }
        if (!over && c->held < MCS_SESSION_MAX_HELD && mcs_buf_len(&c->out) < MCS_SESSION_MAX_OUT) {
            return true;
        }
    }
    return b->head == NULL;
}

static void
backend_interest(struct mcs_engine *e, struct mcs_backend *b)
{
    mcs_engine_epoll(e, EPOLL_CTL_MOD, b->fd, (b->stalled ? 0 : EPOLLIN) | (b->want_write ? EPOLLOUT : 0), tag_of(b));
}

static void
backend_stall(struct mcs_engine *e, struct mcs_backend *b)
{
    b->stalled = true;
    b->stalled_ms = e->m.now_ms;
    e->stalled++;
    e->m.stats.backend_stalls++;
    backend_interest(e, b);
    backend_timer(e, b);
}

/* Reads b again if it is stalled and its replies can be delivered now. Only
 * changes what epoll watches (never reads here: callers may be mid-delivery). */
static void
backend_recheck(struct mcs_engine *e, struct mcs_backend *b)
{
    if (b->stalled && backend_may_read(e, b)) {
        b->stalled = false;
        e->stalled--;
        if (b->head != NULL) {
            b->head->deadline_ms = deadline_from_now(e);   /* the wait was ours, not the server's */
        }
        backend_interest(e, b);
        backend_timer(e, b);
    }
}

/* Re-reads every stalled backend whose replies can be delivered again (as
 * backend_recheck). */
void
mcs_backend_unstall(struct mcs_engine *e)
{
    size_t n = e->m.router.nservers * MCS_PROTO_COUNT * e->cfg->connections;
    for (size_t i = 0; i < n && e->stalled > 0; i++) {
        backend_recheck(e, &e->backends[i]);
    }
}

/* Reads and delivers b's replies. hangup: the peer hung up or reset (epoll
 * reports it whatever b watches): read on to the end even where flow control
 * would stall b, or the event repeats for ever and the loop spins. */
static void
backend_read_some(struct mcs_engine *e, struct mcs_backend *b, bool hangup)
{
    for (int round = 0; round < 8; round++) {
        if (!hangup && !b->stalled && !backend_may_read(e, b)) {
            backend_stall(e, b);
        }
        if (b->stalled) {
            return;
        }
        if (mcs_buf_reserve(&b->in, MCS_BACKEND_READ_CHUNK) != 0) {
            backend_fail(e, b, MCS_FAILURE_RESET, true);
            return;
        }
        ssize_t n = recv(b->fd, b->in.data + b->in.end, b->in.cap - b->in.end, MSG_DONTWAIT);
        if (n == 0) {
            backend_fail(e, b, MCS_FAILURE_RESET, true);
            return;
        }
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                break;
            }
            backend_fail(e, b, MCS_FAILURE_RESET, true);
            return;
        }
        b->in.end += (size_t)n;
        e->m.stats.backend_bytes_in += (uint64_t)n;
        if (b->head != NULL) {
            /* Deadlines measure silence, not size: a server still sending is alive. */
            b->head->deadline_ms = deadline_from_now(e);
        }
        if (!mcs_machine_feed(&e->m, &b->head, &b->tail, b->proto, &b->in, deadline_from_now(e))) {
            backend_fail(e, b, MCS_FAILURE_PROTOCOL, true);
            return;
        }
        if ((size_t)n < MCS_BACKEND_READ_CHUNK) {
            break;
        }
    }
    if (mcs_buf_len(&b->in) == 0) {
        mcs_buf_shrink(&b->in, 4 * MCS_BACKEND_READ_CHUNK);
    }
}

static void
backend_read(struct mcs_engine *e, struct mcs_backend *b, bool hangup)
{
    backend_read_some(e, b, hangup);
    backend_timer(e, b);   /* the head, or its deadline, moved */
}

/* Closes b and fails every request waiting on it. report: tell the router
 * (false when the server is already known to be down). */
static void
backend_fail(struct mcs_engine *e, struct mcs_backend *b, enum mcs_failure why, bool report)
{
    struct mcs_server *srv = &e->m.router.servers[b->server];
    if (b->fd >= 0) {
        mcs_engine_epoll(e, EPOLL_CTL_DEL, b->fd, 0, 0);
        mcs_engine_close_fd(b->fd);
    }
    b->fd = -1;
    b->state = MCS_BACKEND_CLOSED;
    b->want_write = false;
    mcs_heap_remove(&e->timers, &b->timer);
    if (b->stalled) {
        b->stalled = false;
        e->stalled--;
    }
    size_t dropped = mcs_buf_len(&b->out);
    mcs_buf_free(&b->out);
    queued_drop(e, dropped);
    mcs_buf_free(&b->in);
    if (!report) {
        /* not the server's doing here: no counters */
    } else if (why == MCS_FAILURE_TIMEOUT) {
        srv->stats.timeouts++;
    } else if (why == MCS_FAILURE_CONNECT) {
        srv->stats.connect_failures++;
    }
    mcs_log(MCS_LOG_INFO, "connection to %s closed: %s", srv->label,
            report ? mcs_failure_name(why) : "the server is down");
    if (report) {
        mcs_machine_server_failed(&e->m, b->server, why);
    }
    /* Detach the FIFO first: failing a sub may queue new work on this backend. */
    struct mcs_sub *sub = b->head;
    b->head = b->tail = NULL;
    while (sub != NULL) {
        struct mcs_sub *next = sub->next;
        mcs_machine_failed(&e->m, sub);
        sub = next;
    }
}

/* Called only by the engine's dirty walk, after b was taken off the list. */
void
mcs_backend_flush(struct mcs_engine *e, struct mcs_backend *b)
{
    b->dirty = false;
    if (b->state == MCS_BACKEND_CLOSED && b->head != NULL && backend_connect(e, b) != 0) {
        backend_fail(e, b, MCS_FAILURE_CONNECT, true);
        return;
    }
    if (b->state != MCS_BACKEND_READY) {
        return;   /* connecting: flushed again when the connection is made */
    }
    while (mcs_buf_len(&b->out) > 0) {
        ssize_t n = send(b->fd, mcs_buf_head(&b->out), mcs_buf_len(&b->out), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            mcs_buf_consume(&b->out, (size_t)n);
            e->m.stats.backend_bytes_out += (uint64_t)n;
            queued_drop(e, (size_t)n);
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            backend_fail(e, b, MCS_FAILURE_RESET, true);
            return;
        }
    }
    bool pending = mcs_buf_len(&b->out) > 0;
    if (!pending) {
        mcs_buf_shrink(&b->out, 4 * MCS_BACKEND_READ_CHUNK);
    }
    if (pending != b->want_write) {
        b->want_write = pending;
        backend_interest(e, b);
    }
}

void
mcs_backend_event(struct mcs_engine *e, struct mcs_backend *b, uint32_t events)
{
    if (b->state == MCS_BACKEND_CONNECTING) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
            return;
        }
        int err = 0;
        socklen_t len = sizeof(err);
        if (mcs_real.getsockopt(b->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
            backend_fail(e, b, MCS_FAILURE_CONNECT, true);
            return;
        }
        b->state = MCS_BACKEND_READY;
        backend_timer(e, b);    /* the reply deadline alone from now */
        b->want_write = true;   /* flush recomputes the interest set */
        /* Flushed by the loop's dirty walk, never from here: the backend may
         * already be on the dirty list, and flushing clears its flag. */
        mark_dirty(e, b);
        return;
    }
    if (b->state != MCS_BACKEND_READY) {
        return;
    }
    if (events & (EPOLLERR | EPOLLHUP)) {
        /* A reset or hang-up is read even while stalled (it would repeat for ever). */
        if (b->stalled) {
            b->stalled = false;
            e->stalled--;
        }
        backend_read(e, b, true);
    } else if (events & EPOLLIN) {
        backend_read(e, b, false);
    }
    if (b->state == MCS_BACKEND_READY && (events & EPOLLOUT)) {
        mark_dirty(e, b);
    }
}

/* Server s was marked down: every request still waiting on one of its
 * connections fails now (and moves to a copy), instead of each connection
 * waiting out its own timeout. */
void
mcs_backend_abort_server(struct mcs_engine *e, uint32_t server)
{
    uint32_t conns = e->cfg->connections * MCS_PROTO_COUNT;
    for (uint32_t i = 0; i < conns; i++) {
        struct mcs_backend *b = &e->backends[(size_t)server * conns + i];
        if (b->state != MCS_BACKEND_CLOSED) {
            backend_fail(e, b, MCS_FAILURE_RESET, false);
        }
    }
}

/* Fails every connection whose deadline has passed, earliest first. */
void
mcs_backend_check_timeouts(struct mcs_engine *e)
{
    struct mcs_heap_node *t;
    while ((t = mcs_heap_top(&e->timers)) != NULL && t->key <= e->m.now_ms) {
        struct mcs_backend *b = (struct mcs_backend *)((char *)t - offsetof(struct mcs_backend, timer));
        backend_fail(e, b, MCS_FAILURE_TIMEOUT, true);   /* takes b out of the heap */
    }
}

/* The earliest deadline, or UINT64_MAX when no connection waits for anything. */
uint64_t
mcs_backend_next_deadline(const struct mcs_engine *e)
{
    const struct mcs_heap_node *t = mcs_heap_top(&e->timers);
    return t != NULL ? t->key : UINT64_MAX;
}
