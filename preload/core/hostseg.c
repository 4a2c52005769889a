/*
 * preload/core/hostseg.c: the host-wide state segment's operations (see hostseg.h).
 *
 * Every access to a shared word goes through the ld/st/cas helpers below
 * (GCC/Clang __atomic builtins on plain fixed-width fields, so the layout is
 * plain memory). Sequentially consistent order where two processes must see at
 * least one of each other's writes (a key logged vs. a server coming back);
 * acquire/release elsewhere.
 */
#include "preload/core/hostseg.h"

#include <string.h>

#include "preload/core/router.h"

#define LD(p)        __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define ST(p, v)     __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define LD_SC(p)     __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define CAS(p, e, v) __atomic_compare_exchange_n((p), (e), (v), false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)

_Static_assert(sizeof(struct mcs_seg_header) <= 4096, "segment header fits its page");
_Static_assert((MCS_SEG_SLOTS & (MCS_SEG_SLOTS - 1)) == 0, "slot count is a power of two");
_Static_assert(MCS_SEG_SERVERS <= UINT16_MAX, "server index fits a slot's field");
_Static_assert(MCS_SEG_KEY_MAX <= 255, "key length fits one byte in mcs_seg_log_take's output");
_Static_assert(MCS_SEG_PROBES <= MCS_SEG_SLOTS, "probe sequence within the table");

static const char *const counter_names[] = {
#define MCS_SEG_COUNTER_NAME(name, help) #name,
    MCS_SEG_COUNTERS(MCS_SEG_COUNTER_NAME)
#undef MCS_SEG_COUNTER_NAME
};
static const char *const counter_help[] = {
#define MCS_SEG_COUNTER_HELP(name, help) help,
    MCS_SEG_COUNTERS(MCS_SEG_COUNTER_HELP)
#undef MCS_SEG_COUNTER_HELP
};

const char *
mcs_seg_counter_name(enum mcs_seg_counter c)
{
    return (unsigned)c < MCS_SEG_COUNTER_COUNT ? counter_names[c] : "?";
}

const char *
mcs_seg_counter_help(enum mcs_seg_counter c)
{
    return (unsigned)c < MCS_SEG_COUNTER_COUNT ? counter_help[c] : "?";
}

void
mcs_seg_format(struct mcs_seg *seg, const uint8_t boot_id[16], uint64_t now_ms)
{
    _Static_assert(MCS_HEALTH_UP == 0, "a zeroed server entry is up");
    memset(&seg->header, 0, sizeof(seg->header));
    seg->header.version = MCS_SEG_VERSION;
    seg->header.servers = MCS_SEG_SERVERS;
    seg->header.procs = MCS_SEG_PROCS;
    seg->header.slots = MCS_SEG_SLOTS;
    seg->header.size = MCS_SEG_SIZE;
    memcpy(seg->header.boot_id, boot_id, 16);
    seg->header.created_ms = now_ms;
    ST(&seg->header.magic, MCS_SEG_MAGIC);   /* last: a reader that sees it sees the rest */
}

enum mcs_seg_result
mcs_seg_check(struct mcs_seg *seg, uint64_t size, const uint8_t boot_id[16])
{
    const struct mcs_seg_header *h = &seg->header;
    if (size != MCS_SEG_SIZE || LD(&h->magic) != MCS_SEG_MAGIC || LD(&h->version) != MCS_SEG_VERSION
        || LD(&h->servers) != MCS_SEG_SERVERS || LD(&h->procs) != MCS_SEG_PROCS || LD(&h->slots) != MCS_SEG_SLOTS
        || LD(&h->size) != MCS_SEG_SIZE || mcs_seg_broken(seg)) {
        return MCS_SEG_CORRUPT;
    }
    if (memcmp(seg->header.boot_id, boot_id, 16) != 0) {
        /* Times of another boot mean nothing now: probe at once, no lease, no warm-up
         * window; the logs and states stay (the servers may have kept running). */
        for (uint32_t i = 0; i < MCS_SEG_SERVERS; i++) {
            struct mcs_seg_server *s = &seg->servers[i];
            ST(&s->retry_at_ms, 0);
            ST(&s->warm_until_ms, 0);
            ST(&s->lease_until_ms, 0);
            ST(&s->changed_ms, 0);
        }
        for (uint32_t i = 0; i < MCS_SEG_PROCS; i++) {
            ST(&seg->procs[i].pid, 0);   /* no process of another boot is alive */
        }
        memcpy(seg->header.boot_id, boot_id, 16);
    }
    __atomic_add_fetch(&seg->header.attaches, 1, __ATOMIC_RELAXED);
    return MCS_SEG_OK;
}

void
mcs_seg_set_broken(struct mcs_seg *seg)
{
    ST(&seg->header.broken, 1);
}

bool
mcs_seg_broken(const struct mcs_seg *seg)
{
    return LD(&seg->header.broken) != 0;
}

/* ---- servers ---- */

static uint64_t
fnv1a(uint64_t h, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* Does entry e hold id? Reads the bytes after seeing it in use (they are
 * written before the claim is published and never change afterwards). */
static bool
server_is(const struct mcs_seg_server *e, const char *id, size_t len)
{
    if (LD(&e->claim) != 2 || LD(&e->id_len) != len) {
        return false;
    }
    return memcmp(e->id, id, len) == 0;
}

uint32_t
mcs_seg_server_find(struct mcs_seg *seg, const char *id, size_t len, bool claim)
{
    if (len == 0 || len > MCS_SEG_ID_MAX) {
        return MCS_SEG_NONE;
    }
    uint32_t start = (uint32_t)(fnv1a(0xcbf29ce484222325ull, id, len) % MCS_SEG_SERVERS);
    /* Two passes: first find it anywhere, then claim the first free entry. A
     * claim in progress by another process ("1") for the same id may end up as a
     * second entry for it; both then stay in use: harmless, the id just has two
     * entries and the lower one is found first by everyone afterwards. */
    for (uint32_t n = 0; n < MCS_SEG_SERVERS; n++) {
        uint32_t i = (start + n) % MCS_SEG_SERVERS;
        if (server_is(&seg->servers[i], id, len)) {
            return i;
        }
    }
    if (!claim) {
        return MCS_SEG_NONE;
    }
    for (uint32_t n = 0; n < MCS_SEG_SERVERS; n++) {
        uint32_t i = (start + n) % MCS_SEG_SERVERS;
        struct mcs_seg_server *e = &seg->servers[i];
        uint32_t free_ = 0;
        if (CAS(&e->claim, &free_, 1)) {
            memcpy(e->id, id, len);
            e->id[len] = '\0';
            ST(&e->id_len, (uint32_t)len);
            ST(&e->state, (uint64_t)MCS_HEALTH_UP);
            ST(&e->flags, 0);
            ST(&e->lease_until_ms, 0);
            ST(&e->instance, 0);
            ST(&e->claim, 2);
            return i;
        }
        if (server_is(e, id, len)) {
            return i;   /* claimed by another process meanwhile */
        }
    }
    return MCS_SEG_NONE;
}

/* ---- health ---- */

enum mcs_seg_result
mcs_seg_health_get(const struct mcs_seg *seg, uint32_t i, struct mcs_seg_health *out)
{
    if (i >= MCS_SEG_SERVERS) {
        return MCS_SEG_CORRUPT;
    }
    uint64_t w = LD_SC(&seg->servers[i].state);
    out->health = (uint32_t)(w & 0xff);
    out->epoch = w >> 8;
    return out->health < MCS_HEALTH_COUNT ? MCS_SEG_OK : MCS_SEG_CORRUPT;
}

enum mcs_seg_result
mcs_seg_health_move(struct mcs_seg *seg, uint32_t i, struct mcs_seg_health *from, uint32_t to, uint32_t why,
                    uint32_t pid, uint64_t now_ms, uint64_t retry_at_ms, uint64_t warm_until_ms)
{
    if (i >= MCS_SEG_SERVERS || to >= MCS_HEALTH_COUNT) {
        return MCS_SEG_CORRUPT;
    }
    struct mcs_seg_server *e = &seg->servers[i];
    uint64_t expect = (from->epoch << 8) | from->health;
    uint64_t epoch = from->epoch + (to == MCS_HEALTH_DOWN && from->health != MCS_HEALTH_DOWN ? 1 : 0);
    uint64_t want = ((epoch & (UINT64_MAX >> 8)) << 8) | to;
    /* The times first: a process that sees the new state reads these after it.
     * A loser of the race below may have written them too: both are "now + the
     * same interval", near enough. */
    if (to == MCS_HEALTH_DOWN) {
        ST(&e->retry_at_ms, retry_at_ms);
    } else if (to == MCS_HEALTH_WARMING) {
        ST(&e->warm_until_ms, warm_until_ms);
    }
    if (!CAS(&e->state, &expect, want)) {
        from->health = (uint32_t)(expect & 0xff);
        from->epoch = expect >> 8;
        return MCS_SEG_BUSY;
    }
    ST(&e->changed_ms, now_ms);
    ST(&e->changed_by, pid);
    if (to == MCS_HEALTH_DOWN) {
        ST(&e->why, why);
    }
    from->health = to;
    from->epoch = epoch;
    return MCS_SEG_OK;
}

uint64_t
mcs_seg_retry_at(const struct mcs_seg *seg, uint32_t i)
{
    return i < MCS_SEG_SERVERS ? LD(&seg->servers[i].retry_at_ms) : 0;
}

void
mcs_seg_set_retry_at(struct mcs_seg *seg, uint32_t i, uint64_t at_ms)
{
    if (i < MCS_SEG_SERVERS) {
        ST(&seg->servers[i].retry_at_ms, at_ms);
    }
}

uint64_t
mcs_seg_warm_until(const struct mcs_seg *seg, uint32_t i)
{
    return i < MCS_SEG_SERVERS ? LD(&seg->servers[i].warm_until_ms) : 0;
}

bool
mcs_seg_lease_take(struct mcs_seg *seg, uint32_t i, uint32_t pid, uint64_t now_ms, uint64_t ms)
{
    if (i >= MCS_SEG_SERVERS) {
        return false;
    }
    struct mcs_seg_server *e = &seg->servers[i];
    uint64_t until = LD_SC(&e->lease_until_ms);
    /* Free or expired: anyone may take it. Held: only its holder renews it (the
     * pid is read after the time: a stale pid at worst lets its old holder
     * renew a lease another process just took, and both probe once). */
    if (until > now_ms && LD(&e->lease_pid) != pid) {
        return false;
    }
    if (!CAS(&e->lease_until_ms, &until, now_ms + ms)) {
        return false;
    }
    ST(&e->lease_pid, pid);
    return true;
}

void
mcs_seg_lease_drop(struct mcs_seg *seg, uint32_t i, uint32_t pid)
{
    if (i < MCS_SEG_SERVERS && LD(&seg->servers[i].lease_pid) == pid) {
        ST(&seg->servers[i].lease_until_ms, 0);
    }
}

uint64_t
mcs_seg_lease_until(const struct mcs_seg *seg, uint32_t i)
{
    return i < MCS_SEG_SERVERS ? LD_SC(&seg->servers[i].lease_until_ms) : 0;
}

uint32_t
mcs_seg_why(const struct mcs_seg *seg, uint32_t i, uint32_t count)
{
    uint32_t w = i < MCS_SEG_SERVERS ? LD(&seg->servers[i].why) : count;
    return w < count || count == 0 ? w : count - 1;
}

uint64_t
mcs_seg_instance(const struct mcs_seg *seg, uint32_t i)
{
    return i < MCS_SEG_SERVERS ? LD(&seg->servers[i].instance) : 0;
}

void
mcs_seg_set_instance(struct mcs_seg *seg, uint32_t i, uint64_t instance)
{
    if (i < MCS_SEG_SERVERS) {
        ST(&seg->servers[i].instance, instance);
    }
}

uint32_t
mcs_seg_flags(const struct mcs_seg *seg, uint32_t i)
{
    return i < MCS_SEG_SERVERS ? LD_SC(&seg->servers[i].flags) : MCS_SEG_F_OVERFLOW;
}

void
mcs_seg_flags_set(struct mcs_seg *seg, uint32_t i, uint32_t flags)
{
    if (i < MCS_SEG_SERVERS) {
        __atomic_or_fetch(&seg->servers[i].flags, flags, __ATOMIC_SEQ_CST);
    }
}

uint32_t
mcs_seg_flags_take(struct mcs_seg *seg, uint32_t i, uint32_t flags)
{
    if (i >= MCS_SEG_SERVERS) {
        return flags;
    }
    return __atomic_fetch_and(&seg->servers[i].flags, ~flags, __ATOMIC_SEQ_CST) & flags;
}

void
mcs_seg_count(struct mcs_seg *seg, uint32_t i, enum mcs_seg_counter c, uint64_t n)
{
    if (i < MCS_SEG_SERVERS && (unsigned)c < MCS_SEG_COUNTER_COUNT && n > 0) {
        __atomic_add_fetch(&seg->servers[i].counters[c], n, __ATOMIC_RELAXED);
    }
}

/* ---- missed-writes log ---- */

/* One key of server i left the log (the count never goes below zero). */
static void
log_keys_drop(struct mcs_seg *seg, uint32_t i)
{
    if (i >= MCS_SEG_SERVERS) {
        return;
    }
    uint64_t n = LD(&seg->servers[i].log_keys);
    for (int attempt = 0; attempt < 64 && n > 0; attempt++) {   /* bounded: a scribbler cannot hold us */
        if (CAS(&seg->servers[i].log_keys, &n, n - 1)) {
            break;
        }
    }
}

uint64_t
mcs_seg_log_keys(const struct mcs_seg *seg, uint32_t i)
{
    return i < MCS_SEG_SERVERS ? LD(&seg->servers[i].log_keys) : 0;
}

#define SLOT_ST(w)   ((w) & 3u)
#define SLOT_GEN(w)  ((w) & ~3u)
#define SLOT_NEXT(w) (SLOT_GEN(w) + 4u)

static uint32_t
slot_start(uint32_t i, const char *key, size_t len)
{
    uint64_t h = fnv1a(0xcbf29ce484222325ull ^ ((uint64_t)i * 0x9e3779b97f4a7c15ull), key, len);
    return (uint32_t)(h ^ (h >> 32)) & (MCS_SEG_SLOTS - 1);
}

/* Does slot s (seen in state w, ready or taking) hold (i, key)? Compared only
 * if its state is still w afterwards: the bytes of a slot do not change while
 * its generation stays. */
static bool
slot_holds(const struct mcs_seg_slot *s, uint32_t w, uint32_t i, const char *key, size_t len)
{
    bool same = LD(&s->server) == i && LD(&s->len) == len && memcmp(s->key, key, len) == 0;
    return same && LD(&s->state) == w;
}

enum mcs_seg_result
mcs_seg_log_add(struct mcs_seg *seg, uint32_t i, const char *key, size_t len)
{
    if (i >= MCS_SEG_SERVERS) {
        return MCS_SEG_CORRUPT;
    }
    if (len == 0 || len > MCS_SEG_KEY_MAX) {
        mcs_seg_flags_set(seg, i, MCS_SEG_F_OVERFLOW);
        return MCS_SEG_FULL;
    }
    uint32_t start = slot_start(i, key, len);
    /* The whole probe sequence is looked at for the key first (a slot before it
     * may have been freed since it was written), then the first empty slot is
     * claimed. Two processes adding the same key at once may both claim one:
     * a duplicate costs a slot and a second delete, nothing else. */
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t n = 0; n < MCS_SEG_PROBES; n++) {
            struct mcs_seg_slot *s = &seg->slots[(start + n) & (MCS_SEG_SLOTS - 1)];
            uint32_t w = LD_SC(&s->state);
            if (pass == 0) {
                if (SLOT_ST(w) == MCS_SEG_SLOT_READY && slot_holds(s, w, i, key, len)) {
                    return MCS_SEG_OK;
                }
                continue;   /* writing, or taking: a replay deletes it (logged again, the key goes elsewhere) */
            }
            if (SLOT_ST(w) == MCS_SEG_SLOT_EMPTY && CAS(&s->state, &w, SLOT_NEXT(w) | MCS_SEG_SLOT_WRITING)) {
                ST(&s->server, (uint16_t)i);
                ST(&s->len, (uint16_t)len);
                memcpy(s->key, key, len);
                __atomic_store_n(&s->state, SLOT_NEXT(w) | MCS_SEG_SLOT_READY, __ATOMIC_SEQ_CST);
                __atomic_add_fetch(&seg->servers[i].log_keys, 1, __ATOMIC_RELAXED);
                return MCS_SEG_OK;
            }
        }
    }
    mcs_seg_flags_set(seg, i, MCS_SEG_F_OVERFLOW);
    return MCS_SEG_FULL;
}

size_t
mcs_seg_log_take(struct mcs_seg *seg, uint32_t i, size_t max, struct mcs_buf *keys, uint64_t *tickets, bool *stuck)
{
    size_t n = 0;
    *stuck = false;
    for (uint32_t k = 0; k < MCS_SEG_SLOTS && n < max; k++) {
        struct mcs_seg_slot *s = &seg->slots[k];
        uint32_t w = LD_SC(&s->state);
        if (SLOT_ST(w) == MCS_SEG_SLOT_WRITING) {
            *stuck = true;
            continue;
        }
        if ((SLOT_ST(w) != MCS_SEG_SLOT_READY && SLOT_ST(w) != MCS_SEG_SLOT_TAKING) || LD(&s->server) != i) {
            continue;
        }
        uint32_t taking = SLOT_GEN(w) | MCS_SEG_SLOT_TAKING;
        if (w != taking && !CAS(&s->state, &w, taking)) {
            continue;
        }
        uint32_t len = LD(&s->len);
        char key[MCS_SEG_KEY_MAX];
        if (len == 0 || len > MCS_SEG_KEY_MAX) {
            /* Not a key this code wrote: its key is lost, so the server is flushed. */
            mcs_seg_flags_set(seg, i, MCS_SEG_F_OVERFLOW);
            if (CAS(&s->state, &taking, SLOT_NEXT(taking) | MCS_SEG_SLOT_EMPTY)) {
                log_keys_drop(seg, i);
            }
            continue;
        }
        memcpy(key, s->key, len);
        uint8_t l = (uint8_t)len;
        if (mcs_buf_append(keys, (const char *)&l, 1) != 0 || mcs_buf_append(keys, key, len) != 0) {
            uint32_t t = taking;
            CAS(&s->state, &t, SLOT_GEN(taking) | MCS_SEG_SLOT_READY);
            break;
        }
        tickets[n++] = ((uint64_t)k << 32) | taking;
    }
    return n;
}

void
mcs_seg_log_done(struct mcs_seg *seg, uint64_t ticket, bool done)
{
    uint32_t k = (uint32_t)(ticket >> 32);
    uint32_t w = (uint32_t)ticket;
    if (k >= MCS_SEG_SLOTS || SLOT_ST(w) != MCS_SEG_SLOT_TAKING) {
        return;
    }
    uint32_t to = done ? (SLOT_NEXT(w) | MCS_SEG_SLOT_EMPTY) : (SLOT_GEN(w) | MCS_SEG_SLOT_READY);
    uint32_t server = LD(&seg->slots[k].server);
    if (CAS(&seg->slots[k].state, &w, to) && done) {   /* fails if another replay took it over: it decides */
        log_keys_drop(seg, server);
    }
}

void
mcs_seg_log_clear(struct mcs_seg *seg, uint32_t i)
{
    if (i >= MCS_SEG_SERVERS) {
        return;
    }
    for (uint32_t k = 0; k < MCS_SEG_SLOTS; k++) {
        struct mcs_seg_slot *s = &seg->slots[k];
        uint32_t w = LD(&s->state);
        if ((SLOT_ST(w) == MCS_SEG_SLOT_READY || SLOT_ST(w) == MCS_SEG_SLOT_TAKING) && LD(&s->server) == i) {
            CAS(&s->state, &w, SLOT_NEXT(w) | MCS_SEG_SLOT_EMPTY);
        }
    }
    ST(&seg->servers[i].log_keys, 0);
}

size_t
mcs_seg_log_count(const struct mcs_seg *seg, uint32_t i)
{
    size_t n = 0;
    for (uint32_t k = 0; k < MCS_SEG_SLOTS; k++) {
        const struct mcs_seg_slot *s = &seg->slots[k];
        uint32_t w = LD(&s->state);
        if ((SLOT_ST(w) == MCS_SEG_SLOT_READY || SLOT_ST(w) == MCS_SEG_SLOT_TAKING) && LD(&s->server) == i) {
            n++;
        }
    }
    return n;
}

/* ---- processes ---- */

uint32_t
mcs_seg_proc_attach(struct mcs_seg *seg, uint32_t pid, uint64_t ticket, const char *comm, uint64_t now_ms)
{
    if (pid == 0) {
        return MCS_SEG_NONE;
    }
    uint32_t start = pid % MCS_SEG_PROCS;
    for (uint32_t n = 0; n < MCS_SEG_PROCS; n++) {
        struct mcs_seg_proc *p = &seg->procs[(start + n) % MCS_SEG_PROCS];
        uint32_t free_ = 0;
        if (CAS(&p->pid, &free_, pid)) {
            ST(&p->ready, 0);
            ST(&p->ticket, ticket);
            ST(&p->attached_ms, now_ms);
            ST(&p->seen_ms, now_ms);
            ST(&p->requests, 0);
            ST(&p->servers_down, 0);
            size_t l = strnlen(comm, sizeof(p->comm) - 1);
            memcpy(p->comm, comm, l);
            memset(p->comm + l, 0, sizeof(p->comm) - l);
            ST(&p->ready, 1);
            return (start + n) % MCS_SEG_PROCS;
        }
    }
    return MCS_SEG_NONE;
}

void
mcs_seg_proc_detach(struct mcs_seg *seg, uint32_t slot, uint32_t pid)
{
    if (slot < MCS_SEG_PROCS) {
        uint32_t p = pid;
        CAS(&seg->procs[slot].pid, &p, 0);
    }
}

void
mcs_seg_proc_reclaim(struct mcs_seg *seg, uint32_t slot, uint32_t pid, uint64_t ticket)
{
    /* Only a slot whose owner finished claiming it: before, its ticket may still be
     * the previous owner's, and the new one would be freed. */
    if (slot < MCS_SEG_PROCS && LD(&seg->procs[slot].ready) == 1 && LD(&seg->procs[slot].ticket) == ticket) {
        uint32_t p = pid;
        CAS(&seg->procs[slot].pid, &p, 0);
    }
}
