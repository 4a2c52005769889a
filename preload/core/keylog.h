/*
 * preload/core/keylog.h: a bounded set of keys, for replaying invalidations.
 *
 * While a server is away, the engine records the key of every write the
 * server missed (mcs_keylog_add). When the server comes back from a cut (same
 * instance, old values still in it), the engine takes the keys out one by one
 * (mcs_keylog_take) and deletes each on the server before it serves reads
 * again. A key is kept once however often it is written. When more than
 * max_keys distinct keys are waiting, the log gives up: it drops its keys and
 * stays "overflowed" until reset, and the engine flushes the server instead.
 *
 * Layout: keys are appended to one arena as [2-byte little-endian length]
 * [bytes]; take removes the oldest entry, so the live entries are always
 * arena[head, used). An open-addressing index (linear probing, FNV-1a hash,
 * tombstones for taken keys) finds duplicates. When more than half of the
 * arena is taken entries it is compacted; the index is rebuilt (dropping
 * tombstones, shrinking or growing to fit) when it is three quarters full.
 * Every operation is amortised O(key length).
 *
 * Memory, for n keys of b bytes in all: the arena holds b + 2n bytes, and
 * up to as much again of taken entries, in an allocation at most twice that
 * (doubling); the index has 4-byte slots, 4/3 to 4 per key (more after many
 * takes, until the next compaction shrinks it). An emptied log keeps at most
 * MCS_KEYLOG_KEEP_BYTES of arena and of index. The arena is limited to
 * MCS_KEYLOG_ARENA_MAX bytes: beyond that, as when an allocation fails, the
 * log overflows.
 *
 * Sans-IO, no locks: the owner (one router's server) serialises access.
 */
#ifndef MCS_KEYLOG_H
#define MCS_KEYLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "preload/core/buf.h"

#define MCS_KEYLOG_KEY_MAX    65535u                 /* longest key that can be recorded */
#define MCS_KEYLOG_ARENA_MAX  ((size_t)UINT32_MAX - 2) /* index slots hold arena offsets + 2 */
#define MCS_KEYLOG_KEEP_BYTES 4096u                  /* kept by an emptied log, arena and index each */

/* One log. Zero-initialised (or after mcs_keylog_free) it is empty; with
 * max_keys 0 every add overflows. The owner of the struct owns its memory. */
struct mcs_keylog {
    char     *arena;       /* entries: 2-byte little-endian length, then the key */
    size_t    arena_cap;   /* allocated bytes */
    size_t    head;        /* offset of the oldest live entry: before it, all taken */
    size_t    used;        /* end of the newest entry */
    uint32_t *index;       /* slots: 0 empty, 1 taken (tombstone), else entry offset + 2 */
    size_t    index_cap;   /* slots, a power of two (or 0: no index yet) */
    unsigned  index_bits;  /* log2(index_cap) */
    size_t    tombstones;  /* slots holding 1 */
    size_t    count;       /* live keys */
    uint32_t  max_keys;    /* distinct keys it may hold */
    bool      overflowed;  /* gave up: no keys, every add returns 1 until reset */
};

/* Sets up an empty log that holds up to max_keys distinct keys (>= 1). Allocates
 * nothing (memory comes with the first add). l must not hold memory: a
 * zero-initialised or freed log. */
void mcs_keylog_init(struct mcs_keylog *l, uint32_t max_keys);

/* Releases all memory. The log is then empty, not overflowed and usable again
 * with the same max_keys. */
void mcs_keylog_free(struct mcs_keylog *l);

/* Records key[0, len) (any bytes, 0 < len <= MCS_KEYLOG_KEY_MAX). A key already
 * in the log is not stored again. Returns 0 if the key is recorded (or already
 * was); 1 if the log is (now) overflowed: a new distinct key beyond max_keys, a
 * key longer than MCS_KEYLOG_KEY_MAX, an allocation failure or the arena limit
 * overflow it, which drops every key and releases the memory; then every add
 * returns 1 until mcs_keylog_reset. len 0 records nothing and returns 0 (there
 * is no empty key to invalidate). Never returns anything else. */
int mcs_keylog_add(struct mcs_keylog *l, const char *key, size_t len);

/* True once the log overflowed, until mcs_keylog_reset or mcs_keylog_free. */
bool mcs_keylog_overflowed(const struct mcs_keylog *l);

/* Number of keys in the log (0 when overflowed). */
size_t mcs_keylog_count(const struct mcs_keylog *l);

/* Removes one key (the oldest; callers must not rely on the order) and appends
 * its bytes to out. Returns true, or false when the log is empty. If out cannot
 * grow, the key cannot be handed over: the log overflows (keys dropped) and
 * returns false, so a caller that sees false should check
 * mcs_keylog_overflowed. A taken key may be added again later. */
bool mcs_keylog_take(struct mcs_keylog *l, struct mcs_buf *out);

/* Empties the log and clears the overflow. Keeps up to MCS_KEYLOG_KEEP_BYTES of
 * arena and of index allocated for reuse, releases larger allocations. */
void mcs_keylog_reset(struct mcs_keylog *l);

/* Bytes allocated by the log (arena and index, not the struct itself). */
size_t mcs_keylog_memory(const struct mcs_keylog *l);

#endif
