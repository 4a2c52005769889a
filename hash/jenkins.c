/*
 * hash/jenkins.c: Bob Jenkins' lookup3 hashlittle() with initval 13, as
 * twemproxy 0.5 (nc_jenkins.c) and libmemcached use it.
 *
 * twemproxy picks word, half-word or byte reads by the key's alignment; on a
 * little-endian host all three give the byte-wise result computed here (bytes
 * unsigned, little-endian words). The empty key returns the initial state
 * 0xdeadbeef + 13 without mixing (twemproxy's router never hashes it).
 */
#include "hash/hash.h"

#define JENKINS_INITVAL  13u

/* Rotates x left by k (0 < k < 32). */
static uint32_t
rot(uint32_t x, unsigned k)
{
    return (x << k) | (x >> (32u - k));
}

/* lookup3 mix() of one 12-byte block into a, b, c. */
static void
mix(uint32_t *a, uint32_t *b, uint32_t *c)
{
    *a -= *c; *a ^= rot(*c, 4);  *c += *b;
    *b -= *a; *b ^= rot(*a, 6);  *a += *c;
    *c -= *b; *c ^= rot(*b, 8);  *b += *a;
    *a -= *c; *a ^= rot(*c, 16); *c += *b;
    *b -= *a; *b ^= rot(*a, 19); *a += *c;
    *c -= *b; *c ^= rot(*b, 4);  *b += *a;
}

/* lookup3 final() mixing of a, b, c into c. */
static void
final(uint32_t *a, uint32_t *b, uint32_t *c)
{
    *c ^= *b; *c -= rot(*b, 14);
    *a ^= *c; *a -= rot(*c, 11);
    *b ^= *a; *b -= rot(*a, 25);
    *c ^= *b; *c -= rot(*b, 16);
    *a ^= *c; *a -= rot(*c, 4);
    *b ^= *a; *b -= rot(*a, 14);
    *c ^= *b; *c -= rot(*b, 24);
}

/* Little-endian word from up to n (0..4) bytes at p; missing bytes are 0. */
static uint32_t
load_le(const unsigned char *p, size_t n)
{
    uint32_t w = 0;

    for (size_t i = 0; i < n && i < 4; i++) {
        w |= (uint32_t)p[i] << (8 * i);
    }
    return w;
}

/* hashlittle(key, len, 13). */
uint32_t
mcs_hash_jenkins(const char *key, size_t len)
{
    const unsigned char *p = (const unsigned char *)key;
    uint32_t a, b, c;

    a = b = c = UINT32_C(0xdeadbeef) + (uint32_t)len + JENKINS_INITVAL;
    if (len == 0) {
        return c;
    }
    while (len > 12) {
        a += load_le(p, 4);
        b += load_le(p + 4, 4);
        c += load_le(p + 8, 4);
        mix(&a, &b, &c);
        p += 12;
        len -= 12;
    }
    /* The last block: 1..12 bytes, zero-padded. */
    a += load_le(p, len);
    if (len > 4) {
        b += load_le(p + 4, len - 4);
    }
    if (len > 8) {
        c += load_le(p + 8, len - 8);
    }
    final(&a, &b, &c);
    return c;
}
