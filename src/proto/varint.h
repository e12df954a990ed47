/* Writing protobuf's wire by hand (proto/ only): base-128 varints and length-delimited fields
 * whose tag takes one byte (field numbers up to 15), as every encoder writes them. */
#ifndef KQ_PROTO_VARINT_H
#define KQ_PROTO_VARINT_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline size_t kq_varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static inline uint8_t *kq_put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* tag, length, bytes */
static inline uint8_t *kq_put_len_field(uint8_t *p, uint8_t tag, const void *data, size_t len)
{
    *p++ = tag;
    p = kq_put_varint(p, len);
    if (len)
        memcpy(p, data, len);
    return p + len;
}

static inline size_t kq_len_field_size(size_t len) { return 1 + kq_varint_size(len) + len; }
#endif
