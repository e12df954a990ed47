/* Integration: what connections may cost the broker.
 *  - under a low open-file limit, idle sockets cannot take the descriptors the file store
 *    needs: past maxConnections (derived from RLIMIT_NOFILE) a connection is accepted and
 *    closed at once, publishes that open new segments still succeed, and sockets that do
 *    not authenticate are closed after the auth deadline (5 s). */
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/clock.h"
#include "support/broker_proc.h"

static struct broker_proc bp;

static uint64_t now_ms(void) { return kq_mono_us() / 1000; }

static int teardown(void **state)
{
    (void)state;
    return bp.pid > 0 && broker_stop(&bp) != 0 ? -1 : 0;
}

/* Sockets of fds[0..n) the broker has closed (fds[i] set to -1 once seen closed). */
static int count_closed(int *fds, int n)
{
    int closed = 0;
    for (int i = 0; i < n; i++) {
        if (fds[i] < 0) {
            closed++;
            continue;
        }
        struct pollfd p = {.fd = fds[i], .events = POLLIN};
        char c;
        if (poll(&p, 1, 0) == 1 && recv(fds[i], &c, 1, MSG_DONTWAIT) <= 0) {
            close(fds[i]);
            fds[i] = -1;
            closed++;
        }
    }
    return closed;
}

/* Until at least `want` of fds are closed or timeout_ms passed; returns how many are. */
static int wait_closed(int *fds, int n, int want, int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    int closed;
    while ((closed = count_closed(fds, n)) < want && now_ms() < deadline)
        usleep(10000);
    return closed;
}

#define FD_LIMIT 256
#define CAP (FD_LIMIT - 64) /* a quarter of the limit, at least 64, is kept for the store */
#define IDLE 400

static void test_idle_sockets_cannot_starve_the_store(void **state)
{
    (void)state;
    struct rlimit old, low;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    if (old.rlim_max != RLIM_INFINITY && old.rlim_max < IDLE + 100) {
        printf("skipped: the test needs %d descriptors (hard limit %llu)\n", IDLE + 100,
               (unsigned long long)old.rlim_max);
        skip();
    }
    if (old.rlim_cur != RLIM_INFINITY && old.rlim_cur < IDLE + 100) {
        old.rlim_cur = IDLE + 100;
        assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    }
    /* The broker inherits the low limit (`ulimit -n 256`); the test keeps its own. */
    low = old;
    low.rlim_cur = FD_LIMIT;
    char cfg[4096];
    broker_default_config(cfg, sizeof cfg, "file://./data?fsync=group&segment_kb=4", NULL);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    int rc = broker_start(&bp, cfg, NULL);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    assert_int_equal(rc, 0);
    char line[96];
    snprintf(line, sizeof line, "maxConnections=%d (from the open-file limit)", CAP);
    assert_true(broker_wait_log(&bp, line, 1000));

    int prod = raw_connect(bp.port);
    assert_true(prod >= 0);
    assert_int_equal(raw_handshake(prod, TEST_PRODUCER, TEST_SECRET), 1);

    static int idle[IDLE];
    for (int i = 0; i < IDLE; i++)
        assert_true((idle[i] = raw_connect(bp.port)) >= 0);
    /* Past the cap (the producer holds one place) they are closed at once... */
    int refused = IDLE - (CAP - 1);
    assert_int_equal(wait_closed(idle, IDLE, refused, 3000), refused);
    assert_true(broker_wait_log(&bp, "connection refused peer=127.0.0.1:", 1000));
    /* ...while the ones within it are held until their auth deadline: one of them sends a
     * frame's first bytes, which buys it nothing. */
    int slow = -1;
    for (int i = 0; i < IDLE && slow < 0; i++)
        if (idle[i] >= 0)
            slow = idle[i];
    assert_int_equal(raw_send(slow, "\0\0\0", 3), 0);
    assert_int_equal(count_closed(idle, IDLE), refused);

    /* The store still has descriptors for new segments (4 KiB each: ~10 of them). */
    char body[1024];
    memset(body, 'b', sizeof body - 1);
    body[sizeof body - 1] = 0;
    struct raw_msg m = {.topic = "trade", .type = "pay-succ", .body = body, .commit = true};
    for (int i = 0; i < 40; i++) {
        char fb[256] = "";
        if (raw_publish(prod, (uint32_t)(i + 1), &m, NULL, fb, sizeof fb) != 1)
            fail_msg("publish %d refused: %s", i, fb);
    }
    assert_false(broker_wait_log(&bp, "Too many open files", 0));

    /* Never authenticated: closed after 5 s, the authenticated producer is not. */
    assert_int_equal(wait_closed(idle, IDLE, IDLE, 10000), IDLE);
    assert_true(broker_wait_log(&bp, "no handshake within 5000 ms, closing peer=", 0));
    assert_int_equal(raw_sync(prod), 0);
    close(prod);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_idle_sockets_cannot_starve_the_store, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
