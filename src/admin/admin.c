/* Admin HTTP/1.1 server: node's http_parser does the parsing; this file owns connections,
 * limits, routing and the response framing. Everything runs on the loop thread and every
 * handler answers synchronously, so responses to pipelined requests leave in order. */
#include "admin/admin.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <http_parser.h>

#include "core/addr.h"
#include "core/log.h"
#include "net/net.h"

#define READ_CHUNK (16 * 1024)
#define MAX_UNSENT (1024 * 1024) /* stop reading while this much output is unsent */
#define MAX_DRAIN (64 * 1024)    /* input discarded after the last response before giving up */
#define MAX_PARAM 512            /* a decoded path or query value */
#define MAX_AUTH 300             /* an Authorization value we keep (longer ones are wrong) */
#define DLQ_DEFAULT_LIMIT 100
#define DLQ_MAX_LIMIT 10000

struct conn {
    uv_tcp_t tcp;
    uv_shutdown_t shut;
    struct kq_admin *a;
    http_parser hp;
    struct kq_buf url;
    size_t body_len;
    char hname[16];      /* the header name being read: enough for "Host", "Authorization" */
    size_t hname_len;
    bool in_value;       /* last header callback was a value */
    bool has_host;
    bool in_auth;        /* the value being read is Authorization's */
    char auth[MAX_AUTH]; /* its value (NUL-terminated); auth_len > MAX_AUTH - 1 = too long */
    size_t auth_len;
    int fail;            /* status to answer when a callback stopped the parser */
    uint64_t deadline;   /* loop ms: the request (or the drain) must be done by then */
    size_t unsent;       /* bytes handed to uv_write and not yet written */
    size_t drained;
    bool reading;
    bool draining;       /* last response queued: discard input until EOF */
    bool closed;
    struct conn *prev, *next;
};

struct kq_admin {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_timer_t sweeper;
    struct kq_admin_handlers h;
    void *ud;
    struct kq_admin_limits lim;
    char *token;       /* mutating requests need it; NULL = none asked (loopback only) */
    bool loopback;     /* listening on a loopback address */
    struct conn *conns;
    size_t n_conns; /* including connections whose handle is closing */
    int port;
    int handles_open;
    bool stopping;
    void (*done)(void *);
    void *done_ud;
    char rbuf[READ_CHUNK]; /* shared: every read is parsed completely before the next */
};

struct wreq {
    uv_write_t req;
    struct conn *c;
    struct kq_buf buf;
};

void kq_admin_limits_default(struct kq_admin_limits *l)
{
    *l = (struct kq_admin_limits){.max_head = 8192,
                                  .max_body = 4096,
                                  .request_ms = 10000,
                                  .linger_ms = 2000,
                                  .max_conns = 256};
}

/* --- closing ------------------------------------------------------------------------------ */

static void maybe_done(struct kq_admin *a)
{
    if (!a->stopping || a->handles_open || a->n_conns)
        return;
    void (*done)(void *) = a->done;
    void *ud = a->done_ud;
    free(a->token);
    free(a);
    if (done)
        done(ud);
}

static void on_conn_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    struct kq_admin *a = c->a;
    kq_buf_free(&c->url);
    free(c);
    a->n_conns--;
    maybe_done(a);
}

/* Close now; pending writes are cancelled (their callbacks run before on_conn_closed). */
static void conn_close(struct conn *c, const char *why)
{
    if (c->closed)
        return;
    c->closed = true;
    struct kq_admin *a = c->a;
    if (c->prev)
        c->prev->next = c->next;
    else
        a->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    KQ_DEBUG("admin", "closing connection reason=\"%s\"", why);
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

/* --- writing ------------------------------------------------------------------------------ */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void set_reading(struct conn *c, bool on)
{
    if (c->closed || c->reading == on)
        return;
    c->reading = on;
    if (on)
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    else
        uv_read_stop((uv_stream_t *)&c->tcp);
}

static void on_write(uv_write_t *req, int status)
{
    struct wreq *w = req->data;
    struct conn *c = w->c;
    c->unsent -= w->buf.len;
    kq_buf_free(&w->buf);
    free(w);
    if (c->closed)
        return;
    if (status < 0)
        conn_close(c, uv_strerror(status));
    else if (c->unsent < MAX_UNSENT / 2)
        set_reading(c, true);
}

/* Queue b (taken over, left empty) for writing. */
static void send_buf(struct conn *c, struct kq_buf *b)
{
    struct wreq *w = calloc(1, sizeof *w);
    if (!w) {
        kq_buf_free(b);
        conn_close(c, "out of memory");
        return;
    }
    w->c = c;
    w->buf = *b;
    *b = (struct kq_buf){0};
    w->req.data = w;
    uv_buf_t ub = uv_buf_init((char *)w->buf.data, (unsigned)w->buf.len);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &ub, 1, on_write);
    if (rc < 0) {
        kq_buf_free(&w->buf);
        free(w);
        conn_close(c, uv_strerror(rc));
        return;
    }
    c->unsent += w->buf.len;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;
    if (c->closed)
        return;
    if (status < 0) {
        conn_close(c, uv_strerror(status));
        return;
    }
    /* Everything is written and our FIN is out. Reading on until the peer's EOF keeps the
     * kernel from answering its unread bytes with a reset that could destroy our response. */
    c->deadline = uv_now(c->a->loop) + c->a->lim.linger_ms;
}

/* The last response is queued: send FIN once it is written, then drain. */
static void start_drain(struct conn *c)
{
    if (c->closed || c->draining)
        return;
    c->draining = true;
    c->deadline = uv_now(c->a->loop) + c->a->lim.request_ms; /* time to take the response */
    c->shut.data = c;
    if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
        conn_close(c, "shutdown failed");
        return;
    }
    set_reading(c, true);
}

static const char *reason(int status)
{
    const char *r = http_status_str((enum http_status)status);
    return r && *r != '<' ? r : "Unknown";
}

/* Frame and queue one response. `extra` adds one header line ("Allow: POST" for a 405);
 * close adds "Connection: close" and ends the connection after it. */
static void respond(struct conn *c, int status, const char *ctype, const struct kq_buf *body,
                    bool head_only, const char *extra, bool close)
{
    struct kq_buf out = {0};
    char hdr[512];
    int n = snprintf(hdr, sizeof hdr,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n%s%s%s\r\n",
                     status, reason(status), ctype, body->len, extra ? extra : "",
                     extra ? "\r\n" : "", close ? "Connection: close\r\n" : "");
    if (kq_buf_append(&out, hdr, (size_t)n) ||
        (!head_only && kq_buf_append(&out, body->data, body->len))) {
        kq_buf_free(&out);
        conn_close(c, "out of memory");
        return;
    }
    send_buf(c, &out);
    if (close)
        start_drain(c);
}

static void error_body(struct kq_buf *b, int status, const char *msg)
{
    char tmp[256];
    int n = snprintf(tmp, sizeof tmp, "{\"error\":\"%s\",\"status\":%d}", msg, status);
    b->len = 0;
    kq_buf_append(b, tmp, (size_t)n);
}

static void respond_error(struct conn *c, int status, const char *msg, bool head_only,
                          const char *extra, bool close)
{
    struct kq_buf b = {0};
    error_body(&b, status, msg);
    respond(c, status, "application/json", &b, head_only, extra, close);
    kq_buf_free(&b);
}

/* --- routing ------------------------------------------------------------------------------ */

enum route_id { R_STAT, R_BINDS, R_METRICS, R_MSG, R_DLQ, R_DLQ_REQUEUE, R_DLQ_PURGE, R_RELOAD };

static const struct route {
    const char *path;
    bool prefix; /* path is a prefix; the rest is the argument (/msg/<id>) */
    bool post;   /* POST only; otherwise GET and HEAD */
    enum route_id id;
} routes[] = {
    {"/stat", false, false, R_STAT},
    {"/binds", false, false, R_BINDS},
    {"/metrics", false, false, R_METRICS},
    {"/msg/", true, false, R_MSG},
    {"/dlq", false, false, R_DLQ},
    {"/dlq/requeue", false, true, R_DLQ_REQUEUE},
    {"/dlq/purge", false, true, R_DLQ_PURGE},
    {"/reload", false, true, R_RELOAD},
};

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch |= 0x20;
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* Percent-decode s[0..n) into out (NUL-terminated); '+' is a space when plus is set.
 * Returns 0, or -1 for a bad escape, an embedded NUL or an over-long result. */
static int url_decode(const char *s, size_t n, bool plus, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '%') {
            if (i + 2 >= n)
                return -1;
            int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
            if (h < 0 || l < 0 || (h == 0 && l == 0))
                return -1;
            ch = (char)(h << 4 | l);
            i += 2;
        } else if (ch == '+' && plus) {
            ch = ' ';
        }
        if (o + 1 >= outlen)
            return -1;
        out[o++] = ch;
    }
    out[o] = 0;
    return 0;
}

/* Find `name` in the query string q[0..n). Returns 1 and the decoded value, 0 when absent,
 * -1 when the value cannot be decoded. */
static int query_get(const char *q, size_t n, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    const char *end = q + n;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(pe - q));
        const char *ke = eq ? eq : pe;
        if ((size_t)(ke - q) == nl && memcmp(q, name, nl) == 0) {
            const char *v = eq ? eq + 1 : pe;
            return url_decode(v, (size_t)(pe - v), true, out, outlen) ? -1 : 1;
        }
        q = pe + 1;
    }
    return 0;
}

/* Run the route's handler; returns its status and fills body (empty on errors it left
 * unexplained). *msg explains a 4xx found before calling the handler. */
static int run_route(struct kq_admin *a, enum route_id id, const char *arg, const char *q,
                     size_t qn, struct kq_buf *body, const char **msg)
{
    const struct kq_admin_handlers *h = &a->h;
    char p1[MAX_PARAM];
    int r;
    *msg = NULL;
    switch (id) {
    case R_STAT: return h->stat ? h->stat(a->ud, body) : 501;
    case R_BINDS: return h->binds ? h->binds(a->ud, body) : 501;
    case R_METRICS: return h->metrics ? h->metrics(a->ud, body) : 501;
    case R_RELOAD: return h->reload ? h->reload(a->ud, body) : 501;
    case R_MSG:
        if (!*arg) {
            *msg = "missing message id";
            return 400;
        }
        return h->msg ? h->msg(a->ud, arg, body) : 501;
    case R_DLQ: {
        char lim[32];
        long limit = DLQ_DEFAULT_LIMIT;
        if ((r = query_get(q, qn, "limit", lim, sizeof lim)) != 0) {
            char *end;
            errno = 0;
            limit = r > 0 ? strtol(lim, &end, 10) : -1;
            if (r < 0 || errno || *end || end == lim || limit < 1 || limit > DLQ_MAX_LIMIT) {
                *msg = "limit must be an integer in 1..10000";
                return 400;
            }
        }
        if ((r = query_get(q, qn, "topic", p1, sizeof p1)) < 0) {
            *msg = "bad topic";
            return 400;
        }
        const char *topic = r > 0 && *p1 ? p1 : NULL;
        return h->dlq_list ? h->dlq_list(a->ud, topic, (size_t)limit, body) : 501;
    }
    case R_DLQ_REQUEUE:
        if (query_get(q, qn, "id", p1, sizeof p1) != 1 || !*p1) {
            *msg = "id required (a message id, or * for all)";
            return 400;
        }
        return h->dlq_requeue ? h->dlq_requeue(a->ud, p1, body) : 501;
    case R_DLQ_PURGE:
        /* Required, so that a forgotten parameter cannot purge everything; "*" = all. */
        if (query_get(q, qn, "topic", p1, sizeof p1) != 1 || !*p1) {
            *msg = "topic required (a topic, or * for all)";
            return 400;
        }
        return h->dlq_purge ? h->dlq_purge(a->ud, strcmp(p1, "*") ? p1 : NULL, body) : 501;
    }
    return 500;
}

/* Same cost whatever the first differing byte: the token cannot be found byte by byte. */
static bool same_secret(const char *a, size_t an, const char *b, size_t bn)
{
    unsigned char diff = an != bn;
    for (size_t i = 0; i < an && i < bn; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

/* A mutating request (every POST route) needs "Authorization: Bearer <token>" when a token
 * is set. Returns 0, or 401 (no credentials) / 403 (wrong ones) with *msg. */
static int check_token(struct conn *c, const char **msg)
{
    const char *tok = c->a->token;
    if (!tok)
        return 0;
    const char *v = c->auth;
    if (c->auth_len == 0 || strncasecmp(v, "Bearer ", 7) != 0) {
        *msg = "admin token required (Authorization: Bearer <adminToken>)";
        return 401;
    }
    v += 7;
    while (*v == ' ')
        v++;
    size_t vn = c->auth_len < MAX_AUTH ? strlen(v) : 0;
    while (vn && v[vn - 1] == ' ')
        vn--;
    if (!same_secret(v, vn, tok, strlen(tok))) {
        KQ_LOG_RATELIMITED(KQ_LOG_WARN, "admin", "refused a request with a wrong admin token");
        *msg = "wrong admin token";
        return 403;
    }
    return 0;
}

/* One complete request: route it and queue the response. */
static void dispatch(struct conn *c)
{
    struct kq_admin *a = c->a;
    bool keep = http_should_keep_alive(&c->hp) && !c->hp.upgrade;
    bool head = c->hp.method == HTTP_HEAD;
    if (c->hp.http_major == 1 && c->hp.http_minor >= 1 && !c->has_host) {
        respond_error(c, 400, "missing Host header", head, NULL, true);
        return;
    }
    const char *url = (const char *)c->url.data;
    size_t ulen = c->url.len;
    struct http_parser_url u;
    http_parser_url_init(&u);
    char path[MAX_PARAM];
    if (!url || http_parser_parse_url(url, ulen, c->hp.method == HTTP_CONNECT, &u) ||
        !(u.field_set & (1 << UF_PATH)) ||
        url_decode(url + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len, false, path,
                   sizeof path)) {
        respond_error(c, 400, "bad request target", head, NULL, !keep);
        return;
    }
    const char *q = "";
    size_t qn = 0;
    if (u.field_set & (1 << UF_QUERY)) {
        q = url + u.field_data[UF_QUERY].off;
        qn = u.field_data[UF_QUERY].len;
    }

    const struct route *rt = NULL;
    const char *arg = "";
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        size_t pl = strlen(routes[i].path);
        if (routes[i].prefix ? strncmp(path, routes[i].path, pl) == 0 : !strcmp(path, routes[i].path)) {
            rt = &routes[i];
            arg = path + pl;
            break;
        }
    }
    if (!rt) {
        respond_error(c, 404, "not found", head, NULL, !keep);
        return;
    }
    bool ok = rt->post ? c->hp.method == HTTP_POST
                       : c->hp.method == HTTP_GET || c->hp.method == HTTP_HEAD;
    if (!ok) {
        respond_error(c, 405, "method not allowed", head,
                      rt->post ? "Allow: POST" : "Allow: GET, HEAD", !keep);
        return;
    }

    struct kq_buf body = {0};
    const char *msg = NULL;
    int status = rt->post ? check_token(c, &msg) : 0;
    if (status == 0)
        status = run_route(a, rt->id, arg, q, qn, &body, &msg);
    if (status < 100 || status > 599) {
        KQ_WARN("admin", "handler for %s returned status %d", rt->path, status);
        status = 500;
        body.len = 0;
    }
    if (status >= 400 && body.len == 0)
        error_body(&body, status, msg ? msg : status == 501 ? "not implemented" : reason(status));
    const char *ctype = rt->id == R_METRICS && status < 300 ? "text/plain; version=0.0.4; charset=utf-8"
                                                            : "application/json";
    respond(c, status, ctype, &body, head, status == 401 ? "WWW-Authenticate: Bearer" : NULL,
            !keep);
    kq_buf_free(&body);
}

/* --- parsing ------------------------------------------------------------------------------ */

static int on_message_begin(http_parser *p)
{
    struct conn *c = p->data;
    c->url.len = 0;
    c->body_len = 0;
    c->hname_len = 0;
    c->in_value = false;
    c->has_host = false;
    c->in_auth = false;
    c->auth_len = 0;
    c->auth[0] = 0;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    if (kq_buf_append(&c->url, at, n)) {
        c->fail = 500;
        return -1;
    }
    return 0;
}

/* Header names may arrive in pieces; only "Host" and "Authorization" matter here. */
static int on_header_field(http_parser *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    if (c->in_value) {
        c->in_value = false;
        c->hname_len = 0;
    }
    for (size_t i = 0; i < n; i++)
        c->hname[c->hname_len < sizeof c->hname ? c->hname_len++ : sizeof c->hname - 1] = at[i];
    if (n && c->hname_len == sizeof c->hname)
        c->hname[0] = 0; /* too long to be "Host" */
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    if (!c->in_value) {
        if (c->hname_len == 4 && strncasecmp(c->hname, "host", 4) == 0)
            c->has_host = true;
        c->in_auth = c->hname_len == 13 && strncasecmp(c->hname, "authorization", 13) == 0;
        if (c->in_auth)
            c->auth_len = 0; /* a repeated header: the last one counts */
    }
    c->in_value = true;
    if (c->in_auth) { /* values may arrive in pieces too; too long = wrong, keep counting */
        for (size_t i = 0; i < n; i++, c->auth_len++)
            if (c->auth_len < MAX_AUTH - 1)
                c->auth[c->auth_len] = at[i];
        c->auth[c->auth_len < MAX_AUTH - 1 ? c->auth_len : MAX_AUTH - 1] = 0;
    }
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct conn *c = p->data;
    if (p->http_major != 1) {
        c->fail = 505;
        return -1;
    }
    /* content_length is ULLONG_MAX when the request has no Content-Length. */
    if (p->content_length != (uint64_t)-1 && p->content_length > c->a->lim.max_body) {
        c->fail = 413;
        return -1;
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct conn *c = p->data; /* no route reads a body: count it, keep nothing */
    c->body_len += n;
    if (c->body_len > c->a->lim.max_body) {
        c->fail = 413;
        return -1;
    }
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct conn *c = p->data;
    if (kq_buf_append(&c->url, "", 1)) { /* NUL-terminate for url parsing */
        c->fail = 500;
        return -1;
    }
    c->url.len--;
    dispatch(c);
    c->deadline = uv_now(c->a->loop) + c->a->lim.request_ms; /* for the next request */
    if (c->closed || c->draining)
        http_parser_pause(p, 1); /* the rest of the input is not for us */
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    buf->base = c->a->rbuf;
    buf->len = sizeof c->a->rbuf;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    if (nread < 0) {
        conn_close(c, nread == UV_EOF ? "peer closed" : uv_strerror((int)nread));
        return;
    }
    if (nread == 0 || c->closed)
        return;
    if (c->draining) {
        c->drained += (size_t)nread;
        if (c->drained > MAX_DRAIN)
            conn_close(c, "too much input after the last response");
        return;
    }
    http_parser_execute(&c->hp, &settings, buf->base, (size_t)nread);
    if (c->closed || c->draining)
        return;
    enum http_errno e = HTTP_PARSER_ERRNO(&c->hp);
    if (e != HPE_OK) {
        int status = c->fail ? c->fail : e == HPE_HEADER_OVERFLOW ? 431 : 400;
        const char *msg = status == 413   ? "request body too large"
                          : status == 431 ? "request header fields too large"
                          : status == 505 ? "HTTP version not supported"
                          : status == 400 ? http_errno_description(e)
                                          : "internal error";
        KQ_DEBUG("admin", "bad request: %s", http_errno_name(e));
        respond_error(c, status, status == 400 ? "bad request" : msg, false, NULL, true);
        return;
    }
    if (c->unsent > MAX_UNSENT)
        set_reading(c, false); /* a pipelining client that does not read its answers */
}

/* --- listener, timer ---------------------------------------------------------------------- */

static void on_connection(uv_stream_t *server, int status)
{
    struct kq_admin *a = server->data;
    if (status < 0 || a->stopping)
        return;
    struct conn *c = calloc(1, sizeof *c);
    if (!c)
        return;
    uv_tcp_init(a->loop, &c->tcp);
    c->tcp.data = c;
    c->a = a;
    c->next = a->conns;
    if (a->conns)
        a->conns->prev = c;
    a->conns = c;
    a->n_conns++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c, "accept failed");
        return;
    }
    if (a->n_conns > a->lim.max_conns) {
        /* Best effort: a fresh socket takes a short answer without blocking. */
        static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: "
                                   "application/json\r\nContent-Length: 45\r\nConnection: "
                                   "close\r\n\r\n{\"error\":\"too many connections\",\"status\":503}";
        uv_buf_t b = uv_buf_init((char *)busy, sizeof busy - 1);
        uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        KQ_LOG_RATELIMITED(KQ_LOG_WARN, "admin", "connection refused: %zu open",
                           a->n_conns - 1);
        conn_close(c, "too many connections");
        return;
    }
    http_parser_init(&c->hp, HTTP_REQUEST);
    c->hp.data = c;
    c->deadline = uv_now(a->loop) + a->lim.request_ms;
    set_reading(c, true);
}

static void on_sweep(uv_timer_t *t)
{
    struct kq_admin *a = t->data;
    uint64_t now = uv_now(a->loop);
    for (struct conn *c = a->conns, *next; c; c = next) {
        next = c->next;
        if (now >= c->deadline)
            conn_close(c, c->draining ? "linger over" : "request timeout");
    }
}

static void start_sweeper(struct kq_admin *a)
{
    unsigned ms = a->lim.request_ms < a->lim.linger_ms ? a->lim.request_ms : a->lim.linger_ms;
    ms /= 4;
    ms = ms < 10 ? 10 : ms > 1000 ? 1000 : ms;
    uv_timer_start(&a->sweeper, on_sweep, ms, ms);
}

void kq_admin_set_limits(struct kq_admin *a, const struct kq_admin_limits *l)
{
    a->lim = *l;
    http_parser_set_max_header_size((uint32_t)l->max_head);
    start_sweeper(a);
}

int kq_admin_set_token(struct kq_admin *a, const char *token)
{
    if (!a->loopback && (!token || !*token))
        return -EINVAL;
    char *copy = token && *token ? strdup(token) : NULL;
    if (token && *token && !copy)
        return -ENOMEM;
    free(a->token);
    a->token = copy;
    return 0;
}

int kq_admin_start(uv_loop_t *loop, const char *hostport, const char *token,
                   const struct kq_admin_handlers *h, void *ud, struct kq_admin **out,
                   char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    if (kq_net_parse_addr(hostport, &ss) != 0) {
        snprintf(err, errlen, "admin: cannot parse address \"%s\" (want host:port)", hostport);
        return -EINVAL;
    }
    struct kq_admin *a = calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    a->loopback = kq_addr_is_loopback(hostport);
    int rc = kq_admin_set_token(a, token);
    if (rc) {
        snprintf(err, errlen, "admin: %s listens beyond loopback: an admin token is required "
                 "for its mutating requests (set adminToken)", hostport);
        free(a);
        return rc;
    }
    a->loop = loop;
    a->h = *h;
    a->ud = ud;
    uv_tcp_init(loop, &a->listener);
    a->listener.data = a;
    rc = uv_tcp_bind(&a->listener, (struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&a->listener, 128, on_connection);
    if (rc < 0) {
        snprintf(err, errlen, "admin: cannot listen on %s: %s", hostport, uv_strerror(rc));
        uv_close((uv_handle_t *)&a->listener, NULL);
        uv_run(loop, UV_RUN_NOWAIT);
        free(a->token);
        free(a);
        return rc;
    }
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    uv_tcp_getsockname(&a->listener, (struct sockaddr *)&bound, &blen);
    a->port = ntohs(bound.ss_family == AF_INET ? ((struct sockaddr_in *)&bound)->sin_port
                                               : ((struct sockaddr_in6 *)&bound)->sin6_port);
    uv_timer_init(loop, &a->sweeper);
    a->sweeper.data = a;
    a->handles_open = 2;
    struct kq_admin_limits l;
    kq_admin_limits_default(&l);
    kq_admin_set_limits(a, &l);
    *out = a;
    return 0;
}

int kq_admin_port(const struct kq_admin *a) { return a->port; }
size_t kq_admin_conn_count(const struct kq_admin *a) { return a->n_conns; }

static void on_admin_handle_closed(uv_handle_t *h)
{
    struct kq_admin *a = h->data;
    a->handles_open--;
    maybe_done(a);
}

void kq_admin_stop(struct kq_admin *a, void (*done)(void *ud), void *ud)
{
    a->stopping = true;
    a->done = done;
    a->done_ud = ud;
    uv_close((uv_handle_t *)&a->listener, on_admin_handle_closed);
    uv_close((uv_handle_t *)&a->sweeper, on_admin_handle_closed);
    while (a->conns)
        conn_close(a->conns, "admin stopping");
}
