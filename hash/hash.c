/*
 * hash/hash.c: the hash table by name (from MCS_HASH_LIST) and mcs_hash(),
 * which dispatches on the kind. Pure: no state, no allocation.
 */
#include "hash/hash.h"

#include <string.h>

/* Configuration names, indexed by enum mcs_hash_kind. */
static const char *const hash_names[MCS_HASH_COUNT] = {
#define MCS_HASH_NAME(id, name) name,
    MCS_HASH_LIST(MCS_HASH_NAME)
#undef MCS_HASH_NAME
};

/* The hash functions, indexed by enum mcs_hash_kind. C cannot derive the
 * function name from the list entry, so the table is written out with
 * designated initialisers; a kind left out here is NULL, which mcs_hash()
 * refuses and tests/unit/test_hash.c catches by hashing with every kind. */
static uint32_t (*const hash_funcs[MCS_HASH_COUNT])(const char *, size_t) = {
    [MCS_HASH_ONE_AT_A_TIME] = mcs_hash_one_at_a_time,
    [MCS_HASH_MD5]           = mcs_hash_md5,
    [MCS_HASH_CRC16]         = mcs_hash_crc16,
    [MCS_HASH_CRC32]         = mcs_hash_crc32,
    [MCS_HASH_CRC32A]        = mcs_hash_crc32a,
    [MCS_HASH_FNV1_64]       = mcs_hash_fnv1_64,
    [MCS_HASH_FNV1A_64]      = mcs_hash_fnv1a_64,
    [MCS_HASH_FNV1_32]       = mcs_hash_fnv1_32,
    [MCS_HASH_FNV1A_32]      = mcs_hash_fnv1a_32,
    [MCS_HASH_HSIEH]         = mcs_hash_hsieh,
    [MCS_HASH_MURMUR]        = mcs_hash_murmur,
    [MCS_HASH_JENKINS]       = mcs_hash_jenkins,
};

/* Name of kind, or "?" when kind is not a valid enum value. */
const char *
mcs_hash_name(enum mcs_hash_kind kind)
{
    return (unsigned)kind < MCS_HASH_COUNT ? hash_names[kind] : "?";
}

/* Exact, case-sensitive match of name[0..len) against the list. */
int
mcs_hash_from_name(const char *name, size_t len, enum mcs_hash_kind *out)
{
    for (unsigned i = 0; i < MCS_HASH_COUNT; i++) {
        if (strlen(hash_names[i]) == len && memcmp(hash_names[i], name, len) == 0) {
            *out = (enum mcs_hash_kind)i;
            return 0;
        }
    }
    return -1;
}

/* Dispatches to the function of kind; 0 for an invalid kind. */
uint32_t
mcs_hash(enum mcs_hash_kind kind, const char *key, size_t len)
{
    if ((unsigned)kind >= MCS_HASH_COUNT || hash_funcs[kind] == NULL) {
        return 0;
    }
    return hash_funcs[kind](key, len);
}
