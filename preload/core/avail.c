/*
 * preload/core/avail.c: the request machine's availability decisions:
 * failover, copies, probes, rejoin and warm-up (docs/availability.md).
 *
 * Used when keys have somewhere else to go (MCSHIM_REPLICAS > 1, a backup
 * pool, or MCSHIM_EJECT=1); otherwise request.c's plain paths run alone.
 * - One key (set, delete, incr, ...): the request is kept and sent to the first
 *   usable server of the key's targets (router.h); if that server fails, the
 *   next one is tried, so the application sees an answer while any copy is
 *   reachable. After the answer, the other copies get what replica.h's rule
 *   says (async: the application's answer does not wait; sync: it does).
 * - Retrievals: every key goes to its first usable target; when a server
 *   fails, its keys are re-asked of their next targets. A key that misses on a
 *   warming server is fetched from a copy (`mg <key> v f t c`), returned, and
 *   added back to the warming server with its flags and remaining TTL.
 * - Servers: a timeout marks a server down at once and fails every request
 *   waiting on it, so they move on together. A down server is probed with
 *   `stats`; its pid and start time tell a restart from a cut. A server back
 *   from a cut gets the deletes it missed (or a flush_all) before it serves.
 * Writes a server missed (it was away, or failed them) are remembered by the
 * router for that rejoin.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "preload/core/alloc.h"
#include "preload/core/meta.h"
#include "preload/core/request.h"

#define MCS_REJOIN_BATCH 1024   /* replayed deletes in flight per server */

static void send_copy(struct mcs_machine *m, struct mcs_request *r, uint32_t server, enum mcs_copy_action action,
                      const char *key, size_t key_len);
static void fetch_send(struct mcs_machine *m, struct mcs_request *r, uint32_t key_index, const char *key, size_t len,
                       uint32_t from, uint32_t warming);

static bool
usable(struct mcs_machine *m, uint32_t s)
{
    return mcs_router_usable(&m->router, s, m->now_ms);
}

static struct mcs_server *
server(struct mcs_machine *m, uint32_t s)
{
    return &m->router.servers[s];
}

/* Server s did not get a write of key (away, or the write failed). A server
 * still in use is told to drop the key at once; the router remembers it either
 * way, for the server's next rejoin. */
static void
missed(struct mcs_machine *m, uint32_t s, const char *key, size_t len, bool invalidate_now)
{
    mcs_router_missed(&m->router, s, key, len);
    if (invalidate_now && usable(m, s)) {
        send_copy(m, NULL, s, MCS_COPY_DELETE, key, len);
    } else if (!usable(m, s) && mcs_router_shared(&m->router, s) && mcs_router_host_usable(&m->router, s)) {
        /* Logged after another process brought s back (its last look at the log
         * may have come before this key): s serves reads, so it drops the key now. */
        send_copy(m, NULL, s, MCS_COPY_DELETE, key, len);
    }
}

/* A request of the machine's own, with one sub for server s, not in any pipeline. */
static struct mcs_request *
own_request(struct mcs_machine *m, enum mcs_req_kind kind, enum mcs_cmd cmd, uint32_t s, uint64_t conn)
{
    struct mcs_request *r = mcs_request_new(m, NULL, cmd, 1, true);
    if (r == NULL) {
        return NULL;
    }
    r->kind = kind;
    r->conn = conn;
    r->subs[0].server = s;
    mcs_request_get(r);
    return r;
}

/* Out of memory for a client request: it answers an error in its turn (the
 * connection is then closed), or is dropped if nobody waits for it. */
static void
answer_oom(struct mcs_machine *m, struct mcs_request *r)
{
    r->cmd = MCS_CMD_COUNT;   /* answered locally: no END, no merge */
    r->merge = false;
    mcs_buf_reset(&r->out);
    mcs_buf_append(&r->out, "SERVER_ERROR out of memory\r\n", 28);
    mcs_request_finish(m, r);
}

/* ---- one key -------------------------------------------------------------------------------- */

static const char *
kept_key(const struct mcs_request *r, size_t *len)
{
    if (r->is_meta) {
        *len = r->keys_len;   /* decoded */
        return r->keys;
    }
    *len = r->q.key_len;
    return mcs_buf_head(&r->kept) + r->q.key_off;
}

/* Sends r to the first usable of its targets from index `from`; targets passed
 * over missed the write. Returns false if none is usable. */
static bool
key_send_from(struct mcs_machine *m, struct mcs_request *r, uint32_t from)
{
    size_t klen;
    const char *key = kept_key(r, &klen);
    for (uint32_t i = from; i < r->ntargets; i++) {
        uint32_t s = r->targets[i];
        if (!usable(m, s)) {
            server(m, s)->stats.fast_fails++;
            if (i + 1 < r->ntargets) {
                server(m, s)->stats.failovers++;
            }
            if (r->write) {
                missed(m, s, key, klen, false);
            }
            continue;
        }
        struct mcs_sub *sub = &r->subs[0];
        const char *p = mcs_buf_head(&r->kept);
        const struct mcs_ascii_req *q = &r->q;
        r->tried = (uint8_t)i;
        sub->server = s;
        sub->failed = false;
        mcs_request_get(r);
        if (q->noreply_len > 0) {
            mcs_machine_send(m, sub, r->conn, p, q->noreply_off, p + q->noreply_off + q->noreply_len,
                             q->len - q->noreply_off - q->noreply_len);
        } else {
            mcs_machine_send(m, sub, r->conn, p, q->len, NULL, 0);
        }
        return true;
    }
    return false;
}

void
mcs_avail_dispatch_key(struct mcs_machine *m, struct mcs_session *c, const char *buf, const struct mcs_ascii_req *q)
{
    struct mcs_request *r = mcs_request_new(m, c, q->cmd, 1, q->noreply);
    if (r == NULL || mcs_buf_append(&r->kept, buf, q->len) != 0) {
        if (r != NULL) {
            answer_oom(m, r);
        }
        c->closing = true;
        return;
    }
    r->q = *q;
    r->write = true;   /* every text command routed by one key can change data */
    mcs_avail_dispatch_kept(m, r, buf + q->key_off, q->key_len);
}

/* Sends r, whose bytes for the servers are in r->kept (key at r->q's key
 * span), to the first usable server of key's targets. */
void
mcs_avail_dispatch_kept(struct mcs_machine *m, struct mcs_request *r, const char *key, size_t key_len)
{
    r->ntargets = (uint8_t)mcs_router_targets(&m->router, key, key_len, r->targets);
    mcs_request_get(r);   /* held while sending */
    if (!key_send_from(m, r, 0)) {
        mcs_request_unavailable(m, r, r->targets[0]);
    }
    mcs_request_put(m, r);
}

/* The key's server answered: the copies after it get what the rule says. */
static void
key_copies(struct mcs_machine *m, struct mcs_request *r)
{
    enum mcs_copy_action action;
    if (r->is_meta) {
        action = mcs_meta_copy_action(r);
    } else {
        enum mcs_reply_class cls = r->proto == MCS_PROTO_BINARY
                                       ? mcs_bin_reply_class(mcs_bin_op_base(r->bin_opcode), r->bin_status)
                                       : mcs_reply_classify(mcs_buf_head(&r->out), mcs_buf_len(&r->out));
        action = mcs_copy_action(r->cmd, cls);
    }
    if (action == MCS_COPY_NONE) {
        return;
    }
    if (!m->router.copies) {
        return;   /* eject: the live-ring owner stands in for a down primary; it is not a copy */
    }
    size_t klen;
    const char *key = kept_key(r, &klen);
    for (uint32_t i = r->tried + 1u; i < r->ntargets; i++) {
        uint32_t s = r->targets[i];
        if (!usable(m, s)) {
            missed(m, s, key, klen, false);
            continue;
        }
        send_copy(m, r, s, action, key, klen);
    }
}

/* The binary packet a copy gets for action, from a binary client write r
 * (r->kept holds the request as servers get it). */
static int
copy_packet(enum mcs_copy_action action, const struct mcs_request *r, struct mcs_buf *out)
{
    struct mcs_bin_parser parser = { 0 };
    struct mcs_bin_req q;
    const char *p = mcs_buf_head(&r->kept);
    if (mcs_bin_parse(&parser, p, mcs_buf_len(&r->kept), UINT32_MAX, &q) != MCS_BIN_OK) {
        return -1;
    }
    struct mcs_bin_msg m = { .opaque = q.opaque, .key = p + q.key_off, .key_len = q.key_len };
    switch (action) {
    case MCS_COPY_SET:
        m.opcode = MCS_BIN_OP_SET;
        m.extras = p + q.extras_off;   /* flags and exptime */
        m.extras_len = q.extras_len;
        m.value = p + q.value_off;
        m.value_len = q.value_len;
        break;
    case MCS_COPY_TOUCH:
        m.opcode = MCS_BIN_OP_TOUCH;
        m.extras = p + q.extras_off;   /* touch and gat carry the exptime alone */
        m.extras_len = q.extras_len;
        break;
    case MCS_COPY_ARITH:
        m.opcode = q.base;
        m.extras = p + q.extras_off;
        m.extras_len = q.extras_len;
        break;
    default:
        return -1;
    }
    return mcs_bin_put_request(out, &m);
}

/* Sends action for key to server s. With r (a client write) and sync writes,
 * r waits for it. r == NULL: an invalidation of the machine's own. */
static void
send_copy(struct mcs_machine *m, struct mcs_request *r, uint32_t s, enum mcs_copy_action action, const char *key,
          size_t key_len)
{
    static const enum mcs_cmd cmd_of[MCS_COPY_COUNT] = {
        [MCS_COPY_SET] = MCS_CMD_SET, [MCS_COPY_DELETE] = MCS_CMD_DELETE, [MCS_COPY_TOUCH] = MCS_CMD_TOUCH,
    };
    enum mcs_cmd cmd = action == MCS_COPY_ARITH ? r->cmd : cmd_of[action];
    struct mcs_request *c = own_request(m, MCS_REQ_COPY, cmd, s, r != NULL ? r->conn : 0);
    if (c != NULL && r != NULL) {
        mcs_request_origin(c, r->session != NULL ? r->session : r->origin);
    }
    struct mcs_buf line = { 0 };
    int rc = c == NULL ? -1 : 0;
    if (rc == 0) {
        c->keys = mcs_malloc(key_len ? key_len : 1);
        rc = c->keys == NULL ? -1 : 0;
    }
    if (rc == 0) {
        memcpy(c->keys, key, key_len);
        c->keys_len = (uint32_t)key_len;
        if (r == NULL || action == MCS_COPY_DELETE) {
            rc = mcs_copy_delete_line(&line, key, key_len);
        } else if (r->is_meta) {
            c->subs[0].meta = true;
            rc = mcs_meta_copy_line(r, action, &line);
        } else if (r->proto == MCS_PROTO_BINARY) {
            c->proto = MCS_PROTO_BINARY;
            rc = copy_packet(action, r, &line);
        } else if (r->merge) {
            /* a hit of a text gat/gats: touch with the exptime it asked for */
            rc = mcs_buf_append(&line, "touch ", 6) | mcs_buf_append(&line, key, key_len) | mcs_buf_append(&line, " ", 1)
                 | mcs_buf_append(&line, r->exptime, r->exptime_len) | mcs_buf_append(&line, "\r\n", 2);
        } else {
            rc = mcs_copy_build(action, mcs_buf_head(&r->kept), &r->q, key, key_len, &line);
        }
    }
    if (rc == 0 && action == MCS_COPY_ARITH) {
        /* the primary's result, to compare with the copy's */
        struct mcs_buf *expect = &c->job.copy.expect;
        rc = r->proto == MCS_PROTO_BINARY
                 ? mcs_buf_append(expect, r->arith_value, r->has_arith_value ? sizeof(r->arith_value) : 0)
                 : mcs_buf_append(expect, mcs_buf_head(&r->out), mcs_buf_len(&r->out));
    }
    if (rc != 0) {
        if (c != NULL) {
            mcs_request_free(m, c);
        }
        mcs_buf_free(&line);
        mcs_router_missed(&m->router, s, key, key_len);
        return;
    }
    if (r != NULL && m->cfg->write == MCS_WRITE_SYNC && r->kind == MCS_REQ_CLIENT && r->ntargets > 0) {
        c->job.copy.parent = r;
        mcs_request_get(r);
    }
    if (action == MCS_COPY_DELETE) {
        m->stats.copy_invalidations++;
    } else {
        m->stats.copy_writes++;
    }
    mcs_machine_send(m, &c->subs[0], c->conn, mcs_buf_head(&line), mcs_buf_len(&line), NULL, 0);
    mcs_buf_free(&line);
}

static void
copy_done(struct mcs_machine *m, struct mcs_sub *sub)
{
    struct mcs_request *c = sub->req;
    if (sub->failed) {
        missed(m, sub->server, c->keys, c->keys_len, false);
    } else if (mcs_buf_len(&c->job.copy.expect) > 0) {
        const struct mcs_buf *expect = &c->job.copy.expect;
        /* incr/decr: a copy whose result differs from the primary's is dropped */
        const char *got = mcs_buf_head(&c->out);
        size_t n = mcs_buf_len(&c->out);
        bool counted = mcs_reply_classify(got, n) == MCS_REPLY_NUMBER;
        if (c->proto == MCS_PROTO_BINARY) {
            struct mcs_bin_resp resp;
            counted = mcs_bin_resp_parse(got, n, UINT32_MAX, &resp) == MCS_RESP_OK && resp.status == 0
                      && resp.value_len == 8;
            got += counted ? resp.value_off : 0;
            n = counted ? 8 : 0;
        }
        if (counted && (n != mcs_buf_len(expect) || memcmp(got, mcs_buf_head(expect), n) != 0)) {
            send_copy(m, NULL, sub->server, MCS_COPY_DELETE, c->keys, c->keys_len);
        }
    }
    struct mcs_request *parent = c->job.copy.parent;
    if (parent != NULL) {
        mcs_request_put(m, parent);
    }
    mcs_request_put(m, c);
}

/* A set the shim refused as too large: memcached drops the key's old value in
 * that case (a stale read is worse than a miss), so every server holding key
 * drops it too. The deletes travel on the client's own connections (of its
 * protocol), ahead of its later requests; a server away records the key for
 * its rejoin. */
void
mcs_avail_drop_key(struct mcs_machine *m, struct mcs_session *c, const char *key, size_t len)
{
    uint32_t t[MCS_MAX_TARGETS];
    uint32_t n = mcs_router_targets(&m->router, key, len, t);
    for (uint32_t i = 0; i < n; i++) {
        struct mcs_buf line = { 0 };
        struct mcs_request *d = usable(m, t[i]) ? own_request(m, MCS_REQ_COPY, MCS_CMD_DELETE, t[i], c->id) : NULL;
        if (d != NULL) {
            mcs_request_origin(d, c);
        }
        int rc = d == NULL || (d->keys = mcs_malloc(len ? len : 1)) == NULL ? -1 : 0;
        if (rc == 0 && c->proto == MCS_PROTO_BINARY) {
            struct mcs_bin_msg msg = { .opcode = MCS_BIN_OP_DELETE, .key = key, .key_len = (uint16_t)len };
            d->proto = MCS_PROTO_BINARY;
            rc = mcs_bin_put_request(&line, &msg);
        } else if (rc == 0) {
            rc = mcs_copy_delete_line(&line, key, len);
        }
        if (rc != 0) {
            if (d != NULL) {
                mcs_request_free(m, d);
            }
            mcs_buf_free(&line);
            mcs_router_missed(&m->router, t[i], key, len);
            continue;
        }
        memcpy(d->keys, key, len);
        d->keys_len = (uint32_t)len;
        mcs_machine_send(m, &d->subs[0], c->id, mcs_buf_head(&line), mcs_buf_len(&line), NULL, 0);
        mcs_buf_free(&line);
    }
}

/* ---- retrievals ----------------------------------------------------------------------------- */

/* The first usable target of key from index `from`, or -1. */
static int
first_usable(struct mcs_machine *m, const char *key, size_t len, uint32_t from, uint32_t *server_out)
{
    uint32_t t[MCS_MAX_TARGETS];
    uint32_t n = mcs_router_targets(&m->router, key, len, t);
    for (uint32_t i = from; i < n; i++) {
        if (usable(m, t[i])) {
            *server_out = t[i];
            return (int)i;
        }
        if (i + 1 < n) {
            server(m, t[i])->stats.failovers++;
        }
    }
    return -1;
}

/* A sub added after dispatch (failover or warm-up), owned by r. */
static struct mcs_sub *
child_new(struct mcs_request *r, uint32_t s)
{
    struct mcs_sub *c = mcs_calloc(1, sizeof(*c));
    if (c == NULL) {
        return NULL;
    }
    c->req = r;
    c->server = s;
    c->next_child = r->children;
    r->children = c;
    return c;
}

/* Sends the keys of sub `from` (key_sub == from) to their next usable targets
 * (key_try: the index in their targets to try next), one new sub per server.
 * Keys with nowhere to go miss. Returns how many keys found a new server. */
static uint32_t
keys_move(struct mcs_machine *m, struct mcs_request *r, struct mcs_sub *from)
{
    struct mcs_sub *made[MCS_MAX_SERVERS > 64 ? 64 : MCS_MAX_SERVERS];
    uint32_t nmade = 0, pos = 0, off, len, moved = 0;
    for (uint32_t i = 0; i < r->nkeys && mcs_ascii_next_token(r->keys, &pos, r->keys_len, &off, &len); i++) {
        if (r->key_sub[i] != from) {
            continue;
        }
        uint32_t s;
        int at = first_usable(m, r->keys + off, len, r->key_try[i], &s);
        r->key_sub[i] = NULL;
        if (at < 0) {
            continue;
        }
        r->key_try[i] = (uint8_t)(at + 1);
        struct mcs_sub *to = NULL;
        for (uint32_t k = 0; k < nmade; k++) {
            if (made[k]->server == s) {
                to = made[k];
            }
        }
        if (to == NULL && nmade < sizeof(made) / sizeof(made[0])) {
            to = made[nmade] = child_new(r, s);
            nmade += to != NULL;
        }
        r->key_sub[i] = to;
        moved += to != NULL;
    }
    for (uint32_t k = 0; k < nmade; k++) {
        mcs_request_send_keys(m, r, made[k]);
    }
    return moved;
}

void
mcs_avail_dispatch_keys(struct mcs_machine *m, struct mcs_session *c, const char *buf, const struct mcs_ascii_req *q)
{
    uint32_t n = q->nkeys, pos = q->key_off, off, len;
    struct mcs_request *r = mcs_request_new(m, c, q->cmd, 0, false);
    if (r == NULL) {
        c->closing = true;
        return;
    }
    r->conn = c->id;
    r->merge = true;
    r->nkeys = n;
    r->keys_len = q->keys_end - q->key_off;
    r->keys = mcs_malloc(r->keys_len + 1);
    r->key_sub = mcs_calloc(n, sizeof(*r->key_sub));
    r->key_try = mcs_calloc(n, sizeof(*r->key_try));
    if (r->keys == NULL || r->key_sub == NULL || r->key_try == NULL || q->args_len > sizeof(r->exptime)) {
        answer_oom(m, r);
        c->closing = true;
        return;
    }
    memcpy(r->keys, buf + q->key_off, r->keys_len);
    memcpy(r->exptime, buf + q->args_off, q->args_len);
    r->exptime_len = (uint8_t)q->args_len;
    mcs_request_get(r);
    /* Each key to its first usable target, grouped by server through a fake failed sub. */
    struct mcs_sub start = { .req = r };
    for (uint32_t i = 0; i < n && mcs_ascii_next_token(buf, &pos, q->keys_end, &off, &len); i++) {
        r->key_sub[i] = &start;   /* key_try[i] = 0: start from the primary */
    }
    keys_move(m, r, &start);
    mcs_request_put(m, r);
}

/* A warming server answered a retrieval: its misses are fetched from a copy. */
static void
keys_warm(struct mcs_machine *m, struct mcs_request *r, struct mcs_sub *sub)
{
    size_t avail = mcs_buf_len(&sub->resp);
    const char *p = avail > 0 ? mcs_buf_head(&sub->resp) : NULL;   /* no data yet: NULL + 0 is UB */
    uint32_t pos = 0, off, len;
    for (uint32_t i = 0; i < r->nkeys && mcs_ascii_next_token(r->keys, &pos, r->keys_len, &off, &len); i++) {
        if (r->key_sub[i] != sub) {
            continue;
        }
        struct mcs_ascii_resp item;
        if (avail > 0 && mcs_ascii_resp_parse(p, avail, UINT32_MAX, &item) == MCS_RESP_OK
            && item.kind == MCS_RESP_VALUE && item.key_len == len && memcmp(p + item.key_off, r->keys + off, len) == 0) {
            p += item.len;   /* a hit */
            avail -= item.len;
            continue;
        }
        fetch_send(m, r, i, r->keys + off, len, r->key_try[i], sub->server);
    }
}

/* A retrieval's key was found on server from->server: gat/gats touch its copies too. */
void
mcs_avail_merged(struct mcs_machine *m, struct mcs_request *r, const char *key, uint32_t len, const struct mcs_sub *from)
{
    if (r->cmd != MCS_CMD_GAT && r->cmd != MCS_CMD_GATS) {
        return;
    }
    uint32_t t[MCS_MAX_TARGETS];
    uint32_t n = mcs_router_targets(&m->router, key, len, t);
    for (uint32_t i = 0; i < n && m->router.copies; i++) {
        if (t[i] != from->server && !(from->fetch && t[i] == from->fill_server) && usable(m, t[i])) {
            send_copy(m, r, t[i], MCS_COPY_TOUCH, key, len);
        }
    }
}

/* Parses a number token; false if it is not one. */
static bool
number(const char *p, size_t len, int64_t *out)
{
    bool neg = len > 0 && p[0] == '-';
    size_t i = neg;
    uint64_t v = 0;
    if (i == len || len - i > 19) {
        return false;
    }
    for (; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return false;
        }
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    *out = neg ? -(int64_t)v : (int64_t)v;
    return true;
}

/* The key a warm-up fetch is for: the request's one key (binary), or key
 * number sub->key of a text retrieval. */
static const char *
fetch_key(const struct mcs_sub *sub, size_t *len)
{
    const struct mcs_request *r = sub->req;
    if (r->ntargets > 0) {
        return kept_key(r, len);
    }
    uint32_t pos = 0, off = 0, klen = 0;
    for (uint32_t i = 0; i <= sub->key && mcs_ascii_next_token(r->keys, &pos, r->keys_len, &off, &klen); i++) {
    }
    *len = klen;
    return r->keys + off;
}

/* The exptime a gat asked for: text token, or the binary request's extras. */
static int64_t
gat_exptime(const struct mcs_request *r)
{
    int64_t exptime = 0;
    if (r->proto == MCS_PROTO_BINARY) {
        const unsigned char *x = (const unsigned char *)mcs_buf_head(&r->kept) + MCS_BIN_HEADER_LEN;
        exptime = (int64_t)((uint32_t)x[0] << 24 | (uint32_t)x[1] << 16 | (uint32_t)x[2] << 8 | x[3]);
    } else {
        number(r->exptime, r->exptime_len, &exptime);
    }
    return exptime;
}

static bool
is_gat(const struct mcs_request *r)
{
    return r->cmd == MCS_CMD_GAT || r->cmd == MCS_CMD_GATS;
}

/* Asks the first usable server of key's targets from index `from` for the
 * item (`mg <key> v f t c`), for warming server `warming`. */
static void
fetch_send(struct mcs_machine *m, struct mcs_request *r, uint32_t key_index, const char *key, size_t len,
           uint32_t from, uint32_t warming)
{
    uint32_t s;
    if (first_usable(m, key, len, from, &s) < 0) {
        return;
    }
    struct mcs_sub *f = child_new(r, s);
    struct mcs_buf line = { 0 };
    if (f == NULL) {
        return;
    }
    f->meta = f->fetch = true;
    f->key = key_index;
    f->fill_server = warming;
    /* value, client flags, remaining TTL, CAS; a gat's new TTL too. A key the text
     * protocol cannot carry (a binary client's) goes base64, with the b flag. */
    char flags[48] = "v f t c";
    if (is_gat(r)) {
        snprintf(flags, sizeof(flags), "v f t c T%" PRId64, gat_exptime(r));
    }
    int rc = mcs_meta_build(&line, MCS_META_MG, key, len, !mcs_copy_text_safe(key, len), flags, NULL, 0);
    if (rc == 0) {
        mcs_request_get(r);
        mcs_machine_send(m, f, r->conn, mcs_buf_head(&line), mcs_buf_len(&line), NULL, 0);
    }
    mcs_buf_free(&line);
}

/* A warm-up fetch found the item on a copy: it becomes the client's answer,
 * and is added back to the warming server with its flags and remaining TTL
 * (`add`: a newer value written meanwhile is never overwritten). */
static void
warm_hit(struct mcs_machine *m, struct mcs_sub *sub, const char *data, uint32_t size, uint32_t flags, int64_t ttl,
         uint64_t cas)
{
    struct mcs_request *r = sub->req;
    size_t klen;
    const char *key = fetch_key(sub, &klen);
    if (r->is_meta) {
        /* the client's answer comes from its own request, re-sent to the copy (meta_warm) */
    } else if (r->proto == MCS_PROTO_BINARY) {
        uint8_t base = mcs_bin_op_base(r->bin_opcode);
        bool with_key = base == MCS_BIN_OP_GETK || base == MCS_BIN_OP_GATK;
        unsigned char x[4] = { (unsigned char)(flags >> 24), (unsigned char)(flags >> 16), (unsigned char)(flags >> 8),
                               (unsigned char)flags };
        struct mcs_bin_msg msg = { .opcode = r->bin_opcode, .opaque = r->bin_opaque, .cas = cas,
                                 .extras = (const char *)x, .extras_len = 4, .key = with_key ? key : NULL,
                                 .key_len = with_key ? (uint16_t)klen : 0, .value = data, .value_len = size };
        mcs_buf_reset(&r->out);
        if (mcs_bin_put_response(&r->out, &msg) != 0) {
            return;
        }
        r->bin_status = 0;
        r->hits = 1;
    } else {
        char head[MCS_ASCII_KEY_MAX + 96];
        bool with_cas = r->cmd == MCS_CMD_GETS || r->cmd == MCS_CMD_GATS;
        int n = snprintf(head, sizeof(head), with_cas ? "VALUE %.*s %" PRIu32 " %" PRIu32 " %" PRIu64 "\r\n"
                                                      : "VALUE %.*s %" PRIu32 " %" PRIu32 "\r\n",
                         (int)klen, key, flags, size, cas);
        mcs_buf_reset(&sub->resp);
        if (n <= 0 || (size_t)n >= sizeof(head) || mcs_buf_append(&sub->resp, head, (size_t)n) != 0
            || mcs_buf_append(&sub->resp, data, (size_t)size + 2) != 0) {
            mcs_buf_reset(&sub->resp);
            return;
        }
        r->key_sub[sub->key] = sub;
    }
    if (ttl == 0 || !usable(m, sub->fill_server)) {
        return;   /* about to expire, or the warming server left again */
    }
    /* remaining TTL; memcached reads more than 30 days as a unix time */
    int64_t exptime = is_gat(r) ? gat_exptime(r) : ttl < 0 ? 0 : ttl;
    if (!is_gat(r) && exptime > 2592000) {
        exptime += (int64_t)m->unix_s;
    }
    struct mcs_request *f = own_request(m, MCS_REQ_FILL, MCS_CMD_ADD, sub->fill_server, r->conn);
    if (f == NULL) {
        return;
    }
    mcs_request_origin(f, r->session != NULL ? r->session : r->origin);
    struct mcs_buf line = { 0 };
    char tail[96];
    const char *value = data;   /* sent after line (text add: as the server sent it, with its CRLF) */
    size_t value_len = (size_t)size + 2;
    int rc;
    if (mcs_copy_text_safe(key, klen)) {
        int n = snprintf(tail, sizeof(tail), " %" PRIu32 " %" PRId64 " %" PRIu32 "\r\n", flags, exptime, size);
        rc = mcs_buf_append(&line, "add ", 4) | mcs_buf_append(&line, key, klen)
             | mcs_buf_append(&line, tail, (size_t)n);
    } else {
        /* a key the text protocol cannot carry: meta, base64, add mode (the value goes in line) */
        snprintf(tail, sizeof(tail), "F%" PRIu32 " T%" PRId64 " ME", flags, exptime);
        rc = mcs_meta_build(&line, MCS_META_MS, key, klen, true, tail, data, size);
        value = NULL;
        value_len = 0;
    }
    if (rc == 0) {
        mcs_machine_send(m, &f->subs[0], f->conn, mcs_buf_head(&line), mcs_buf_len(&line), value, value_len);
    } else {
        mcs_request_free(m, f);
    }
    mcs_buf_free(&line);
}

/* The reply to a warm-up fetch (`mg <key> v f t c`): on a hit, the item is
 * given to the client as a VALUE block and added back to the warming server. */
enum mcs_resp_status
mcs_avail_meta_reply(struct mcs_machine *m, struct mcs_sub *sub, const char *p, size_t len, size_t *used)
{
    struct mcs_meta_resp mr;
    enum mcs_resp_status st = mcs_meta_resp_parse(p, len, m->cfg->item_max, &mr);
    if (st == MCS_RESP_OK) {
        *used = mr.len;
        if (mr.code == MCS_META_RESP_VA) {   /* else EN, or an error: a miss */
            warm_hit(m, sub, p + mr.data_off, mr.data_len, mr.client_flags, mr.ttl, mr.cas);
        }
    }
    return st;
}

/* ---- servers: probes, identity, rejoin -------------------------------------------------------- */

/* One STAT line of a probe or identity request. */
void
mcs_avail_stat(struct mcs_request *r, const char *line, size_t len)
{
    uint32_t pos = 0, off[3], tl[3];
    unsigned n = 0;
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) {
        len--;
    }
    while (n < 3 && mcs_ascii_next_token(line, &pos, (uint32_t)len, &off[n], &tl[n])) {
        n++;
    }
    int64_t v;
    if (n < 3 || !number(line + off[2], tl[2], &v) || v < 0) {
        return;
    }
    if (tl[1] == 3 && memcmp(line + off[1], "pid", 3) == 0) {
        r->job.probe.id.pid = (uint64_t)v;
    } else if (tl[1] == 6 && memcmp(line + off[1], "uptime", 6) == 0) {
        r->job.probe.uptime = (uint64_t)v;
    } else if (tl[1] == 4 && memcmp(line + off[1], "time", 4) == 0) {
        r->job.probe.unix_time = (uint64_t)v;
    }
}

/* Sends one line of the machine's own to server s. Returns false if it could
 * not even be queued (out of memory); otherwise its completion reports. */
static bool
send_line(struct mcs_machine *m, enum mcs_req_kind kind, enum mcs_cmd cmd, uint32_t s, uint64_t conn, uint64_t ticket,
          const char *key, size_t key_len, const char *line, size_t n)
{
    struct mcs_request *r = own_request(m, kind, cmd, s, conn);
    if (r == NULL) {
        return false;
    }
    if (key != NULL && (r->keys = mcs_malloc(key_len ? key_len : 1)) != NULL) {
        memcpy(r->keys, key, key_len);
        r->keys_len = (uint32_t)key_len;
    }
    if (kind == MCS_REQ_REJOIN) {
        m->rejoin_pending[s]++;
        r->job.rejoin.ticket = ticket;
    }
    mcs_machine_send(m, &r->subs[0], conn, line, n, NULL, 0);
    return true;
}

/* Rejoin work could not be queued (out of memory): s goes back to down, to
 * be flushed when it comes back next time. */
static void
rejoin_abort(struct mcs_machine *m, uint32_t s)
{
    server(m, s)->missed_flush = true;
    mcs_avail_note(m, s, mcs_router_failed(&m->router, s, MCS_FAILURE_CONNECT, m->now_ms), MCS_FAILURE_CONNECT);
}

/* Sends the next batch of rejoin work to s: a flush (flush true, or a missed
 * flush_all, or a log that overflowed), else deletes of the keys in its log;
 * with nothing left to do, s rejoins. */
static void rejoin_next_shared(struct mcs_machine *m, uint32_t s, bool flush);

static void
rejoin_next(struct mcs_machine *m, uint32_t s, bool flush)
{
    struct mcs_server *srv = server(m, s);
    if (mcs_router_shared(&m->router, s)) {
        rejoin_next_shared(m, s, flush);
        return;
    }
    if (flush || srv->missed_flush || mcs_keylog_overflowed(&srv->missed)) {
        mcs_keylog_reset(&srv->missed);
        srv->missed_flush = false;
        if (!send_line(m, MCS_REQ_REJOIN, MCS_CMD_FLUSH_ALL, s, 0, 0, NULL, 0, "flush_all\r\n", 11)) {
            rejoin_abort(m, s);
        }
        return;
    }
    struct mcs_buf key = { 0 };
    struct mcs_buf line = { 0 };
    for (unsigned i = 0; i < MCS_REJOIN_BATCH && server(m, s)->health == MCS_HEALTH_REJOINING; i++) {
        mcs_buf_reset(&key);
        mcs_buf_reset(&line);
        if (!mcs_keylog_take(&srv->missed, &key)) {
            break;
        }
        if (mcs_copy_delete_line(&line, mcs_buf_head(&key), mcs_buf_len(&key)) != 0
            || !send_line(m, MCS_REQ_REJOIN, MCS_CMD_DELETE, s, 0, 0, mcs_buf_head(&key), mcs_buf_len(&key),
                          mcs_buf_head(&line), mcs_buf_len(&line))) {
            rejoin_abort(m, s);
            break;
        }
    }
    mcs_buf_free(&key);
    mcs_buf_free(&line);
    if (m->rejoin_pending[s] == 0 && server(m, s)->health == MCS_HEALTH_REJOINING) {
        if (mcs_keylog_overflowed(&srv->missed)) {
            rejoin_next(m, s, true);   /* the log could not hand its keys over: flush instead */
            return;
        }
        mcs_router_rejoined(&m->router, s, m->now_ms);
        mcs_avail_note(m, s, MCS_HEALTH_REJOINING, MCS_FAILURE_COUNT);
    }
}

/* Keys (and a flush_all) logged for s after it came back: another process's
 * write that missed s while it rejoined, recorded after this process's last look
 * at the log. s serves reads now, so they go at once, as copy deletes. */
static void
rejoin_late(struct mcs_machine *m, uint32_t s)
{
    struct mcs_server *srv = server(m, s);
    struct mcs_seg *seg = m->router.seg;
    if (mcs_seg_flags_take(seg, srv->seg_index, MCS_SEG_F_OVERFLOW | MCS_SEG_F_FLUSH) != 0) {
        send_line(m, MCS_REQ_REJOIN, MCS_CMD_FLUSH_ALL, s, 0, 0, NULL, 0, "flush_all\r\n", 11);
        return;
    }
    struct mcs_buf keys = { 0 };
    uint64_t tickets[64];
    bool stuck;
    size_t n;
    while ((n = mcs_seg_log_take(seg, srv->seg_index, 64, &keys, tickets, &stuck)) > 0) {
        const char *p = mcs_buf_head(&keys);
        for (size_t i = 0; i < n; i++) {
            uint8_t len = (uint8_t)p[0];
            send_copy(m, NULL, s, MCS_COPY_DELETE, p + 1, len);
            mcs_seg_log_done(seg, tickets[i], true);
            p += 1 + len;
        }
        mcs_buf_reset(&keys);
    }
    mcs_buf_free(&keys);
}

/* rejoin_next for a server in the host-wide segment: this process holds its
 * lease; the keys come from the host's log, so they include those of
 * processes that have exited. */
static void
rejoin_next_shared(struct mcs_machine *m, uint32_t s, bool flush)
{
    struct mcs_server *srv = server(m, s);
    struct mcs_seg *seg = m->router.seg;
    uint32_t i = srv->seg_index;
    mcs_router_lease_renew(&m->router, s, m->now_ms);
    if (flush || (mcs_seg_flags(seg, i) & (MCS_SEG_F_OVERFLOW | MCS_SEG_F_FLUSH)) != 0) {
        mcs_seg_flags_take(seg, i, MCS_SEG_F_OVERFLOW | MCS_SEG_F_FLUSH);
        if (!send_line(m, MCS_REQ_REJOIN, MCS_CMD_FLUSH_ALL, s, 0, 0, NULL, 0, "flush_all\r\n", 11)) {
            mcs_seg_flags_set(seg, i, MCS_SEG_F_FLUSH);
            rejoin_abort(m, s);
        }
        return;
    }
    struct mcs_buf keys = { 0 };
    struct mcs_buf line = { 0 };
    uint64_t tickets[MCS_REJOIN_BATCH];
    bool stuck = false;
    size_t n = mcs_seg_log_take(seg, i, MCS_REJOIN_BATCH, &keys, tickets, &stuck);
    const char *p = mcs_buf_head(&keys);
    for (size_t k = 0; k < n; k++) {
        uint8_t len = (uint8_t)p[0];
        mcs_buf_reset(&line);
        if (mcs_copy_delete_line(&line, p + 1, len) != 0
            || !send_line(m, MCS_REQ_REJOIN, MCS_CMD_DELETE, s, 0, tickets[k], p + 1, len, mcs_buf_head(&line),
                          mcs_buf_len(&line))) {
            for (; k < n; k++) {
                mcs_seg_log_done(seg, tickets[k], false);
            }
            rejoin_abort(m, s);
            break;
        }
        p += 1 + len;
    }
    mcs_buf_free(&keys);
    mcs_buf_free(&line);
    if (m->rejoin_pending[s] == 0 && server(m, s)->health == MCS_HEALTH_REJOINING) {
        if (stuck) {
            /* A slot left half-written (a process killed mid-write, or one writing
             * now): its key is unknown, so flushing is the only safe end. */
            rejoin_next_shared(m, s, true);
            return;
        }
        mcs_router_rejoined(&m->router, s, m->now_ms);
        mcs_avail_note(m, s, MCS_HEALTH_REJOINING, MCS_FAILURE_COUNT);
        rejoin_late(m, s);
    }
}

static void
rejoin_done(struct mcs_machine *m, struct mcs_sub *sub)
{
    struct mcs_request *r = sub->req;
    uint32_t s = sub->server;
    struct mcs_server *srv = server(m, s);
    m->rejoin_pending[s]--;
    if (mcs_router_shared(&m->router, s)) {
        struct mcs_seg *seg = m->router.seg;
        if (r->cmd == MCS_CMD_FLUSH_ALL) {
            if (sub->failed) {
                mcs_seg_flags_set(seg, srv->seg_index, MCS_SEG_F_FLUSH);
            } else {
                srv->stats.rejoin_flushes++;
                mcs_seg_count(seg, srv->seg_index, MCS_SEG_C_rejoin_flushes, 1);
                mcs_seg_log_clear(seg, srv->seg_index);
            }
        } else {
            mcs_seg_log_done(seg, r->job.rejoin.ticket, !sub->failed);
            if (!sub->failed) {
                srv->stats.invalidations_replayed++;
                mcs_seg_count(seg, srv->seg_index, MCS_SEG_C_invalidations_replayed, 1);
            }
        }
        if (m->rejoin_pending[s] == 0 && srv->health == MCS_HEALTH_REJOINING) {
            rejoin_next_shared(m, s, false);
        }
        return;
    }
    if (sub->failed) {
        if (r->cmd == MCS_CMD_FLUSH_ALL) {
            srv->missed_flush = true;
        } else {
            mcs_router_missed(&m->router, s, r->keys, r->keys_len);
        }
    } else if (r->cmd == MCS_CMD_FLUSH_ALL) {
        srv->stats.rejoin_flushes++;
        mcs_keylog_reset(&srv->missed);   /* whatever it missed meanwhile is gone with the flush */
    } else {
        srv->stats.invalidations_replayed++;
    }
    if (m->rejoin_pending[s] == 0 && srv->health == MCS_HEALTH_REJOINING) {
        rejoin_next(m, s, false);
    }
}

static void
identity_of(const struct mcs_request *r, struct mcs_identity *id)
{
    *id = r->job.probe.id;
    id->known = id->pid != 0 && r->job.probe.unix_time != 0;
    id->started = r->job.probe.unix_time - r->job.probe.uptime;
}

static void
probe_done(struct mcs_machine *m, struct mcs_sub *sub)
{
    uint32_t s = sub->server;
    struct mcs_server *srv = server(m, s);
    struct mcs_identity id;
    identity_of(sub->req, &id);
    m->tick_ms = 0;   /* probe times moved: recompute */
    mcs_machine_log(m, MCS_LOG_DEBUG, "probe of %s: %s, pid %" PRIu64, srv->label,
                    sub->failed ? "failed" : "answered", id.pid);
    if (sub->failed || !id.known) {
        if (srv->probing) {
            mcs_router_failed(&m->router, s, MCS_FAILURE_PROTOCOL, m->now_ms);
        }
        return;
    }
    uint64_t restarts = srv->stats.restarts;
    enum mcs_rejoin work = mcs_router_probe_ok(&m->router, s, &id, m->now_ms);
    bool restarted = srv->stats.restarts != restarts;
    switch (work) {
    case MCS_REJOIN_NOTHING:
        mcs_machine_log(m, MCS_LOG_NOTICE, "server %s is back (%s); %s", srv->label,
                restarted ? "restarted, empty" : "it missed no writes",
                srv->health == MCS_HEALTH_WARMING ? "warming up from its copies" : "in use again");
        break;
    case MCS_REJOIN_DELETES:
        mcs_machine_log(m, MCS_LOG_NOTICE,
                        "server %s is back after a cut (same instance); deleting the %zu key(s) it missed%s",
                srv->label,
                mcs_router_shared(&m->router, s) ? mcs_seg_log_count(m->router.seg, srv->seg_index)
                                                 : mcs_keylog_count(&srv->missed),
                mcs_router_shared(&m->router, s) ? " (logged by the host's processes)" : "");
        rejoin_next(m, s, false);
        break;
    case MCS_REJOIN_FLUSH_ALL:
        mcs_machine_log(m, MCS_LOG_NOTICE, "server %s is back after a cut (same instance); flushing it (%s)",
                        srv->label,
                m->cfg->rejoin == MCS_REJOIN_FLUSH ? "MCSHIM_REJOIN=flush" : "too many missed writes to replay");
        rejoin_next(m, s, true);
        break;
    }
}

/* Probes down servers whose retry time has come. */
void
mcs_machine_tick(struct mcs_machine *m)
{
    if (m->now_ms < m->tick_ms) {
        return;
    }
    for (uint32_t s = 0; s < m->router.nservers; s++) {
        if (mcs_router_probe_due(&m->router, s, m->now_ms)) {
            if (!mcs_router_probe_start(&m->router, s, m->now_ms)) {
                continue;   /* another process of the host probes it */
            }
            mcs_machine_log(m, MCS_LOG_DEBUG, "probing %s", server(m, s)->label);
            if (!send_line(m, MCS_REQ_PROBE, MCS_CMD_STATS, s, 0, 0, NULL, 0, "stats\r\n", 7)) {
                mcs_router_failed(&m->router, s, MCS_FAILURE_CONNECT, m->now_ms);   /* try again later */
            }
        } else {
            mcs_router_usable(&m->router, s, m->now_ms);   /* ends a warm-up that is over */
        }
    }
    m->tick_ms = mcs_router_next_event(&m->router);
}

/* A new connection to server: learn which instance it is, once (over text
 * connection conn, whatever the new connection speaks). */
void
mcs_machine_connected(struct mcs_machine *m, uint32_t s, uint64_t conn)
{
    struct mcs_server *srv = server(m, s);
    if (!m->failover || srv->identity.known || srv->identifying || !usable(m, s)) {
        return;
    }
    srv->identifying = true;
    if (!send_line(m, MCS_REQ_IDENTIFY, MCS_CMD_STATS, s, conn, 0, NULL, 0, "stats\r\n", 7)) {
        srv->identifying = false;
    }
}

/* Adopts what the host's other processes found out about each server (a down,
 * a rejoin), before this loop's requests are routed. */
void
mcs_machine_sync(struct mcs_machine *m)
{
    if (m->router.seg == NULL) {
        return;
    }
    for (uint32_t s = 0; s < m->router.nservers; s++) {
        enum mcs_failure why;
        enum mcs_health before = mcs_router_sync(&m->router, s, m->now_ms, &why);
        if (before != MCS_HEALTH_COUNT) {
            mcs_avail_note(m, s, before, why == MCS_FAILURE_COUNT ? MCS_FAILURE_PROTOCOL : why);
            m->tick_ms = 0;   /* probe and warm-up times moved */
        }
    }
}

/* Logs a server's state change (one line each) and acts on it. */
void
mcs_avail_note(struct mcs_machine *m, uint32_t s, enum mcs_health before, enum mcs_failure why)
{
    if (before == MCS_HEALTH_COUNT) {
        return;
    }
    struct mcs_server *srv = server(m, s);
    switch (srv->health) {
    case MCS_HEALTH_DOWN:
        if (before == MCS_HEALTH_UP || before == MCS_HEALTH_WARMING) {
            mcs_machine_log(m, MCS_LOG_WARN, "server %s is down (%s, %u failure(s)%s); %s; probing every %u ms",
                            srv->label,
                    mcs_failure_name(why), srv->failures, srv->failures == 0 ? " here, found by another process" : "",
                    m->failover ? "its keys go to their copies" : "its keys miss and its writes fail",
                    m->cfg->retry_ms);
            m->drv.abort_server(m->drv.ctx, s);
        } else {
            mcs_machine_log(m, MCS_LOG_WARN, "server %s failed again while rejoining; probing every %u ms", srv->label,
                    m->cfg->retry_ms);
        }
        if (srv->retry_at_ms < m->tick_ms) {
            m->tick_ms = srv->retry_at_ms;
        }
        break;
    case MCS_HEALTH_WARMING:
    case MCS_HEALTH_UP:
        if (before == MCS_HEALTH_REJOINING) {
            mcs_machine_log(m, MCS_LOG_NOTICE, "server %s rejoined (%" PRIu64 " invalidation(s) replayed in all); %s",
                            srv->label,
                    srv->stats.invalidations_replayed,
                    srv->health == MCS_HEALTH_WARMING ? "warming up from its copies" : "in use again");
        }
        if (srv->health == MCS_HEALTH_WARMING && srv->warm_until_ms < m->tick_ms) {
            m->tick_ms = srv->warm_until_ms;
        }
        break;
    case MCS_HEALTH_REJOINING:
    case MCS_HEALTH_COUNT:
        break;
    }
}

/* A plain mg missed on a warming server: the same request is asked of the
 * next copy (its reply, if a hit, is the client's answer), and the item is
 * fetched from it to be added back to the warming server. */
static void
meta_warm(struct mcs_machine *m, struct mcs_request *r, uint32_t warming)
{
    size_t klen;
    const char *key = kept_key(r, &klen);
    uint32_t s;
    if (first_usable(m, key, klen, r->tried + 1u, &s) < 0) {
        return;
    }
    struct mcs_sub *a = child_new(r, s);
    if (a == NULL) {
        return;
    }
    a->meta = a->fetch = a->answer = true;
    mcs_request_get(r);
    mcs_machine_send(m, a, r->conn, mcs_buf_head(&r->kept), mcs_buf_len(&r->kept), NULL, 0);
    fetch_send(m, r, 0, key, klen, r->tried + 1u, warming);
}

/* ---- completion ------------------------------------------------------------------------------- */

/* Returns true if the sub was dealt with here (request.c does nothing more). */
bool
mcs_avail_sub_done(struct mcs_machine *m, struct mcs_sub *sub)
{
    struct mcs_request *r = sub->req;
    switch (r->kind) {
    case MCS_REQ_COPY:
        copy_done(m, sub);
        return true;
    case MCS_REQ_PROBE:
        probe_done(m, sub);
        break;
    case MCS_REQ_IDENTIFY: {
        struct mcs_identity id;
        identity_of(r, &id);
        server(m, sub->server)->identifying = false;
        if (!sub->failed && id.known && !server(m, sub->server)->identity.known) {
            mcs_router_identify(&m->router, sub->server, &id);
        }
        break;
    }
    case MCS_REQ_REJOIN:
        rejoin_done(m, sub);
        break;
    case MCS_REQ_FILL:
        if (!sub->failed && (mcs_reply_classify(mcs_buf_head(&r->out), mcs_buf_len(&r->out)) == MCS_REPLY_STORED
                             || (mcs_buf_len(&r->out) >= 2 && memcmp(mcs_buf_head(&r->out), "HD", 2) == 0))) {
            server(m, sub->server)->stats.warm_fills++;
        }
        break;
    case MCS_REQ_CLIENT:
        if (sub->fetch) {
            break;   /* a warm-up fetch: its hit was handled as it arrived; a failure leaves the miss */
        }
        if (r->ntargets > 0) {
            /* one key (text storage/delete/arith/touch, or any binary key request) */
            if (sub->failed) {
                size_t klen;
                const char *key = kept_key(r, &klen);
                if (r->write) {
                    missed(m, sub->server, key, klen, true);
                }
                if (!m->router.copies && !usable(m, sub->server)) {
                    /* eject: the server left the ring while r waited on it, so the key has a
                     * stand-in now (its owner among the live servers, router.h): look again */
                    r->ntargets = (uint8_t)mcs_router_targets(&m->router, key, klen, r->targets);
                }
                if (r->tried + 1u < r->ntargets) {
                    server(m, sub->server)->stats.failovers++;
                }
                if (!key_send_from(m, r, r->tried + 1u)) {
                    return false;   /* request.c answers SERVER_ERROR */
                }
                /* The next copy answers instead (or has already answered, or failed in its turn:
                 * the sub is reused, so do not look at it again). */
                mcs_request_put(m, r);
                return true;
            }
            if (r->is_meta && r->meta_cmd == MCS_META_MG && r->meta_code == MCS_META_RESP_EN && !r->write
                && mcs_router_warming(&m->router, sub->server, m->now_ms)) {
                meta_warm(m, r, sub->server);
                return false;
            }
            if (r->proto == MCS_PROTO_BINARY && r->bin_status == MCS_BIN_STATUS_KEY_ENOENT
                && mcs_cmd_route(r->cmd) == MCS_ROUTE_KEYS && mcs_router_warming(&m->router, sub->server, m->now_ms)) {
                size_t klen;
                const char *key = kept_key(r, &klen);
                fetch_send(m, r, 0, key, klen, r->tried + 1u, sub->server);   /* a miss on a warming server */
                return false;
            }
            key_copies(m, r);
            return false;
        }
        switch (mcs_cmd_route(r->cmd)) {
        case MCS_ROUTE_KEY:
            return false;
        case MCS_ROUTE_KEYS:
            if (sub->failed) {
                uint32_t s = sub->server;
                mcs_buf_reset(&sub->resp);
                server(m, s)->stats.failovers += keys_move(m, r, sub);
            } else if (mcs_router_warming(&m->router, sub->server, m->now_ms)) {
                keys_warm(m, r, sub);
            }
            return false;
        case MCS_ROUTE_ALL:
            if (sub->failed) {
                /* a server away misses the flush now and gets it when it comes back */
                mcs_router_missed_flush(&m->router, sub->server);
                sub->failed = false;
            }
            return false;
        case MCS_ROUTE_ANY:
        case MCS_ROUTE_LOCAL:
            return false;
        }
        return false;
    }
    mcs_request_put(m, r);
    return true;
}
