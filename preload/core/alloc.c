/*
 * preload/core/alloc.c: the allocation seam (see alloc.h).
 */
#include "preload/core/alloc.h"

#include <stdatomic.h>
#include <stdlib.h>

static _Atomic uint64_t attempts;   /* allocations attempted since load */
static _Atomic uint64_t fail_at;    /* attempt number that fails; 0: none */
static _Atomic uint64_t failed;

/* True if this attempt is the one asked to fail. */
static int
injected(void)
{
    uint64_t n = atomic_fetch_add_explicit(&attempts, 1, memory_order_relaxed) + 1;
    uint64_t want = atomic_load_explicit(&fail_at, memory_order_relaxed);
    if (want != 0 && n == want) {
        atomic_fetch_add_explicit(&failed, 1, memory_order_relaxed);
        return 1;
    }
    return 0;
}

void *
mcs_malloc(size_t n)
{
    return injected() ? NULL : malloc(n ? n : 1);
}

void *
mcs_calloc(size_t count, size_t size)
{
    return injected() ? NULL : calloc(count ? count : 1, size ? size : 1);
}

void *
mcs_realloc(void *p, size_t n)
{
    return injected() ? NULL : realloc(p, n ? n : 1);
}

void
mcs_free(void *p)
{
    free(p);
}

void
mcs_alloc_fail_at(uint64_t n)
{
    atomic_store(&fail_at, n == 0 ? 0 : atomic_load(&attempts) + n);
}

uint64_t
mcs_alloc_count(void)
{
    return atomic_load(&attempts);
}

uint64_t
mcs_alloc_failed(void)
{
    return atomic_load(&failed);
}
