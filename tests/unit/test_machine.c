/*
 * tests/unit/test_machine.c: the request machine (preload/core/machine.h)
 * through every availability scenario of docs/availability.md, driven by a
 * scripted fake driver (tests/unit/fake_driver.h): no sockets, no threads, a
 * fake clock.
 *
 * Each test builds a configuration by hand (2-4 servers "10.0.0.<n>:11211",
 * copies, write mode, warm-up, rejoin policy, failure limit 1), picks keys
 * whose targets it knows (mcs_router_targets), and then plays the servers:
 * it asserts the exact bytes each server is sent, answers them (often a byte
 * at a time, so partial replies are exercised), fails their connections, moves
 * the clock, and asserts the exact bytes the application reads.
 *
 *   failover       text, binary and meta writes and reads whose primary fails
 *                  before answering, or is already down (fast fail)
 *   multi-get      keys of a failing server move to their next copy, merged
 *                  in the order asked, END once
 *   copy rule      each row of the table, async and sync
 *   warm-up        a restarted primary is filled from its copy (mg v f t c, add)
 *   rejoin         a server back from a cut gets the deletes it missed, or a
 *                  flush_all (log overflow, MCSHIM_REJOIN=flush)
 *   timeout        one timeout marks a server down; every request waiting on
 *                  it fails over at once
 *   allocation     failover, multi-get, warm-up, sync copies, rejoin (replayed
 *                  deletes, flush on overflow), binary and meta quiet pipelines
 *                  with failover, gat/gats touches, sessions closed while owed
 *                  replies, with each allocation failing in turn: a complete
 *                  reply or a clean error, never a rejoined server holding what
 *                  it missed, nothing leaked
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "preload/core/alloc.h"
#include "preload/core/machine.h"
#include "tests/unit/fake_driver.h"

/* Replaces each '$' of tmpl with key. */
static const char *
expand(char *out, size_t cap, const char *tmpl, const char *key)
{
    size_t n = 0, klen = strlen(key);
    for (const char *p = tmpl; *p != '\0'; p++) {
        if (*p == '$') {
            assert_true(n + klen < cap);
            memcpy(out + n, key, klen);
            n += klen;
        } else {
            assert_true(n + 1 < cap);
            out[n++] = *p;
        }
    }
    out[n] = '\0';
    return out;
}

/* fd_expect_sent / fd_answer / fd_client_send with a template ('$' = key). */
static struct fd_send *
sent_k(struct fake *f, uint32_t s, const char *tmpl, const char *key)
{
    char b[1024];
    expand(b, sizeof(b), tmpl, key);
    return fd_expect_sent(f, s, b, strlen(b));
}

static void
answer_k(struct fake *f, uint32_t s, const char *tmpl, const char *key)
{
    char b[1024];
    expand(b, sizeof(b), tmpl, key);
    fd_answer(f, s, b, strlen(b));
}

static void
send_k(struct fake *f, struct fd_client *c, const char *tmpl, const char *key)
{
    char b[1024];
    expand(b, sizeof(b), tmpl, key);
    fd_client_send(f, c, b, strlen(b));
}

static void
out_k(struct fake *f, struct fd_client *c, const char *tmpl, const char *key)
{
    char b[1024];
    size_t n;
    expand(b, sizeof(b), tmpl, key);
    const char *p = fd_take(f, c, &n);
    fd_assert_bytes("application reads", p, n, b, strlen(b));
}

static void
out_is(struct fake *f, struct fd_client *c, const char *want)
{
    size_t n;
    const char *p = fd_take(f, c, &n);
    fd_assert_bytes("application reads", p, n, want, strlen(want));
}

static void
out_none(struct fake *f, struct fd_client *c)
{
    size_t n;
    const char *p = fd_take(f, c, &n);
    fd_assert_bytes("application reads", p, n, "", 0);
}

static size_t
missed_count(struct fake *f, uint32_t s)
{
    return mcs_keylog_count(&f->m.router.servers[s].missed);
}

static enum mcs_health
health(struct fake *f, uint32_t s)
{
    return f->m.router.servers[s].health;
}

static const struct fd_opts two_copies = { .nprimaries = 2, .replicas = 2 };
static const struct fd_opts warming_opts = { .nprimaries = 2, .replicas = 2, .warmup_s = 60, .retry_ms = 1000 };

/* ---- 1. text failover -------------------------------------------------------------------------- */

/* A set whose primary's connection fails before it answers goes to the copy;
 * the application reads the copy's answer and nothing else; the primary's
 * missed write is logged for its rejoin. */
static void
test_text_set_fails_over_when_primary_connection_fails(void **state)
{
    (void)state;
    struct fake f;
    assert_int_equal(fd_init(&f, &two_copies), 0);
    f.piece = 1;
    char k[32];
    fd_key(&f, "k", (const uint32_t[]){ 0, 1 }, 2, k, sizeof(k));
    struct fd_client *c = fd_client_new(&f);

    send_k(&f, c, "set $ 3 0 5\r\nhello\r\n", k);
    struct fd_send *x = sent_k(&f, 0, "set $ 3 0 5\r\nhello\r\n", k);
    assert_int_equal(x->proto, MCS_PROTO_TEXT);
    assert_int_equal(x->conn, c->s.id);
    fd_expect_none(&f, 1);
    out_none(&f, c);

    fd_fail_server(&f, 0, MCS_FAILURE_RESET);
    assert_int_equal(health(&f, 0), MCS_HEALTH_DOWN);
    assert_int_equal(f.aborts[0], 1);
    assert_true(fd_log_has(&f, "server 10.0.0.1:11211 is down (connection reset or closed"));
    x = sent_k(&f, 1, "set $ 3 0 5\r\nhello\r\n", k);
    assert_int_equal(x->conn, c->s.id);
    out_none(&f, c);

    unsigned ready = f.ready_calls;
    FD_ANSWER(&f, 1, "STORED\r\n");
    assert_true(f.ready_calls > ready);   /* the driver is told the session has bytes */
    FD_OUT(&f, c, "STORED\r\n");
    /* the copy was the last target: no copy after it; the primary's miss is logged */
    assert_int_equal(missed_count(&f, 0), 1);
    assert_int_equal(f.m.router.servers[0].stats.invalidations_logged, 1);
    assert_int_equal(f.m.router.servers[0].stats.failovers, 1);
    assert_int_equal(missed_count(&f, 1), 0);
    fd_expect_idle(&f);
    fd_free(&f);
}

/* A get whose primary's connection fails before it answers is asked of the copy. */
static void
test_text_get_fails_over_when_primary_connection_fails(void **state)
{
    (void)state;
    struct fake f;
    assert_int_equal(fd_init(&f, &two_copies), 0);
    f.piece = 3;
    char k[32];
    fd_key(&f, "k", (const uint32_t[]){ 0, 1 }, 2, k, sizeof(k));
    struct fd_client *c = fd_client_new(&f);

    send_k(&f, c, "get $\r\n", k);
    sent_k(&f, 0, "get $\r\n", k);
    fd_fail_server(&f, 0, MCS_FAILURE_RESET);
    assert_int_equal(f.aborts[0], 1);
    sent_k(&f, 1, "get $\r\n", k);
    out_none(&f, c);
    answer_k(&f, 1, "VALUE $ 9 5\r\nhello\r\nEND\r\n", k);
    out_k(&f, c, "VALUE $ 9 5\r\nhello\r\nEND\r\n", k);
    /* a read misses nothing: no log */
    assert_int_equal(missed_count(&f, 0), 0);
    assert_int_equal(f.m.router.servers[0].stats.failovers, 1);

    /* the same with the primary already down: straight to the copy */
    send_k(&f, c, "gets $\r\n", k);
    sent_k(&f, 1, "gets $\r\n", k);
    fd_expect_none(&f, 0);
    answer_k(&f, 1, "VALUE $ 9 5 77\r\nhello\r\nEND\r\n", k);
    out_k(&f, c, "VALUE $ 9 5 77\r\nhello\r\nEND\r\n", k);
    fd_expect_idle(&f);
    fd_free(&f);
}

/* With the primary already down, a write goes straight to the copy (fast
 * fail), is logged for the primary, and a key with no usable target at all
 * answers SERVER_ERROR naming its primary. */
static void
test_text_fast_fail_when_primary_is_down(void **state)
{
    (void)state;
    struct fake f;
    assert_int_equal(fd_init(&f, &two_copies), 0);
    char k1[32], k2[32], k3[32];
    fd_key(&f, "a", (const uint32_t[]){ 0, 1 }, 2, k1, sizeof(k1));
    fd_key(&f, "b", (const uint32_t[]){ 0, 1 }, 2, k2, sizeof(k2));
    fd_key(&f, "c", (const uint32_t[]){ 1, 0 }, 2, k3, sizeof(k3));
    struct fd_client *c = fd_client_new(&f);

    fd_fail_server(&f, 0, MCS_FAILURE_CONNECT);   /* a refused connect, failure limit 1 */
    assert_int_equal(health(&f, 0), MCS_HEALTH_DOWN);
    assert_int_equal(f.aborts[0], 1);

    send_k(&f, c, "set $ 0 0 1\r\nv\r\n", k1);
    fd_expect_none(&f, 0);
    sent_k(&f, 1, "set $ 0 0 1\r\nv\r\n", k1);
    FD_ANSWER(&f, 1, "STORED\r\n");
    FD_OUT(&f, c, "STORED\r\n");
    send_k(&f, c, "delete $\r\n", k2);
    sent_k(&f, 1, "delete $\r\n", k2);
    FD_ANSWER(&f, 1, "DELETED\r\n");
    FD_OUT(&f, c, "DELETED\r\n");
    /* k3's primary is up; its copy (server 0) is down: the copy's miss is logged too */
    send_k(&f, c, "set $ 0 0 1\r\nw\r\n", k3);
    sent_k(&f, 1, "set $ 0 0 1\r\nw\r\n", k3);
    FD_ANSWER(&f, 1, "STORED\r\n");
    FD_OUT(&f, c, "STORED\r\n");
    fd_expect_none(&f, 0);
    assert_int_equal(missed_count(&f, 0), 3);
    assert_int_equal(f.m.router.servers[0].stats.invalidations_logged, 3);
    assert_true(f.m.router.servers[0].stats.fast_fails >= 2);

    /* both targets down: the application is told, naming the primary */
    fd_fail_server(&f, 1, MCS_FAILURE_CONNECT);
    send_k(&f, c, "set $ 0 0 1\r\nv\r\n", k1);
    FD_OUT(&f, c, "SERVER_ERROR mcshim: server 10.0.0.1:11211 unavailable\r\n");
    send_k(&f, c, "get $\r\n", k1);
    FD_OUT(&f, c, "END\r\n");
    assert_false(c->s.closing);
    fd_expect_idle(&f);
    fd_free(&f);
}

/* ---- 2. binary and meta failover ------------------------------------------------------------ */

/* A binary packet (magic 0x80 request, 0x81 response), appended to p. */
struct pkt {
    char   b[2048];
    size_t n;
};

static void
put_be(char *p, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--) {
        p[i] = (char)(v & 0xff);
        v >>= 8;
    }
}

static void
pkt_add(struct pkt *p, uint8_t magic, uint8_t opcode, uint16_t status, uint32_t opaque, uint64_t cas,
        const char *extras, uint8_t elen, const char *key, const char *value, size_t vlen)
{
    size_t klen = key != NULL ? strlen(key) : 0;
    size_t body = elen + klen + vlen;
    assert_true(p->n + 24 + body <= sizeof(p->b));
    char *h = p->b + p->n;
    memset(h, 0, 24);
    h[0] = (char)magic;
    h[1] = (char)opcode;
    put_be(h + 2, klen, 2);
    h[4] = (char)elen;
    put_be(h + 6, status, 2);
    put_be(h + 8, body, 4);
    put_be(h + 12, opaque, 4);
    put_be(h + 16, cas, 8);
    p->n += 24;
    if (elen > 0) {
        memcpy(p->b + p->n, extras, elen);
        p->n += elen;
    }
    if (klen > 0) {
        memcpy(p->b + p->n, key, klen);
        p->n += klen;
    }
    if (vlen > 0) {
        memcpy(p->b + p->n, value, vlen);
        p->n += vlen;
    }
}

/* A request: storage opcodes carry flags and exptime 0. */
static void
bin_req(struct pkt *p, uint8_t opcode, uint32_t opaque, const char *key, const char *value, uint32_t flags)
{
    char x[8] = { 0 };
    put_be(x, flags, 4);
    uint8_t base = mcs_bin_op_base(opcode);
    bool storage = base == MCS_BIN_OP_SET || base == MCS_BIN_OP_ADD || base == MCS_BIN_OP_REPLACE;
    pkt_add(p, 0x80, opcode, 0, opaque, 0, x, storage ? 8 : 0, key, value, value != NULL ? strlen(value) : 0);
}

/* A get hit: flags as extras, the key if with_key. */
static void
bin_hit(struct pkt *p, uint8_t opcode, uint32_t opaque, uint64_t cas, uint32_t flags, const char *key,
        const char *value)
{
    char x[4];
    put_be(x, flags, 4);
    pkt_add(p, 0x81, opcode, 0, opaque, cas, x, 4, key, value, strlen(value));
}

/* A response without body (status 0) or with memcached's error text. */
static void
bin_status(struct pkt *p, uint8_t opcode, uint16_t status, uint32_t opaque, uint64_t cas)
{
    const char *text = status == 0 ? NULL : mcs_bin_status_text(status);
    pkt_add(p, 0x81, opcode, status, opaque, cas, NULL, 0, NULL, text, text != NULL ? strlen(text) : 0);
}

static void
out_pkt(struct fake *f, struct fd_client *c, const struct pkt *want)
{
    size_t n;
    const char *p = fd_take(f, c, &n);
    fd_assert_bytes("application reads", p, n, want->b, want->n);
}

static struct fd_send *
sent_pkt(struct fake *f, uint32_t s, const struct pkt *want)
{
    struct fd_send *x = fd_expect_sent(f, s, want->b, want->n);
    assert_int_equal(x->proto, MCS_PROTO_BINARY);
    return x;
}

#define PKT(name) struct pkt name = { .n = 0 }

/* Binary set, get and getk whose primary's connection fails before answering
 * all go to the copy, in order; then, with the primary down, straight there. */
static void
test_binary_set_get_getk_fail_over(void **state)
{
    (void)state;
    struct fake f;
    assert_int_equal(fd_init(&f, &two_copies), 0);
    f.piece = 1;
    char k[32];
    fd_key(&f, "k", (const uint32_t[]){ 0, 1 }, 2, k, sizeof(k));
    struct fd_client *c = fd_client_new(&f);

    PKT(set);
    PKT(get);
    PKT(getk);
    PKT(all);
    bin_req(&set, MCS_BIN_OP_SET, 0x11, k, "hello", 3);
    bin_req(&get, MCS_BIN_OP_GET, 0x12, k, NULL, 0);
    bin_req(&getk, MCS_BIN_OP_GETK, 0x13, k, NULL, 0);
    bin_req(&all, MCS_BIN_OP_SET, 0x11, k, "hello", 3);
    bin_req(&all, MCS_BIN_OP_GET, 0x12, k, NULL, 0);
    bin_req(&all, MCS_BIN_OP_GETK, 0x13, k, NULL, 0);
    fd_client_send(&f, c, all.b, all.n);
    assert_int_equal(c->s.proto, MCS_PROTO_BINARY);
    sent_pkt(&f, 0, &set);
    sent_pkt(&f, 0, &get);
    sent_pkt(&f, 0, &getk);
    fd_expect_none(&f, 1);

    fd_fail_server(&f, 0, MCS_FAILURE_RESET);
    assert_int_equal(health(&f, 0), MCS_HEALTH_DOWN);
    sent_pkt(&f, 1, &set);
    sent_pkt(&f, 1, &get);
    sent_pkt(&f, 1, &getk);
    out_none(&f, c);

    PKT(r1);
    PKT(r2);
    PKT(r3);
    bin_status(&r1, MCS_BIN_OP_SET, 0, 0x11, 77);
    bin_hit(&r2, MCS_BIN_OP_GET, 0x12, 77, 3, NULL, "hello");
    bin_hit(&r3, MCS_BIN_OP_GETK, 0x13, 77, 3, k, "hello");
    fd_answer(&f, 1, r1.b, r1.n);
    out_pkt(&f, c, &r1);
    fd_answer(&f, 1, r2.b, r2.n);
    fd_answer(&f, 1, r3.b, r3.n);
    PKT(both);
    bin_hit(&both, MCS_BIN_OP_GET, 0x12, 77, 3, NULL, "hello");
    bin_hit(&both, MCS_BIN_OP_GETK, 0x13, 77, 3, k, "hello");
    out_pkt(&f, c, &both);
    assert_int_equal(missed_count(&f, 0), 1);   /* the set, not the reads */

    /* primary down: fast fail to the copy; a miss is answered as the copy said */
    PKT(get2);
    bin_req(&get2, MCS_BIN_OP_GET, 0x14, k, NULL, 0);
    fd_client_send(&f, c, get2.b, get2.n);
    fd_expect_none(&f, 0);
    sent_pkt(&f, 1, &get2);
    PKT(miss);
    bin_status(&miss, MCS_BIN_OP_GET, MCS_BIN_STATUS_KEY_ENOENT, 0x14, 0);
    fd_answer(&f, 1, miss.b, miss.n);
    out_pkt(&f, c, &miss);
    fd_expect_idle(&f);
    fd_free(&f);
}

/* Quiet binary requests over two servers, answered out of order: a quiet
 * set's success and a quiet get's miss are not sent, a quiet hit is, and the
 * noop comes after every reply before it, whichever server sent it. */
static void
test_binary_quiet_order_across_servers(void **state)
{
    (void)state;
    struct fake f;
    assert_int_equal(fd_init(&f, &two_copies), 0);
    f.piece = 5;
    char ka[32], kb[32];
    fd_key(&f, "a", (const uint32_t[]){ 0, 1 }, 2, ka, sizeof(ka));
    fd_key(&f, "b", (const uint32_t[]){ 1, 0 }, 2, kb, sizeof(kb));
    struct fd_client *c = fd_client_new(&f);

    PKT(all);
    bin_req(&all, MCS_BIN_OP_SETQ, 1, ka, "x", 0);
    bin_req(&all, MCS_BIN_OP_GETQ, 2, kb, NULL, 0);
    bin_req(&all, MCS_BIN_OP_GETQ, 3, ka, NULL, 0);
    bin_req(&all, MCS_BIN_OP_NOOP, 4, NULL, NULL, 0);
    fd_client_send(&f, c, all.b, all.n);
    /* servers get the non-quiet forms, so every request has one reply */
    PKT(s1);
    PKT(g2);
    PKT(g3);
    bin_req(&s1, MCS_BIN_OP_SET, 1, ka, "x", 0);
    bin_req(&g2, MCS_BIN_OP_GET, 2, kb, NULL, 0);
    bin_req(&g3, MCS_BIN_OP_GET, 3, ka, NULL, 0);
    sent_pkt(&f, 0, &s1);
    sent_pkt(&f, 0, &g3);
    sent_pkt(&f, 1, &g2);

    /* server 0 first: the set's success is dropped, the hit waits for the earlier get */
    PKT(r1);
    PKT(r3);
    bin_status(&r1, MCS_BIN_OP_SET, 0, 1, 5);
    bin_hit(&r3, MCS_BIN_OP_GET, 3, 5, 0, NULL, "x");
    fd_answer(&f, 0, r1.b, r1.n);
    /* the set is copied to server 1 (async), as a non-quiet set */
    sent_pkt(&f, 1, &s1);
    fd_answer(&f, 0, r3.b, r3.n);
    out_none(&f, c);
    /* server 1: the miss of the quiet get is dropped; then the hit and the noop */
    PKT(r2);
    bin_status(&r2, MCS_BIN_OP_GET, MCS_BIN_STATUS_KEY_ENOENT, 2, 0);
    fd_answer(&f, 1, r2.b, r2.n);
    PKT(want);
    bin_hit(&want, MCS_BIN_OP_GETQ, 3, 5, 0, NULL, "x");
    bin_status(&want, MCS_BIN_OP_NOOP, 0, 4, 0);
    out_pkt(&f, c, &want);
    PKT(copied);
    bin_status(&copied, MCS_BIN_OP_SET, 0, 1, 6);
    fd_answer(&f, 1, copied.b, copied.n);
    out_none(&f, c);
    fd_expect_idle(&f);
    fd_free(&f);
}

/* The same quiet requests when the primary of one key fails before answering:
 * its set and get move to the copy (the set logged for the primary); the
 * application still reads only the hit, then the noop. */
static void
test_binary_quiet_failover_keeps_order(void **state)
{
    (void)state;
    struct fake f;
    assert_int_equal(fd_init(&f, &two_copies), 0);
    f.piece = 1;
    char ka[32], kb[32];
    fd_key(&f, "a", (const uint32_t[]){ 0, 1 }, 2, ka, sizeof(ka));
    fd_key(&f, "b", (const uint32_t[]){ 1, 0 }, 2, kb, sizeof(kb));
    struct fd_client *c = fd_client_new(&f);

    PKT(all);
    bin_req(&all, MCS_BIN_OP_SETQ, 1, ka, "x", 0);
    bin_req(&all, MCS_BIN_OP_GETQ, 2, kb, NULL, 0);
    bin_req(&all, MCS_BIN_OP_GETQ, 3, ka, NULL, 0);
    bin_req(&all, MCS_BIN_OP_NOOP, 4, NULL, NULL, 0);
    fd_client_send(&f, c, all.b, all.n);
    PKT(s1);
    PKT(g2);
    PKT(g3);
    bin_req(&s1, MCS_BIN_OP_SET, 1, ka, "x", 0);
    bin_req(&g2, MCS_BIN_OP_GET, 2, kb, NULL, 0);
    bin_req(&g3, MCS_BIN_OP_GET, 3, ka, NULL, 0);
    sent_pkt(&f, 0, &s1);
    sent_pkt(&f, 0, &g3);
    sent_pkt(&f, 1, &g2);

    fd_fail_server(&f, 0, MCS_FAILURE_RESET);
    sent_pkt(&f, 1, &s1);
    sent_pkt(&f, 1, &g3);
    out_none(&f, c);
    PKT(r2);
    PKT(r1);
    PKT(r3);
    bin_status(&r2, MCS_BIN_OP_GET, MCS_BIN_STATUS_KEY_ENOENT, 2, 0);
    bin_status(&r1, MCS_BIN_OP_SET, 0, 1, 8);
    bin_hit(&r3, MCS_BIN_OP_GET, 3, 8, 0, NULL, "x");
    fd_answer(&f, 1, r2.b, r2.n);
    out_none(&f, c);
    fd_answer(&f, 1, r1.b, r1.n);
    out_none(&f, c);
    fd_answer(&f, 1, r3.b, r3.n);
    PKT(want);
    bin_hit(&want, MCS_BIN_OP_GETQ, 3, 8, 0, NULL, "x");
    bin_status(&want, MCS_BIN_OP_NOOP, 0, 4, 0);
    out_pkt(&f, c, &want);
    assert_int_equal(missed_count(&f, 0), 1);
    fd_expect_idle(&f);
    fd_free(&f);
}

/* Meta: ms and mg with q, then mn, over two servers; the primary of one key
 * fails before answering: its requests move to the copy, the quiet successes
 * and misses are dropped, and MN comes after the hit. */
static void
test_meta_quiet_failover_keeps_order(void **state)
{
    (void)state;
    struct fake f;
    assert_int_equal(fd_init(&f, &two_copies), 0);
    f.piece = 1;
    char ka[32], kb[32];
    fd_key(&f, "a", (const uint32_t[]){ 0, 1 }, 2, ka, sizeof(ka));
    fd_key(&f, "b", (const uint32_t[]){ 1, 0 }, 2, kb, sizeof(kb));
    struct fd_client *c = fd_client_new(&f);

    char req[256];
    snprintf(req, sizeof(req), "ms %s 1 q T0\r\nv\r\nmg %s v q\r\nmg %s v q\r\nmn\r\n", ka, kb, ka);
    fd_client_send(&f, c, req, strlen(req));
    /* servers get each request without q */
    sent_k(&f, 0, "ms $ 1 T0\r\nv\r\n", ka);
    sent_k(&f, 0, "mg $ v\r\n", ka);
    sent_k(&f, 1, "mg $ v\r\n", kb);

    fd_fail_server(&f, 0, MCS_FAILURE_RESET);
    sent_k(&f, 1, "ms $ 1 T0\r\nv\r\n", ka);
    sent_k(&f, 1, "mg $ v\r\n", ka);
    FD_ANSWER(&f, 1, "EN\r\n");
    FD_ANSWER(&f, 1, "HD\r\n");
    out_none(&f, c);
    FD_ANSWER(&f, 1, "VA 1\r\nv\r\n");
    FD_OUT(&f, c, "VA 1\r\nv\r\nMN\r\n");
    assert_int_equal(missed_count(&f, 0), 1);

    /* primary down: the non-quiet forms go straight to the copy */
    send_k(&f, c, "ms $ 1 T0\r\nw\r\nmg $ v\r\nmn\r\n", ka);
    fd_expect_none(&f, 0);
    sent_k(&f, 1, "ms $ 1 T0\r\nw\r\n", ka);
    sent_k(&f, 1, "mg $ v\r\n", ka);
    FD_ANSWER(&f, 1, "HD\r\n");
    FD_ANSWER(&f, 1, "VA 1\r\nw\r\n");
    FD_OUT(&f, c, "HD\r\nVA 1\r\nw\r\nMN\r\n");
    fd_expect_idle(&f);
    fd_free(&f);
}

/* ---- 3. multi-get ------------------------------------------------------------------------------ */

/* "get a b c d" over 3 servers (a on 0, b and d on 1, c on 2); server 1 fails
 * after answering b (and half of d's item), or before answering anything: its
 * keys still owed move to their next copy, and the application reads every
 * item in the order asked, then END once. */
static void
test_multiget_server_fails_midway_keys_move_in_order(void **state)
{
    (void)state;
    for (int variant = 0; variant < 2; variant++) {
        bool partial = variant == 0;
        struct fake f;
        assert_int_equal(fd_init(&f, &(struct fd_opts){ .nprimaries = 3, .replicas = 2 }), 0);
        f.piece = 4;
        char a[32], b[32], cc[32], d[32];
        fd_key(&f, "a", (const uint32_t[]){ 0 }, 1, a, sizeof(a));
        fd_key(&f, "b", (const uint32_t[]){ 1, 2 }, 2, b, sizeof(b));
        fd_key(&f, "c", (const uint32_t[]){ 2 }, 1, cc, sizeof(cc));
        fd_key(&f, "d", (const uint32_t[]){ 1, 0 }, 2, d, sizeof(d));
        struct fd_client *c = fd_client_new(&f);
        char line[512], want[512], buf[256];

        snprintf(line, sizeof(line), "get %s %s %s %s\r\n", a, b, cc, d);
        fd_client_send(&f, c, line, strlen(line));
        sent_k(&f, 0, "get $\r\n", a);
        snprintf(buf, sizeof(buf), "get %s %s\r\n", b, d);
        fd_expect_sent(&f, 1, buf, strlen(buf));
        sent_k(&f, 2, "get $\r\n", cc);

        answer_k(&f, 2, "VALUE $ 3 1\r\nC\r\nEND\r\n", cc);
        out_none(&f, c);   /* c waits for a and b */
        answer_k(&f, 0, "VALUE $ 1 1\r\nA\r\nEND\r\n", a);
        out_k(&f, c, "VALUE $ 1 1\r\nA\r\n", a);   /* streamed: the head of the pipeline */
        if (partial) {
            char item[128];
            expand(item, sizeof(item), "VALUE $ 2 1\r\nB\r\n", b);
            fd_feed(&f, 1, item, strlen(item));
            expand(item, sizeof(item), "VALUE $ 4 1\r\n", d);
            fd_feed(&f, 1, item, strlen(item) - 3);   /* half a line: never taken */
            snprintf(want, sizeof(want), "VALUE %s 2 1\r\nB\r\nVALUE %s 3 1\r\nC\r\n", b, cc);
            out_is(&f, c, want);
        }
        fd_fail_server(&f, 1, MCS_FAILURE_RESET);
        assert_int_equal(f.aborts[1], 1);
        if (!partial) {
            sent_k(&f, 2, "get $\r\n", b);
        }
        sent_k(&f, 0, "get $\r\n", d);
        fd_expect_none(&f, 1);
        if (!partial) {
            answer_k(&f, 2, "VALUE $ 2 1\r\nB\r\nEND\r\n", b);
            snprintf(want, sizeof(want), "VALUE %s 2 1\r\nB\r\nVALUE %s 3 1\r\nC\r\n", b, cc);
            out_is(&f, c, want);
        }
        answer_k(&f, 0, "VALUE $ 4 1\r\nD\r\nEND\r\n", d);
        out_k(&f, c, "VALUE $ 4 1\r\nD\r\nEND\r\n", d);
        assert_int_equal(f.m.stats.get_hits, 4);
        assert_int_equal(f.m.stats.get_misses, 0);
        fd_expect_idle(&f);
        fd_free(&f);
    }
}

/* A multi-get whose keys' servers are all down but one: the keys with no
 * usable target miss, the others are answered, END once. */
static void
test_multiget_keys_without_a_usable_target_miss(void **state)
{
    (void)state;
    struct fake f;
    assert_int_equal(fd_init(&f, &(struct fd_opts){ .nprimaries = 3, .replicas = 2 }), 0);
    char a[32], b[32];
    fd_key(&f, "a", (const uint32_t[]){ 0, 1 }, 2, a, sizeof(a));
    fd_key(&f, "b", (const uint32_t[]){ 1, 2 }, 2, b, sizeof(b));
    struct fd_client *c = fd_client_new(&f);
    fd_fail_server(&f, 0, MCS_FAILURE_CONNECT);
    fd_fail_server(&f, 1, MCS_FAILURE_CONNECT);
    char line[128];
    snprintf(line, sizeof(line), "get %s %s\r\n", a, b);
    fd_client_send(&f, c, line, strlen(line));
    sent_k(&f, 2, "get $\r\n", b);
    fd_expect_none(&f, 0);
    fd_expect_none(&f, 1);
    answer_k(&f, 2, "VALUE $ 0 1\r\nB\r\nEND\r\n", b);
    out_k(&f, c, "VALUE $ 0 1\r\nB\r\nEND\r\n", b);
    fd_expect_idle(&f);
    fd_free(&f);
}

/* ---- 4. the copy rule ------------------------------------------------------------------------ */

/* One row of docs/availability.md "The copy rule" ('$' is the key). */
struct copy_row {
    const char *req;          /* what the application sends */
    const char *reply;        /* what the first server answers (and the application reads) */
    const char *copy;         /* what the copy gets then (NULL: nothing) */
    const char *copy_reply;   /* what the copy answers */
    const char *then;         /* what the copy gets after its answer (NULL: nothing) */
    bool        read;         /* a retrieval (gat): the application never waits for copies */
};

static const struct copy_row copy_rows[] = {
    { "set $ 5 100 1\r\nv\r\n", "STORED\r\n", "set $ 5 100 1\r\nv\r\n", "STORED\r\n", NULL, false },
    { "set $ 5 100 1 noreply\r\nv\r\n", "STORED\r\n", "set $ 5 100 1\r\nv\r\n", "STORED\r\n", NULL, false },
    { "set $ 5 100 1\r\nv\r\n", "NOT_STORED\r\n", "delete $\r\n", "DELETED\r\n", NULL, false },
    { "set $ 5 100 1\r\nv\r\n", "SERVER_ERROR out of memory storing object\r\n", "delete $\r\n", "NOT_FOUND\r\n",
      NULL, false },
    { "add $ 5 100 1\r\nv\r\n", "STORED\r\n", "set $ 5 100 1\r\nv\r\n", "STORED\r\n", NULL, false },
    { "add $ 5 100 1\r\nv\r\n", "NOT_STORED\r\n", NULL, NULL, NULL, false },
    { "replace $ 5 100 1\r\nv\r\n", "STORED\r\n", "set $ 5 100 1\r\nv\r\n", "STORED\r\n", NULL, false },
    { "replace $ 5 100 1\r\nv\r\n", "NOT_STORED\r\n", "delete $\r\n", "NOT_FOUND\r\n", NULL, false },
    { "cas $ 5 100 1 77\r\nv\r\n", "STORED\r\n", "set $ 5 100 1\r\nv\r\n", "STORED\r\n", NULL, false },
    { "cas $ 5 100 1 77\r\nv\r\n", "EXISTS\r\n", NULL, NULL, NULL, false },
    { "cas $ 5 100 1 77\r\nv\r\n", "NOT_FOUND\r\n", "delete $\r\n", "NOT_FOUND\r\n", NULL, false },
    { "append $ 0 0 1\r\nv\r\n", "STORED\r\n", "delete $\r\n", "DELETED\r\n", NULL, false },
    { "append $ 0 0 1\r\nv\r\n", "NOT_STORED\r\n", "delete $\r\n", "NOT_FOUND\r\n", NULL, false },
    { "prepend $ 0 0 1\r\nv\r\n", "STORED\r\n", "delete $\r\n", "DELETED\r\n", NULL, false },
    { "prepend $ 0 0 1\r\nv\r\n", "NOT_STORED\r\n", "delete $\r\n", "NOT_FOUND\r\n", NULL, false },
    { "delete $\r\n", "DELETED\r\n", "delete $\r\n", "DELETED\r\n", NULL, false },
    { "delete $\r\n", "NOT_FOUND\r\n", "delete $\r\n", "NOT_FOUND\r\n", NULL, false },
    { "incr $ 5\r\n", "15\r\n", "incr $ 5\r\n", "15\r\n", NULL, false },
    { "incr $ 5\r\n", "15\r\n", "incr $ 5\r\n", "9\r\n", "delete $\r\n", false },
    { "incr $ 5\r\n", "15\r\n", "incr $ 5\r\n", "NOT_FOUND\r\n", NULL, false },
    { "decr $ 2\r\n", "8\r\n", "decr $ 2\r\n", "8\r\n", NULL, false },
    { "incr $ 5\r\n", "NOT_FOUND\r\n", "delete $\r\n", "NOT_FOUND\r\n", NULL, false },
    { "decr $ 5\r\n", "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n", "delete $\r\n",
      "DELETED\r\n", NULL, false },
    { "touch $ 100\r\n", "TOUCHED\r\n", "touch $ 100\r\n", "TOUCHED\r\n", NULL, false },
    { "touch $ 100\r\n", "NOT_FOUND\r\n", "delete $\r\n", "NOT_FOUND\r\n", NULL, false },
    { "gat 100 $\r\n", "VALUE $ 0 1\r\nv\r\nEND\r\n", "touch $ 100\r\n", "TOUCHED\r\n", NULL, true },
    { "gats 100 $\r\n", "VALUE $ 0 1 9\r\nv\r\nEND\r\n", "touch $ 100\r\n", "NOT_FOUND\r\n", NULL, true },
    { "gat 100 $\r\n", "END\r\n", NULL, NULL, NULL, true },
};

/* Plays one row: the request reaches the primary (server 0) as sent, its
 * answer reaches the application (at once in async mode; after the copy's
 * answer in sync mode), and the copy (server 1) gets what the row says, on the
 * application's own connection. */
static void
copy_row_run(const struct copy_row *row, enum mcs_write_mode mode)
{
    struct fake f;
    assert_int_equal(fd_init(&f, &(struct fd_opts){ .nprimaries = 2, .replicas = 2, .write = mode }), 0);
    f.piece = 2;
    char k[32];
    fd_key(&f, "k", (const uint32_t[]){ 0, 1 }, 2, k, sizeof(k));
    struct fd_client *c = fd_client_new(&f);
    bool noreply = strstr(row->req, "noreply") != NULL;
    if (getenv("MACHINE_VERBOSE") != NULL) {
        fprintf(stderr, "  row: %s -> %s (%s)\n", show(row->req, strlen(row->req)),
                show(row->reply, strlen(row->reply)), mode == MCS_WRITE_SYNC ? "sync" : "async");
    }

    send_k(&f, c, row->req, k);
    if (noreply) {
        sent_k(&f, 0, "set $ 5 100 1\r\nv\r\n", k);   /* forwarded without noreply, its answer dropped */
    } else {
        sent_k(&f, 0, row->req, k);
    }
    fd_expect_none(&f, 1);
    /* a noreply request is owed its (dropped) answer: the session knows (mcs_request_origin) */
    assert_true((c->s.unanswered != NULL) == noreply);
    answer_k(&f, 0, row->reply, k);
    /* a copy in flight is the session's too, until answered */
    assert_true((c->s.unanswered != NULL) == (row->copy != NULL));
    bool waits = mode == MCS_WRITE_SYNC && row->copy != NULL && !row->read;
    if (noreply || waits) {
        out_none(&f, c);
    } else {
        out_k(&f, c, row->reply, k);
    }
    if (row->copy != NULL) {
        struct fd_send *x = sent_k(&f, 1, row->copy, k);
        assert_int_equal(x->proto, MCS_PROTO_TEXT);
        assert_int_equal(x->conn, c->s.id);   /* the client's own connection: it reads its writes */
        answer_k(&f, 1, row->copy_reply, k);
        if (waits && !noreply) {
            out_k(&f, c, row->reply, k);
        }
        if (row->then != NULL) {
            sent_k(&f, 1, row->then, k);
            FD_ANSWER(&f, 1, "DELETED\r\n");
        }
    }
    out_none(&f, c);
    assert_null(c->s.unanswered);
    fd_expect_none(&f, 0);
    fd_expect_none(&f, 1);
    assert_int_equal(missed_count(&f, 0), 0);
    assert_int_equal(missed_count(&f, 1), 0);
    fd_expect_idle(&f);
    fd_free(&f);
}

/* What a session caused and no reply of its waits for (noreply requests, copies)
 * stays on its list `unanswered` until answered; a session that closes first
 * forgets them, and their answers still arrive safely. */
static void
test_unanswered_outlive_their_session(void **state)
{
    (void)state;
    struct fake f;
    assert_int_equal(fd_init(&f, &two_copies), 0);
    char k[32];
    fd_key(&f, "k", (const uint32_t[]){ 0, 1 }, 2, k, sizeof(k));
    struct fd_client *c = fd_client_new(&f);
    send_k(&f, c, "set $ 0 0 1 noreply\r\nv\r\nset $ 0 0 1 noreply\r\nw\r\n", k);
    sent_k(&f, 0, "set $ 0 0 1\r\nv\r\n", k);
    sent_k(&f, 0, "set $ 0 0 1\r\nw\r\n", k);
    assert_non_null(c->s.unanswered);
    assert_non_null(c->s.unanswered->onext);
    FD_ANSWER(&f, 0, "STORED\r\n");            /* the first: its copy goes out */
    sent_k(&f, 1, "set $ 0 0 1\r\nv\r\n", k);
    fd_client_close(&f, c);                       /* before the rest is answered */
    FD_ANSWER(&f, 0, "STORED\r\n");
    sent_k(&f, 1, "set $ 0 0 1\r\nw\r\n", k);
    FD_ANSWER(&f, 1, "STORED\r\n");
    FD_ANSWER(&f, 1, "STORED\r\n");
    fd_expect_idle(&f);
    fd_free(&f);
}

static void
test_copy_rule_async(void **state)
{
    (void)state;
    for (size_t i = 0; i < NELEM(copy_rows); i++) {
        copy_row_run(&copy_rows[i], MCS_WRITE_ASYNC);
    }
}

static void
test_copy_rule_sync(void **state)
{
    (void)state;
    for (size_t i = 0; i < NELEM(copy_rows); i++) {
        copy_row_run(&copy_rows[i], MCS_WRITE_SYNC);
    }
}

/* The rule applied to meta requests (docs/availability.md "Meta and binary
 * writes"): copies keep only b, F and T of a stored ms (in set mode), get
 * nothing when the first server refused an add or a compare, a delete for
 * everything whose result the shim cannot know, and mg with T a touch. */
static const struct copy_row meta_rows[] = {
    { "ms $ 1 T100 F5\r\nv\r\n", "HD\r\n", "ms $ 1 T100 F5\r\nv\r\n", "HD\r\n", NULL, false },
    { "ms $ 1 T100 F5\r\nv\r\n", "NS\r\n", "delete $\r\n", "DELETED\r\n", NULL, false },
    { "ms $ 1 ME T9\r\nv\r\n", "HD\r\n", "ms $ 1 T9\r\nv\r\n", "HD\r\n", NULL, false },
    { "ms $ 1 ME T9\r\nv\r\n", "NS\r\n", NULL, NULL, NULL, false },
    { "ms $ 1 MR\r\nv\r\n", "HD\r\n", "ms $ 1\r\nv\r\n", "HD\r\n", NULL, false },
    { "ms $ 1 MR\r\nv\r\n", "NS\r\n", "delete $\r\n", "NOT_FOUND\r\n", NULL, false },
    { "ms $ 1 C77 T5\r\nv\r\n", "HD\r\n", "ms $ 1 T5\r\nv\r\n", "HD\r\n", NULL, false },
    { "ms $ 1 C77 T5\r\nv\r\n", "EX\r\n", NULL, NULL, NULL, false },
    { "ms $ 1 C77 T5\r\nv\r\n", "NF\r\n", "delete $\r\n", "NOT_FOUND\r\n", NULL, false },
    { "ms $ 1 MA\r\nv\r\n", "HD\r\n", "delete $\r\n", "DELETED\r\n", NULL, false },
    { "ms $ 1 I\r\nv\r\n", "HD\r\n", "delete $\r\n", "DELETED\r\n", NULL, false },
    { "md $\r\n", "HD\r\n", "delete $\r\n", "DELETED\r\n", NULL, false },
    { "ma $\r\n", "HD\r\n", "delete $\r\n", "DELETED\r\n", NULL, false },
    { "mg $ v T30\r\n", "VA 1\r\nv\r\n", "mg $ T30\r\n", "HD\r\n", NULL, false },
    { "mg $ v T30\r\n", "EN\r\n", NULL, NULL, NULL, false },
    { "mg $ N30 v\r\n", "VA 1\r\nv\r\n", "delete $\r\n", "DELETED\r\n", NULL, false },
    { "mg $ v\r\n", "VA 1\r\nv\r\n", NULL, NULL, NULL, true },
    { "me $\r\n", "EN\r\n", NULL, NULL, NULL, true },
};

static void
test_copy_rule_meta(void **state)
{
    (void)state;
    for (size_t i = 0; i < NELEM(meta_rows); i++) {
        copy_row_run(&meta_rows[i], MCS_WRITE_ASYNC);
        copy_row_run(&meta_rows[i], MCS_WRITE_SYNC);
    }
}

/* The rule applied to binary writes: copies are binary packets (same opaque,
 * no CAS); a delete is sent as text; a set with a CAS follows the cas rows. */
static void
test_copy_rule_binary(void **state)
{
    (void)state;
    for (int row = 0; row < 9; row++) {
        struct fake f;
        assert_int_equal(fd_init(&f, &two_copies), 0);
        char k[32];
        fd_key(&f, "k", (const uint32_t[]){ 0, 1 }, 2, k, sizeof(k));
        struct fd_client *c = fd_client_new(&f);
        char x8[8] = { 0, 0, 0, 5, 0, 0, 0, 100 };   /* flags 5, exptime 100 */
        char x20[20] = { 0 };
        x20[7] = 3;                                   /* delta 3, initial 0, exptime 0 */
        char x4[4] = { 0, 0, 0, 60 };                 /* touch: exptime 60 */
        char n8[8] = { 0, 0, 0, 0, 0, 0, 0, 13 }, other8[8] = { 0, 0, 0, 0, 0, 0, 0, 12 };
        PKT(req);
        PKT(reply);
        PKT(copy);
        PKT(copy_reply);
        bool text_delete = false, then_delete = false;
        switch (row) {
        case 0:   /* set stored: a set of the same value */
        case 1:   /* set with a CAS refused: nothing */
            pkt_add(&req, 0x80, MCS_BIN_OP_SET, 0, 4, row == 1 ? 99 : 0, x8, 8, k, "v", 1);
            if (row == 0) {
                bin_status(&reply, MCS_BIN_OP_SET, 0, 4, 1);
                pkt_add(&copy, 0x80, MCS_BIN_OP_SET, 0, 4, 0, x8, 8, k, "v", 1);
                bin_status(&copy_reply, MCS_BIN_OP_SET, 0, 4, 2);
            } else {
                bin_status(&reply, MCS_BIN_OP_SET, MCS_BIN_STATUS_KEY_EEXISTS, 4, 0);
            }
            break;
        case 2:   /* add refused (the key exists): nothing */
            pkt_add(&req, 0x80, MCS_BIN_OP_ADD, 0, 4, 0, x8, 8, k, "v", 1);
            bin_status(&reply, MCS_BIN_OP_ADD, MCS_BIN_STATUS_KEY_EEXISTS, 4, 0);
            break;
        case 3:   /* replace of a missing key: delete */
            pkt_add(&req, 0x80, MCS_BIN_OP_REPLACE, 0, 4, 0, x8, 8, k, "v", 1);
            bin_status(&reply, MCS_BIN_OP_REPLACE, MCS_BIN_STATUS_KEY_ENOENT, 4, 0);
            text_delete = true;
            break;
        case 4:   /* delete: delete */
            pkt_add(&req, 0x80, MCS_BIN_OP_DELETE, 0, 4, 0, NULL, 0, k, NULL, 0);
            bin_status(&reply, MCS_BIN_OP_DELETE, 0, 4, 0);
            text_delete = true;
            break;
        case 5:   /* append: delete */
            pkt_add(&req, 0x80, MCS_BIN_OP_APPEND, 0, 4, 0, NULL, 0, k, "v", 1);
            bin_status(&reply, MCS_BIN_OP_APPEND, 0, 4, 0);
            text_delete = true;
            break;
        case 6:   /* incr: the same incr; the same result */
        case 7:   /* incr: a different result: the copy is deleted */
            pkt_add(&req, 0x80, MCS_BIN_OP_INCREMENT, 0, 4, 0, x20, 20, k, NULL, 0);
            pkt_add(&reply, 0x81, MCS_BIN_OP_INCREMENT, 0, 4, 7, NULL, 0, NULL, n8, 8);
            pkt_add(&copy, 0x80, MCS_BIN_OP_INCREMENT, 0, 4, 0, x20, 20, k, NULL, 0);
            pkt_add(&copy_reply, 0x81, MCS_BIN_OP_INCREMENT, 0, 4, 8, NULL, 0, NULL, row == 6 ? n8 : other8, 8);
            then_delete = row == 7;
            break;
        case 8:   /* touch: the same touch */
            pkt_add(&req, 0x80, MCS_BIN_OP_TOUCH, 0, 4, 0, x4, 4, k, NULL, 0);
            pkt_add(&reply, 0x81, MCS_BIN_OP_TOUCH, 0, 4, 7, x8, 4, NULL, NULL, 0);
            pkt_add(&copy, 0x80, MCS_BIN_OP_TOUCH, 0, 4, 0, x4, 4, k, NULL, 0);
            pkt_add(&copy_reply, 0x81, MCS_BIN_OP_TOUCH, 0, 4, 8, x8, 4, NULL, NULL, 0);
            break;
        }
        fd_client_send(&f, c, req.b, req.n);
        sent_pkt(&f, 0, &req);   /* as sent (row 1: with its CAS) */
        fd_answer(&f, 0, reply.b, reply.n);
        out_pkt(&f, c, &reply);
        if (copy.n > 0) {
            struct fd_send *x = sent_pkt(&f, 1, &copy);
            assert_int_equal(x->conn, c->s.id);
            fd_answer(&f, 1, copy_reply.b, copy_reply.n);
        }
        if (text_delete || then_delete) {
            struct fd_send *x = sent_k(&f, 1, "delete $\r\n", k);
            assert_int_equal(x->proto, MCS_PROTO_TEXT);
            FD_ANSWER(&f, 1, "DELETED\r\n");
        }
        out_none(&f, c);
        fd_expect_idle(&f);
        fd_free(&f);
    }
}

/* A copy whose connection fails: the write is still answered (sync: once the
 * copy failed), and the copy's miss is logged for its rejoin. A copy that is
 * down gets nothing, and the key is logged. */
static void
test_copy_failures_are_logged(void **state)
{
    (void)state;
    for (int mode = MCS_WRITE_ASYNC; mode <= MCS_WRITE_SYNC; mode++) {
        struct fake f;
        struct fd_opts o = { .nprimaries = 2, .replicas = 2, .write = (enum mcs_write_mode)mode };
        assert_int_equal(fd_init(&f, &o), 0);
        char k[32];
        fd_key(&f, "k", (const uint32_t[]){ 0, 1 }, 2, k, sizeof(k));
        struct fd_client *c = fd_client_new(&f);
        send_k(&f, c, "set $ 0 0 1\r\nv\r\n", k);
        sent_k(&f, 0, "set $ 0 0 1\r\nv\r\n", k);
        FD_ANSWER(&f, 0, "STORED\r\n");
        sent_k(&f, 1, "set $ 0 0 1\r\nv\r\n", k);
        if (mode == MCS_WRITE_SYNC) {
            out_none(&f, c);
        } else {
            FD_OUT(&f, c, "STORED\r\n");
        }
        fd_fail_server(&f, 1, MCS_FAILURE_RESET);
        if (mode == MCS_WRITE_SYNC) {
            FD_OUT(&f, c, "STORED\r\n");
        }
        assert_int_equal(health(&f, 1), MCS_HEALTH_DOWN);
        assert_int_equal(missed_count(&f, 1), 1);
        /* copy down: nothing sent to it, the key logged; the answer does not wait */
        send_k(&f, c, "delete $\r\n", "other");
        fd_expect_none(&f, 1);
        FD_SENT(&f, 0, "delete other\r\n");
        FD_ANSWER(&f, 0, "DELETED\r\n");
        FD_OUT(&f, c, "DELETED\r\n");
        fd_expect_idle(&f);
        fd_free(&f);
    }
}

/* ---- 5. warm-up ------------------------------------------------------------------------------- */

/* A `stats` answer naming an instance: pid, and started = time - uptime. */
static void
answer_stats(struct fake *f, uint32_t s, uint64_t pid, uint64_t started)
{
    char b[256];
    int n = snprintf(b, sizeof(b), "STAT pid %" PRIu64 "\r\nSTAT uptime %" PRIu64 "\r\nSTAT time %" PRIu64
                     "\r\nSTAT version 1.6.21\r\nEND\r\n", pid, f->m.unix_s - started, f->m.unix_s);
    fd_answer(f, s, b, (size_t)n);
}

/* Server s is first contacted: the machine asks which instance it is. */
static void
identify(struct fake *f, uint32_t s, uint64_t pid, uint64_t started)
{
    mcs_machine_connected(&f->m, s, 0);
    fd_settle(f);
    struct fd_send *x = FD_SENT(f, s, "stats\r\n");
    assert_int_equal(x->proto, MCS_PROTO_TEXT);
    answer_stats(f, s, pid, started);
    assert_true(f->m.router.servers[s].identity.known);
    assert_int_equal(f->m.router.servers[s].identity.pid, pid);
}

/* Server s goes down (failure limit 1), then its probe is due: the machine
 * sends `stats`, which the test answers. */
static void
down_then_probe(struct fake *f, uint32_t s)
{
    fd_fail_server(f, s, MCS_FAILURE_RESET);
    assert_int_equal(health(f, s), MCS_HEALTH_DOWN);
    fd_advance(f, f->cfg.retry_ms - 1);
    fd_expect_none(f, s);                 /* not before MCSHIM_RETRY_MS */
    fd_advance(f, 1);
    struct fd_send *x = FD_SENT(f, s, "stats\r\n");
    assert_int_equal(x->proto, MCS_PROTO_TEXT);
    assert_int_equal(f->m.router.servers[s].stats.probes, 1);
}

/* A primary that comes back restarted (a different pid) is warming: a get
 * that misses on it is fetched from the copy with `mg <key> v f t c`, the
 * application reads a VALUE with the copy's flags (and CAS for gets), and the
 * warming server is sent `add <key> <flags> <remaining ttl> <size>` + data. A
 * TTL over 30 days is sent as an absolute time; no TTL as 0; a hit on the
 * warming server or a miss on the copy sends nothing more. */
static void
test_warmup_fetches_from_copy_and_adds_back(void **state)
{
    (void)state;
    struct fake f;
    assert_int_equal(fd_init(&f, &warming_opts), 0);
    f.piece = 3;
    char k[32], k2[32], k3[32], h[32], mkey[32];
    fd_key(&f, "k", (const uint32_t[]){ 0, 1 }, 2, k, sizeof(k));
    fd_key(&f, "x", (const uint32_t[]){ 0, 1 }, 2, k2, sizeof(k2));
    fd_key(&f, "y", (const uint32_t[]){ 0, 1 }, 2, k3, sizeof(k3));
    fd_key(&f, "h", (const uint32_t[]){ 0, 1 }, 2, h, sizeof(h));
    fd_key(&f, "m", (const uint32_t[]){ 0, 1 }, 2, mkey, sizeof(mkey));
    struct fd_client *c = fd_client_new(&f);

    identify(&f, 0, 1000, FD_UNIX_S - 5000);
    down_then_probe(&f, 0);
    answer_stats(&f, 0, 2000, FD_UNIX_S - 3);   /* a new instance */
    assert_int_equal(health(&f, 0), MCS_HEALTH_WARMING);
    assert_int_equal(f.m.router.servers[0].stats.restarts, 1);
    assert_true(fd_log_has(&f, "server 10.0.0.1:11211 is back (restarted, empty); warming up from its copies"));

    /* a miss on the warming primary: fetched from the copy, added back */
    send_k(&f, c, "get $\r\n", k);
    sent_k(&f, 0, "get $\r\n", k);
    FD_ANSWER(&f, 0, "END\r\n");
    struct fd_send *x = sent_k(&f, 1, "mg $ v f t c\r\n", k);
    assert_int_equal(x->proto, MCS_PROTO_TEXT);
    out_none(&f, c);
    FD_ANSWER(&f, 1, "VA 5 f7 t500 c99\r\nhello\r\n");
    out_k(&f, c, "VALUE $ 7 5\r\nhello\r\nEND\r\n", k);
    sent_k(&f, 0, "add $ 7 500 5\r\nhello\r\n", k);
    FD_ANSWER(&f, 0, "STORED\r\n");
    assert_int_equal(f.m.router.servers[0].stats.warm_fills, 1);

    /* gets: the copy's CAS; no expiry: add with exptime 0 */
    send_k(&f, c, "gets $\r\n", k2);
    sent_k(&f, 0, "gets $\r\n", k2);
    FD_ANSWER(&f, 0, "END\r\n");
    sent_k(&f, 1, "mg $ v f t c\r\n", k2);
    FD_ANSWER(&f, 1, "VA 1 f0 t-1 c42\r\nv\r\n");
    out_k(&f, c, "VALUE $ 0 1 42\r\nv\r\nEND\r\n", k2);
    sent_k(&f, 0, "add $ 0 0 1\r\nv\r\n", k2);
    FD_ANSWER(&f, 0, "NOT_STORED\r\n");   /* written meanwhile: add keeps the newer value */
    assert_int_equal(f.m.router.servers[0].stats.warm_fills, 1);

    /* a remaining TTL over 30 days is an absolute time for memcached */
    send_k(&f, c, "get $\r\n", k3);
    sent_k(&f, 0, "get $\r\n", k3);
    FD_ANSWER(&f, 0, "END\r\n");
    sent_k(&f, 1, "mg $ v f t c\r\n", k3);
    FD_ANSWER(&f, 1, "VA 2 f1 t3000000 c5\r\nzz\r\n");
    out_k(&f, c, "VALUE $ 1 2\r\nzz\r\nEND\r\n", k3);
    char add[128];
    snprintf(add, sizeof(add), "add %s 1 %u 2\r\nzz\r\n", k3, 3000000u + FD_UNIX_S);
    fd_expect_sent(&f, 0, add, strlen(add));
    FD_ANSWER(&f, 0, "STORED\r\n");

    /* two keys, one hit on the warming server: only the miss is fetched; order kept */
    char line[128], want[256];
    snprintf(line, sizeof(line), "get %s %s\r\n", h, mkey);
    fd_client_send(&f, c, line, strlen(line));
    fd_expect_sent(&f, 0, line, strlen(line));
    answer_k(&f, 0, "VALUE $ 0 1\r\nH\r\nEND\r\n", h);
    sent_k(&f, 1, "mg $ v f t c\r\n", mkey);
    out_none(&f, c);   /* the warming server's answer waits for the fetch */
    FD_ANSWER(&f, 1, "VA 1 f3 t60 c1\r\nM\r\n");
    snprintf(want, sizeof(want), "VALUE %s 0 1\r\nH\r\nVALUE %s 3 1\r\nM\r\nEND\r\n", h, mkey);
    out_is(&f, c, want);
    sent_k(&f, 0, "add $ 3 60 1\r\nM\r\n", mkey);
    FD_ANSWER(&f, 0, "STORED\r\n");

    /* the copy misses too: a miss, nothing added */
    send_k(&f, c, "get $\r\n", "nokey");
    uint32_t t[MCS_MAX_TARGETS];
    mcs_router_targets(&f.m.router, "nokey", 5, t);
    FD_SENT(&f, t[0], "get nokey\r\n");
    fd_answer(&f, t[0], "END\r\n", 5);
    if (t[0] == 0) {
        FD_SENT(&f, t[1], "mg nokey v f t c\r\n");
        fd_answer(&f, t[1], "EN\r\n", 4);
    }
    FD_OUT(&f, c, "END\r\n");
    fd_expect_idle(&f);
    assert_int_equal(f.m.router.servers[0].stats.warm_fills, 3);
    fd_free(&f);
}

/* After MCSHIM_WARMUP_S the server is up: a miss is a miss. A TTL of 0 from
 * the copy (about to expire) is answered but not added back. */
static void
test_warmup_ends_after_its_window(void **state)
{
    (void)state;
    struct fake f;
    assert_int_equal(fd_init(&f, &warming_opts), 0);
    char k[32];
    fd_key(&f, "k", (const uint32_t[]){ 0, 1 }, 2, k, sizeof(k));
    struct fd_client *c = fd_client_new(&f);
    identify(&f, 0, 1000, FD_UNIX_S - 5000);
    down_then_probe(&f, 0);
    answer_stats(&f, 0, 1000, FD_UNIX_S - 10);   /* same pid, another start time: restarted */
    assert_int_equal(health(&f, 0), MCS_HEALTH_WARMING);

    send_k(&f, c, "get $\r\n", k);
    sent_k(&f, 0, "get $\r\n", k);
    FD_ANSWER(&f, 0, "END\r\n");
    sent_k(&f, 1, "mg $ v f t c\r\n", k);
    FD_ANSWER(&f, 1, "VA 1 f0 t0 c3\r\nv\r\n");
    out_k(&f, c, "VALUE $ 0 1\r\nv\r\nEND\r\n", k);
    fd_expect_none(&f, 0);   /* no add of an item about to expire */

    fd_advance(&f, 59999);
    assert_int_equal(health(&f, 0), MCS_HEALTH_WARMING);
    fd_advance(&f, 1);
    assert_int_equal(health(&f, 0), MCS_HEALTH_UP);
    send_k(&f, c, "get $\r\n", k);
    sent_k(&f, 0, "get $\r\n", k);
    FD_ANSWER(&f, 0, "END\r\n");
    FD_OUT(&f, c, "END\r\n");
    fd_expect_none(&f, 1);
    fd_expect_idle(&f);
    fd_free(&f);
}

/* Warm-up for the other protocols: a binary getk that misses on the warming
 * primary is answered with the copy's item as a binary getk hit (key, flags);
 * a meta mg is re-sent to the copy as the client wrote it, and the item is
 * fetched and added back either way. */
static void
test_warmup_binary_and_meta(void **state)
{
    (void)state;
    struct fake f;
    assert_int_equal(fd_init(&f, &warming_opts), 0);
    f.piece = 2;
    char k[32], k2[32];
    fd_key(&f, "k", (const uint32_t[]){ 0, 1 }, 2, k, sizeof(k));
    fd_key(&f, "m", (const uint32_t[]){ 0, 1 }, 2, k2, sizeof(k2));
    identify(&f, 0, 1000, FD_UNIX_S - 5000);
    down_then_probe(&f, 0);
    answer_stats(&f, 0, 2000, FD_UNIX_S - 3);
    assert_int_equal(health(&f, 0), MCS_HEALTH_WARMING);

    struct fd_client *bin = fd_client_new(&f);
    PKT(getk);
    bin_req(&getk, MCS_BIN_OP_GETK, 9, k, NULL, 0);
    fd_client_send(&f, bin, getk.b, getk.n);
    sent_pkt(&f, 0, &getk);
    PKT(miss);
    pkt_add(&miss, 0x81, MCS_BIN_OP_GETK, MCS_BIN_STATUS_KEY_ENOENT, 9, 0, NULL, 0, NULL, "Not found", 9);
    fd_answer(&f, 0, miss.b, miss.n);
    struct fd_send *x = sent_k(&f, 1, "mg $ v f t c\r\n", k);
    assert_int_equal(x->proto, MCS_PROTO_TEXT);
    out_none(&f, bin);
    FD_ANSWER(&f, 1, "VA 5 f7 t500 c99\r\nhello\r\n");
    PKT(hit);
    bin_hit(&hit, MCS_BIN_OP_GETK, 9, 99, 7, k, "hello");
    out_pkt(&f, bin, &hit);
    x = sent_k(&f, 0, "add $ 7 500 5\r\nhello\r\n", k);
    assert_int_equal(x->proto, MCS_PROTO_TEXT);
    FD_ANSWER(&f, 0, "STORED\r\n");
    assert_int_equal(f.m.router.servers[0].stats.warm_fills, 1);

    struct fd_client *c = fd_client_new(&f);
    send_k(&f, c, "mg $ v f\r\n", k2);
    sent_k(&f, 0, "mg $ v f\r\n", k2);
    FD_ANSWER(&f, 0, "EN\r\n");
    sent_k(&f, 1, "mg $ v f\r\n", k2);         /* the client's request, its answer */
    sent_k(&f, 1, "mg $ v f t c\r\n", k2);     /* the fetch for the add */
    out_none(&f, c);
    FD_ANSWER(&f, 1, "VA 2 f4\r\nhi\r\n");
    FD_ANSWER(&f, 1, "VA 2 f4 t-1 c12\r\nhi\r\n");
    FD_OUT(&f, c, "VA 2 f4\r\nhi\r\n");
    sent_k(&f, 0, "add $ 4 0 2\r\nhi\r\n", k2);
    FD_ANSWER(&f, 0, "STORED\r\n");
    fd_expect_idle(&f);
    fd_free(&f);
}

/* ---- 6. rejoin --------------------------------------------------------------------------------- */

/* A server cut off (down) while writes go to its copy: each write it missed is
 * logged; when its probe shows the same instance it is rejoining (no traffic)
 * and gets a delete of each key, including a write that arrived meanwhile;
 * then it serves again. A failed probe leaves it down until the next one. */
static void
test_rejoin_replays_missed_deletes(void **state)
{
    (void)state;
    struct fake f;
    assert_int_equal(fd_init(&f, &(struct fd_opts){ .nprimaries = 2, .replicas = 2, .retry_ms = 1000 }), 0);
    f.piece = 1;
    char k1[32], k2[32], k3[32], k4[32];
    fd_key(&f, "a", (const uint32_t[]){ 0, 1 }, 2, k1, sizeof(k1));
    fd_key(&f, "b", (const uint32_t[]){ 0, 1 }, 2, k2, sizeof(k2));
    fd_key(&f, "c", (const uint32_t[]){ 1, 0 }, 2, k3, sizeof(k3));
    fd_key(&f, "d", (const uint32_t[]){ 0, 1 }, 2, k4, sizeof(k4));
    struct fd_client *c = fd_client_new(&f);
    identify(&f, 0, 1000, FD_UNIX_S - 5000);

    fd_fail_server(&f, 0, MCS_FAILURE_RESET);
    send_k(&f, c, "set $ 0 0 1\r\nv\r\n", k1);
    sent_k(&f, 1, "set $ 0 0 1\r\nv\r\n", k1);
    FD_ANSWER(&f, 1, "STORED\r\n");
    send_k(&f, c, "delete $\r\n", k2);
    sent_k(&f, 1, "delete $\r\n", k2);
    FD_ANSWER(&f, 1, "DELETED\r\n");
    send_k(&f, c, "set $ 0 0 1\r\nv\r\n", k3);   /* primary 1: its copy (0) misses it */
    sent_k(&f, 1, "set $ 0 0 1\r\nv\r\n", k3);
    FD_ANSWER(&f, 1, "STORED\r\n");
    FD_OUT(&f, c, "STORED\r\nDELETED\r\nSTORED\r\n");
    fd_expect_none(&f, 0);
    assert_int_equal(missed_count(&f, 0), 3);

    /* the first probe fails: still down, probed again after MCSHIM_RETRY_MS */
    fd_advance(&f, 1000);
    FD_SENT(&f, 0, "stats\r\n");
    fd_fail_server(&f, 0, MCS_FAILURE_RESET);
    assert_int_equal(health(&f, 0), MCS_HEALTH_DOWN);
    fd_advance(&f, 999);
    fd_expect_none(&f, 0);
    fd_advance(&f, 1);
    FD_SENT(&f, 0, "stats\r\n");
    answer_stats(&f, 0, 1000, FD_UNIX_S - 5000);   /* the same instance: it was cut off */
    assert_int_equal(health(&f, 0), MCS_HEALTH_REJOINING);
    assert_int_equal(f.m.router.servers[0].stats.rejoins, 1);
    char d1[64], d2[64], d3[64];
    expand(d1, sizeof(d1), "delete $\r\n", k1);
    expand(d2, sizeof(d2), "delete $\r\n", k2);
    expand(d3, sizeof(d3), "delete $\r\n", k3);
    fd_expect_sent_set(&f, 0, (const char *const[]){ d1, d2, d3 }, 3);
    assert_true(fd_log_has(&f, "server 10.0.0.1:11211 is back after a cut (same instance); "
                               "deleting the 3 key(s) it missed"));

    /* rejoining: no application traffic; a write meanwhile is logged too */
    send_k(&f, c, "get $\r\n", k1);
    sent_k(&f, 1, "get $\r\n", k1);
    answer_k(&f, 1, "VALUE $ 0 1\r\nv\r\nEND\r\n", k1);
    out_k(&f, c, "VALUE $ 0 1\r\nv\r\nEND\r\n", k1);
    send_k(&f, c, "set $ 0 0 1\r\nv\r\n", k4);
    sent_k(&f, 1, "set $ 0 0 1\r\nv\r\n", k4);
    FD_ANSWER(&f, 1, "STORED\r\n");
    FD_OUT(&f, c, "STORED\r\n");
    fd_expect_none(&f, 0);

    FD_ANSWER(&f, 0, "DELETED\r\n");
    FD_ANSWER(&f, 0, "NOT_FOUND\r\n");
    assert_int_equal(health(&f, 0), MCS_HEALTH_REJOINING);
    FD_ANSWER(&f, 0, "DELETED\r\n");
    /* the batch is done: the key written meanwhile is deleted before it serves */
    assert_int_equal(health(&f, 0), MCS_HEALTH_REJOINING);
    sent_k(&f, 0, "delete $\r\n", k4);
    FD_ANSWER(&f, 0, "DELETED\r\n");
    assert_int_equal(health(&f, 0), MCS_HEALTH_UP);
    assert_int_equal(f.m.router.servers[0].stats.invalidations_replayed, 4);
    assert_int_equal(missed_count(&f, 0), 0);
    assert_true(fd_log_has(&f, "server 10.0.0.1:11211 rejoined (4 invalidation(s) replayed in all); in use again"));

    /* usable again */
    send_k(&f, c, "get $\r\n", k1);
    sent_k(&f, 0, "get $\r\n", k1);
    FD_ANSWER(&f, 0, "END\r\n");
    FD_OUT(&f, c, "END\r\n");
    fd_expect_idle(&f);
    fd_free(&f);
}

/* How a server back from a cut is flushed instead: more missed keys than
 * MCSHIM_REJOIN_LOG (0), MCSHIM_REJOIN=flush (1), a missed flush_all (2). */
static void
rejoin_flush_run(int why)
{
    struct fake f;
    struct fd_opts o = { .nprimaries = 2, .replicas = 2, .rejoin_log = 3,
                         .rejoin = why == 1 ? MCS_REJOIN_FLUSH : MCS_REJOIN_REPLAY };
    assert_int_equal(fd_init(&f, &o), 0);
    struct fd_client *c = fd_client_new(&f);
    identify(&f, 0, 1000, FD_UNIX_S - 5000);
    fd_fail_server(&f, 0, MCS_FAILURE_RESET);
    unsigned nkeys = why == 0 ? 4 : 1;
    for (unsigned i = 0; i < nkeys; i++) {
        char k[32];
        fd_key(&f, i == 0 ? "a" : i == 1 ? "b" : i == 2 ? "c" : "d", (const uint32_t[]){ 0, 1 }, 2, k, sizeof(k));
        send_k(&f, c, "delete $\r\n", k);
        sent_k(&f, 1, "delete $\r\n", k);
        FD_ANSWER(&f, 1, "DELETED\r\n");
        FD_OUT(&f, c, "DELETED\r\n");
    }
    assert_int_equal(f.m.router.servers[0].stats.invalidations_logged, why == 0 ? 3 : 1);
    if (why == 0) {
        assert_true(mcs_keylog_overflowed(&f.m.router.servers[0].missed));
    }
    if (why == 2) {
        FD_SEND(&f, c, "flush_all\r\n");
        FD_SENT(&f, 1, "flush_all\r\n");
        fd_expect_none(&f, 0);
        FD_ANSWER(&f, 1, "OK\r\n");
        FD_OUT(&f, c, "OK\r\n");
    }
    fd_advance(&f, f.cfg.retry_ms);
    FD_SENT(&f, 0, "stats\r\n");
    answer_stats(&f, 0, 1000, FD_UNIX_S - 5000);
    assert_int_equal(health(&f, 0), MCS_HEALTH_REJOINING);
    FD_SENT(&f, 0, "flush_all\r\n");   /* and no deletes */
    fd_expect_none(&f, 0);
    assert_true(fd_log_has(&f, why == 1 ? "flushing it (MCSHIM_REJOIN=flush)"
                                        : "flushing it (too many missed writes to replay)"));
    FD_ANSWER(&f, 0, "OK\r\n");
    assert_int_equal(f.m.router.servers[0].stats.rejoin_flushes, 1);
    assert_int_equal(health(&f, 0), MCS_HEALTH_UP);   /* warm-up 0 */
    assert_int_equal(missed_count(&f, 0), 0);
    assert_false(mcs_keylog_overflowed(&f.m.router.servers[0].missed));
    fd_expect_idle(&f);
    fd_free(&f);
}

static void
test_rejoin_log_overflow_flushes(void **state)
{
    (void)state;
    rejoin_flush_run(0);
}

static void
test_rejoin_flush_mode_flushes(void **state)
{
    (void)state;
    rejoin_flush_run(1);
}

static void
test_rejoin_after_missed_flush_all_flushes(void **state)
{
    (void)state;
    rejoin_flush_run(2);
}

/* A server that fails again while rejoining goes back to down; the deletes
 * it did not take stay logged, and its next probe replays them. */
static void
test_rejoin_interrupted_is_replayed_at_the_next_probe(void **state)
{
    (void)state;
    struct fake f;
    assert_int_equal(fd_init(&f, &(struct fd_opts){ .nprimaries = 2, .replicas = 2, .retry_ms = 1000 }), 0);
    char k1[32], k2[32];
    fd_key(&f, "a", (const uint32_t[]){ 0, 1 }, 2, k1, sizeof(k1));
    fd_key(&f, "b", (const uint32_t[]){ 0, 1 }, 2, k2, sizeof(k2));
    struct fd_client *c = fd_client_new(&f);
    identify(&f, 0, 1000, FD_UNIX_S - 5000);
    fd_fail_server(&f, 0, MCS_FAILURE_RESET);
    send_k(&f, c, "delete $\r\n", k1);
    sent_k(&f, 1, "delete $\r\n", k1);
    FD_ANSWER(&f, 1, "DELETED\r\n");
    send_k(&f, c, "delete $\r\n", k2);
    sent_k(&f, 1, "delete $\r\n", k2);
    FD_ANSWER(&f, 1, "DELETED\r\n");
    FD_OUT(&f, c, "DELETED\r\nDELETED\r\n");

    fd_advance(&f, 1000);
    FD_SENT(&f, 0, "stats\r\n");
    answer_stats(&f, 0, 1000, FD_UNIX_S - 5000);
    assert_int_equal(health(&f, 0), MCS_HEALTH_REJOINING);
    char d1[64], d2[64];
    expand(d1, sizeof(d1), "delete $\r\n", k1);
    expand(d2, sizeof(d2), "delete $\r\n", k2);
    fd_expect_sent_set(&f, 0, (const char *const[]){ d1, d2 }, 2);
    FD_ANSWER(&f, 0, "DELETED\r\n");
    fd_fail_server(&f, 0, MCS_FAILURE_RESET);   /* the second delete is lost */
    assert_int_equal(health(&f, 0), MCS_HEALTH_DOWN);
    assert_true(fd_log_has(&f, "failed again while rejoining"));
    assert_int_equal(missed_count(&f, 0), 1);

    fd_advance(&f, 1000);
    FD_SENT(&f, 0, "stats\r\n");
    answer_stats(&f, 0, 1000, FD_UNIX_S - 5000);
    assert_int_equal(health(&f, 0), MCS_HEALTH_REJOINING);
    struct fd_send *x = fd_waiting(&f, 0);
    assert_non_null(x);
    x->checked = true;
    assert_true(fd_bytes_equal(x->bytes, x->len, d1, strlen(d1)) || fd_bytes_equal(x->bytes, x->len, d2, strlen(d2)));
    FD_ANSWER(&f, 0, "DELETED\r\n");
    assert_int_equal(health(&f, 0), MCS_HEALTH_UP);
    assert_int_equal(f.m.router.servers[0].stats.invalidations_replayed, 2);
    fd_expect_idle(&f);
    fd_free(&f);
}

/* The other topologies: a backup pool (magent's: every key also on its backup
 * owner) and eject (no copies: a down server's keys go to the live ring). */
static void
test_backup_pool_and_eject_failover(void **state)
{
    (void)state;
    /* backup pool: targets are primary, then the backup */
    struct fake f;
    assert_int_equal(fd_init(&f, &(struct fd_opts){ .nprimaries = 2, .nbackups = 1 }), 0);
    char k[32];
    fd_key(&f, "k", (const uint32_t[]){ 0, 2 }, 2, k, sizeof(k));
    struct fd_client *c = fd_client_new(&f);
    send_k(&f, c, "set $ 0 0 1\r\nv\r\n", k);
    sent_k(&f, 0, "set $ 0 0 1\r\nv\r\n", k);
    FD_ANSWER(&f, 0, "STORED\r\n");
    FD_OUT(&f, c, "STORED\r\n");
    sent_k(&f, 2, "set $ 0 0 1\r\nv\r\n", k);   /* the backup's copy */
    FD_ANSWER(&f, 2, "STORED\r\n");
    send_k(&f, c, "get $\r\n", k);
    sent_k(&f, 0, "get $\r\n", k);
    fd_fail_server(&f, 0, MCS_FAILURE_RESET);
    sent_k(&f, 2, "get $\r\n", k);
    answer_k(&f, 2, "VALUE $ 0 1\r\nv\r\nEND\r\n", k);
    out_k(&f, c, "VALUE $ 0 1\r\nv\r\nEND\r\n", k);
    fd_expect_none(&f, 1);
    fd_expect_idle(&f);
    fd_free(&f);

    /* eject: no copies; while the owner is down its keys go to the live ring's
     * owner (a stand-in, not a copy: nothing else is sent). A read waiting on
     * the owner when it fails moves to the stand-in (where it misses). */
    assert_int_equal(fd_init(&f, &(struct fd_opts){ .nprimaries = 3, .eject = true }), 0);
    fd_key(&f, "k", (const uint32_t[]){ 0 }, 1, k, sizeof(k));
    c = fd_client_new(&f);
    send_k(&f, c, "get $\r\n", k);
    sent_k(&f, 0, "get $\r\n", k);
    fd_fail_server(&f, 0, MCS_FAILURE_RESET);
    uint32_t t[MCS_MAX_TARGETS];
    assert_int_equal(mcs_router_targets(&f.m.router, k, strlen(k), t), 2);
    assert_int_equal(t[0], 0);
    assert_true(t[1] == 1 || t[1] == 2);
    sent_k(&f, t[1], "get $\r\n", k);
    fd_answer(&f, t[1], "END\r\n", 5);
    FD_OUT(&f, c, "END\r\n");
    send_k(&f, c, "set $ 0 0 1\r\nv\r\n", k);
    fd_expect_none(&f, 0);
    sent_k(&f, t[1], "set $ 0 0 1\r\nv\r\n", k);
    fd_answer(&f, t[1], "STORED\r\n", 8);
    FD_OUT(&f, c, "STORED\r\n");
    fd_expect_none(&f, 3 - t[1]);
    assert_int_equal(missed_count(&f, 0), 1);   /* replayed when the owner comes back from a cut */
    send_k(&f, c, "get $\r\n", k);
    sent_k(&f, t[1], "get $\r\n", k);
    answer_k(&f, t[1], "VALUE $ 0 1\r\nv\r\nEND\r\n", k);
    out_k(&f, c, "VALUE $ 0 1\r\nv\r\nEND\r\n", k);
    fd_expect_idle(&f);
    fd_free(&f);
}

/* With MCSHIM_EJECT=1 (no copies), a write waiting on its server when the
 * server goes down moves to the key's stand-in (its owner on the ring of live
 * servers, which router.h lists as its next target while the server is down),
 * as a read does (keys_move looks the targets up again). Found by this file:
 * the write's targets used to be the ones computed at dispatch, when the
 * server was up, and it was answered "SERVER_ERROR ... unavailable".
 * docs/availability.md: "With MCSHIM_EJECT=1 its keys move to their owner on
 * the ring of the live servers while it is down: ... writes succeed there". */
static void
test_eject_write_in_flight_moves_to_the_stand_in(void **state)
{
    (void)state;
    struct fake f;
    char k[32];
    assert_int_equal(fd_init(&f, &(struct fd_opts){ .nprimaries = 3, .eject = true }), 0);
    fd_key(&f, "k", (const uint32_t[]){ 0 }, 1, k, sizeof(k));
    struct fd_client *c = fd_client_new(&f);
    send_k(&f, c, "set $ 0 0 1\r\nv\r\n", k);
    sent_k(&f, 0, "set $ 0 0 1\r\nv\r\n", k);
    fd_fail_server(&f, 0, MCS_FAILURE_RESET);
    uint32_t t[MCS_MAX_TARGETS];
    assert_int_equal(mcs_router_targets(&f.m.router, k, strlen(k), t), 2);
    out_none(&f, c);   /* it was: "SERVER_ERROR mcshim: server 10.0.0.1:11211 unavailable\r\n" */
    sent_k(&f, t[1], "set $ 0 0 1\r\nv\r\n", k);
    fd_answer(&f, t[1], "STORED\r\n", 8);
    FD_OUT(&f, c, "STORED\r\n");
    assert_int_equal(missed_count(&f, 0), 1);
    fd_expect_idle(&f);
    fd_free(&f);
}

/* Writes and reads whose application connection closes before the servers
 * answer: the answers are dropped, copies still follow the rule, and nothing
 * is leaked (sanitizer run). */
static void
test_session_closed_while_servers_owe_replies(void **state)
{
    (void)state;
    for (int mode = MCS_WRITE_ASYNC; mode <= MCS_WRITE_SYNC; mode++) {
        struct fake f;
        struct fd_opts o = { .nprimaries = 3, .replicas = 2, .write = (enum mcs_write_mode)mode };
        assert_int_equal(fd_init(&f, &o), 0);
        char a[32], b[32];
        fd_key(&f, "a", (const uint32_t[]){ 0, 1 }, 2, a, sizeof(a));
        fd_key(&f, "b", (const uint32_t[]){ 1, 2 }, 2, b, sizeof(b));
        struct fd_client *c = fd_client_new(&f);
        char line[256];
        snprintf(line, sizeof(line), "set %s 0 0 1\r\nv\r\nget %s %s\r\n", a, a, b);
        fd_client_send(&f, c, line, strlen(line));
        sent_k(&f, 0, "set $ 0 0 1\r\nv\r\n", a);
        sent_k(&f, 0, "get $\r\n", a);
        sent_k(&f, 1, "get $\r\n", b);
        fd_client_close(&f, c);
        FD_ANSWER(&f, 0, "STORED\r\n");
        sent_k(&f, 1, "set $ 0 0 1\r\nv\r\n", a);   /* the copy still gets the write */
        answer_k(&f, 0, "VALUE $ 0 1\r\nv\r\nEND\r\n", a);
        fd_fail_server(&f, 1, MCS_FAILURE_RESET);   /* and a failure after the close */
        assert_int_equal(missed_count(&f, 1), 1);
        sent_k(&f, 2, "get $\r\n", b);   /* the detached read still moves on */
        FD_ANSWER(&f, 2, "END\r\n");
        fd_expect_idle(&f);
        fd_free(&f);
    }
}

/* ---- 7. timeout ------------------------------------------------------------------------------ */

/* One connection to server 0 times out: the server is down at once (whatever
 * the failure limit), abort_server is asked once, and every request waiting on
 * any connection to it, of every session and protocol, is re-sent to its copy
 * in the same step. */
static void
test_timeout_marks_down_and_fails_over_every_waiting_request(void **state)
{
    (void)state;
    const uint32_t limits[] = { 1, 3 };
    for (size_t li = 0; li < NELEM(limits); li++) {
        struct fake f;
        struct fd_opts o = { .nprimaries = 2, .replicas = 2, .failure_limit = limits[li] };
        assert_int_equal(fd_init(&f, &o), 0);
        char k[32], k2[32];
        fd_key(&f, "k", (const uint32_t[]){ 0, 1 }, 2, k, sizeof(k));
        fd_key(&f, "j", (const uint32_t[]){ 0, 1 }, 2, k2, sizeof(k2));
        struct fd_client *a = fd_client_new(&f);
        struct fd_client *b = fd_client_new(&f);
        struct fd_client *bin = fd_client_new(&f);

        send_k(&f, a, "get $\r\n", k);
        send_k(&f, a, "set $ 0 0 1\r\nv\r\n", k2);
        send_k(&f, b, "delete $\r\n", k);
        PKT(get);
        bin_req(&get, MCS_BIN_OP_GET, 7, k, NULL, 0);
        fd_client_send(&f, bin, get.b, get.n);
        sent_k(&f, 0, "get $\r\n", k);
        sent_k(&f, 0, "set $ 0 0 1\r\nv\r\n", k2);
        sent_k(&f, 0, "delete $\r\n", k);
        sent_pkt(&f, 0, &get);
        assert_int_equal(fd_waiting_count(&f, 0), 4);

        f.m.now_ms += f.cfg.timeout_ms + 1;
        fd_fail_conn(&f, 0, MCS_PROTO_TEXT, a->s.id, MCS_FAILURE_TIMEOUT);
        assert_int_equal(health(&f, 0), MCS_HEALTH_DOWN);
        assert_int_equal(f.aborts[0], 1);
        assert_int_equal(f.m.router.servers[0].stats.downs, 1);
        assert_true(fd_log_has(&f, "server 10.0.0.1:11211 is down (timed out"));
        assert_int_equal(fd_waiting_count(&f, 0), 0);
        sent_k(&f, 1, "get $\r\n", k);
        sent_k(&f, 1, "set $ 0 0 1\r\nv\r\n", k2);
        sent_k(&f, 1, "delete $\r\n", k);
        sent_pkt(&f, 1, &get);
        fd_expect_none(&f, 0);

        answer_k(&f, 1, "VALUE $ 0 1\r\nv\r\nEND\r\n", k);
        FD_ANSWER(&f, 1, "STORED\r\n");
        FD_ANSWER(&f, 1, "DELETED\r\n");
        PKT(hit);
        bin_hit(&hit, MCS_BIN_OP_GET, 7, 1, 0, NULL, "v");
        fd_answer(&f, 1, hit.b, hit.n);
        out_k(&f, a, "VALUE $ 0 1\r\nv\r\nEND\r\nSTORED\r\n", k);
        FD_OUT(&f, b, "DELETED\r\n");
        out_pkt(&f, bin, &hit);
        assert_int_equal(missed_count(&f, 0), 2);   /* the set and the delete */
        fd_expect_idle(&f);
        fd_free(&f);
    }
}

/* ---- 8. allocation sweeps ------------------------------------------------------------------- */

#define SWEEP_MAX 100000

/* One piece of an expected answer. */
struct want {
    char     text[256];
    size_t   len;
    char     alt[256];     /* another acceptable form (a binary miss for a hit), alt_len 0: none */
    size_t   alt_len;
    bool     optional;     /* may be missing: a text miss is a whole answer */
    bool     last;         /* ends a reply */
    uint32_t opaque;       /* binary: the request it answers */
};

static void
want_text(struct want *w, const char *tmpl, const char *key, bool optional, bool last)
{
    memset(w, 0, sizeof(*w));
    expand(w->text, sizeof(w->text), tmpl, key);
    w->len = strlen(w->text);
    w->optional = optional;
    w->last = last;
}

static bool
starts(const char *p, size_t n, const char *w, size_t wlen)
{
    return wlen > 0 && n >= wlen && memcmp(p, w, wlen) == 0;
}

/* If p[0, n) starts with the out-of-memory answer (text, or a binary 0x0082
 * packet answering the request of want[i]), its length, else 0. */
static size_t
oom_len(const char *p, size_t n, bool binary, const struct want *w, size_t i, size_t nw)
{
    static const char text[] = "SERVER_ERROR out of memory\r\n";
    if (!binary) {
        return starts(p, n, text, sizeof(text) - 1) ? sizeof(text) - 1 : 0;
    }
    if (i >= nw || n < 24 || (unsigned char)p[0] != 0x81 || fd_be(p + 6, 2) != MCS_BIN_STATUS_ENOMEM
        || 24 + fd_be(p + 8, 4) > n || fd_be(p + 12, 4) != w[i].opaque) {
        return 0;
    }
    return 24 + (size_t)fd_be(p + 8, 4);
}

/* What the application read is clean: the expected pieces in order (optional
 * ones may be missing), where a reply (or the rest of a multi-get after whole
 * items) may be replaced by the out-of-memory answer if the session is closing;
 * and it ends either complete or, with the session closing, between two
 * replies. Never a reply cut in its middle, never an incomplete answer on a
 * session that stays open (a request lost). With exact, every piece must be
 * there (a run in which no allocation failed). */
static void
check_clean(struct fake *f, struct fd_client *c, const struct want *w, size_t nw, bool binary, bool exact)
{
    size_t n;
    const char *p = fd_take(f, c, &n);
    if (exact) {
        char all[4096];
        size_t len = 0;
        for (size_t i = 0; i < nw; i++) {
            assert_true(len + w[i].len <= sizeof(all));
            memcpy(all + len, w[i].text, w[i].len);
            len += w[i].len;
        }
        fd_assert_bytes("application reads (no allocation failed)", p, n, all, len);
        assert_false(c->s.closing);
        return;
    }
    size_t pos = 0, i = 0;
    bool boundary = true;
    while (pos < n) {
        /* the out-of-memory answer to the next request, or to a later one when
         * those before it answer nothing (optional: quiet, or text misses) */
        size_t oom = 0, j = i;
        while (j < nw && (oom = oom_len(p + pos, n - pos, binary, w, j, nw)) == 0 && w[j].optional) {
            j++;
        }
        if (oom > 0) {
            if (!c->s.closing) {
                fail_msg("out-of-memory answer on a session that stays open: \"%s\"", show(p, n));
            }
            i = j;
            while (i < nw && !w[i].last) {
                i++;   /* the rest of this reply is replaced */
            }
            pos += oom;
            boundary = true;
            i++;
            continue;
        }
        size_t got = 0;
        while (i < nw) {
            if (starts(p + pos, n - pos, w[i].text, w[i].len)) {
                got = w[i].len;
            } else if (starts(p + pos, n - pos, w[i].alt, w[i].alt_len)) {
                got = w[i].alt_len;
            }
            if (got > 0) {
                break;
            }
            if (!w[i].optional) {
                fail_msg("not a clean reply at byte %zu: \"%s\" (want \"%s\")", pos, show(p, n),
                         show(w[i].text, w[i].len));
            }
            i++;
        }
        if (i == nw) {
            fail_msg("bytes after the last reply: \"%s\"", show(p, n));
        }
        pos += got;
        boundary = w[i].last;
        i++;
    }
    bool complete = true;
    for (size_t j = i; j < nw; j++) {
        complete = complete && w[j].optional;
    }
    if (complete) {
        return;
    }
    if (!c->s.closing) {
        fail_msg("incomplete answer on an open session (a request was lost): \"%s\"", show(p, n));
    }
    if (!boundary) {
        fail_msg("truncated reply: the session closes in the middle of \"%s\"", show(p, n));
    }
}

/* Runs scenario for n = 1, 2, ... with the n-th allocation counted from
 * mcs_machine_init failing, until a run makes no allocation fail; then once
 * more with none failing, where every answer must be exact. Each run ends torn
 * down (sessions closed, waiting subs failed, machine freed: the sanitizer run
 * catches a leak or a use after free). Returns the number of runs
 * (MACHINE_SWEEPS=1 prints it, with the scenario's name). */
static uint64_t
sweep_run(void (*scenario)(struct fake *f, bool exact), const char *name, const struct fd_opts *o)
{
    uint64_t n;
    for (n = 1; n < SWEEP_MAX; n++) {
        uint64_t failed_before = mcs_alloc_failed();
        struct fake *f = malloc(sizeof(*f));
        assert_non_null(f);
        mcs_alloc_fail_at(n);
        if (fd_init(f, o) == 0) {
            scenario(f, false);
        }
        bool none_failed = mcs_alloc_failed() == failed_before;
        mcs_alloc_fail_at(0);
        fd_free(f);
        free(f);
        if (none_failed) {
            break;
        }
    }
    assert_true(n < SWEEP_MAX);
    if (getenv("MACHINE_VERBOSE") != NULL || getenv("MACHINE_SWEEPS") != NULL) {
        fprintf(stderr, "  sweep %s: %" PRIu64 " runs\n", name, n);
    }
    /* and once more without failures: the exact answers */
    struct fake *f = malloc(sizeof(*f));
    assert_non_null(f);
    assert_int_equal(fd_init(f, o), 0);
    scenario(f, true);
    fd_free(f);
    free(f);
    return n;
}

#define sweep(scenario, ...) sweep_run((scenario), #scenario, __VA_ARGS__)

/* Scenario 1 with the servers played by fd_serve: a set and a get pipelined,
 * the primary's connection fails, both move to the copy; then a get while the
 * primary is down (fast fail). */
static void
sweep_failover(struct fake *f, bool exact)
{
    char k[32];
    fd_key(f, "k", (const uint32_t[]){ 0, 1 }, 2, k, sizeof(k));
    struct fd_client *a = fd_client_new(f);
    send_k(f, a, "set $ 0 0 1\r\nv\r\nget $\r\n", k);
    fd_fail_server(f, 0, MCS_FAILURE_RESET);
    fd_drain(f);
    struct want w[3];
    want_text(&w[0], "STORED\r\n", k, false, true);
    want_text(&w[1], "VALUE $ 0 1\r\nv\r\n", k, true, false);
    want_text(&w[2], "END\r\n", k, false, true);
    check_clean(f, a, w, 3, false, exact);

    struct fd_client *b = fd_client_new(f);
    send_k(f, b, "get $\r\n", k);
    fd_drain(f);
    check_clean(f, b, w + 1, 2, false, exact);
}

/* The same in binary: set, get and getk pipelined, the primary's connection
 * fails, all three move to the copy (an out-of-memory answer is status 0x0082). */
static void
sweep_failover_binary(struct fake *f, bool exact)
{
    char k[32];
    fd_key(f, "k", (const uint32_t[]){ 0, 1 }, 2, k, sizeof(k));
    struct fd_client *bin = fd_client_new(f);
    PKT(req);
    bin_req(&req, MCS_BIN_OP_SET, 1, k, "v", 5);
    bin_req(&req, MCS_BIN_OP_GET, 2, k, NULL, 0);
    bin_req(&req, MCS_BIN_OP_GETK, 3, k, NULL, 0);
    fd_client_send(f, bin, req.b, req.n);
    fd_fail_server(f, 0, MCS_FAILURE_RESET);
    fd_drain(f);
    /* the answers: stored, then hits (or misses, if the set could not be made) */
    struct want bw[3];
    memset(bw, 0, sizeof(bw));
    PKT(set);
    PKT(get);
    PKT(getk);
    PKT(get_miss);
    PKT(getk_miss);
    bin_status(&set, MCS_BIN_OP_SET, 0, 1, 0);
    bin_hit(&get, MCS_BIN_OP_GET, 2, 0, 5, NULL, "v");
    bin_hit(&getk, MCS_BIN_OP_GETK, 3, 0, 5, k, "v");
    bin_status(&get_miss, MCS_BIN_OP_GET, MCS_BIN_STATUS_KEY_ENOENT, 2, 0);
    bin_status(&getk_miss, MCS_BIN_OP_GETK, MCS_BIN_STATUS_KEY_ENOENT, 3, 0);
    const struct pkt *hit[3] = { &set, &get, &getk }, *miss[3] = { NULL, &get_miss, &getk_miss };
    for (int i = 0; i < 3; i++) {
        memcpy(bw[i].text, hit[i]->b, hit[i]->n);
        bw[i].len = hit[i]->n;
        if (miss[i] != NULL) {
            memcpy(bw[i].alt, miss[i]->b, miss[i]->n);
            bw[i].alt_len = miss[i]->n;
        }
        bw[i].last = true;
        bw[i].opaque = (uint32_t)i + 1;
    }
    check_clean(f, bin, bw, 3, true, exact);
}

static void
test_alloc_sweep_failover(void **state)
{
    (void)state;
    assert_true(sweep(sweep_failover, &two_copies) > 10);
    assert_true(sweep(sweep_failover_binary, &two_copies) > 10);
}

/* Scenario 3: "get a b c d" over 3 servers, server 1 fails after server 0
 * answered. */
static void
sweep_multiget(struct fake *f, bool exact)
{
    char a[32], b[32], cc[32], d[32];
    fd_key(f, "a", (const uint32_t[]){ 0, 1 }, 2, a, sizeof(a));
    fd_key(f, "b", (const uint32_t[]){ 1, 2 }, 2, b, sizeof(b));
    fd_key(f, "c", (const uint32_t[]){ 2, 0 }, 2, cc, sizeof(cc));
    fd_key(f, "d", (const uint32_t[]){ 1, 0 }, 2, d, sizeof(d));
    const char *keys[4] = { a, b, cc, d };
    const uint32_t on[4][2] = { { 0, 1 }, { 1, 2 }, { 2, 0 }, { 1, 0 } };
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < 2; j++) {
            char v[2] = { (char)('A' + i), 0 };
            fd_item_put(f, on[i][j], keys[i], strlen(keys[i]), (uint32_t)i, -1, v, 1);
        }
    }
    struct fd_client *c = fd_client_new(f);
    char line[256];
    snprintf(line, sizeof(line), "get %s %s %s %s\r\n", a, b, cc, d);
    fd_client_send(f, c, line, strlen(line));
    fd_serve(f, 0);
    fd_fail_server(f, 1, MCS_FAILURE_RESET);
    fd_drain(f);
    struct want w[5];
    for (int i = 0; i < 4; i++) {
        char item[64];
        snprintf(item, sizeof(item), "VALUE $ %d 1\r\n%c\r\n", i, 'A' + i);
        want_text(&w[i], item, keys[i], true, false);
    }
    want_text(&w[4], "END\r\n", "", false, true);
    check_clean(f, c, w, 5, false, exact);
}

static void
test_alloc_sweep_multiget(void **state)
{
    (void)state;
    assert_true(sweep(sweep_multiget, &(struct fd_opts){ .nprimaries = 3, .replicas = 2 }) > 10);
}

/* Scenario 5: identify, down, probe shows a restart, a get misses on the
 * warming primary and is fetched from the copy. */
static void
sweep_warmup(struct fake *f, bool exact)
{
    char k[32];
    fd_key(f, "k", (const uint32_t[]){ 0, 1 }, 2, k, sizeof(k));
    fd_item_put(f, 1, k, strlen(k), 7, 500, "hello", 5);
    mcs_machine_connected(&f->m, 0, 0);
    fd_settle(f);
    fd_drain(f);
    fd_fail_server(f, 0, MCS_FAILURE_RESET);
    f->pid[0] = 2000;   /* restarted */
    fd_advance(f, f->cfg.retry_ms);
    fd_drain(f);
    if (exact) {
        assert_int_equal(health(f, 0), MCS_HEALTH_WARMING);
    }
    struct fd_client *c = fd_client_new(f);
    send_k(f, c, "get $\r\n", k);
    fd_drain(f);
    struct want w[2];
    want_text(&w[0], "VALUE $ 7 5\r\nhello\r\n", k, true, false);
    want_text(&w[1], "END\r\n", k, false, true);
    check_clean(f, c, w, 2, false, exact);
    if (exact) {
        struct fd_item *it = fd_item_find(f, 0, k, strlen(k));
        assert_non_null(it);   /* added back */
        assert_int_equal(it->flags, 7);
        assert_int_equal(it->ttl, 500);
    }
}

static void
test_alloc_sweep_warmup(void **state)
{
    (void)state;
    assert_true(sweep(sweep_warmup, &warming_opts) > 10);
}

/* A binary piece of an expected answer: want (or alt, another acceptable form)
 * answering the request with opaque. */
static void
want_pkt(struct want *w, const struct pkt *want, const struct pkt *alt, uint32_t opaque, bool optional)
{
    memset(w, 0, sizeof(*w));
    if (want != NULL) {
        assert_true(want->n <= sizeof(w->text));
        memcpy(w->text, want->b, want->n);
        w->len = want->n;
    }
    if (alt != NULL) {
        assert_true(alt->n <= sizeof(w->alt));
        memcpy(w->alt, alt->b, alt->n);
        w->alt_len = alt->n;
    }
    w->optional = optional;
    w->last = true;
    w->opaque = opaque;
}

/* How many sends to server s (checked or not) were exactly the template ('$' = key). */
static size_t
sent_count(struct fake *f, uint32_t s, const char *tmpl, const char *key)
{
    char b[1024];
    size_t n = 0;
    expand(b, sizeof(b), tmpl, key);
    for (size_t i = 0; i < f->nsends; i++) {
        n += f->sends[i]->server == s && fd_bytes_equal(f->sends[i]->bytes, f->sends[i]->len, b, strlen(b));
    }
    return n;
}

static bool
was_sent(struct fake *f, uint32_t s, const char *tmpl, const char *key)
{
    return sent_count(f, s, tmpl, key) > 0;
}

/* Scenario 4, sync: three servers, every key on all three (replicas 3); a set,
 * an incr (one copy holds another number: its result differs from the
 * primary's, so it is deleted) and a delete pipelined; each answer waits for
 * both copies. */
static const struct fd_opts sync_opts = { .nprimaries = 3, .replicas = 3, .write = MCS_WRITE_SYNC };

static void
sweep_sync_copies(struct fake *f, bool exact)
{
    char k[32], n[32], d[32];
    fd_key(f, "k", (const uint32_t[]){ 0, 1, 2 }, 3, k, sizeof(k));
    fd_key(f, "n", (const uint32_t[]){ 1, 2, 0 }, 3, n, sizeof(n));
    fd_key(f, "d", (const uint32_t[]){ 2, 0, 1 }, 3, d, sizeof(d));
    for (uint32_t s = 0; s < 3; s++) {
        fd_item_put(f, s, n, strlen(n), 0, -1, s == 0 ? "20" : "10", 2);   /* server 0: the copy that differs */
        fd_item_put(f, s, d, strlen(d), 0, -1, "x", 1);
    }
    struct fd_client *c = fd_client_new(f);
    char line[256];
    snprintf(line, sizeof(line), "set %s 0 0 1\r\nv\r\nincr %s 5\r\ndelete %s\r\n", k, n, d);
    fd_client_send(f, c, line, strlen(line));
    if (exact) {
        out_none(f, c);   /* nothing before the copies answered */
        fd_serve(f, 0);   /* the set's primary */
        fd_serve(f, 1);   /* the incr's primary */
        fd_serve(f, 2);   /* the delete's primary */
        out_none(f, c);
    }
    fd_drain(f);
    struct want w[3];
    want_text(&w[0], "STORED\r\n", k, false, true);
    want_text(&w[1], "15\r\n", k, false, true);
    want_text(&w[2], "DELETED\r\n", k, false, true);
    check_clean(f, c, w, 3, false, exact);
    if (exact) {
        for (uint32_t s = 0; s < 3; s++) {
            struct fd_item *it = fd_item_find(f, s, k, strlen(k));
            assert_non_null(it);
            assert_null(fd_item_find(f, s, d, strlen(d)));
            it = fd_item_find(f, s, n, strlen(n));
            if (s == 0) {
                assert_null(it);   /* its 25 was not the primary's 15: deleted */
            } else {
                assert_non_null(it);
                fd_assert_bytes("counter", it->value, it->vlen, "15", 2);
            }
        }
        assert_true(was_sent(f, 0, "incr $ 5\r\n", n));
        assert_true(was_sent(f, 0, "delete $\r\n", n));
        assert_int_equal(missed_count(f, 0) + missed_count(f, 1) + missed_count(f, 2), 0);
    }
}

static void
test_alloc_sweep_sync_copies(void **state)
{
    (void)state;
    assert_true(sweep(sweep_sync_copies, &sync_opts) > 10);
}

/* Scenario 6: server 0 is cut while keys it holds are written on their copy
 * (server 1), then its probe answers with the same instance: it rejoins after
 * the deletes of what it missed (or a flush_all when the log overflowed). With
 * an allocation failing anywhere, the server may end down (to be flushed, or
 * replayed, at its next probe), but never usable while it holds a value its
 * copy no longer has: after each probe, if server 0 is usable, each key it
 * holds is what server 1 holds. More probes (with no allocation failing, at
 * most one more being needed) must bring it back. */
static const char *const rejoin_prefix[4] = { "a", "b", "c", "e" };

static void
rejoin_check(struct fake *f, char keys[][32], size_t nkeys)
{
    if (health(f, 0) == MCS_HEALTH_DOWN) {
        return;   /* probed again later */
    }
    if (health(f, 0) != MCS_HEALTH_UP) {
        fail_msg("server 0 is %d with nothing in flight (want up or down)", (int)health(f, 0));
    }
    for (size_t i = 0; i < nkeys; i++) {
        struct fd_item *old = fd_item_find(f, 0, keys[i], strlen(keys[i]));
        struct fd_item *now = fd_item_find(f, 1, keys[i], strlen(keys[i]));
        if (old != NULL && (now == NULL || !fd_bytes_equal(old->value, old->vlen, now->value, now->vlen))) {
            fail_msg("server 0 is usable with %s = \"%s\" that it missed (its copy has %s)", keys[i],
                     show(old->value, old->vlen), now != NULL ? "another value" : "no value");
        }
    }
}

static void
sweep_rejoin_run(struct fake *f, bool exact, bool overflow)
{
    char keys[5][32];
    const uint32_t fwd[2] = { 0, 1 }, back[2] = { 1, 0 };
    for (size_t i = 0; i < 4; i++) {
        fd_key(f, rejoin_prefix[i], i == 3 ? back : fwd, 2, keys[i], sizeof(keys[i]));
        fd_item_put(f, 0, keys[i], strlen(keys[i]), 0, -1, "old", 3);
        fd_item_put(f, 1, keys[i], strlen(keys[i]), 0, -1, "old", 3);
    }
    fd_key(f, "w", fwd, 2, keys[4], sizeof(keys[4]));   /* written while it rejoins */
    fd_item_put(f, 0, keys[4], strlen(keys[4]), 0, -1, "old", 3);
    fd_item_put(f, 1, keys[4], strlen(keys[4]), 0, -1, "old", 3);
    mcs_machine_connected(&f->m, 0, 0);   /* identified */
    fd_settle(f);
    fd_drain(f);
    fd_fail_server(f, 0, MCS_FAILURE_RESET);

    /* cut: a (primary 0) set, b deleted, c set, e (copy 0) set; all on server 1 */
    struct fd_client *c = fd_client_new(f);
    char line[512];
    snprintf(line, sizeof(line), "set %s 0 0 3\r\nnew\r\ndelete %s\r\nset %s 0 0 3\r\nnew\r\nset %s 0 0 3\r\nnew\r\n",
             keys[0], keys[1], keys[2], keys[3]);
    fd_client_send(f, c, line, strlen(line));
    fd_drain(f);
    struct want w[4];
    want_text(&w[0], "STORED\r\n", "", false, true);
    want_text(&w[1], "DELETED\r\n", "", false, true);
    want_text(&w[2], "STORED\r\n", "", false, true);
    want_text(&w[3], "STORED\r\n", "", false, true);
    check_clean(f, c, w, 4, false, exact);
    if (exact) {
        assert_int_equal(missed_count(f, 0), overflow ? 0 : 4);
        assert_int_equal(mcs_keylog_overflowed(&f->m.router.servers[0].missed), overflow);
    }

    /* the probe: same instance; a write arrives while its deletes are in flight */
    fd_advance(f, f->cfg.retry_ms);
    fd_serve(f, 0);   /* stats */
    if (exact) {
        assert_int_equal(health(f, 0), MCS_HEALTH_REJOINING);
    }
    struct fd_client *c2 = fd_client_new(f);
    send_k(f, c2, "set $ 0 0 3\r\nnew\r\n", keys[4]);
    fd_drain(f);
    want_text(&w[0], "STORED\r\n", "", false, true);
    check_clean(f, c2, w, 1, false, exact);
    rejoin_check(f, keys, 5);
    if (exact) {
        struct mcs_server *srv = &f->m.router.servers[0];
        assert_int_equal(health(f, 0), MCS_HEALTH_UP);
        assert_int_equal(srv->stats.rejoins, 1);
        if (overflow) {
            assert_int_equal(srv->stats.rejoin_flushes, 1);
            assert_true(was_sent(f, 0, "flush_all\r\n", ""));
        } else {
            assert_int_equal(srv->stats.invalidations_replayed, 5);
            assert_int_equal(srv->stats.rejoin_flushes, 0);
        }
        assert_null(fd_item_find(f, 0, keys[0], strlen(keys[0])));
        return;
    }
    for (int round = 0; round < 3 && health(f, 0) != MCS_HEALTH_UP; round++) {
        fd_advance(f, f->cfg.retry_ms);
        fd_drain(f);
        rejoin_check(f, keys, 5);
    }
    assert_int_equal(health(f, 0), MCS_HEALTH_UP);
}

static void
sweep_rejoin(struct fake *f, bool exact)
{
    sweep_rejoin_run(f, exact, false);
}

static void
sweep_rejoin_overflow(struct fake *f, bool exact)
{
    sweep_rejoin_run(f, exact, true);
}

static void
test_alloc_sweep_rejoin(void **state)
{
    (void)state;
    assert_true(sweep(sweep_rejoin, &(struct fd_opts){ .nprimaries = 2, .replicas = 2 }) > 10);
    assert_true(sweep(sweep_rejoin_overflow,
                      &(struct fd_opts){ .nprimaries = 2, .replicas = 2, .rejoin_log = 3 }) > 10);
}

/* Scenario 2's quiet pipeline: setq a, getq b (a miss), getq a, noop over two
 * servers; a's primary fails before answering: its requests move to the copy,
 * the application reads only a's hit and the noop. Then the same with the
 * primary down (fast fail). */
static void
sweep_binary_quiet(struct fake *f, bool exact)
{
    char ka[32], kb[32];
    fd_key(f, "a", (const uint32_t[]){ 0, 1 }, 2, ka, sizeof(ka));
    fd_key(f, "b", (const uint32_t[]){ 1, 0 }, 2, kb, sizeof(kb));
    struct fd_client *c = fd_client_new(f);
    for (int round = 0; round < 2; round++) {
        const char *value = round == 0 ? "x" : "y";
        uint32_t o = (uint32_t)round * 10;
        PKT(all);
        bin_req(&all, MCS_BIN_OP_SETQ, o + 1, ka, value, 0);
        bin_req(&all, MCS_BIN_OP_GETQ, o + 2, kb, NULL, 0);
        bin_req(&all, MCS_BIN_OP_GETQ, o + 3, ka, NULL, 0);
        bin_req(&all, MCS_BIN_OP_NOOP, o + 4, NULL, NULL, 0);
        fd_client_send(f, c, all.b, all.n);
        if (round == 0) {
            fd_fail_server(f, 0, MCS_FAILURE_RESET);
        }
        fd_drain(f);
        PKT(hit);
        PKT(noop);
        bin_hit(&hit, MCS_BIN_OP_GETQ, o + 3, 0, 0, NULL, value);
        bin_status(&noop, MCS_BIN_OP_NOOP, 0, o + 4, 0);
        struct want w[4];
        want_pkt(&w[0], NULL, NULL, o + 1, true);
        want_pkt(&w[1], NULL, NULL, o + 2, true);
        want_pkt(&w[2], &hit, NULL, o + 3, true);   /* a miss if the set could not be made */
        want_pkt(&w[3], &noop, NULL, o + 4, false);
        check_clean(f, c, w, 4, true, exact);
        if (c->s.closing) {
            return;
        }
    }
    if (exact) {
        assert_int_equal(missed_count(f, 0), 1);   /* both sets: one key */
    }
}

static void
test_alloc_sweep_binary_quiet(void **state)
{
    (void)state;
    assert_true(sweep(sweep_binary_quiet, &two_copies) > 10);
}

/* Scenario 2's meta pipeline: ms a q, mg b q (a miss), mg a q, mn; a's primary
 * fails before answering; then ms, mg, mn with the primary down. */
static void
sweep_meta_quiet(struct fake *f, bool exact)
{
    char ka[32], kb[32];
    fd_key(f, "a", (const uint32_t[]){ 0, 1 }, 2, ka, sizeof(ka));
    fd_key(f, "b", (const uint32_t[]){ 1, 0 }, 2, kb, sizeof(kb));
    struct fd_client *c = fd_client_new(f);
    char req[256];
    snprintf(req, sizeof(req), "ms %s 1 q T0\r\nv\r\nmg %s v q\r\nmg %s v q\r\nmn\r\n", ka, kb, ka);
    fd_client_send(f, c, req, strlen(req));
    fd_fail_server(f, 0, MCS_FAILURE_RESET);
    fd_drain(f);
    struct want w[4];
    want_text(&w[0], "", "", true, true);
    want_text(&w[1], "", "", true, true);
    want_text(&w[2], "VA 1\r\nv\r\n", "", true, true);   /* nothing if the set could not be made */
    want_text(&w[3], "MN\r\n", "", false, true);
    check_clean(f, c, w, 4, false, exact);
    if (c->s.closing) {
        return;
    }
    send_k(f, c, "ms $ 1 T0\r\nw\r\nmg $ v\r\nmn\r\n", ka);
    fd_drain(f);
    want_text(&w[0], "HD\r\n", "", false, true);
    want_text(&w[1], "VA 1\r\nw\r\n", "", false, true);
    want_text(&w[2], "MN\r\n", "", false, true);
    check_clean(f, c, w, 3, false, exact);
    if (exact) {
        assert_int_equal(missed_count(f, 0), 1);
        assert_int_equal(sent_count(f, 0, "mg $ v\r\n", ka), 1);   /* the second: the primary was down */
        assert_int_equal(sent_count(f, 1, "mg $ v\r\n", ka), 2);
    }
}

static void
test_alloc_sweep_meta_quiet(void **state)
{
    (void)state;
    assert_true(sweep(sweep_meta_quiet, &two_copies) > 10);
}

/* Scenario 4's retrievals that write: gat and gats hits (a on server 0, b on
 * server 1), answered by their primaries; each hit sends the copy a touch with
 * the exptime asked for. */
static void
sweep_gat(struct fake *f, bool exact)
{
    char a[32], b[32];
    fd_key(f, "a", (const uint32_t[]){ 0, 1 }, 2, a, sizeof(a));
    fd_key(f, "b", (const uint32_t[]){ 1, 0 }, 2, b, sizeof(b));
    for (uint32_t s = 0; s < 2; s++) {
        fd_item_put(f, s, a, strlen(a), 1, -1, "A", 1);
        fd_item_put(f, s, b, strlen(b), 2, -1, "B", 1);
    }
    /* the same CAS on both: a key whose request line could not be built moves to its copy */
    uint64_t cas_a = fd_item_find(f, 0, a, strlen(a))->cas;
    fd_item_find(f, 1, a, strlen(a))->cas = cas_a;
    struct fd_client *c = fd_client_new(f);
    char line[256];
    snprintf(line, sizeof(line), "gat 100 %s %s\r\ngats 200 %s\r\n", a, b, a);
    fd_client_send(f, c, line, strlen(line));
    fd_drain(f);
    char gats[128];
    snprintf(gats, sizeof(gats), "VALUE $ 1 1 %" PRIu64 "\r\nA\r\n", cas_a);
    struct want w[5];
    want_text(&w[0], "VALUE $ 1 1\r\nA\r\n", a, true, false);
    want_text(&w[1], "VALUE $ 2 1\r\nB\r\n", b, true, false);
    want_text(&w[2], "END\r\n", "", false, true);
    want_text(&w[3], gats, a, true, false);
    want_text(&w[4], "END\r\n", "", false, true);
    check_clean(f, c, w, 5, false, exact);
    if (exact) {
        assert_true(was_sent(f, 1, "touch $ 100\r\n", a));
        assert_true(was_sent(f, 0, "touch $ 100\r\n", b));
        assert_true(was_sent(f, 1, "touch $ 200\r\n", a));
        assert_int_equal(missed_count(f, 0) + missed_count(f, 1), 0);
    }
}

static void
test_alloc_sweep_gat(void **state)
{
    (void)state;
    assert_true(sweep(sweep_gat, &two_copies) > 10);
}

/* Scenario 6's closed sessions: a text session (set a, get a b) and a binary one (get a) close
 * while their servers owe replies; then the set's primary answers (its copy
 * still gets the write), and server 1 fails (the detached get of b moves on to
 * server 2). Nothing is left waiting and nothing leaks; async and sync. */
static void
sweep_closed_session(struct fake *f, bool exact)
{
    char a[32], b[32];
    fd_key(f, "a", (const uint32_t[]){ 0, 1 }, 2, a, sizeof(a));
    fd_key(f, "b", (const uint32_t[]){ 1, 2 }, 2, b, sizeof(b));
    fd_item_put(f, 2, b, strlen(b), 0, -1, "B", 1);
    struct fd_client *c = fd_client_new(f);
    struct fd_client *bin = fd_client_new(f);
    char line[256];
    snprintf(line, sizeof(line), "set %s 0 0 1\r\nv\r\nget %s %s\r\n", a, a, b);
    fd_client_send(f, c, line, strlen(line));
    PKT(get);
    bin_req(&get, MCS_BIN_OP_GETK, 7, b, NULL, 0);
    fd_client_send(f, bin, get.b, get.n);
    fd_client_close(f, c);
    fd_client_close(f, bin);
    fd_serve(f, 0);   /* the set */
    fd_fail_server(f, 1, MCS_FAILURE_RESET);
    fd_drain(f);
    for (size_t i = 0; i < f->nsends; i++) {
        assert_int_not_equal(f->sends[i]->state, FD_WAITING);
    }
    if (exact) {
        assert_int_equal(missed_count(f, 1), 1);   /* a's copy */
        assert_true(was_sent(f, 2, "get $\r\n", b));
        assert_non_null(fd_item_find(f, 0, a, strlen(a)));
    }
}

static void
test_alloc_sweep_closed_session(void **state)
{
    (void)state;
    assert_true(sweep(sweep_closed_session, &(struct fd_opts){ .nprimaries = 3, .replicas = 2 }) > 10);
    assert_true(sweep(sweep_closed_session,
                      &(struct fd_opts){ .nprimaries = 3, .replicas = 2, .write = MCS_WRITE_SYNC }) > 10);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_text_set_fails_over_when_primary_connection_fails),
    cmocka_unit_test(test_text_get_fails_over_when_primary_connection_fails),
    cmocka_unit_test(test_text_fast_fail_when_primary_is_down),
    cmocka_unit_test(test_binary_set_get_getk_fail_over),
    cmocka_unit_test(test_binary_quiet_order_across_servers),
    cmocka_unit_test(test_binary_quiet_failover_keeps_order),
    cmocka_unit_test(test_meta_quiet_failover_keeps_order),
    cmocka_unit_test(test_multiget_server_fails_midway_keys_move_in_order),
    cmocka_unit_test(test_multiget_keys_without_a_usable_target_miss),
    cmocka_unit_test(test_copy_rule_async),
    cmocka_unit_test(test_unanswered_outlive_their_session),
    cmocka_unit_test(test_copy_rule_sync),
    cmocka_unit_test(test_copy_rule_meta),
    cmocka_unit_test(test_copy_rule_binary),
    cmocka_unit_test(test_copy_failures_are_logged),
    cmocka_unit_test(test_warmup_fetches_from_copy_and_adds_back),
    cmocka_unit_test(test_warmup_ends_after_its_window),
    cmocka_unit_test(test_warmup_binary_and_meta),
    cmocka_unit_test(test_rejoin_replays_missed_deletes),
    cmocka_unit_test(test_rejoin_log_overflow_flushes),
    cmocka_unit_test(test_rejoin_flush_mode_flushes),
    cmocka_unit_test(test_rejoin_after_missed_flush_all_flushes),
    cmocka_unit_test(test_rejoin_interrupted_is_replayed_at_the_next_probe),
    cmocka_unit_test(test_backup_pool_and_eject_failover),
    cmocka_unit_test(test_eject_write_in_flight_moves_to_the_stand_in),
    cmocka_unit_test(test_session_closed_while_servers_owe_replies),
    cmocka_unit_test(test_timeout_marks_down_and_fails_over_every_waiting_request),
    cmocka_unit_test(test_alloc_sweep_failover),
    cmocka_unit_test(test_alloc_sweep_multiget),
    cmocka_unit_test(test_alloc_sweep_warmup),
    cmocka_unit_test(test_alloc_sweep_sync_copies),
    cmocka_unit_test(test_alloc_sweep_rejoin),
    cmocka_unit_test(test_alloc_sweep_binary_quiet),
    cmocka_unit_test(test_alloc_sweep_meta_quiet),
    cmocka_unit_test(test_alloc_sweep_gat),
    cmocka_unit_test(test_alloc_sweep_closed_session),
};

int
main(void)
{
    return cmocka_run_group_tests(tests, NULL, NULL);
}
