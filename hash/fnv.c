/*
 * hash/fnv.c: the four FNV-1 / FNV-1a hashes as twemproxy 0.5 (nc_fnv.c) and
 * libmemcached compute them.
 *
 * Two deliberate departures from the FNV specification, kept for compatibility:
 * - Each key byte is read through plain `char` (signed on x86-64) and widened,
 *   so a byte >= 0x80 is XORed in sign-extended (0xe9 -> 0x...ffffffe9), not as
 *   the 8-bit value the specification asks for. key_byte() spells this out so
 *   the result is the same on platforms where `char` is unsigned.
 * - fnv1a_64 is a 32-bit hash: the low 32 bits of the 64-bit offset basis
 *   (0x84222325) and of the 64-bit prime (0x1b3), arithmetic mod 2^32.
 * fnv1_64 is the real 64-bit FNV-1 (with the sign-extension above), truncated
 * to its low 32 bits. fnv1_32 and fnv1a_32 are the 32-bit FNV-1 and FNV-1a.
 */
#include "hash/hash.h"

#define FNV_64_INIT   UINT64_C(0xcbf29ce484222325)
#define FNV_64_PRIME  UINT64_C(0x100000001b3)
#define FNV_32_INIT   UINT32_C(2166136261)
#define FNV_32_PRIME  UINT32_C(16777619)

/* The key byte c as twemproxy sees it on x86-64: sign-extended to 64 bits. */
static uint64_t
key_byte(char c)
{
    uint64_t b = (unsigned char)c;

    return b >= 0x80 ? b | ~UINT64_C(0xff) : b;
}

/* FNV-1 64-bit (multiply, then XOR), low 32 bits of the result. */
uint32_t
mcs_hash_fnv1_64(const char *key, size_t len)
{
    uint64_t hash = FNV_64_INIT;

    for (size_t i = 0; i < len; i++) {
        hash *= FNV_64_PRIME;
        hash ^= key_byte(key[i]);
    }
    return (uint32_t)hash;
}

/* twemproxy's "fnv1a_64": XOR, then multiply, all in 32 bits with the
 * truncated 64-bit constants. */
uint32_t
mcs_hash_fnv1a_64(const char *key, size_t len)
{
    uint32_t hash = (uint32_t)FNV_64_INIT;

    for (size_t i = 0; i < len; i++) {
        hash ^= (uint32_t)key_byte(key[i]);
        hash *= (uint32_t)FNV_64_PRIME;
    }
    return hash;
}

/* FNV-1 32-bit (multiply, then XOR). */
uint32_t
mcs_hash_fnv1_32(const char *key, size_t len)
{
    uint32_t hash = FNV_32_INIT;

    for (size_t i = 0; i < len; i++) {
        hash *= FNV_32_PRIME;
        hash ^= (uint32_t)key_byte(key[i]);
    }
    return hash;
}

/* FNV-1a 32-bit (XOR, then multiply). */
uint32_t
mcs_hash_fnv1a_32(const char *key, size_t len)
{
    uint32_t hash = FNV_32_INIT;

    for (size_t i = 0; i < len; i++) {
        hash ^= (uint32_t)key_byte(key[i]);
        hash *= FNV_32_PRIME;
    }
    return hash;
}
