/*
 * preload/core/buf.c: growable byte buffer (see buf.h).
 */
#include "preload/core/alloc.h"
#include "preload/core/buf.h"

#include <stdlib.h>
#include <string.h>

int
mcs_buf_reserve(struct mcs_buf *b, size_t want)
{
    if (b->cap - b->end >= want) {
        return 0;
    }
    size_t used = b->end - b->start;
    /* Move unread bytes to the front if that alone makes room. */
    if (b->start > 0 && b->cap - used >= want) {
        memmove(b->data, b->data + b->start, used);
        b->start = 0;
        b->end = used;
        return 0;
    }
    size_t cap = b->cap ? b->cap : 1024;
    while (cap - used < want) {
        if (cap > SIZE_MAX / 2) {
            return -1;
        }
        cap *= 2;
    }
    char *p = mcs_malloc(cap);
    if (p == NULL) {
        return -1;
    }
    if (used > 0) {
        memcpy(p, b->data + b->start, used);
    }
    mcs_free(b->data);
    b->data = p;
    b->cap = cap;
    b->start = 0;
    b->end = used;
    return 0;
}

int
mcs_buf_append(struct mcs_buf *b, const void *p, size_t len)
{
    if (len == 0) {
        return 0;
    }
    if (mcs_buf_reserve(b, len) != 0) {
        return -1;
    }
    memcpy(b->data + b->end, p, len);
    b->end += len;
    return 0;
}

void
mcs_buf_consume(struct mcs_buf *b, size_t n)
{
    b->start += n;
    if (b->start >= b->end) {
        b->start = 0;
        b->end = 0;
    }
}

void
mcs_buf_reset(struct mcs_buf *b)
{
    b->start = 0;
    b->end = 0;
}

void
mcs_buf_shrink(struct mcs_buf *b, size_t keep)
{
    if (b->start == b->end && b->cap > keep) {
        mcs_free(b->data);
        b->data = NULL;
        b->cap = 0;
        b->start = 0;
        b->end = 0;
    }
}

void
mcs_buf_free(struct mcs_buf *b)
{
    mcs_free(b->data);
    b->data = NULL;
    b->cap = 0;
    b->start = 0;
    b->end = 0;
}
