/* Admin HTTP/1.1 server: node's http_parser does the parsing; this file owns connections,
 * limits, the request lifecycle and the response framing (routing: route.c). Everything
 * runs on the loop thread.
 *
 * A connection handles one request at a time: the parser pauses after each complete
 * request, the rest of the input waits (held, then unread in the socket), and once the
 * answer is queued the connection resumes on the next loop iteration. So answers leave in
 * order, a pipelining client gets at most one request per iteration, and a handler that
 * answers later (kq_admin_req_done) holds up only its own connection. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "admin/internal.h"
#include "core/addr.h"
#include "core/log.h"
#include "net/net.h"

#define MAX_UNSENT (1024 * 1024) /* do not take the next request while this much is unsent */
#define MAX_DRAIN (64 * 1024)    /* input discarded after the last response before giving up */
#define MAX_AUTH 300             /* an Authorization value we keep (longer ones are wrong) */

struct conn {
    uv_tcp_t tcp;
    uv_shutdown_t shut;
    struct kq_admin *a;
    http_parser hp;
    struct kq_buf url;
    size_t body_len;
    char hname[16]; /* the header name being read: enough for "Host", "Authorization" */
    size_t hname_len;
    bool in_value; /* last header callback was a value */
    bool has_host;
    bool in_auth;        /* the value being read is Authorization's */
    char auth[MAX_AUTH]; /* its value (NUL-terminated); auth_len > MAX_AUTH - 1 = too long */
    size_t auth_len;
    int fail;          /* status to answer when a callback stopped the parser */
    uint64_t deadline; /* loop ms: the request (or the drain) must be done by then */
    size_t unsent;     /* bytes handed to uv_write and not yet written */
    size_t drained;
    struct kq_buf held;       /* input after the request being answered */
    size_t held_off;          /* of which this much is parsed */
    struct kq_admin_req *req; /* the request waiting for its handler's answer */
    bool reading;
    bool paused;   /* the parser stopped after a request: resume to go on */
    bool blocked;  /* resume waits for the client to read its answers */
    bool queued;   /* in a->ready */
    bool draining; /* last response queued: discard input until EOF */
    bool closed;
    struct conn *prev, *next;
    struct conn *ready_next;
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
                                  .max_conns = 16,
                                  .max_response = 4u << 20};
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
    kq_buf_free(&c->held);
    free(c);
    a->n_conns--;
    maybe_done(a);
}

static void unqueue(struct conn *c)
{
    if (!c->queued)
        return;
    c->queued = false;
    for (struct conn **p = &c->a->ready; *p; p = &(*p)->ready_next)
        if (*p == c) {
            *p = c->ready_next;
            break;
        }
}

/* Close now; pending writes are cancelled (their callbacks run before on_conn_closed). A
 * request still waiting for its answer is orphaned: the answer will be dropped. */
static void conn_close(struct conn *c, const char *why)
{
    if (c->closed)
        return;
    c->closed = true;
    struct kq_admin *a = c->a;
    if (c->req) {
        c->req->c = NULL;
        c->req = NULL;
    }
    unqueue(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        a->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    KQ_DEBUG(ADMIN_MOD, "closing connection reason=\"%s\"", why);
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

/* Out of memory for a connection's own bookkeeping: it cannot be served; say so (a closed
 * connection alone looks like a network fault to the operator). */
static void close_for_memory(struct conn *c, const char *doing)
{
    KQ_LOG_RATELIMITED(KQ_LOG_ERROR, ADMIN_MOD, "out of memory %s: connection closed", doing);
    conn_close(c, "out of memory");
}

/* --- writing ------------------------------------------------------------------------------ */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void schedule_resume(struct conn *c);
static void on_resume(uv_idle_t *h);

static void set_reading(struct conn *c, bool on)
{
    if (c->closed || c->reading == on)
        return;
    c->reading = on;
    if (!on) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        return;
    }
    int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc < 0) { /* a connection never read would wait for its deadline: close it now */
        c->reading = false;
        KQ_LOG_RATELIMITED(KQ_LOG_ERROR, ADMIN_MOD, "cannot read from a connection: %s",
                           uv_strerror(rc));
        conn_close(c, uv_strerror(rc));
    }
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
    if (status < 0) {
        conn_close(c, uv_strerror(status));
    } else if (c->blocked && c->unsent < MAX_UNSENT / 2) {
        c->blocked = false;
        schedule_resume(c);
    }
}

/* Queue b (taken over, left empty) for writing. */
static void send_buf(struct conn *c, struct kq_buf *b)
{
    struct wreq *w = calloc(1, sizeof *w);
    if (!w) {
        kq_buf_free(b);
        close_for_memory(c, "queueing an answer");
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
    unqueue(c);
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

/* Frame and queue one response (body: len bytes). `extra` adds one header line ("Allow:
 * POST" for a 405); close adds "Connection: close" and ends the connection after it. */
static void respond(struct conn *c, int status, const char *ctype, const void *body, size_t len,
                    bool head_only, const char *extra, bool close)
{
    struct kq_buf out = {0};
    char hdr[512];
    int n = snprintf(hdr, sizeof hdr,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n%s%s%s\r\n",
                     status, reason(status), ctype, len, extra ? extra : "", extra ? "\r\n" : "",
                     close ? "Connection: close\r\n" : "");
    if (kq_buf_append(&out, hdr, (size_t)n) || (!head_only && kq_buf_append(&out, body, len))) {
        kq_buf_free(&out);
        close_for_memory(c, "framing an answer");
        return;
    }
    send_buf(c, &out);
    if (close)
        start_drain(c);
}

#define ERROR_BODY_MAX 256

/* The JSON body of an error answer, written into tmp (ERROR_BODY_MAX bytes: no allocation
 * that could fail and leave the answer without its reason); its length. */
static size_t error_body(char *tmp, int status, const char *msg)
{
    int n = snprintf(tmp, ERROR_BODY_MAX, "{\"error\":\"%s\",\"status\":%d}", msg, status);
    return n < 0 ? 0 : (size_t)n < ERROR_BODY_MAX ? (size_t)n : ERROR_BODY_MAX - 1;
}

static void respond_error(struct conn *c, int status, const char *msg, bool head_only,
                          const char *extra, bool close)
{
    char tmp[ERROR_BODY_MAX];
    size_t n = error_body(tmp, status, msg);
    respond(c, status, "application/json", tmp, n, head_only, extra, close);
}

/* --- the request lifecycle ---------------------------------------------------------------- */

/* Frame r's answer on its connection and free r. msg explains an error status whose body
 * the handler left empty. */
static void answer(struct conn *c, struct kq_admin_req *r, int status, const char *msg)
{
    struct kq_admin *a = c->a;
    if (r->body.failed) { /* an append ran out of memory: the text may lack a piece (or all) */
        KQ_LOG_RATELIMITED(KQ_LOG_ERROR, ADMIN_MOD,
                           "out of memory building an answer (status %d): answered 500 "
                           "instead of an incomplete one",
                           status);
        status = 500;
        r->body.len = 0;
        msg = "out of memory";
    }
    if (status < 100 || status > 599) {
        KQ_WARN(ADMIN_MOD, "handler returned status %d", status);
        status = 500;
        r->body.len = 0;
        msg = NULL;
    }
    if (r->body.len > a->lim.max_response) {
        KQ_LOG_RATELIMITED(KQ_LOG_ERROR, ADMIN_MOD, "response of %zu bytes over the limit of %zu",
                           r->body.len, a->lim.max_response);
        status = 500;
        r->body.len = 0;
        msg = "response too large";
    }
    const char *ctype = r->metrics && status < 300 ? "text/plain; version=0.0.4; charset=utf-8"
                                                   : "application/json";
    const void *body = r->body.data;
    size_t len = r->body.len;
    char tmp[ERROR_BODY_MAX];
    if (status >= 400 && len == 0) {
        len = error_body(tmp, status,
                         msg             ? msg
                         : status == 501 ? "not implemented"
                                         : reason(status));
        body = tmp;
    }
    respond(c, status, ctype, body, len, r->head,
            status == 401 ? "WWW-Authenticate: Bearer" : r->extra, !r->keep);
    kq_buf_free(&r->body);
    free(r);
    c->deadline = uv_now(a->loop) + a->lim.request_ms; /* for the next request */
}

/* One complete request: route it; answer it now, or wait for kq_admin_req_done. */
static void dispatch(struct conn *c)
{
    struct kq_admin_req *r = calloc(1, sizeof *r);
    if (!r) {
        close_for_memory(c, "taking a request");
        return;
    }
    r->c = c;
    r->keep = http_should_keep_alive(&c->hp) && !c->hp.upgrade;
    r->head = c->hp.method == HTTP_HEAD;
    const char *msg = NULL;
    int status;
    if (c->hp.http_major == 1 && c->hp.http_minor >= 1 && !c->has_host) {
        status = 400;
        msg = "missing Host header";
        r->keep = false;
    } else {
        struct admin_request rq = {.method = c->hp.method,
                                   .url = (const char *)c->url.data,
                                   .ulen = c->url.len,
                                   .auth = c->auth,
                                   .auth_too_long = c->auth_len >= MAX_AUTH};
        status = kq_admin_route(c->a, &rq, r, &msg);
    }
    if (status == KQ_ADMIN_LATER) {
        r->returned = true;
        if (!r->answered) {
            c->req = r;
            c->deadline = uv_now(c->a->loop) + c->a->lim.request_ms; /* to answer it */
            return;
        }
        status = r->status; /* answered before its handler returned */
        msg = NULL;
    }
    answer(c, r, status, msg);
}

void kq_admin_req_done(struct kq_admin_req *r, int status, struct kq_buf *body)
{
    if (!r->returned) { /* still inside the handler: dispatch answers it */
        kq_buf_free(&r->body);
        r->body = *body;
        *body = (struct kq_buf){0};
        r->status = status;
        r->answered = true;
        return;
    }
    struct conn *c = r->c;
    if (!c) { /* the client went away, or the server stopped */
        kq_buf_free(body);
        kq_buf_free(&r->body);
        free(r);
        return;
    }
    c->req = NULL;
    kq_buf_free(&r->body);
    r->body = *body;
    *body = (struct kq_buf){0};
    answer(c, r, status, NULL);
    if (!c->closed && !c->draining)
        schedule_resume(c);
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
        c->hname[0] = 0; /* too long to be one of ours */
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
    http_parser_pause(p, 1); /* one request at a time: the rest waits (feed, resume) */
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

/* Parse input (from the socket, or held input when from_held) up to the end of one
 * request; what follows it is kept in c->held for the next loop iteration. */
static void feed(struct conn *c, const char *data, size_t len, bool from_held)
{
    size_t n = http_parser_execute(&c->hp, &settings, data, len);
    if (c->closed || c->draining)
        return;
    enum http_errno e = HTTP_PARSER_ERRNO(&c->hp);
    if (e == HPE_PAUSED) {
        c->paused = true;
        set_reading(c, false);
        if (from_held) {
            c->held_off += n;
        } else if (n < len && kq_buf_append(&c->held, data + n, len - n)) {
            close_for_memory(c, "keeping pipelined input");
            return;
        }
        if (!c->req) /* answered already */
            schedule_resume(c);
        return;
    }
    if (e != HPE_OK) {
        int status = c->fail ? c->fail : e == HPE_HEADER_OVERFLOW ? 431 : 400;
        const char *msg = status == 413   ? "request body too large"
                          : status == 431 ? "request header fields too large"
                          : status == 505 ? "HTTP version not supported"
                          : status == 400 ? http_errno_description(e)
                                          : "out of memory"; /* 500: the URL did not fit */
        if (status == 500)
            KQ_LOG_RATELIMITED(KQ_LOG_ERROR, ADMIN_MOD,
                               "out of memory reading a request: answered 500");
        KQ_DEBUG(ADMIN_MOD, "bad request: %s", http_errno_name(e));
        respond_error(c, status, status == 400 ? "bad request" : msg, false, NULL, true);
        return;
    }
    c->held.len = c->held_off = 0; /* all parsed, no request complete yet: read on */
    set_reading(c, true);
}

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
    feed(c, buf->base, (size_t)nread, false);
}

/* --- resuming: the next request of a connection, one per loop iteration ------------------- */

static void schedule_resume(struct conn *c)
{
    struct kq_admin *a = c->a;
    if (c->queued || c->closed || c->draining || a->stopping)
        return;
    c->queued = true;
    c->ready_next = NULL;
    struct conn **p = &a->ready;
    while (*p)
        p = &(*p)->ready_next;
    *p = c;
    uv_idle_start(&a->resume_idle, on_resume);
}

static void resume(struct conn *c)
{
    if (c->unsent > MAX_UNSENT) { /* a pipelining client that does not read its answers */
        c->blocked = true;
        return;
    }
    c->paused = false;
    http_parser_pause(&c->hp, 0);
    if (c->held_off < c->held.len)
        feed(c, (const char *)c->held.data + c->held_off, c->held.len - c->held_off, true);
    else {
        c->held.len = c->held_off = 0;
        set_reading(c, true);
    }
}

static void on_resume(uv_idle_t *h)
{
    struct kq_admin *a = h->data;
    struct conn *list = a->ready; /* those queued meanwhile wait for the next iteration */
    a->ready = NULL;
    while (list) {
        struct conn *c = list;
        list = c->ready_next;
        c->queued = false;
        resume(c);
    }
    if (!a->ready)
        uv_idle_stop(&a->resume_idle);
}

/* --- listener, timer ---------------------------------------------------------------------- */

/* A new connection in the list, its handle initialised (not yet accepted or opened). */
static struct conn *conn_new(struct kq_admin *a)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    uv_tcp_init(a->loop, &c->tcp);
    c->tcp.data = c;
    c->a = a;
    c->next = a->conns;
    if (a->conns)
        a->conns->prev = c;
    a->conns = c;
    a->n_conns++;
    return c;
}

/* The connection's socket is open: refuse it when over the limit, else wait for a request. */
static void conn_start(struct conn *c)
{
    struct kq_admin *a = c->a;
    if (a->n_conns > a->lim.max_conns) {
        /* Best effort: a fresh socket takes a short answer without blocking. */
        static const char busy[] =
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: "
            "application/json\r\nContent-Length: 45\r\nConnection: "
            "close\r\n\r\n{\"error\":\"too many connections\",\"status\":503}";
        uv_buf_t b = uv_buf_init((char *)busy, sizeof busy - 1);
        uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        KQ_LOG_RATELIMITED(KQ_LOG_WARN, ADMIN_MOD, "connection refused: %zu open", a->n_conns - 1);
        conn_close(c, "too many connections");
        return;
    }
    http_parser_init(&c->hp, HTTP_REQUEST);
    c->hp.data = c;
    c->deadline = uv_now(a->loop) + a->lim.request_ms;
    set_reading(c, true);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct kq_admin *a = server->data;
    if (a->stopping)
        return;
    if (status < 0) {
        KQ_LOG_RATELIMITED(KQ_LOG_WARN, ADMIN_MOD, "accept failed: %s", uv_strerror(status));
        return;
    }
    struct conn *c = conn_new(a);
    if (!c) { /* left in the listen queue: libuv stops accepting until one is accepted */
        KQ_LOG_RATELIMITED(KQ_LOG_ERROR, ADMIN_MOD, "out of memory accepting a connection");
        return;
    }
    int rc = uv_accept(server, (uv_stream_t *)&c->tcp);
    if (rc != 0) {
        KQ_LOG_RATELIMITED(KQ_LOG_WARN, ADMIN_MOD, "accept failed: %s", uv_strerror(rc));
        conn_close(c, "accept failed");
        return;
    }
    conn_start(c);
}

int kq_admin_adopt(struct kq_admin *a, uv_os_sock_t fd)
{
    if (a->stopping)
        return -ESHUTDOWN;
    struct conn *c = conn_new(a);
    if (!c)
        return -ENOMEM;
    int rc = uv_tcp_open(&c->tcp, fd);
    if (rc != 0) {
        close(fd); /* the handle did not take it */
        conn_close(c, "cannot open the socket");
        return rc;
    }
    conn_start(c);
    return 0;
}

static void on_sweep(uv_timer_t *t)
{
    struct kq_admin *a = t->data;
    uint64_t now = uv_now(a->loop);
    for (struct conn *c = a->conns, *next; c; c = next) {
        next = c->next;
        if (now < c->deadline)
            continue;
        if (c->req) { /* the handler's answer is late: say so, drop it when it comes */
            bool head = c->req->head;
            c->req->c = NULL;
            c->req = NULL;
            KQ_LOG_RATELIMITED(KQ_LOG_WARN, ADMIN_MOD, "no answer within %u ms: 504",
                               a->lim.request_ms);
            respond_error(c, 504, "no answer in time (the store did not answer)", head, NULL, true);
        } else {
            conn_close(c, c->draining ? "linger over" : "request timeout");
        }
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
                   const struct kq_admin_handlers *h, void *ud, struct kq_admin **out, char *err,
                   size_t errlen)
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
        snprintf(err, errlen,
                 "admin: %s listens beyond loopback: an admin token is required "
                 "for its mutating requests (set adminToken)",
                 hostport);
        free(a);
        return rc;
    }
    a->loop = loop;
    a->h = *h;
    a->ud = ud;
    uv_tcp_init(loop, &a->listener);
    a->listener.data = a;
    const char *doing = "listen on";
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    rc = uv_tcp_bind(&a->listener, (struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&a->listener, 128, on_connection);
    if (rc == 0) { /* the port (port 0 asks for any) is what the log and kiteq-cli need */
        doing = "read the port bound for";
        rc = uv_tcp_getsockname(&a->listener, (struct sockaddr *)&bound, &blen);
    }
    if (rc < 0) {
        snprintf(err, errlen, "admin: cannot %s %s: %s", doing, hostport, uv_strerror(rc));
        uv_close((uv_handle_t *)&a->listener, NULL);
        uv_run(loop, UV_RUN_NOWAIT);
        free(a->token);
        free(a);
        return rc;
    }
    a->port = ntohs(bound.ss_family == AF_INET ? ((struct sockaddr_in *)&bound)->sin_port
                                               : ((struct sockaddr_in6 *)&bound)->sin6_port);
    uv_timer_init(loop, &a->sweeper);
    a->sweeper.data = a;
    uv_idle_init(loop, &a->resume_idle);
    a->resume_idle.data = a;
    a->handles_open = 3;
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
    uv_close((uv_handle_t *)&a->resume_idle, on_admin_handle_closed);
    while (a->conns)
        conn_close(a->conns, "admin stopping");
}
