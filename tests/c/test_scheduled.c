/* Integration: scheduled delivery and per-message groups with the real broker.
 *
 * A delay asked for with the property x-kiteq-delay-ms or by on_publish's delay_ms is not
 * delivered before it is due and is delivered soon after; the consumer sees the due time as
 * x-kiteq-deliver-at; on_publish's groups deliver to exactly those bound groups; both survive a
 * restart on the file store; bad values get a clear refusal. Timing asserts have margins in
 * the safe direction only: "nothing before due - MARGIN" (a slow host only delays deliveries)
 * and "delivered within due + DEADLINE". */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>

#include "client/kiteq_client.h"
#include "support/broker_proc.h"
#include "support/test_files.h"

#define MARGIN_MS 400
#define DEADLINE_MS 10000

/* pay-succ goes to both consumer groups; refund-* only to s-trade-a (default config). The
 * policy delays type "later", sends property pick=b to s-trade-b only, and asks for a group
 * with no binding on the topic for pick=ghost (an invalid answer: stored unchanged). */
static const char PUBLISH_LUA[] =
    "return { on_publish = function(m)\n"
    "  local c = {}\n"
    "  if m.message_type == 'later' then c.delay_ms = 1500 end\n"
    "  if m.properties.pick == 'b' then c.groups = { 's-trade-b' } end\n"
    "  if m.properties.pick == 'ghost' then c.groups = { 's-ghost' } end\n"
    "  if next(c) == nil then return nil end\n"
    "  return c\n"
    "end }\n";

static struct broker_proc bp;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void start_broker(void)
{
    assert_int_equal(broker_prepare(&bp), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/policies", bp.dir);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/policies/publish.lua", bp.dir);
    test_write_file(path, PUBLISH_LUA);
    char cfg[4096];
    broker_default_config(cfg, sizeof cfg, "file://./data?fsync=group", "policies = \"policies\",");
    assert_int_equal(broker_launch(&bp, cfg, "127.0.0.1:0", NULL), 0);
}

/* Nothing arrives on fd for ms (a delivery would fail the test). */
static void expect_nothing(int fd, int ms, const char *what)
{
    char id[33];
    uint32_t op;
    if (ms > 0 && raw_recv_delivery_prop(fd, ms, id, &op, NULL, NULL) == 1)
        fail_msg("%s: %s delivered too early", what, id);
}

/* The delivery of id arrives by deadline (Unix ms); it is acked. Returns its deliver-at
 * property as a number (0 when absent). */
static int64_t expect_delivery(int fd, const char *want, int64_t deadline)
{
    char id[33], *at = NULL;
    uint32_t op;
    int64_t left = deadline - now_ms();
    if (raw_recv_delivery_prop(fd, left > 0 ? (int)left : 1, id, &op, "x-kiteq-deliver-at", &at) !=
        1)
        fail_msg("%s not delivered in time", want);
    assert_string_equal(id, want);
    int64_t due = at ? strtoll(at, NULL, 10) : 0;
    free(at);
    assert_int_equal(raw_deliver_ack(fd, op, id, true), 0);
    return due;
}

static void test_delay_by_property(void **state)
{
    (void)state;
    start_broker();
    int producer = raw_connect_as(bp.port, TEST_PRODUCER, TEST_SECRET);
    int consumer = raw_connect_as(bp.port, TEST_CONSUMER, TEST_SECRET);
    static const char *const delay[] = {"x-kiteq-delay-ms", "1500", NULL};
    struct raw_msg m = {
        .topic = "trade", .type = "pay-succ", .body = "later", .commit = true, .props = delay};
    char late[33], now_id[33], fb[256];
    int64_t t0 = now_ms();
    assert_int_equal(raw_publish(producer, 1, &m, late, fb, sizeof fb), 1);
    int64_t t1 = now_ms();
    /* a message published after it, without a delay, is not held up by it */
    struct raw_msg plain = {.topic = "trade", .type = "pay-succ", .body = "now", .commit = true};
    assert_int_equal(raw_publish(producer, 2, &plain, now_id, fb, sizeof fb), 1);
    assert_int_equal(expect_delivery(consumer, now_id, now_ms() + DEADLINE_MS), 0);
    expect_nothing(consumer, (int)(t0 + 1500 - MARGIN_MS - now_ms()), "delay 1500 ms");
    int64_t due = expect_delivery(consumer, late, t1 + 1500 + DEADLINE_MS);
    assert_true(due >= t0 + 1500 && due <= t1 + 1500); /* what the consumer sees: when due */
    assert_true(now_ms() >= due);
    assert_int_equal(broker_stop(&bp), 0);
}

static void test_bad_values(void **state)
{
    (void)state;
    start_broker();
    int producer = raw_connect_as(bp.port, TEST_PRODUCER, TEST_SECRET);
    int consumer = raw_connect_as(bp.port, TEST_CONSUMER, TEST_SECRET);
    static const char *const word[] = {"x-kiteq-delay-ms", "soon", NULL};
    static const char *const neg[] = {"x-kiteq-delay-ms", "-5", NULL};
    static const char *const big[] = {"x-kiteq-delay-ms", "604800001", NULL};
    static const char *const twice[] = {"x-kiteq-delay-ms", "5", "x-kiteq-delay-ms", "6", NULL};
    static const char *const forged[] = {"x-kiteq-deliver-at", "1", NULL};
    static const char *const ok[] = {"x-kiteq-delay-ms", "5000", NULL};
    static const struct {
        const char *const *props;
        int64_t expired_in; /* s; 0 = the default */
        const char *feedback;
    } cases[] = {
        {word, 0,
         "x-kiteq-delay-ms must be given once, as a whole number of milliseconds in "
         "0..604800000 (got \"soon\")"},
        {neg, 0, "(got \"-5\")"},
        {big, 0, "(got \"604800001\")"},
        {twice, 0, "(got \"6\" and more)"},
        {forged, 0, "Invalid Property: x-kiteq-deliver-at is set by the broker"},
        {ok, 3, "x-kiteq-delay-ms 5000: the message would be due after it expires"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct raw_msg m = {.topic = "trade",
                            .type = "pay-succ",
                            .commit = true,
                            .props = cases[i].props,
                            .expired = cases[i].expired_in ? time(NULL) + cases[i].expired_in : 0};
        char id[33], fb[256];
        assert_int_equal(raw_publish(producer, (uint32_t)i + 1, &m, id, fb, sizeof fb), 0);
        if (!strstr(fb, cases[i].feedback))
            fail_msg("case %zu: feedback \"%s\"", i, fb);
    }
    expect_nothing(consumer, 500, "refused messages");
    assert_int_equal(broker_stop(&bp), 0);
}

static void test_policy_delay_and_groups(void **state)
{
    (void)state;
    start_broker();
    int producer = raw_connect_as(bp.port, TEST_PRODUCER, TEST_SECRET);
    int a = raw_connect_as(bp.port, TEST_CONSUMER, TEST_SECRET);
    int b = raw_connect_as(bp.port, TEST_CONSUMER_B, TEST_SECRET);
    char id[33], fb[256];
    static const char *const pick_b[] = {"pick", "b", NULL};
    static const char *const ghost[] = {"pick", "ghost", NULL};
    /* groups: refund-x is routed to s-trade-a only by type; the policy sends it to s-trade-b
     * (bound on the topic) instead */
    struct raw_msg refund = {.topic = "trade", .type = "refund-x", .commit = true, .props = pick_b};
    assert_int_equal(raw_publish(producer, 1, &refund, id, fb, sizeof fb), 1);
    expect_delivery(b, id, now_ms() + DEADLINE_MS);
    /* a pay-succ for both groups by type: only s-trade-b gets it */
    struct raw_msg pay = {.topic = "trade", .type = "pay-succ", .commit = true, .props = pick_b};
    char id2[33];
    assert_int_equal(raw_publish(producer, 2, &pay, id2, fb, sizeof fb), 1);
    expect_delivery(b, id2, now_ms() + DEADLINE_MS);
    /* an unbound group: the answer is invalid, the message goes where routing sends it */
    struct raw_msg bad = {.topic = "trade", .type = "pay-succ", .commit = true, .props = ghost};
    char id3[33];
    assert_int_equal(raw_publish(producer, 3, &bad, id3, fb, sizeof fb), 1);
    expect_delivery(a, id3, now_ms() + DEADLINE_MS); /* s-trade-a got nothing before this */
    expect_delivery(b, id3, now_ms() + DEADLINE_MS);
    assert_true(broker_log_count(&bp, "groups[1] \"s-ghost\" has no binding on the topic") >= 1);
    expect_nothing(a, 300, "s-trade-a (only s-trade-b was chosen)");
    assert_int_equal(broker_stop(&bp), 0);
}

/* on_publish delays type "later" by 1.5 s (and sends it to s-trade-b: no binding routes
 * that type). */
static void test_policy_delay(void **state)
{
    (void)state;
    start_broker();
    int producer = raw_connect_as(bp.port, TEST_PRODUCER, TEST_SECRET);
    int b = raw_connect_as(bp.port, TEST_CONSUMER_B, TEST_SECRET);
    char id[33], fb[256];
    static const char *const pick_b[] = {"pick", "b", NULL};
    struct raw_msg later = {.topic = "trade", .type = "later", .commit = true, .props = pick_b};
    int64_t t0 = now_ms();
    assert_int_equal(raw_publish(producer, 1, &later, id, fb, sizeof fb), 1);
    int64_t t1 = now_ms();
    expect_nothing(b, (int)(t0 + 1500 - MARGIN_MS - now_ms()), "on_publish delay_ms 1500");
    int64_t due = expect_delivery(b, id, t1 + 1500 + DEADLINE_MS);
    assert_true(due >= t0 + 1500 && due <= t1 + 1500);
    assert_int_equal(broker_stop(&bp), 0);
}

/* A delayed message for one chosen group, stored in the file store, the broker restarted
 * before it is due: it still waits for its due time, and goes to that group only. */
static void test_delay_and_groups_survive_restart(void **state)
{
    (void)state;
    start_broker();
    int producer = raw_connect_as(bp.port, TEST_PRODUCER, TEST_SECRET);
    static const char *const props[] = {"x-kiteq-delay-ms", "4000", "pick", "b", NULL};
    struct raw_msg m = {.topic = "trade", .type = "pay-succ", .commit = true, .props = props};
    char id[33], fb[256];
    int64_t t0 = now_ms();
    assert_int_equal(raw_publish(producer, 1, &m, id, fb, sizeof fb), 1);
    int64_t t1 = now_ms();
    assert_int_equal(broker_stop(&bp), 0);
    assert_int_equal(broker_restart(&bp, NULL), 0);
    int a = raw_connect_as(bp.port, TEST_CONSUMER, TEST_SECRET);
    int b = raw_connect_as(bp.port, TEST_CONSUMER_B, TEST_SECRET);
    expect_nothing(b, (int)(t0 + 4000 - MARGIN_MS - now_ms()), "after a restart");
    int64_t due = expect_delivery(b, id, t1 + 4000 + DEADLINE_MS);
    assert_true(due >= t0 + 4000 && due <= t1 + 4000);
    expect_nothing(a, 300, "s-trade-a (only s-trade-b was chosen)");
    assert_int_equal(broker_stop(&bp), 0);
}

/* The client library's kq_publish_delayed: out-of-range delays and a second delay property
 * are refused before sending; a valid one is stored at once and delivered when due. */
static void test_client_publish_delayed(void **state)
{
    (void)state;
    start_broker();
    char addr[64], err[256];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", bp.port);
    struct kq_client_options o = {.broker = addr, .group_id = TEST_PRODUCER, .secret = TEST_SECRET};
    struct kq_client *c;
    assert_int_equal(kq_client_open(&o, &c, err, sizeof err), 0);
    int consumer = raw_connect_as(bp.port, TEST_CONSUMER, TEST_SECRET);
    struct kq_message m = {.topic = "trade",
                           .message_type = "pay-succ",
                           .body = "x",
                           .body_len = 1,
                           .expired_time = -1,
                           .deliver_limit = -1};
    struct kq_publish_result r;
    assert_int_equal(kq_publish_delayed(c, &m, -1, &r), -EINVAL);
    assert_int_equal(kq_publish_delayed(c, &m, KQ_MAX_DELAY_MS + 1, &r), -EINVAL);
    struct kq_property twice = {KQ_DELAY_PROPERTY, "5"};
    struct kq_message m2 = m;
    m2.properties = &twice;
    m2.n_properties = 1;
    assert_int_equal(kq_publish_delayed(c, &m2, 5, &r), -EINVAL);
    int64_t t0 = now_ms();
    assert_int_equal(kq_publish_delayed(c, &m, 1000, &r), 0);
    int64_t t1 = now_ms();
    assert_true(r.status);
    expect_nothing(consumer, (int)(t0 + 1000 - MARGIN_MS - now_ms()), "kq_publish_delayed 1000");
    int64_t due = expect_delivery(consumer, r.message_id, t1 + 1000 + DEADLINE_MS);
    assert_true(due >= t0 + 1000 && due <= t1 + 1000);
    kq_client_close(c);
    assert_int_equal(broker_stop(&bp), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delay_by_property),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_policy_delay_and_groups),
        cmocka_unit_test(test_policy_delay),
        cmocka_unit_test(test_delay_and_groups_survive_restart),
        cmocka_unit_test(test_client_publish_delayed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
