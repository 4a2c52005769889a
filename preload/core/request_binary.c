/*
 * preload/core/request_binary.c: requests in memcached's binary protocol.
 *
 * A connection whose first byte is 0x80 is binary (as memcached decides).
 * Its requests (core/binary parses them) are routed like text ones and go to
 * the servers over binary server connections, rebuilt and always in their
 * non-quiet form, so that every request gets exactly one reply packet and the
 * FIFO matching of the driver's connections holds. Quiet semantics are applied here, on the
 * way back: a quiet get's miss and a quiet write's success are not sent. The
 * client's opcode and opaque are written back into each reply; CAS values
 * come back as the server sent them. Replies go out in request order, so a
 * noop (answered by the shim) follows every reply it must follow, whichever
 * servers those came from.
 *
 * Answered by the shim: noop, quit(q), stat (its own counters, as binary
 * stat packets). Failed servers: a read is a miss (status 0x0001, silent when
 * quiet); anything else gets status 0x0086 (temporary failure) with the
 * reason as its text.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "preload/core/alloc.h"
#include "preload/core/request.h"

/* The text command a binary opcode matches (replica.h rules, counters). */
static enum mcs_cmd
cmd_of(uint8_t base)
{
    switch (base) {
    case MCS_BIN_OP_GET:
    case MCS_BIN_OP_GETK:
        return MCS_CMD_GET;
    case MCS_BIN_OP_SET:
        return MCS_CMD_SET;
    case MCS_BIN_OP_ADD:
        return MCS_CMD_ADD;
    case MCS_BIN_OP_REPLACE:
        return MCS_CMD_REPLACE;
    case MCS_BIN_OP_DELETE:
        return MCS_CMD_DELETE;
    case MCS_BIN_OP_INCREMENT:
        return MCS_CMD_INCR;
    case MCS_BIN_OP_DECREMENT:
        return MCS_CMD_DECR;
    case MCS_BIN_OP_APPEND:
        return MCS_CMD_APPEND;
    case MCS_BIN_OP_PREPEND:
        return MCS_CMD_PREPEND;
    case MCS_BIN_OP_TOUCH:
        return MCS_CMD_TOUCH;
    case MCS_BIN_OP_GAT:
    case MCS_BIN_OP_GATK:
        return MCS_CMD_GAT;
    case MCS_BIN_OP_FLUSH:
        return MCS_CMD_FLUSH_ALL;
    case MCS_BIN_OP_VERSION:
        return MCS_CMD_VERSION;
    case MCS_BIN_OP_STAT:
        return MCS_CMD_STATS;
    case MCS_BIN_OP_QUIT:
        return MCS_CMD_QUIT;
    default:
        return MCS_CMD_COUNT;
    }
}

static bool
is_read(uint8_t base)
{
    return base == MCS_BIN_OP_GET || base == MCS_BIN_OP_GETK || base == MCS_BIN_OP_GAT || base == MCS_BIN_OP_GATK;
}

/* The request as a server gets it: non-quiet, rebuilt from its parts. */
static int
server_request(const char *buf, const struct mcs_bin_req *q, struct mcs_buf *out)
{
    struct mcs_bin_msg m = {
        .opcode = q->base,
        .opaque = q->opaque,
        .cas = q->cas,
        .extras = buf + q->extras_off,
        .extras_len = q->extras_len,
        .key = buf + q->key_off,
        .key_len = q->key_len,
        .value = buf + q->value_off,
        .value_len = q->value_len,
    };
    return mcs_bin_put_request(out, &m);
}

/* A packet the shim answers itself, after every earlier reply. */
static void
local_packet(struct mcs_machine *m, struct mcs_session *c, uint8_t opcode, uint16_t status, uint32_t opaque,
             const char *text)
{
    struct mcs_buf out = { 0 };
    struct mcs_bin_msg msg = { .opcode = opcode, .status = status, .opaque = opaque };
    if (text != NULL) {
        msg.value = text;
        msg.value_len = (uint32_t)strlen(text);
    }
    if (mcs_bin_put_response(&out, &msg) != 0) {
        c->closing = true;
    } else {
        mcs_session_local_reply(m, c, mcs_buf_head(&out), mcs_buf_len(&out));
    }
    mcs_buf_free(&out);
}

/* Binary stats, in pipeline order: each "STAT name value" of the text answer
 * becomes a packet (key name, value value), then an empty packet ends it. */
void
mcs_bin_stats_build(struct mcs_machine *m, struct mcs_request *r)
{
    struct mcs_buf text = { 0 };
    if (r->keys_len == 11 && memcmp(r->keys, "detail dump", 11) == 0) {
        /* memcached sends its (text) prefix dump as one stat named "detailed" */
        struct mcs_bin_msg msg = { .opcode = MCS_BIN_OP_STAT, .opaque = r->bin_opaque, .key = "detailed",
                                   .key_len = 8, .value = "END\r\n", .value_len = 5 };
        struct mcs_bin_msg last = { .opcode = MCS_BIN_OP_STAT, .opaque = r->bin_opaque };
        if (mcs_bin_put_response(&r->out, &msg) != 0 || mcs_bin_put_response(&r->out, &last) != 0) {
            r->oom = true;
        }
        return;
    }
    mcs_stats_build(m, r->keys, r->keys_len, &text);
    if (mcs_buf_len(&text) == 4 && memcmp(mcs_buf_head(&text), "OK\r\n", 4) == 0) {
        mcs_buf_reset(&text);   /* detail on/off: only the terminating packet */
    }
    mcs_bin_stats_packets(r, &text);
    mcs_buf_free(&text);
}

/* r's answer from the text answer of a stats request: a packet per "STAT name
 * value" (key name, value value), then an empty packet ends it; an error line
 * is status 0x0001, as memcached answers a stat group it does not know. */
void
mcs_bin_stats_packets(struct mcs_request *r, const struct mcs_buf *text)
{
    const char *p = mcs_buf_head(text), *end = p + mcs_buf_len(text);
    uint32_t opaque = r->bin_opaque;
    if (mcs_buf_len(text) >= 5 && (memcmp(p, "ERROR", 5) == 0 || memcmp(p, "CLIENT_ERROR", 12 <= end - p ? 12 : 5) == 0
                                   || memcmp(p, "SERVER_ERROR", 12 <= end - p ? 12 : 5) == 0)) {
        mcs_bin_put_error(&r->out, MCS_BIN_OP_STAT, MCS_BIN_STATUS_KEY_ENOENT, opaque);
        return;
    }
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        size_t n = eol ? (size_t)(eol - p) : (size_t)(end - p);
        uint32_t pos = 0, off[3], len[3], k = 0;
        while (k < 2 && mcs_ascii_next_token(p, &pos, (uint32_t)(n - (n > 0 && p[n - 1] == '\r')), &off[k], &len[k])) {
            k++;
        }
        if (k == 2 && len[0] == 4 && memcmp(p + off[0], "STAT", 4) == 0) {
            uint32_t vstart = off[1] + len[1] + 1;
            uint32_t vend = (uint32_t)(n - (n > 0 && p[n - 1] == '\r'));
            struct mcs_bin_msg m = { .opcode = MCS_BIN_OP_STAT, .opaque = opaque, .key = p + off[1],
                                     .key_len = (uint16_t)len[1], .value = p + vstart,
                                     .value_len = vend > vstart ? vend - vstart : 0 };
            mcs_bin_put_response(&r->out, &m);
        }
        p += n + 1;
    }
    struct mcs_bin_msg last = { .opcode = MCS_BIN_OP_STAT, .opaque = opaque };
    mcs_bin_put_response(&r->out, &last);
}

static void
dispatch_local(struct mcs_machine *m, struct mcs_session *c, const char *buf, const struct mcs_bin_req *q)
{
    switch (q->base) {
    case MCS_BIN_OP_NOOP:
        local_packet(m, c, MCS_BIN_OP_NOOP, 0, q->opaque, NULL);
        break;
    case MCS_BIN_OP_QUIT:
        if (!q->quiet) {
            local_packet(m, c, MCS_BIN_OP_QUIT, 0, q->opaque, NULL);
        }
        c->closing = true;
        break;
    case MCS_BIN_OP_STAT: {
        /* deferred to the head of the pipeline, like text stats */
        bool forward = mcs_stats_forwarded(buf + q->key_off, q->key_len);
        struct mcs_request *r = mcs_request_new(m, c, MCS_CMD_STATS, forward ? 1 : 0, false);
        if (r == NULL || (q->key_len > 0 && (r->keys = mcs_malloc(q->key_len)) == NULL)) {
            if (r != NULL) {
                r->oom = true;
                mcs_request_finish(m, r);
            }
            c->closing = true;
            return;
        }
        r->proto = MCS_PROTO_BINARY;
        r->bin_opcode = q->opcode;
        r->bin_opaque = q->opaque;
        if (forward) {
            mcs_stats_forward(m, c, r);
            break;
        }
        if (q->key_len > 0) {
            memcpy(r->keys, buf + q->key_off, q->key_len);
        }
        r->keys_len = q->key_len;
        mcs_session_advance(m, c);
        break;
    }
    default:
        local_packet(m, c, q->opcode, MCS_BIN_STATUS_UNKNOWN_COMMAND, q->opaque,
                     mcs_bin_status_text(MCS_BIN_STATUS_UNKNOWN_COMMAND));
        break;
    }
}

void
mcs_bin_dispatch(struct mcs_machine *m, struct mcs_session *c, const char *buf, const struct mcs_bin_req *q)
{
    m->stats.requests++;
    enum mcs_cmd cmd = cmd_of(q->base);
    if (q->cas != 0 && (cmd == MCS_CMD_SET || cmd == MCS_CMD_REPLACE)) {
        cmd = MCS_CMD_CAS;   /* a compare-and-swap: a refusal leaves the copies alone (replica.h) */
    }
    if (q->route == MCS_ROUTE_LOCAL) {
        dispatch_local(m, c, buf, q);
        return;
    }
    m->stats.cmd_set += mcs_cmd_has_data(cmd);
    m->stats.cmd_touch += cmd == MCS_CMD_TOUCH;
    m->stats.cmd_flush += cmd == MCS_CMD_FLUSH_ALL;
    struct mcs_buf pkt = { 0 };
    if (server_request(buf, q, &pkt) != 0) {
        c->closing = true;
        return;
    }
    uint32_t nsubs = q->route == MCS_ROUTE_ALL ? (uint32_t)m->router.nservers : 1;
    struct mcs_request *r = mcs_request_new(m, c, cmd, nsubs, false);
    if (r == NULL) {
        mcs_buf_free(&pkt);
        c->closing = true;
        return;
    }
    r->proto = MCS_PROTO_BINARY;
    r->bin_opcode = q->opcode;
    r->bin_opaque = q->opaque;
    r->nkeys = is_read(q->base);
    r->write = !is_read(q->base) || q->base == MCS_BIN_OP_GAT || q->base == MCS_BIN_OP_GATK;
    r->q.len = (uint32_t)mcs_buf_len(&pkt);
    r->q.key_off = MCS_BIN_HEADER_LEN + q->extras_len;
    r->q.key_len = q->key_len;
    r->q.cmd = cmd;
    if (q->route == MCS_ROUTE_KEY && m->failover) {
        r->kept = pkt;   /* moved: the request keeps what servers get */
        mcs_avail_dispatch_kept(m, r, buf + q->key_off, q->key_len);
        return;
    }
    mcs_request_get(r);
    if (q->route == MCS_ROUTE_KEY) {
        r->subs[0].server = mcs_router_server_for_key(&m->router, buf + q->key_off, q->key_len);
        mcs_sub_send(m, c, &r->subs[0], mcs_buf_head(&pkt), mcs_buf_len(&pkt));
    } else if (q->route == MCS_ROUTE_ANY) {
        uint32_t s = mcs_machine_first_usable(m, 0);
        r->subs[0].server = s < m->router.nservers ? s : 0;
        if (s == m->router.nservers) {
            mcs_request_get(r);
            r->subs[0].failed = true;
            mcs_request_sub_done(m, &r->subs[0]);
        } else {
            mcs_sub_send(m, c, &r->subs[0], mcs_buf_head(&pkt), mcs_buf_len(&pkt));
        }
    } else {
        for (uint32_t s = 0; s < nsubs; s++) {
            r->subs[s].server = s;
            mcs_sub_send(m, c, &r->subs[s], mcs_buf_head(&pkt), mcs_buf_len(&pkt));
        }
    }
    if (q->base == MCS_BIN_OP_GETK || q->base == MCS_BIN_OP_GATK) {
        r->kept = pkt;   /* moved: its answer must carry this key (key_echoed) */
    } else {
        mcs_buf_free(&pkt);
    }
    mcs_request_put(m, r);
}

/* The bytes a server gets for r (for a retry on another server). */
int
mcs_bin_request_line(struct mcs_request *r, struct mcs_buf *out)
{
    struct mcs_bin_msg m = { .opcode = mcs_bin_op_base(r->bin_opcode), .opaque = r->bin_opaque };
    return mcs_bin_put_request(out, &m);
}

/* getk/gatk: a key in the answer is the key asked (clients match answers to
 * requests by it; memcached echoes it). r->kept holds the request as servers
 * got it, its key at r->q's key span. Other requests: true. */
static bool
key_echoed(const struct mcs_request *r, const char *p, const struct mcs_bin_resp *resp)
{
    uint8_t base = mcs_bin_op_base(r->bin_opcode);
    if ((base != MCS_BIN_OP_GETK && base != MCS_BIN_OP_GATK) || resp->key_len == 0) {
        return true;
    }
    return resp->key_len == r->q.key_len && mcs_buf_len(&r->kept) >= (size_t)r->q.key_off + r->q.key_len
           && memcmp(p + resp->key_off, mcs_buf_head(&r->kept) + r->q.key_off, resp->key_len) == 0;
}

/* One reply packet for sub. Returns true when the sub is complete (always:
 * every request the shim sends gets one packet). */
bool
mcs_bin_deliver(struct mcs_machine *m, struct mcs_sub *sub, const char *p, const struct mcs_bin_resp *resp, bool *bad)
{
    struct mcs_request *r = sub->req;
    (void)m;
    if (r->kind == MCS_REQ_CLIENT
        && (!mcs_bin_reply_fits(mcs_bin_op_base(r->bin_opcode), r->bin_opaque, resp) || !key_echoed(r, p, resp))) {
        *bad = true;   /* not an answer to this request: never reaches the application */
        return false;
    }
    if (r->kind != MCS_REQ_CLIENT) {
        mcs_buf_append(&r->out, p, resp->len);   /* copies: read by avail.c */
        r->bin_status = resp->status;
        return true;
    }
    uint8_t base = mcs_bin_op_base(r->bin_opcode);
    if (mcs_cmd_route(r->cmd) == MCS_ROUTE_ALL) {
        /* one answer for all servers: the first error, else the first success */
        r->answered++;
        if (r->answered > 1 && (resp->status == 0 || r->bin_status != 0)) {
            return true;
        }
        mcs_buf_reset(&r->out);
    }
    r->bin_status = resp->status;
    if (resp->status == 0 && is_read(base)) {
        r->hits = 1;
    }
    if (resp->status == 0 && resp->value_len == 8 && (base == MCS_BIN_OP_INCREMENT || base == MCS_BIN_OP_DECREMENT)) {
        memcpy(r->arith_value, p + resp->value_off, 8);   /* the new value, for the copies (avail.c) */
        r->has_arith_value = true;
    }
    if (mcs_bin_quiet_suppresses(r->bin_opcode, resp->status)) {
        return true;
    }
    size_t at = mcs_buf_len(&r->out);
    if (mcs_buf_append(&r->out, p, resp->len) == 0) {
        mcs_buf_head(&r->out)[at + 1] = (char)r->bin_opcode;   /* the client's opcode, quiet or not */
    } else {
        r->oom = true;
    }
    return true;
}

/* r's server failed and nobody else can answer: a read misses, anything else
 * gets a temporary failure. */
void
mcs_bin_failed(struct mcs_machine *m, struct mcs_request *r, uint32_t server)
{
    uint8_t base = mcs_bin_op_base(r->bin_opcode);
    uint16_t status = is_read(base) ? MCS_BIN_STATUS_KEY_ENOENT : MCS_BIN_STATUS_ETMPFAIL;
    if (mcs_buf_len(&r->out) > 0 && r->bin_status != 0) {
        return;   /* already holds an error (broadcast) */
    }
    mcs_buf_reset(&r->out);
    r->bin_status = status;
    if (!is_read(base)) {
        m->stats.server_errors++;
    }
    if (mcs_bin_quiet_suppresses(r->bin_opcode, status)) {
        return;
    }
    struct mcs_buf text = { 0 };
    const char *why = mcs_bin_status_text(status);
    if (!is_read(base)) {
        mcs_reply_unavailable(m, server, false, &text);
        why = mcs_buf_len(&text) > 0 ? mcs_buf_head(&text) : "";
    }
    struct mcs_bin_msg reply = { .opcode = r->bin_opcode, .status = status, .opaque = r->bin_opaque, .value = why,
                                 .value_len = (uint32_t)(is_read(base) ? strlen(why) : mcs_buf_len(&text)) };
    if (mcs_bin_put_response(&r->out, &reply) != 0) {
        r->oom = true;
    }
    mcs_buf_free(&text);
}
