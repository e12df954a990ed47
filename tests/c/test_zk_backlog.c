/* A backlog recovered after a restart, before its group's bindings come back from ZooKeeper
 * (the real broker on the file store, a real ZooKeeper: $ZK_HOSTS or a private one).
 *
 * 300 messages are stored for a bound group with nobody online; the broker stops; the group's
 * `-bind` node is removed, so the restarted broker recovers them with no route ("no
 * subscriber", next look in 30 s). Then the consumer connects and the node is written again,
 * in both orders: the backlog must go out at once, not at the 30 s recheck — neither the
 * bindings arriving nor the consumer connecting woke such messages (issue 12). The same when
 * another group of the topic, offline, is bound again first (ZooKeeper reports each group's
 * node on its own): the backlog then has a route, to that group only. */
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
#include "support/idset.h"
#include "support/zk_service.h"

#define BACKLOG 300
/* Bindings or consumer -> whole backlog delivered: ~0.1 s here; the recheck it must not wait
 * for is 30 s. 2 s leaves room for a loaded CI machine. */
#define WAKE_LIMIT_MS 2000

static struct zk_service svc;
static zhandle_t *zh; /* the test's own view of ZooKeeper */
static char T[64];    /* "backlog-<pid>": a shared $ZK_HOSTS tree does not mix runs */
static struct broker_proc bp;

static uint64_t now_ms(void) { return kq_mono_us() / 1000; }

/* A group's direct binding of pay-succ, written as the original clients do; when it was. */
static uint64_t write_bind(const char *group)
{
    zk_test_write_binding(zh, T, group, "pay-succ", 0);
    return now_ms();
}

static void delete_bind(const char *group) { zk_test_delete_binding(zh, T, group); }

/* Wait (in the log since the broker's last start) for it to apply the group's bindings. */
static void wait_bindings_applied(const char *group)
{
    char needle[160];
    snprintf(needle, sizeof needle, "bindings changed topic=%s group=%s bindings=1", T, group);
    assert_true(broker_wait_log(&bp, needle, 10000));
}

static void start_broker(void)
{
    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "return {\n"
             "  default = \"zk\",\n"
             "  registry = \"%s\",\n"
             "  clusters = {\n"
             "    zk = {\n"
             "      bind = \"127.0.0.1:0\",\n"
             "      topics = { \"%s\" },\n"
             "      db = \"file://./data\",\n"
             "      deliverySeconds = 2,\n"
             "      recoverSeconds = 1,\n"
             "      groups = { [\"%s\"] = \"%s\", [\"%s\"] = \"%s\", [\"%s\"] = \"%s\" },\n"
             "    },\n"
             "  },\n"
             "}\n",
             svc.uri, T, TEST_PRODUCER, TEST_SECRET, TEST_CONSUMER, TEST_SECRET, TEST_CONSUMER_B,
             TEST_SECRET);
    assert_int_equal(broker_start(&bp, cfg, NULL), 0);
}

/* The registry's first pass is over: its watches are set. */
static void wait_registered(void)
{
    char needle[160];
    snprintf(needle, sizeof needle, "published topic=%s ", T);
    assert_true(broker_wait_log(&bp, needle, 10000));
}

static int connect_as(const char *group)
{
    int fd = raw_connect(bp.port);
    assert_true(fd >= 0);
    assert_int_equal(raw_handshake(fd, group, TEST_SECRET), 1);
    return fd;
}

/* BACKLOG messages, pipelined; every store ack must say stored. Their ids go to ids. */
static void publish_backlog(struct idset *ids)
{
    int fd = connect_as(TEST_PRODUCER);
    struct raw_msg m = {.topic = T, .type = "pay-succ", .commit = true, .body = "backlog"};
    for (uint32_t i = 1; i <= BACKLOG; i++) {
        char id[33];
        assert_int_equal(raw_publish_nowait(fd, i, &m, id), 0);
        idset_add(ids, id);
    }
    for (int i = 0; i < BACKLOG; i++) {
        struct kq_frame f;
        uint8_t *body;
        assert_int_equal(raw_read_cmd(fd, KQ_CMD_MESSAGE_STORE_ACK, 10000, &f, &body), 1);
        Protocol__MessageStoreAck *a =
            (Protocol__MessageStoreAck *)kq_codec_unpack(f.cmd, f.body, (size_t)f.body_len);
        assert_non_null(a);
        assert_true(a->status);
        kq_codec_free(&a->base);
        free(body);
    }
    close(fd);
}

/* Receive and ack deliveries on fd until every id of `want` came (each once at least) or
 * timeout_ms passed. Returns how many distinct ids of `want` arrived; *last_ms is when the
 * last of them did. */
static size_t receive_backlog(int fd, const struct idset *want, int timeout_ms, uint64_t *last_ms)
{
    struct idset *got = idset_new();
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    while (idset_size(got) < idset_size(want) && now_ms() < deadline) {
        char id[33];
        uint32_t op;
        if (raw_recv_delivery(fd, (int)(deadline - now_ms()), id, &op, NULL, 0) != 1)
            break;
        assert_int_equal(raw_deliver_ack(fd, op, id, true), 0);
        assert_true(idset_count(want, id) == 1); /* only what was published */
        if (idset_add(got, id) == 1)
            *last_ms = now_ms();
    }
    size_t n = idset_size(got);
    idset_free(got);
    return n;
}

/* Store the backlog for `group` (and `other`, when not NULL) with nobody online, stop,
 * remove their bindings and start again: the broker recovers BACKLOG messages that have no
 * route, and attempts them at once ("no subscriber", next look in 30 s). */
static struct idset *recovered_without_bindings(const char *group, const char *other)
{
    start_broker();
    wait_registered();
    write_bind(group);
    wait_bindings_applied(group);
    if (other) {
        write_bind(other);
        wait_bindings_applied(other);
    }
    struct idset *ids = idset_new();
    publish_backlog(ids);
    assert_int_equal(broker_stop(&bp), 0);

    delete_bind(group);
    if (other)
        delete_bind(other);
    assert_int_equal(broker_restart(&bp, NULL), 0); /* its log is read from here on */
    char needle[64];
    snprintf(needle, sizeof needle, "recovered pending=%d ", BACKLOG);
    assert_true(broker_wait_log(&bp, needle, 10000));
    wait_registered(); /* registered again, with no bindings for either group */
    return ids;
}

/* After the restart: `other` (when not NULL) is bound again first, with nobody of it online,
 * so the backlog gets a route but no one to go to; then `group`'s consumer connects and its
 * bindings are written, in the order given. The whole backlog must reach the consumer within
 * WAKE_LIMIT_MS of the later of the two. */
static void backlog_wakes(const char *group, const char *other, bool consumer_first)
{
    struct idset *ids = recovered_without_bindings(group, other);
    if (other) {
        write_bind(other);
        wait_bindings_applied(other);
    }
    int c;
    uint64_t from, last = 0;
    if (consumer_first) {
        c = connect_as(group);
        assert_int_equal(receive_backlog(c, ids, 300, &last), 0); /* no route: nothing yet */
        from = write_bind(group);
    } else {
        write_bind(group);
        wait_bindings_applied(group);
        from = now_ms();
        c = connect_as(group);
    }
    size_t n = receive_backlog(c, ids, WAKE_LIMIT_MS + 3000, &last);
    print_message("%s -> backlog: %zu/%d delivered, the last %llu ms after\n",
                  consumer_first ? "bindings written" : "consumer connected", n, BACKLOG,
                  n ? (unsigned long long)(last - from) : 0ULL);
    assert_int_equal(n, BACKLOG);
    assert_true(last - from <= WAKE_LIMIT_MS);

    close(c);
    assert_int_equal(broker_stop(&bp), 0);
    delete_bind(group);
    if (other)
        delete_bind(other);
    idset_free(ids);
}

/* The consumer is online first (nothing to route to yet), then the bindings arrive. */
static void test_bindings_wake_backlog(void **state)
{
    (void)state;
    backlog_wakes(TEST_CONSUMER, NULL, true);
}

/* The bindings arrive first (nobody online yet), then the consumer connects. */
static void test_consumer_wakes_backlog(void **state)
{
    (void)state;
    backlog_wakes(TEST_CONSUMER, NULL, false);
}

/* ZooKeeper reports each group's node on its own: another group of the topic is bound
 * again first, while offline. The backlog is then routed to that group only — and still
 * goes to ours at once when our bindings and consumer come, in either order. */
static void test_bindings_wake_backlog_routed_elsewhere(void **state)
{
    (void)state;
    backlog_wakes(TEST_CONSUMER_B, TEST_CONSUMER, true);
}

static void test_consumer_wakes_backlog_routed_elsewhere(void **state)
{
    (void)state;
    backlog_wakes(TEST_CONSUMER_B, TEST_CONSUMER, false);
}

static int stop_broker(void **state)
{
    (void)state;
    if (bp.pid > 0)
        broker_kill9(&bp);
    return 0;
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(T, sizeof T, "backlog-%d", (int)getpid());
    if (zk_service_open(&svc, &zh) != 0)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    zk_service_close(&svc, &zh);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_bindings_wake_backlog, stop_broker),
        cmocka_unit_test_teardown(test_consumer_wakes_backlog, stop_broker),
        cmocka_unit_test_teardown(test_bindings_wake_backlog_routed_elsewhere, stop_broker),
        cmocka_unit_test_teardown(test_consumer_wakes_backlog_routed_elsewhere, stop_broker),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
