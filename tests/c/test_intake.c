/* Fair intake: the intake limit (recievePermitsPerSecond) is shared between the connections
 * publishing, so one producer far over it cannot take every permit from a polite one.
 *  - core/fair_share on a simulated clock: one client alone is limited as before, a polite
 *    client next to a greedy one gets every permit it asks for, two greedy ones split the
 *    rate, a client that stops publishing stops counting;
 *  - the real broker: a pipelining producer far over the limit and a polite one. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/clock.h"
#include "core/fair_share.h"
#include "support/broker_proc.h"

#define RATE 100.0
#define BURST 50.0
#define MS 1000ull /* microseconds */

struct sim {
    struct kq_fair fair;
    struct kq_token_bucket total;
    struct kq_fair_share share[2];
    unsigned got[2];
};

static void sim_init(struct sim *s)
{
    memset(s, 0, sizeof *s);
    kq_token_bucket_init(&s->total, RATE, BURST);
}

/* Client i asks `tries` times at t_us. */
static void ask(struct sim *s, int i, uint64_t t_us, int tries)
{
    for (int k = 0; k < tries; k++)
        s->got[i] += kq_fair_take(&s->fair, &s->total, &s->share[i], t_us);
}

static void test_one_client_is_limited_as_before(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s);
    uint64_t t = 1000 * MS;
    ask(&s, 0, t, 1000); /* the burst */
    assert_int_equal(s.got[0], (unsigned)BURST);
    for (int ms = 1; ms <= 2000; ms++) /* then the rate */
        ask(&s, 0, t + ms * MS, 10);
    assert_in_range(s.got[0], BURST + 2 * RATE - 1, BURST + 2 * RATE);
}

static void test_polite_client_gets_its_permits(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s);
    uint64_t t = 1000 * MS;
    unsigned polite_asked = 0;
    for (int ms = 0; ms < 3000; ms++) {
        ask(&s, 0, t + ms * MS, 20); /* greedy: 20 000 a second */
        if (ms % 50 == 25) {         /* polite: 20 a second, below its half of 100 */
            ask(&s, 1, t + ms * MS, 1);
            polite_asked++;
        }
    }
    assert_int_equal(s.got[1], polite_asked);
    /* the greedy one still gets the rest, all but the half burst kept for the others */
    assert_in_range(s.got[0] + s.got[1], BURST / 2 + 3 * RATE - 2, BURST / 2 + 3 * RATE);
}

static void test_two_greedy_clients_split_the_rate(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s);
    uint64_t t = 1000 * MS;
    for (int ms = 0; ms < 4000; ms++) {
        ask(&s, ms % 2, t + ms * MS, 20); /* alternating who asks first */
        ask(&s, 1 - ms % 2, t + ms * MS, 20);
    }
    /* the bucket's rate and burst, plus at most the half burst one may borrow */
    unsigned total = s.got[0] + s.got[1];
    assert_in_range(total, BURST + 4 * RATE - 2, 1.5 * BURST + 4 * RATE);
    assert_in_range(s.got[0], total / 2 - 10, total / 2 + 10);
}

static void test_a_client_that_stops_stops_counting(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s);
    uint64_t t = 1000 * MS;
    for (int ms = 0; ms < 2000; ms++) /* both draw for 2 s, then client 1 stops */
        ask(&s, ms % 2, t + ms * MS, 20);
    for (int ms = 2000; ms < 4000; ms++) /* counted for one more second, then not */
        ask(&s, 0, t + ms * MS, 20);
    unsigned before = s.got[0];
    for (int ms = 4000; ms < 5000; ms++)
        ask(&s, 0, t + ms * MS, 20);
    assert_in_range(s.got[0] - before, RATE - 1, RATE);
}

/* --- the real broker -------------------------------------------------------------------- */

static struct broker_proc bp;
static atomic_bool stop_greedy;

struct greedy {
    unsigned acked, refused;
};

/* Publishes in pipelined batches of 50 until told to stop. */
static void *greedy_producer(void *arg)
{
    struct greedy *g = arg;
    int fd = raw_connect(bp.port);
    if (fd < 0 || raw_handshake(fd, TEST_PRODUCER, TEST_SECRET) != 1)
        return NULL;
    struct raw_msg m = {.topic = "trade", .type = "pay-succ", .body = "g", .commit = true};
    uint32_t op = 0;
    while (!atomic_load(&stop_greedy)) {
        uint32_t first = op + 1;
        for (int i = 0; i < 50; i++)
            raw_publish_nowait(fd, ++op, &m, NULL);
        for (uint32_t o = first; o <= op; o++) {
            if (raw_wait_store_ack(fd, o, NULL, 0) == 1)
                g->acked++;
            else
                g->refused++;
        }
    }
    close(fd);
    return NULL;
}

static void test_polite_producer_is_not_starved(void **state)
{
    (void)state;
    char cfg[4096];
    broker_default_config(cfg, sizeof cfg, "memory://", "recievePermitsPerSecond = 20,");
    assert_int_equal(broker_start(&bp, cfg, NULL), 0);
    struct greedy g = {0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, greedy_producer, &g), 0);
    int polite = raw_connect(bp.port);
    assert_true(polite >= 0);
    assert_int_equal(raw_handshake(polite, TEST_PRODUCER, TEST_SECRET), 1);
    /* 5 a second, half the polite one's share of 20; paced, not waiting on anything */
    struct raw_msg m = {.topic = "trade", .type = "pay-succ", .body = "p", .commit = true};
    int acked = 0;
    char fb[256] = "";
    for (int i = 0; i < 10; i++) {
        struct timespec pause = {0, 200 * 1000000L};
        nanosleep(&pause, NULL);
        if (raw_publish(polite, (uint32_t)(i + 1), &m, NULL, fb, sizeof fb) == 1)
            acked++;
    }
    atomic_store(&stop_greedy, true);
    pthread_join(t, NULL);
    close(polite);
    assert_int_equal(broker_stop(&bp), 0);
    printf("polite acked %d/10 (last feedback \"%s\"), greedy acked %u refused %u\n", acked, fb,
           g.acked, g.refused);
    assert_true(g.refused > 1000); /* the limit was hit hard all along */
    assert_int_equal(acked, 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_client_is_limited_as_before),
        cmocka_unit_test(test_polite_client_gets_its_permits),
        cmocka_unit_test(test_two_greedy_clients_split_the_rate),
        cmocka_unit_test(test_a_client_that_stops_stops_counting),
        cmocka_unit_test(test_polite_producer_is_not_starved),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
