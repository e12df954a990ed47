/* Delivery when memory runs out (broker/delivery.c): a copy that can be neither sent nor
 * queued for room in its group's window fails the attempt for that group, which is retried;
 * it is counted (kiteq_deliveries_unsent_total) and logged, never dropped silently. The
 * broker runs in this process (its loop in a thread) so that kq_delivery_fail_waits can make
 * the queueing fail; clients are raw sockets, /metrics is read over HTTP. */
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

#include "admin/admin.h"
#include "broker/internal.h"
#include "core/clock.h"
#include "support/assert_text.h"
#include "support/broker_proc.h"
#include "support/log_capture.h"

struct inproc {
    uv_loop_t loop;
    uv_async_t stop;
    pthread_t th;
    struct kq_broker *b;
};

static void on_stop(uv_async_t *h)
{
    struct inproc *p = h->data;
    kq_broker_stop(p->b, NULL, NULL);
    uv_close((uv_handle_t *)&p->stop, NULL);
}

static void *loop_main(void *arg)
{
    struct inproc *p = arg;
    uv_run(&p->loop, UV_RUN_DEFAULT);
    return NULL;
}

static double metric(int admin_port, const char *sample)
{
    static char text[1 << 20];
    if (admin_get(admin_port, "/metrics", text, sizeof text) != 200)
        return -1;
    double v = prom_sample(text, sample);
    return v == v ? v : -1; /* NAN: absent */
}

static void test_copy_not_queued_is_counted(void **state)
{
    (void)state;
    char text[4096], err[2048] = "";
    broker_default_config(text, sizeof text, "memory://",
                          "deliverWindow = 1, deliverySeconds = 60, admin = \"127.0.0.1:0\",");
    struct kq_config *cfg = calloc(1, sizeof *cfg);
    kq_config_defaults(cfg);
    assert_int_equal(
        kq_config_load_buffer(cfg, "test.lua", text, strlen(text), NULL, err, sizeof err), 0);
    log_capture_begin();
    struct inproc p = {0};
    assert_int_equal(uv_loop_init(&p.loop), 0);
    if (kq_broker_start(&p.loop, cfg, err, sizeof err, &p.b) != 0)
        fail_msg("start: %s", err);
    int port = kq_broker_port(p.b), admin = kq_admin_port(p.b->admin);
    kq_delivery_fail_waits(p.b, true); /* before the loop's thread runs */
    uv_async_init(&p.loop, &p.stop, on_stop);
    p.stop.data = &p;
    assert_int_equal(pthread_create(&p.th, NULL, loop_main, &p), 0);

    int consumer = raw_connect_as(port, TEST_CONSUMER, TEST_SECRET);
    int producer = raw_connect_as(port, TEST_PRODUCER, TEST_SECRET);
    struct raw_msg m = {.topic = "trade", .type = "refund-x", .body = "b", .commit = true};
    char first[33], second[33], id[33];
    assert_int_equal(raw_publish(producer, 1, &m, first, NULL, 0), 1);
    uint32_t opaque;
    assert_int_equal(raw_recv_delivery(consumer, 5000, id, &opaque, NULL, 0), 1);
    assert_string_equal(id, first); /* in flight, not acked: the window of 1 is full */
    assert_int_equal(raw_publish(producer, 2, &m, second, NULL, 0), 1);
    const char *unsent = "kiteq_deliveries_unsent_total";
    uint64_t deadline = kq_mono_us() / 1000 + 5000;
    while (metric(admin, unsent) < 1 && kq_mono_us() / 1000 < deadline)
        usleep(10000);
    assert_true(metric(admin, unsent) >= 1); /* was: no figure, no line */

    uv_async_send(&p.stop);
    pthread_join(p.th, NULL);
    close(consumer);
    close(producer);
    kq_broker_free(p.b); /* and cfg */
    assert_int_equal(uv_loop_close(&p.loop), 0);
    char *log = log_capture_end(KQ_LOG_ERROR);
    char want[160];
    snprintf(want, sizeof want,
             "delivery: out of memory queueing a copy for room id=%s group=" TEST_CONSUMER
             ": the attempt failed for the group and is retried",
             second);
    assert_has(log, want);
    free(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_copy_not_queued_is_counted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
