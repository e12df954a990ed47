/* Admin HTTP server (src/admin/admin.c), Prometheus helpers (src/admin/prom.c) and the
 * tools' HTTP client (src/tools/common/http_client.c).
 *
 * The server runs with fake handlers on a libuv loop in a helper thread; the test plays the
 * client with plain blocking sockets, every wait bounded by a deadline. After each malformed
 * request the test checks that the server still answers. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <cmocka.h>
#include <uv.h>

#include "admin/admin.h"
#include "admin/prom.h"
#include "broker/admin_internal.h"
#include "core/log.h"
#include "tools/common/http_client.h"
#include "support/assert_text.h"
#include "support/cli_proc.h"
#include "support/log_capture.h"
#include "support/test_files.h"

/* --- fake broker -------------------------------------------------------------------------- */

static atomic_int reloads;

static int put(struct kq_buf *b, const char *s) { return kq_buf_append(b, s, strlen(s)); }

static int h_stat(void *ud, struct kq_buf *out)
{
    put(out, "{\"kiteq\":{\"deliver_go\":0},\"network\":{\"connections\":0}}");
    return 200;
}

static int h_binds(void *ud, struct kq_buf *out)
{
    put(out, "{\"topic_2_groups\":{\"trade\":[\"g1\"]}}");
    return 200;
}

static int h_metrics(void *ud, struct kq_buf *out)
{
    struct kq_prom p;
    kq_prom_init(&p, out);
    kq_prom_counter(&p, "kiteq_received_total", "Messages accepted.",
                    (const char *const[]){"topic", "trade", NULL}, 7);
    int rc = kq_prom_finish(&p);
    kq_prom_free(&p);
    return rc ? 500 : 200;
}

/* Answers that come later: "later-N" is answered N ms after the request (a timer on the
 * server's loop), "now-later" from inside the handler before it returns KQ_ADMIN_LATER. */
struct later {
    uv_timer_t t;
    struct kq_admin_req *r;
    char id[64];
};

static void on_later_closed(uv_handle_t *h) { free(h->data); }

static void on_later(uv_timer_t *t)
{
    struct later *l = t->data;
    struct kq_buf b = {0};
    char tmp[128];
    snprintf(tmp, sizeof tmp, "{\"messageId\":\"%s\",\"later\":true}", l->id);
    put(&b, tmp);
    kq_admin_req_done(l->r, 200, &b);
    assert_int_equal(b.len, 0); /* taken over */
    uv_close((uv_handle_t *)&l->t, on_later_closed);
}

static uv_loop_t *later_loop; /* the server's loop (set by srv_start_at) */

static int h_msg(void *ud, struct kq_admin_req *r, const char *id, struct kq_buf *out)
{
    if (!strcmp(id, "bogus"))
        return 999; /* the server must turn this into a 500 */
    if (!strncmp(id, "later-", 6)) {
        struct later *l = calloc(1, sizeof *l);
        l->r = r;
        snprintf(l->id, sizeof l->id, "%s", id);
        uv_timer_init(later_loop, &l->t);
        l->t.data = l;
        uv_timer_start(&l->t, on_later, strtoul(id + 6, NULL, 10), 0);
        return KQ_ADMIN_LATER;
    }
    if (!strcmp(id, "now-later")) {
        struct kq_buf b = {0};
        put(&b, "{\"messageId\":\"now-later\"}");
        kq_admin_req_done(r, 202, &b);
        return KQ_ADMIN_LATER;
    }
    if (strcmp(id, "abc def"))
        return 404;
    put(out, "{\"messageId\":\"abc def\"}");
    return 200;
}

static int h_dlq_list(void *ud, struct kq_admin_req *r, const char *topic, const char *after,
                      size_t limit, struct kq_buf *out)
{
    char tmp[256];
    snprintf(tmp, sizeof tmp, "{\"topic\":\"%s\",\"limit\":%zu%s%s%s}", topic ? topic : "(all)",
             limit, *after ? ",\"after\":\"" : "", after, *after ? "\"" : "");
    put(out, tmp);
    return 200;
}

static int h_dlq_requeue(void *ud, struct kq_admin_req *r, const char *id, const char *groups,
                         struct kq_buf *out)
{
    char tmp[256];
    snprintf(tmp, sizeof tmp, "{\"requeued\":\"%s\"%s%s%s}", id, groups ? ",\"groups\":\"" : "",
             groups ? groups : "", groups ? "\"" : "");
    put(out, tmp);
    return 200;
}

static int h_dlq_show(void *ud, struct kq_admin_req *r, const char *id, struct kq_buf *out)
{
    char tmp[256];
    snprintf(tmp, sizeof tmp, "{\"shown\":\"%s\"}", id);
    put(out, tmp);
    return 200;
}

static int h_dlq_purge(void *ud, struct kq_admin_req *r, const char *topic, struct kq_buf *out)
{
    char tmp[256];
    snprintf(tmp, sizeof tmp, "{\"purged\":\"%s\"}", topic ? topic : "(all)");
    put(out, tmp);
    return 200;
}

static int h_reload(void *ud, struct kq_admin_req *r, struct kq_buf *out)
{
    atomic_fetch_add(&reloads, 1);
    put(out, "{\"status\":200}");
    return 200;
}

static const struct kq_admin_handlers handlers = {
    .stat = h_stat,
    .binds = h_binds,
    .metrics = h_metrics,
    .msg = h_msg,
    .dlq_list = h_dlq_list,
    .dlq_requeue = h_dlq_requeue,
    .dlq_purge = h_dlq_purge,
    .dlq_show = h_dlq_show,
    .reload = h_reload,
};

/* --- the server in a thread --------------------------------------------------------------- */

struct srv {
    uv_loop_t loop;
    uv_async_t stop;
    pthread_t th;
    struct kq_admin *a;
    int port;
    char addr[64];
};

static void on_admin_done(void *ud) { (void)ud; }

static void on_stop(uv_async_t *h)
{
    struct srv *s = h->data;
    kq_admin_stop(s->a, on_admin_done, s);
    uv_close((uv_handle_t *)&s->stop, NULL);
}

static void *loop_main(void *arg)
{
    struct srv *s = arg;
    uv_run(&s->loop, UV_RUN_DEFAULT);
    return NULL;
}

/* Start on addr (port 0) with a token (may be NULL), the given limits (NULL = defaults) and
 * handlers (NULL = the fake broker's). */
static struct srv *srv_start_at(const char *addr, const char *token,
                                const struct kq_admin_limits *lim,
                                const struct kq_admin_handlers *h)
{
    struct srv *s = calloc(1, sizeof *s);
    assert_non_null(s);
    assert_int_equal(uv_loop_init(&s->loop), 0);
    later_loop = &s->loop;
    char err[256] = "";
    int rc = kq_admin_start(&s->loop, addr, token, h ? h : &handlers, NULL, &s->a, err, sizeof err);
    if (rc)
        fail_msg("kq_admin_start: %s", err);
    if (lim)
        kq_admin_set_limits(s->a, lim); /* before the loop thread runs */
    s->port = kq_admin_port(s->a);
    assert_true(s->port > 0);
    snprintf(s->addr, sizeof s->addr, "127.0.0.1:%d", s->port);
    uv_async_init(&s->loop, &s->stop, on_stop);
    s->stop.data = s;
    assert_int_equal(pthread_create(&s->th, NULL, loop_main, s), 0);
    return s;
}

static struct srv *srv_start(const struct kq_admin_limits *lim, const struct kq_admin_handlers *h)
{
    return srv_start_at("127.0.0.1:0", NULL, lim, h);
}

static void srv_stop(struct srv *s)
{
    uv_async_send(&s->stop);
    pthread_join(s->th, NULL); /* the loop ends once every handle is closed */
    assert_int_equal(uv_loop_close(&s->loop), 0);
    free(s);
}

static int setup(void **state)
{
    *state = srv_start(NULL, NULL);
    return 0;
}

static int teardown(void **state)
{
    srv_stop(*state);
    return 0;
}

/* --- a raw client ------------------------------------------------------------------------- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct tc {
    int fd;
    char buf[256 * 1024];
    size_t len;
};

struct resp {
    int status;
    char head[4096];
    char body[64 * 1024];
    size_t body_len;
};

static struct tc *tc_open(int port)
{
    struct tc *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(c->fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(connect(c->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return c;
}

static void tc_close(struct tc *c)
{
    close(c->fd);
    free(c);
}

static void tc_send(struct tc *c, const char *s, size_t n)
{
    while (n) {
        ssize_t w = send(c->fd, s, n, MSG_NOSIGNAL);
        assert_true(w > 0);
        s += w;
        n -= (size_t)w;
    }
}

static void tc_sends(struct tc *c, const char *s) { tc_send(c, s, strlen(s)); }

/* Read more into c->buf before the deadline: >0 bytes, 0 EOF (or reset), -1 timeout. */
static int tc_fill(struct tc *c, int64_t deadline)
{
    int64_t left = deadline - now_ms();
    if (left <= 0)
        return -1;
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    if (poll(&p, 1, (int)left) <= 0)
        return -1;
    assert_true(c->len < sizeof c->buf);
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (n <= 0)
        return 0;
    c->len += (size_t)n;
    return (int)n;
}

/* One response (Content-Length framed) within 5 s; false on EOF or timeout first. */
static bool tc_response(struct tc *c, struct resp *r)
{
    int64_t deadline = now_ms() + 5000;
    for (;;) {
        char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (end) {
            size_t hl = (size_t)(end - c->buf) + 4;
            assert_true(hl < sizeof r->head);
            memcpy(r->head, c->buf, hl);
            r->head[hl] = 0;
            assert_int_equal(sscanf(r->head, "HTTP/1.1 %d ", &r->status), 1);
            const char *cl = strcasestr(r->head, "\r\nContent-Length: ");
            assert_non_null(cl);
            size_t bl = strtoul(cl + 18, NULL, 10);
            assert_true(bl < sizeof r->body);
            while (c->len < hl + bl)
                if (tc_fill(c, deadline) <= 0)
                    return false;
            memcpy(r->body, c->buf + hl, bl);
            r->body[bl] = 0;
            r->body_len = bl;
            memmove(c->buf, c->buf + hl + bl, c->len - hl - bl);
            c->len -= hl + bl;
            return true;
        }
        if (tc_fill(c, deadline) <= 0)
            return false;
    }
}

/* True when the server closes the connection within ms (data before EOF is discarded). */
static bool tc_wait_eof(struct tc *c, int ms)
{
    int64_t deadline = now_ms() + ms;
    for (;;) {
        c->len = 0;
        int n = tc_fill(c, deadline);
        if (n == 0)
            return true;
        if (n < 0)
            return false;
    }
}

static bool has_header(const struct resp *r, const char *line)
{
    return strcasestr(r->head, line) != NULL;
}

/* One request on a fresh connection. */
static void request(int port, const char *req, struct resp *r)
{
    struct tc *c = tc_open(port);
    tc_sends(c, req);
    assert_true(tc_response(c, r));
    tc_close(c);
}

static void assert_serving(struct srv *s)
{
    struct resp r;
    request(s->port, "GET /stat HTTP/1.1\r\nHost: x\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
}

/* --- routes ------------------------------------------------------------------------------- */

static void expect(int port, const char *method, const char *target, int status,
                   const char *body_has)
{
    char req[1024];
    snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", method,
             target);
    struct resp r;
    request(port, req, &r);
    if (r.status != status || (body_has && !strstr(r.body, body_has)))
        fail_msg("%s %s: got %d %s, want %d with %s", method, target, r.status, r.body, status,
                 body_has ? body_has : "-");
}

static void test_routes(void **state)
{
    struct srv *s = *state;
    int p = s->port;
    expect(p, "GET", "/stat", 200, "\"kiteq\":{");
    expect(p, "GET", "/binds", 200, "\"topic_2_groups\"");
    expect(p, "GET", "/metrics", 200, "kiteq_received_total{topic=\"trade\"} 7\n");
    expect(p, "GET", "/msg/abc%20def", 200, "\"messageId\":\"abc def\"");
    expect(p, "GET", "/msg/nope", 404, "\"status\":404");
    expect(p, "GET", "/msg/", 400, "missing message id");
    expect(p, "GET", "/msg/bogus", 500, "\"status\":500");
    expect(p, "GET", "/dlq", 200, "{\"topic\":\"(all)\",\"limit\":100}");
    expect(p, "GET", "/dlq?topic=tr%26de&limit=5", 200, "{\"topic\":\"tr&de\",\"limit\":5}");
    expect(p, "GET", "/dlq?limit=0", 400, "limit");
    expect(p, "GET", "/dlq?limit=abc", 400, "limit");
    expect(p, "GET", "/dlq?limit=1001", 400, "limit");
    expect(p, "GET", "/dlq?limit=1000&after=12", 200,
           "{\"topic\":\"(all)\",\"limit\":1000,\"after\":\"12\"}");
    expect(p, "GET", "/msg/later-20", 200, "{\"messageId\":\"later-20\",\"later\":true}");
    expect(p, "GET", "/msg/now-later", 202, "{\"messageId\":\"now-later\"}");
    expect(p, "POST", "/dlq/requeue?id=m1", 200, "{\"requeued\":\"m1\"}");
    expect(p, "POST", "/dlq/requeue?id=*", 200, "{\"requeued\":\"*\"}");
    expect(p, "POST", "/dlq/requeue", 400, "id required");
    expect(p, "POST", "/dlq/requeue?id=m1&groups=g%2Ca,g-b", 200, "\"groups\":\"g,a,g-b\"");
    expect(p, "POST", "/dlq/requeue?id=m1&groups=", 400, "bad groups");
    expect(p, "GET", "/dlq/m1", 200, "{\"shown\":\"m1\"}");
    expect(p, "POST", "/dlq/purge?topic=trade", 200, "{\"purged\":\"trade\"}");
    expect(p, "POST", "/dlq/purge?topic=*", 200, "{\"purged\":\"(all)\"}");
    expect(p, "POST", "/dlq/purge", 400, "topic required");
    int before = atomic_load(&reloads);
    expect(p, "POST", "/reload", 200, "\"status\":200");
    assert_int_equal(atomic_load(&reloads), before + 1);
    expect(p, "GET", "/nowhere", 404, "{\"error\":\"not found\",\"status\":404}");
    expect(p, "GET", "/stat/", 404, NULL);
    expect(p, "GET", "/msg/%zz", 400, NULL);
}

static void test_headers_and_methods(void **state)
{
    struct srv *s = *state;
    struct resp r;
    request(s->port, "GET /stat HTTP/1.1\r\nHost: x\r\n\r\n", &r);
    assert_true(has_header(&r, "\r\nContent-Type: application/json\r\n"));
    char cl[64];
    snprintf(cl, sizeof cl, "\r\nContent-Length: %zu\r\n", strlen(r.body));
    assert_true(has_header(&r, cl));

    request(s->port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &r);
    assert_true(has_header(&r, "\r\nContent-Type: text/plain; version=0.0.4"));

    request(s->port, "POST /stat HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", &r);
    assert_int_equal(r.status, 405);
    assert_true(has_header(&r, "\r\nAllow: GET, HEAD\r\n"));
    request(s->port, "GET /reload HTTP/1.1\r\nHost: x\r\n\r\n", &r);
    assert_int_equal(r.status, 405);
    assert_true(has_header(&r, "\r\nAllow: POST\r\n"));
    request(s->port, "DELETE /dlq HTTP/1.1\r\nHost: x\r\n\r\n", &r);
    assert_int_equal(r.status, 405);

    /* HEAD: the GET headers (Content-Length included) and no body; then the next response */
    struct tc *c = tc_open(s->port);
    tc_sends(c, "HEAD /binds HTTP/1.1\r\nHost: x\r\n\r\n");
    int64_t deadline = now_ms() + 5000;
    while (!memmem(c->buf, c->len, "\r\n\r\n", 4))
        assert_true(tc_fill(c, deadline) > 0);
    assert_non_null(strstr(c->buf, "HTTP/1.1 200 OK\r\n"));
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    assert_int_equal((size_t)(end + 4 - c->buf), c->len); /* nothing after the head */
    c->len = 0;
    tc_sends(c, "GET /binds HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_true(tc_response(c, &r));
    assert_int_equal(r.status, 200);
    tc_close(c);

    /* HTTP/1.1 without Host */
    c = tc_open(s->port);
    tc_sends(c, "GET /stat HTTP/1.1\r\n\r\n");
    assert_true(tc_response(c, &r));
    assert_int_equal(r.status, 400);
    assert_true(tc_wait_eof(c, 5000));
    tc_close(c);
    /* HTTP/1.0 needs none, and closes after the response */
    c = tc_open(s->port);
    tc_sends(c, "GET /stat HTTP/1.0\r\n\r\n");
    assert_true(tc_response(c, &r));
    assert_int_equal(r.status, 200);
    assert_true(has_header(&r, "\r\nConnection: close\r\n"));
    assert_true(tc_wait_eof(c, 5000));
    tc_close(c);
}

static void test_unimplemented_handlers(void **state)
{
    (void)state;
    struct kq_admin_handlers h = {.stat = h_stat};
    struct srv *s = srv_start(NULL, &h);
    expect(s->port, "GET", "/binds", 501, "not implemented");
    expect(s->port, "POST", "/reload", 501, "not implemented");
    expect(s->port, "GET", "/stat", 200, "kiteq");
    srv_stop(s);
}

/* --- connection handling ------------------------------------------------------------------ */

static void test_keepalive_and_pipelining(void **state)
{
    struct srv *s = *state;
    struct resp r;
    struct tc *c = tc_open(s->port);
    for (int i = 0; i < 3; i++) { /* keep-alive: one request after the other */
        tc_sends(c, "GET /binds HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_true(tc_response(c, &r));
        assert_int_equal(r.status, 200);
        assert_false(has_header(&r, "Connection: close"));
    }
    /* pipelined: four requests in one write, answers in order; the last asks to close */
    tc_sends(c, "GET /stat HTTP/1.1\r\nHost: x\r\n\r\n"
                "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                "POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                "GET /binds HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                "GET /stat HTTP/1.1\r\nHost: x\r\n\r\n"); /* after close: not answered */
    assert_true(tc_response(c, &r));
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "kiteq"));
    assert_true(tc_response(c, &r));
    assert_int_equal(r.status, 404);
    assert_true(tc_response(c, &r));
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"status\":200"));
    assert_true(tc_response(c, &r));
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "topic_2_groups"));
    assert_true(has_header(&r, "\r\nConnection: close\r\n"));
    assert_false(tc_response(c, &r)); /* EOF, no fifth answer */
    tc_close(c);

    /* a request split into single bytes */
    c = tc_open(s->port);
    const char *req = "GET /dlq?limit=3 HTTP/1.1\r\nHost: x\r\n\r\n";
    for (size_t i = 0; req[i]; i++)
        tc_send(c, req + i, 1);
    assert_true(tc_response(c, &r));
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"limit\":3"));
    tc_close(c);

    /* many pipelined requests */
    c = tc_open(s->port);
    char big[64 * 1024];
    size_t n = 0;
    for (int i = 0; i < 500; i++)
        n += (size_t)snprintf(big + n, sizeof big - n, "GET /binds HTTP/1.1\r\nHost: x\r\n\r\n");
    tc_send(c, big, n);
    for (int i = 0; i < 500; i++) {
        assert_true(tc_response(c, &r));
        assert_int_equal(r.status, 200);
    }
    tc_close(c);
    assert_serving(s);
}

/* Answers that come later: in order with the pipelined requests around them; too late
 * (past request_ms): 504, and the late answer is dropped. Responses over max_response: 500. */
static void test_deferred_answers(void **state)
{
    (void)state;
    struct kq_admin_limits l;
    kq_admin_limits_default(&l);
    assert_int_equal(l.max_conns, 16);
    l.request_ms = 400;
    l.max_response = 40;
    struct srv *s = srv_start(&l, NULL);
    struct resp r;
    struct tc *c = tc_open(s->port);
    tc_sends(c, "GET /msg/later-100 HTTP/1.1\r\nHost: x\r\n\r\n"
                "GET /binds HTTP/1.1\r\nHost: x\r\n\r\n"
                "GET /msg/now-later HTTP/1.1\r\nHost: x\r\n\r\n"
                "GET /msg/later-1 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_true(tc_response(c, &r));
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "later-100"));
    assert_true(tc_response(c, &r));
    assert_non_null(strstr(r.body, "topic_2_groups"));
    assert_true(tc_response(c, &r));
    assert_int_equal(r.status, 202);
    assert_true(tc_response(c, &r));
    assert_non_null(strstr(r.body, "later-1"));
    /* over the response limit */
    tc_sends(c, "GET /stat HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_true(tc_response(c, &r));
    assert_int_equal(r.status, 500);
    assert_non_null(strstr(r.body, "response too large"));
    /* too late: 504 and closed; the answer that comes after is dropped */
    tc_sends(c, "GET /msg/later-900 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_true(tc_response(c, &r));
    assert_int_equal(r.status, 504);
    assert_true(tc_wait_eof(c, 3000));
    tc_close(c);
    struct timespec ts = {0, 600 * 1000000}; /* the late answer arrives meanwhile */
    nanosleep(&ts, NULL);
    request(s->port, "GET /binds HTTP/1.1\r\nHost: x\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    srv_stop(s);
}

static void test_connection_close(void **state)
{
    struct srv *s = *state;
    struct resp r;
    struct tc *c = tc_open(s->port);
    tc_sends(c, "GET /stat HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_true(tc_response(c, &r));
    assert_int_equal(r.status, 200);
    assert_true(has_header(&r, "\r\nConnection: close\r\n"));
    assert_true(tc_wait_eof(c, 5000));
    tc_close(c);
}

/* A malformed request: the answer `status` and a closed connection; the server serves on. */
static void expect_rejected(struct srv *s, const char *req, size_t n, int status)
{
    struct tc *c = tc_open(s->port);
    tc_send(c, req, n);
    struct resp r;
    if (!tc_response(c, &r))
        fail_msg("no response, want %d", status);
    assert_int_equal(r.status, status);
    assert_true(has_header(&r, "\r\nConnection: close\r\n"));
    assert_true(tc_wait_eof(c, 5000));
    tc_close(c);
    assert_serving(s);
}

static void test_oversized_head(void **state)
{
    struct srv *s = *state;
    static char req[20000];
    /* a long request line */
    int n = snprintf(req, sizeof req, "GET /stat?x=");
    memset(req + n, 'a', 9000);
    n += 9000;
    n += snprintf(req + n, sizeof req - (size_t)n, " HTTP/1.1\r\nHost: x\r\n\r\n");
    expect_rejected(s, req, (size_t)n, 431);
    /* many headers */
    n = snprintf(req, sizeof req, "GET /stat HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < 400; i++)
        n += snprintf(req + n, sizeof req - (size_t)n, "X-Filler-%03d: 0123456789\r\n", i);
    n += snprintf(req + n, sizeof req - (size_t)n, "\r\n");
    expect_rejected(s, req, (size_t)n, 431);
    /* just under the limit is fine */
    n = snprintf(req, sizeof req, "GET /stat HTTP/1.1\r\nHost: x\r\nX-Pad: ");
    memset(req + n, 'b', 7000);
    n += 7000;
    n += snprintf(req + n, sizeof req - (size_t)n, "\r\n\r\n");
    struct tc *c = tc_open(s->port);
    tc_send(c, req, (size_t)n);
    struct resp r;
    assert_true(tc_response(c, &r));
    assert_int_equal(r.status, 200);
    tc_close(c);
}

static void test_body_limit(void **state)
{
    struct srv *s = *state;
    const char *cl = "POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nxyz";
    expect_rejected(s, cl, strlen(cl), 413);
    static char req[16384];
    int n = snprintf(req, sizeof req,
                     "POST /reload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 6; i++) { /* 6 KiB in 1 KiB chunks */
        n += snprintf(req + n, sizeof req - (size_t)n, "400\r\n");
        memset(req + n, 'z', 1024);
        n += 1024;
        n += snprintf(req + n, sizeof req - (size_t)n, "\r\n");
    }
    n += snprintf(req + n, sizeof req - (size_t)n, "0\r\n\r\n");
    expect_rejected(s, req, (size_t)n, 413);
    /* a small chunked body is accepted */
    struct resp r;
    request(s->port,
            "POST /reload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            "5\r\nhello\r\n0\r\n\r\n",
            &r);
    assert_int_equal(r.status, 200);
}

static void test_garbage(void **state)
{
    struct srv *s = *state;
    const char *cases[] = {
        "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage-tls-hello\r\n\r\n",
        "FOO /stat HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /stat HTTP/1.1\r\nBad Header Line\r\n\r\n",
        "GET /stat HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        "GET  HTTP/1.1\r\nHost: x\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_rejected(s, cases[i], strlen(cases[i]), 400);
    const char *v9 = "GET /stat HTTP/9.9\r\nHost: x\r\n\r\n";
    expect_rejected(s, v9, strlen(v9), 505);
}

static void test_slowloris(void **state)
{
    (void)state;
    struct kq_admin_limits l;
    kq_admin_limits_default(&l);
    l.request_ms = 300;
    struct srv *s = srv_start(&l, NULL);
    /* trickle: a byte every 50 ms keeps the socket busy but never completes the request */
    struct tc *c = tc_open(s->port);
    tc_sends(c, "GET /stat HTTP/1.1\r\n");
    int64_t t0 = now_ms(), closed_at = 0;
    while (now_ms() - t0 < 5000) {
        if (send(c->fd, "X", 1, MSG_NOSIGNAL) != 1) {
            closed_at = now_ms();
            break;
        }
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        if (poll(&p, 1, 50) > 0) { /* EOF */
            closed_at = now_ms();
            break;
        }
    }
    assert_true(closed_at > 0);
    assert_true(closed_at - t0 >= 250);
    tc_close(c);
    /* an idle connection is closed as well, and a keep-alive one after its response */
    c = tc_open(s->port);
    assert_true(tc_wait_eof(c, 3000));
    tc_close(c);
    c = tc_open(s->port);
    tc_sends(c, "GET /stat HTTP/1.1\r\nHost: x\r\n\r\n");
    struct resp r;
    assert_true(tc_response(c, &r));
    assert_int_equal(r.status, 200);
    assert_true(tc_wait_eof(c, 3000));
    tc_close(c);
    assert_serving(s);
    srv_stop(s);
}

static void test_connection_cap(void **state)
{
    (void)state;
    struct kq_admin_limits l;
    kq_admin_limits_default(&l);
    l.max_conns = 8;
    struct srv *s = srv_start(&l, NULL);
    struct tc *idle[8];
    for (int i = 0; i < 8; i++)
        idle[i] = tc_open(s->port);
    /* the ninth is answered 503 (or just closed) */
    struct tc *c = tc_open(s->port);
    struct resp r;
    if (tc_response(c, &r))
        assert_int_equal(r.status, 503);
    assert_true(tc_wait_eof(c, 5000));
    tc_close(c);
    /* the idle ones are still open: they can still be served */
    tc_sends(idle[0], "GET /stat HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_true(tc_response(idle[0], &r));
    assert_int_equal(r.status, 200);
    /* once one goes, a new connection is served again (the server notices the close soon) */
    tc_close(idle[7]);
    int64_t deadline = now_ms() + 5000;
    bool served = false;
    while (!served && now_ms() < deadline) {
        c = tc_open(s->port);
        tc_sends(c, "GET /stat HTTP/1.1\r\nHost: x\r\n\r\n");
        served = tc_response(c, &r) && r.status == 200;
        tc_close(c);
        if (!served) {
            struct timespec ts = {0, 10 * 1000000};
            nanosleep(&ts, NULL); /* poll interval while waiting for the server */
        }
    }
    assert_true(served);
    for (int i = 0; i < 7; i++)
        tc_close(idle[i]);
    srv_stop(s);
}

static void test_start_errors(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct kq_admin *a = NULL;
    char err[256];
    assert_int_equal(kq_admin_start(&loop, "nonsense", NULL, &handlers, NULL, &a, err, sizeof err),
                     -EINVAL);
    assert_non_null(strstr(err, "nonsense"));
    /* a port in use */
    struct srv *s = srv_start(NULL, NULL);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", s->port);
    assert_true(kq_admin_start(&loop, addr, NULL, &handlers, NULL, &a, err, sizeof err) < 0);
    srv_stop(s);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* --- the admin token ---------------------------------------------------------------------- */

#define TOKEN "tok-0123456789abcdef"

static int status_with_auth(int port, const char *method, const char *target, const char *auth,
                            struct resp *r)
{
    char req[2048];
    snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n%s%s\r\n", method,
             target, auth ? auth : "", auth ? "\r\n" : "");
    request(port, req, r);
    return r->status;
}

static void test_token(void **state)
{
    (void)state;
    /* beyond loopback without a token: refused, with the reason */
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct kq_admin *a = NULL;
    char err[256] = "";
    assert_int_equal(kq_admin_start(&loop, "0.0.0.0:0", NULL, &handlers, NULL, &a, err, sizeof err),
                     -EINVAL);
    assert_non_null(strstr(err, "adminToken"));
    assert_int_equal(kq_admin_start(&loop, "0.0.0.0:0", "", &handlers, NULL, &a, err, sizeof err),
                     -EINVAL);
    /* with one it listens, and cannot be left without it */
    assert_int_equal(
        kq_admin_start(&loop, "0.0.0.0:0", TOKEN, &handlers, NULL, &a, err, sizeof err), 0);
    assert_int_equal(kq_admin_set_token(a, NULL), -EINVAL);
    assert_int_equal(kq_admin_set_token(a, "another-token-0123456"), 0);
    kq_admin_stop(a, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);

    /* every interface: reachable on 127.0.0.1; reads are open, every POST needs the token */
    struct srv *s = srv_start_at("0.0.0.0:0", TOKEN, NULL, NULL);
    int p = s->port;
    struct resp r;
    int before = atomic_load(&reloads);
    assert_int_equal(status_with_auth(p, "POST", "/reload", NULL, &r), 401);
    assert_true(has_header(&r, "\r\nWWW-Authenticate: Bearer\r\n"));
    assert_non_null(strstr(r.body, "admin token required"));
    assert_int_equal(
        status_with_auth(p, "POST", "/reload", "Authorization: Bearer wrong-0123456789abcdef", &r),
        403);
    assert_int_equal(status_with_auth(p, "POST", "/reload", "Authorization: Bearer " TOKEN "x", &r),
                     403);
    assert_int_equal(
        status_with_auth(p, "POST", "/reload", "Authorization: Bearer tok-0123456789abcde", &r),
        403);
    assert_int_equal(status_with_auth(p, "POST", "/reload", "Authorization: Basic " TOKEN, &r),
                     401);
    assert_int_equal(status_with_auth(p, "POST", "/reload", "Authorization: " TOKEN, &r), 401);
    assert_int_equal(atomic_load(&reloads), before); /* the handler never ran */
    assert_int_equal(status_with_auth(p, "POST", "/dlq/purge?topic=*", NULL, &r), 401);
    assert_int_equal(status_with_auth(p, "POST", "/dlq/requeue?id=*", NULL, &r), 401);
    assert_int_equal(
        status_with_auth(p, "POST", "/reload", "authorization: bearer  " TOKEN " ", &r), 200);
    assert_int_equal(atomic_load(&reloads), before + 1);
    assert_int_equal(
        status_with_auth(p, "POST", "/dlq/purge?topic=t", "Authorization: Bearer " TOKEN, &r), 200);
    assert_int_equal(status_with_auth(p, "GET", "/stat", NULL, &r), 200);
    assert_int_equal(status_with_auth(p, "GET", "/dlq", NULL, &r), 200);
    /* an over-long value is just wrong, and the connection keeps working */
    char longauth[1200] = "Authorization: Bearer ";
    memset(longauth + strlen(longauth), 'x', 1000);
    assert_int_equal(status_with_auth(p, "POST", "/reload", longauth, &r), 403);

    /* the tools' client sends it */
    struct cli_http_response cr;
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", p);
    assert_int_equal(cli_http_request(addr, "POST", "/reload", NULL, 5000, &cr, err, sizeof err),
                     0);
    assert_int_equal(cr.status, 401);
    cli_http_response_free(&cr);
    assert_int_equal(cli_http_request(addr, "POST", "/reload", TOKEN, 5000, &cr, err, sizeof err),
                     0);
    assert_int_equal(cr.status, 200);
    cli_http_response_free(&cr);
    assert_int_equal(
        cli_http_request(addr, "POST", "/reload", "bad\r\nX: y", 5000, &cr, err, sizeof err),
        -EINVAL);
    srv_stop(s);

    /* a token on loopback is enforced as well */
    s = srv_start_at("127.0.0.1:0", TOKEN, NULL, NULL);
    assert_int_equal(status_with_auth(s->port, "POST", "/reload", NULL, &r), 401);
    srv_stop(s);
}

/* --- the tools' HTTP client --------------------------------------------------------------- */

static void test_http_client(void **state)
{
    struct srv *s = *state;
    struct cli_http_response r;
    char err[256];
    assert_int_equal(cli_http_request(s->addr, "GET", "/stat", NULL, 5000, &r, err, sizeof err), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"kiteq\""));
    assert_int_equal(r.body_len, strlen(r.body));
    cli_http_response_free(&r);
    assert_int_equal(
        cli_http_request(s->addr, "POST", "/dlq/purge?topic=t1", NULL, 5000, &r, err, sizeof err),
        0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"purged\":\"t1\"}");
    cli_http_response_free(&r);
    assert_int_equal(cli_http_request(s->addr, "GET", "/x", NULL, 5000, &r, err, sizeof err), 0);
    assert_int_equal(r.status, 404);
    cli_http_response_free(&r);

    char enc[64];
    assert_int_equal(cli_url_encode("a b&c=d/é~", enc, sizeof enc), 0);
    assert_string_equal(enc, "a%20b%26c%3Dd%2F%C3%A9~");
    assert_int_equal(cli_url_encode("abcdef", enc, 4), -ENAMETOOLONG);

    /* a closed port; a bad address */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    socklen_t sl = sizeof sa;
    bind(fd, (struct sockaddr *)&sa, sizeof sa);
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(sa.sin_port));
    close(fd); /* bound, never listening: the port refuses */
    assert_int_equal(cli_http_request(addr, "GET", "/stat", NULL, 2000, &r, err, sizeof err),
                     -ECONNREFUSED);
    assert_int_equal(cli_http_request("nocolon", "GET", "/stat", NULL, 2000, &r, err, sizeof err),
                     -EINVAL);
}

static void test_cli(void **state)
{
    struct srv *s = *state;
    char path[512];
    snprintf(path, sizeof path, "%s/kiteq-cli", test_build_dir());
    if (access(path, X_OK) != 0)
        skip();
    const char *a = s->addr;
    assert_has(cli_expect(0, "stat --admin %s", a), "\"kiteq\"");
    assert_has(cli_expect(0, "binds --admin %s", a), "topic_2_groups");
    assert_has(cli_expect(0, "metrics --admin %s", a), "kiteq_received_total");
    assert_has(cli_expect(0, "msg --admin %s 'abc def'", a), "\"abc def\"");
    assert_has(cli_expect(1, "msg --admin %s nope", a), "404");
    assert_has(cli_expect(0, "dlq list --admin %s --topic 'a b' --limit 7", a),
               "{\"topic\":\"a b\",\"limit\":7}");
    assert_has(cli_expect(0, "dlq requeue --admin %s --all", a), "{\"requeued\":\"*\"}");
    assert_has(cli_expect(0, "dlq requeue --admin %s --id m9", a), "{\"requeued\":\"m9\"}");
    assert_has(cli_expect(0, "dlq purge --admin %s --topic trade", a), "{\"purged\":\"trade\"}");
    cli_expect(2, "dlq purge --admin %s", a); /* usage: --topic or --all needed */
    cli_expect(0, "reload --admin %s", a);
    assert_has(cli_expect(2, "stat --admin nocolon"), "expected HOST:PORT");
    assert_has(cli_expect(0, "stat --help"), "--admin");
    cli_expect(0, "dlq --help");
    cli_expect(3, "stat --admin 127.0.0.1:1"); /* unreachable */
}

/* --- Prometheus helpers ------------------------------------------------------------------- */

static void test_prom(void **state)
{
    (void)state;
    struct kq_buf b = {0};
    struct kq_prom p;
    kq_prom_init(&p, &b);
    assert_int_equal(kq_prom_counter(&p, "kiteq_received_total", "Messages\\accepted\nby topic.",
                                     (const char *const[]){"topic", "a\"b\\c\nd", NULL}, 3),
                     0);
    assert_int_equal(kq_prom_counter(&p, "kiteq_received_total", "ignored the second time",
                                     (const char *const[]){"topic", "t2", NULL}, 1e20),
                     0);
    assert_int_equal(kq_prom_gauge(&p, "kiteq_connections", NULL, NULL, 2.5), 0);
    assert_int_equal(kq_prom_gauge(&p, "kiteq_x", "x", NULL, 0.1), 0);
    assert_int_equal(kq_prom_gauge(&p, "kiteq_nan", "n", NULL, 0.0 / 0.0), 0);
    assert_int_equal(kq_prom_gauge(&p, "9bad", "x", NULL, 1), -EINVAL);
    assert_int_equal(kq_prom_gauge(&p, "bad-name", "x", NULL, 1), -EINVAL);
    assert_int_equal(kq_prom_gauge(&p, "ok", "x", (const char *const[]){"a:b", "v", NULL}, 1),
                     -EINVAL);
    assert_int_equal(kq_prom_gauge(&p, "ok", "x", (const char *const[]){"le", "v", NULL}, 1),
                     -EINVAL);
    /* a family seen with another type is refused */
    assert_int_equal(kq_prom_gauge(&p, "kiteq_received_total", "x", NULL, 1), -EINVAL);
    assert_int_equal(b.len, 0); /* nothing is written before finish */
    /* a sample of an earlier family joins its family's block */
    assert_int_equal(kq_prom_counter(&p, "kiteq_received_total", NULL,
                                     (const char *const[]){"topic", "t3", NULL}, 4),
                     0);
    /* finish writes what was right and returns the first failure for the caller to report */
    assert_int_equal(kq_prom_finish(&p), -EINVAL);
    assert_string_equal(p.error_name, "9bad");
    kq_buf_append(&b, "", 1);
    assert_string_equal((char *)b.data,
                        "# HELP kiteq_received_total Messages\\\\accepted\\nby topic.\n"
                        "# TYPE kiteq_received_total counter\n"
                        "kiteq_received_total{topic=\"a\\\"b\\\\c\\nd\"} 3\n"
                        "kiteq_received_total{topic=\"t2\"} 1e+20\n"
                        "kiteq_received_total{topic=\"t3\"} 4\n"
                        "# TYPE kiteq_connections gauge\n"
                        "kiteq_connections 2.5\n"
                        "# HELP kiteq_x x\n# TYPE kiteq_x gauge\nkiteq_x 0.1\n"
                        "# HELP kiteq_nan n\n# TYPE kiteq_nan gauge\nkiteq_nan NaN\n");
    kq_prom_free(&p);
    kq_buf_free(&b);
}

static void test_prom_histogram(void **state)
{
    (void)state;
    static struct kq_prom_hist h;
    assert_int_equal(kq_prom_hist_init(&h, (const double[]){0.001, 0.001}, 2), -EINVAL);
    assert_int_equal(kq_prom_hist_init(&h, (const double[]){1}, 0), -EINVAL);
    assert_int_equal(kq_prom_hist_init(&h, (const double[]){0.001, 0.005, 0.1}, 3), 0);
    kq_prom_hist_observe(&h, 0.0005);
    kq_prom_hist_observe(&h, 0.001); /* on the bound: in the le="0.001" bucket */
    kq_prom_hist_observe(&h, 0.003);
    kq_prom_hist_observe(&h, 2.0);
    struct kq_buf b = {0};
    struct kq_prom p;
    kq_prom_init(&p, &b);
    assert_int_equal(kq_prom_histogram(&p, "kiteq_store_fsync_seconds", "fsync latency.",
                                       (const char *const[]){"store", "file", NULL}, &h),
                     0);
    assert_int_equal(kq_prom_finish(&p), 0);
    kq_buf_append(&b, "", 1);
    assert_string_equal((char *)b.data,
                        "# HELP kiteq_store_fsync_seconds fsync latency.\n"
                        "# TYPE kiteq_store_fsync_seconds histogram\n"
                        "kiteq_store_fsync_seconds_bucket{store=\"file\",le=\"0.001\"} 2\n"
                        "kiteq_store_fsync_seconds_bucket{store=\"file\",le=\"0.005\"} 3\n"
                        "kiteq_store_fsync_seconds_bucket{store=\"file\",le=\"0.1\"} 3\n"
                        "kiteq_store_fsync_seconds_bucket{store=\"file\",le=\"+Inf\"} 4\n"
                        "kiteq_store_fsync_seconds_sum{store=\"file\"} 2.0045\n"
                        "kiteq_store_fsync_seconds_count{store=\"file\"} 4\n");
    kq_prom_free(&p);
    kq_buf_free(&b);
}

/* --- out of memory ------------------------------------------------------------------------ */

/* This program is linked with --wrap=realloc (CMake does it for the __wrap_ below): the next
 * reallocs_to_fail reallocs of the calling thread fail, as when memory runs out. */
void *__real_realloc(void *p, size_t n);
void *__wrap_realloc(void *p, size_t n);
static _Thread_local int reallocs_to_fail;

void *__wrap_realloc(void *p, size_t n)
{
    if (reallocs_to_fail > 0) {
        reallocs_to_fail--;
        return NULL;
    }
    return __real_realloc(p, n);
}

/* A handler that does not check its appends and loses the middle of its document to
 * memory: what it returns looks whole. */
static int h_stat_middle_lost(void *ud, struct kq_buf *out)
{
    (void)ud;
    put(out, "{\"head\":1,");
    static char big[8192]; /* past the buffer's first 4 KiB: it must grow, and cannot */
    memset(big, 'x', sizeof big - 1);
    reallocs_to_fail = 1; /* on the server's loop thread */
    put(out, big);
    put(out, "\"tail\":2}");
    return 200;
}

static void test_answer_lost_to_memory(void **state)
{
    (void)state;
    struct kq_buf b = {0};
    reallocs_to_fail = 1;
    assert_int_equal(kq_buf_append(&b, "x", 1), -ENOMEM);
    assert_true(b.failed);
    assert_int_equal(kq_buf_append(&b, "y", 1), 0); /* later appends work; the mark stays */
    assert_true(b.failed);
    kq_buf_free(&b);
    assert_false(b.failed);

    log_capture_begin();
    struct kq_admin_handlers h = {.stat = h_stat_middle_lost, .binds = h_binds};
    struct srv *s = srv_start(NULL, &h);
    struct resp r;
    request(s->port, "GET /stat HTTP/1.1\r\nHost: x\r\n\r\n", &r);
    assert_int_equal(r.status, 500); /* not 200 with {"head":1,"tail":2} */
    assert_string_equal(r.body, "{\"error\":\"out of memory\",\"status\":500}");
    expect(s->port, "GET", "/binds", 200, "topic_2_groups"); /* and it serves on */
    srv_stop(s);
    char *log = log_capture_end(KQ_LOG_ERROR);
    assert_non_null(strstr(log, "out of memory building an answer (status 200): answered 500"));
    free(log);
}

/* The broker's JSON printer and the Prometheus writer mark what they could not write. */
static void test_documents_lost_to_memory(void **state)
{
    (void)state;
    struct kq_buf out = {0};
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "state", "pending");
    reallocs_to_fail = 1;
    assert_int_equal(kq_adm_reply(&out, o, 200), 500); /* was 200 with an empty body */
    assert_true(out.failed);
    kq_buf_free(&out);

    struct kq_prom p;
    kq_prom_init(&p, &out);
    assert_int_equal(kq_prom_gauge(&p, "9bad", "x", NULL, 1), -EINVAL); /* a code error first */
    assert_int_equal(kq_prom_gauge(&p, "kiteq_a", "a", NULL, 1), 0);
    reallocs_to_fail = 1; /* the new family's lines cannot grow */
    assert_int_equal(kq_prom_gauge(&p, "kiteq_b", "b", NULL, 2), -ENOMEM);
    /* finish reports the first error (a handler would answer 200 for it), and out is marked */
    assert_int_equal(kq_prom_finish(&p), -EINVAL);
    assert_true(out.failed);
    kq_prom_free(&p);
    kq_buf_free(&out);
}

/* mallocs_to_fail mallocs of the calling thread fail (the cJSON builders of the broker's
 * handlers allocate through it once kq_adm_json_memory_watch is on). */
void *__real_malloc(size_t n);
void *__wrap_malloc(size_t n);
static _Thread_local int mallocs_to_fail;

void *__wrap_malloc(size_t n)
{
    if (mallocs_to_fail > 0) {
        mallocs_to_fail--;
        return NULL;
    }
    return __real_malloc(n);
}

/* A key the handler's cJSON builder lost to memory leaves a document that looks whole: it is
 * answered 500, and the next document as usual. */
static void test_json_keys_lost_to_memory(void **state)
{
    (void)state;
    kq_adm_json_memory_watch();
    struct kq_buf out = {0};
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "state", "pending");
    mallocs_to_fail = 1;
    assert_null(cJSON_AddNumberToObject(o, "attempts", 3)); /* lost without a word */
    assert_int_equal(kq_adm_reply(&out, o, 200), 500);      /* was 200 {"state":"pending"} */
    assert_true(out.failed);
    kq_buf_free(&out);
    o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "attempts", 3);
    assert_int_equal(kq_adm_reply(&out, o, 200), 200);
    assert_int_equal(out.len, strlen("{\"attempts\":3}"));
    assert_memory_equal(out.data, "{\"attempts\":3}", out.len);
    kq_buf_free(&out);
    cJSON_InitHooks(NULL); /* back to cJSON's own allocator for the other tests */
}

int main(void)
{
    kq_log_set_level(KQ_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_routes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_headers_and_methods, setup, teardown),
        cmocka_unit_test(test_unimplemented_handlers),
        cmocka_unit_test_setup_teardown(test_keepalive_and_pipelining, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_close, setup, teardown),
        cmocka_unit_test(test_deferred_answers),
        cmocka_unit_test_setup_teardown(test_oversized_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage, setup, teardown),
        cmocka_unit_test(test_slowloris),
        cmocka_unit_test(test_connection_cap),
        cmocka_unit_test(test_start_errors),
        cmocka_unit_test(test_token),
        cmocka_unit_test_setup_teardown(test_http_client, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cli, setup, teardown),
        cmocka_unit_test(test_prom),
        cmocka_unit_test(test_prom_histogram),
        cmocka_unit_test(test_answer_lost_to_memory),
        cmocka_unit_test(test_documents_lost_to_memory),
        cmocka_unit_test(test_json_keys_lost_to_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
