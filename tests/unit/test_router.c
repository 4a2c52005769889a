/*
 * tests/unit/test_router.c: the router's key -> server mapping and the server
 * health state machine.
 *
 * Routers are built from hand-made configurations (endpoint fields set
 * directly; nothing is resolved) and driven with a fake clock: plain numbers
 * passed as now_ms.
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

#include "hash/continuum.h"
#include "hash/hash.h"
#include "preload/core/router.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* A configuration with n servers "10.0.0.<i+1>:11211", weight 1. */
static void
make_config(struct mcs_config *c, size_t n, enum mcs_dist_kind dist, uint32_t failure_limit, uint32_t retry_ms)
{
    memset(c, 0, sizeof(*c));
    c->servers = calloc(n, sizeof(*c->servers));
    assert_non_null(c->servers);
    c->nservers = n;
    for (size_t i = 0; i < n; i++) {
        snprintf(c->servers[i].host, sizeof(c->servers[i].host), "10.0.%zu.%zu", i / 250, i % 250 + 1);
        c->servers[i].port = 11211;
        c->servers[i].weight = 1;
    }
    c->hash = MCS_HASH_MD5;
    c->dist = dist;
    c->timeout_ms = 1000;
    c->retry_ms = retry_ms;
    c->failure_limit = failure_limit;
    c->connections = 2;
    c->item_max = 1048576;
}

static void
key_of(unsigned i, char *out, size_t cap)
{
    snprintf(out, cap, "key:%u", i);
}

/* Ring lookups ------------------------------------------------------------- */

static void
test_deterministic_and_spread(void **state)
{
    (void)state;
    struct mcs_config cfg;
    make_config(&cfg, 4, MCS_DIST_KETAMA, 2, 1000);
    struct mcs_router a, b;
    assert_int_equal(mcs_router_init(&a, &cfg), 0);
    assert_int_equal(mcs_router_init(&b, &cfg), 0);
    assert_int_equal(a.nservers, 4);
    assert_int_equal(a.npoints, 4 * 160);
    unsigned count[4] = { 0 };
    const unsigned nkeys = 20000;
    for (unsigned i = 0; i < nkeys; i++) {
        char key[32];
        key_of(i, key, sizeof(key));
        uint32_t s = mcs_router_server_for_key(&a, key, strlen(key));
        assert_true(s < 4);
        assert_int_equal(mcs_router_server_for_key(&a, key, strlen(key)), s);
        assert_int_equal(mcs_router_server_for_key(&b, key, strlen(key)), s);
        /* the router is the continuum applied to the configured hash */
        uint32_t h = mcs_hash(MCS_HASH_MD5, key, strlen(key));
        assert_int_equal(mcs_continuum_lookup(MCS_DIST_KETAMA, a.points, a.npoints, h), s);
        count[s]++;
    }
    for (unsigned s = 0; s < 4; s++) {
        if (count[s] < nkeys * 15 / 100 || count[s] > nkeys * 35 / 100) {
            fail_msg("server %u got %u of %u keys", s, count[s], nkeys);
        }
    }
    /* keys are bytes, not C strings: a NUL inside counts */
    uint32_t s1 = mcs_router_server_for_key(&a, "a\0b", 3);
    assert_int_equal(s1, mcs_continuum_lookup(MCS_DIST_KETAMA, a.points, a.npoints, mcs_hash(MCS_HASH_MD5, "a\0b", 3)));
    /* the empty key hashes to 0 */
    assert_int_equal(mcs_router_server_for_key(&a, "", 0), mcs_continuum_lookup(MCS_DIST_KETAMA, a.points, a.npoints, 0));
    mcs_router_free(&a);
    mcs_router_free(&b);
    mcs_config_free(&cfg);
}

static void
test_one_server_always_zero(void **state)
{
    (void)state;
    enum mcs_dist_kind dists[] = { MCS_DIST_KETAMA, MCS_DIST_MODULA };
    for (size_t d = 0; d < NELEM(dists); d++) {
        struct mcs_config cfg;
        make_config(&cfg, 1, dists[d], 2, 1000);
        struct mcs_router r;
        assert_int_equal(mcs_router_init(&r, &cfg), 0);
        for (unsigned i = 0; i < 1000; i++) {
            char key[32];
            key_of(i, key, sizeof(key));
            assert_int_equal(mcs_router_server_for_key(&r, key, strlen(key)), 0);
        }
        assert_int_equal(mcs_router_server_for_key(&r, "", 0), 0);
        mcs_router_free(&r);
        mcs_config_free(&cfg);
    }
}

/* Adding a fifth server moves about a fifth of the keys, all to the new one. */
static void
test_ketama_consistency(void **state)
{
    (void)state;
    struct mcs_config c4, c5;
    make_config(&c4, 4, MCS_DIST_KETAMA, 2, 1000);
    make_config(&c5, 5, MCS_DIST_KETAMA, 2, 1000);
    struct mcs_router r4, r5;
    assert_int_equal(mcs_router_init(&r4, &c4), 0);
    assert_int_equal(mcs_router_init(&r5, &c5), 0);
    unsigned moved = 0;
    const unsigned nkeys = 20000;
    for (unsigned i = 0; i < nkeys; i++) {
        char key[32];
        key_of(i, key, sizeof(key));
        uint32_t a = mcs_router_server_for_key(&r4, key, strlen(key));
        uint32_t b = mcs_router_server_for_key(&r5, key, strlen(key));
        if (a != b) {
            assert_int_equal(b, 4);
            moved++;
        }
    }
    assert_in_range(moved, nkeys * 10 / 100, nkeys * 30 / 100);
    mcs_router_free(&r4);
    mcs_router_free(&r5);
    mcs_config_free(&c4);
    mcs_config_free(&c5);
}

static void
test_weights(void **state)
{
    (void)state;
    struct mcs_config cfg;
    make_config(&cfg, 3, MCS_DIST_KETAMA, 2, 1000);
    cfg.servers[2].weight = 4;
    struct mcs_router r;
    assert_int_equal(mcs_router_init(&r, &cfg), 0);
    unsigned count[3] = { 0 };
    const unsigned nkeys = 30000;
    for (unsigned i = 0; i < nkeys; i++) {
        char key[32];
        key_of(i, key, sizeof(key));
        count[mcs_router_server_for_key(&r, key, strlen(key))]++;
    }
    /* 1:1:4 -> about 1/6, 1/6, 2/3 */
    assert_in_range(count[2], nkeys * 55 / 100, nkeys * 78 / 100);
    assert_in_range(count[0], nkeys * 8 / 100, nkeys * 25 / 100);
    assert_in_range(count[1], nkeys * 8 / 100, nkeys * 25 / 100);
    mcs_router_free(&r);
    mcs_config_free(&cfg);
}

static void
test_modula(void **state)
{
    (void)state;
    struct mcs_config cfg;
    make_config(&cfg, 3, MCS_DIST_MODULA, 2, 1000);
    struct mcs_router r;
    assert_int_equal(mcs_router_init(&r, &cfg), 0);
    assert_int_equal(r.npoints, 3);
    unsigned count[3] = { 0 };
    for (unsigned i = 0; i < 3000; i++) {
        char key[32];
        key_of(i, key, sizeof(key));
        uint32_t h = mcs_hash(MCS_HASH_MD5, key, strlen(key));
        uint32_t s = mcs_router_server_for_key(&r, key, strlen(key));
        assert_int_equal(s, r.points[h % r.npoints].server);
        count[s]++;
    }
    for (unsigned s = 0; s < 3; s++) {
        assert_in_range(count[s], 700, 1300);
    }
    mcs_router_free(&r);
    mcs_config_free(&cfg);
}

/* The configured hash is the one used. */
static void
test_hash_choice(void **state)
{
    (void)state;
    struct mcs_config cfg;
    make_config(&cfg, 5, MCS_DIST_KETAMA, 2, 1000);
    cfg.hash = MCS_HASH_FNV1A_32;
    struct mcs_router r;
    assert_int_equal(mcs_router_init(&r, &cfg), 0);
    for (unsigned i = 0; i < 2000; i++) {
        char key[32];
        key_of(i, key, sizeof(key));
        uint32_t h = mcs_hash(MCS_HASH_FNV1A_32, key, strlen(key));
        assert_int_equal(mcs_router_server_for_key(&r, key, strlen(key)),
                         mcs_continuum_lookup(MCS_DIST_KETAMA, r.points, r.npoints, h));
    }
    mcs_router_free(&r);
    mcs_config_free(&cfg);
}

/* An explicit name replaces the address in the ring: a server can move. */
static void
test_names_keep_keys(void **state)
{
    (void)state;
    struct mcs_config a, b;
    make_config(&a, 3, MCS_DIST_KETAMA, 2, 1000);
    make_config(&b, 3, MCS_DIST_KETAMA, 2, 1000);
    for (size_t i = 0; i < 3; i++) {
        snprintf(a.servers[i].name, sizeof(a.servers[i].name), "cache-%zu", i);
        snprintf(b.servers[i].name, sizeof(b.servers[i].name), "cache-%zu", i);
    }
    snprintf(b.servers[1].host, sizeof(b.servers[1].host), "192.168.7.7");
    b.servers[1].port = 22122;
    struct mcs_router ra, rb, rplain;
    struct mcs_config plain;
    make_config(&plain, 3, MCS_DIST_KETAMA, 2, 1000);
    assert_int_equal(mcs_router_init(&ra, &a), 0);
    assert_int_equal(mcs_router_init(&rb, &b), 0);
    assert_int_equal(mcs_router_init(&rplain, &plain), 0);
    unsigned differ = 0;
    for (unsigned i = 0; i < 2000; i++) {
        char key[32];
        key_of(i, key, sizeof(key));
        uint32_t s = mcs_router_server_for_key(&ra, key, strlen(key));
        assert_int_equal(mcs_router_server_for_key(&rb, key, strlen(key)), s);
        differ += s != mcs_router_server_for_key(&rplain, key, strlen(key));
    }
    assert_true(differ > 0);   /* names do change the ring */
    mcs_router_free(&ra);
    mcs_router_free(&rb);
    mcs_router_free(&rplain);
    mcs_config_free(&a);
    mcs_config_free(&b);
    mcs_config_free(&plain);
}

static void
test_labels(void **state)
{
    (void)state;
    struct mcs_config cfg;
    make_config(&cfg, 3, MCS_DIST_KETAMA, 2, 1000);
    snprintf(cfg.servers[1].host, sizeof(cfg.servers[1].host), "::1");
    cfg.servers[1].port = 11212;
    snprintf(cfg.servers[2].host, sizeof(cfg.servers[2].host), "/run/mc.sock");
    cfg.servers[2].port = 0;
    cfg.servers[2].is_unix = true;
    struct mcs_router r;
    assert_int_equal(mcs_router_init(&r, &cfg), 0);
    assert_string_equal(r.servers[0].label, "10.0.0.1:11211");
    assert_string_equal(r.servers[1].label, "[::1]:11212");
    assert_string_equal(r.servers[2].label, "unix:/run/mc.sock");
    for (size_t i = 0; i < 3; i++) {
        assert_ptr_equal(r.servers[i].endpoint, &cfg.servers[i]);
        assert_int_equal(r.servers[i].health, MCS_HEALTH_UP);
        assert_int_equal(r.servers[i].failures, 0);
    }
    mcs_router_free(&r);
    mcs_config_free(&cfg);
}

static void
test_many_servers(void **state)
{
    (void)state;
    struct mcs_config cfg;
    make_config(&cfg, MCS_MAX_SERVERS, MCS_DIST_KETAMA, 2, 1000);
    struct mcs_router r;
    assert_int_equal(mcs_router_init(&r, &cfg), 0);
    assert_int_equal(r.nservers, MCS_MAX_SERVERS);
    assert_true(r.npoints >= MCS_MAX_SERVERS * 150);
    bool hit[MCS_MAX_SERVERS] = { false };
    for (unsigned i = 0; i < 50000; i++) {
        char key[32];
        key_of(i, key, sizeof(key));
        hit[mcs_router_server_for_key(&r, key, strlen(key))] = true;
    }
    unsigned n = 0;
    for (size_t s = 0; s < MCS_MAX_SERVERS; s++) {
        n += hit[s];
    }
    assert_true(n > MCS_MAX_SERVERS * 9 / 10);
    mcs_router_free(&r);
    mcs_router_free(&r);   /* twice is harmless */
    mcs_config_free(&cfg);
}

/* Health ------------------------------------------------------------------ */

/* A configuration and the router built from it, for the health tests. */
struct fixture {
    struct mcs_config cfg;
    struct mcs_router r;
};

/* Builds a router for a health test; the teardown frees it even when the test fails. */
static struct fixture *
fixture_new(void **state, size_t n, uint32_t failure_limit, uint32_t retry_ms)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    *state = f;
    make_config(&f->cfg, n, MCS_DIST_KETAMA, failure_limit, retry_ms);
    assert_int_equal(mcs_router_init(&f->r, &f->cfg), 0);
    return f;
}

static int
fixture_teardown(void **state)
{
    struct fixture *f = *state;
    if (f != NULL) {
        mcs_router_free(&f->r);
        mcs_config_free(&f->cfg);
        free(f);
        *state = NULL;
    }
    return 0;
}

static void
test_health_up_to_down(void **state)
{
    struct fixture *f = fixture_new(state, 3, 3, 1000);
    struct mcs_router *r = &f->r;
    assert_true(mcs_router_usable(r, 1, 0));
    assert_int_equal(mcs_router_next_retry(r), UINT64_MAX);
    /* below the limit: still up */
    assert_int_equal(mcs_router_failed(r, 1, MCS_FAILURE_CONNECT, 100), MCS_HEALTH_COUNT);
    assert_int_equal(mcs_router_failed(r, 1, MCS_FAILURE_TIMEOUT, 200), MCS_HEALTH_COUNT);
    assert_int_equal(r->servers[1].health, MCS_HEALTH_UP);
    assert_int_equal(r->servers[1].failures, 2);
    assert_true(mcs_router_usable(r, 1, 200));
    assert_int_equal(mcs_router_next_retry(r), UINT64_MAX);
    /* reaching the limit: down; the previous health is returned */
    assert_int_equal(mcs_router_failed(r, 1, MCS_FAILURE_RESET, 300), MCS_HEALTH_UP);
    assert_int_equal(r->servers[1].health, MCS_HEALTH_DOWN);
    assert_int_equal(r->servers[1].retry_at_ms, 1300);
    assert_int_equal(r->servers[1].down_since_ms, 300);
    assert_int_equal(r->servers[1].stats.downs, 1);
    assert_int_equal(mcs_router_next_retry(r), 1300);
    /* skipped until retry_at */
    assert_false(mcs_router_usable(r, 1, 300));
    assert_false(mcs_router_usable(r, 1, 1299));
    assert_int_equal(r->servers[1].health, MCS_HEALTH_DOWN);
    /* the other servers are untouched */
    assert_true(mcs_router_usable(r, 0, 500));
    assert_true(mcs_router_usable(r, 2, 500));
    assert_int_equal(r->servers[0].health, MCS_HEALTH_UP);
    /* then one attempt is let through: retrying */
    assert_true(mcs_router_usable(r, 1, 1300));
    assert_int_equal(r->servers[1].health, MCS_HEALTH_RETRYING);
    assert_true(mcs_router_usable(r, 1, 1301));
    assert_int_equal(mcs_router_next_retry(r), UINT64_MAX);
    /* success: up, failures forgotten */
    assert_int_equal(mcs_router_succeeded(r, 1), MCS_HEALTH_RETRYING);
    assert_int_equal(r->servers[1].health, MCS_HEALTH_UP);
    assert_int_equal(r->servers[1].failures, 0);
    assert_int_equal(mcs_router_succeeded(r, 1), MCS_HEALTH_COUNT);
}

/* A server whose retry comes late (now far past retry_at) is usable at once. */
static void
test_health_late_check(void **state)
{
    struct fixture *f = fixture_new(state, 2, 1, 500);
    struct mcs_router *r = &f->r;
    assert_int_equal(mcs_router_failed(r, 0, MCS_FAILURE_CONNECT, 10), MCS_HEALTH_UP);
    assert_int_equal(r->servers[0].retry_at_ms, 510);
    assert_true(mcs_router_usable(r, 0, 1000000));
    assert_int_equal(r->servers[0].health, MCS_HEALTH_RETRYING);
}

static void
test_health_retry_fails_again(void **state)
{
    struct fixture *f = fixture_new(state, 2, 2, 1000);
    struct mcs_router *r = &f->r;
    mcs_router_failed(r, 0, MCS_FAILURE_CONNECT, 0);
    assert_int_equal(mcs_router_failed(r, 0, MCS_FAILURE_CONNECT, 50), MCS_HEALTH_UP);
    assert_true(mcs_router_usable(r, 0, 1050));
    assert_int_equal(r->servers[0].health, MCS_HEALTH_RETRYING);
    /* one failure while retrying is enough: down again for another retry_ms */
    mcs_router_failed(r, 0, MCS_FAILURE_TIMEOUT, 2050);
    assert_int_equal(r->servers[0].health, MCS_HEALTH_DOWN);
    assert_int_equal(r->servers[0].retry_at_ms, 3050);
    assert_int_equal(r->servers[0].down_since_ms, 50);   /* down since the first time */
    assert_int_equal(mcs_router_next_retry(r), 3050);
    assert_false(mcs_router_usable(r, 0, 3049));
    assert_true(mcs_router_usable(r, 0, 3050));
    assert_int_equal(mcs_router_succeeded(r, 0), MCS_HEALTH_RETRYING);
    assert_int_equal(r->servers[0].health, MCS_HEALTH_UP);
    /* up again: it takes failure_limit failures once more */
    assert_int_equal(mcs_router_failed(r, 0, MCS_FAILURE_CONNECT, 4000), MCS_HEALTH_COUNT);
    assert_int_equal(r->servers[0].health, MCS_HEALTH_UP);
    assert_int_equal(mcs_router_failed(r, 0, MCS_FAILURE_CONNECT, 4001), MCS_HEALTH_UP);
    assert_int_equal(r->servers[0].stats.downs, 2);
}

/* router.h: "Return the previous health if it changed". Retrying -> down is a
 * change, so the caller can log it. */
static void
test_health_retry_failure_reports_change(void **state)
{
    struct fixture *f = fixture_new(state, 1, 1, 1000);
    struct mcs_router *r = &f->r;
    assert_int_equal(mcs_router_failed(r, 0, MCS_FAILURE_CONNECT, 0), MCS_HEALTH_UP);
    assert_true(mcs_router_usable(r, 0, 1000));
    assert_int_equal(mcs_router_failed(r, 0, MCS_FAILURE_CONNECT, 1001), MCS_HEALTH_RETRYING);
    assert_int_equal(r->servers[0].health, MCS_HEALTH_DOWN);
}

/* Replies to requests sent before the server went down may still fail (or
 * succeed) while it is down: a failure does not push the retry out. */
static void
test_health_events_while_down(void **state)
{
    struct fixture *f = fixture_new(state, 2, 2, 1000);
    struct mcs_router *r = &f->r;
    mcs_router_failed(r, 1, MCS_FAILURE_TIMEOUT, 0);
    mcs_router_failed(r, 1, MCS_FAILURE_TIMEOUT, 10);
    assert_int_equal(r->servers[1].health, MCS_HEALTH_DOWN);
    assert_int_equal(mcs_router_failed(r, 1, MCS_FAILURE_RESET, 500), MCS_HEALTH_COUNT);
    assert_int_equal(r->servers[1].health, MCS_HEALTH_DOWN);
    assert_int_equal(r->servers[1].retry_at_ms, 1010);
    assert_int_equal(r->servers[1].stats.downs, 1);
    /* a late success brings it back up at once */
    assert_int_equal(mcs_router_succeeded(r, 1), MCS_HEALTH_DOWN);
    assert_int_equal(r->servers[1].health, MCS_HEALTH_UP);
    assert_true(mcs_router_usable(r, 1, 600));
    assert_int_equal(mcs_router_next_retry(r), UINT64_MAX);
}

/* A success between failures resets the count: only consecutive ones count. */
static void
test_health_consecutive_only(void **state)
{
    struct fixture *f = fixture_new(state, 1, 3, 1000);
    struct mcs_router *r = &f->r;
    for (int round = 0; round < 5; round++) {
        assert_int_equal(mcs_router_failed(r, 0, MCS_FAILURE_CONNECT, 100), MCS_HEALTH_COUNT);
        assert_int_equal(mcs_router_failed(r, 0, MCS_FAILURE_CONNECT, 100), MCS_HEALTH_COUNT);
        assert_int_equal(mcs_router_succeeded(r, 0), MCS_HEALTH_COUNT);
        assert_int_equal(r->servers[0].health, MCS_HEALTH_UP);
    }
    assert_int_equal(r->servers[0].stats.downs, 0);
}

static void
test_next_retry_earliest(void **state)
{
    struct fixture *f = fixture_new(state, 4, 1, 1000);
    struct mcs_router *r = &f->r;
    assert_int_equal(mcs_router_next_retry(r), UINT64_MAX);
    mcs_router_failed(r, 2, MCS_FAILURE_CONNECT, 500);    /* retry at 1500 */
    mcs_router_failed(r, 0, MCS_FAILURE_CONNECT, 200);    /* retry at 1200 */
    mcs_router_failed(r, 3, MCS_FAILURE_CONNECT, 900);    /* retry at 1900 */
    assert_int_equal(mcs_router_next_retry(r), 1200);
    assert_true(mcs_router_usable(r, 0, 1200));           /* 0 retrying: no longer waited for */
    assert_int_equal(mcs_router_next_retry(r), 1500);
    mcs_router_succeeded(r, 2);
    assert_int_equal(mcs_router_next_retry(r), 1900);
    assert_false(mcs_router_usable(r, 3, 1899));
    assert_true(mcs_router_usable(r, 3, 1900));
    assert_int_equal(mcs_router_next_retry(r), UINT64_MAX);
    mcs_router_failed(r, 0, MCS_FAILURE_PROTOCOL, 2000);  /* retrying -> down, retry at 3000 */
    assert_int_equal(mcs_router_next_retry(r), 3000);
}

static void
test_names(void **state)
{
    (void)state;
    assert_string_equal(mcs_health_name(MCS_HEALTH_UP), "up");
    assert_string_equal(mcs_health_name(MCS_HEALTH_DOWN), "down");
    assert_string_equal(mcs_health_name(MCS_HEALTH_RETRYING), "retrying");
    assert_string_equal(mcs_health_name(MCS_HEALTH_COUNT), "?");
    assert_string_equal(mcs_failure_name(MCS_FAILURE_CONNECT), "connect failed");
    assert_string_equal(mcs_failure_name(MCS_FAILURE_RESET), "connection reset or closed");
    assert_string_equal(mcs_failure_name(MCS_FAILURE_TIMEOUT), "timed out");
    assert_string_equal(mcs_failure_name(MCS_FAILURE_PROTOCOL), "sent bytes that are not memcached");
    assert_string_equal(mcs_failure_name(MCS_FAILURE_COUNT), "?");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deterministic_and_spread),
        cmocka_unit_test(test_one_server_always_zero),
        cmocka_unit_test(test_ketama_consistency),
        cmocka_unit_test(test_weights),
        cmocka_unit_test(test_modula),
        cmocka_unit_test(test_hash_choice),
        cmocka_unit_test(test_names_keep_keys),
        cmocka_unit_test(test_labels),
        cmocka_unit_test(test_many_servers),
        cmocka_unit_test_teardown(test_health_up_to_down, fixture_teardown),
        cmocka_unit_test_teardown(test_health_late_check, fixture_teardown),
        cmocka_unit_test_teardown(test_health_retry_fails_again, fixture_teardown),
        cmocka_unit_test_teardown(test_health_retry_failure_reports_change, fixture_teardown),
        cmocka_unit_test_teardown(test_health_events_while_down, fixture_teardown),
        cmocka_unit_test_teardown(test_health_consecutive_only, fixture_teardown),
        cmocka_unit_test_teardown(test_next_retry_earliest, fixture_teardown),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
