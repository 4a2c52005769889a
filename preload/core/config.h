/*
 * preload/core/config.h: the shim's configuration, parsed from MCSHIM_*
 * environment strings into an immutable struct.
 *
 * Pure: the caller passes a lookup function for the variables (getenv in the
 * library, a table in tests), and resolves host names itself afterwards
 * (mcs_config_parse only checks syntax). On error, one human-readable line
 * naming the variable and the bad value is written to err. Every variable is
 * listed once in MCS_CONFIG_VARS with its default; docs/configuration.md
 * documents each.
 */
#ifndef MCS_CONFIG_H
#define MCS_CONFIG_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "hash/continuum.h"
#include "hash/hash.h"

#define MCS_HOST_MAX     255
#define MCS_NAME_MAX     255
#define MCS_MAX_SERVERS  1024   /* primaries and backups together */
#define MCS_MAX_REPLICAS 8
#define MCS_MAX_INTERCEPT 16
#define MCS_MAX_ADDRS    4      /* resolved addresses kept per intercept entry */
/* The shortest MCSHIM_TIMEOUT_MS accepted: below it, scheduling noise on a busy host
 * (a thread preempted for a few ms) would mark healthy servers down. */
#define MCS_TIMEOUT_MIN_MS 10

/* id, variable name, default (NULL: none), one-line description */
#define MCS_CONFIG_VARS(X)                                                                        \
    X(SERVERS,       "MCSHIM_SERVERS",       NULL,               "primary pool host:port[:weight][ name],...") \
    X(INTERCEPT,     "MCSHIM_INTERCEPT",     "127.0.0.1:11211",  "addresses the application connects to")      \
    X(HASH,          "MCSHIM_HASH",          "md5",              "key hash function")                          \
    X(DISTRIBUTION,  "MCSHIM_DISTRIBUTION",  "ketama",           "ketama or modula")                           \
    X(TIMEOUT_MS,    "MCSHIM_TIMEOUT_MS",    "1000",             "backend connect and reply deadline, ms")     \
    X(RETRY_MS,      "MCSHIM_RETRY_MS",      "2000",             "how long a down server is left alone, ms")   \
    X(FAILURE_LIMIT, "MCSHIM_FAILURE_LIMIT", "2",                "consecutive failures before a server is down") \
    X(CONNECTIONS,   "MCSHIM_CONNECTIONS",   "2",                "backend connections per server")             \
    X(ITEM_MAX,      "MCSHIM_ITEM_MAX",      "1048576",          "largest value forwarded, bytes")             \
    X(SPIN_US,       "MCSHIM_SPIN_US",       "50",                "engine polls this long for replies before sleeping, us") \
    X(FAST_PATH,     "MCSHIM_FAST_PATH",     "auto",             "auto: a blocking connection's own thread does its round trips; off: the engine thread does all") \
    X(FAST_CONNECTIONS, "MCSHIM_FAST_CONNECTIONS", "8",         "fast-path connections per server and protocol, at most") \
    X(MEMORY_MB,     "MCSHIM_MEMORY_MB",     "64",               "reply bytes the process may hold before servers are read only for replies being delivered, MiB") \
    X(BACKUP,        "MCSHIM_BACKUP",        "",                 "backup pool host:port[:weight][ name],... (its own ring)") \
    X(REPLICAS,      "MCSHIM_REPLICAS",      "1",                "copies of each key along the primary ring (1: none)") \
    X(WRITE,         "MCSHIM_WRITE",         "async",            "async: answer after the primary; sync: after every copy") \
    X(WARMUP_S,      "MCSHIM_WARMUP_S",      "300",              "seconds a restarted server is filled from its copies (0: off)") \
    X(EJECT,         "MCSHIM_EJECT",         "0",                "1: with no copies, a down server leaves the ring while down") \
    X(REJOIN,        "MCSHIM_REJOIN",        "replay",           "a server back from a cut: replay missed invalidations, or flush") \
    X(REJOIN_LOG,    "MCSHIM_REJOIN_LOG",    "10000",            "keys remembered per server while away; beyond: flush on rejoin") \
    X(SHARED,        "MCSHIM_SHARED",        "",                 "host-wide state segment file (empty: /dev/shm/mcshim-UID.seg), or off") \
    X(SHARED_MODE,   "MCSHIM_SHARED_MODE",   "0600",             "0600: this user's processes share it; 0660: also its group's") \
    X(LOG_LEVEL,     "MCSHIM_LOG_LEVEL",     "notice",           "error, warn, notice, info or debug")

enum mcs_config_var {
#define MCS_CONFIG_ENUM(id, name, def, help) MCS_VAR_##id,
    MCS_CONFIG_VARS(MCS_CONFIG_ENUM)
#undef MCS_CONFIG_ENUM
    MCS_VAR_COUNT
};

/* One host:port (or unix:path) as written, and its resolved socket addresses. */
struct mcs_endpoint {
    char     host[MCS_HOST_MAX + 1];   /* as written, without [] for IPv6 */
    char     name[MCS_NAME_MAX + 1];   /* explicit ketama name, "" if none */
    uint16_t port;
    uint32_t weight;
    bool     is_unix;                  /* host holds the socket path */
    size_t   naddrs;                   /* filled by the resolver */
    struct sockaddr_storage addrs[MCS_MAX_ADDRS];
    socklen_t addrlens[MCS_MAX_ADDRS];
};

enum mcs_log_level { MCS_LOG_ERROR, MCS_LOG_WARN, MCS_LOG_NOTICE, MCS_LOG_INFO, MCS_LOG_DEBUG };

enum mcs_write_mode { MCS_WRITE_ASYNC, MCS_WRITE_SYNC };
enum mcs_rejoin_mode { MCS_REJOIN_REPLAY, MCS_REJOIN_FLUSH };

struct mcs_config {
    struct mcs_endpoint *servers;      /* nservers entries, owned (mcs_config_free): */
    size_t   nservers;                 /*   the primaries, then the backups */
    size_t   nprimaries;
    size_t   nbackups;
    struct mcs_endpoint intercept[MCS_MAX_INTERCEPT];
    size_t   nintercept;
    enum mcs_hash_kind hash;
    enum mcs_dist_kind dist;
    uint32_t timeout_ms;
    uint32_t retry_ms;
    uint32_t failure_limit;
    uint32_t connections;
    uint32_t item_max;
    uint32_t spin_us;
    bool     fast_path;                /* MCSHIM_FAST_PATH=auto */
    uint32_t fast_connections;
    uint32_t memory_mb;
    uint32_t replicas;                 /* 1..nprimaries */
    enum mcs_write_mode write;
    uint32_t warmup_s;
    bool     eject;
    enum mcs_rejoin_mode rejoin;
    uint32_t rejoin_log;
    enum mcs_log_level log_level;
    char     shared[4096];             /* segment path; "" for the default; "off" */
    unsigned shared_mode;              /* 0600 or 0660 */
};

typedef const char *(*mcs_config_lookup)(const char *name, void *ctx);

enum mcs_config_result {
    MCS_CONFIG_OK,
    MCS_CONFIG_INERT,   /* MCSHIM_SERVERS unset: the shim stays out of the way */
    MCS_CONFIG_ERROR    /* err holds the one-line reason */
};

enum mcs_config_result mcs_config_parse(struct mcs_config *c, mcs_config_lookup get, void *ctx,
                                        char *err, size_t errlen);

/* Parses a server list "host:port[:weight][ name],..." into out[0..cap). Returns the
 * count, or -1 with err set (err names `var`). Used by config and by tools. */
int mcs_config_parse_list(const char *var, const char *value, bool allow_weight,
                          struct mcs_endpoint *out, size_t cap, char *err, size_t errlen);

const char *mcs_config_var_name(enum mcs_config_var v);
const char *mcs_config_var_default(enum mcs_config_var v);
const char *mcs_log_level_name(enum mcs_log_level l);

void mcs_config_free(struct mcs_config *c);

#endif
