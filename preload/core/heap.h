/*
 * preload/core/heap.h: an intrusive binary min-heap of timers (the engine's
 * reply and connect deadlines).
 *
 * A node lives inside the object it times (a server connection) and is in the
 * heap at most once: mcs_heap_set inserts it or moves it to a new key,
 * mcs_heap_remove takes it out (a no-op if it is not in). Equal keys come out
 * in the order they were set (FIFO tie-break). The capacity is fixed at init:
 * the heap never allocates after it, so setting a timer cannot fail. The
 * caller owns the nodes; the heap only points at them.
 */
#ifndef MCS_HEAP_H
#define MCS_HEAP_H

#include <stdbool.h>
#include <stdint.h>

struct mcs_heap_node {
    uint64_t key;               /* when (ms) */
    uint64_t seq;               /* order of setting, for ties */
    uint32_t pos;               /* 1 + index in the heap; 0: not in it */
};

struct mcs_heap {
    struct mcs_heap_node **nodes;
    uint32_t len;
    uint32_t cap;
    uint64_t seq;
};

/* Room for cap nodes. Returns 0, or -1 when out of memory. */
int mcs_heap_init(struct mcs_heap *h, uint32_t cap);
void mcs_heap_free(struct mcs_heap *h);
/* Puts n in the heap with key (or moves it there). Returns false only when n is
 * not in the heap and the heap is full (more nodes than its capacity). */
bool mcs_heap_set(struct mcs_heap *h, struct mcs_heap_node *n, uint64_t key);
void mcs_heap_remove(struct mcs_heap *h, struct mcs_heap_node *n);
/* The node with the smallest key, or NULL when the heap is empty. */
struct mcs_heap_node *mcs_heap_top(const struct mcs_heap *h);

#endif
