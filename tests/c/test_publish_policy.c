/* Integration: a broker with a publish.lua whose on_publish rejects forbidden messageTypes
 * and adds the property checked=yes to the others. The producer gets the policy's reason in
 * a MessageStoreAck false and the rejected message is not stored; the consumer receives the
 * added property, and still does after a restart (the changed header is what is stored); a
 * SIGHUP loads an edited publish.lua for the next message. */
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

#include "support/broker_proc.h"
#include "support/test_files.h"

static const char PUBLISH_LUA[] =
    "return { on_publish = function(m)\n"
    "  if m.message_type:find('forbidden', 1, true) then\n"
    "    return 'reject', 'type ' .. m.message_type .. ' is forbidden'\n"
    "  end\n"
    "  return { properties = { checked = 'yes' } }\n"
    "end }\n";

static struct broker_proc bp;

static void write_policy(const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/policies/publish.lua", bp.dir);
    test_write_file(path, text);
}

static void start_broker(void)
{
    assert_int_equal(broker_prepare(&bp), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/policies", bp.dir);
    assert_int_equal(mkdir(path, 0755), 0);
    write_policy(PUBLISH_LUA);
    char cfg[4096];
    broker_default_config(cfg, sizeof cfg, "file://./data?fsync=group",
                          "policies = \"policies\", admin = \"127.0.0.1:0\",");
    assert_int_equal(broker_launch(&bp, cfg, "127.0.0.1:0", NULL), 0);
    assert_true(broker_wait_log(&bp, "hooks=publish", 1));
}

static int connect_as(const char *group)
{
    int fd = raw_connect(bp.port);
    assert_true(fd >= 0);
    assert_int_equal(raw_handshake(fd, group, TEST_SECRET), 1);
    return fd;
}

/* Receives one delivery of message `id` within timeout_ms and returns the value of its
 * property `key` (malloc'd; NULL when it has none). Fails the test when none arrives. */
static char *recv_property(int fd, const char *id, const char *key, uint32_t *opaque,
                           int timeout_ms)
{
    struct kq_frame f;
    uint8_t *body;
    for (;;) {
        int rc = raw_read_frame(fd, timeout_ms, &f, &body);
        if (rc <= 0)
            fail_msg("no delivery of %s (rc %d)", id, rc);
        if (f.cmd == KQ_CMD_BYTES_MESSAGE || f.cmd == KQ_CMD_STRING_MESSAGE)
            break;
        free(body);
    }
    ProtobufCMessage *m = kq_codec_unpack(f.cmd, f.body, (size_t)f.body_len);
    struct kq_message_view v;
    assert_non_null(m);
    assert_int_equal(kq_message_view(f.cmd, m, &v), 0);
    assert_string_equal(v.header->messageid, id);
    char *value = NULL;
    for (size_t i = 0; i < v.header->n_properties; i++)
        if (strcmp(v.header->properties[i]->key, key) == 0)
            value = strdup(v.header->properties[i]->value);
    *opaque = f.opaque;
    kq_codec_free(m);
    free(body);
    return value;
}

static void test_reject_and_change(void **state)
{
    (void)state;
    start_broker();
    int admin = broker_admin_port(&bp);
    assert_true(admin > 0);
    int producer = connect_as(TEST_PRODUCER);
    int consumer = connect_as(TEST_CONSUMER); /* bound to pay-succ and refund-.* */

    char id[33], fb[256], out[2048];
    struct raw_msg bad = {.topic = "trade",
                          .type = "refund-forbidden",
                          .group = TEST_PRODUCER,
                          .body = "no",
                          .commit = true};
    assert_int_equal(raw_publish(producer, 1, &bad, id, fb, sizeof fb), 0);
    assert_string_equal(fb, "type refund-forbidden is forbidden");
    char path[64];
    snprintf(path, sizeof path, "/msg/%s", id);
    assert_int_equal(admin_get(admin, path, out, sizeof out), 404); /* never stored */

    struct raw_msg good = {.topic = "trade",
                           .type = "pay-succ",
                           .group = TEST_PRODUCER,
                           .body = "yes",
                           .commit = true};
    assert_int_equal(raw_publish(producer, 2, &good, id, fb, sizeof fb), 1);
    uint32_t opaque;
    char *checked = recv_property(consumer, id, "checked", &opaque, 10000);
    assert_non_null(checked);
    assert_string_equal(checked, "yes");
    free(checked);
    assert_int_equal(raw_deliver_ack(consumer, opaque, id, false), 0); /* keep it pending */
    assert_int_equal(admin_get(admin, "/stat", out, sizeof out), 200);
    assert_non_null(strstr(out, "\"publish\":{\"loaded\":true"));
    close(producer);
    close(consumer);

    /* the stored header carries the change: the redelivery after a restart has it */
    assert_int_equal(broker_stop(&bp), 0);
    assert_int_equal(broker_restart(&bp, NULL), 0);
    consumer = connect_as(TEST_CONSUMER);
    checked = recv_property(consumer, id, "checked", &opaque, 20000);
    assert_non_null(checked);
    assert_string_equal(checked, "yes");
    free(checked);
    assert_int_equal(raw_deliver_ack(consumer, opaque, id, true), 0);

    /* an edited publish.lua applies after a SIGHUP */
    write_policy("return { on_publish = function(m)\n"
                 "  return { properties = { checked = 'v2' } }\n"
                 "end }\n");
    assert_int_equal(kill(bp.pid, SIGHUP), 0);
    assert_true(broker_wait_log(&bp, "reload: done generation=", 10000));
    int producer2 = connect_as(TEST_PRODUCER);
    assert_int_equal(raw_publish(producer2, 3, &good, id, fb, sizeof fb), 1);
    checked = recv_property(consumer, id, "checked", &opaque, 10000);
    assert_non_null(checked);
    assert_string_equal(checked, "v2");
    free(checked);
    assert_int_equal(raw_deliver_ack(consumer, opaque, id, true), 0);
    close(producer2);
    close(consumer);
}

static int teardown(void **state)
{
    (void)state;
    return broker_stop(&bp) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_reject_and_change, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
