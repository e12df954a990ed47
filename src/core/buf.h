/* A growable byte buffer. Owns its memory; kq_buf_free releases it. */
#ifndef KQ_CORE_BUF_H
#define KQ_CORE_BUF_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kq_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
    /* A reserve or append ran out of memory since the last kq_buf_free: the bytes may lack a
     * piece in the middle even if later appends worked. Text that must not go out partial
     * (the admin server's answers) is checked for it; an append failure thus sticks. */
    bool failed;
};

/* Make room for `extra` more bytes; returns 0 or -ENOMEM (and sets failed). */
int kq_buf_reserve(struct kq_buf *b, size_t extra);
int kq_buf_append(struct kq_buf *b, const void *p, size_t n);
/* Drop the first n bytes (after a partial write or a parsed frame). */
void kq_buf_consume(struct kq_buf *b, size_t n);
void kq_buf_free(struct kq_buf *b);
#endif
