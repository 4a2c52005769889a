/*
 * preload/core/machine.c: the request machine's face to its driver
 * (machine.h): setting it up, handing sends to the driver, taking server
 * replies (a reply item is checked against the request it answers: nothing a
 * request did not ask for ever reaches the application), completions and
 * failures, the "server unavailable" answers, and which reply a session waits
 * for (flow control).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "preload/core/alloc.h"
#include "preload/core/request.h"

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

void
mcs_machine_unstall(struct mcs_machine *m)
{
    m->drv.unstall(m->drv.ctx);
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

bool
mcs_machine_feed(struct mcs_machine *m, struct mcs_sub **head, struct mcs_sub **tail, enum mcs_proto proto,
                 struct mcs_buf *in, uint64_t next_deadline_ms)
{
    while (mcs_buf_len(in) > 0) {
        struct mcs_sub *sub = *head;
        if (sub == NULL) {
            return false;   /* bytes nobody asked for */
        }
        size_t used = 0;
        bool complete = false;
        enum mcs_resp_status st = mcs_machine_reply(m, sub, proto, mcs_buf_head(in), mcs_buf_len(in), &used, &complete);
        if (st == MCS_RESP_MORE) {
            break;
        }
        if (st == MCS_RESP_BAD) {
            return false;
        }
        mcs_buf_consume(in, used);
        if (complete) {
            *head = sub->next;
            if (*head == NULL) {
                *tail = NULL;
            } else {
                (*head)->deadline_ms = next_deadline_ms;   /* the next reply's clock starts now */
            }
            mcs_machine_done(m, sub);   /* may queue more on this FIFO (through *tail) */
        }
    }
    return true;
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
