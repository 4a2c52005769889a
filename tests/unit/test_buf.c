/*
 * tests/unit/test_buf.c: the growable byte buffer (append, consume, reserve,
 * compaction, shrink), plus a random sequence of operations checked against a
 * plain array model.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "preload/core/buf.h"

static void
check_invariants(const struct mcs_buf *b)
{
    assert_true(b->start <= b->end);
    assert_true(b->end <= b->cap);
    if (b->cap == 0) {
        assert_null(b->data);
    } else {
        assert_non_null(b->data);
    }
}

static void
test_append_consume(void **state)
{
    (void)state;
    struct mcs_buf b = { 0 };
    assert_int_equal(mcs_buf_len(&b), 0);
    assert_int_equal(mcs_buf_append(&b, "", 0), 0);
    assert_null(b.data);                         /* nothing to store: no allocation */
    assert_int_equal(mcs_buf_append(&b, "hello ", 6), 0);
    assert_int_equal(mcs_buf_append(&b, "world", 5), 0);
    check_invariants(&b);
    assert_int_equal(mcs_buf_len(&b), 11);
    assert_memory_equal(mcs_buf_head(&b), "hello world", 11);
    assert_int_equal(b.cap, 1024);

    mcs_buf_consume(&b, 6);
    assert_int_equal(mcs_buf_len(&b), 5);
    assert_memory_equal(mcs_buf_head(&b), "world", 5);
    assert_int_equal(b.start, 6);
    mcs_buf_consume(&b, 0);
    assert_int_equal(mcs_buf_len(&b), 5);
    /* consuming the rest rewinds to the front */
    mcs_buf_consume(&b, 5);
    assert_int_equal(mcs_buf_len(&b), 0);
    assert_int_equal(b.start, 0);
    assert_int_equal(b.end, 0);
    assert_int_equal(b.cap, 1024);
    check_invariants(&b);
    mcs_buf_free(&b);
    check_invariants(&b);
}

static void
test_reserve_then_write(void **state)
{
    (void)state;
    struct mcs_buf b = { 0 };
    assert_int_equal(mcs_buf_reserve(&b, 100), 0);
    assert_true(b.cap - b.end >= 100);
    assert_int_equal(mcs_buf_len(&b), 0);
    memset(b.data + b.end, 'r', 100);            /* as a read(2) into the tail would */
    b.end += 100;
    assert_int_equal(mcs_buf_len(&b), 100);
    /* enough room already: nothing moves */
    char *before = b.data;
    assert_int_equal(mcs_buf_reserve(&b, b.cap - b.end), 0);
    assert_ptr_equal(b.data, before);
    assert_int_equal(mcs_buf_reserve(&b, 0), 0);
    assert_ptr_equal(b.data, before);
    mcs_buf_free(&b);
}

static void
test_growth_doubles(void **state)
{
    (void)state;
    struct mcs_buf b = { 0 };
    char chunk[1000];
    for (size_t i = 0; i < sizeof(chunk); i++) {
        chunk[i] = (char)('a' + i % 26);
    }
    for (int i = 0; i < 5; i++) {
        assert_int_equal(mcs_buf_append(&b, chunk, sizeof(chunk)), 0);
        check_invariants(&b);
    }
    assert_int_equal(mcs_buf_len(&b), 5000);
    assert_int_equal(b.cap, 8192);
    for (int i = 0; i < 5; i++) {
        assert_memory_equal(mcs_buf_head(&b) + i * 1000, chunk, 1000);
    }
    /* one big append goes straight to a large enough power of two */
    struct mcs_buf c = { 0 };
    char *big = calloc(1, 100000);
    assert_non_null(big);
    assert_int_equal(mcs_buf_append(&c, big, 100000), 0);
    assert_int_equal(c.cap, 131072);
    free(big);
    mcs_buf_free(&b);
    mcs_buf_free(&c);
}

/* Unread bytes move to the front when that alone makes room. */
static void
test_compaction(void **state)
{
    (void)state;
    struct mcs_buf b = { 0 };
    char data[1000];
    for (size_t i = 0; i < sizeof(data); i++) {
        data[i] = (char)i;
    }
    assert_int_equal(mcs_buf_append(&b, data, 1000), 0);
    assert_int_equal(b.cap, 1024);
    mcs_buf_consume(&b, 900);
    char *before = b.data;
    assert_int_equal(mcs_buf_reserve(&b, 500), 0);
    assert_ptr_equal(b.data, before);            /* same allocation */
    assert_int_equal(b.cap, 1024);
    assert_int_equal(b.start, 0);
    assert_int_equal(b.end, 100);
    assert_memory_equal(mcs_buf_head(&b), data + 900, 100);
    /* room at the tail already: no move even with bytes consumed */
    mcs_buf_consume(&b, 50);
    assert_int_equal(mcs_buf_reserve(&b, 10), 0);
    assert_int_equal(b.start, 50);
    assert_memory_equal(mcs_buf_head(&b), data + 950, 50);
    /* compaction not enough: grow, copying only the unread bytes */
    assert_int_equal(mcs_buf_reserve(&b, 2000), 0);
    assert_int_equal(b.start, 0);
    assert_int_equal(b.end, 50);
    assert_true(b.cap - b.end >= 2000);
    assert_memory_equal(mcs_buf_head(&b), data + 950, 50);
    check_invariants(&b);
    mcs_buf_free(&b);
}

/* Impossible sizes fail without touching the buffer. */
static void
test_reserve_overflow(void **state)
{
    (void)state;
    struct mcs_buf b = { 0 };
    assert_int_equal(mcs_buf_append(&b, "keep", 4), 0);
    mcs_buf_consume(&b, 1);
    struct mcs_buf copy = b;
    assert_int_equal(mcs_buf_reserve(&b, SIZE_MAX), -1);
    assert_int_equal(mcs_buf_reserve(&b, SIZE_MAX - 100), -1);
    assert_memory_equal(&b, &copy, sizeof(b));
    assert_memory_equal(mcs_buf_head(&b), "eep", 3);
    assert_int_equal(mcs_buf_append(&b, "x", SIZE_MAX), -1);   /* the source is never read */
    assert_memory_equal(&b, &copy, sizeof(b));
    /* and an empty buffer stays empty */
    struct mcs_buf e = { 0 };
    assert_int_equal(mcs_buf_reserve(&e, SIZE_MAX), -1);
    assert_null(e.data);
    assert_int_equal(e.cap, 0);
    mcs_buf_free(&b);
}

static void
test_reset_shrink_free(void **state)
{
    (void)state;
    struct mcs_buf b = { 0 };
    char *big = calloc(1, 70000);
    assert_non_null(big);
    assert_int_equal(mcs_buf_append(&b, big, 70000), 0);
    size_t cap = b.cap;
    /* not empty: shrink keeps everything */
    mcs_buf_shrink(&b, 1024);
    assert_int_equal(b.cap, cap);
    assert_int_equal(mcs_buf_len(&b), 70000);
    /* reset forgets the bytes, keeps the allocation */
    mcs_buf_reset(&b);
    assert_int_equal(mcs_buf_len(&b), 0);
    assert_int_equal(b.cap, cap);
    assert_non_null(b.data);
    /* empty but within keep: kept */
    mcs_buf_shrink(&b, cap);
    assert_int_equal(b.cap, cap);
    /* empty and larger than keep: released */
    mcs_buf_shrink(&b, 4096);
    assert_null(b.data);
    assert_int_equal(b.cap, 0);
    check_invariants(&b);
    /* usable again afterwards */
    assert_int_equal(mcs_buf_append(&b, "again", 5), 0);
    assert_memory_equal(mcs_buf_head(&b), "again", 5);
    /* consumed to empty counts as empty */
    mcs_buf_consume(&b, 5);
    mcs_buf_shrink(&b, 0);
    assert_null(b.data);
    mcs_buf_free(&b);
    mcs_buf_free(&b);   /* twice is harmless */
    check_invariants(&b);
    free(big);
}

/* xorshift64*: deterministic pseudo-random numbers */
static uint64_t
rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

/* Random appends, direct writes after reserve, consumes, resets and shrinks
 * agree with a flat array model at every step. */
static void
test_random_against_model(void **state)
{
    (void)state;
    const size_t model_cap = 1 << 20;
    char *model = malloc(model_cap);
    char *src = malloc(70000);
    assert_non_null(model);
    assert_non_null(src);
    for (size_t i = 0; i < 70000; i++) {
        src[i] = (char)(i * 7 + i / 251);
    }
    size_t mstart = 0, mend = 0;
    struct mcs_buf b = { 0 };
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (int step = 0; step < 20000; step++) {
        uint64_t r = rnd(&seed);
        size_t len = mend - mstart;
        switch (r % 6) {
        case 0:
        case 1: {   /* append a random slice, sometimes large */
            size_t n = (r >> 8) % ((r >> 40) % 16 == 0 ? 65536 : 600);
            size_t from = (r >> 24) % (70000 - n);
            if (mend + n > model_cap) {
                memmove(model, model + mstart, len);
                mstart = 0;
                mend = len;
            }
            assert_true(mend + n <= model_cap);
            assert_int_equal(mcs_buf_append(&b, src + from, n), 0);
            memcpy(model + mend, src + from, n);
            mend += n;
            break;
        }
        case 2: {   /* reserve and write in place, as a read would */
            size_t n = (r >> 8) % 3000;
            if (mend + n > model_cap) {
                memmove(model, model + mstart, len);
                mstart = 0;
                mend = len;
            }
            assert_true(mend + n <= model_cap);
            assert_int_equal(mcs_buf_reserve(&b, n), 0);
            assert_true(b.cap - b.end >= n);
            memcpy(b.data + b.end, src + 100, n);
            b.end += n;
            memcpy(model + mend, src + 100, n);
            mend += n;
            break;
        }
        case 3:
        case 4: {   /* consume some */
            size_t n = len ? (r >> 8) % (len + 1) : 0;
            mcs_buf_consume(&b, n);
            mstart += n;
            break;
        }
        default:    /* rarely: reset or shrink */
            if ((r >> 8) % 50 == 0) {
                mcs_buf_reset(&b);
                mstart = mend = 0;
            } else if ((r >> 8) % 50 == 1) {
                mcs_buf_shrink(&b, 4096);
            }
            break;
        }
        check_invariants(&b);
        assert_int_equal(mcs_buf_len(&b), mend - mstart);
        if (mend > mstart) {
            assert_memory_equal(mcs_buf_head(&b), model + mstart, mend - mstart);
        }
    }
    mcs_buf_free(&b);
    free(model);
    free(src);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_consume),
        cmocka_unit_test(test_reserve_then_write),
        cmocka_unit_test(test_growth_doubles),
        cmocka_unit_test(test_compaction),
        cmocka_unit_test(test_reserve_overflow),
        cmocka_unit_test(test_reset_shrink_free),
        cmocka_unit_test(test_random_against_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
