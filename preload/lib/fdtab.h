/*
 * preload/lib/fdtab.h: what the shim knows about each descriptor number.
 *
 * A value per fd: 0 = nothing (the host's own descriptor), odd = one of the
 * library's descriptors (engine, backend sockets, engine ends of
 * socketpairs), anything else = a pointer to the interposer's record of an
 * intercepted connection. Reads are lock-free atomic loads (every close() of
 * the host looks here); writes take one mutex. Descriptors above
 * MCS_FDTAB_MAX are never tracked (the shim then passes them through).
 *
 * The host may close a library descriptor behind the shim's back (a raw
 * close/close_range syscall, glibc's fclose) and get the number back for a
 * file of its own. An internal entry therefore records which file it was and
 * which engine owns it, and nothing acts on the number unless the descriptor
 * is still that file (mcs_fdtab_internal_valid, mcs_fdtab_release).
 */
#ifndef MCS_FDTAB_H
#define MCS_FDTAB_H

#include <stdbool.h>
#include <stdint.h>

/* Internal entries (64-bit):
 *   bit 0       1: internal
 *   bits 1-32   the low 32 bits of the file's inode number (sockets and pipes
 *               get a unique one while they exist)
 *   bit 33      shared inode: every epoll and eventfd descriptor has the same
 *               anonymous inode, so the inode proves nothing and the owner
 *               must vouch for the descriptor (mcs_fdtab_set_prover)
 *   bits 34-63  the owner: generation of the engine the descriptor belongs to */
#define MCS_FD_INTERNAL_BIT ((uintptr_t)1)
#define MCS_FD_SHARED_BIT   ((uintptr_t)1 << 33)
#define MCS_FD_OWNER_SHIFT  34
#define MCS_FD_OWNER_MASK   ((uint32_t)0x3fffffff)
#define MCS_FDTAB_CHUNK 1024
#define MCS_FDTAB_MAX   (MCS_FDTAB_CHUNK * 1024)

uintptr_t mcs_fdtab_get(int fd);

/* Stores v for fd and returns the previous value. Returns v itself (and stores
 * nothing) if fd is out of range or memory is short. */
uintptr_t mcs_fdtab_swap(int fd, uintptr_t v);

/* Stores v for fd only if the entry is still `expected`. True if it was. */
bool mcs_fdtab_cas(int fd, uintptr_t expected, uintptr_t v);

void mcs_fdtab_lock(void);
void mcs_fdtab_unlock(void);
/* In a fork child: the lock may have been held by a thread that no longer exists. */
void mcs_fdtab_child_reinit(void);

/* The owner recorded by mcs_fdtab_mark_internal on the calling thread (an
 * engine thread sets its generation once; 0 elsewhere). */
void mcs_fdtab_set_thread_owner(uint32_t owner);
uint32_t mcs_fdtab_thread_owner(void);

/* Marks fd as the library's own, owned by the calling thread's owner (records
 * its inode). For descriptors with a unique inode (sockets, pipes). */
void mcs_fdtab_mark_internal(int fd);

/* Marks fd as owned by `owner`; shared: the inode is not unique (epoll). */
void mcs_fdtab_mark_owned(int fd, uint32_t owner, bool shared);

/* The owner of an internal entry (0 if v is not one). */
uint32_t mcs_fdtab_owner(uintptr_t v);

/* True if v (the entry of fd) says internal and fd is still that descriptor:
 * the same inode and, for a shared inode, the owner vouches for it. */
int mcs_fdtab_internal_valid(int fd, uintptr_t v);

/* The function that vouches for shared-inode descriptors: returns nonzero if
 * fd is still the descriptor `owner` marked. It must be callable from any
 * thread, lock-free, and from a fork child. */
void mcs_fdtab_set_prover(int (*prover)(int fd, uint32_t owner));

/* Lets go of one of owner's descriptors: if fd's entry is owner's and fd is
 * still that file, clears the entry and closes fd (returns true); a stale
 * entry of owner's is cleared and nothing is closed (false); an entry of
 * anyone else is left alone. proven: the caller has checked a shared-inode
 * descriptor itself. Numbers beyond MCS_FDTAB_MAX (never tracked) are closed.
 * errno is preserved. */
bool mcs_fdtab_release(int fd, uint32_t owner, bool proven);

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
