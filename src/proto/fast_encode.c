/* Hand-written packing of a Header (fast.h): the broker packs every published header again
 * after normalising it, and protobuf-c's generic get_packed_size + pack cost ~1 400
 * instructions of it. The bytes are exactly protobuf-c's: fields in number order, required
 * ones always, createTime and snappy only when set, int32/int64 negatives as 10-byte
 * varints, bools as one byte 0 or 1, each property a nested Entry (key, value). */
#include <errno.h>
#include <string.h>

#include "proto/codec.h"
#include "proto/fast.h"
#include "proto/varint.h"

bool kq_fast_header_encodable(const struct kq_header_view *v)
{
    const Protocol__Header *h = v->decoded;
    if (h && h->base.n_unknown_fields)
        return false; /* protobuf-c packs them back as they came */
    for (size_t i = 0; i < v->n_properties; i++) {
        const Protocol__Entry *e = v->properties[i].decoded;
        if (e && e->base.n_unknown_fields)
            return false;
    }
    return true;
}

static size_t entry_size(const struct kq_header_property *p)
{
    return kq_len_field_size(strlen(p->key)) + kq_len_field_size(strlen(p->value));
}

/* A string field whose tag takes one byte. */
static uint8_t *put_string(uint8_t *p, uint8_t tag, const char *s)
{
    return kq_put_len_field(p, tag, s, strlen(s));
}

static uint8_t *put_varint_field(uint8_t *p, uint8_t tag, uint64_t v)
{
    *p++ = tag;
    return kq_put_varint(p, v);
}

/* Header.snappy as it came (v->snappy's coding): from protobuf-c's Header, or the view. */
static uint8_t snappy_of(const struct kq_header_view *v)
{
    const Protocol__Header *h = v->decoded;
    return h ? (h->has_snappy ? 1 + (h->snappy != 0) : 0) : v->snappy;
}

int kq_fast_header_encode(struct kq_arena *a, const struct kq_header_view *v, uint8_t **out,
                          size_t *len)
{
    uint8_t snappy = snappy_of(v);
    /* proto's int32 and int64 are sign-extended to 64 bits on the wire */
    uint64_t expired = (uint64_t)v->expired_time, limit = (uint64_t)(int64_t)v->deliver_limit;
    uint64_t created = (uint64_t)v->create_time;
    size_t n = kq_len_field_size(strlen(v->message_id)) + kq_len_field_size(strlen(v->topic)) +
               kq_len_field_size(strlen(v->message_type)) + 1 + kq_varint_size(expired) + 1 +
               kq_varint_size(limit) + kq_len_field_size(strlen(v->group)) + 2 + 2;
    for (size_t i = 0; i < v->n_properties; i++)
        n += kq_len_field_size(entry_size(&v->properties[i]));
    if (v->has_create_time)
        n += 1 + kq_varint_size(created);
    if (snappy)
        n += 2;

    uint8_t *buf = kq_arena_alloc(a, n), *p = buf;
    if (!buf)
        return -ENOMEM;
    p = put_string(p, 0x0a, v->message_id); /* field 1, length-delimited */
    p = put_string(p, 0x12, v->topic);
    p = put_string(p, 0x1a, v->message_type);
    p = put_varint_field(p, 0x20, expired); /* field 4, varint */
    p = put_varint_field(p, 0x28, limit);
    p = put_string(p, 0x32, v->group);
    p = put_varint_field(p, 0x38, v->commit ? 1 : 0);
    p = put_varint_field(p, 0x40, v->fly ? 1 : 0);
    for (size_t i = 0; i < v->n_properties; i++) {
        const struct kq_header_property *e = &v->properties[i];
        p = put_varint_field(p, 0x4a, entry_size(e)); /* field 9: its length, then the Entry */
        p = put_string(p, 0x0a, e->key);
        p = put_string(p, 0x12, e->value);
    }
    if (v->has_create_time)
        p = put_varint_field(p, 0x50, created);
    if (snappy)
        p = put_varint_field(p, 0x58, snappy - 1); /* field 11 */
    *out = buf;
    *len = (size_t)(p - buf);
    return 0;
}
