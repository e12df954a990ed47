/* kiteq-bench against a real broker (memory store): its counts, its two-phase and nack
 * modes, its misbehaving consumers (--consumer-mode) and --hold, and above all that a run
 * which loses an acked message says so and exits 1 — every performance claim rests on this
 * tool. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "support/broker_proc.h"
#include "support/test_files.h"

static struct broker_proc bp;

static int setup(void **state)
{
    (void)state;
    char cfg[4096];
    broker_default_config(cfg, sizeof cfg, "memory://", "admin = \"127.0.0.1:0\",");
    return broker_start(&bp, cfg, NULL);
}

static int teardown(void **state)
{
    (void)state;
    broker_stop(&bp);
    return 0;
}

/* Run kiteq-bench with `args` against the broker; returns its exit status and the JSON
 * summary it printed (*out, NULL when it printed none). */
static int bench(const char *args, cJSON **out)
{
    const char *build = test_build_dir();
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "'%s/kiteq-bench' --broker 127.0.0.1:%d --group p-trade --secret secret "
             "--topic trade --type pay-succ --consumer-secret secret --size 100 --json "
             "--quiet %s",
             build, bp.port, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    static char text[1 << 16];
    size_t n = fread(text, 1, sizeof text - 1, p);
    text[n] = 0;
    int st = pclose(p);
    *out = cJSON_Parse(text);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static double num(const cJSON *j, const char *a, const char *b)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, a);
    if (b)
        v = cJSON_GetObjectItemCaseSensitive(v, b);
    assert_true(cJSON_IsNumber(v));
    return v->valuedouble;
}

/* The broker's own count of pending messages (/stat broker.pending). */
static double broker_pending(void)
{
    static char body[1 << 16];
    assert_int_equal(admin_get(broker_admin_port(&bp), "/stat", body, sizeof body), 200);
    cJSON *j = cJSON_Parse(body);
    assert_non_null(j);
    double n = num(j, "broker", "pending");
    cJSON_Delete(j);
    return n;
}

static void test_pipelined_two_groups(void **state)
{
    (void)state;
    cJSON *j;
    int rc = bench("--producers 2 --inflight 32 --count 3000 --consumer-groups "
                   "s-trade-a,s-trade-b --drain 20",
                   &j);
    assert_int_equal(rc, 0);
    assert_non_null(j);
    assert_int_equal(num(j, "sent", NULL), 3000);
    assert_int_equal(num(j, "ackedOk", NULL), 3000);
    assert_int_equal(num(j, "delivered", "s-trade-a"), 3000);
    assert_int_equal(num(j, "delivered", "s-trade-b"), 3000);
    assert_int_equal(num(j, "lost", NULL), 0);
    assert_int_equal(num(j, "duplicates", NULL), 0);
    const cJSON *lat = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(j, "latencyUs"), "publishDelivery");
    double p50 = num(lat, "p50", NULL), p99 = num(lat, "p99", NULL), max = num(lat, "max", NULL);
    assert_true(p50 > 0 && p50 <= p99 && p99 <= max);
    assert_true(num(j, "throughput", "endToEnd") > 0);
    cJSON_Delete(j);
}

/* Nacked deliveries come again: every message still reaches the group exactly once acked.
 * 10 % nacks: retries 3+ wait 5 s (lua/policies/retry.lua), so the drain allows for an
 * unlucky message nacked several times in a row (P(8 nacks) ~ 1e-8 per message). */
static void test_nacks_are_retried(void **state)
{
    (void)state;
    cJSON *j;
    int rc = bench("--producers 1 --inflight 16 --count 200 --consumer-groups s-trade-a "
                   "--nack 0.1 --drain 60",
                   &j);
    assert_int_equal(rc, 0);
    assert_non_null(j);
    assert_true(num(j, "nacks", NULL) > 0);
    assert_int_equal(num(j, "delivered", "s-trade-a"), 200);
    assert_int_equal(num(j, "lost", NULL), 0);
    assert_int_equal(num(j, "duplicates", NULL), 0);
    cJSON_Delete(j);
}

static void test_two_phase(void **state)
{
    (void)state;
    cJSON *j;
    assert_int_equal(bench("--producers 1 --inflight 8 --count 100 --consumer-groups "
                           "s-trade-a --tx commit --drain 20",
                           &j),
                     0);
    assert_non_null(j);
    assert_int_equal(num(j, "delivered", "s-trade-a"), 100);
    cJSON_Delete(j);
    /* rolled back: acked by the broker, never delivered (a delivery would exit 1) */
    assert_int_equal(bench("--producers 1 --inflight 8 --count 100 --consumer-groups "
                           "s-trade-a --tx rollback --drain 2",
                           &j),
                     0);
    assert_non_null(j);
    assert_int_equal(num(j, "ackedOk", NULL), 100);
    assert_int_equal(num(j, "delivered", "s-trade-a"), 0);
    assert_int_equal(num(j, "lost", NULL), 0);
    cJSON_Delete(j);
}

/* Messages the tool was told were acked (an earlier run's sequences 0..49) never arrive
 * (the memory store forgot them with a restart): reported as lost, exit status 1. */
static void test_loss_is_reported(void **state)
{
    (void)state;
    cJSON *j;
    int rc = bench("--producers 0 --expect 50 --consumer-groups s-trade-a --drain 1", &j);
    assert_int_equal(rc, 1);
    assert_non_null(j);
    assert_int_equal(num(j, "lost", NULL), 50);
    cJSON_Delete(j);
}

/* A consumer that reads but never acks: the broker still holds every message afterwards
 * (a consumer that acks leaves none), loss is not judged, and --hold reports the broker's
 * RSS and the pending count while the consumer is attached. refund-* is bound to s-trade-a
 * alone, so that group's acks are all that could remove them. */
static void test_never_ack_consumer(void **state)
{
    (void)state;
    double before = broker_pending();
    char args[256];
    snprintf(args, sizeof args,
             "--producers 1 --inflight 8 --count 20 --type refund-bench --consumer-groups "
             "s-trade-a --consumer-mode never-ack --broker-pid %d --hold 2",
             (int)bp.pid);
    cJSON *j;
    assert_int_equal(bench(args, &j), 0);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(
                            cJSON_GetObjectItemCaseSensitive(j, "config"), "consumerMode")
                            ->valuestring,
                        "never-ack");
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "lost")));
    assert_int_equal(num(j, "ackedOk", NULL), 20);
    assert_true(num(j, "delivered", "s-trade-a") >= 1); /* it does read */
    assert_int_equal(num(j, "hold", "pending"), 20);
    assert_true(num(j, "hold", "rssKb") > 0);
    assert_true(num(j, "hold", "sec") >= 2);
    assert_int_equal(num(j, "consumerDisconnects", NULL), 0);
    cJSON_Delete(j);
    assert_int_equal(broker_pending() - before, 20);
}

/* A consumer that never reads gets nothing counted, and the messages stay pending. */
static void test_never_read_consumer(void **state)
{
    (void)state;
    double before = broker_pending();
    cJSON *j;
    assert_int_equal(bench("--producers 1 --inflight 8 --count 20 --type refund-bench "
                           "--consumer-groups s-trade-a --consumer-mode never-read",
                           &j),
                     0);
    assert_non_null(j);
    assert_int_equal(num(j, "ackedOk", NULL), 20);
    assert_int_equal(num(j, "delivered", "s-trade-a"), 0);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "lost")));
    cJSON_Delete(j);
    assert_int_equal(broker_pending() - before, 20);
}

/* Options that cannot go together are refused before anything connects. */
static void test_consumer_mode_usage(void **state)
{
    (void)state;
    cJSON *j;
    assert_int_equal(bench("--consumer-mode never-ack --slow-ack 5", &j), 2);
    cJSON_Delete(j);
    assert_int_equal(bench("--consumer-mode sometimes", &j), 2);
    cJSON_Delete(j);
    assert_int_equal(bench("--hold 5", &j), 2); /* needs --broker-pid */
    cJSON_Delete(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pipelined_two_groups),
        cmocka_unit_test(test_nacks_are_retried),
        cmocka_unit_test(test_two_phase),
        cmocka_unit_test(test_loss_is_reported),
        cmocka_unit_test(test_never_ack_consumer),
        cmocka_unit_test(test_never_read_consumer),
        cmocka_unit_test(test_consumer_mode_usage),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
