/*
 * tests/unit/test_config.c: MCSHIM_* strings to struct mcs_config.
 *
 * The variables come from a table through the lookup callback (no environment).
 * Checked: the inert and error results, every default, every variable valid and
 * invalid (the error line names the variable and the value), the server list
 * forms, and that only listed variables are ever looked up.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "preload/core/config.h"
#include "tests/unit/unit.h"

/* A fake environment: NULL-terminated name/value pairs, and what was asked. */
struct fake_env {
    const char *const *pairs;
    const char *asked[64];
    size_t nasked;
};

static const char *
fake_lookup(const char *name, void *ctx)
{
    struct fake_env *env = ctx;
    if (env->nasked < NELEM(env->asked)) {
        env->asked[env->nasked++] = name;
    }
    for (size_t i = 0; env->pairs[i] != NULL; i += 2) {
        if (strcmp(env->pairs[i], name) == 0) {
            return env->pairs[i + 1];
        }
    }
    return NULL;
}

static enum mcs_config_result
parse_env(struct mcs_config *c, char *err, size_t errlen, const char *const *pairs)
{
    struct fake_env env = { .pairs = pairs };
    return mcs_config_parse(c, fake_lookup, &env, err, errlen);
}

/* Parses with one variable set (besides a valid server list) and expects an
 * error line that names the variable and quotes the value. */
static void
expect_var_error(const char *var, const char *value)
{
    const char *pairs[] = { "MCSHIM_SERVERS", "127.0.0.1:11211", var, value, NULL };
    if (strcmp(var, "MCSHIM_SERVERS") == 0) {
        pairs[0] = "MCSHIM_UNUSED";
    }
    struct mcs_config c;
    char err[512];
    enum mcs_config_result res = parse_env(&c, err, sizeof(err), pairs);
    if (res != MCS_CONFIG_ERROR) {
        fail_msg("%s='%s' accepted", var, value);
    }
    char want[300];
    snprintf(want, sizeof(want), "mcshim: %s='%.200s': ", var, value);
    if (strncmp(err, want, strlen(want)) != 0) {
        fail_msg("%s='%s': error line '%s'", var, value, err);
    }
    assert_null(strchr(err, '\n'));
    assert_null(c.servers);
    assert_int_equal(c.nservers, 0);
}

/* Parses with one variable set and expects success; the config is left in *c. */
static void
expect_var_ok(struct mcs_config *c, const char *var, const char *value)
{
    const char *pairs[] = { "MCSHIM_SERVERS", "127.0.0.1:11211", var, value, NULL };
    char err[512];
    enum mcs_config_result res = parse_env(c, err, sizeof(err), pairs);
    if (res != MCS_CONFIG_OK) {
        fail_msg("%s='%s' refused: %s", var, value, err);
    }
}

static void
test_inert_when_servers_unset(void **state)
{
    (void)state;
    struct mcs_config c;
    char err[256] = "x";
    const char *none[] = { NULL };
    assert_int_equal(parse_env(&c, err, sizeof(err), none), MCS_CONFIG_INERT);
    assert_string_equal(err, "");
    assert_null(c.servers);
    /* other variables, even invalid ones, do not matter then */
    const char *others[] = { "MCSHIM_HASH", "sha1", "MCSHIM_TIMEOUT_MS", "0", NULL };
    assert_int_equal(parse_env(&c, err, sizeof(err), others), MCS_CONFIG_INERT);
    mcs_config_free(&c);
}

static void
test_servers_empty_is_error(void **state)
{
    (void)state;
    expect_var_error("MCSHIM_SERVERS", "");
    expect_var_error("MCSHIM_SERVERS", " ");
    expect_var_error("MCSHIM_SERVERS", ",");
}

static void
test_defaults(void **state)
{
    (void)state;
    struct mcs_config c;
    char err[256];
    const char *pairs[] = { "MCSHIM_SERVERS", "127.0.0.1:11211", NULL };
    assert_int_equal(parse_env(&c, err, sizeof(err), pairs), MCS_CONFIG_OK);
    assert_string_equal(err, "");
    assert_int_equal(c.nservers, 1);
    assert_string_equal(c.servers[0].host, "127.0.0.1");
    assert_int_equal(c.servers[0].port, 11211);
    assert_int_equal(c.servers[0].weight, 1);
    assert_string_equal(c.servers[0].name, "");
    assert_false(c.servers[0].is_unix);
    assert_int_equal(c.servers[0].naddrs, 0);
    assert_int_equal(c.nintercept, 1);
    assert_string_equal(c.intercept[0].host, "127.0.0.1");
    assert_int_equal(c.intercept[0].port, 11211);
    assert_int_equal(c.hash, MCS_HASH_MD5);
    assert_int_equal(c.dist, MCS_DIST_KETAMA);
    assert_int_equal(c.timeout_ms, 1000);
    assert_int_equal(c.retry_ms, 2000);
    assert_int_equal(c.failure_limit, 2);
    assert_int_equal(c.connections, 2);
    assert_int_equal(c.item_max, 1048576);
    assert_int_equal(c.spin_us, 50);
    assert_int_equal(c.log_level, MCS_LOG_NOTICE);
    mcs_config_free(&c);
    assert_null(c.servers);
    mcs_config_free(&c);   /* twice is harmless */
}

/* The names and defaults are the documented ones (docs/configuration.md). */
static void
test_var_table(void **state)
{
    (void)state;
    static const struct {
        enum mcs_config_var v;
        const char *name;
        const char *def;
    } want[] = {
        { MCS_VAR_SERVERS, "MCSHIM_SERVERS", NULL },
        { MCS_VAR_INTERCEPT, "MCSHIM_INTERCEPT", "127.0.0.1:11211" },
        { MCS_VAR_HASH, "MCSHIM_HASH", "md5" },
        { MCS_VAR_DISTRIBUTION, "MCSHIM_DISTRIBUTION", "ketama" },
        { MCS_VAR_TIMEOUT_MS, "MCSHIM_TIMEOUT_MS", "1000" },
        { MCS_VAR_RETRY_MS, "MCSHIM_RETRY_MS", "2000" },
        { MCS_VAR_FAILURE_LIMIT, "MCSHIM_FAILURE_LIMIT", "2" },
        { MCS_VAR_CONNECTIONS, "MCSHIM_CONNECTIONS", "2" },
        { MCS_VAR_ITEM_MAX, "MCSHIM_ITEM_MAX", "1048576" },
        { MCS_VAR_SPIN_US, "MCSHIM_SPIN_US", "50" },
        { MCS_VAR_FAST_PATH, "MCSHIM_FAST_PATH", "auto" },
        { MCS_VAR_FAST_CONNECTIONS, "MCSHIM_FAST_CONNECTIONS", "8" },
        { MCS_VAR_MEMORY_MB, "MCSHIM_MEMORY_MB", "64" },
        { MCS_VAR_BACKUP, "MCSHIM_BACKUP", "" },
        { MCS_VAR_REPLICAS, "MCSHIM_REPLICAS", "1" },
        { MCS_VAR_WRITE, "MCSHIM_WRITE", "async" },
        { MCS_VAR_WARMUP_S, "MCSHIM_WARMUP_S", "300" },
        { MCS_VAR_EJECT, "MCSHIM_EJECT", "0" },
        { MCS_VAR_REJOIN, "MCSHIM_REJOIN", "replay" },
        { MCS_VAR_REJOIN_LOG, "MCSHIM_REJOIN_LOG", "10000" },
        { MCS_VAR_SHARED, "MCSHIM_SHARED", "" },
        { MCS_VAR_SHARED_MODE, "MCSHIM_SHARED_MODE", "0600" },
        { MCS_VAR_LOG_LEVEL, "MCSHIM_LOG_LEVEL", "notice" },
    };
    assert_int_equal(NELEM(want), MCS_VAR_COUNT);
    for (size_t i = 0; i < NELEM(want); i++) {
        assert_string_equal(mcs_config_var_name(want[i].v), want[i].name);
        if (want[i].def == NULL) {
            assert_null(mcs_config_var_default(want[i].v));
        } else {
            assert_string_equal(mcs_config_var_default(want[i].v), want[i].def);
        }
    }
    static const char *const levels[] = { "error", "warn", "notice", "info", "debug" };
    for (int l = MCS_LOG_ERROR; l <= MCS_LOG_DEBUG; l++) {
        assert_string_equal(mcs_log_level_name((enum mcs_log_level)l), levels[l]);
    }
    assert_string_equal(mcs_log_level_name((enum mcs_log_level)99), "?");
}

/* Every variable is looked up (once the shim is active), and nothing else. */
static void
test_lookup_only_listed_names(void **state)
{
    (void)state;
    const char *pairs[] = { "MCSHIM_SERVERS", "127.0.0.1:11211", NULL };
    struct fake_env env = { .pairs = pairs };
    struct mcs_config c;
    char err[256];
    assert_int_equal(mcs_config_parse(&c, fake_lookup, &env, err, sizeof(err)), MCS_CONFIG_OK);
    bool seen[MCS_VAR_COUNT] = { false };
    for (size_t i = 0; i < env.nasked; i++) {
        bool listed = false;
        for (unsigned v = 0; v < MCS_VAR_COUNT; v++) {
            if (strcmp(env.asked[i], mcs_config_var_name((enum mcs_config_var)v)) == 0) {
                seen[v] = listed = true;
            }
        }
        if (!listed) {
            fail_msg("looked up %s, which MCS_CONFIG_VARS does not list", env.asked[i]);
        }
    }
    for (unsigned v = 0; v < MCS_VAR_COUNT; v++) {
        if (!seen[v]) {
            fail_msg("%s never looked up", mcs_config_var_name((enum mcs_config_var)v));
        }
    }
    mcs_config_free(&c);
}

/* Numeric variables: bounds and junk. */
static void
test_numbers(void **state)
{
    (void)state;
    static const struct {
        const char *var;
        uint32_t min, max;
        size_t field;
    } nums[] = {
        { "MCSHIM_TIMEOUT_MS", MCS_TIMEOUT_MIN_MS, 3600000, offsetof(struct mcs_config, timeout_ms) },
        { "MCSHIM_RETRY_MS", 1, 86400000, offsetof(struct mcs_config, retry_ms) },
        { "MCSHIM_FAILURE_LIMIT", 1, 1000, offsetof(struct mcs_config, failure_limit) },
        { "MCSHIM_CONNECTIONS", 1, 64, offsetof(struct mcs_config, connections) },
        { "MCSHIM_ITEM_MAX", 1024, 134217728, offsetof(struct mcs_config, item_max) },
        { "MCSHIM_SPIN_US", 0, 1000, offsetof(struct mcs_config, spin_us) },
        { "MCSHIM_MEMORY_MB", 4, 65536, offsetof(struct mcs_config, memory_mb) },
        { "MCSHIM_WARMUP_S", 0, 86400, offsetof(struct mcs_config, warmup_s) },
        { "MCSHIM_REJOIN_LOG", 1, 10000000, offsetof(struct mcs_config, rejoin_log) },
    };
    static const char *const junk[] = { "", "abc", "-1", "1.5", " 5", "5 ", "5ms", "0x10", "+5",
                                        "99999999999999999999", "18446744073709551616" };
    for (size_t i = 0; i < NELEM(nums); i++) {
        uint32_t good[] = { nums[i].min, nums[i].max, (nums[i].min + nums[i].max) / 2 };
        for (size_t g = 0; g < NELEM(good); g++) {
            char v[32];
            snprintf(v, sizeof(v), "%u", good[g]);
            struct mcs_config c;
            expect_var_ok(&c, nums[i].var, v);
            uint32_t got;
            memcpy(&got, (const char *)&c + nums[i].field, sizeof(got));
            assert_int_equal(got, good[g]);
            mcs_config_free(&c);
        }
        char v[32];
        if (nums[i].min > 0) {
            snprintf(v, sizeof(v), "%u", nums[i].min - 1);
            expect_var_error(nums[i].var, v);
        }
        snprintf(v, sizeof(v), "%llu", (unsigned long long)nums[i].max + 1);
        expect_var_error(nums[i].var, v);
        for (size_t j = 0; j < NELEM(junk); j++) {
            expect_var_error(nums[i].var, junk[j]);
        }
    }
    /* leading zeros are still the number */
    struct mcs_config c;
    expect_var_ok(&c, "MCSHIM_TIMEOUT_MS", "0050");
    assert_int_equal(c.timeout_ms, 50);
    mcs_config_free(&c);
}

/* Availability: backup pool after the primaries, replicas bounded by the pool, word choices. */
static void
test_availability(void **state)
{
    (void)state;
    struct mcs_config c;
    char err[512];
    const char *pairs[] = { "MCSHIM_SERVERS", "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3", "MCSHIM_BACKUP",
                            "127.0.0.1:4:2,127.0.0.1:5", "MCSHIM_REPLICAS", "3", "MCSHIM_WRITE", "sync",
                            "MCSHIM_EJECT", "1", "MCSHIM_REJOIN", "flush", NULL };
    assert_int_equal(parse_env(&c, err, sizeof(err), pairs), MCS_CONFIG_OK);
    assert_int_equal(c.nprimaries, 3);
    assert_int_equal(c.nbackups, 2);
    assert_int_equal(c.nservers, 5);
    assert_int_equal(c.servers[3].port, 4);
    assert_int_equal(c.servers[3].weight, 2);
    assert_int_equal(c.servers[4].port, 5);
    assert_int_equal(c.replicas, 3);
    assert_int_equal(c.write, MCS_WRITE_SYNC);
    assert_true(c.eject);
    assert_int_equal(c.rejoin, MCS_REJOIN_FLUSH);
    mcs_config_free(&c);

    expect_var_ok(&c, "MCSHIM_BACKUP", "");
    assert_int_equal(c.nbackups, 0);
    assert_int_equal(c.nservers, 1);
    assert_int_equal(c.replicas, 1);
    assert_int_equal(c.write, MCS_WRITE_ASYNC);
    assert_false(c.eject);
    assert_int_equal(c.rejoin, MCS_REJOIN_REPLAY);
    mcs_config_free(&c);

    /* more replicas than primaries */
    const char *too_many[] = { "MCSHIM_SERVERS", "127.0.0.1:1,127.0.0.1:2", "MCSHIM_REPLICAS", "3", NULL };
    assert_int_equal(parse_env(&c, err, sizeof(err), too_many), MCS_CONFIG_ERROR);
    assert_non_null(strstr(err, "MCSHIM_REPLICAS='3'"));
    static const char *const bad[][2] = {
        { "MCSHIM_REPLICAS", "0" }, { "MCSHIM_REPLICAS", "2" }, { "MCSHIM_WRITE", "SYNC" },
        { "MCSHIM_WRITE", "" }, { "MCSHIM_EJECT", "yes" }, { "MCSHIM_EJECT", "2" },
        { "MCSHIM_REJOIN", "none" }, { "MCSHIM_BACKUP", "127.0.0.1" }, { "MCSHIM_BACKUP", "127.0.0.1:1," },
    };
    for (size_t i = 0; i < NELEM(bad); i++) {
        expect_var_error(bad[i][0], bad[i][1]);
    }
    /* the error lists the choices */
    const char *w[] = { "MCSHIM_SERVERS", "127.0.0.1:1", "MCSHIM_WRITE", "fast", NULL };
    assert_int_equal(parse_env(&c, err, sizeof(err), w), MCS_CONFIG_ERROR);
    assert_non_null(strstr(err, "expected async or sync"));
}

static void
test_fast_path(void **state)
{
    (void)state;
    struct mcs_config c;
    expect_var_ok(&c, "MCSHIM_FAST_PATH", "auto");
    assert_true(c.fast_path);
    assert_int_equal(c.fast_connections, 8);
    mcs_config_free(&c);
    expect_var_ok(&c, "MCSHIM_FAST_PATH", "off");
    assert_false(c.fast_path);
    mcs_config_free(&c);
    /* no connections allowed: the fast path is off */
    expect_var_ok(&c, "MCSHIM_FAST_CONNECTIONS", "0");
    assert_false(c.fast_path);
    mcs_config_free(&c);
    expect_var_ok(&c, "MCSHIM_FAST_CONNECTIONS", "256");
    assert_int_equal(c.fast_connections, 256);
    mcs_config_free(&c);
    static const char *const bad[][2] = {
        { "MCSHIM_FAST_PATH", "on" }, { "MCSHIM_FAST_PATH", "" }, { "MCSHIM_FAST_PATH", "AUTO" },
        { "MCSHIM_FAST_CONNECTIONS", "257" }, { "MCSHIM_FAST_CONNECTIONS", "-1" }, { "MCSHIM_FAST_CONNECTIONS", "x" },
    };
    for (size_t i = 0; i < NELEM(bad); i++) {
        expect_var_error(bad[i][0], bad[i][1]);
    }
}

static void
test_hash_names(void **state)
{
    (void)state;
    for (unsigned k = 0; k < MCS_HASH_COUNT; k++) {
        struct mcs_config c;
        expect_var_ok(&c, "MCSHIM_HASH", mcs_hash_name((enum mcs_hash_kind)k));
        assert_int_equal(c.hash, k);
        mcs_config_free(&c);
    }
    static const char *const bad[] = { "", "MD5", "md5 ", "sha1", "fnv", "ketama" };
    for (size_t i = 0; i < NELEM(bad); i++) {
        expect_var_error("MCSHIM_HASH", bad[i]);
    }
    /* the documented list */
    static const char *const documented[] = { "md5", "one_at_a_time", "crc16", "crc32", "crc32a", "fnv1_64",
                                              "fnv1a_64", "fnv1_32", "fnv1a_32", "hsieh", "murmur", "jenkins" };
    assert_int_equal(NELEM(documented), MCS_HASH_COUNT);
    for (size_t i = 0; i < NELEM(documented); i++) {
        struct mcs_config c;
        expect_var_ok(&c, "MCSHIM_HASH", documented[i]);
        assert_string_equal(mcs_hash_name(c.hash), documented[i]);
        mcs_config_free(&c);
    }
}

static void
test_distribution(void **state)
{
    (void)state;
    struct mcs_config c;
    expect_var_ok(&c, "MCSHIM_DISTRIBUTION", "ketama");
    assert_int_equal(c.dist, MCS_DIST_KETAMA);
    mcs_config_free(&c);
    expect_var_ok(&c, "MCSHIM_DISTRIBUTION", "modula");
    assert_int_equal(c.dist, MCS_DIST_MODULA);
    mcs_config_free(&c);
    expect_var_error("MCSHIM_DISTRIBUTION", "random");
    expect_var_error("MCSHIM_DISTRIBUTION", "Ketama");
    expect_var_error("MCSHIM_DISTRIBUTION", "");
}

static void
test_log_level(void **state)
{
    (void)state;
    static const char *const names[] = { "error", "warn", "notice", "info", "debug" };
    for (size_t i = 0; i < NELEM(names); i++) {
        struct mcs_config c;
        expect_var_ok(&c, "MCSHIM_LOG_LEVEL", names[i]);
        assert_int_equal(c.log_level, i);
        mcs_config_free(&c);
    }
    expect_var_error("MCSHIM_LOG_LEVEL", "NOTICE");
    expect_var_error("MCSHIM_LOG_LEVEL", "warning");
    expect_var_error("MCSHIM_LOG_LEVEL", "3");
    expect_var_error("MCSHIM_LOG_LEVEL", "");
}

/* Server list forms ------------------------------------------------------- */

/* The fields one parsed server entry must have. */
struct server_want {
    const char *host;
    uint16_t port;
    uint32_t weight;
    const char *name;
    bool is_unix;
};

static void
expect_list(const char *value, const struct server_want *want, size_t n)
{
    struct mcs_endpoint out[8];
    char err[512] = "";
    int got = mcs_config_parse_list("MCSHIM_SERVERS", value, true, out, NELEM(out), err, sizeof(err));
    if (got != (int)n) {
        fail_msg("'%s': %d entries, expected %zu (%s)", value, got, n, err);
    }
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(out[i].host, want[i].host);
        assert_int_equal(out[i].port, want[i].port);
        assert_int_equal(out[i].weight, want[i].weight);
        assert_string_equal(out[i].name, want[i].name);
        assert_int_equal(out[i].is_unix, want[i].is_unix);
        assert_int_equal(out[i].naddrs, 0);
    }
}

static void
test_server_forms(void **state)
{
    (void)state;
    const struct server_want a[] = { { "10.0.0.1", 11211, 1, "", false } };
    expect_list("10.0.0.1:11211", a, 1);
    const struct server_want b[] = { { "10.0.0.1", 11212, 3, "", false } };
    expect_list("10.0.0.1:11212:3", b, 1);
    const struct server_want c[] = { { "10.0.0.1", 11211, 1, "cache-a", false } };
    expect_list("10.0.0.1:11211:1 cache-a", c, 1);
    const struct server_want c2[] = { { "10.0.0.1", 11211, 1, "cache-a", false } };
    expect_list("10.0.0.1:11211 cache-a", c2, 1);
    const struct server_want d[] = { { "::1", 11211, 1, "", false } };
    expect_list("[::1]:11211", d, 1);
    const struct server_want e[] = { { "fe80::1%eth0", 11211, 2, "v6", false } };
    expect_list("[fe80::1%eth0]:11211:2 v6", e, 1);
    const struct server_want f[] = { { "/run/memcached/a.sock", 0, 1, "", true } };
    expect_list("unix:/run/memcached/a.sock", f, 1);
    const struct server_want g[] = { { "my-host_1.example.com", 65535, 1000000, "", false } };
    expect_list("my-host_1.example.com:65535:1000000", g, 1);
    const struct server_want h[] = {
        { "a", 1, 1, "", false }, { "b", 2, 1, "", false }, { "c", 3, 4, "name-c", false }, { "::1", 5, 1, "", false },
        { "/tmp/m.sock", 0, 1, "", true },
    };
    expect_list("a:1,b:2,c:3:4 name-c,[::1]:5,unix:/tmp/m.sock", h, 5);
    expect_list(" a:1 ,\tb:2\t, c:3:4   name-c ,[::1]:5, unix:/tmp/m.sock ", h, 5);
    const struct server_want z[] = { { "h", 11211, 1, "", false } };
    expect_list("h:011211", z, 1);

    /* limits: 255-byte host and name, 107-byte unix path */
    char big[600];
    memset(big, 'h', 255);
    snprintf(big + 255, sizeof(big) - 255, ":1:1 ");
    memset(big + 260, 'n', 255);
    big[515] = '\0';
    struct mcs_endpoint out[1];
    char err[512];
    assert_int_equal(mcs_config_parse_list("MCSHIM_SERVERS", big, true, out, 1, err, sizeof(err)), 1);
    assert_int_equal(strlen(out[0].host), 255);
    assert_int_equal(strlen(out[0].name), 255);
    char path[200] = "unix:/";
    memset(path + 6, 'p', 106);
    path[112] = '\0';
    assert_int_equal(mcs_config_parse_list("MCSHIM_SERVERS", path, true, out, 1, err, sizeof(err)), 1);
    assert_int_equal(strlen(out[0].host), 107);
}

/* One bad list; the error names the variable and quotes the whole value. */
static void
expect_list_error(const char *var, bool allow_weight, const char *value, size_t cap)
{
    struct mcs_endpoint *out = calloc(cap, sizeof(*out));
    assert_non_null(out);
    char err[512] = "";
    int got = mcs_config_parse_list(var, value, allow_weight, out, cap, err, sizeof(err));
    free(out);
    if (got != -1) {
        fail_msg("%s='%s' accepted (%d entries)", var, value, got);
    }
    char want[300];
    snprintf(want, sizeof(want), "mcshim: %s='%.200s': ", var, value);
    if (strncmp(err, want, strlen(want)) != 0) {
        fail_msg("%s='%s': error line '%s'", var, value, err);
    }
}

static void
test_server_errors(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",                  /* empty */
        "a:1,",              /* empty entry */
        ",a:1",
        "a:1,,b:2",
        "a:1, ,b:2",
        "a:0",               /* port */
        "a:65536",
        "a:abc",
        "a:-1",
        "a:",
        "a",
        ":11211",            /* host */
        "a:1:0",             /* weight */
        "a:1:1000001",
        "a:1:x",
        "a:1:",
        "a:1:2:3",
        "ho$t:1",            /* host name characters */
        "a/b:1",
        "a b:1",
        "::1:11211",         /* IPv6 without brackets */
        "[::1:11211",
        "[::1]",
        "[::1]11211",
        "[]:11211",
        "[::1]:0",
        "unix:relative/path",
        "unix:",
    };
    for (size_t i = 0; i < NELEM(bad); i++) {
        expect_list_error("MCSHIM_SERVERS", true, bad[i], 8);
    }
    /* through mcs_config_parse too */
    expect_var_error("MCSHIM_SERVERS", "10.0.0.1:99999");
    expect_var_error("MCSHIM_SERVERS", "a:1,b:0");
    expect_var_error("MCSHIM_SERVERS", "a:1:0");

    /* too long: host, name, unix path */
    char big[600];
    memset(big, 'h', 256);
    snprintf(big + 256, sizeof(big) - 256, ":1");
    expect_list_error("MCSHIM_SERVERS", true, big, 1);
    memset(big, 'n', sizeof(big));
    memcpy(big, "h:1:1 ", 6);
    big[6 + 256] = '\0';
    expect_list_error("MCSHIM_SERVERS", true, big, 1);
    char path[200] = "unix:/";
    memset(path + 6, 'p', 107);
    path[113] = '\0';
    expect_list_error("MCSHIM_SERVERS", true, path, 1);

    /* more entries than room */
    expect_list_error("MCSHIM_SERVERS", true, "a:1,b:2,c:3", 2);
}

/* MCS_MAX_SERVERS entries are accepted by mcs_config_parse, one more is not. */
static void
test_server_count_limit(void **state)
{
    (void)state;
    size_t cap = (MCS_MAX_SERVERS + 1) * 16;
    char *list = malloc(cap);
    assert_non_null(list);
    size_t o = 0;
    for (unsigned i = 0; i < MCS_MAX_SERVERS; i++) {
        o += (size_t)snprintf(list + o, cap - o, "%sh%u:%u", i ? "," : "", i, 1000 + i);
    }
    struct mcs_config c;
    char err[512];
    const char *pairs[] = { "MCSHIM_SERVERS", list, NULL };
    assert_int_equal(parse_env(&c, err, sizeof(err), pairs), MCS_CONFIG_OK);
    assert_int_equal(c.nservers, MCS_MAX_SERVERS);
    assert_string_equal(c.servers[MCS_MAX_SERVERS - 1].host, "h1023");
    assert_int_equal(c.servers[MCS_MAX_SERVERS - 1].port, 1000 + MCS_MAX_SERVERS - 1);
    mcs_config_free(&c);
    snprintf(list + o, cap - o, ",one:1");
    assert_int_equal(parse_env(&c, err, sizeof(err), pairs), MCS_CONFIG_ERROR);
    assert_non_null(strstr(err, "MCSHIM_SERVERS"));
    assert_null(c.servers);
    free(list);
}

static void
test_intercept(void **state)
{
    (void)state;
    struct mcs_config c;
    expect_var_ok(&c, "MCSHIM_INTERCEPT", "127.0.0.1:11211,[::1]:11211,localhost:11212,unix:/var/run/mc.sock");
    assert_int_equal(c.nintercept, 4);
    assert_string_equal(c.intercept[1].host, "::1");
    assert_string_equal(c.intercept[2].host, "localhost");
    assert_int_equal(c.intercept[2].port, 11212);
    assert_true(c.intercept[3].is_unix);
    assert_string_equal(c.intercept[3].host, "/var/run/mc.sock");
    mcs_config_free(&c);

    /* no weights or names here */
    expect_var_error("MCSHIM_INTERCEPT", "127.0.0.1:11211:2");
    expect_var_error("MCSHIM_INTERCEPT", "127.0.0.1:11211 name");
    expect_var_error("MCSHIM_INTERCEPT", "");
    expect_var_error("MCSHIM_INTERCEPT", "127.0.0.1");
    expect_var_error("MCSHIM_INTERCEPT", "127.0.0.1:0");

    /* at most MCS_MAX_INTERCEPT entries */
    char list[1024];
    size_t o = 0;
    for (unsigned i = 0; i < MCS_MAX_INTERCEPT; i++) {
        o += (size_t)snprintf(list + o, sizeof(list) - o, "%s127.0.0.1:%u", i ? "," : "", 11211 + i);
    }
    expect_var_ok(&c, "MCSHIM_INTERCEPT", list);
    assert_int_equal(c.nintercept, MCS_MAX_INTERCEPT);
    mcs_config_free(&c);
    snprintf(list + o, sizeof(list) - o, ",127.0.0.1:1");
    expect_var_error("MCSHIM_INTERCEPT", list);
}

/* The error line fits the caller's buffer and stays one line, whatever the value. */
static void
test_error_line_bounded(void **state)
{
    (void)state;
    char *huge = malloc(10001);
    assert_non_null(huge);
    memset(huge, '9', 10000);
    huge[10000] = '\0';
    struct mcs_config c;
    char err[512];
    const char *pairs[] = { "MCSHIM_SERVERS", "a:1", "MCSHIM_TIMEOUT_MS", huge, NULL };
    assert_int_equal(parse_env(&c, err, sizeof(err), pairs), MCS_CONFIG_ERROR);
    assert_true(strlen(err) < 400);
    assert_non_null(strstr(err, "MCSHIM_TIMEOUT_MS='999"));
    assert_null(strchr(err, '\n'));

    /* a tiny buffer: truncated, terminated, nothing written past it */
    char small[32];
    memset(small, '#', sizeof(small));
    assert_int_equal(parse_env(&c, small, 8, pairs), MCS_CONFIG_ERROR);
    assert_int_equal(strlen(small), 7);
    for (size_t i = 8; i < sizeof(small); i++) {
        assert_int_equal(small[i], '#');
    }

    /* the documented example, word for word */
    const char *doc[] = { "MCSHIM_SERVERS", "10.0.0.1:99999", NULL };
    assert_int_equal(parse_env(&c, err, sizeof(err), doc), MCS_CONFIG_ERROR);
    assert_string_equal(err, "mcshim: MCSHIM_SERVERS='10.0.0.1:99999': port must be 1-65535; the shim stays inactive");
    free(huge);
}

/* MCSHIM_SHARED: empty (default path), an absolute path, or off; MCSHIM_SHARED_MODE: 0600 or 0660. */
static void
test_shared(void **state)
{
    (void)state;
    struct mcs_config c;
    expect_var_ok(&c, "MCSHIM_SHARED", "");
    assert_string_equal(c.shared, "");
    assert_int_equal(c.shared_mode, 0600);
    mcs_config_free(&c);
    expect_var_ok(&c, "MCSHIM_SHARED", "/run/user/1000/mcshim.seg");
    assert_string_equal(c.shared, "/run/user/1000/mcshim.seg");
    mcs_config_free(&c);
    expect_var_ok(&c, "MCSHIM_SHARED", "off");
    assert_string_equal(c.shared, "off");
    mcs_config_free(&c);
    expect_var_ok(&c, "MCSHIM_SHARED_MODE", "0660");
    assert_int_equal(c.shared_mode, 0660);
    mcs_config_free(&c);
    expect_var_error("MCSHIM_SHARED", "relative/path.seg");
    expect_var_error("MCSHIM_SHARED", "on");
    expect_var_error("MCSHIM_SHARED_MODE", "0644");
    expect_var_error("MCSHIM_SHARED_MODE", "0666");
    expect_var_error("MCSHIM_SHARED_MODE", "");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_inert_when_servers_unset),
        cmocka_unit_test(test_servers_empty_is_error),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_var_table),
        cmocka_unit_test(test_lookup_only_listed_names),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_hash_names),
        cmocka_unit_test(test_distribution),
        cmocka_unit_test(test_log_level),
        cmocka_unit_test(test_server_forms),
        cmocka_unit_test(test_server_errors),
        cmocka_unit_test(test_server_count_limit),
        cmocka_unit_test(test_intercept),
        cmocka_unit_test(test_availability),
        cmocka_unit_test(test_fast_path),
        cmocka_unit_test(test_error_line_bounded),
        cmocka_unit_test(test_shared),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
