/*
 * tests/fuzz/fuzz_binary.c: libFuzzer target for the memcached binary protocol
 * core (preload/core/binary.c; see tests/fuzz/README.md for building and
 * running fuzz targets, and corpus/binary/README for the seeds).
 *
 * The input is a client byte stream. It is fed to mcs_bin_parse as a buffer
 * that grows: all at once, one byte at a time (small inputs), and in chunks
 * of pseudo-random sizes derived from the input, with a small and the default
 * item_max. Every call gets a fresh allocation of exactly the unread bytes,
 * so AddressSanitizer catches a read one byte past them (the feeding, the
 * reply stream walk and CHECK are shared with the other targets in
 * fuzz_common.h; the checks below are this protocol's). Checked:
 *   - every span (extras, key, value) lies inside the request, and the
 *     request inside the bytes given; keys of at most 250 bytes; values of
 *     at most item_max; the extras length is one the opcode allows;
 *   - every OK, every answered REPLY and every CLOSE consumes at least the
 *     24-byte header; a skip (REPLY with status 0) consumes at least a byte;
 *   - the same stream cut differently gives the same packets (consecutive
 *     skips merged);
 *   - each OK request rebuilt with mcs_bin_put_request (in its non-quiet
 *     form) parses back to the same fields; each answer built with
 *     mcs_bin_put_error parses back as a reply with that status.
 * The same bytes are then read as a server's reply stream by
 * mcs_bin_resp_parse: spans inside the packet, the packet alone parses the
 * same, one byte less is MCS_RESP_MORE, and mcs_bin_put_response rebuilds
 * the same bytes apart from the data type.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "preload/core/binary.h"
#include "tests/fuzz/fuzz_common.h"

static bool
extras_allowed(uint8_t base, uint8_t extras_len)
{
    switch (base) {
    case MCS_BIN_OP_SET:
    case MCS_BIN_OP_ADD:
    case MCS_BIN_OP_REPLACE:
        return extras_len == 8;
    case MCS_BIN_OP_INCREMENT:
    case MCS_BIN_OP_DECREMENT:
        return extras_len == 20;
    case MCS_BIN_OP_TOUCH:
    case MCS_BIN_OP_GAT:
    case MCS_BIN_OP_GATK:
        return extras_len == 4;
    case MCS_BIN_OP_FLUSH:
        return extras_len == 0 || extras_len == 4;
    default:
        return extras_len == 0;
    }
}

/* The request rebuilt in its non-quiet form parses back the same. */
static void
check_rebuild(const char *buf, const struct mcs_bin_req *r, uint32_t item_max)
{
    struct mcs_bin_msg m = {
        .opcode = r->base, .opaque = r->opaque, .cas = r->cas,
        .extras = buf + r->extras_off, .extras_len = r->extras_len,
        .key = buf + r->key_off, .key_len = r->key_len,
        .value = buf + r->value_off, .value_len = r->value_len,
    };
    struct mcs_buf b = { 0 };
    CHECK(mcs_bin_put_request(&b, &m) == 0);
    struct mcs_bin_parser p = { 0 };
    struct mcs_bin_req r2;
    CHECK(mcs_bin_parse(&p, mcs_buf_head(&b), mcs_buf_len(&b), item_max, &r2) == MCS_BIN_OK);
    CHECK(r2.len == mcs_buf_len(&b));
    CHECK(r2.len == MCS_BIN_HEADER_LEN + (uint64_t)r->extras_len + r->key_len + r->value_len);
    CHECK(r2.opcode == r->base && r2.base == r->base && !r2.quiet && r2.route == r->route);
    CHECK(r2.opaque == r->opaque && r2.cas == r->cas);
    CHECK(r2.extras_len == r->extras_len && r2.key_len == r->key_len && r2.value_len == r->value_len);
    CHECK(memcmp(mcs_buf_head(&b) + r2.key_off, buf + r->key_off, r->key_len) == 0);
    CHECK(r->value_len == 0 || memcmp(mcs_buf_head(&b) + r2.value_off, buf + r->value_off, r->value_len) == 0);
    CHECK(r2.flags == r->flags && r2.exptime == r->exptime && r2.delta == r->delta && r2.initial == r->initial);
    mcs_buf_free(&b);
}

/* The error answer built for a REPLY/CLOSE parses back as that reply. */
static void
check_error_reply(const struct mcs_bin_req *r)
{
    struct mcs_buf b = { 0 };
    CHECK(mcs_bin_put_error(&b, r->opcode, r->status, r->opaque) == 0);
    struct mcs_bin_resp resp;
    CHECK(mcs_bin_resp_parse(mcs_buf_head(&b), mcs_buf_len(&b), 1024, &resp) == MCS_RESP_OK);
    CHECK(resp.len == mcs_buf_len(&b));
    CHECK(resp.opcode == r->opcode && resp.status == r->status && resp.opaque == r->opaque && resp.cas == 0);
    const char *text = mcs_bin_status_text(r->status);
    CHECK(text != NULL);
    CHECK(resp.value_len == strlen(text) && memcmp(mcs_buf_head(&b) + resp.value_off, text, resp.value_len) == 0);
    mcs_buf_free(&b);
}

static void
check_request(const char *buf, size_t avail, uint32_t item_max, enum mcs_bin_result st, const struct mcs_bin_req *r)
{
    CHECK(r->len > 0 && r->len <= avail);
    if (st == MCS_BIN_REPLY && r->status == 0) {
        return;     /* skipping the rest of a rejected body */
    }
    CHECK(r->len >= MCS_BIN_HEADER_LEN);
    CHECK(r->opcode == (uint8_t)buf[1]);
    if (st != MCS_BIN_OK) {
        CHECK(r->len == MCS_BIN_HEADER_LEN);
        if (r->status != 0) {
            check_error_reply(r);
        } else {
            CHECK(st == MCS_BIN_CLOSE && (uint8_t)buf[0] != MCS_BIN_MAGIC_REQ);
        }
        return;
    }
    CHECK((uint8_t)buf[0] == MCS_BIN_MAGIC_REQ);
    CHECK(r->status == 0);
    CHECK(mcs_bin_op_known(r->opcode));
    CHECK(r->base == mcs_bin_op_base(r->opcode) && r->quiet == mcs_bin_op_quiet(r->opcode));
    CHECK(extras_allowed(r->base, r->extras_len));
    CHECK(r->key_len <= MCS_BIN_KEY_MAX);
    CHECK(r->value_len <= item_max);
    CHECK(r->extras_off == MCS_BIN_HEADER_LEN);
    CHECK(r->key_off == r->extras_off + r->extras_len);
    CHECK(r->value_off == r->key_off + r->key_len);
    CHECK((uint64_t)r->value_off + r->value_len <= r->len);
    CHECK(r->value_len == 0 || (uint64_t)r->value_off + r->value_len == r->len);
    CHECK((uint64_t)r->len <= MCS_BIN_HEADER_LEN + (uint64_t)r->body_len);
    check_rebuild(buf, r, item_max);
}

/* fuzz_parser.reset: a fresh parser. */
static void
reset_request(void *ctx)
{
    *(struct mcs_bin_parser *)ctx = (struct mcs_bin_parser){ 0 };
}

/* fuzz_parser.parse: one packet, checked and reduced to an event. */
static bool
parse_request(void *ctx, const char *buf, size_t len, uint32_t item_max, struct fuzz_event *ev)
{
    struct mcs_bin_req r;
    enum mcs_bin_result st = mcs_bin_parse(ctx, buf, len, item_max, &r);
    if (st == MCS_BIN_MORE) {
        return false;
    }
    check_request(buf, len, item_max, st, &r);
    ev->status = st;
    ev->what = r.opcode;
    ev->code = r.status;
    ev->len = r.len;
    /* skipping the rest of a rejected body */
    ev->skip = st == MCS_BIN_REPLY && r.status == 0;
    ev->close = st == MCS_BIN_CLOSE;
    return true;
}

/* The reply packet rebuilt from its fields gives the same bytes (the data
 * type byte, which the builders write 0, aside). */
static void
check_resp_rebuild(const char *win, const struct mcs_bin_resp *r)
{
    struct mcs_bin_msg m = {
        .opcode = r->opcode, .status = r->status, .opaque = r->opaque, .cas = r->cas,
        .extras = win + r->extras_off, .extras_len = r->extras_len,
        .key = win + r->key_off, .key_len = r->key_len,
        .value = win + r->value_off, .value_len = r->value_len,
    };
    struct mcs_buf b = { 0 };
    CHECK(mcs_bin_put_response(&b, &m) == 0);
    CHECK(mcs_buf_len(&b) == r->len);
    CHECK(memcmp(mcs_buf_head(&b), win, 5) == 0);
    CHECK(memcmp(mcs_buf_head(&b) + 6, win + 6, r->len - 6) == 0);
    mcs_buf_free(&b);
}

static uint32_t
be32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

/* A fuzz_reply_fn: one packet, checked, or checked against the one kept. */
static enum mcs_resp_status
parse_reply(void *kept, const char *buf, size_t len, uint32_t value_max, bool alone, size_t *item_len)
{
    struct mcs_bin_resp r, *k = kept;
    enum mcs_resp_status st = mcs_bin_resp_parse(buf, len, value_max, &r);
    if (st == MCS_RESP_MORE && !alone) {
        CHECK(len < MCS_BIN_HEADER_LEN || MCS_BIN_HEADER_LEN + (uint64_t)be32(buf + 8) > len);
    }
    if (st != MCS_RESP_OK) {
        return st;
    }
    *item_len = r.len;
    if (alone) {
        CHECK(r.len == k->len && r.opcode == k->opcode && r.status == k->status && r.opaque == k->opaque);
        CHECK(r.cas == k->cas && r.extras_len == k->extras_len && r.key_len == k->key_len);
        CHECK(r.value_off == k->value_off && r.value_len == k->value_len);
        check_resp_rebuild(buf, k);
        return st;
    }
    CHECK(r.len >= MCS_BIN_HEADER_LEN && r.len <= len);
    CHECK(r.extras_off == MCS_BIN_HEADER_LEN && r.key_off == r.extras_off + r.extras_len);
    CHECK(r.value_off == r.key_off + r.key_len && (uint64_t)r.value_off + r.value_len == r.len);
    CHECK(r.value_len <= value_max);
    *k = r;
    return st;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint32_t small_max[] = { 0, 1, 5, 16, 100, 1024 };
    uint64_t seed = fuzz_seed(data, size);
    struct mcs_bin_parser parser;
    struct mcs_bin_resp kept;
    const struct fuzz_parser requests = { .ctx = &parser, .reset = reset_request, .parse = parse_request };
    fuzz_run(&requests, parse_reply, &kept, data, size, seed, small_max[seed % 6]);
    return 0;
}
