/*
 * tools/mcshim-stats.c: the outside view of the host-wide state segment
 * (`mcshim stats`), read without any application involvement.
 *
 *     mcshim-stats [--json|--prometheus] [--watch[=SECONDS]] [--file PATH]
 *
 * The segment (--file; else MCSHIM_SHARED unless it is "off"; else
 * /dev/shm/mcshim-<uid>.seg) is mapped read-only with the library's own checks
 * (preload/lib/shared.c: owner, mode 0600 or MCSHIM_SHARED_MODE=0660, size,
 * magic, version, broken flag); the file is never written, and dead processes'
 * slots are skipped, not reclaimed. Each frame is a snapshot: every field is
 * read once with an atomic load into a private copy, then printed from the copy.
 *
 * Prints the server entries in use (health, epoch, when and by whom and why it
 * last changed, the live probe lease, flags, keys in the missed-writes log,
 * every MCS_SEG_COUNTERS counter) and the attached processes that are alive
 * with the ticket they attached with (a dead process or a reused pid is not
 * listed): as aligned tables, one JSON object (--json), or the Prometheus text
 * exposition format 0.0.4 (--prometheus). --watch redraws every SECONDS
 * (default 1) until interrupted; it keeps trying when the segment is missing,
 * refused or replaced, so it can be started before the first application.
 *
 * The contents are untrusted (any process of the user can write anything):
 * health, failure and flag values out of range print as "corrupt"/"other",
 * identities are bounded by MCS_SEG_ID_MAX and shown in one printable form
 * (bytes 0x20-0x7e as they are, a backslash as "\\", any other byte as
 * "\xHH"), then escaped for the output format. A file cut short under the
 * mapping (SIGBUS) ends the snapshot with an error instead of the process.
 *
 * Exit status: 0, 1 when the segment cannot be read (one line on stderr),
 * 2 on bad usage (one line on stderr).
 */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "preload/core/hostseg.h"
#include "preload/core/router.h"
#include "preload/lib/shared.h"

#define PROG        "mcshim-stats"
#define USAGE       "usage: " PROG " [--json|--prometheus] [--watch[=SECONDS]] [--file PATH]"
#define LD(p)       __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define AGE_UNKNOWN UINT64_MAX
#define HEALTH_CORRUPT MCS_HEALTH_COUNT
#define SHOWN_MAX   (4 * MCS_SEG_ID_MAX + 1)   /* an identity in printable form, with its NUL */
#define SEG_PATH_MAX sizeof(((struct mcs_shared *)0)->path)
#define PATH_SHOWN  (4 * SEG_PATH_MAX + 1)
#define ERR_MAX     (SEG_PATH_MAX + 512)

static const char *const health_names[] = {
#define HEALTH_NAME(id, name) name,
    MCS_HEALTH_LIST(HEALTH_NAME)
#undef HEALTH_NAME
};

static const char *const failure_names[] = {
#define FAILURE_NAME(id, name) name,
    MCS_FAILURE_LIST(FAILURE_NAME)
#undef FAILURE_NAME
};

enum format { FORMAT_TABLE, FORMAT_JSON, FORMAT_PROMETHEUS };

/* One server entry as read (a private copy: nothing here points into the mapping). */
struct server_view {
    char     id[MCS_SEG_ID_MAX];   /* id_len raw bytes, not NUL-terminated */
    uint32_t id_len;
    uint32_t health;               /* < MCS_HEALTH_COUNT, or HEALTH_CORRUPT */
    uint64_t epoch;
    uint64_t changed_ago_ms;       /* AGE_UNKNOWN when never, or not of this boot */
    uint32_t changed_by;           /* 0: nobody */
    uint32_t why;                  /* raw: checked when printed */
    uint32_t lease_pid;            /* 0: no live lease */
    uint32_t flags;
    uint64_t missed;               /* keys waiting in the log */
    uint64_t counters[MCS_SEG_COUNTER_COUNT];
};

/* One live attached process as read. */
struct proc_view {
    uint32_t pid;
    uint32_t comm_len;
    char     comm[sizeof(((struct mcs_seg_proc *)0)->comm)];
    uint64_t uptime_ms;            /* AGE_UNKNOWN if unknown */
    uint64_t requests;
    uint64_t servers_down;
    uint64_t heartbeat_ago_ms;     /* AGE_UNKNOWN if unknown */
};

/* A frame's data. Owned by main, filled by snapshot_take. */
struct snapshot {
    const char *path;
    bool     same_boot;            /* the segment's times are of this boot */
    uint64_t age_ms;               /* AGE_UNKNOWN if unknown */
    uint64_t attaches;
    uint32_t nservers;
    uint32_t nprocs;
    struct server_view servers[MCS_SEG_SERVERS];
    struct proc_view procs[MCS_SEG_PROCS];
};

static sigjmp_buf bus_jump;
static volatile sig_atomic_t bus_armed;

/* A page past the end of a file cut short under the mapping: end the snapshot. */
static void
on_bus(int sig)
{
    if (bus_armed) {
        siglongjmp(bus_jump, 1);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void
out_of_memory(void)
{
    fprintf(stderr, "%s: out of memory\n", PROG);
    exit(1);
}

/* ---- reading ---- */

/* now - t, or AGE_UNKNOWN when t is unset, in the future, or of another boot. */
static uint64_t
age_of(uint64_t now, uint64_t t, bool same_boot)
{
    return same_boot && t != 0 && t <= now ? now - t : AGE_UNKNOWN;
}

static void
server_read(const struct mcs_seg_server *e, uint32_t i, const struct mcs_seg *seg, uint64_t now, bool same_boot,
            struct server_view *v)
{
    uint32_t len = LD(&e->id_len);
    v->id_len = len <= MCS_SEG_ID_MAX ? len : MCS_SEG_ID_MAX;
    for (uint32_t k = 0; k < v->id_len; k++) {
        v->id[k] = LD(&e->id[k]);
    }
    uint64_t state = LD(&e->state);
    v->health = (uint32_t)(state & 0xff) < MCS_HEALTH_COUNT ? (uint32_t)(state & 0xff) : HEALTH_CORRUPT;
    v->epoch = state >> 8;
    v->changed_ago_ms = age_of(now, LD(&e->changed_ms), same_boot);
    v->changed_by = LD(&e->changed_by);
    v->why = LD(&e->why);
    uint64_t lease_until = LD(&e->lease_until_ms);
    v->lease_pid = same_boot && lease_until > now ? LD(&e->lease_pid) : 0;
    v->flags = LD(&e->flags);
    v->missed = mcs_seg_log_count(seg, i);
    for (uint32_t c = 0; c < MCS_SEG_COUNTER_COUNT; c++) {
        v->counters[c] = LD(&e->counters[c]);
    }
}

/* Reads process slot p if its process is alive with the same ticket. */
static bool
proc_read(const struct mcs_seg_proc *p, uint64_t now, struct proc_view *v)
{
    uint32_t pid = LD(&p->pid);
    uint64_t ticket = LD(&p->ticket);
    if (pid == 0 || pid > INT32_MAX || ticket == 0 || mcs_shared_proc_ticket((long)pid) != ticket) {
        return false;
    }
    v->pid = pid;
    v->uptime_ms = age_of(now, LD(&p->attached_ms), true);
    v->heartbeat_ago_ms = age_of(now, LD(&p->seen_ms), true);
    v->requests = LD(&p->requests);
    v->servers_down = LD(&p->servers_down);
    v->comm_len = 0;
    while (v->comm_len < sizeof(v->comm)) {
        char c = LD(&p->comm[v->comm_len]);
        if (c == '\0') {
            break;
        }
        v->comm[v->comm_len++] = c;
    }
    /* The slot was freed or taken over while it was read: not this process's. */
    return LD(&p->pid) == pid && LD(&p->ticket) == ticket;
}

static int
server_order(const void *a, const void *b)
{
    const struct server_view *x = a, *y = b;
    int c = memcmp(x->id, y->id, x->id_len < y->id_len ? x->id_len : y->id_len);
    return c != 0 ? c : (x->id_len > y->id_len) - (x->id_len < y->id_len);
}

static int
proc_order(const void *a, const void *b)
{
    const struct proc_view *x = a, *y = b;
    return (x->pid > y->pid) - (x->pid < y->pid);
}

static int
snapshot_read(const struct mcs_seg *seg, struct snapshot *snap, char *err, size_t errlen)
{
    if (mcs_seg_broken(seg)) {
        snprintf(err, errlen, "MCSHIM_SHARED: %s was marked broken (the next process to start rebuilds it)",
                 snap->path);
        return -1;
    }
    uint64_t now = mcs_shared_now_ms();
    uint8_t boot[16];
    mcs_shared_boot_id(boot);
    snap->same_boot = true;
    for (size_t k = 0; k < sizeof(boot); k++) {
        snap->same_boot = snap->same_boot && LD(&seg->header.boot_id[k]) == boot[k];
    }
    snap->age_ms = age_of(now, LD(&seg->header.created_ms), snap->same_boot);
    snap->attaches = LD(&seg->header.attaches);
    for (uint32_t i = 0; i < MCS_SEG_SERVERS; i++) {
        if (LD(&seg->servers[i].claim) == 2) {
            server_read(&seg->servers[i], i, seg, now, snap->same_boot, &snap->servers[snap->nservers++]);
        }
    }
    /* A process of another boot is gone, whatever its pid and ticket say now. */
    for (uint32_t i = 0; i < MCS_SEG_PROCS && snap->same_boot; i++) {
        if (proc_read(&seg->procs[i], now, &snap->procs[snap->nprocs])) {
            snap->nprocs++;
        }
    }
    qsort(snap->servers, snap->nservers, sizeof(snap->servers[0]), server_order);
    qsort(snap->procs, snap->nprocs, sizeof(snap->procs[0]), proc_order);
    return 0;
}

/* Copies the mapped segment's contents into snap. Returns 0, or -1 with err. */
static int
snapshot_take(const struct mcs_seg *seg, struct snapshot *snap, const char *path, char *err, size_t errlen)
{
    memset(snap, 0, sizeof(*snap));
    snap->path = path;
    if (sigsetjmp(bus_jump, 1) != 0) {
        bus_armed = 0;
        snprintf(err, errlen, "MCSHIM_SHARED: %s was cut short while it was read", path);
        return -1;
    }
    bus_armed = 1;
    int rc = snapshot_read(seg, snap, err, errlen);
    bus_armed = 0;
    return rc;
}

/* ---- text forms ---- */

/* The printable form of bytes p[0, n): see the file comment. out holds 4n + 1. */
static void
shown(char *out, const char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\\') {
            *out++ = '\\';
            *out++ = '\\';
        } else if (c >= 0x20 && c < 0x7f) {
            *out++ = (char)c;
        } else {
            *out++ = '\\';
            *out++ = 'x';
            *out++ = hex[c >> 4];
            *out++ = hex[c & 15];
        }
    }
    *out = '\0';
}

/* s (printable ASCII) as a JSON string, quotes included. */
static void
put_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s != '\0'; s++) {
        if (*s == '"' || *s == '\\') {
            fputc('\\', f);
        }
        fputc(*s, f);
    }
    fputc('"', f);
}

/* s as a Prometheus label value (0.0.4: backslash, double quote and newline escaped), no quotes. */
static void
put_label_value(FILE *f, const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '\n') {
            fputs("\\n", f);
            continue;
        }
        if (*s == '"' || *s == '\\') {
            fputc('\\', f);
        }
        fputc(*s, f);
    }
}

static const char *
health_name(uint32_t h)
{
    return h < MCS_HEALTH_COUNT ? health_names[h] : "corrupt";
}

/* Why a down server is down; NULL when it is not down. */
static const char *
why_name(const struct server_view *s)
{
    if (s->health != MCS_HEALTH_DOWN) {
        return NULL;
    }
    return s->why < MCS_FAILURE_COUNT ? failure_names[s->why] : "corrupt";
}

/* "overflow,missed_flush_all", or "" for none. */
static void
flag_names(uint32_t flags, const char *sep, bool quoted, char *out, size_t cap)
{
    static const struct {
        uint32_t bit;
        const char *name;
    } known[] = { { MCS_SEG_F_OVERFLOW, "overflow" }, { MCS_SEG_F_FLUSH, "missed_flush_all" } };
    size_t n = 0;
    out[0] = '\0';
    const char *q = quoted ? "\"" : "";
    for (size_t k = 0; k < sizeof(known) / sizeof(known[0]); k++) {
        if (flags & known[k].bit) {
            n += (size_t)snprintf(out + n, cap - n, "%s%s%s%s", n > 0 ? sep : "", q, known[k].name, q);
            flags &= ~known[k].bit;
        }
    }
    if (flags != 0) {
        snprintf(out + n, cap - n, "%s%sother%s", n > 0 ? sep : "", q, q);
    }
}

/* A duration for people: "-", "850ms", "12.3s", "5m02s", "3h04m", "2d03h". */
static void
duration(char *out, size_t cap, uint64_t ms)
{
    if (ms == AGE_UNKNOWN) {
        snprintf(out, cap, "-");
    } else if (ms < 1000) {
        snprintf(out, cap, "%" PRIu64 "ms", ms);
    } else if (ms < 60000) {
        snprintf(out, cap, "%" PRIu64 ".%" PRIu64 "s", ms / 1000, ms % 1000 / 100);
    } else if (ms < 3600000) {
        snprintf(out, cap, "%" PRIu64 "m%02" PRIu64 "s", ms / 60000, ms / 1000 % 60);
    } else if (ms < 86400000) {
        snprintf(out, cap, "%" PRIu64 "h%02" PRIu64 "m", ms / 3600000, ms / 60000 % 60);
    } else {
        snprintf(out, cap, "%" PRIu64 "d%02" PRIu64 "h", ms / 86400000, ms / 3600000 % 24);
    }
}

/* ---- the table form ---- */

#define TABLE_COLS 16

/* A table of strings printed with aligned columns. Owned by its caller (table_free). */
struct table {
    size_t ncols;
    size_t ncells;
    size_t cap;
    char **cells;                  /* row after row, ncols per row; the first row is the header */
    bool   right[TABLE_COLS];      /* right-aligned (numbers) */
};

static void table_cell(struct table *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
table_cell(struct table *t, const char *fmt, ...)
{
    if (t->ncells == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 64;
        char **cells = realloc(t->cells, t->cap * sizeof(*cells));
        if (cells == NULL) {
            out_of_memory();
        }
        t->cells = cells;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&t->cells[t->ncells], fmt, ap);
    va_end(ap);
    if (n < 0) {
        out_of_memory();
    }
    t->ncells++;
}

static void
table_print(FILE *f, const struct table *t)
{
    size_t width[TABLE_COLS] = { 0 };
    for (size_t i = 0; i < t->ncells; i++) {
        size_t len = strlen(t->cells[i]);
        if (len > width[i % t->ncols]) {
            width[i % t->ncols] = len;
        }
    }
    for (size_t i = 0; i < t->ncells; i++) {
        size_t col = i % t->ncols;
        bool last = col == t->ncols - 1;
        int w = (int)width[col];
        if (t->right[col]) {
            fprintf(f, "%*s", w, t->cells[i]);
        } else {
            fprintf(f, "%-*s", last ? 0 : w, t->cells[i]);
        }
        fputs(last ? "\n" : "  ", f);
    }
}

static void
table_free(struct table *t)
{
    for (size_t i = 0; i < t->ncells; i++) {
        free(t->cells[i]);
    }
    free(t->cells);
}

static void
print_table(FILE *f, const struct snapshot *snap)
{
    static char path[PATH_SHOWN];
    char age[32];
    shown(path, snap->path, strnlen(snap->path, SEG_PATH_MAX));
    duration(age, sizeof(age), snap->age_ms);
    fprintf(f, "mcshim stats: %s  segment age %s  processes %" PRIu32 "  attaches %" PRIu64 "%s\n", path, age,
            snap->nprocs, snap->attaches,
            snap->same_boot ? "" : "  (written in another boot: its times and processes are gone)");

    fputc('\n', f);
    if (snap->nservers == 0) {
        fputs("no servers in use\n", f);
    } else {
        struct table t = { .ncols = 9, .right = { [2] = true, [4] = true, [6] = true, [8] = true } };
        static const char *const head[] = { "SERVER", "STATE", "EPOCH", "CHANGED", "BY", "WHY", "LEASE", "FLAGS",
                                            "MISSED" };
        for (size_t c = 0; c < t.ncols; c++) {
            table_cell(&t, "%s", head[c]);
        }
        for (uint32_t i = 0; i < snap->nservers; i++) {
            const struct server_view *s = &snap->servers[i];
            char id[SHOWN_MAX], ago[32], flags[64];
            shown(id, s->id, s->id_len);
            duration(ago, sizeof(ago), s->changed_ago_ms);
            flag_names(s->flags, ",", false, flags, sizeof(flags));
            const char *why = why_name(s);
            table_cell(&t, "%s", id);
            table_cell(&t, "%s", health_name(s->health));
            table_cell(&t, "%" PRIu64, s->epoch);
            table_cell(&t, "%s", s->changed_ago_ms == AGE_UNKNOWN ? "-" : ago);
            if (s->changed_by != 0) {
                table_cell(&t, "%" PRIu32, s->changed_by);
            } else {
                table_cell(&t, "-");
            }
            table_cell(&t, "%s", why != NULL ? why : "-");
            if (s->lease_pid != 0) {
                table_cell(&t, "%" PRIu32, s->lease_pid);
            } else {
                table_cell(&t, "-");
            }
            table_cell(&t, "%s", flags[0] != '\0' ? flags : "-");
            table_cell(&t, "%" PRIu64, s->missed);
        }
        table_print(f, &t);
        table_free(&t);

        fputc('\n', f);
        struct table c = { .ncols = 1 + MCS_SEG_COUNTER_COUNT };
        _Static_assert(1 + MCS_SEG_COUNTER_COUNT <= TABLE_COLS, "the counters fit one table");
        table_cell(&c, "SERVER");
        for (uint32_t k = 0; k < MCS_SEG_COUNTER_COUNT; k++) {
            c.right[1 + k] = true;
            table_cell(&c, "%s", mcs_seg_counter_name((enum mcs_seg_counter)k));
        }
        for (uint32_t i = 0; i < snap->nservers; i++) {
            const struct server_view *s = &snap->servers[i];
            char id[SHOWN_MAX];
            shown(id, s->id, s->id_len);
            table_cell(&c, "%s", id);
            for (uint32_t k = 0; k < MCS_SEG_COUNTER_COUNT; k++) {
                table_cell(&c, "%" PRIu64, s->counters[k]);
            }
        }
        table_print(f, &c);
        table_free(&c);
    }

    fputc('\n', f);
    if (snap->nprocs == 0) {
        fputs("no processes attached\n", f);
        return;
    }
    struct table t = { .ncols = 6, .right = { [0] = true, [2] = true, [3] = true, [4] = true, [5] = true } };
    static const char *const head[] = { "PID", "COMM", "UPTIME", "REQUESTS", "SERVERS_DOWN", "HEARTBEAT" };
    for (size_t c = 0; c < t.ncols; c++) {
        table_cell(&t, "%s", head[c]);
    }
    for (uint32_t i = 0; i < snap->nprocs; i++) {
        const struct proc_view *p = &snap->procs[i];
        char comm[4 * sizeof(p->comm) + 1], up[32], seen[32];
        shown(comm, p->comm, p->comm_len);
        duration(up, sizeof(up), p->uptime_ms);
        duration(seen, sizeof(seen), p->heartbeat_ago_ms);
        table_cell(&t, "%" PRIu32, p->pid);
        table_cell(&t, "%s", comm);
        table_cell(&t, "%s", up);
        table_cell(&t, "%" PRIu64, p->requests);
        table_cell(&t, "%" PRIu64, p->servers_down);
        table_cell(&t, "%s", seen);
    }
    table_print(f, &t);
    table_free(&t);
}

/* ---- JSON ---- */

static void
put_json_uint_or_null(FILE *f, uint64_t v, bool known)
{
    if (known) {
        fprintf(f, "%" PRIu64, v);
    } else {
        fputs("null", f);
    }
}

static void
print_json(FILE *f, const struct snapshot *snap)
{
    static char path[PATH_SHOWN];
    shown(path, snap->path, strnlen(snap->path, SEG_PATH_MAX));
    fputs("{\"path\":", f);
    put_json_string(f, path);
    fputs(",\"age_ms\":", f);
    put_json_uint_or_null(f, snap->age_ms, snap->age_ms != AGE_UNKNOWN);
    fprintf(f, ",\"same_boot\":%s,\"attaches\":%" PRIu64 ",\n\"servers\":[", snap->same_boot ? "true" : "false",
            snap->attaches);
    for (uint32_t i = 0; i < snap->nservers; i++) {
        const struct server_view *s = &snap->servers[i];
        char id[SHOWN_MAX], flags[96];
        shown(id, s->id, s->id_len);
        fputs(i > 0 ? ",\n {\"server\":" : "\n {\"server\":", f);
        put_json_string(f, id);
        fprintf(f, ",\"state\":\"%s\",\"epoch\":%" PRIu64 ",\"changed_ago_ms\":", health_name(s->health), s->epoch);
        put_json_uint_or_null(f, s->changed_ago_ms, s->changed_ago_ms != AGE_UNKNOWN);
        fputs(",\"changed_by\":", f);
        put_json_uint_or_null(f, s->changed_by, s->changed_by != 0);
        const char *why = why_name(s);
        fputs(",\"why\":", f);
        if (why != NULL) {
            put_json_string(f, why);
        } else {
            fputs("null", f);
        }
        fputs(",\"lease_pid\":", f);
        put_json_uint_or_null(f, s->lease_pid, s->lease_pid != 0);
        flag_names(s->flags, ",", true, flags, sizeof(flags));
        fprintf(f, ",\"flags\":[%s],\"missed_keys\":%" PRIu64 ",\"counters\":{", flags, s->missed);
        for (uint32_t k = 0; k < MCS_SEG_COUNTER_COUNT; k++) {
            fprintf(f, "%s\"%s\":%" PRIu64, k > 0 ? "," : "", mcs_seg_counter_name((enum mcs_seg_counter)k),
                    s->counters[k]);
        }
        fputs("}}", f);
    }
    fputs("],\n\"processes\":[", f);
    for (uint32_t i = 0; i < snap->nprocs; i++) {
        const struct proc_view *p = &snap->procs[i];
        char comm[4 * sizeof(p->comm) + 1];
        shown(comm, p->comm, p->comm_len);
        fprintf(f, "%s {\"pid\":%" PRIu32 ",\"comm\":", i > 0 ? ",\n" : "\n", p->pid);
        put_json_string(f, comm);
        fputs(",\"uptime_ms\":", f);
        put_json_uint_or_null(f, p->uptime_ms, p->uptime_ms != AGE_UNKNOWN);
        fprintf(f, ",\"requests\":%" PRIu64 ",\"servers_down\":%" PRIu64 ",\"heartbeat_ago_ms\":", p->requests,
                p->servers_down);
        put_json_uint_or_null(f, p->heartbeat_ago_ms, p->heartbeat_ago_ms != AGE_UNKNOWN);
        fputs("}", f);
    }
    fputs("]}\n", f);
}

/* ---- Prometheus text exposition format 0.0.4 ---- */

/* The # HELP and # TYPE lines of one metric (help: no backslash or newline). */
static void
prom_family(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
prom_server(FILE *f, const char *name, const struct server_view *s)
{
    char id[SHOWN_MAX];
    shown(id, s->id, s->id_len);
    fprintf(f, "%s{server=\"", name);
    put_label_value(f, id);
    fputs("\"", f);
}

static void
prom_process(FILE *f, const char *name, const struct proc_view *p)
{
    char comm[4 * sizeof(p->comm) + 1];
    shown(comm, p->comm, p->comm_len);
    fprintf(f, "%s{pid=\"%" PRIu32 "\",comm=\"", name, p->pid);
    put_label_value(f, comm);
    fputs("\"}", f);
}

/* The per-server gauges other than health, by index. */
enum server_gauge { G_UP, G_EPOCH, G_STATE_AGE, G_LEASE, G_OVERFLOW, G_MISSED_FLUSH, G_MISSED_KEYS, G_COUNT };

static const struct {
    const char *name;
    const char *help;
} server_gauges[G_COUNT] = {
    [G_UP] = { "mcshim_server_up", "1 if the server gets application traffic (up or warming), else 0" },
    [G_EPOCH] = { "mcshim_server_epoch", "The server's health epoch (one more at each move to down)" },
    [G_STATE_AGE] = { "mcshim_server_state_age_seconds", "Seconds since the server's health last changed" },
    [G_LEASE] = { "mcshim_server_lease_held", "1 while a process holds the server's probe and rejoin lease" },
    [G_OVERFLOW] = { "mcshim_server_log_overflow",
                     "1 if its missed-writes log lost a key: it is flushed when it comes back from a cut" },
    [G_MISSED_FLUSH] = { "mcshim_server_missed_flush_all",
                         "1 if it missed a flush_all: it is flushed when it comes back" },
    [G_MISSED_KEYS] = { "mcshim_server_missed_keys", "Keys of writes it missed, waiting in the host's log" },
};

/* Server s's value of gauge g; false when it has none (unknown). */
static bool
server_gauge(const struct server_view *s, enum server_gauge g, double *v)
{
    switch (g) {
    case G_UP:
        *v = s->health == MCS_HEALTH_UP || s->health == MCS_HEALTH_WARMING;
        return true;
    case G_EPOCH:
        *v = (double)s->epoch;
        return true;
    case G_STATE_AGE:
        *v = (double)s->changed_ago_ms / 1000.0;
        return s->changed_ago_ms != AGE_UNKNOWN;
    case G_LEASE:
        *v = s->lease_pid != 0;
        return true;
    case G_OVERFLOW:
        *v = (s->flags & MCS_SEG_F_OVERFLOW) != 0;
        return true;
    case G_MISSED_FLUSH:
        *v = (s->flags & MCS_SEG_F_FLUSH) != 0;
        return true;
    case G_MISSED_KEYS:
        *v = (double)s->missed;
        return true;
    default:
        return false;
    }
}

static void
print_prometheus(FILE *f, const struct snapshot *snap)
{
    prom_family(f, "mcshim_servers", "gauge", "Server entries in use in the host-wide segment");
    fprintf(f, "mcshim_servers %" PRIu32 "\n", snap->nservers);
    prom_family(f, "mcshim_server_health", "gauge", "1 for the server's current health state, 0 for the others");
    for (uint32_t i = 0; i < snap->nservers; i++) {
        const struct server_view *s = &snap->servers[i];
        for (uint32_t h = 0; h < MCS_HEALTH_COUNT; h++) {
            prom_server(f, "mcshim_server_health", s);
            fprintf(f, ",state=\"%s\"} %d\n", health_names[h], s->health == h);
        }
    }
    for (int g = 0; g < G_COUNT; g++) {
        prom_family(f, server_gauges[g].name, "gauge", server_gauges[g].help);
        for (uint32_t i = 0; i < snap->nservers; i++) {
            double v;
            if (server_gauge(&snap->servers[i], (enum server_gauge)g, &v)) {
                prom_server(f, server_gauges[g].name, &snap->servers[i]);
                fprintf(f, "} %.15g\n", v);
            }
        }
    }
    for (uint32_t k = 0; k < MCS_SEG_COUNTER_COUNT; k++) {
        char name[96], help[160];
        snprintf(name, sizeof(name), "mcshim_server_%s_total", mcs_seg_counter_name((enum mcs_seg_counter)k));
        snprintf(help, sizeof(help), "%s%s", mcs_seg_counter_help((enum mcs_seg_counter)k),
                 "; summed over the host since the segment was created");
        prom_family(f, name, "counter", help);
        for (uint32_t i = 0; i < snap->nservers; i++) {
            prom_server(f, name, &snap->servers[i]);
            fprintf(f, "} %" PRIu64 "\n", snap->servers[i].counters[k]);
        }
    }

    prom_family(f, "mcshim_processes", "gauge", "Processes attached to the segment and alive");
    fprintf(f, "mcshim_processes %" PRIu32 "\n", snap->nprocs);
    prom_family(f, "mcshim_process_requests_total", "counter", "Application requests of the process");
    for (uint32_t i = 0; i < snap->nprocs; i++) {
        prom_process(f, "mcshim_process_requests_total", &snap->procs[i]);
        fprintf(f, " %" PRIu64 "\n", snap->procs[i].requests);
    }
    prom_family(f, "mcshim_process_servers_down", "gauge", "Servers the process sees down or rejoining");
    for (uint32_t i = 0; i < snap->nprocs; i++) {
        prom_process(f, "mcshim_process_servers_down", &snap->procs[i]);
        fprintf(f, " %" PRIu64 "\n", snap->procs[i].servers_down);
    }
    prom_family(f, "mcshim_process_uptime_seconds", "gauge", "Seconds since the process attached");
    for (uint32_t i = 0; i < snap->nprocs; i++) {
        if (snap->procs[i].uptime_ms != AGE_UNKNOWN) {
            prom_process(f, "mcshim_process_uptime_seconds", &snap->procs[i]);
            fprintf(f, " %.3f\n", (double)snap->procs[i].uptime_ms / 1000.0);
        }
    }
    prom_family(f, "mcshim_process_heartbeat_age_seconds", "gauge", "Seconds since the process's last heartbeat");
    for (uint32_t i = 0; i < snap->nprocs; i++) {
        if (snap->procs[i].heartbeat_ago_ms != AGE_UNKNOWN) {
            prom_process(f, "mcshim_process_heartbeat_age_seconds", &snap->procs[i]);
            fprintf(f, " %.3f\n", (double)snap->procs[i].heartbeat_ago_ms / 1000.0);
        }
    }

    prom_family(f, "mcshim_segment_age_seconds", "gauge", "Seconds since the segment was created (this boot)");
    if (snap->age_ms != AGE_UNKNOWN) {
        fprintf(f, "mcshim_segment_age_seconds %.3f\n", (double)snap->age_ms / 1000.0);
    }
    prom_family(f, "mcshim_segment_attaches_total", "counter", "Processes that attached to the segment");
    fprintf(f, "mcshim_segment_attaches_total %" PRIu64 "\n", snap->attaches);
}

/* ---- main ---- */

static int
usage_error(const char *what, const char *arg)
{
    fprintf(stderr, "%s: %s%s%s (%s)\n", PROG, what, arg ? " " : "", arg ? arg : "", USAGE);
    return 2;
}

/* Renders one frame into a buffer and writes it to stdout at once (watch: after clearing the screen). */
static int
frame_write(const struct snapshot *snap, enum format fmt, bool clear)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL) {
        out_of_memory();
    }
    if (clear) {
        fputs("\033[H\033[2J", f);
    }
    if (fmt == FORMAT_JSON) {
        print_json(f, snap);
    } else if (fmt == FORMAT_PROMETHEUS) {
        print_prometheus(f, snap);
    } else {
        print_table(f, snap);
    }
    if (fclose(f) != 0) {
        out_of_memory();
    }
    bool ok = fwrite(buf, 1, len, stdout) == len && fflush(stdout) == 0;
    free(buf);
    if (!ok) {
        fprintf(stderr, "%s: cannot write the output: %s\n", PROG, strerror(errno));
        return -1;
    }
    return 0;
}

/* Sleeps until *next (monotonic), then sets the next deadline interval_ns later. */
static void
tick_wait(struct timespec *next, uint64_t interval_ns)
{
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, next, NULL) == EINTR) {
    }
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    uint64_t at = (uint64_t)next->tv_sec * 1000000000u + (uint64_t)next->tv_nsec + interval_ns;
    uint64_t now_ns = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
    if (at <= now_ns) {
        at = now_ns + interval_ns;   /* fell behind (suspended, slow terminal): no burst of frames */
    }
    next->tv_sec = (time_t)(at / 1000000000u);
    next->tv_nsec = (long)(at % 1000000000u);
}

int
main(int argc, char **argv)
{
    enum format fmt = FORMAT_TABLE;
    bool watch = false, fmt_given = false;
    double seconds = 1.0;
    const char *file = NULL;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--json") == 0 || strcmp(a, "--prometheus") == 0) {
            if (fmt_given) {
                return usage_error("give one of --json and --prometheus, once:", a);
            }
            fmt_given = true;
            fmt = a[2] == 'j' ? FORMAT_JSON : FORMAT_PROMETHEUS;
        } else if (strcmp(a, "--watch") == 0) {
            watch = true;
        } else if (strncmp(a, "--watch=", 8) == 0) {
            char *end;
            errno = 0;
            seconds = strtod(a + 8, &end);
            if (a[8] == '\0' || *end != '\0' || errno != 0 || !(seconds > 0 && seconds <= 1e9)) {
                return usage_error("--watch wants a number of seconds greater than 0, got", a + 8);
            }
            watch = true;
        } else if (strcmp(a, "--file") == 0 || strncmp(a, "--file=", 7) == 0) {
            file = a[6] == '=' ? a + 7 : (i + 1 < argc ? argv[++i] : NULL);
            if (file == NULL || file[0] == '\0') {
                return usage_error("--file needs a path", NULL);
            }
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            printf("%s\n\nReads the host-wide state segment of the shim's processes (read-only) and prints its\n"
                   "servers and live processes: a table, --json, or --prometheus (text format 0.0.4).\n"
                   "--watch redraws every SECONDS (default 1). The segment is --file, else MCSHIM_SHARED\n"
                   "(unless off), else /dev/shm/mcshim-<uid>.seg; MCSHIM_SHARED_MODE=0660 accepts a group's.\n",
                   USAGE);
            return 0;
        } else {
            return usage_error("unknown argument", a);
        }
    }

    unsigned mode = 0600;
    const char *m = getenv("MCSHIM_SHARED_MODE");
    if (m != NULL && m[0] != '\0') {
        if (strcmp(m, "0660") == 0 || strcmp(m, "660") == 0) {
            mode = 0660;
        } else if (strcmp(m, "0600") != 0 && strcmp(m, "600") != 0) {
            return usage_error("MCSHIM_SHARED_MODE must be 0600 or 0660, not", m);
        }
    }
    char path[SEG_PATH_MAX];
    const char *env = getenv("MCSHIM_SHARED");
    if (file == NULL && env != NULL && env[0] != '\0' && strcmp(env, "off") != 0) {
        file = env;
    }
    if (file == NULL) {
        mcs_shared_default_path(path, sizeof(path));
    } else if (strlen(file) >= sizeof(path)) {
        return usage_error("path too long:", file);
    } else {
        snprintf(path, sizeof(path), "%s", file);
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_bus;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);

    struct snapshot *snap = malloc(sizeof(*snap));
    if (snap == NULL) {
        out_of_memory();
    }
    struct mcs_shared sh;
    memset(&sh, 0, sizeof(sh));
    char err[ERR_MAX];
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    uint64_t interval_ns = (uint64_t)(seconds * 1e9);
    int rc = 0;
    for (;;) {
        if (sh.seg != NULL && !mcs_shared_current(&sh)) {
            mcs_shared_unmap(&sh);   /* replaced (rebuilt) or removed: map what is there now */
        }
        int got = -1;
        if (sh.seg != NULL || mcs_shared_map(&sh, path, mode, false, err, sizeof(err)) == 0) {
            got = snapshot_take(sh.seg, snap, path, err, sizeof(err));
            if (got != 0) {
                mcs_shared_unmap(&sh);
            }
        }
        if (got == 0) {
            if (frame_write(snap, fmt, watch) != 0) {
                rc = 1;
                break;
            }
        } else if (!watch) {
            fprintf(stderr, "%s\n", err);
            rc = 1;
            break;
        } else {
            fputs("\033[H\033[2J", stdout);
            fflush(stdout);
            fprintf(stderr, "%s\n", err);
        }
        if (!watch) {
            break;
        }
        tick_wait(&next, interval_ns);
    }
    mcs_shared_unmap(&sh);
    free(snap);
    return rc;
}
