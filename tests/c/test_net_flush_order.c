/* The connections with output are flushed in the order they got it: when a publish's
 * store callback queues the producer's ack and then the delivery it causes, the ack is
 * written first (the waiting producer is woken before the consumer, issue #17). Observed
 * through on_drain, which runs in the order the writes were handed to the kernel. */
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

struct fx {
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

/* The first connection's frame: output for it, then for the second connection. */
static void on_frame(void *ud, struct kq_conn *c, const struct kq_frame *fr)
{
    (void)fr;
    struct fx *f = ud;
    struct kq_conn *order[2] = {c, c == f->opened[0] ? f->opened[1] : f->opened[0]};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(kq_buf_append(kq_conn_out(order[i]), "x", 1), 0);
        kq_conn_flush_later(order[i]);
        kq_conn_notify_drain(order[i]);
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

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static void test_flushed_in_the_order_output_came(void **state)
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
    /* Each way round: the order of the output, not of the connections, decides. */
    for (int round = 0; round < 2; round++) {
        int from = round == 0 ? first : second;
        struct kq_conn *want = f.opened[round], *other = f.opened[1 - round];
        uint8_t hb[KQ_FRAME_HEADER_LEN];
        kq_frame_header_write(hb, 1, KQ_CMD_HEARTBEAT, 0);
        assert_int_equal(write(from, hb, sizeof hb), (ssize_t)sizeof hb);
        f.n_drained = 0;
        assert_true(run_until(&loop, &f.n_drained, 2));
        assert_ptr_equal(f.drained[0], want);
        assert_ptr_equal(f.drained[1], other);
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
        cmocka_unit_test(test_flushed_in_the_order_output_came),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
