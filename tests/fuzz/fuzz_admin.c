/* The admin HTTP request path: the input is what a client sends on one connection (any
 * number of pipelined requests, or garbage). It reaches the real server (parser, limits,
 * routing, the token, the handlers, response framing) through a socketpair adopted as a
 * connection: no port, no accept. The server must answer and close, never crash or hang. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admin/internal.h"
#include "core/clock.h"
#include "core/log.h"
#include "fuzz.h"

static uv_loop_t loop;
static struct kq_admin *admin;

static int json_ok(struct kq_buf *out)
{
    kq_buf_append(out, "{}", 2);
    return 200;
}
static int h_stat(void *ud, struct kq_buf *out) { return json_ok(out); }
static int h_metrics(void *ud, struct kq_buf *out)
{
    kq_buf_append(out, "kiteq_up 1\n", 11);
    return 200;
}
/* Answers before returning KQ_ADMIN_LATER for ids starting with an even digit, 404 else:
 * both ways a store answers. */
static int h_msg(void *ud, struct kq_admin_req *r, const char *id, struct kq_buf *out)
{
    if (id[0] && (id[0] - '0') % 2 == 0) {
        struct kq_buf b = {0};
        json_ok(&b);
        kq_admin_req_done(r, 200, &b);
        kq_buf_free(&b);
        return KQ_ADMIN_LATER;
    }
    return 404;
}
static int h_dlq_list(void *ud, struct kq_admin_req *r, const char *topic, const char *after,
                      size_t limit, struct kq_buf *out)
{
    FUZZ_CHECK(limit >= 1 && limit <= KQ_ADMIN_DLQ_MAX_LIMIT);
    FUZZ_CHECK(after && strlen(after) < KQ_ADMIN_CURSOR_MAX);
    return json_ok(out);
}
static int h_dlq_id(void *ud, struct kq_admin_req *r, const char *id, struct kq_buf *out)
{
    return json_ok(out);
}
static int h_dlq_requeue(void *ud, struct kq_admin_req *r, const char *id, const char *groups,
                         struct kq_buf *out)
{
    return json_ok(out);
}
static int h_reload(void *ud, struct kq_admin_req *r, struct kq_buf *out)
{
    (void)r;
    return json_ok(out);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const struct kq_admin_handlers h = {.stat = h_stat,
                                               .binds = h_stat,
                                               .metrics = h_metrics,
                                               .msg = h_msg,
                                               .dlq_list = h_dlq_list,
                                               .dlq_requeue = h_dlq_requeue,
                                               .dlq_purge = h_dlq_id,
                                               .dlq_show = h_dlq_id,
                                               .reload = h_reload};
    char err[256];
    kq_log_set_level(KQ_LOG_ERROR + 1);
    FUZZ_CHECK(uv_loop_init(&loop) == 0);
    /* The listener is never connected to; a token makes the auth checks run. */
    if (kq_admin_start(&loop, "127.0.0.1:0", "fuzz-token", &h, NULL, &admin, err, sizeof err) !=
        0) {
        fprintf(stderr, "admin: %s\n", err);
        abort();
    }
    return 0;
}

/* Reads what the server wrote; returns false once it closed its side. */
static bool drain(int fd)
{
    char buf[16384];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return true;
        return false; /* EOF, or reset */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2];
    FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    FUZZ_CHECK(fcntl(sv[1], F_SETFL, O_NONBLOCK) == 0);
    FUZZ_CHECK(kq_admin_adopt(admin, sv[0]) == 0);
    int64_t deadline = kq_now_ms() + 30000; /* the server's own timeouts are 10 s */
    size_t sent = 0;
    bool open = true, shut = false;
    while (open) {
        while (sent < size) {
            ssize_t n = send(sv[1], data + sent, size - sent, MSG_NOSIGNAL);
            if (n <= 0)
                break; /* the buffer is full (or the server closed): let it read */
            sent += (size_t)n;
        }
        if (!shut && sent == size) {
            shutdown(sv[1], SHUT_WR);
            shut = true;
        }
        uv_run(&loop, UV_RUN_NOWAIT);
        open = drain(sv[1]);
        if (open && kq_now_ms() > deadline) {
            fprintf(stderr, "admin: the connection is still open after 30 s\n");
            abort();
        }
        if (open && shut)
            usleep(100); /* waiting for the server: do not spin hot */
    }
    close(sv[1]);
    while (kq_admin_conn_count(admin) > 0) /* its handle closes on the next iteration */
        uv_run(&loop, UV_RUN_NOWAIT);
    return 0;
}
