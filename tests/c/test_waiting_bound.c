/* Integration: memory is bounded by the pending count, not by what a consumer does.
 * A consumer that takes two messages and then never acks (nor reads) leaves every other
 * copy waiting for room in its window. On the file store, waiting copies keep their bodies
 * in memory only while fewer than 16 MiB of them wait; past that they keep their ids and
 * are read back when they are sent. 80 MiB of bodies are published: the broker's RSS grows
 * by far less, and once the consumer acks, every message arrives (read back from the
 * store, nothing lost). fsync=none: what is measured is memory, and a busy disk (other tests)
 * must not make a publish wait past its ack timeout. */
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

#define BODY (256 * 1024)
#define COUNT 320 /* 80 MiB of bodies */

static struct broker_proc bp;

static uint64_t now_ms(void) { return kq_mono_us() / 1000; }

static double metric(const char *sample)
{
    static char text[1 << 20];
    if (admin_get(broker_admin_port(&bp), "/metrics", text, sizeof text) != 200)
        return -1;
    double v = prom_sample(text, sample);
    return v == v ? v : -1; /* NAN: absent */
}

static int teardown(void **state)
{
    (void)state;
    return broker_stop(&bp) == 0 ? 0 : -1;
}

static void test_waiting_bodies_bounded(void **state)
{
    (void)state;
    char cfg[4096];
    broker_default_config(cfg, sizeof cfg, "file://./data?fsync=none",
                          "deliverWindow = 2, deliverySeconds = 60, admin = \"127.0.0.1:0\",");
    assert_int_equal(broker_start(&bp, cfg, NULL), 0);
    int consumer = raw_connect(bp.port);
    assert_int_equal(raw_handshake(consumer, TEST_CONSUMER, TEST_SECRET), 1);
    int producer = raw_connect(bp.port);
    assert_int_equal(raw_handshake(producer, TEST_PRODUCER, TEST_SECRET), 1);
    long rss0 = proc_rss_kb(bp.pid);

    char *body = malloc(BODY + 1);
    memset(body, 'b', BODY);
    body[BODY] = 0;
    struct raw_msg m = {.topic = "trade", .type = "refund-bound", .body = body, .commit = true};
    int acked = 0;
    for (int i = 0; i < COUNT; i++) /* one at a time: the producer's own memory stays small */
        acked += raw_publish(producer, (uint32_t)(i + 1), &m, NULL, NULL, 0) == 1;
    free(body);
    print_message("published %d of %d\n", acked, COUNT);
    assert_int_equal(acked, COUNT);

    const char *waiting = "kiteq_group_waiting{group=\"" TEST_CONSUMER "\"}";
    uint64_t deadline = now_ms() + 20000;
    while (metric(waiting) < COUNT - 2 && now_ms() < deadline)
        usleep(20000);
    assert_true(metric(waiting) >= COUNT - 2);
    long rss1 = proc_rss_kb(bp.pid);
    print_message("waiting copies %.0f, broker RSS %ld -> %ld kB\n", metric(waiting), rss0, rss1);
    if (!rss_blind_sanitizer())
        assert_true(rss1 - rss0 < 48 * 1024); /* 80 MiB of bodies were published */

    /* now the consumer reads and acks: every message comes, read back where evicted */
    struct idset *seen = idset_new();
    deadline = now_ms() + 60000;
    while (idset_size(seen) < COUNT && now_ms() < deadline) {
        char id[33];
        uint32_t op;
        if (raw_recv_delivery(consumer, (int)(deadline - now_ms()), id, &op, NULL, 0) != 1)
            break;
        idset_add(seen, id);
        assert_int_equal(raw_deliver_ack(consumer, op, id, true), 0);
    }
    assert_int_equal(idset_size(seen), COUNT);
    idset_free(seen);
    assert_true(metric(waiting) == 0);
    close(producer);
    close(consumer);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_waiting_bodies_bounded, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
