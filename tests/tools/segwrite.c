/*
 * tests/tools/segwrite.c: writes a host-wide state segment for the tests of
 * the outside view (tests/integration/test_stats_tool.py), without a library
 * or servers: the segment is made and changed with the library's own code
 * (preload/lib/shared.c, preload/core/hostseg.c).
 *
 *     segwrite PATH COMMAND...
 *
 * Maps PATH read-write with mode 0600 (creating it), runs the commands in
 * order, prints one JSON line {"pid", "ticket", "slots": {pid: slot}} and
 * exits, or with `hold` waits for EOF on stdin first (so its own process slot
 * belongs to a live process until the test closes the pipe; it exits without
 * detaching, as a killed process would). Commands:
 *
 *   server ID                          claim ID's entry (up)
 *   move ID HEALTH WHY PID AGO_MS      move it to HEALTH (up, down, ...) from its current state,
 *                                      as PID AGO_MS ago; WHY: index in MCS_FAILURE_LIST
 *   raw ID STATE|WHY VALUE             store a raw state word or why value (corruption)
 *   count ID COUNTER N                 add N to a counter (by its name in MCS_SEG_COUNTERS)
 *   log ID KEY                         record KEY in the missed-writes log
 *   lease ID PID MS                    PID takes the probe lease for MS
 *   flag ID overflow|flush             set a flag
 *   attach REQUESTS DOWN               attach this process, with these requests / servers down
 *   proc PID TICKET                    attach a slot for another PID (TICKET 0: its real one)
 *   otherboot                          mark the segment as written in another boot
 *   hold                               after the output, wait for EOF on stdin
 *
 * An ID may hold any bytes: \xHH in it stands for byte HH. Exit 1 on a failed
 * operation, 2 on bad arguments (one line on stderr).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "preload/core/hostseg.h"
#include "preload/core/router.h"
#include "preload/lib/shared.h"

static const char *const health_names[] = {
#define HEALTH_NAME(id, name) name,
    MCS_HEALTH_LIST(HEALTH_NAME)
#undef HEALTH_NAME
};

static int
fail(int rc, const char *what, const char *arg)
{
    fprintf(stderr, "segwrite: %s%s%s\n", what, arg ? ": " : "", arg ? arg : "");
    return rc;
}

static uint64_t
number(const char *s, int *bad)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 0);
    if (*s == '\0' || *end != '\0') {
        *bad = 1;
    }
    return v;
}

/* ID with \xHH decoded into out; returns its length. */
static size_t
decode_id(const char *s, char *out, size_t cap)
{
    size_t n = 0;
    while (*s != '\0' && n < cap) {
        unsigned v;
        if (s[0] == '\\' && s[1] == 'x' && sscanf(s + 2, "%2x", &v) == 1 && s[2] != '\0' && s[3] != '\0') {
            out[n++] = (char)v;
            s += 4;
        } else {
            out[n++] = *s++;
        }
    }
    return n;
}

/* The entry of ID (claimed if absent), or MCS_SEG_NONE. */
static uint32_t
entry(struct mcs_seg *seg, const char *arg)
{
    char id[MCS_SEG_ID_MAX + 1];
    size_t len = decode_id(arg, id, sizeof(id));
    return mcs_seg_server_find(seg, id, len, true);
}

int
main(int argc, char **argv)
{
    if (argc < 2) {
        return fail(2, "usage: segwrite PATH COMMAND...", NULL);
    }
    struct mcs_shared sh;
    char err[5000];
    if (mcs_shared_map(&sh, argv[1], 0600, true, err, sizeof(err)) != 0) {
        return fail(1, err, NULL);
    }
    struct mcs_seg *seg = sh.seg;
    uint64_t now = mcs_shared_now_ms();
    uint32_t self = (uint32_t)getpid();
    uint64_t ticket = mcs_shared_proc_ticket((long)self);
    char slots[4096] = "";
    size_t used = 0;
    int hold = 0, bad = 0;
    int i = 2;

#define NEED(n) \
    do { \
        if (i + (n) >= argc) { \
            return fail(2, "missing arguments for", argv[i]); \
        } \
    } while (0)

    for (; i < argc; i++) {
        const char *cmd = argv[i];
        uint32_t e = MCS_SEG_NONE;
        if (strcmp(cmd, "server") == 0) {
            NEED(1);
            e = entry(seg, argv[++i]);
        } else if (strcmp(cmd, "move") == 0) {
            NEED(5);
            e = entry(seg, argv[i + 1]);
            uint32_t to = MCS_HEALTH_COUNT;
            for (uint32_t h = 0; h < MCS_HEALTH_COUNT; h++) {
                to = strcmp(argv[i + 2], health_names[h]) == 0 ? h : to;
            }
            uint32_t why = (uint32_t)number(argv[i + 3], &bad);
            uint32_t pid = (uint32_t)number(argv[i + 4], &bad);
            uint64_t ago = number(argv[i + 5], &bad);
            if (to == MCS_HEALTH_COUNT || bad || ago > now) {
                return fail(2, "bad move", argv[i + 2]);
            }
            struct mcs_seg_health from;
            if (e == MCS_SEG_NONE || mcs_seg_health_get(seg, e, &from) != MCS_SEG_OK
                || mcs_seg_health_move(seg, e, &from, to, why, pid, now - ago, now + 60000, now + 60000)
                       != MCS_SEG_OK) {
                return fail(1, "move failed", argv[i + 1]);
            }
            i += 5;
        } else if (strcmp(cmd, "raw") == 0) {
            NEED(3);
            e = entry(seg, argv[i + 1]);
            uint64_t v = number(argv[i + 3], &bad);
            if (e != MCS_SEG_NONE && strcmp(argv[i + 2], "state") == 0) {
                __atomic_store_n(&seg->servers[e].state, v, __ATOMIC_RELEASE);
            } else if (e != MCS_SEG_NONE && strcmp(argv[i + 2], "why") == 0) {
                __atomic_store_n(&seg->servers[e].why, (uint32_t)v, __ATOMIC_RELEASE);
            } else {
                bad = 1;
            }
            i += 3;
        } else if (strcmp(cmd, "count") == 0) {
            NEED(3);
            e = entry(seg, argv[i + 1]);
            uint32_t c = 0;
            while (c < MCS_SEG_COUNTER_COUNT && strcmp(mcs_seg_counter_name((enum mcs_seg_counter)c), argv[i + 2])) {
                c++;
            }
            if (c == MCS_SEG_COUNTER_COUNT) {
                return fail(2, "no such counter", argv[i + 2]);
            }
            mcs_seg_count(seg, e, (enum mcs_seg_counter)c, number(argv[i + 3], &bad));
            i += 3;
        } else if (strcmp(cmd, "log") == 0) {
            NEED(2);
            e = entry(seg, argv[i + 1]);
            if (e == MCS_SEG_NONE || mcs_seg_log_add(seg, e, argv[i + 2], strlen(argv[i + 2])) != MCS_SEG_OK) {
                return fail(1, "log add failed", argv[i + 2]);
            }
            i += 2;
        } else if (strcmp(cmd, "lease") == 0) {
            NEED(3);
            e = entry(seg, argv[i + 1]);
            uint32_t pid = (uint32_t)number(argv[i + 2], &bad);
            if (e == MCS_SEG_NONE || !mcs_seg_lease_take(seg, e, pid, now, number(argv[i + 3], &bad))) {
                return fail(1, "lease not taken", argv[i + 1]);
            }
            i += 3;
        } else if (strcmp(cmd, "flag") == 0) {
            NEED(2);
            e = entry(seg, argv[i + 1]);
            uint32_t f = strcmp(argv[i + 2], "overflow") == 0 ? MCS_SEG_F_OVERFLOW
                         : strcmp(argv[i + 2], "flush") == 0  ? MCS_SEG_F_FLUSH
                                                              : 0;
            bad |= f == 0;
            mcs_seg_flags_set(seg, e, f);
            i += 2;
        } else if (strcmp(cmd, "attach") == 0 || strcmp(cmd, "proc") == 0) {
            NEED(2);
            bool own = cmd[0] == 'a';
            uint32_t pid = own ? self : (uint32_t)number(argv[i + 1], &bad);
            uint64_t t = own ? ticket : number(argv[i + 2], &bad);
            char comm[17] = { 0 };
            prctl(PR_GET_NAME, comm, 0, 0, 0);
            if (t == 0) {
                t = mcs_shared_proc_ticket((long)pid);
            }
            uint32_t slot = mcs_seg_proc_attach(seg, pid, t, own ? comm : "other", now - 1500);
            if (slot == MCS_SEG_NONE || bad) {
                return fail(1, "attach failed", cmd);
            }
            if (own) {
                __atomic_store_n(&seg->procs[slot].requests, number(argv[i + 1], &bad), __ATOMIC_RELEASE);
                __atomic_store_n(&seg->procs[slot].servers_down, number(argv[i + 2], &bad), __ATOMIC_RELEASE);
                __atomic_store_n(&seg->procs[slot].seen_ms, now - 250, __ATOMIC_RELEASE);
            }
            used += (size_t)snprintf(slots + used, sizeof(slots) - used, "%s\"%" PRIu32 "\":%" PRIu32,
                                     used > 0 ? "," : "", pid, slot);
            if (used >= sizeof(slots)) {
                return fail(2, "too many slots", NULL);
            }
            i += 2;
            e = 0;
        } else if (strcmp(cmd, "otherboot") == 0) {
            for (size_t k = 0; k < sizeof(seg->header.boot_id); k++) {
                seg->header.boot_id[k] ^= 0x5a;
            }
            e = 0;
        } else if (strcmp(cmd, "hold") == 0) {
            hold = 1;
            e = 0;
        } else {
            return fail(2, "unknown command", cmd);
        }
        if (bad) {
            return fail(2, "bad number in", cmd);
        }
        if (e == MCS_SEG_NONE) {
            return fail(1, "no entry for server", argv[i]);
        }
    }
    printf("{\"pid\":%" PRIu32 ",\"ticket\":%" PRIu64 ",\"slots\":{%s}}\n", self, ticket, slots);
    fflush(stdout);
    if (hold) {
        char buf[64];
        while (fread(buf, 1, sizeof(buf), stdin) > 0) {
        }
    }
    return 0;
}
