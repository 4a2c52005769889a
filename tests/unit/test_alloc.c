/*
 * tests/unit/test_alloc.c: every allocation failure branch of the core (alloc.h).
 *
 * Each test runs one operation again and again with its n-th allocation made
 * to fail, n = 1, 2, ... until a run makes no allocation fail. Each failed run
 * must report the failure the way the module's contract says (and leave the
 * object usable and consistent), never crash; the sanitizer pass of make test
 * runs this file under ASan/UBSan with leak checking, so a failure branch that
 * leaks or touches freed memory is caught too.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "preload/core/alloc.h"
#include "preload/core/buf.h"
#include "preload/core/config.h"
#include "preload/core/keylog.h"
#include "preload/core/router.h"

#define SWEEP_MAX 100000

/* True when the run since failed_before made nothing fail: n passed the last
 * allocation of the operation, which ends a sweep. */
static bool
sweep_done(uint64_t failed_before)
{
    return mcs_alloc_failed() == failed_before;
}

/* The seam itself: one failure, exactly the n-th, then normal service. */
static void
test_seam(void **state)
{
    (void)state;
    uint64_t f0 = mcs_alloc_failed();
    mcs_alloc_fail_at(3);
    void *a = mcs_malloc(8), *b = mcs_calloc(2, 8), *c = mcs_realloc(NULL, 8), *d = mcs_malloc(0);
    assert_non_null(a);
    assert_non_null(b);
    assert_null(c);
    assert_non_null(d);
    assert_int_equal(mcs_alloc_failed(), f0 + 1);
    mcs_free(a);
    mcs_free(b);
    mcs_free(d);
    mcs_free(NULL);
    mcs_alloc_fail_at(0);
}

/* Growing a buffer: a failed append returns -1 and leaves the bytes as they were. */
static void
test_buf_append(void **state)
{
    (void)state;
    static char chunk[4096];
    memset(chunk, 'x', sizeof(chunk));
    for (uint64_t n = 1; n < SWEEP_MAX; n++) {
        uint64_t f0 = mcs_alloc_failed();
        struct mcs_buf b = { 0 };
        size_t want = 0;
        mcs_alloc_fail_at(n);
        for (int i = 0; i < 300; i++) {
            chunk[0] = (char)i;
            if (mcs_buf_append(&b, chunk, sizeof(chunk)) == 0) {
                want += sizeof(chunk);
            }
            assert_int_equal(mcs_buf_len(&b), want);
            if (i % 7 == 0 && want > 0) {
                mcs_buf_consume(&b, sizeof(chunk) / 2);
                want -= sizeof(chunk) / 2;
            }
        }
        mcs_alloc_fail_at(0);
        mcs_buf_free(&b);
        if (sweep_done(f0)) {
            return;
        }
    }
    fail_msg("sweep did not end");
}

/* The key log: a failed allocation overflows it (its contract: the rejoin then
 * flushes), never loses a key silently while claiming it was recorded. */
static void
test_keylog(void **state)
{
    (void)state;
    for (uint64_t n = 1; n < SWEEP_MAX; n++) {
        uint64_t f0 = mcs_alloc_failed();
        struct mcs_keylog l = { 0 };
        mcs_keylog_init(&l, 1000);
        mcs_alloc_fail_at(n);
        size_t recorded = 0;
        for (int i = 0; i < 600; i++) {
            char key[32];
            int len = snprintf(key, sizeof(key), "key:%d", i % 400);
            if (mcs_keylog_add(&l, key, (size_t)len) != 0) {
                assert_true(mcs_keylog_overflowed(&l));
                assert_int_equal(mcs_keylog_count(&l), 0);
                break;
            }
            recorded = mcs_keylog_count(&l);
        }
        struct mcs_buf out = { 0 };
        size_t taken = 0;
        while (mcs_keylog_take(&l, &out)) {
            taken++;
        }
        assert_true(taken == recorded || mcs_keylog_overflowed(&l));
        mcs_alloc_fail_at(0);
        mcs_buf_free(&out);
        mcs_keylog_free(&l);
        if (sweep_done(f0)) {
            return;
        }
    }
    fail_msg("sweep did not end");
}

static const char *
lookup(const char *name, void *ctx)
{
    const char *const *pairs = ctx;
    for (size_t i = 0; pairs[i] != NULL; i += 2) {
        if (strcmp(pairs[i], name) == 0) {
            return pairs[i + 1];
        }
    }
    return NULL;
}

/* Configuration and router: a failure is an error (config: a message), and
 * nothing is left allocated. */
static void
test_config_and_router(void **state)
{
    (void)state;
    static const char *pairs[] = {
        "MCSHIM_SERVERS", "127.0.0.1:1,127.0.0.1:2:3,127.0.0.1:3 three,[::1]:4,unix:/tmp/x",
        "MCSHIM_BACKUP", "127.0.0.1:5,127.0.0.1:6",
        "MCSHIM_REPLICAS", "2",
        NULL,
    };
    bool config_failed = false, router_failed = false;
    for (uint64_t n = 1; n < SWEEP_MAX; n++) {
        uint64_t f0 = mcs_alloc_failed();
        struct mcs_config c;
        char err[256] = "";
        mcs_alloc_fail_at(n);
        enum mcs_config_result rc = mcs_config_parse(&c, lookup, (void *)pairs, err, sizeof(err));
        if (rc != MCS_CONFIG_OK) {
            mcs_alloc_fail_at(0);
            assert_int_equal(rc, MCS_CONFIG_ERROR);
            assert_true(strlen(err) > 0);
            config_failed = true;
            continue;
        }
        struct mcs_router r;
        if (mcs_router_init(&r, &c) != 0) {
            router_failed = true;
        } else {
            for (int i = 0; i < 50; i++) {
                char key[16];
                int len = snprintf(key, sizeof(key), "k%d", i);
                mcs_router_missed(&r, (uint32_t)(i % r.nservers), key, (size_t)len);
            }
            mcs_router_free(&r);
        }
        mcs_alloc_fail_at(0);
        mcs_config_free(&c);
        if (sweep_done(f0)) {
            assert_true(config_failed);
            assert_true(router_failed);
            return;
        }
    }
    fail_msg("sweep did not end");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seam),
        cmocka_unit_test(test_buf_append),
        cmocka_unit_test(test_keylog),
        cmocka_unit_test(test_config_and_router),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
