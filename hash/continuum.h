/*
 * hash/continuum.h: the server continuum (ketama, modula) that maps a key hash
 * to a server index.
 *
 * Pure code: the caller owns every buffer. Build with
 *     n = mcs_continuum_points(dist, servers, count);  allocate n points;
 *     mcs_continuum_build(dist, servers, count, points, n);
 * then look keys up with mcs_continuum_lookup(). Ketama is bit-exact with
 * twemproxy 0.5 `distribution: ketama` (and libmemcached's weighted ketama):
 * single-precision weight scaling, names "host-k" when port is 11211 else
 * "host:port-k", or the explicit server name when given; 4 points per MD5.
 * Equal point values are ordered by server index, so lookups are deterministic.
 * Modula follows twemproxy `distribution: modula` (weight-many slots per server,
 * hash % slots).
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

const char *mcs_dist_name(enum mcs_dist_kind kind);
int mcs_dist_from_name(const char *name, size_t len, enum mcs_dist_kind *out);

/* One server as the ring sees it. `name` is the point-name base: the explicit name,
 * else "host" when port == 11211, else "host:port"; mcs_continuum_name() builds it. */
struct mcs_ring_server {
    const char *name;     /* not NUL-terminated necessarily */
    size_t      name_len;
    uint32_t    weight;   /* >= 1 */
};

struct mcs_continuum_point {
    uint32_t value;
    uint32_t server;      /* index into the server array given to build */
};

/* Writes the point-name base for host:port (and optional explicit name) into out
 * (capacity cap), NUL-terminated. Returns its length, or -1 if it does not fit. */
int mcs_continuum_name(const char *host, uint16_t port, const char *name,
                       char *out, size_t cap);

/* Number of points build will write for these servers (0 if count == 0). */
size_t mcs_continuum_points(enum mcs_dist_kind dist,
                            const struct mcs_ring_server *servers, size_t count);

/* Fills points[0..cap) and sorts them. Returns the number written, or 0 if cap is
 * too small or count == 0. */
size_t mcs_continuum_build(enum mcs_dist_kind dist,
                           const struct mcs_ring_server *servers, size_t count,
                           struct mcs_continuum_point *points, size_t cap);

/* Server index for key hash h. npoints must be > 0. Ketama: first point with
 * value >= h, wrapping to the first point; modula: points[h % npoints]. */
uint32_t mcs_continuum_lookup(enum mcs_dist_kind dist,
                              const struct mcs_continuum_point *points, size_t npoints,
                              uint32_t h);

#endif
