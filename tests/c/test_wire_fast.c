/* The hand-written decoder and encoder of the hot frames (src/proto/fast_decode.c,
 * fast_encode.c) against protobuf-c: every captured frame is taken by the fast path into the
 * view protobuf-c makes and encodes to protobuf-c's bytes; odd inputs (duplicates, unknown
 * fields, field 0, wrong wire types, cut varints, missing fields, snappy, NUL bytes) are
 * declined, so kq_frame_decode answers as protobuf-c does; the unusual-but-canonical ones
 * (negative and huge numbers, empty strings, many properties) are taken and agree.
 * The comparison itself is tests/fuzz/fast_wire_check.h, which fuzz_frame runs on every
 * input. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../fuzz/fast_wire_check.h"
#include "proto/codec.h"
#include "support/golden.h"

#define ID "0123456789abcdef0123456789abcdef"

/* --- building wire bytes by hand ------------------------------------------------------------ */

struct wire {
    uint8_t b[16384];
    size_t n;
};

static void raw(struct wire *w, const void *p, size_t n)
{
    assert_true(w->n + n <= sizeof w->b);
    memcpy(w->b + w->n, p, n);
    w->n += n;
}

static void varint(struct wire *w, uint64_t v)
{
    do {
        uint8_t b = (uint8_t)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
        raw(w, &b, 1);
        v >>= 7;
    } while (v);
}

static void bytes_field(struct wire *w, uint8_t tag, const void *p, size_t n)
{
    raw(w, &tag, 1);
    varint(w, n);
    raw(w, p, n);
}

static void str(struct wire *w, uint8_t tag, const char *s) { bytes_field(w, tag, s, strlen(s)); }

static void num(struct wire *w, uint8_t tag, uint64_t v)
{
    raw(w, &tag, 1);
    varint(w, v);
}

static void nested(struct wire *w, uint8_t tag, const struct wire *inner)
{
    bytes_field(w, tag, inner->b, inner->n);
}

/* A Header's required fields, canonical, with the given expiredTime and deliverLimit. */
static void header_fields(struct wire *h, int64_t expired, int64_t limit)
{
    str(h, 0x0a, ID);
    str(h, 0x12, "trade");
    str(h, 0x1a, "pay");
    num(h, 0x20, (uint64_t)expired);
    num(h, 0x28, (uint64_t)limit);
    str(h, 0x32, "p-trade");
    num(h, 0x38, 1); /* commit */
    num(h, 0x40, 0); /* fly */
}

static void property(struct wire *h, const char *key, const char *value)
{
    struct wire e = {0};
    str(&e, 0x0a, key);
    str(&e, 0x12, value);
    nested(h, 0x4a, &e);
}

/* A BytesMessage body around the Header bytes h. */
static void message(struct wire *m, const struct wire *h, const char *body)
{
    nested(m, 0x0a, h);
    str(m, 0x12, body);
}

static struct kq_arena arena;

static int setup(void **state)
{
    (void)state;
    kq_arena_init(&arena, 4096);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    kq_arena_free(&arena);
    return 0;
}

/* The message around h, checked both ways; and h as a stored header. Returns the verdict of
 * the message (the stored header's must be the same). */
static enum fast_verdict check_message(const struct wire *h)
{
    struct wire m = {0};
    message(&m, h, "body");
    enum fast_verdict v = fast_frame_check(&arena, KQ_CMD_BYTES_MESSAGE, m.b, m.n);
    assert_int_not_equal(v, FAST_DIFFERS);
    assert_int_equal(fast_header_check(&arena, h->b, h->n), v);
    return v;
}

/* kq_frame_decode of the message around h. */
static int decode_message(const struct wire *h, const char **nul, struct kq_frame_view *v)
{
    struct wire m = {0};
    message(&m, h, "body");
    return kq_frame_decode(&arena, KQ_CMD_BYTES_MESSAGE, m.b, m.n, nul, v);
}

/* --- captured frames ------------------------------------------------------------------------ */

static bool hot(uint8_t cmd)
{
    return cmd == KQ_CMD_BYTES_MESSAGE || cmd == KQ_CMD_STRING_MESSAGE ||
           cmd == KQ_CMD_DELIVER_ACK || cmd == KQ_CMD_TX_ACK;
}

static int check_golden(const uint8_t *frame, size_t len)
{
    struct kq_frame f;
    assert_int_equal(kq_frame_parse(frame, len, &f), (int)len);
    enum fast_verdict v = fast_frame_check(&arena, f.cmd, f.body, (size_t)f.body_len);
    assert_int_not_equal(v, FAST_DIFFERS);
    if (!hot(f.cmd))
        assert_int_equal(v, FAST_DECLINED);
    if (f.cmd == KQ_CMD_BYTES_MESSAGE || f.cmd == KQ_CMD_STRING_MESSAGE) {
        /* kq_frame_decode takes the fast path exactly when it agrees */
        struct kq_frame_view fv;
        assert_int_equal(kq_frame_decode(&arena, f.cmd, f.body, (size_t)f.body_len, NULL, &fv), 0);
        assert_int_equal(fv.message.header.decoded == NULL, v == FAST_AGREES);
    }
    kq_arena_reset(&arena);
    return v == FAST_AGREES;
}

static void count_fast(const uint8_t *frame, size_t len, void *fast)
{
    *(int *)fast += check_golden(frame, len);
}

static void test_golden(void **state)
{
    (void)state;
    int fast = 0;
    assert_int_equal(golden_for_each_frame(count_fast, &fast), 38 + 62);
    /* every Bytes-, StringMessage, DeliverAck and TxACK of the original clients and broker
     * but the 3 messages carrying an unknown field 20 (made for that) */
    assert_int_equal(fast, 25 + 5 + 9 + 7 - 3);
}

/* --- odd inputs: declined, and answered as protobuf-c answers ------------------------------- */

static void test_duplicate_field(void **state)
{
    (void)state;
    struct wire h = {0};
    header_fields(&h, -1, 100);
    str(&h, 0x12, "second"); /* topic again: protobuf-c keeps the last */
    assert_int_equal(check_message(&h), FAST_DECLINED);
    struct kq_frame_view v;
    assert_int_equal(decode_message(&h, NULL, &v), 0);
    assert_string_equal(v.message.header.topic, "second");
    assert_non_null(v.message.header.decoded);

    struct wire m = {0}, inner = {0};
    header_fields(&inner, -1, 100);
    message(&m, &inner, "one");
    str(&m, 0x12, "two"); /* the body twice */
    assert_int_equal(fast_frame_check(&arena, KQ_CMD_BYTES_MESSAGE, m.b, m.n), FAST_DECLINED);
}

/* Unknown fields are declined, snappy (sent by the original Go client) is taken; both are
 * kept when the header is encoded again. */
static void test_unknown_field_and_snappy(void **state)
{
    (void)state;
    static const uint8_t unknown[] = {0x78, 0x05}, snappy[] = {0x58, 0x01}, no[] = {0x58, 0x00};
    const uint8_t *extra[] = {unknown, snappy, no};
    for (int i = 0; i < 3; i++) {
        struct wire h = {0};
        header_fields(&h, -1, 100);
        raw(&h, extra[i], 2);
        assert_int_equal(check_message(&h), i == 0 ? FAST_DECLINED : FAST_AGREES);
        struct kq_frame_view v;
        assert_int_equal(decode_message(&h, NULL, &v), 0);
        uint8_t *out;
        size_t len;
        assert_int_equal(kq_header_encode(&arena, &v.message.header, &out, &len), 0);
        assert_int_equal(len, h.n);
        assert_memory_equal(out, h.b, h.n);
    }
    /* an Entry with a field of its own: the property keeps it */
    struct wire h = {0}, e = {0};
    header_fields(&h, -1, 100);
    str(&e, 0x0a, "k");
    str(&e, 0x12, "v");
    raw(&e, unknown, 2);
    nested(&h, 0x4a, &e);
    assert_int_equal(check_message(&h), FAST_DECLINED);
}

static void test_rejected(void **state)
{
    (void)state;
    struct wire cases[5] = {0};
    header_fields(&cases[0], -1, 100);
    raw(&cases[0], "\x80\x00\x01", 3); /* field 0 as a two-byte tag, varint 1 */
    header_fields(&cases[1], -1, 100);
    num(&cases[1], 0x10, 7); /* topic (2) as a varint */
    header_fields(&cases[2], -1, 100);
    raw(&cases[2], "\x50\xff", 2); /* createTime cut short */
    str(&cases[3], 0x0a, ID);      /* only messageId */
    header_fields(&cases[4], -1, 100);
    raw(&cases[4], "\x4a\x03\x0a\x01k", 5); /* an Entry without its value */
    for (int i = 0; i < 5; i++) {
        assert_int_equal(check_message(&cases[i]), FAST_DECLINED);
        struct kq_frame_view v;
        assert_int_equal(decode_message(&cases[i], NULL, &v), -EPROTO);
    }
}

/* A bool of more than one byte: protobuf-c reads any bit set as true; declined. */
static void test_long_bool(void **state)
{
    (void)state;
    struct wire h = {0};
    str(&h, 0x0a, ID);
    str(&h, 0x12, "trade");
    str(&h, 0x1a, "pay");
    num(&h, 0x20, 1);
    num(&h, 0x28, 1);
    str(&h, 0x32, "p-trade");
    raw(&h, "\x38\x80\x80\x80\x80\x80\x80\x80\x80\x80\x02", 11); /* commit: a bit past 64 */
    num(&h, 0x40, 0);
    assert_int_equal(check_message(&h), FAST_DECLINED);
    struct kq_frame_view v;
    assert_int_equal(decode_message(&h, NULL, &v), 0);
    assert_true(v.message.header.commit);
}

static void test_nul_in_string(void **state)
{
    (void)state;
    struct wire h = {0};
    str(&h, 0x0a, ID);
    bytes_field(&h, 0x12, "tr\0de", 5);
    str(&h, 0x1a, "pay");
    num(&h, 0x20, 1);
    num(&h, 0x28, 1);
    str(&h, 0x32, "p-trade");
    num(&h, 0x38, 0);
    num(&h, 0x40, 0);
    struct wire m = {0};
    message(&m, &h, "body");
    /* checked: declined, and protobuf-c's path names the field; unchecked: cut as protobuf-c */
    struct kq_frame_view v;
    assert_false(kq_fast_frame_decode(&arena, KQ_CMD_BYTES_MESSAGE, m.b, m.n, true, &v));
    assert_true(kq_fast_frame_decode(&arena, KQ_CMD_BYTES_MESSAGE, m.b, m.n, false, &v));
    assert_string_equal(v.message.header.topic, "tr");
    assert_int_equal(fast_frame_check(&arena, KQ_CMD_BYTES_MESSAGE, m.b, m.n), FAST_DECLINED);
    const char *nul = NULL;
    assert_int_equal(kq_frame_decode(&arena, KQ_CMD_BYTES_MESSAGE, m.b, m.n, &nul, &v), 0);
    assert_string_equal(nul, "topic");
}

/* --- unusual but canonical: taken, and equal ------------------------------------------------ */

static void test_numbers(void **state)
{
    (void)state;
    struct {
        int64_t expired, limit;
        int32_t want_limit;
    } cases[] = {
        {-1, 100, 100},
        {INT64_MIN, -1, -1}, /* 10-byte varints */
        {INT64_MAX, INT32_MIN, INT32_MIN},
        {0, ((int64_t)1 << 40) + 7, 7}, /* protobuf-c keeps an int32's low 32 bits */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct wire h = {0};
        header_fields(&h, cases[i].expired, cases[i].limit);
        num(&h, 0x50, (uint64_t)-5); /* createTime */
        assert_int_equal(check_message(&h), FAST_AGREES);
        struct kq_frame_view v;
        assert_int_equal(decode_message(&h, NULL, &v), 0);
        assert_int_equal(v.message.header.expired_time, cases[i].expired);
        assert_int_equal(v.message.header.deliver_limit, cases[i].want_limit);
        assert_true(v.message.header.has_create_time);
        assert_int_equal(v.message.header.create_time, -5);
    }
}

static void test_empty_strings(void **state)
{
    (void)state;
    struct wire h = {0}, m = {0};
    for (uint8_t tag = 0x0a; tag <= 0x1a; tag += 8)
        str(&h, tag, "");
    num(&h, 0x20, 0);
    num(&h, 0x28, 0);
    str(&h, 0x32, "");
    num(&h, 0x38, 0);
    num(&h, 0x40, 1);
    property(&h, "", "");
    message(&m, &h, "");
    assert_int_equal(fast_frame_check(&arena, KQ_CMD_BYTES_MESSAGE, m.b, m.n), FAST_AGREES);
    struct kq_frame_view v;
    assert_int_equal(kq_frame_decode(&arena, KQ_CMD_BYTES_MESSAGE, m.b, m.n, NULL, &v), 0);
    assert_null(v.message.body); /* as protobuf-c leaves an empty bytes field */
    assert_int_equal(v.message.body_len, 0);
    assert_string_equal(v.message.header.group, "");
    assert_string_equal(v.message.header.properties[0].key, "");
}

static void test_properties(void **state)
{
    (void)state;
    struct wire none = {0}, many = {0};
    header_fields(&none, -1, 100);
    assert_int_equal(check_message(&none), FAST_AGREES);
    header_fields(&many, -1, 100);
    char key[16], value[16];
    for (int i = 0; i < 300; i++) {
        snprintf(key, sizeof key, "k%d", i);
        snprintf(value, sizeof value, "v%d", 299 - i);
        property(&many, key, value);
        if (i == 150)
            num(&many, 0x50, 1700000000); /* createTime between the properties */
    }
    assert_int_equal(check_message(&many), FAST_AGREES);
    struct kq_frame_view v;
    assert_int_equal(decode_message(&many, NULL, &v), 0);
    assert_int_equal(v.message.header.n_properties, 300);
    assert_string_equal(v.message.header.properties[299].key, "k299");
    assert_string_equal(v.message.header.properties[299].value, "v0");
}

static void test_acks(void **state)
{
    (void)state;
    struct wire d = {0};
    str(&d, 0x0a, ID);
    str(&d, 0x12, "trade");
    str(&d, 0x1a, "pay");
    str(&d, 0x22, "s-trade");
    num(&d, 0x28, 1);
    assert_int_equal(fast_frame_check(&arena, KQ_CMD_DELIVER_ACK, d.b, d.n), FAST_AGREES);
    struct kq_frame_view v;
    assert_int_equal(kq_frame_decode(&arena, KQ_CMD_DELIVER_ACK, d.b, d.n, NULL, &v), 0);
    assert_null(v.deliver_ack.feedback); /* optional, absent */
    str(&d, 0x32, "ok");
    assert_int_equal(fast_frame_check(&arena, KQ_CMD_DELIVER_ACK, d.b, d.n), FAST_AGREES);
    num(&d, 0x28, 0); /* status twice */
    assert_int_equal(fast_frame_check(&arena, KQ_CMD_DELIVER_ACK, d.b, d.n), FAST_DECLINED);

    struct wire h = {0}, t = {0};
    header_fields(&h, -1, 100);
    nested(&t, 0x0a, &h);
    num(&t, 0x10, (uint64_t)(int64_t)-3); /* a negative status */
    str(&t, 0x1a, "");
    assert_int_equal(fast_frame_check(&arena, KQ_CMD_TX_ACK, t.b, t.n), FAST_AGREES);
    assert_int_equal(kq_frame_decode(&arena, KQ_CMD_TX_ACK, t.b, t.n, NULL, &v), 0);
    assert_int_equal(v.tx_ack.status, -3);
}

/* A header built from scratch (no decoded one) packs by hand as protobuf-c packs it. */
static void test_fresh_header(void **state)
{
    (void)state;
    struct kq_header_property props[] = {{.key = "a", .value = "1"}, {.key = "b", .value = ""}};
    struct kq_header_view v = {.message_id = ID,
                               .topic = "trade",
                               .message_type = "pay",
                               .group = "p-trade",
                               .expired_time = -1,
                               .deliver_limit = -100,
                               .fly = true,
                               .properties = props,
                               .n_properties = 2};
    assert_true(encodes_alike(&arena, &v, NULL));
    assert_true(changed_encodes_alike(&arena, &v));
    v.n_properties = 0;
    assert_true(encodes_alike(&arena, &v, NULL));
}

/* The MessageStoreAck built by hand is the frame protobuf-c packs. */
static void test_store_ack(void **state)
{
    (void)state;
    const char *feedbacks[] = {"", "SUCC", "Malformed Message: protobuf decode failed"};
    for (int i = 0; i < 3; i++) {
        struct kq_buf got = {0}, want = {0};
        Protocol__MessageStoreAck m = PROTOCOL__MESSAGE_STORE_ACK__INIT;
        m.messageid = i ? ID : "";
        m.status = i != 2;
        m.feedback = (char *)feedbacks[i];
        assert_int_equal(kq_codec_append(&want, 9, KQ_CMD_MESSAGE_STORE_ACK, &m.base), 0);
        assert_int_equal(kq_codec_append_store_ack(&got, 9, m.messageid, m.status, m.feedback), 0);
        assert_int_equal(got.len, want.len);
        assert_memory_equal(got.data, want.data, want.len);
        kq_buf_free(&got);
        kq_buf_free(&want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_duplicate_field),
        cmocka_unit_test(test_unknown_field_and_snappy),
        cmocka_unit_test(test_rejected),
        cmocka_unit_test(test_long_bool),
        cmocka_unit_test(test_nul_in_string),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_empty_strings),
        cmocka_unit_test(test_properties),
        cmocka_unit_test(test_acks),
        cmocka_unit_test(test_fresh_header),
        cmocka_unit_test(test_store_ack),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
