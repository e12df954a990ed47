/* Admin HTTP server on the broker's loop: /stat, /binds, /metrics, /msg/<id>, /dlq, /reload.
 * The server owns HTTP; the broker answers through these handlers (called on the loop
 * thread, never blocking): each appends a response body to `out` and returns an HTTP status
 * (200, 404, 400, 500...). */
#ifndef KQ_ADMIN_ADMIN_H
#define KQ_ADMIN_ADMIN_H
#include <stddef.h>
#include <uv.h>

#include "core/buf.h"

struct kq_admin_handlers {
    int (*stat)(void *ud, struct kq_buf *out);    /* JSON */
    int (*binds)(void *ud, struct kq_buf *out);   /* JSON */
    int (*metrics)(void *ud, struct kq_buf *out); /* Prometheus text format */
    int (*msg)(void *ud, const char *id, struct kq_buf *out); /* JSON state of one message */
    /* dead letters: topic may be NULL (all); limit for list */
    int (*dlq_list)(void *ud, const char *topic, size_t limit, struct kq_buf *out);
    int (*dlq_requeue)(void *ud, const char *id, struct kq_buf *out); /* id "*" = all */
    int (*dlq_purge)(void *ud, const char *topic, struct kq_buf *out);
    int (*reload)(void *ud, struct kq_buf *out); /* same as SIGHUP */
};

/* Robustness limits; kq_admin_start uses the defaults shown. */
struct kq_admin_limits {
    size_t max_head;          /* request line + headers, bytes (8192); over it: 431, close */
    size_t max_body;          /* request body, bytes (4096); over it: 413, close */
    unsigned request_ms;      /* a request must be complete this long after the connection
                               * got ready for it (accept or previous response) (10000) */
    unsigned linger_ms;       /* after the last response, drain input at most this long (2000) */
    size_t max_conns;         /* open connections; more are answered 503 and closed (256) */
};
void kq_admin_limits_default(struct kq_admin_limits *l);

struct kq_admin;
/* Listen on "host:port" (port 0 = any; see kq_admin_port). The handlers are copied; any may
 * be NULL (its routes answer 501). token (copied; NULL or "" = none): when set, every
 * mutating (POST) request must carry "Authorization: Bearer <token>" (401 without, 403 with
 * another); required (-EINVAL) when hostport is not a loopback address. Returns 0 or -errno
 * with a reason in err. http_parser's header limit is process-wide: this sets it to
 * limits.max_head. Loop thread. */
int kq_admin_start(uv_loop_t *loop, const char *hostport, const char *token,
                   const struct kq_admin_handlers *h, void *ud, struct kq_admin **out,
                   char *err, size_t errlen);
/* Replace the token (reload); -EINVAL when it would leave a non-loopback admin without one
 * (the old token stays), -ENOMEM. Loop thread. */
int kq_admin_set_token(struct kq_admin *a, const char *token);
/* Replace the limits (tests shorten the timeouts); applies to requests that start later. */
void kq_admin_set_limits(struct kq_admin *a, const struct kq_admin_limits *l);
/* The port actually bound. */
int kq_admin_port(const struct kq_admin *a);
/* Open connections (including those draining before close). */
size_t kq_admin_conn_count(const struct kq_admin *a);
/* Stop listening and close every connection; `done` (may be NULL) runs on the loop once all
 * handles are closed, after which `a` has been freed. */
void kq_admin_stop(struct kq_admin *a, void (*done)(void *ud), void *ud);
#endif
