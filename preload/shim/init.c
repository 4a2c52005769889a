/*
 * preload/shim/init.c: one-time initialisation.
 *
 * Runs from the library constructor, or from the first wrapper that gets
 * called earlier (another library's constructor). Reads MCSHIM_* once,
 * resolves host names once, and registers the fork handlers. Bad
 * configuration: one line on stderr naming the variable, then the library
 * stays inert (every wrapper passes straight through to libc). A wrapper
 * called on the initialising thread itself (getaddrinfo may connect to
 * nscd) passes through instead of waiting for itself.
 */
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "preload/lib/log.h"
#include "preload/lib/real.h"
#include "preload/shim/shim.h"

static struct mcs_config config;
static _Atomic(const struct mcs_config *) active;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static __thread int in_init;

static const char *
env_lookup(const char *name, void *ctx)
{
    (void)ctx;
    return getenv(name);
}

/* Resolves e (once). max: how many addresses to keep. Returns 0 or -1 with err set. */
static int
resolve(struct mcs_endpoint *e, size_t max, const char *var, char *err, size_t errlen)
{
    if (e->is_unix) {
        struct sockaddr_un *un = (struct sockaddr_un *)&e->addrs[0];
        memset(un, 0, sizeof(*un));
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, e->host, strlen(e->host));
        e->addrlens[0] = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(e->host) + 1);
        e->naddrs = 1;
        return 0;
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    char port[8];
    snprintf(port, sizeof(port), "%u", (unsigned)e->port);
    int rc = getaddrinfo(e->host, port, &hints, &res);
    if (rc != 0 || res == NULL) {
        snprintf(err, errlen, "mcshim: %s: cannot resolve '%s' (%s); the shim stays inactive", var, e->host,
                 gai_strerror(rc));
        return -1;
    }
    e->naddrs = 0;
    for (struct addrinfo *ai = res; ai != NULL && e->naddrs < max; ai = ai->ai_next) {
        if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) || ai->ai_addrlen > sizeof(e->addrs[0])) {
            continue;
        }
        memcpy(&e->addrs[e->naddrs], ai->ai_addr, ai->ai_addrlen);
        e->addrlens[e->naddrs] = ai->ai_addrlen;
        e->naddrs++;
    }
    freeaddrinfo(res);
    if (e->naddrs == 0) {
        snprintf(err, errlen, "mcshim: %s: '%s' has no IPv4/IPv6 address; the shim stays inactive", var, e->host);
        return -1;
    }
    return 0;
}

static void
shim_init(void)
{
    in_init = 1;
    int saved = errno;
    char err[512];
    if (mcs_real_init() != 0) {
        mcs_log_raw("mcshim: cannot find the libc socket functions; the shim stays inactive");
        goto out;
    }
    enum mcs_config_result r = mcs_config_parse(&config, env_lookup, NULL, err, sizeof(err));
    if (r == MCS_CONFIG_INERT) {
        goto out;
    }
    if (r == MCS_CONFIG_ERROR) {
        mcs_log_raw(err);
        goto out;
    }
    for (size_t i = 0; i < config.nservers; i++) {
        enum mcs_config_var var = i < config.nprimaries ? MCS_VAR_SERVERS : MCS_VAR_BACKUP;
        if (resolve(&config.servers[i], 1, mcs_config_var_name(var), err, sizeof(err)) != 0) {
            mcs_log_raw(err);
            mcs_config_free(&config);
            goto out;
        }
    }
    for (size_t i = 0; i < config.nintercept; i++) {
        if (resolve(&config.intercept[i], MCS_MAX_ADDRS, mcs_config_var_name(MCS_VAR_INTERCEPT), err,
                    sizeof(err))
            != 0) {
            mcs_log_raw(err);
            mcs_config_free(&config);
            goto out;
        }
    }
    mcs_log_set_level(config.log_level);
    mcs_fork_register();
    atomic_store(&active, &config);
out:
    errno = saved;
    in_init = 0;
}

const struct mcs_config *
mcs_shim_config(void)
{
    const struct mcs_config *c = atomic_load_explicit(&active, memory_order_acquire);
    if (c != NULL || in_init) {
        return c;
    }
    pthread_once(&init_once, shim_init);
    return atomic_load_explicit(&active, memory_order_acquire);
}

__attribute__((constructor)) static void
mcs_shim_constructor(void)
{
    mcs_real_init();
    (void)mcs_shim_config();
}
