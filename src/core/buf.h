/* A growable byte buffer. Owns its memory; kq_buf_free releases it. */
#ifndef KQ_CORE_BUF_H
#define KQ_CORE_BUF_H
#include <stddef.h>
#include <stdint.h>

struct kq_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

/* Make room for `extra` more bytes; returns 0 or -ENOMEM. */
int kq_buf_reserve(struct kq_buf *b, size_t extra);
int kq_buf_append(struct kq_buf *b, const void *p, size_t n);
/* Drop the first n bytes (after a partial write or a parsed frame). */
void kq_buf_consume(struct kq_buf *b, size_t n);
void kq_buf_free(struct kq_buf *b);
#endif
