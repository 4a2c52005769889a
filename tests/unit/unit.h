/*
 * tests/unit/unit.h: scaffolding shared by the cmocka unit tests, mostly those
 * of the protocol parsers (test_ascii.c, test_meta.c, test_binary.c).
 *
 * It offers:
 * - guarded buffers: a mapping whose last page is PROT_NONE; guarded_put()
 *   copies input so that its last byte is the last readable one, so a parser
 *   that reads one byte too far crashes, even without sanitizers;
 * - a feed: a stream that arrives in reads of sizes the test picks, its unread
 *   bytes placed against the guard page before every parse (pipelining and
 *   segmentation tests);
 * - show(): a printable form of some bytes for failure messages;
 * - result_name(): the name of a request parser's result (OK, MORE, REPLY,
 *   CLOSE), with UNIT_RESULTS_IN_ORDER to check an enum against it;
 * - NELEM, ITEM_MAX (memcached's default item size limit, 1 MiB) and keys of
 *   10, 50, 250 (the longest memcached takes) and 251 bytes.
 *
 * Include it after the headers under test; it includes cmocka (and what cmocka
 * needs first). Everything is static inline, so a test pays only for what it uses.
 */
#ifndef MCS_TESTS_UNIT_H
#define MCS_TESTS_UNIT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

#define ITEM_MAX 1048576u

#define K10  "kkkkkkkkkk"
#define K50  K10 K10 K10 K10 K10
#define K250 K50 K50 K50 K50 K50
#define K251 K250 "k"

/* A mapping whose last page is PROT_NONE; data is placed to end at the guard. */
struct guarded {
    char  *map;
    size_t map_len;
    char  *guard;   /* first byte of the PROT_NONE page */
};

/* Maps room for at least cap bytes before a guard page; fails the test if the
 * mapping cannot be made. Release with guarded_free(). */
static inline void
guarded_init(struct guarded *g, size_t cap)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t pages = cap / page + 1;
    g->map_len = (pages + 1) * page;
    g->map = mmap(NULL, g->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(g->map != MAP_FAILED);
    g->guard = g->map + pages * page;
    assert_int_equal(mprotect(g->guard, page, PROT_NONE), 0);
}

/* Copies data[0, len) so that its last byte is the last readable byte, and
 * returns where it starts (len <= the cap given to guarded_init). */
static inline const char *
guarded_put(struct guarded *g, const char *data, size_t len)
{
    char *p = g->guard - len;
    if (len > 0) {
        memcpy(p, data, len);
    }
    return p;
}

static inline void
guarded_free(struct guarded *g)
{
    munmap(g->map, g->map_len);
}

/* A stream fed to a parser in reads: stream[0, received) has arrived, and
 * stream[0, consumed) was used by the parser (the test adds what it used). */
struct feed {
    struct guarded g;
    const char    *stream;
    size_t         n;
    size_t         received;
    size_t         consumed;
};

/* Starts feeding stream[0, n), nothing received yet; end with feed_end(). */
static inline void
feed_start(struct feed *f, const char *stream, size_t n)
{
    guarded_init(&f->g, n);
    f->stream = stream;
    f->n = n;
    f->received = 0;
    f->consumed = 0;
}

/* One more read: step bytes arrive (fewer at the end of the stream). */
static inline void
feed_arrive(struct feed *f, size_t step)
{
    f->received = f->received + step > f->n ? f->n : f->received + step;
}

/* The bytes received and not consumed, placed so that they end at the guard
 * page; *len gets how many there are. */
static inline const char *
feed_window(struct feed *f, size_t *len)
{
    *len = f->received - f->consumed;
    return guarded_put(&f->g, f->stream + f->consumed, *len);
}

static inline void
feed_end(struct feed *f)
{
    guarded_free(&f->g);
}

/* Printable form of some bytes, for failure messages: \r, \n and other
 * unprintable bytes escaped, cut with "..." near 200 characters. Returns one
 * of four static buffers in turn, so up to four fit in one message. */
static inline const char *
show(const char *s, size_t n)
{
    static char bufs[4][200];
    static unsigned next;
    char *out = bufs[next++ % 4];
    size_t o = 0;
    for (size_t i = 0; i < n && o < sizeof(bufs[0]) - 8; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\r') {
            o += (size_t)snprintf(out + o, sizeof(bufs[0]) - o, "\\r");
        } else if (c == '\n') {
            o += (size_t)snprintf(out + o, sizeof(bufs[0]) - o, "\\n");
        } else if (c < 32 || c > 126) {
            o += (size_t)snprintf(out + o, sizeof(bufs[0]) - o, "\\x%02x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    if (o >= sizeof(bufs[0]) - 8) {
        o += (size_t)snprintf(out + o, sizeof(bufs[0]) - o, "...");
    }
    out[o] = '\0';
    return out;
}

/* Name of a parser result. The request parsers' results (enum mcs_ascii_status,
 * mcs_meta_status, mcs_bin_result) all list OK, MORE, REPLY, CLOSE in this
 * order; each test that uses this checks its enum with UNIT_RESULTS_IN_ORDER. */
static inline const char *
result_name(unsigned r)
{
    static const char *const names[] = { "OK", "MORE", "REPLY", "CLOSE" };
    return r < NELEM(names) ? names[r] : "?";
}

#define UNIT_RESULTS_IN_ORDER(ok, more, reply, close)                                            \
    _Static_assert((ok) == 0 && (more) == 1 && (reply) == 2 && (close) == 3,                    \
                   "result_name() expects OK, MORE, REPLY, CLOSE")

#endif
