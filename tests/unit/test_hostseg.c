/*
 * tests/unit/test_hostseg.c: the host-wide state segment (hostseg.h).
 *
 * Covers the header check (size, magic, version, geometry, the broken flag,
 * another boot's times reset), server entries (claim, find, id limits, a full
 * table), the health word's compare-and-swap moves and epochs, the probe
 * lease, flags and counters, the missed-writes log (de-duplication, the take
 * format and tickets, done, clear, overflow, the kept key count agreeing with
 * a scan, and what a killed or hostile process leaves: a slot "writing", a
 * slot "taking", a corrupt length),
 * process slots, random bytes everywhere (nothing crashes or loops, counts
 * stay in bounds), and forked processes racing on one shared mapping.
 *
 * Each test gets a fresh formatted segment (zeroed like a new file; a shared
 * anonymous mapping, so fork tests can use it too). States a dead or hostile
 * process leaves are written by hand into the structs, the file's layout.
 * Forked children never call cmocka: they report in shared memory and exit 1
 * on a failed check.
 */
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "preload/core/hostseg.h"
#include "preload/core/router.h"
#include "tests/unit/unit.h"

static const uint8_t boot_a[16] = { 'b', 'o', 'o', 't', '-', 'a' };
static const uint8_t boot_b[16] = { 'b', 'o', 'o', 't', '-', 'b' };

/* What the last take() returned (tests run one at a time). */
#define TAKE_MAX 64u
static struct mcs_buf keys;
static uint64_t tk[TAKE_MAX];
static bool stuck;

static int
seg_setup(void **state)
{
    struct mcs_seg *seg = mmap(NULL, MCS_SEG_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (seg == MAP_FAILED) {
        return -1;
    }
    mcs_seg_format(seg, boot_a, 1000);
    *state = seg;
    return mcs_seg_check(seg, MCS_SEG_SIZE, boot_a) == MCS_SEG_OK ? 0 : -1;
}

static int
seg_teardown(void **state)
{
    mcs_buf_free(&keys);
    return munmap(*state, MCS_SEG_SIZE);
}

static uint32_t
server(struct mcs_seg *seg, const char *id)
{
    uint32_t i = mcs_seg_server_find(seg, id, strlen(id), true);
    assert_true(i < MCS_SEG_SERVERS);
    return i;
}

static enum mcs_seg_result
add(struct mcs_seg *seg, uint32_t i, const char *key)
{
    return mcs_seg_log_add(seg, i, key, strlen(key));
}

/* Takes up to max keys of server i into keys/tk/stuck (keys emptied first). */
static size_t
take(struct mcs_seg *seg, uint32_t i, size_t max)
{
    mcs_buf_reset(&keys);
    stuck = !stuck;   /* take must set it either way */
    return mcs_seg_log_take(seg, i, max, &keys, tk, &stuck);
}

/* Checks the [1-byte len][key] records in keys. Returns how many hold key
 * (*at: the last one's index), or with key NULL how many there are. */
static size_t
records(const char *key, size_t *at)
{
    const unsigned char *p = (const unsigned char *)mcs_buf_head(&keys);
    size_t left = mcs_buf_len(&keys), n = 0, hits = 0;
    for (; left > 0; n++, left -= 1 + p[0], p += 1 + p[0]) {
        assert_true(p[0] >= 1 && p[0] <= MCS_SEG_KEY_MAX && p[0] + 1u <= left);
        if (key != NULL && p[0] == strlen(key) && memcmp(p + 1, key, p[0]) == 0) {
            hits++;
            *at = n;
        }
    }
    return key != NULL ? hits : n;
}

/* Server i's keys in the log, by scan; checks the kept count agrees (no
 * process died mid-update, nobody scribbled). */
static size_t
logged(const struct mcs_seg *seg, uint32_t i)
{
    size_t n = mcs_seg_log_count(seg, i);
    assert_int_equal(mcs_seg_log_keys(seg, i), n);
    return n;
}

/* The slot holding key of server i (its ticket's high half); left ready. */
static uint32_t
slot_of(struct mcs_seg *seg, uint32_t i, const char *key)
{
    size_t n = take(seg, i, TAKE_MAX), at;
    assert_int_equal(records(key, &at), 1);
    for (size_t k = 0; k < n; k++) {
        mcs_seg_log_done(seg, tk[k], false);
    }
    return (uint32_t)(tk[at] >> 32);
}

/* ---- header ---- */

static void
test_check_fresh_ok_bad_header_or_broken_corrupt(void **state)
{
    struct mcs_seg *seg = *state;   /* checked once by seg_setup */
    assert_true(seg->header.magic == MCS_SEG_MAGIC && seg->header.size == MCS_SEG_SIZE);
    assert_int_equal(seg->header.created_ms, 1000);
    assert_false(mcs_seg_broken(seg));
    assert_int_equal(mcs_seg_check(seg, MCS_SEG_SIZE, boot_a), MCS_SEG_OK);
    assert_int_equal(seg->header.attaches, 2);
    struct mcs_seg_header good = seg->header;
    assert_int_equal(mcs_seg_check(seg, MCS_SEG_SIZE - 1, boot_a), MCS_SEG_CORRUPT);
    assert_int_equal(mcs_seg_check(seg, MCS_SEG_SIZE + 4096, boot_a), MCS_SEG_CORRUPT);
    for (int field = 0; field < 6; field++) {
        seg->header = good;
        switch (field) {
        case 0: seg->header.magic ^= 1; break;
        case 1: seg->header.version++; break;
        case 2: seg->header.servers--; break;
        case 3: seg->header.procs++; break;
        case 4: seg->header.slots /= 2; break;
        default: seg->header.size++; break;
        }
        assert_int_equal(mcs_seg_check(seg, MCS_SEG_SIZE, boot_a), MCS_SEG_CORRUPT);
        assert_int_equal(seg->header.attaches, 2);
    }
    seg->header = good;
    assert_int_equal(mcs_seg_check(seg, MCS_SEG_SIZE, boot_a), MCS_SEG_OK);
    mcs_seg_set_broken(seg);
    assert_true(mcs_seg_broken(seg));
    assert_int_equal(mcs_seg_check(seg, MCS_SEG_SIZE, boot_a), MCS_SEG_CORRUPT);
}

static void
test_check_other_boot_resets_times_keeps_state(void **state)
{
    struct mcs_seg *seg = *state;
    uint32_t a = server(seg, "a:11211"), b = server(seg, "b:11211");
    struct mcs_seg_health h = { MCS_HEALTH_UP, 0 };
    assert_int_equal(mcs_seg_health_move(seg, a, &h, MCS_HEALTH_DOWN, 1, 7, 1000, 1500, 0), MCS_SEG_OK);
    h = (struct mcs_seg_health){ MCS_HEALTH_UP, 0 };
    assert_int_equal(mcs_seg_health_move(seg, b, &h, MCS_HEALTH_WARMING, 0, 7, 1000, 0, 9000), MCS_SEG_OK);
    assert_true(mcs_seg_lease_take(seg, a, 7, 1000, 5000));
    assert_int_equal(add(seg, a, "k1"), MCS_SEG_OK);
    mcs_seg_flags_set(seg, a, MCS_SEG_F_FLUSH);
    assert_int_not_equal(mcs_seg_proc_attach(seg, 7, 70, "app", 1000), MCS_SEG_NONE);
    assert_int_equal(mcs_seg_check(seg, MCS_SEG_SIZE, boot_b), MCS_SEG_OK);
    assert_memory_equal(seg->header.boot_id, boot_b, 16);
    assert_int_equal(seg->header.attaches, 2);
    assert_int_equal(mcs_seg_retry_at(seg, a), 0);
    assert_int_equal(mcs_seg_warm_until(seg, b), 0);
    assert_true(mcs_seg_lease_until(seg, a) == 0 && mcs_seg_lease_take(seg, a, 9, 10, 100));
    for (uint32_t p = 0; p < MCS_SEG_PROCS; p++) {
        assert_int_equal(seg->procs[p].pid, 0);
    }
    assert_int_equal(mcs_seg_server_find(seg, "a:11211", 7, false), a);
    assert_true(mcs_seg_health_get(seg, a, &h) == MCS_SEG_OK && h.health == MCS_HEALTH_DOWN && h.epoch == 1);
    assert_true(mcs_seg_health_get(seg, b, &h) == MCS_SEG_OK && h.health == MCS_HEALTH_WARMING);
    assert_true(logged(seg, a) == 1 && mcs_seg_flags(seg, a) == MCS_SEG_F_FLUSH);
    /* the same boot again: nothing reset */
    mcs_seg_set_retry_at(seg, a, 777);
    assert_int_equal(mcs_seg_check(seg, MCS_SEG_SIZE, boot_b), MCS_SEG_OK);
    assert_int_equal(mcs_seg_retry_at(seg, a), 777);
    assert_int_equal(seg->header.attaches, 3);
}

/* ---- servers ---- */

static void
test_server_find_claim_and_fresh_entry(void **state)
{
    struct mcs_seg *seg = *state;
    assert_int_equal(mcs_seg_server_find(seg, "a:1", 3, false), MCS_SEG_NONE);
    uint32_t a = server(seg, "a:1"), b = server(seg, "a:2");
    assert_int_not_equal(a, b);
    assert_int_equal(mcs_seg_server_find(seg, "a:1", 3, false), a);
    assert_int_equal(mcs_seg_server_find(seg, "a:1", 3, true), a);
    assert_int_equal(mcs_seg_server_find(seg, "a:", 2, false), MCS_SEG_NONE);   /* a prefix is another id */
    struct mcs_seg_health h;
    assert_int_equal(mcs_seg_health_get(seg, a, &h), MCS_SEG_OK);
    assert_true(h.health == MCS_HEALTH_UP && h.epoch == 0);
    assert_true(mcs_seg_flags(seg, a) == 0 && mcs_seg_lease_until(seg, a) == 0 && mcs_seg_instance(seg, a) == 0);
    assert_string_equal(seg->servers[a].id, "a:1");
    char id[MCS_SEG_ID_MAX + 2];
    memset(id, 'x', sizeof(id));
    assert_int_equal(mcs_seg_server_find(seg, id, 0, true), MCS_SEG_NONE);
    assert_int_equal(mcs_seg_server_find(seg, id, MCS_SEG_ID_MAX + 1, true), MCS_SEG_NONE);
    uint32_t x = mcs_seg_server_find(seg, id, MCS_SEG_ID_MAX, true);
    assert_true(x < MCS_SEG_SERVERS);
    assert_int_equal(mcs_seg_server_find(seg, id, MCS_SEG_ID_MAX, false), x);
}

static void
test_server_table_full(void **state)
{
    struct mcs_seg *seg = *state;
    uint32_t idx[MCS_SEG_SERVERS];
    bool used[MCS_SEG_SERVERS] = { false };
    char id[32];
    for (uint32_t n = 0; n < MCS_SEG_SERVERS; n++) {
        snprintf(id, sizeof(id), "10.0.0.%u:11211", n);
        idx[n] = server(seg, id);
        assert_false(used[idx[n]]);
        used[idx[n]] = true;
    }
    assert_int_equal(mcs_seg_server_find(seg, "new:1", 5, true), MCS_SEG_NONE);
    assert_int_equal(mcs_seg_server_find(seg, "new:1", 5, false), MCS_SEG_NONE);
    for (uint32_t n = 0; n < MCS_SEG_SERVERS; n++) {
        snprintf(id, sizeof(id), "10.0.0.%u:11211", n);
        assert_int_equal(mcs_seg_server_find(seg, id, strlen(id), false), idx[n]);
        assert_int_equal(mcs_seg_server_find(seg, id, strlen(id), true), idx[n]);
    }
}

/* ---- health ---- */

static void
test_health_down_bumps_epoch_records_stale_is_busy(void **state)
{
    struct mcs_seg *seg = *state;
    uint32_t i = server(seg, "a:1");
    struct mcs_seg_health h = { MCS_HEALTH_UP, 0 }, got;
    assert_int_equal(mcs_seg_health_move(seg, i, &h, MCS_HEALTH_DOWN, MCS_FAILURE_COUNT - 1, 4242, 2000, 2500, 0),
                     MCS_SEG_OK);
    assert_true(h.health == MCS_HEALTH_DOWN && h.epoch == 1);
    assert_true(mcs_seg_health_get(seg, i, &got) == MCS_SEG_OK && got.health == MCS_HEALTH_DOWN && got.epoch == 1);
    assert_int_equal(mcs_seg_retry_at(seg, i), 2500);
    assert_int_equal(mcs_seg_why(seg, i, MCS_FAILURE_COUNT), MCS_FAILURE_COUNT - 1);
    assert_int_equal(mcs_seg_why(seg, i, 1), 0);   /* beyond the caller's count: count - 1 */
    assert_int_equal(mcs_seg_why(seg, MCS_SEG_SERVERS, MCS_FAILURE_COUNT), MCS_FAILURE_COUNT - 1);
    assert_true(seg->servers[i].changed_by == 4242 && seg->servers[i].changed_ms == 2000);
    /* a second process still sees it up: its move fails and gets the word */
    struct mcs_seg_health stale = { MCS_HEALTH_UP, 0 };
    assert_int_equal(mcs_seg_health_move(seg, i, &stale, MCS_HEALTH_DOWN, 0, 77, 2100, 2600, 0), MCS_SEG_BUSY);
    assert_true(stale.health == MCS_HEALTH_DOWN && stale.epoch == 1);
    assert_true(mcs_seg_health_get(seg, i, &got) == MCS_SEG_OK && got.epoch == 1);   /* not bumped twice */
    assert_true(seg->servers[i].changed_by == 4242 && mcs_seg_retry_at(seg, i) != 0);
    assert_int_equal(mcs_seg_health_move(seg, i, &stale, MCS_HEALTH_REJOINING, 0, 77, 2200, 0, 0), MCS_SEG_OK);
}

static void
test_health_probe_rejoin_warm_keep_epoch(void **state)
{
    struct mcs_seg *seg = *state;
    uint32_t i = server(seg, "a:1");
    struct mcs_seg_health h = { MCS_HEALTH_UP, 0 }, got;
    assert_int_equal(mcs_seg_health_move(seg, i, &h, MCS_HEALTH_DOWN, 0, 1, 1000, 1500, 0), MCS_SEG_OK);
    /* a failed probe: down -> down, new retry time, same epoch */
    assert_int_equal(mcs_seg_health_move(seg, i, &h, MCS_HEALTH_DOWN, 1, 1, 1500, 2500, 0), MCS_SEG_OK);
    assert_true(mcs_seg_health_get(seg, i, &got) == MCS_SEG_OK && got.epoch == 1);
    assert_int_equal(mcs_seg_retry_at(seg, i), 2500);
    mcs_seg_set_retry_at(seg, i, 3000);
    assert_int_equal(mcs_seg_retry_at(seg, i), 3000);
    assert_int_equal(mcs_seg_health_move(seg, i, &h, MCS_HEALTH_REJOINING, 0, 1, 2500, 0, 0), MCS_SEG_OK);
    assert_int_equal(mcs_seg_health_move(seg, i, &h, MCS_HEALTH_WARMING, 0, 1, 2600, 0, 12600), MCS_SEG_OK);
    assert_true(mcs_seg_health_get(seg, i, &got) == MCS_SEG_OK && got.health == MCS_HEALTH_WARMING && got.epoch == 1);
    assert_int_equal(mcs_seg_warm_until(seg, i), 12600);
    assert_int_equal(mcs_seg_health_move(seg, i, &h, MCS_HEALTH_UP, 0, 1, 12600, 0, 0), MCS_SEG_OK);
    assert_int_equal(mcs_seg_health_move(seg, i, &h, MCS_HEALTH_DOWN, 0, 1, 13000, 14000, 0), MCS_SEG_OK);
    assert_true(mcs_seg_health_get(seg, i, &got) == MCS_SEG_OK && got.epoch == 2);   /* a new cut: a new epoch */
}

static void
test_health_rejects_bad_index_target_and_state(void **state)
{
    struct mcs_seg *seg = *state;
    uint32_t i = server(seg, "a:1");
    struct mcs_seg_health h = { MCS_HEALTH_UP, 0 };
    assert_int_equal(mcs_seg_health_move(seg, MCS_SEG_SERVERS, &h, MCS_HEALTH_DOWN, 0, 1, 1, 2, 0), MCS_SEG_CORRUPT);
    assert_int_equal(mcs_seg_health_move(seg, UINT32_MAX, &h, MCS_HEALTH_DOWN, 0, 1, 1, 2, 0), MCS_SEG_CORRUPT);
    assert_int_equal(mcs_seg_health_move(seg, i, &h, MCS_HEALTH_COUNT, 0, 1, 1, 2, 0), MCS_SEG_CORRUPT);
    assert_int_equal(mcs_seg_health_move(seg, i, &h, UINT32_MAX, 0, 1, 1, 2, 0), MCS_SEG_CORRUPT);
    assert_int_equal(mcs_seg_health_get(seg, MCS_SEG_SERVERS, &h), MCS_SEG_CORRUPT);
    seg->servers[i].state = (5ull << 8) | MCS_HEALTH_COUNT;
    assert_int_equal(mcs_seg_health_get(seg, i, &h), MCS_SEG_CORRUPT);
    seg->servers[i].state = 0xff;
    assert_int_equal(mcs_seg_health_get(seg, i, &h), MCS_SEG_CORRUPT);
}

/* ---- lease, flags, counters, instance ---- */

static void
test_lease_take_expire_renew_drop(void **state)
{
    struct mcs_seg *seg = *state;
    uint32_t i = server(seg, "a:1");
    assert_true(mcs_seg_lease_take(seg, i, 100, 1000, 500));
    assert_int_equal(mcs_seg_lease_until(seg, i), 1500);
    assert_false(mcs_seg_lease_take(seg, i, 200, 1000, 500));
    assert_false(mcs_seg_lease_take(seg, i, 200, 1499, 500));
    assert_true(mcs_seg_lease_take(seg, i, 100, 1400, 500));   /* the holder renews */
    assert_int_equal(mcs_seg_lease_until(seg, i), 1900);
    assert_false(mcs_seg_lease_take(seg, i, 200, 1600, 500));
    assert_true(mcs_seg_lease_take(seg, i, 200, 1900, 500));   /* expired: anyone */
    assert_int_equal(mcs_seg_lease_until(seg, i), 2400);
    assert_false(mcs_seg_lease_take(seg, i, 100, 2000, 500));  /* the old holder lost it */
    mcs_seg_lease_drop(seg, i, 100);                           /* not its lease: no effect */
    assert_int_equal(mcs_seg_lease_until(seg, i), 2400);
    mcs_seg_lease_drop(seg, i, 200);
    assert_int_equal(mcs_seg_lease_until(seg, i), 0);
    assert_true(mcs_seg_lease_take(seg, i, 100, 2000, 500));
}

static void
test_flags_set_and_take(void **state)
{
    struct mcs_seg *seg = *state;
    uint32_t i = server(seg, "a:1"), j = server(seg, "b:1");
    mcs_seg_flags_set(seg, i, MCS_SEG_F_FLUSH);
    assert_int_equal(mcs_seg_flags(seg, i), MCS_SEG_F_FLUSH);
    assert_int_equal(mcs_seg_flags(seg, j), 0);
    mcs_seg_flags_set(seg, i, MCS_SEG_F_OVERFLOW);
    assert_int_equal(mcs_seg_flags(seg, i), MCS_SEG_F_FLUSH | MCS_SEG_F_OVERFLOW);
    assert_int_equal(mcs_seg_flags_take(seg, i, MCS_SEG_F_OVERFLOW), MCS_SEG_F_OVERFLOW);
    assert_int_equal(mcs_seg_flags(seg, i), MCS_SEG_F_FLUSH);
    assert_int_equal(mcs_seg_flags_take(seg, i, MCS_SEG_F_OVERFLOW | MCS_SEG_F_FLUSH), MCS_SEG_F_FLUSH);
    assert_int_equal(mcs_seg_flags(seg, i), 0);
    assert_int_equal(mcs_seg_flags_take(seg, i, MCS_SEG_F_OVERFLOW | MCS_SEG_F_FLUSH), 0);
    /* out of range: reads as overflowed, takes as all set (the safe answers) */
    assert_int_equal(mcs_seg_flags(seg, MCS_SEG_SERVERS), MCS_SEG_F_OVERFLOW);
    assert_int_equal(mcs_seg_flags_take(seg, MCS_SEG_SERVERS, MCS_SEG_F_FLUSH), MCS_SEG_F_FLUSH);
}

static void
test_counters_and_instance(void **state)
{
    struct mcs_seg *seg = *state;
    uint32_t i = server(seg, "a:1");
    mcs_seg_count(seg, i, MCS_SEG_C_requests, 5);
    mcs_seg_count(seg, i, MCS_SEG_C_requests, 0);
    mcs_seg_count(seg, i, MCS_SEG_C_rejoin_flushes, 2);
    mcs_seg_count(seg, i, MCS_SEG_COUNTER_COUNT, 9);
    assert_true(seg->servers[i].counters[MCS_SEG_C_requests] == 5
                && seg->servers[i].counters[MCS_SEG_C_rejoin_flushes] == 2);
    assert_string_equal(mcs_seg_counter_name(MCS_SEG_C_rejoin_flushes), "rejoin_flushes");
    assert_string_equal(mcs_seg_counter_name(MCS_SEG_COUNTER_COUNT), "?");
    mcs_seg_set_instance(seg, i, (1234ull << 32) | 99);
    assert_int_equal(mcs_seg_instance(seg, i), (1234ull << 32) | 99);
}

/* ---- missed-writes log ---- */

static void
test_log_add_dedup_limits_and_servers_apart(void **state)
{
    struct mcs_seg *seg = *state;
    uint32_t i = server(seg, "a:1"), j = server(seg, "b:1");
    assert_int_equal(logged(seg, i), 0);
    assert_int_equal(add(seg, i, "k1"), MCS_SEG_OK);
    assert_int_equal(add(seg, i, "k2"), MCS_SEG_OK);
    assert_int_equal(add(seg, i, "k1"), MCS_SEG_OK);
    assert_true(logged(seg, i) == 2 && logged(seg, j) == 0);
    assert_int_equal(add(seg, j, "k1"), MCS_SEG_OK);   /* the same key for another server */
    assert_true(logged(seg, i) == 2 && logged(seg, j) == 1);
    assert_int_equal(mcs_seg_log_add(seg, MCS_SEG_SERVERS, "k", 1), MCS_SEG_CORRUPT);
    assert_int_equal(mcs_seg_log_add(seg, i, K250, 250), MCS_SEG_OK);
    assert_int_equal(mcs_seg_flags(seg, i), 0);
    assert_int_equal(mcs_seg_log_add(seg, i, K251, 251), MCS_SEG_FULL);
    assert_int_equal(mcs_seg_flags(seg, i), MCS_SEG_F_OVERFLOW);
    assert_int_equal(mcs_seg_log_add(seg, j, "", 0), MCS_SEG_FULL);
    assert_int_equal(mcs_seg_flags(seg, j), MCS_SEG_F_OVERFLOW);
    assert_true(logged(seg, i) == 3 && logged(seg, j) == 1);
}

static void
test_log_take_format_tickets_retake_and_done(void **state)
{
    struct mcs_seg *seg = *state;
    uint32_t i = server(seg, "a:1"), j = server(seg, "b:1");
    const char *want[] = { "a", "bb", K250 };
    for (size_t k = 0; k < NELEM(want); k++) {
        assert_int_equal(add(seg, i, want[k]), MCS_SEG_OK);
    }
    assert_int_equal(add(seg, j, "other"), MCS_SEG_OK);
    assert_int_equal(take(seg, i, 2), 2);   /* max */
    assert_false(stuck);
    assert_int_equal(records(NULL, NULL), 2);
    uint64_t first[2] = { tk[0], tk[1] };
    assert_int_equal(take(seg, i, TAKE_MAX), 3);   /* with "taking" slots (their replayer died) again */
    assert_true(tk[0] == first[0] || tk[1] == first[0] || tk[2] == first[0]);
    assert_true(tk[0] == first[1] || tk[1] == first[1] || tk[2] == first[1]);
    assert_int_equal(mcs_buf_len(&keys), 1 + 1 + 1 + 2 + 1 + 250);
    size_t at[NELEM(want)];
    for (size_t k = 0; k < NELEM(want); k++) {
        assert_int_equal(records(want[k], &at[k]), 1);
        /* its ticket names the slot holding it */
        const struct mcs_seg_slot *s = &seg->slots[tk[at[k]] >> 32];
        assert_true(s->len == strlen(want[k]) && memcmp(s->key, want[k], s->len) == 0);
        assert_int_equal(s->state & 3u, MCS_SEG_SLOT_TAKING);
    }
    assert_int_equal(logged(seg, i), 3);   /* taking still counts */
    assert_int_equal(add(seg, i, "zz"), MCS_SEG_OK);
    uint64_t bb = tk[at[1]];
    mcs_seg_log_done(seg, tk[at[0]], true);
    mcs_seg_log_done(seg, bb, false);
    mcs_seg_log_done(seg, tk[at[2]], true);
    mcs_seg_log_done(seg, tk[at[2]], true);   /* twice: no effect (the kept count drops once) */
    assert_true(logged(seg, i) == 2 && logged(seg, j) == 1);
    assert_int_equal(take(seg, i, TAKE_MAX), 2);
    assert_int_equal(records("zz", &at[0]), 1);
    assert_int_equal(records("bb", &at[1]), 1);
    assert_int_equal(tk[at[1]], bb);   /* ready again, same slot and generation */
    uint64_t zz = tk[at[0]];
    mcs_seg_log_done(seg, zz, true);
    mcs_seg_log_done(seg, tk[at[1]], true);
    assert_int_equal(logged(seg, i), 0);
    mcs_seg_log_done(seg, (uint64_t)MCS_SEG_SLOTS << 32 | MCS_SEG_SLOT_TAKING, true);   /* out of range */
    /* a stale ticket does nothing to the next key in its slot */
    assert_int_equal(add(seg, i, "zz"), MCS_SEG_OK);   /* the same slot, a new generation */
    mcs_seg_log_done(seg, zz, true);
    mcs_seg_log_done(seg, zz, false);
    assert_int_equal(logged(seg, i), 1);
    assert_true(take(seg, i, TAKE_MAX) == 1 && tk[0] != zz && (tk[0] >> 32) == (zz >> 32));
    seg->servers[i].log_keys = 0;   /* the kept count is off (a process died mid-update): it does not wrap */
    mcs_seg_log_done(seg, tk[0], true);
    assert_int_equal(mcs_seg_log_keys(seg, i), 0);
}

static void
test_log_full_probe_sequence_overflows(void **state)
{
    struct mcs_seg *seg = *state;
    uint32_t i = server(seg, "a:1"), j = server(seg, "b:1");
    char key[32];
    size_t ok = 0;
    enum mcs_seg_result r = MCS_SEG_OK;
    for (uint32_t n = 0; n <= MCS_SEG_SLOTS && r == MCS_SEG_OK; n++) {
        assert_int_equal(mcs_seg_flags(seg, i), 0);
        snprintf(key, sizeof(key), "key-%u", n);
        r = add(seg, i, key);
        ok += r == MCS_SEG_OK;
    }
    assert_true(r == MCS_SEG_FULL && ok < MCS_SEG_SLOTS);   /* a probe sequence full, not the table */
    assert_true(mcs_seg_flags(seg, i) == MCS_SEG_F_OVERFLOW && mcs_seg_flags(seg, j) == 0);
    assert_int_equal(logged(seg, i), ok);
    assert_int_equal(add(seg, i, "key-0"), MCS_SEG_OK);   /* keys already there still de-duplicate */
    assert_int_equal(logged(seg, i), ok);
}

static void
test_log_clear_one_server_only(void **state)
{
    struct mcs_seg *seg = *state;
    uint32_t i = server(seg, "a:1"), j = server(seg, "b:1");
    char key[16];
    for (int n = 0; n < 100; n++) {
        snprintf(key, sizeof(key), "k%d", n);
        assert_int_equal(add(seg, i, key), MCS_SEG_OK);
        assert_int_equal(add(seg, j, key), MCS_SEG_OK);
    }
    assert_int_equal(take(seg, i, 10), 10);   /* taking slots are cleared too */
    mcs_seg_log_clear(seg, i);
    mcs_seg_log_clear(seg, MCS_SEG_SERVERS);
    assert_true(logged(seg, i) == 0 && logged(seg, j) == 100);
}

static void
test_log_writing_slot_reports_stuck(void **state)
{
    struct mcs_seg *seg = *state;
    uint32_t i = server(seg, "a:1"), j = server(seg, "b:1");
    assert_int_equal(add(seg, i, "k"), MCS_SEG_OK);
    uint32_t dead = (slot_of(seg, i, "k") + MCS_SEG_SLOTS / 2) & (MCS_SEG_SLOTS - 1);
    seg->slots[dead].state = 8u | MCS_SEG_SLOT_WRITING;   /* a writer killed mid-write */
    seg->slots[dead].server = (uint16_t)j;
    assert_int_equal(take(seg, i, TAKE_MAX), 1);          /* whichever server it was for */
    assert_true(stuck);
    mcs_seg_log_done(seg, tk[0], true);
    assert_int_equal(logged(seg, j), 0);   /* not a key yet */
    assert_true(take(seg, i, TAKE_MAX) == 0 && stuck);
    seg->slots[dead].state = 12u | MCS_SEG_SLOT_EMPTY;
    assert_true(take(seg, i, TAKE_MAX) == 0 && !stuck);
}

static void
test_log_corrupt_len_dropped_and_overflows(void **state)
{
    static const uint16_t bad[] = { 0, MCS_SEG_KEY_MAX + 1, UINT16_MAX };
    struct mcs_seg *seg = *state;
    uint32_t i = server(seg, "a:1");
    size_t at;
    for (size_t b = 0; b < NELEM(bad); b++) {
        assert_int_equal(add(seg, i, "k"), MCS_SEG_OK);
        assert_int_equal(add(seg, i, "good"), MCS_SEG_OK);
        seg->slots[slot_of(seg, i, "k")].len = bad[b];
        mcs_seg_flags_take(seg, i, MCS_SEG_F_OVERFLOW);
        assert_int_equal(take(seg, i, TAKE_MAX), 1);
        assert_int_equal(records("good", &at), 1);
        assert_int_equal(mcs_seg_flags(seg, i), MCS_SEG_F_OVERFLOW);
        mcs_seg_log_done(seg, tk[0], true);
        assert_int_equal(logged(seg, i), 0);
    }
}

/* "A key already there is not added again", also when its copy sits past a
 * slot that was busy then and is free now: here a key missed again while its
 * replay ran (logged elsewhere, as hostseg.c intends), then missed a third time
 * after the replay freed the first slot. */
static void
test_log_readd_past_freed_slot_not_duplicated(void **state)
{
    struct mcs_seg *seg = *state;
    uint32_t i = server(seg, "a:1");
    assert_int_equal(add(seg, i, "user:42"), MCS_SEG_OK);
    assert_int_equal(take(seg, i, TAKE_MAX), 1);         /* the replay starts */
    uint64_t replay = tk[0];
    assert_int_equal(add(seg, i, "user:42"), MCS_SEG_OK);   /* missed again meanwhile */
    mcs_seg_log_done(seg, replay, true);                  /* the replay deleted the first copy */
    assert_int_equal(logged(seg, i), 1);
    assert_int_equal(add(seg, i, "user:42"), MCS_SEG_OK);   /* missed a third time */
    assert_int_equal(logged(seg, i), 1);
}

/* ---- processes ---- */

static void
test_proc_attach_detach_reclaim_full(void **state)
{
    struct mcs_seg *seg = *state;
    uint32_t a = mcs_seg_proc_attach(seg, 4242, 777, "a-very-long-process-name", 5000);
    assert_true(a < MCS_SEG_PROCS);
    assert_true(seg->procs[a].pid == 4242 && seg->procs[a].ticket == 777 && seg->procs[a].attached_ms == 5000);
    assert_string_equal(seg->procs[a].comm, "a-very-long-pro");
    uint32_t b = mcs_seg_proc_attach(seg, 4243, 778, "php", 5000);
    assert_true(b < MCS_SEG_PROCS && b != a);
    assert_string_equal(seg->procs[b].comm, "php");
    mcs_seg_proc_detach(seg, a, 4243);         /* not its slot */
    mcs_seg_proc_reclaim(seg, b, 4243, 999);   /* a new process reusing the pid */
    assert_true(seg->procs[a].pid == 4242 && seg->procs[b].pid == 4243);
    mcs_seg_proc_detach(seg, a, 4242);
    mcs_seg_proc_reclaim(seg, b, 4243, 778);
    assert_true(seg->procs[a].pid == 0 && seg->procs[b].pid == 0);
    assert_int_equal(mcs_seg_proc_attach(seg, 0, 1, "zero", 1), MCS_SEG_NONE);
    for (uint32_t p = 1; p <= MCS_SEG_PROCS; p++) {   /* fill the table */
        uint32_t s = mcs_seg_proc_attach(seg, p * 7, p, "w", 1);
        assert_true(s < MCS_SEG_PROCS && seg->procs[s].pid == p * 7);
    }
    assert_int_equal(mcs_seg_proc_attach(seg, 99999, 1, "late", 1), MCS_SEG_NONE);
    mcs_seg_proc_detach(seg, 5, seg->procs[5].pid);
    assert_int_equal(mcs_seg_proc_attach(seg, 99999, 1, "late", 1), 5);
}

/* ---- garbage ---- */

static uint64_t
rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Every operation on server index i of a segment of random bytes. */
static void
garbage_ops(struct mcs_seg *seg, uint32_t i, uint64_t *r)
{
    struct mcs_seg_health h = { 0, 0 };
    enum mcs_seg_result res = mcs_seg_health_get(seg, i, &h);
    assert_true(res == MCS_SEG_CORRUPT || (res == MCS_SEG_OK && h.health < MCS_HEALTH_COUNT));
    res = mcs_seg_health_move(seg, i, &h, (uint32_t)(rnd(r) % (MCS_HEALTH_COUNT + 2)), 1, 2, 3, 4, 5);
    assert_true(res == MCS_SEG_OK || res == MCS_SEG_BUSY || res == MCS_SEG_CORRUPT);
    mcs_seg_set_retry_at(seg, i, mcs_seg_retry_at(seg, i) + mcs_seg_warm_until(seg, i));
    (void)mcs_seg_lease_take(seg, i, (uint32_t)rnd(r), rnd(r), rnd(r) % 1000);
    mcs_seg_lease_drop(seg, i, (uint32_t)rnd(r));
    (void)mcs_seg_lease_until(seg, i);
    assert_true(mcs_seg_why(seg, i, MCS_FAILURE_COUNT) < MCS_FAILURE_COUNT);
    mcs_seg_set_instance(seg, i, mcs_seg_instance(seg, i) + 1);
    mcs_seg_flags_set(seg, i, (uint32_t)rnd(r));
    (void)mcs_seg_flags_take(seg, i, mcs_seg_flags(seg, i));
    mcs_seg_count(seg, i, (enum mcs_seg_counter)(rnd(r) % (MCS_SEG_COUNTER_COUNT + 2)), 1);

    char key[MCS_SEG_KEY_MAX + 8];
    for (int n = 0; n < 32; n++) {
        size_t len = rnd(r) % sizeof(key);
        memset(key, 'a' + (int)(rnd(r) % 26), len);
        res = mcs_seg_log_add(seg, i, key, len);
        assert_true(res == MCS_SEG_OK || res == MCS_SEG_FULL || res == MCS_SEG_CORRUPT);
    }
    assert_true(mcs_seg_log_count(seg, i) <= MCS_SEG_SLOTS);
    (void)mcs_seg_log_keys(seg, i);   /* a hint: any value */
    mcs_seg_log_done(seg, rnd(r), rnd(r) & 1);
    mcs_seg_log_done(seg, (rnd(r) % MCS_SEG_SLOTS) << 32 | (uint32_t)rnd(r), rnd(r) & 1);
    /* a replay drains the log in a bounded number of takes */
    size_t n, rounds = 0;
    while ((n = take(seg, i, TAKE_MAX)) > 0) {
        assert_true(n <= TAKE_MAX && records(NULL, NULL) == n);
        for (size_t k = 0; k < n; k++) {
            assert_true((tk[k] >> 32) < MCS_SEG_SLOTS);
            mcs_seg_log_done(seg, tk[k], true);
        }
        assert_true(++rounds <= MCS_SEG_SLOTS / TAKE_MAX + 1);
    }
    assert_int_equal(mcs_seg_log_count(seg, i), 0);
    mcs_seg_log_clear(seg, i);

    char id[MCS_SEG_ID_MAX + 4];
    size_t idlen = rnd(r) % sizeof(id);
    memset(id, 'A' + (int)(rnd(r) % 26), idlen);
    uint32_t e = mcs_seg_server_find(seg, id, idlen, true);
    assert_true(e == MCS_SEG_NONE || (e < MCS_SEG_SERVERS && mcs_seg_server_find(seg, id, idlen, false) == e));
    uint32_t pid = (uint32_t)(rnd(r) % 4 == 0 ? 0 : rnd(r));
    uint32_t p = mcs_seg_proc_attach(seg, pid, rnd(r), "garbage", rnd(r));
    assert_true(p == MCS_SEG_NONE || (p < MCS_SEG_PROCS && seg->procs[p].pid == pid));
    mcs_seg_proc_detach(seg, (uint32_t)rnd(r), (uint32_t)rnd(r));
    mcs_seg_proc_reclaim(seg, (uint32_t)(rnd(r) % (MCS_SEG_PROCS + 1)), (uint32_t)rnd(r), rnd(r));
    mcs_seg_proc_detach(seg, p, pid);
}

static void
test_garbage_never_crashes_or_loops(void **state)
{
    struct mcs_seg *seg = *state;
    for (uint64_t round = 0; round < 6; round++) {
        uint64_t r = 0x9e3779b97f4a7c15ull * (round + 1);
        uint64_t *w = (uint64_t *)(void *)seg;
        for (size_t k = 0; k < MCS_SEG_SIZE / sizeof(*w); k++) {
            w[k] = rnd(&r);
        }
        if (round % 3 == 1) {   /* biased: the values the code branches on mostly near valid */
            for (uint32_t k = 0; k < MCS_SEG_SLOTS; k++) {
                seg->slots[k].server &= 3;
                seg->slots[k].len %= MCS_SEG_KEY_MAX + 10;
            }
            for (uint32_t k = 0; k < MCS_SEG_SERVERS; k++) {
                seg->servers[k].claim &= 3;
                seg->servers[k].id_len %= MCS_SEG_ID_MAX + 8;
                seg->servers[k].state &= 7;
            }
            for (uint32_t k = 0; k < MCS_SEG_PROCS; k++) {
                seg->procs[k].pid &= 1;
            }
        }
        enum mcs_seg_result want = MCS_SEG_CORRUPT;
        if (round % 2 == 1) {
            mcs_seg_format(seg, boot_a, 1);   /* a good header over bad contents */
            want = MCS_SEG_OK;
        }
        assert_int_equal(mcs_seg_check(seg, MCS_SEG_SIZE, boot_a), want);
        assert_int_equal(mcs_seg_check(seg, MCS_SEG_SIZE, boot_b), want);
        const uint32_t idx[] = { 0, 1, 2, 3, MCS_SEG_SERVERS - 1, MCS_SEG_SERVERS, UINT16_MAX, UINT16_MAX + 1u,
                                 MCS_SEG_NONE, (uint32_t)rnd(&r), (uint32_t)(rnd(&r) % MCS_SEG_SERVERS) };
        for (size_t k = 0; k < NELEM(idx); k++) {
            garbage_ops(seg, idx[k], &r);
        }
        mcs_seg_set_broken(seg);
        assert_int_equal(mcs_seg_check(seg, MCS_SEG_SIZE, boot_a), MCS_SEG_CORRUPT);
    }
}

/* ---- processes racing on one shared mapping ---- */

#define KIDS     4
#define KID_KEYS 2000

/* What the children share with the parent (a mapping of its own). A child
 * that sees something wrong exits with status 1. */
struct race {
    uint32_t go, lock;                     /* start flag; the replay lock (the lease's job in the shim) */
    uint64_t added[KIDS], done[KIDS];      /* adds that returned OK, done(true) calls */
    uint32_t pid[KIDS], wins[KIDS];
    uint8_t  key_state[KIDS * KID_KEYS];   /* 0: not added, 1: added, 2: done(true) called */
};

/* Runs work(seg, race, child, locked) in KIDS children started at once. */
static struct race *
race_run(struct mcs_seg *seg, void (*work)(struct mcs_seg *, struct race *, int, bool), bool locked)
{
    struct race *race = mmap(NULL, sizeof(*race), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(race != MAP_FAILED);
    pid_t kids[KIDS];
    for (int c = 0; c < KIDS; c++) {
        if ((kids[c] = fork()) == 0) {
            while (__atomic_load_n(&race->go, __ATOMIC_ACQUIRE) == 0) {
                sched_yield();
            }
            work(seg, race, c, locked);
            _exit(0);
        }
        assert_true(kids[c] > 0);
    }
    __atomic_store_n(&race->go, 1, __ATOMIC_RELEASE);
    for (int c = 0; c < KIDS; c++) {
        int status;
        assert_int_equal(waitpid(kids[c], &status, 0), kids[c]);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    return race;
}

/* The key_state index of a record holding "c<child>-<4 digits>", or -1. */
static int
key_index(const unsigned char *rec)
{
    int n = 0;
    for (int d = 4; d < 8 && n >= 0; d++) {
        n = rec[d] >= '0' && rec[d] <= '9' ? n * 10 + (rec[d] - '0') : -1;
    }
    if (rec[0] != 7 || rec[1] != 'c' || rec[2] < '0' || rec[2] >= '0' + KIDS || n < 0 || n >= KID_KEYS) {
        return -1;
    }
    return (rec[2] - '0') * KID_KEYS + n;
}

/* Adds KID_KEYS keys of its own for server 0; every 25 adds, replays up to 16
 * keys of anyone's (done true for about 2 of 3, false for the rest). */
static void
log_worker(struct mcs_seg *seg, struct race *race, int c, bool locked)
{
    struct mcs_buf b = { 0 };
    uint64_t t[16];
    bool st;
    char key[16];
    for (int n = 0; n < KID_KEYS; n++) {
        snprintf(key, sizeof(key), "c%d-%04d", c, n);
        /* marked before the add: a replayer may take it and mark it done at once */
        __atomic_store_n(&race->key_state[c * KID_KEYS + n], 1, __ATOMIC_RELAXED);
        enum mcs_seg_result r = add(seg, 0, key);
        if (r == MCS_SEG_OK) {
            race->added[c]++;
        } else if (r == MCS_SEG_FULL) {
            __atomic_store_n(&race->key_state[c * KID_KEYS + n], 0, __ATOMIC_RELAXED);
        } else {
            _exit(1);
        }
        if (n % 25 != 24) {
            continue;
        }
        for (uint32_t free_ = 0; locked && !__atomic_compare_exchange_n(&race->lock, &free_, 1, false,
                                                                       __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);) {
            free_ = 0;
            sched_yield();
        }
        mcs_buf_reset(&b);
        size_t got = mcs_seg_log_take(seg, 0, NELEM(t), &b, t, &st);
        const unsigned char *p = (const unsigned char *)mcs_buf_head(&b);
        for (size_t k = 0; k < got; k++, p += 1 + p[0]) {
            int at = key_index(p);
            bool done = (at + n) % 3 != 0;
            if (at < 0) {
                _exit(1);
            } else if (done) {
                __atomic_store_n(&race->key_state[at], 2, __ATOMIC_RELAXED);
                race->done[c]++;
            }
            mcs_seg_log_done(seg, t[k], done);
        }
        if (locked) {
            __atomic_store_n(&race->lock, 0, __ATOMIC_RELEASE);
        }
    }
    mcs_buf_free(&b);
}

/* After the race the log holds each key once, nothing is left writing or
 * taking, a key never done is still there, and, when replays were serialized
 * (as the lease does in the shim), count == added - done. Replays at once
 * retake each other's "taking" slots (hostseg.h: a replay its holder did not
 * finish), so a done(true) may then do nothing: only the rest is checked. */
static void
log_race(struct mcs_seg *seg, bool locked)
{
    struct race *race = race_run(seg, log_worker, locked);
    uint64_t added = 0, done = 0;
    for (int c = 0; c < KIDS; c++) {
        added += race->added[c];
        done += race->done[c];
    }
    assert_true(added > KIDS * KID_KEYS * 9 / 10 && done > 0);
    for (uint32_t k = 0; k < MCS_SEG_SLOTS; k++) {
        uint32_t st = seg->slots[k].state & 3u;
        assert_true(st == MCS_SEG_SLOT_EMPTY || st == MCS_SEG_SLOT_READY);
    }
    size_t count = logged(seg, 0), n, taken = 0;
    assert_true(!locked || count == added - done);
    uint8_t seen[KIDS * KID_KEYS] = { 0 };
    while ((n = take(seg, 0, TAKE_MAX)) > 0) {
        const unsigned char *p = (const unsigned char *)mcs_buf_head(&keys);
        for (size_t k = 0; k < n; k++, p += 1 + p[0]) {
            int at = key_index(p);
            assert_true(at >= 0 && seen[at]++ == 0);                 /* once */
            assert_true(race->key_state[at] == 1 || (!locked && race->key_state[at] == 2));
            mcs_seg_log_done(seg, tk[k], true);
        }
        taken += n;
    }
    assert_int_equal(taken, count);
    for (size_t at = 0; at < NELEM(seen); at++) {
        assert_true(race->key_state[at] != 1 || seen[at] == 1);   /* never done: never lost */
    }
    munmap(race, sizeof(*race));
}

static void
test_fork_log_adds_and_replays(void **state)
{
    struct mcs_seg *seg = *state;
    log_race(seg, true);
    memset(seg, 0, MCS_SEG_SIZE);
    mcs_seg_format(seg, boot_a, 1000);
    log_race(seg, false);
}

static void
lease_worker(struct mcs_seg *seg, struct race *race, int c, bool locked)
{
    race->pid[c] = (uint32_t)getpid();
    for (int n = 0; n < 1000; n++) {
        race->wins[c] += mcs_seg_lease_take(seg, 3, race->pid[c], 5000, 1000);
    }
}

/* With one fixed now, exactly one process ever holds the lease. */
static void
test_fork_lease_one_holder(void **state)
{
    struct mcs_seg *seg = *state;
    struct race *race = race_run(seg, lease_worker, false);
    int holders = 0;
    for (int c = 0; c < KIDS; c++) {
        if (race->wins[c] > 0) {
            holders++;
            assert_int_equal(race->wins[c], 1000);   /* it won at once and renewed every time */
            assert_int_equal(seg->servers[3].lease_pid, race->pid[c]);
        }
    }
    assert_int_equal(holders, 1);
    assert_int_equal(mcs_seg_lease_until(seg, 3), 6000);
    munmap(race, sizeof(*race));
}

#define T(test) cmocka_unit_test_setup_teardown(test, seg_setup, seg_teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_check_fresh_ok_bad_header_or_broken_corrupt),
        T(test_check_other_boot_resets_times_keeps_state),
        T(test_server_find_claim_and_fresh_entry),
        T(test_server_table_full),
        T(test_health_down_bumps_epoch_records_stale_is_busy),
        T(test_health_probe_rejoin_warm_keep_epoch),
        T(test_health_rejects_bad_index_target_and_state),
        T(test_lease_take_expire_renew_drop),
        T(test_flags_set_and_take),
        T(test_counters_and_instance),
        T(test_log_add_dedup_limits_and_servers_apart),
        T(test_log_take_format_tickets_retake_and_done),
        T(test_log_full_probe_sequence_overflows),
        T(test_log_clear_one_server_only),
        T(test_log_writing_slot_reports_stuck),
        T(test_log_corrupt_len_dropped_and_overflows),
        T(test_log_readd_past_freed_slot_not_duplicated),
        T(test_proc_attach_detach_reclaim_full),
        T(test_garbage_never_crashes_or_loops),
        T(test_fork_log_adds_and_replays),
        T(test_fork_lease_one_holder),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
