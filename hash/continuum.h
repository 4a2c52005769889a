/*
 * hash/continuum.h: the server continuum (ketama, modula) that maps a key hash
 * to a server index.
 *
 * Pure code: the caller owns every buffer. Build with
 *     n = mcs_continuum_points(dist, servers, count);  allocate n points;
 *     mcs_continuum_build(dist, servers, count, points, n);
 * then look keys up with mcs_continuum_lookup(). Both distributions are
 * bit-exact with nutcracker (twemproxy) 0.5.0 with `auto_eject_hosts: false`
 * (checked against the installed binary, tests/integration/test_ketama_nutcracker.py):
 *
 * - Ketama (`distribution: ketama`, also libmemcached's weighted ketama): each
 *   server gets floor(w/W * 40 * n + 1e-10) MD5 digests computed in IEEE single
 *   precision, 4 points per digest (words 0..3, little-endian), of the strings
 *   "<name>-0", "<name>-1", ...; <name> is the point-name base (see
 *   mcs_continuum_name). With equal weights that is 160 points per server for
 *   most pool sizes but 156 for some (n = 25, 47, 50, ...), as in nutcracker.
 *   Equal point values are ordered by nutcracker's server order (below).
 * - Modula (`distribution: modula`): weight-many slots per server, the servers
 *   in nutcracker's server order; a key goes to slot hash % total_weight.
 *
 * nutcracker's server order is NOT the configuration order: it sorts the pool's
 * servers by point-name base, shorter names first, then bytewise (it does so
 * while checking for duplicate names). Build reproduces that order internally;
 * points[].server is always the index into the caller's array.
 *
 * Left to the caller (nutcracker's router does these before the continuum):
 * - a pool with exactly one server maps every key to index 0, whatever the
 *   hash and distribution;
 * - a zero-length key hashes to 0 (it is not passed to the hash function);
 * - with a hash_tag, only the tagged part of the key is hashed.
 * nutcracker formats "<name>-k" into an 86-byte buffer: names whose point
 * strings exceed 85 bytes hash garbage there (it reads past its buffer); here
 * the whole string is hashed, so such names cannot match nutcracker.
 */
#ifndef MCS_CONTINUUM_H
#define MCS_CONTINUUM_H

#include <stddef.h>
#include <stdint.h>

#define MCS_DIST_LIST(X)      \
    X(KETAMA, "ketama")       \
    X(MODULA, "modula")

enum mcs_dist_kind {
#define MCS_DIST_ENUM(id, name) MCS_DIST_##id,
    MCS_DIST_LIST(MCS_DIST_ENUM)
#undef MCS_DIST_ENUM
    MCS_DIST_COUNT
};

/* Returns the configuration name of `kind` ("ketama", ...), or "?" if out of range. */
const char *mcs_dist_name(enum mcs_dist_kind kind);

/* Looks `name` (len bytes, case-sensitive) up. Returns 0 and sets *out, or -1 if unknown. */
int mcs_dist_from_name(const char *name, size_t len, enum mcs_dist_kind *out);

/* One server as the ring sees it. `name` is the point-name base: the explicit name,
 * else "host" when port == 11211, else "host:port"; mcs_continuum_name() builds it. */
struct mcs_ring_server {
    const char *name;     /* name_len bytes, not necessarily NUL-terminated */
    size_t      name_len;
    uint32_t    weight;   /* >= 1 */
};

struct mcs_continuum_point {
    uint32_t value;       /* ketama: the point; modula: 0 */
    uint32_t server;      /* index into the server array given to build */
};

/* Writes the point-name base into out (capacity cap), NUL-terminated: `name` if it
 * is non-NULL and non-empty, else `host` as written when port == 11211, else
 * "host:port" with the port in decimal (nutcracker uses the port text as written
 * in its YAML; write it without leading zeros there). Returns the length, or -1
 * if it does not fit. */
int mcs_continuum_name(const char *host, uint16_t port, const char *name,
                       char *out, size_t cap);

/* Number of points build will write for these servers. 0 if count == 0, a weight is 0,
 * the total weight exceeds UINT32_MAX (nutcracker keeps it in 32 bits) or dist is
 * unknown. Ketama: the sum of the per-server point counts; modula: the total weight. */
size_t mcs_continuum_points(enum mcs_dist_kind dist,
                            const struct mcs_ring_server *servers, size_t count);

/* Fills points[0..n) with n = mcs_continuum_points(): ketama points sorted by
 * (value, nutcracker server order); modula slots in nutcracker server order.
 * Returns n, or 0 (points untouched) if n is 0 or cap < n. No allocation. */
size_t mcs_continuum_build(enum mcs_dist_kind dist,
                           const struct mcs_ring_server *servers, size_t count,
                           struct mcs_continuum_point *points, size_t cap);

/* Server index for key hash h (0 if npoints == 0). Ketama: the first point with
 * value >= h, wrapping to the first point; modula: points[h % npoints]. */
uint32_t mcs_continuum_lookup(enum mcs_dist_kind dist,
                              const struct mcs_continuum_point *points, size_t npoints,
                              uint32_t h);

#endif
