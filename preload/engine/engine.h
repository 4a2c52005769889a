/*
 * preload/engine/engine.h: the engine as the interposer sees it.
 *
 * One engine per process, started lazily by the first intercepted connect,
 * runs one thread with every signal blocked. The interposer hands it the
 * engine end of each socketpair; from then on the engine owns that fd and
 * closes it when the application's end is closed (EOF) or on a fatal error.
 * All functions here are thread-safe and never block for long.
 */
#ifndef MCS_ENGINE_H
#define MCS_ENGINE_H

#include "preload/core/config.h"

/* Starts the engine if it is not running. Returns 0, or -1 (errno kept by the
 * caller) if it cannot be started; the caller then passes the connect through. */
int mcs_engine_ensure(const struct mcs_config *cfg);

/* Gives the engine a new client connection (the engine end of a socketpair,
 * non-blocking, close-on-exec, already marked internal). Returns 0 or -1 (the
 * caller still owns fd then). */
int mcs_engine_attach(int fd);

/* pthread_atfork handlers. In the child the parent's engine is forgotten (its
 * thread does not exist there) and its descriptors are closed; a new engine
 * starts on demand. */
void mcs_engine_atfork_prepare(void);
void mcs_engine_atfork_parent(void);
void mcs_engine_atfork_child(void);

#endif
