/*
 * preload/engine/poll.c: the few system calls every part of the engine makes:
 * its clock, its epoll registrations, and closing a descriptor it owns. Kept
 * apart so that client.c and backend.c depend on this file only, and engine.c
 * (the loop) on them: no dependency circle.
 */
#include <string.h>
#include <sys/epoll.h>

#include "preload/engine/internal.h"
#include "preload/lib/fdtab.h"
#include "preload/lib/shared.h"

/* The host-wide segment's clock (its times are compared across processes). */
uint64_t
mcs_engine_clock_ms(void)
{
    return mcs_shared_now_ms();
}

int
mcs_engine_epoll(struct mcs_engine *e, int op, int fd, uint32_t events, uintptr_t tag)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = events;
    ev.data.u64 = tag;
    return epoll_ctl(e->epfd, op, fd, &ev);
}

/* Engine thread only: the descriptor is closed if it is still the engine's own. */
void
mcs_engine_close_fd(int fd)
{
    mcs_fdtab_release(fd, mcs_fdtab_thread_owner(), false);
}
