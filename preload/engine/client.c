/*
 * preload/engine/client.c: application connections inside the engine.
 *
 * Reads the engine end of a socketpair and hands the bytes to the request
 * machine (mcs_session_step: parsing, routing, replies in request order:
 * preload/core/session.c), and writes the session's replies back. Flow
 * control: reading pauses while a session has too many requests in flight or
 * too many unsent reply bytes, or the servers' queues are full.
 */
#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "preload/core/alloc.h"
#include "preload/engine/engine.h"
#include "preload/engine/internal.h"
#include "preload/lib/log.h"

static void client_process(struct mcs_engine *e, struct mcs_client *c);
static void client_close(struct mcs_engine *e, struct mcs_client *c);

/* Once closing (or paused), input is no longer read; keep only write interest. */
static void
client_stop_reading(struct mcs_engine *e, struct mcs_client *c)
{
    mcs_engine_epoll(e, EPOLL_CTL_MOD, c->fd, c->want_write ? EPOLLOUT : 0, (uintptr_t)c);
}

/* Flow control: may this client's input be read and dispatched now? Bounds its
 * requests in flight, its unsent replies, and (for every client together, since
 * noreply requests leave no trace in a pipeline) the bytes queued to servers. */
static bool
client_may_read(const struct mcs_engine *e, const struct mcs_client *c, bool resuming)
{
    uint32_t div = resuming ? 2 : 1;   /* resume only well below the limits */
    return c->s.inflight < MCS_SESSION_MAX_PIPELINE / div && mcs_buf_len(&c->s.out) < MCS_SESSION_MAX_OUT / div
           && e->backend_queued < MCS_ENGINE_MAX_QUEUED / div;
}

void
mcs_client_ready(struct mcs_engine *e, struct mcs_client *c)
{
    if (!c->dirty) {
        c->dirty = true;
        c->next_dirty = e->dirty_clients;
        e->dirty_clients = c;
    }
}

void
mcs_client_attach(struct mcs_engine *e, int fd, struct mcs_fast *fast)
{
    struct mcs_client *c = mcs_calloc(1, sizeof(*c));
    if (c == NULL) {
        mcs_log(MCS_LOG_ERROR, "out of memory: dropping an application connection");
        mcs_engine_close_fd(fd);
        mcs_fast_unref(fast);
        return;
    }
    c->fd = fd;
    if (mcs_engine_epoll(e, EPOLL_CTL_ADD, fd, EPOLLIN, (uintptr_t)c) != 0) {
        mcs_log(MCS_LOG_ERROR, "epoll_ctl failed for an application connection: %s", strerror(errno));
        mcs_engine_close_fd(fd);
        mcs_free(c);
        mcs_fast_unref(fast);
        return;
    }
    struct stat st;
    if (fast != NULL && fstat(fd, &st) == 0) {
        c->dev = st.st_dev;
        c->ino = st.st_ino;
        mcs_fast_bind(fast, c);
    } else {
        mcs_fast_unref(fast);
    }
    c->next = e->clients;
    if (e->clients) {
        e->clients->prev = c;
    }
    e->clients = c;
    mcs_session_init(&e->m, &c->s);
}

static void
client_process(struct mcs_engine *e, struct mcs_client *c)
{
    while (!c->s.closing && client_may_read(e, c, false)) {
        size_t len = mcs_buf_len(&c->in);
        size_t used = len == 0 ? 0 : mcs_session_step(&e->m, &c->s, mcs_buf_head(&c->in), len);
        if (used == 0) {
            break;
        }
        mcs_buf_consume(&c->in, used);
    }
    if (!client_may_read(e, c, false) && !c->paused && !c->s.closing) {
        c->paused = true;
        /* Whoever pauses while the server queues are past half full waits for them to drain. */
        e->backend_blocked = e->backend_blocked || e->backend_queued >= MCS_ENGINE_MAX_QUEUED / 2;
        client_stop_reading(e, c);
    }
    if (c->s.closing) {
        client_stop_reading(e, c);
        mcs_client_ready(e, c);
    }
}

/* Returns false if the client was closed (and may be freed). */
static bool
client_read(struct mcs_engine *e, struct mcs_client *c)
{
    for (int round = 0; round < 4 && !c->s.closing && !c->paused; round++) {
        if (mcs_buf_reserve(&c->in, MCS_CLIENT_READ_CHUNK) != 0) {
            client_close(e, c);
            return false;
        }
        ssize_t n = recv(c->fd, c->in.data + c->in.end, c->in.cap - c->in.end, MSG_DONTWAIT);
        if (n > 0) {
            c->in.end += (size_t)n;
            if (c->fast != NULL) {
                mcs_fast_engine_read(c->fast, (size_t)n);
            }
            client_process(e, c);
            if ((size_t)n < MCS_CLIENT_READ_CHUNK) {
                break;
            }
        } else if (n == 0) {
            /* The application closed (or shut down) its end: answer what was asked, then
             * close. Stop watching for input, which would now be ready for ever. */
            c->s.closing = true;
            client_stop_reading(e, c);
            mcs_client_ready(e, c);
            break;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;
        } else {
            client_close(e, c);
            return false;
        }
    }
    if (mcs_buf_len(&c->in) == 0) {
        mcs_buf_shrink(&c->in, 4 * MCS_CLIENT_READ_CHUNK);
    }
    return true;
}

static void
client_close(struct mcs_engine *e, struct mcs_client *c)
{
    if (c->fast != NULL) {
        mcs_fast_unbind(c->fast);
        c->fast = NULL;
    }
    mcs_session_close(&e->m, &c->s);
    mcs_engine_epoll(e, EPOLL_CTL_DEL, c->fd, 0, 0);
    mcs_engine_close_fd(c->fd);
    c->fd = -1;
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        e->clients = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    mcs_buf_free(&c->in);
    if (c->dirty || c->fast_busy) {
        /* Still on the dirty list: mcs_client_flush frees it when it gets there;
         * or a fast-path write holds it: the write frees it when it ends. */
        return;
    }
    mcs_free(c);
}

/* Called only by the engine's dirty walk, after c was taken off the list. */
void
mcs_client_flush(struct mcs_engine *e, struct mcs_client *c)
{
    c->dirty = false;
    if (c->fd < 0) {
        if (!c->fast_busy) {
            mcs_free(c);   /* (else the fast-path write holding it does) */
        }
        return;
    }
    while (mcs_buf_len(&c->s.out) > 0) {
        ssize_t n = send(c->fd, mcs_buf_head(&c->s.out), mcs_buf_len(&c->s.out), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            mcs_session_wrote(&e->m, &c->s, (size_t)n);
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            client_close(e, c);
            return;
        }
    }
    bool pending_out = mcs_buf_len(&c->s.out) > 0;
    if (!pending_out) {
        mcs_buf_shrink(&c->s.out, 4 * MCS_CLIENT_READ_CHUNK);
    }
    if (c->s.closing && !pending_out && c->s.head == NULL) {
        client_close(e, c);
        return;
    }
    bool resume = c->paused && client_may_read(e, c, true);
    if (c->paused && !resume && e->backend_queued >= MCS_ENGINE_MAX_QUEUED / 2) {
        e->backend_blocked = true;
    }
    if (resume) {
        c->paused = false;
    }
    if (resume || pending_out != c->want_write) {
        c->want_write = pending_out;
        uint32_t ev = (c->paused || c->s.closing ? 0 : EPOLLIN) | (pending_out ? EPOLLOUT : 0);
        mcs_engine_epoll(e, EPOLL_CTL_MOD, c->fd, ev, (uintptr_t)c);
    }
    if (resume) {
        client_process(e, c);
    }
}

/* The server queues drained: let every paused client be reconsidered. */
void
mcs_client_wake_paused(struct mcs_engine *e)
{
    e->backend_blocked = false;
    for (struct mcs_client *c = e->clients; c != NULL; c = c->next) {
        if (c->paused) {
            mcs_client_ready(e, c);
        }
    }
}

void
mcs_client_event(struct mcs_engine *e, struct mcs_client *c, uint32_t events)
{
    if (events & EPOLLOUT) {
        mcs_client_ready(e, c);
    }
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !client_read(e, c)) {
        return;
    }
    if (events & (EPOLLHUP | EPOLLERR)) {
        /* Nobody can read replies any more (and the event would repeat for ever):
         * requests already sent still reach their servers; their replies are dropped. */
        client_close(e, c);
    }
}
