/* Integration: the per-message and per-connection hooks in a real broker, with real
 * publishers (the C client, with properties) and consumers, and a SIGHUP that changes each
 * hook's answer:
 *  - routing.lua route_message sends a pay-succ message to the group its `region` property
 *    names (the built-in routing would send it to both bound groups);
 *  - auth.lua on_connect refuses a group with the policy's reason, never accepts a wrong
 *    secret;
 *  - retry.lua on_dead hands a dead letter to another bound group once (failing there too
 *    makes it a real dead letter), then, after the reload, drops one. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "client/kiteq_client.h"
#include "support/broker_proc.h"
#include "support/test_files.h"

static struct broker_proc bp;

static void write_policy(const char *file, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/policies/%s", bp.dir, file);
    test_write_file(path, text);
}

static void start_broker(const char *file, const char *text, const char *hooks_line)
{
    assert_int_equal(broker_prepare(&bp), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/policies", bp.dir);
    assert_int_equal(mkdir(path, 0755), 0);
    write_policy(file, text);
    char cfg[4096];
    broker_default_config(cfg, sizeof cfg, "memory://",
                          "policies = \"policies\", admin = \"127.0.0.1:0\",");
    assert_int_equal(broker_launch(&bp, cfg, "127.0.0.1:0", NULL), 0);
    assert_true(broker_wait_log(&bp, hooks_line, 1));
}

static void reload(const char *file, const char *text)
{
    write_policy(file, text);
    assert_int_equal(kill(bp.pid, SIGHUP), 0);
    assert_true(broker_wait_log(&bp, "reload: done generation=", 10000));
}

static int open_client(const char *group, const char *secret, struct kq_client **c, char *err,
                       size_t len)
{
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", bp.port);
    struct kq_client_options o = {.broker = addr, .group_id = group, .secret = secret};
    return kq_client_open(&o, c, err, len);
}

/* Publishes trade/type with the property region (NULL: none), after `padding` other
 * properties, and limit; returns the id. */
static void publish_padded(struct kq_client *c, const char *type, const char *region, int32_t limit,
                           size_t padding, char id[33])
{
    struct kq_property props[32];
    char names[32][8];
    assert_true(padding < 32);
    for (size_t i = 0; i < padding; i++) {
        snprintf(names[i], sizeof names[i], "p%zu", i);
        props[i] = (struct kq_property){names[i], "v"};
    }
    props[padding] = (struct kq_property){"region", region};
    size_t n = padding + (region ? 1 : 0);
    struct kq_message m = {.topic = "trade",
                           .message_type = type,
                           .expired_time = -1,
                           .deliver_limit = limit,
                           .body = "x",
                           .body_len = 1,
                           .properties = n ? props : NULL,
                           .n_properties = n};
    struct kq_publish_result r;
    assert_int_equal(kq_publish(c, &m, &r), 0);
    if (!r.status)
        fail_msg("publish refused: %s", r.feedback);
    memcpy(id, r.message_id, 33);
}

static void publish(struct kq_client *c, const char *type, const char *region, int32_t limit,
                    char id[33])
{
    publish_padded(c, type, region, limit, 0, id);
}

/* The next delivery on fd is message id: answered with ok. */
static void expect_delivery(int fd, const char *id, bool ok)
{
    char got[33], body[64];
    uint32_t opaque;
    assert_int_equal(raw_recv_delivery(fd, 10000, got, &opaque, body, sizeof body), 1);
    assert_string_equal(got, id);
    assert_int_equal(raw_deliver_ack(fd, opaque, got, ok), 0);
}

static const char *routing_lua(const char *eu, const char *us)
{
    static char text[512];
    snprintf(text, sizeof text,
             "local TO = { eu = '%s', us = '%s' }\n"
             "return { route_message = function(m, binds)\n"
             "  local want = TO[m.properties.region or '']\n"
             "  for _, b in ipairs(binds) do\n"
             "    if b.group == want then return { want } end\n"
             "  end\n"
             "end }\n",
             eu, us);
    return text;
}

static void test_route_message(void **state)
{
    (void)state;
    start_broker("routing.lua", routing_lua("s-trade-a", "s-trade-b"), "hooks=route_message");
    int a = raw_connect_as(bp.port, TEST_CONSUMER, TEST_SECRET);
    int b = raw_connect_as(bp.port, TEST_CONSUMER_B, TEST_SECRET);
    struct kq_client *p;
    char err[256], eu[33], us[33];
    assert_int_equal(open_client(TEST_PRODUCER, TEST_SECRET, &p, err, sizeof err), 0);

    /* both groups are bound to pay-succ: each gets only its region's message */
    publish(p, "pay-succ", "eu", -1, eu);
    publish(p, "pay-succ", "us", -1, us);
    expect_delivery(a, eu, true);
    expect_delivery(b, us, true);

    reload("routing.lua", routing_lua("s-trade-b", "s-trade-a"));
    publish(p, "pay-succ", "eu", -1, eu);
    publish(p, "pay-succ", "us", -1, us);
    expect_delivery(b, eu, true);
    expect_delivery(a, us, true);
    /* more properties than the hooks' view lists without allocating (msg_hooks.c): the
     * region, the 21st, is still seen */
    publish_padded(p, "pay-succ", "eu", -1, 20, eu);
    expect_delivery(b, eu, true);
    /* no region: route_message says nil, the built-in routing sends it to both */
    publish(p, "pay-succ", NULL, -1, eu);
    expect_delivery(a, eu, true);
    expect_delivery(b, eu, true);

    char out[8192];
    assert_int_equal(admin_get(broker_admin_port(&bp), "/stat", out, sizeof out), 200);
    assert_non_null(strstr(out, "\"route_message\":{\"loaded\":true"));
    kq_client_close(p);
    close(a);
    close(b);
}

static const char AUTH_V1[] =
    "return { on_connect = function(c)\n"
    "  if c.group == 's-trade-b' then return 'reject', 'maintenance: ' .. c.group end\n"
    "  if c.peer_ip ~= '127.0.0.1' or c.peer_port <= 0 then return 'reject', 'odd peer' end\n"
    "  return 'accept'\n"
    "end }\n";

static void test_on_connect(void **state)
{
    (void)state;
    start_broker("auth.lua", AUTH_V1, "hooks=connect");
    struct kq_client *c = NULL, *p = NULL;
    char err[256], id[33];
    assert_int_equal(open_client(TEST_CONSUMER_B, TEST_SECRET, &c, err, sizeof err), -EACCES);
    assert_non_null(strstr(err, "maintenance: s-trade-b"));
    /* the hook accepts every other group, but never a wrong secret */
    assert_int_equal(open_client(TEST_CONSUMER, "wrong", &c, err, sizeof err), -EACCES);
    assert_non_null(strstr(err, "unknown groupId or wrong secretKey"));
    int a = raw_connect_as(bp.port, TEST_CONSUMER, TEST_SECRET);
    assert_int_equal(open_client(TEST_PRODUCER, TEST_SECRET, &p, err, sizeof err), 0);
    publish(p, "refund-1", NULL, -1, id); /* s-trade-a's only */
    expect_delivery(a, id, true);

    reload("auth.lua", "return { on_connect = function(c)\n"
                       "  if c.group == 's-trade-a' and c.connections >= 1 then\n"
                       "    return 'reject', 'one connection for ' .. c.group\n"
                       "  end\n"
                       "end }\n");
    int b = raw_connect_as(bp.port, TEST_CONSUMER_B, TEST_SECRET); /* open again */
    assert_int_equal(open_client(TEST_CONSUMER, TEST_SECRET, &c, err, sizeof err), -EACCES);
    assert_non_null(strstr(err, "one connection for s-trade-a"));
    publish(p, "pay-succ", NULL, -1, id);
    expect_delivery(a, id, true);
    expect_delivery(b, id, true);
    assert_true(broker_log_count(&bp, "auth failed") >= 3);
    kq_client_close(p);
    close(a);
    close(b);
}

static const char DEAD_V1[] =
    "return { on_dead = function(m, reason)\n"
    "  if m.properties.region == 'eu' then return { groups = { 's-trade-b' } } end\n"
    "end }\n";

static void test_on_dead(void **state)
{
    (void)state;
    start_broker("retry.lua", DEAD_V1, "hooks=dead");
    int a = raw_connect_as(bp.port, TEST_CONSUMER, TEST_SECRET);   /* refund-.* */
    int b = raw_connect_as(bp.port, TEST_CONSUMER_B, TEST_SECRET); /* not refund-* */
    struct kq_client *p;
    char err[256], id[33], dropped[33];
    assert_int_equal(open_client(TEST_PRODUCER, TEST_SECRET, &p, err, sizeof err), 0);

    /* one attempt allowed: a's nack makes it dead; on_dead hands it to s-trade-b */
    publish(p, "refund-x", "eu", 1, id);
    expect_delivery(a, id, false);
    expect_delivery(b, id, false); /* fails there too: a dead letter for real, on_dead once */
    char line[128];
    snprintf(line, sizeof line, "dead letter id=%s", id);
    assert_true(broker_wait_log(&bp, line, 10000));
    snprintf(line, sizeof line, "dead letter handed over by on_dead id=%s", id);
    assert_int_equal(broker_log_count(&bp, line), 1);

    reload("retry.lua", "return { on_dead = function(m, reason) return 'drop' end }");
    publish(p, "refund-y", "eu", 1, dropped);
    expect_delivery(a, dropped, false);
    snprintf(line, sizeof line, "dead letter dropped by on_dead id=%s", dropped);
    assert_true(broker_wait_log(&bp, line, 10000));
    char out[8192];
    assert_int_equal(admin_get(broker_admin_port(&bp), "/stat", out, sizeof out), 200);
    if (!strstr(out, "\"dead\":{\"loaded\":true") || !strstr(out, "\"rejects\":1"))
        fail_msg("/stat: %s", out);
    kq_client_close(p);
    close(a);
    close(b);
}

static int teardown(void **state)
{
    (void)state;
    return broker_stop(&bp) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_route_message, teardown),
        cmocka_unit_test_teardown(test_on_connect, teardown),
        cmocka_unit_test_teardown(test_on_dead, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
