/*
 * hash/hash.h: key hash functions, by twemproxy's names.
 *
 * Pure functions: no allocation, no globals, no syscalls. Every function hashes
 * `len` bytes at `key` (not NUL-terminated) into 32 bits, bit-exact with
 * twemproxy 0.5 (src/hashkit) as built on x86-64, where `char` is signed:
 * the implementations make that sign extension explicit so the result is the
 * same on every architecture. docs/configuration.md lists the names.
 */
#ifndef MCS_HASH_H
#define MCS_HASH_H

#include <stddef.h>
#include <stdint.h>

/* One list: enum value, configuration name. */
#define MCS_HASH_LIST(X)                        \
    X(ONE_AT_A_TIME, "one_at_a_time")           \
    X(MD5,           "md5")                     \
    X(CRC16,         "crc16")                   \
    X(CRC32,         "crc32")                   \
    X(CRC32A,        "crc32a")                  \
    X(FNV1_64,       "fnv1_64")                 \
    X(FNV1A_64,      "fnv1a_64")                \
    X(FNV1_32,       "fnv1_32")                 \
    X(FNV1A_32,      "fnv1a_32")                \
    X(HSIEH,         "hsieh")                   \
    X(MURMUR,        "murmur")                  \
    X(JENKINS,       "jenkins")

enum mcs_hash_kind {
#define MCS_HASH_ENUM(id, name) MCS_HASH_##id,
    MCS_HASH_LIST(MCS_HASH_ENUM)
#undef MCS_HASH_ENUM
    MCS_HASH_COUNT
};

/* Returns the configuration name of `kind` ("md5", ...), or "?" if out of range. */
const char *mcs_hash_name(enum mcs_hash_kind kind);

/* Looks `name` (len bytes, case-sensitive) up. Returns 0 and sets *out, or -1 if unknown. */
int mcs_hash_from_name(const char *name, size_t len, enum mcs_hash_kind *out);

/* Hashes key[0..len) with `kind`. len 0 is allowed. */
uint32_t mcs_hash(enum mcs_hash_kind kind, const char *key, size_t len);

/* The individual functions, for tests and for ketama (which uses md5 words). */
uint32_t mcs_hash_one_at_a_time(const char *key, size_t len);
uint32_t mcs_hash_md5(const char *key, size_t len);      /* word 0 of MD5, little-endian */
uint32_t mcs_hash_crc16(const char *key, size_t len);    /* twemproxy 0.5: CRC-16/XMODEM in a 32-bit accumulator */
uint32_t mcs_hash_crc32(const char *key, size_t len);    /* libmemcached-compatible: (~crc32 >> 16) & 0x7fff */
uint32_t mcs_hash_crc32a(const char *key, size_t len);   /* plain CRC-32 (IEEE, as zlib) */
uint32_t mcs_hash_fnv1_64(const char *key, size_t len);
uint32_t mcs_hash_fnv1a_64(const char *key, size_t len);
uint32_t mcs_hash_fnv1_32(const char *key, size_t len);
uint32_t mcs_hash_fnv1a_32(const char *key, size_t len);
uint32_t mcs_hash_hsieh(const char *key, size_t len);
uint32_t mcs_hash_murmur(const char *key, size_t len);
uint32_t mcs_hash_jenkins(const char *key, size_t len);

/* Full 16-byte MD5 digest (RFC 1321) of data[0..len). */
void mcs_md5(const void *data, size_t len, unsigned char digest[16]);

/* Incremental MD5, caller-owned context (ketama hashes "name" + "-k" without a
 * bounded scratch buffer, and reuses the state after "name"). A context may be
 * copied by assignment to fork a digest. */
struct mcs_md5_ctx {
    uint32_t      state[4];
    uint64_t      bytes;      /* total bytes fed so far */
    unsigned char buf[64];    /* the partial block: bytes % 64 of them */
};

void mcs_md5_init(struct mcs_md5_ctx *ctx);
void mcs_md5_update(struct mcs_md5_ctx *ctx, const void *data, size_t len);
void mcs_md5_final(struct mcs_md5_ctx *ctx, unsigned char digest[16]);

/* Word `word` (0..3, taken mod 4) of a digest, read little-endian. */
uint32_t mcs_md5_word(const unsigned char digest[16], unsigned word);

#endif
