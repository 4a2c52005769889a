/*
 * preload/core/keylog.c: bounded, de-duplicating key log (see keylog.h).
 *
 * Invariants between calls:
 *   - arena[head, used) holds exactly `count` entries, all live and distinct;
 *     arena[0, head) holds taken entries only (take removes the entry at head);
 *   - every live entry has one index slot holding its offset + 2; tombstones
 *     (1) mark slots of taken keys, count + tombstones < 3/4 of index_cap;
 *   - an overflowed log holds no keys and no memory.
 */
#include "preload/core/alloc.h"
#include "preload/core/keylog.h"

#include <stdlib.h>
#include <string.h>

#include "hash/hash.h"

#define SLOT_EMPTY      0u
#define SLOT_TAKEN      1u
#define SLOT_BASE       2u      /* slot value = entry offset + SLOT_BASE */
#define ENTRY_HEADER    2u      /* little-endian key length */
#define INDEX_MIN_BITS  4u
#define INDEX_MAX_BITS  31u
#define ARENA_MIN       256u

/* Length of the key of the entry at off. */
static size_t
entry_len(const struct mcs_keylog *l, size_t off)
{
    const unsigned char *p = (const unsigned char *)l->arena + off;
    return (size_t)p[0] | ((size_t)p[1] << 8);
}

static const char *
entry_key(const struct mcs_keylog *l, size_t off)
{
    return l->arena + off + ENTRY_HEADER;
}

static uint32_t
key_hash(const char *key, size_t len)
{
    return mcs_hash_fnv1a_32(key, len);
}

/* First slot to probe for hash h: the top bits of a Fibonacci multiply, so
 * every bit of the hash counts whatever the index size. */
static size_t
home_slot(const struct mcs_keylog *l, uint32_t h)
{
    return (size_t)((uint32_t)(h * 0x9E3779B1u) >> (32u - l->index_bits));
}

/* Smallest index for n keys at most half full: bits out, or -1 if too large. */
static int
index_bits_for(size_t n, unsigned *bits)
{
    unsigned b = INDEX_MIN_BITS;
    while (((size_t)1 << b) / 2 < n) {
        if (++b > INDEX_MAX_BITS) {
            return -1;
        }
    }
    *bits = b;
    return 0;
}

/* Frees everything: no keys, no memory (overflow flag and max_keys untouched). */
static void
release(struct mcs_keylog *l)
{
    mcs_free(l->arena);
    mcs_free(l->index);
    l->arena = NULL;
    l->arena_cap = 0;
    l->index = NULL;
    l->index_cap = 0;
    l->index_bits = 0;
    l->head = 0;
    l->used = 0;
    l->tombstones = 0;
    l->count = 0;
}

/* Drops every key; keeps small allocations, releases large ones. */
static void
make_empty(struct mcs_keylog *l)
{
    if (l->arena_cap > MCS_KEYLOG_KEEP_BYTES) {
        mcs_free(l->arena);
        l->arena = NULL;
        l->arena_cap = 0;
    }
    if (l->index_cap * sizeof(*l->index) > MCS_KEYLOG_KEEP_BYTES) {
        mcs_free(l->index);
        l->index = NULL;
        l->index_cap = 0;
        l->index_bits = 0;
    } else if (l->index != NULL) {
        memset(l->index, 0, l->index_cap * sizeof(*l->index));
    }
    l->head = 0;
    l->used = 0;
    l->tombstones = 0;
    l->count = 0;
}

/* Gives up: drops the keys and the memory. Returns 1, add's overflow result. */
static int
overflow(struct mcs_keylog *l)
{
    release(l);
    l->overflowed = true;
    return 1;
}

/* Looks key (hash h) up. Returns its slot, or SIZE_MAX when absent; then *free_slot
 * is where to insert it (the first tombstone on its probe path, else the empty
 * slot that ended the probe). The index must exist. */
static size_t
index_find(const struct mcs_keylog *l, const char *key, size_t len, uint32_t h, size_t *free_slot)
{
    size_t mask = l->index_cap - 1;
    size_t tomb = SIZE_MAX;
    for (size_t i = home_slot(l, h);; i = (i + 1) & mask) {
        uint32_t v = l->index[i];
        if (v == SLOT_EMPTY) {
            *free_slot = tomb != SIZE_MAX ? tomb : i;
            return SIZE_MAX;
        }
        if (v == SLOT_TAKEN) {
            if (tomb == SIZE_MAX) {
                tomb = i;
            }
            continue;
        }
        size_t off = v - SLOT_BASE;
        if (entry_len(l, off) == len && memcmp(entry_key(l, off), key, len) == 0) {
            return i;
        }
    }
}

/* True when one more key would take the index past 3/4 load (or there is none). */
static bool
index_full(const struct mcs_keylog *l)
{
    return l->index == NULL || (l->count + l->tombstones + 1) * 4 > l->index_cap * 3;
}

/* Makes index (2^bits zeroed slots, from calloc) the log's index, filled with
 * the live entries; the old index is freed and the tombstones are gone. */
static void
index_install(struct mcs_keylog *l, uint32_t *index, unsigned bits)
{
    size_t mask = ((size_t)1 << bits) - 1;
    mcs_free(l->index);
    l->index = index;
    l->index_cap = mask + 1;
    l->index_bits = bits;
    l->tombstones = 0;
    for (size_t off = l->head; off < l->used; off += ENTRY_HEADER + entry_len(l, off)) {
        size_t i = home_slot(l, key_hash(entry_key(l, off), entry_len(l, off)));
        while (index[i] != SLOT_EMPTY) {
            i = (i + 1) & mask;
        }
        index[i] = (uint32_t)(off + SLOT_BASE);
    }
}

/* A zeroed index sized for n keys at most half full (bits out), or NULL when
 * that is too large or allocation fails. */
static uint32_t *
index_alloc(size_t n, unsigned *bits)
{
    if (index_bits_for(n, bits) != 0) {
        return NULL;
    }
    return mcs_calloc((size_t)1 << *bits, sizeof(uint32_t));
}

/* Makes room for want more arena bytes. Returns 0, or -1 (allocation failure
 * or the arena limit; arena unchanged). */
static int
arena_make_room(struct mcs_keylog *l, size_t want)
{
    if (want > MCS_KEYLOG_ARENA_MAX - l->used) {
        return -1;
    }
    size_t need = l->used + want;
    if (need <= l->arena_cap) {
        return 0;
    }
    size_t cap = l->arena_cap ? l->arena_cap : ARENA_MIN;
    while (cap < need) {
        cap = cap > MCS_KEYLOG_ARENA_MAX / 2 ? MCS_KEYLOG_ARENA_MAX : cap * 2;
    }
    char *p = mcs_realloc(l->arena, cap);
    if (p == NULL) {
        return -1;
    }
    l->arena = p;
    l->arena_cap = cap;
    return 0;
}

/* Moves the live entries to the front of the arena, gives back memory when the
 * arena is much larger than they need, and rebuilds the index to fit. Skipped
 * (nothing changes) if the new index cannot be allocated. */
static void
compact(struct mcs_keylog *l)
{
    unsigned bits;
    uint32_t *index = index_alloc(l->count, &bits);
    if (index == NULL) {
        return;
    }
    size_t live = l->used - l->head;
    memmove(l->arena, l->arena + l->head, live);
    l->head = 0;
    l->used = live;
    index_install(l, index, bits);
    size_t keep = l->arena_cap;
    while (keep / 2 >= ARENA_MIN && keep / 4 >= live) {
        keep /= 2;
    }
    if (keep < l->arena_cap) {
        char *p = mcs_realloc(l->arena, keep);
        if (p != NULL) {
            l->arena = p;
            l->arena_cap = keep;
        }
    }
}

/* Removes the index slot of the entry at off (hash h). */
static void
index_remove(struct mcs_keylog *l, size_t off, uint32_t h)
{
    size_t mask = l->index_cap - 1;
    uint32_t v = (uint32_t)(off + SLOT_BASE);
    for (size_t i = home_slot(l, h);; i = (i + 1) & mask) {
        if (l->index[i] == v) {
            l->index[i] = SLOT_TAKEN;
            l->tombstones++;
            return;
        }
    }
}

/* Appends key as a new entry (arena room made) and points index slot (free,
 * from index_find) at it. */
static void
entry_store(struct mcs_keylog *l, const char *key, size_t len, size_t slot)
{
    size_t off = l->used;
    unsigned char *p = (unsigned char *)l->arena + off;
    p[0] = (unsigned char)(len & 0xff);
    p[1] = (unsigned char)(len >> 8);
    memcpy(p + ENTRY_HEADER, key, len);
    l->used += ENTRY_HEADER + len;
    if (l->index[slot] == SLOT_TAKEN) {
        l->tombstones--;
    }
    l->index[slot] = (uint32_t)(off + SLOT_BASE);
    l->count++;
}

void
mcs_keylog_init(struct mcs_keylog *l, uint32_t max_keys)
{
    memset(l, 0, sizeof(*l));
    l->max_keys = max_keys;
}

void
mcs_keylog_free(struct mcs_keylog *l)
{
    release(l);
    l->overflowed = false;
}

int
mcs_keylog_add(struct mcs_keylog *l, const char *key, size_t len)
{
    if (l->overflowed) {
        return 1;
    }
    if (len == 0) {
        return 0;
    }
    if (len > MCS_KEYLOG_KEY_MAX) {
        return overflow(l);
    }
    uint32_t h = key_hash(key, len);
    size_t slot = SIZE_MAX;
    if (l->index != NULL && index_find(l, key, len, h, &slot) != SIZE_MAX) {
        return 0;
    }
    if (l->count >= l->max_keys) {
        return overflow(l);
    }
    if (arena_make_room(l, ENTRY_HEADER + len) != 0) {
        return overflow(l);
    }
    if (index_full(l)) {
        unsigned bits;
        uint32_t *index = index_alloc(l->count + 1, &bits);
        if (index == NULL) {
            return overflow(l);
        }
        index_install(l, index, bits);
        index_find(l, key, len, h, &slot);
    }
    entry_store(l, key, len, slot);
    return 0;
}

bool
mcs_keylog_overflowed(const struct mcs_keylog *l)
{
    return l->overflowed;
}

size_t
mcs_keylog_count(const struct mcs_keylog *l)
{
    return l->count;
}

bool
mcs_keylog_take(struct mcs_keylog *l, struct mcs_buf *out)
{
    if (l->count == 0) {
        return false;
    }
    size_t off = l->head;
    size_t len = entry_len(l, off);
    if (mcs_buf_append(out, entry_key(l, off), len) != 0) {
        overflow(l);
        return false;
    }
    index_remove(l, off, key_hash(entry_key(l, off), len));
    l->head += ENTRY_HEADER + len;
    l->count--;
    if (l->count == 0) {
        make_empty(l);
    } else if (l->head > l->used - l->head) {
        compact(l);
    }
    return true;
}

void
mcs_keylog_reset(struct mcs_keylog *l)
{
    make_empty(l);
    l->overflowed = false;
}

size_t
mcs_keylog_memory(const struct mcs_keylog *l)
{
    return l->arena_cap + l->index_cap * sizeof(*l->index);
}
