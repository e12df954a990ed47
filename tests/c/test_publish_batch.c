/* Integration (issue #15): many frames written with ONE send, so that they arrive in one
 * socket read, to a broker (memory store) whose policies define the per-message hooks
 * on_publish (publish.lua) and route_message (routing.lua). Whatever the broker does with a
 * read's publishes inside (one entry into Lua each, or one for all), each client must see
 * what it sees when the frames come one at a time: every publish answered exactly once by
 * its own opaque with its own message's verdict, a heartbeat answered after what came before
 * it, a hook's failure on one message costing only that message its change, a duplicate id
 * stored once, and each consumer receiving exactly its messages, once each. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/clock.h"
#include "support/broker_proc.h"
#include "support/test_files.h"

/* A message whose property n is a multiple of 7 is refused ("n=14"), `boom` raises, `slow`
 * runs until the call's budget stops it; a message with an n gets checked=yes-N (its own
 * answer: a verdict handed to the wrong message shows), one without is accepted as is. */
static const char PUBLISH_LUA[] =
    "return { on_publish = function(m)\n"
    "  local p = m.properties\n"
    "  if p.boom then error('boom on n=' .. p.n) end\n"
    "  if p.slow then while true do end end\n"
    "  if not p.n then return nil end\n"
    "  if tonumber(p.n) % 7 == 0 then return 'reject', 'n=' .. p.n end\n"
    "  return { properties = { checked = 'yes-' .. p.n } }\n"
    "end }\n";

/* routing.lua is the shipped example: region R -> the group s-R when it is bound on the
 * topic (the test config's s-trade-a and s-trade-b: regions "trade-a" and "trade-b"). */
#define ROUTING_EXAMPLE "lua/policies/examples/routing_by_property.lua"

#define TYPE "refund-batch" /* bound for s-trade-a only (regx refund-.*) */
#define SLOTS 128           /* answers are kept by opaque: 1..SLOTS-1 */
#define SYNC_OPAQUE (SLOTS - 1)
#define WAIT_MS 5000

static struct broker_proc bp;
static int admin, producer = -1, consumer = -1; /* consumer: s-trade-a */

static void start_broker(void)
{
    assert_int_equal(broker_prepare(&bp), 0);
    broker_write_policy(&bp, "publish.lua", PUBLISH_LUA);
    char *routing = test_read_source(ROUTING_EXAMPLE);
    broker_write_policy(&bp, "routing.lua", routing);
    free(routing);
    char cfg[4096];
    broker_default_config(cfg, sizeof cfg, "memory://",
                          "policies = \"policies\", admin = \"127.0.0.1:0\",");
    assert_int_equal(broker_launch(&bp, cfg, "127.0.0.1:0", NULL), 0);
    assert_true(broker_wait_log(&bp, "hooks=", WAIT_MS));
    assert_true((admin = broker_admin_port(&bp)) > 0);
    assert_true(isfinite(admin_json_number(admin, "/stat", "broker.hooks.publish.calls")));
    assert_true(isfinite(admin_json_number(admin, "/stat", "broker.hooks.route_message.calls")));
    consumer = raw_connect_as(bp.port, TEST_CONSUMER, TEST_SECRET);
    producer = raw_connect_as(bp.port, TEST_PRODUCER, TEST_SECRET);
}

static int teardown(void **state)
{
    (void)state;
    close(producer);
    close(consumer);
    producer = consumer = -1;
    return broker_stop(&bp) == 0 ? 0 : -1;
}

/* --- one write of many frames ------------------------------------------------------------- */

/* Appends a publish of trade/TYPE with opaque and the given properties (key, value, ...,
 * NULL); id NULL: a fresh one. The id goes to id_out. */
static void add_publish(struct kq_buf *w, uint32_t opaque, const char *id, bool commit,
                        const char *const *props, char id_out[33])
{
    struct raw_msg m = {.id = id,
                        .topic = "trade",
                        .type = TYPE,
                        .group = TEST_PRODUCER,
                        .body = "batch",
                        .commit = commit,
                        .props = props};
    assert_int_equal(raw_append_publish(w, opaque, &m, id_out), 0);
}

/* A publish whose property n is its opaque, plus one more property (key, value; key NULL:
 * none). */
static void add_numbered(struct kq_buf *w, uint32_t n, const char *key, const char *value,
                         char id_out[33])
{
    char num[16];
    snprintf(num, sizeof num, "%u", n);
    const char *props[] = {"n", num, key, value, NULL};
    add_publish(w, n, NULL, true, props, id_out);
}

static void add_heartbeat(struct kq_buf *w, uint32_t opaque)
{
    assert_int_equal(kq_codec_append_heartbeat(w, opaque, 42), 0);
}

/* --- the producer's answers --------------------------------------------------------------- */

struct answers {
    uint8_t cmd[SLOTS]; /* MessageStoreAck or heartbeat; 0: no answer yet */
    int order[SLOTS];   /* the answer's place among all answers read (0, 1, ...) */
    int status[SLOTS];  /* a MessageStoreAck's */
    char id[SLOTS][33];
    char feedback[SLOTS][160];
};

static void record_answer(struct answers *a, const struct kq_frame *f, int order)
{
    if (f->opaque >= SLOTS || a->cmd[f->opaque])
        fail_msg("a second or unexpected answer (cmd 0x%02x) to opaque %u", f->cmd, f->opaque);
    a->cmd[f->opaque] = f->cmd;
    a->order[f->opaque] = order;
    if (f->cmd != KQ_CMD_MESSAGE_STORE_ACK)
        return;
    Protocol__MessageStoreAck *ack =
        (Protocol__MessageStoreAck *)kq_codec_unpack(f->cmd, f->body, (size_t)f->body_len);
    assert_non_null(ack);
    a->status[f->opaque] = ack->status;
    snprintf(a->id[f->opaque], sizeof a->id[0], "%s", ack->messageid);
    snprintf(a->feedback[f->opaque], sizeof a->feedback[0], "%s", ack->feedback);
    kq_codec_free(&ack->base);
}

/* Sends w (in one write) and reads the producer's answers until `want` of them
 * (MessageStoreAcks and heartbeats) came, then a heartbeat round trip: a second answer to an
 * opaque, or one more than want, fails the test. */
static void send_and_answer(struct kq_buf *w, struct answers *a, int want)
{
    assert_int_equal(raw_send_buf(producer, w), 0);
    kq_buf_free(w);
    memset(a, 0, sizeof *a);
    int got = 0;
    bool sync_sent = false, synced = false;
    uint64_t deadline = kq_mono_us() / 1000 + WAIT_MS;
    while (!synced) {
        if (got >= want && !sync_sent) {
            add_heartbeat(w, SYNC_OPAQUE);
            assert_int_equal(raw_send_buf(producer, w), 0);
            kq_buf_free(w);
            sync_sent = true;
        }
        uint64_t now = kq_mono_us() / 1000;
        struct kq_frame f;
        uint8_t *body;
        int rc = raw_read_frame(producer, now < deadline ? (int)(deadline - now) : 0, &f, &body);
        if (rc != 1)
            fail_msg("%d of %d answers came (rc %d)", got, want, rc);
        if (f.cmd == KQ_CMD_HEARTBEAT && f.opaque == SYNC_OPAQUE)
            synced = true;
        else if (f.cmd == KQ_CMD_MESSAGE_STORE_ACK || f.cmd == KQ_CMD_HEARTBEAT)
            record_answer(a, &f, got++);
        free(body);
    }
    if (got != want)
        fail_msg("%d answers, want %d", got, want);
}

/* opaque's answer is a MessageStoreAck with status ok for message id (NULL: any) whose
 * feedback starts with feedback (NULL: the broker's "stored" text). */
static void expect_ack(const struct answers *a, uint32_t opaque, const char *id, bool ok,
                       const char *feedback)
{
    if (a->cmd[opaque] != KQ_CMD_MESSAGE_STORE_ACK)
        fail_msg("no MessageStoreAck for opaque %u", opaque);
    if (a->status[opaque] != ok || (id && strcmp(a->id[opaque], id) != 0))
        fail_msg("opaque %u: ack status %d id %s feedback \"%s\", want %d %s", opaque,
                 a->status[opaque], a->id[opaque], a->feedback[opaque], ok, id ? id : "");
    if (!feedback)
        feedback = "Store Result true";
    if (strncmp(a->feedback[opaque], feedback, strlen(feedback)) != 0)
        fail_msg("opaque %u: feedback \"%s\", want \"%s...\"", opaque, a->feedback[opaque],
                 feedback);
}

/* --- the consumers ------------------------------------------------------------------------ */

/* The deliveries a consumer must get: each id once, with property checked (NULL: none). */
struct expected {
    int n;
    char id[SLOTS][33];
    char checked_text[SLOTS][16];
    const char *checked[SLOTS];
};

static void expect_delivery(struct expected *e, const char *id, const char *checked)
{
    assert_true(e->n < SLOTS);
    memcpy(e->id[e->n], id, 33);
    e->checked[e->n] = NULL;
    if (checked) {
        snprintf(e->checked_text[e->n], sizeof e->checked_text[0], "%s", checked);
        e->checked[e->n] = e->checked_text[e->n];
    }
    e->n++;
}

/* Receives deliveries on fd until each expected one came once, and acks each. A delivery of
 * another id, a second one or the wrong property checked fails. */
static void receive_exactly(int fd, const struct expected *e)
{
    bool seen[SLOTS] = {0};
    for (int left = e->n; left > 0; left--) {
        char id[33];
        uint32_t opaque;
        char *value = NULL;
        if (raw_recv_delivery_prop(fd, WAIT_MS, id, &opaque, "checked", &value) != 1)
            fail_msg("%d of %d deliveries came", e->n - left, e->n);
        int i = 0;
        while (i < e->n && strcmp(e->id[i], id) != 0)
            i++;
        if (i == e->n || seen[i])
            fail_msg("delivery of %s: %s", id, i == e->n ? "not expected here" : "a second copy");
        seen[i] = true;
        const char *want = e->checked[i];
        if (want ? !value || strcmp(value, want) != 0 : value != NULL)
            fail_msg("%s: checked=%s, want %s", id, value ? value : "(none)",
                     want ? want : "(none)");
        free(value);
        assert_int_equal(raw_deliver_ack(fd, opaque, id, true), 0);
    }
    assert_int_equal(raw_sync(fd), 0);
}

/* Every message is done: none waits for an ack or a consumer (a copy sent to a group that was
 * not its own would still wait for an ack), and `acked` copies were acked in all. */
static void expect_all_done(double acked)
{
    uint64_t deadline = kq_mono_us() / 1000 + WAIT_MS;
    double pending;
    while ((pending = admin_json_number(admin, "/stat", "broker.pending")) != 0 &&
           kq_mono_us() / 1000 < deadline)
        usleep(20 * 1000);
    if (pending != 0)
        fail_msg("%.0f messages still pending", pending);
    assert_true(admin_json_number(admin, "/stat", "broker.totals.acked") == acked);
}

static double publish_stat(const char *key)
{
    char keys[64];
    snprintf(keys, sizeof keys, "broker.hooks.publish.%s", key);
    return admin_json_number(admin, "/stat", keys);
}

/* --- the cases ---------------------------------------------------------------------------- */

/* Publishes n numbered messages in one write, message `odd_at` with the property odd_key
 * (NULL: none); checks that those with n a multiple of 7 are refused with the hook's reason,
 * the others acked, and adds the others to e: with their own change, message odd_at as
 * published (the hook's failure falls back to "accept as is"). */
static void publish_numbered(uint32_t n, const char *odd_key, uint32_t odd_at, struct expected *e)
{
    struct kq_buf w = {0};
    char ids[SLOTS][33];
    assert_true(n < SYNC_OPAQUE);
    for (uint32_t i = 1; i <= n; i++)
        add_numbered(&w, i, i == odd_at ? odd_key : NULL, "1", ids[i]);
    static struct answers a;
    send_and_answer(&w, &a, (int)n);
    for (uint32_t i = 1; i <= n; i++) {
        char text[16];
        if (i % 7 == 0) {
            snprintf(text, sizeof text, "n=%u", i);
            expect_ack(&a, i, ids[i], false, text);
            assert_string_equal(a.feedback[i], text);
            continue;
        }
        expect_ack(&a, i, ids[i], true, NULL);
        snprintf(text, sizeof text, "yes-%u", i);
        expect_delivery(e, ids[i], i == odd_at && odd_key ? NULL : text);
    }
}

/* 40 publishes: those with n a multiple of 7 refused with the hook's reason, the others
 * stored with their own change. */
static void test_reject_and_change(void **state)
{
    (void)state;
    start_broker();
    static struct expected e;
    e.n = 0;
    publish_numbered(40, NULL, 0, &e);
    assert_int_equal(e.n, 40 - 40 / 7);
    receive_exactly(consumer, &e);
    expect_all_done(e.n);
    assert_true(publish_stat("rejects") == 40 / 7);
    assert_true(publish_stat("errors") == 0);
}

/* A hook that fails for the message `at` of n in one write (`key` set: raises or loops):
 * that one is stored unchanged, the others get their own answers; one error and one
 * fallback counted, logged as `why`. Then the broker still serves: the next publish gets its
 * change. */
static void one_hook_failure(uint32_t n, const char *key, uint32_t at, const char *why)
{
    assert_true((n + 1) % 7 != 0); /* the one after must be accepted */
    start_broker();
    static struct expected e;
    e.n = 0;
    publish_numbered(n, key, at, &e);
    char line[160];
    snprintf(line, sizeof line, "hook=publish topic=trade type=" TYPE " failed: %s", why);
    assert_true(broker_wait_log(&bp, line, WAIT_MS));
    assert_true(publish_stat("errors") == 1);
    assert_true(publish_stat("fallbacks") == 1);
    assert_true(publish_stat("rejects") == n / 7);

    struct kq_buf w = {0};
    char id[33], checked[16];
    add_numbered(&w, n + 1, NULL, NULL, id);
    static struct answers a;
    send_and_answer(&w, &a, 1);
    expect_ack(&a, n + 1, id, true, NULL);
    snprintf(checked, sizeof checked, "yes-%u", n + 1);
    expect_delivery(&e, id, checked);
    receive_exactly(consumer, &e);
    expect_all_done(e.n);
}

static void test_hook_error_on_one(void **state)
{
    (void)state;
    one_hook_failure(24, "boom", 11, "policies/publish.lua:3: boom on n=11");
}

/* The call over its budget (the loop never ends) is stopped. */
static void test_slow_hook_on_one(void **state)
{
    (void)state;
    one_hook_failure(10, "slow", 5, "stopped: over the");
}

#define N_ROUTE 30

/* route_message per message of one write: each region's consumer gets exactly its own. */
static void test_route_by_region(void **state)
{
    (void)state;
    start_broker();
    int us = raw_connect_as(bp.port, TEST_CONSUMER_B, TEST_SECRET); /* region trade-b */
    struct kq_buf w = {0};
    static struct expected to_a, to_b; /* consumer: region trade-a */
    to_a.n = to_b.n = 0;
    char ids[N_ROUTE + 1][33];
    for (uint32_t n = 1; n <= N_ROUTE; n++) {
        bool b = n % 3 == 0 || n % 5 == 0; /* mixed, runs of both */
        const char *props[] = {"region", b ? "trade-b" : "trade-a", NULL};
        struct raw_msg m = {.topic = "trade",
                            .type = "pay-succ", /* bound for both groups */
                            .group = TEST_PRODUCER,
                            .body = "route",
                            .commit = true,
                            .props = props};
        assert_int_equal(raw_append_publish(&w, n, &m, ids[n]), 0);
        expect_delivery(b ? &to_b : &to_a, ids[n], NULL); /* no n: on_publish keeps it as is */
    }
    static struct answers a;
    send_and_answer(&w, &a, N_ROUTE);
    for (uint32_t n = 1; n <= N_ROUTE; n++)
        expect_ack(&a, n, ids[n], true, NULL);
    receive_exactly(consumer, &to_a);
    receive_exactly(us, &to_b);
    expect_all_done(N_ROUTE); /* one copy each: none went to the other region too */
    assert_true(admin_json_number(admin, "/stat", "broker.hooks.route_message.errors") == 0);
    close(us);
}

/* Heartbeats, transaction answers, a malformed publish and one refused before the hook
 * (another group's) between publishes: each answered as alone. A heartbeat's answer comes
 * after the acks of the publishes written before it (the memory store acks at once: a
 * client's round trip is a barrier), a commit finds the uncommitted message published just
 * before it in the same write. */
static void test_other_frames_between(void **state)
{
    (void)state;
    start_broker();
    struct kq_buf w = {0};
    char ids[11][33], unknown[33], other_id[33];
    enum { MALFORMED = 6, WRONG_GROUP = 11, HB_1 = 101, TX_UNKNOWN, TX_COMMIT, HB_2 };
    for (uint32_t n = 1; n <= 3; n++)
        add_numbered(&w, n, NULL, NULL, ids[n]);
    add_heartbeat(&w, HB_1);
    kq_message_id_generate(unknown);
    assert_int_equal(raw_append_tx(&w, TX_UNKNOWN, unknown, TYPE, KQ_TX_COMMIT), 0);
    const char *four[] = {"n", "4", NULL};
    add_publish(&w, 4, NULL, false, four, ids[4]); /* uncommitted: the next frame commits it */
    assert_int_equal(raw_append_tx(&w, TX_COMMIT, ids[4], TYPE, KQ_TX_COMMIT), 0);
    add_numbered(&w, 5, NULL, NULL, ids[5]);
    add_heartbeat(&w, HB_2);
    static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    uint8_t h[KQ_FRAME_HEADER_LEN];
    kq_frame_header_write(h, MALFORMED, KQ_CMD_STRING_MESSAGE, sizeof garbage);
    assert_int_equal(kq_buf_append(&w, h, sizeof h), 0);
    assert_int_equal(kq_buf_append(&w, garbage, sizeof garbage), 0);
    for (uint32_t n = 7; n <= 10; n++) {
        add_numbered(&w, n, NULL, NULL, ids[n]);
        if (n == 8) { /* refused before the hook: another group's header */
            struct raw_msg other = {.topic = "trade", .type = TYPE, .group = TEST_CONSUMER};
            assert_int_equal(raw_append_publish(&w, WRONG_GROUP, &other, other_id), 0);
        }
    }
    static struct answers a;
    send_and_answer(&w, &a, 13); /* 11 acks (the malformed one's too), 2 heartbeats */
    static struct expected e;
    e.n = 0;
    for (uint32_t n = 1; n <= 10; n++) {
        if (n == MALFORMED)
            continue;
        expect_ack(&a, n, ids[n], n != 7, n == 7 ? "n=7" : NULL);
        char checked[16];
        snprintf(checked, sizeof checked, "yes-%u", n);
        if (n != 7)
            expect_delivery(&e, ids[n], checked);
    }
    expect_ack(&a, MALFORMED, "", false, "Malformed Message: protobuf decode failed");
    expect_ack(&a, WRONG_GROUP, other_id, false, "Invalid GroupId: ");
    assert_int_equal(a.cmd[HB_1], KQ_CMD_HEARTBEAT);
    assert_int_equal(a.cmd[HB_2], KQ_CMD_HEARTBEAT);
    assert_int_equal(a.cmd[TX_UNKNOWN], 0); /* a TxACK has no answer */
    assert_int_equal(a.cmd[TX_COMMIT], 0);
    for (uint32_t n = 1; n <= 5; n++) {
        if (n <= 3 && a.order[n] > a.order[HB_1])
            fail_msg("the heartbeat written after publish %u was answered before it", n);
        if (a.order[n] > a.order[HB_2])
            fail_msg("the heartbeat written after publish %u was answered before it", n);
    }
    receive_exactly(consumer, &e); /* 4 too: committed */
    expect_all_done(e.n);
}

/* One id twice in a write (the second with other properties): both acked true, stored and
 * delivered once, with the first one's change. */
static void test_same_id_twice(void **state)
{
    (void)state;
    start_broker();
    struct kq_buf w = {0};
    char ids[5][33];
    const char *one[] = {"n", "1", NULL}, *three[] = {"n", "3", NULL};
    add_publish(&w, 1, NULL, true, one, ids[1]);
    add_numbered(&w, 2, NULL, NULL, ids[2]);
    add_publish(&w, 3, ids[1], true, three, ids[3]); /* the same id as 1 */
    add_numbered(&w, 4, NULL, NULL, ids[4]);
    static struct answers a;
    send_and_answer(&w, &a, 4);
    for (uint32_t n = 1; n <= 4; n++)
        expect_ack(&a, n, ids[n], true, NULL);
    static struct expected e;
    e.n = 0;
    expect_delivery(&e, ids[1], "yes-1");
    expect_delivery(&e, ids[2], "yes-2");
    expect_delivery(&e, ids[4], "yes-4");
    receive_exactly(consumer, &e);
    expect_all_done(3);
    assert_true(admin_json_number(admin, "/stat", "broker.totals.stored") == 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_reject_and_change, teardown),
        cmocka_unit_test_teardown(test_hook_error_on_one, teardown),
        cmocka_unit_test_teardown(test_route_by_region, teardown),
        cmocka_unit_test_teardown(test_other_frames_between, teardown),
        cmocka_unit_test_teardown(test_same_id_twice, teardown),
        cmocka_unit_test_teardown(test_slow_hook_on_one, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
