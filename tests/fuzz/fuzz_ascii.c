/*
 * tests/fuzz/fuzz_ascii.c: libFuzzer target for the memcached ASCII parsers
 * (see tests/fuzz/README.md for how to build and run it).
 *
 * The input is a client byte stream. It is fed to mcs_ascii_parse as a buffer
 * that grows: all at once, one byte at a time (small inputs), and in chunks of
 * pseudo-random sizes derived from the input, with a small and the default
 * item_max. Every call gets a fresh allocation of exactly the unread bytes, so
 * AddressSanitizer catches a read one byte past them. Checked:
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
#include <stdlib.h>
#include <string.h>

#include "preload/core/ascii.h"

#define MAX_EVENTS 65536

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* One parse result, reduced to what must not depend on segmentation. */
struct event {
    enum mcs_ascii_status st;
    enum mcs_cmd cmd;
    uint32_t len;
    const char *reply;
};

/* The events of one pass over the input, and whether it ended in CLOSE. */
struct run {
    struct event ev[MAX_EVENTS];
    size_t n;
    bool closed;
};

static struct run run_a, run_b;

#define CHECK(cond)          \
    do {                     \
        if (!(cond)) {       \
            abort();         \
        }                    \
    } while (0)

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

static uint64_t
mix(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

/* Feeds data as a growing buffer; chunk 0 means random sizes from seed. */
static void
feed(const char *data, size_t size, size_t chunk, uint64_t seed, uint32_t item_max, struct run *out)
{
    struct mcs_ascii_parser p = { 0 };
    size_t consumed = 0, received = 0;
    out->n = 0;
    out->closed = false;
    while (consumed < size) {
        if (received == size) {
            break;      /* incomplete tail: nothing more will come */
        }
        size_t step = chunk ? chunk : 1 + mix(&seed) % (mix(&seed) % 4 == 0 ? 4096 : 64);
        received = received + step > size ? size : received + step;
        for (;;) {
            size_t avail = received - consumed;
            char *win = malloc(avail ? avail : 1);
            CHECK(win != NULL);
            memcpy(win, data + consumed, avail);
            struct mcs_ascii_req r;
            enum mcs_ascii_status st = mcs_ascii_parse(&p, win, avail, item_max, &r);
            if (st != MCS_ASCII_MORE) {
                check_request(win, avail, item_max, st, &r);
            }
            free(win);
            if (st == MCS_ASCII_MORE) {
                break;
            }
            /* consecutive silent skips (noreply errors, swallowed values) are one event */
            if (st == MCS_ASCII_REPLY && r.reply == NULL && out->n > 0 && out->ev[out->n - 1].st == MCS_ASCII_REPLY
                && out->ev[out->n - 1].reply == NULL) {
                out->ev[out->n - 1].len += r.len;
            } else {
                CHECK(out->n < MAX_EVENTS);
                out->ev[out->n].st = st;
                out->ev[out->n].cmd = st == MCS_ASCII_OK ? r.cmd : MCS_CMD_COUNT;
                out->ev[out->n].len = r.len;
                out->ev[out->n].reply = r.reply;
                out->n++;
            }
            consumed += r.len;
            if (st == MCS_ASCII_CLOSE) {
                out->closed = true;
                return;
            }
        }
    }
}

static void
compare(const struct run *a, const struct run *b)
{
    if (a->closed || b->closed) {
        return;
    }
    CHECK(a->n == b->n);
    for (size_t i = 0; i < a->n; i++) {
        CHECK(a->ev[i].st == b->ev[i].st);
        CHECK(a->ev[i].cmd == b->ev[i].cmd);
        CHECK(a->ev[i].len == b->ev[i].len);
        CHECK(a->ev[i].reply == b->ev[i].reply);
    }
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
        struct mcs_ascii_resp r;
        enum mcs_resp_status st = mcs_ascii_resp_parse(win, avail, value_max, &r);
        if (st != MCS_RESP_OK) {
            free(win);
            return;
        }
        CHECK(r.len > 0 && r.len <= avail);
        CHECK(win[r.len - 1] == '\n');
        if (r.kind == MCS_RESP_VALUE) {
            CHECK(r.len >= 2 && win[r.len - 2] == '\r');
            CHECK(r.key_len > 0 && (uint64_t)r.key_off + r.key_len < r.len);
        }
        CHECK(!r.error || r.kind == MCS_RESP_LINE);
        /* the item alone parses the same; one byte less is not an item */
        struct mcs_ascii_resp r2;
        free(win);
        win = malloc(r.len);
        CHECK(win != NULL);
        memcpy(win, data + off, r.len);
        CHECK(mcs_ascii_resp_parse(win, r.len, value_max, &r2) == MCS_RESP_OK);
        CHECK(r2.len == r.len && r2.kind == r.kind && r2.error == r.error);
        CHECK(mcs_ascii_resp_parse(win, r.len - 1, value_max, &r2) == MCS_RESP_MORE);
        free(win);
        off += r.len;
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *bytes = (const char *)data;
    /* a seed for chunk sizes and a small item_max, both from the input */
    uint64_t seed = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < size; i++) {
        seed = (seed ^ data[i]) * 0x100000001b3ull;
    }
    seed |= 1;
    static const uint32_t small_max[] = { 1, 5, 16, 100, 1024 };
    uint32_t item_maxes[] = { small_max[seed % 5], 1048576 };

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
