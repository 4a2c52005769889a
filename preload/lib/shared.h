/*
 * preload/lib/shared.h: opening, checking and mapping the host-wide state
 * segment (its contents: preload/core/hostseg.h).
 *
 * The file (MCSHIM_SHARED; default /dev/shm/mcshim-<uid>.seg) is created by the
 * first process, complete: written under a temporary name, fully allocated (a
 * page of tmpfs that cannot be allocated later would be SIGBUS in the host),
 * then linked into place, so no process ever maps a half-made segment. It is
 * opened with O_NOFOLLOW | O_CLOEXEC and used only if it is a regular file of
 * the right size, owned by this user with mode 0600 (or, with
 * MCSHIM_SHARED_MODE=0660, mode 0660 and a group of this process). A segment
 * whose header does not check (another version, corrupt, marked broken) is
 * replaced by a fresh one, renamed over it; processes still using the old one
 * notice at their next check and stop using it.
 *
 * The descriptor is closed once mapped. Also used by the `mcshim stats` tool
 * (read-only, never creating).
 */
#ifndef MCS_SHARED_H
#define MCS_SHARED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "preload/core/hostseg.h"

struct mcs_shared {
    struct mcs_seg *seg;        /* NULL: not attached */
    dev_t    dev;               /* the file it was mapped from */
    ino_t    ino;
    char     path[4096];
};

/* The default path for this user: /dev/shm/mcshim-<uid>.seg. */
void mcs_shared_default_path(char *out, size_t cap);

/* Maps the segment at path. write: read-write, creating or rebuilding it if
 * needed (mode 0600 or 0660); else read-only, never changing the file.
 * Returns 0, or -1 with a one-line reason in err. */
int mcs_shared_map(struct mcs_shared *sh, const char *path, unsigned mode, bool write, char *err, size_t errlen);

/* Unmaps. */
void mcs_shared_unmap(struct mcs_shared *sh);

/* Is the file at sh->path still the one mapped (not replaced or removed)? */
bool mcs_shared_current(const struct mcs_shared *sh);

/* This boot's id (/proc/sys/kernel/random/boot_id as 16 bytes; zeros if unknown). */
void mcs_shared_boot_id(uint8_t out[16]);

/* Process start time in clock ticks since boot (field 22 of /proc/<pid>/stat),
 * 0 if unknown: with the pid, it names one process for the whole boot. */
uint64_t mcs_shared_proc_ticket(long pid);

/* Monotonic clock, ms. */
uint64_t mcs_shared_now_ms(void);

#endif
