/* The broker's ZooKeeper registry against a real ZooKeeper (ZK_HOSTS, or a private one
 * started with scripts/services-up.sh). Node types and data are checked by reading
 * ZooKeeper directly; bindings are written as raw JSON exactly like the original clients. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "core/clock.h"
#include "registry/zk_registry.h"
#include "support/zk_service.h"

static struct zk_service svc;
static zhandle_t *zh;   /* the test's own view of ZooKeeper */
static char prefix[32]; /* unique topic prefix: the tree is shared with other runs */

/* ---- what the registry reported ---------------------------------------------------------- */

struct seen {
    char topic[64], group[64], mtype[64];
    size_t n;
    int bind_type, watermark;
    bool persistent;
};

static struct seen seen[256];
static size_t n_seen;
static const char *last_state;
static bool stopped;

static void on_bindings(void *ud, const char *topic, const char *group, const struct kq_binding *b,
                        size_t n)
{
    if (n_seen == sizeof seen / sizeof seen[0])
        return;
    struct seen *s = &seen[n_seen++];
    memset(s, 0, sizeof *s);
    snprintf(s->topic, sizeof s->topic, "%s", topic);
    snprintf(s->group, sizeof s->group, "%s", group);
    s->n = n;
    if (n) {
        snprintf(s->mtype, sizeof s->mtype, "%s", b[0].message_type);
        s->bind_type = (int)b[0].bind_type;
        s->watermark = b[0].watermark;
        s->persistent = b[0].persistent;
    }
}

static void on_state(void *ud, const char *state) { last_state = state; }

static const struct kq_zk_events events = {.on_bindings = on_bindings, .on_state = on_state};

static void on_stopped(void *ud) { stopped = true; }

/* Run the loop until pred() or timeout; returns pred(). */
static bool run_until(uv_loop_t *loop, bool (*pred)(void *), void *arg, int timeout_ms)
{
    uint64_t end = kq_mono_us() + (uint64_t)timeout_ms * 1000;
    while (!pred(arg) && kq_mono_us() < end) {
        uv_run(loop, UV_RUN_NOWAIT);
        usleep(5000);
    }
    return pred(arg);
}

static bool state_is(void *want) { return last_state && strcmp(last_state, want) == 0; }

static bool seen_at_least(void *n) { return n_seen >= *(size_t *)n; }

static bool is_stopped(void *x) { return stopped; }

/* Wait for the k-th report (0-based) and return it. */
static struct seen *wait_seen(uv_loop_t *loop, size_t k)
{
    size_t want = k + 1;
    assert_true(run_until(loop, seen_at_least, &want, 10000));
    return &seen[k];
}

static bool never(void *x) { return false; }

/* Let the loop run for ms (to see that nothing more is reported). */
static void settle(uv_loop_t *loop, int ms) { run_until(loop, never, NULL, ms); }

static void topic(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s-%s", prefix, name);
}

/* ---- node checks ------------------------------------------------------------------------- */

__attribute__((format(printf, 2, 3))) static void assert_path_fmt(bool ephemeral, const char *fmt,
                                                                  ...)
{
    char path[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof path, fmt, ap);
    va_end(ap);
    print_message("checking %s\n", path);
    zk_test_assert_node(zh, path, ephemeral);
}

static bool node_exists(const char *path) { return zoo_exists(zh, path, 0, NULL) == ZOK; }

/* ---- fixtures ---------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    if (zk_service_open(&svc, &zh) != 0)
        return -1;
    snprintf(prefix, sizeof prefix, "t%ld-%d", (long)(kq_now_ms() % 100000000), (int)getpid());
    return 0;
}

static int group_teardown(void **state)
{
    zk_service_close(&svc, &zh);
    return 0;
}

static int reset(void **state)
{
    n_seen = 0;
    last_state = NULL;
    stopped = false;
    return 0;
}

static void stop_registry(uv_loop_t *loop, struct kq_zk_registry *r)
{
    kq_zk_registry_stop(r, on_stopped, NULL);
    assert_true(run_until(loop, is_stopped, NULL, 15000));
}

/* ---- tests ------------------------------------------------------------------------------- */

static const char JSON_A[] =
    "[{\"groupId\":\"s-trade-a\",\"topic\":\"trade\",\"messageType\":\"pay-200\",\"bindType\":0,"
    "\"version\":\"1.0.0\",\"watermark\":1000,\"persistent\":true}]";
static const char JSON_A2[] =
    "[{\"groupId\":\"s-trade-a\",\"topic\":\"trade\",\"messageType\":\"pay-\\\\d+\","
    "\"bindType\":1,\"version\":\"1.0.0\",\"watermark\":2000,\"persistent\":false},"
    "{\"groupId\":\"s-trade-a\",\"topic\":\"trade\",\"messageType\":\"*\",\"bindType\":2,"
    "\"version\":\"1.0.0\",\"watermark\":2000,\"persistent\":false}]";
static const char JSON_B[] =
    "[{\"groupId\":\"s-trade-b\",\"topic\":\"trade\",\"messageType\":\"refund\",\"bindType\":0,"
    "\"version\":\"1.0.0\",\"watermark\":500,\"persistent\":true}]";

/* Publishing: every node the original writes, with its type, empty data and open ACL;
 * bindings present before the start are reported. */
static void test_publish_layout(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char ta[64], tb[64], path[512];
    topic(ta, sizeof ta, "trade");
    topic(tb, sizeof tb, "user");
    snprintf(path, sizeof path, "/kiteq/sub/%s/s-pre-bind", tb);
    assert_int_equal(zk_test_write(zh, path, JSON_B), ZOK);

    const char *bind = "127.0.0.1:13820";
    char *topics[] = {ta, tb};
    struct kq_zk_registry *r;
    char err[256];
    assert_int_equal(
        kq_zk_registry_start(&loop, svc.uri, bind, topics, 2, &events, NULL, &r, err, sizeof err),
        0);
    assert_true(run_until(&loop, state_is, "connected", 15000));
    assert_string_equal(kq_zk_registry_state(r), "connected");
    struct seen *s = wait_seen(&loop, 0);
    assert_string_equal(s->topic, tb);
    assert_string_equal(s->group, "s-pre");
    assert_int_equal(s->n, 1);
    assert_string_equal(s->mtype, "refund");

    zk_test_assert_node(zh, "/kiteq", false);
    zk_test_assert_node(zh, "/kiteq/server", false);
    zk_test_assert_node(zh, "/kiteq/pub", false);
    zk_test_assert_node(zh, "/kiteq/sub", false);
    zk_test_assert_node(zh, "/kiteq/alive_servers", false);
    zk_test_assert_node(zh, "/kiteq/all_servers", false);
    for (int i = 0; i < 2; i++) {
        assert_path_fmt(false, "/kiteq/server/%s", topics[i]);
        assert_path_fmt(true, "/kiteq/server/%s/%s", topics[i], bind);
        assert_path_fmt(false, "/kiteq/pub/%s", topics[i]);
        assert_path_fmt(false, "/kiteq/sub/%s", topics[i]);
    }
    assert_path_fmt(true, "/kiteq/alive_servers/%s", bind);
    assert_path_fmt(false, "/kiteq/all_servers/%s", bind);

    stop_registry(&loop, r);
    /* withdrawn at stop: server + alive nodes; all_servers stays (persistent) */
    snprintf(path, sizeof path, "/kiteq/server/%s/%s", ta, bind);
    assert_false(node_exists(path));
    snprintf(path, sizeof path, "/kiteq/alive_servers/%s", bind);
    assert_false(node_exists(path));
    snprintf(path, sizeof path, "/kiteq/all_servers/%s", bind);
    assert_true(node_exists(path));
    uv_loop_close(&loop);
}

/* Create, change, malformed, another group, delete: one report per change, only the
 * group concerned; malformed JSON is not reported and keeps the last good bindings. */
static void test_binding_changes(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char ta[64], pa[512], pb[512];
    topic(ta, sizeof ta, "bind");
    snprintf(pa, sizeof pa, "/kiteq/sub/%s/s-trade-a-bind", ta);
    snprintf(pb, sizeof pb, "/kiteq/sub/%s/s-trade-b-bind", ta);
    char *topics[] = {ta};
    struct kq_zk_registry *r;
    char err[256];
    assert_int_equal(kq_zk_registry_start(&loop, svc.uri, "127.0.0.1:13821", topics, 1, &events,
                                          NULL, &r, err, sizeof err),
                     0);
    assert_true(run_until(&loop, state_is, "connected", 15000));
    settle(&loop, 300);
    assert_int_equal(n_seen, 0);

    assert_int_equal(zk_test_write(zh, pa, JSON_A), ZOK);
    struct seen *s = wait_seen(&loop, 0);
    assert_string_equal(s->topic, ta);
    assert_string_equal(s->group, "s-trade-a");
    assert_int_equal(s->n, 1);
    assert_string_equal(s->mtype, "pay-200");
    assert_int_equal(s->bind_type, 0);
    assert_int_equal(s->watermark, 1000);
    assert_true(s->persistent);

    assert_int_equal(zk_test_write(zh, pa, JSON_A2), ZOK);
    s = wait_seen(&loop, 1);
    assert_string_equal(s->group, "s-trade-a");
    assert_int_equal(s->n, 2);
    assert_string_equal(s->mtype, "pay-\\d+");
    assert_int_equal(s->bind_type, 1);
    assert_int_equal(s->watermark, 2000);
    assert_false(s->persistent);

    /* malformed: nothing reported (and the watch stays armed: the next change is seen) */
    assert_int_equal(zk_test_write(zh, pa, "[{\"groupId\":"), ZOK);
    settle(&loop, 1000);
    assert_int_equal(n_seen, 2);
    assert_int_equal(zk_test_write(zh, pa, "{\"not\":\"an array\"}"), ZOK);
    settle(&loop, 500);
    assert_int_equal(n_seen, 2);

    assert_int_equal(zk_test_write(zh, pb, JSON_B), ZOK);
    s = wait_seen(&loop, 2);
    assert_string_equal(s->group, "s-trade-b");
    assert_int_equal(s->n, 1);
    settle(&loop, 300);
    assert_int_equal(n_seen, 3); /* s-trade-a (still malformed) not reported again */

    assert_int_equal(zk_test_write(zh, pa, JSON_A), ZOK);
    s = wait_seen(&loop, 3);
    assert_string_equal(s->group, "s-trade-a");
    assert_int_equal(s->n, 1);

    /* delete a: only a is reported, with n == 0 */
    assert_int_equal(zoo_delete(zh, pa, -1), ZOK);
    s = wait_seen(&loop, 4);
    assert_string_equal(s->group, "s-trade-a");
    assert_int_equal(s->n, 0);
    settle(&loop, 500);
    assert_int_equal(n_seen, 5);

    /* set_topics: publish a new topic, withdraw this one (its group reported removed) */
    char tc[64], path[512];
    topic(tc, sizeof tc, "new");
    char *next[] = {tc};
    kq_zk_registry_set_topics(r, next, 1);
    s = wait_seen(&loop, 5);
    assert_string_equal(s->topic, ta);
    assert_string_equal(s->group, "s-trade-b");
    assert_int_equal(s->n, 0);
    snprintf(path, sizeof path, "/kiteq/server/%s/127.0.0.1:13821", tc);
    assert_true(zk_test_wait_node(zh, path, true, NULL, 5000));
    snprintf(path, sizeof path, "/kiteq/server/%s/127.0.0.1:13821", ta);
    assert_true(zk_test_wait_node(zh, path, false, NULL, 5000));
    /* the withdrawn topic is not watched any more */
    assert_int_equal(zk_test_write(zh, pa, JSON_A), ZOK);
    settle(&loop, 500);
    assert_int_equal(n_seen, 6);

    stop_registry(&loop, r);
    uv_loop_close(&loop);
}

/* Bad URI: an error, no registry. Unreachable ZooKeeper: start succeeds, the state says
 * so, and stop is quick. */
static void test_bad_and_unreachable(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct kq_zk_registry *r;
    char err[256] = "";
    char *topics[] = {"x"};
    assert_int_equal(kq_zk_registry_start(&loop, "http://x:1", "127.0.0.1:1", topics, 1, &events,
                                          NULL, &r, err, sizeof err),
                     -EINVAL);
    assert_non_null(strstr(err, "URI"));
    /* port 1 on loopback: refused at once */
    assert_int_equal(kq_zk_registry_start(&loop, "zk://127.0.0.1:1", "127.0.0.1:13822", topics, 1,
                                          &events, NULL, &r, err, sizeof err),
                     0);
    settle(&loop, 1000);
    assert_string_equal(kq_zk_registry_state(r), "connecting");
    uint64_t t0 = kq_mono_us();
    stop_registry(&loop, r);
    assert_true(kq_mono_us() - t0 < 3000000);
    assert_int_equal(n_seen, 0);
    uv_loop_close(&loop);
}

/* ZooKeeper stopped and restarted under a running registry: the state goes through
 * connecting/unreachable, the registration comes back and stays after the old session
 * would have expired, and watches work again. */
static void test_zk_restart(void **state)
{
    if (!svc.base[0]) {
        print_message("skipped: ZooKeeper is external (set KQ_SERVICES_BASE to allow)\n");
        skip();
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    char ta[64], node[512], alive[512], grp[512];
    topic(ta, sizeof ta, "restart");
    const char *bind = "127.0.0.1:13823";
    snprintf(node, sizeof node, "/kiteq/server/%s/%s", ta, bind);
    snprintf(alive, sizeof alive, "/kiteq/alive_servers/%s", bind);
    snprintf(grp, sizeof grp, "/kiteq/sub/%s/s-r-bind", ta);
    char *topics[] = {ta};
    struct kq_zk_registry *r;
    char err[256];
    assert_int_equal(
        kq_zk_registry_start(&loop, svc.uri, bind, topics, 1, &events, NULL, &r, err, sizeof err),
        0);
    assert_true(run_until(&loop, state_is, "connected", 15000));
    assert_true(zk_test_wait_node(zh, node, true, NULL, 5000));

    zookeeper_close(zh);
    zh = NULL;
    assert_int_equal(zk_service_down(&svc), 0);
    assert_true(run_until(&loop, state_is, "connecting", 5000));
    /* long enough for the registry to give up on the old handle and back off */
    assert_true(run_until(&loop, state_is, "unreachable", 10000));
    assert_int_equal(zk_service_up(&svc), 0);
    assert_true(run_until(&loop, state_is, "connected", 20000));
    assert_non_null(zh = zk_test_connect(svc.hosts, 15000));
    struct Stat st;
    assert_true(zk_test_wait_node(zh, node, true, &st, 5000));
    assert_true(st.ephemeralOwner != 0);
    /* the old session expires ~5 s after the restart; ours must survive it */
    settle(&loop, 7000);
    assert_true(zk_test_wait_node(zh, node, true, &st, 100));
    assert_true(st.ephemeralOwner != 0);
    assert_true(zk_test_wait_node(zh, alive, true, NULL, 100));

    size_t before = n_seen;
    assert_int_equal(zk_test_write(zh, grp, JSON_A), ZOK);
    struct seen *s = wait_seen(&loop, before);
    assert_string_equal(s->group, "s-r");
    assert_int_equal(s->n, 1);

    stop_registry(&loop, r);
    uv_loop_close(&loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_publish_layout, reset),
        cmocka_unit_test_setup(test_binding_changes, reset),
        cmocka_unit_test_setup(test_bad_and_unreachable, reset),
        cmocka_unit_test_setup(test_zk_restart, reset),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
