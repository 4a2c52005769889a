/*
 * tests/fuzz/fuzz_binary.c: libFuzzer target for the memcached binary protocol
 * core (preload/core/binary.c; see tests/fuzz/README.md for building and
 * running fuzz targets, and corpus/binary/README for the seeds).
 *
 * The input is a client byte stream. It is fed to mcs_bin_parse as a buffer
 * that grows: all at once, one byte at a time (small inputs), and in chunks
 * of pseudo-random sizes derived from the input, with a small and the default
 * item_max. Every call gets a fresh allocation of exactly the unread bytes,
 * so AddressSanitizer catches a read one byte past them. Checked:
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
#include <stdlib.h>
#include <string.h>

#include "preload/core/binary.h"

#define MAX_EVENTS 65536

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* One parse result, reduced to what must not depend on segmentation. */
struct event {
    enum mcs_bin_result st;
    uint8_t  opcode;
    uint16_t status;
    uint32_t len;
};

struct run {
    struct event ev[MAX_EVENTS];
    size_t n;
};

static struct run run_a, run_b;

#define CHECK(cond)          \
    do {                     \
        if (!(cond)) {       \
            abort();         \
        }                    \
    } while (0)

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

static uint64_t
mix(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static void
record(struct run *out, enum mcs_bin_result st, const struct mcs_bin_req *r)
{
    if (st == MCS_BIN_REPLY && r->status == 0 && out->n > 0 && out->ev[out->n - 1].st == MCS_BIN_REPLY
        && out->ev[out->n - 1].status == 0) {
        out->ev[out->n - 1].len += r->len;
        return;
    }
    CHECK(out->n < MAX_EVENTS);
    out->ev[out->n].st = st;
    out->ev[out->n].opcode = r->opcode;
    out->ev[out->n].status = r->status;
    out->ev[out->n].len = r->len;
    out->n++;
}

/* Feeds data as a growing buffer; chunk 0 means random sizes from seed. */
static void
feed(const char *data, size_t size, size_t chunk, uint64_t seed, uint32_t item_max, struct run *out)
{
    struct mcs_bin_parser p = { 0 };
    size_t consumed = 0, received = 0;
    out->n = 0;
    while (consumed < size && received < size) {
        size_t step = chunk ? chunk : 1 + mix(&seed) % (mix(&seed) % 4 == 0 ? 4096 : 64);
        received = received + step > size ? size : received + step;
        for (;;) {
            size_t avail = received - consumed;
            char *win = malloc(avail ? avail : 1);
            CHECK(win != NULL);
            memcpy(win, data + consumed, avail);
            struct mcs_bin_req r;
            enum mcs_bin_result st = mcs_bin_parse(&p, win, avail, item_max, &r);
            if (st != MCS_BIN_MORE) {
                check_request(win, avail, item_max, st, &r);
            }
            free(win);
            if (st == MCS_BIN_MORE) {
                break;
            }
            record(out, st, &r);
            consumed += r.len;
            if (st == MCS_BIN_CLOSE) {
                return;
            }
        }
    }
}

static void
compare(const struct run *a, const struct run *b)
{
    CHECK(a->n == b->n);
    for (size_t i = 0; i < a->n; i++) {
        CHECK(a->ev[i].st == b->ev[i].st);
        CHECK(a->ev[i].opcode == b->ev[i].opcode || (a->ev[i].st == MCS_BIN_REPLY && a->ev[i].status == 0));
        CHECK(a->ev[i].status == b->ev[i].status);
        CHECK(a->ev[i].len == b->ev[i].len);
    }
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

static void
fuzz_responses(const char *data, size_t size, uint32_t value_max)
{
    size_t off = 0;
    while (off < size) {
        size_t avail = size - off;
        char *win = malloc(avail);
        CHECK(win != NULL);
        memcpy(win, data + off, avail);
        struct mcs_bin_resp r;
        enum mcs_resp_status st = mcs_bin_resp_parse(win, avail, value_max, &r);
        free(win);
        if (st == MCS_RESP_MORE) {
            CHECK(avail < MCS_BIN_HEADER_LEN || MCS_BIN_HEADER_LEN + (uint64_t)be32(data + off + 8) > avail);
        }
        if (st != MCS_RESP_OK) {
            return;
        }
        CHECK(r.len >= MCS_BIN_HEADER_LEN && r.len <= avail);
        CHECK(r.extras_off == MCS_BIN_HEADER_LEN && r.key_off == r.extras_off + r.extras_len);
        CHECK(r.value_off == r.key_off + r.key_len && (uint64_t)r.value_off + r.value_len == r.len);
        CHECK(r.value_len <= value_max);
        /* the packet alone parses the same; one byte less is not a packet */
        win = malloc(r.len);
        CHECK(win != NULL);
        memcpy(win, data + off, r.len);
        struct mcs_bin_resp r2;
        CHECK(mcs_bin_resp_parse(win, r.len, value_max, &r2) == MCS_RESP_OK);
        CHECK(r2.len == r.len && r2.opcode == r.opcode && r2.status == r.status && r2.opaque == r.opaque);
        CHECK(r2.cas == r.cas && r2.extras_len == r.extras_len && r2.key_len == r.key_len);
        CHECK(r2.value_off == r.value_off && r2.value_len == r.value_len);
        CHECK(mcs_bin_resp_parse(win, r.len - 1, value_max, &r2) == MCS_RESP_MORE);
        check_resp_rebuild(win, &r);
        free(win);
        off += r.len;
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *bytes = (const char *)data;
    uint64_t seed = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < size; i++) {
        seed = (seed ^ data[i]) * 0x100000001b3ull;
    }
    seed |= 1;
    static const uint32_t small_max[] = { 0, 1, 5, 16, 100, 1024 };
    uint32_t item_maxes[] = { small_max[seed % 6], 1048576 };

    for (size_t m = 0; m < 2; m++) {
        feed(bytes, size, size ? size : 1, 0, item_maxes[m], &run_a);
        feed(bytes, size, 0, seed, item_maxes[m], &run_b);
        compare(&run_a, &run_b);
        if (size <= 2048) {
            feed(bytes, size, 1, 0, item_maxes[m], &run_b);
            compare(&run_a, &run_b);
        }
    }
    fuzz_responses(bytes, size, 1048576);
    fuzz_responses(bytes, size, item_maxes[0]);
    return 0;
}
