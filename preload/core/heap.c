/*
 * preload/core/heap.c: the timer heap (heap.h). Nodes carry their position,
 * so moving or removing one is O(log n) without a search.
 */
#include <stddef.h>

#include "preload/core/alloc.h"
#include "preload/core/heap.h"

int
mcs_heap_init(struct mcs_heap *h, uint32_t cap)
{
    h->len = 0;
    h->seq = 0;
    h->cap = cap;
    h->nodes = mcs_calloc(cap ? cap : 1, sizeof(*h->nodes));
    return h->nodes == NULL ? -1 : 0;
}

void
mcs_heap_free(struct mcs_heap *h)
{
    mcs_free(h->nodes);
    h->nodes = NULL;
    h->len = h->cap = 0;
}

static bool
before(const struct mcs_heap_node *a, const struct mcs_heap_node *b)
{
    return a->key < b->key || (a->key == b->key && a->seq < b->seq);
}

static void
place(struct mcs_heap *h, uint32_t i, struct mcs_heap_node *n)
{
    h->nodes[i] = n;
    n->pos = i + 1;
}

/* Moves the node at i up or down until the heap order holds again. */
static void
fix(struct mcs_heap *h, uint32_t i)
{
    struct mcs_heap_node *n = h->nodes[i];
    while (i > 0 && before(n, h->nodes[(i - 1) / 2])) {
        place(h, i, h->nodes[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= h->len) {
            break;
        }
        if (c + 1 < h->len && before(h->nodes[c + 1], h->nodes[c])) {
            c++;
        }
        if (!before(h->nodes[c], n)) {
            break;
        }
        place(h, i, h->nodes[c]);
        i = c;
    }
    place(h, i, n);
}

bool
mcs_heap_set(struct mcs_heap *h, struct mcs_heap_node *n, uint64_t key)
{
    if (n->pos != 0 && n->key == key) {
        return true;   /* unchanged: keeps its place among equals */
    }
    n->key = key;
    n->seq = h->seq++;
    if (n->pos == 0) {
        if (h->len == h->cap) {
            return false;
        }
        place(h, h->len++, n);
    }
    fix(h, n->pos - 1);
    return true;
}

void
mcs_heap_remove(struct mcs_heap *h, struct mcs_heap_node *n)
{
    if (n->pos == 0) {
        return;
    }
    uint32_t i = n->pos - 1;
    n->pos = 0;
    struct mcs_heap_node *last = h->nodes[--h->len];
    if (i < h->len) {
        place(h, i, last);
        fix(h, i);
    }
}

struct mcs_heap_node *
mcs_heap_top(const struct mcs_heap *h)
{
    return h->len > 0 ? h->nodes[0] : NULL;
}
