/*
 * preload/engine/internal.h: structures shared by the engine's files.
 *
 * Ownership:
 * - struct mcs_engine: one per process, created by mcs_engine_ensure, never
 *   freed (after fork the child abandons the parent's copy).
 * - struct mcs_client: one per intercepted application connection; created on
 *   attach, freed by client_close (EOF, error, quit). Its requests outlive it
 *   if servers still owe replies: they are detached (client = NULL).
 * - struct mcs_request: one per application request that needs servers;
 *   created by client_dispatch, referenced by the client's pipeline (until its
 *   reply is written) and by each outstanding sub-request; freed when both
 *   are gone.
 * - struct mcs_sub: one per (request, server); lives in the request's array
 *   and sits in one backend connection's FIFO while the server owes a reply.
 * - struct mcs_backend: a fixed pool of connections per server, created with
 *   the engine; the socket is opened lazily and re-opened after errors.
 * Only the engine thread touches any of these, except engine->incoming
 * (guarded by engine->lock).
 */
#ifndef MCS_ENGINE_INTERNAL_H
#define MCS_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "preload/core/ascii.h"
#include "preload/core/binary.h"
#include "preload/core/buf.h"
#include "preload/core/config.h"
#include "preload/core/meta.h"
#include "preload/core/replica.h"
#include "preload/core/router.h"
#include "preload/core/stats.h"

#define MCS_CLIENT_READ_CHUNK   (64 * 1024)
#define MCS_CLIENT_MAX_PIPELINE 4096             /* requests in flight per client before reads pause */
#define MCS_CLIENT_MAX_OUT      (8 * 1024 * 1024) /* unsent reply bytes per client before reads pause */
#define MCS_BACKEND_READ_CHUNK  (64 * 1024)
#define MCS_ENGINE_MAX_QUEUED   (32 * 1024 * 1024) /* bytes waiting to go to servers before all reads pause */
/* Reply bytes held for one client's requests that are not yet its turn (later in
 * its pipeline, or keys of a multi-get waiting for an earlier key) before the
 * servers that carry them are no longer read. */
#define MCS_CLIENT_MAX_HELD     (8 * 1024 * 1024)
/* Unsent reply bytes a client may have while the process is over MCSHIM_MEMORY_MB:
 * its own next reply is still read from the server, this much at a time. */
#define MCS_CLIENT_MIN_OUT      (256 * 1024)

struct mcs_request;

/* The protocol of a client connection (told by its first byte), of a request,
 * and of a backend connection: memcached fixes it per connection too. */
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
    struct mcs_sub *next;       /* in the backend FIFO */
    struct mcs_sub *next_child; /* failover/warm-up subs added after dispatch (owned by the request) */
    uint64_t deadline_ms;
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
    struct mcs_request *next;   /* in the client pipeline */
    struct mcs_client *client;  /* NULL once detached */
    struct mcs_request *parent; /* sync copy: the write that waits for it */
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
    uint64_t client_id;         /* backend connection choice (keeps one client's order per server) */
    uint32_t pending;           /* subs still owed a reply */
    uint32_t nsubs;
    uint32_t nkeys;
    uint32_t hits;
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
    char     args[24];          /* gat/gats: the exptime token */
    uint8_t  args_len;
    uint32_t targets[MCS_MAX_TARGETS];
    uint8_t  ntargets;
    uint8_t  tried;             /* index in targets of the server asked */
    struct mcs_identity id;     /* probe/identify: what the server said */
    uint64_t ticket;            /* rejoin delete of a key from the host's log: its slot (hostseg.h) */
    uint64_t uptime;
    uint64_t unix_time;
};

struct mcs_client {
    int      fd;
    uint64_t id;
    struct mcs_buf in;
    struct mcs_buf out;
    struct mcs_ascii_parser parser;
    struct mcs_bin_parser bin_parser;
    struct mcs_meta_parser meta_parser;
    enum mcs_proto proto;
    struct mcs_request *head;   /* pipeline, oldest first */
    struct mcs_request *tail;
    uint32_t inflight;
    size_t   held;              /* reply bytes held by its pipeline's requests (not yet in out) */
    bool     closing;           /* quit or fatal: close once out is written */
    bool     started;           /* first byte seen (protocol detected) */
    bool     paused;            /* EPOLLIN removed for flow control */
    bool     want_write;        /* EPOLLOUT registered */
    bool     dirty;             /* out has bytes to flush this loop */
    struct mcs_client *next_dirty;
    struct mcs_client *prev;    /* all clients */
    struct mcs_client *next;
};

enum mcs_backend_state { MCS_BACKEND_CLOSED, MCS_BACKEND_CONNECTING, MCS_BACKEND_READY };

struct mcs_backend {
    int      fd;
    uint32_t server;
    enum mcs_proto proto;
    enum mcs_backend_state state;
    bool     dirty;             /* out has bytes to flush this loop */
    bool     want_write;
    bool     stalled;           /* not read: the reply at its head cannot be delivered yet (flow control) */
    uint64_t stalled_ms;        /* since when */
    struct mcs_backend *next_dirty;
    uint64_t connect_deadline_ms;
    struct mcs_buf out;
    struct mcs_buf in;
    struct mcs_sub *head;       /* FIFO of subs owed a reply */
    struct mcs_sub *tail;
};

struct mcs_engine {
    const struct mcs_config *cfg;
    struct mcs_router router;
    int      epfd;
    int      evfd;
    pthread_t thread;
    pthread_mutex_t lock;       /* guards incoming */
    int     *incoming;
    size_t   nincoming;
    size_t   capincoming;
    struct mcs_backend *backends;   /* nservers * MCS_PROTO_COUNT * cfg->connections */
    struct mcs_client *clients;
    struct mcs_client *dirty_clients;
    struct mcs_backend *dirty_backends;
    struct mcs_engine_stats stats;
    size_t   backend_queued;    /* bytes in all backends' out buffers */
    bool     backend_blocked;   /* clients paused because backend_queued hit the limit */
    size_t   reply_held;        /* reply bytes held by every request (sum of their held) */
    size_t   reply_out;         /* reply bytes in every client's out buffer */
    size_t   memory_max;        /* cfg->memory_mb in bytes */
    uint32_t stalled;           /* backends stalled */
    uint64_t now_ms;
    uint64_t tick_ms;           /* when the router next needs the engine (probes, warm-up end) */
    uint64_t start_ms;
    uint64_t next_client_id;
    bool     failover;          /* keys have somewhere else to go (copies, or eject) */
    uint32_t *rejoin_pending;   /* per server: rejoin requests in flight */
    uint64_t share_next_ms;     /* next heartbeat to the host-wide segment */
    uint64_t share_reclaim_ms;  /* next sweep of dead processes' slots */
    uint32_t share_slot;        /* this process's slot in it */
    uint32_t spin_score;        /* how often polling caught a reply, 0..1024 */
    uint32_t spin_skips;
    long     pid;
};

/* epoll user data: the low bit tells a client from a backend. */
#define MCS_TAG_BACKEND ((uintptr_t)1)

/* engine.c */
uint64_t mcs_engine_clock_ms(void);
int mcs_engine_epoll(struct mcs_engine *e, int op, int fd, uint32_t events, uintptr_t tag);
void mcs_engine_close_fd(int fd);

/* client.c */
struct mcs_request *mcs_request_new(struct mcs_engine *e, struct mcs_client *c, enum mcs_cmd cmd, uint32_t nsubs,
                                    bool detached);
void mcs_request_free(struct mcs_engine *e, struct mcs_request *r);
void mcs_request_finish(struct mcs_engine *e, struct mcs_request *r);
void mcs_request_send_keys(struct mcs_engine *e, struct mcs_request *r, struct mcs_sub *sub);
void mcs_sub_send(struct mcs_engine *e, struct mcs_client *c, struct mcs_sub *sub, const char *p, size_t n);
void mcs_client_local_reply(struct mcs_engine *e, struct mcs_client *c, const char *p, size_t n);
void mcs_client_advance(struct mcs_engine *e, struct mcs_client *c);
void mcs_stats_build(struct mcs_engine *e, const char *args, size_t args_len, struct mcs_buf *out);
bool mcs_stats_forwarded(const char *args, size_t args_len);
void mcs_stats_forward(struct mcs_engine *e, struct mcs_client *c, struct mcs_request *r);
void mcs_client_attach(struct mcs_engine *e, int fd);
void mcs_client_event(struct mcs_engine *e, struct mcs_client *c, uint32_t events);
void mcs_client_flush(struct mcs_engine *e, struct mcs_client *c);
void mcs_client_wake_paused(struct mcs_engine *e);
void mcs_request_sub_done(struct mcs_engine *e, struct mcs_sub *sub);
bool mcs_request_hold(struct mcs_engine *e, struct mcs_request *r, struct mcs_buf *to, const char *p, size_t n);
void mcs_request_stream(struct mcs_engine *e, struct mcs_request *r);
bool mcs_request_wants(const struct mcs_request *r, const struct mcs_sub *sub);

/* avail.c: failover, copies, probes, rejoin, warm-up */
void mcs_avail_dispatch_key(struct mcs_engine *e, struct mcs_client *c, const char *buf,
                            const struct mcs_ascii_req *q);
void mcs_avail_dispatch_kept(struct mcs_engine *e, struct mcs_request *r, const char *key, size_t key_len);
void mcs_avail_dispatch_keys(struct mcs_engine *e, struct mcs_client *c, const char *buf,
                             const struct mcs_ascii_req *q);
bool mcs_avail_sub_done(struct mcs_engine *e, struct mcs_sub *sub);
void mcs_avail_merged(struct mcs_engine *e, struct mcs_request *r, const char *key, uint32_t len,
                      const struct mcs_sub *from);
void mcs_avail_tick(struct mcs_engine *e);
void mcs_avail_server_down(struct mcs_engine *e, uint32_t server);
void mcs_avail_note(struct mcs_engine *e, uint32_t server, enum mcs_health before, enum mcs_failure why);
void mcs_avail_connected(struct mcs_engine *e, struct mcs_backend *b);
enum mcs_resp_status mcs_avail_meta_reply(struct mcs_engine *e, struct mcs_sub *sub, const char *p, size_t len,
                                          size_t *used);
void mcs_avail_stat(struct mcs_request *r, const char *line, size_t len);
void mcs_avail_drop_key(struct mcs_engine *e, struct mcs_client *c, const char *key, size_t len);
void mcs_avail_sync(struct mcs_engine *e);

/* share.c: the host-wide state segment, for this process */
void mcs_share_attach(struct mcs_engine *e);
void mcs_share_tick(struct mcs_engine *e);

/* binproto.c: binary clients */
void mcs_bin_dispatch(struct mcs_engine *e, struct mcs_client *c, const char *buf, const struct mcs_bin_req *q);
bool mcs_bin_deliver(struct mcs_engine *e, struct mcs_sub *sub, const char *p, const struct mcs_bin_resp *resp,
                     bool *bad);
void mcs_bin_failed(struct mcs_engine *e, struct mcs_request *r, uint32_t server);
int mcs_bin_request_line(struct mcs_request *r, struct mcs_buf *out);
void mcs_bin_stats_build(struct mcs_engine *e, struct mcs_request *r);
void mcs_bin_stats_packets(struct mcs_request *r, const struct mcs_buf *text);

/* metaproto.c: meta commands on text connections */
bool mcs_meta_detect(const char *buf, size_t len, bool *more);
void mcs_meta_dispatch(struct mcs_engine *e, struct mcs_client *c, const char *buf, const struct mcs_meta_req *q);
enum mcs_resp_status mcs_meta_reply(struct mcs_engine *e, struct mcs_sub *sub, const char *p, size_t len,
                                    size_t *used);
void mcs_meta_failed(struct mcs_engine *e, struct mcs_request *r, uint32_t server);
enum mcs_copy_action mcs_meta_copy_action(const struct mcs_request *r);
int mcs_meta_copy_line(const struct mcs_request *r, enum mcs_copy_action action, struct mcs_buf *out);

/* backend.c */
struct mcs_backend *mcs_backend_of(struct mcs_engine *e, uint32_t server, enum mcs_proto proto, uint64_t client_id);
void mcs_backend_abort_server(struct mcs_engine *e, uint32_t server);
void mcs_backend_send(struct mcs_engine *e, struct mcs_sub *sub, uint64_t client_id, const char *a, size_t alen,
                      const char *b, size_t blen);
void mcs_backend_event(struct mcs_engine *e, struct mcs_backend *b, uint32_t events);
void mcs_backend_flush(struct mcs_engine *e, struct mcs_backend *b);
void mcs_backend_check_timeouts(struct mcs_engine *e);
uint64_t mcs_backend_next_deadline(const struct mcs_engine *e);
void mcs_backend_unstall(struct mcs_engine *e);

#endif
