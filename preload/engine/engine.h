/*
 * preload/engine/engine.h: the engine as the interposer sees it.
 *
 * One engine per process, started lazily by the first intercepted connect,
 * runs one thread with every signal blocked. The interposer hands it the
 * engine end of each socketpair; from then on the engine owns that fd and
 * closes it when the application's end is closed (EOF) or on a fatal error.
 *
 * The engine owns its descriptors: if the host closes them behind its back
 * (raw close/close_range syscalls), the engine notices (its wake-up socket is
 * checked before every use and on every loop, its epoll set every second),
 * stops without touching any number that is no longer its own, closes what is
 * still its own (the connections it served see EOF), and the next attach
 * starts a new engine. All functions here are thread-safe and never block for
 * long.
 */
#ifndef MCS_ENGINE_H
#define MCS_ENGINE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "preload/core/config.h"

/* The fast path's handle on one intercepted connection (fast.c). */
struct mcs_fast;

/* Starts the engine if it is not running. Returns 0, or -1 with errno set to
 * the cause (EAGAIN: no thread; EMFILE/ENFILE: no descriptor; ENOMEM) after
 * one log line; the caller then fails the connect with that errno. */
int mcs_engine_ensure(const struct mcs_config *cfg);

/* Gives the engine a new client connection: fd is the engine end of a
 * socketpair (non-blocking, close-on-exec), not yet marked. Starts the engine
 * if needed, and replaces one whose descriptors were closed behind its back.
 * Returns 0 (the engine owns fd and has marked it; *fast is the connection's
 * fast-path handle, with one reference for the caller, or NULL when the fast
 * path is off), or -1 with errno set (EAGAIN, EMFILE, ENFILE, ENOMEM) after
 * one log line (the caller still owns fd; nothing was written anywhere). */
int mcs_engine_attach(const struct mcs_config *cfg, int fd, struct mcs_fast **fast);

/* ---- the fast path (fast.c; docs/fastpath.md) ----
 * Handles are never returned to the allocator (a free list recycles them), so
 * a pointer read without a lock may be stale but never dangling: take a
 * reference (mcs_fast_ref fails on a free handle), then check the handle is
 * still the one the descriptor names before using it. */
bool mcs_fast_ref(struct mcs_fast *h);
void mcs_fast_unref(struct mcs_fast *h);
/* A write of iov (iovcnt entries) on a blocking descriptor served by h: the
 * calling thread parses the requests, does their round trips and puts the
 * replies on the socketpair, then returns true with *result the bytes taken.
 * False: not taken (the connection is busy, the engine is behind, the bytes are
 * no whole request...); the caller writes them to the socketpair (see
 * mcs_fast_unread). errno is kept. */
bool mcs_fast_write(struct mcs_fast *h, const struct iovec *iov, int iovcnt, ssize_t *result);
/* Bytes the application is writing to h's socketpair (the engine path): add
 * before the write, take back what it did not write after (n < 0). */
void mcs_fast_unread(struct mcs_fast *h, int64_t n);
/* The application set (or cleared) SO_RCVTIMEO or SO_SNDTIMEO (which) on h's
 * connection: while either is set its writes stay on the engine path, so its own
 * timeouts keep bounding its waits. */
void mcs_fast_app_timeout(struct mcs_fast *h, int which, bool set);
/* The connection's descriptor may block (O_NONBLOCK clear): as last seen,
 * read again with fcntl(F_GETFL) when that is older than a few milliseconds. */
bool mcs_fast_blocking(struct mcs_fast *h, int fd);
/* The application set or cleared O_NONBLOCK (fcntl F_SETFL, ioctl FIONBIO). */
void mcs_fast_set_nonblock(struct mcs_fast *h, bool nonblock);
/* A write on h's connection goes to the engine thread (counted). */
void mcs_fast_declined(struct mcs_fast *h);
/* Fork child: the free list's lock may have been held by a thread that is gone. */
void mcs_fast_atfork_child(void);

/* pthread_atfork handlers (called with the fd table locked: lock order is
 * fd table, then engine start, then engine). In the child the parent's engine
 * is forgotten (its thread does not exist there) and its descriptors are
 * closed; a new engine starts on demand. */
void mcs_engine_atfork_prepare(void);
void mcs_engine_atfork_parent(void);
void mcs_engine_atfork_child(void);

#endif
