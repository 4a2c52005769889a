/*
 * tests/unit/fake_driver.h: a scripted driver for the request machine
 * (preload/core/machine.h), for unit tests: no sockets, no threads, a fake
 * clock (m.now_ms, m.unix_s set by the test).
 *
 * It does what preload/engine does, in memory:
 * - every send the machine asks for is recorded (server, protocol, connection,
 *   the exact bytes, the sub) and queued in the FIFO of its (server, proto,
 *   conn); fd_expect_sent() checks the next send a server got, byte for byte;
 * - fd_answer() feeds a server's reply for the oldest sub still waiting on it
 *   through mcs_machine_reply (in pieces of f->piece bytes when set, so partial
 *   replies are exercised), consumes what it used, and calls mcs_machine_done
 *   when the machine says the sub is whole, as engine/backend.c does;
 * - fd_fail_server() / fd_fail_conn() fail connections as backend_fail does:
 *   mcs_machine_server_failed, then mcs_machine_failed for every sub of the
 *   connection's FIFO;
 * - the callbacks only record (abort_server, ready, unstall, log); what they ask
 *   for (failing an aborted server's subs) is done by fd_settle() after the
 *   machine call returned, never from inside it;
 * - fd_serve() / fd_drain() answer sends with a tiny memcached per server (an
 *   item table), for scripts that must adapt to what the machine sends (the
 *   allocation sweeps);
 * - applications are fd_client sessions: fd_client_send() steps the machine
 *   over their bytes, fd_take() returns (and consumes) what the application
 *   would read.
 *
 * The driver's own memory is plain malloc, never the core's allocation seam,
 * so an allocation sweep (alloc.h) counts the machine's allocations only.
 * Everything here is static and used by test_machine.c.
 */
#ifndef MCS_TESTS_FAKE_DRIVER_H
#define MCS_TESTS_FAKE_DRIVER_H

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "preload/core/machine.h"
#include "tests/unit/unit.h"

#define FD_MAX_SERVERS 8
#define FD_MAX_CONNS   64
#define FD_MAX_CLIENTS 8
#define FD_MAX_ITEMS   64
#define FD_KEY_MAX     64
#define FD_VALUE_MAX   64
#define FD_NOW_MS      1000000u         /* the fake clock starts here */
#define FD_UNIX_S      1700000000u      /* wall clock seconds, fixed */
#define FD_OUT_MAX     65536

enum fd_state { FD_WAITING, FD_DONE, FD_FAILED };

/* One send the machine asked for. sub is valid only while WAITING. */
struct fd_send {
    uint32_t server;
    enum mcs_proto proto;
    uint64_t conn;
    char    *bytes;
    size_t   len;
    struct mcs_sub *sub;
    enum fd_state state;
    bool     checked;                   /* looked at by fd_expect_sent */
    struct fd_send *next;               /* in its connection's FIFO */
};

/* One server connection: its FIFO of waiting subs and the reply bytes not yet taken. */
struct fd_conn {
    uint32_t server;
    enum mcs_proto proto;
    uint64_t conn;
    struct fd_send *head, *tail;
    char    *in;
    size_t   in_len, in_cap;
};

/* One item of a fake server. */
struct fd_item {
    bool     used;
    char     key[FD_KEY_MAX];
    uint32_t flags;
    int64_t  ttl;                       /* what mg t answers: -1 no expiry */
    uint64_t cas;
    char     value[FD_VALUE_MAX];
    size_t   vlen;
};

/* An application connection. */
struct fd_client {
    struct mcs_session s;
    char     in[16384];
    size_t   in_len;
    bool     open;
};

struct fake {
    struct mcs_machine m;
    struct mcs_config cfg;
    bool     inited;                    /* mcs_machine_init succeeded */
    struct fd_send **sends;             /* every send, in order */
    size_t   nsends, sends_cap;
    struct fd_conn conns[FD_MAX_CONNS];
    size_t   nconns;
    struct fd_client *clients[FD_MAX_CLIENTS];
    size_t   nclients;
    unsigned aborts[FD_MAX_SERVERS];    /* abort_server calls per server */
    bool     abort_wanted[FD_MAX_SERVERS];
    bool     settling;
    unsigned ready_calls, unstall_calls;
    unsigned bad;                       /* replies the machine refused (MCS_RESP_BAD) */
    size_t   piece;                     /* feed replies this many bytes at a time (0: whole) */
    char    *log;                       /* every log line, '\n' after each */
    size_t   log_len, log_cap;
    char     out[FD_OUT_MAX + 1];       /* fd_take's result */
    /* the fake memcached of each server (fd_serve) */
    struct fd_item items[FD_MAX_SERVERS][FD_MAX_ITEMS];
    uint64_t pid[FD_MAX_SERVERS];       /* what its `stats` says */
    uint64_t started[FD_MAX_SERVERS];   /* unix start time: time - uptime */
    uint64_t next_cas;
};

/* What a test configures; zero fields take the defaults of fd_init. */
struct fd_opts {
    size_t   nprimaries;
    size_t   nbackups;
    uint32_t replicas;                  /* 0: 1 */
    enum mcs_write_mode write;
    uint32_t warmup_s;
    bool     eject;
    enum mcs_rejoin_mode rejoin;
    uint32_t rejoin_log;                /* 0: 10000 */
    uint32_t failure_limit;             /* 0: 1 */
    uint32_t retry_ms;                  /* 0: 1000 */
};

/* ---- small byte helpers ---------------------------------------------------------------------- */

static void
fd_grow(char **p, size_t *cap, size_t want)
{
    if (want <= *cap) {
        return;
    }
    size_t n = *cap ? *cap : 256;
    while (n < want) {
        n *= 2;
    }
    char *q = realloc(*p, n);
    assert_non_null(q);
    *p = q;
    *cap = n;
}

static bool
fd_bytes_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* Fails the test unless got[0, glen) is want[0, wlen), naming what. */
static void
fd_assert_bytes(const char *what, const char *got, size_t glen, const char *want, size_t wlen)
{
    if (!fd_bytes_equal(got, glen, want, wlen)) {
        fail_msg("%s: got \"%s\" (%zu bytes), want \"%s\" (%zu bytes)", what, show(got, glen), glen,
                 show(want, wlen), wlen);
    }
}

/* ---- the driver callbacks: record only ------------------------------------------------------ */

static struct fd_conn *
fd_conn_get(struct fake *f, uint32_t server, enum mcs_proto proto, uint64_t conn)
{
    for (size_t i = 0; i < f->nconns; i++) {
        struct fd_conn *c = &f->conns[i];
        if (c->server == server && c->proto == proto && c->conn == conn) {
            return c;
        }
    }
    assert_true(f->nconns < FD_MAX_CONNS);
    struct fd_conn *c = &f->conns[f->nconns++];
    memset(c, 0, sizeof(*c));
    c->server = server;
    c->proto = proto;
    c->conn = conn;
    return c;
}

static void
fd_drv_send(void *ctx, struct mcs_sub *sub, enum mcs_proto proto, uint64_t conn, const char *a, size_t alen,
            const char *b, size_t blen)
{
    struct fake *f = ctx;
    assert_true(sub->server < f->m.router.nservers);
    struct fd_send *x = calloc(1, sizeof(*x));
    assert_non_null(x);
    x->server = sub->server;
    x->proto = proto;
    x->conn = conn;
    x->sub = sub;
    x->len = alen + blen;
    x->bytes = malloc(x->len + 1);
    assert_non_null(x->bytes);
    if (alen > 0) {
        memcpy(x->bytes, a, alen);
    }
    if (blen > 0) {
        memcpy(x->bytes + alen, b, blen);
    }
    x->bytes[x->len] = '\0';
    x->state = FD_WAITING;
    if (f->nsends == f->sends_cap) {
        f->sends_cap = f->sends_cap ? 2 * f->sends_cap : 64;
        f->sends = realloc(f->sends, f->sends_cap * sizeof(*f->sends));
        assert_non_null(f->sends);
    }
    f->sends[f->nsends++] = x;
    struct fd_conn *c = fd_conn_get(f, sub->server, proto, conn);
    if (c->tail != NULL) {
        c->tail->next = x;
    } else {
        c->head = x;
    }
    c->tail = x;
    if (getenv("MACHINE_VERBOSE") != NULL) {
        fprintf(stderr, "  send -> %u (%s, conn %" PRIu64 "): %s\n", sub->server,
                proto == MCS_PROTO_TEXT ? "text" : "binary", conn, show(x->bytes, x->len));
    }
}

static void
fd_drv_abort_server(void *ctx, uint32_t server)
{
    struct fake *f = ctx;
    assert_true(server < FD_MAX_SERVERS);
    f->aborts[server]++;
    f->abort_wanted[server] = true;
}

static void
fd_drv_ready(void *ctx, struct mcs_session *s)
{
    struct fake *f = ctx;
    (void)s;
    f->ready_calls++;
}

static void
fd_drv_unstall(void *ctx)
{
    struct fake *f = ctx;
    f->unstall_calls++;
}

static void
fd_drv_log(void *ctx, enum mcs_log_level level, const char *line)
{
    struct fake *f = ctx;
    size_t n = strlen(line);
    fd_grow(&f->log, &f->log_cap, f->log_len + n + 2);
    memcpy(f->log + f->log_len, line, n);
    f->log_len += n;
    f->log[f->log_len++] = '\n';
    f->log[f->log_len] = '\0';
    if (getenv("MACHINE_VERBOSE") != NULL) {
        fprintf(stderr, "  log %d: %s\n", (int)level, line);
    }
}

/* ---- setting up and tearing down ------------------------------------------------------------- */

/* A configuration of hand-made endpoints "10.0.0.<i+1>:11211" (nothing
 * resolved): primaries, then backups. */
static void
fd_config(struct mcs_config *c, const struct fd_opts *o)
{
    size_t n = o->nprimaries + o->nbackups;
    memset(c, 0, sizeof(*c));
    c->servers = calloc(n, sizeof(*c->servers));   /* freed by mcs_config_free */
    assert_non_null(c->servers);
    c->nservers = n;
    c->nprimaries = o->nprimaries;
    c->nbackups = o->nbackups;
    for (size_t i = 0; i < n; i++) {
        snprintf(c->servers[i].host, sizeof(c->servers[i].host), "10.0.0.%zu", i + 1);
        c->servers[i].port = 11211;
        c->servers[i].weight = 1;
    }
    c->hash = MCS_HASH_MD5;
    c->dist = MCS_DIST_KETAMA;
    c->timeout_ms = 1000;
    c->retry_ms = o->retry_ms ? o->retry_ms : 1000;
    c->failure_limit = o->failure_limit ? o->failure_limit : 1;
    c->connections = 2;
    c->item_max = 1048576;
    c->spin_us = 0;
    c->memory_mb = 64;
    c->replicas = o->replicas ? o->replicas : 1;
    c->write = o->write;
    c->warmup_s = o->warmup_s;
    c->eject = o->eject;
    c->rejoin = o->rejoin;
    c->rejoin_log = o->rejoin_log ? o->rejoin_log : 10000;
    c->log_level = MCS_LOG_DEBUG;
    snprintf(c->shared, sizeof(c->shared), "off");
    c->shared_mode = 0600;
}

/* Sets f up: configuration, machine (at FD_NOW_MS, unix time FD_UNIX_S).
 * Returns mcs_machine_init's result (the sweeps make it fail). */
static int
fd_init(struct fake *f, const struct fd_opts *o)
{
    memset(f, 0, sizeof(*f));
    assert_true(o->nprimaries + o->nbackups <= FD_MAX_SERVERS);
    fd_config(&f->cfg, o);
    for (uint32_t s = 0; s < FD_MAX_SERVERS; s++) {
        f->pid[s] = 1000 + s;
        f->started[s] = FD_UNIX_S - 5000;
    }
    f->next_cas = 100;
    struct mcs_driver drv = {
        .ctx = f,
        .send = fd_drv_send,
        .abort_server = fd_drv_abort_server,
        .ready = fd_drv_ready,
        .unstall = fd_drv_unstall,
        .log = fd_drv_log,
    };
    int rc = mcs_machine_init(&f->m, &f->cfg, &drv, FD_NOW_MS, 4242);
    f->inited = rc == 0;
    f->m.unix_s = FD_UNIX_S;
    return rc;
}

static void fd_conn_fail(struct fake *f, struct fd_conn *c, enum mcs_failure why, bool report);

/* Fails the subs of every server the machine asked to abort (as the engine's
 * settle does after the machine returned). */
static void
fd_settle(struct fake *f)
{
    if (f->settling) {
        return;   /* the outer call picks it up */
    }
    f->settling = true;
    for (int round = 0; round < 1000; round++) {
        bool any = false;
        for (uint32_t s = 0; s < FD_MAX_SERVERS; s++) {
            if (!f->abort_wanted[s]) {
                continue;
            }
            f->abort_wanted[s] = false;
            any = true;
            for (size_t i = 0; i < f->nconns; i++) {
                if (f->conns[i].server == s && f->conns[i].head != NULL) {
                    fd_conn_fail(f, &f->conns[i], MCS_FAILURE_RESET, false);
                }
            }
        }
        if (!any) {
            break;
        }
    }
    f->settling = false;
}

/* Closes connection c as engine/backend.c's backend_fail does: report the
 * failure to the machine (if report), then fail every sub of its FIFO. */
static void
fd_conn_fail(struct fake *f, struct fd_conn *c, enum mcs_failure why, bool report)
{
    c->in_len = 0;
    if (report) {
        mcs_machine_server_failed(&f->m, c->server, why);
    }
    struct fd_send *x = c->head;
    c->head = c->tail = NULL;
    while (x != NULL) {
        struct fd_send *next = x->next;
        x->next = NULL;
        x->state = FD_FAILED;
        struct mcs_sub *sub = x->sub;
        x->sub = NULL;
        mcs_machine_failed(&f->m, sub);
        x = next;
    }
    fd_settle(f);
}

static struct fd_client *
fd_client_new(struct fake *f)
{
    assert_true(f->nclients < FD_MAX_CLIENTS);
    struct fd_client *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    mcs_session_init(&f->m, &c->s);
    c->open = true;
    f->clients[f->nclients++] = c;
    return c;
}

static void
fd_client_close(struct fake *f, struct fd_client *c)
{
    if (c->open) {
        mcs_session_close(&f->m, &c->s);
        c->open = false;
        fd_settle(f);
    }
}

/* Tears everything down: sessions closed, subs still waiting failed (their
 * requests are then freed by the machine), machine freed, records freed. */
static void
fd_free(struct fake *f)
{
    for (size_t i = 0; i < f->nclients; i++) {
        if (f->inited) {
            fd_client_close(f, f->clients[i]);
        }
        free(f->clients[i]);
    }
    for (int round = 0; f->inited && round < 10000; round++) {
        struct fd_conn *c = NULL;
        for (size_t i = 0; i < f->nconns && c == NULL; i++) {
            if (f->conns[i].head != NULL) {
                c = &f->conns[i];
            }
        }
        if (c == NULL) {
            break;
        }
        fd_conn_fail(f, c, MCS_FAILURE_RESET, false);
    }
    if (f->inited) {
        mcs_machine_free(&f->m);
    }
    for (size_t i = 0; i < f->nsends; i++) {
        free(f->sends[i]->bytes);
        free(f->sends[i]);
    }
    free(f->sends);
    for (size_t i = 0; i < f->nconns; i++) {
        free(f->conns[i].in);
    }
    free(f->log);
    mcs_config_free(&f->cfg);
}

/* ---- the application side ------------------------------------------------------------------- */

/* The application writes bytes: the machine steps over them (as engine/client.c does). */
static void
fd_client_send(struct fake *f, struct fd_client *c, const char *p, size_t n)
{
    assert_true(c->in_len + n <= sizeof(c->in));
    memcpy(c->in + c->in_len, p, n);
    c->in_len += n;
    while (!c->s.closing && c->in_len > 0) {
        size_t used = mcs_session_step(&f->m, &c->s, c->in, c->in_len);
        fd_settle(f);
        if (used == 0) {
            break;
        }
        assert_true(used <= c->in_len);
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= used;
    }
}

/* What the application reads now (consumed: mcs_session_wrote). NUL-terminated
 * copy in f->out, valid until the next call. */
static const char *
fd_take(struct fake *f, struct fd_client *c, size_t *len)
{
    size_t n = mcs_buf_len(&c->s.out);
    assert_true(n <= FD_OUT_MAX);
    if (n > 0) {
        memcpy(f->out, mcs_buf_head(&c->s.out), n);
        mcs_session_wrote(&f->m, &c->s, n);
        fd_settle(f);
    }
    f->out[n] = '\0';
    *len = n;
    return f->out;
}

/* ---- the server side ----------------------------------------------------------------------- */

/* The oldest send to server that still waits for its reply, or NULL. */
static struct fd_send *
fd_waiting(struct fake *f, uint32_t server)
{
    for (size_t i = 0; i < f->nsends; i++) {
        if (f->sends[i]->server == server && f->sends[i]->state == FD_WAITING) {
            return f->sends[i];
        }
    }
    return NULL;
}

static size_t
fd_waiting_count(struct fake *f, uint32_t server)
{
    size_t n = 0;
    for (size_t i = 0; i < f->nsends; i++) {
        n += f->sends[i]->server == server && f->sends[i]->state == FD_WAITING;
    }
    return n;
}

/* The machine takes what it can of c's reply bytes (backend_read's loop). */
static void
fd_conn_process(struct fake *f, struct fd_conn *c)
{
    while (c->in_len > 0) {
        struct fd_send *x = c->head;
        if (x == NULL) {
            f->bad++;   /* bytes nobody asked for */
            fd_conn_fail(f, c, MCS_FAILURE_PROTOCOL, true);
            return;
        }
        size_t used = 0;
        bool complete = false;
        enum mcs_resp_status st = mcs_machine_reply(&f->m, x->sub, c->proto, c->in, c->in_len, &used, &complete);
        if (st == MCS_RESP_MORE) {
            fd_settle(f);
            return;
        }
        if (st == MCS_RESP_BAD) {
            f->bad++;
            fd_conn_fail(f, c, MCS_FAILURE_PROTOCOL, true);
            return;
        }
        assert_true(used > 0 && used <= c->in_len);
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= used;
        if (complete) {
            c->head = x->next;
            if (c->head == NULL) {
                c->tail = NULL;
            }
            x->next = NULL;
            x->state = FD_DONE;
            struct mcs_sub *sub = x->sub;
            x->sub = NULL;
            mcs_machine_done(&f->m, sub);
        }
        fd_settle(f);
    }
}

/* Server bytes arrive on the connection of send x, f->piece bytes at a time. */
static void
fd_feed_send(struct fake *f, struct fd_send *x, const char *p, size_t n)
{
    struct fd_conn *c = fd_conn_get(f, x->server, x->proto, x->conn);
    size_t step = f->piece ? f->piece : n;
    for (size_t off = 0; off < n;) {
        size_t k = n - off < step ? n - off : step;
        fd_grow(&c->in, &c->in_cap, c->in_len + k);
        memcpy(c->in + c->in_len, p + off, k);
        c->in_len += k;
        off += k;
        fd_conn_process(f, c);
    }
}

/* server answers p[0, n) to the oldest sub waiting on it: the bytes must all
 * be taken and that sub must be complete. */
static void
fd_answer(struct fake *f, uint32_t server, const char *p, size_t n)
{
    struct fd_send *x = fd_waiting(f, server);
    if (x == NULL) {
        fail_msg("server %u has nothing to answer \"%s\" to", server, show(p, n));
    }
    struct fd_conn *c = fd_conn_get(f, x->server, x->proto, x->conn);
    assert_ptr_equal(c->head, x);   /* FIFO order is send order */
    fd_feed_send(f, x, p, n);
    if (c->in_len != 0) {
        fail_msg("server %u: \"%s\" left untaken after \"%s\"", server, show(c->in, c->in_len), show(p, n));
    }
    if (x->state == FD_WAITING) {
        fail_msg("server %u: \"%s\" did not complete the reply to \"%s\"", server, show(p, n), show(x->bytes, x->len));
    }
}

/* Part of a reply: bytes arrive for the oldest sub of server, which stays waiting. */
static void
fd_feed(struct fake *f, uint32_t server, const char *p, size_t n)
{
    struct fd_send *x = fd_waiting(f, server);
    assert_non_null(x);
    fd_feed_send(f, x, p, n);
}

/* Every connection to server with subs waiting fails (each reported, as each
 * would be in the engine); with none, the server is reported failed once (a
 * refused connect). */
static void
fd_fail_server(struct fake *f, uint32_t server, enum mcs_failure why)
{
    bool any = false;
    for (size_t i = 0; i < f->nconns; i++) {
        if (f->conns[i].server == server && f->conns[i].head != NULL) {
            any = true;
            fd_conn_fail(f, &f->conns[i], why, true);
        }
    }
    if (!any) {
        mcs_machine_server_failed(&f->m, server, why);
        fd_settle(f);
    }
}

/* One connection fails (reported), the others of its server only if the machine asks. */
static void
fd_fail_conn(struct fake *f, uint32_t server, enum mcs_proto proto, uint64_t conn, enum mcs_failure why)
{
    fd_conn_fail(f, fd_conn_get(f, server, proto, conn), why, true);
}

/* Time passes: timers run (probes, warm-up ends). */
static void
fd_advance(struct fake *f, uint64_t ms)
{
    f->m.now_ms += ms;
    mcs_machine_tick(&f->m);
    fd_settle(f);
}

/* ---- checks ---------------------------------------------------------------------------------- */

/* The next send to server not looked at yet: it must be p[0, n). Returns it. */
static struct fd_send *
fd_expect_sent(struct fake *f, uint32_t server, const char *p, size_t n)
{
    for (size_t i = 0; i < f->nsends; i++) {
        struct fd_send *x = f->sends[i];
        if (x->server == server && !x->checked) {
            x->checked = true;
            char what[64];
            snprintf(what, sizeof(what), "bytes sent to server %u", server);
            fd_assert_bytes(what, x->bytes, x->len, p, n);
            return x;
        }
    }
    fail_msg("server %u was sent nothing, want \"%s\"", server, show(p, n));
    return NULL;
}

/* The next n sends to server, in any order, are exactly want[0, n). */
static void
fd_expect_sent_set(struct fake *f, uint32_t server, const char *const *want, size_t n)
{
    bool seen[64] = { false };
    assert_true(n <= 64);
    for (size_t k = 0; k < n; k++) {
        struct fd_send *x = NULL;
        for (size_t i = 0; i < f->nsends && x == NULL; i++) {
            if (f->sends[i]->server == server && !f->sends[i]->checked) {
                x = f->sends[i];
            }
        }
        if (x == NULL) {
            fail_msg("server %u got %zu of %zu sends", server, k, n);
        }
        x->checked = true;
        size_t j;
        for (j = 0; j < n; j++) {
            if (!seen[j] && fd_bytes_equal(x->bytes, x->len, want[j], strlen(want[j]))) {
                seen[j] = true;
                break;
            }
        }
        if (j == n) {
            fail_msg("server %u got unexpected \"%s\"", server, show(x->bytes, x->len));
        }
    }
}

/* server was sent nothing that was not looked at. */
static void
fd_expect_none(struct fake *f, uint32_t server)
{
    for (size_t i = 0; i < f->nsends; i++) {
        struct fd_send *x = f->sends[i];
        if (x->server == server && !x->checked) {
            fail_msg("server %u was sent \"%s\", want nothing", server, show(x->bytes, x->len));
        }
    }
}

/* Nothing sent that was not looked at, and nothing waiting for a reply. */
static void
fd_expect_idle(struct fake *f)
{
    for (size_t i = 0; i < f->nsends; i++) {
        struct fd_send *x = f->sends[i];
        if (!x->checked) {
            fail_msg("server %u was sent \"%s\", not checked", x->server, show(x->bytes, x->len));
        }
        if (x->state == FD_WAITING) {
            fail_msg("server %u still owes a reply to \"%s\"", x->server, show(x->bytes, x->len));
        }
    }
    assert_int_equal(f->bad, 0);
}

static bool
fd_log_has(const struct fake *f, const char *text)
{
    return f->log != NULL && strstr(f->log, text) != NULL;
}

#define FD_SENT(f, server, lit) fd_expect_sent((f), (server), (lit), sizeof(lit) - 1)
#define FD_ANSWER(f, server, lit) fd_answer((f), (server), (lit), sizeof(lit) - 1)
#define FD_SEND(f, c, lit) fd_client_send((f), (c), (lit), sizeof(lit) - 1)
#define FD_OUT(f, c, lit)                                              \
    do {                                                               \
        size_t fd_n_;                                                  \
        const char *fd_p_ = fd_take((f), (c), &fd_n_);                 \
        fd_assert_bytes("application reads", fd_p_, fd_n_, (lit), sizeof(lit) - 1); \
    } while (0)

/* ---- a tiny memcached per server (fd_serve) ------------------------------------------------ */

static struct fd_item *
fd_item_find(struct fake *f, uint32_t s, const char *key, size_t len)
{
    for (size_t i = 0; i < FD_MAX_ITEMS; i++) {
        struct fd_item *it = &f->items[s][i];
        if (it->used && strlen(it->key) == len && memcmp(it->key, key, len) == 0) {
            return it;
        }
    }
    return NULL;
}

/* Stores key on server s (the test's set-up, or a storage command). */
static struct fd_item *
fd_item_put(struct fake *f, uint32_t s, const char *key, size_t klen, uint32_t flags, int64_t ttl, const char *value,
            size_t vlen)
{
    struct fd_item *it = fd_item_find(f, s, key, klen);
    for (size_t i = 0; it == NULL && i < FD_MAX_ITEMS; i++) {
        if (!f->items[s][i].used) {
            it = &f->items[s][i];
        }
    }
    if (it == NULL || klen >= FD_KEY_MAX || vlen > FD_VALUE_MAX) {
        fail_msg("fake server %u: no room for an item", s);
        return NULL;
    }
    memset(it, 0, sizeof(*it));
    it->used = true;
    memcpy(it->key, key, klen);
    it->flags = flags;
    it->ttl = ttl;
    it->cas = ++f->next_cas;
    memcpy(it->value, value, vlen);
    it->vlen = vlen;
    return it;
}

/* Splits line[0, n) into up to max space-separated tokens. */
static size_t
fd_tokens(const char *line, size_t n, const char **tok, size_t *tlen, size_t max)
{
    size_t k = 0, i = 0;
    while (i < n && k < max) {
        while (i < n && line[i] == ' ') {
            i++;
        }
        size_t start = i;
        while (i < n && line[i] != ' ') {
            i++;
        }
        if (i > start) {
            tok[k] = line + start;
            tlen[k++] = i - start;
        }
    }
    return k;
}

static bool
fd_tok_is(const char *t, size_t n, const char *word)
{
    return n == strlen(word) && memcmp(t, word, n) == 0;
}

/* Appends to out (cap bytes) with snprintf rules; returns the new length. */
static size_t
fd_put(char *out, size_t len, size_t cap, const char *p, size_t n)
{
    assert_true(len + n <= cap);
    memcpy(out + len, p, n);
    return len + n;
}

/* What server s's memcached answers to the text request x (get gets gat gats,
 * set add replace, delete touch, incr decr, ms md mg, stats, flush_all).
 * Returns the length in out. */
static size_t
fd_memcached(struct fake *f, uint32_t s, const struct fd_send *x, char *out, size_t cap)
{
    const char *eol = memchr(x->bytes, '\r', x->len);
    assert_non_null(eol);
    size_t line = (size_t)(eol - x->bytes);
    const char *data = eol + 2;
    const char *tok[32];
    size_t tl[32];
    size_t nt = fd_tokens(x->bytes, line, tok, tl, 32);
    size_t n = 0;
    char tmp[256];
    assert_true(nt > 0);
    if (fd_tok_is(tok[0], tl[0], "get") || fd_tok_is(tok[0], tl[0], "gets") || fd_tok_is(tok[0], tl[0], "gat")
        || fd_tok_is(tok[0], tl[0], "gats")) {
        bool cas = tl[0] == 4;
        size_t first = tok[0][1] == 'a' ? 2 : 1;
        for (size_t k = first; k < nt; k++) {
            struct fd_item *it = fd_item_find(f, s, tok[k], tl[k]);
            if (it == NULL) {
                continue;
            }
            int m = cas ? snprintf(tmp, sizeof(tmp), "VALUE %s %" PRIu32 " %zu %" PRIu64 "\r\n", it->key, it->flags,
                                   it->vlen, it->cas)
                        : snprintf(tmp, sizeof(tmp), "VALUE %s %" PRIu32 " %zu\r\n", it->key, it->flags, it->vlen);
            n = fd_put(out, n, cap, tmp, (size_t)m);
            n = fd_put(out, n, cap, it->value, it->vlen);
            n = fd_put(out, n, cap, "\r\n", 2);
        }
        return fd_put(out, n, cap, "END\r\n", 5);
    }
    if (fd_tok_is(tok[0], tl[0], "set") || fd_tok_is(tok[0], tl[0], "add") || fd_tok_is(tok[0], tl[0], "replace")) {
        assert_true(nt >= 5);
        struct fd_item *it = fd_item_find(f, s, tok[1], tl[1]);
        if ((tok[0][0] == 'a' && it != NULL) || (tok[0][0] == 'r' && it == NULL)) {
            return fd_put(out, 0, cap, "NOT_STORED\r\n", 12);
        }
        size_t vlen = (size_t)strtoul(tok[4], NULL, 10);
        long exptime = strtol(tok[3], NULL, 10);
        fd_item_put(f, s, tok[1], tl[1], (uint32_t)strtoul(tok[2], NULL, 10), exptime == 0 ? -1 : exptime, data,
                    vlen);
        return fd_put(out, 0, cap, "STORED\r\n", 8);
    }
    if (fd_tok_is(tok[0], tl[0], "delete") || fd_tok_is(tok[0], tl[0], "touch")) {
        struct fd_item *it = fd_item_find(f, s, tok[1], tl[1]);
        if (it == NULL) {
            return fd_put(out, 0, cap, "NOT_FOUND\r\n", 11);
        }
        if (tok[0][0] == 'd') {
            it->used = false;
            return fd_put(out, 0, cap, "DELETED\r\n", 9);
        }
        return fd_put(out, 0, cap, "TOUCHED\r\n", 9);
    }
    if (fd_tok_is(tok[0], tl[0], "incr") || fd_tok_is(tok[0], tl[0], "decr")) {
        assert_true(nt >= 3);
        struct fd_item *it = fd_item_find(f, s, tok[1], tl[1]);
        if (it == NULL) {
            return fd_put(out, 0, cap, "NOT_FOUND\r\n", 11);
        }
        char num[FD_VALUE_MAX + 1];
        memcpy(num, it->value, it->vlen);
        num[it->vlen] = '\0';
        char *end;
        unsigned long long v = strtoull(num, &end, 10);
        if (it->vlen == 0 || *end != '\0') {
            static const char e[] = "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n";
            return fd_put(out, 0, cap, e, sizeof(e) - 1);
        }
        unsigned long long d = strtoull(tok[2], NULL, 10);
        v = tok[0][0] == 'i' ? v + d : (d > v ? 0 : v - d);
        int m = snprintf(it->value, sizeof(it->value), "%llu", v);
        it->vlen = (size_t)m;
        it->cas = ++f->next_cas;
        n = fd_put(out, 0, cap, it->value, it->vlen);
        return fd_put(out, n, cap, "\r\n", 2);
    }
    if (fd_tok_is(tok[0], tl[0], "ms")) {   /* ms <key> <datalen> [F<flags>] [T<ttl>]: flags q never reach a server */
        assert_true(nt >= 3);
        uint32_t flags = 0;
        int64_t ttl = -1;
        for (size_t k = 3; k < nt; k++) {
            if (tok[k][0] == 'F') {
                flags = (uint32_t)strtoul(tok[k] + 1, NULL, 10);
            } else if (tok[k][0] == 'T') {
                long t = strtol(tok[k] + 1, NULL, 10);
                ttl = t == 0 ? -1 : t;
            }
        }
        fd_item_put(f, s, tok[1], tl[1], flags, ttl, data, (size_t)strtoul(tok[2], NULL, 10));
        return fd_put(out, 0, cap, "HD\r\n", 4);
    }
    if (fd_tok_is(tok[0], tl[0], "md")) {
        struct fd_item *it = fd_item_find(f, s, tok[1], tl[1]);
        if (it == NULL) {
            return fd_put(out, 0, cap, "NF\r\n", 4);
        }
        it->used = false;
        return fd_put(out, 0, cap, "HD\r\n", 4);
    }
    if (fd_tok_is(tok[0], tl[0], "mg")) {
        struct fd_item *it = fd_item_find(f, s, tok[1], tl[1]);
        if (it == NULL) {
            return fd_put(out, 0, cap, "EN\r\n", 4);
        }
        int m = snprintf(tmp, sizeof(tmp), "VA %zu", it->vlen);
        n = fd_put(out, 0, cap, tmp, (size_t)m);
        for (size_t k = 2; k < nt; k++) {
            if (fd_tok_is(tok[k], tl[k], "f")) {
                m = snprintf(tmp, sizeof(tmp), " f%" PRIu32, it->flags);
            } else if (fd_tok_is(tok[k], tl[k], "t")) {
                m = snprintf(tmp, sizeof(tmp), " t%" PRId64, it->ttl);
            } else if (fd_tok_is(tok[k], tl[k], "c")) {
                m = snprintf(tmp, sizeof(tmp), " c%" PRIu64, it->cas);
            } else {
                continue;
            }
            n = fd_put(out, n, cap, tmp, (size_t)m);
        }
        n = fd_put(out, n, cap, "\r\n", 2);
        n = fd_put(out, n, cap, it->value, it->vlen);
        return fd_put(out, n, cap, "\r\n", 2);
    }
    if (fd_tok_is(tok[0], tl[0], "stats")) {
        int m = snprintf(tmp, sizeof(tmp), "STAT pid %" PRIu64 "\r\nSTAT uptime %" PRIu64 "\r\nSTAT time %" PRIu64
                         "\r\nSTAT version 1.6.21\r\nEND\r\n", f->pid[s], f->m.unix_s - f->started[s], f->m.unix_s);
        return fd_put(out, 0, cap, tmp, (size_t)m);
    }
    if (fd_tok_is(tok[0], tl[0], "flush_all")) {
        memset(f->items[s], 0, sizeof(f->items[s]));
        return fd_put(out, 0, cap, "OK\r\n", 4);
    }
    return fd_put(out, 0, cap, "ERROR\r\n", 7);
}

static uint64_t
fd_be(const char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) {
        v = v << 8 | (unsigned char)p[i];
    }
    return v;
}

static void
fd_put_be(char *p, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--) {
        p[i] = (char)(v & 0xff);
        v >>= 8;
    }
}

/* A binary response packet into out; returns its length. CAS is always 0. */
static size_t
fd_bin_response(char *out, size_t cap, uint8_t opcode, uint16_t status, uint32_t opaque, const char *extras,
                uint8_t elen, const char *key, size_t klen, const char *value, size_t vlen)
{
    size_t body = elen + klen + vlen;
    assert_true(24 + body <= cap);
    memset(out, 0, 24);
    out[0] = (char)0x81;
    out[1] = (char)opcode;
    fd_put_be(out + 2, klen, 2);
    out[4] = (char)elen;
    fd_put_be(out + 6, status, 2);
    fd_put_be(out + 8, body, 4);
    fd_put_be(out + 12, opaque, 4);
    if (elen > 0) {
        memcpy(out + 24, extras, elen);
    }
    if (klen > 0) {
        memcpy(out + 24 + elen, key, klen);
    }
    if (vlen > 0) {
        memcpy(out + 24 + elen + klen, value, vlen);
    }
    return 24 + body;
}

/* What server s's memcached answers to the binary request x (set, add, get,
 * getk, delete, noop). Returns the length in out. */
static size_t
fd_memcached_bin(struct fake *f, uint32_t s, const struct fd_send *x, char *out, size_t cap)
{
    assert_true(x->len >= 24 && (unsigned char)x->bytes[0] == 0x80);
    uint8_t op = (uint8_t)x->bytes[1];
    size_t klen = (size_t)fd_be(x->bytes + 2, 2);
    uint8_t elen = (uint8_t)x->bytes[4];
    size_t body = (size_t)fd_be(x->bytes + 8, 4);
    uint32_t opaque = (uint32_t)fd_be(x->bytes + 12, 4);
    const char *extras = x->bytes + 24, *key = extras + elen, *value = key + klen;
    size_t vlen = body - elen - klen;
    struct fd_item *it = fd_item_find(f, s, key, klen);
    const char *nf = "Not found";
    switch (op) {
    case 0x01:   /* set */
    case 0x02:   /* add */
        if (op == 0x02 && it != NULL) {
            return fd_bin_response(out, cap, op, 0x0002, opaque, NULL, 0, NULL, 0, "Data exists for key.", 20);
        }
        fd_item_put(f, s, key, klen, (uint32_t)fd_be(extras, 4), -1, value, vlen);
        return fd_bin_response(out, cap, op, 0, opaque, NULL, 0, NULL, 0, NULL, 0);
    case 0x00:   /* get */
    case 0x0c: { /* getk */
        if (it == NULL) {
            return fd_bin_response(out, cap, op, 0x0001, opaque, NULL, 0, NULL, 0, nf, strlen(nf));
        }
        char fl[4];
        fd_put_be(fl, it->flags, 4);
        return fd_bin_response(out, cap, op, 0, opaque, fl, 4, op == 0x0c ? key : NULL, op == 0x0c ? klen : 0,
                               it->value, it->vlen);
    }
    case 0x04:   /* delete */
        if (it == NULL) {
            return fd_bin_response(out, cap, op, 0x0001, opaque, NULL, 0, NULL, 0, nf, strlen(nf));
        }
        it->used = false;
        return fd_bin_response(out, cap, op, 0, opaque, NULL, 0, NULL, 0, NULL, 0);
    default:
        return fd_bin_response(out, cap, op, 0x0081, opaque, NULL, 0, NULL, 0, "Unknown command", 15);
    }
}

/* The oldest send waiting on server s gets its fake memcached's answer.
 * Returns false when nothing waits. */
static bool
fd_serve(struct fake *f, uint32_t s)
{
    struct fd_send *x = fd_waiting(f, s);
    if (x == NULL) {
        return false;
    }
    x->checked = true;
    char reply[4096];
    size_t n = x->proto == MCS_PROTO_BINARY ? fd_memcached_bin(f, s, x, reply, sizeof(reply))
                                            : fd_memcached(f, s, x, reply, sizeof(reply));
    fd_answer(f, s, reply, n);
    return true;
}

/* Every server answers everything, oldest send first, until nothing waits. */
static void
fd_drain(struct fake *f)
{
    for (int round = 0; round < 100000; round++) {
        struct fd_send *x = NULL;
        for (size_t i = 0; i < f->nsends && x == NULL; i++) {
            if (f->sends[i]->state == FD_WAITING) {
                x = f->sends[i];
            }
        }
        if (x == NULL) {
            return;
        }
        fd_serve(f, x->server);
    }
    fail_msg("the servers never stopped being asked");
}

/* A key (prefix + a number) whose first nwant targets are want[]. */
static void
fd_key(struct fake *f, const char *prefix, const uint32_t *want, uint32_t nwant, char *out, size_t cap)
{
    for (unsigned i = 0; i < 100000; i++) {
        snprintf(out, cap, "%s%u", prefix, i);
        uint32_t t[MCS_MAX_TARGETS];
        uint32_t n = mcs_router_targets(&f->m.router, out, strlen(out), t);
        bool ok = n >= nwant;
        for (uint32_t j = 0; ok && j < nwant; j++) {
            ok = t[j] == want[j];
        }
        if (ok) {
            assert_int_equal(mcs_router_server_for_key(&f->m.router, out, strlen(out)), want[0]);
            return;
        }
    }
    fail_msg("no key with prefix %s has the wanted targets", prefix);
}

#endif
