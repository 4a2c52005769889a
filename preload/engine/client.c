/*
 * preload/engine/client.c: application connections inside the engine.
 *
 * Reads the engine end of a socketpair, parses requests (core/ascii), routes
 * them (core/router) into sub-requests on the backend pool, and writes the
 * replies back strictly in request order. A multi-get whose keys live on
 * several servers is split per server and merged back in the order of the
 * keys asked; a server that fails turns its keys into misses. Requests sent
 * with noreply are forwarded without it (so every server reply can be matched
 * and checked) and their replies are dropped; they do not hold up the
 * pipeline. Flow control: reading pauses while a client has too many requests
 * in flight or too many unsent reply bytes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "preload/core/alloc.h"
#include "preload/engine/internal.h"
#include "preload/lib/log.h"

static const char reply_all_down[] = "SERVER_ERROR mcshim: no server available\r\n";
static const char reply_oom[] = "SERVER_ERROR out of memory\r\n";
static const char reply_detail_usage[] = "CLIENT_ERROR usage: stats detail on|off|dump\r\n";

static void client_process(struct mcs_engine *e, struct mcs_client *c);
static void sub_send(struct mcs_engine *e, struct mcs_client *c, struct mcs_sub *sub, const char *a, size_t alen,
                     const char *b, size_t blen);
static void client_close(struct mcs_engine *e, struct mcs_client *c);

/* Once closing (or paused), input is no longer read; keep only write interest. */
static void
client_stop_reading(struct mcs_engine *e, struct mcs_client *c)
{
    mcs_engine_epoll(e, EPOLL_CTL_MOD, c->fd, c->want_write ? EPOLLOUT : 0, (uintptr_t)c);
}

/* Flow control: may this client's input be read and dispatched now? Bounds its
 * requests in flight, its unsent replies, and (for every client together, since
 * noreply requests leave no trace in a pipeline) the bytes queued to servers. */
static bool
client_may_read(const struct mcs_engine *e, const struct mcs_client *c, bool resuming)
{
    uint32_t div = resuming ? 2 : 1;   /* resume only well below the limits */
    return c->inflight < MCS_CLIENT_MAX_PIPELINE / div && mcs_buf_len(&c->out) < MCS_CLIENT_MAX_OUT / div
           && e->backend_queued < MCS_ENGINE_MAX_QUEUED / div;
}

static void
mark_dirty(struct mcs_engine *e, struct mcs_client *c)
{
    if (!c->dirty) {
        c->dirty = true;
        c->next_dirty = e->dirty_clients;
        e->dirty_clients = c;
    }
}

void
mcs_client_attach(struct mcs_engine *e, int fd)
{
    struct mcs_client *c = mcs_calloc(1, sizeof(*c));
    if (c == NULL) {
        mcs_log(MCS_LOG_ERROR, "out of memory: dropping an application connection");
        mcs_engine_close_fd(fd);
        return;
    }
    c->fd = fd;
    c->id = e->next_client_id++;
    if (mcs_engine_epoll(e, EPOLL_CTL_ADD, fd, EPOLLIN, (uintptr_t)c) != 0) {
        mcs_log(MCS_LOG_ERROR, "epoll_ctl failed for an application connection: %s", strerror(errno));
        mcs_engine_close_fd(fd);
        mcs_free(c);
        return;
    }
    c->next = e->clients;
    if (e->clients) {
        e->clients->prev = c;
    }
    e->clients = c;
    e->stats.curr_connections++;
    e->stats.total_connections++;
}

/* Frees a request; a finished retrieval is counted here, as its reply is
 * released in request order, so a later "stats" sees exactly what came before. */
void
mcs_request_free(struct mcs_engine *e, struct mcs_request *r)
{
    if (r->kind == MCS_REQ_CLIENT && r->done && mcs_cmd_route(r->cmd) == MCS_ROUTE_KEYS) {
        e->stats.cmd_get += r->nkeys;
        e->stats.get_hits += r->hits;
        e->stats.get_misses += r->nkeys > r->hits ? r->nkeys - r->hits : 0;
    }
    size_t held = r->held;
    e->reply_held -= held <= e->reply_held ? held : e->reply_held;
    if (r->client != NULL) {
        r->client->held -= held <= r->client->held ? held : r->client->held;
    }
    for (uint32_t i = 0; i < r->nsubs; i++) {
        mcs_buf_free(&r->subs[i].resp);
    }
    if (r->nsubs > 1) {
        mcs_free(r->subs);
    }
    while (r->children != NULL) {
        struct mcs_sub *c = r->children;
        r->children = c->next_child;
        mcs_buf_free(&c->resp);
        mcs_free(c);
    }
    mcs_buf_free(&r->out);
    mcs_buf_free(&r->kept);
    mcs_free(r->keys);
    mcs_free(r->key_sub);
    mcs_free(r->key_try);
    mcs_free(r);
    if (held > 0 && e->stalled > 0) {
        mcs_backend_unstall(e);   /* the bytes it held may have been all that kept a server unread */
    }
}

/* A request with room for one sub inline (the common single-server case). */
struct request_one {
    struct mcs_request req;
    struct mcs_sub sub;
};

/* A new request with nsubs subs; unless detached (noreply, or the engine's
 * own), it joins the client's pipeline. */
struct mcs_request *
mcs_request_new(struct mcs_engine *e, struct mcs_client *c, enum mcs_cmd cmd, uint32_t nsubs, bool detached)
{
    struct request_one *one = mcs_calloc(1, sizeof(*one));
    if (one == NULL) {
        return NULL;
    }
    struct mcs_request *r = &one->req;
    r->cmd = cmd;
    r->nsubs = nsubs;
    if (nsubs <= 1) {
        r->subs = &one->sub;
    } else {
        r->subs = mcs_calloc(nsubs, sizeof(*r->subs));
        if (r->subs == NULL) {
            mcs_free(one);
            return NULL;
        }
    }
    for (uint32_t i = 0; i < nsubs; i++) {
        r->subs[i].req = r;
    }
    r->client_id = c != NULL ? c->id : 0;
    if (!detached && c != NULL) {
        r->client = c;
        if (c->tail) {
            c->tail->next = r;
        } else {
            c->head = r;
        }
        c->tail = r;
        c->inflight++;
    }
    (void)e;
    return r;
}

/* Reply memory (docs/protocol.md "Memory"). A reply's bytes are held by its
 * request until it is the client's turn, then move to the client's out buffer;
 * the engine counts both, per client and for the process, and stops reading a
 * server whose next reply could not be delivered (backend.c). */

static void
out_added(struct mcs_engine *e, size_t n)
{
    e->reply_out += n;
}

static void
out_dropped(struct mcs_engine *e, size_t n)
{
    e->reply_out -= n <= e->reply_out ? n : e->reply_out;
    if (e->stalled > 0) {
        mcs_backend_unstall(e);
    }
}

/* Hard bound for one client: what it holds in its pipeline and its out buffer. */
#define MCS_CLIENT_HARD_MAX (4 * MCS_CLIENT_MAX_OUT)

bool
mcs_request_hold(struct mcs_engine *e, struct mcs_request *r, struct mcs_buf *to, const char *p, size_t n)
{
    struct mcs_client *c = r->client;
    if (r->oom) {
        return false;
    }
    if (c != NULL && c->held + mcs_buf_len(&c->out) + n > MCS_CLIENT_HARD_MAX) {
        /* Only reachable when the client does not read while another client needs
         * the same server connection, or a multi-get cannot be released in order
         * (a warming server): answer what fits, then SERVER_ERROR, and close. */
        mcs_log(MCS_LOG_WARN, "an application connection holds over %u MiB of unread replies: closing it",
                (unsigned)(MCS_CLIENT_HARD_MAX >> 20));
        r->oom = true;
        return false;
    }
    if (mcs_buf_append(to, p, n) != 0) {
        r->oom = true;
        return false;
    }
    r->held += n;
    e->reply_held += n;
    if (c != NULL) {
        c->held += n;
    }
    return true;
}

/* Moves r's reply bytes to c's out buffer (by swapping buffers when out is
 * empty: large values are not copied). Returns false when out of memory. */
static bool
request_release_out(struct mcs_engine *e, struct mcs_request *r, struct mcs_client *c)
{
    size_t n = mcs_buf_len(&r->out);
    if (n == 0) {
        return true;
    }
    if (mcs_buf_len(&c->out) == 0) {
        struct mcs_buf t = c->out;
        c->out = r->out;
        r->out = t;
        mcs_buf_reset(&r->out);
    } else if (mcs_buf_append(&c->out, mcs_buf_head(&r->out), n) != 0) {
        return false;
    } else {
        mcs_buf_reset(&r->out);
    }
    out_added(e, n);
    size_t d = n <= r->held ? n : r->held;
    r->held -= d;
    c->held -= d <= c->held ? d : c->held;
    e->reply_held -= d <= e->reply_held ? d : e->reply_held;
    return true;
}

static void request_merge(struct mcs_engine *e, struct mcs_request *r, bool final);

/* A text retrieval at the head of its client's pipeline passes its items on as
 * they arrive (in key order), instead of holding the whole reply. */
void
mcs_request_stream(struct mcs_engine *e, struct mcs_request *r)
{
    struct mcs_client *c = r->client;
    if (c == NULL || c->head != r || r->done || r->kind != MCS_REQ_CLIENT || r->proto != MCS_PROTO_TEXT
        || r->is_meta || mcs_cmd_route(r->cmd) != MCS_ROUTE_KEYS) {
        return;
    }
    uint32_t next = r->merge_next;
    if (r->merge) {
        request_merge(e, r, false);
    }
    if (!request_release_out(e, r, c)) {
        r->oom = true;
    }
    mark_dirty(e, c);
    if (r->merge_next != next && e->stalled > 0) {
        mcs_backend_unstall(e);   /* the next key's server may have been left unread until now */
    }
}

/* True if sub's reply is what r needs next to move on: r is its client's
 * turn, and sub answers it (for a multi-get: the next key to release, or,
 * every key released, any sub still owing the END that completes it). */
bool
mcs_request_wants(const struct mcs_request *r, const struct mcs_sub *sub)
{
    const struct mcs_client *c = r->client;
    if (c == NULL || c->head != r) {
        return false;
    }
    return !r->merge || r->merge_next >= r->nkeys || r->key_sub[r->merge_next] == sub;
}

/* Moves finished replies at the head of the pipeline to the output buffer. */

void
mcs_client_advance(struct mcs_engine *e, struct mcs_client *c)
{
    for (;;) {
        struct mcs_request *r = c->head;
        if (r != NULL && r->cmd == MCS_CMD_STATS && !r->done && r->nsubs == 0) {
            if (r->proto == MCS_PROTO_BINARY) {
                mcs_bin_stats_build(e, r);
            } else {
                mcs_stats_build(e, r->keys, r->keys_len, &r->out);
            }
            r->done = true;
        }
        if (r == NULL || !r->done) {
            break;
        }
        if (!request_release_out(e, r, c)) {
            c->closing = true;
        }
        if (r->oom) {
            c->closing = true;   /* its reply ends with SERVER_ERROR out of memory */
        }
        c->head = r->next;
        if (c->head == NULL) {
            c->tail = NULL;
        }
        c->inflight--;
        mcs_request_free(e, r);
    }
    if (c->head != NULL) {
        mcs_request_stream(e, c->head);
    }
    mark_dirty(e, c);
    if (e->stalled > 0) {
        mcs_backend_unstall(e);
    }
}

/* Queues bytes answered by the shim itself, after every earlier reply. */
void
mcs_client_local_reply(struct mcs_engine *e, struct mcs_client *c, const char *p, size_t n)
{
    if (c->head == NULL) {
        if (mcs_buf_append(&c->out, p, n) != 0) {
            c->closing = true;
        } else {
            out_added(e, n);
        }
        mark_dirty(e, c);
        return;
    }
    struct mcs_request *r = mcs_request_new(e, c, MCS_CMD_COUNT, 0, false);
    if (r == NULL || mcs_buf_append(&r->out, p, n) != 0) {
        c->closing = true;
        return;
    }
    r->done = true;
}

/* Releases a multi-get's items to r->out in the order the keys were asked.
 * Each sub lists its keys in request order, so its items come in that order
 * too: a key whose item is not at the head of its sub's items missed. Before
 * the end (final false) it stops at the first key whose sub has not answered
 * that far yet, or whose server is warming (warm-up looks at the whole answer);
 * a released key is detached from its sub (key_sub NULL), so a later failover
 * or warm-up never asks for it again. */
static void
request_merge(struct mcs_engine *e, struct mcs_request *r, bool final)
{
    uint32_t off, len;
    while (r->merge_next < r->nkeys && !r->oom) {
        uint32_t pos = r->merge_pos;
        if (!mcs_ascii_next_token(r->keys, &pos, r->keys_len, &off, &len)) {
            break;
        }
        struct mcs_sub *s = r->key_sub[r->merge_next];
        size_t avail = s != NULL ? mcs_buf_len(&s->resp) : 0;
        /* a failed sub has answered: its keys miss (failover has moved them already) */
        if (!final && s != NULL && !s->failed
            && ((avail == 0 && !s->complete) || mcs_router_warming(&e->router, s->server, e->now_ms))) {
            break;
        }
        if (avail > 0 && !s->failed) {
            struct mcs_ascii_resp item;
            const char *p = mcs_buf_head(&s->resp);
            if (mcs_ascii_resp_parse(p, avail, UINT32_MAX, &item) == MCS_RESP_OK && item.kind == MCS_RESP_VALUE
                && item.key_len == len && memcmp(p + item.key_off, r->keys + off, len) == 0) {
                if (mcs_buf_append(&r->out, p, item.len) != 0) {
                    r->oom = true;
                    break;
                }
                mcs_buf_consume(&s->resp, item.len);   /* moved within r: held unchanged */
                r->hits++;
                if (e->failover) {
                    mcs_avail_merged(e, r, r->keys + off, len, s);
                }
            }
        }
        r->key_sub[r->merge_next] = NULL;
        r->merge_next++;
        r->merge_pos = pos;
    }
}

void
mcs_request_finish(struct mcs_engine *e, struct mcs_request *r)
{
    if (r->kind != MCS_REQ_CLIENT) {
        mcs_request_free(e, r);
        return;
    }
    if (r->proto == MCS_PROTO_BINARY) {
        if (mcs_cmd_route(r->cmd) == MCS_ROUTE_ALL && r->hits == 0) {
            mcs_bin_failed(e, r, 0);   /* no server answered */
        } else if (r->cmd == MCS_CMD_STATS && !r->oom) {
            /* a forwarded stats group, asked in text: its packets */
            struct mcs_buf text = r->out;
            r->out = (struct mcs_buf){ 0 };
            mcs_bin_stats_packets(r, &text);
            mcs_buf_free(&text);
        }
    } else if (mcs_cmd_route(r->cmd) == MCS_ROUTE_KEYS) {
        if (r->merge) {
            request_merge(e, r, true);
        }
        if (!r->oom && mcs_buf_append(&r->out, "END\r\n", 5) != 0) {
            r->oom = true;
        }
    } else if (mcs_cmd_route(r->cmd) == MCS_ROUTE_ALL && mcs_buf_len(&r->out) == 0) {
        mcs_buf_append(&r->out, reply_all_down, sizeof(reply_all_down) - 1);   /* nobody answered */
        e->stats.server_errors++;
    }
    if (r->oom) {
        /* Whole items so far, then memcached's own answer to a reply it cannot build
         * (binary: status 0x0082); the connection closes after it (client_advance). */
        if (r->proto == MCS_PROTO_BINARY) {
            mcs_buf_reset(&r->out);
            mcs_bin_put_error(&r->out, r->bin_opcode, MCS_BIN_STATUS_ENOMEM, r->bin_opaque);
        } else {
            if (mcs_cmd_route(r->cmd) != MCS_ROUTE_KEYS || r->is_meta) {
                mcs_buf_reset(&r->out);
            }
            mcs_buf_append(&r->out, reply_oom, sizeof(reply_oom) - 1);
        }
        e->stats.server_errors++;
    }
    r->done = true;
    if (r->client != NULL) {
        mcs_client_advance(e, r->client);
    } else {
        mcs_request_free(e, r);
    }
}

/* A keyless single-answer request (version) moves on to the next server that
 * is not known to be down. Returns true if it was sent again. */
static bool
request_try_next_server(struct mcs_engine *e, struct mcs_sub *sub)
{
    struct mcs_request *r = sub->req;
    for (uint32_t s = sub->server + 1; s < e->router.nservers; s++) {
        if (mcs_router_usable(&e->router, s, e->now_ms)) {
            struct mcs_buf line = { 0 };
            const char *name = mcs_cmd_name(r->cmd);
            int rc = r->proto == MCS_PROTO_BINARY ? mcs_bin_request_line(r, &line)
                                                  : mcs_buf_append(&line, name, strlen(name))
                                                        | mcs_buf_append(&line, "\r\n", 2);
            if (rc != 0) {
                mcs_buf_free(&line);
                return false;
            }
            sub->server = s;
            sub->failed = false;
            mcs_backend_send(e, sub, r->client_id, mcs_buf_head(&line), mcs_buf_len(&line), NULL, 0);
            mcs_buf_free(&line);
            return true;
        }
    }
    return false;
}

void
mcs_request_sub_done(struct mcs_engine *e, struct mcs_sub *sub)
{
    struct mcs_request *r = sub->req;
    if ((e->failover || r->kind != MCS_REQ_CLIENT) && mcs_avail_sub_done(e, sub)) {
        return;
    }
    if (sub->failed && mcs_cmd_route(r->cmd) == MCS_ROUTE_ANY && request_try_next_server(e, sub)) {
        return;
    }
    if (r->proto == MCS_PROTO_BINARY || r->is_meta) {
        if (sub->failed && r->is_meta) {
            mcs_meta_failed(e, r, sub->server);
        } else if (sub->failed) {
            mcs_bin_failed(e, r, sub->server);
        }
        if (--r->pending == 0) {
            mcs_request_finish(e, r);
        }
        return;
    }
    if (sub->failed && (mcs_cmd_route(r->cmd) == MCS_ROUTE_ANY || r->cmd == MCS_CMD_STATS)) {
        mcs_buf_reset(&r->out);
        mcs_buf_append(&r->out, reply_all_down, sizeof(reply_all_down) - 1);
        e->stats.server_errors++;
        sub->failed = false;
    }
    if (sub->failed) {
        enum mcs_cmd_route route = mcs_cmd_route(r->cmd);
        if (route == MCS_ROUTE_KEY || route == MCS_ROUTE_ALL) {
            char line[MCS_HOST_MAX + 96];
            int n = snprintf(line, sizeof(line), "SERVER_ERROR mcshim: server %s unavailable\r\n",
                             e->router.servers[sub->server].label);
            if (route == MCS_ROUTE_ALL && r->all_error) {
                n = 0;
            } else if (route == MCS_ROUTE_ALL) {
                mcs_buf_reset(&r->out);
                r->all_error = true;
            }
            if (n > 0) {
                mcs_buf_append(&r->out, line, (size_t)n);
            }
            e->stats.server_errors++;
        }
    }
    if (--r->pending == 0) {
        mcs_request_finish(e, r);
    } else if (r->merge) {
        mcs_request_stream(e, r);   /* keys this sub missed let the next ones through */
    }
}

/* Sends sub to its server, or fails it at once if the server is down. */
void
mcs_sub_send(struct mcs_engine *e, struct mcs_client *c, struct mcs_sub *sub, const char *p, size_t n)
{
    sub_send(e, c, sub, p, n, NULL, 0);
}

static void
sub_send(struct mcs_engine *e, struct mcs_client *c, struct mcs_sub *sub, const char *a, size_t alen,
         const char *b, size_t blen)
{
    sub->req->pending++;
    if (!mcs_router_usable(&e->router, sub->server, e->now_ms)) {
        e->router.servers[sub->server].stats.fast_fails++;
        sub->failed = true;
        mcs_request_sub_done(e, sub);
        return;
    }
    mcs_backend_send(e, sub, c->id, a, alen, b, blen);
}

/* Sends "<cmd> [<exptime>] <keys of sub>\r\n" to sub's server: the keys of a
 * merged retrieval that key_sub assigns to sub, in request order. */
void
mcs_request_send_keys(struct mcs_engine *e, struct mcs_request *r, struct mcs_sub *sub)
{
    struct mcs_buf line = { 0 };
    const char *name = mcs_cmd_name(r->cmd);
    int rc = mcs_buf_append(&line, name, strlen(name));
    if (r->args_len > 0) {
        rc |= mcs_buf_append(&line, " ", 1) | mcs_buf_append(&line, r->args, r->args_len);
    }
    uint32_t pos = 0, off, len;
    for (uint32_t i = 0; i < r->nkeys && mcs_ascii_next_token(r->keys, &pos, r->keys_len, &off, &len); i++) {
        if (r->key_sub[i] == sub) {
            rc |= mcs_buf_append(&line, " ", 1) | mcs_buf_append(&line, r->keys + off, len);
        }
    }
    rc |= mcs_buf_append(&line, "\r\n", 2);
    r->pending++;
    if (rc != 0) {
        sub->failed = true;
        mcs_request_sub_done(e, sub);
    } else {
        mcs_backend_send(e, sub, r->client_id, mcs_buf_head(&line), mcs_buf_len(&line), NULL, 0);
    }
    mcs_buf_free(&line);
}

/* Pending counts start at one extra so no sub can finish the request while it
 * is still being sent; this drops that hold. */
static void
request_release(struct mcs_engine *e, struct mcs_request *r)
{
    if (--r->pending == 0) {
        mcs_request_finish(e, r);
    }
}

static void
dispatch_key(struct mcs_engine *e, struct mcs_client *c, const char *buf, const struct mcs_ascii_req *q)
{
    struct mcs_request *r = mcs_request_new(e, c, q->cmd, 1, q->noreply);
    if (r == NULL) {
        c->closing = true;
        return;
    }
    r->pending = 1;
    struct mcs_sub *sub = &r->subs[0];
    sub->server = mcs_router_server_for_key(&e->router, buf + q->key_off, q->key_len);
    if (q->noreply_len > 0) {
        /* line without " noreply", then the rest (terminator and data block) */
        sub_send(e, c, sub, buf, q->noreply_off, buf + q->noreply_off + q->noreply_len,
                 q->len - q->noreply_off - q->noreply_len);
    } else {
        sub_send(e, c, sub, buf, q->len, NULL, 0);
    }
    request_release(e, r);
}

static void
dispatch_keys(struct mcs_engine *e, struct mcs_client *c, const char *buf, const struct mcs_ascii_req *q)
{
    uint32_t n = q->nkeys, pos, off, len, i;
    uint32_t small[32];   /* most gets have few keys: no allocation for them */
    uint32_t *key_server = n <= 32 ? small : mcs_malloc(n * sizeof(*key_server));
    if (key_server == NULL) {
        c->closing = true;
        return;
    }
    bool one_server = true;
    for (pos = q->key_off, i = 0; i < n && mcs_ascii_next_token(buf, &pos, q->keys_end, &off, &len); i++) {
        key_server[i] = mcs_router_server_for_key(&e->router, buf + off, len);
        one_server = one_server && key_server[i] == key_server[0];
    }
    if (one_server) {
        struct mcs_request *r = mcs_request_new(e, c, q->cmd, 1, false);
        if (r == NULL) {
            if (key_server != small) {
                mcs_free(key_server);
            }
            c->closing = true;
            return;
        }
        r->nkeys = n;
        r->pending = 1;
        r->subs[0].server = key_server[0];
        if (key_server != small) {
            mcs_free(key_server);
        }
        /* the keys asked, to check every VALUE the server sends against */
        r->keys_len = q->keys_end - q->key_off;
        r->keys = mcs_malloc(r->keys_len + 1);
        if (r->keys == NULL) {
            r->oom = true;
            mcs_request_finish(e, r);
            return;
        }
        memcpy(r->keys, buf + q->key_off, r->keys_len);
        sub_send(e, c, &r->subs[0], buf, q->line_len, NULL, 0);
        request_release(e, r);
        return;
    }

    /* Several servers: one sub per server, in order of first appearance. */
    uint32_t nsrv = (uint32_t)e->router.nservers, nsubs = 0;
    uint32_t *sub_of_server = mcs_malloc(nsrv * sizeof(*sub_of_server));
    uint32_t *key_sub = mcs_malloc(n * sizeof(*key_sub));
    struct mcs_sub **key_subp = mcs_malloc(n * sizeof(*key_subp));
    char *keys = mcs_malloc(q->keys_end - q->key_off + 1);
    if (sub_of_server == NULL || key_sub == NULL || key_subp == NULL || keys == NULL) {
        goto oom;
    }
    memset(sub_of_server, 0xff, nsrv * sizeof(*sub_of_server));
    for (i = 0; i < n; i++) {
        if (sub_of_server[key_server[i]] == UINT32_MAX) {
            sub_of_server[key_server[i]] = nsubs++;
        }
        key_sub[i] = sub_of_server[key_server[i]];
    }
    struct mcs_request *r = mcs_request_new(e, c, q->cmd, nsubs, false);
    if (r == NULL) {
        goto oom;
    }
    r->nkeys = n;
    r->keys_len = q->keys_end - q->key_off;
    memcpy(keys, buf + q->key_off, r->keys_len);
    r->keys = keys;
    r->merge = true;
    for (i = 0; i < n; i++) {
        key_subp[i] = &r->subs[key_sub[i]];
    }
    r->key_sub = key_subp;
    key_subp = NULL;
    r->pending = 1;
    for (uint32_t s = 0; s < nsrv; s++) {
        if (sub_of_server[s] != UINT32_MAX) {
            r->subs[sub_of_server[s]].server = s;
        }
    }
    /* Build "<cmd> [<exptime>] k1 k2 ...\r\n" for each server. */
    struct mcs_buf line = { 0 };
    const char *name = mcs_cmd_name(q->cmd);
    for (uint32_t s = 0; s < nsubs; s++) {
        mcs_buf_reset(&line);
        mcs_buf_append(&line, name, strlen(name));
        if (q->args_len > 0) {
            mcs_buf_append(&line, " ", 1);
            mcs_buf_append(&line, buf + q->args_off, q->args_len);
        }
        for (pos = 0, i = 0; i < n && mcs_ascii_next_token(r->keys, &pos, r->keys_len, &off, &len); i++) {
            if (key_sub[i] == s) {
                mcs_buf_append(&line, " ", 1);
                mcs_buf_append(&line, r->keys + off, len);
            }
        }
        mcs_buf_append(&line, "\r\n", 2);
        sub_send(e, c, &r->subs[s], mcs_buf_head(&line), mcs_buf_len(&line), NULL, 0);
    }
    mcs_buf_free(&line);
    mcs_free(sub_of_server);
    mcs_free(key_sub);
    if (key_server != small) {
        mcs_free(key_server);
    }
    request_release(e, r);
    return;

oom:
    mcs_free(sub_of_server);
    mcs_free(key_sub);
    mcs_free(key_subp);
    mcs_free(keys);
    if (key_server != small) {
        mcs_free(key_server);
    }
    c->closing = true;
}

static void
dispatch_broadcast(struct mcs_engine *e, struct mcs_client *c, const char *buf, const struct mcs_ascii_req *q)
{
    bool all = mcs_cmd_route(q->cmd) == MCS_ROUTE_ALL;
    uint32_t nsubs = all ? (uint32_t)e->router.nservers : 1;
    struct mcs_request *r = mcs_request_new(e, c, q->cmd, nsubs, q->noreply);
    if (r == NULL) {
        c->closing = true;
        return;
    }
    r->pending = 1;
    if (!all) {
        /* One answer from the first server that is usable. */
        uint32_t s;
        for (s = 0; s < e->router.nservers && !mcs_router_usable(&e->router, s, e->now_ms); s++) {
        }
        if (s == e->router.nservers) {
            mcs_buf_append(&r->out, reply_all_down, sizeof(reply_all_down) - 1);
            request_release(e, r);
            return;
        }
        r->subs[0].server = s;
    }
    for (uint32_t s = 0; s < nsubs; s++) {
        if (all) {
            r->subs[s].server = s;
        }
        if (q->noreply_len > 0) {
            sub_send(e, c, &r->subs[s], buf, q->noreply_off, buf + q->eol_off, q->line_len - q->eol_off);
        } else {
            sub_send(e, c, &r->subs[s], buf, q->line_len, NULL, 0);
        }
    }
    if (q->cmd == MCS_CMD_FLUSH_ALL) {
        e->stats.cmd_flush++;
    }
    request_release(e, r);
}

/* Builds the shim's own answer to "stats [args]" into out. */
void
mcs_stats_build(struct mcs_engine *e, const char *args, size_t args_len, struct mcs_buf *out)
{
    if (args_len == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        mcs_stats_general(out, &e->stats, e->now_ms, e->start_ms, (uint64_t)ts.tv_sec, e->pid);
    } else if (args_len == 6 && memcmp(args, "mcshim", 6) == 0) {
        mcs_stats_mcshim(out, &e->stats, &e->router, e->now_ms, e->start_ms, e->pid);
    } else if (args_len == 5 && memcmp(args, "reset", 5) == 0) {
        uint64_t curr = e->stats.curr_connections;
        memset(&e->stats, 0, sizeof(e->stats));
        e->stats.curr_connections = curr;
        for (size_t i = 0; i < e->router.nservers; i++) {
            memset(&e->router.servers[i].stats, 0, sizeof(e->router.servers[i].stats));
        }
        mcs_buf_append(out, "RESET\r\n", 7);
    } else if (args_len >= 6 && memcmp(args, "detail", 6) == 0 && (args_len == 6 || args[6] == ' ')) {
        /* memcached's per-prefix counters: the shim keeps none, so "on"/"off" are
         * accepted and the dump is empty, as on a memcached that saw no prefixes. */
        const char *sub = args + (args_len > 7 ? 7 : args_len);
        size_t sub_len = args_len > 7 ? args_len - 7 : 0;
        if ((sub_len == 2 && memcmp(sub, "on", 2) == 0) || (sub_len == 3 && memcmp(sub, "off", 3) == 0)) {
            mcs_buf_append(out, "OK\r\n", 4);
        } else if (sub_len == 4 && memcmp(sub, "dump", 4) == 0) {
            mcs_buf_append(out, "END\r\n", 5);
        } else {
            e->stats.client_errors++;
            mcs_buf_append(out, reply_detail_usage, sizeof(reply_detail_usage) - 1);
        }
    } else {
        /* Per-server views (items, slabs, sizes, conns) are not merged: ask a server directly. */
        e->stats.client_errors++;
        mcs_buf_append(out, "ERROR\r\n", 7);
    }
}

/* "stats settings" is the same on every server of a pool (they run with the
 * same options): it is asked of the first usable server, over a text connection
 * whatever the client speaks, and its STAT lines are passed on. */
bool
mcs_stats_forwarded(const char *args, size_t args_len)
{
    return args_len == 8 && memcmp(args, "settings", 8) == 0;
}

void
mcs_stats_forward(struct mcs_engine *e, struct mcs_client *c, struct mcs_request *r)
{
    static const char line[] = "stats settings\r\n";
    uint32_t s = 0;
    while (s + 1 < e->router.nservers && !mcs_router_usable(&e->router, s, e->now_ms)) {
        s++;
    }
    r->subs[0].server = s;
    r->pending = 1;
    sub_send(e, c, &r->subs[0], line, sizeof(line) - 1, NULL, 0);
    request_release(e, r);
}

/* Stats describe everything before them: with replies still pending, the
 * answer is built when the request reaches the head of the pipeline
 * (client_advance). */
static void
dispatch_stats(struct mcs_engine *e, struct mcs_client *c, const char *buf, const struct mcs_ascii_req *q)
{
    if (mcs_stats_forwarded(buf + q->args_off, q->args_len)) {
        struct mcs_request *r = mcs_request_new(e, c, MCS_CMD_STATS, 1, false);
        if (r == NULL) {
            c->closing = true;
            return;
        }
        mcs_stats_forward(e, c, r);
        return;
    }
    if (c->head == NULL) {
        struct mcs_buf out = { 0 };
        mcs_stats_build(e, buf + q->args_off, q->args_len, &out);
        mcs_client_local_reply(e, c, mcs_buf_head(&out), mcs_buf_len(&out));
        mcs_buf_free(&out);
        return;
    }
    struct mcs_request *r = mcs_request_new(e, c, MCS_CMD_STATS, 0, false);
    if (r == NULL || (q->args_len > 0 && (r->keys = mcs_malloc(q->args_len)) == NULL)) {
        c->closing = true;
        return;
    }
    if (q->args_len > 0) {
        memcpy(r->keys, buf + q->args_off, q->args_len);
    }
    r->keys_len = q->args_len;
}

static void
dispatch(struct mcs_engine *e, struct mcs_client *c, const char *buf, const struct mcs_ascii_req *q)
{
    e->stats.requests++;
    e->stats.cmd_set += mcs_cmd_has_data(q->cmd);
    e->stats.cmd_touch += q->cmd == MCS_CMD_TOUCH;
    switch (mcs_cmd_route(q->cmd)) {
    case MCS_ROUTE_KEY:
        if (e->failover) {
            mcs_avail_dispatch_key(e, c, buf, q);
        } else {
            dispatch_key(e, c, buf, q);
        }
        break;
    case MCS_ROUTE_KEYS:
        if (e->failover) {
            mcs_avail_dispatch_keys(e, c, buf, q);
        } else {
            dispatch_keys(e, c, buf, q);
        }
        break;
    case MCS_ROUTE_ANY:
    case MCS_ROUTE_ALL:
        dispatch_broadcast(e, c, buf, q);
        break;
    case MCS_ROUTE_LOCAL:
        if (q->cmd == MCS_CMD_QUIT) {
            c->closing = true;
        } else {
            dispatch_stats(e, c, buf, q);
        }
        break;
    }
}

/* The protocol is told by the first byte, as memcached does: 0x80 is binary,
 * anything else text. */
static void
client_detect(struct mcs_client *c)
{
    if (!c->started && mcs_buf_len(&c->in) > 0) {
        c->started = true;
        c->proto = (unsigned char)mcs_buf_head(&c->in)[0] == MCS_BIN_MAGIC_REQ ? MCS_PROTO_BINARY : MCS_PROTO_TEXT;
    }
}

/* Parses and dispatches one request of c's protocol. Returns false when more
 * bytes are needed. */
static bool
client_step(struct mcs_engine *e, struct mcs_client *c, const char *buf, size_t len)
{
    if (c->proto == MCS_PROTO_BINARY) {
        struct mcs_bin_req q;
        enum mcs_bin_result st = mcs_bin_parse(&c->bin_parser, buf, len, e->cfg->item_max, &q);
        if (st == MCS_BIN_MORE) {
            return false;
        }
        if (st == MCS_BIN_OK) {
            mcs_bin_dispatch(e, c, buf, &q);
        } else if (q.status != 0) {
            struct mcs_buf out = { 0 };
            if (q.drop_key) {
                mcs_avail_drop_key(e, c, buf + q.key_off, q.key_len);
            }
            e->stats.client_errors++;
            if (mcs_bin_put_error(&out, q.opcode, q.status, q.opaque) == 0) {
                mcs_client_local_reply(e, c, mcs_buf_head(&out), mcs_buf_len(&out));
            }
            mcs_buf_free(&out);
        }
        c->closing = c->closing || st == MCS_BIN_CLOSE;
        mcs_buf_consume(&c->in, q.len);
        return true;
    }
    /* A rejected value still being skipped belongs to the parser that rejected it. */
    bool more = false;
    if (c->meta_parser.swallow > 0 || (c->parser.swallow == 0 && mcs_meta_detect(buf, len, &more))) {
        struct mcs_meta_req mq;
        enum mcs_meta_status st = mcs_meta_parse(&c->meta_parser, buf, len, e->cfg->item_max, &mq);
        if (st == MCS_META_MORE) {
            return false;
        }
        if (st == MCS_META_OK) {
            mcs_meta_dispatch(e, c, buf, &mq);
        } else if (mq.drop_key) {
            uint32_t klen;
            const char *key = mcs_meta_route_key(&mq, buf, &klen);
            mcs_avail_drop_key(e, c, key, klen);
        }
        if (st != MCS_META_OK && mq.reply != NULL) {
            e->stats.client_errors++;
            mcs_client_local_reply(e, c, mq.reply, strlen(mq.reply));
        }
        c->closing = c->closing || st == MCS_META_CLOSE;
        mcs_buf_consume(&c->in, mq.len);
        return true;
    }
    if (more) {
        return false;
    }
    struct mcs_ascii_req q;
    enum mcs_ascii_status st = mcs_ascii_parse(&c->parser, buf, len, e->cfg->item_max, &q);
    if (st == MCS_ASCII_MORE) {
        return false;
    }
    if (st == MCS_ASCII_OK) {
        dispatch(e, c, buf, &q);
    } else {
        if (q.drop_key) {
            mcs_avail_drop_key(e, c, buf + q.key_off, q.key_len);
        }
        if (q.reply != NULL) {
            e->stats.client_errors++;
            mcs_client_local_reply(e, c, q.reply, strlen(q.reply));
        }
        if (st == MCS_ASCII_CLOSE) {
            c->closing = true;
        }
    }
    mcs_buf_consume(&c->in, q.len);
    return true;
}

static void
client_process(struct mcs_engine *e, struct mcs_client *c)
{
    client_detect(c);
    while (!c->closing && client_may_read(e, c, false)) {
        size_t len = mcs_buf_len(&c->in);
        if (len == 0 || !client_step(e, c, mcs_buf_head(&c->in), len)) {
            break;
        }
    }
    if (!client_may_read(e, c, false) && !c->paused && !c->closing) {
        c->paused = true;
        /* Whoever pauses while the server queues are past half full waits for them to drain. */
        e->backend_blocked = e->backend_blocked || e->backend_queued >= MCS_ENGINE_MAX_QUEUED / 2;
        client_stop_reading(e, c);
    }
    if (c->closing) {
        client_stop_reading(e, c);
        mark_dirty(e, c);
    }
}

/* Returns false if the client was closed (and may be freed). */
static bool
client_read(struct mcs_engine *e, struct mcs_client *c)
{
    for (int round = 0; round < 4 && !c->closing && !c->paused; round++) {
        if (mcs_buf_reserve(&c->in, MCS_CLIENT_READ_CHUNK) != 0) {
            client_close(e, c);
            return false;
        }
        ssize_t n = recv(c->fd, c->in.data + c->in.end, c->in.cap - c->in.end, MSG_DONTWAIT);
        if (n > 0) {
            c->in.end += (size_t)n;
            client_process(e, c);
            if ((size_t)n < MCS_CLIENT_READ_CHUNK) {
                break;
            }
        } else if (n == 0) {
            /* The application closed (or shut down) its end: answer what was asked, then
             * close. Stop watching for input, which would now be ready for ever. */
            c->closing = true;
            client_stop_reading(e, c);
            mark_dirty(e, c);
            break;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;
        } else {
            client_close(e, c);
            return false;
        }
    }
    if (mcs_buf_len(&c->in) == 0) {
        mcs_buf_shrink(&c->in, 4 * MCS_CLIENT_READ_CHUNK);
    }
    return true;
}

static void
client_close(struct mcs_engine *e, struct mcs_client *c)
{
    /* Requests still owed by servers are detached; finished ones are freed. */
    struct mcs_request *r = c->head;
    while (r != NULL) {
        struct mcs_request *next = r->next;
        if (r->done || r->pending == 0) {
            mcs_request_free(e, r);   /* finished, or a deferred local answer nobody will read */
        } else {
            r->client = NULL;
            r->next = NULL;
        }
        r = next;
    }
    c->head = c->tail = NULL;
    mcs_engine_epoll(e, EPOLL_CTL_DEL, c->fd, 0, 0);
    mcs_engine_close_fd(c->fd);
    c->fd = -1;
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        e->clients = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    e->stats.curr_connections--;
    mcs_buf_free(&c->in);
    out_dropped(e, mcs_buf_len(&c->out));
    mcs_buf_free(&c->out);
    if (c->dirty) {
        /* Still on the dirty list: mcs_client_flush frees it when it gets there. */
        return;
    }
    mcs_free(c);
}

/* Called only by the engine's dirty walk, after c was taken off the list. */
void
mcs_client_flush(struct mcs_engine *e, struct mcs_client *c)
{
    c->dirty = false;
    if (c->fd < 0) {
        mcs_free(c);
        return;
    }
    while (mcs_buf_len(&c->out) > 0) {
        ssize_t n = send(c->fd, mcs_buf_head(&c->out), mcs_buf_len(&c->out), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            mcs_buf_consume(&c->out, (size_t)n);
            out_dropped(e, (size_t)n);
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            client_close(e, c);
            return;
        }
    }
    bool pending_out = mcs_buf_len(&c->out) > 0;
    if (!pending_out) {
        mcs_buf_shrink(&c->out, 4 * MCS_CLIENT_READ_CHUNK);
    }
    if (c->closing && !pending_out && c->head == NULL) {
        client_close(e, c);
        return;
    }
    bool resume = c->paused && client_may_read(e, c, true);
    if (c->paused && !resume && e->backend_queued >= MCS_ENGINE_MAX_QUEUED / 2) {
        e->backend_blocked = true;
    }
    if (resume) {
        c->paused = false;
    }
    if (resume || pending_out != c->want_write) {
        c->want_write = pending_out;
        uint32_t ev = (c->paused || c->closing ? 0 : EPOLLIN) | (pending_out ? EPOLLOUT : 0);
        mcs_engine_epoll(e, EPOLL_CTL_MOD, c->fd, ev, (uintptr_t)c);
    }
    if (resume) {
        client_process(e, c);
    }
}

/* The server queues drained: let every paused client be reconsidered. */
void
mcs_client_wake_paused(struct mcs_engine *e)
{
    e->backend_blocked = false;
    for (struct mcs_client *c = e->clients; c != NULL; c = c->next) {
        if (c->paused) {
            mark_dirty(e, c);
        }
    }
}

void
mcs_client_event(struct mcs_engine *e, struct mcs_client *c, uint32_t events)
{
    if (events & EPOLLOUT) {
        mark_dirty(e, c);
    }
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !client_read(e, c)) {
        return;
    }
    if (events & (EPOLLHUP | EPOLLERR)) {
        /* Nobody can read replies any more (and the event would repeat for ever):
         * requests already sent still reach their servers; their replies are dropped. */
        client_close(e, c);
    }
}
