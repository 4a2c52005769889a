/*
 * preload/engine/internal.h: structures shared by the engine's files.
 *
 * The engine is a driver of the request machine (preload/core/machine.h): it
 * owns the descriptors, buffers to and from them, and the timers; the machine
 * owns requests and every decision about them.
 *
 * Ownership:
 * - struct mcs_engine: one per process, created by mcs_engine_ensure, never
 *   freed (after fork the child abandons the parent's copy).
 * - struct mcs_client: one per intercepted application connection; created on
 *   attach, freed by client_close (EOF, error, quit). Its session's requests
 *   outlive it if servers still owe replies (machine.h).
 * - struct mcs_backend: a fixed pool of connections per server, created with
 *   the engine; the socket is opened when it first has bytes to send, and
 *   re-opened after errors. Its FIFO links the machine's subs (sub->next).
 * - struct mcs_fast: the fast path's handle on one client (fast.c), shared
 *   with the interposer's record of the application's descriptor.
 * - struct mcs_fast_conn: a connection to a server used by application threads
 *   on the fast path, one thread at a time (fast.c); idle ones wait in the
 *   engine's pool.
 * Locks: engine->mlock guards the request machine and everything the engine
 * thread touches (clients, backends, the fast-path pool): the engine thread
 * holds it except while it waits for events, and an application thread on the
 * fast path holds it while it calls the machine, never across a system call
 * that can wait. engine->lock guards only incoming. Order: mlock, then lock.
 */
#ifndef MCS_ENGINE_INTERNAL_H
#define MCS_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "preload/core/buf.h"
#include "preload/core/config.h"
#include "preload/core/heap.h"
#include "preload/core/machine.h"

#define MCS_CLIENT_READ_CHUNK   (64 * 1024)
#define MCS_BACKEND_READ_CHUNK  (64 * 1024)
#define MCS_ENGINE_MAX_QUEUED   (32 * 1024 * 1024) /* bytes waiting to go to servers before all reads pause */

/* An application connection: the engine end of its socketpair, the bytes read
 * from it not yet parsed, and its session in the request machine (first: the
 * machine's ready() hands back the session, which is the client). */
struct mcs_client {
    struct mcs_session s;
    int      fd;
    struct mcs_buf in;
    bool     paused;            /* EPOLLIN removed for flow control */
    bool     want_write;        /* EPOLLOUT registered */
    bool     dirty;             /* out has bytes to flush this loop */
    bool     fast_busy;         /* an application thread runs a fast-path write on it (it frees a closed one) */
    struct mcs_fast *fast;      /* the fast path's handle (one reference), or NULL */
    dev_t    dev;               /* which file fd is (the fast path checks before it writes) */
    ino_t    ino;
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
    struct mcs_heap_node timer; /* in e->timers while a deadline runs: connecting, or a reply owed and read */
    struct mcs_buf out;
    struct mcs_buf in;
    struct mcs_sub *head;       /* FIFO of subs owed a reply */
    struct mcs_sub *tail;
};

/* A connection handed over by connect(), not yet attached. */
struct mcs_incoming {
    int      fd;
    struct mcs_fast *fast;
};

struct mcs_engine {
    struct mcs_machine m;       /* the request machine this engine drives */
    const struct mcs_config *cfg;
    int      epfd;
    int      evfd;
    uint32_t gen;               /* owner of its descriptors in the fd table */
    pthread_t thread;
    pthread_mutex_t mlock;      /* the machine and all below, but incoming (see above) */
    bool     torn_down;         /* retired and its memory freed: nothing may touch the machine */
    bool     fast_suspect;      /* a fast-path call found one of our descriptors closed behind our back */
    pthread_mutex_t lock;       /* guards incoming */
    struct mcs_incoming *incoming;
    size_t   nincoming;
    size_t   capincoming;
    struct mcs_backend *backends;   /* nservers * MCS_PROTO_COUNT * cfg->connections */
    struct mcs_heap timers;     /* the backends' deadlines, earliest first (room for every backend) */
    struct mcs_client *clients;
    struct mcs_client *dirty_clients;
    struct mcs_backend *dirty_backends;
    struct mcs_sub *failed_head; /* subs whose send failed: failed from the loop, never from send */
    struct mcs_sub *failed_tail;
    uint8_t  *abort_wanted;     /* per server: the machine asked for its connections to be failed */
    bool     aborts;            /* some abort_wanted is set */
    bool     unstall_wanted;    /* the machine released reply bytes: recheck stalled backends */
    size_t   backend_queued;    /* bytes in all backends' out buffers */
    bool     backend_blocked;   /* clients paused because backend_queued hit the limit */
    bool     wake_paused;       /* backend_queued fell well below it: reconsider paused clients */
    uint32_t stalled;           /* backends stalled */
    uint64_t share_next_ms;     /* next heartbeat to the host-wide segment */
    uint64_t share_reclaim_ms;  /* next sweep of dead processes' slots */
    uint32_t share_slot;        /* this process's slot in it */
    bool     share_exited;      /* the process is exiting: its slot was given back (mcs_share_exit) */
    uint32_t spin_score;        /* how often polling caught a reply, 0..1024 */
    uint32_t spin_skips;
    struct mcs_fast_conn **fast_idle; /* per server and protocol: idle fast-path connections */
    uint32_t *fast_open;        /* per server and protocol: fast-path connections that exist */
    _Atomic uint64_t fast_declined; /* counted without mlock; copied into m.stats */
};

/* epoll user data: the low bit tells a client from a backend. */
#define MCS_TAG_BACKEND ((uintptr_t)1)

/* poll.c */
uint64_t mcs_engine_clock_ms(void);
int mcs_engine_epoll(struct mcs_engine *e, int op, int fd, uint32_t events, uintptr_t tag);
/* Engine thread only: the descriptor is closed if it is still the engine's own. */
void mcs_engine_close_fd(int fd);

/* engine.c */
/* Runs the work the machine asked for while it was called (failed sends,
 * servers to abort, stalled backends to recheck), until there is none. */
void mcs_engine_settle(struct mcs_engine *e);
/* The driver functions the engine gives its machine. */
extern const struct mcs_driver mcs_engine_driver;

/* engine.c */
/* Wakes the engine thread (any thread; one byte on its wake-up socket). */
void mcs_engine_wake(struct mcs_engine *e);
/* The engine's wake-up socket is still its own (one fstat; any thread). */
bool mcs_engine_intact(struct mcs_engine *e);
/* The engine has work the loop must do before it sleeps (under mlock). */
bool mcs_engine_has_work(const struct mcs_engine *e);

/* fast.c, on the engine's side (under mlock) */
/* The machine's send, when the calling thread runs a fast-path write for the
 * sub's session: queued on that thread's connection (true), else false. */
bool mcs_fast_send(struct mcs_engine *e, struct mcs_sub *sub, enum mcs_proto proto, const char *a, size_t alen,
                   const char *b, size_t blen);
/* The machine's ready for a session whose fast-path write this thread runs (it flushes it itself). */
bool mcs_fast_ready(struct mcs_engine *e, struct mcs_session *s);
/* The engine attached or closed the client of h. */
void mcs_fast_bind(struct mcs_fast *h, struct mcs_client *c);
void mcs_fast_unbind(struct mcs_fast *h);
/* The engine read n bytes the application wrote to its end of h's socketpair. */
void mcs_fast_engine_read(struct mcs_fast *h, size_t n);
/* A handle for a new connection when the fast path is on (two references:
 * the caller's and the one mcs_fast_bind gives the client), or NULL. */
struct mcs_fast *mcs_fast_for(struct mcs_engine *e);
/* Closes and frees the idle fast-path connections (engine teardown). */
void mcs_fast_pool_free(struct mcs_engine *e);

/* client.c */
void mcs_client_attach(struct mcs_engine *e, int fd, struct mcs_fast *fast);
void mcs_client_event(struct mcs_engine *e, struct mcs_client *c, uint32_t events);
void mcs_client_flush(struct mcs_engine *e, struct mcs_client *c);
void mcs_client_wake_paused(struct mcs_engine *e);
void mcs_client_ready(struct mcs_engine *e, struct mcs_client *c);

/* share.c: the host-wide state segment, for this process */
void mcs_share_attach(struct mcs_engine *e);
void mcs_share_tick(struct mcs_engine *e);
void mcs_share_exit(struct mcs_engine *e);
/* Some engine of this process shares the host-wide segment (any thread). */
bool mcs_share_active(void);

/* backend.c */
void mcs_backend_send(struct mcs_engine *e, struct mcs_sub *sub, enum mcs_proto proto, uint64_t conn, const char *a,
                      size_t alen, const char *b, size_t blen);
void mcs_backend_abort_server(struct mcs_engine *e, uint32_t server);
void mcs_backend_event(struct mcs_engine *e, struct mcs_backend *b, uint32_t events);
void mcs_backend_flush(struct mcs_engine *e, struct mcs_backend *b);
void mcs_backend_check_timeouts(struct mcs_engine *e);
uint64_t mcs_backend_next_deadline(const struct mcs_engine *e);
void mcs_backend_unstall(struct mcs_engine *e);

#endif
