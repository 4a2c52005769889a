/*
 * preload/core/router.c: ring lookup and server health (see router.h).
 */
#include "preload/core/alloc.h"
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

/* Builds a continuum over servers[first, first + count); point servers are indexes into r->servers.
 * skip (may be NULL) leaves servers out (eject). Returns 0 or -1. */
static int
ring_build(struct mcs_router *r, size_t first, size_t count, const bool *skip, struct mcs_continuum_point **points,
           size_t *npoints)
{
    const struct mcs_config *cfg = r->cfg;
    struct mcs_ring_server *ring = mcs_calloc(count ? count : 1, sizeof(*ring));
    char (*names)[MCS_HOST_MAX + MCS_NAME_MAX + 16] = mcs_calloc(count ? count : 1, sizeof(*names));
    uint32_t *index = mcs_calloc(count ? count : 1, sizeof(*index));
    struct mcs_continuum_point *pts = NULL;
    size_t n = 0, np = 0;
    int rc = -1;
    if (ring == NULL || names == NULL || index == NULL) {
        goto out;
    }
    for (size_t i = first; i < first + count; i++) {
        const struct mcs_endpoint *e = &cfg->servers[i];
        if (skip != NULL && skip[i - first]) {
            continue;
        }
        if (e->is_unix) {
            snprintf(names[n], sizeof(names[n]), "%s", e->name[0] ? e->name : e->host);
        } else if (mcs_continuum_name(e->host, e->port, e->name[0] ? e->name : NULL, names[n], sizeof(names[n]))
                   < 0) {
            goto out;
        }
        ring[n].name = names[n];
        ring[n].name_len = strlen(names[n]);
        ring[n].weight = e->weight;
        index[n++] = (uint32_t)i;
    }
    np = n ? mcs_continuum_points(cfg->dist, ring, n) : 0;
    pts = mcs_calloc(np ? np : 1, sizeof(*pts));
    if (pts == NULL || (np > 0 && mcs_continuum_build(cfg->dist, ring, n, pts, np) == 0)) {
        goto out;
    }
    for (size_t i = 0; i < np; i++) {
        pts[i].server = index[pts[i].server];
    }
    mcs_free(*points);
    *points = pts;
    *npoints = np;
    pts = NULL;
    rc = 0;
out:
    mcs_free(pts);
    mcs_free(ring);
    mcs_free(names);
    mcs_free(index);
    return rc;
}

int
mcs_router_init(struct mcs_router *r, const struct mcs_config *cfg)
{
    memset(r, 0, sizeof(*r));
    r->cfg = cfg;
    r->nservers = cfg->nservers;
    r->nprimaries = cfg->nprimaries ? cfg->nprimaries : cfg->nservers;
    r->copies = cfg->replicas > 1 || r->nprimaries < r->nservers;
    r->servers = mcs_calloc(cfg->nservers, sizeof(*r->servers));
    if (r->servers == NULL) {
        goto error;
    }
    for (size_t i = 0; i < cfg->nservers; i++) {
        const struct mcs_endpoint *e = &cfg->servers[i];
        struct mcs_server *s = &r->servers[i];
        s->endpoint = e;
        s->health = MCS_HEALTH_UP;
        s->backup = i >= r->nprimaries;
        mcs_keylog_init(&s->missed, cfg->rejoin_log ? cfg->rejoin_log : 1);
        s->seg_index = MCS_SEG_NONE;
        if (e->is_unix) {
            snprintf(s->label, sizeof(s->label), "unix:%s", e->host);
        } else {
            snprintf(s->label, sizeof(s->label), strchr(e->host, ':') ? "[%s]:%u" : "%s:%u", e->host,
                     (unsigned)e->port);
        }
    }
    if (ring_build(r, 0, r->nprimaries, NULL, &r->points, &r->npoints) != 0
        || (r->nservers > r->nprimaries
            && ring_build(r, r->nprimaries, r->nservers - r->nprimaries, NULL, &r->backup_points,
                          &r->nbackup_points)
                   != 0)) {
        goto error;
    }
    return 0;

error:
    mcs_router_free(r);
    return -1;
}

void
mcs_router_free(struct mcs_router *r)
{
    for (size_t i = 0; r->servers != NULL && i < r->nservers; i++) {
        mcs_keylog_free(&r->servers[i].missed);
    }
    mcs_free(r->servers);
    mcs_free(r->points);
    mcs_free(r->backup_points);
    mcs_free(r->live_points);
    memset(r, 0, sizeof(*r));
}

static uint32_t
key_hash(const struct mcs_router *r, const char *key, size_t len)
{
    return len == 0 ? 0 : mcs_hash(r->cfg->hash, key, len);
}

uint32_t
mcs_router_server_for_key(const struct mcs_router *r, const char *key, size_t len)
{
    if (r->nprimaries == 1) {
        return 0;
    }
    return mcs_continuum_lookup(r->cfg->dist, r->points, r->npoints, key_hash(r, key, len));
}

/* Index of the point a hash lands on (the lookup rule of continuum.h). */
static size_t
point_index(enum mcs_dist_kind dist, const struct mcs_continuum_point *points, size_t npoints, uint32_t h)
{
    if (dist == MCS_DIST_MODULA) {
        return h % npoints;
    }
    size_t lo = 0, hi = npoints;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (points[mid].value < h) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo == npoints ? 0 : lo;
}

static bool
listed(const uint32_t *out, uint32_t n, uint32_t s)
{
    for (uint32_t i = 0; i < n; i++) {
        if (out[i] == s) {
            return true;
        }
    }
    return false;
}

/* With eject: the live ring is rebuilt lazily after usability changed. */
static void
live_refresh(struct mcs_router *r)
{
    if (!r->live_stale) {
        return;
    }
    bool skip[MCS_MAX_SERVERS];
    for (size_t i = 0; i < r->nprimaries; i++) {
        skip[i] = r->servers[i].health != MCS_HEALTH_UP && r->servers[i].health != MCS_HEALTH_WARMING;
    }
    if (ring_build(r, 0, r->nprimaries, skip, &r->live_points, &r->nlive_points) == 0) {
        r->live_stale = false;
    }
}

uint32_t
mcs_router_targets(struct mcs_router *r, const char *key, size_t len, uint32_t *out)
{
    uint32_t n = 0;
    uint32_t h = key_hash(r, key, len);
    out[n++] = r->nprimaries == 1 ? 0 : mcs_continuum_lookup(r->cfg->dist, r->points, r->npoints, h);
    if (r->cfg->replicas > 1 && r->npoints > 0) {
        size_t start = point_index(r->cfg->dist, r->points, r->npoints, h);
        for (size_t i = 1; i < r->npoints && n < r->cfg->replicas; i++) {
            uint32_t s = r->points[(start + i) % r->npoints].server;
            if (!listed(out, n, s)) {
                out[n++] = s;
            }
        }
    }
    if (r->nbackup_points > 0) {
        out[n++] = r->nservers - r->nprimaries == 1
                       ? (uint32_t)r->nprimaries
                       : mcs_continuum_lookup(r->cfg->dist, r->backup_points, r->nbackup_points, h);
    }
    if (!r->copies && r->cfg->eject && r->servers[out[0]].health != MCS_HEALTH_UP
        && r->servers[out[0]].health != MCS_HEALTH_WARMING) {
        live_refresh(r);
        if (r->nlive_points > 0 && !r->live_stale) {
            out[n++] = mcs_continuum_lookup(r->cfg->dist, r->live_points, r->nlive_points, h);
        }
    }
    return n;
}

/* ---- host-wide state: helpers ---- */

static bool
is_shared(const struct mcs_router *r, const struct mcs_server *srv)
{
    return r->seg != NULL && srv->seg_index != MCS_SEG_NONE && !r->seg_corrupt;
}

static uint64_t
word_of(const struct mcs_seg_health *h)
{
    return (h->epoch << 8) | h->health;
}

static bool
usable_health(uint32_t h)
{
    return h == MCS_HEALTH_UP || h == MCS_HEALTH_WARMING;
}

/* How long a probe and a rejoin batch may take before another process may take over. */
static uint64_t
lease_ms(const struct mcs_router *r)
{
    return (uint64_t)r->cfg->timeout_ms * 3 + 1000;
}

/* The shared health of srv, or false (and the segment is given up) if it is no health. */
static bool
shared_health(struct mcs_router *r, const struct mcs_server *srv, struct mcs_seg_health *h)
{
    if (mcs_seg_health_get(r->seg, srv->seg_index, h) != MCS_SEG_OK) {
        r->seg_corrupt = true;
        return false;
    }
    return true;
}

/* A time read from the segment, kept within [now, now + max_ms]: a wrong value
 * may delay a probe or shorten a warm-up, never stop either. */
static uint64_t
bounded_time(uint64_t t, uint64_t now_ms, uint64_t max_ms)
{
    return t < now_ms ? now_ms : (t - now_ms > max_ms ? now_ms + max_ms : t);
}

static void lease_drop(struct mcs_router *r, struct mcs_server *srv);

/* A host event (a down, a probe, a rejoin...): counted in the segment at once,
 * so a process that exits soon after still counts (per-request counters go in
 * batches, mcs_router_publish). */
static void
host_count(struct mcs_router *r, const struct mcs_server *srv, enum mcs_seg_counter c)
{
    if (is_shared(r, srv)) {
        mcs_seg_count(r->seg, srv->seg_index, c, 1);
    }
}
static void set_health(struct mcs_router *r, struct mcs_server *srv, enum mcs_health h);

/* srv was found failing here: it is down for the host. From up or warming the
 * entry moves to down (a new epoch); already down or rejoining elsewhere, that
 * state is adopted. */
static void
publish_down(struct mcs_router *r, struct mcs_server *srv, enum mcs_failure why, uint64_t now_ms)
{
    struct mcs_seg_health h;
    if (!is_shared(r, srv) || !shared_health(r, srv, &h)) {
        return;
    }
    for (int attempt = 0; attempt < 4; attempt++) {
        if (!usable_health(h.health)) {
            srv->seg_word = word_of(&h);
            srv->retry_at_ms = bounded_time(mcs_seg_retry_at(r->seg, srv->seg_index), now_ms, r->cfg->retry_ms);
            if (h.health == MCS_HEALTH_REJOINING) {
                set_health(r, srv, MCS_HEALTH_REJOINING);   /* its lease holder decides */
            }
            return;
        }
        if (mcs_seg_health_move(r->seg, srv->seg_index, &h, MCS_HEALTH_DOWN, why, r->pid, now_ms,
                                now_ms + r->cfg->retry_ms, 0) == MCS_SEG_OK) {
            srv->seg_word = word_of(&h);
            return;
        }
        if (h.health >= MCS_HEALTH_COUNT) {
            r->seg_corrupt = true;
            return;
        }
    }
}

/* The lease holder moves srv's entry to `to` (rejoining, warming or up; down
 * after a failed rejoin). Returns false if the entry was changed by someone
 * else meanwhile (then the next sync adopts it). */
static bool
publish_move(struct mcs_router *r, struct mcs_server *srv, uint32_t to, enum mcs_failure why, uint64_t now_ms)
{
    struct mcs_seg_health h;
    if (!is_shared(r, srv) || !shared_health(r, srv, &h)) {
        return true;
    }
    if (usable_health(h.health) && to != MCS_HEALTH_DOWN) {
        srv->seg_word = UINT64_MAX;   /* rejoined by another process meanwhile: adopt it */
        return false;
    }
    if (mcs_seg_health_move(r->seg, srv->seg_index, &h, to, why, r->pid, now_ms, now_ms + r->cfg->retry_ms,
                            srv->warm_until_ms) != MCS_SEG_OK) {
        srv->seg_word = UINT64_MAX;
        return false;
    }
    srv->seg_word = word_of(&h);
    return true;
}

static void
set_health(struct mcs_router *r, struct mcs_server *srv, enum mcs_health h)
{
    bool was = srv->health == MCS_HEALTH_UP || srv->health == MCS_HEALTH_WARMING;
    bool is = h == MCS_HEALTH_UP || h == MCS_HEALTH_WARMING;
    srv->health = h;
    if (was != is) {
        r->live_stale = true;
    }
}

bool
mcs_router_usable(struct mcs_router *r, uint32_t s, uint64_t now_ms)
{
    struct mcs_server *srv = &r->servers[s];
    if (srv->health == MCS_HEALTH_WARMING && now_ms >= srv->warm_until_ms) {
        srv->health = MCS_HEALTH_UP;
    }
    return srv->health == MCS_HEALTH_UP || srv->health == MCS_HEALTH_WARMING;
}

bool
mcs_router_warming(struct mcs_router *r, uint32_t s, uint64_t now_ms)
{
    return mcs_router_usable(r, s, now_ms) && r->servers[s].health == MCS_HEALTH_WARMING;
}

enum mcs_health
mcs_router_failed(struct mcs_router *r, uint32_t s, enum mcs_failure why, uint64_t now_ms)
{
    struct mcs_server *srv = &r->servers[s];
    enum mcs_health before = srv->health;
    if (srv->failures < UINT32_MAX) {
        srv->failures++;
    }
    switch (before) {
    case MCS_HEALTH_UP:
    case MCS_HEALTH_WARMING:
        if (why != MCS_FAILURE_TIMEOUT && srv->failures < r->cfg->failure_limit) {
            return MCS_HEALTH_COUNT;
        }
        srv->down_since_ms = now_ms;
        srv->stats.downs++;
        host_count(r, srv, MCS_SEG_C_downs);
        break;
    case MCS_HEALTH_DOWN:
        if (!srv->probing) {
            return MCS_HEALTH_COUNT;   /* late failures of requests sent before it went down */
        }
        break;
    case MCS_HEALTH_REJOINING:
    case MCS_HEALTH_COUNT:
        break;
    }
    srv->probing = false;
    srv->retry_at_ms = now_ms + r->cfg->retry_ms;
    set_health(r, srv, MCS_HEALTH_DOWN);
    if (is_shared(r, srv)) {
        if (before == MCS_HEALTH_UP || before == MCS_HEALTH_WARMING) {
            publish_down(r, srv, why, now_ms);
        } else if (srv->leased) {
            /* its probe or rejoin failed here: the host waits retry_ms for the next one */
            if (before == MCS_HEALTH_REJOINING) {
                publish_move(r, srv, MCS_HEALTH_DOWN, why, now_ms);
            }
            mcs_seg_set_retry_at(r->seg, srv->seg_index, now_ms + r->cfg->retry_ms);
            lease_drop(r, srv);
        }
    }
    return before == MCS_HEALTH_DOWN || srv->health == before ? MCS_HEALTH_COUNT : before;
}

void
mcs_router_succeeded(struct mcs_router *r, uint32_t s)
{
    struct mcs_server *srv = &r->servers[s];
    if (srv->health == MCS_HEALTH_UP || srv->health == MCS_HEALTH_WARMING) {
        srv->failures = 0;
    }
}

bool
mcs_router_probe_due(const struct mcs_router *r, uint32_t s, uint64_t now_ms)
{
    const struct mcs_server *srv = &r->servers[s];
    return srv->health == MCS_HEALTH_DOWN && !srv->probing && now_ms >= srv->retry_at_ms;
}

bool
mcs_router_probe_start(struct mcs_router *r, uint32_t s, uint64_t now_ms)
{
    struct mcs_server *srv = &r->servers[s];
    if (is_shared(r, srv)) {
        uint64_t at = mcs_seg_retry_at(r->seg, srv->seg_index);
        if (at > now_ms || !mcs_seg_lease_take(r->seg, srv->seg_index, r->pid, now_ms, lease_ms(r))) {
            /* another process probed it lately, or probes it now: look again later */
            srv->retry_at_ms = bounded_time(at > now_ms ? at : now_ms + r->cfg->retry_ms, now_ms, r->cfg->retry_ms);
            return false;
        }
        srv->leased = true;
    }
    srv->probing = true;
    srv->stats.probes++;
    host_count(r, srv, MCS_SEG_C_probes);
    return true;
}

/* An instance as one word for the segment: pid, and start time (unix seconds, low 32 bits). */
static uint64_t
instance_word(const struct mcs_identity *id)
{
    return ((uint64_t)(uint32_t)id->pid << 32) | (uint32_t)id->started;
}

void
mcs_router_identify(struct mcs_router *r, uint32_t s, const struct mcs_identity *id)
{
    struct mcs_server *srv = &r->servers[s];
    srv->identity = *id;
    if (is_shared(r, srv) && id->known) {
        mcs_seg_set_instance(r->seg, srv->seg_index, instance_word(id));
    }
}

/* The same instance: same pid, and a start time within a couple of seconds
 * (uptime and time are whole seconds read at slightly different moments). */
static bool
same_instance(const struct mcs_identity *a, const struct mcs_identity *b)
{
    uint64_t d = a->started > b->started ? a->started - b->started : b->started - a->started;
    return a->pid == b->pid && d <= 2;
}

enum mcs_rejoin
mcs_router_probe_ok(struct mcs_router *r, uint32_t s, const struct mcs_identity *id, uint64_t now_ms)
{
    struct mcs_server *srv = &r->servers[s];
    srv->probing = false;
    if (srv->health != MCS_HEALTH_DOWN) {
        return MCS_REJOIN_NOTHING;
    }
    bool restarted = srv->identity.known && id->known && !same_instance(&srv->identity, id);
    bool shared = is_shared(r, srv);
    if (shared) {
        /* The host's memory of the instance is newer than this process's. */
        uint64_t seen = mcs_seg_instance(r->seg, srv->seg_index);
        struct mcs_identity host = { .pid = seen >> 32, .started = (uint32_t)seen, .known = seen != 0 };
        struct mcs_identity now_id = *id;
        now_id.started = (uint32_t)id->started;
        restarted = host.known ? id->known && !same_instance(&host, &now_id) : restarted;
    }
    if (id->known) {
        mcs_router_identify(r, s, id);
    }
    srv->failures = 0;
    if (restarted) {
        srv->stats.restarts++;
        host_count(r, srv, MCS_SEG_C_restarts);
        if (shared) {
            mcs_seg_log_clear(r->seg, srv->seg_index);   /* an empty server holds nothing to delete */
            mcs_seg_flags_take(r->seg, srv->seg_index, MCS_SEG_F_OVERFLOW | MCS_SEG_F_FLUSH);
        }
        mcs_router_rejoined(r, s, now_ms);
        return MCS_REJOIN_NOTHING;
    }
    srv->stats.rejoins++;
    host_count(r, srv, MCS_SEG_C_rejoins);
    bool flush = r->cfg->rejoin == MCS_REJOIN_FLUSH || srv->missed_flush || mcs_keylog_overflowed(&srv->missed);
    bool deletes = mcs_keylog_count(&srv->missed) > 0;
    if (shared) {
        flush = flush || (mcs_seg_flags(r->seg, srv->seg_index) & (MCS_SEG_F_OVERFLOW | MCS_SEG_F_FLUSH)) != 0;
        deletes = deletes || mcs_seg_log_count(r->seg, srv->seg_index) > 0;
    }
    if (flush || deletes) {
        set_health(r, srv, MCS_HEALTH_REJOINING);
        if (!publish_move(r, srv, MCS_HEALTH_REJOINING, MCS_FAILURE_COUNT, now_ms)) {
            return MCS_REJOIN_NOTHING;   /* another process rejoined it meanwhile: adopted at the next sync */
        }
        return flush ? MCS_REJOIN_FLUSH_ALL : MCS_REJOIN_DELETES;
    }
    mcs_router_rejoined(r, s, now_ms);
    return MCS_REJOIN_NOTHING;
}

void
mcs_router_rejoined(struct mcs_router *r, uint32_t s, uint64_t now_ms)
{
    struct mcs_server *srv = &r->servers[s];
    mcs_keylog_reset(&srv->missed);
    srv->missed_flush = false;
    srv->failures = 0;
    if (r->copies && r->cfg->warmup_s > 0) {
        srv->warm_until_ms = now_ms + (uint64_t)r->cfg->warmup_s * 1000;
        set_health(r, srv, MCS_HEALTH_WARMING);
    } else {
        set_health(r, srv, MCS_HEALTH_UP);
    }
    if (is_shared(r, srv) && srv->leased) {
        publish_move(r, srv, srv->health, MCS_FAILURE_COUNT, now_ms);
        lease_drop(r, srv);
    }
}

void
mcs_router_missed(struct mcs_router *r, uint32_t s, const char *key, size_t len)
{
    struct mcs_server *srv = &r->servers[s];
    if (is_shared(r, srv)) {
        if (mcs_seg_log_keys(r->seg, srv->seg_index) >= r->cfg->rejoin_log) {
            mcs_seg_flags_set(r->seg, srv->seg_index, MCS_SEG_F_OVERFLOW);   /* MCSHIM_REJOIN_LOG */
        } else if (mcs_seg_log_add(r->seg, srv->seg_index, key, len) == MCS_SEG_OK) {
            srv->stats.invalidations_logged++;
            host_count(r, srv, MCS_SEG_C_invalidations_logged);
        }
    } else if (mcs_keylog_add(&srv->missed, key, len) == 0) {
        srv->stats.invalidations_logged++;
    }
}

void
mcs_router_missed_flush(struct mcs_router *r, uint32_t s)
{
    struct mcs_server *srv = &r->servers[s];
    if (is_shared(r, srv)) {
        mcs_seg_flags_set(r->seg, srv->seg_index, MCS_SEG_F_FLUSH);
    } else {
        srv->missed_flush = true;
    }
}

/* ---- host-wide state ---- */

static void
lease_drop(struct mcs_router *r, struct mcs_server *srv)
{
    if (srv->leased && is_shared(r, srv)) {
        mcs_seg_lease_drop(r->seg, srv->seg_index, r->pid);
    }
    srv->leased = false;
}

void
mcs_router_share(struct mcs_router *r, struct mcs_seg *seg, uint32_t pid)
{
    r->seg = seg;
    r->pid = pid;
    r->seg_corrupt = false;
    for (size_t i = 0; i < r->nservers; i++) {
        struct mcs_server *srv = &r->servers[i];
        srv->seg_index = mcs_seg_server_find(seg, srv->label, strlen(srv->label), true);
        srv->seg_word = UINT64_MAX;   /* adopt whatever the host knows at the first sync */
        srv->leased = false;
        srv->published = srv->stats;
    }
}

void
mcs_router_unshare(struct mcs_router *r)
{
    for (size_t i = 0; i < r->nservers; i++) {
        struct mcs_server *srv = &r->servers[i];
        if (srv->health != MCS_HEALTH_UP && srv->health != MCS_HEALTH_WARMING) {
            srv->missed_flush = true;   /* what it missed was recorded in the segment */
        }
        srv->seg_index = MCS_SEG_NONE;
        srv->leased = false;
    }
    r->seg = NULL;
}

void
mcs_router_lease_renew(struct mcs_router *r, uint32_t s, uint64_t now_ms)
{
    struct mcs_server *srv = &r->servers[s];
    if (srv->leased && is_shared(r, srv)) {
        mcs_seg_lease_take(r->seg, srv->seg_index, r->pid, now_ms, lease_ms(r));
    }
}

bool
mcs_router_shared(const struct mcs_router *r, uint32_t s)
{
    return is_shared(r, &r->servers[s]);
}

enum mcs_health
mcs_router_sync(struct mcs_router *r, uint32_t s, uint64_t now_ms, enum mcs_failure *why)
{
    struct mcs_server *srv = &r->servers[s];
    struct mcs_seg_health h;
    *why = MCS_FAILURE_COUNT;
    if (!is_shared(r, srv) || !shared_health(r, srv, &h)) {
        return MCS_HEALTH_COUNT;
    }
    if (h.health == MCS_HEALTH_WARMING && now_ms >= mcs_seg_warm_until(r->seg, srv->seg_index)) {
        /* the warm-up window is over for the host (CAS: whoever sees it first) */
        struct mcs_seg_health from = h;
        mcs_seg_health_move(r->seg, srv->seg_index, &from, MCS_HEALTH_UP, 0, r->pid, now_ms, 0, 0);
        if (!shared_health(r, srv, &h)) {
            return MCS_HEALTH_COUNT;
        }
    }
    enum mcs_health before = srv->health;
    if (word_of(&h) == srv->seg_word) {
        /* Nothing new. A rejoin whose holder died (lease expired) is taken over:
         * down here, so the next probe (with the lease) redoes it. */
        if (before == MCS_HEALTH_REJOINING && !srv->leased
            && mcs_seg_lease_until(r->seg, srv->seg_index) <= now_ms) {
            srv->probing = false;
            srv->retry_at_ms = now_ms;
            set_health(r, srv, MCS_HEALTH_DOWN);
            return before;
        }
        return MCS_HEALTH_COUNT;
    }
    srv->seg_word = word_of(&h);
    if (srv->leased && (h.health == MCS_HEALTH_UP || h.health == MCS_HEALTH_WARMING || h.health == MCS_HEALTH_DOWN)) {
        lease_drop(r, srv);   /* another process finished or failed this server's rejoin */
    }
    switch ((enum mcs_health)h.health) {
    case MCS_HEALTH_DOWN:
        srv->probing = false;
        srv->retry_at_ms = bounded_time(mcs_seg_retry_at(r->seg, srv->seg_index), now_ms, r->cfg->retry_ms);
        if (before == MCS_HEALTH_UP || before == MCS_HEALTH_WARMING) {
            srv->down_since_ms = now_ms;
        }
        *why = (enum mcs_failure)mcs_seg_why(r->seg, srv->seg_index, MCS_FAILURE_COUNT);
        set_health(r, srv, MCS_HEALTH_DOWN);
        break;
    case MCS_HEALTH_REJOINING:
        srv->probing = false;
        set_health(r, srv, MCS_HEALTH_REJOINING);
        break;
    case MCS_HEALTH_WARMING:
        srv->failures = 0;
        srv->probing = false;
        srv->warm_until_ms = bounded_time(mcs_seg_warm_until(r->seg, srv->seg_index), now_ms,
                                          (uint64_t)r->cfg->warmup_s * 1000);
        set_health(r, srv, r->copies && r->cfg->warmup_s > 0 ? MCS_HEALTH_WARMING : MCS_HEALTH_UP);
        break;
    case MCS_HEALTH_UP:
    case MCS_HEALTH_COUNT:
        srv->failures = 0;
        srv->probing = false;
        set_health(r, srv, MCS_HEALTH_UP);
        break;
    }
    return before != srv->health ? before : MCS_HEALTH_COUNT;
}

bool
mcs_router_host_usable(struct mcs_router *r, uint32_t s)
{
    struct mcs_server *srv = &r->servers[s];
    struct mcs_seg_health h;
    if (!is_shared(r, srv)) {
        return srv->health == MCS_HEALTH_UP || srv->health == MCS_HEALTH_WARMING;
    }
    return shared_health(r, srv, &h) && usable_health(h.health);
}

void
mcs_router_publish(struct mcs_router *r)
{
    for (size_t i = 0; i < r->nservers; i++) {
        struct mcs_server *srv = &r->servers[i];
        if (!is_shared(r, srv)) {
            continue;
        }
        const struct mcs_server_stats *a = &srv->stats;
        struct mcs_server_stats *b = &srv->published;
#define MCS_PUBLISH(name) mcs_seg_count(r->seg, srv->seg_index, MCS_SEG_C_##name, a->name - b->name);
        MCS_PUBLISH(requests)
        MCS_PUBLISH(errors)
        MCS_PUBLISH(timeouts)
        MCS_PUBLISH(failovers)
        MCS_PUBLISH(fast_fails)
#undef MCS_PUBLISH
        /* downs, probes, rejoins, restarts and the log's counters were counted at once (host_count) */
        *b = *a;
    }
}

uint64_t
mcs_router_next_event(const struct mcs_router *r)
{
    uint64_t next = UINT64_MAX;
    for (size_t i = 0; i < r->nservers; i++) {
        const struct mcs_server *s = &r->servers[i];
        if (s->health == MCS_HEALTH_DOWN && !s->probing && s->retry_at_ms < next) {
            next = s->retry_at_ms;
        }
        if (s->health == MCS_HEALTH_WARMING && s->warm_until_ms < next) {
            next = s->warm_until_ms;
        }
    }
    return next;
}
