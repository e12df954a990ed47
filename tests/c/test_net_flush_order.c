/* The connections with output are flushed in the order of their latest output: when the
 * store callbacks of a group queue each producer's ack and then the delivery it causes, every
 * ack is written before the consumer's deliveries (the waiting producers are woken before the
 * consumer, issue #17). Observed through on_drain, which runs in the order the writes were
 * handed to the kernel. */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/clock.h"
#include "net/net.h"
#include "support/broker_proc.h"

struct fx {
    int outputs; /* a frame's output goes to opened[(outputs >> 2i) & 3], i < n_outputs */
    int n_outputs;
    struct kq_conn *opened[2];
    int n_opened;
    struct kq_conn *drained[2];
    int n_drained;
    bool closed;
};

static void on_open(void *ud, struct kq_conn *c)
{
    struct fx *f = ud;
    if (f->n_opened < 2)
        f->opened[f->n_opened++] = c;
}

/* A frame: output for the connections this round names, in that order. */
static void on_frame(void *ud, struct kq_conn *c, const struct kq_frame *fr)
{
    (void)c;
    (void)fr;
    struct fx *f = ud;
    for (int i = 0; i < f->n_outputs; i++) {
        struct kq_conn *to = f->opened[(f->outputs >> (2 * i)) & 3];
        assert_int_equal(kq_buf_append(kq_conn_out(to), "x", 1), 0);
        kq_conn_flush_later(to);
        kq_conn_notify_drain(to);
    }
}

static void on_close(void *ud, struct kq_conn *c, const char *reason)
{
    (void)ud;
    (void)c;
    (void)reason;
}

static void on_drain(void *ud, struct kq_conn *c)
{
    struct fx *f = ud;
    if (f->n_drained < 2)
        f->drained[f->n_drained++] = c;
}

static void on_net_closed(void *ud) { ((struct fx *)ud)->closed = true; }

static bool run_until(uv_loop_t *loop, const int *counter, int target)
{
    uint64_t deadline = kq_mono_us() + 5000000;
    while (*counter < target && kq_mono_us() < deadline) {
        uv_run(loop, UV_RUN_NOWAIT);
        if (*counter < target)
            usleep(1000);
    }
    return *counter >= target;
}

/* A loopback connection to port (support's raw_connect), failing the test when refused. */
static int connect_to(int port)
{
    int fd = raw_connect(port);
    assert_true(fd >= 0);
    return fd;
}

static void test_flushed_in_the_order_of_latest_output(void **state)
{
    (void)state;
    static const struct kq_net_handler h = {on_open, on_frame, on_close, on_drain};
    struct fx f = {0};
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct kq_net *n;
    char err[256];
    assert_int_equal(kq_net_listen(&loop, "127.0.0.1:0", &h, &f, &n, err, sizeof err), 0);
    int first = connect_to(kq_net_port(n));
    assert_true(run_until(&loop, &f.n_opened, 1));
    int second = connect_to(kq_net_port(n));
    assert_true(run_until(&loop, &f.n_opened, 2));
    /* Output to (first, second): first is written first (last-dirtied-first wrote second
     * first). To (second, first, second), like an ack between two deliveries: first again
     * (first-dirtied-first wrote second first). To (second, first): second first. */
    static const struct {
        int outputs, n_outputs, want_first;
    } rounds[] = {{0 | 1 << 2, 2, 0}, {1 | 0 << 2 | 1 << 4, 3, 0}, {1 | 0 << 2, 2, 1}};
    for (size_t r = 0; r < sizeof rounds / sizeof rounds[0]; r++) {
        f.outputs = rounds[r].outputs;
        f.n_outputs = rounds[r].n_outputs;
        f.n_drained = 0;
        uint8_t hb[KQ_FRAME_HEADER_LEN];
        kq_frame_header_write(hb, 1, KQ_CMD_HEARTBEAT, 0);
        assert_int_equal(write(first, hb, sizeof hb), (ssize_t)sizeof hb);
        assert_true(run_until(&loop, &f.n_drained, 2));
        assert_ptr_equal(f.drained[0], f.opened[rounds[r].want_first]);
        assert_ptr_equal(f.drained[1], f.opened[1 - rounds[r].want_first]);
    }
    close(first);
    close(second);
    kq_net_close(n, on_net_closed, &f);
    while (!f.closed && uv_run(&loop, UV_RUN_ONCE))
        ;
    assert_true(f.closed);
    kq_net_free(n);
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flushed_in_the_order_of_latest_output),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
