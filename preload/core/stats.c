/*
 * preload/core/stats.c: formats the counters of stats.h as memcached STAT lines.
 */
#include "preload/core/stats.h"

#include <stdio.h>
#include <string.h>

#include "preload/core/router.h"

#define MCS_VERSION "0.1.0"

static int
stat_line(struct mcs_buf *out, const char *prefix, const char *name, const char *fmt_value)
{
    char line[512];
    int n = snprintf(line, sizeof(line), "STAT %s%s %s\r\n", prefix, name, fmt_value);
    if (n < 0 || (size_t)n >= sizeof(line)) {
        return 0;
    }
    return mcs_buf_append(out, line, (size_t)n);
}

static int
stat_u64(struct mcs_buf *out, const char *prefix, const char *name, uint64_t v)
{
    char num[24];
    snprintf(num, sizeof(num), "%llu", (unsigned long long)v);
    return stat_line(out, prefix, name, num);
}

int
mcs_stats_mcshim(struct mcs_buf *out, const struct mcs_engine_stats *es, const struct mcs_router *r,
                 uint64_t now_ms, uint64_t start_ms, long pid)
{
    int rc = 0;
    rc |= stat_u64(out, "", "pid", (uint64_t)pid);
    rc |= stat_u64(out, "", "uptime_ms", now_ms - start_ms);
    rc |= stat_line(out, "", "version", "mcshim-" MCS_VERSION);
    rc |= stat_line(out, "", "hash", mcs_hash_name(r->cfg->hash));
    rc |= stat_line(out, "", "distribution", mcs_dist_name(r->cfg->dist));
    rc |= stat_u64(out, "", "servers", r->nservers);
    rc |= stat_u64(out, "", "replicas", r->cfg->replicas);
    rc |= stat_line(out, "", "write", r->cfg->write == MCS_WRITE_SYNC ? "sync" : "async");
    rc |= stat_u64(out, "", "continuum_points", r->npoints);
#define MCS_STAT_ENGINE(name, help) rc |= stat_u64(out, "", #name, es->name);
    MCS_ENGINE_STATS(MCS_STAT_ENGINE)
#undef MCS_STAT_ENGINE
    for (size_t i = 0; i < r->nservers; i++) {
        const struct mcs_server *s = &r->servers[i];
        char prefix[64];
        snprintf(prefix, sizeof(prefix), "server:%zu:", i);
        rc |= stat_line(out, prefix, "address", s->label);
        rc |= stat_line(out, prefix, "role", s->backup ? "backup" : "primary");
        rc |= stat_line(out, prefix, "state", mcs_health_name(s->health));
        rc |= stat_u64(out, prefix, "missed_keys", mcs_keylog_count(&s->missed));
        rc |= stat_u64(out, prefix, "weight", s->endpoint->weight);
        rc |= stat_u64(out, prefix, "consecutive_failures", s->failures);
#define MCS_STAT_SERVER(name, help) rc |= stat_u64(out, prefix, #name, s->stats.name);
        MCS_SERVER_STATS(MCS_STAT_SERVER)
#undef MCS_STAT_SERVER
    }
    rc |= mcs_buf_append(out, "END\r\n", 5);
    return rc ? -1 : 0;
}

int
mcs_stats_general(struct mcs_buf *out, const struct mcs_engine_stats *es, uint64_t now_ms, uint64_t start_ms,
                  uint64_t unix_time, long pid)
{
    int rc = 0;
    rc |= stat_u64(out, "", "pid", (uint64_t)pid);
    rc |= stat_u64(out, "", "uptime", (now_ms - start_ms) / 1000);
    rc |= stat_u64(out, "", "time", unix_time);
    rc |= stat_line(out, "", "version", "mcshim-" MCS_VERSION);
    rc |= stat_u64(out, "", "pointer_size", sizeof(void *) * 8);
    rc |= stat_u64(out, "", "curr_connections", es->curr_connections);
    rc |= stat_u64(out, "", "total_connections", es->total_connections);
    rc |= stat_u64(out, "", "cmd_get", es->cmd_get);
    rc |= stat_u64(out, "", "cmd_set", es->cmd_set);
    rc |= stat_u64(out, "", "cmd_flush", es->cmd_flush);
    rc |= stat_u64(out, "", "cmd_touch", es->cmd_touch);
    rc |= stat_u64(out, "", "get_hits", es->get_hits);
    rc |= stat_u64(out, "", "get_misses", es->get_misses);
    rc |= mcs_buf_append(out, "END\r\n", 5);
    return rc ? -1 : 0;
}
