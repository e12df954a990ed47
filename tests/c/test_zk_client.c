/* kq_cluster (client side of the ZooKeeper registry) against a real ZooKeeper and two real
 * brokers. The brokers run with static bindings; the test itself plays their registration
 * (/kiteq/server/trade/<addr>, ephemeral) so that brokers can be added, removed and killed
 * independently of the broker's own registry wiring. Checks the producer and consumer
 * nodes exactly as the original clients write them, round robin over brokers, failover,
 * and end-to-end delivery to a consumer that found its brokers in ZooKeeper. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "client/kiteq_cluster.h"
#include "core/clock.h"
#include "support/broker_proc.h"
#include "support/zk_service.h"

static struct zk_service svc;
static zhandle_t *zh;
static struct broker_proc bp[2];
static char addr[2][64];

static void sleep_ms(int ms) { usleep((useconds_t)ms * 1000); }

static void server_node(int i, char *path, size_t len)
{
    snprintf(path, len, "/kiteq/server/trade/%s", addr[i]);
}

/* Play broker i's registration. */
static void list_broker(int i, bool on)
{
    char path[256];
    server_node(i, path, sizeof path);
    if (on) {
        assert_int_equal(zk_test_write(zh, "/kiteq/server/trade", NULL), ZOK);
        int rc = zoo_create(zh, path, NULL, -1, &ZOO_OPEN_ACL_UNSAFE, ZOO_EPHEMERAL, NULL, 0);
        assert_true(rc == ZOK || rc == ZNODEEXISTS);
    } else {
        int rc = zoo_delete(zh, path, -1);
        assert_true(rc == ZOK || rc == ZNONODE);
    }
}

static size_t wait_brokers(struct kq_cluster *c, size_t want, int timeout_ms)
{
    char out[4][128];
    size_t n = 0;
    for (int t = 0; t <= timeout_ms; t += 50) {
        if ((n = kq_cluster_brokers(c, "trade", out, 4)) == want)
            break;
        sleep_ms(50);
    }
    return n;
}

static int group_setup(void **state)
{
    if (zk_service_open(&svc, &zh) != 0)
        return -1;
    /* this test owns /kiteq/server/trade: drop leftovers of earlier runs */
    struct String_vector kids = {0, NULL};
    if (zoo_get_children(zh, "/kiteq/server/trade", 0, &kids) == ZOK) {
        for (int k = 0; k < kids.count; k++) {
            char path[256];
            snprintf(path, sizeof path, "/kiteq/server/trade/%s", kids.data[k]);
            zoo_delete(zh, path, -1);
        }
        deallocate_String_vector(&kids);
    }
    char cfg[4096];
    broker_default_config(cfg, sizeof cfg, "memory://", "");
    for (int i = 0; i < 2; i++) {
        if (broker_start(&bp[i], cfg, NULL) != 0)
            return -1;
        snprintf(addr[i], sizeof addr[i], "127.0.0.1:%d", bp[i].port);
    }
    return 0;
}

static int group_teardown(void **state)
{
    for (int i = 0; i < 2; i++)
        if (bp[i].pid > 0)
            broker_stop(&bp[i]);
    zk_service_close(&svc, &zh);
    return 0;
}

static struct kq_message msg(const char *type)
{
    struct kq_message m = {.topic = "trade",
                           .message_type = type,
                           .expired_time = -1,
                           .deliver_limit = -1,
                           .body = "hello",
                           .body_len = 5};
    return m;
}

static const char *const PUB_TOPICS[] = {"trade"};

static struct kq_cluster *open_producer(void)
{
    struct kq_cluster_options o = {
        .registry = svc.uri,
        .client = {.group_id = "p-trade", .secret = "secret", .ack_timeout_ms = 3000},
        .publish_topics = PUB_TOPICS,
        .n_publish_topics = 1,
    };
    struct kq_cluster *c = NULL;
    char err[256] = "";
    int rc = kq_cluster_open(&o, &c, err, sizeof err);
    if (rc)
        print_message("kq_cluster_open: %d %s\n", rc, err);
    assert_int_equal(rc, 0);
    return c;
}

/* Producer node, both brokers used, failover when one dies, list changes followed. */
static void test_producer(void **state)
{
    list_broker(0, true);
    list_broker(1, true);
    struct kq_cluster *c = open_producer();

    char host[256], path[512];
    gethostname(host, sizeof host);
    snprintf(path, sizeof path, "/kiteq/pub/trade/p-trade/%s", host);
    struct Stat st;
    assert_int_equal(zoo_exists(zh, path, 0, &st), ZOK);
    assert_true(st.ephemeralOwner == 0);
    assert_int_equal(st.dataLength, 0);
    assert_int_equal(wait_brokers(c, 2, 5000), 2);

    struct kq_message m = msg("pay-succ");
    struct kq_publish_result r;
    for (int i = 0; i < 10; i++) {
        assert_int_equal(kq_cluster_publish(c, &m, &r), 0);
        assert_true(r.status);
    }

    /* broker 0 dies (still listed): messages go to broker 1 */
    broker_kill9(&bp[0]);
    sleep_ms(300);
    for (int i = 0; i < 10; i++) {
        int rc = kq_cluster_publish(c, &m, &r);
        if (rc == -ECONNRESET || rc == -ETIMEDOUT) /* in flight when it died: not resent */
            continue;
        assert_int_equal(rc, 0);
        assert_true(r.status);
    }
    /* it leaves the registry: dropped from the list */
    list_broker(0, false);
    assert_int_equal(wait_brokers(c, 1, 5000), 1);

    /* no broker listed: -ENOTCONN */
    list_broker(1, false);
    assert_int_equal(wait_brokers(c, 0, 5000), 0);
    assert_int_equal(kq_cluster_publish(c, &m, &r), -ENOTCONN);

    /* a broker (re)appears: used again */
    assert_int_equal(broker_restart(&bp[0], NULL), 0);
    list_broker(0, true);
    assert_int_equal(wait_brokers(c, 1, 10000), 1);
    assert_int_equal(kq_cluster_publish(c, &m, &r), 0);
    assert_true(r.status);
    list_broker(1, true);
    assert_int_equal(wait_brokers(c, 2, 5000), 2);
    kq_cluster_close(c);
}

struct got {
    pthread_mutex_t mu;
    int n;
    char last_type[64];
};

static bool on_message(void *ud, const struct kq_message *m)
{
    struct got *g = ud;
    pthread_mutex_lock(&g->mu);
    g->n++;
    snprintf(g->last_type, sizeof g->last_type, "%s", m->message_type);
    pthread_mutex_unlock(&g->mu);
    return true;
}

static int got_n(struct got *g)
{
    pthread_mutex_lock(&g->mu);
    int n = g->n;
    pthread_mutex_unlock(&g->mu);
    return n;
}

/* Consumer: bindings JSON exactly as the original clients write it, connections to every
 * listed broker, deliveries end to end. */
static void test_consumer(void **state)
{
    list_broker(0, true);
    list_broker(1, true);
    struct got g = {.n = 0};
    pthread_mutex_init(&g.mu, NULL);
    const struct kq_cluster_binding b = {.topic = "trade",
                                         .message_type = "pay-succ",
                                         .bind_type = 0,
                                         .watermark = 1000,
                                         .persistent = true};
    struct kq_cluster_options o = {
        .registry = svc.uri,
        .client = {.group_id = "s-trade-a", .secret = "secret", .on_message = on_message, .ud = &g},
        .bindings = &b,
        .n_bindings = 1,
    };
    struct kq_cluster *c = NULL;
    char err[256] = "";
    assert_int_equal(kq_cluster_open(&o, &c, err, sizeof err), 0);
    assert_int_equal(wait_brokers(c, 2, 5000), 2);

    static const char want[] =
        "[{\"groupId\":\"s-trade-a\",\"topic\":\"trade\",\"messageType\":\"pay-succ\","
        "\"bindType\":0,\"version\":\"1.0.0\",\"watermark\":1000,\"persistent\":true}]";
    char buf[1024];
    int len = sizeof buf - 1;
    struct Stat st;
    assert_int_equal(zoo_get(zh, "/kiteq/sub/trade/s-trade-a-bind", 0, buf, &len, &st), ZOK);
    buf[len] = '\0';
    assert_string_equal(buf, want);
    assert_true(st.ephemeralOwner == 0);

    struct kq_cluster *p = open_producer();
    struct kq_message m = msg("pay-succ");
    struct kq_publish_result r;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(kq_cluster_publish(p, &m, &r), 0);
        assert_true(r.status);
    }
    for (int t = 0; t < 10000 && got_n(&g) < 4; t += 50)
        sleep_ms(50);
    kq_cluster_close(p);
    kq_cluster_close(c); /* its reader threads are gone: g is ours alone */
    assert_true(g.n >= 4);
    assert_string_equal(g.last_type, "pay-succ");
    pthread_mutex_destroy(&g.mu);
}

/* Bad registry URIs and an unreachable ZooKeeper fail cleanly. */
static void test_open_errors(void **state)
{
    struct kq_cluster_options o = {.registry = "file:///x", .client = {.group_id = "g"}};
    struct kq_cluster *c = NULL;
    char err[256] = "";
    assert_int_equal(kq_cluster_open(&o, &c, err, sizeof err), -EINVAL);
    o.registry = "zk://127.0.0.1:1";
    o.open_wait_ms = 500;
    assert_int_equal(kq_cluster_open(&o, &c, err, sizeof err), -ETIMEDOUT);
    assert_null(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_producer),
        cmocka_unit_test(test_consumer),
        cmocka_unit_test(test_open_errors),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
