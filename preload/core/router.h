/*
 * preload/core/router.h: where each request goes, and whether a server may be
 * used right now.
 *
 * Sans-IO: built from the configuration, it owns the rings and each server's
 * health, a state machine driven by the engine with the current time:
 *
 *   up --(failure limit, or one timeout)--> down --(probe answers)--+
 *    ^                                       ^ |                    |
 *    |                                       | +--(probe fails)     |
 *    |   (warm-up window over)               |                      v
 *    +------------------------- warming <----+----- rejoining (cut, not restart:
 *    +-----(no copies or no warm-up)--------------   missed invalidations replayed or flush)
 *
 * A down or rejoining server gets no application traffic; the engine probes a
 * down one every retry_ms. The probe's answer (pid and start time, from
 * `stats`) tells a restart (empty server: no rejoin work) from a cut (same
 * instance, still holding values that may since have been deleted or
 * overwritten). While a server is away, the keys of the writes it missed are
 * kept in its bounded log (keylog.h) for the rejoin.
 *
 * Copies of a key (mcs_router_targets): its primary on the primary ring, then
 * the next replicas-1 distinct servers along that ring, then its owner on the
 * backup ring. With eject (and no copies), a down primary's keys go to their
 * owner on the ring of live primaries, as twemproxy's auto_eject_hosts does.
 * The engine owns one router; nothing here locks.
 */
#ifndef MCS_ROUTER_H
#define MCS_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hash/continuum.h"
#include "preload/core/config.h"
#include "preload/core/hostseg.h"
#include "preload/core/keylog.h"
#include "preload/core/stats.h"

#define MCS_HEALTH_LIST(X)      \
    X(UP,        "up")          \
    X(DOWN,      "down")        \
    X(REJOINING, "rejoining")   \
    X(WARMING,   "warming")

enum mcs_health {
#define MCS_HEALTH_ENUM(id, name) MCS_HEALTH_##id,
    MCS_HEALTH_LIST(MCS_HEALTH_ENUM)
#undef MCS_HEALTH_ENUM
    MCS_HEALTH_COUNT
};

/* Why a server failed; counted and logged by name. */
#define MCS_FAILURE_LIST(X)                        \
    X(CONNECT,  "connect failed")                  \
    X(RESET,    "connection reset or closed")      \
    X(TIMEOUT,  "timed out")                       \
    X(PROTOCOL, "sent bytes that are not memcached")

enum mcs_failure {
#define MCS_FAILURE_ENUM(id, name) MCS_FAILURE_##id,
    MCS_FAILURE_LIST(MCS_FAILURE_ENUM)
#undef MCS_FAILURE_ENUM
    MCS_FAILURE_COUNT
};

/* Which instance of memcached answers at an address: a restart changes it. */
struct mcs_identity {
    uint64_t pid;
    uint64_t started;                    /* unix time - uptime, seconds */
    bool     known;
};

/* What a server coming back needs before it serves reads. */
enum mcs_rejoin {
    MCS_REJOIN_NOTHING,                  /* restarted (empty), or it missed nothing */
    MCS_REJOIN_DELETES,                  /* replay the keys in its log as deletes */
    MCS_REJOIN_FLUSH_ALL                 /* flush it (policy, or the log overflowed) */
};

struct mcs_server {
    const struct mcs_endpoint *endpoint;
    char     label[MCS_HOST_MAX + 16];   /* "host:port" for logs and stats */
    bool     backup;                     /* in the backup pool */
    enum mcs_health health;
    uint32_t failures;                   /* consecutive */
    bool     probing;                    /* a probe is in flight */
    bool     identifying;                /* an identity request is in flight */
    uint64_t retry_at_ms;                /* down: next probe */
    uint64_t down_since_ms;
    uint64_t warm_until_ms;
    struct mcs_identity identity;
    struct mcs_keylog missed;            /* keys of writes it missed while away (not shared) */
    bool     missed_flush;               /* it missed a flush_all: flush it on rejoin (not shared) */
    struct mcs_server_stats stats;
    /* host-wide state (hostseg.h), when the router shares it */
    uint32_t seg_index;                  /* its entry, or MCS_SEG_NONE: this server is not shared */
    uint64_t seg_word;                   /* the entry's state word this router last saw or wrote */
    bool     leased;                     /* this process holds its probe/rejoin lease */
    struct mcs_server_stats published;   /* counters already added to the entry */
};

#define MCS_MAX_TARGETS (MCS_MAX_REPLICAS + 1)

struct mcs_router {
    const struct mcs_config *cfg;
    struct mcs_server *servers;          /* cfg->nservers (primaries, then backups), owned */
    size_t nservers;
    size_t nprimaries;
    bool   copies;                       /* replicas > 1 or a backup pool: keys have copies */
    struct mcs_continuum_point *points;  /* primary ring, owned */
    size_t npoints;
    struct mcs_continuum_point *backup_points;   /* backup ring (server = index into servers), owned */
    size_t nbackup_points;
    struct mcs_continuum_point *live_points;     /* eject: ring of usable primaries, owned */
    size_t nlive_points;
    bool   live_stale;                   /* eject: usability changed, rebuild before the next lookup */
    struct mcs_seg *seg;                 /* host-wide state, or NULL (mcs_router_share) */
    uint32_t pid;                        /* this process, for leases and "changed by" */
    bool   seg_corrupt;                  /* a value read from seg cannot be right: the owner unshares */
};

/* Builds the ring. Returns 0, or -1 on allocation failure. */
int mcs_router_init(struct mcs_router *r, const struct mcs_config *cfg);
void mcs_router_free(struct mcs_router *r);

/* Index of the server that owns key (twemproxy rules: one server -> 0, empty key -> hash 0). */
uint32_t mcs_router_server_for_key(const struct mcs_router *r, const char *key, size_t len);

/* The servers that hold key, in the order to try them: primary, replicas
 * along the primary ring, backup owner; with eject and no copies, a down
 * primary is followed by the key's owner among the live primaries. Writes
 * out[0..n) up to MCS_MAX_TARGETS entries, returns n >= 1. */
uint32_t mcs_router_targets(struct mcs_router *r, const char *key, size_t len, uint32_t *out);

/* May application traffic go to server s now (up or warming)? Ends a warm-up
 * whose window is over. */
bool mcs_router_usable(struct mcs_router *r, uint32_t s, uint64_t now_ms);

/* Is s warming (a miss on it should be looked up on a copy)? */
bool mcs_router_warming(struct mcs_router *r, uint32_t s, uint64_t now_ms);

/* Reports a failure / success of server s. A timeout marks an up server down
 * at once, other failures after cfg->failure_limit in a row; a failed probe or
 * rejoin puts it back to down for another retry_ms. Returns the previous health
 * if it changed (so the caller can log one line), else MCS_HEALTH_COUNT. */
enum mcs_health mcs_router_failed(struct mcs_router *r, uint32_t s, enum mcs_failure why, uint64_t now_ms);
void mcs_router_succeeded(struct mcs_router *r, uint32_t s);

/* Is a probe of down server s due now? mcs_router_probe_start records it sent,
 * or returns false when another process holds the server's lease (it probes;
 * this one looks again after retry_ms). */
bool mcs_router_probe_due(const struct mcs_router *r, uint32_t s, uint64_t now_ms);
bool mcs_router_probe_start(struct mcs_router *r, uint32_t s, uint64_t now_ms);

/* Records the identity of an up server (first contact). */
void mcs_router_identify(struct mcs_router *r, uint32_t s, const struct mcs_identity *id);

/* A probe of down server s answered with identity id: decides restart vs cut
 * and moves s to rejoining (work returned) or straight on (warming or up). */
enum mcs_rejoin mcs_router_probe_ok(struct mcs_router *r, uint32_t s, const struct mcs_identity *id,
                                    uint64_t now_ms);

/* The rejoin work of s is done: warming (if keys have copies and warm-up is on) or up. */
void mcs_router_rejoined(struct mcs_router *r, uint32_t s, uint64_t now_ms);

/* Server s missed a write of key (it is away, or failed it): remember it for the rejoin. */
void mcs_router_missed(struct mcs_router *r, uint32_t s, const char *key, size_t len);

/* Server s missed a flush_all: it is flushed when it comes back from a cut. */
void mcs_router_missed_flush(struct mcs_router *r, uint32_t s);

/* ---- the host-wide state (hostseg.h) ----
 *
 * Shared, the router keeps its own state machine but publishes every change of
 * a server's health to the segment and adopts the changes other processes made
 * (mcs_router_sync), so one detection serves the host. Only the holder of a
 * server's lease probes it and runs its rejoin; the keys a server misses go to
 * the segment's log, so they outlive the process that wrote them. A server
 * without an entry (table full) stays per-process. */

/* Starts sharing seg (already checked) as process pid: claims each server's
 * entry and adopts the host's view. */
void mcs_router_share(struct mcs_router *r, struct mcs_seg *seg, uint32_t pid);

/* Stops sharing (the segment is gone or corrupt): servers away now are flushed
 * when they come back, since the keys they missed were in the segment. */
void mcs_router_unshare(struct mcs_router *r);

/* Adopts server s's shared state if another process changed it. Returns the
 * health s had before if it changed (the caller logs and acts as for a local
 * change), else MCS_HEALTH_COUNT. *why: the reason of a down. */
enum mcs_health mcs_router_sync(struct mcs_router *r, uint32_t s, uint64_t now_ms, enum mcs_failure *why);

/* The lease holder of s renews its lease (each rejoin batch). */
void mcs_router_lease_renew(struct mcs_router *r, uint32_t s, uint64_t now_ms);

/* Does s have an entry in the segment (its state is the host's)? */
bool mcs_router_shared(const struct mcs_router *r, uint32_t s);

/* Is s usable for the host now (its shared state up or warming)? For a server
 * that is not shared: its own state. A write that missed s checks this after
 * logging the key: a server that came back meanwhile is told to drop it at once. */
bool mcs_router_host_usable(struct mcs_router *r, uint32_t s);

/* Adds this process's per-request counters (requests, errors, timeouts,
 * failovers, fast_fails) since the last call to the segment's entries; host
 * events (downs, probes, rejoins, restarts, the log's counters) are counted
 * there when they happen. */
void mcs_router_publish(struct mcs_router *r);

/* Earliest time the router needs the engine (a probe, the end of a warm-up), or UINT64_MAX. */
uint64_t mcs_router_next_event(const struct mcs_router *r);

const char *mcs_health_name(enum mcs_health h);
const char *mcs_failure_name(enum mcs_failure f);

#endif
