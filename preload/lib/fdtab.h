/*
 * preload/lib/fdtab.h: what the shim knows about each descriptor number.
 *
 * A value per fd: 0 = nothing (the host's own descriptor), odd = one of the
 * library's descriptors (engine, backend sockets, engine ends of
 * socketpairs), anything else = a pointer to the interposer's record of an
 * intercepted connection. Reads are lock-free atomic loads (every close() of
 * the host looks here); writes take one mutex. Descriptors above
 * MCS_FDTAB_MAX are never tracked (the shim then passes them through).
 */
#ifndef MCS_FDTAB_H
#define MCS_FDTAB_H

#include <stdint.h>

/* Internal entries are odd: (inode << 1) | 1, so a stale one (the host closed
 * our descriptor behind our back and reused the number) can be recognised. */
#define MCS_FD_INTERNAL_BIT ((uintptr_t)1)
#define MCS_FDTAB_CHUNK 1024
#define MCS_FDTAB_MAX   (MCS_FDTAB_CHUNK * 1024)

uintptr_t mcs_fdtab_get(int fd);

/* Stores v for fd and returns the previous value. Returns v itself (and stores
 * nothing) if fd is out of range or memory is short. */
uintptr_t mcs_fdtab_swap(int fd, uintptr_t v);

void mcs_fdtab_lock(void);
void mcs_fdtab_unlock(void);
/* In a fork child: the lock may have been held by a thread that no longer exists. */
void mcs_fdtab_child_reinit(void);

/* Marks fd as the library's own (records its inode). */
void mcs_fdtab_mark_internal(int fd);

/* True if v (the entry of fd) says internal and fd is still that descriptor. */
int mcs_fdtab_internal_valid(int fd, uintptr_t v);

/* Calls fn(fd, value, arg) for every tracked fd (caller holds the lock or is single-threaded). */
void mcs_fdtab_foreach(void (*fn)(int fd, uintptr_t v, void *arg), void *arg);

#endif

#ifndef MCS_FDTAB_MOVE_HIGH
#define MCS_FDTAB_MOVE_HIGH
/* Moves a new library descriptor to a high number (close-on-exec), so the
 * host's low numbers (and select()'s 0..1023) stay free. Returns the new fd, or
 * fd itself if it could not be moved. */
int mcs_fd_move_high(int fd);
#endif
