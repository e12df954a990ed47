/* libuv calls of src/net/net.c (and of the admin server, src/admin/admin.c) that fail: a
 * connection that cannot be accepted or read is closed and the log names libuv's error; a
 * listener whose port cannot be read fails to start. The calls fail on demand: this program is linked with --wrap for the libuv
 * functions it defines __wrap_ versions of (CMakeLists.txt), so net.c's calls come here. */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admin/admin.h"
#include "core/clock.h"
#include "net/net.h"
#include "support/broker_proc.h"
#include "support/assert_text.h"
#include "support/log_capture.h"

/* --- the failing calls: the next N calls fail (everything runs on this one thread) ------- */

static int accepts_to_fail, reads_to_fail, socknames_to_fail;

int __real_uv_accept(uv_stream_t *server, uv_stream_t *client);
int __wrap_uv_accept(uv_stream_t *server, uv_stream_t *client);
int __wrap_uv_accept(uv_stream_t *server, uv_stream_t *client)
{
    /* As libuv's own failure: the pending socket is taken off the listener either way (here
     * into the handle, which the caller closes). */
    int rc = __real_uv_accept(server, client);
    if (rc == 0 && accepts_to_fail > 0) {
        accepts_to_fail--;
        return UV_EINVAL;
    }
    return rc;
}

int __real_uv_read_start(uv_stream_t *s, uv_alloc_cb alloc_cb, uv_read_cb read_cb);
int __wrap_uv_read_start(uv_stream_t *s, uv_alloc_cb alloc_cb, uv_read_cb read_cb);
int __wrap_uv_read_start(uv_stream_t *s, uv_alloc_cb alloc_cb, uv_read_cb read_cb)
{
    if (reads_to_fail > 0) {
        reads_to_fail--;
        return UV_ENOMEM;
    }
    return __real_uv_read_start(s, alloc_cb, read_cb);
}

int __real_uv_tcp_getsockname(const uv_tcp_t *h, struct sockaddr *name, int *namelen);
int __wrap_uv_tcp_getsockname(const uv_tcp_t *h, struct sockaddr *name, int *namelen);
int __wrap_uv_tcp_getsockname(const uv_tcp_t *h, struct sockaddr *name, int *namelen)
{
    if (socknames_to_fail > 0) {
        socknames_to_fail--;
        return UV_ENOBUFS;
    }
    return __real_uv_tcp_getsockname(h, name, namelen);
}

/* --- a listener with a handler that counts ------------------------------------------------- */

struct fx {
    uv_loop_t loop;
    struct kq_net *n;
    int opened, closed_conns;
    char reason[64]; /* the last on_close's */
    size_t answer;   /* bytes queued on each frame */
    bool net_closed;
};

static void on_open(void *ud, struct kq_conn *c)
{
    (void)c;
    ((struct fx *)ud)->opened++;
}

static void on_frame(void *ud, struct kq_conn *c, const struct kq_frame *fr)
{
    (void)fr;
    struct fx *f = ud;
    struct kq_buf *out = kq_conn_out(c);
    assert_int_equal(kq_buf_reserve(out, f->answer), 0);
    memset(out->data + out->len, 'a', f->answer);
    out->len += f->answer;
    kq_conn_flush_later(c);
}

static void on_close(void *ud, struct kq_conn *c, const char *reason)
{
    (void)c;
    struct fx *f = ud;
    f->closed_conns++;
    snprintf(f->reason, sizeof f->reason, "%s", reason);
}

static const struct kq_net_handler handler = {on_open, on_frame, on_close, NULL};

static void listen_on(struct fx *f)
{
    assert_int_equal(uv_loop_init(&f->loop), 0);
    char err[256];
    assert_int_equal(kq_net_listen(&f->loop, "127.0.0.1:0", &handler, f, &f->n, err, sizeof err),
                     0);
}

static void on_net_closed(void *ud) { ((struct fx *)ud)->net_closed = true; }

static void close_all(struct fx *f)
{
    kq_net_close(f->n, on_net_closed, f);
    uint64_t deadline = kq_mono_us() + 5000000;
    while (!f->net_closed && kq_mono_us() < deadline)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_true(f->net_closed);
    kq_net_free(f->n);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
}

/* A loopback connection to port (support's raw_connect), failing the test when refused. */
static int connect_port(int port)
{
    int fd = raw_connect(port);
    assert_true(fd >= 0);
    return fd;
}

static bool run_until(struct fx *f, const int *counter, int target)
{
    uint64_t deadline = kq_mono_us() + 5000000;
    while (*counter < target && kq_mono_us() < deadline) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        if (*counter < target)
            usleep(1000);
    }
    return *counter >= target;
}

static int connect_to(struct fx *f) { return connect_port(kq_net_port(f->n)); }

/* Run the loop until the server side closes fd (EOF or reset); the bytes read before, or -1
 * when it stays open for 5 s. */
static long run_until_eof(uv_loop_t *loop, int fd)
{
    static char buf[64 * 1024];
    long got = 0;
    uint64_t deadline = kq_mono_us() + 5000000;
    while (kq_mono_us() < deadline) {
        uv_run(loop, UV_RUN_NOWAIT);
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return got;
        if (n > 0)
            got += n;
        else
            usleep(1000);
    }
    return -1;
}

static void send_frame(int fd)
{
    uint8_t hb[KQ_FRAME_HEADER_LEN];
    kq_frame_header_write(hb, 1, KQ_CMD_HEARTBEAT, 0);
    assert_int_equal(write(fd, hb, sizeof hb), (ssize_t)sizeof hb);
}

/* --- the tests ----------------------------------------------------------------------------- */

static void test_port_unreadable_fails_start(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct kq_net *n = NULL;
    char err[256] = "";
    socknames_to_fail = 1;
    assert_int_equal(kq_net_listen(&loop, "127.0.0.1:0", &handler, NULL, &n, err, sizeof err),
                     UV_ENOBUFS);
    assert_has(err, "bind: cannot read the port bound for 127.0.0.1:0: no buffer space available");
    assert_null(n);
    assert_int_equal(uv_loop_close(&loop), 0); /* the listener is gone */
}

static void test_accept_failure_is_logged(void **state)
{
    (void)state;
    struct fx f = {0};
    listen_on(&f);
    log_capture_begin();
    accepts_to_fail = 1;
    int fd = connect_to(&f);
    assert_true(run_until_eof(&f.loop, fd) >= 0); /* closed, not left hanging */
    close(fd);
    assert_int_equal(f.opened, 0);
    /* the listener goes on */
    fd = connect_to(&f);
    assert_true(run_until(&f, &f.opened, 1));
    /* over maxConnections = 1 (fd is open): accepted to be refused, and that accept fails */
    kq_net_set_limits(f.n, &(struct kq_net_limits){.max_conns = 1});
    accepts_to_fail = 1;
    int second = connect_to(&f);
    assert_true(run_until_eof(&f.loop, second) >= 0);
    close(second);
    close(fd);
    char *log = log_capture_end(KQ_LOG_ERROR);
    assert_has(log, "net: accept failed: invalid argument");
    assert_has(log, "net: accept failed (refusing a connection): invalid argument");
    free(log);
    close_all(&f);
}

static void test_read_failure_closes(void **state)
{
    (void)state;
    struct fx f = {0};
    listen_on(&f);
    log_capture_begin();
    /* at once after the accept */
    reads_to_fail = 1;
    int fd = connect_to(&f);
    assert_int_equal(run_until_eof(&f.loop, fd), 0);
    close(fd);
    assert_int_equal(f.opened, 1);
    assert_int_equal(f.closed_conns, 1);
    assert_string_equal(f.reason, "cannot read");
    /* when reading resumes after back-pressure: an answer of 2 MiB to a frame pauses reading
     * (over KQ_CONN_OUT_HIGH), and once it is written reading cannot start again; the peer
     * still gets the whole answer, then the close (the log line is the first case's: one
     * a second) */
    f.answer = 2u << 20;
    fd = connect_to(&f);
    assert_true(run_until(&f, &f.opened, 2));
    reads_to_fail = 1;
    send_frame(fd);
    assert_int_equal(run_until_eof(&f.loop, fd), (long)f.answer);
    close(fd);
    assert_int_equal(f.closed_conns, 2);
    assert_string_equal(f.reason, "cannot read");
    char *log = log_capture_end(KQ_LOG_ERROR);
    assert_has(log, "net: cannot read from peer=127.0.0.1:");
    assert_has(log, ": not enough memory; closing it");
    free(log);
    close_all(&f);
}

/* The admin server's listener: the same failures, the same outcome. */
static void test_admin_listener_failures(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct kq_admin *a = NULL;
    struct kq_admin_handlers h = {0};
    char err[256] = "";
    socknames_to_fail = 1;
    assert_int_equal(kq_admin_start(&loop, "127.0.0.1:0", NULL, &h, NULL, &a, err, sizeof err),
                     UV_ENOBUFS);
    assert_has(err, "admin: cannot read the port bound for 127.0.0.1:0: no buffer space");
    assert_int_equal(kq_admin_start(&loop, "127.0.0.1:0", NULL, &h, NULL, &a, err, sizeof err), 0);

    log_capture_begin();
    accepts_to_fail = 1;
    int fd = connect_port(kq_admin_port(a));
    assert_int_equal(run_until_eof(&loop, fd), 0);
    close(fd);
    reads_to_fail = 1;
    fd = connect_port(kq_admin_port(a));
    assert_int_equal(run_until_eof(&loop, fd), 0); /* not left until the request deadline */
    close(fd);
    char *log = log_capture_end(KQ_LOG_ERROR);
    assert_has(log, "admin: accept failed: invalid argument");
    assert_has(log, "admin: cannot read from a connection: not enough memory");
    free(log);
    kq_admin_stop(a, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_port_unreadable_fails_start),
        cmocka_unit_test(test_accept_failure_is_logged),
        cmocka_unit_test(test_read_failure_closes),
        cmocka_unit_test(test_admin_listener_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
