/* proto/wire.h's views against the generated types they hide: every captured frame decodes
 * into a view holding the same values, an unchanged view encodes to the same header bytes,
 * and a changed one to the bytes the generated Header changed the same way packs to (what
 * the broker and the client library sent before they used views). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto/codec.h"
#include "support/golden.h"

#define ID "0123456789abcdef0123456789abcdef"

static void assert_header_equal(const struct kq_header_view *v, const Protocol__Header *h)
{
    assert_string_equal(v->message_id, h->messageid);
    assert_string_equal(v->topic, h->topic);
    assert_string_equal(v->message_type, h->messagetype);
    assert_string_equal(v->group, h->groupid);
    assert_int_equal(v->expired_time, h->expiredtime);
    assert_int_equal(v->deliver_limit, h->deliverlimit);
    assert_int_equal(v->commit, h->commit);
    assert_int_equal(v->fly, h->fly);
    assert_int_equal(v->has_create_time, h->has_createtime);
    assert_int_equal(v->create_time, h->createtime);
    assert_int_equal(v->n_properties, h->n_properties);
    for (size_t i = 0; i < h->n_properties; i++) {
        assert_string_equal(v->properties[i].key, h->properties[i]->key);
        assert_string_equal(v->properties[i].value, h->properties[i]->value);
    }
}

/* The view's header encodes to exactly the bytes the generated one packs to. */
static void assert_encodes_as(struct kq_arena *a, const struct kq_header_view *v,
                              const Protocol__Header *h)
{
    uint8_t *want, *got;
    size_t want_len, got_len;
    assert_int_equal(kq_header_pack(h, &want, &want_len), 0);
    assert_int_equal(kq_header_encode(a, v, &got, &got_len), 0);
    assert_int_equal(got_len, want_len);
    assert_memory_equal(got, want, want_len);
    free(want);
}

/* One captured frame: decoded both ways, the same values; its header re-encoded unchanged. */
static void check_frame(const uint8_t *frame, size_t len)
{
    struct kq_frame f;
    assert_int_equal(kq_frame_parse(frame, len, &f), (int)len);
    ProtobufCMessage *m = kq_codec_unpack(f.cmd, f.body, (size_t)f.body_len);
    assert_non_null(m);
    struct kq_arena a;
    kq_arena_init(&a, 1024);
    struct kq_frame_view v;
    assert_int_equal(kq_frame_decode(&a, f.cmd, f.body, (size_t)f.body_len, NULL, &v), 0);
    assert_int_equal(v.cmd, f.cmd);
    switch (f.cmd) {
    case KQ_CMD_HEARTBEAT:
        assert_int_equal(v.heartbeat_version, ((Protocol__HeartBeat *)m)->version);
        break;
    case KQ_CMD_CONN_META: {
        Protocol__ConnMeta *c = (Protocol__ConnMeta *)m;
        assert_string_equal(v.conn_meta.group, c->groupid);
        assert_string_equal(v.conn_meta.secret, c->secretkey);
        assert_int_equal(v.conn_meta.has_warmup, c->has_warmingupsec);
        assert_int_equal(v.conn_meta.warmup_sec, c->warmingupsec);
        break;
    }
    case KQ_CMD_CONN_AUTH: {
        Protocol__ConnAuthAck *c = (Protocol__ConnAuthAck *)m;
        assert_int_equal(v.conn_auth.status, c->status);
        assert_string_equal(v.conn_auth.feedback, c->feedback);
        break;
    }
    case KQ_CMD_MESSAGE_STORE_ACK: {
        Protocol__MessageStoreAck *s = (Protocol__MessageStoreAck *)m;
        assert_string_equal(v.store_ack.message_id, s->messageid);
        assert_int_equal(v.store_ack.status, s->status);
        assert_string_equal(v.store_ack.feedback, s->feedback);
        break;
    }
    case KQ_CMD_DELIVER_ACK: {
        Protocol__DeliverAck *d = (Protocol__DeliverAck *)m;
        assert_string_equal(v.deliver_ack.message_id, d->messageid);
        assert_string_equal(v.deliver_ack.topic, d->topic);
        assert_string_equal(v.deliver_ack.message_type, d->messagetype);
        assert_string_equal(v.deliver_ack.group, d->groupid);
        assert_int_equal(v.deliver_ack.status, d->status);
        assert_int_equal(v.deliver_ack.feedback == NULL, d->feedback == NULL);
        if (d->feedback)
            assert_string_equal(v.deliver_ack.feedback, d->feedback);
        break;
    }
    case KQ_CMD_TX_ACK: {
        Protocol__TxACKPacket *t = (Protocol__TxACKPacket *)m;
        assert_int_equal(v.tx_ack.status, t->status);
        assert_string_equal(v.tx_ack.feedback, t->feedback);
        assert_header_equal(&v.tx_ack.header, t->header);
        assert_encodes_as(&a, &v.tx_ack.header, t->header);
        break;
    }
    default: {
        struct kq_message_view mv;
        assert_int_equal(kq_message_view(f.cmd, m, &mv), 0);
        assert_int_equal(v.message.body_len, mv.body_len);
        assert_memory_equal(v.message.body, mv.body, mv.body_len);
        assert_header_equal(&v.message.header, mv.header);
        assert_encodes_as(&a, &v.message.header, mv.header);
        break;
    }
    }
    kq_arena_free(&a);
    kq_codec_free(m);
}

static void check_each(const uint8_t *frame, size_t len, void *arg)
{
    (void)arg;
    check_frame(frame, len);
}

static void test_golden(void **state)
{
    (void)state;
    assert_int_equal(golden_for_each_frame(check_each, NULL), 38 + 62);
}

/* A stored header with an unknown field of its own and two properties, the second carrying
 * an unknown field (what a newer peer might send). */
static uint8_t *header_with_unknowns(size_t *len)
{
    Protocol__Header h = PROTOCOL__HEADER__INIT;
    h.messageid = ID;
    h.topic = "trade";
    h.messagetype = "pay";
    h.groupid = "p-trade";
    h.expiredtime = 1700000600;
    h.commit = 1;
    uint8_t *packed;
    size_t n;
    assert_int_equal(kq_header_pack(&h, &packed, &n), 0);
    static const uint8_t tail[] = {
        0x78, 0x05,                                               /* field 15 = 5: unknown */
        0x4a, 0x06, 0x0a, 0x01, 'a', 0x12, 0x01, '1',             /* property a=1 */
        0x4a, 0x08, 0x0a, 0x01, 'b', 0x12, 0x01, '2', 0x18, 0x07, /* b=2, Entry field 3 = 7 */
    };
    uint8_t *out = malloc(n + sizeof tail);
    memcpy(out, packed, n);
    memcpy(out + n, tail, sizeof tail);
    free(packed);
    *len = n + sizeof tail;
    return out;
}

static bool contains(const uint8_t *hay, size_t n, const void *needle, size_t k)
{
    return memmem(hay, n, needle, k) != NULL;
}

/* What the broker does to a published header (publish.c, msg_extra.c): its fields
 * normalised, a property dropped, one kept, one added. The generated Header changed the same
 * way packs to the same bytes; the kept property and the header keep their unknown fields. */
static void test_changed_header(void **state)
{
    (void)state;
    size_t len;
    uint8_t *stored = header_with_unknowns(&len);
    struct kq_arena a;
    kq_arena_init(&a, 1024);
    struct kq_header_view v;
    assert_int_equal(kq_header_decode(&a, stored, len, &v), 0);
    assert_int_equal(v.n_properties, 2);
    assert_string_equal(v.properties[1].key, "b");

    Protocol__Header *h = kq_codec_unpack_header_in(&a, stored, len); /* changed below */
    assert_non_null(h);
    assert_header_equal(&v, h);
    assert_encodes_as(&a, &v, h); /* unchanged */

    struct kq_header_property props[2] = {v.properties[1],
                                          {.key = "x-kiteq-deliver-at", .value = "9"}};
    v.properties = props;
    v.n_properties = 2;
    v.group = "p-other";
    v.deliver_limit = 7;
    v.expired_time = 1700000900;
    v.has_create_time = true;
    v.create_time = 1700000000;
    Protocol__Entry added = PROTOCOL__ENTRY__INIT, *entries[2] = {h->properties[1], &added};
    added.key = "x-kiteq-deliver-at";
    added.value = "9";
    h->properties = entries;
    h->n_properties = 2;
    h->groupid = "p-other";
    h->deliverlimit = 7;
    h->expiredtime = 1700000900;
    h->has_createtime = 1;
    h->createtime = 1700000000;
    assert_encodes_as(&a, &v, h);
    uint8_t *got;
    size_t got_len;
    assert_int_equal(kq_header_encode(&a, &v, &got, &got_len), 0);
    assert_true(contains(got, got_len, "\x78\x05", 2));
    assert_true(contains(got, got_len,
                         "\x12\x01"
                         "2\x18\x07",
                         5));

    /* a kept property whose value changed is a new entry: its unknown field goes */
    props[0].value = "3";
    assert_int_equal(kq_header_encode(&a, &v, &got, &got_len), 0);
    assert_false(contains(got, got_len, "\x18\x07", 2));
    assert_true(contains(got, got_len,
                         "\x0a\x01"
                         "b\x12\x01"
                         "3",
                         6));

    kq_arena_free(&a);
    free(stored);
}

/* A header built from scratch (the client library's publish) packs as the generated Header
 * set up the same way did; a missing required string is refused. */
static void test_fresh_header(void **state)
{
    (void)state;
    struct kq_arena a;
    kq_arena_init(&a, 1024);
    struct kq_header_property props[] = {{.key = "k", .value = "v"}};
    struct kq_header_view v = {.message_id = ID,
                               .topic = "trade",
                               .message_type = "pay",
                               .group = "p-trade",
                               .expired_time = -1,
                               .deliver_limit = 100,
                               .commit = true,
                               .properties = props,
                               .n_properties = 1,
                               .has_create_time = true,
                               .create_time = 1700000000};
    Protocol__Header h = PROTOCOL__HEADER__INIT;
    Protocol__Entry e = PROTOCOL__ENTRY__INIT, *ep = &e;
    e.key = "k";
    e.value = "v";
    h.messageid = ID;
    h.topic = "trade";
    h.messagetype = "pay";
    h.groupid = "p-trade";
    h.expiredtime = -1;
    h.deliverlimit = 100;
    h.commit = 1;
    h.properties = &ep;
    h.n_properties = 1;
    h.has_createtime = 1;
    h.createtime = 1700000000;
    assert_encodes_as(&a, &v, &h);

    uint8_t *out;
    size_t len;
    props[0].value = NULL;
    assert_int_equal(kq_header_encode(&a, &v, &out, &len), -EINVAL);
    props[0].value = "v";
    v.topic = NULL;
    assert_int_equal(kq_header_encode(&a, &v, &out, &len), -EINVAL);
    kq_arena_free(&a);
}

/* Garbage and bodies of commands without one are refused; a NUL byte in a string is named,
 * as by kq_codec_unpack_checked. */
static void test_decode_errors(void **state)
{
    (void)state;
    struct kq_arena a;
    kq_arena_init(&a, 1024);
    struct kq_frame_view v;
    const uint8_t junk[] = {0xff, 0xff, 0xff};
    assert_int_equal(kq_frame_decode(&a, KQ_CMD_BYTES_MESSAGE, junk, sizeof junk, NULL, &v),
                     -EPROTO);
    const uint8_t hb[] = {0x08, 0x05};
    assert_int_equal(kq_frame_decode(&a, 0x04, hb, sizeof hb, NULL, &v), -EPROTO);
    assert_int_equal(kq_frame_decode(&a, KQ_CMD_HEARTBEAT, hb, sizeof hb, NULL, &v), 0);
    assert_int_equal(v.heartbeat_version, 5);

    const uint8_t meta[] = {0x0a, 0x03, 's', 0, 'x', 0x12, 0x01, 'k'}; /* groupId "s\0x" */
    const char *nul = NULL;
    assert_int_equal(kq_frame_decode(&a, KQ_CMD_CONN_META, meta, sizeof meta, &nul, &v), 0);
    assert_string_equal(nul, "groupId");

    struct kq_header_view h;
    assert_int_equal(kq_header_decode(&a, junk, sizeof junk, &h), -EPROTO);
    kq_arena_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_changed_header),
        cmocka_unit_test(test_fresh_header),
        cmocka_unit_test(test_decode_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
