/*
 * preload/lib/testhooks.c: fault injection for the tests, off unless asked.
 *
 * MCSHIM_TEST_ALLOC_FAIL=N makes the library's N-th allocation since load fail
 * (core/alloc.h), so a test can sweep N over every allocation of a scenario
 * and watch each failure branch run. At exit the library then writes one line
 * to stderr, "mcshim: test: A allocations, F failed as asked", which tells the
 * sweep when N has passed the last allocation. Not a setting: without the
 * variable nothing here runs.
 */
#include <stdio.h>
#include <stdlib.h>

#include "preload/core/alloc.h"
#include "preload/lib/log.h"

static int armed;

__attribute__((constructor)) static void
testhooks_init(void)
{
    const char *s = getenv("MCSHIM_TEST_ALLOC_FAIL");
    if (s == NULL || *s == '\0') {
        return;
    }
    char *end;
    unsigned long long n = strtoull(s, &end, 10);
    if (*end != '\0' || n == 0) {
        mcs_log_raw("mcshim: MCSHIM_TEST_ALLOC_FAIL must be a positive count; ignored");
        return;
    }
    armed = 1;
    mcs_alloc_fail_at((uint64_t)n - mcs_alloc_count());
}

__attribute__((destructor)) static void
testhooks_report(void)
{
    if (!armed) {
        return;
    }
    char line[128];
    snprintf(line, sizeof(line), "mcshim: test: %llu allocations, %llu failed as asked",
             (unsigned long long)mcs_alloc_count(), (unsigned long long)mcs_alloc_failed());
    mcs_log_raw(line);
}
