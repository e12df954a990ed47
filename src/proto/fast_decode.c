/* Hand-written decoding of the frames every message passes through (fast.h): a publish
 * (BytesMessage with its Header and Entries), a consumer's DeliverAck, a TxACKPacket and a
 * stored Header. protobuf-c's generic unpack cost ~4 700 instructions per message in the
 * broker; a walk that knows these few messages costs a fraction. Whatever is not in the
 * canonical form below is declined, and protobuf-c decodes it as before. */
#include <string.h>

#include "proto/fast.h"

#define BIT(n) (1u << (n))

/* One field as it came. */
struct field {
    unsigned wire;       /* 0: varint, 2: length-delimited */
    uint64_t value;      /* a varint's value, cut to 64 bits as protobuf-c does */
    unsigned value_len;  /* its bytes on the wire */
    const uint8_t *data; /* length-delimited: its bytes */
    size_t len;
};

/* A varint of at most max bytes, read the way protobuf-c reads it (10 bytes for values, 5
 * for lengths; the bits past 64 dropped). */
static inline bool read_varint(const uint8_t **p, const uint8_t *end, unsigned max, uint64_t *v,
                               unsigned *n)
{
    if (*p < end && !(**p & 0x80)) { /* most values and lengths: one byte */
        *v = *(*p)++;
        *n = 1;
        return true;
    }
    uint64_t x = 0;
    for (unsigned i = 0; i < max && *p < end; i++) {
        uint8_t b = *(*p)++;
        x |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *v = x;
            *n = i + 1;
            return true;
        }
    }
    return false;
}

/* The next field at *p (before end) into *num and *f. False for what protobuf-c might read
 * differently from us or reject: a tag of more than one byte (it takes field 0 written as
 * 80 00, our fields all fit one byte), field 0, wire types other than varint and
 * length-delimited, a varint cut short, a length past the end. */
static inline bool next_field(const uint8_t **p, const uint8_t *end, unsigned *num, struct field *f)
{
    uint8_t tag = *(*p)++;
    if ((tag & 0x80) || (tag >> 3) == 0)
        return false;
    *num = tag >> 3;
    f->wire = tag & 7;
    f->data = NULL;
    f->len = 0;
    if (f->wire == 0)
        return read_varint(p, end, 10, &f->value, &f->value_len);
    uint64_t n;
    unsigned n_len;
    if (f->wire != 2 || !read_varint(p, end, 5, &n, &n_len) || n > (uint64_t)(end - *p))
        return false;
    f->data = *p;
    f->len = (size_t)n;
    *p += n;
    return true;
}

/* What a message may hold, by field number (bit n: field n). */
struct shape {
    uint32_t delimited; /* strings, bytes and nested messages */
    uint32_t varints;
    /* varints that must take one byte: protobuf-c reads any bit set in a longer one as
     * true, where we would read its value */
    uint32_t bools;
    uint32_t required;
    unsigned repeated; /* the one field that may come more than once, or 0 */
};

#define MAX_FIELD 11 /* the highest field number of the messages handled here */

/* The fields of one message. */
struct fields {
    uint32_t seen;
    size_t n_repeated;
    struct field f[MAX_FIELD + 1];
};

/* Walk one message: false unless every field is known to s, comes once (but s->repeated)
 * with its wire type, and every required one came. */
static bool walk(const struct shape *s, const uint8_t *p, const uint8_t *end, struct fields *m)
{
    m->seen = 0;
    m->n_repeated = 0;
    while (p < end) {
        unsigned num;
        struct field f;
        if (!next_field(&p, end, &num, &f) || num > MAX_FIELD)
            return false;
        uint32_t bit = BIT(num);
        uint32_t allowed = f.wire == 2 ? s->delimited : s->varints;
        if (!(allowed & bit) || ((s->bools & bit) && f.value_len != 1))
            return false;
        if (num == s->repeated) {
            m->n_repeated++;
        } else {
            if (m->seen & bit)
                return false; /* the last one wins (or merges): protobuf-c knows how */
            m->f[num] = f;
        }
        m->seen |= bit;
    }
    return (m->seen & s->required) == s->required;
}

static const struct shape header_shape = {
    .delimited = BIT(1) | BIT(2) | BIT(3) | BIT(6) | BIT(9),
    .varints = BIT(4) | BIT(5) | BIT(7) | BIT(8) | BIT(10) | BIT(11),
    .bools = BIT(7) | BIT(8) | BIT(11),
    .required = BIT(1) | BIT(2) | BIT(3) | BIT(4) | BIT(5) | BIT(6) | BIT(7) | BIT(8),
    .repeated = 9,
};
static const struct shape entry_shape = {
    .delimited = BIT(1) | BIT(2),
    .required = BIT(1) | BIT(2),
};
static const struct shape bytes_message_shape = {
    .delimited = BIT(1) | BIT(2),
    .required = BIT(1) | BIT(2),
};
static const struct shape deliver_ack_shape = {
    .delimited = BIT(1) | BIT(2) | BIT(3) | BIT(4) | BIT(6),
    .varints = BIT(5),
    .bools = BIT(5),
    .required = BIT(1) | BIT(2) | BIT(3) | BIT(4) | BIT(5),
};
static const struct shape tx_ack_shape = {
    .delimited = BIT(1) | BIT(3),
    .varints = BIT(2),
    .required = BIT(1) | BIT(2) | BIT(3),
};

/* Room for strings, filled one after the other: one arena allocation for several. */
struct strings {
    char *next;
    bool check_nul;
};

static size_t room(const struct field *f) { return f->len + 1; }

/* f's bytes as a C string, as protobuf-c makes them (a NUL inside ends it early); NULL when
 * it holds a NUL and s->check_nul. */
static const char *take(struct strings *s, const struct field *f)
{
    if (s->check_nul && memchr(f->data, 0, f->len))
        return NULL;
    char *str = s->next;
    memcpy(str, f->data, f->len);
    str[f->len] = 0;
    s->next += f->len + 1;
    return str;
}

/* The Entries of a Header h already walked (field 9 at p..end) into props. */
static bool take_properties(struct kq_arena *a, const uint8_t *p, const uint8_t *end,
                            bool check_nul, struct kq_header_property *props)
{
    size_t i = 0;
    while (p < end) {
        unsigned num;
        struct field f;
        struct fields e;
        if (!next_field(&p, end, &num, &f)) /* walked before: not reached */
            return false;
        if (num != 9)
            continue;
        if (!walk(&entry_shape, f.data, f.data + f.len, &e))
            return false;
        struct strings s = {kq_arena_alloc(a, room(&e.f[1]) + room(&e.f[2])), check_nul};
        if (!s.next)
            return false;
        const char *key = take(&s, &e.f[1]), *value = key ? take(&s, &e.f[2]) : NULL;
        if (!value)
            return false;
        props[i++] = (struct kq_header_property){key, value, NULL};
    }
    return true;
}

static bool header_fast(struct kq_arena *a, const uint8_t *p, size_t len, bool check_nul,
                        struct kq_header_view *v)
{
    struct fields h;
    if (!walk(&header_shape, p, p + len, &h))
        return false;
    /* the properties' array and the header's own strings: one allocation */
    size_t props_size = h.n_repeated * sizeof(struct kq_header_property);
    char *mem = kq_arena_alloc(a, props_size + room(&h.f[1]) + room(&h.f[2]) + room(&h.f[3]) +
                                      room(&h.f[6]));
    if (!mem)
        return false;
    struct kq_header_property *props = h.n_repeated ? (void *)mem : NULL;
    struct strings s = {mem + props_size, check_nul};
    const char *id = take(&s, &h.f[1]), *topic = id ? take(&s, &h.f[2]) : NULL,
               *type = topic ? take(&s, &h.f[3]) : NULL, *group = type ? take(&s, &h.f[6]) : NULL;
    if (!group || (props && !take_properties(a, p, p + len, check_nul, props)))
        return false;
    bool has_create_time = h.seen & BIT(10);
    *v = (struct kq_header_view){
        .message_id = id,
        .topic = topic,
        .message_type = type,
        .group = group,
        .expired_time = (int64_t)h.f[4].value,
        .deliver_limit = (int32_t)(uint32_t)h.f[5].value, /* protobuf-c keeps the low 32 bits */
        .commit = h.f[7].value != 0,
        .fly = h.f[8].value != 0,
        .has_create_time = has_create_time,
        .create_time = has_create_time ? (int64_t)h.f[10].value : 0,
        .properties = props,
        .n_properties = h.n_repeated,
        .snappy = (h.seen & BIT(11)) ? 1 + (h.f[11].value != 0) : 0,
        .decoded = NULL,
    };
    return true;
}

static bool message_fast(struct kq_arena *a, const uint8_t *p, size_t len, bool check_nul,
                         struct kq_message_frame_view *v)
{
    struct fields m;
    if (!walk(&bytes_message_shape, p, p + len, &m) ||
        !header_fast(a, m.f[1].data, m.f[1].len, check_nul, &v->header))
        return false;
    v->body = m.f[2].len ? m.f[2].data : NULL; /* protobuf-c leaves an empty one NULL */
    v->body_len = m.f[2].len;
    return true;
}

static bool deliver_ack_fast(struct kq_arena *a, const uint8_t *p, size_t len, bool check_nul,
                             struct kq_deliver_ack_view *v)
{
    struct fields d;
    if (!walk(&deliver_ack_shape, p, p + len, &d))
        return false;
    bool has_feedback = d.seen & BIT(6);
    struct strings s = {kq_arena_alloc(a, room(&d.f[1]) + room(&d.f[2]) + room(&d.f[3]) +
                                              room(&d.f[4]) + (has_feedback ? room(&d.f[6]) : 0)),
                        check_nul};
    if (!s.next)
        return false;
    const char *id = take(&s, &d.f[1]), *topic = id ? take(&s, &d.f[2]) : NULL,
               *type = topic ? take(&s, &d.f[3]) : NULL, *group = type ? take(&s, &d.f[4]) : NULL,
               *feedback = group && has_feedback ? take(&s, &d.f[6]) : NULL;
    if (!group || (has_feedback && !feedback))
        return false;
    *v = (struct kq_deliver_ack_view){id, topic, type, group, d.f[5].value != 0, feedback};
    return true;
}

static bool tx_ack_fast(struct kq_arena *a, const uint8_t *p, size_t len, bool check_nul,
                        struct kq_tx_ack_view *v)
{
    struct fields t;
    if (!walk(&tx_ack_shape, p, p + len, &t) ||
        !header_fast(a, t.f[1].data, t.f[1].len, check_nul, &v->header))
        return false;
    struct strings s = {kq_arena_alloc(a, room(&t.f[3])), check_nul};
    if (!s.next || !(v->feedback = take(&s, &t.f[3])))
        return false;
    v->status = (int32_t)(uint32_t)t.f[2].value;
    return true;
}

bool kq_fast_frame_decode(struct kq_arena *a, uint8_t cmd, const uint8_t *body, size_t len,
                          bool check_nul, struct kq_frame_view *v)
{
    struct kq_frame_view f = {.cmd = cmd}; /* v stays untouched when declining */
    bool ok;
    if (!body)
        return false;
    switch (cmd) {
    case KQ_CMD_BYTES_MESSAGE:
    case KQ_CMD_STRING_MESSAGE: ok = message_fast(a, body, len, check_nul, &f.message); break;
    case KQ_CMD_DELIVER_ACK: ok = deliver_ack_fast(a, body, len, check_nul, &f.deliver_ack); break;
    case KQ_CMD_TX_ACK: ok = tx_ack_fast(a, body, len, check_nul, &f.tx_ack); break;
    default: ok = false;
    }
    if (ok)
        *v = f;
    return ok;
}

bool kq_fast_header_decode(struct kq_arena *a, const uint8_t *hdr, size_t len,
                           struct kq_header_view *v)
{
    return hdr && header_fast(a, hdr, len, false, v);
}
