/*
 * tests/unit/test_heap.c: the timer heap (preload/core/heap.h): order,
 * FIFO among equal keys, moves and removals checked against a plain scan,
 * and a full heap refusing a new node.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "preload/core/heap.h"
#include "tests/unit/unit.h"

#define N 64

/* The node a plain scan says comes first among those in the heap. */
static struct mcs_heap_node *
scan_min(struct mcs_heap_node *nodes, size_t n)
{
    struct mcs_heap_node *best = NULL;
    for (size_t i = 0; i < n; i++) {
        struct mcs_heap_node *x = &nodes[i];
        if (x->pos != 0 && (best == NULL || x->key < best->key || (x->key == best->key && x->seq < best->seq))) {
            best = x;
        }
    }
    return best;
}

static void
test_random_against_scan(void **state)
{
    (void)state;
    struct mcs_heap h;
    struct mcs_heap_node nodes[N] = { 0 };
    assert_int_equal(mcs_heap_init(&h, N), 0);
    srand(7);
    for (int step = 0; step < 20000; step++) {
        struct mcs_heap_node *n = &nodes[rand() % N];
        switch (rand() % 4) {
        case 0:
        case 1:
            assert_true(mcs_heap_set(&h, n, (uint64_t)(rand() % 50)));   /* few keys: many ties */
            break;
        case 2:
            mcs_heap_remove(&h, n);
            assert_int_equal(n->pos, 0);
            break;
        default: {
            struct mcs_heap_node *top = mcs_heap_top(&h);
            assert_ptr_equal(top, scan_min(nodes, N));
            if (top != NULL) {
                mcs_heap_remove(&h, top);
            }
            break;
        }
        }
        assert_ptr_equal(mcs_heap_top(&h), scan_min(nodes, N));
    }
    mcs_heap_free(&h);
}

static void
test_ties_fifo_and_full(void **state)
{
    (void)state;
    struct mcs_heap h;
    struct mcs_heap_node a = { 0 }, b = { 0 }, c = { 0 }, d = { 0 };
    assert_int_equal(mcs_heap_init(&h, 3), 0);
    assert_true(mcs_heap_set(&h, &b, 10));
    assert_true(mcs_heap_set(&h, &a, 10));
    assert_true(mcs_heap_set(&h, &c, 5));
    assert_false(mcs_heap_set(&h, &d, 1));   /* full: d is not in it */
    assert_int_equal(d.pos, 0);
    assert_true(mcs_heap_set(&h, &c, 5));    /* unchanged key: no move, no room needed */
    assert_ptr_equal(mcs_heap_top(&h), &c);
    mcs_heap_remove(&h, &c);
    assert_ptr_equal(mcs_heap_top(&h), &b);  /* b was set first among the 10s */
    assert_true(mcs_heap_set(&h, &b, 10));   /* same key again: keeps its place */
    assert_ptr_equal(mcs_heap_top(&h), &b);
    assert_true(mcs_heap_set(&h, &b, 11));   /* moved later */
    assert_ptr_equal(mcs_heap_top(&h), &a);
    mcs_heap_remove(&h, &a);
    mcs_heap_remove(&h, &a);                 /* not in it any more: nothing happens */
    assert_ptr_equal(mcs_heap_top(&h), &b);
    mcs_heap_remove(&h, &b);
    assert_null(mcs_heap_top(&h));
    mcs_heap_free(&h);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_against_scan),
        cmocka_unit_test(test_ties_fifo_and_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
