/*
 * preload/core/router.c: ring lookup and server health (see router.h).
 */
#include "preload/core/router.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const health_names[] = {
#define MCS_HEALTH_NAME(id, name) name,
    MCS_HEALTH_LIST(MCS_HEALTH_NAME)
#undef MCS_HEALTH_NAME
};

static const char *const failure_names[] = {
#define MCS_FAILURE_NAME(id, name) name,
    MCS_FAILURE_LIST(MCS_FAILURE_NAME)
#undef MCS_FAILURE_NAME
};

const char *
mcs_health_name(enum mcs_health h)
{
    return (unsigned)h < MCS_HEALTH_COUNT ? health_names[h] : "?";
}

const char *
mcs_failure_name(enum mcs_failure f)
{
    return (unsigned)f < MCS_FAILURE_COUNT ? failure_names[f] : "?";
}

int
mcs_router_init(struct mcs_router *r, const struct mcs_config *cfg)
{
    memset(r, 0, sizeof(*r));
    r->cfg = cfg;
    r->nservers = cfg->nservers;
    r->servers = calloc(cfg->nservers, sizeof(*r->servers));
    struct mcs_ring_server *ring = calloc(cfg->nservers, sizeof(*ring));
    char (*names)[MCS_HOST_MAX + MCS_NAME_MAX + 16] = calloc(cfg->nservers, sizeof(*names));
    if (r->servers == NULL || ring == NULL || names == NULL) {
        goto error;
    }
    for (size_t i = 0; i < cfg->nservers; i++) {
        const struct mcs_endpoint *e = &cfg->servers[i];
        struct mcs_server *s = &r->servers[i];
        s->endpoint = e;
        s->health = MCS_HEALTH_UP;
        if (e->is_unix) {
            snprintf(s->label, sizeof(s->label), "unix:%s", e->host);
            snprintf(names[i], sizeof(names[i]), "%s", e->name[0] ? e->name : e->host);
        } else {
            snprintf(s->label, sizeof(s->label), strchr(e->host, ':') ? "[%s]:%u" : "%s:%u", e->host,
                     (unsigned)e->port);
            if (mcs_continuum_name(e->host, e->port, e->name[0] ? e->name : NULL, names[i], sizeof(names[i]))
                < 0) {
                goto error;
            }
        }
        ring[i].name = names[i];
        ring[i].name_len = strlen(names[i]);
        ring[i].weight = e->weight;
    }
    r->npoints = mcs_continuum_points(cfg->dist, ring, cfg->nservers);
    r->points = calloc(r->npoints ? r->npoints : 1, sizeof(*r->points));
    if (r->points == NULL || mcs_continuum_build(cfg->dist, ring, cfg->nservers, r->points, r->npoints) == 0) {
        goto error;
    }
    free(ring);
    free(names);
    return 0;

error:
    free(ring);
    free(names);
    mcs_router_free(r);
    return -1;
}

void
mcs_router_free(struct mcs_router *r)
{
    free(r->servers);
    free(r->points);
    r->servers = NULL;
    r->points = NULL;
    r->nservers = 0;
    r->npoints = 0;
}

uint32_t
mcs_router_server_for_key(const struct mcs_router *r, const char *key, size_t len)
{
    if (r->nservers == 1) {
        return 0;
    }
    uint32_t h = len == 0 ? 0 : mcs_hash(r->cfg->hash, key, len);
    return mcs_continuum_lookup(r->cfg->dist, r->points, r->npoints, h);
}

bool
mcs_router_usable(struct mcs_router *r, uint32_t s, uint64_t now_ms)
{
    struct mcs_server *srv = &r->servers[s];
    switch (srv->health) {
    case MCS_HEALTH_UP:
    case MCS_HEALTH_RETRYING:
        return true;
    case MCS_HEALTH_DOWN:
        if (now_ms >= srv->retry_at_ms) {
            srv->health = MCS_HEALTH_RETRYING;
            return true;
        }
        return false;
    case MCS_HEALTH_COUNT:
        break;
    }
    return false;
}

enum mcs_health
mcs_router_failed(struct mcs_router *r, uint32_t s, enum mcs_failure why, uint64_t now_ms)
{
    struct mcs_server *srv = &r->servers[s];
    enum mcs_health before = srv->health;
    (void)why;
    if (srv->failures < UINT32_MAX) {
        srv->failures++;
    }
    if (before == MCS_HEALTH_RETRYING || (before == MCS_HEALTH_UP && srv->failures >= r->cfg->failure_limit)) {
        srv->health = MCS_HEALTH_DOWN;
        srv->retry_at_ms = now_ms + r->cfg->retry_ms;
        if (before == MCS_HEALTH_UP) {
            srv->down_since_ms = now_ms;
            srv->stats.downs++;
        }
        return before;
    }
    return MCS_HEALTH_COUNT;
}

enum mcs_health
mcs_router_succeeded(struct mcs_router *r, uint32_t s)
{
    struct mcs_server *srv = &r->servers[s];
    enum mcs_health before = srv->health;
    srv->failures = 0;
    if (before != MCS_HEALTH_UP) {
        srv->health = MCS_HEALTH_UP;
        return before;
    }
    return MCS_HEALTH_COUNT;
}

uint64_t
mcs_router_next_retry(const struct mcs_router *r)
{
    uint64_t next = UINT64_MAX;
    for (size_t i = 0; i < r->nservers; i++) {
        if (r->servers[i].health == MCS_HEALTH_DOWN && r->servers[i].retry_at_ms < next) {
            next = r->servers[i].retry_at_ms;
        }
    }
    return next;
}
