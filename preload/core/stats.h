/*
 * preload/core/stats.h: the engine's counters, each defined once with its help
 * text. `stats mcshim` prints them (stats.c) and docs/stats.md lists them
 * (a test checks the two agree).
 */
#ifndef MCS_STATS_H
#define MCS_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "preload/core/buf.h"

/* Per-server counters. */
#define MCS_SERVER_STATS(X)                                                           \
    X(requests,         "requests sent to the server")                                \
    X(responses,        "complete replies received")                                  \
    X(errors,           "requests answered with an error because of the server")      \
    X(timeouts,         "connections closed because a reply was late")                \
    X(connects,         "connections opened")                                         \
    X(connect_failures, "connection attempts that failed")                            \
    X(downs,            "times the server was marked down")                           \
    X(fast_fails,       "requests not sent because the server was down")              \
    X(failovers,        "requests it could not answer that a copy answered")          \
    X(warm_fills,       "items copied back into it while warming")                    \
    X(invalidations_logged,   "keys of writes it missed while away (for its rejoin)") \
    X(invalidations_replayed, "missed keys deleted on it when it came back from a cut") \
    X(rejoin_flushes,   "times it was flushed when it came back from a cut")          \
    X(restarts,         "times it came back restarted (empty)")                       \
    X(rejoins,          "times it came back from a cut (same instance)")              \
    X(probes,           "probes sent while it was down")

struct mcs_server_stats {
#define MCS_STAT_FIELD(name, help) uint64_t name;
    MCS_SERVER_STATS(MCS_STAT_FIELD)
#undef MCS_STAT_FIELD
};

/* Whole-engine counters. */
#define MCS_ENGINE_STATS(X)                                                           \
    X(curr_connections,  "application connections open now")                          \
    X(total_connections, "application connections intercepted since start")           \
    X(cmd_get,           "keys requested by get/gets/gat/gats")                       \
    X(get_hits,          "keys found")                                                \
    X(get_misses,        "keys not found (including keys of down servers)")           \
    X(cmd_set,           "storage commands (set/add/replace/append/prepend/cas)")     \
    X(cmd_touch,         "touch commands")                                            \
    X(cmd_flush,         "flush_all commands")                                        \
    X(requests,          "application requests parsed")                               \
    X(fast_requests,     "of those, parsed and sent by the application's own thread (fast path)") \
    X(fast_declined,     "writes on intercepted connections left to the engine thread (non-blocking, busy, or fast path off)") \
    X(fast_handoffs,     "fast-path writes that left part of their work to the engine thread") \
    X(client_errors,     "requests answered locally with ERROR/CLIENT_ERROR")         \
    X(server_errors,     "requests answered SERVER_ERROR because a server failed")    \
    X(copy_writes,       "writes sent to copies (replicas and backups)")              \
    X(copy_invalidations, "deletes sent to copies to keep them from diverging")       \
    X(backend_bytes_out, "bytes sent to servers")                                     \
    X(backend_bytes_in,  "bytes received from servers")                                \
    X(backend_stalls,    "times a server connection was left unread: its replies could not be delivered yet")

struct mcs_engine_stats {
#define MCS_STAT_FIELD2(name, help) uint64_t name;
    MCS_ENGINE_STATS(MCS_STAT_FIELD2)
#undef MCS_STAT_FIELD2
};

struct mcs_router;

/* Appends "STAT ..." lines for the engine and every server, then "END\r\n".
 * now_ms and start_ms give uptime. Returns 0 or -1 on allocation failure. */
int mcs_stats_mcshim(struct mcs_buf *out, const struct mcs_engine_stats *es, const struct mcs_router *r,
                     uint64_t now_ms, uint64_t start_ms, long pid);

/* Appends memcached-style general stats ("stats" with no argument), answered by
 * the shim from its own counters, then "END\r\n". */
int mcs_stats_general(struct mcs_buf *out, const struct mcs_engine_stats *es, uint64_t now_ms,
                      uint64_t start_ms, uint64_t unix_time, long pid);

#endif
