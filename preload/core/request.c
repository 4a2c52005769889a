/*
 * preload/core/request.c: the life of a request in the machine: created by a
 * dispatch (text requests here, by route: one key, several keys split per
 * server, any or all servers; binary and meta in request_binary.c and
 * request_meta.c; with copies, failover and warm-up in avail.c), referenced
 * by each sub owed a reply (get/put), merged in the order of the keys asked
 * for a multi-get, finished with its protocol's answer, and freed when its
 * reply is released and no sub is owed.
 *
 * A multi-get whose keys live on several servers is split per server and
 * merged back in the order of the keys asked; a server that fails turns its
 * keys into misses (or, with copies, moves them: avail.c). Requests sent with
 * noreply are forwarded without it (so every server reply can be matched and
 * checked) and their replies are dropped; they do not hold up the pipeline.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "preload/core/alloc.h"
#include "preload/core/request.h"

static const char reply_all_down[] = "SERVER_ERROR mcshim: no server available\r\n";
static const char reply_oom[] = "SERVER_ERROR out of memory\r\n";

static void sub_send(struct mcs_machine *m, struct mcs_session *c, struct mcs_sub *sub, const char *a, size_t alen,
                     const char *b, size_t blen);

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
    if (r->origin != NULL) {
        if (r->oprev != NULL) {
            r->oprev->onext = r->onext;
        } else {
            r->origin->unanswered = r->onext;
        }
        if (r->onext != NULL) {
            r->onext->oprev = r->oprev;
        }
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
        mcs_machine_unstall(m);   /* the bytes it held may have been all that kept a server unread */
    }
}

/* A request with room for one sub inline (the common single-server case). */
struct request_one {
    struct mcs_request req;
    struct mcs_sub sub;
};

void
mcs_request_origin(struct mcs_request *r, struct mcs_session *c)
{
    if (c == NULL || r->origin != NULL) {
        return;
    }
    r->origin = c;
    r->oprev = NULL;
    r->onext = c->unanswered;
    if (c->unanswered != NULL) {
        c->unanswered->oprev = r;
    }
    c->unanswered = r;
}

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
    if (detached && c != NULL) {
        mcs_request_origin(r, c);
    }
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

/* Releases a multi-get's items to r->out in the order the keys were asked.
 * Each sub lists its keys in request order, so its items come in that order
 * too: a key whose item is not at the head of its sub's items missed. Before
 * the end (final false) it stops at the first key whose sub has not answered
 * that far yet, or whose server is warming (warm-up looks at the whole answer);
 * a released key is detached from its sub (key_sub NULL), so a later failover
 * or warm-up never asks for it again. */
void
mcs_request_merge(struct mcs_machine *m, struct mcs_request *r, bool final)
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
            mcs_request_merge(m, r, true);
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

void
mcs_request_dispatch(struct mcs_machine *m, struct mcs_session *c, const char *buf, const struct mcs_ascii_req *q)
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
            mcs_session_stats(m, c, buf, q);
        }
        break;
    }
}
