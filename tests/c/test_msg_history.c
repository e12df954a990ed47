/* Integration: a message's history (issue 16). GET /msg/<id> (and `kiteq-cli msg`) shows
 * what happened to it while it is pending and after it finished (a finished message used to
 * answer "unknown"); at logLevel debug each event is one log line with the message id; the
 * ring of finished histories keeps messageHistory of them. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "core/clock.h"
#include "support/broker_proc.h"

static struct broker_proc bp;
static int admin_port;

static uint64_t now_ms(void) { return kq_mono_us() / 1000; }

static void start_logging(const char *extra_cluster, const char *log_level)
{
    char cfg[4096], extra[256];
    snprintf(extra, sizeof extra, "admin = \"127.0.0.1:0\", %s", extra_cluster);
    broker_default_config(cfg, sizeof cfg, "memory://", extra);
    const char *args[] = {log_level, NULL};
    assert_int_equal(broker_start(&bp, cfg, args), 0);
    admin_port = broker_admin_port(&bp);
    assert_true(admin_port > 0);
}

static void start(const char *extra_cluster) { start_logging(extra_cluster, "-logLevel=debug"); }

static int teardown(void **state)
{
    (void)state;
    return broker_stop(&bp) == 0 ? 0 : -1;
}

/* GET /msg/<id>: status into *status, the JSON returned. */
static cJSON *msg(const char *id, int *status)
{
    static char body[1 << 16];
    char path[128];
    snprintf(path, sizeof path, "/msg/%s", id);
    *status = admin_get(admin_port, path, body, sizeof body);
    cJSON *j = cJSON_Parse(body);
    if (!j)
        fail_msg("GET %s: %d %s", path, *status, body);
    return j;
}

static const char *str(cJSON *o, const char *key)
{
    cJSON *v = cJSON_GetObjectItem(o, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* The events of a /msg answer as one string: "published p-trade|stored|sent s-trade-a 1|...". */
static void events(cJSON *j, char *out, size_t len)
{
    size_t n = 0;
    out[0] = 0;
    cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(j, "history"))
    {
        cJSON *attempt = cJSON_GetObjectItem(e, "attempt");
        n += (size_t)snprintf(out + n, len - n, "%s%s%s%s", n ? "|" : "", str(e, "event"),
                              *str(e, "group") ? " " : "", str(e, "group"));
        if (attempt)
            n += (size_t)snprintf(out + n, len - n, " %d", attempt->valueint);
        if (n >= len)
            fail_msg("events too long");
    }
}

/* The index of the first event matching `name` (and group, may be NULL) from `from`, or -1. */
static int find_event(cJSON *j, int from, const char *name, const char *group)
{
    cJSON *h = cJSON_GetObjectItem(j, "history");
    for (int i = from; i < cJSON_GetArraySize(h); i++) {
        cJSON *e = cJSON_GetArrayItem(h, i);
        if (!strcmp(str(e, "event"), name) && (!group || !strcmp(str(e, "group"), group)))
            return i;
    }
    return -1;
}

static void publish(int prod, const char *type, int32_t limit, char id[33])
{
    struct raw_msg m = {.topic = "trade",
                        .type = type,
                        .group = TEST_PRODUCER,
                        .body = "b",
                        .commit = true,
                        .limit = limit};
    assert_int_equal(raw_publish(prod, 1, &m, id, NULL, 0), 1);
}

static void test_history_pending_and_delivered(void **state)
{
    (void)state;
    start("");
    int a = raw_connect_as(bp.port, TEST_CONSUMER, TEST_SECRET),
        b = raw_connect_as(bp.port, TEST_CONSUMER_B, TEST_SECRET);
    int prod = raw_connect_as(bp.port, TEST_PRODUCER, TEST_SECRET);
    char id[33], got[33];
    uint32_t op;
    publish(prod, "pay-succ", 0, id);
    /* s-trade-a acks; s-trade-b nacks, and holds the retry */
    assert_int_equal(raw_recv_delivery(a, 5000, got, &op, NULL, 0), 1);
    raw_deliver_ack(a, op, got, true);
    assert_int_equal(raw_recv_delivery(b, 5000, got, &op, NULL, 0), 1);
    raw_deliver_ack(b, op, got, false);
    assert_int_equal(raw_recv_delivery(b, 5000, got, &op, NULL, 0), 1); /* attempt 2 */
    assert_string_equal(got, id);

    int status;
    char ev[2048];
    cJSON *j = msg(id, &status);
    assert_int_equal(status, 200);
    assert_string_equal(str(j, "state"), "pending");
    events(j, ev, sizeof ev);
    print_message("pending: %s\n", ev);
    int i = find_event(j, 0, "published", TEST_PRODUCER);
    assert_int_equal(i, 0);
    assert_true(*str(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "history"), 0), "connection"));
    assert_true(find_event(j, 0, "stored", NULL) > i);
    int acked = find_event(j, 0, "acked", TEST_CONSUMER);
    int nacked = find_event(j, 0, "nacked", TEST_CONSUMER_B);
    assert_true(acked > 0 && nacked > 0);
    int retry = find_event(j, nacked, "retry scheduled", NULL);
    assert_true(retry > nacked);
    assert_true(find_event(j, retry, "sent", TEST_CONSUMER_B) > retry);
    assert_non_null(strstr(ev, "sent s-trade-b 2"));
    cJSON_Delete(j);

    raw_deliver_ack(b, op, got, true);
    assert_int_equal(raw_sync(b), 0);
    j = msg(id, &status); /* finished: from the ring of finished histories */
    assert_int_equal(status, 200);
    assert_string_equal(str(j, "state"), "delivered");
    assert_string_equal(str(j, "topic"), "trade");
    assert_string_equal(str(j, "messageType"), "pay-succ");
    int last = cJSON_GetArraySize(cJSON_GetObjectItem(j, "history")) - 1;
    assert_int_equal(find_event(j, 0, "delivered", NULL), last);
    /* delivered, then finished in the same loop turn: the same time */
    assert_true(
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "history"), last), "time")
            ->valuedouble == cJSON_GetObjectItem(j, "finishedTime")->valuedouble);
    assert_true(find_event(j, 0, "acked", TEST_CONSUMER_B) > 0);
    cJSON_Delete(j);

    /* kiteq-cli msg prints the same */
    char *out = NULL;
    assert_int_equal(cli_runf(&out, "msg --admin 127.0.0.1:%d %s", admin_port, id), 0);
    assert_non_null(strstr(out, "\"delivered\""));
    free(out);

    /* one debug line per event, with the id */
    char needle[128];
    snprintf(needle, sizeof needle, "history: id=%s event=\"nacked\" group=s-trade-b", id);
    assert_true(broker_wait_log(&bp, needle, 2000));
    snprintf(needle, sizeof needle, "history: id=%s event=\"delivered\"", id);
    assert_true(broker_wait_log(&bp, needle, 2000));
    close(a);
    close(b);
    close(prod);
}

static void test_history_of_a_dead_letter(void **state)
{
    (void)state;
    start("");
    int a = raw_connect_as(bp.port, TEST_CONSUMER, TEST_SECRET),
        prod = raw_connect_as(bp.port, TEST_PRODUCER, TEST_SECRET);
    char id[33], got[33];
    uint32_t op;
    publish(prod, "refund-1", 1, id); /* only s-trade-a (regx refund-.*), deliver limit 1 */
    assert_int_equal(raw_recv_delivery(a, 5000, got, &op, NULL, 0), 1);
    raw_deliver_ack(a, op, got, false);
    assert_int_equal(raw_sync(a), 0);
    int status = 0;
    cJSON *j = NULL;
    for (uint64_t deadline = now_ms() + 5000; now_ms() < deadline; usleep(50 * 1000)) {
        cJSON_Delete(j);
        j = msg(id, &status);
        if (!strcmp(str(j, "state"), "dead"))
            break;
    }
    assert_string_equal(str(j, "state"), "dead");
    assert_true(*str(j, "reason"));
    int dead = find_event(j, 0, "dead-lettered", NULL);
    assert_true(dead > find_event(j, 0, "nacked", TEST_CONSUMER));
    assert_true(*str(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "history"), dead), "reason"));
    cJSON_Delete(j);

    /* requeued: its story goes on */
    char path[128], body[1024];
    snprintf(path, sizeof path, "/dlq/requeue?id=%s", id);
    assert_int_equal(admin_request(admin_port, "POST", path, body, sizeof body), 200);
    assert_int_equal(raw_recv_delivery(a, 5000, got, &op, NULL, 0), 1);
    raw_deliver_ack(a, op, got, true);
    assert_int_equal(raw_sync(a), 0);
    j = msg(id, &status);
    assert_int_equal(status, 200);
    assert_string_equal(str(j, "state"), "delivered");
    int requeued = find_event(j, 0, "requeued", NULL);
    assert_int_equal(find_event(j, 0, "published", TEST_PRODUCER), 0); /* the whole story */
    dead = find_event(j, 0, "dead-lettered", NULL);
    assert_true(dead > 0 && requeued > dead);
    assert_true(find_event(j, requeued, "acked", TEST_CONSUMER) > requeued);
    cJSON_Delete(j);
    close(a);
    close(prod);
}

/* Without the debug log a copy's events take a shorter path (kq_hist_copy) and a record
 * starts as large as the last one needed: the story of a message to two groups is the same,
 * for the first message (its record grows) and the next (it does not). */
static void test_copy_events_without_debug_log(void **state)
{
    (void)state;
    start_logging("", "-logLevel=info");
    int a = raw_connect_as(bp.port, TEST_CONSUMER, TEST_SECRET),
        b = raw_connect_as(bp.port, TEST_CONSUMER_B, TEST_SECRET);
    int prod = raw_connect_as(bp.port, TEST_PRODUCER, TEST_SECRET);
    for (int round = 0; round < 3; round++) {
        char id[33], got[33];
        uint32_t op;
        publish(prod, "pay-succ", 0, id); /* both groups */
        assert_int_equal(raw_recv_delivery(a, 5000, got, &op, NULL, 0), 1);
        raw_deliver_ack(a, op, got, true);
        assert_int_equal(raw_sync(a), 0);
        assert_int_equal(raw_recv_delivery(b, 5000, got, &op, NULL, 0), 1);
        raw_deliver_ack(b, op, got, true);
        assert_int_equal(raw_sync(b), 0);
        int status;
        char ev[2048];
        cJSON *j = msg(id, &status);
        assert_int_equal(status, 200);
        assert_string_equal(str(j, "state"), "delivered");
        events(j, ev, sizeof ev);
        print_message("round %d: %s\n", round, ev);
        cJSON *h = cJSON_GetObjectItem(j, "history");
        assert_int_equal(cJSON_GetArraySize(h), 7);
        int sent_a = find_event(j, 0, "sent", TEST_CONSUMER),
            sent_b = find_event(j, 0, "sent", TEST_CONSUMER_B);
        int acked_a = find_event(j, 0, "acked", TEST_CONSUMER),
            acked_b = find_event(j, 0, "acked", TEST_CONSUMER_B);
        assert_true(sent_a > 1 && sent_b > 1 && acked_a > sent_a && acked_b > acked_a);
        assert_int_equal(find_event(j, 0, "delivered", NULL), 6);
        int copy_events[] = {sent_a, sent_b, acked_a, acked_b};
        for (int i = 0; i < 4; i++) {
            cJSON *e = cJSON_GetArrayItem(h, copy_events[i]);
            assert_true(*str(e, "connection"));
        }
        assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(h, sent_a), "attempt")->valueint,
                         1);
        cJSON_Delete(j);
    }
    close(a);
    close(b);
    close(prod);
}

/* messageHistory = 2: the third finished message pushes the first out of the ring. */
static void test_ring_is_bounded(void **state)
{
    (void)state;
    start("messageHistory = 2,");
    int a = raw_connect_as(bp.port, TEST_CONSUMER, TEST_SECRET),
        prod = raw_connect_as(bp.port, TEST_PRODUCER, TEST_SECRET);
    char ids[3][33];
    for (int i = 0; i < 3; i++) {
        publish(prod, "refund-x", 0, ids[i]); /* s-trade-a only */
        raw_take_delivery(a, ids[i], 5000);
    }
    int status;
    cJSON *j = msg(ids[0], &status);
    assert_int_equal(status, 404);
    assert_string_equal(str(j, "state"), "unknown");
    cJSON_Delete(j);
    for (int i = 1; i < 3; i++) {
        j = msg(ids[i], &status);
        assert_int_equal(status, 200);
        assert_string_equal(str(j, "state"), "delivered");
        cJSON_Delete(j);
    }
    static char text[1 << 17];
    assert_int_equal(admin_get(admin_port, "/metrics", text, sizeof text), 200);
    assert_non_null(strstr(text, "kiteq_message_histories{state=\"finished\"} 2\n"));
    assert_non_null(strstr(text, "kiteq_message_histories{state=\"pending\"} 0\n"));

    /* a slot that held a short story takes a longer one (two groups), then a short one
     * takes the slot after it: each reads back whole */
    int b = raw_connect_as(bp.port, TEST_CONSUMER_B, TEST_SECRET);
    char both[33], one[33];
    publish(prod, "pay-succ", 0, both); /* s-trade-a and s-trade-b */
    raw_take_delivery(a, both, 5000);
    raw_take_delivery(b, both, 5000);
    publish(prod, "refund-x", 0, one);
    raw_take_delivery(a, one, 5000);
    j = msg(both, &status);
    assert_int_equal(status, 200);
    assert_string_equal(str(j, "state"), "delivered");
    assert_true(find_event(j, 0, "acked", TEST_CONSUMER) > 0);
    assert_true(find_event(j, 0, "acked", TEST_CONSUMER_B) > 0);
    cJSON_Delete(j);
    j = msg(one, &status);
    assert_int_equal(status, 200);
    assert_true(find_event(j, 0, "acked", TEST_CONSUMER) > 0);
    assert_true(find_event(j, 0, "acked", TEST_CONSUMER_B) < 0);
    cJSON_Delete(j);
    close(b);
    close(a);
    close(prod);
}

/* A ring larger than the 32 MiB cap of pending histories (600 000 entries of 72 bytes are
 * ~43 MB before any message) still leaves room for them: the cap used to count the ring, so
 * that no message got a history at all. */
static void test_large_ring_keeps_histories(void **state)
{
    (void)state;
    start_logging("messageHistory = 600000,", "-logLevel=info");
    int a = raw_connect_as(bp.port, TEST_CONSUMER, TEST_SECRET),
        prod = raw_connect_as(bp.port, TEST_PRODUCER, TEST_SECRET);
    char id[33];
    publish(prod, "refund-x", 0, id); /* s-trade-a only */
    raw_take_delivery(a, id, 5000);
    int status;
    cJSON *j = msg(id, &status);
    assert_int_equal(status, 200);
    assert_string_equal(str(j, "state"), "delivered");
    assert_int_equal(find_event(j, 0, "published", TEST_PRODUCER), 0);
    cJSON_Delete(j);
    static char text[1 << 17];
    assert_int_equal(admin_get(admin_port, "/metrics", text, sizeof text), 200);
    assert_non_null(strstr(text, "kiteq_message_histories_skipped_total 0\n"));
    close(a);
    close(prod);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_history_pending_and_delivered, teardown),
        cmocka_unit_test_teardown(test_history_of_a_dead_letter, teardown),
        cmocka_unit_test_teardown(test_ring_is_bounded, teardown),
        cmocka_unit_test_teardown(test_copy_events_without_debug_log, teardown),
        cmocka_unit_test_teardown(test_large_ring_keeps_histories, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
