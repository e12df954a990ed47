#include "core/buf.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int kq_buf_reserve(struct kq_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    if (extra > SIZE_MAX / 2 - b->len) { /* the doubling below would wrap (and loop forever) */
        b->failed = true;
        return -ENOMEM;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < extra)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p) {
        b->failed = true;
        return -ENOMEM;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

int kq_buf_append(struct kq_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0; /* p and b->data may be NULL then: memcpy must not see them */
    int rc = kq_buf_reserve(b, n);
    if (rc)
        return rc;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void kq_buf_consume(struct kq_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void kq_buf_free(struct kq_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->failed = false;
}
