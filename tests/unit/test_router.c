/*
 * tests/unit/test_router.c: the router's key -> server mapping and the server
 * health state machine.
 *
 * Routers are built from hand-made configurations (endpoint fields set
 * directly; nothing is resolved) and driven with a fake clock: plain numbers
 * passed as now_ms. Covers the states up/down/rejoining/warming, restart vs
 * cut on a probe's answer, and the copies of a key (replicas, backup, eject).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash/continuum.h"
#include "hash/hash.h"
#include "preload/core/router.h"
#include "tests/unit/unit.h"

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
    assert_int_equal(mcs_router_next_event(r), UINT64_MAX);
    /* refused/reset below the limit: still up */
    assert_int_equal(mcs_router_failed(r, 1, MCS_FAILURE_CONNECT, 100), MCS_HEALTH_COUNT);
    assert_int_equal(mcs_router_failed(r, 1, MCS_FAILURE_RESET, 200), MCS_HEALTH_COUNT);
    assert_int_equal(r->servers[1].health, MCS_HEALTH_UP);
    assert_int_equal(r->servers[1].failures, 2);
    assert_true(mcs_router_usable(r, 1, 200));
    /* reaching the limit: down; the previous health is returned */
    assert_int_equal(mcs_router_failed(r, 1, MCS_FAILURE_RESET, 300), MCS_HEALTH_UP);
    assert_int_equal(r->servers[1].health, MCS_HEALTH_DOWN);
    assert_int_equal(r->servers[1].retry_at_ms, 1300);
    assert_int_equal(r->servers[1].down_since_ms, 300);
    assert_int_equal(r->servers[1].stats.downs, 1);
    assert_int_equal(mcs_router_next_event(r), 1300);
    /* no traffic while down, however late it is: only probes bring it back */
    assert_false(mcs_router_usable(r, 1, 300));
    assert_false(mcs_router_usable(r, 1, 1000000));
    assert_false(mcs_router_probe_due(r, 1, 1299));
    assert_true(mcs_router_probe_due(r, 1, 1300));
    /* the other servers are untouched */
    assert_true(mcs_router_usable(r, 0, 500));
    assert_false(mcs_router_probe_due(r, 0, 5000));
    /* late failures of requests sent before it went down change nothing */
    assert_int_equal(mcs_router_failed(r, 1, MCS_FAILURE_RESET, 400), MCS_HEALTH_COUNT);
    assert_int_equal(r->servers[1].retry_at_ms, 1300);
    /* successes reset the count only while in use */
    mcs_router_succeeded(r, 0);
    assert_int_equal(r->servers[0].failures, 0);
}

/* One timeout is enough: a silent server costs one deadline, not failure_limit of them. */
static void
test_health_timeout_downs_at_once(void **state)
{
    struct fixture *f = fixture_new(state, 2, 5, 500);
    struct mcs_router *r = &f->r;
    assert_int_equal(mcs_router_failed(r, 0, MCS_FAILURE_TIMEOUT, 10), MCS_HEALTH_UP);
    assert_int_equal(r->servers[0].health, MCS_HEALTH_DOWN);
    assert_int_equal(r->servers[0].retry_at_ms, 510);
}

/* A probe: while in flight no other is due; a failed one waits another retry_ms. */
static void
test_health_probe_cycle(void **state)
{
    struct fixture *f = fixture_new(state, 2, 1, 1000);
    struct mcs_router *r = &f->r;
    assert_int_equal(mcs_router_failed(r, 0, MCS_FAILURE_CONNECT, 0), MCS_HEALTH_UP);
    assert_true(mcs_router_probe_due(r, 0, 1000));
    mcs_router_probe_start(r, 0, 0);
    assert_int_equal(r->servers[0].stats.probes, 1);
    assert_false(mcs_router_probe_due(r, 0, 1000));
    assert_int_equal(mcs_router_next_event(r), UINT64_MAX);   /* nothing to do until it answers */
    /* the probe fails: down -> down (no change to log), next probe later */
    assert_int_equal(mcs_router_failed(r, 0, MCS_FAILURE_TIMEOUT, 1500), MCS_HEALTH_COUNT);
    assert_false(r->servers[0].probing);
    assert_int_equal(r->servers[0].retry_at_ms, 2500);
    assert_int_equal(mcs_router_next_event(r), 2500);
    assert_int_equal(r->servers[0].stats.downs, 1);
}

static const struct mcs_identity id_a = { .pid = 100, .started = 1000000, .known = true };
static const struct mcs_identity id_a_later = { .pid = 100, .started = 1000002, .known = true };
static const struct mcs_identity id_b = { .pid = 100, .started = 1000900, .known = true };   /* same pid, new start */
static const struct mcs_identity id_c = { .pid = 200, .started = 1000000, .known = true };

/* A fixture with a backup pool (keys have copies): servers 0..n-1 primaries, then nb backups. */
static struct fixture *
fixture_copies(void **state, size_t n, size_t nb, uint32_t replicas)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    *state = f;
    make_config(&f->cfg, n + nb, MCS_DIST_KETAMA, 1, 1000);
    f->cfg.nprimaries = n;
    f->cfg.nbackups = nb;
    f->cfg.replicas = replicas;
    f->cfg.warmup_s = 60;
    f->cfg.rejoin_log = 3;
    assert_int_equal(mcs_router_init(&f->r, &f->cfg), 0);
    return f;
}

static void
down_and_probe(struct mcs_router *r, uint32_t s, uint64_t now)
{
    assert_int_not_equal(mcs_router_failed(r, s, MCS_FAILURE_TIMEOUT, now), MCS_HEALTH_COUNT);
    assert_true(mcs_router_probe_due(r, s, now + 1000));
    mcs_router_probe_start(r, s, 0);
}

/* Restart (new pid or start time): nothing to replay, warming for warmup_s. */
static void
test_rejoin_restart_warms(void **state)
{
    struct fixture *f = fixture_copies(state, 3, 1, 1);
    struct mcs_router *r = &f->r;
    mcs_router_identify(r, 1, &id_a);
    down_and_probe(r, 1, 0);
    mcs_router_missed(r, 1, "k1", 2);
    assert_int_equal(r->servers[1].stats.invalidations_logged, 1);
    assert_int_equal(mcs_router_probe_ok(r, 1, &id_b, 1000), MCS_REJOIN_NOTHING);
    assert_int_equal(r->servers[1].health, MCS_HEALTH_WARMING);
    assert_int_equal(r->servers[1].stats.restarts, 1);
    assert_int_equal(r->servers[1].stats.rejoins, 0);
    assert_int_equal(mcs_keylog_count(&r->servers[1].missed), 0);
    assert_true(mcs_router_usable(r, 1, 1000));
    assert_true(mcs_router_warming(r, 1, 60999));
    assert_int_equal(mcs_router_next_event(r), 61000);
    assert_false(mcs_router_warming(r, 1, 61000));   /* the window is over */
    assert_int_equal(r->servers[1].health, MCS_HEALTH_UP);
    /* a different pid is a restart too */
    down_and_probe(r, 1, 70000);
    assert_int_equal(mcs_router_probe_ok(r, 1, &id_c, 71000), MCS_REJOIN_NOTHING);
    assert_int_equal(r->servers[1].stats.restarts, 2);
}

/* A cut (same instance): the missed keys are replayed before it serves; then warming. */
static void
test_rejoin_cut_replays(void **state)
{
    struct fixture *f = fixture_copies(state, 3, 1, 1);
    struct mcs_router *r = &f->r;
    mcs_router_identify(r, 2, &id_a);
    down_and_probe(r, 2, 0);
    mcs_router_missed(r, 2, "k1", 2);
    mcs_router_missed(r, 2, "k2", 2);
    mcs_router_missed(r, 2, "k1", 2);   /* once */
    assert_int_equal(mcs_router_probe_ok(r, 2, &id_a_later, 1000), MCS_REJOIN_DELETES);
    assert_int_equal(r->servers[2].health, MCS_HEALTH_REJOINING);
    assert_int_equal(r->servers[2].stats.rejoins, 1);
    assert_false(mcs_router_usable(r, 2, 1000));
    assert_false(mcs_router_probe_due(r, 2, 100000));
    assert_int_equal(mcs_keylog_count(&r->servers[2].missed), 2);
    mcs_router_rejoined(r, 2, 2000);
    assert_int_equal(r->servers[2].health, MCS_HEALTH_WARMING);
    assert_int_equal(mcs_keylog_count(&r->servers[2].missed), 0);
    /* a cut with nothing missed: straight back */
    down_and_probe(r, 2, 100000);
    assert_int_equal(mcs_router_probe_ok(r, 2, &id_a, 101000), MCS_REJOIN_NOTHING);
    assert_int_equal(r->servers[2].health, MCS_HEALTH_WARMING);
    assert_int_equal(r->servers[2].stats.rejoins, 2);
    /* unknown identity (never seen before it went down) counts as a cut */
    struct mcs_identity unknown = { 0 };
    r->servers[0].identity = unknown;
    down_and_probe(r, 0, 200000);
    mcs_router_missed(r, 0, "x", 1);
    assert_int_equal(mcs_router_probe_ok(r, 0, &id_c, 201000), MCS_REJOIN_DELETES);
}

/* Too many missed keys, a missed flush_all, or the flush policy: flush on rejoin. */
static void
test_rejoin_flush(void **state)
{
    struct fixture *f = fixture_copies(state, 3, 1, 1);
    struct mcs_router *r = &f->r;
    mcs_router_identify(r, 0, &id_a);
    down_and_probe(r, 0, 0);
    for (int i = 0; i < 4; i++) {
        char k[8];
        snprintf(k, sizeof(k), "k%d", i);
        mcs_router_missed(r, 0, k, strlen(k));   /* rejoin_log = 3 */
    }
    assert_true(mcs_keylog_overflowed(&r->servers[0].missed));
    assert_int_equal(mcs_router_probe_ok(r, 0, &id_a, 1000), MCS_REJOIN_FLUSH_ALL);
    mcs_router_rejoined(r, 0, 1000);
    assert_false(mcs_keylog_overflowed(&r->servers[0].missed));

    down_and_probe(r, 0, 10000);
    mcs_router_missed_flush(r, 0);
    assert_int_equal(mcs_router_probe_ok(r, 0, &id_a, 11000), MCS_REJOIN_FLUSH_ALL);
    mcs_router_rejoined(r, 0, 11000);
    assert_false(r->servers[0].missed_flush);

    f->cfg.rejoin = MCS_REJOIN_FLUSH;
    down_and_probe(r, 0, 20000);
    assert_int_equal(mcs_router_probe_ok(r, 0, &id_a, 21000), MCS_REJOIN_FLUSH_ALL);
    /* a failure while rejoining: down again, reported as a change */
    assert_int_equal(mcs_router_failed(r, 0, MCS_FAILURE_RESET, 21500), MCS_HEALTH_REJOINING);
    assert_int_equal(r->servers[0].health, MCS_HEALTH_DOWN);
    assert_int_equal(r->servers[0].retry_at_ms, 22500);
}

/* Without copies there is nothing to warm from: back means up. */
static void
test_rejoin_no_copies_up(void **state)
{
    struct fixture *f = fixture_new(state, 3, 1, 1000);
    struct mcs_router *r = &f->r;
    f->cfg.warmup_s = 60;
    assert_false(r->copies);
    mcs_router_identify(r, 1, &id_a);
    down_and_probe(r, 1, 0);
    assert_int_equal(mcs_router_probe_ok(r, 1, &id_b, 1000), MCS_REJOIN_NOTHING);
    assert_int_equal(r->servers[1].health, MCS_HEALTH_UP);
}

/* Reference: the next distinct servers clockwise on the ketama points. */
static void
ref_targets(const struct mcs_router *r, const char *key, uint32_t replicas, uint32_t *out, uint32_t *n)
{
    uint32_t h = mcs_hash(MCS_HASH_MD5, key, strlen(key));
    size_t i = 0;
    while (i < r->npoints && r->points[i].value < h) {
        i++;
    }
    *n = 0;
    for (size_t k = 0; k < r->npoints && *n < replicas; k++) {
        uint32_t s = r->points[(i + k) % r->npoints].server;
        bool seen = false;
        for (uint32_t j = 0; j < *n; j++) {
            seen = seen || out[j] == s;
        }
        if (!seen) {
            out[(*n)++] = s;
        }
    }
}

static void
test_targets_replicas_and_backup(void **state)
{
    struct fixture *f = fixture_copies(state, 5, 2, 3);
    struct mcs_router *r = &f->r;
    assert_true(r->copies);
    assert_int_equal(r->nprimaries, 5);
    assert_true(r->servers[5].backup && r->servers[6].backup && !r->servers[4].backup);
    unsigned backup_hits[2] = { 0, 0 };
    for (unsigned i = 0; i < 2000; i++) {
        char key[32];
        key_of(i, key, sizeof(key));
        uint32_t t[MCS_MAX_TARGETS], want[MCS_MAX_TARGETS], nwant;
        uint32_t n = mcs_router_targets(r, key, strlen(key), t);
        assert_int_equal(n, 4);
        ref_targets(r, key, 3, want, &nwant);
        assert_int_equal(nwant, 3);
        assert_memory_equal(t, want, 3 * sizeof(uint32_t));
        assert_int_equal(t[0], mcs_router_server_for_key(r, key, strlen(key)));
        assert_in_range(t[3], 5, 6);
        backup_hits[t[3] - 5]++;
        /* the primary ring is the 5 primaries alone: same as a router without the backups */
        assert_in_range(t[0], 0, 4);
    }
    assert_true(backup_hits[0] > 600 && backup_hits[1] > 600);
}

/* Primaries' placement does not depend on the backup pool. */
static void
test_targets_primary_unchanged_by_backup(void **state)
{
    struct fixture *f = fixture_copies(state, 4, 2, 1);
    struct mcs_config plain;
    struct mcs_router rp;
    make_config(&plain, 4, MCS_DIST_KETAMA, 1, 1000);
    assert_int_equal(mcs_router_init(&rp, &plain), 0);
    for (unsigned i = 0; i < 1000; i++) {
        char key[32];
        key_of(i, key, sizeof(key));
        uint32_t t[MCS_MAX_TARGETS];
        assert_int_equal(mcs_router_targets(&f->r, key, strlen(key), t), 2);
        assert_int_equal(t[0], mcs_router_server_for_key(&rp, key, strlen(key)));
    }
    mcs_router_free(&rp);
    mcs_config_free(&plain);
}

/* Eject (no copies): a down primary's keys go to their owner among the live primaries. */
static void
test_targets_eject(void **state)
{
    struct fixture *f = fixture_new(state, 4, 1, 1000);
    struct mcs_router *r = &f->r;
    f->cfg.eject = true;
    struct mcs_config live_cfg;
    struct mcs_router live;
    make_config(&live_cfg, 3, MCS_DIST_KETAMA, 1, 1000);
    /* the same servers without number 2 */
    memcpy(&live_cfg.servers[2], &f->cfg.servers[3], sizeof(live_cfg.servers[2]));
    assert_int_equal(mcs_router_init(&live, &live_cfg), 0);
    mcs_router_failed(r, 2, MCS_FAILURE_TIMEOUT, 0);
    unsigned moved = 0;
    for (unsigned i = 0; i < 1000; i++) {
        char key[32];
        key_of(i, key, sizeof(key));
        uint32_t t[MCS_MAX_TARGETS];
        uint32_t n = mcs_router_targets(r, key, strlen(key), t);
        if (t[0] != 2) {
            assert_int_equal(n, 1);
            continue;
        }
        moved++;
        assert_int_equal(n, 2);
        uint32_t l = mcs_router_server_for_key(&live, key, strlen(key));
        assert_int_equal(t[1], l < 2 ? l : 3);
    }
    assert_true(moved > 100);
    /* back: the ring is whole again */
    mcs_router_probe_start(r, 2, 0);
    mcs_router_probe_ok(r, 2, &id_a, 5000);
    for (unsigned i = 0; i < 1000; i++) {
        char key[32];
        key_of(i, key, sizeof(key));
        uint32_t t[MCS_MAX_TARGETS];
        assert_int_equal(mcs_router_targets(r, key, strlen(key), t), 1);
    }
    mcs_router_free(&live);
    mcs_config_free(&live_cfg);
}

static void
test_names(void **state)
{
    (void)state;
    assert_string_equal(mcs_health_name(MCS_HEALTH_UP), "up");
    assert_string_equal(mcs_health_name(MCS_HEALTH_DOWN), "down");
    assert_string_equal(mcs_health_name(MCS_HEALTH_REJOINING), "rejoining");
    assert_string_equal(mcs_health_name(MCS_HEALTH_WARMING), "warming");
    assert_string_equal(mcs_health_name(MCS_HEALTH_COUNT), "?");
    assert_string_equal(mcs_failure_name(MCS_FAILURE_CONNECT), "connect failed");
    assert_string_equal(mcs_failure_name(MCS_FAILURE_RESET), "connection reset or closed");
    assert_string_equal(mcs_failure_name(MCS_FAILURE_TIMEOUT), "timed out");
    assert_string_equal(mcs_failure_name(MCS_FAILURE_PROTOCOL), "sent bytes that are not memcached");
    assert_string_equal(mcs_failure_name(MCS_FAILURE_COUNT), "?");
}

/* Two processes (two routers) share one segment ---------------------------- */

struct host {
    struct mcs_config cfg;
    struct mcs_router a, b;     /* "process" 101 and "process" 102 */
    struct mcs_seg *seg;
};

static struct host *
host_new(void **state)
{
    struct host *h = calloc(1, sizeof(*h));
    assert_non_null(h);
    *state = h;
    make_config(&h->cfg, 4, MCS_DIST_KETAMA, 1, 1000);
    h->cfg.nprimaries = 3;
    h->cfg.nbackups = 1;
    h->cfg.replicas = 1;
    h->cfg.warmup_s = 60;
    h->cfg.rejoin_log = 100;
    h->seg = calloc(1, MCS_SEG_SIZE);
    assert_non_null(h->seg);
    static const uint8_t boot[16] = { 1 };
    mcs_seg_format(h->seg, boot, 0);
    assert_int_equal(mcs_router_init(&h->a, &h->cfg), 0);
    assert_int_equal(mcs_router_init(&h->b, &h->cfg), 0);
    mcs_router_share(&h->a, h->seg, 101);
    mcs_router_share(&h->b, h->seg, 102);
    return h;
}

static int
host_teardown(void **state)
{
    struct host *h = *state;
    if (h != NULL) {
        mcs_router_free(&h->a);
        mcs_router_free(&h->b);
        mcs_config_free(&h->cfg);
        free(h->seg);
        free(h);
        *state = NULL;
    }
    return 0;
}

static enum mcs_health
sync_one(struct mcs_router *r, uint32_t s, uint64_t now)
{
    enum mcs_failure why;
    return mcs_router_sync(r, s, now, &why);
}

/* A down found by one process is the other's at its next sync, with the reason;
 * a third process that shares later starts with it. */
static void
test_shared_down_is_adopted(void **state)
{
    struct host *h = host_new(state);
    assert_int_equal(sync_one(&h->b, 1, 0), MCS_HEALTH_COUNT);
    assert_int_equal(mcs_router_failed(&h->a, 1, MCS_FAILURE_TIMEOUT, 100), MCS_HEALTH_UP);
    enum mcs_failure why;
    assert_int_equal(mcs_router_sync(&h->b, 1, 150, &why), MCS_HEALTH_UP);
    assert_int_equal(why, MCS_FAILURE_TIMEOUT);
    assert_int_equal(h->b.servers[1].health, MCS_HEALTH_DOWN);
    assert_int_equal(h->b.servers[1].retry_at_ms, 1100);   /* the host's retry time, not its own */
    assert_int_equal(sync_one(&h->b, 1, 200), MCS_HEALTH_COUNT);   /* once */
    assert_int_equal(h->b.servers[1].stats.downs, 0);   /* counted once, by the finder */
    struct mcs_router c;
    assert_int_equal(mcs_router_init(&c, &h->cfg), 0);
    mcs_router_share(&c, h->seg, 103);
    assert_int_equal(sync_one(&c, 1, 300), MCS_HEALTH_UP);
    assert_false(mcs_router_usable(&c, 1, 300));
    mcs_router_free(&c);
}

/* One prober at a time: the lease. A failed probe delays everyone's next one. */
static void
test_shared_probe_lease(void **state)
{
    struct host *h = host_new(state);
    mcs_router_failed(&h->a, 2, MCS_FAILURE_TIMEOUT, 0);
    sync_one(&h->b, 2, 0);
    assert_true(mcs_router_probe_due(&h->a, 2, 1000));
    assert_true(mcs_router_probe_due(&h->b, 2, 1000));
    assert_true(mcs_router_probe_start(&h->b, 2, 1000));
    assert_false(mcs_router_probe_start(&h->a, 2, 1000));   /* b holds the lease */
    assert_false(mcs_router_probe_due(&h->a, 2, 1500));
    assert_int_equal(h->a.servers[2].stats.probes, 0);
    /* b's probe fails: the host waits retry_ms; a may probe after that, not before */
    assert_int_equal(mcs_router_failed(&h->b, 2, MCS_FAILURE_TIMEOUT, 1200), MCS_HEALTH_COUNT);
    assert_false(mcs_router_probe_start(&h->a, 2, 2100));
    assert_true(mcs_router_probe_start(&h->a, 2, 2200));
    /* a's probe never answers (a died): the lease expires, b takes over */
    assert_false(mcs_router_probe_start(&h->b, 2, 3300));
    assert_true(mcs_router_probe_start(&h->b, 2, 2200 + 3 * 1000 + 1000));
}

/* Keys logged by a process that is gone are replayed by whoever rejoins the
 * server; the others follow its states: rejoining (unusable), then warming. */
static void
test_shared_rejoin_uses_the_host_log(void **state)
{
    struct host *h = host_new(state);
    mcs_router_identify(&h->a, 0, &id_a);
    mcs_router_failed(&h->a, 0, MCS_FAILURE_TIMEOUT, 0);
    mcs_router_missed(&h->a, 0, "gone-writer-1", 13);
    mcs_router_missed(&h->a, 0, "gone-writer-2", 13);
    mcs_router_free(&h->a);   /* process a exits */
    assert_int_equal(mcs_router_init(&h->a, &h->cfg), 0);
    sync_one(&h->b, 0, 10);
    assert_true(mcs_router_probe_due(&h->b, 0, 1000));
    assert_true(mcs_router_probe_start(&h->b, 0, 1000));
    /* b never saw the server before: the host's memory of the instance says "cut" */
    assert_int_equal(mcs_router_probe_ok(&h->b, 0, &id_a_later, 1010), MCS_REJOIN_DELETES);
    assert_int_equal(mcs_seg_log_count(h->seg, h->b.servers[0].seg_index), 2);
    struct mcs_router c;
    assert_int_equal(mcs_router_init(&c, &h->cfg), 0);
    mcs_router_share(&c, h->seg, 103);
    sync_one(&c, 0, 1020);
    assert_int_equal(c.servers[0].health, MCS_HEALTH_REJOINING);
    /* the replay (the engine's part) empties the log; b ends the rejoin */
    struct mcs_buf keys = { 0 };
    uint64_t tickets[4];
    bool stuck;
    assert_int_equal(mcs_seg_log_take(h->seg, h->b.servers[0].seg_index, 4, &keys, tickets, &stuck), 2);
    mcs_seg_log_done(h->seg, tickets[0], true);
    mcs_seg_log_done(h->seg, tickets[1], true);
    mcs_buf_free(&keys);
    mcs_router_rejoined(&h->b, 0, 1100);
    assert_int_equal(h->b.servers[0].health, MCS_HEALTH_WARMING);
    assert_int_equal(sync_one(&c, 0, 1200), MCS_HEALTH_REJOINING);
    assert_int_equal(c.servers[0].health, MCS_HEALTH_WARMING);
    assert_int_equal(c.servers[0].warm_until_ms, 1100 + 60000);
    assert_true(mcs_router_host_usable(&c, 0));
    /* the window ends for the host */
    assert_int_equal(sync_one(&c, 0, 61100), MCS_HEALTH_WARMING);
    assert_int_equal(c.servers[0].health, MCS_HEALTH_UP);
    mcs_router_free(&c);
}

/* A restart seen by the prober empties the host's log: an empty server holds nothing stale. */
static void
test_shared_restart_clears_the_log(void **state)
{
    struct host *h = host_new(state);
    mcs_router_identify(&h->a, 1, &id_a);
    mcs_router_failed(&h->a, 1, MCS_FAILURE_TIMEOUT, 0);
    mcs_router_missed(&h->a, 1, "k", 1);
    sync_one(&h->b, 1, 0);
    assert_true(mcs_router_probe_start(&h->b, 1, 1000));
    assert_int_equal(mcs_router_probe_ok(&h->b, 1, &id_c, 1001), MCS_REJOIN_NOTHING);
    assert_int_equal(mcs_seg_log_count(h->seg, h->b.servers[1].seg_index), 0);
    assert_int_equal(sync_one(&h->a, 1, 1002), MCS_HEALTH_DOWN);
    assert_int_equal(h->a.servers[1].health, MCS_HEALTH_WARMING);
}

/* MCSHIM_REJOIN_LOG bounds the host's log per server: beyond it, flush on rejoin. */
static void
test_shared_log_limit_flushes(void **state)
{
    struct host *h = host_new(state);
    h->cfg.rejoin_log = 2;
    mcs_router_identify(&h->a, 0, &id_a);
    mcs_router_failed(&h->a, 0, MCS_FAILURE_TIMEOUT, 0);
    mcs_router_missed(&h->a, 0, "k1", 2);
    mcs_router_missed(&h->b, 0, "k2", 2);
    mcs_router_missed(&h->b, 0, "k3", 2);
    assert_true(mcs_router_probe_start(&h->a, 0, 1000));
    assert_int_equal(mcs_router_probe_ok(&h->a, 0, &id_a, 1001), MCS_REJOIN_FLUSH_ALL);
}

/* A state word that is no state: the router gives the segment up (the engine unshares). */
static void
test_shared_corrupt_state(void **state)
{
    struct host *h = host_new(state);
    h->seg->servers[h->b.servers[3].seg_index].state = 0x1234567;   /* health 0x67 */
    assert_int_equal(sync_one(&h->b, 3, 0), MCS_HEALTH_COUNT);
    assert_true(h->b.seg_corrupt);
    mcs_router_failed(&h->b, 3, MCS_FAILURE_TIMEOUT, 0);
    mcs_router_unshare(&h->b);
    assert_null(h->b.seg);
    assert_true(h->b.servers[3].missed_flush);   /* its missed keys were in the segment */
    assert_false(h->b.servers[0].missed_flush);
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
        cmocka_unit_test_teardown(test_health_timeout_downs_at_once, fixture_teardown),
        cmocka_unit_test_teardown(test_health_probe_cycle, fixture_teardown),
        cmocka_unit_test_teardown(test_rejoin_restart_warms, fixture_teardown),
        cmocka_unit_test_teardown(test_rejoin_cut_replays, fixture_teardown),
        cmocka_unit_test_teardown(test_rejoin_flush, fixture_teardown),
        cmocka_unit_test_teardown(test_rejoin_no_copies_up, fixture_teardown),
        cmocka_unit_test_teardown(test_targets_replicas_and_backup, fixture_teardown),
        cmocka_unit_test_teardown(test_targets_primary_unchanged_by_backup, fixture_teardown),
        cmocka_unit_test_teardown(test_targets_eject, fixture_teardown),
        cmocka_unit_test(test_names),
        cmocka_unit_test_teardown(test_shared_down_is_adopted, host_teardown),
        cmocka_unit_test_teardown(test_shared_probe_lease, host_teardown),
        cmocka_unit_test_teardown(test_shared_rejoin_uses_the_host_log, host_teardown),
        cmocka_unit_test_teardown(test_shared_restart_clears_the_log, host_teardown),
        cmocka_unit_test_teardown(test_shared_log_limit_flushes, host_teardown),
        cmocka_unit_test_teardown(test_shared_corrupt_state, host_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
