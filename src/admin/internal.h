/* Shared by admin.c (connections, parsing, framing) and route.c (targets, parameters, the
 * token, the handler calls). Loop thread only. */
#ifndef KQ_ADMIN_INTERNAL_H
#define KQ_ADMIN_INTERNAL_H
#include <stdbool.h>

#include <http_parser.h>

#include "admin/admin.h"

#define ADMIN_MOD "admin"
#define READ_CHUNK (16 * 1024)

struct conn;

struct kq_admin {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_timer_t sweeper;
    uv_idle_t resume_idle; /* runs the connections ready for their next request */
    struct kq_admin_handlers h;
    void *ud;
    struct kq_admin_limits lim;
    char *token;   /* mutating requests need it; NULL = none asked (loopback only) */
    bool loopback; /* listening on a loopback address */
    struct conn *conns;
    struct conn *ready; /* FIFO of connections to resume next iteration */
    size_t n_conns;     /* including connections whose handle is closing */
    int port;
    int handles_open;
    bool stopping;
    void (*done)(void *);
    void *done_ud;
    char rbuf[READ_CHUNK]; /* shared: each read is parsed, or its rest held, before the next */
};

/* One request on its way to an answer. */
struct kq_admin_req {
    struct conn *c;    /* NULL once the connection went away */
    bool head, keep;   /* HEAD (no body); keep the connection open after the answer */
    bool metrics;      /* a 2xx answer is Prometheus text, not JSON */
    const char *extra; /* one more header line (405: Allow) or NULL */
    bool returned;     /* the handler returned KQ_ADMIN_LATER */
    bool answered;     /* ... and kq_admin_req_done ran before it did */
    int status;
    struct kq_buf body;
};

/* A parsed request as routing sees it. */
struct admin_request {
    enum http_method method;
    const char *url; /* NUL-terminated */
    size_t ulen;
    const char *auth; /* Authorization value or "" (NUL-terminated) */
    bool auth_too_long;
};

/* Route rq and call its handler: an HTTP status with r->body filled (empty for an error it
 * did not explain: *msg then says why, or NULL), or KQ_ADMIN_LATER. Sets r->metrics and
 * r->extra. */
int kq_admin_route(struct kq_admin *a, const struct admin_request *rq, struct kq_admin_req *r,
                   const char **msg);
/* Serve a connected stream socket as if the listener had accepted it (the fuzzer feeds
 * requests through a socketpair: no port, no accept). The connection owns fd from now on,
 * also on error. 0 or -errno. Loop thread. */
int kq_admin_adopt(struct kq_admin *a, uv_os_sock_t fd);
#endif
