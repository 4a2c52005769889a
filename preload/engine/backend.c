/*
 * preload/engine/backend.c: connections to the memcached servers.
 *
 * A fixed pool of cfg->connections connections per server, shared by every
 * application connection of the process. A client always uses the same
 * connection to a given server (chosen by client id), so its requests reach
 * that server in the order it sent them, noreply ones included. Requests are
 * pipelined; replies are matched to requests in FIFO order. A connection is
 * opened lazily (non-blocking), and on any failure (refused, reset, bytes that
 * are not memcached, cfg->timeout_ms of silence while a reply is owed) it is closed, every
 * request waiting on it is failed (reads become misses, writes SERVER_ERROR)
 * and the router is told, which may mark the server down.
 */
#include <errno.h>
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
        mcs_client_wake_paused(e);
    }
}

/* When a wait that starts now runs out. The engine's clock is whole milliseconds,
 * truncated: one more makes sure at least timeout_ms really passed. */
static uint64_t
deadline_from_now(const struct mcs_engine *e)
{
    return e->now_ms + e->cfg->timeout_ms + 1;
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

/* Opens a non-blocking connection. Returns 0 (connected or in progress) or -1. */
static int
backend_connect(struct mcs_engine *e, struct mcs_backend *b)
{
    const struct mcs_endpoint *ep = e->router.servers[b->server].endpoint;
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
    e->router.servers[b->server].stats.connects++;
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
    mcs_avail_connected(e, b);
    return 0;
}

/* The connection a client's requests of this protocol use to server. */
struct mcs_backend *
mcs_backend_of(struct mcs_engine *e, uint32_t server, enum mcs_proto proto, uint64_t client_id)
{
    uint32_t conns = e->cfg->connections;
    return &e->backends[((size_t)server * MCS_PROTO_COUNT + proto) * conns + client_id % conns];
}

void
mcs_backend_send(struct mcs_engine *e, struct mcs_sub *sub, uint64_t client_id, const char *a, size_t alen,
                 const char *bytes, size_t blen)
{
    /* warm-up fetches are meta requests and stats are asked in text: text connections,
     * whatever the client speaks */
    bool text = sub->meta || sub->req->cmd == MCS_CMD_STATS;   /* stats are asked in text */
    struct mcs_backend *b = mcs_backend_of(e, sub->server, text ? MCS_PROTO_TEXT : sub->req->proto, client_id);
    struct mcs_server *srv = &e->router.servers[sub->server];
    if (b->state == MCS_BACKEND_CLOSED && backend_connect(e, b) != 0) {
        srv->stats.connect_failures++;
        srv->stats.errors++;
        mcs_avail_note(e, sub->server, mcs_router_failed(&e->router, sub->server, MCS_FAILURE_CONNECT, e->now_ms),
                       MCS_FAILURE_CONNECT);
        sub->failed = true;
        mcs_request_sub_done(e, sub);
        return;
    }
    size_t before = mcs_buf_len(&b->out);
    if (mcs_buf_append(&b->out, a, alen) != 0 || mcs_buf_append(&b->out, bytes, blen) != 0) {
        b->out.end = b->out.start + before;   /* drop a half-appended request */
        sub->failed = true;
        mcs_request_sub_done(e, sub);
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
    srv->stats.requests++;
    mark_dirty(e, b);
    /* A stalled connection may now carry what its client waits for (a failover
     * re-sent the client's next request here): nothing else would look again. */
    backend_recheck(e, b);
}

/* True if a VALUE for key may come next from sub's server: a key sub asked
 * for, at or after the last one answered (memcached answers in request order,
 * at most once per key asked). Advances sub's place in the key list. */
static bool
value_asked(const struct mcs_request *r, struct mcs_sub *sub, const char *key, uint32_t key_len)
{
    uint32_t off, len;
    while (sub->key_next < r->nkeys && mcs_ascii_next_token(r->keys, &sub->key_pos, r->keys_len, &off, &len)) {
        uint32_t i = sub->key_next++;
        if (r->merge && r->key_sub[i] != sub) {
            continue;
        }
        if (len == key_len && memcmp(r->keys + off, key, len) == 0) {
            return true;
        }
    }
    return false;
}

/* A reply line from a server that the request it answers can take: the
 * application's requests get only what memcached answers to that command.
 * (The engine's own deletes may travel as meta md, whose answer it reads itself.) */
static bool
line_fits(const struct mcs_request *r, const char *p, const struct mcs_ascii_resp *item)
{
    if (item->kind != MCS_RESP_LINE) {
        return false;
    }
    return (r->kind != MCS_REQ_CLIENT && r->cmd == MCS_CMD_DELETE) || mcs_ascii_reply_fits(r->cmd, p, item->len);
}

/* Routes one reply item to the oldest waiting sub. Returns true when that sub is complete. */
static bool
deliver(struct mcs_engine *e, struct mcs_sub *sub, const char *p, const struct mcs_ascii_resp *item, bool *bad)
{
    struct mcs_request *r = sub->req;
    switch (mcs_cmd_route(r->cmd)) {
    case MCS_ROUTE_KEYS:
        if (item->kind == MCS_RESP_VALUE) {
            if (!value_asked(r, sub, p + item->key_off, item->key_len)) {
                *bad = true;   /* a key not asked, or more items than keys */
                return false;
            }
            if (r->client == NULL) {
                return false;   /* nobody will read it */
            }
            if (r->merge) {
                mcs_request_hold(e, r, &sub->resp, p, item->len);   /* counted when merged */
            } else if (mcs_request_hold(e, r, &r->out, p, item->len)) {
                r->hits++;
            }
            mcs_request_stream(e, r);
            return false;
        }
        if (item->kind == MCS_RESP_END) {
            return true;
        }
        if (item->kind == MCS_RESP_LINE && item->error) {
            /* An error for a retrieval: its keys miss, the rest of the answer stands. */
            e->router.servers[sub->server].stats.errors++;
            return true;
        }
        *bad = true;
        return false;
    case MCS_ROUTE_KEY:
    case MCS_ROUTE_ANY:
        if (!line_fits(r, p, item)) {
            *bad = true;
            return false;
        }
        if (mcs_buf_append(&r->out, p, item->len) != 0) {
            r->oom = true;
        }
        return true;
    case MCS_ROUTE_ALL:
        if (!line_fits(r, p, item)) {
            *bad = true;
            return false;
        }
        if (mcs_buf_len(&r->out) == 0 || (item->error && !r->all_error)) {
            mcs_buf_reset(&r->out);
            r->oom = r->oom || mcs_buf_append(&r->out, p, item->len) != 0;
            r->all_error = item->error;
        }
        return true;
    case MCS_ROUTE_LOCAL:
        /* stats: the engine's own (probe, identity), or a client's forwarded "stats settings" */
        if (item->kind == MCS_RESP_STAT && r->kind == MCS_REQ_CLIENT) {
            r->oom = r->oom || mcs_buf_append(&r->out, p, item->len) != 0;
            return false;
        }
        if (item->kind == MCS_RESP_STAT) {
            mcs_avail_stat(r, p, item->len);
            return false;
        }
        if (item->kind == MCS_RESP_END || (item->kind == MCS_RESP_LINE && item->error)) {
            if (r->kind == MCS_REQ_CLIENT) {
                r->oom = r->oom || mcs_buf_append(&r->out, p, item->len) != 0;
            }
            return true;
        }
        break;
    }
    *bad = true;
    return false;
}

/* Flow control on the reply path: may b be read now? Not when no reply in its
 * FIFO can be delivered: every client it answers has a full out buffer (it does
 * not read), or holds too much for requests that are not its turn yet, or the
 * process is over MCSHIM_MEMORY_MB (then only a client's own next reply is read,
 * MCS_CLIENT_MIN_OUT at a time). A sub some client is waiting for anywhere in
 * the FIFO keeps it readable, so stalls never wait on each other. */
static bool
backend_may_read(const struct mcs_engine *e, const struct mcs_backend *b)
{
    bool over = e->reply_held + e->reply_out >= e->memory_max;
    for (const struct mcs_sub *s = b->head; s != NULL; s = s->next) {
        const struct mcs_request *r = s->req;
        const struct mcs_client *c = r->client;
        if (r->kind != MCS_REQ_CLIENT || c == NULL) {
            if (s == b->head) {
                return true;   /* the engine's own, or nobody's: dropped or tiny */
            }
            continue;
        }
        size_t out = mcs_buf_len(&c->out);
        if (mcs_request_wants(r, s)) {
            if (out < (over ? MCS_CLIENT_MIN_OUT : MCS_CLIENT_MAX_OUT)) {
                return true;
            }
        } else if (s == b->head && !over && c->held < MCS_CLIENT_MAX_HELD && out < MCS_CLIENT_MAX_OUT) {
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
    b->stalled_ms = e->now_ms;
    e->stalled++;
    e->stats.backend_stalls++;
    backend_interest(e, b);
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
    }
}

/* Re-reads every stalled backend whose replies can be delivered again (as
 * backend_recheck). */
void
mcs_backend_unstall(struct mcs_engine *e)
{
    size_t n = e->router.nservers * MCS_PROTO_COUNT * e->cfg->connections;
    for (size_t i = 0; i < n && e->stalled > 0; i++) {
        backend_recheck(e, &e->backends[i]);
    }
}

/* Reads and delivers b's replies. hangup: the peer hung up or reset (epoll
 * reports it whatever b watches): read on to the end even where flow control
 * would stall b, or the event repeats for ever and the loop spins. */
static void
backend_read(struct mcs_engine *e, struct mcs_backend *b, bool hangup)
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
        e->stats.backend_bytes_in += (uint64_t)n;
        if (b->head != NULL) {
            /* Deadlines measure silence, not size: a server still sending is alive. */
            b->head->deadline_ms = deadline_from_now(e);
        }
        while (mcs_buf_len(&b->in) > 0) {
            struct mcs_sub *sub = b->head;
            if (sub == NULL) {
                backend_fail(e, b, MCS_FAILURE_PROTOCOL, true);
                return;
            }
            struct mcs_ascii_resp item;
            const char *p = mcs_buf_head(&b->in);
            enum mcs_resp_status st;
            bool bad = false, complete = false;
            if (b->proto == MCS_PROTO_BINARY) {
                struct mcs_bin_resp packet;
                st = mcs_bin_resp_parse(p, mcs_buf_len(&b->in), e->cfg->item_max, &packet);
                item.len = packet.len;
                if (st == MCS_RESP_OK) {
                    complete = mcs_bin_deliver(e, sub, p, &packet, &bad);
                }
            } else if (sub->meta) {
                size_t used = 0;
                st = mcs_meta_reply(e, sub, p, mcs_buf_len(&b->in), &used);
                item.len = (uint32_t)used;
                complete = true;
            } else {
                st = mcs_ascii_resp_parse(p, mcs_buf_len(&b->in), e->cfg->item_max, &item);
            }
            if (st == MCS_RESP_MORE) {
                break;
            }
            bad = bad || st == MCS_RESP_BAD;
            if (!bad && !sub->meta && b->proto != MCS_PROTO_BINARY) {
                complete = deliver(e, sub, p, &item, &bad);
            }
            if (bad) {
                backend_fail(e, b, MCS_FAILURE_PROTOCOL, true);
                return;
            }
            mcs_buf_consume(&b->in, item.len);
            if (complete) {
                sub->complete = true;
                b->head = sub->next;
                if (b->head == NULL) {
                    b->tail = NULL;
                } else {
                    /* The next reply's clock starts now that this one is in. */
                    b->head->deadline_ms = deadline_from_now(e);
                }
                e->router.servers[b->server].stats.responses++;
                mcs_router_succeeded(&e->router, b->server);
                mcs_request_sub_done(e, sub);
            }
        }
        if ((size_t)n < MCS_BACKEND_READ_CHUNK) {
            break;
        }
    }
    if (mcs_buf_len(&b->in) == 0) {
        mcs_buf_shrink(&b->in, 4 * MCS_BACKEND_READ_CHUNK);
    }
}

/* Closes b and fails every request waiting on it. report: tell the router
 * (false when the server is already known to be down). */
static void
backend_fail(struct mcs_engine *e, struct mcs_backend *b, enum mcs_failure why, bool report)
{
    struct mcs_server *srv = &e->router.servers[b->server];
    if (b->fd >= 0) {
        mcs_engine_epoll(e, EPOLL_CTL_DEL, b->fd, 0, 0);
        mcs_engine_close_fd(b->fd);
    }
    b->fd = -1;
    b->state = MCS_BACKEND_CLOSED;
    b->want_write = false;
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
        mcs_avail_note(e, b->server, mcs_router_failed(&e->router, b->server, why, e->now_ms), why);
    }
    /* Detach the FIFO first: failing a sub may queue new work on this backend. */
    struct mcs_sub *sub = b->head;
    b->head = b->tail = NULL;
    while (sub != NULL) {
        struct mcs_sub *next = sub->next;
        sub->failed = true;
        srv->stats.errors++;
        mcs_request_sub_done(e, sub);
        sub = next;
    }
}

/* Called only by the engine's dirty walk, after b was taken off the list. */
void
mcs_backend_flush(struct mcs_engine *e, struct mcs_backend *b)
{
    b->dirty = false;
    if (b->state != MCS_BACKEND_READY) {
        return;
    }
    while (mcs_buf_len(&b->out) > 0) {
        ssize_t n = send(b->fd, mcs_buf_head(&b->out), mcs_buf_len(&b->out), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            mcs_buf_consume(&b->out, (size_t)n);
            e->stats.backend_bytes_out += (uint64_t)n;
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

void
mcs_backend_check_timeouts(struct mcs_engine *e)
{
    size_t n = e->router.nservers * MCS_PROTO_COUNT * e->cfg->connections;
    for (size_t i = 0; i < n; i++) {
        struct mcs_backend *b = &e->backends[i];
        if (b->state == MCS_BACKEND_CONNECTING && e->now_ms >= b->connect_deadline_ms) {
            backend_fail(e, b, MCS_FAILURE_TIMEOUT, true);
        } else if (b->state != MCS_BACKEND_CLOSED && !b->stalled && b->head != NULL
                   && e->now_ms >= b->head->deadline_ms) {
            backend_fail(e, b, MCS_FAILURE_TIMEOUT, true);
        }
    }
}

uint64_t
mcs_backend_next_deadline(const struct mcs_engine *e)
{
    uint64_t next = UINT64_MAX;
    size_t n = e->router.nservers * MCS_PROTO_COUNT * e->cfg->connections;
    for (size_t i = 0; i < n; i++) {
        const struct mcs_backend *b = &e->backends[i];
        if (b->state == MCS_BACKEND_CONNECTING && b->connect_deadline_ms < next) {
            next = b->connect_deadline_ms;
        }
        if (b->state != MCS_BACKEND_CLOSED && !b->stalled && b->head != NULL && b->head->deadline_ms < next) {
            next = b->head->deadline_ms;
        }
    }
    return next;
}
