/*
 * tests/fuzz/fuzz_meta.c: libFuzzer target for the memcached meta protocol
 * parsers (see tests/fuzz/README.md for how to build and run it).
 *
 * The input is a client byte stream. It is fed to mcs_meta_parse as a buffer
 * that grows: all at once, one byte at a time (small inputs), and in chunks of
 * pseudo-random sizes derived from the input, with a small and the default
 * item_max, and with the newer flags off and on. Every call gets a fresh
 * allocation of exactly the unread bytes, so AddressSanitizer catches a read
 * one byte past them (the feeding, the reply stream walk and CHECK are shared
 * with the other targets in fuzz_common.h; the checks below are this
 * protocol's). Checked:
 *   - every result's spans lie inside the bytes given (len <= available; key,
 *     flags, opaque inside the line; ms data inside the request, ending
 *     "\r\n"); keys of at most 250 bytes, a b key decodes as stored;
 *   - every OK/REPLY/CLOSE consumes at least one byte (no endless loop), and
 *     replies end "\r\n";
 *   - an OK request rewritten without q (mcs_meta_rewrite) parses back to the
 *     same command, key and data, without q;
 *   - the same stream cut differently gives the same events (the line limit
 *     does not depend on the cut either).
 * The same bytes are then read as a server's reply stream by
 * mcs_meta_resp_parse: items inside the buffer, VA blocks ending "\r\n", an
 * item parses the same on its own and one byte less of it is MCS_RESP_MORE.
 * Finally the first bytes, as a binary key, must survive mcs_meta_build and
 * parse back to the same decoded key.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "preload/core/meta.h"
#include "tests/fuzz/fuzz_common.h"

static bool
span_in(uint32_t off, uint32_t len, uint32_t lo, uint32_t hi)
{
    return off >= lo && (uint64_t)off + len <= hi;
}

/* Rewritten without q, an OK request parses back to the same one. */
static void
check_rewrite(const char *buf, bool newer, uint32_t item_max, const struct mcs_meta_req *r)
{
    struct mcs_buf out = { 0 };
    CHECK(mcs_meta_rewrite(buf, r, "q", NULL, &out) == 0);
    size_t n = mcs_buf_len(&out);
    char *w = fuzz_copy(mcs_buf_head(&out), n);
    mcs_buf_free(&out);
    struct mcs_meta_parser p = { .newer_flags = newer };
    struct mcs_meta_req b;
    CHECK(mcs_meta_parse(&p, w, n, item_max, &b) == MCS_META_OK);
    CHECK(b.len == n && b.cmd == r->cmd);
    CHECK(b.key_len == r->key_len && memcmp(w + b.key_off, buf + r->key_off, r->key_len) == 0);
    CHECK(b.data_len == r->data_len && memcmp(w + b.data_off, buf + r->data_off, r->data_len) == 0);
    CHECK(b.key_bin_len == r->key_bin_len && memcmp(b.key_bin, r->key_bin, r->key_bin_len) == 0);
    if (r->cmd != MCS_META_ME) {
        CHECK(b.flags == (r->flags & ~mcs_meta_flag_bit('q')));
        CHECK(b.write == r->write && b.ttl == r->ttl && b.compare_cas == r->compare_cas);
    }
    free(w);
}

static void
check_request(const char *buf, size_t avail, uint32_t item_max, bool newer, enum mcs_meta_status st,
              const struct mcs_meta_req *r)
{
    CHECK(r->len > 0 && r->len <= avail);
    if (st != MCS_META_OK) {
        CHECK(st != MCS_META_CLOSE || r->reply == NULL);
        if (r->reply != NULL) {
            size_t n = strlen(r->reply);
            CHECK(n >= 2 && r->reply[n - 2] == '\r' && r->reply[n - 1] == '\n');
        }
        return;
    }
    CHECK(r->reply == NULL);
    CHECK(r->cmd < MCS_META_CMD_COUNT);
    CHECK(r->line_len > 0 && r->line_len <= r->len && r->line_len <= MCS_META_LINE_MAX + 1);
    CHECK(buf[r->line_len - 1] == '\n');
    CHECK(memchr(buf, '\n', r->line_len - 1) == NULL);
    CHECK(memchr(buf, '\0', r->eol_off) == NULL);
    CHECK(r->eol_off + 1 == r->line_len || (r->eol_off + 2 == r->line_len && buf[r->eol_off] == '\r'));
    CHECK(span_in(r->key_off, r->key_len, 0, r->eol_off));
    CHECK(r->key_len <= MCS_META_KEY_MAX);
    CHECK((r->key_len == 0) == (r->cmd == MCS_META_MN));
    CHECK(r->flags_len == 0 || span_in(r->flags_off, r->flags_len, r->key_off + r->key_len + 1, r->eol_off));
    CHECK(r->opaque_len == 0 || span_in(r->opaque_off, r->opaque_len, r->flags_off, r->flags_off + r->flags_len));
    CHECK(r->opaque_len < MCS_META_OPAQUE_MAX);
    CHECK(r->quiet == mcs_meta_has_flag(r, 'q'));
    if (r->base64) {
        uint8_t bin[MCS_META_KEY_MAX];
        size_t n = mcs_meta_base64_decode(buf + r->key_off, r->key_len, bin, sizeof(bin));
        CHECK(n > 0 && n <= 186 && n == r->key_bin_len && memcmp(bin, r->key_bin, n) == 0);
    }
    CHECK(r->write == (r->cmd == MCS_META_MS || r->cmd == MCS_META_MD || r->cmd == MCS_META_MA
                       || (r->cmd == MCS_META_MG && (r->flags & (mcs_meta_flag_bit('T') | mcs_meta_flag_bit('N')
                                                                  | mcs_meta_flag_bit('E'))) != 0)));
    if (r->cmd == MCS_META_MS) {
        CHECK(r->data_off == r->line_len);
        CHECK((uint64_t)r->data_off + r->data_len + 2 == r->len);
        CHECK(r->data_len <= item_max);
        CHECK(buf[r->len - 2] == '\r' && buf[r->len - 1] == '\n');
    } else {
        CHECK(r->len == r->line_len && r->data_len == 0);
    }
    check_rewrite(buf, newer, item_max, r);
}

/* The request side: a parser and whether the newer flags are on. */
struct request_ctx {
    struct mcs_meta_parser parser;
    bool newer;
};

/* fuzz_parser.reset: a fresh parser. */
static void
reset_request(void *ctx)
{
    struct request_ctx *c = ctx;
    c->parser = (struct mcs_meta_parser){ .newer_flags = c->newer };
}

/* fuzz_parser.parse: one request, checked and reduced to an event. */
static bool
parse_request(void *ctx, const char *buf, size_t len, uint32_t item_max, struct fuzz_event *ev)
{
    struct request_ctx *c = ctx;
    struct mcs_meta_req r;
    enum mcs_meta_status st = mcs_meta_parse(&c->parser, buf, len, item_max, &r);
    if (st == MCS_META_MORE) {
        return false;
    }
    check_request(buf, len, item_max, c->newer, st, &r);
    ev->status = st;
    ev->what = st == MCS_META_OK ? (int)r.cmd : (int)MCS_META_CMD_COUNT;
    ev->len = r.len;
    ev->reply = r.reply;
    /* silent skips (swallowed values) */
    ev->skip = st == MCS_META_REPLY && r.reply == NULL;
    ev->close = st == MCS_META_CLOSE;
    return true;
}

/* A fuzz_reply_fn: one reply, checked, or checked against the one kept. */
static enum mcs_resp_status
parse_reply(void *kept, const char *buf, size_t len, uint32_t value_max, bool alone, size_t *item_len)
{
    struct mcs_meta_resp r, *k = kept;
    enum mcs_resp_status st = mcs_meta_resp_parse(buf, len, value_max, &r);
    if (st != MCS_RESP_OK) {
        return st;
    }
    *item_len = r.len;
    if (alone) {
        CHECK(r.len == k->len && r.code == k->code && r.flags == k->flags && r.cas == k->cas && r.ttl == k->ttl);
        return st;
    }
    CHECK(r.len > 0 && r.len <= len);
    CHECK(r.code < MCS_META_RESP_COUNT);
    CHECK(r.line_len > 0 && r.line_len <= r.len && buf[r.line_len - 1] == '\n');
    CHECK(r.error == (r.code >= MCS_META_RESP_ERROR));
    CHECK(span_in(r.flags_off, r.flags_len, 0, r.line_len - 1));
    CHECK(span_in(r.key_off, r.key_len, 0, r.line_len - 1));
    CHECK(span_in(r.opaque_off, r.opaque_len, 0, r.line_len - 1));
    if (r.code == MCS_META_RESP_VA) {
        CHECK(r.data_off == r.line_len && (uint64_t)r.data_off + r.data_len + 2 == r.len);
        CHECK(r.data_len <= value_max);
        CHECK(buf[r.len - 2] == '\r' && buf[r.len - 1] == '\n');
    } else {
        CHECK(r.len == r.line_len && r.data_len == 0);
    }
    *k = r;
    return st;
}

/* The first bytes as a binary key survive building and parsing. */
static void
check_binary_key(const uint8_t *data, size_t size)
{
    size_t n = size < 186 ? size : 186;
    if (n == 0) {
        return;
    }
    struct mcs_buf out = { 0 };
    CHECK(mcs_meta_build(&out, (enum mcs_meta_cmd)(data[0] % MCS_META_CMD_COUNT), (const char *)data, n, true,
                         "v", (const char *)data, n) == 0);
    struct mcs_meta_parser p = { 0 };
    struct mcs_meta_req r;
    CHECK(mcs_meta_parse(&p, mcs_buf_head(&out), mcs_buf_len(&out), 1048576, &r) == MCS_META_OK);
    CHECK(r.len == mcs_buf_len(&out));
    if (r.cmd != MCS_META_MN) {
        CHECK(r.base64 && r.key_bin_len == n && memcmp(r.key_bin, data, n) == 0);
    }
    mcs_buf_free(&out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a seed for chunk sizes, a small item_max and the flag set, from the input */
    static const uint32_t small_max[] = { 1, 5, 16, 100, 1024 };
    uint64_t seed = fuzz_seed(data, size);
    struct request_ctx req = { .newer = (seed >> 8) & 1 };
    struct mcs_meta_resp kept;
    const struct fuzz_parser requests = { .ctx = &req, .reset = reset_request, .parse = parse_request };
    fuzz_run(&requests, parse_reply, &kept, data, size, seed, small_max[seed % 5]);
    check_binary_key(data, size);
    return 0;
}
