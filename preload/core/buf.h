/*
 * preload/core/buf.h: a growable byte buffer with a read cursor.
 *
 * Bytes live in data[start, end); appending grows the allocation (doubling, up
 * to the caller's limit), consuming advances start, and the unread bytes are
 * moved back to the front when that is cheap. The owner of the struct owns the
 * allocation; mcs_buf_free() releases it. No syscalls.
 */
#ifndef MCS_BUF_H
#define MCS_BUF_H

#include <stddef.h>
#include <stdint.h>

struct mcs_buf {
    char  *data;
    size_t start;   /* first unread byte */
    size_t end;     /* one past the last byte */
    size_t cap;     /* allocated size */
};

static inline size_t mcs_buf_len(const struct mcs_buf *b) { return b->end - b->start; }
static inline char *mcs_buf_head(const struct mcs_buf *b) { return b->data + b->start; }

/* Makes room for at least `want` more bytes after end. Returns 0, or -1 (buffer
 * unchanged) when the allocation fails. */
int mcs_buf_reserve(struct mcs_buf *b, size_t want);

/* Appends len bytes. Returns 0 or -1 on allocation failure. */
int mcs_buf_append(struct mcs_buf *b, const void *p, size_t len);

/* Drops n unread bytes (n <= mcs_buf_len). */
void mcs_buf_consume(struct mcs_buf *b, size_t n);

/* Forgets all bytes, keeps the allocation. */
void mcs_buf_reset(struct mcs_buf *b);

/* Releases the allocation when the buffer is empty and larger than keep bytes
 * (so one huge value does not pin memory on an idle connection). */
void mcs_buf_shrink(struct mcs_buf *b, size_t keep);

void mcs_buf_free(struct mcs_buf *b);

#endif
