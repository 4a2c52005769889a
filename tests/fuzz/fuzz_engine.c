/*
 * tests/fuzz/fuzz_engine.c: libFuzzer target that plays the memcached servers
 * against the engine's reply handling (see tests/fuzz/README.md).
 *
 * Every input runs a fresh engine (preload/engine, driven here on the calling
 * thread exactly as engine.c's loop drives it: epoll_wait with no wait, the
 * events to mcs_client_event / mcs_backend_event, timeouts, the availability
 * tick, then the dirty walk) with two application connections: a text one that
 * sends a fixed mix of text and meta requests, a binary one a fixed mix of
 * binary requests. The target owns the listening sockets of three servers and
 * answers whatever the engine sends with the input's bytes.
 *
 * Input: byte 0 picks the configuration (bits 0-1: plain / two copies / plain
 * over TCP / three copies with sync writes and a failure limit of 2; bit 2: a
 * reply memory limit of one byte, so the engine is always over it and the
 * reply-path flow control stalls servers). Then records: an op byte, a length
 * byte, that many bytes. The op: bits 0-1 the server (mod 3), bit 2 its binary
 * connection (else text), bits 5-7 the action:
 *   0-3  write the bytes to that connection;
 *   4    write them, then end the connection (bit 3: reset, else EOF);
 *   5    write them, then let the reply timeout pass;
 *   6    write them, then let the retry delay pass (probes of down servers;
 *        bit 3: the warm-up window too);
 *   7    the application (bit 2: binary, else text): bits 3-4 0 and 3 send the
 *        request mix again (at most twice in all), 1 shut down its writing
 *        end (EOF: the rest must still be answered), 2 close it.
 * After each record the engine runs until it is idle, new connections are
 * accepted and everything sent is read. At the end the servers fall silent
 * (the clock passes every deadline, round after round), then every server
 * connection is ended (again, for the connections failover opens) until the
 * engine owes nothing, the applications' ends are shut down and the engine
 * must close them.
 *
 * Checked (abort on violation, as the other targets):
 *   - no crash, leak or undefined behaviour (ASan, UBSan, LeakSanitizer: the
 *     engine is torn down and freed after each input);
 *   - the engine never spins (each run to idle is bounded);
 *   - at idle no stalled server connection could be read, and the reply a
 *     client's next request waits for is not queued on a stalled connection
 *     (stalled connections have no deadline: that client would wait for ever);
 *   - once the servers are silent every application request is answered;
 *     after the EOFs every client is closed and the reply accounting (held,
 *     out, queued, stalled) is back to 0;
 *   - each application connection receives, for each of its requests in
 *     order, exactly one reply of the shape memcached gives to that command
 *     (VALUE blocks only for keys asked, in order, then END; a storage status;
 *     a number; meta codes of that command, quiet ones hidden; binary packets
 *     with the request's opcode and opaque and the lengths of its answer),
 *     and nothing else. A connection the target closed is checked up to where
 *     it stopped reading (whole replies, then possibly one cut short).
 *
 * FUZZ_ENGINE_TRACE=1 in the environment prints where each key lives, what
 * each server connection received and what each application got (how the
 * seeds were written) and, on a hang, who owes what.
 */
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "preload/core/alloc.h"
#include "preload/core/ascii.h"
#include "preload/core/binary.h"
#include "preload/core/config.h"
#include "preload/core/meta.h"
#include "preload/engine/internal.h"
#include "preload/lib/fdtab.h"
#include "preload/lib/log.h"
#include "preload/lib/real.h"
#include "tests/fuzz/fuzz_common.h"

#define NSERVERS      3
#define NVARIANTS     4
#define START_MS      1000000u  /* the engine's clock at the start of every input */
#define PUMP_MAX      1000      /* dirty-walk rounds before the engine counts as spinning */
#define SERVICE_MAX   2000      /* rounds of (engine, accept, read) before it counts as a livelock */
#define FINAL_ROUNDS  32        /* rounds of silence (then of EOFs) at the end of an input */
#define MAX_CONNS     256       /* server connections in one input */
#define MIX_BATCHES   2         /* the request mix is sent at most this often */
#define APP_RX_MAX    (4 << 20)

/* ---- configuration ------------------------------------------------------------------------- */

/* One configuration: MCSHIM_* variables (NULL-terminated pairs) and its transport. */
struct variant {
    const char *vars[16][2];
    bool tcp;
};

static const struct variant variants[NVARIANTS] = {
    { { { "MCSHIM_REPLICAS", "1" } }, false },
    { { { "MCSHIM_REPLICAS", "2" } }, false },
    { { { "MCSHIM_REPLICAS", "1" } }, true },
    { { { "MCSHIM_REPLICAS", "3" }, { "MCSHIM_WRITE", "sync" }, { "MCSHIM_FAILURE_LIMIT", "2" } }, false },
};

/* Shared by every variant unless it sets the variable itself. The reply path
 * does not depend on the ring, and a modula ring costs nothing to build
 * (ketama's 160 md5 points per server were a quarter of every run). */
static const char *const common_vars[][2] = {
    { "MCSHIM_DISTRIBUTION", "modula" }, { "MCSHIM_TIMEOUT_MS", "1000" }, { "MCSHIM_FAILURE_LIMIT", "1000" },
    { "MCSHIM_CONNECTIONS", "1" },       { "MCSHIM_ITEM_MAX", "1024" },   { "MCSHIM_SPIN_US", "0" },
    { "MCSHIM_RETRY_MS", "2000" },       { "MCSHIM_WARMUP_S", "300" },    { "MCSHIM_LOG_LEVEL", "error" },
    { NULL, NULL },
};

/* The servers' listening sockets (unix, abstract names; and TCP on 127.0.0.1). */
static int listen_unix[NSERVERS];
static int listen_tcp[NSERVERS];
static struct mcs_config configs[NVARIANTS];
static bool trace;
static bool trace_events;   /* trace: the engine's events (the last rounds of a livelock) */
/* The target's own epoll set: listeners, our server connections and
 * application ends, so one epoll_wait tells what to accept or read. */
static int harness_epfd;

/* Tags in harness_epfd: kind in the high bits, an index below. */
#define TAG_LISTEN_UNIX ((uint64_t)1 << 32)
#define TAG_LISTEN_TCP  ((uint64_t)2 << 32)
#define TAG_CONN        ((uint64_t)3 << 32)
#define TAG_APP         ((uint64_t)4 << 32)
#define TAG_ENGINE      ((uint64_t)5 << 32)   /* the engine's epoll set has events */
#define TAG_KIND(t)     ((t) & ~(uint64_t)0xffffffffu)
#define TAG_INDEX(t)    ((size_t)((t) & 0xffffffffu))

/* Adds fd to the target's epoll set (readable) with tag. */
static void
watch(int fd, uint64_t tag)
{
    struct epoll_event ev = { .events = EPOLLIN, .data.u64 = tag };
    CHECK(epoll_ctl(harness_epfd, EPOLL_CTL_ADD, fd, &ev) == 0);
}

struct lookup_ctx {
    const struct variant *v;
    const char *servers;
};

/* mcs_config_lookup over a variant's table, then the common one. */
static const char *
lookup(const char *name, void *arg)
{
    const struct lookup_ctx *ctx = arg;
    if (strcmp(name, "MCSHIM_SERVERS") == 0) {
        return ctx->servers;
    }
    for (size_t i = 0; ctx->v->vars[i][0] != NULL; i++) {
        if (strcmp(ctx->v->vars[i][0], name) == 0) {
            return ctx->v->vars[i][1];
        }
    }
    for (size_t i = 0; common_vars[i][0] != NULL; i++) {
        if (strcmp(common_vars[i][0], name) == 0) {
            return common_vars[i][1];
        }
    }
    return NULL;
}

/* A non-blocking listening socket bound to *addr (port 0: any); *addr and
 * *len are set to the address it got. */
static int
listener(int family, struct sockaddr_storage *addr, socklen_t *len)
{
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    CHECK(bind(fd, (struct sockaddr *)addr, *len) == 0);
    CHECK(listen(fd, 64) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)addr, len) == 0);
    return fd;
}

/* Listening sockets and the parsed configurations, once per process. */
static void
setup_once(void)
{
    static bool done;
    if (done) {
        return;
    }
    done = true;
    trace = getenv("FUZZ_ENGINE_TRACE") != NULL;
    CHECK(mcs_real_init() == 0);
    /* Below 256 descriptors mcs_fd_move_high leaves them where they are: two
     * syscalls less per engine socket (an input holds a few dozen at most). */
    struct rlimit rl;
    CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
    if (rl.rlim_cur >= 256) {
        rl.rlim_cur = 255;
        CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
    }
    harness_epfd = epoll_create1(EPOLL_CLOEXEC);
    CHECK(harness_epfd >= 0);
    mcs_log_set_level(MCS_LOG_ERROR);
    struct sockaddr_storage un_addr[NSERVERS], in_addr[NSERVERS];
    socklen_t un_len[NSERVERS], in_len[NSERVERS];
    char tcp_servers[256] = "";
    for (int i = 0; i < NSERVERS; i++) {
        struct sockaddr_un *un = (struct sockaddr_un *)&un_addr[i];
        memset(un, 0, sizeof(*un));
        un->sun_family = AF_UNIX;
        int n = snprintf(un->sun_path + 1, sizeof(un->sun_path) - 1, "mcshim-fuzz-engine-%ld-%d", (long)getpid(), i);
        un_len[i] = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
        listen_unix[i] = listener(AF_UNIX, &un_addr[i], &un_len[i]);
        struct sockaddr_in *in = (struct sockaddr_in *)&in_addr[i];
        memset(in, 0, sizeof(*in));
        in->sin_family = AF_INET;
        in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        in_len[i] = sizeof(*in);
        listen_tcp[i] = listener(AF_INET, &in_addr[i], &in_len[i]);
        watch(listen_unix[i], TAG_LISTEN_UNIX | (uint64_t)i);
        watch(listen_tcp[i], TAG_LISTEN_TCP | (uint64_t)i);
        size_t used = strlen(tcp_servers);
        snprintf(tcp_servers + used, sizeof(tcp_servers) - used, "%s127.0.0.1:%u s%d", i ? "," : "",
                 (unsigned)ntohs(in->sin_port), i);
    }
    for (int v = 0; v < NVARIANTS; v++) {
        struct lookup_ctx ctx = { &variants[v], variants[v].tcp ? tcp_servers : "unix:/s0,unix:/s1,unix:/s2" };
        char err[256];
        CHECK(mcs_config_parse(&configs[v], lookup, &ctx, err, sizeof(err)) == MCS_CONFIG_OK);
        CHECK(configs[v].nservers == NSERVERS);
        for (int i = 0; i < NSERVERS; i++) {
            struct mcs_endpoint *ep = &configs[v].servers[i];
            /* fixed ring names: which server a key lives on does not depend on the addresses */
            snprintf(ep->name, sizeof(ep->name), "s%d", i);
            ep->addrs[0] = variants[v].tcp ? in_addr[i] : un_addr[i];
            ep->addrlens[0] = variants[v].tcp ? in_len[i] : un_len[i];
            ep->naddrs = 1;
        }
    }
    if (trace) {
        static const char *const keys[] = { "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "n1", "q1" };
        struct mcs_router r;
        CHECK(mcs_router_init(&r, &configs[0]) == 0);
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
            fprintf(stderr, "key %s on server %u\n", keys[i], mcs_router_server_for_key(&r, keys[i], strlen(keys[i])));
        }
        mcs_router_free(&r);
    }
}

/* ---- the request mix ----------------------------------------------------------------------- */

/* What a request's reply must look like. */
enum want {
    WANT_NOTHING,   /* noreply */
    WANT_STORE,     /* STORED NOT_STORED EXISTS NOT_FOUND */
    WANT_DELETE,    /* DELETED NOT_FOUND */
    WANT_ARITH,     /* a decimal number, NOT_FOUND */
    WANT_TOUCH,     /* TOUCHED NOT_FOUND */
    WANT_VERSION,   /* VERSION x */
    WANT_OK,        /* OK */
    WANT_VALUES,    /* VALUE blocks of keys asked, in order, then END (no error line) */
    WANT_STATS,     /* STAT lines, then END or an error line */
    WANT_META,      /* one meta reply of that command (absent if quiet hides it) */
    WANT_MN         /* MN */
};

#define MIX_KEYS_MAX 6

/* One text or meta request of the mix and its reply's shape. */
struct text_req {
    const char *bytes;
    enum want want;
    const char *keys[MIX_KEYS_MAX];  /* WANT_VALUES: the keys asked, in order */
    enum mcs_meta_cmd meta;          /* WANT_META */
    bool quiet;                      /* WANT_META: sent with q */
};

static const struct text_req text_mix[] = {
    { "set k1 0 0 5\r\nhello\r\n", WANT_STORE, { NULL }, 0, false },
    { "get k1\r\n", WANT_VALUES, { "k1" }, 0, false },
    { "get k1 k2 k3 k4\r\n", WANT_VALUES, { "k1", "k2", "k3", "k4" }, 0, false },
    { "gets k2\r\n", WANT_VALUES, { "k2" }, 0, false },
    { "incr n1 5\r\n", WANT_ARITH, { NULL }, 0, false },
    { "delete k3\r\n", WANT_DELETE, { NULL }, 0, false },
    { "touch k4 100\r\n", WANT_TOUCH, { NULL }, 0, false },
    { "gat 100 k1 k2 k5\r\n", WANT_VALUES, { "k1", "k2", "k5" }, 0, false },
    { "version\r\n", WANT_VERSION, { NULL }, 0, false },
    { "set q1 0 0 1 noreply\r\nx\r\n", WANT_NOTHING, { NULL }, 0, false },
    { "flush_all\r\n", WANT_OK, { NULL }, 0, false },
    { "mg k1 v f t\r\n", WANT_META, { NULL }, MCS_META_MG, false },
    { "ms k2 3 T100\r\nabc\r\n", WANT_META, { NULL }, MCS_META_MS, false },
    { "md k3 q\r\n", WANT_META, { NULL }, MCS_META_MD, true },
    { "mn\r\n", WANT_MN, { NULL }, 0, false },
    { "gets k5 k6 k7 k8 k5\r\n", WANT_VALUES, { "k5", "k6", "k7", "k8", "k5" }, 0, false },
    { "decr n1 1\r\n", WANT_ARITH, { NULL }, 0, false },
    { "stats settings\r\n", WANT_STATS, { NULL }, 0, false },
    { "ma n1\r\n", WANT_META, { NULL }, MCS_META_MA, false },
    { "me k1\r\n", WANT_META, { NULL }, MCS_META_ME, false },
    { "verbosity 1\r\n", WANT_OK, { NULL }, 0, false },
    { "cas k1 0 0 2 123\r\nhi\r\n", WANT_STORE, { NULL }, 0, false },
    { "mg k6 s v q\r\n", WANT_META, { NULL }, MCS_META_MG, true },
    { "mn\r\n", WANT_MN, { NULL }, 0, false },
    { "append k1 0 0 1\r\nz\r\n", WANT_STORE, { NULL }, 0, false },
};
#define TEXT_MIX_N (sizeof(text_mix) / sizeof(text_mix[0]))

/* One binary request of the mix (the opaque is its index + 1, plus 0x100 per batch). */
struct bin_req {
    uint8_t opcode;
    const char *key;
    uint8_t extras_len;   /* zero bytes of extras (exptime 0, delta 0...) */
    const char *value;
};

static const struct bin_req bin_mix[] = {
    { MCS_BIN_OP_GET, "k1", 0, NULL },        { MCS_BIN_OP_GETK, "k2", 0, NULL },
    { MCS_BIN_OP_SET, "k3", 8, "bin" },       { MCS_BIN_OP_INCREMENT, "n1", 20, NULL },
    { MCS_BIN_OP_GETQ, "k4", 0, NULL },       { MCS_BIN_OP_NOOP, NULL, 0, NULL },
    { MCS_BIN_OP_DELETE, "k5", 0, NULL },     { MCS_BIN_OP_VERSION, NULL, 0, NULL },
    { MCS_BIN_OP_FLUSH, NULL, 0, NULL },      { MCS_BIN_OP_STAT, "settings", 0, NULL },
    { MCS_BIN_OP_TOUCH, "k1", 4, NULL },      { MCS_BIN_OP_GATK, "k2", 4, NULL },
    { MCS_BIN_OP_SETQ, "k6", 8, "v" },        { MCS_BIN_OP_DECREMENT, "n1", 20, NULL },
    { MCS_BIN_OP_GETKQ, "k7", 0, NULL },      { MCS_BIN_OP_GAT, "k8", 4, NULL },
    { MCS_BIN_OP_NOOP, NULL, 0, NULL },
};
#define BIN_MIX_N (sizeof(bin_mix) / sizeof(bin_mix[0]))

/* The opaque of binary request i of batch `batch`: distinct across both batches. */
static uint32_t
bin_opaque(size_t batch, size_t i)
{
    return (uint32_t)(0x100 * batch + i + 1);
}

/* The text mix as one byte string. */
static void
text_batch(struct mcs_buf *out)
{
    for (size_t i = 0; i < TEXT_MIX_N; i++) {
        CHECK(mcs_buf_append(out, text_mix[i].bytes, strlen(text_mix[i].bytes)) == 0);
    }
}

/* The binary mix, batch number `batch`, as one byte string. */
static void
bin_batch(struct mcs_buf *out, size_t batch)
{
    static const char zeros[32];
    for (size_t i = 0; i < BIN_MIX_N; i++) {
        const struct bin_req *q = &bin_mix[i];
        struct mcs_bin_msg m = {
            .opcode = q->opcode, .opaque = bin_opaque(batch, i), .extras = zeros, .extras_len = q->extras_len,
            .key = q->key, .key_len = (uint16_t)(q->key ? strlen(q->key) : 0),
            .value = q->value, .value_len = (uint32_t)(q->value ? strlen(q->value) : 0),
        };
        CHECK(mcs_bin_put_request(out, &m) == 0);
    }
}

/* ---- one input's world: engine, servers, applications -------------------------------------- */

/* A connection the engine opened to one of our servers (our accepted end). */
struct server_conn {
    int      fd;        /* -1 once closed */
    uint32_t server;
    int      proto;     /* MCS_PROTO_TEXT or _BINARY by the first byte received; -1 before */
};

/* One application connection: our end of the socketpair, and what it got. */
struct app {
    int    fd;          /* -1 once closed */
    bool   binary;
    bool   eof_sent;    /* our writing end is shut down */
    bool   closed;      /* we closed it: only what was read before is checked */
    bool   ended;       /* the engine closed its end (we read EOF) */
    size_t batches;     /* request mixes sent */
    struct mcs_buf rx;
};

struct world {
    struct mcs_engine e;
    const struct variant *v;
    struct server_conn conns[MAX_CONNS];
    size_t nconns;
    struct app apps[2];   /* text, binary */
};

/* Trace: one line, printable bytes as they are, the rest escaped. */
static void
trace_bytes(const char *what, const char *p, size_t n)
{
    if (!trace) {
        return;
    }
    fprintf(stderr, "%s (%zu): ", what, n);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\r') {
            fputs("\\r", stderr);
        } else if (c == '\n') {
            fputs("\\n", stderr);
        } else if (c >= 0x20 && c < 0x7f && c != '\\') {
            fputc(c, stderr);
        } else {
            fprintf(stderr, "\\x%02x", c);
        }
    }
    fputc('\n', stderr);
}

static void trace_engine(const struct mcs_engine *e);

/* engine.c's flush_dirty: backends first (requests out), then clients. */
static void
flush_dirty(struct mcs_engine *e)
{
    for (int round = 0; round < 4 && (e->dirty_backends || e->dirty_clients); round++) {
        while (e->dirty_backends) {
            struct mcs_backend *b = e->dirty_backends;
            e->dirty_backends = b->next_dirty;
            mcs_backend_flush(e, b);
            mcs_engine_settle(e);
        }
        while (e->dirty_clients) {
            struct mcs_client *c = e->dirty_clients;
            e->dirty_clients = c->next_dirty;
            mcs_client_flush(e, c);
            mcs_engine_settle(e);
        }
    }
}

/* One pass of engine.c's loop body, never waiting: the events ready, the
 * timeouts, the availability tick, then the dirty walk until it is done. (The
 * engine's epoll set sits in the target's: service() calls this again while
 * it has events.) */
static void
engine_step(struct mcs_engine *e)
{
    struct epoll_event evs[64];
    int n = epoll_wait(e->epfd, evs, 64, 0);
    CHECK(n >= 0 || errno == EINTR);
    for (int i = 0; i < n; i++) {
        uintptr_t tag = (uintptr_t)evs[i].data.u64;
        if (trace_events) {
            fprintf(stderr, "engine event %#x on %s %p\n", evs[i].events, (tag & MCS_TAG_BACKEND) ? "backend" : "client",
                    (void *)(tag & ~MCS_TAG_BACKEND));
        }
        if (tag & MCS_TAG_BACKEND) {
            mcs_backend_event(e, (struct mcs_backend *)(tag & ~MCS_TAG_BACKEND), evs[i].events);
        } else {
            mcs_client_event(e, (struct mcs_client *)tag, evs[i].events);
        }
        mcs_engine_settle(e);
    }
    mcs_backend_check_timeouts(e);
    mcs_engine_settle(e);
    mcs_machine_tick(&e->m);
    mcs_engine_settle(e);
    for (int round = 0; e->dirty_backends != NULL || e->dirty_clients != NULL; round++) {
        CHECK(round < PUMP_MAX);   /* the walk keeps finding work: the loop would spin */
        flush_dirty(e);
    }
}

/* The engine as engine.c's engine_create builds it, without the thread and
 * wake-up socket (nothing is handed over: clients are attached directly). */
static void
engine_init(struct mcs_engine *e, const struct mcs_config *cfg, bool memory_tiny)
{
    memset(e, 0, sizeof(*e));
    e->cfg = cfg;
    e->evfd = -1;
    e->spin_score = 1024;
    struct mcs_driver drv = mcs_engine_driver;
    drv.ctx = e;
    CHECK(mcs_machine_init(&e->m, cfg, &drv, START_MS, (long)getpid()) == 0);
    e->m.memory_max = memory_tiny ? 1 : (size_t)cfg->memory_mb << 20;
    size_t nb = cfg->nservers * MCS_PROTO_COUNT * cfg->connections;
    e->backends = mcs_calloc(nb, sizeof(*e->backends));
    e->abort_wanted = mcs_calloc(cfg->nservers, sizeof(*e->abort_wanted));
    CHECK(e->backends != NULL && e->abort_wanted != NULL && mcs_heap_init(&e->timers, (uint32_t)nb) == 0);
    for (size_t i = 0; i < nb; i++) {
        e->backends[i].fd = -1;
        e->backends[i].server = (uint32_t)(i / cfg->connections / MCS_PROTO_COUNT);
        e->backends[i].proto = (enum mcs_proto)(i / cfg->connections % MCS_PROTO_COUNT);
    }
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    CHECK(e->epfd >= 0);
    watch(e->epfd, TAG_ENGINE);
}

/* Frees what engine_init made and closes what the engine still holds. */
static void
engine_free(struct mcs_engine *e)
{
    size_t nb = e->cfg->nservers * MCS_PROTO_COUNT * e->cfg->connections;
    for (size_t i = 0; i < nb; i++) {
        struct mcs_backend *b = &e->backends[i];
        CHECK(b->head == NULL);
        if (b->fd >= 0) {
            mcs_engine_epoll(e, EPOLL_CTL_DEL, b->fd, 0, 0);
            mcs_engine_close_fd(b->fd);
        }
        mcs_buf_free(&b->in);
        mcs_buf_free(&b->out);
    }
    mcs_free(e->backends);
    mcs_heap_free(&e->timers);
    mcs_free(e->abort_wanted);
    mcs_machine_free(&e->m);
    close(e->epfd);
}

/* Closes our end of a server connection; a TCP one with a reset, so that
 * neither end lingers in TIME_WAIT at thousands of inputs per second. */
static void
conn_close(struct world *w, struct server_conn *sc)
{
    if (sc->fd < 0) {
        return;
    }
    if (trace) {
        fprintf(stderr, "closing our end of server %u conn %zu\n", sc->server, (size_t)(sc - w->conns));
    }
    if (w->v->tcp) {
        struct linger lg = { 1, 0 };
        setsockopt(sc->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    close(sc->fd);
    sc->fd = -1;
}

/* Accepts a pending connection of server s's listener (of the input's
 * transport; a connection left on the other one from an earlier input is
 * dropped). */
static void
accept_on(struct world *w, uint32_t s, bool tcp)
{
    int fd = accept4(tcp ? listen_tcp[s] : listen_unix[s], NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
        CHECK(errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED);
        return;   /* more are reported again (level-triggered) */
    }
    if (tcp != w->v->tcp) {
        close(fd);
        return;
    }
    CHECK(w->nconns < MAX_CONNS);   /* the engine reconnects without end */
    w->conns[w->nconns] = (struct server_conn){ .fd = fd, .server = s, .proto = -1 };
    watch(fd, TAG_CONN | (uint64_t)w->nconns);
    w->nconns++;
}

/* Reads what the engine sent on server connection i; closes ours when the
 * engine closed its end. */
static void
drain_server(struct world *w, size_t i)
{
    char buf[16384];
    struct server_conn *sc = &w->conns[i];
    while (sc->fd >= 0) {
        ssize_t n = recv(sc->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n > 0) {
            if (sc->proto < 0) {
                sc->proto = (unsigned char)buf[0] == MCS_BIN_MAGIC_REQ ? MCS_PROTO_BINARY : MCS_PROTO_TEXT;
            }
            if (trace) {
                char what[64];
                snprintf(what, sizeof(what), "server %u %s conn %zu got", sc->server,
                         sc->proto == MCS_PROTO_BINARY ? "binary" : "text", i);
                trace_bytes(what, buf, (size_t)n);
            }
            if ((size_t)n < sizeof(buf)) {
                return;   /* anything more is reported again */
            }
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
        conn_close(w, sc);   /* EOF or reset: the engine closed it */
    }
}

/* Reads what the engine sent application i; at EOF it is no longer watched. */
static void
read_app(struct world *w, size_t i)
{
    struct app *a = &w->apps[i];
    while (a->fd >= 0 && !a->ended) {
        CHECK(mcs_buf_reserve(&a->rx, 16384) == 0);
        size_t room = a->rx.cap - a->rx.end;
        ssize_t n = recv(a->fd, a->rx.data + a->rx.end, room, MSG_DONTWAIT);
        if (n > 0) {
            a->rx.end += (size_t)n;
            CHECK(mcs_buf_len(&a->rx) < APP_RX_MAX);
            if ((size_t)n < room) {
                return;   /* anything more is reported again */
            }
        } else if (n == 0) {
            a->ended = true;
            epoll_ctl(harness_epfd, EPOLL_CTL_DEL, a->fd, NULL);
        } else if (errno != EINTR) {
            CHECK(errno == EAGAIN || errno == EWOULDBLOCK);
            return;
        }
    }
}

/* Is sub queued on a stalled server connection? */
static bool
sub_stalled(const struct mcs_engine *e, const struct mcs_sub *sub)
{
    size_t nb = e->cfg->nservers * MCS_PROTO_COUNT * e->cfg->connections;
    for (size_t i = 0; i < nb; i++) {
        for (const struct mcs_sub *q = e->backends[i].head; q != NULL && e->backends[i].stalled; q = q->next) {
            if (q == sub) {
                return true;
            }
        }
    }
    return false;
}

/* What a merged retrieval waits for, replaying client.c's request_merge
 * without changing anything: the sub answering its next key whose item is
 * neither held nor known missing (*all false), or, every key released or
 * missed, every sub still owing its END (*all true). */
static const struct mcs_sub *
merge_waits_for(const struct mcs_engine *e, const struct mcs_request *r, bool *all)
{
    const struct mcs_sub *seen[MIX_KEYS_MAX * 2];
    size_t used[MIX_KEYS_MAX * 2], nseen = 0;
    uint32_t pos = r->merge_pos, off, len;
    *all = false;
    for (uint32_t i = r->merge_next; i < r->nkeys && mcs_ascii_next_token(r->keys, &pos, r->keys_len, &off, &len);
         i++) {
        const struct mcs_sub *s = r->key_sub[i];
        if (s == NULL || s->failed) {
            continue;   /* released or missed (a failed sub's keys miss) */
        }
        size_t k = 0;
        while (k < nseen && seen[k] != s) {
            k++;
        }
        if (k == nseen) {
            CHECK(nseen < sizeof(seen) / sizeof(seen[0]));
            seen[nseen] = s;
            used[nseen++] = 0;
        }
        bool warming = e->m.router.servers[s->server].health == MCS_HEALTH_WARMING;
        size_t avail = mcs_buf_len(&s->resp) - used[k];
        if (!s->complete && (avail == 0 || warming)) {
            return s;
        }
        struct mcs_ascii_resp item;
        const char *p = avail > 0 ? mcs_buf_head(&s->resp) + used[k] : NULL;
        if (p != NULL && mcs_ascii_resp_parse(p, avail, UINT32_MAX, &item) == MCS_RESP_OK
            && item.kind == MCS_RESP_VALUE && item.key_len == len && memcmp(p + item.key_off, r->keys + off, len) == 0) {
            used[k] += item.len;   /* released */
        }
    }
    *all = true;   /* every key released or missed: the ENDs still owed complete it */
    return NULL;
}

/* Idle: the reply a client's next request waits for must not be queued on a
 * stalled connection while the client has nothing left to write (the target
 * reads everything): nothing would ever read it (stalled connections have no
 * deadline). A merged retrieval waits for the sub of its next open key. */
static void
check_waits(struct world *w)
{
    const struct mcs_engine *e = &w->e;
    for (const struct mcs_client *c = e->clients; c != NULL; c = c->next) {
        const struct mcs_request *r = c->s.head;
        if (r == NULL || r->done || mcs_buf_len(&c->s.out) > 0) {
            continue;
        }
        bool all = !r->merge;
        const struct mcs_sub *next = r->merge ? merge_waits_for(e, r, &all) : NULL;
        bool stuck = next != NULL && sub_stalled(e, next);
        for (uint32_t i = 0; all && i < r->nsubs; i++) {
            stuck = stuck || sub_stalled(e, &r->subs[i]);
        }
        for (const struct mcs_sub *ch = r->children; all && ch != NULL; ch = ch->next_child) {
            stuck = stuck || sub_stalled(e, ch);
        }
        if (stuck) {
            trace_engine(e);
            CHECK(false);
        }
    }
}

/* Runs the engine, accepts and reads whatever is ready on our side, until
 * nothing is ready on either. An engine that stays busy (a descriptor ready
 * for ever, connections or bytes without end) fails. */
static void
service(struct world *w)
{
    struct epoll_event evs[64];
    bool engine_due = true;   /* always once: the clock may have moved */
    for (int round = 0; round < SERVICE_MAX; round++) {
        trace_events = trace && round >= SERVICE_MAX - 3;
        if (engine_due) {
            engine_step(&w->e);
        }
        int n = epoll_wait(harness_epfd, evs, 64, 0);
        CHECK(n >= 0 || errno == EINTR);
        if (n <= 0) {
            /* Idle: a connection left stalled must have a reason to be (a
             * lost wake-up waits for ever: stalled connections have no deadline). */
            uint32_t stalled = w->e.stalled;
            if (stalled > 0 && trace) {
                fprintf(stderr, "idle with %u stalled:\n", stalled);
                trace_engine(&w->e);
            }
            mcs_backend_unstall(&w->e);
            CHECK(w->e.stalled == stalled);
            if (stalled > 0) {
                check_waits(w);
            }
            return;
        }
        engine_due = false;
        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64;
            if (tag == TAG_ENGINE) {
                engine_due = true;
            } else if (TAG_KIND(tag) == TAG_LISTEN_UNIX || TAG_KIND(tag) == TAG_LISTEN_TCP) {
                accept_on(w, (uint32_t)TAG_INDEX(tag), TAG_KIND(tag) == TAG_LISTEN_TCP);
            } else if (TAG_KIND(tag) == TAG_CONN) {
                drain_server(w, TAG_INDEX(tag));
            } else {
                read_app(w, TAG_INDEX(tag));
            }
        }
    }
    trace_engine(&w->e);
    CHECK(false);   /* the engine keeps connecting or sending without end */
}

/* The newest open connection of server s and protocol proto, or NULL. */
static struct server_conn *
conn_of(struct world *w, uint32_t s, int proto)
{
    for (size_t i = w->nconns; i-- > 0;) {
        struct server_conn *sc = &w->conns[i];
        if (sc->fd >= 0 && sc->server == s && sc->proto == proto) {
            return sc;
        }
    }
    return NULL;
}

/* Writes p[0, n) to fd; stops quietly when the peer is gone. */
static void
send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            return;   /* the engine closed it (or it is full: these are tiny) */
        }
        p += k;
        n -= (size_t)k;
    }
}

/* Sends the next request mix to each application that can still send. */
static void
apps_send_batch(struct world *w)
{
    for (int i = 0; i < 2; i++) {
        struct app *a = &w->apps[i];
        if (a->fd < 0 || a->eof_sent || a->batches >= MIX_BATCHES) {
            continue;
        }
        struct mcs_buf b = { 0 };
        if (a->binary) {
            bin_batch(&b, a->batches);
        } else {
            text_batch(&b);
        }
        send_all(a->fd, mcs_buf_head(&b), mcs_buf_len(&b));
        mcs_buf_free(&b);
        a->batches++;
    }
}

/* Application i (0 text, 1 binary): a socketpair whose other end the engine
 * gets, marked as its own (mcs_engine_close_fd closes it) and attached. */
static void
app_open(struct world *w, int i)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
    mcs_fdtab_mark_owned(sv[1], mcs_fdtab_thread_owner(), false);   /* the engine's now */
    mcs_client_attach(&w->e, sv[1], NULL);   /* no fast-path handle: the engine path only */
    w->apps[i] = (struct app){ .fd = sv[0], .binary = i == 1 };
    watch(sv[0], TAG_APP | (uint64_t)i);
}

/* ---- the reply checks ---------------------------------------------------------------------- */

/* Where a check stopped: a whole reply, the bytes end inside one, or (quiet
 * requests) the next reply is not this request's. */
enum step { STEP_OK, STEP_MORE, STEP_ABSENT };

/* A reply stream being checked: bytes, read position, and whether a cut reply may end it. */
struct stream {
    const char *p;
    size_t len;
    size_t off;
};

/* The next line at s->off: sets *n to its length with "\r\n". Returns false
 * if the bytes end first. A line holds no NUL and ends "\r\n". */
static bool
next_line(const struct stream *s, size_t *n)
{
    const char *start = s->p + s->off;
    const char *nl = memchr(start, '\n', s->len - s->off);
    if (nl == NULL) {
        return false;
    }
    *n = (size_t)(nl - start) + 1;
    CHECK(*n >= 2 && start[*n - 2] == '\r');
    CHECK(memchr(start, '\0', *n) == NULL);
    return true;
}

/* The line p[0, n) (with its "\r\n") is exactly word. */
static bool
line_is(const char *p, size_t n, const char *word)
{
    size_t w = strlen(word);
    return n == w + 2 && memcmp(p, word, w) == 0;
}

/* ERROR, CLIENT_ERROR [text], SERVER_ERROR [text]. */
static bool
error_line(const char *p, size_t n)
{
    static const char *const words[] = { "ERROR", "CLIENT_ERROR", "SERVER_ERROR" };
    for (size_t i = 0; i < 3; i++) {
        size_t w = strlen(words[i]);
        if (n >= w + 2 && memcmp(p, words[i], w) == 0 && (n == w + 2 || p[w] == ' ')) {
            return true;
        }
    }
    return false;
}

/* A decimal number of at most `max`, alone. */
static bool
number_is(const char *p, size_t n, uint64_t max)
{
    uint64_t v = 0;
    if (n == 0 || n > 20) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return false;
        }
        uint64_t d = (uint64_t)(p[i] - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return false;
        }
        v = v * 10 + d;
    }
    return v <= max;
}

/* A VALUE line's number as the engine reads it (core/ascii.c's strtoull
 * rules: an optional '+', or '-' before zeros only); memcached sends digits,
 * but every client reads these the same way, so the framing cannot differ. */
static bool
value_number_is(const char *p, size_t n, uint64_t max)
{
    if (n > 1 && p[0] == '-') {
        for (size_t i = 1; i < n; i++) {
            if (p[i] != '0') {
                return false;
            }
        }
        return true;
    }
    return n > 1 && p[0] == '+' ? number_is(p + 1, n - 1, max) : number_is(p, n, max);
}

/* VALUE blocks of keys asked (each at a later position of the list than the
 * one before), then END. */
static enum step
check_values(struct stream *s, const struct text_req *q)
{
    size_t nkeys = 0, next = 0;
    while (nkeys < MIX_KEYS_MAX && q->keys[nkeys] != NULL) {
        nkeys++;
    }
    for (;;) {
        size_t n;
        if (!next_line(s, &n)) {
            return STEP_MORE;
        }
        const char *p = s->p + s->off;
        if (line_is(p, n, "END")) {
            s->off += n;
            return STEP_OK;
        }
        CHECK(n > 6 && memcmp(p, "VALUE ", 6) == 0);
        uint32_t pos = 0, off[6], len[6], t = 0;
        while (t < 6 && mcs_ascii_next_token(p, &pos, (uint32_t)n - 2, &off[t], &len[t])) {
            t++;
        }
        CHECK(t == 4 || t == 5);
        CHECK(value_number_is(p + off[2], len[2], UINT32_MAX));
        CHECK(value_number_is(p + off[3], len[3], UINT32_MAX));
        CHECK(t == 4 || value_number_is(p + off[4], len[4], UINT64_MAX));
        while (next < nkeys && !(strlen(q->keys[next]) == len[1] && memcmp(q->keys[next], p + off[1], len[1]) == 0)) {
            next++;
        }
        CHECK(next < nkeys);   /* a key not asked, out of order, or once too often */
        next++;
        uint64_t bytes = strtoull(p + off[3], NULL, 10);   /* "-0" reads 0 too */
        if (s->len - s->off < n + bytes + 2) {
            return STEP_MORE;
        }
        CHECK(p[n + bytes] == '\r' && p[n + bytes + 1] == '\n');
        s->off += n + (size_t)bytes + 2;
    }
}

/* STAT lines, then END or an error line. */
static enum step
check_stats(struct stream *s)
{
    for (;;) {
        size_t n;
        if (!next_line(s, &n)) {
            return STEP_MORE;
        }
        const char *p = s->p + s->off;
        s->off += n;
        if (line_is(p, n, "END") || error_line(p, n)) {
            return STEP_OK;
        }
        CHECK(n > 5 && memcmp(p, "STAT ", 5) == 0);
    }
}

/* The rules themselves are the core's (unit-tested against a table in
 * tests/unit/test_meta.c): the checker reuses them rather than a second copy. */
static bool
meta_code_fits(enum mcs_meta_cmd cmd, enum mcs_meta_resp_code code)
{
    return mcs_meta_reply_fits(cmd, code);
}

static bool
meta_quiet_hides(enum mcs_meta_cmd cmd, enum mcs_meta_resp_code code)
{
    return mcs_meta_quiet_suppresses(cmd, code);
}

/* One meta reply whose code fits the command (or an error line); a quiet
 * request's reply may be absent, and never one that q hides. */
static enum step
check_meta(struct stream *s, const struct text_req *q)
{
    struct mcs_meta_resp m;
    enum mcs_resp_status st = mcs_meta_resp_parse(s->p + s->off, s->len - s->off, UINT32_MAX, &m);
    if (st == MCS_RESP_MORE) {
        size_t n;
        /* a quiet request's reply may be missing: the next request's line decides */
        if (!q->quiet || !next_line(s, &n)) {
            return STEP_MORE;
        }
        return STEP_ABSENT;
    }
    bool fits = st == MCS_RESP_OK && (m.error || meta_code_fits(q->meta, m.code));
    if (!fits) {
        CHECK(q->quiet);
        return STEP_ABSENT;
    }
    CHECK(!(q->quiet && meta_quiet_hides(q->meta, m.code)));
    s->off += m.len;
    return STEP_OK;
}

/* One line reply of a single-line command. */
static enum step
check_line(struct stream *s, enum want want)
{
    size_t n;
    if (!next_line(s, &n)) {
        return STEP_MORE;
    }
    const char *p = s->p + s->off;
    bool ok = error_line(p, n);
    switch (want) {
    case WANT_STORE:
        ok = ok || line_is(p, n, "STORED") || line_is(p, n, "NOT_STORED") || line_is(p, n, "EXISTS")
             || line_is(p, n, "NOT_FOUND");
        break;
    case WANT_DELETE:
        ok = ok || line_is(p, n, "DELETED") || line_is(p, n, "NOT_FOUND");
        break;
    case WANT_ARITH:
        ok = ok || line_is(p, n, "NOT_FOUND") || number_is(p, n - 2, UINT64_MAX);
        break;
    case WANT_TOUCH:
        ok = ok || line_is(p, n, "TOUCHED") || line_is(p, n, "NOT_FOUND");
        break;
    case WANT_VERSION:
        ok = ok || (n >= 10 && memcmp(p, "VERSION ", 8) == 0);
        break;
    case WANT_OK:
        ok = ok || line_is(p, n, "OK");
        break;
    case WANT_MN:
        ok = line_is(p, n, "MN");
        break;
    default:
        ok = false;
        break;
    }
    CHECK(ok);
    s->off += n;
    return STEP_OK;
}

/* The text application's stream: batches x the text mix, whole, and nothing
 * more; with `cut`, it may stop inside any reply. */
static void
check_text_stream(const struct app *a, bool cut)
{
    struct stream s = { mcs_buf_head(&a->rx), mcs_buf_len(&a->rx), 0 };
    for (size_t b = 0; b < a->batches; b++) {
        for (size_t i = 0; i < TEXT_MIX_N; i++) {
            const struct text_req *q = &text_mix[i];
            enum step st = STEP_OK;
            if (q->want == WANT_NOTHING) {
                continue;
            }
            if (s.off == s.len) {
                st = STEP_MORE;
            } else if (q->want == WANT_VALUES) {
                st = check_values(&s, q);
            } else if (q->want == WANT_STATS) {
                st = check_stats(&s);
            } else if (q->want == WANT_META) {
                st = check_meta(&s, q);
            } else {
                st = check_line(&s, q->want);
            }
            if (st == STEP_MORE) {
                CHECK(cut);
                return;
            }
        }
    }
    CHECK(s.off == s.len);
}

/* Does a binary status name a status memcached has? */
static bool
bin_status_known(uint16_t status)
{
    return strcmp(mcs_bin_status_name(status), "?") != 0;
}

/* One reply packet of binary request i (batch b), or the stat series. */
static enum step
check_bin_reply(struct stream *s, size_t b, size_t i)
{
    const struct bin_req *q = &bin_mix[i];
    uint32_t opaque = bin_opaque(b, i);
    uint8_t base = mcs_bin_op_base(q->opcode);
    bool quiet = mcs_bin_op_quiet(q->opcode);
    for (;;) {
        struct mcs_bin_resp r;
        const char *p = s->p + s->off;
        enum mcs_resp_status st = mcs_bin_resp_parse(p, s->len - s->off, UINT32_MAX, &r);
        if (st == MCS_RESP_MORE) {
            return STEP_MORE;
        }
        CHECK(st == MCS_RESP_OK);
        if (quiet && r.opaque != opaque) {
            return STEP_ABSENT;
        }
        CHECK(r.opaque == opaque && r.opcode == q->opcode);
        CHECK(bin_status_known(r.status));
        CHECK(!(quiet && mcs_bin_quiet_suppresses(q->opcode, r.status)));
        s->off += r.len;
        bool with_key = base == MCS_BIN_OP_GETK || base == MCS_BIN_OP_GATK;
        if (with_key && r.key_len > 0) {
            /* the key is the one asked (clients map getk answers by key) */
            CHECK(r.key_len == strlen(q->key) && memcmp(p + r.key_off, q->key, r.key_len) == 0);
        }
        if (r.status != 0) {
            /* an error: no extras, a text body; getk/gatk may echo the key */
            CHECK(r.extras_len == 0 && (r.key_len == 0 || with_key));
            return STEP_OK;
        }
        switch (base) {
        case MCS_BIN_OP_GET:
        case MCS_BIN_OP_GAT:
            CHECK(r.extras_len == 4 && r.key_len == 0);
            return STEP_OK;
        case MCS_BIN_OP_GETK:
        case MCS_BIN_OP_GATK:
            CHECK(r.extras_len == 4 && r.key_len > 0);
            return STEP_OK;
        case MCS_BIN_OP_TOUCH:
            CHECK(r.extras_len == 4 && r.key_len == 0 && r.value_len == 0);
            return STEP_OK;
        case MCS_BIN_OP_INCREMENT:
        case MCS_BIN_OP_DECREMENT:
            CHECK(r.extras_len == 0 && r.key_len == 0 && r.value_len == 8);
            return STEP_OK;
        case MCS_BIN_OP_VERSION:
            CHECK(r.extras_len == 0 && r.key_len == 0 && r.value_len > 0);
            return STEP_OK;
        case MCS_BIN_OP_STAT:
            /* one packet per statistic, an empty one last */
            CHECK(r.extras_len == 0);
            if (r.key_len == 0 && r.value_len == 0) {
                return STEP_OK;
            }
            CHECK(r.key_len > 0);
            continue;
        default:
            CHECK(r.extras_len == 0 && r.key_len == 0 && r.value_len == 0);
            return STEP_OK;
        }
    }
}

/* The binary application's stream: batches x the binary mix, as for text. */
static void
check_bin_stream(const struct app *a, bool cut)
{
    struct stream s = { mcs_buf_head(&a->rx), mcs_buf_len(&a->rx), 0 };
    for (size_t b = 0; b < a->batches; b++) {
        for (size_t i = 0; i < BIN_MIX_N; i++) {
            enum step st = s.off == s.len ? STEP_MORE : check_bin_reply(&s, b, i);
            if (st == STEP_MORE) {
                /* a quiet request at the very end may have no reply */
                CHECK(cut || (s.off == s.len && mcs_bin_op_quiet(bin_mix[i].opcode)));
                if (cut) {
                    return;
                }
            }
        }
    }
    CHECK(s.off == s.len);
}

/* ---- one input ----------------------------------------------------------------------------- */

/* Does the engine still owe any reply (to a client, or to itself)? */
static bool
engine_busy(const struct mcs_engine *e)
{
    size_t nb = e->cfg->nservers * MCS_PROTO_COUNT * e->cfg->connections;
    for (size_t i = 0; i < nb; i++) {
        if (e->backends[i].head != NULL) {
            return true;
        }
    }
    for (const struct mcs_client *c = e->clients; c != NULL; c = c->next) {
        if (c->s.head != NULL) {
            return true;
        }
    }
    return false;
}

/* Action 7: the mix again, EOF, or close, for the application op names. */
static void
app_action(struct world *w, uint8_t op)
{
    struct app *a = &w->apps[(op >> 2) & 1];
    switch ((op >> 3) & 3) {
    case 1:
        if (a->fd >= 0 && !a->eof_sent) {
            shutdown(a->fd, SHUT_WR);
            a->eof_sent = true;
        }
        break;
    case 2:
        if (a->fd >= 0) {
            read_app(w, (size_t)(a - w->apps));   /* what is there already counts */
            close(a->fd);
            a->fd = -1;
            a->closed = true;
        }
        break;
    default:
        apps_send_batch(w);
        break;
    }
}

/* One record: an action on a server connection, the clock or an application. */
static void
record(struct world *w, uint8_t op, const uint8_t *p, size_t len)
{
    uint32_t s = (uint32_t)(op & 3) % NSERVERS;
    int proto = (op >> 2) & 1 ? MCS_PROTO_BINARY : MCS_PROTO_TEXT;
    unsigned act = op >> 5;
    if (act == 7) {
        app_action(w, op);
        service(w);
        return;
    }
    struct server_conn *sc = conn_of(w, s, proto);
    if (sc != NULL && len > 0) {
        send_all(sc->fd, (const char *)p, len);
    }
    if (act == 4 && sc != NULL) {
        if (op & 8) {
            conn_close(w, sc);
        } else {
            shutdown(sc->fd, SHUT_WR);
        }
    } else if (act == 5) {
        w->e.m.now_ms += w->e.cfg->timeout_ms + 1;
    } else if (act == 6) {
        w->e.m.now_ms += w->e.cfg->retry_ms + ((op & 8) ? w->e.cfg->warmup_s * 1000ull : 0);
    }
    service(w);
}

/* Trace: who still owes what (a hang's diagnosis). */
static void
trace_engine(const struct mcs_engine *e)
{
    if (!trace) {
        return;
    }
    size_t nb = e->cfg->nservers * MCS_PROTO_COUNT * e->cfg->connections;
    fprintf(stderr, "engine: held %zu out %zu queued %zu stalled %u\n", e->m.reply_held, e->m.reply_out,
            e->backend_queued, e->stalled);
    for (size_t i = 0; i < nb; i++) {
        const struct mcs_backend *b = &e->backends[i];
        fprintf(stderr, "backend %zu: server %u %s state %d fd %d stalled %d health %s timer %s%" PRIu64
                " (now %" PRIu64 ")\n", i, b->server, b->proto == MCS_PROTO_BINARY ? "binary" : "text",
                (int)b->state, b->fd, b->stalled, mcs_health_name(e->m.router.servers[b->server].health),
                b->timer.pos != 0 ? "at " : "none ", b->timer.pos != 0 ? b->timer.key : 0, e->m.now_ms);
        for (const struct mcs_sub *sub = b->head; sub != NULL; sub = sub->next) {
            const struct mcs_request *r = sub->req;
            fprintf(stderr, "  sub of request %p kind %d cmd %s client %p (its head: %d) pending %u failed %d\n",
                    (const void *)r, (int)r->kind, mcs_cmd_name(r->cmd), (const void *)r->session,
                    r->session != NULL && r->session->head == r, r->pending, sub->failed);
        }
    }
    for (const struct mcs_client *c = e->clients; c != NULL; c = c->next) {
        fprintf(stderr, "client %p: %s closing %d paused %d out %zu held %zu\n", (const void *)c,
                c->s.proto == MCS_PROTO_BINARY ? "binary" : "text", c->s.closing, c->paused, mcs_buf_len(&c->s.out),
                c->s.held);
        for (const struct mcs_request *r = c->s.head; r != NULL; r = r->next) {
            fprintf(stderr, "  request %p cmd %s pending %u done %d merge %d merge_next %u/%u\n", (const void *)r,
                    mcs_cmd_name(r->cmd), r->pending, r->done, r->merge, r->merge_next, r->nkeys);
        }
    }
}

/* Does any application still wait for a reply? */
static bool
clients_wait(const struct mcs_engine *e)
{
    for (const struct mcs_client *c = e->clients; c != NULL; c = c->next) {
        if (c->s.head != NULL) {
            return true;
        }
    }
    return false;
}

/* The end of an input. First the servers go silent: the clock passes every
 * deadline, round after round (failover re-sends time out in their turn),
 * and every application request must be answered (a request left waiting on
 * a stalled connection would wait for ever: stalled connections have no
 * deadline). Then every server connection is ended until the engine owes
 * nothing (its own probes and copies), the applications' ends are shut down,
 * and the engine must close them. */
static void
finish(struct world *w)
{
    for (int round = 0; round < FINAL_ROUNDS && clients_wait(&w->e); round++) {
        w->e.m.now_ms += w->e.cfg->timeout_ms + 1;
        service(w);
    }
    if (clients_wait(&w->e)) {
        trace_engine(&w->e);
        CHECK(false);   /* an application would wait for ever */
    }
    for (int round = 0; round < FINAL_ROUNDS && engine_busy(&w->e); round++) {
        for (size_t i = 0; i < w->nconns; i++) {
            if (w->conns[i].fd >= 0) {
                shutdown(w->conns[i].fd, SHUT_WR);
            }
        }
        service(w);
    }
    if (engine_busy(&w->e)) {
        trace_engine(&w->e);
        CHECK(false);   /* the engine's own request would wait for ever */
    }
    for (int i = 0; i < 2; i++) {
        struct app *a = &w->apps[i];
        if (a->fd >= 0 && !a->eof_sent) {
            shutdown(a->fd, SHUT_WR);
            a->eof_sent = true;
        }
    }
    service(w);
    for (int i = 0; i < 2; i++) {
        CHECK(w->apps[i].fd < 0 || w->apps[i].ended);   /* EOF answered, then closed */
    }
    CHECK(w->e.clients == NULL && w->e.m.stats.curr_connections == 0);
    CHECK(w->e.m.reply_held == 0 && w->e.m.reply_out == 0);
    CHECK(w->e.backend_queued == 0 && w->e.stalled == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup_once();
    static struct world w;
    uint8_t mode = size > 0 ? data[0] : 0;
    memset(&w, 0, sizeof(w));
    w.v = &variants[mode % NVARIANTS];
    engine_init(&w.e, &configs[mode % NVARIANTS], (mode & 4) != 0);
    app_open(&w, 0);
    app_open(&w, 1);
    apps_send_batch(&w);
    service(&w);
    size_t off = 1;
    while (off < size) {
        uint8_t op = data[off++];
        size_t len = off < size ? data[off++] : 0;
        if (len > size - off) {
            len = size - off;
        }
        record(&w, op, data + off, len);
        off += len;
        if (trace) {
            fprintf(stderr, "after record %#x (%zu bytes): %u stalled, %zu held\n", op, len, w.e.stalled,
                    w.e.m.reply_held);
        }
    }
    finish(&w);
    for (int i = 0; i < 2; i++) {
        struct app *a = &w.apps[i];
        trace_bytes(a->binary ? "binary application got" : "text application got", mcs_buf_head(&a->rx),
                    mcs_buf_len(&a->rx));
        if (a->binary) {
            check_bin_stream(a, a->closed);
        } else {
            check_text_stream(a, a->closed);
        }
        if (a->fd >= 0) {
            close(a->fd);
        }
        mcs_buf_free(&a->rx);
    }
    for (size_t i = 0; i < w.nconns; i++) {
        conn_close(&w, &w.conns[i]);
    }
    engine_free(&w.e);
    return 0;
}
