/*
 * hash/hsieh.c: Paul Hsieh's SuperFastHash in the variant twemproxy 0.5
 * (nc_hsieh.c) and libmemcached use.
 *
 * It differs from Hsieh's published reference in two places: the initial hash
 * is 0 (not the length), and a single trailing byte (len % 4 == 1) is added as
 * unsigned. A trailing third byte (len % 4 == 3) is read through plain `char`,
 * so on x86-64 it is sign-extended before the shift, as in the reference;
 * tail3_byte() spells that out. The empty key hashes to 0.
 */
#include "hash/hash.h"

/* Little-endian 16 bits at p[0..2), unsigned bytes. */
static uint32_t
get16(const char *p)
{
    return (uint32_t)(unsigned char)p[0] | ((uint32_t)(unsigned char)p[1] << 8);
}

/* The byte c sign-extended to 32 bits, as x86-64's signed `char` gives it. */
static uint32_t
tail3_byte(char c)
{
    uint32_t b = (unsigned char)c;

    return b >= 0x80 ? b | 0xffffff00u : b;
}

/* SuperFastHash (twemproxy variant) of key[0..len). */
uint32_t
mcs_hash_hsieh(const char *key, size_t len)
{
    uint32_t hash = 0;
    size_t blocks = len / 4;

    if (len == 0) {
        return 0;
    }
    for (size_t i = 0; i < blocks; i++) {
        uint32_t tmp;

        hash += get16(key);
        tmp = (get16(key + 2) << 11) ^ hash;
        hash = (hash << 16) ^ tmp;
        key += 4;
        hash += hash >> 11;
    }
    switch (len % 4) {
    case 3:
        hash += get16(key);
        hash ^= hash << 16;
        hash ^= tail3_byte(key[2]) << 18;
        hash += hash >> 11;
        break;
    case 2:
        hash += get16(key);
        hash ^= hash << 11;
        hash += hash >> 17;
        break;
    case 1:
        hash += (unsigned char)key[0];
        hash ^= hash << 10;
        hash += hash >> 1;
        break;
    default:
        break;
    }
    /* Final avalanche. */
    hash ^= hash << 3;
    hash += hash >> 5;
    hash ^= hash << 4;
    hash += hash >> 17;
    hash ^= hash << 25;
    hash += hash >> 6;
    return hash;
}
