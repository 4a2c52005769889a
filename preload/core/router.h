/*
 * preload/core/router.h: where each request goes, and whether a server may be
 * used right now.
 *
 * Sans-IO: built from the configuration, it owns the continuum and each
 * server's health (a small state machine driven by the engine with the
 * current time): up -> down after failure_limit consecutive failures; a down
 * server is skipped (requests fail fast) until retry_ms has passed, then one
 * attempt is let through ("retrying"); a success brings it back up, a failure
 * puts it back down for another retry_ms. The engine owns one router;
 * nothing here locks, because only the engine thread touches it.
 *
 * Later availability features (replicas, backup pool, warm-up) extend
 * mcs_router_targets() to return more than one server per key.
 */
#ifndef MCS_ROUTER_H
#define MCS_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hash/continuum.h"
#include "preload/core/config.h"
#include "preload/core/stats.h"

#define MCS_HEALTH_LIST(X)    \
    X(UP,       "up")         \
    X(DOWN,     "down")       \
    X(RETRYING, "retrying")

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

struct mcs_server {
    const struct mcs_endpoint *endpoint;
    char     label[MCS_HOST_MAX + 16];   /* "host:port" for logs and stats */
    enum mcs_health health;
    uint32_t failures;                   /* consecutive */
    uint64_t retry_at_ms;
    uint64_t down_since_ms;
    struct mcs_server_stats stats;
};

struct mcs_router {
    const struct mcs_config *cfg;
    struct mcs_server *servers;          /* cfg->nservers, owned */
    size_t nservers;
    struct mcs_continuum_point *points;  /* owned */
    size_t npoints;
};

/* Builds the ring. Returns 0, or -1 on allocation failure. */
int mcs_router_init(struct mcs_router *r, const struct mcs_config *cfg);
void mcs_router_free(struct mcs_router *r);

/* Index of the server that owns key (twemproxy rules: one server -> 0, empty key -> hash 0). */
uint32_t mcs_router_server_for_key(const struct mcs_router *r, const char *key, size_t len);

/* May a request be sent to server s now? Moves down -> retrying once retry_ms has passed. */
bool mcs_router_usable(struct mcs_router *r, uint32_t s, uint64_t now_ms);

/* Reports a failure / success of server s. Return the previous health if it
 * changed (so the caller can log one line), else MCS_HEALTH_COUNT. */
enum mcs_health mcs_router_failed(struct mcs_router *r, uint32_t s, enum mcs_failure why, uint64_t now_ms);
enum mcs_health mcs_router_succeeded(struct mcs_router *r, uint32_t s);

/* Earliest retry time of a down server, or UINT64_MAX. */
uint64_t mcs_router_next_retry(const struct mcs_router *r);

const char *mcs_health_name(enum mcs_health h);
const char *mcs_failure_name(enum mcs_failure f);

#endif
