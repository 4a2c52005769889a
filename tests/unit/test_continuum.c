/*
 * tests/unit/test_continuum.c: hash/continuum.h against the real nutcracker.
 *
 * ring_cases[] was recorded from nutcracker 0.5.0 (Debian 0.5.0+dfsg-2) by a
 * throwaway generator: for each case, real memcached servers listened on the
 * listed addresses (127.0.0.1:17001..17047, and 127.0.0.201..203 port 11211),
 * a nutcracker with `auto_eject_hosts: false` and the case's hash, distribution,
 * weights and names stored the 32 keys of ring_keys[], and each memcached was
 * asked which keys it held; owners[] is the index of that server in the case's
 * list (the configuration order, which the generator shuffled). The point names
 * are therefore nutcracker's own: "host-k" for port 11211 (the host as written,
 * e.g. "127.0.0.201"), "host:port-k" for other ports, or the explicit name. The
 * test rebuilds the same names with mcs_continuum_name(), so the port rule is
 * checked too. nutcracker maps a one-server pool to index 0 before hashing; the
 * test applies that rule as the router does.
 *
 * The 156-points rule (test_point_counts) uses the pool sizes n <= 200 where the
 * float formula gives 39 digests per equal-weight server, computed independently
 * by emulating IEEE single precision in Python (struct pack/unpack); it matches
 * the list in the research notes (/work/shared/reference/anchors.md 3.5).
 *
 * test_tie_goes_to_nutcracker_order: "tieA" and "tie-218858" share a point
 * (found by search); nutcracker gives the keys below it to "tieA" (shorter name,
 * first in its server order) whichever comes first in the configuration.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hash/continuum.h"
#include "hash/hash.h"

#define CASE_SERVERS_MAX  47
#define CASE_KEYS         32
#define NAME_CAP          64

/* One server of a recorded case, as written in nutcracker's YAML. */
struct case_server {
    const char *host;
    uint16_t    port;
    const char *name;     /* explicit name, or NULL */
    uint32_t    weight;
};

/* A nutcracker pool and where it put each of ring_keys[]. */
struct ring_case {
    const char        *desc;
    enum mcs_hash_kind hash;
    enum mcs_dist_kind dist;
    size_t             count;
    struct case_server servers[CASE_SERVERS_MAX];
    uint8_t            owners[CASE_KEYS];
};

static const char *const ring_keys[CASE_KEYS] = {
    "a",
    "foo",
    "bar",
    "user:1",
    "user:2",
    "user:1000",
    "session:0f9e8d7c",
    "The_quick_brown_fox",
    "caf\xc3\xa9",
    "\xe9t\xe9",
    "\xff\xfe\xfd",
    "na\xefve:42",
    "key0",
    "key1",
    "key2",
    "key3",
    "key4",
    "key5",
    "key6",
    "key7",
    "key8",
    "key9",
    "key10",
    "key11",
    "key12",
    "key13",
    "key14",
    "key15",
    "key16",
    "key17",
    "key18",
    "key19",
};

static const struct ring_case ring_cases[] = {
    {
        "ketama md5 n=1", MCS_HASH_MD5, MCS_DIST_KETAMA, 1,
        {
            { "127.0.0.1", 17001, NULL, 1 },
        },
        { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 },
    },
    {
        "ketama md5 n=2 equal", MCS_HASH_MD5, MCS_DIST_KETAMA, 2,
        {
            { "127.0.0.1", 17002, NULL, 1 },
            { "127.0.0.1", 17001, NULL, 1 },
        },
        { 0, 1, 1, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 1, 0, 1, 1, 1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 0, 1 },
    },
    {
        "ketama md5 n=3 weights 1:2:3", MCS_HASH_MD5, MCS_DIST_KETAMA, 3,
        {
            { "127.0.0.1", 17002, NULL, 1 },
            { "127.0.0.1", 17003, NULL, 2 },
            { "127.0.0.1", 17001, NULL, 3 },
        },
        { 0, 2, 2, 1, 2, 1, 2, 1, 0, 2, 2, 0, 2, 0, 2, 2, 0, 1, 2, 2, 1, 2, 2, 1, 1, 2, 2, 2, 2, 2, 0, 2 },
    },
    {
        "ketama fnv1a_64 n=4 equal", MCS_HASH_FNV1A_64, MCS_DIST_KETAMA, 4,
        {
            { "127.0.0.1", 17003, NULL, 1 },
            { "127.0.0.1", 17001, NULL, 1 },
            { "127.0.0.1", 17004, NULL, 1 },
            { "127.0.0.1", 17002, NULL, 1 },
        },
        { 0, 3, 2, 0, 0, 3, 1, 3, 0, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2 },
    },
    {
        "ketama fnv1a_64 n=5 weights 1:2:3:1:2", MCS_HASH_FNV1A_64, MCS_DIST_KETAMA, 5,
        {
            { "127.0.0.1", 17001, NULL, 1 },
            { "127.0.0.1", 17002, NULL, 2 },
            { "127.0.0.1", 17004, NULL, 3 },
            { "127.0.0.1", 17003, NULL, 1 },
            { "127.0.0.1", 17005, NULL, 2 },
        },
        { 0, 1, 2, 4, 4, 1, 2, 1, 4, 4, 3, 1, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2 },
    },
    {
        "ketama md5 n=25 equal (156 points each)", MCS_HASH_MD5, MCS_DIST_KETAMA, 25,
        {
            { "127.0.0.1", 17024, NULL, 1 },
            { "127.0.0.1", 17008, NULL, 1 },
            { "127.0.0.1", 17018, NULL, 1 },
            { "127.0.0.1", 17003, NULL, 1 },
            { "127.0.0.1", 17005, NULL, 1 },
            { "127.0.0.1", 17011, NULL, 1 },
            { "127.0.0.1", 17014, NULL, 1 },
            { "127.0.0.1", 17006, NULL, 1 },
            { "127.0.0.1", 17004, NULL, 1 },
            { "127.0.0.1", 17012, NULL, 1 },
            { "127.0.0.1", 17025, NULL, 1 },
            { "127.0.0.1", 17015, NULL, 1 },
            { "127.0.0.1", 17017, NULL, 1 },
            { "127.0.0.1", 17023, NULL, 1 },
            { "127.0.0.1", 17020, NULL, 1 },
            { "127.0.0.1", 17022, NULL, 1 },
            { "127.0.0.1", 17019, NULL, 1 },
            { "127.0.0.1", 17009, NULL, 1 },
            { "127.0.0.1", 17002, NULL, 1 },
            { "127.0.0.1", 17016, NULL, 1 },
            { "127.0.0.1", 17021, NULL, 1 },
            { "127.0.0.1", 17010, NULL, 1 },
            { "127.0.0.1", 17007, NULL, 1 },
            { "127.0.0.1", 17001, NULL, 1 },
            { "127.0.0.1", 17013, NULL, 1 },
        },
        { 5, 4, 0, 15, 16, 13, 13, 15, 2, 19, 7, 15, 12, 2, 8, 20, 24, 16, 12, 19, 7, 16, 24, 9, 18, 22, 4, 7, 15, 2, 2, 24 },
    },
    {
        "ketama fnv1a_64 n=47 equal (156 points each)", MCS_HASH_FNV1A_64, MCS_DIST_KETAMA, 47,
        {
            { "127.0.0.1", 17044, NULL, 1 },
            { "127.0.0.1", 17046, NULL, 1 },
            { "127.0.0.1", 17029, NULL, 1 },
            { "127.0.0.1", 17039, NULL, 1 },
            { "127.0.0.1", 17045, NULL, 1 },
            { "127.0.0.1", 17047, NULL, 1 },
            { "127.0.0.1", 17034, NULL, 1 },
            { "127.0.0.1", 17004, NULL, 1 },
            { "127.0.0.1", 17038, NULL, 1 },
            { "127.0.0.1", 17010, NULL, 1 },
            { "127.0.0.1", 17013, NULL, 1 },
            { "127.0.0.1", 17035, NULL, 1 },
            { "127.0.0.1", 17006, NULL, 1 },
            { "127.0.0.1", 17031, NULL, 1 },
            { "127.0.0.1", 17043, NULL, 1 },
            { "127.0.0.1", 17021, NULL, 1 },
            { "127.0.0.1", 17015, NULL, 1 },
            { "127.0.0.1", 17012, NULL, 1 },
            { "127.0.0.1", 17020, NULL, 1 },
            { "127.0.0.1", 17040, NULL, 1 },
            { "127.0.0.1", 17041, NULL, 1 },
            { "127.0.0.1", 17008, NULL, 1 },
            { "127.0.0.1", 17014, NULL, 1 },
            { "127.0.0.1", 17019, NULL, 1 },
            { "127.0.0.1", 17011, NULL, 1 },
            { "127.0.0.1", 17032, NULL, 1 },
            { "127.0.0.1", 17018, NULL, 1 },
            { "127.0.0.1", 17024, NULL, 1 },
            { "127.0.0.1", 17016, NULL, 1 },
            { "127.0.0.1", 17042, NULL, 1 },
            { "127.0.0.1", 17009, NULL, 1 },
            { "127.0.0.1", 17001, NULL, 1 },
            { "127.0.0.1", 17007, NULL, 1 },
            { "127.0.0.1", 17002, NULL, 1 },
            { "127.0.0.1", 17027, NULL, 1 },
            { "127.0.0.1", 17003, NULL, 1 },
            { "127.0.0.1", 17026, NULL, 1 },
            { "127.0.0.1", 17025, NULL, 1 },
            { "127.0.0.1", 17033, NULL, 1 },
            { "127.0.0.1", 17017, NULL, 1 },
            { "127.0.0.1", 17022, NULL, 1 },
            { "127.0.0.1", 17037, NULL, 1 },
            { "127.0.0.1", 17030, NULL, 1 },
            { "127.0.0.1", 17036, NULL, 1 },
            { "127.0.0.1", 17028, NULL, 1 },
            { "127.0.0.1", 17005, NULL, 1 },
            { "127.0.0.1", 17023, NULL, 1 },
        },
        { 37, 1, 18, 45, 45, 14, 2, 14, 35, 23, 20, 14, 32, 32, 32, 32, 32, 32, 32, 32, 32, 32, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15 },
    },
    {
        "ketama md5 n=25 weights 1:2:3", MCS_HASH_MD5, MCS_DIST_KETAMA, 25,
        {
            { "127.0.0.1", 17017, NULL, 1 },
            { "127.0.0.1", 17013, NULL, 2 },
            { "127.0.0.1", 17021, NULL, 3 },
            { "127.0.0.1", 17015, NULL, 1 },
            { "127.0.0.1", 17019, NULL, 2 },
            { "127.0.0.1", 17008, NULL, 3 },
            { "127.0.0.1", 17006, NULL, 1 },
            { "127.0.0.1", 17004, NULL, 2 },
            { "127.0.0.1", 17023, NULL, 3 },
            { "127.0.0.1", 17003, NULL, 1 },
            { "127.0.0.1", 17009, NULL, 2 },
            { "127.0.0.1", 17010, NULL, 3 },
            { "127.0.0.1", 17011, NULL, 1 },
            { "127.0.0.1", 17012, NULL, 2 },
            { "127.0.0.1", 17001, NULL, 3 },
            { "127.0.0.1", 17016, NULL, 1 },
            { "127.0.0.1", 17005, NULL, 2 },
            { "127.0.0.1", 17002, NULL, 3 },
            { "127.0.0.1", 17018, NULL, 1 },
            { "127.0.0.1", 17020, NULL, 2 },
            { "127.0.0.1", 17014, NULL, 3 },
            { "127.0.0.1", 17025, NULL, 1 },
            { "127.0.0.1", 17022, NULL, 2 },
            { "127.0.0.1", 17007, NULL, 3 },
            { "127.0.0.1", 17024, NULL, 1 },
        },
        { 17, 16, 14, 22, 4, 5, 8, 22, 13, 15, 6, 22, 11, 17, 7, 2, 1, 4, 13, 8, 5, 4, 1, 13, 17, 23, 16, 15, 22, 18, 16, 1 },
    },
    {
        "ketama md5 port 11211 names host-k, others host:port-k", MCS_HASH_MD5, MCS_DIST_KETAMA, 4,
        {
            { "127.0.0.201", 11211, NULL, 1 },
            { "127.0.0.1", 17001, NULL, 1 },
            { "127.0.0.202", 11211, NULL, 1 },
            { "127.0.0.1", 17002, NULL, 1 },
        },
        { 3, 1, 1, 3, 2, 1, 1, 2, 0, 1, 2, 3, 0, 3, 3, 0, 0, 2, 1, 2, 3, 1, 1, 2, 3, 1, 2, 0, 2, 0, 2, 0 },
    },
    {
        "ketama fnv1a_64 port 11211 weights 1:2:3", MCS_HASH_FNV1A_64, MCS_DIST_KETAMA, 3,
        {
            { "127.0.0.201", 11211, NULL, 1 },
            { "127.0.0.202", 11211, NULL, 2 },
            { "127.0.0.203", 11211, NULL, 3 },
        },
        { 2, 1, 1, 2, 2, 1, 2, 1, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2 },
    },
    {
        "ketama murmur explicit names", MCS_HASH_MURMUR, MCS_DIST_KETAMA, 4,
        {
            { "127.0.0.1", 17001, "alpha", 1 },
            { "127.0.0.1", 17002, "beta", 1 },
            { "127.0.0.1", 17003, "gamma", 2 },
            { "127.0.0.1", 17004, "delta", 1 },
        },
        { 3, 0, 0, 0, 1, 2, 0, 0, 1, 2, 0, 3, 2, 3, 0, 0, 2, 1, 3, 1, 2, 2, 3, 2, 1, 3, 0, 2, 3, 0, 1, 1 },
    },
    {
        "ketama jenkins n=3 weights 1:2:3", MCS_HASH_JENKINS, MCS_DIST_KETAMA, 3,
        {
            { "127.0.0.1", 17002, NULL, 1 },
            { "127.0.0.1", 17001, NULL, 2 },
            { "127.0.0.1", 17003, NULL, 3 },
        },
        { 2, 1, 1, 2, 0, 0, 1, 2, 0, 1, 2, 2, 2, 1, 2, 2, 2, 2, 1, 2, 2, 2, 1, 2, 1, 0, 0, 1, 1, 0, 0, 1 },
    },
    {
        "ketama one_at_a_time n=4 equal", MCS_HASH_ONE_AT_A_TIME, MCS_DIST_KETAMA, 4,
        {
            { "127.0.0.1", 17002, NULL, 1 },
            { "127.0.0.1", 17001, NULL, 1 },
            { "127.0.0.1", 17003, NULL, 1 },
            { "127.0.0.1", 17004, NULL, 1 },
        },
        { 0, 2, 2, 0, 0, 1, 0, 1, 3, 1, 0, 1, 3, 0, 2, 1, 1, 3, 0, 3, 1, 3, 1, 1, 3, 3, 1, 2, 3, 1, 3, 1 },
    },
    {
        "ketama hsieh explicit names", MCS_HASH_HSIEH, MCS_DIST_KETAMA, 3,
        {
            { "127.0.0.1", 17003, "cache-a", 1 },
            { "127.0.0.1", 17001, "cache-b", 1 },
            { "127.0.0.1", 17002, "cache-c", 1 },
        },
        { 1, 2, 1, 2, 2, 1, 0, 0, 0, 0, 0, 0, 2, 0, 2, 0, 1, 1, 2, 0, 1, 0, 0, 0, 0, 1, 0, 2, 1, 0, 0, 2 },
    },
    {
        "ketama crc32a n=5 weights 1:2:3:1:2", MCS_HASH_CRC32A, MCS_DIST_KETAMA, 5,
        {
            { "127.0.0.1", 17003, NULL, 1 },
            { "127.0.0.1", 17004, NULL, 2 },
            { "127.0.0.1", 17005, NULL, 3 },
            { "127.0.0.1", 17002, NULL, 1 },
            { "127.0.0.1", 17001, NULL, 2 },
        },
        { 2, 4, 2, 2, 3, 2, 1, 1, 3, 3, 1, 2, 3, 2, 2, 2, 2, 1, 2, 3, 4, 2, 2, 2, 1, 4, 1, 2, 2, 2, 2, 4 },
    },
    {
        "ketama crc16 n=3 equal", MCS_HASH_CRC16, MCS_DIST_KETAMA, 3,
        {
            { "127.0.0.1", 17003, NULL, 1 },
            { "127.0.0.1", 17001, NULL, 1 },
            { "127.0.0.1", 17002, NULL, 1 },
        },
        { 2, 1, 2, 0, 0, 0, 2, 2, 1, 2, 0, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 },
    },
    {
        "ketama fnv1a_32 n=4 equal", MCS_HASH_FNV1A_32, MCS_DIST_KETAMA, 4,
        {
            { "127.0.0.1", 17004, NULL, 1 },
            { "127.0.0.1", 17002, NULL, 1 },
            { "127.0.0.1", 17001, NULL, 1 },
            { "127.0.0.1", 17003, NULL, 1 },
        },
        { 3, 0, 1, 0, 1, 0, 3, 0, 1, 1, 2, 1, 2, 2, 1, 1, 2, 0, 0, 0, 0, 0, 1, 1, 1, 3, 1, 3, 2, 3, 0, 2 },
    },
    {
        "ketama fnv1_64 n=4 equal", MCS_HASH_FNV1_64, MCS_DIST_KETAMA, 4,
        {
            { "127.0.0.1", 17004, NULL, 1 },
            { "127.0.0.1", 17003, NULL, 1 },
            { "127.0.0.1", 17002, NULL, 1 },
            { "127.0.0.1", 17001, NULL, 1 },
        },
        { 1, 3, 3, 0, 0, 0, 1, 0, 0, 3, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 },
    },
    {
        "modula fnv1a_64 names sorted shorter-first", MCS_HASH_FNV1A_64, MCS_DIST_MODULA, 5,
        {
            { "127.0.0.1", 17001, "zz", 1 },
            { "127.0.0.1", 17002, "b", 3 },
            { "127.0.0.1", 17003, "aaa", 7 },
            { "127.0.0.1", 17004, "c", 13 },
            { "127.0.0.1", 17005, "ab", 29 },
        },
        { 2, 1, 4, 4, 4, 1, 4, 3, 4, 1, 4, 4, 4, 4, 4, 1, 4, 4, 2, 3, 4, 2, 3, 2, 4, 4, 4, 3, 2, 4, 0, 4 },
    },
    {
        "modula md5 n=4 weights 2:1:3:1", MCS_HASH_MD5, MCS_DIST_MODULA, 4,
        {
            { "127.0.0.1", 17004, NULL, 2 },
            { "127.0.0.1", 17001, NULL, 1 },
            { "127.0.0.1", 17002, NULL, 3 },
            { "127.0.0.1", 17003, NULL, 1 },
        },
        { 0, 0, 2, 3, 3, 1, 0, 1, 3, 0, 2, 1, 2, 0, 0, 3, 2, 2, 2, 0, 0, 0, 1, 0, 1, 2, 1, 1, 0, 2, 2, 3 },
    },
    {
        "modula one_at_a_time port 11211 and other", MCS_HASH_ONE_AT_A_TIME, MCS_DIST_MODULA, 4,
        {
            { "127.0.0.1", 17001, NULL, 2 },
            { "127.0.0.201", 11211, NULL, 1 },
            { "127.0.0.1", 17002, NULL, 1 },
            { "127.0.0.202", 11211, NULL, 3 },
        },
        { 1, 3, 0, 0, 3, 1, 1, 3, 3, 3, 3, 0, 0, 2, 1, 0, 0, 3, 3, 0, 1, 3, 1, 3, 0, 2, 2, 0, 1, 3, 1, 0 },
    },
};

/* A built continuum and the names it points into; owned by the test. */
struct built {
    char                        names[CASE_SERVERS_MAX][NAME_CAP];
    struct mcs_ring_server      ring[CASE_SERVERS_MAX];
    struct mcs_continuum_point *points;
    size_t                      npoints;
};

/* Builds the continuum of `count` servers; fails the test if it cannot. */
static void
build(struct built *b, enum mcs_dist_kind dist, const struct case_server *servers, size_t count)
{
    assert_true(count <= CASE_SERVERS_MAX);
    for (size_t i = 0; i < count; i++) {
        int len = mcs_continuum_name(servers[i].host, servers[i].port, servers[i].name, b->names[i],
                                     NAME_CAP);
        assert_true(len > 0);
        b->ring[i].name = b->names[i];
        b->ring[i].name_len = (size_t)len;
        b->ring[i].weight = servers[i].weight;
    }
    b->npoints = mcs_continuum_points(dist, b->ring, count);
    assert_true(b->npoints > 0);
    b->points = calloc(b->npoints, sizeof(*b->points));
    assert_non_null(b->points);
    assert_int_equal(mcs_continuum_build(dist, b->ring, count, b->points, b->npoints), b->npoints);
}

/* The router's rule: one server takes every key; else hash and look up. */
static uint32_t
owner(const struct built *b, enum mcs_hash_kind hash, enum mcs_dist_kind dist, size_t count,
      const char *key, size_t len)
{
    if (count == 1) {
        return 0;
    }
    uint32_t h = len == 0 ? 0 : mcs_hash(hash, key, len);
    return mcs_continuum_lookup(dist, b->points, b->npoints, h);
}

/* Every recorded key lands where nutcracker put it. */
static void
test_nutcracker_vectors(void **state)
{
    unsigned wrong = 0, checked = 0;

    (void)state;
    for (size_t c = 0; c < sizeof(ring_cases) / sizeof(ring_cases[0]); c++) {
        const struct ring_case *rc = &ring_cases[c];
        struct built b;

        build(&b, rc->dist, rc->servers, rc->count);
        for (size_t k = 0; k < CASE_KEYS; k++) {
            uint32_t got = owner(&b, rc->hash, rc->dist, rc->count, ring_keys[k], strlen(ring_keys[k]));
            checked++;
            if (got != rc->owners[k]) {
                print_error("%s: key %zu -> %u, nutcracker %u\n", rc->desc, k, (unsigned)got,
                            (unsigned)rc->owners[k]);
                wrong++;
            }
        }
        free(b.points);
    }
    assert_int_equal(wrong, 0);
    assert_int_equal(checked, CASE_KEYS * (sizeof(ring_cases) / sizeof(ring_cases[0])));
}

/* Points of server i in a built continuum. */
static size_t
points_of(const struct built *b, uint32_t i)
{
    size_t n = 0;

    for (size_t j = 0; j < b->npoints; j++) {
        n += b->points[j].server == i;
    }
    return n;
}

/* Equal weights: 160 points per server, 156 for the listed pool sizes. */
static void
test_point_counts(void **state)
{
    static const unsigned short odd[] = {
        25, 47, 50, 55, 61, 71, 94, 100, 107, 109, 110, 115, 122, 142, 159, 163, 188, 193, 200,
    };
    static struct case_server servers[200];
    static char hosts[200][16];

    (void)state;
    for (unsigned i = 0; i < 200; i++) {
        snprintf(hosts[i], sizeof(hosts[i]), "10.0.%u.%u", i / 100, i % 100);
        servers[i] = (struct case_server){ hosts[i], 11211, NULL, 1 };
    }
    for (unsigned n = 1; n <= 200; n++) {
        struct mcs_ring_server ring[200];
        size_t per = 160;

        for (size_t o = 0; o < sizeof(odd) / sizeof(odd[0]); o++) {
            per = odd[o] == n ? 156 : per;
        }
        for (unsigned i = 0; i < n; i++) {
            ring[i] = (struct mcs_ring_server){ hosts[i], strlen(hosts[i]), 1 };
        }
        assert_int_equal(mcs_continuum_points(MCS_DIST_KETAMA, ring, n), per * n);
        assert_int_equal(mcs_continuum_points(MCS_DIST_MODULA, ring, n), n);
    }
    /* per server, in a built ring */
    struct built b;
    build(&b, MCS_DIST_KETAMA, servers, 47);
    for (uint32_t i = 0; i < 47; i++) {
        assert_int_equal(points_of(&b, i), 156);
    }
    free(b.points);
    build(&b, MCS_DIST_KETAMA, servers, 46);
    for (uint32_t i = 0; i < 46; i++) {
        assert_int_equal(points_of(&b, i), 160);
    }
    free(b.points);
    /* weights 1:2:3 in a pool of 3: 20, 40 and 60 digests */
    static const struct case_server weighted[] = {
        { "a", 1, NULL, 1 }, { "b", 2, NULL, 2 }, { "c", 3, NULL, 3 },
    };
    build(&b, MCS_DIST_KETAMA, weighted, 3);
    assert_int_equal(b.npoints, 480);
    assert_int_equal(points_of(&b, 0), 80);
    assert_int_equal(points_of(&b, 1), 160);
    assert_int_equal(points_of(&b, 2), 240);
    free(b.points);
}

/* One server's points are the 4 little-endian words of MD5("<name>-k"),
 * k = 0..39, sorted: the formula, independently of the ring code. */
static void
test_points_are_md5_words(void **state)
{
    static const struct case_server one[] = { { "cache.example", 11211, NULL, 1 } };
    uint32_t want[160];
    struct built b;

    (void)state;
    for (unsigned k = 0; k < 40; k++) {
        char s[32];
        unsigned char d[16];
        int n = snprintf(s, sizeof(s), "cache.example-%u", k);

        mcs_md5(s, (size_t)n, d);
        for (unsigned w = 0; w < 4; w++) {
            want[4 * k + w] = (uint32_t)d[4 * w] | (uint32_t)d[4 * w + 1] << 8 |
                              (uint32_t)d[4 * w + 2] << 16 | (uint32_t)d[4 * w + 3] << 24;
        }
    }
    for (size_t i = 1; i < 160; i++) {          /* insertion sort of the expectation */
        uint32_t v = want[i];
        size_t j = i;
        for (; j > 0 && want[j - 1] > v; j--) {
            want[j] = want[j - 1];
        }
        want[j] = v;
    }
    build(&b, MCS_DIST_KETAMA, one, 1);
    assert_int_equal(b.npoints, 160);
    for (size_t i = 0; i < 160; i++) {
        assert_int_equal(b.points[i].value, want[i]);
        assert_int_equal(b.points[i].server, 0);
    }
    free(b.points);
}

/* Points ascend; equal values are in nutcracker's server order. */
static void
test_points_sorted(void **state)
{
    struct built b;

    (void)state;
    for (size_t c = 0; c < sizeof(ring_cases) / sizeof(ring_cases[0]); c++) {
        if (ring_cases[c].dist != MCS_DIST_KETAMA) {
            continue;
        }
        build(&b, MCS_DIST_KETAMA, ring_cases[c].servers, ring_cases[c].count);
        for (size_t i = 1; i < b.npoints; i++) {
            assert_true(b.points[i - 1].value <= b.points[i].value);
        }
        free(b.points);
    }
}

/* A shared point goes to the server nutcracker sorts first ("tieA"). */
static void
test_tie_goes_to_nutcracker_order(void **state)
{
    static const char *const keys[] = { "key96", "key111", "key238", "key318", "key365" };
    static const struct case_server b_first[] = {
        { "127.0.0.1", 17001, "tie-218858", 1 }, { "127.0.0.1", 17002, "tieA", 1 },
    };
    static const struct case_server a_first[] = {
        { "127.0.0.1", 17001, "tieA", 1 }, { "127.0.0.1", 17002, "tie-218858", 1 },
    };
    struct built b;
    size_t shared = 0;

    (void)state;
    build(&b, MCS_DIST_KETAMA, b_first, 2);
    for (size_t i = 0; i < b.npoints; i++) {
        shared += b.points[i].value == 1638240709u;
    }
    assert_int_equal(shared, 2);
    for (size_t k = 0; k < 5; k++) {
        uint32_t h = mcs_hash_md5(keys[k], strlen(keys[k]));
        assert_true(h > 1580759012u && h <= 1638240709u);
        assert_int_equal(mcs_continuum_lookup(MCS_DIST_KETAMA, b.points, b.npoints, h), 1);
    }
    free(b.points);
    build(&b, MCS_DIST_KETAMA, a_first, 2);
    for (size_t k = 0; k < 5; k++) {
        uint32_t h = mcs_hash_md5(keys[k], strlen(keys[k]));
        assert_int_equal(mcs_continuum_lookup(MCS_DIST_KETAMA, b.points, b.npoints, h), 0);
    }
    free(b.points);
}

/* Modula slots follow nutcracker's server order: shorter names first, then
 * bytewise; weight-many slots each. */
static void
test_modula_layout(void **state)
{
    static const struct case_server servers[] = {
        { "h", 1, "zz", 1 }, { "h", 2, "b", 3 }, { "h", 3, "aaa", 7 }, { "h", 4, "c", 13 }, { "h", 5, "ab", 29 },
    };
    /* order b, c, ab, zz, aaa */
    static const uint32_t order[] = { 1, 3, 4, 0, 2 };
    struct built b;
    size_t at = 0;

    (void)state;
    build(&b, MCS_DIST_MODULA, servers, 5);
    assert_int_equal(b.npoints, 53);
    for (size_t o = 0; o < 5; o++) {
        for (uint32_t w = 0; w < servers[order[o]].weight; w++) {
            assert_int_equal(b.points[at].server, order[o]);
            assert_int_equal(b.points[at].value, 0);
            at++;
        }
    }
    assert_int_equal(mcs_continuum_lookup(MCS_DIST_MODULA, b.points, b.npoints, 0), 1);
    assert_int_equal(mcs_continuum_lookup(MCS_DIST_MODULA, b.points, b.npoints, 53 * 1000 + 3), 3);
    assert_int_equal(mcs_continuum_lookup(MCS_DIST_MODULA, b.points, b.npoints, 52), 2);
    assert_int_equal(mcs_continuum_lookup(MCS_DIST_MODULA, b.points, b.npoints, UINT32_MAX),
                     b.points[UINT32_MAX % 53].server);
    free(b.points);
}

/* Ketama lookup: first point >= h, wrapping past the last. */
static void
test_lookup_wraps(void **state)
{
    static const struct mcs_continuum_point points[] = {
        { 10, 0 }, { 20, 1 }, { 20, 2 }, { 30, 3 },
    };

    (void)state;
    assert_int_equal(mcs_continuum_lookup(MCS_DIST_KETAMA, points, 4, 0), 0);
    assert_int_equal(mcs_continuum_lookup(MCS_DIST_KETAMA, points, 4, 10), 0);
    assert_int_equal(mcs_continuum_lookup(MCS_DIST_KETAMA, points, 4, 11), 1);
    assert_int_equal(mcs_continuum_lookup(MCS_DIST_KETAMA, points, 4, 20), 1);
    assert_int_equal(mcs_continuum_lookup(MCS_DIST_KETAMA, points, 4, 30), 3);
    assert_int_equal(mcs_continuum_lookup(MCS_DIST_KETAMA, points, 4, 31), 0);
    assert_int_equal(mcs_continuum_lookup(MCS_DIST_KETAMA, points, 4, UINT32_MAX), 0);
    assert_int_equal(mcs_continuum_lookup(MCS_DIST_MODULA, points, 4, 6), 2);
    assert_int_equal(mcs_continuum_lookup(MCS_DIST_KETAMA, points, 0, 5), 0);
    assert_int_equal(mcs_continuum_lookup(MCS_DIST_MODULA, points, 0, 5), 0);
}

/* Point-name bases: explicit name, "host" for 11211, else "host:port". */
static void
test_names(void **state)
{
    char out[32];

    (void)state;
    assert_int_equal(mcs_continuum_name("127.0.0.1", 11211, NULL, out, sizeof(out)), 9);
    assert_string_equal(out, "127.0.0.1");
    assert_int_equal(mcs_continuum_name("127.0.0.1", 11311, NULL, out, sizeof(out)), 15);
    assert_string_equal(out, "127.0.0.1:11311");
    assert_int_equal(mcs_continuum_name("cache-1.local", 11211, "", out, sizeof(out)), 13);
    assert_string_equal(out, "cache-1.local");
    assert_int_equal(mcs_continuum_name("cache-1.local", 11212, "alpha", out, sizeof(out)), 5);
    assert_string_equal(out, "alpha");
    assert_int_equal(mcs_continuum_name("::1", 11212, NULL, out, sizeof(out)), 9);
    assert_string_equal(out, "::1:11212");
    assert_int_equal(mcs_continuum_name("h", 0, NULL, out, sizeof(out)), 3);
    assert_string_equal(out, "h:0");
    assert_int_equal(mcs_continuum_name("h", 65535, NULL, out, sizeof(out)), 7);
    assert_string_equal(out, "h:65535");
    /* capacity counts the NUL */
    assert_int_equal(mcs_continuum_name("127.0.0.1", 11311, NULL, out, 16), 15);
    assert_int_equal(mcs_continuum_name("127.0.0.1", 11311, NULL, out, 15), -1);
    assert_int_equal(mcs_continuum_name("alpha", 1, "beta", out, 4), -1);
    assert_int_equal(mcs_continuum_name("alpha", 1, "beta", out, 5), 4);
}

/* Invalid input builds nothing and leaves the points alone. */
static void
test_invalid(void **state)
{
    struct mcs_ring_server ring[2] = { { "a", 1, 1 }, { "b", 1, 1 } };
    struct mcs_continuum_point points[400];

    (void)state;
    memset(points, 0xab, sizeof(points));
    assert_int_equal(mcs_continuum_points(MCS_DIST_KETAMA, ring, 0), 0);
    assert_int_equal(mcs_continuum_build(MCS_DIST_KETAMA, ring, 0, points, 400), 0);
    assert_int_equal(mcs_continuum_points(MCS_DIST_COUNT, ring, 2), 0);
    assert_int_equal(mcs_continuum_build(MCS_DIST_COUNT, ring, 2, points, 400), 0);
    assert_int_equal(mcs_continuum_build(MCS_DIST_KETAMA, ring, 2, points, 319), 0);
    assert_int_equal(mcs_continuum_build(MCS_DIST_MODULA, ring, 2, points, 1), 0);
    ring[1].weight = 0;
    assert_int_equal(mcs_continuum_points(MCS_DIST_KETAMA, ring, 2), 0);
    assert_int_equal(mcs_continuum_points(MCS_DIST_MODULA, ring, 2), 0);
    ring[0].weight = 0x80000000u;
    ring[1].weight = 0x80000000u;
    assert_int_equal(mcs_continuum_points(MCS_DIST_KETAMA, ring, 2), 0);
    assert_int_equal(mcs_continuum_points(MCS_DIST_MODULA, ring, 2), 0);
    for (size_t i = 0; i < 400; i++) {
        assert_int_equal(points[i].value, 0xababababu);
    }
    ring[0].weight = 1;
    ring[1].weight = 1;
    assert_int_equal(mcs_continuum_build(MCS_DIST_KETAMA, ring, 2, points, 400), 320);
}

/* A very light server can get no points at all; the ring still works. */
static void
test_zero_point_server(void **state)
{
    struct mcs_ring_server ring[2] = { { "heavy", 5, 100000 }, { "light", 5, 1 } };
    struct mcs_continuum_point points[400];

    (void)state;
    /* light: floor(1/100001 * 40 * 2) = 0 digests; heavy: floor(79.9992) = 79 */
    assert_int_equal(mcs_continuum_points(MCS_DIST_KETAMA, ring, 2), 316);
    assert_int_equal(mcs_continuum_build(MCS_DIST_KETAMA, ring, 2, points, 400), 316);
    for (size_t i = 0; i < 316; i++) {
        assert_int_equal(points[i].server, 0);
    }
}

/* Names longer than nutcracker's 85-byte point-string buffer are hashed whole. */
static void
test_long_name(void **state)
{
    char name[200];
    char s[210];
    unsigned char d[16];
    struct mcs_ring_server ring[1];
    static struct mcs_continuum_point points[160];
    bool found = false;

    (void)state;
    memset(name, 'n', sizeof(name));
    ring[0] = (struct mcs_ring_server){ name, sizeof(name), 1 };
    assert_int_equal(mcs_continuum_build(MCS_DIST_KETAMA, ring, 1, points, 160), 160);
    memcpy(s, name, sizeof(name));
    memcpy(s + sizeof(name), "-39", 3);
    mcs_md5(s, sizeof(name) + 3, d);
    for (size_t i = 0; i < 160; i++) {
        found |= points[i].value == mcs_md5_word(d, 3);
    }
    assert_true(found);
}

/* Distribution names are twemproxy's. */
static void
test_dist_names(void **state)
{
    enum mcs_dist_kind d;

    (void)state;
    assert_string_equal(mcs_dist_name(MCS_DIST_KETAMA), "ketama");
    assert_string_equal(mcs_dist_name(MCS_DIST_MODULA), "modula");
    assert_string_equal(mcs_dist_name(MCS_DIST_COUNT), "?");
    assert_int_equal(mcs_dist_from_name("modula", 6, &d), 0);
    assert_int_equal(d, MCS_DIST_MODULA);
    assert_int_equal(mcs_dist_from_name("ketama", 6, &d), 0);
    assert_int_equal(d, MCS_DIST_KETAMA);
    assert_int_equal(mcs_dist_from_name("Ketama", 6, &d), -1);
    assert_int_equal(mcs_dist_from_name("random", 6, &d), -1);
    assert_int_equal(mcs_dist_from_name("", 0, &d), -1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nutcracker_vectors),
        cmocka_unit_test(test_point_counts),
        cmocka_unit_test(test_points_are_md5_words),
        cmocka_unit_test(test_points_sorted),
        cmocka_unit_test(test_tie_goes_to_nutcracker_order),
        cmocka_unit_test(test_modula_layout),
        cmocka_unit_test(test_lookup_wraps),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_zero_point_server),
        cmocka_unit_test(test_long_name),
        cmocka_unit_test(test_dist_names),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
