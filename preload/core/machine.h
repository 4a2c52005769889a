/*
 * preload/core/machine.h: the request machine: one application request's life,
 * from parsed bytes to the reply the application reads, for all three
 * protocols (text, meta, binary), with every availability decision (failover,
 * copies, warm-up, probes, rejoin) made here, once. Sans-IO: it never makes a
 * system call and never reads a clock; a driver (preload/engine today, the
 * application's own thread next) does the I/O and feeds it bytes and time.
 *
 * Inputs (the driver calls):
 *   mcs_session_step     application bytes of one connection: one request parsed and dispatched
 *   mcs_machine_reply    bytes a server sent for the sub at the head of a connection's FIFO
 *   mcs_machine_done     that sub's reply is whole (after mcs_machine_reply said so)
 *   mcs_machine_feed     both, for a whole connection's FIFO and received bytes
 *   mcs_machine_failed   a sub will get no reply (its connection failed, or could not take it)
 *   mcs_machine_server_failed  a connection to a server failed: health, and what follows
 *   mcs_machine_connected      a new connection to a server: learn its instance once
 *   mcs_machine_tick / mcs_machine_sync  timers (probes, warm-up ends) and the host's view
 *   m->now_ms, m->unix_s       the time, set by the driver before each call
 * Outputs (the machine calls the driver's functions, struct mcs_driver; each
 * only records what to do and never calls the machine back):
 *   send          queue these bytes for server S on a connection of protocol P
 *   abort_server  S went down: fail every sub still waiting on it
 *   ready         a session has reply bytes to write (or is closing)
 *   unstall       reply bytes were released: stalled server connections may be read again
 *   log           one line
 * Background jobs (async copies, warm-up fills, probes, identification, rejoin
 * batches) are requests of the machine's own (kind != MCS_REQ_CLIENT) sent the
 * same way.
 *
 * Ownership:
 * - struct mcs_machine: one per driver instance (the engine embeds it).
 * - struct mcs_session: one per application connection; the driver allocates it
 *   (usually inside its own connection struct), mcs_session_init/close. Its
 *   requests outlive it if servers still owe replies: they are detached
 *   (session = NULL) by mcs_session_close.
 * - struct mcs_request: one per application request that needs servers, or per
 *   background job; created by the machine, referenced by its session's
 *   pipeline (until its reply is released to the session) and by each
 *   outstanding sub (pending); freed when both are gone.
 * - struct mcs_sub: one per (request, server); lives in the request's array (or
 *   its children list) and sits in one driver connection's FIFO between send and
 *   mcs_machine_done/failed. The driver links it through `next` only.
 */
#ifndef MCS_MACHINE_H
#define MCS_MACHINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "preload/core/ascii.h"
#include "preload/core/binary.h"
#include "preload/core/buf.h"
#include "preload/core/config.h"
#include "preload/core/meta.h"
#include "preload/core/replica.h"
#include "preload/core/router.h"
#include "preload/core/stats.h"

#define MCS_SESSION_MAX_PIPELINE 4096             /* requests in flight per session before reads pause */
#define MCS_SESSION_MAX_OUT      (8 * 1024 * 1024) /* unsent reply bytes per session before reads pause */
/* Reply bytes held for one session's requests that are not yet its turn (later in
 * its pipeline, or keys of a multi-get waiting for an earlier key) before the
 * servers that carry them are no longer read. */
#define MCS_SESSION_MAX_HELD     (8 * 1024 * 1024)
/* Unsent reply bytes a session may have while the process is over MCSHIM_MEMORY_MB:
 * its own next reply is still read from the server, this much at a time. */
#define MCS_SESSION_MIN_OUT      (256 * 1024)
/* Hard bound for one session: what it holds in its pipeline and its out buffer. */
#define MCS_SESSION_HARD_MAX     (4 * MCS_SESSION_MAX_OUT)

struct mcs_request;
struct mcs_session;

/* The protocol of an application connection (told by its first byte), of a
 * request, and of a server connection: memcached fixes it per connection too. */
enum mcs_proto { MCS_PROTO_TEXT, MCS_PROTO_BINARY, MCS_PROTO_COUNT };

/* Who asked for a request, and so what its completion does. */
enum mcs_req_kind {
    MCS_REQ_CLIENT,             /* an application request */
    MCS_REQ_COPY,               /* a write to a copy (replica.h); parent set when the write is sync */
    MCS_REQ_PROBE,              /* `stats` to a down server: is it back, restarted or cut? */
    MCS_REQ_IDENTIFY,           /* `stats` on first contact: which instance is it? */
    MCS_REQ_REJOIN,             /* a delete or flush_all replayed on a server back from a cut */
    MCS_REQ_FILL                /* warm-up: add of a value found on a copy */
};

struct mcs_sub {
    struct mcs_request *req;
    struct mcs_sub *next;       /* driver: in its connection's FIFO, or its queue of failed subs */
    struct mcs_sub *next_child; /* failover/warm-up subs added after dispatch (owned by the request) */
    uint64_t deadline_ms;       /* driver: when the wait for its reply runs out */
    uint32_t server;
    uint32_t key;               /* warm-up fetch: index of its key */
    uint32_t fill_server;       /* warm-up fetch: the warming server to add a hit back to */
    bool     failed;
    bool     meta;              /* the server answers in the meta protocol (warm-up fetch) */
    bool     fetch;             /* warm-up fetch of one key from a copy */
    bool     answer;            /* warm-up of a meta request: the copy's reply is the client's answer */
    bool     complete;          /* the server's whole reply is in */
    uint32_t key_pos;           /* retrieval: where in req->keys the next VALUE may be (reply check) */
    uint32_t key_next;          /* retrieval: index of that key */
    struct mcs_buf resp;        /* merged get: this server's VALUE items */
};

struct mcs_request {
    struct mcs_request *next;   /* in the session pipeline */
    struct mcs_session *session; /* NULL once detached, and for background jobs */
    /* noreply, and jobs a session's requests caused on its connections (copies,
     * fills, drops of a key): that session, while both live (its list `unanswered`) */
    struct mcs_session *origin;
    struct mcs_request *onext;
    struct mcs_request *oprev;
    enum mcs_req_kind kind;
    enum mcs_cmd cmd;           /* binary requests: the matching text command (replica.h rules) */
    enum mcs_proto proto;
    uint8_t  bin_opcode;        /* binary: the client's opcode (quiet or not) */
    uint16_t bin_status;        /* binary: the status the server answered */
    uint32_t bin_opaque;        /* binary: the client's opaque */
    bool     write;             /* one key: the request may change data (its copies follow replica.h) */
    bool     is_meta;           /* a meta command (mg ms md ma me): key decoded in keys */
    bool     meta_quiet;        /* meta: the client sent q */
    uint8_t  meta_cmd;          /* meta: enum mcs_meta_cmd */
    uint8_t  meta_code;         /* meta: enum mcs_meta_resp_code the server answered */
    uint64_t conn;              /* which of the driver's connections to a server (keeps one session's order) */
    uint32_t pending;           /* subs still owed a reply */
    uint32_t nsubs;
    uint32_t nkeys;
    uint32_t hits;              /* retrievals: keys found */
    uint32_t answered;          /* binary broadcast: servers that answered */
    bool     done;              /* reply complete in out */
    bool     all_error;         /* broadcast: out holds an error reply */
    bool     merge;             /* get: items are collected per sub and merged in key order */
    bool     oom;               /* an allocation failed: answer SERVER_ERROR out of memory, then close */
    uint32_t merge_next;        /* merged get: index of the next key to release to the client */
    uint32_t merge_pos;         /* merged get: its position in keys */
    size_t   held;              /* reply bytes appended to out and subs' resp (flow control) */
    struct mcs_buf out;         /* the reply for the application */
    char    *keys;              /* merged get: copy of the key list */
    uint32_t keys_len;
    struct mcs_sub **key_sub;   /* merged get: the sub that answers each key (NULL: a miss) */
    uint8_t *key_try;           /* failover: per key, the index in its targets to try next */
    struct mcs_sub *subs;
    struct mcs_sub *children;   /* subs added after dispatch, freed with the request */
    /* failover mode, one key: the request as the application sent it, and where it may go */
    struct mcs_buf kept;        /* request bytes (q's offsets are relative to it) */
    struct mcs_ascii_req q;
    char     exptime[24];       /* text gat/gats: the exptime token */
    uint8_t  exptime_len;
    char     arith_value[8];    /* binary incr/decr: the new value the server answered (for the copies) */
    bool     has_arith_value;
    uint32_t targets[MCS_MAX_TARGETS];
    uint8_t  ntargets;
    uint8_t  tried;             /* index in targets of the server asked */
    /* what a background job alone needs, by kind */
    union {
        struct {                        /* MCS_REQ_COPY */
            struct mcs_request *parent; /* sync writes: the application's write that waits for it */
            struct mcs_buf expect;      /* incr/decr: the primary's result; a copy that differs is dropped */
        } copy;
        struct {                        /* MCS_REQ_PROBE, MCS_REQ_IDENTIFY: what the server said */
            struct mcs_identity id;
            uint64_t uptime;
            uint64_t unix_time;
        } probe;
        struct {                        /* MCS_REQ_REJOIN */
            uint64_t ticket;            /* a delete of a key from the host's log: its slot (hostseg.h) */
        } rejoin;
    } job;
};

/* One application connection as the machine sees it: protocol, parsers, the
 * pipeline of requests in the order they came, and the reply bytes ready for
 * the application (the driver writes them out and consumes them). */
struct mcs_session {
    uint64_t id;                /* chooses the driver connection to each server (conn) */
    struct mcs_buf out;         /* replies, in request order, not yet written to the application */
    struct mcs_ascii_parser parser;
    struct mcs_bin_parser bin_parser;
    struct mcs_meta_parser meta_parser;
    enum mcs_proto proto;
    struct mcs_request *head;   /* pipeline, oldest first */
    struct mcs_request *tail;
    /* requests it caused that no reply of its waits for, still owed one by their
     * server: noreply ones, copies, warm-up fills, drops of a key
     * (mcs_request_origin). A driver that sends the session's next request some
     * other way than its own connections must not overtake them. */
    struct mcs_request *unanswered;
    uint32_t inflight;
    size_t   held;              /* reply bytes held by its pipeline's requests (not yet in out) */
    bool     closing;           /* quit or fatal: close once out is written */
    bool     started;           /* first byte seen (protocol detected) */
};

/* What the machine asks of its driver. Each function only records the work:
 * none may call the machine back (completions come later, from the driver's
 * loop, through mcs_machine_done/failed). */
struct mcs_driver {
    void *ctx;
    /* Queue a (alen bytes) then b (blen bytes) for sub's server on the driver's
     * connection `conn` of protocol `proto`; sub joins that connection's FIFO. If
     * the bytes cannot be queued, the driver fails sub later (mcs_machine_failed). */
    void (*send)(void *ctx, struct mcs_sub *sub, enum mcs_proto proto, uint64_t conn, const char *a, size_t alen,
                 const char *b, size_t blen);
    /* Server went down: every sub waiting on one of its connections is to fail. */
    void (*abort_server)(void *ctx, uint32_t server);
    /* session has new bytes in out, or is closing. */
    void (*ready)(void *ctx, struct mcs_session *session);
    /* Held reply bytes were released or dropped: stalled connections may be readable. */
    void (*unstall)(void *ctx);
    /* One log line (level: enum mcs_log_level). */
    void (*log)(void *ctx, enum mcs_log_level level, const char *line);
};

struct mcs_machine {
    const struct mcs_config *cfg;
    struct mcs_router router;
    struct mcs_driver drv;
    struct mcs_engine_stats stats;
    uint64_t now_ms;            /* set by the driver: the host-wide monotonic clock (hostseg.h) */
    uint64_t unix_s;            /* set by the driver: wall-clock seconds (stats, absolute TTLs) */
    uint64_t start_ms;
    uint64_t tick_ms;           /* when the router next needs mcs_machine_tick (probes, warm-up end) */
    uint64_t next_session_id;
    long     pid;               /* the process's (stats) */
    bool     failover;          /* keys have somewhere else to go (copies, or eject) */
    uint32_t *rejoin_pending;   /* per server: rejoin requests in flight */
    size_t   reply_held;        /* reply bytes held by every request (sum of their held) */
    size_t   reply_out;         /* reply bytes in every session's out buffer */
    size_t   memory_max;        /* cfg->memory_mb in bytes */
};

/* ---- the machine ---------------------------------------------------------------------------- */

/* Sets m up for cfg (router, counters) at time now_ms. Returns 0, or -1 when out
 * of memory (m then needs no mcs_machine_free). */
int mcs_machine_init(struct mcs_machine *m, const struct mcs_config *cfg, const struct mcs_driver *drv,
                     uint64_t now_ms, long pid);
void mcs_machine_free(struct mcs_machine *m);

/* A server reply for sub (the head of its connection's FIFO, on a connection of
 * protocol proto): parses one item from p (len bytes) and takes it. Returns
 * MCS_RESP_MORE (wait for more bytes), MCS_RESP_BAD (not a reply to that request:
 * the driver fails the connection), or MCS_RESP_OK with *used bytes taken and
 * *complete set when the sub's reply is whole (then the driver takes sub off its
 * FIFO and calls mcs_machine_done). */
enum mcs_resp_status mcs_machine_reply(struct mcs_machine *m, struct mcs_sub *sub, enum mcs_proto proto,
                                       const char *p, size_t len, size_t *used, bool *complete);
/* sub's reply is whole: counts it and moves its request on. */
void mcs_machine_done(struct mcs_machine *m, struct mcs_sub *sub);
/* A driver connection's FIFO (*head..*tail, linked through sub->next) and the
 * bytes its server sent (in): gives the machine every whole reply item
 * (mcs_machine_reply), takes each sub whose reply is whole off the FIFO (the
 * next one's deadline becomes next_deadline_ms) and calls mcs_machine_done.
 * Consumes what it used. Returns false when the bytes are not a reply to the
 * FIFO's head (or nobody is owed one): the driver fails the connection. */
bool mcs_machine_feed(struct mcs_machine *m, struct mcs_sub **head, struct mcs_sub **tail, enum mcs_proto proto,
                      struct mcs_buf *in, uint64_t next_deadline_ms);
/* sub will get no reply: its request moves on (failover, a miss, or an error answer). */
void mcs_machine_failed(struct mcs_machine *m, struct mcs_sub *sub);
/* A connection to server failed (why): health moves (router.h), maybe down. */
void mcs_machine_server_failed(struct mcs_machine *m, uint32_t server, enum mcs_failure why);
/* The driver opened connection conn (text) to server: identify the instance, once. */
void mcs_machine_connected(struct mcs_machine *m, uint32_t server, uint64_t conn);
/* Timers: probes of down servers whose retry time came, warm-up ends. */
void mcs_machine_tick(struct mcs_machine *m);
/* Adopts the host's view of each server (host-wide segment), before routing. */
void mcs_machine_sync(struct mcs_machine *m);
/* The session whose next reply needs sub's reply to move on (its own request
 * at the head of its pipeline, or the sync write a copy holds up), or NULL.
 * Flow control: a connection carrying such a sub must be read. */
const struct mcs_session *mcs_machine_waiter(const struct mcs_sub *sub);

/* ---- sessions ------------------------------------------------------------------------------- */

void mcs_session_init(struct mcs_machine *m, struct mcs_session *s);
/* Parses one request from buf (len bytes, the start of the session's unread
 * input) and dispatches it. Returns the bytes it took (0: more are needed). */
size_t mcs_session_step(struct mcs_machine *m, struct mcs_session *s, const char *buf, size_t len);
/* The driver wrote n bytes of s->out to the application. */
void mcs_session_wrote(struct mcs_machine *m, struct mcs_session *s, size_t n);
/* The application connection is gone: finished requests are freed, those
 * still owed by servers detached; s->out is freed. */
void mcs_session_close(struct mcs_machine *m, struct mcs_session *s);

#endif
