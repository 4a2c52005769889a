/*
 * hash/murmur.c: MurmurHash2 (32-bit) with twemproxy 0.5's / libmemcached's
 * seed: seed = 0xdeadbeef * len, initial h = seed ^ len.
 *
 * Bytes are unsigned. Four-byte blocks are read little-endian, which is what
 * twemproxy's unaligned native load gives on x86-64; reading them byte by byte
 * keeps the result the same on big-endian hosts and avoids unaligned loads.
 */
#include "hash/hash.h"

#define MURMUR_M  UINT32_C(0x5bd1e995)
#define MURMUR_R  24

/* MurmurHash2 of key[0..len) with the length-derived seed. */
uint32_t
mcs_hash_murmur(const char *key, size_t len)
{
    const unsigned char *p = (const unsigned char *)key;
    uint32_t seed = UINT32_C(0xdeadbeef) * (uint32_t)len;
    uint32_t h = seed ^ (uint32_t)len;

    while (len >= 4) {
        uint32_t k = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
                     ((uint32_t)p[3] << 24);

        k *= MURMUR_M;
        k ^= k >> MURMUR_R;
        k *= MURMUR_M;
        h *= MURMUR_M;
        h ^= k;
        p += 4;
        len -= 4;
    }
    switch (len) {
    case 3:
        h ^= (uint32_t)p[2] << 16;
        h ^= (uint32_t)p[1] << 8;
        h ^= p[0];
        h *= MURMUR_M;
        break;
    case 2:
        h ^= (uint32_t)p[1] << 8;
        h ^= p[0];
        h *= MURMUR_M;
        break;
    case 1:
        h ^= p[0];
        h *= MURMUR_M;
        break;
    default:
        break;
    }
    h ^= h >> 13;
    h *= MURMUR_M;
    h ^= h >> 15;
    return h;
}
