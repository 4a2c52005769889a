/*
 * preload/core/config.c: MCSHIM_* strings to struct mcs_config (see config.h).
 *
 * Syntax only: host names are resolved by the caller. Every error message has
 * the form  "mcshim: <VARIABLE>=<value>: <reason>"  (value shortened if huge).
 */
#include "preload/core/alloc.h"
#include "preload/core/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    const char *def;
} vars[MCS_VAR_COUNT] = {
#define MCS_CONFIG_DEF(id, name, def, help) { name, def },
    MCS_CONFIG_VARS(MCS_CONFIG_DEF)
#undef MCS_CONFIG_DEF
};

static const char *const log_names[] = { "error", "warn", "notice", "info", "debug" };

const char *
mcs_config_var_name(enum mcs_config_var v)
{
    return vars[v].name;
}

const char *
mcs_config_var_default(enum mcs_config_var v)
{
    return vars[v].def;
}

const char *
mcs_log_level_name(enum mcs_log_level l)
{
    return (unsigned)l < sizeof(log_names) / sizeof(log_names[0]) ? log_names[l] : "?";
}

static int
fail(char *err, size_t errlen, const char *var, const char *value, const char *why)
{
    snprintf(err, errlen, "mcshim: %s='%.200s': %s; the shim stays inactive", var, value, why);
    return -1;
}

static bool
parse_number(const char *s, size_t len, uint64_t min, uint64_t max, uint64_t *out)
{
    if (len == 0 || len > 19) {
        return false;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v < min || v > max) {
        return false;
    }
    *out = v;
    return true;
}

static bool
host_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-'
           || c == '_';
}

/* Parses one entry s[0, len) ("host:port[:weight][ name]", "[v6]:port...", "unix:/path"). */
static int
parse_entry(const char *var, const char *value, const char *s, size_t len, bool allow_weight,
            struct mcs_endpoint *e, char *err, size_t errlen)
{
    while (len > 0 && (s[0] == ' ' || s[0] == '\t')) {
        s++;
        len--;
    }
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t')) {
        len--;
    }
    memset(e, 0, sizeof(*e));
    e->weight = 1;
    if (len == 0) {
        return fail(err, errlen, var, value, "empty entry");
    }
    if (len > 5 && memcmp(s, "unix:", 5) == 0) {
        size_t plen = len - 5;
        if (plen >= sizeof(((struct sockaddr_un *)0)->sun_path) || s[5] != '/') {
            return fail(err, errlen, var, value, "unix socket path must be absolute and shorter than 108 bytes");
        }
        e->is_unix = true;
        memcpy(e->host, s + 5, plen);
        e->host[plen] = '\0';
        return 0;
    }
    /* Optional " name" after the address. */
    const char *sp = memchr(s, ' ', len);
    size_t alen = sp ? (size_t)(sp - s) : len;
    if (sp != NULL) {
        const char *n = sp;
        size_t nlen = len - alen;
        while (nlen > 0 && *n == ' ') {
            n++;
            nlen--;
        }
        if (!allow_weight || nlen == 0 || nlen > MCS_NAME_MAX) {
            return fail(err, errlen, var, value, "unexpected text after an address");
        }
        memcpy(e->name, n, nlen);
        e->name[nlen] = '\0';
    }
    const char *host = s, *rest;
    size_t hlen;
    if (s[0] == '[') {
        const char *close = memchr(s, ']', alen);
        if (close == NULL) {
            return fail(err, errlen, var, value, "missing ']' after an IPv6 address");
        }
        host = s + 1;
        hlen = (size_t)(close - host);
        rest = close + 1;
        for (size_t i = 0; i < hlen; i++) {
            char c = host[i];
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == ':' || c == '.'
                  || c == '%' || host_char_ok(c))) {
                return fail(err, errlen, var, value, "bad character in an IPv6 address");
            }
        }
    } else {
        const char *colon = memchr(s, ':', alen);
        hlen = colon ? (size_t)(colon - s) : alen;
        rest = s + hlen;
        for (size_t i = 0; i < hlen; i++) {
            if (!host_char_ok(s[i])) {
                return fail(err, errlen, var, value, "bad character in a host name (IPv6 needs [brackets])");
            }
        }
    }
    if (hlen == 0 || hlen > MCS_HOST_MAX) {
        return fail(err, errlen, var, value, "missing or too long host");
    }
    memcpy(e->host, host, hlen);
    e->host[hlen] = '\0';
    size_t rlen = alen - (size_t)(rest - s);
    if (rlen < 2 || rest[0] != ':') {
        return fail(err, errlen, var, value, "expected host:port");
    }
    rest++;
    rlen--;
    const char *wcolon = memchr(rest, ':', rlen);
    size_t plen = wcolon ? (size_t)(wcolon - rest) : rlen;
    uint64_t port, weight;
    if (!parse_number(rest, plen, 1, 65535, &port)) {
        return fail(err, errlen, var, value, "port must be 1-65535");
    }
    e->port = (uint16_t)port;
    if (wcolon != NULL) {
        if (!allow_weight) {
            return fail(err, errlen, var, value, "a weight is not allowed here");
        }
        if (!parse_number(wcolon + 1, rlen - plen - 1, 1, 1000000, &weight)) {
            return fail(err, errlen, var, value, "weight must be 1-1000000");
        }
        e->weight = (uint32_t)weight;
    }
    return 0;
}

int
mcs_config_parse_list(const char *var, const char *value, bool allow_weight, struct mcs_endpoint *out,
                      size_t cap, char *err, size_t errlen)
{
    size_t n = 0;
    const char *p = value;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (n == cap) {
            return fail(err, errlen, var, value, "too many entries");
        }
        if (parse_entry(var, value, p, len, allow_weight, &out[n], err, errlen) != 0) {
            return -1;
        }
        n++;
        if (comma == NULL) {
            break;
        }
        p = comma + 1;
    }
    return (int)n;
}

static int
parse_u32_var(const char *name, const char *value, uint64_t min, uint64_t max, uint32_t *out, char *err,
              size_t errlen)
{
    uint64_t v;
    if (!parse_number(value, strlen(value), min, max, &v)) {
        char why[96];
        snprintf(why, sizeof(why), "expected a whole number from %llu to %llu", (unsigned long long)min,
                 (unsigned long long)max);
        return fail(err, errlen, name, value, why);
    }
    *out = (uint32_t)v;
    return 0;
}

static const char *const write_names[] = { "async", "sync", NULL };
static const char *const rejoin_names[] = { "replay", "flush", NULL };
static const char *const bool_names[] = { "0", "1", NULL };
static const char *const fast_names[] = { "off", "auto", NULL };

/* One of a fixed list of words (NULL-terminated); the error lists them. */
static int
parse_choice(enum mcs_config_var v, const char *value, const char *const *names, unsigned *out, char *err,
             size_t errlen)
{
    char why[96] = "expected";
    for (unsigned i = 0; names[i] != NULL; i++) {
        if (strcmp(value, names[i]) == 0) {
            *out = i;
            return 0;
        }
        size_t used = strlen(why);
        snprintf(why + used, sizeof(why) - used, "%s %s", i == 0 ? "" : (names[i + 1] ? "," : " or"), names[i]);
    }
    return fail(err, errlen, vars[v].name, value, why);
}

static const char *
value_of(enum mcs_config_var v, mcs_config_lookup get, void *ctx)
{
    const char *s = get(vars[v].name, ctx);
    return s != NULL ? s : vars[v].def;
}

enum mcs_config_result
mcs_config_parse(struct mcs_config *c, mcs_config_lookup get, void *ctx, char *err, size_t errlen)
{
    memset(c, 0, sizeof(*c));
    err[0] = '\0';
    const char *servers = get(vars[MCS_VAR_SERVERS].name, ctx);
    if (servers == NULL) {
        return MCS_CONFIG_INERT;
    }
    c->servers = mcs_calloc(MCS_MAX_SERVERS, sizeof(*c->servers));
    if (c->servers == NULL) {
        snprintf(err, errlen, "mcshim: out of memory reading the configuration; the shim stays inactive");
        return MCS_CONFIG_ERROR;
    }
    int n = mcs_config_parse_list(vars[MCS_VAR_SERVERS].name, servers, true, c->servers, MCS_MAX_SERVERS, err,
                                  errlen);
    if (n < 0) {
        goto error;
    }
    c->nservers = c->nprimaries = (size_t)n;
    const char *backup = value_of(MCS_VAR_BACKUP, get, ctx);
    if (backup[0] != '\0') {
        n = mcs_config_parse_list(vars[MCS_VAR_BACKUP].name, backup, true, c->servers + c->nservers,
                                  MCS_MAX_SERVERS - c->nservers, err, errlen);
        if (n < 0) {
            goto error;
        }
        c->nbackups = (size_t)n;
        c->nservers += c->nbackups;
    }
    struct mcs_endpoint *fit = mcs_realloc(c->servers, c->nservers * sizeof(*c->servers));
    if (fit != NULL) {
        c->servers = fit;
    }
    const char *intercept = value_of(MCS_VAR_INTERCEPT, get, ctx);
    n = mcs_config_parse_list(vars[MCS_VAR_INTERCEPT].name, intercept, false, c->intercept, MCS_MAX_INTERCEPT,
                              err, errlen);
    if (n < 0) {
        goto error;
    }
    c->nintercept = (size_t)n;
    unsigned choice;

    const char *s = value_of(MCS_VAR_HASH, get, ctx);
    if (mcs_hash_from_name(s, strlen(s), &c->hash) != 0) {
        fail(err, errlen, vars[MCS_VAR_HASH].name, s,
             "unknown hash (md5, fnv1a_64, fnv1_64, fnv1a_32, fnv1_32, crc32, crc32a, crc16, murmur, jenkins, "
             "hsieh, one_at_a_time)");
        goto error;
    }
    s = value_of(MCS_VAR_DISTRIBUTION, get, ctx);
    if (mcs_dist_from_name(s, strlen(s), &c->dist) != 0) {
        fail(err, errlen, vars[MCS_VAR_DISTRIBUTION].name, s, "unknown distribution (ketama, modula)");
        goto error;
    }
    if (parse_u32_var(vars[MCS_VAR_TIMEOUT_MS].name, value_of(MCS_VAR_TIMEOUT_MS, get, ctx), MCS_TIMEOUT_MIN_MS, 3600000,
                      &c->timeout_ms, err, errlen) != 0
        || parse_u32_var(vars[MCS_VAR_RETRY_MS].name, value_of(MCS_VAR_RETRY_MS, get, ctx), 1, 86400000,
                         &c->retry_ms, err, errlen) != 0
        || parse_u32_var(vars[MCS_VAR_FAILURE_LIMIT].name, value_of(MCS_VAR_FAILURE_LIMIT, get, ctx), 1, 1000,
                         &c->failure_limit, err, errlen) != 0
        || parse_u32_var(vars[MCS_VAR_CONNECTIONS].name, value_of(MCS_VAR_CONNECTIONS, get, ctx), 1, 64,
                         &c->connections, err, errlen) != 0
        || parse_u32_var(vars[MCS_VAR_ITEM_MAX].name, value_of(MCS_VAR_ITEM_MAX, get, ctx), 1024,
                         128u * 1024 * 1024, &c->item_max, err, errlen) != 0
        || parse_u32_var(vars[MCS_VAR_SPIN_US].name, value_of(MCS_VAR_SPIN_US, get, ctx), 0, 1000,
                         &c->spin_us, err, errlen) != 0
        || parse_u32_var(vars[MCS_VAR_FAST_CONNECTIONS].name, value_of(MCS_VAR_FAST_CONNECTIONS, get, ctx), 0, 256,
                         &c->fast_connections, err, errlen) != 0
        || parse_u32_var(vars[MCS_VAR_MEMORY_MB].name, value_of(MCS_VAR_MEMORY_MB, get, ctx), 4, 65536,
                         &c->memory_mb, err, errlen) != 0
        || parse_u32_var(vars[MCS_VAR_REPLICAS].name, value_of(MCS_VAR_REPLICAS, get, ctx), 1,
                         c->nprimaries < MCS_MAX_REPLICAS ? c->nprimaries : MCS_MAX_REPLICAS, &c->replicas, err,
                         errlen) != 0
        || parse_u32_var(vars[MCS_VAR_WARMUP_S].name, value_of(MCS_VAR_WARMUP_S, get, ctx), 0, 86400,
                         &c->warmup_s, err, errlen) != 0
        || parse_u32_var(vars[MCS_VAR_REJOIN_LOG].name, value_of(MCS_VAR_REJOIN_LOG, get, ctx), 1, 10000000,
                         &c->rejoin_log, err, errlen) != 0
        || parse_choice(MCS_VAR_WRITE, value_of(MCS_VAR_WRITE, get, ctx), write_names, &choice, err, errlen) != 0) {
        goto error;
    }
    c->write = (enum mcs_write_mode)choice;
    if (parse_choice(MCS_VAR_REJOIN, value_of(MCS_VAR_REJOIN, get, ctx), rejoin_names, &choice, err, errlen) != 0) {
        goto error;
    }
    c->rejoin = (enum mcs_rejoin_mode)choice;
    if (parse_choice(MCS_VAR_EJECT, value_of(MCS_VAR_EJECT, get, ctx), bool_names, &choice, err, errlen) != 0) {
        goto error;
    }
    c->eject = choice == 1;
    if (parse_choice(MCS_VAR_FAST_PATH, value_of(MCS_VAR_FAST_PATH, get, ctx), fast_names, &choice, err, errlen) != 0) {
        goto error;
    }
    c->fast_path = choice == 1 && c->fast_connections > 0;
    s = value_of(MCS_VAR_SHARED, get, ctx);
    if (strlen(s) >= sizeof(c->shared) || (s[0] != '\0' && s[0] != '/' && strcmp(s, "off") != 0)) {
        fail(err, errlen, vars[MCS_VAR_SHARED].name, s, "expected an absolute file path, or off");
        goto error;
    }
    memcpy(c->shared, s, strlen(s) + 1);
    s = value_of(MCS_VAR_SHARED_MODE, get, ctx);
    if (strcmp(s, "0600") == 0 || strcmp(s, "600") == 0) {
        c->shared_mode = 0600;
    } else if (strcmp(s, "0660") == 0 || strcmp(s, "660") == 0) {
        c->shared_mode = 0660;
    } else {
        fail(err, errlen, vars[MCS_VAR_SHARED_MODE].name, s, "expected 0600 or 0660");
        goto error;
    }
    s = value_of(MCS_VAR_LOG_LEVEL, get, ctx);
    size_t i;
    for (i = 0; i < sizeof(log_names) / sizeof(log_names[0]); i++) {
        if (strcmp(s, log_names[i]) == 0) {
            c->log_level = (enum mcs_log_level)i;
            break;
        }
    }
    if (i == sizeof(log_names) / sizeof(log_names[0])) {
        fail(err, errlen, vars[MCS_VAR_LOG_LEVEL].name, s, "expected error, warn, notice, info or debug");
        goto error;
    }
    return MCS_CONFIG_OK;

error:
    mcs_config_free(c);
    return MCS_CONFIG_ERROR;
}

void
mcs_config_free(struct mcs_config *c)
{
    mcs_free(c->servers);
    c->servers = NULL;
    c->nservers = 0;
}
