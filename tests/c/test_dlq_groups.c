/* Integration: dead letters remember who failed (issue 16). A message that s-trade-a acked
 * and s-trade-b nacked to its limit is dead-lettered with failedGroups = s-trade-b and
 * ackedGroups = s-trade-a; `kiteq-cli dlq show` prints it with its body; a requeue goes to
 * s-trade-b only, a requeue with --group to the group picked; an unbound group is refused. */
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
#include "support/tmp_dir.h"

static struct broker_proc bp;
static int admin_port;

static int teardown(void **state)
{
    (void)state;
    return broker_stop(&bp) == 0 ? 0 : -1;
}

static cJSON *get_json(const char *path, int *status)
{
    static char body[1 << 16];
    *status = admin_get(admin_port, path, body, sizeof body);
    cJSON *j = cJSON_Parse(body);
    if (!j)
        fail_msg("GET %s: %d %s", path, *status, body);
    return j;
}

/* GET /dlq/<id> once the message is a dead letter (within 10 s). */
static cJSON *dead(const char *id)
{
    char path[64];
    snprintf(path, sizeof path, "/dlq/%s", id);
    int status = 0;
    for (uint64_t end = kq_mono_us() / 1000 + 10000;; usleep(50 * 1000)) {
        cJSON *j = get_json(path, &status);
        if (status == 200)
            return j;
        cJSON_Delete(j);
        if (kq_mono_us() / 1000 > end)
            fail_msg("%s is no dead letter (status %d)", id, status);
    }
}

/* A pay-succ message (both groups), deliver limit 2: a acks, b nacks both attempts. */
static void publish_and_fail_b(int prod, int a, int b, char id[33])
{
    struct raw_msg m = {.topic = "trade",
                        .type = "pay-succ",
                        .group = TEST_PRODUCER,
                        .body = "hello dlq",
                        .commit = true,
                        .limit = 2};
    assert_int_equal(raw_publish(prod, 1, &m, id, NULL, 0), 1);
    char got[33];
    uint32_t op;
    assert_int_equal(raw_recv_delivery(a, 5000, got, &op, NULL, 0), 1);
    assert_string_equal(got, id);
    raw_deliver_ack(a, op, got, true);
    for (int attempt = 0; attempt < 2; attempt++) {
        assert_int_equal(raw_recv_delivery(b, 5000, got, &op, NULL, 0), 1);
        assert_string_equal(got, id);
        raw_deliver_ack(b, op, got, false);
    }
    assert_int_equal(raw_sync(a), 0);
    assert_int_equal(raw_sync(b), 0);
}

/* How many "sent" events of group the message's history has after its "requeued". */
static int sent_after_requeue(const char *id, const char *group)
{
    char path[64];
    snprintf(path, sizeof path, "/msg/%s", id);
    int status, n = 0;
    bool after = false;
    cJSON *j = get_json(path, &status), *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(j, "history"))
    {
        const char *ev = cJSON_GetObjectItem(e, "event")->valuestring;
        cJSON *g = cJSON_GetObjectItem(e, "group");
        after |= !strcmp(ev, "requeued");
        n += after && !strcmp(ev, "sent") && cJSON_IsString(g) && !strcmp(g->valuestring, group);
    }
    cJSON_Delete(j);
    return n;
}

static void test_requeue_goes_to_who_failed(void **state)
{
    (void)state;
    char cfg[4096], dir[64], uri[128];
    assert_int_equal(tmp_dir_make(dir, sizeof dir, "kq-dlq-groups-"), 0);
    snprintf(uri, sizeof uri, "file://%s", dir);
    broker_default_config(cfg, sizeof cfg, uri, "admin = \"127.0.0.1:0\"");
    assert_int_equal(broker_start(&bp, cfg, NULL), 0);
    admin_port = broker_admin_port(&bp);
    int a = raw_connect_as(bp.port, TEST_CONSUMER, TEST_SECRET);
    int b = raw_connect_as(bp.port, TEST_CONSUMER_B, TEST_SECRET);
    int prod = raw_connect_as(bp.port, TEST_PRODUCER, TEST_SECRET);
    char id[33], id2[33];
    publish_and_fail_b(prod, a, b, id);
    publish_and_fail_b(prod, a, b, id2);

    cJSON *j = dead(id);
    cJSON *failed = cJSON_GetObjectItem(j, "failedGroups");
    assert_int_equal(cJSON_GetArraySize(failed), 1);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(failed, 0), "group")->valuestring,
                        TEST_CONSUMER_B);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(failed, 0), "reason")->valuestring,
                        "nack");
    cJSON *acked = cJSON_GetObjectItem(j, "ackedGroups");
    assert_int_equal(cJSON_GetArraySize(acked), 1);
    assert_string_equal(cJSON_GetArrayItem(acked, 0)->valuestring, TEST_CONSUMER);
    assert_string_equal(cJSON_GetObjectItem(j, "body")->valuestring, "hello dlq");
    cJSON_Delete(j);
    cJSON_Delete(dead(id2));

    /* kiteq-cli dlq show prints the same */
    char *out = NULL;
    assert_int_equal(cli_runf(&out, "dlq show --admin 127.0.0.1:%d %s", admin_port, id), 0);
    assert_non_null(strstr(out, "hello dlq"));
    assert_non_null(strstr(out, TEST_CONSUMER_B));
    free(out);
    assert_int_equal(cli_runf(NULL,
                              "dlq show --admin 127.0.0.1:%d ffffffffffffffffffffffffffffffff",
                              admin_port),
                     1);

    /* the groups survive a restart of the broker (file store) */
    close(a);
    close(b);
    close(prod);
    assert_int_equal(broker_stop(&bp), 0);
    assert_int_equal(broker_restart(&bp, NULL), 0);
    admin_port = broker_admin_port(&bp);
    j = dead(id);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "failedGroups")), 1);
    cJSON_Delete(j);
    a = raw_connect_as(bp.port, TEST_CONSUMER, TEST_SECRET);
    b = raw_connect_as(bp.port, TEST_CONSUMER_B, TEST_SECRET);

    /* requeue: to s-trade-b only */
    assert_int_equal(cli_runf(NULL, "dlq requeue --admin 127.0.0.1:%d --id %s", admin_port, id), 0);
    raw_take_delivery(b, id, 5000);
    int status;
    char path[64];
    snprintf(path, sizeof path, "/msg/%s", id);
    for (uint64_t end = kq_mono_us() / 1000 + 5000;; usleep(20 * 1000)) {
        j = get_json(path, &status);
        bool delivered = !strcmp(cJSON_GetObjectItem(j, "state")->valuestring, "delivered");
        cJSON_Delete(j);
        if (delivered)
            break;
        assert_true(kq_mono_us() / 1000 < end);
    }
    assert_int_equal(sent_after_requeue(id, TEST_CONSUMER_B), 1);
    assert_int_equal(sent_after_requeue(id, TEST_CONSUMER), 0); /* it had acked: no duplicate */

    /* a group that is not bound is refused; --group picks who gets it */
    assert_int_equal(
        cli_runf(NULL, "dlq requeue --admin 127.0.0.1:%d --id %s --group nobody", admin_port, id2),
        1);
    assert_int_equal(cli_runf(NULL, "dlq requeue --admin 127.0.0.1:%d --id %s --group %s",
                              admin_port, id2, TEST_CONSUMER),
                     0);
    raw_take_delivery(a, id2, 5000);
    assert_int_equal(sent_after_requeue(id2, TEST_CONSUMER_B), 0);
    close(a);
    close(b);
    assert_int_equal(tmp_dir_remove(dir), 0);
}

/* The reason of each group is its own: in the last attempt a nacks while b's connection is
 * lost, so a's reason is "nack" and b's "connection lost" (not the attempt's last word for
 * both). */
static void test_each_group_keeps_its_reason(void **state)
{
    (void)state;
    char cfg[4096];
    broker_default_config(cfg, sizeof cfg, "memory://", "admin = \"127.0.0.1:0\"");
    assert_int_equal(broker_start(&bp, cfg, NULL), 0);
    admin_port = broker_admin_port(&bp);
    int a = raw_connect_as(bp.port, TEST_CONSUMER, TEST_SECRET);
    int b = raw_connect_as(bp.port, TEST_CONSUMER_B, TEST_SECRET);
    int prod = raw_connect_as(bp.port, TEST_PRODUCER, TEST_SECRET);
    struct raw_msg m = {.topic = "trade",
                        .type = "pay-succ",
                        .group = TEST_PRODUCER,
                        .body = "two reasons",
                        .commit = true,
                        .limit = 1};
    char id[33], got[33];
    uint32_t op_a, op_b;
    assert_int_equal(raw_publish(prod, 1, &m, id, NULL, 0), 1);
    assert_int_equal(raw_recv_delivery(b, 5000, got, &op_b, NULL, 0), 1);
    assert_int_equal(raw_recv_delivery(a, 5000, got, &op_a, NULL, 0), 1);
    close(b); /* b's copy: connection lost (wait until the broker saw it) */
    char path[64];
    snprintf(path, sizeof path, "/msg/%s", id);
    for (uint64_t end = kq_mono_us() / 1000 + 5000;; usleep(20 * 1000)) {
        int status;
        cJSON *h = get_json(path, &status), *ev;
        bool lost = false;
        cJSON_ArrayForEach(ev, cJSON_GetObjectItem(h, "history")) lost |=
            !strcmp(cJSON_GetObjectItem(ev, "event")->valuestring, "connection lost");
        cJSON_Delete(h);
        if (lost)
            break;
        assert_true(kq_mono_us() / 1000 < end);
    }
    raw_deliver_ack(a, op_a, got, false); /* a's copy: nacked, the attempt's last word */
    assert_int_equal(raw_sync(a), 0);
    cJSON *j = dead(id), *e;
    int seen = 0;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(j, "failedGroups"))
    {
        const char *g = cJSON_GetObjectItem(e, "group")->valuestring;
        const char *why = cJSON_GetObjectItem(e, "reason")->valuestring;
        if (!strcmp(g, TEST_CONSUMER))
            assert_string_equal(why, "nack"), seen |= 1;
        else if (!strcmp(g, TEST_CONSUMER_B))
            assert_string_equal(why, "connection lost"), seen |= 2;
    }
    assert_int_equal(seen, 3);
    cJSON_Delete(j);
    close(a);
    close(prod);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_requeue_goes_to_who_failed, teardown),
        cmocka_unit_test_teardown(test_each_group_keeps_its_reason, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
