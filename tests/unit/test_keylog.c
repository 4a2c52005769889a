/*
 * tests/unit/test_keylog.c: the bounded, de-duplicating key log (keylog.h).
 *
 * Covers the empty log, binary keys, de-duplication, the max_keys limit and
 * its sticky overflow, re-adding taken keys, memory staying bounded over
 * many add/take cycles (arena compaction, index rebuilds) and being given
 * back when the log empties, and random operation sequences checked against
 * a plain array model. After most operations the internal invariants are
 * checked too (entries walk to `used`, every live key has exactly one index
 * slot, tombstones counted, load under 3/4).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "preload/core/keylog.h"

/* Checks the structure against the invariants in keylog.c. */
static void
check_invariants(const struct mcs_keylog *l)
{
    assert_true(l->head <= l->used);
    assert_true(l->used <= l->arena_cap);
    if (l->overflowed) {
        assert_int_equal(l->count, 0);
        assert_int_equal(mcs_keylog_memory(l), 0);
        return;
    }
    size_t n = 0;
    size_t off = l->head;
    while (off < l->used) {
        const unsigned char *p = (const unsigned char *)l->arena + off;
        size_t len = (size_t)p[0] | ((size_t)p[1] << 8);
        assert_true(len >= 1);
        off += 2 + len;
        n++;
    }
    assert_int_equal(off, l->used);
    assert_int_equal(n, l->count);
    assert_true(l->count <= l->max_keys);
    if (l->index == NULL) {
        assert_int_equal(l->count, 0);
        assert_int_equal(l->index_cap, 0);
        return;
    }
    assert_int_equal(l->index_cap, (size_t)1 << l->index_bits);
    size_t live = 0, tombs = 0;
    for (size_t i = 0; i < l->index_cap; i++) {
        uint32_t v = l->index[i];
        if (v == 1) {
            tombs++;
        } else if (v >= 2) {
            size_t e = v - 2;
            assert_true(e >= l->head && e < l->used);
            live++;
        }
    }
    assert_int_equal(live, l->count);
    assert_int_equal(tombs, l->tombstones);
    assert_true((l->count + l->tombstones) * 4 <= l->index_cap * 3);
}

/* Takes one key and checks it equals key[0, len). */
static void
take_expect(struct mcs_keylog *l, const char *key, size_t len)
{
    struct mcs_buf out = { 0 };
    assert_true(mcs_keylog_take(l, &out));
    assert_int_equal(mcs_buf_len(&out), len);
    assert_memory_equal(mcs_buf_head(&out), key, len);
    mcs_buf_free(&out);
    check_invariants(l);
}

/* Drains the log; returns how many keys came out, each appended (length
 * byte + bytes, keys shorter than 256) to all. */
static size_t
drain(struct mcs_keylog *l, struct mcs_buf *all)
{
    size_t n = 0;
    struct mcs_buf out = { 0 };
    while (mcs_keylog_take(l, &out)) {
        unsigned char len = (unsigned char)mcs_buf_len(&out);
        assert_int_equal(mcs_buf_append(all, &len, 1), 0);
        assert_int_equal(mcs_buf_append(all, mcs_buf_head(&out), mcs_buf_len(&out)), 0);
        mcs_buf_reset(&out);
        n++;
    }
    assert_int_equal(mcs_buf_len(&out), 0);
    mcs_buf_free(&out);
    check_invariants(l);
    return n;
}

/* True if all (from drain) holds key[0, len). */
static bool
drained_has(const struct mcs_buf *all, const char *key, size_t len)
{
    const unsigned char *p = (const unsigned char *)mcs_buf_head(all);
    size_t n = mcs_buf_len(all);
    for (size_t i = 0; i < n; i += 1 + p[i]) {
        if (p[i] == len && memcmp(p + i + 1, key, len) == 0) {
            return true;
        }
    }
    return false;
}

static void
test_empty(void **state)
{
    (void)state;
    struct mcs_keylog l = { 0 };      /* zero-initialised: empty */
    struct mcs_buf out = { 0 };
    assert_int_equal(mcs_keylog_count(&l), 0);
    assert_false(mcs_keylog_overflowed(&l));
    assert_false(mcs_keylog_take(&l, &out));
    assert_null(out.data);
    assert_int_equal(mcs_keylog_memory(&l), 0);
    mcs_keylog_reset(&l);
    mcs_keylog_free(&l);
    check_invariants(&l);

    /* max_keys 0 (never initialised): nothing fits */
    assert_int_equal(mcs_keylog_add(&l, "k", 1), 1);
    assert_true(mcs_keylog_overflowed(&l));
    mcs_keylog_free(&l);
    assert_false(mcs_keylog_overflowed(&l));

    /* init allocates nothing; len 0 records nothing */
    mcs_keylog_init(&l, 10);
    assert_int_equal(mcs_keylog_memory(&l), 0);
    assert_int_equal(mcs_keylog_add(&l, "", 0), 0);
    assert_int_equal(mcs_keylog_count(&l), 0);
    assert_int_equal(mcs_keylog_memory(&l), 0);
    assert_false(mcs_keylog_take(&l, &out));
    check_invariants(&l);
    mcs_keylog_free(&l);
}

static void
test_round_trip_binary(void **state)
{
    (void)state;
    struct mcs_keylog l;
    mcs_keylog_init(&l, 100);
    static const char k1[] = { 'a', '\0', 'b' };
    static const char k2[] = { 'a', '\0', 'c' };
    static const char k3[] = { 'a' };
    static const char k4[] = { 'a', '\0' };
    static const char k5[] = { '\0' };
    char k6[255];
    for (size_t i = 0; i < sizeof(k6); i++) {
        k6[i] = (char)(255 - i);
    }
    assert_int_equal(mcs_keylog_add(&l, k1, sizeof(k1)), 0);
    assert_int_equal(mcs_keylog_add(&l, k2, sizeof(k2)), 0);
    assert_int_equal(mcs_keylog_add(&l, k3, sizeof(k3)), 0);
    assert_int_equal(mcs_keylog_add(&l, k4, sizeof(k4)), 0);
    assert_int_equal(mcs_keylog_add(&l, k5, sizeof(k5)), 0);
    assert_int_equal(mcs_keylog_add(&l, k6, sizeof(k6)), 0);
    assert_true(mcs_keylog_memory(&l) > 0);
    assert_int_equal(mcs_keylog_count(&l), 6);
    /* prefixes and NUL-different keys are distinct; the same bytes are not */
    assert_int_equal(mcs_keylog_add(&l, k4, sizeof(k4)), 0);
    assert_int_equal(mcs_keylog_add(&l, k6, sizeof(k6)), 0);
    assert_int_equal(mcs_keylog_count(&l), 6);
    check_invariants(&l);

    /* take appends to what out already holds */
    struct mcs_buf out = { 0 };
    assert_int_equal(mcs_buf_append(&out, "delete ", 7), 0);
    assert_true(mcs_keylog_take(&l, &out));
    assert_true(mcs_buf_len(&out) > 7);
    assert_memory_equal(mcs_buf_head(&out), "delete ", 7);
    unsigned char first_len = (unsigned char)(mcs_buf_len(&out) - 7);
    struct mcs_buf all = { 0 };
    assert_int_equal(mcs_buf_append(&all, &first_len, 1), 0);
    assert_int_equal(mcs_buf_append(&all, mcs_buf_head(&out) + 7, first_len), 0);
    mcs_buf_free(&out);

    assert_int_equal(drain(&l, &all), 5);
    assert_true(drained_has(&all, k1, sizeof(k1)));
    assert_true(drained_has(&all, k2, sizeof(k2)));
    assert_true(drained_has(&all, k3, sizeof(k3)));
    assert_true(drained_has(&all, k4, sizeof(k4)));
    assert_true(drained_has(&all, k5, sizeof(k5)));
    assert_true(drained_has(&all, k6, sizeof(k6)));
    assert_int_equal(mcs_buf_len(&all), 6 + sizeof(k1) + sizeof(k2) + sizeof(k3) + sizeof(k4) + sizeof(k5) + sizeof(k6));
    assert_int_equal(mcs_keylog_count(&l), 0);
    mcs_buf_free(&all);
    mcs_keylog_free(&l);
    assert_int_equal(mcs_keylog_memory(&l), 0);
}

static void
test_key_length_limit(void **state)
{
    (void)state;
    struct mcs_keylog l;
    mcs_keylog_init(&l, 4);
    char *big = malloc(MCS_KEYLOG_KEY_MAX + 1);
    assert_non_null(big);
    for (size_t i = 0; i <= MCS_KEYLOG_KEY_MAX; i++) {
        big[i] = (char)(i * 7);
    }
    /* the longest key, and one a byte shorter: both kept exactly */
    assert_int_equal(mcs_keylog_add(&l, big, MCS_KEYLOG_KEY_MAX), 0);
    assert_int_equal(mcs_keylog_add(&l, big, MCS_KEYLOG_KEY_MAX - 1), 0);
    assert_int_equal(mcs_keylog_add(&l, big, MCS_KEYLOG_KEY_MAX), 0);
    assert_int_equal(mcs_keylog_count(&l), 2);
    check_invariants(&l);
    struct mcs_buf out = { 0 };
    assert_true(mcs_keylog_take(&l, &out));
    assert_int_equal(mcs_buf_len(&out), MCS_KEYLOG_KEY_MAX);
    assert_memory_equal(mcs_buf_head(&out), big, MCS_KEYLOG_KEY_MAX);
    mcs_buf_reset(&out);
    assert_true(mcs_keylog_take(&l, &out));
    assert_int_equal(mcs_buf_len(&out), MCS_KEYLOG_KEY_MAX - 1);
    assert_memory_equal(mcs_buf_head(&out), big, MCS_KEYLOG_KEY_MAX - 1);
    mcs_buf_free(&out);

    /* one byte longer: overflow, even with room for more keys */
    assert_int_equal(mcs_keylog_add(&l, "x", 1), 0);
    assert_int_equal(mcs_keylog_add(&l, big, MCS_KEYLOG_KEY_MAX + 1), 1);
    assert_true(mcs_keylog_overflowed(&l));
    assert_int_equal(mcs_keylog_count(&l), 0);
    check_invariants(&l);
    free(big);
    mcs_keylog_free(&l);
}

static void
test_dedup(void **state)
{
    (void)state;
    struct mcs_keylog l;
    mcs_keylog_init(&l, 2);
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(mcs_keylog_add(&l, "same-key", 8), 0);
        assert_int_equal(mcs_keylog_count(&l), 1);
    }
    check_invariants(&l);
    /* interleaved with a second key: still two, never overflowing max 2 */
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(mcs_keylog_add(&l, "other", 5), 0);
        assert_int_equal(mcs_keylog_add(&l, "same-key", 8), 0);
    }
    assert_int_equal(mcs_keylog_count(&l), 2);
    assert_false(mcs_keylog_overflowed(&l));
    check_invariants(&l);
    take_expect(&l, "same-key", 8);
    take_expect(&l, "other", 5);
    struct mcs_buf out = { 0 };
    assert_false(mcs_keylog_take(&l, &out));
    mcs_keylog_free(&l);
}

static void
test_count(void **state)
{
    (void)state;
    struct mcs_keylog l;
    char key[32];
    mcs_keylog_init(&l, 1000);
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(key, sizeof(key), "key:%d", i);
        assert_int_equal(mcs_keylog_add(&l, key, (size_t)n), 0);
        assert_int_equal(mcs_keylog_count(&l), (size_t)i + 1);
    }
    check_invariants(&l);
    struct mcs_buf out = { 0 };
    for (int i = 0; i < 1000; i++) {
        assert_true(mcs_keylog_take(&l, &out));
        assert_int_equal(mcs_keylog_count(&l), (size_t)(999 - i));
        mcs_buf_reset(&out);
        if (i % 97 == 0) {
            check_invariants(&l);
        }
    }
    assert_false(mcs_keylog_take(&l, &out));
    mcs_buf_free(&out);
    mcs_keylog_free(&l);
}

/* Fills a log of max_keys with distinct keys, checks the next distinct key
 * overflows it and that the overflow sticks until reset. */
static void
check_overflow_at(uint32_t max_keys)
{
    struct mcs_keylog l;
    char key[32];
    mcs_keylog_init(&l, max_keys);
    for (uint32_t i = 0; i < max_keys; i++) {
        int n = snprintf(key, sizeof(key), "k%u", (unsigned)i);
        assert_int_equal(mcs_keylog_add(&l, key, (size_t)n), 0);
    }
    /* at the limit, known keys are still fine */
    assert_int_equal(mcs_keylog_add(&l, "k0", 2), 0);
    assert_int_equal(mcs_keylog_count(&l), max_keys);
    assert_false(mcs_keylog_overflowed(&l));
    check_invariants(&l);

    /* max_keys + 1 distinct keys: overflow, keys and memory dropped */
    assert_int_equal(mcs_keylog_add(&l, "one-too-many", 12), 1);
    assert_true(mcs_keylog_overflowed(&l));
    assert_int_equal(mcs_keylog_count(&l), 0);
    assert_int_equal(mcs_keylog_memory(&l), 0);
    check_invariants(&l);

    /* sticky: every add returns 1, old or new keys, nothing to take */
    struct mcs_buf out = { 0 };
    for (int i = 0; i < 10; i++) {
        assert_int_equal(mcs_keylog_add(&l, "k0", 2), 1);
        assert_int_equal(mcs_keylog_add(&l, "new", 3), 1);
        assert_false(mcs_keylog_take(&l, &out));
        assert_true(mcs_keylog_overflowed(&l));
        assert_int_equal(mcs_keylog_count(&l), 0);
    }
    assert_null(out.data);

    /* reset: usable again, the same limit */
    mcs_keylog_reset(&l);
    assert_false(mcs_keylog_overflowed(&l));
    assert_int_equal(mcs_keylog_count(&l), 0);
    for (uint32_t i = 0; i < max_keys; i++) {
        int n = snprintf(key, sizeof(key), "again%u", (unsigned)i);
        assert_int_equal(mcs_keylog_add(&l, key, (size_t)n), 0);
    }
    assert_int_equal(mcs_keylog_add(&l, "k0", 2), 1);
    assert_true(mcs_keylog_overflowed(&l));

    /* free also clears the overflow and keeps the limit */
    mcs_keylog_free(&l);
    assert_false(mcs_keylog_overflowed(&l));
    assert_int_equal(mcs_keylog_add(&l, "k0", 2), 0);
    assert_int_equal(mcs_keylog_count(&l), 1);
    mcs_keylog_free(&l);
}

static void
test_overflow(void **state)
{
    (void)state;
    check_overflow_at(1);
    check_overflow_at(2);
    check_overflow_at(12);     /* around the first index rebuild */
    check_overflow_at(13);
    check_overflow_at(1000);
}

static void
test_overflow_counts_live_keys(void **state)
{
    (void)state;
    /* the limit is on keys held at once: taken keys make room */
    struct mcs_keylog l;
    struct mcs_buf out = { 0 };
    mcs_keylog_init(&l, 3);
    assert_int_equal(mcs_keylog_add(&l, "a", 1), 0);
    assert_int_equal(mcs_keylog_add(&l, "b", 1), 0);
    assert_int_equal(mcs_keylog_add(&l, "c", 1), 0);
    assert_true(mcs_keylog_take(&l, &out));
    assert_int_equal(mcs_keylog_add(&l, "d", 1), 0);
    assert_false(mcs_keylog_overflowed(&l));
    assert_int_equal(mcs_keylog_add(&l, "e", 1), 1);
    assert_true(mcs_keylog_overflowed(&l));
    mcs_buf_free(&out);
    mcs_keylog_free(&l);
}

static void
test_readd_after_take(void **state)
{
    (void)state;
    struct mcs_keylog l;
    struct mcs_buf out = { 0 };
    mcs_keylog_init(&l, 10);
    assert_int_equal(mcs_keylog_add(&l, "a", 1), 0);
    assert_int_equal(mcs_keylog_add(&l, "b", 1), 0);
    assert_int_equal(mcs_keylog_add(&l, "c", 1), 0);

    /* a key written again while the replay runs must be replayed again */
    assert_true(mcs_keylog_take(&l, &out));
    assert_int_equal(mcs_buf_len(&out), 1);
    char taken = mcs_buf_head(&out)[0];
    assert_int_equal(mcs_keylog_count(&l), 2);
    assert_int_equal(mcs_keylog_add(&l, &taken, 1), 0);
    assert_int_equal(mcs_keylog_count(&l), 3);
    assert_int_equal(mcs_keylog_add(&l, &taken, 1), 0);
    assert_int_equal(mcs_keylog_count(&l), 3);
    check_invariants(&l);

    struct mcs_buf all = { 0 };
    assert_int_equal(drain(&l, &all), 3);
    assert_true(drained_has(&all, "a", 1));
    assert_true(drained_has(&all, "b", 1));
    assert_true(drained_has(&all, "c", 1));

    /* the same key taken and added many times, alone in the log */
    for (int i = 0; i < 10000; i++) {
        assert_int_equal(mcs_keylog_add(&l, "solo", 4), 0);
        assert_int_equal(mcs_keylog_add(&l, "solo", 4), 0);
        assert_int_equal(mcs_keylog_count(&l), 1);
        take_expect(&l, "solo", 4);
        assert_int_equal(mcs_keylog_count(&l), 0);
    }
    assert_true(mcs_keylog_memory(&l) <= 2 * MCS_KEYLOG_KEEP_BYTES);
    mcs_buf_free(&out);
    mcs_buf_free(&all);
    mcs_keylog_free(&l);
}

static void
test_take_into_buffer_that_cannot_grow(void **state)
{
    (void)state;
    /* a buffer that claims to be full at the largest capacity: append fails
     * without touching memory. The key cannot be handed over, so the log
     * overflows rather than losing it silently. */
    char dummy;
    struct mcs_buf stuck = { .data = &dummy, .start = 0, .end = SIZE_MAX / 2 + 2, .cap = SIZE_MAX / 2 + 2 };
    struct mcs_keylog l;
    mcs_keylog_init(&l, 10);
    assert_int_equal(mcs_keylog_add(&l, "a", 1), 0);
    assert_int_equal(mcs_keylog_add(&l, "b", 1), 0);
    assert_false(mcs_keylog_take(&l, &stuck));
    assert_true(stuck.data == &dummy && stuck.end == SIZE_MAX / 2 + 2);
    assert_true(mcs_keylog_overflowed(&l));
    assert_int_equal(mcs_keylog_count(&l), 0);
    assert_int_equal(mcs_keylog_memory(&l), 0);
    assert_int_equal(mcs_keylog_add(&l, "a", 1), 1);
    check_invariants(&l);
    mcs_keylog_reset(&l);
    assert_int_equal(mcs_keylog_add(&l, "a", 1), 0);
    take_expect(&l, "a", 1);
    mcs_keylog_free(&l);
}

/* A tiny xorshift generator: the same sequence everywhere. */
static uint32_t
next_rand(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *s = x;
    return x;
}

static void
test_compaction_bounds_memory(void **state)
{
    (void)state;
    /* a sliding window of ~200 live keys over 300000 distinct keys */
    struct mcs_keylog l;
    struct mcs_buf out = { 0 };
    char key[64];
    mcs_keylog_init(&l, 1000);
    uint32_t seed = 12345;
    size_t max_mem = 0;
    unsigned long next = 0;
    for (int i = 0; i < 200; i++) {
        int n = snprintf(key, sizeof(key), "window:%lu", next++);
        assert_int_equal(mcs_keylog_add(&l, key, (size_t)n), 0);
    }
    size_t start_mem = mcs_keylog_memory(&l);
    for (int i = 0; i < 300000; i++) {
        /* keys of varying length, 8..40 bytes */
        uint32_t r = next_rand(&seed);
        int n = snprintf(key, sizeof(key), "window:%lu:%.*s", next++, (int)(r % 30), "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
        assert_int_equal(mcs_keylog_add(&l, key, (size_t)n), 0);
        assert_true(mcs_keylog_take(&l, &out));
        mcs_buf_reset(&out);
        if (r % 4 == 0) {
            assert_true(mcs_keylog_take(&l, &out));   /* the window breathes */
            mcs_buf_reset(&out);
            n = snprintf(key, sizeof(key), "window:%lu", next++);
            assert_int_equal(mcs_keylog_add(&l, key, (size_t)n), 0);
        }
        assert_int_equal(mcs_keylog_count(&l), 200);
        size_t mem = mcs_keylog_memory(&l);
        if (mem > max_mem) {
            max_mem = mem;
        }
        if (i % 10007 == 0) {
            check_invariants(&l);
        }
    }
    check_invariants(&l);
    /* 200 keys of at most 40 bytes: 8400 arena bytes live, index of 512
     * slots; without compaction the arena would hold ~10 MB */
    assert_true(start_mem <= 8192);
    assert_true(max_mem <= 4 * 200 * (40 + 2) + 1024 * sizeof(uint32_t));
    mcs_buf_free(&out);
    mcs_keylog_free(&l);
}

/* The number in a 16-byte key "mem-bound-NNNNNN" (the buffer has no NUL). */
static unsigned
key_number(const struct mcs_buf *out)
{
    assert_int_equal(mcs_buf_len(out), 16);
    unsigned v = 0;
    for (size_t i = 10; i < 16; i++) {
        char c = mcs_buf_head(out)[i];
        assert_true(c >= '0' && c <= '9');
        v = v * 10 + (unsigned)(c - '0');
    }
    return v;
}

static void
test_memory_bound_and_release(void **state)
{
    (void)state;
    struct mcs_keylog l;
    char key[32];
    const uint32_t max = 20000;
    mcs_keylog_init(&l, max);
    for (uint32_t i = 0; i < max; i++) {
        /* 16-byte keys */
        int n = snprintf(key, sizeof(key), "mem-bound-%06u", (unsigned)i);
        assert_int_equal(n, 16);
        assert_int_equal(mcs_keylog_add(&l, key, 16), 0);
    }
    check_invariants(&l);
    size_t mem = mcs_keylog_memory(&l);
    /* arena at most 2x its bytes (doubling), index at most 16 bytes a key */
    assert_true(mem <= (size_t)max * (2 * (16 + 2) + 16));
    /* all again: nothing added, nothing allocated */
    for (uint32_t i = 0; i < max; i++) {
        int n = snprintf(key, sizeof(key), "mem-bound-%06u", (unsigned)i);
        assert_int_equal(mcs_keylog_add(&l, key, (size_t)n), 0);
    }
    assert_int_equal(mcs_keylog_count(&l), max);
    assert_int_equal(mcs_keylog_memory(&l), mem);

    /* taking half of them gives back memory (compaction shrinks) */
    struct mcs_buf out = { 0 };
    unsigned char *seen = calloc(max, 1);
    assert_non_null(seen);
    for (uint32_t i = 0; i < max - 100; i++) {
        assert_true(mcs_keylog_take(&l, &out));
        assert_int_equal(mcs_buf_len(&out), 16);
        assert_memory_equal(mcs_buf_head(&out), "mem-bound-", 10);
        unsigned v = key_number(&out);
        assert_true(v < max);
        assert_int_equal(seen[v], 0);
        seen[v] = 1;
        mcs_buf_reset(&out);
    }
    check_invariants(&l);
    assert_true(mcs_keylog_memory(&l) <= 200 * (4 * (16 + 2) + 16) + 1024);   /* compacted at <= 200 live */

    /* emptied by take: small again */
    while (mcs_keylog_take(&l, &out)) {
        unsigned v = key_number(&out);
        assert_true(v < max);
        assert_int_equal(seen[v], 0);
        seen[v] = 1;
        mcs_buf_reset(&out);
    }
    for (uint32_t i = 0; i < max; i++) {
        assert_int_equal(seen[i], 1);
    }
    assert_int_equal(mcs_keylog_count(&l), 0);
    assert_true(mcs_keylog_memory(&l) <= 2 * MCS_KEYLOG_KEEP_BYTES);
    check_invariants(&l);

    /* reset of a full log releases large memory too */
    for (uint32_t i = 0; i < max; i++) {
        int n = snprintf(key, sizeof(key), "mem-bound-%06u", (unsigned)i);
        assert_int_equal(mcs_keylog_add(&l, key, (size_t)n), 0);
    }
    mcs_keylog_reset(&l);
    assert_int_equal(mcs_keylog_count(&l), 0);
    assert_true(mcs_keylog_memory(&l) <= 2 * MCS_KEYLOG_KEEP_BYTES);
    check_invariants(&l);
    assert_int_equal(mcs_keylog_add(&l, "after", 5), 0);
    take_expect(&l, "after", 5);
    free(seen);
    mcs_buf_free(&out);
    mcs_keylog_free(&l);
    assert_int_equal(mcs_keylog_memory(&l), 0);
}

/* Random operations against a model ------------------------------------- */

#define MODEL_MAX 128

struct model_key {
    size_t len;
    char   bytes[4];
};

struct model {
    struct model_key keys[MODEL_MAX];
    size_t n;
    bool overflowed;
};

static size_t
model_find(const struct model *m, const char *key, size_t len)
{
    for (size_t i = 0; i < m->n; i++) {
        if (m->keys[i].len == len && memcmp(m->keys[i].bytes, key, len) == 0) {
            return i;
        }
    }
    return SIZE_MAX;
}

/* One run of ops operations on a log of max_keys, keys of 1..3 bytes drawn
 * from { 'a', 'b', NUL, 0xff } (84 keys, so duplicates are common): add_weight
 * percent adds, 2% resets, the rest takes. */
static void
random_run(uint32_t seed, uint32_t max_keys, int ops, int add_weight, bool expect_overflow)
{
    static const char alphabet[] = { 'a', 'b', '\0', (char)0xff };
    struct mcs_keylog l;
    struct model m = { .n = 0 };
    struct mcs_buf out = { 0 };
    unsigned overflows = 0, takes = 0;
    mcs_keylog_init(&l, max_keys);
    for (int i = 0; i < ops; i++) {
        uint32_t r = next_rand(&seed);
        uint32_t op = r % 100;
        if (op < (uint32_t)add_weight) {
            char key[4];
            size_t len = 1 + (r >> 8) % 3;
            for (size_t j = 0; j < len; j++) {
                key[j] = alphabet[(r >> (10 + 2 * j)) & 3];
            }
            int expect = 0;
            if (m.overflowed) {
                expect = 1;
            } else if (model_find(&m, key, len) == SIZE_MAX) {
                if (m.n >= max_keys) {
                    m.overflowed = true;
                    m.n = 0;
                    expect = 1;
                    overflows++;
                } else {
                    m.keys[m.n].len = len;
                    memcpy(m.keys[m.n].bytes, key, len);
                    m.n++;
                }
            }
            assert_int_equal(mcs_keylog_add(&l, key, len), expect);
        } else if (op < 98) {
            /* take, sometimes into a buffer that already holds bytes */
            bool prefix = (r >> 8) % 4 == 0;
            if (prefix) {
                assert_int_equal(mcs_buf_append(&out, "P:", 2), 0);
            }
            bool got = mcs_keylog_take(&l, &out);
            assert_int_equal(got, m.n > 0);
            if (got) {
                const char *key = mcs_buf_head(&out) + (prefix ? 2 : 0);
                size_t len = mcs_buf_len(&out) - (prefix ? 2 : 0);
                size_t at = model_find(&m, key, len);
                assert_true(at != SIZE_MAX);
                m.keys[at] = m.keys[--m.n];
                takes++;
            } else {
                assert_int_equal(mcs_buf_len(&out), prefix ? 2 : 0);
            }
            mcs_buf_reset(&out);
        } else {
            mcs_keylog_reset(&l);
            m.n = 0;
            m.overflowed = false;
        }
        assert_int_equal(mcs_keylog_count(&l), m.n);
        assert_int_equal(mcs_keylog_overflowed(&l), m.overflowed);
        check_invariants(&l);
    }
    /* the last state drains to exactly the model's keys */
    struct mcs_buf all = { 0 };
    assert_int_equal(drain(&l, &all), m.n);
    for (size_t i = 0; i < m.n; i++) {
        assert_true(drained_has(&all, m.keys[i].bytes, m.keys[i].len));
    }
    /* the mix must have exercised takes and (when possible) overflows */
    assert_true(takes > 0);
    if (expect_overflow) {
        assert_true(overflows > 0);
    } else {
        assert_int_equal(overflows, 0);
    }
    mcs_buf_free(&all);
    mcs_buf_free(&out);
    mcs_keylog_free(&l);
}

static void
test_random_against_model(void **state)
{
    (void)state;
    random_run(1, 1, 4000, 60, true);
    random_run(2, 7, 4000, 60, true);
    random_run(3, 30, 5000, 65, true);
    random_run(4, 12, 5000, 75, true);
    random_run(5, 48, 5000, 50, false);     /* mostly near empty */
    random_run(6, 84, 5000, 70, false);     /* every key fits */
    random_run(7, 1000, 5000, 80, false);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_round_trip_binary),
        cmocka_unit_test(test_key_length_limit),
        cmocka_unit_test(test_dedup),
        cmocka_unit_test(test_count),
        cmocka_unit_test(test_overflow),
        cmocka_unit_test(test_overflow_counts_live_keys),
        cmocka_unit_test(test_readd_after_take),
        cmocka_unit_test(test_take_into_buffer_that_cannot_grow),
        cmocka_unit_test(test_compaction_bounds_memory),
        cmocka_unit_test(test_memory_bound_and_release),
        cmocka_unit_test(test_random_against_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
