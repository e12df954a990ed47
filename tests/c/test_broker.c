/* Integration: the real broker on 127.0.0.1 driven with raw frames (memory store).
 * Handshake and auth, heartbeats, publish checks, delivery and acks per connection,
 * retries on nack / timeout / disconnect, and every kind of bad input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "client/kiteq_client.h"
#include "core/clock.h"
#include "support/broker_proc.h"

static struct broker_proc bp;

static int setup(void **state)
{
    (void)state;
    char cfg[4096];
    broker_default_config(cfg, sizeof cfg, "memory://", "heartbeatTimeoutSeconds = 3,");
    return broker_start(&bp, cfg, NULL);
}

static int teardown(void **state)
{
    (void)state;
    int rc = broker_stop(&bp);
    return rc == 0 ? 0 : -1; /* graceful shutdown exits 0 */
}

static int connect_as(const char *group)
{
    int fd = raw_connect(bp.port);
    assert_true(fd >= 0);
    assert_int_equal(raw_handshake(fd, group, TEST_SECRET), 1);
    return fd;
}

static void test_handshake_and_auth(void **state)
{
    (void)state;
    int fd = connect_as(TEST_PRODUCER);
    close(fd);
    /* wrong secret: ConnAuthAck{false} and the connection is closed */
    fd = raw_connect(bp.port);
    assert_int_equal(raw_handshake(fd, TEST_PRODUCER, "wrong"), 0);
    assert_true(raw_wait_closed(fd, 3000));
    close(fd);
    /* unknown group */
    fd = raw_connect(bp.port);
    assert_int_equal(raw_handshake(fd, "nobody", TEST_SECRET), 0);
    assert_true(raw_wait_closed(fd, 3000));
    close(fd);
}

static void test_command_before_handshake(void **state)
{
    (void)state;
    int fd = raw_connect(bp.port);
    struct kq_buf b = {0};
    kq_codec_append_heartbeat(&b, 5, 1);
    raw_send_buf(fd, &b);
    kq_buf_free(&b);
    struct kq_frame f;
    uint8_t *body;
    assert_int_equal(raw_read_frame(fd, 3000, &f, &body), 1);
    assert_int_equal(f.cmd, KQ_CMD_CONN_AUTH);
    assert_int_equal(f.opaque, 0);
    Protocol__ConnAuthAck *a =
        (Protocol__ConnAuthAck *)kq_codec_unpack(f.cmd, f.body, (size_t)f.body_len);
    assert_non_null(a);
    assert_false(a->status);
    assert_string_equal(a->feedback, "Unauthorized,Connection broken!");
    kq_codec_free(&a->base);
    free(body);
    assert_true(raw_wait_closed(fd, 3000));
    close(fd);
}

static void test_heartbeat_echo(void **state)
{
    (void)state;
    int fd = connect_as(TEST_PRODUCER);
    int64_t versions[] = {1700000000, -1, 0};
    uint32_t opaques[] = {7, 0, 0xffffffffu};
    for (int i = 0; i < 3; i++) {
        struct kq_buf b = {0};
        kq_codec_append_heartbeat(&b, opaques[i], versions[i]);
        raw_send_buf(fd, &b);
        kq_buf_free(&b);
        struct kq_frame f;
        uint8_t *body;
        assert_int_equal(raw_read_cmd(fd, KQ_CMD_HEARTBEAT, 3000, &f, &body), 1);
        assert_int_equal(f.opaque, opaques[i]); /* echoed, even 0 */
        Protocol__HeartBeat *h =
            (Protocol__HeartBeat *)kq_codec_unpack(f.cmd, f.body, (size_t)f.body_len);
        assert_non_null(h);
        assert_true(h->version == versions[i]);
        kq_codec_free(&h->base);
        free(body);
    }
    close(fd);
}

static void test_publish_checks(void **state)
{
    (void)state;
    int fd = connect_as(TEST_PRODUCER);
    char fb[128];
    struct raw_msg m = {.topic = "nope", .type = "pay-succ", .commit = true};
    assert_int_equal(raw_publish(fd, 10, &m, NULL, fb, sizeof fb), 0);
    assert_string_equal(fb, "UnSupport Topic Message!");
    /* exact membership: a topic sorting before the last one is rejected too (§3.3 bug) */
    m.topic = "abc";
    assert_int_equal(raw_publish(fd, 11, &m, NULL, fb, sizeof fb), 0);
    assert_string_equal(fb, "UnSupport Topic Message!");
    m.topic = "trade";
    m.id = "not-a-uuid";
    assert_int_equal(raw_publish(fd, 12, &m, NULL, fb, sizeof fb), 0);
    assert_string_equal(fb, "Invalid MessageId For UUID!");
    m.id = NULL;
    m.expired = time(NULL) - 100;
    assert_int_equal(raw_publish(fd, 13, &m, NULL, fb, sizeof fb), 0);
    assert_string_equal(fb, "Expired Message!");
    m.expired = 0;
    m.fly = true;
    m.commit = false;
    assert_int_equal(raw_publish(fd, 14, &m, NULL, fb, sizeof fb), 0);
    assert_string_equal(fb, "FLY MUST BE COMMITTED !");
    m.commit = true;
    m.type = "nobody-listens";
    assert_int_equal(raw_publish(fd, 15, &m, NULL, fb, sizeof fb), 1);
    assert_string_equal(fb, "FLY NO NEED SAVE");
    m.fly = false;
    assert_int_equal(raw_publish(fd, 0, &m, NULL, fb, sizeof fb), 1); /* opaque 0 echoed */
    assert_memory_equal(fb, "Store Result true Cost:", 23);
    /* then the store time in ms: decimal digits only, no leading zero */
    size_t nd = strspn(fb + 23, "0123456789");
    assert_true(nd >= 1 && fb[23 + nd] == 0 && (nd == 1 || fb[23] != '0'));
    close(fd);
}

static void test_deliver_and_ack(void **state)
{
    (void)state;
    int prod = connect_as(TEST_PRODUCER);
    int ca = connect_as(TEST_CONSUMER);
    int cb = connect_as(TEST_CONSUMER_B);
    char id[33], got[33], body[64];
    uint32_t op;
    struct raw_msg m = {.topic = "trade", .type = "pay-succ", .commit = true, .body = "pay 1"};
    assert_int_equal(raw_publish(prod, 20, &m, id, NULL, 0), 1);
    /* each bound group gets one copy */
    assert_int_equal(raw_recv_delivery(ca, 3000, got, &op, body, sizeof body), 1);
    assert_string_equal(got, id);
    assert_string_equal(body, "pay 1");
    assert_true(op != 0);
    assert_int_equal(raw_deliver_ack(ca, op, got, true), 0);
    assert_int_equal(raw_recv_delivery(cb, 3000, got, &op, body, sizeof body), 1);
    assert_string_equal(got, id);
    /* a nack gets a redelivery with a new opaque */
    assert_int_equal(raw_deliver_ack(cb, op, got, false), 0);
    uint32_t op2;
    assert_int_equal(raw_recv_delivery(cb, 3000, got, &op2, body, sizeof body), 1);
    assert_string_equal(got, id);
    assert_true(op2 != op);
    assert_int_equal(raw_deliver_ack(cb, op2, got, true), 0);
    /* group a acked: it never sees the message again */
    assert_int_equal(raw_recv_delivery(ca, 1500, got, &op, body, sizeof body), 0);
    /* regx binding: refund-* goes to group a only */
    m.type = "refund-partial";
    assert_int_equal(raw_publish(prod, 21, &m, id, NULL, 0), 1);
    assert_int_equal(raw_recv_delivery(ca, 3000, got, &op, body, sizeof body), 1);
    assert_string_equal(got, id);
    raw_deliver_ack(ca, op, got, true);
    assert_int_equal(raw_recv_delivery(cb, 1000, got, &op, body, sizeof body), 0);
    close(prod);
    close(ca);
    close(cb);
}

/* The plain way to write a message with the C client (zero-initialised, only topic, type
 * and body set) publishes a committed message that is delivered (it used to be two-phase:
 * stored, acked true and never delivered). */
static void test_client_plain_message_delivered(void **state)
{
    (void)state;
    int ca = connect_as(TEST_CONSUMER);
    char addr[64], err[128];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", bp.port);
    struct kq_client_options o = {.broker = addr, .group_id = TEST_PRODUCER, .secret = TEST_SECRET};
    struct kq_client *c;
    assert_int_equal(kq_client_open(&o, &c, err, sizeof err), 0);
    struct kq_message m = {
        .topic = "trade", .message_type = "refund-plain", .body = "plain", .body_len = 5};
    struct kq_publish_result r;
    assert_int_equal(kq_publish(c, &m, &r), 0);
    assert_true(r.status);
    char got[33], body[64];
    uint32_t op;
    assert_int_equal(raw_recv_delivery(ca, 3000, got, &op, body, sizeof body), 1);
    assert_string_equal(got, r.message_id);
    assert_string_equal(body, "plain");
    raw_deliver_ack(ca, op, got, true);
    assert_int_equal(raw_sync(ca), 0);
    kq_client_close(c);
    close(ca);
}

/* An ack with the right opaque on another connection must not complete the delivery
 * (the original matched acks by opaque alone). */
static void test_ack_matched_per_connection(void **state)
{
    (void)state;
    int prod = connect_as(TEST_PRODUCER);
    int ca = connect_as(TEST_CONSUMER);
    int other = connect_as(TEST_CONSUMER_B);
    char id[33], got[33];
    uint32_t op;
    struct raw_msg m = {.topic = "trade", .type = "refund-x", .commit = true};
    assert_int_equal(raw_publish(prod, 30, &m, id, NULL, 0), 1);
    assert_int_equal(raw_recv_delivery(ca, 3000, got, &op, NULL, 0), 1);
    raw_deliver_ack(other, op, got, true); /* wrong connection */
    /* no ack on ca within deliverySeconds (2 s): delivered again */
    uint32_t op2;
    assert_int_equal(raw_recv_delivery(ca, 5000, got, &op2, NULL, 0), 1);
    assert_string_equal(got, id);
    raw_deliver_ack(ca, op2, got, true);
    close(prod);
    close(ca);
    close(other);
}

/* A consumer that disconnects mid-delivery: another member of the group gets it. */
static void test_disconnect_mid_delivery(void **state)
{
    (void)state;
    int prod = connect_as(TEST_PRODUCER);
    int c1 = connect_as(TEST_CONSUMER);
    char id[33], got[33];
    uint32_t op;
    struct raw_msg m = {.topic = "trade", .type = "refund-y", .commit = true};
    assert_int_equal(raw_publish(prod, 40, &m, id, NULL, 0), 1);
    assert_int_equal(raw_recv_delivery(c1, 3000, got, &op, NULL, 0), 1);
    close(c1);
    int c2 = connect_as(TEST_CONSUMER);
    assert_int_equal(raw_recv_delivery(c2, 5000, got, &op, NULL, 0), 1);
    assert_string_equal(got, id);
    raw_deliver_ack(c2, op, got, true);
    close(prod);
    close(c2);
}

static void expect_still_serving(void)
{
    int fd = connect_as(TEST_PRODUCER);
    struct raw_msg m = {.topic = "trade", .type = "nobody", .commit = true, .fly = true};
    assert_int_equal(raw_publish(fd, 99, &m, NULL, NULL, 0), 1);
    close(fd);
}

static void test_bad_frames(void **state)
{
    (void)state;
    int keep = connect_as(TEST_PRODUCER); /* must survive everything below */
    uint8_t h[KQ_FRAME_HEADER_LEN];
    /* negative body length */
    int fd = connect_as(TEST_PRODUCER);
    kq_frame_header_write(h, 1, KQ_CMD_HEARTBEAT, 0x80000000u);
    raw_send(fd, h, sizeof h);
    assert_true(raw_wait_closed(fd, 3000));
    close(fd);
    /* body larger than 2 MiB */
    fd = connect_as(TEST_PRODUCER);
    kq_frame_header_write(h, 1, KQ_CMD_BYTES_MESSAGE, KQ_FRAME_MAX_BODY + 1);
    raw_send(fd, h, sizeof h);
    assert_true(raw_wait_closed(fd, 3000));
    close(fd);
    /* truncated frame, then close */
    fd = connect_as(TEST_PRODUCER);
    kq_frame_header_write(h, 1, KQ_CMD_BYTES_MESSAGE, 100);
    raw_send(fd, h, sizeof h);
    raw_send(fd, "abc", 3);
    close(fd);
    /* garbage protobuf in a publish: status false with a reason */
    fd = connect_as(TEST_PRODUCER);
    uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    kq_frame_header_write(h, 77, KQ_CMD_BYTES_MESSAGE, sizeof garbage);
    raw_send(fd, h, sizeof h);
    raw_send(fd, garbage, sizeof garbage);
    struct kq_frame f;
    uint8_t *body;
    assert_int_equal(raw_read_cmd(fd, KQ_CMD_MESSAGE_STORE_ACK, 3000, &f, &body), 1);
    assert_int_equal(f.opaque, 77);
    Protocol__MessageStoreAck *a =
        (Protocol__MessageStoreAck *)kq_codec_unpack(f.cmd, f.body, (size_t)f.body_len);
    assert_non_null(a);
    assert_false(a->status);
    assert_non_null(strstr(a->feedback, "Malformed"));
    kq_codec_free(&a->base);
    free(body);
    /* a message missing a required field (no body) */
    Protocol__Header hd = PROTOCOL__HEADER__INIT;
    hd.messageid = "0123456789abcdef0123456789abcdef";
    hd.topic = "trade";
    hd.messagetype = "x";
    hd.groupid = TEST_PRODUCER;
    uint8_t *hb;
    size_t hl;
    kq_header_pack(&hd, &hb, &hl);
    struct kq_buf b = {0};
    uint8_t only_header[256];
    only_header[0] = 0x0a;
    only_header[1] = (uint8_t)hl;
    memcpy(only_header + 2, hb, hl);
    free(hb);
    kq_frame_header_write(h, 78, KQ_CMD_BYTES_MESSAGE, (uint32_t)(hl + 2));
    raw_send(fd, h, sizeof h);
    raw_send(fd, only_header, hl + 2);
    assert_int_equal(raw_read_cmd(fd, KQ_CMD_MESSAGE_STORE_ACK, 3000, &f, &body), 1);
    assert_int_equal(f.opaque, 78);
    a = (Protocol__MessageStoreAck *)kq_codec_unpack(f.cmd, f.body, (size_t)f.body_len);
    assert_false(a->status);
    kq_codec_free(&a->base);
    free(body);
    /* unknown command type: ignored, connection keeps working */
    kq_frame_header_write(h, 79, 0x7e, 0);
    raw_send(fd, h, sizeof h);
    kq_codec_append_heartbeat(&b, 80, 5);
    raw_send_buf(fd, &b);
    assert_int_equal(raw_read_cmd(fd, KQ_CMD_HEARTBEAT, 3000, &f, &body), 1);
    assert_int_equal(f.opaque, 80);
    free(body);
    /* garbage in a heartbeat: logged close of that connection */
    kq_frame_header_write(h, 81, KQ_CMD_HEARTBEAT, sizeof garbage);
    raw_send(fd, h, sizeof h);
    raw_send(fd, garbage, sizeof garbage);
    assert_true(raw_wait_closed(fd, 3000));
    close(fd);
    kq_buf_free(&b);
    /* the first connection and new ones are still served */
    kq_codec_append_heartbeat(&b, 90, 1);
    raw_send_buf(keep, &b);
    kq_buf_free(&b);
    assert_int_equal(raw_read_cmd(keep, KQ_CMD_HEARTBEAT, 3000, &f, &body), 1);
    free(body);
    close(keep);
    expect_still_serving();
}

/* Replaces the \x01 of the first `marker` (e.g. "\x01junk") in the frame with NUL:
 * protobuf-c packs strings with strlen, so a NUL inside one is patched in after packing. */
static void put_nul(struct kq_buf *b, const char *marker)
{
    uint8_t *at = memmem(b->data, b->len, marker, strlen(marker));
    assert_non_null(at);
    *at = 0;
}

/* Publish header h with a body of len bytes (cmd 0x11/0x12); the frame is in b, unsent. */
static void message_frame(struct kq_buf *b, uint32_t opaque, uint8_t cmd, const Protocol__Header *h,
                          const void *body, size_t len)
{
    uint8_t *hb;
    size_t hl;
    assert_int_equal(kq_header_pack(h, &hb, &hl), 0);
    assert_int_equal(kq_codec_append_message(b, opaque, cmd, hb, hl, body, len), 0);
    free(hb);
}

static Protocol__Header header(const char *id, const char *topic, const char *type)
{
    Protocol__Header h = PROTOCOL__HEADER__INIT;
    h.messageid = (char *)id;
    h.topic = (char *)topic;
    h.messagetype = (char *)type;
    h.groupid = TEST_PRODUCER;
    h.commit = true;
    return h;
}

static char *store_ack_feedback(int fd, uint32_t opaque, bool *status)
{
    struct kq_frame f;
    uint8_t *body;
    assert_int_equal(raw_read_cmd(fd, KQ_CMD_MESSAGE_STORE_ACK, 5000, &f, &body), 1);
    assert_int_equal(f.opaque, opaque);
    Protocol__MessageStoreAck *a =
        (Protocol__MessageStoreAck *)kq_codec_unpack(f.cmd, f.body, (size_t)f.body_len);
    assert_non_null(a);
    *status = a->status;
    char *fb = strdup(a->feedback);
    kq_codec_free(&a->base);
    free(body);
    return fb;
}

/* A StringMessage body with NUL bytes is stored and delivered whole (it was cut at the first
 * NUL and acked true). */
static void test_string_body_with_nul_kept(void **state)
{
    (void)state;
    int prod = connect_as(TEST_PRODUCER);
    int ca = connect_as(TEST_CONSUMER);
    char id[33];
    kq_message_id_generate(id);
    Protocol__Header h = header(id, "trade", "refund-nul");
    static const char body[] = "ab\0cd\0";
    struct kq_buf b = {0};
    message_frame(&b, 50, KQ_CMD_STRING_MESSAGE, &h, body, sizeof body);
    assert_int_equal(raw_send_buf(prod, &b), 0);
    kq_buf_free(&b);
    bool ok;
    free(store_ack_feedback(prod, 50, &ok));
    assert_true(ok);
    struct kq_frame f;
    uint8_t *raw;
    assert_int_equal(raw_read_cmd(ca, KQ_CMD_STRING_MESSAGE, 3000, &f, &raw), 1);
    ProtobufCMessage *m = kq_codec_unpack(f.cmd, f.body, (size_t)f.body_len);
    struct kq_message_view v;
    assert_int_equal(kq_message_view(f.cmd, m, &v), 0);
    assert_string_equal(v.header->messageid, id);
    assert_int_equal(v.body_len, sizeof body);
    assert_memory_equal(v.body, body, sizeof body);
    raw_deliver_ack(ca, f.opaque, id, true);
    kq_codec_free(m);
    free(raw);
    assert_int_equal(raw_sync(ca), 0);
    close(prod);
    close(ca);
}

/* Names with a NUL byte are refused: "secret\0junk" no longer authenticates as "secret",
 * "p-trade\0junk" not as "p-trade", and a topic "trade\0x" is not stored as "trade". */
static void test_nul_in_names_refused(void **state)
{
    (void)state;
    static const char *const metas[][2] = {{TEST_PRODUCER, TEST_SECRET "\x01junk"},
                                           {TEST_PRODUCER "\x01junk", TEST_SECRET}};
    for (int i = 0; i < 2; i++) {
        int fd = raw_connect(bp.port);
        assert_true(fd >= 0);
        struct kq_buf b = {0};
        kq_codec_append_conn_meta(&b, 1, metas[i][0], metas[i][1], 0);
        put_nul(&b, "\x01junk");
        raw_send_buf(fd, &b);
        kq_buf_free(&b);
        struct kq_frame f;
        uint8_t *body;
        assert_int_equal(raw_read_cmd(fd, KQ_CMD_CONN_AUTH, 3000, &f, &body), 1);
        Protocol__ConnAuthAck *a =
            (Protocol__ConnAuthAck *)kq_codec_unpack(f.cmd, f.body, (size_t)f.body_len);
        assert_non_null(a);
        assert_false(a->status);
        assert_non_null(
            strstr(a->feedback, i == 0 ? "NUL byte in secretKey" : "NUL byte in groupId"));
        kq_codec_free(&a->base);
        free(body);
        assert_true(raw_wait_closed(fd, 3000));
        close(fd);
    }
    int prod = connect_as(TEST_PRODUCER);
    char id[33];
    kq_message_id_generate(id);
    Protocol__Header h = header(id, "trade\x01x", "pay-succ");
    struct kq_buf b = {0};
    message_frame(&b, 51, KQ_CMD_BYTES_MESSAGE, &h, "x", 1);
    put_nul(&b, "\x01x");
    raw_send_buf(prod, &b);
    kq_buf_free(&b);
    bool ok;
    char *fb = store_ack_feedback(prod, 51, &ok);
    assert_false(ok);
    assert_string_equal(fb, "Malformed Message: NUL byte in topic");
    free(fb);
    close(prod);
}

/* The broker completes the header (create time, expiry): a publish that just fits the 2 MiB
 * frame limit can need a bigger delivery frame. Refused at publish with the reason (it was
 * acked, then never delivered). */
static void test_publish_too_large_for_delivery(void **state)
{
    (void)state;
    int prod = connect_as(TEST_PRODUCER);
    char id[33];
    kq_message_id_generate(id);
    Protocol__Header h = header(id, "trade", "refund-big");
    h.expiredtime = 0;    /* completed to now + 7 days: 5 bytes longer */
    h.has_createtime = 0; /* completed to now: 6 bytes longer */
    uint8_t *hb;
    size_t hl;
    assert_int_equal(kq_header_pack(&h, &hb, &hl), 0);
    free(hb);
    size_t len = KQ_FRAME_MAX_BODY;
    while (kq_codec_message_size(hl, len) > KQ_FRAME_MAX_BODY)
        len--;
    assert_int_equal(kq_codec_message_size(hl, len), KQ_FRAME_MAX_BODY); /* the publish fits */
    uint8_t *body = calloc(1, len);
    assert_non_null(body);
    struct kq_buf b = {0};
    message_frame(&b, 52, KQ_CMD_BYTES_MESSAGE, &h, body, len);
    free(body);
    assert_int_equal(raw_send_buf(prod, &b), 0);
    kq_buf_free(&b);
    bool ok;
    char *fb = store_ack_feedback(prod, 52, &ok);
    assert_false(ok);
    assert_non_null(strstr(fb, "Message Too Large"));
    free(fb);
    close(prod);
}

/* Unauthenticated garbage from one peer: at most one line a second, whatever the count. */
static void test_garbage_logged_per_peer(void **state)
{
    (void)state;
    int before = broker_log_count(&bp, "command before handshake peer=127.0.0.1:");
    uint64_t t0 = kq_mono_us();
    for (int i = 0; i < 30; i++) {
        int fd = raw_connect(bp.port);
        assert_true(fd >= 0);
        struct kq_buf b = {0};
        kq_codec_append_heartbeat(&b, 5, 1);
        raw_send_buf(fd, &b);
        kq_buf_free(&b);
        assert_true(raw_wait_closed(fd, 3000));
        close(fd);
    }
    int secs = (int)((kq_mono_us() - t0) / 1000000) + 1;
    int lines = broker_log_count(&bp, "command before handshake peer=127.0.0.1:") - before;
    assert_true(lines >= 1 && lines <= secs + 1);
}

static void test_idle_connection_closed(void **state)
{
    (void)state;
    int fd = connect_as(TEST_CONSUMER);
    /* heartbeatTimeoutSeconds = 3 in this config: a silent connection is closed */
    assert_true(raw_wait_closed(fd, 8000));
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake_and_auth),
        cmocka_unit_test(test_command_before_handshake),
        cmocka_unit_test(test_heartbeat_echo),
        cmocka_unit_test(test_publish_checks),
        cmocka_unit_test(test_deliver_and_ack),
        cmocka_unit_test(test_client_plain_message_delivered),
        cmocka_unit_test(test_ack_matched_per_connection),
        cmocka_unit_test(test_disconnect_mid_delivery),
        cmocka_unit_test(test_bad_frames),
        cmocka_unit_test(test_string_body_with_nul_kept),
        cmocka_unit_test(test_nul_in_names_refused),
        cmocka_unit_test(test_publish_too_large_for_delivery),
        cmocka_unit_test(test_garbage_logged_per_peer),
        cmocka_unit_test(test_idle_connection_closed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
