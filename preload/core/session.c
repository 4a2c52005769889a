/*
 * preload/core/session.c: one application connection in the request machine:
 * its protocol (told by the first byte, as memcached does), parsing one
 * request at a time and dispatching it, the pipeline that releases replies
 * strictly in request order (a text retrieval at the head streams its items as
 * they arrive), the shim's own answers (stats, errors) in their turn, and the
 * reply bytes it holds (docs/protocol.md "Memory").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "preload/core/alloc.h"
#include "preload/core/request.h"

static const char reply_detail_usage[] = "CLIENT_ERROR usage: stats detail on|off|dump\r\n";

static void
mark_dirty(struct mcs_machine *m, struct mcs_session *c)
{
    m->drv.ready(m->drv.ctx, c);
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
    mcs_machine_unstall(m);
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
        mcs_request_merge(m, r, false);
    }
    if (!request_release_out(m, r, c)) {
        r->oom = true;
    }
    mark_dirty(m, c);
    if (r->merge_next != next) {
        mcs_machine_unstall(m);   /* the next key's server may have been left unread until now */
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
    mcs_machine_unstall(m);
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
    mcs_sub_send(m, c, &r->subs[0], line, sizeof(line) - 1);
    mcs_request_put(m, r);   /* the hold taken while sending */
}

/* Stats describe everything before them: with replies still pending, the
 * answer is built when the request reaches the head of the pipeline
 * (client_advance). */
void
mcs_session_stats(struct mcs_machine *m, struct mcs_session *c, const char *buf, const struct mcs_ascii_req *q)
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
        mcs_request_dispatch(m, c, buf, &q);
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
    for (r = c->unanswered; r != NULL; r = r->onext) {
        r->origin = NULL;
    }
    c->unanswered = NULL;
    m->stats.curr_connections--;
    size_t n = mcs_buf_len(&c->out);
    m->reply_out -= n <= m->reply_out ? n : m->reply_out;
    mcs_buf_free(&c->out);
    mcs_machine_unstall(m);
}
