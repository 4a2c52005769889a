/*
 * preload/core/request_meta.c: memcached's meta commands on text connections.
 *
 * mg, ms, md, ma and me are routed by key: the decoded key when the b flag
 * says it is base64, so a key lands on the same server whichever protocol
 * wrote it. A server always gets the request without q, so every request
 * has one reply to match in FIFO order; the quiet rule (core/meta.h) is
 * applied on the way back. Every other flag goes through untouched: O and k
 * come back from the server itself. mn is answered by the shim, after every
 * earlier reply on the connection, which is exactly its meaning across
 * servers.
 *
 * With copies (docs/availability.md), what the other servers get after the
 * first one answered (replica.h's rule, applied to meta):
 *   ms in set/add/replace mode, or with C: stored -> the same value as an
 *   ms with only b, F and T kept; refused (NS for add, EX for C) -> nothing;
 *   otherwise -> delete. ms append/prepend, md, ma, mg with N or E -> delete
 *   (the result is not known to the shim: ma and N may create the item).
 *   mg with T on a hit -> mg with the same T. me and plain mg: nothing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "preload/core/alloc.h"
#include "preload/core/request.h"

static const char reply_mn[] = "MN\r\n";

/* The second letter of a meta command (mg ms md ma mn me). */
static bool
meta_letter(char c)
{
    return c != '\0' && strchr("gsdane", c) != NULL;
}

/* Does buf start a meta command ("mg ", "mn\r\n", ...)? *more: too few bytes to tell. */
bool
mcs_meta_detect(const char *buf, size_t len, bool *more)
{
    *more = false;
    if (len == 0 || buf[0] != 'm') {
        return false;
    }
    if (len < 3) {
        *more = len < 2 || meta_letter(buf[1]);
        return false;
    }
    return meta_letter(buf[1]) && (buf[2] == ' ' || buf[2] == '\r' || buf[2] == '\n');
}

/* Re-parses the request as servers get it (r->kept). */
static bool
kept_request(const struct mcs_request *r, struct mcs_meta_req *q)
{
    struct mcs_meta_parser parser = { .newer_flags = true };
    return mcs_meta_parse(&parser, mcs_buf_head(&r->kept), mcs_buf_len(&r->kept), UINT32_MAX, q) == MCS_META_OK;
}

void
mcs_meta_dispatch(struct mcs_machine *m, struct mcs_session *c, const char *buf, const struct mcs_meta_req *q)
{
    m->stats.requests++;
    if (q->cmd == MCS_META_MN) {
        mcs_session_local_reply(m, c, reply_mn, sizeof(reply_mn) - 1);
        return;
    }
    uint32_t klen;
    const char *key = mcs_meta_route_key(q, buf, &klen);
    struct mcs_request *r = mcs_request_new(m, c, MCS_CMD_COUNT, 1, false);
    if (r == NULL || mcs_meta_rewrite(buf, q, "q", NULL, &r->kept) != 0
        || (r->keys = mcs_malloc(klen ? klen : 1)) == NULL) {
        if (r != NULL) {
            r->oom = true;   /* answers SERVER_ERROR out of memory in its turn; the connection closes */
            mcs_request_finish(m, r);
        }
        c->closing = true;
        return;
    }
    memcpy(r->keys, key, klen);
    r->keys_len = klen;
    r->is_meta = true;
    r->meta_cmd = (uint8_t)q->cmd;
    r->meta_quiet = q->quiet;
    r->write = q->write;
    r->q.len = (uint32_t)mcs_buf_len(&r->kept);
    r->subs[0].meta = true;
    m->stats.cmd_set += q->cmd == MCS_META_MS;
    if (m->failover) {
        mcs_avail_dispatch_kept(m, r, key, klen);
        return;
    }
    mcs_request_get(r);
    r->subs[0].server = mcs_router_server_for_key(&m->router, key, klen);
    mcs_sub_send(m, c, &r->subs[0], mcs_buf_head(&r->kept), mcs_buf_len(&r->kept));
    mcs_request_put(m, r);
}

/* One meta reply item for sub (a client's meta request, or a copy). */
enum mcs_resp_status
mcs_meta_reply(struct mcs_machine *m, struct mcs_sub *sub, const char *p, size_t len, size_t *used)
{
    if (sub->fetch && !sub->answer) {
        return mcs_avail_meta_reply(m, sub, p, len, used);
    }
    struct mcs_meta_resp mr;
    enum mcs_resp_status st = mcs_meta_resp_parse(p, len, m->cfg->item_max, &mr);
    if (st != MCS_RESP_OK) {
        return st;
    }
    *used = mr.len;
    struct mcs_request *r = sub->req;
    if (r->kind == MCS_REQ_CLIENT && !mcs_meta_reply_fits((enum mcs_meta_cmd)r->meta_cmd, mr.code)) {
        return MCS_RESP_BAD;   /* not an answer to this command: never reaches the application */
    }
    if (r->kind != MCS_REQ_CLIENT) {
        mcs_buf_append(&r->out, p, mr.len);
        return MCS_RESP_OK;
    }
    if (sub->answer) {
        if (mr.code == MCS_META_RESP_EN) {
            return MCS_RESP_OK;   /* the copy misses too: the first answer stands */
        }
        mcs_buf_reset(&r->out);
    }
    r->meta_code = (uint8_t)mr.code;
    if (r->meta_cmd == MCS_META_MG) {
        r->nkeys = 1;
        r->hits = mr.code == MCS_META_RESP_VA || mr.code == MCS_META_RESP_HD;
    }
    if (!(r->meta_quiet && mcs_meta_quiet_suppresses((enum mcs_meta_cmd)r->meta_cmd, mr.code))
        && mcs_buf_append(&r->out, p, mr.len) != 0) {
        r->oom = true;
    }
    return MCS_RESP_OK;
}

/* Nobody could answer r: a read misses, anything else is a server error. */
void
mcs_meta_failed(struct mcs_machine *m, struct mcs_request *r, uint32_t server)
{
    mcs_buf_reset(&r->out);
    if (!r->write) {
        r->meta_code = MCS_META_RESP_EN;
        if (!(r->meta_quiet && mcs_meta_quiet_suppresses((enum mcs_meta_cmd)r->meta_cmd, MCS_META_RESP_EN))) {
            mcs_buf_append(&r->out, "EN\r\n", 4);
        }
        return;
    }
    mcs_reply_unavailable(m, server, true, &r->out);
    m->stats.server_errors++;
}

/* What the copies get after the first server answered r (file comment). */
enum mcs_copy_action
mcs_meta_copy_action(const struct mcs_request *r)
{
    struct mcs_meta_req q;
    if (!r->write || !kept_request(r, &q)) {
        return MCS_COPY_NONE;
    }
    enum mcs_meta_resp_code code = (enum mcs_meta_resp_code)r->meta_code;
    bool stored = code == MCS_META_RESP_HD;
    switch (q.cmd) {
    case MCS_META_MG:
        if (mcs_meta_has_flag(&q, 'N') || mcs_meta_has_flag(&q, 'E')) {
            return MCS_COPY_DELETE;
        }
        return code == MCS_META_RESP_VA || code == MCS_META_RESP_HD ? MCS_COPY_TOUCH : MCS_COPY_NONE;
    case MCS_META_MS:
        if (mcs_meta_has_flag(&q, 'I') || mcs_meta_has_flag(&q, 'E')) {
            return MCS_COPY_DELETE;
        }
        if (mcs_meta_has_flag(&q, 'C')) {
            return stored ? MCS_COPY_SET : code == MCS_META_RESP_EX ? MCS_COPY_NONE : MCS_COPY_DELETE;
        }
        switch (q.mode) {
        case 0:
        case 'S':
        case 's':
        case 'R':
        case 'r':
            return stored ? MCS_COPY_SET : MCS_COPY_DELETE;
        case 'E':
        case 'e':
            return stored ? MCS_COPY_SET : code == MCS_META_RESP_NS ? MCS_COPY_NONE : MCS_COPY_DELETE;
        default:
            return MCS_COPY_DELETE;   /* append, prepend */
        }
    default:
        return MCS_COPY_DELETE;   /* md, ma */
    }
}

/* The request a copy gets for action, from r's request. */
int
mcs_meta_copy_line(const struct mcs_request *r, enum mcs_copy_action action, struct mcs_buf *out)
{
    struct mcs_meta_req q;
    if (!kept_request(r, &q)) {
        return -1;
    }
    const char *p = mcs_buf_head(&r->kept);
    switch (action) {
    case MCS_COPY_SET:
        /* the value, its flags and TTL; set mode, no compare: the copy takes what the first server took */
        return mcs_meta_rewrite(p, &q, "cfhklqstuvxIOPLNRCEJDM", NULL, out);
    case MCS_COPY_TOUCH:
        return mcs_meta_rewrite(p, &q, "cfhklqstuvxIOPLNRCEJDMF", NULL, out);
    case MCS_COPY_DELETE:
        return mcs_copy_delete_line(out, r->keys, r->keys_len);
    default:
        return -1;
    }
}
