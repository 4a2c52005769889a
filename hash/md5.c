/*
 * hash/md5.c: MD5 (RFC 1321) and twemproxy's `hash: md5`.
 *
 * A small incremental MD5 written from the RFC: the caller owns the context,
 * nothing is allocated, nothing is global. mcs_hash_md5() is word 0 of the
 * digest read little-endian, as twemproxy's hash_md5() and libmemcached's
 * hashkit_md5() return it; ketama uses all four words of each digest.
 */
#include "hash/hash.h"

#include <string.h>

/* T[i] = floor(abs(sin(i + 1)) * 2^32), RFC 1321 section 3.4. */
static const uint32_t md5_t[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee,
    0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be,
    0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa,
    0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed,
    0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c,
    0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05,
    0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039,
    0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1,
    0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,};

/* Left-rotation amounts: four per round, used cyclically. */
static const unsigned char md5_shift[4][4] = {
    { 7, 12, 17, 22 },
    { 5, 9, 14, 20 },
    { 4, 11, 16, 23 },
    { 6, 10, 15, 21 },
};

/* Rotates x left by n (0 < n < 32). */
static uint32_t
md5_rotl(uint32_t x, unsigned n)
{
    return (x << n) | (x >> (32u - n));
}

/* Reads a little-endian 32-bit word from p[0..4). */
static uint32_t
md5_load_le(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* Writes x little-endian to p[0..4). */
static void
md5_store_le(unsigned char *p, uint32_t x)
{
    p[0] = (unsigned char)x;
    p[1] = (unsigned char)(x >> 8);
    p[2] = (unsigned char)(x >> 16);
    p[3] = (unsigned char)(x >> 24);
}

/* Mixes one 64-byte block into state[4] (RFC 1321 section 3.4). */
static void
md5_block(uint32_t state[4], const unsigned char block[64])
{
    uint32_t m[16];
    uint32_t a = state[0], b = state[1], c = state[2], d = state[3];

    for (unsigned i = 0; i < 16; i++) {
        m[i] = md5_load_le(block + 4 * i);
    }
    for (unsigned i = 0; i < 64; i++) {
        unsigned round = i / 16;
        uint32_t f;
        unsigned g;

        if (round == 0) {
            f = (b & c) | (~b & d);
            g = i;
        } else if (round == 1) {
            f = (d & b) | (~d & c);
            g = (5 * i + 1) % 16;
        } else if (round == 2) {
            f = b ^ c ^ d;
            g = (3 * i + 5) % 16;
        } else {
            f = c ^ (b | ~d);
            g = (7 * i) % 16;
        }
        uint32_t next = b + md5_rotl(a + f + md5_t[i] + m[g], md5_shift[round][i % 4]);
        a = d;
        d = c;
        c = b;
        b = next;
    }
    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
}

/* Starts a digest: the RFC's initial state, no bytes seen. */
void
mcs_md5_init(struct mcs_md5_ctx *ctx)
{
    ctx->state[0] = 0x67452301u;
    ctx->state[1] = 0xefcdab89u;
    ctx->state[2] = 0x98badcfeu;
    ctx->state[3] = 0x10325476u;
    ctx->bytes = 0;
}

/* Feeds data[0..len) (len 0 is allowed, data may then be NULL). */
void
mcs_md5_update(struct mcs_md5_ctx *ctx, const void *data, size_t len)
{
    const unsigned char *p = data;
    size_t used = (size_t)(ctx->bytes % 64);

    if (len == 0) {
        return;
    }
    ctx->bytes += len;
    if (used > 0) {
        size_t take = 64 - used < len ? 64 - used : len;
        memcpy(ctx->buf + used, p, take);
        p += take;
        len -= take;
        if (used + take < 64) {
            return;
        }
        md5_block(ctx->state, ctx->buf);
    }
    while (len >= 64) {
        md5_block(ctx->state, p);
        p += 64;
        len -= 64;
    }
    if (len > 0) {
        memcpy(ctx->buf, p, len);
    }
}

/* Pads (0x80, zeros, 64-bit little-endian bit count), writes the digest. The
 * context must be initialised again before reuse. */
void
mcs_md5_final(struct mcs_md5_ctx *ctx, unsigned char digest[16])
{
    uint64_t bits = ctx->bytes * 8u;
    size_t used = (size_t)(ctx->bytes % 64);

    ctx->buf[used++] = 0x80;
    if (used > 56) {
        memset(ctx->buf + used, 0, 64 - used);
        md5_block(ctx->state, ctx->buf);
        used = 0;
    }
    memset(ctx->buf + used, 0, 56 - used);
    md5_store_le(ctx->buf + 56, (uint32_t)bits);
    md5_store_le(ctx->buf + 60, (uint32_t)(bits >> 32));
    md5_block(ctx->state, ctx->buf);
    for (unsigned i = 0; i < 4; i++) {
        md5_store_le(digest + 4 * i, ctx->state[i]);
    }
}

/* One-shot digest of data[0..len). */
void
mcs_md5(const void *data, size_t len, unsigned char digest[16])
{
    struct mcs_md5_ctx ctx;

    mcs_md5_init(&ctx);
    mcs_md5_update(&ctx, data, len);
    mcs_md5_final(&ctx, digest);
}

/* Word `word` (0..3) of a digest, little-endian (ketama's point values). */
uint32_t
mcs_md5_word(const unsigned char digest[16], unsigned word)
{
    return md5_load_le(digest + 4 * (word & 3u));
}

/* twemproxy `hash: md5`: word 0 of MD5(key). */
uint32_t
mcs_hash_md5(const char *key, size_t len)
{
    unsigned char digest[16];

    mcs_md5(key, len, digest);
    return mcs_md5_word(digest, 0);
}
