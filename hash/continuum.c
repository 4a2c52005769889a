/*
 * hash/continuum.c: ketama and modula continua, bit-exact with nutcracker
 * (twemproxy) 0.5.0 with auto_eject_hosts off. See continuum.h for the
 * contract; this file adds the reasoning.
 *
 * Ketama (nc_ketama.c ketama_update): server i of n with weight w_i out of a
 * total W gets h_i = floor(float(w_i/W * 160 / 4 * n + 1e-10)) MD5 digests,
 * every step in IEEE single precision, of the strings "<name>-0" ..
 * "<name>-(h_i - 1)", 4 points per digest (words 0..3, little-endian). With
 * equal weights h_i is 40 for most n but 39 for some (n = 25, 47, ...) because
 * w/W rounds down in float: those pools get 156 points per server.
 *
 * Server order: nutcracker sorts the pool's servers by name (shorter name
 * first, then bytewise) when it checks for duplicates, and that sorted order
 * is its server index. It matters in two places, both reproduced here while
 * points[].server stays the caller's index:
 * - modula lays its slots out in that order;
 * - equal ketama point values keep that order (nutcracker's qsort is glibc's
 *   stable merge sort over points generated server by server).
 *
 * Sorting is an in-place heapsort: no allocation, no recursion.
 */
#include "hash/continuum.h"

#include "hash/hash.h"

#include <string.h>

#if defined(__FAST_MATH__)
#error "hash/continuum.c needs IEEE float semantics: build without -ffast-math"
#endif

#define KETAMA_POINTS_PER_SERVER  160   /* for an average-weight server */
#define KETAMA_POINTS_PER_HASH    4     /* one MD5 digest gives 4 points */
#define KETAMA_DEFAULT_PORT       11211 /* port left out of the point name */

static const char *const dist_names[MCS_DIST_COUNT] = {
#define MCS_DIST_NAME(id, name) name,
    MCS_DIST_LIST(MCS_DIST_NAME)
#undef MCS_DIST_NAME
};

/* Name of kind, or "?" when kind is not a valid enum value. */
const char *
mcs_dist_name(enum mcs_dist_kind kind)
{
    return (unsigned)kind < MCS_DIST_COUNT ? dist_names[kind] : "?";
}

/* Exact, case-sensitive match of name[0..len) against the list. */
int
mcs_dist_from_name(const char *name, size_t len, enum mcs_dist_kind *out)
{
    for (unsigned i = 0; i < MCS_DIST_COUNT; i++) {
        if (strlen(dist_names[i]) == len && memcmp(dist_names[i], name, len) == 0) {
            *out = (enum mcs_dist_kind)i;
            return 0;
        }
    }
    return -1;
}

/* Writes v in decimal to out (at least 10 bytes, no NUL); returns the length. */
static size_t
format_u32(uint32_t v, char *out)
{
    char tmp[10];
    size_t n = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < n; i++) {
        out[i] = tmp[n - 1 - i];
    }
    return n;
}

/* See continuum.h. The port is written in plain decimal. */
int
mcs_continuum_name(const char *host, uint16_t port, const char *name, char *out, size_t cap)
{
    char port_text[10];
    size_t port_len = 0;
    size_t base_len;
    size_t len;

    if (name != NULL && name[0] != '\0') {
        base_len = strlen(name);
        len = base_len;
    } else {
        name = NULL;
        base_len = strlen(host);
        len = base_len;
        if (port != KETAMA_DEFAULT_PORT) {
            port_len = format_u32(port, port_text);
            len += 1 + port_len;
        }
    }
    if (len >= cap || len > INT32_MAX) {
        return -1;
    }
    memcpy(out, name != NULL ? name : host, base_len);
    if (port_len > 0) {
        out[base_len] = ':';
        memcpy(out + base_len + 1, port_text, port_len);
    }
    out[len] = '\0';
    return (int)len;
}

/* Sum of the weights into *total. Returns -1 if a weight is 0 or the sum does
 * not fit in 32 bits (nutcracker keeps it in a uint32_t), else 0. */
static int
total_weight(const struct mcs_ring_server *servers, size_t count, uint32_t *total)
{
    uint64_t sum = 0;

    for (size_t i = 0; i < count; i++) {
        if (servers[i].weight == 0) {
            return -1;
        }
        sum += servers[i].weight;
        if (sum > UINT32_MAX) {
            return -1;
        }
    }
    *total = (uint32_t)sum;
    return 0;
}

/* Digests (4 points each) for a server of `weight` out of `total` in a pool of
 * `count`: nutcracker's expression, one float rounding per step:
 *     floorf((float)(pct * 160 / 4 * (float)n + 0.0000000001))
 * where the last addition is done in double. Each step is stored through a
 * volatile so that it is rounded to its type even where the compiler keeps
 * excess precision (x87, -fexcess-precision=fast). The value is >= 0 and far
 * below 2^32, so converting to an unsigned integer is floorf without libm. */
static uint32_t
ketama_hashes(uint32_t weight, uint32_t total, size_t count)
{
    volatile float pct = (float)weight / (float)total;
    volatile float x = pct * (float)KETAMA_POINTS_PER_SERVER;

    x = x / (float)KETAMA_POINTS_PER_HASH;
    x = x * (float)(uint32_t)count;
    volatile double sum = (double)x + 0.0000000001;
    volatile float y = (float)sum;
    return (uint32_t)y;
}

/* nutcracker's server order (string_compare on names): shorter first, then
 * bytewise; equal names (nutcracker refuses them) by index. */
static int
server_cmp(const struct mcs_ring_server *servers, uint32_t a, uint32_t b)
{
    const struct mcs_ring_server *sa = &servers[a], *sb = &servers[b];

    if (a == b) {
        return 0;
    }
    if (sa->name_len != sb->name_len) {
        return sa->name_len < sb->name_len ? -1 : 1;
    }
    if (sa->name_len > 0) {
        int c = memcmp(sa->name, sb->name, sa->name_len);
        if (c != 0) {
            return c < 0 ? -1 : 1;
        }
    }
    return a < b ? -1 : 1;
}

/* Point order: by value, equal values by server order. */
static int
point_cmp(const struct mcs_ring_server *servers, const struct mcs_continuum_point *p,
          const struct mcs_continuum_point *q)
{
    if (p->value != q->value) {
        return p->value < q->value ? -1 : 1;
    }
    return server_cmp(servers, p->server, q->server);
}

/* Restores the max-heap property below node `root` of points[0..n). */
static void
heap_sift_down(const struct mcs_ring_server *servers, struct mcs_continuum_point *points,
               size_t root, size_t n)
{
    for (;;) {
        size_t child = 2 * root + 1;

        if (child >= n) {
            return;
        }
        if (child + 1 < n && point_cmp(servers, &points[child], &points[child + 1]) < 0) {
            child++;
        }
        if (point_cmp(servers, &points[root], &points[child]) >= 0) {
            return;
        }
        struct mcs_continuum_point tmp = points[root];
        points[root] = points[child];
        points[child] = tmp;
        root = child;
    }
}

/* Sorts points[0..n) ascending by point_cmp (heapsort, in place). */
static void
points_sort(const struct mcs_ring_server *servers, struct mcs_continuum_point *points, size_t n)
{
    if (n < 2) {
        return;
    }
    for (size_t i = n / 2; i-- > 0;) {
        heap_sift_down(servers, points, i, n);
    }
    for (size_t end = n - 1; end > 0; end--) {
        struct mcs_continuum_point tmp = points[0];
        points[0] = points[end];
        points[end] = tmp;
        heap_sift_down(servers, points, 0, end);
    }
}

/* See continuum.h. */
size_t
mcs_continuum_points(enum mcs_dist_kind dist, const struct mcs_ring_server *servers, size_t count)
{
    uint32_t total;
    size_t n = 0;

    if (count == 0 || count > UINT32_MAX || total_weight(servers, count, &total) != 0) {
        return 0;
    }
    switch (dist) {
    case MCS_DIST_KETAMA:
        for (size_t i = 0; i < count; i++) {
            n += (size_t)ketama_hashes(servers[i].weight, total, count) * KETAMA_POINTS_PER_HASH;
        }
        return n;
    case MCS_DIST_MODULA:
        return total;
    case MCS_DIST_COUNT:
        break;
    }
    return 0;
}

/* Ketama: the points of every server, then sorted. points has room for all. */
static void
ketama_build(const struct mcs_ring_server *servers, size_t count, uint32_t total,
             struct mcs_continuum_point *points)
{
    size_t at = 0;

    for (size_t i = 0; i < count; i++) {
        uint32_t hashes = ketama_hashes(servers[i].weight, total, count);
        struct mcs_md5_ctx base;

        mcs_md5_init(&base);
        mcs_md5_update(&base, servers[i].name, servers[i].name_len);
        for (uint32_t k = 0; k < hashes; k++) {
            struct mcs_md5_ctx ctx = base;
            unsigned char digest[16];
            char suffix[11];
            size_t suffix_len;

            suffix[0] = '-';
            suffix_len = 1 + format_u32(k, suffix + 1);
            mcs_md5_update(&ctx, suffix, suffix_len);
            mcs_md5_final(&ctx, digest);
            for (unsigned word = 0; word < KETAMA_POINTS_PER_HASH; word++) {
                points[at].value = mcs_md5_word(digest, word);
                points[at].server = (uint32_t)i;
                at++;
            }
        }
    }
    points_sort(servers, points, at);
}

/* Modula: weight-many slots per server, servers in nutcracker's order. The
 * first `count` entries are sorted as scratch, then expanded in place from the
 * back: server j of the sorted order starts at a slot >= j, so expanding it
 * never overwrites an entry still to be read. */
static void
modula_build(const struct mcs_ring_server *servers, size_t count, uint32_t total,
             struct mcs_continuum_point *points)
{
    size_t end = total;

    for (size_t i = 0; i < count; i++) {
        points[i].value = 0;
        points[i].server = (uint32_t)i;
    }
    points_sort(servers, points, count);
    for (size_t j = count; j-- > 0;) {
        uint32_t server = points[j].server;
        size_t start = end - servers[server].weight;

        for (size_t s = start; s < end; s++) {
            points[s].value = 0;
            points[s].server = server;
        }
        end = start;
    }
}

/* See continuum.h. */
size_t
mcs_continuum_build(enum mcs_dist_kind dist, const struct mcs_ring_server *servers, size_t count,
                    struct mcs_continuum_point *points, size_t cap)
{
    size_t n = mcs_continuum_points(dist, servers, count);
    uint32_t total;

    if (n == 0 || cap < n || total_weight(servers, count, &total) != 0) {
        return 0;
    }
    if (dist == MCS_DIST_KETAMA) {
        ketama_build(servers, count, total, points);
    } else {
        modula_build(servers, count, total, points);
    }
    return n;
}

/* See continuum.h. */
uint32_t
mcs_continuum_lookup(enum mcs_dist_kind dist, const struct mcs_continuum_point *points, size_t npoints,
                     uint32_t h)
{
    size_t lo = 0, hi = npoints;

    if (npoints == 0) {
        return 0;
    }
    if (dist == MCS_DIST_MODULA) {
        return points[h % npoints].server;
    }
    /* First point with value >= h; past the end wraps to the first point. */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (points[mid].value < h) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return points[lo == npoints ? 0 : lo].server;
}
