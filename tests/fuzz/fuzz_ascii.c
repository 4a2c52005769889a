/*
 * tests/fuzz/fuzz_ascii.c: libFuzzer target for the memcached ASCII parsers
 * (see tests/fuzz/README.md for how to build and run it).
 *
 * The input is a client byte stream. It is fed to mcs_ascii_parse as a buffer
 * that grows: all at once, one byte at a time (small inputs), and in chunks of
 * pseudo-random sizes derived from the input, with a small and the default
 * item_max. Every call gets a fresh allocation of exactly the unread bytes, so
 * AddressSanitizer catches a read one byte past them (the feeding, the reply
 * stream walk and CHECK are shared with the other targets in fuzz_common.h;
 * the checks below are this protocol's). Checked:
 *   - every result's spans lie inside the bytes given (len <= available, key,
 *     keys, data, noreply and args spans inside the line or the request);
 *   - storage commands: data_off + data_len + 2 == len, ending "\r\n";
 *   - every OK/REPLY/CLOSE consumes at least one byte (no endless loop);
 *   - the same stream cut differently gives the same requests, unless a
 *     line-length limit closed the connection (that depends on segmentation,
 *     as in memcached itself).
 * The same bytes are then read as a server's reply stream by
 * mcs_ascii_resp_parse: items inside the buffer, VALUE blocks ending "\r\n",
 * and one byte less than an item is never a complete item.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "preload/core/ascii.h"
#include "tests/fuzz/fuzz_common.h"

static bool
is_storage(enum mcs_cmd cmd)
{
    return cmd == MCS_CMD_SET || cmd == MCS_CMD_ADD || cmd == MCS_CMD_REPLACE || cmd == MCS_CMD_APPEND
           || cmd == MCS_CMD_PREPEND || cmd == MCS_CMD_CAS;
}

static void
check_request(const char *buf, size_t avail, uint32_t item_max, enum mcs_ascii_status st,
              const struct mcs_ascii_req *r)
{
    CHECK(r->len > 0 && r->len <= avail);
    if (st != MCS_ASCII_OK) {
        if (r->reply != NULL) {
            size_t n = strlen(r->reply);
            CHECK(n >= 2 && r->reply[n - 2] == '\r' && r->reply[n - 1] == '\n');
        }
        return;
    }
    CHECK(r->reply == NULL);
    CHECK(r->cmd < MCS_CMD_COUNT);
    CHECK(r->line_len > 0 && r->line_len <= r->len);
    CHECK(buf[r->line_len - 1] == '\n');
    CHECK(r->eol_off < r->line_len);
    CHECK(r->eol_off + 1 == r->line_len || (r->eol_off + 2 == r->line_len && buf[r->eol_off] == '\r'));
    CHECK(memchr(buf, '\n', r->line_len - 1) == NULL);
    CHECK((uint64_t)r->key_off + r->key_len <= r->eol_off);
    CHECK(r->key_len <= MCS_ASCII_KEY_MAX);
    CHECK((uint64_t)r->args_off + r->args_len <= r->eol_off);
    if (r->noreply) {
        CHECK(r->noreply_len >= 8);
        CHECK((uint64_t)r->noreply_off + r->noreply_len <= r->eol_off);
        CHECK(buf[r->noreply_off] == ' ');
    } else {
        CHECK(r->noreply_len == 0);
    }
    if (mcs_cmd_route(r->cmd) == MCS_ROUTE_KEYS) {
        CHECK(r->nkeys >= 1 && r->key_len >= 1);
        CHECK(r->keys_end <= r->eol_off && r->key_off + r->key_len <= r->keys_end);
        uint32_t pos = r->key_off, off, len, n = 0;
        while (mcs_ascii_next_token(buf, &pos, r->keys_end, &off, &len)) {
            CHECK(len <= MCS_ASCII_KEY_MAX);
            n++;
        }
        CHECK(n == r->nkeys);
    } else if (mcs_cmd_route(r->cmd) == MCS_ROUTE_KEY) {
        CHECK(r->key_len >= 1);
    }
    if (is_storage(r->cmd)) {
        CHECK(r->data_off == r->line_len);
        CHECK((uint64_t)r->data_off + r->data_len + 2 == r->len);
        CHECK(r->data_len <= item_max);
        CHECK(buf[r->len - 2] == '\r' && buf[r->len - 1] == '\n');
    } else {
        CHECK(r->len == r->line_len);
        CHECK(r->data_len == 0);
    }
}

/* fuzz_parser.reset: a fresh parser. */
static void
reset_request(void *ctx)
{
    *(struct mcs_ascii_parser *)ctx = (struct mcs_ascii_parser){ 0 };
}

/* fuzz_parser.parse: one request, checked and reduced to an event. */
static bool
parse_request(void *ctx, const char *buf, size_t len, uint32_t item_max, struct fuzz_event *ev)
{
    struct mcs_ascii_req r;
    enum mcs_ascii_status st = mcs_ascii_parse(ctx, buf, len, item_max, &r);
    if (st == MCS_ASCII_MORE) {
        return false;
    }
    check_request(buf, len, item_max, st, &r);
    ev->status = st;
    ev->what = st == MCS_ASCII_OK ? (int)r.cmd : (int)MCS_CMD_COUNT;
    ev->len = r.len;
    ev->reply = r.reply;
    /* silent skips (noreply errors, swallowed values) */
    ev->skip = st == MCS_ASCII_REPLY && r.reply == NULL;
    ev->close = st == MCS_ASCII_CLOSE;
    return true;
}

/* A fuzz_reply_fn: one reply, checked, or checked against the one kept. */
static enum mcs_resp_status
parse_reply(void *kept, const char *buf, size_t len, uint32_t value_max, bool alone, size_t *item_len)
{
    struct mcs_ascii_resp r, *k = kept;
    enum mcs_resp_status st = mcs_ascii_resp_parse(buf, len, value_max, &r);
    if (st != MCS_RESP_OK) {
        return st;
    }
    *item_len = r.len;
    if (alone) {
        CHECK(r.len == k->len && r.kind == k->kind && r.error == k->error);
        return st;
    }
    CHECK(r.len > 0 && r.len <= len);
    CHECK(buf[r.len - 1] == '\n');
    if (r.kind == MCS_RESP_VALUE) {
        CHECK(r.len >= 2 && buf[r.len - 2] == '\r');
        CHECK(r.key_len > 0 && (uint64_t)r.key_off + r.key_len < r.len);
    }
    CHECK(!r.error || r.kind == MCS_RESP_LINE);
    *k = r;
    return st;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a seed for chunk sizes and a small item_max, both from the input */
    static const uint32_t small_max[] = { 1, 5, 16, 100, 1024 };
    uint64_t seed = fuzz_seed(data, size);
    struct mcs_ascii_parser parser;
    struct mcs_ascii_resp kept;
    const struct fuzz_parser requests = {
        .ctx = &parser, .reset = reset_request, .parse = parse_request,
        .close_depends_on_cut = true,   /* line-length limits, as in memcached */
    };
    fuzz_run(&requests, parse_reply, &kept, data, size, seed, small_max[seed % 5]);
    return 0;
}
