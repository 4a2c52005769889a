/*
 * preload/core/binary.c: memcached binary protocol parsing and building (see
 * binary.h).
 *
 * The request parser mirrors memcached 1.6.18's try_read_command_binary and
 * dispatch_bin_command: the same checks in the same order, the same status
 * for each, and the same decision to keep or close the connection. Every
 * decision is taken from the 24-byte header; lengths are compared in 64-bit
 * unsigned arithmetic and nothing is read past buf[len).
 */
#include "preload/core/binary.h"

#include <string.h>

/* What the opcode table says about one opcode; known is false for holes. */
struct op_def {
    const char             *name;
    enum mcs_cmd_route      route;
    uint8_t                 base;
    bool                    known;
    bool                    quiet;
    uint8_t                 extras_len;
    uint8_t                 extras_alt;
    enum mcs_bin_key_rule   key;
    enum mcs_bin_value_rule value;
    enum mcs_bin_handling   handling;
};

static const struct op_def op_defs[256] = {
#define MCS_BIN_OP_DEF(id, code, name, route, base, quiet, ext, ext2, key, value, handling)              \
    [code] = { name, route, MCS_BIN_OP_##base, true, quiet, ext, ext2, MCS_BIN_##key, MCS_BIN_##value, \
               MCS_BIN_##handling },
    MCS_BIN_OP_LIST(MCS_BIN_OP_DEF)
#undef MCS_BIN_OP_DEF
};

struct status_def {
    uint16_t    code;
    const char *name;
    const char *text;
};

static const struct status_def status_defs[] = {
#define MCS_BIN_STATUS_DEF(id, code, name, text) { code, name, text },
    MCS_BIN_STATUS_LIST(MCS_BIN_STATUS_DEF)
#undef MCS_BIN_STATUS_DEF
};

#define STATUS_COUNT (sizeof(status_defs) / sizeof(status_defs[0]))

/* Byte order ---------------------------------------------------------------- */

static uint16_t
get16(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint16_t)((unsigned)u[0] << 8 | u[1]);
}

static uint32_t
get32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

static uint64_t
get64(const char *p)
{
    return (uint64_t)get32(p) << 32 | get32(p + 4);
}

static void
put16(char *p, uint16_t v)
{
    p[0] = (char)(v >> 8);
    p[1] = (char)v;
}

static void
put32(char *p, uint32_t v)
{
    put16(p, (uint16_t)(v >> 16));
    put16(p + 2, (uint16_t)v);
}

static void
put64(char *p, uint64_t v)
{
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}

/* Tables -------------------------------------------------------------------- */

const char *
mcs_bin_op_name(uint8_t opcode)
{
    return op_defs[opcode].known ? op_defs[opcode].name : "?";
}

bool
mcs_bin_op_known(uint8_t opcode)
{
    return op_defs[opcode].known;
}

uint8_t
mcs_bin_op_base(uint8_t opcode)
{
    return op_defs[opcode].known ? op_defs[opcode].base : opcode;
}

bool
mcs_bin_op_quiet(uint8_t opcode)
{
    return op_defs[opcode].quiet;
}

enum mcs_cmd_route
mcs_bin_op_route(uint8_t opcode)
{
    return op_defs[opcode].known ? op_defs[opcode].route : MCS_ROUTE_LOCAL;
}

static const struct status_def *
status_find(uint16_t status)
{
    for (size_t i = 0; i < STATUS_COUNT; i++) {
        if (status_defs[i].code == status) {
            return &status_defs[i];
        }
    }
    return NULL;
}

const char *
mcs_bin_status_name(uint16_t status)
{
    const struct status_def *d = status_find(status);
    return d != NULL ? d->name : "?";
}

const char *
mcs_bin_status_text(uint16_t status)
{
    const struct status_def *d = status_find(status);
    return d != NULL ? d->text : NULL;
}

bool
mcs_bin_quiet_suppresses(uint8_t opcode, uint16_t status)
{
    if (!op_defs[opcode].quiet) {
        return false;
    }
    switch (op_defs[opcode].base) {
    case MCS_BIN_OP_GET:
    case MCS_BIN_OP_GETK:
    case MCS_BIN_OP_GAT:
    case MCS_BIN_OP_GATK:
        return status == MCS_BIN_STATUS_KEY_ENOENT;
    default:
        return status == MCS_BIN_STATUS_SUCCESS;
    }
}

/* Requests ------------------------------------------------------------------ */

/* The header fields the checks need, host order. */
struct header {
    uint8_t  magic;
    uint8_t  opcode;
    uint16_t key_len;
    uint8_t  extras_len;
    uint32_t body_len;
};

static void
read_header(const char *buf, struct header *h, struct mcs_bin_req *req)
{
    h->magic = (uint8_t)buf[0];
    h->opcode = (uint8_t)buf[1];
    h->key_len = get16(buf + 2);
    h->extras_len = (uint8_t)buf[4];
    h->body_len = get32(buf + 8);
    req->opcode = h->opcode;
    req->base = mcs_bin_op_base(h->opcode);
    req->quiet = mcs_bin_op_quiet(h->opcode);
    req->route = mcs_bin_op_route(h->opcode);
    req->opaque = get32(buf + 12);
    req->cas = get64(buf + 16);
    req->body_len = h->body_len;
    req->extras_len = h->extras_len;
    req->key_len = h->key_len;
}

/* Consume the header now, skip `skip` more bytes later (status 0 REPLYs). */
static enum mcs_bin_result
reply_skip(struct mcs_bin_parser *p, struct mcs_bin_req *req, uint16_t status, uint64_t skip)
{
    req->status = status;
    req->len = MCS_BIN_HEADER_LEN;
    p->swallow = skip;
    return MCS_BIN_REPLY;
}

static enum mcs_bin_result
close_with(struct mcs_bin_req *req, uint16_t status)
{
    req->status = status;
    req->len = MCS_BIN_HEADER_LEN;
    return MCS_BIN_CLOSE;
}

/* memcached hands the number of bytes to skip around as an int: a count of
 * 2^31 or more is negative there, and nothing is skipped. */
static uint64_t
memcached_skip(uint32_t n)
{
    return n <= INT32_MAX ? n : 0;
}

/* The per-opcode length checks of dispatch_bin_command. */
static bool
lengths_ok(const struct op_def *d, const struct header *h)
{
    uint64_t fixed = (uint64_t)h->extras_len + h->key_len;
    if (h->extras_len != d->extras_len && h->extras_len != d->extras_alt) {
        return false;
    }
    if ((d->key == MCS_BIN_KEY_NONE && h->key_len != 0) || (d->key == MCS_BIN_KEY_NEED && h->key_len == 0)) {
        return false;
    }
    return d->value != MCS_BIN_VALUE_NONE || h->body_len == fixed;
}

static void
decode_extras(const char *ext, struct mcs_bin_req *req)
{
    switch (req->base) {
    case MCS_BIN_OP_SET:
    case MCS_BIN_OP_ADD:
    case MCS_BIN_OP_REPLACE:
        req->flags = get32(ext);
        req->exptime = get32(ext + 4);
        break;
    case MCS_BIN_OP_INCREMENT:
    case MCS_BIN_OP_DECREMENT:
        req->delta = get64(ext);
        req->initial = get64(ext + 8);
        req->exptime = get32(ext + 16);
        break;
    case MCS_BIN_OP_TOUCH:
    case MCS_BIN_OP_GAT:
    case MCS_BIN_OP_GATK:
        req->exptime = get32(ext);
        break;
    case MCS_BIN_OP_FLUSH:
        req->exptime = req->extras_len == 4 ? get32(ext) : 0;
        break;
    default:
        break;
    }
}

/* A served request that passed the checks: wait for it whole, then set spans. */
static enum mcs_bin_result
accept_request(struct mcs_bin_parser *p, const char *buf, size_t len, uint32_t item_max, const struct op_def *d,
               const struct header *h, struct mcs_bin_req *req)
{
    uint64_t fixed = (uint64_t)h->extras_len + h->key_len;
    uint64_t value_len = d->value == MCS_BIN_VALUE_ANY ? h->body_len - fixed : 0;
    if (value_len > item_max || MCS_BIN_HEADER_LEN + fixed + value_len > UINT32_MAX) {
        if (d->base == MCS_BIN_OP_SET) {
            /* memcached reads the key first and drops its old value: wait for it */
            if (MCS_BIN_HEADER_LEN + fixed > len) {
                return MCS_BIN_MORE;
            }
            req->key_off = MCS_BIN_HEADER_LEN + h->extras_len;
            req->key_len = h->key_len;
            req->drop_key = true;
        }
        return reply_skip(p, req, MCS_BIN_STATUS_E2BIG, fixed + value_len);
    }
    uint64_t total = MCS_BIN_HEADER_LEN + fixed + value_len;
    if (total > len) {
        return MCS_BIN_MORE;
    }
    req->len = (uint32_t)total;
    req->extras_off = MCS_BIN_HEADER_LEN;
    req->key_off = MCS_BIN_HEADER_LEN + h->extras_len;
    req->value_off = req->key_off + h->key_len;
    req->value_len = (uint32_t)value_len;
    decode_extras(buf + req->extras_off, req);
    return MCS_BIN_OK;
}

/* Continues skipping a rejected body. */
static enum mcs_bin_result
swallow(struct mcs_bin_parser *p, size_t len, struct mcs_bin_req *req)
{
    if (len == 0) {
        return MCS_BIN_MORE;
    }
    uint64_t n = len < p->swallow ? len : p->swallow;
    if (n > UINT32_MAX) {
        n = UINT32_MAX;
    }
    p->swallow -= n;
    req->len = (uint32_t)n;
    req->route = MCS_ROUTE_LOCAL;
    return MCS_BIN_REPLY;
}

enum mcs_bin_result
mcs_bin_parse(struct mcs_bin_parser *p, const char *buf, size_t len, uint32_t item_max, struct mcs_bin_req *req)
{
    memset(req, 0, sizeof(*req));
    if (p->swallow > 0) {
        return swallow(p, len, req);
    }
    if (len < MCS_BIN_HEADER_LEN) {
        return MCS_BIN_MORE;
    }
    struct header h;
    read_header(buf, &h, req);
    if (h.magic != MCS_BIN_MAGIC_REQ) {
        return close_with(req, 0);
    }
    uint64_t fixed = (uint64_t)h.extras_len + h.key_len;
    if (fixed > h.body_len) {   /* memcached: key, or key + extras, longer than the body */
        return close_with(req, MCS_BIN_STATUS_UNKNOWN_COMMAND);
    }
    if (h.key_len > MCS_BIN_KEY_MAX) {
        return close_with(req, MCS_BIN_STATUS_EINVAL);
    }
    const struct op_def *d = &op_defs[h.opcode];
    if (!d->known || d->handling == MCS_BIN_UNKNOWN) {
        /* memcached skips the body length again after extras and key */
        return reply_skip(p, req, MCS_BIN_STATUS_UNKNOWN_COMMAND, fixed + memcached_skip(h.body_len));
    }
    if (!lengths_ok(d, &h)) {
        return close_with(req, MCS_BIN_STATUS_EINVAL);
    }
    if (d->handling == MCS_BIN_REFUSE) {
        return reply_skip(p, req, MCS_BIN_STATUS_UNKNOWN_COMMAND, fixed + memcached_skip(h.body_len - h.key_len));
    }
    return accept_request(p, buf, len, item_max, d, &h, req);
}

/* Responses ----------------------------------------------------------------- */

enum mcs_resp_status
mcs_bin_resp_parse(const char *buf, size_t len, uint32_t value_max, struct mcs_bin_resp *resp)
{
    memset(resp, 0, sizeof(*resp));
    if (len < MCS_BIN_HEADER_LEN) {
        return len > 0 && (uint8_t)buf[0] != MCS_BIN_MAGIC_RES ? MCS_RESP_BAD : MCS_RESP_MORE;
    }
    if ((uint8_t)buf[0] != MCS_BIN_MAGIC_RES) {
        return MCS_RESP_BAD;
    }
    resp->opcode = (uint8_t)buf[1];
    resp->key_len = get16(buf + 2);
    resp->extras_len = (uint8_t)buf[4];
    resp->status = get16(buf + 6);
    uint32_t body_len = get32(buf + 8);
    resp->opaque = get32(buf + 12);
    resp->cas = get64(buf + 16);
    uint64_t fixed = (uint64_t)resp->extras_len + resp->key_len;
    if (fixed > body_len || body_len - fixed > value_max) {
        return MCS_RESP_BAD;
    }
    uint64_t total = (uint64_t)MCS_BIN_HEADER_LEN + body_len;
    if (total > len) {
        return MCS_RESP_MORE;
    }
    resp->len = (uint32_t)total;
    resp->extras_off = MCS_BIN_HEADER_LEN;
    resp->key_off = MCS_BIN_HEADER_LEN + resp->extras_len;
    resp->value_off = resp->key_off + resp->key_len;
    resp->value_len = body_len - (uint32_t)fixed;
    return MCS_RESP_OK;
}

/* Builders ------------------------------------------------------------------ */

static void
write_header(char *p, uint8_t magic, uint8_t opcode, uint16_t status, uint8_t extras_len, uint16_t key_len,
             uint32_t body_len, uint32_t opaque, uint64_t cas)
{
    p[0] = (char)magic;
    p[1] = (char)opcode;
    put16(p + 2, key_len);
    p[4] = (char)extras_len;
    p[5] = 0;   /* data type: raw bytes */
    put16(p + 6, status);
    put32(p + 8, body_len);
    put32(p + 12, opaque);
    put64(p + 16, cas);
}

int
mcs_bin_put_resp_header(struct mcs_buf *b, uint8_t opcode, uint16_t status, uint8_t extras_len, uint16_t key_len,
                        uint32_t body_len, uint32_t opaque, uint64_t cas)
{
    if (mcs_buf_reserve(b, MCS_BIN_HEADER_LEN) != 0) {
        return -1;
    }
    write_header(b->data + b->end, MCS_BIN_MAGIC_RES, opcode, status, extras_len, key_len, body_len, opaque, cas);
    b->end += MCS_BIN_HEADER_LEN;
    return 0;
}

static void
append_span(struct mcs_buf *b, const char *p, size_t n)
{
    if (n > 0) {
        memcpy(b->data + b->end, p, n);
        b->end += n;
    }
}

/* Writes a whole packet, or nothing. */
static int
put_packet(struct mcs_buf *b, uint8_t magic, uint16_t status, const struct mcs_bin_msg *m)
{
    uint64_t body = (uint64_t)m->extras_len + m->key_len + m->value_len;
    if (body > UINT32_MAX || mcs_buf_reserve(b, MCS_BIN_HEADER_LEN + (size_t)body) != 0) {
        return -1;
    }
    write_header(b->data + b->end, magic, m->opcode, status, m->extras_len, m->key_len, (uint32_t)body, m->opaque,
                 m->cas);
    b->end += MCS_BIN_HEADER_LEN;
    append_span(b, m->extras, m->extras_len);
    append_span(b, m->key, m->key_len);
    append_span(b, m->value, m->value_len);
    return 0;
}

int
mcs_bin_put_response(struct mcs_buf *b, const struct mcs_bin_msg *m)
{
    return put_packet(b, MCS_BIN_MAGIC_RES, m->status, m);
}

int
mcs_bin_put_request(struct mcs_buf *b, const struct mcs_bin_msg *m)
{
    return put_packet(b, MCS_BIN_MAGIC_REQ, 0, m);
}

int
mcs_bin_put_error(struct mcs_buf *b, uint8_t opcode, uint16_t status, uint32_t opaque)
{
    const char *text = mcs_bin_status_text(status);
    struct mcs_bin_msg m = {
        .opcode = opcode,
        .status = status,
        .opaque = opaque,
        .value = text,
        .value_len = text != NULL ? (uint32_t)strlen(text) : 0,
    };
    return mcs_bin_put_response(b, &m);
}

bool
mcs_bin_reply_fits(uint8_t opcode, uint32_t opaque, const struct mcs_bin_resp *resp)
{
    if (resp->opcode != opcode || resp->opaque != opaque || strcmp(mcs_bin_status_name(resp->status), "?") == 0) {
        return false;
    }
    bool with_key = opcode == MCS_BIN_OP_GETK || opcode == MCS_BIN_OP_GATK;
    if (resp->status != MCS_BIN_STATUS_SUCCESS) {
        return resp->extras_len == 0 && (resp->key_len == 0 || with_key);
    }
    switch (opcode) {
    case MCS_BIN_OP_GET:
    case MCS_BIN_OP_GAT:
    case MCS_BIN_OP_GETK:
    case MCS_BIN_OP_GATK:
        return resp->extras_len == 4 && (resp->key_len > 0) == with_key;
    case MCS_BIN_OP_TOUCH:
        return resp->extras_len == 4 && resp->key_len == 0 && resp->value_len == 0;   /* memcached sends the flags */
    case MCS_BIN_OP_INCREMENT:
    case MCS_BIN_OP_DECREMENT:
        return resp->extras_len == 0 && resp->key_len == 0 && resp->value_len == 8;
    case MCS_BIN_OP_VERSION:
        return resp->extras_len == 0 && resp->key_len == 0 && resp->value_len > 0;
    default:
        return resp->extras_len == 0 && resp->key_len == 0 && resp->value_len == 0;
    }
}
