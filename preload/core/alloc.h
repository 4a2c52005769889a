/*
 * preload/core/alloc.h: the one place the library allocates.
 *
 * Every allocation of the library (core, engine and interposer) goes through
 * these, so that a test can make any single one of them fail and watch the
 * failure branch run: mcs_alloc_fail_at(n) makes the n-th allocation counted
 * from the call fail (returns NULL), once. Tests sweep n over every allocation
 * a scenario makes (tests/unit/test_alloc.c for the core; MCSHIM_TEST_ALLOC_FAIL
 * for the whole library, docs/configuration.md "Testing"). The counter and the
 * switch are the core's only mutable state: atomics, so any thread may allocate.
 * mcs_free(NULL) does nothing; sizes of zero allocate one byte (never NULL on
 * success).
 */
#ifndef MCS_ALLOC_H
#define MCS_ALLOC_H

#include <stddef.h>
#include <stdint.h>

void *mcs_malloc(size_t n);
void *mcs_calloc(size_t count, size_t size);
void *mcs_realloc(void *p, size_t n);
void mcs_free(void *p);

/* The n-th allocation from now fails, once (n = 0: none). */
void mcs_alloc_fail_at(uint64_t n);
/* Allocations attempted so far (successful or not), and how many were made to fail. */
uint64_t mcs_alloc_count(void);
uint64_t mcs_alloc_failed(void);

#endif
