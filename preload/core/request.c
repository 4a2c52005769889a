/*
 * preload/core/request.c: sessions and the life of a request (machine.h):
 * parsing an application connection's bytes, dispatch of text requests to the
 * servers their keys live on, the merge of a multi-get in the order of the
 * keys asked, completion in pipeline order, and the shim's own answers
 * (stats, errors). Binary and meta requests: request_binary.c and
 * request_meta.c; failover, copies and warm-up: avail.c.
 *
 * A multi-get whose keys live on several servers is split per server and
 * merged back in the order of the keys asked; a server that fails turns its
 * keys into misses (or, with copies, moves them: avail.c). Requests sent with
 * noreply are forwarded without it (so every server reply can be matched and
 * checked) and their replies are dropped; they do not hold up the pipeline.
 * Reply memory: a reply's bytes are held by its request until it is the
 * session's turn, then move to the session's out buffer; both are counted per
 * session and for the machine, and the driver stops reading a server whose
 * next reply could not be delivered (docs/protocol.md "Memory").
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "preload/core/alloc.h"
#include "preload/core/request.h"

static const char reply_all_down[] = "SERVER_ERROR mcshim: no server available\r\n";
static const char reply_oom[] = "SERVER_ERROR out of memory\r\n";
static const char reply_detail_usage[] = "CLIENT_ERROR usage: stats detail on|off|dump\r\n";

static void sub_send(struct mcs_machine *m, struct mcs_session *c, struct mcs_sub *sub, const char *a, size_t alen,
                     const char *b, size_t blen);

/* ---- the machine and its driver ------------------------------------------------------------- */

int
mcs_machine_init(struct mcs_machine *m, const struct mcs_config *cfg, const struct mcs_driver *drv, uint64_t now_ms,
                 long pid)
{
    memset(m, 0, sizeof(*m));
    m->cfg = cfg;
    m->drv = *drv;
    m->pid = pid;
    m->start_ms = m->now_ms = now_ms;
    m->memory_max = (size_t)cfg->memory_mb << 20;
    m->next_session_id = 1;
    if (mcs_router_init(&m->router, cfg) != 0) {
        return -1;
    }
    m->failover = m->router.copies || cfg->eject;
    m->rejoin_pending = mcs_calloc(cfg->nservers ? cfg->nservers : 1, sizeof(*m->rejoin_pending));
    if (m->rejoin_pending == NULL) {
        mcs_router_free(&m->router);
        return -1;
    }
    return 0;
}

void
mcs_machine_free(struct mcs_machine *m)
{
    mcs_free(m->rejoin_pending);
    m->rejoin_pending = NULL;
    mcs_router_free(&m->router);
}

void
mcs_machine_log(struct mcs_machine *m, enum mcs_log_level level, const char *fmt, ...)
{
    if (m->drv.log == NULL || level > m->cfg->log_level) {
        return;
    }
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    m->drv.log(m->drv.ctx, level, line);
}

/* Hands sub's request bytes to the driver: warm-up fetches are meta requests
 * and stats are asked in text, so they go on text connections whatever the
 * client speaks. */
void
mcs_machine_send(struct mcs_machine *m, struct mcs_sub *sub, uint64_t conn, const char *a, size_t alen,
                 const char *b, size_t blen)
{
    bool text = sub->meta || sub->req->cmd == MCS_CMD_STATS;
    m->router.servers[sub->server].stats.requests++;
    m->drv.send(m->drv.ctx, sub, text ? MCS_PROTO_TEXT : sub->req->proto, conn, a, alen, b, blen);
}

static void
machine_unstall(struct mcs_machine *m)
{
    m->drv.unstall(m->drv.ctx);
}

static void
mark_dirty(struct mcs_machine *m, struct mcs_session *c)
{
    m->drv.ready(m->drv.ctx, c);
}

/* ---- requests ------------------------------------------------------------------------------- */

/* Frees a request; a finished retrieval is counted here, as its reply is
 * released in request order, so a later "stats" sees exactly what came before. */
void
mcs_request_free(struct mcs_machine *m, struct mcs_request *r)
{
    if (r->kind == MCS_REQ_CLIENT && r->done && mcs_cmd_route(r->cmd) == MCS_ROUTE_KEYS) {
        m->stats.cmd_get += r->nkeys;
        m->stats.get_hits += r->hits;
        m->stats.get_misses += r->nkeys > r->hits ? r->nkeys - r->hits : 0;
    }
    size_t held = r->held;
    m->reply_held -= held <= m->reply_held ? held : m->reply_held;
    if (r->session != NULL) {
        r->session->held -= held <= r->session->held ? held : r->session->held;
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
    if (r->kind == MCS_REQ_COPY) {
        mcs_buf_free(&r->job.copy.expect);
    }
    mcs_free(r->keys);
    mcs_free(r->key_sub);
    mcs_free(r->key_try);
    mcs_free(r);
    if (held > 0) {
        machine_unstall(m);   /* the bytes it held may have been all that kept a server unread */
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
mcs_request_new(struct mcs_machine *m, struct mcs_session *c, enum mcs_cmd cmd, uint32_t nsubs, bool detached)
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
    r->conn = c != NULL ? c->id : 0;
    if (!detached && c != NULL) {
        r->session = c;
        if (c->tail) {
            c->tail->next = r;
        } else {
            c->head = r;
        }
        c->tail = r;
        c->inflight++;
    }
    return r;
}

/* Reply memory (docs/protocol.md "Memory"). A reply's bytes are held by its
 * request until it is the session's turn, then move to the session's out buffer;
 * the machine counts both, per session and in all, and the driver stops reading a
 * server whose next reply could not be delivered (engine/backend.c). */

static void
out_added(struct mcs_machine *m, size_t n)
{
    m->reply_out += n;
}

void
mcs_session_wrote(struct mcs_machine *m, struct mcs_session *s, size_t n)
{
    mcs_buf_consume(&s->out, n);
    m->reply_out -= n <= m->reply_out ? n : m->reply_out;
    machine_unstall(m);
}

/* Hard bound for one client: what it holds in its pipeline and its out buffer. */
#define MCS_SESSION_HARD_MAX (4 * MCS_SESSION_MAX_OUT)

bool
mcs_request_hold(struct mcs_machine *m, struct mcs_request *r, struct mcs_buf *to, const char *p, size_t n)
{
    struct mcs_session *c = r->session;
    if (r->oom) {
        return false;
    }
    if (c != NULL && c->held + mcs_buf_len(&c->out) + n > MCS_SESSION_HARD_MAX) {
        /* Only reachable when the client does not read while another client needs
         * the same server connection, or a multi-get cannot be released in order
         * (a warming server): answer what fits, then SERVER_ERROR, and close. */
        mcs_machine_log(m, MCS_LOG_WARN, "an application connection holds over %u MiB of unread replies: closing it",
                (unsigned)(MCS_SESSION_HARD_MAX >> 20));
        r->oom = true;
        return false;
    }
    if (mcs_buf_append(to, p, n) != 0) {
        r->oom = true;
        return false;
    }
    r->held += n;
    m->reply_held += n;
    if (c != NULL) {
        c->held += n;
    }
    return true;
}

/* Moves r's reply bytes to c's out buffer (by swapping buffers when out is
 * empty: large values are not copied). Returns false when out of memory. */
static bool
request_release_out(struct mcs_machine *m, struct mcs_request *r, struct mcs_session *c)
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
    out_added(m, n);
    size_t d = n <= r->held ? n : r->held;
    r->held -= d;
    c->held -= d <= c->held ? d : c->held;
    m->reply_held -= d <= m->reply_held ? d : m->reply_held;
    return true;
}

static void request_merge(struct mcs_machine *m, struct mcs_request *r, bool final);

/* A text retrieval at the head of its client's pipeline passes its items on as
 * they arrive (in key order), instead of holding the whole reply. */
void
mcs_request_stream(struct mcs_machine *m, struct mcs_request *r)
{
    struct mcs_session *c = r->session;
    if (c == NULL || c->head != r || r->done || r->kind != MCS_REQ_CLIENT || r->proto != MCS_PROTO_TEXT
        || r->is_meta || mcs_cmd_route(r->cmd) != MCS_ROUTE_KEYS) {
        return;
    }
    uint32_t next = r->merge_next;
    if (r->merge) {
        request_merge(m, r, false);
    }
    if (!request_release_out(m, r, c)) {
        r->oom = true;
    }
    mark_dirty(m, c);
    if (r->merge_next != next) {
        machine_unstall(m);   /* the next key's server may have been left unread until now */
    }
}

/* True if sub's reply is what r needs next to move on: r is its client's
 * turn, and sub answers it. For a multi-get: the sub of the next key to
 * release; or any sub, when the merge cannot go on before the end (every key
 * released and ENDs still owed, or the next key's server answered but is
 * warming: its misses wait for their warm-up fetches); and a warm-up fetch
 * always (its hit is released in the next key's place). */
bool
mcs_request_wants(const struct mcs_request *r, const struct mcs_sub *sub)
{
    const struct mcs_session *c = r->session;
    if (c == NULL || c->head != r) {
        return false;
    }
    if (!r->merge || r->merge_next >= r->nkeys || sub->fetch) {
        return true;
    }
    const struct mcs_sub *next = r->key_sub[r->merge_next];
    return next == sub || next == NULL || next->complete || next->failed;
}

/* Moves finished replies at the head of the pipeline to the output buffer. */

void
mcs_session_advance(struct mcs_machine *m, struct mcs_session *c)
{
    for (;;) {
        struct mcs_request *r = c->head;
        if (r != NULL && r->cmd == MCS_CMD_STATS && !r->done && r->nsubs == 0) {
            if (r->proto == MCS_PROTO_BINARY) {
                mcs_bin_stats_build(m, r);
            } else {
                mcs_stats_build(m, r->keys, r->keys_len, &r->out);
            }
            r->done = true;
        }
        if (r == NULL || !r->done) {
            break;
        }
        if (!request_release_out(m, r, c)) {
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
        mcs_request_free(m, r);
    }
    if (c->head != NULL) {
        mcs_request_stream(m, c->head);
    }
    mark_dirty(m, c);
    machine_unstall(m);
}

/* Queues bytes answered by the shim itself, after every earlier reply. */
void
mcs_session_local_reply(struct mcs_machine *m, struct mcs_session *c, const char *p, size_t n)
{
    if (c->head == NULL) {
        if (mcs_buf_append(&c->out, p, n) != 0) {
            c->closing = true;
        } else {
            out_added(m, n);
        }
        mark_dirty(m, c);
        return;
    }
    struct mcs_request *r = mcs_request_new(m, c, MCS_CMD_COUNT, 0, false);
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
request_merge(struct mcs_machine *m, struct mcs_request *r, bool final)
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
            && ((avail == 0 && !s->complete) || mcs_router_warming(&m->router, s->server, m->now_ms))) {
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
                if (m->failover) {
                    mcs_avail_merged(m, r, r->keys + off, len, s);
                }
            }
        }
        r->key_sub[r->merge_next] = NULL;
        r->merge_next++;
        r->merge_pos = pos;
    }
}

void
mcs_request_put(struct mcs_machine *m, struct mcs_request *r)
{
    if (--r->pending == 0) {
        mcs_request_finish(m, r);
    }
}

void
mcs_request_finish(struct mcs_machine *m, struct mcs_request *r)
{
    if (r->kind != MCS_REQ_CLIENT) {
        mcs_request_free(m, r);
        return;
    }
    if (r->proto == MCS_PROTO_BINARY) {
        if (mcs_cmd_route(r->cmd) == MCS_ROUTE_ALL && r->answered == 0) {
            mcs_bin_failed(m, r, 0);   /* no server answered */
        } else if (r->cmd == MCS_CMD_STATS && !r->oom) {
            /* a forwarded stats group, asked in text: its packets */
            struct mcs_buf text = r->out;
            r->out = (struct mcs_buf){ 0 };
            mcs_bin_stats_packets(r, &text);
            mcs_buf_free(&text);
        }
    } else if (mcs_cmd_route(r->cmd) == MCS_ROUTE_KEYS) {
        if (r->merge) {
            request_merge(m, r, true);
        }
        if (!r->oom && mcs_buf_append(&r->out, "END\r\n", 5) != 0) {
            r->oom = true;
        }
    } else if (mcs_cmd_route(r->cmd) == MCS_ROUTE_ALL && mcs_buf_len(&r->out) == 0) {
        mcs_buf_append(&r->out, reply_all_down, sizeof(reply_all_down) - 1);   /* nobody answered */
        m->stats.server_errors++;
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
        m->stats.server_errors++;
    }
    r->done = true;
    if (r->session != NULL) {
        mcs_session_advance(m, r->session);
    } else {
        mcs_request_free(m, r);
    }
}

uint32_t
mcs_machine_first_usable(struct mcs_machine *m, uint32_t from)
{
    uint32_t s = from;
    while (s < m->router.nservers && !mcs_router_usable(&m->router, s, m->now_ms)) {
        s++;
    }
    return s;
}

/* A keyless single-answer request (version) moves on to the next server that
 * is not known to be down. Returns true if it was sent again. */
static bool
request_try_next_server(struct mcs_machine *m, struct mcs_sub *sub)
{
    struct mcs_request *r = sub->req;
    uint32_t s = mcs_machine_first_usable(m, sub->server + 1);
    if (s == m->router.nservers) {
        return false;
    }
    struct mcs_buf line = { 0 };
    const char *name = mcs_cmd_name(r->cmd);
    int rc = r->proto == MCS_PROTO_BINARY
                 ? mcs_bin_request_line(r, &line)
                 : mcs_buf_append(&line, name, strlen(name)) | mcs_buf_append(&line, "\r\n", 2);
    if (rc == 0) {
        sub->server = s;
        sub->failed = false;
        mcs_machine_send(m, sub, r->conn, mcs_buf_head(&line), mcs_buf_len(&line), NULL, 0);
    }
    mcs_buf_free(&line);
    return rc == 0;
}

void
mcs_request_sub_done(struct mcs_machine *m, struct mcs_sub *sub)
{
    struct mcs_request *r = sub->req;
    if ((m->failover || r->kind != MCS_REQ_CLIENT) && mcs_avail_sub_done(m, sub)) {
        return;
    }
    if (sub->failed && mcs_cmd_route(r->cmd) == MCS_ROUTE_ANY && request_try_next_server(m, sub)) {
        return;
    }
    if (r->proto == MCS_PROTO_BINARY || r->is_meta) {
        if (sub->failed) {
            mcs_request_unavailable(m, r, sub->server);
        }
        mcs_request_put(m, r);
        return;
    }
    if (sub->failed && (mcs_cmd_route(r->cmd) == MCS_ROUTE_ANY || r->cmd == MCS_CMD_STATS)) {
        mcs_buf_reset(&r->out);
        mcs_buf_append(&r->out, reply_all_down, sizeof(reply_all_down) - 1);
        m->stats.server_errors++;
        sub->failed = false;
    }
    if (sub->failed) {
        enum mcs_cmd_route route = mcs_cmd_route(r->cmd);
        if (route == MCS_ROUTE_KEY) {
            mcs_request_unavailable(m, r, sub->server);
        } else if (route == MCS_ROUTE_ALL) {
            /* one answer for all servers: the first error stands */
            if (!r->all_error) {
                mcs_buf_reset(&r->out);
                r->all_error = true;
                mcs_reply_unavailable(m, sub->server, true, &r->out);
            }
            m->stats.server_errors++;
        }
    }
    bool last = r->pending == 1;
    mcs_request_put(m, r);
    if (!last && r->merge) {
        mcs_request_stream(m, r);   /* keys this sub missed let the next ones through */
    }
}

int
mcs_reply_unavailable(const struct mcs_machine *m, uint32_t server, bool line, struct mcs_buf *out)
{
    const char *label = m->router.servers[server].label;
    return (line ? mcs_buf_append(out, "SERVER_ERROR ", 13) : 0) | mcs_buf_append(out, "mcshim: server ", 15)
           | mcs_buf_append(out, label, strlen(label)) | mcs_buf_append(out, " unavailable", 12)
           | (line ? mcs_buf_append(out, "\r\n", 2) : 0);
}

void
mcs_request_unavailable(struct mcs_machine *m, struct mcs_request *r, uint32_t server)
{
    if (r->is_meta) {
        mcs_meta_failed(m, r, server);
    } else if (r->proto == MCS_PROTO_BINARY) {
        mcs_bin_failed(m, r, server);
    } else {
        mcs_reply_unavailable(m, server, true, &r->out);
        m->stats.server_errors++;
    }
}

/* Sends sub to its server, or fails it at once if the server is down. */
void
mcs_sub_send(struct mcs_machine *m, struct mcs_session *c, struct mcs_sub *sub, const char *p, size_t n)
{
    sub_send(m, c, sub, p, n, NULL, 0);
}

static void
sub_send(struct mcs_machine *m, struct mcs_session *c, struct mcs_sub *sub, const char *a, size_t alen,
         const char *b, size_t blen)
{
    mcs_request_get(sub->req);
    if (!mcs_router_usable(&m->router, sub->server, m->now_ms)) {
        m->router.servers[sub->server].stats.fast_fails++;
        sub->failed = true;
        mcs_request_sub_done(m, sub);
        return;
    }
    mcs_machine_send(m, sub, c->id, a, alen, b, blen);
}

/* Sends "<cmd> [<exptime>] <keys of sub>\r\n" to sub's server: the keys of a
 * merged retrieval that key_sub assigns to sub, in request order. */
void
mcs_request_send_keys(struct mcs_machine *m, struct mcs_request *r, struct mcs_sub *sub)
{
    struct mcs_buf line = { 0 };
    const char *name = mcs_cmd_name(r->cmd);
    int rc = mcs_buf_append(&line, name, strlen(name));
    if (r->exptime_len > 0) {
        rc |= mcs_buf_append(&line, " ", 1) | mcs_buf_append(&line, r->exptime, r->exptime_len);
    }
    uint32_t pos = 0, off, len;
    for (uint32_t i = 0; i < r->nkeys && mcs_ascii_next_token(r->keys, &pos, r->keys_len, &off, &len); i++) {
        if (r->key_sub[i] == sub) {
            rc |= mcs_buf_append(&line, " ", 1) | mcs_buf_append(&line, r->keys + off, len);
        }
    }
    rc |= mcs_buf_append(&line, "\r\n", 2);
    mcs_request_get(r);
    if (rc != 0) {
        sub->failed = true;
        mcs_request_sub_done(m, sub);
    } else {
        mcs_machine_send(m, sub, r->conn, mcs_buf_head(&line), mcs_buf_len(&line), NULL, 0);
    }
    mcs_buf_free(&line);
}

static void
dispatch_key(struct mcs_machine *m, struct mcs_session *c, const char *buf, const struct mcs_ascii_req *q)
{
    struct mcs_request *r = mcs_request_new(m, c, q->cmd, 1, q->noreply);
    if (r == NULL) {
        c->closing = true;
        return;
    }
    mcs_request_get(r);
    struct mcs_sub *sub = &r->subs[0];
    sub->server = mcs_router_server_for_key(&m->router, buf + q->key_off, q->key_len);
    if (q->noreply_len > 0) {
        /* line without " noreply", then the rest (terminator and data block) */
        sub_send(m, c, sub, buf, q->noreply_off, buf + q->noreply_off + q->noreply_len,
                 q->len - q->noreply_off - q->noreply_len);
    } else {
        sub_send(m, c, sub, buf, q->len, NULL, 0);
    }
    mcs_request_put(m, r);   /* the hold taken while sending */
}

static void
dispatch_keys(struct mcs_machine *m, struct mcs_session *c, const char *buf, const struct mcs_ascii_req *q)
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
        key_server[i] = mcs_router_server_for_key(&m->router, buf + off, len);
        one_server = one_server && key_server[i] == key_server[0];
    }
    if (one_server) {
        struct mcs_request *r = mcs_request_new(m, c, q->cmd, 1, false);
        if (r == NULL) {
            if (key_server != small) {
                mcs_free(key_server);
            }
            c->closing = true;
            return;
        }
        r->nkeys = n;
        mcs_request_get(r);
        r->subs[0].server = key_server[0];
        if (key_server != small) {
            mcs_free(key_server);
        }
        /* the keys asked, to check every VALUE the server sends against */
        r->keys_len = q->keys_end - q->key_off;
        r->keys = mcs_malloc(r->keys_len + 1);
        if (r->keys == NULL) {
            r->oom = true;
            mcs_request_finish(m, r);
            return;
        }
        memcpy(r->keys, buf + q->key_off, r->keys_len);
        sub_send(m, c, &r->subs[0], buf, q->line_len, NULL, 0);
        mcs_request_put(m, r);   /* the hold taken while sending */
        return;
    }

    /* Several servers: one sub per server, in order of first appearance. */
    uint32_t nsrv = (uint32_t)m->router.nservers, nsubs = 0;
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
    struct mcs_request *r = mcs_request_new(m, c, q->cmd, nsubs, false);
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
    mcs_request_get(r);
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
        sub_send(m, c, &r->subs[s], mcs_buf_head(&line), mcs_buf_len(&line), NULL, 0);
    }
    mcs_buf_free(&line);
    mcs_free(sub_of_server);
    mcs_free(key_sub);
    if (key_server != small) {
        mcs_free(key_server);
    }
    mcs_request_put(m, r);   /* the hold taken while sending */
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
dispatch_broadcast(struct mcs_machine *m, struct mcs_session *c, const char *buf, const struct mcs_ascii_req *q)
{
    bool all = mcs_cmd_route(q->cmd) == MCS_ROUTE_ALL;
    uint32_t nsubs = all ? (uint32_t)m->router.nservers : 1;
    struct mcs_request *r = mcs_request_new(m, c, q->cmd, nsubs, q->noreply);
    if (r == NULL) {
        c->closing = true;
        return;
    }
    mcs_request_get(r);
    if (!all) {
        /* One answer from the first server that is usable. */
        uint32_t s = mcs_machine_first_usable(m, 0);
        if (s == m->router.nservers) {
            mcs_buf_append(&r->out, reply_all_down, sizeof(reply_all_down) - 1);
            mcs_request_put(m, r);   /* the hold taken while sending */
            return;
        }
        r->subs[0].server = s;
    }
    for (uint32_t s = 0; s < nsubs; s++) {
        if (all) {
            r->subs[s].server = s;
        }
        if (q->noreply_len > 0) {
            sub_send(m, c, &r->subs[s], buf, q->noreply_off, buf + q->eol_off, q->line_len - q->eol_off);
        } else {
            sub_send(m, c, &r->subs[s], buf, q->line_len, NULL, 0);
        }
    }
    if (q->cmd == MCS_CMD_FLUSH_ALL) {
        m->stats.cmd_flush++;
    }
    mcs_request_put(m, r);   /* the hold taken while sending */
}

/* Builds the shim's own answer to "stats [args]" into out. */
void
mcs_stats_build(struct mcs_machine *m, const char *args, size_t args_len, struct mcs_buf *out)
{
    if (args_len == 0) {
        mcs_stats_general(out, &m->stats, m->now_ms, m->start_ms, m->unix_s, m->pid);
    } else if (args_len == 6 && memcmp(args, "mcshim", 6) == 0) {
        mcs_stats_mcshim(out, &m->stats, &m->router, m->now_ms, m->start_ms, m->pid);
    } else if (args_len == 5 && memcmp(args, "reset", 5) == 0) {
        uint64_t curr = m->stats.curr_connections;
        memset(&m->stats, 0, sizeof(m->stats));
        m->stats.curr_connections = curr;
        for (size_t i = 0; i < m->router.nservers; i++) {
            memset(&m->router.servers[i].stats, 0, sizeof(m->router.servers[i].stats));
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
            m->stats.client_errors++;
            mcs_buf_append(out, reply_detail_usage, sizeof(reply_detail_usage) - 1);
        }
    } else {
        /* Per-server views (items, slabs, sizes, conns) are not merged: ask a server directly. */
        m->stats.client_errors++;
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
mcs_stats_forward(struct mcs_machine *m, struct mcs_session *c, struct mcs_request *r)
{
    static const char line[] = "stats settings\r\n";
    uint32_t s = mcs_machine_first_usable(m, 0);
    r->subs[0].server = s < m->router.nservers ? s : m->router.nservers - 1;   /* none: the last fails it */
    mcs_request_get(r);
    sub_send(m, c, &r->subs[0], line, sizeof(line) - 1, NULL, 0);
    mcs_request_put(m, r);   /* the hold taken while sending */
}

/* Stats describe everything before them: with replies still pending, the
 * answer is built when the request reaches the head of the pipeline
 * (client_advance). */
static void
dispatch_stats(struct mcs_machine *m, struct mcs_session *c, const char *buf, const struct mcs_ascii_req *q)
{
    if (mcs_stats_forwarded(buf + q->args_off, q->args_len)) {
        struct mcs_request *r = mcs_request_new(m, c, MCS_CMD_STATS, 1, false);
        if (r == NULL) {
            c->closing = true;
            return;
        }
        mcs_stats_forward(m, c, r);
        return;
    }
    if (c->head == NULL) {
        struct mcs_buf out = { 0 };
        mcs_stats_build(m, buf + q->args_off, q->args_len, &out);
        mcs_session_local_reply(m, c, mcs_buf_head(&out), mcs_buf_len(&out));
        mcs_buf_free(&out);
        return;
    }
    struct mcs_request *r = mcs_request_new(m, c, MCS_CMD_STATS, 0, false);
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
dispatch(struct mcs_machine *m, struct mcs_session *c, const char *buf, const struct mcs_ascii_req *q)
{
    m->stats.requests++;
    m->stats.cmd_set += mcs_cmd_has_data(q->cmd);
    m->stats.cmd_touch += q->cmd == MCS_CMD_TOUCH;
    switch (mcs_cmd_route(q->cmd)) {
    case MCS_ROUTE_KEY:
        if (m->failover) {
            mcs_avail_dispatch_key(m, c, buf, q);
        } else {
            dispatch_key(m, c, buf, q);
        }
        break;
    case MCS_ROUTE_KEYS:
        if (m->failover) {
            mcs_avail_dispatch_keys(m, c, buf, q);
        } else {
            dispatch_keys(m, c, buf, q);
        }
        break;
    case MCS_ROUTE_ANY:
    case MCS_ROUTE_ALL:
        dispatch_broadcast(m, c, buf, q);
        break;
    case MCS_ROUTE_LOCAL:
        if (q->cmd == MCS_CMD_QUIT) {
            c->closing = true;
        } else {
            dispatch_stats(m, c, buf, q);
        }
        break;
    }
}

/* The protocol is told by the first byte, as memcached does: 0x80 is binary,
 * anything else text. */
static void
session_detect(struct mcs_session *c, const char *buf, size_t len)
{
    if (!c->started && len > 0) {
        c->started = true;
        c->proto = (unsigned char)buf[0] == MCS_BIN_MAGIC_REQ ? MCS_PROTO_BINARY : MCS_PROTO_TEXT;
    }
}

void
mcs_session_init(struct mcs_machine *m, struct mcs_session *s)
{
    memset(s, 0, sizeof(*s));
    s->id = m->next_session_id++;
    m->stats.curr_connections++;
    m->stats.total_connections++;
}

/* Parses and dispatches one request of c's protocol. Returns the bytes taken,
 * 0 when more are needed. */
size_t
mcs_session_step(struct mcs_machine *m, struct mcs_session *c, const char *buf, size_t len)
{
    session_detect(c, buf, len);
    if (len == 0) {
        return 0;
    }
    if (c->proto == MCS_PROTO_BINARY) {
        struct mcs_bin_req q;
        enum mcs_bin_result st = mcs_bin_parse(&c->bin_parser, buf, len, m->cfg->item_max, &q);
        if (st == MCS_BIN_MORE) {
            return 0;
        }
        if (st == MCS_BIN_OK) {
            mcs_bin_dispatch(m, c, buf, &q);
        } else if (q.status != 0) {
            struct mcs_buf out = { 0 };
            if (q.drop_key) {
                mcs_avail_drop_key(m, c, buf + q.key_off, q.key_len);
            }
            m->stats.client_errors++;
            if (mcs_bin_put_error(&out, q.opcode, q.status, q.opaque) == 0) {
                mcs_session_local_reply(m, c, mcs_buf_head(&out), mcs_buf_len(&out));
            }
            mcs_buf_free(&out);
        }
        c->closing = c->closing || st == MCS_BIN_CLOSE;
        return q.len;
    }
    /* A rejected value still being skipped belongs to the parser that rejected it. */
    bool more = false;
    if (c->meta_parser.swallow > 0 || (c->parser.swallow == 0 && mcs_meta_detect(buf, len, &more))) {
        struct mcs_meta_req mq;
        enum mcs_meta_status st = mcs_meta_parse(&c->meta_parser, buf, len, m->cfg->item_max, &mq);
        if (st == MCS_META_MORE) {
            return 0;
        }
        if (st == MCS_META_OK) {
            mcs_meta_dispatch(m, c, buf, &mq);
        } else if (mq.drop_key) {
            uint32_t klen;
            const char *key = mcs_meta_route_key(&mq, buf, &klen);
            mcs_avail_drop_key(m, c, key, klen);
        }
        if (st != MCS_META_OK && mq.reply != NULL) {
            m->stats.client_errors++;
            mcs_session_local_reply(m, c, mq.reply, strlen(mq.reply));
        }
        c->closing = c->closing || st == MCS_META_CLOSE;
        return mq.len;
    }
    if (more) {
        return 0;
    }
    struct mcs_ascii_req q;
    enum mcs_ascii_status st = mcs_ascii_parse(&c->parser, buf, len, m->cfg->item_max, &q);
    if (st == MCS_ASCII_MORE) {
        return 0;
    }
    if (st == MCS_ASCII_OK) {
        dispatch(m, c, buf, &q);
    } else {
        if (q.drop_key) {
            mcs_avail_drop_key(m, c, buf + q.key_off, q.key_len);
        }
        if (q.reply != NULL) {
            m->stats.client_errors++;
            mcs_session_local_reply(m, c, q.reply, strlen(q.reply));
        }
        if (st == MCS_ASCII_CLOSE) {
            c->closing = true;
        }
    }
    return q.len;
}

/* ---- replies from servers ------------------------------------------------------------------- */

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
deliver(struct mcs_machine *m, struct mcs_sub *sub, const char *p, const struct mcs_ascii_resp *item, bool *bad)
{
    struct mcs_request *r = sub->req;
    switch (mcs_cmd_route(r->cmd)) {
    case MCS_ROUTE_KEYS:
        if (item->kind == MCS_RESP_VALUE) {
            if (!value_asked(r, sub, p + item->key_off, item->key_len)) {
                *bad = true;   /* a key not asked, or more items than keys */
                return false;
            }
            if (r->session == NULL) {
                return false;   /* nobody will read it */
            }
            if (r->merge) {
                mcs_request_hold(m, r, &sub->resp, p, item->len);   /* counted when merged */
            } else if (mcs_request_hold(m, r, &r->out, p, item->len)) {
                r->hits++;
            }
            mcs_request_stream(m, r);
            return false;
        }
        if (item->kind == MCS_RESP_END) {
            return true;
        }
        if (item->kind == MCS_RESP_LINE && item->error) {
            /* An error for a retrieval: its keys miss, the rest of the answer stands. */
            m->router.servers[sub->server].stats.errors++;
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
        /* stats: the machine's own (probe, identity), or a client's forwarded "stats settings" */
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

enum mcs_resp_status
mcs_machine_reply(struct mcs_machine *m, struct mcs_sub *sub, enum mcs_proto proto, const char *p, size_t len,
                  size_t *used, bool *complete)
{
    enum mcs_resp_status st;
    bool bad = false;
    *complete = false;
    *used = 0;
    if (proto == MCS_PROTO_BINARY) {
        struct mcs_bin_resp packet;
        st = mcs_bin_resp_parse(p, len, m->cfg->item_max, &packet);
        if (st == MCS_RESP_OK) {
            *used = packet.len;
            *complete = mcs_bin_deliver(m, sub, p, &packet, &bad);
        }
    } else if (sub->meta) {
        st = mcs_meta_reply(m, sub, p, len, used);
        *complete = true;
    } else {
        struct mcs_ascii_resp item;
        st = mcs_ascii_resp_parse(p, len, m->cfg->item_max, &item);
        if (st == MCS_RESP_OK) {
            *used = item.len;
            *complete = deliver(m, sub, p, &item, &bad);
        }
    }
    return bad ? MCS_RESP_BAD : st;
}

void
mcs_machine_done(struct mcs_machine *m, struct mcs_sub *sub)
{
    sub->complete = true;
    m->router.servers[sub->server].stats.responses++;
    mcs_router_succeeded(&m->router, sub->server);
    mcs_request_sub_done(m, sub);
}

void
mcs_machine_failed(struct mcs_machine *m, struct mcs_sub *sub)
{
    sub->failed = true;
    m->router.servers[sub->server].stats.errors++;
    mcs_request_sub_done(m, sub);
}

void
mcs_machine_server_failed(struct mcs_machine *m, uint32_t server, enum mcs_failure why)
{
    mcs_avail_note(m, server, mcs_router_failed(&m->router, server, why, m->now_ms), why);
}

const struct mcs_session *
mcs_machine_waiter(const struct mcs_sub *sub)
{
    const struct mcs_request *r = sub->req;
    if (r->kind == MCS_REQ_COPY && r->job.copy.parent != NULL) {
        /* a sync write waits for its copies: its session's turn may hang on this one */
        const struct mcs_request *p = r->job.copy.parent;
        return p->session != NULL && p->session->head == p ? p->session : NULL;
    }
    return r->kind == MCS_REQ_CLIENT && mcs_request_wants(r, sub) ? r->session : NULL;
}

/* ---- sessions, continued -------------------------------------------------------------------- */

void
mcs_session_close(struct mcs_machine *m, struct mcs_session *c)
{
    /* Requests still owed by servers are detached; finished ones are freed. */
    struct mcs_request *r = c->head;
    while (r != NULL) {
        struct mcs_request *next = r->next;
        if (r->done || r->pending == 0) {
            mcs_request_free(m, r);   /* finished, or a deferred local answer nobody will read */
        } else {
            r->session = NULL;
            r->next = NULL;
        }
        r = next;
    }
    c->head = c->tail = NULL;
    m->stats.curr_connections--;
    size_t n = mcs_buf_len(&c->out);
    m->reply_out -= n <= m->reply_out ? n : m->reply_out;
    mcs_buf_free(&c->out);
    machine_unstall(m);
}
