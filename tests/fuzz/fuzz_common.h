/*
 * tests/fuzz/fuzz_common.h: what the libFuzzer targets share (see
 * tests/fuzz/README.md). A target gives its request parser as a struct
 * fuzz_parser and its reply parser as a fuzz_reply_fn, callbacks that make the
 * protocol's own checks; fuzz_run() then feeds the input in several cuts
 * (whole, pseudo-random chunks derived from the input, byte by byte), each call
 * on a fresh heap copy of exactly the unread bytes so that AddressSanitizer
 * sees a one-byte over-read, requires the same events from every cut, and
 * reads the input as a reply stream. A failed CHECK() aborts, which libFuzzer
 * reports as a crash. Static functions: each target is one translation unit.
 */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "preload/core/ascii.h"     /* enum mcs_resp_status */

#define FUZZ_ITEM_MAX     1048576   /* memcached's default item size limit */
#define FUZZ_EVENTS_MAX   65536     /* results recorded in one pass */
#define FUZZ_BYTEWISE_MAX 2048      /* larger inputs are not fed byte by byte */
#define FUZZ_CHUNK_SMALL  64        /* random chunks: 1 to 64 bytes, */
#define FUZZ_CHUNK_LARGE  4096      /* or one time in four 1 to 4096 */

#define CHECK(cond)          \
    do {                     \
        if (!(cond)) {       \
            abort();         \
        }                    \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* One parse result, reduced to what must not depend on segmentation. */
struct fuzz_event {
    int         status;     /* the parser's result (OK, REPLY, CLOSE) */
    int         what;       /* command or opcode; not compared for skips */
    uint32_t    code;       /* the protocol's status code, or 0 */
    uint32_t    len;        /* bytes consumed */
    const char *reply;      /* the canned reply, or NULL */
    bool        skip;       /* bytes dropped silently: merged with a skip just before */
    bool        close;      /* the connection closes: the stream ends here */
};

/* The events of one pass over the input, and whether it ended in a close. */
struct fuzz_pass {
    struct fuzz_event ev[FUZZ_EVENTS_MAX];
    size_t            n;
    bool              closed;
};

/*
 * A request parser as fuzz_feed drives it. reset() starts a fresh parser in
 * ctx for a new stream. parse() parses the start of buf[0, len) (a heap copy of
 * exactly the unread bytes, freed after the call) with item_max, checks the
 * result and describes it in *ev; it returns false when the parser wants more
 * bytes.
 * With close_depends_on_cut, a pass that ends in a close is not compared (a
 * line-length limit may close the connection at one cut and not another).
 */
struct fuzz_parser {
    void *ctx;
    void (*reset)(void *ctx);
    bool (*parse)(void *ctx, const char *buf, size_t len, uint32_t item_max, struct fuzz_event *ev);
    bool close_depends_on_cut;
};

/*
 * A reply parser as fuzz_replies drives it: parses the reply at the start of
 * buf[0, len) with value_max and returns the parser's result. With alone
 * false, buf is a copy of the rest of the stream: an OK reply is checked, kept
 * in *kept (the target's reply struct) and its length set in *item_len. With
 * alone true, buf holds exactly the kept reply (or one byte less): an OK reply
 * must be the kept one, and *item_len is set again.
 */
typedef enum mcs_resp_status (*fuzz_reply_fn)(void *kept, const char *buf, size_t len, uint32_t value_max,
                                              bool alone, size_t *item_len);

/* A seed derived from the whole input (FNV-1a), never 0. */
static uint64_t
fuzz_seed(const uint8_t *data, size_t size)
{
    uint64_t seed = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < size; i++) {
        seed = (seed ^ data[i]) * 0x100000001b3ull;
    }
    return seed | 1;
}

/* The next pseudo-random number from *state (xorshift64*; *state != 0). */
static uint64_t
fuzz_next(uint64_t *state)
{
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return *state * 2685821657736338717ull;
}

/* A pseudo-random chunk size: 1 to FUZZ_CHUNK_SMALL, sometimes larger. */
static size_t
fuzz_chunk(uint64_t *state)
{
    uint64_t r = fuzz_next(state);
    uint64_t limit = fuzz_next(state) % 4 == 0 ? FUZZ_CHUNK_LARGE : FUZZ_CHUNK_SMALL;
    return 1 + (size_t)(r % limit);
}

/* A fresh heap copy of src[0, len) that the caller frees; exactly len bytes
 * (one when len is 0), so a read past them is an AddressSanitizer report. */
static char *
fuzz_copy(const char *src, size_t len)
{
    char *copy = malloc(len ? len : 1);
    CHECK(copy != NULL);
    memcpy(copy, src, len);
    return copy;
}

/* Appends ev to pass, merging consecutive skips into one event. */
static void
fuzz_record(struct fuzz_pass *pass, const struct fuzz_event *ev)
{
    if (ev->skip && pass->n > 0 && pass->ev[pass->n - 1].skip) {
        pass->ev[pass->n - 1].len += ev->len;
        return;
    }
    CHECK(pass->n < FUZZ_EVENTS_MAX);
    pass->ev[pass->n++] = *ev;
}

/*
 * Feeds data[0, size) to p as a growing buffer, chunk bytes at a time (0: sizes
 * from fuzz_chunk(seed)), and records the results in out. Stops at a close or
 * when the bytes left are an incomplete request.
 */
static void
fuzz_feed(const struct fuzz_parser *p, const char *data, size_t size, size_t chunk, uint64_t seed,
          uint32_t item_max, struct fuzz_pass *out)
{
    size_t consumed = 0, received = 0;
    p->reset(p->ctx);
    out->n = 0;
    out->closed = false;
    while (consumed < size && received < size) {
        size_t step = chunk ? chunk : fuzz_chunk(&seed);
        received = received + step > size ? size : received + step;
        for (;;) {
            size_t avail = received - consumed;
            char *win = fuzz_copy(data + consumed, avail);
            struct fuzz_event ev = { 0 };
            bool got = p->parse(p->ctx, win, avail, item_max, &ev);
            free(win);
            if (!got) {
                break;
            }
            CHECK(ev.len > 0 && ev.len <= avail);
            fuzz_record(out, &ev);
            consumed += ev.len;
            if (ev.close) {
                out->closed = true;
                return;
            }
        }
    }
}

/* Two passes over the same input must give the same events. */
static void
fuzz_compare(const struct fuzz_parser *p, const struct fuzz_pass *a, const struct fuzz_pass *b)
{
    if (p->close_depends_on_cut && (a->closed || b->closed)) {
        return;
    }
    CHECK(a->n == b->n && a->closed == b->closed);
    for (size_t i = 0; i < a->n; i++) {
        const struct fuzz_event *x = &a->ev[i], *y = &b->ev[i];
        CHECK(x->status == y->status && x->skip == y->skip && x->close == y->close);
        CHECK(x->skip || x->what == y->what);
        CHECK(x->code == y->code);
        CHECK(x->len == y->len);
        CHECK(x->reply == y->reply);
    }
}

/* Feeds data whole, in pseudo-random chunks from seed and (small inputs) a
 * byte at a time, and checks the cuts give the same events. */
static void
fuzz_feed_cuts(const struct fuzz_parser *p, const char *data, size_t size, uint64_t seed, uint32_t item_max)
{
    static struct fuzz_pass whole, cut;
    fuzz_feed(p, data, size, size ? size : 1, 0, item_max, &whole);
    fuzz_feed(p, data, size, 0, seed, item_max, &cut);
    fuzz_compare(p, &whole, &cut);
    if (size <= FUZZ_BYTEWISE_MAX) {
        fuzz_feed(p, data, size, 1, 0, item_max, &cut);
        fuzz_compare(p, &whole, &cut);
    }
}

/*
 * Reads data[0, size) as a server's reply stream with parse, until a reply is
 * not OK: each reply (parsed from a copy of the rest) must parse the same from
 * a copy of exactly its bytes, and one byte less of it must be MCS_RESP_MORE.
 */
static void
fuzz_replies(fuzz_reply_fn parse, void *kept, const char *data, size_t size, uint32_t value_max)
{
    size_t off = 0;
    while (off < size) {
        size_t avail = size - off, len = 0, again = 0;
        char *win = fuzz_copy(data + off, avail);
        enum mcs_resp_status st = parse(kept, win, avail, value_max, false, &len);
        free(win);
        if (st != MCS_RESP_OK) {
            return;
        }
        CHECK(len > 0 && len <= avail);
        win = fuzz_copy(data + off, len);
        CHECK(parse(kept, win, len, value_max, true, &again) == MCS_RESP_OK && again == len);
        CHECK(parse(kept, win, len - 1, value_max, true, &again) == MCS_RESP_MORE);
        free(win);
        off += len;
    }
}

/*
 * One input, as every target reads it: data fed to requests in every cut with
 * item_max small (which the target picks from the seed) and FUZZ_ITEM_MAX, then
 * read as a reply stream by reply (kept: its reply struct) with both as
 * value_max. A failed check aborts.
 */
static void
fuzz_run(const struct fuzz_parser *requests, fuzz_reply_fn reply, void *kept, const uint8_t *data, size_t size,
         uint64_t seed, uint32_t small)
{
    const char *bytes = (const char *)data;
    fuzz_feed_cuts(requests, bytes, size, seed, small);
    fuzz_feed_cuts(requests, bytes, size, seed, FUZZ_ITEM_MAX);
    fuzz_replies(reply, kept, bytes, size, FUZZ_ITEM_MAX);
    fuzz_replies(reply, kept, bytes, size, small);
}

#endif /* FUZZ_COMMON_H */
