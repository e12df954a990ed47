/* Integration: operators see and act on each consumer group's backlog (issue 16).
 *
 *  - backlog per (group, topic): s-trade-a is connected and acks everything, s-trade-b has
 *    no consumer; /groups, /stat, /metrics and `kiteq-cli groups` must show s-trade-b's
 *    backlog (kiteq_group_waiting/_inflight stayed 0 for it before), s-trade-a's acks and
 *    both groups' consumers;
 *  - purge: s-trade-b's backlog on trade is dropped (offline, and with its copies in flight)
 *    while s-trade-a still gets every message, and s-trade-b gets none after. */
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

#define N_MSG 30

static struct broker_proc bp;
static int admin_port;

static uint64_t now_ms(void) { return kq_mono_us() / 1000; }

static void start(void)
{
    char cfg[4096];
    broker_default_config(cfg, sizeof cfg, "memory://", "admin = \"127.0.0.1:0\",");
    assert_int_equal(broker_start(&bp, cfg, NULL), 0);
    admin_port = broker_admin_port(&bp);
    assert_true(admin_port > 0);
}

static int teardown(void **state)
{
    (void)state;
    return broker_stop(&bp) == 0 ? 0 : -1;
}

static cJSON *get_json(const char *path)
{
    static char body[1 << 16];
    int st = admin_get(admin_port, path, body, sizeof body);
    if (st != 200)
        fail_msg("GET %s: %d %s", path, st, body);
    cJSON *j = cJSON_Parse(body);
    assert_non_null(j);
    return j;
}

/* The row of (group, topic) in a consumer_groups array, or NULL. */
static cJSON *row_of(cJSON *rows, const char *group, const char *topic)
{
    cJSON *r;
    cJSON_ArrayForEach(r, rows)
    {
        cJSON *g = cJSON_GetObjectItem(r, "group"), *t = cJSON_GetObjectItem(r, "topic");
        if (!strcmp(g->valuestring, group) && !strcmp(t->valuestring, topic))
            return r;
    }
    return NULL;
}

static double field(cJSON *row, const char *key)
{
    cJSON *v = cJSON_GetObjectItem(row, key);
    if (!cJSON_IsNumber(v))
        fail_msg("no number %s", key);
    return v->valuedouble;
}

/* GET /groups until (group, topic) shows `backlog` (the scan completes a pass a second). */
/* GET path until the number at key (inside object `in`, NULL = the root) of the row
 * (group, topic) of consumer_groups (group NULL = the object itself) is `want`; 10 s. */
static cJSON *wait_number(const char *path, const char *in, const char *group, const char *topic,
                          const char *key, double want)
{
    uint64_t deadline = now_ms() + 10000;
    for (;;) {
        cJSON *j = get_json(path), *o = in ? cJSON_GetObjectItem(j, in) : j;
        if (group)
            o = row_of(cJSON_GetObjectItem(j, "consumer_groups"), group, topic);
        if (o && field(o, key) == want)
            return j;
        cJSON_Delete(j);
        if (now_ms() > deadline)
            fail_msg("%s: %s never %.0f", path, key, want);
        usleep(50 * 1000);
    }
}

/* GET /groups until (group, topic) shows `backlog` (the scan completes a pass a second). */
static cJSON *wait_backlog(const char *group, const char *topic, double backlog)
{
    return wait_number("/groups", NULL, group, topic, "backlog", backlog);
}

static void publish(int fd, int n, char ids[][33])
{
    for (int i = 0; i < n; i++) {
        struct raw_msg m = {.topic = "trade",
                            .type = "pay-succ",
                            .group = TEST_PRODUCER,
                            .body = "b",
                            .commit = true};
        assert_int_equal(raw_publish(fd, (uint32_t)i + 1, &m, ids[i], NULL, 0), 1);
    }
}

static void test_backlog_of_a_group_without_consumer(void **state)
{
    (void)state;
    start();
    int cons = raw_connect_as(bp.port, TEST_CONSUMER, TEST_SECRET);
    int prod = raw_connect_as(bp.port, TEST_PRODUCER, TEST_SECRET);
    char ids[N_MSG][33];
    publish(prod, N_MSG, ids);
    raw_drain_expect(cons, ids, N_MSG, 5000);

    /* s-trade-b has no consumer: its copies wait, s-trade-a acked all of its own. One scan
     * pass may count b's backlog before a's acks arrived: wait for a pass that shows both. */
    cJSON *j;
    for (uint64_t deadline = now_ms() + 10000;; usleep(50 * 1000)) {
        j = wait_backlog(TEST_CONSUMER_B, "trade", N_MSG);
        cJSON *row_a = row_of(cJSON_GetObjectItem(j, "consumer_groups"), TEST_CONSUMER, "trade");
        if (row_a && field(row_a, "backlog") == 0)
            break;
        cJSON_Delete(j);
        if (now_ms() > deadline)
            fail_msg("/groups: %s's backlog never 0 beside %s's %d", TEST_CONSUMER, TEST_CONSUMER_B,
                     N_MSG);
    }
    cJSON *rows = cJSON_GetObjectItem(j, "consumer_groups");
    cJSON *b = row_of(rows, TEST_CONSUMER_B, "trade");
    assert_true(field(b, "waiting") == N_MSG);
    assert_true(field(b, "inflight") == 0);
    assert_true(field(b, "consumers") == 0);
    assert_true(field(b, "oldest_sec") >= 0);
    cJSON *a = row_of(rows, TEST_CONSUMER, "trade");
    assert_non_null(a);
    assert_true(field(a, "backlog") == 0);
    assert_true(field(a, "acked") == N_MSG);
    assert_true(field(a, "consumers") == 1);
    /* every bound (group, topic) has a row, producers none */
    assert_non_null(row_of(rows, "s-user-profile", "user-profile"));
    assert_null(row_of(rows, TEST_PRODUCER, "trade"));
    cJSON *scan = cJSON_GetObjectItem(j, "backlog_scan");
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(scan, "age_ms")));
    assert_true(field(scan, "messages") == N_MSG);
    cJSON_Delete(j);

    /* /stat carries the same rows */
    j = get_json("/stat");
    cJSON *br = cJSON_GetObjectItem(j, "broker");
    b = row_of(cJSON_GetObjectItem(br, "consumer_groups"), TEST_CONSUMER_B, "trade");
    assert_non_null(b);
    assert_true(field(b, "backlog") == N_MSG);
    cJSON_Delete(j);

    /* /metrics */
    static char text[1 << 17];
    assert_int_equal(admin_get(admin_port, "/metrics", text, sizeof text), 200);
    assert_true(prom_sample(text, "kiteq_group_backlog{group=\"s-trade-b\",topic=\"trade\"}") ==
                N_MSG);
    assert_true(prom_sample(text, "kiteq_group_backlog{group=\"s-trade-a\",topic=\"trade\"}") == 0);
    assert_true(
        prom_sample(text, "kiteq_group_oldest_seconds{group=\"s-trade-b\",topic=\"trade\"}") >= 0);
    assert_true(prom_sample(text, "kiteq_backlog_scan_age_seconds") >= 0);

    /* kiteq-cli groups: a table, and JSON filtered by group */
    char *out = NULL;
    assert_int_equal(cli_runf(&out, "groups --admin 127.0.0.1:%d --table", admin_port), 0);
    assert_non_null(strstr(out, "BACKLOG"));
    char *line = strstr(out, "s-trade-b");
    assert_non_null(line);
    char group[64], topic[64];
    long backlog = -1;
    assert_int_equal(sscanf(line, "%63s %63s %ld", group, topic, &backlog), 3);
    assert_string_equal(topic, "trade");
    assert_int_equal(backlog, N_MSG);
    free(out);
    assert_int_equal(
        cli_runf(&out, "groups --admin 127.0.0.1:%d --json --group s-trade-b", admin_port), 0);
    j = cJSON_Parse(out);
    assert_non_null(j);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "consumer_groups")), 1);
    cJSON_Delete(j);
    free(out);
    close(cons);
    close(prod);
}

/* /stat broker.pending reaches `want`. */
static void wait_pending(double want)
{
    cJSON_Delete(wait_number("/stat", "broker", NULL, NULL, "pending", want));
}

/* s-trade-b connects and must get nothing; s-trade-a connects and gets every id. */
static void expect_only_a_receives(char ids[][33], int n)
{
    int b = raw_connect_as(bp.port, TEST_CONSUMER_B, TEST_SECRET);
    char id[33];
    uint32_t op;
    /* a group coming online is sent its waiting messages at once: 1 s is plenty */
    assert_int_equal(raw_recv_delivery(b, 1000, id, &op, NULL, 0), 0);
    int a = raw_connect_as(bp.port, TEST_CONSUMER, TEST_SECRET);
    raw_drain_expect(a, ids, n, 5000);
    wait_pending(0);
    assert_int_equal(raw_recv_delivery(b, 100, id, &op, NULL, 0), 0);
    close(a);
    close(b);
}

static void test_purge_offline_group(void **state)
{
    (void)state;
    start();
    int prod = raw_connect_as(bp.port, TEST_PRODUCER, TEST_SECRET);
    char ids[N_MSG][33];
    publish(prod, N_MSG, ids);
    cJSON_Delete(wait_backlog(TEST_CONSUMER_B, "trade", N_MSG));

    /* bad requests say why */
    char body[4096];
    assert_int_equal(
        admin_request(admin_port, "POST", "/groups/purge?group=s-trade-b", body, sizeof body), 400);
    assert_int_equal(admin_request(admin_port, "POST",
                                   "/groups/purge?group=s-user-profile&topic=trade", body,
                                   sizeof body),
                     404);
    assert_non_null(strstr(body, "not bound"));
    assert_int_equal(admin_request(admin_port, "GET", "/groups/purge?group=s-trade-b&topic=trade",
                                   body, sizeof body),
                     405);
    assert_int_equal(cli_runf(NULL, "purge --admin 127.0.0.1:%d --group s-trade-b", admin_port), 2);

    char *out = NULL;
    assert_int_equal(
        cli_runf(&out, "purge --admin 127.0.0.1:%d --group s-trade-b --topic trade", admin_port),
        0);
    cJSON *j = cJSON_Parse(out);
    assert_non_null(j);
    assert_true(field(j, "purged") == N_MSG);
    assert_true(field(j, "removed") == 0); /* s-trade-a still needs them */
    cJSON_Delete(j);
    free(out);
    /* a second purge finds nothing left */
    assert_int_equal(admin_request(admin_port, "POST", "/groups/purge?group=s-trade-b&topic=trade",
                                   body, sizeof body),
                     200);
    j = cJSON_Parse(body);
    assert_true(field(j, "purged") == 0);
    cJSON_Delete(j);

    j = wait_backlog(TEST_CONSUMER_B, "trade", 0);
    assert_true(field(row_of(cJSON_GetObjectItem(j, "consumer_groups"), TEST_CONSUMER, "trade"),
                      "backlog") == N_MSG);
    cJSON_Delete(j);
    expect_only_a_receives(ids, N_MSG);
    close(prod);
}

/* Copies out to s-trade-b when it is purged: their nacks or loss are no failures. */
static void test_purge_inflight_copies(void **state)
{
    (void)state;
    start();
    int b = raw_connect_as(bp.port, TEST_CONSUMER_B, TEST_SECRET);
    int prod = raw_connect_as(bp.port, TEST_PRODUCER, TEST_SECRET);
    char ids[N_MSG][33];
    publish(prod, N_MSG, ids);
    uint32_t ops[N_MSG];
    char id[33];
    for (int i = 0; i < N_MSG; i++)
        assert_int_equal(raw_recv_delivery(b, 5000, id, &ops[i], NULL, 0), 1);
    char body[4096];
    assert_int_equal(admin_request(admin_port, "POST", "/groups/purge?group=s-trade-b&topic=trade",
                                   body, sizeof body),
                     200);
    cJSON *j = cJSON_Parse(body);
    assert_true(field(j, "purged") == N_MSG);
    cJSON_Delete(j);
    raw_deliver_ack(b, ops[0], ids[0], false); /* a nack after the purge: not retried */
    assert_int_equal(raw_sync(b), 0);
    close(b); /* the rest are lost with the connection */
    expect_only_a_receives(ids, N_MSG);
    close(prod);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_backlog_of_a_group_without_consumer, teardown),
        cmocka_unit_test_teardown(test_purge_offline_group, teardown),
        cmocka_unit_test_teardown(test_purge_inflight_copies, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
