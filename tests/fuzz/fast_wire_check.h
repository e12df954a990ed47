/* The hand-written decoder and encoder of the hot frames (src/proto/fast.h) against
 * protobuf-c on one input: the fast decoder either declines or fills the view protobuf-c's
 * path fills, and the hand encoder writes the bytes protobuf-c packs. Shared by the fuzz
 * target (tests/fuzz/fuzz_frame.c) and the unit test (tests/c/test_wire_fast.c). */
#ifndef KQ_TESTS_FAST_WIRE_CHECK_H
#define KQ_TESTS_FAST_WIRE_CHECK_H
#include <stdbool.h>
#include <string.h>

#include "proto/fast.h"

static bool same_string(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

static bool same_header(const struct kq_header_view *a, const struct kq_header_view *b)
{
    if (!same_string(a->message_id, b->message_id) || !same_string(a->topic, b->topic) ||
        !same_string(a->message_type, b->message_type) || !same_string(a->group, b->group) ||
        a->expired_time != b->expired_time || a->deliver_limit != b->deliver_limit ||
        a->commit != b->commit || a->fly != b->fly || a->has_create_time != b->has_create_time ||
        a->create_time != b->create_time || a->n_properties != b->n_properties)
        return false;
    for (size_t i = 0; i < a->n_properties; i++)
        if (!same_string(a->properties[i].key, b->properties[i].key) ||
            !same_string(a->properties[i].value, b->properties[i].value))
            return false;
    return true;
}

/* Every member of the view of command cmd equal. */
static bool same_frame_view(uint8_t cmd, const struct kq_frame_view *a,
                            const struct kq_frame_view *b)
{
    if (a->cmd != b->cmd)
        return false;
    switch (cmd) {
    case KQ_CMD_DELIVER_ACK: {
        const struct kq_deliver_ack_view *x = &a->deliver_ack, *y = &b->deliver_ack;
        return same_string(x->message_id, y->message_id) && same_string(x->topic, y->topic) &&
               same_string(x->message_type, y->message_type) && same_string(x->group, y->group) &&
               x->status == y->status && same_string(x->feedback, y->feedback);
    }
    case KQ_CMD_TX_ACK:
        return a->tx_ack.status == b->tx_ack.status &&
               same_string(a->tx_ack.feedback, b->tx_ack.feedback) &&
               same_header(&a->tx_ack.header, &b->tx_ack.header);
    case KQ_CMD_BYTES_MESSAGE:
    case KQ_CMD_STRING_MESSAGE: {
        const struct kq_message_frame_view *x = &a->message, *y = &b->message;
        return (x->body == NULL) == (y->body == NULL) && x->body_len == y->body_len &&
               (!x->body_len || memcmp(x->body, y->body, x->body_len) == 0) &&
               same_header(&x->header, &y->header);
    }
    default: return false; /* the fast decoder handles no other */
    }
}

/* kq_header_encode (hand-written whenever it can be) and protobuf-c's packing of the same view
 * write the same bytes; so does protobuf-c's packing of `same`, a view equal to v by
 * same_header (NULL: none). */
static bool encodes_alike(struct kq_arena *a, const struct kq_header_view *v,
                          const struct kq_header_view *same)
{
    uint8_t *fast, *slow;
    size_t fast_len, slow_len;
    if (kq_header_encode(a, v, &fast, &fast_len) != 0 ||
        kq_header_encode_protobuf(a, v, &slow, &slow_len) != 0 || fast_len != slow_len ||
        memcmp(fast, slow, fast_len) != 0)
        return false;
    if (!same)
        return true;
    return kq_header_encode_protobuf(a, same, &slow, &slow_len) == 0 && fast_len == slow_len &&
           memcmp(fast, slow, fast_len) == 0;
}

/* v with every number changed (negatives among them) and createTime toggled: encoded alike? */
static bool changed_encodes_alike(struct kq_arena *a, const struct kq_header_view *v)
{
    struct kq_header_view c = *v;
    c.expired_time = ~v->expired_time;
    c.deliver_limit = -v->deliver_limit - 1;
    c.commit = !v->commit;
    c.fly = !v->fly;
    c.has_create_time = !v->has_create_time;
    c.create_time = v->create_time ^ INT64_MIN;
    return encodes_alike(a, &c, NULL);
}

static const struct kq_header_view *header_of(uint8_t cmd, const struct kq_frame_view *v)
{
    if (cmd == KQ_CMD_BYTES_MESSAGE || cmd == KQ_CMD_STRING_MESSAGE)
        return &v->message.header;
    return cmd == KQ_CMD_TX_ACK ? &v->tx_ack.header : NULL;
}

enum fast_verdict { FAST_DECLINED, FAST_AGREES, FAST_DIFFERS };

/* One frame body of command cmd both ways (allocating in a). FAST_AGREES: the fast decoder
 * took it, with and without the NUL check, into the view protobuf-c's path makes (NUL check:
 * only when protobuf-c's names no NUL), and every header encodes alike. FAST_DECLINED: it
 * declined (the headers protobuf-c decoded still encode alike). */
static enum fast_verdict fast_frame_check(struct kq_arena *a, uint8_t cmd, const uint8_t *body,
                                          size_t len)
{
    struct kq_frame_view slow, fast, fast_unchecked;
    const char *nul = NULL;
    bool slow_ok = kq_frame_decode_protobuf(a, cmd, body, len, &nul, &slow) == 0;
    bool fast_ok = kq_fast_frame_decode(a, cmd, body, len, true, &fast);
    bool unchecked_ok = kq_fast_frame_decode(a, cmd, body, len, false, &fast_unchecked);
    if (fast_ok && (!slow_ok || nul || !unchecked_ok || !same_frame_view(cmd, &fast, &slow)))
        return FAST_DIFFERS;
    if (unchecked_ok && (!slow_ok || !same_frame_view(cmd, &fast_unchecked, &slow)))
        return FAST_DIFFERS;
    const struct kq_header_view *h = slow_ok ? header_of(cmd, &slow) : NULL;
    if (h && (!encodes_alike(a, h, NULL) || !changed_encodes_alike(a, h)))
        return FAST_DIFFERS;
    if (h && unchecked_ok && !encodes_alike(a, header_of(cmd, &fast_unchecked), h))
        return FAST_DIFFERS;
    return fast_ok ? FAST_AGREES : FAST_DECLINED;
}

/* The same for packed Header bytes (a stored header). */
static enum fast_verdict fast_header_check(struct kq_arena *a, const uint8_t *hdr, size_t len)
{
    struct kq_header_view slow, fast;
    bool slow_ok = kq_header_decode_protobuf(a, hdr, len, &slow) == 0;
    bool fast_ok = kq_fast_header_decode(a, hdr, len, &fast);
    if (fast_ok && (!slow_ok || !same_header(&fast, &slow) || !encodes_alike(a, &fast, &slow)))
        return FAST_DIFFERS;
    if (slow_ok && (!encodes_alike(a, &slow, NULL) || !changed_encodes_alike(a, &slow)))
        return FAST_DIFFERS;
    return fast_ok ? FAST_AGREES : FAST_DECLINED;
}
#endif
