/*
 * preload/core/hostseg.h: the host-wide state segment, as memory.
 *
 * Every process of a user on a host that runs the shim maps one file (the
 * driver, preload/lib/shared.c, opens and maps it; this module only reads and
 * writes the bytes). It holds what must outlive a process and be the same for
 * all of them:
 *
 * - servers: one entry per server, keyed by its identity (its ketama name when
 *   it has one, else "host:port"), so processes with different server lists share
 *   what they have in common. Each entry has the server's health as one 64-bit
 *   word (state and epoch, changed only by compare-and-swap), the time of the
 *   next probe, the probe lease (one process at a time probes a down server and
 *   runs its rejoin; the lease expires if its holder dies), the identity of the
 *   memcached instance last seen there (to tell a restart from a cut), flags
 *   (its missed-writes log overflowed, it missed a flush_all) and counters summed
 *   over every process that ever used it.
 * - the missed-writes log: one table of key slots shared by all servers. A
 *   process that writes a key a server does not get (down, rejoining) records
 *   (server, key) in it; the process that holds the server's lease when it comes
 *   back from a cut deletes those keys on it. A key that finds no slot sets the
 *   server's overflow flag: it is flushed instead.
 * - processes: one slot per attached process (pid, start, requests), for the
 *   outside view (`mcshim stats`); slots of dead processes are reclaimed.
 *
 * No locks, no pointers. Every shared word is read and written with atomics;
 * the state machine moves by compare-and-swap; a slot is claimed by
 * compare-and-swap and published with a release store. A process killed at any
 * instruction leaves at worst: a lease that expires, a key slot marked
 * "writing" that is never finished (mcs_seg_log_scan reports it and every
 * server's log is then treated as overflowed), a server entry or process slot
 * half-claimed (skipped, reclaimed). Nothing waits on another process.
 *
 * Untrusted: any process of the user can write anything into the file. Every
 * value read is checked (states, lengths, indexes); the geometry is this
 * build's constants, never the header's numbers; a bad value makes
 * mcs_seg_valid-style checks fail (MCS_SEG_CORRUPT) and the caller stops using
 * the segment. Nothing read from it can make this code index outside the
 * mapping or loop without bound.
 *
 * Time is the host's monotonic clock in ms (CLOCK_MONOTONIC is one clock for
 * every process of a host), passed in by the caller. The header records the
 * boot it was written in; a segment from another boot has its times reset.
 */
#ifndef MCS_HOSTSEG_H
#define MCS_HOSTSEG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "preload/core/buf.h"

#define MCS_SEG_MAGIC     0x3147455348534d43ull  /* "CMSHSEG1", little-endian */
#define MCS_SEG_VERSION   1u
#define MCS_SEG_SERVERS   128u    /* distinct servers one segment tracks */
#define MCS_SEG_PROCS     1024u   /* processes attached at once */
#define MCS_SEG_SLOTS     16384u  /* missed-write keys, all servers together (power of two) */
#define MCS_SEG_PROBES    64u     /* slots tried for one key before its server's log overflows */
#define MCS_SEG_KEY_MAX   250u    /* memcached's longest key */
#define MCS_SEG_ID_MAX    127u    /* a server identity longer than this is not shared */
#define MCS_SEG_NONE      UINT32_MAX

/* Host-wide per-server counters, summed over processes (each adds its deltas). */
#define MCS_SEG_COUNTERS(X)                                                   \
    X(requests,     "requests sent to the server")                            \
    X(errors,       "requests answered with an error because of the server")  \
    X(timeouts,     "connections closed because a reply was late")            \
    X(failovers,    "requests it could not answer that a copy answered")      \
    X(fast_fails,   "requests not sent because the server was down")          \
    X(downs,        "times the server was marked down (host-wide)")           \
    X(probes,       "probes sent while it was down")                          \
    X(rejoins,      "times it came back from a cut (same instance)")          \
    X(restarts,     "times it came back restarted (empty)")                   \
    X(invalidations_logged,   "keys of writes it missed, recorded in the host's log") \
    X(invalidations_replayed, "missed keys deleted on it when it came back")  \
    X(rejoin_flushes, "times it was flushed when it came back from a cut")

enum mcs_seg_counter {
#define MCS_SEG_COUNTER_ENUM(name, help) MCS_SEG_C_##name,
    MCS_SEG_COUNTERS(MCS_SEG_COUNTER_ENUM)
#undef MCS_SEG_COUNTER_ENUM
    MCS_SEG_COUNTER_COUNT
};

/* Flags of a server entry. */
#define MCS_SEG_F_OVERFLOW 1u     /* its log lost a key: flush it when it comes back from a cut */
#define MCS_SEG_F_FLUSH    2u     /* it missed a flush_all: flush it when it comes back */

/* A server entry (fixed size; every field is accessed atomically). */
struct mcs_seg_server {
    uint32_t claim;               /* 0 free, 1 being claimed, 2 in use */
    uint32_t id_len;
    char     id[MCS_SEG_ID_MAX + 1];
    uint64_t state;               /* health (low 8 bits, enum mcs_health) | epoch << 8 */
    uint64_t retry_at_ms;         /* down: no probe before */
    uint64_t warm_until_ms;       /* warming: until */
    uint64_t changed_ms;          /* last state change */
    uint32_t changed_by;          /* pid that made it */
    uint32_t why;                 /* enum mcs_failure of the last down */
    uint64_t lease_until_ms;      /* probe/rejoin lease (0: free) */
    uint32_t lease_pid;
    uint32_t flags;               /* MCS_SEG_F_* */
    uint64_t instance;            /* memcached instance last seen: pid << 32 | start time (unix s, low 32 bits) */
    uint64_t log_keys;            /* its keys in the log (kept with every add and free; a hint, not a bound) */
    uint64_t counters[MCS_SEG_COUNTER_COUNT];
};

/* A process slot. */
struct mcs_seg_proc {
    uint32_t pid;                 /* 0: free */
    uint32_t ready;               /* 1 once the fields below are its owner's (reclaim looks only then) */
    uint64_t ticket;              /* the owner's (boot-unique) process start time: tells pid reuse */
    uint64_t attached_ms;
    uint64_t seen_ms;             /* last heartbeat */
    uint64_t requests;            /* application requests */
    uint64_t servers_down;        /* servers it sees down or rejoining now */
    char     comm[16];            /* process name */
};

/* A missed-write key slot. state: low 2 bits MCS_SEG_SLOT_*, the rest a generation. */
enum mcs_seg_slot_state { MCS_SEG_SLOT_EMPTY, MCS_SEG_SLOT_WRITING, MCS_SEG_SLOT_READY, MCS_SEG_SLOT_TAKING };
struct mcs_seg_slot {
    uint32_t state;
    uint16_t server;              /* index of the server entry */
    uint16_t len;
    char     key[MCS_SEG_KEY_MAX + 6];   /* 256-byte slots with the header above */
};

struct mcs_seg_header {
    uint64_t magic;
    uint32_t version;
    uint32_t servers, procs, slots;     /* this build's geometry, checked on attach */
    uint64_t size;                      /* total bytes */
    uint8_t  boot_id[16];               /* the boot its times belong to */
    uint32_t broken;                    /* set by a process that found it corrupt: rebuild */
    uint32_t pad;
    uint64_t created_ms;
    uint64_t attaches;
};

/* The whole layout. */
struct mcs_seg {
    struct mcs_seg_header header;
    uint8_t pad[4096 - sizeof(struct mcs_seg_header)];
    struct mcs_seg_server servers[MCS_SEG_SERVERS];
    struct mcs_seg_proc procs[MCS_SEG_PROCS];
    struct mcs_seg_slot slots[MCS_SEG_SLOTS];
};

#define MCS_SEG_SIZE sizeof(struct mcs_seg)

enum mcs_seg_result {
    MCS_SEG_OK,
    MCS_SEG_BUSY,      /* someone else holds it / did it: nothing to do */
    MCS_SEG_FULL,      /* no free entry or slot */
    MCS_SEG_CORRUPT    /* a value that cannot be right: stop using the segment */
};

/* Makes seg a fresh segment. Its MCS_SEG_SIZE bytes must be zero (a new file
 * is): only the header is written, so a fresh file's pages stay untouched. */
void mcs_seg_format(struct mcs_seg *seg, const uint8_t boot_id[16], uint64_t now_ms);

/* Checks a mapped segment's header: magic, version, geometry, size. size is the
 * file's size. On a segment from another boot (boot_id differs), resets its times
 * (retry, warm-up, leases, heartbeats) and records this boot. Returns MCS_SEG_OK
 * or MCS_SEG_CORRUPT (also when the broken flag is set). */
enum mcs_seg_result mcs_seg_check(struct mcs_seg *seg, uint64_t size, const uint8_t boot_id[16]);

/* Marks the segment corrupt for every process (they stop using it; the next
 * process to start rebuilds it). */
void mcs_seg_set_broken(struct mcs_seg *seg);
bool mcs_seg_broken(const struct mcs_seg *seg);

/* The entry of server id[0, len), claimed if absent. Returns its index, or
 * MCS_SEG_NONE (table full, id too long or empty, or a corrupt entry). */
uint32_t mcs_seg_server_find(struct mcs_seg *seg, const char *id, size_t len, bool claim);

/* ---- health ---- */

/* A server's shared health word: health (enum mcs_health as uint8) and epoch. */
struct mcs_seg_health {
    uint32_t health;
    uint64_t epoch;
};

/* Reads server i's health. MCS_SEG_CORRUPT if the stored state is no health. */
enum mcs_seg_result mcs_seg_health_get(const struct mcs_seg *seg, uint32_t i, struct mcs_seg_health *out);

/* Moves server i from `from` to health `to` (epoch +1 when to is down), if its
 * word still is `from`; records why, pid and now, and retry_at / warm_until
 * (stored before the move: readers of the new state see them). Returns
 * MCS_SEG_OK, or MCS_SEG_BUSY if the word changed meanwhile (*from is updated
 * to what it is now). */
enum mcs_seg_result mcs_seg_health_move(struct mcs_seg *seg, uint32_t i, struct mcs_seg_health *from, uint32_t to,
                                        uint32_t why, uint32_t pid, uint64_t now_ms, uint64_t retry_at_ms,
                                        uint64_t warm_until_ms);

uint64_t mcs_seg_retry_at(const struct mcs_seg *seg, uint32_t i);
void mcs_seg_set_retry_at(struct mcs_seg *seg, uint32_t i, uint64_t at_ms);
uint64_t mcs_seg_warm_until(const struct mcs_seg *seg, uint32_t i);

/* Takes (or renews, for its holder) server i's lease until now + ms. true if
 * pid holds it now. */
bool mcs_seg_lease_take(struct mcs_seg *seg, uint32_t i, uint32_t pid, uint64_t now_ms, uint64_t ms);
void mcs_seg_lease_drop(struct mcs_seg *seg, uint32_t i, uint32_t pid);
/* When server i's lease expires (0: free). */
uint64_t mcs_seg_lease_until(const struct mcs_seg *seg, uint32_t i);
/* The failure recorded with server i's last down (a value < count, else count - 1). */
uint32_t mcs_seg_why(const struct mcs_seg *seg, uint32_t i, uint32_t count);

/* The memcached instance last seen at server i (0: none), and setting it. */
uint64_t mcs_seg_instance(const struct mcs_seg *seg, uint32_t i);
void mcs_seg_set_instance(struct mcs_seg *seg, uint32_t i, uint64_t instance);

uint32_t mcs_seg_flags(const struct mcs_seg *seg, uint32_t i);
void mcs_seg_flags_set(struct mcs_seg *seg, uint32_t i, uint32_t flags);
/* Clears flags and returns the ones that were set. */
uint32_t mcs_seg_flags_take(struct mcs_seg *seg, uint32_t i, uint32_t flags);

void mcs_seg_count(struct mcs_seg *seg, uint32_t i, enum mcs_seg_counter c, uint64_t n);

/* ---- missed-writes log ---- */

/* Records that server i missed a write of key[0, len). A key already there is
 * not added again. Returns MCS_SEG_OK, or MCS_SEG_FULL (key too long or no
 * slot: the server's overflow flag is set). */
enum mcs_seg_result mcs_seg_log_add(struct mcs_seg *seg, uint32_t i, const char *key, size_t len);

/* Takes up to max keys of server i out of the log for replay: each slot goes
 * from ready (or taking: a replay its holder did not finish) to taking, its key
 * is appended to keys as [1-byte length][key] and its ticket (slot index and
 * generation) to tickets[]. Returns how many. *stuck is set when a slot is
 * "writing" (maybe a process killed mid-write: the caller treats every log as
 * overflowed). */
size_t mcs_seg_log_take(struct mcs_seg *seg, uint32_t i, size_t max, struct mcs_buf *keys, uint64_t *tickets,
                        bool *stuck);

/* A taken key was deleted on the server (done true: its slot is freed) or not
 * (its slot is ready again). */
void mcs_seg_log_done(struct mcs_seg *seg, uint64_t ticket, bool done);

/* Frees every slot of server i (a restart, or a flush, made them moot). */
void mcs_seg_log_clear(struct mcs_seg *seg, uint32_t i);

/* Server i's count of logged keys, kept by add/done/clear (cheap; possibly off
 * after a process died mid-update or the segment was scribbled on). */
uint64_t mcs_seg_log_keys(const struct mcs_seg *seg, uint32_t i);

/* Keys of server i in the log (ready or taking), by scanning the table. */
size_t mcs_seg_log_count(const struct mcs_seg *seg, uint32_t i);

/* ---- processes ---- */

/* Claims a process slot for pid. Returns its index or MCS_SEG_NONE (full). */
uint32_t mcs_seg_proc_attach(struct mcs_seg *seg, uint32_t pid, uint64_t ticket, const char *comm, uint64_t now_ms);
void mcs_seg_proc_detach(struct mcs_seg *seg, uint32_t slot, uint32_t pid);
/* Frees slot if it still belongs to (pid, ticket): its process is gone. */
void mcs_seg_proc_reclaim(struct mcs_seg *seg, uint32_t slot, uint32_t pid, uint64_t ticket);

const char *mcs_seg_counter_name(enum mcs_seg_counter c);
const char *mcs_seg_counter_help(enum mcs_seg_counter c);

#endif
