/*
 * tests/tools/mcshim_ring.c: which server the shim sends each key to.
 *
 *     mcshim_ring -s 'host:port[:weight][ name],...' [-H hash] [-d dist] [-v] < keys
 *
 * Reads one key per line on stdin and prints "key<TAB>index<TAB>host:port" per
 * key, index counting from 0 in the -s order. It parses the list with the
 * library's own configuration parser (same syntax and errors as
 * MCSHIM_SERVERS) and asks the library's router, so its answer is the shim's
 * by construction; the tests compare it with real servers and with nutcracker.
 * -v prints each server's point count on stderr. Exit 2 on bad arguments.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "preload/core/config.h"
#include "preload/core/router.h"

static int
usage_error(const char *msg, const char *arg)
{
    fprintf(stderr, "mcshim_ring: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
    fprintf(stderr, "usage: mcshim_ring -s host:port[:weight][ name],... [-H hash] [-d ketama|modula] [-v]\n");
    return 2;
}

static void
dump_points(const struct mcs_router *r)
{
    for (size_t i = 0; i < r->nservers; i++) {
        size_t n = 0;
        for (size_t j = 0; j < r->npoints; j++) {
            n += r->points[j].server == i;
        }
        fprintf(stderr, "server %zu %s weight %u points %zu\n", i, r->servers[i].label,
                (unsigned)r->servers[i].endpoint->weight, n);
    }
}

int
main(int argc, char **argv)
{
    struct mcs_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.hash = MCS_HASH_MD5;
    cfg.dist = MCS_DIST_KETAMA;
    cfg.failure_limit = 1;
    const char *list = NULL;
    int verbose = 0, c;

    while ((c = getopt(argc, argv, "s:H:d:v")) != -1) {
        switch (c) {
        case 's':
            list = optarg;
            break;
        case 'H':
            if (mcs_hash_from_name(optarg, strlen(optarg), &cfg.hash) != 0) {
                return usage_error("unknown hash", optarg);
            }
            break;
        case 'd':
            if (mcs_dist_from_name(optarg, strlen(optarg), &cfg.dist) != 0) {
                return usage_error("unknown distribution", optarg);
            }
            break;
        case 'v':
            verbose = 1;
            break;
        default:
            return usage_error("bad option", NULL);
        }
    }
    if (optind != argc) {
        return usage_error("unexpected argument", argv[optind]);
    }
    if (list == NULL) {
        return usage_error("-s is required", NULL);
    }
    cfg.servers = calloc(MCS_MAX_SERVERS, sizeof(*cfg.servers));
    if (cfg.servers == NULL) {
        fprintf(stderr, "mcshim_ring: out of memory\n");
        return 1;
    }
    char err[512];
    int n = mcs_config_parse_list("-s", list, true, cfg.servers, MCS_MAX_SERVERS, err, sizeof(err));
    if (n < 0) {
        fprintf(stderr, "%s\n", err);
        free(cfg.servers);
        return 2;
    }
    cfg.nservers = (size_t)n;
    struct mcs_router router;
    if (mcs_router_init(&router, &cfg) != 0) {
        fprintf(stderr, "mcshim_ring: cannot build the continuum (weights too extreme?)\n");
        free(cfg.servers);
        return 1;
    }
    if (verbose) {
        dump_points(&router);
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    while ((got = getline(&line, &cap, stdin)) >= 0) {
        size_t len = (size_t)got;
        if (len > 0 && line[len - 1] == '\n') {
            len--;
        }
        if (len > 0 && line[len - 1] == '\r') {
            len--;
        }
        uint32_t idx = mcs_router_server_for_key(&router, line, len);
        fwrite(line, 1, len, stdout);
        printf("\t%u\t%s\n", (unsigned)idx, router.servers[idx].label);
    }
    int status = ferror(stdin) ? 1 : 0;
    if (status != 0) {
        fprintf(stderr, "mcshim_ring: reading stdin: %s\n", strerror(errno));
    }
    if (fflush(stdout) != 0) {
        status = 1;
    }
    free(line);
    mcs_router_free(&router);
    free(cfg.servers);
    return status;
}
