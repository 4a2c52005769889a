/*
 * hash/one_at_a_time.c: Bob Jenkins' one-at-a-time hash, as twemproxy 0.5
 * (nc_one_at_a_time.c) and libmemcached (its default hash) compute it.
 *
 * Key bytes are read through plain `char` (signed on x86-64), so a byte >= 0x80
 * is added sign-extended (0xe9 -> 0xffffffe9); key_byte() spells this out so
 * the result does not depend on the platform's `char`.
 */
#include "hash/hash.h"

/* The key byte c as twemproxy sees it on x86-64: sign-extended to 32 bits. */
static uint32_t
key_byte(char c)
{
    uint32_t b = (unsigned char)c;

    return b >= 0x80 ? b | 0xffffff00u : b;
}

/* One-at-a-time over key[0..len); 0 for the empty key. */
uint32_t
mcs_hash_one_at_a_time(const char *key, size_t len)
{
    uint32_t value = 0;

    for (size_t i = 0; i < len; i++) {
        value += key_byte(key[i]);
        value += value << 10;
        value ^= value >> 6;
    }
    value += value << 3;
    value ^= value >> 11;
    value += value << 15;
    return value;
}
