/* Admin HTTP server on the broker's loop: /stat, /binds, /metrics, /msg/<id>, /dlq, /groups,
 * /reload.
 * The server owns HTTP; the broker answers through these handlers, called on the loop
 * thread, never blocking. A handler appends a response body to `out` and returns an HTTP
 * status (200, 404, 400, 500...); the handlers that take a struct kq_admin_req may instead
 * return KQ_ADMIN_LATER and answer through kq_admin_req_done (a store that answers later).
 *
 * Cost: one request per connection is in progress at a time, and each connection gets at
 * most one request handled per loop iteration (the next pipelined one waits, unread input
 * stays in the socket); connections, header, body and response sizes are capped
 * (struct kq_admin_limits). A handler must bound its own work per call. */
#ifndef KQ_ADMIN_ADMIN_H
#define KQ_ADMIN_ADMIN_H
#include <stddef.h>
#include <uv.h>

#include "core/buf.h"

#define KQ_ADMIN_LATER 0            /* handler result: the answer comes via kq_admin_req_done */
#define KQ_ADMIN_DLQ_MAX_LIMIT 1000 /* /dlq?limit=N: 1..1000 */
#define KQ_ADMIN_DLQ_DEFAULT_LIMIT 100
#define KQ_ADMIN_CURSOR_MAX 64 /* /dlq?after=<cursor>: bytes, NUL included */

struct kq_admin_req; /* a request whose answer may come later */

struct kq_admin_handlers {
    int (*stat)(void *ud, struct kq_buf *out);    /* JSON */
    int (*binds)(void *ud, struct kq_buf *out);   /* JSON */
    int (*metrics)(void *ud, struct kq_buf *out); /* Prometheus text format */
    /* JSON state of one message */
    int (*msg)(void *ud, struct kq_admin_req *r, const char *id, struct kq_buf *out);
    /* dead letters: topic may be NULL (all); after = a page cursor ("" = from the start);
     * limit 1..KQ_ADMIN_DLQ_MAX_LIMIT */
    int (*dlq_list)(void *ud, struct kq_admin_req *r, const char *topic, const char *after,
                    size_t limit, struct kq_buf *out);
    /* id "*" = all; groups: comma-separated consumer groups to deliver to (NULL: the
     * groups each dead letter failed for) */
    int (*dlq_requeue)(void *ud, struct kq_admin_req *r, const char *id, const char *groups,
                       struct kq_buf *out);
    int (*dlq_purge)(void *ud, struct kq_admin_req *r, const char *topic, struct kq_buf *out);
    /* same as SIGHUP; the reload runs off the loop, so the answer may come later */
    int (*reload)(void *ud, struct kq_admin_req *r, struct kq_buf *out);
    /* backlog per (consumer group, topic), JSON */
    int (*groups)(void *ud, struct kq_buf *out);
    /* mark a group's copies of a topic's pending messages done (both names non-empty) */
    int (*groups_purge)(void *ud, struct kq_admin_req *r, const char *group, const char *topic,
                        struct kq_buf *out);
    /* one dead letter with its body and properties, JSON */
    int (*dlq_show)(void *ud, struct kq_admin_req *r, const char *id, struct kq_buf *out);
};

/* Answer a request whose handler returned (or is about to return) KQ_ADMIN_LATER: status
 * and body (taken over, left empty). Exactly once per such request, on the loop thread; r
 * is gone afterwards. When the client went away, or the server stopped, the answer is
 * dropped. */
void kq_admin_req_done(struct kq_admin_req *r, int status, struct kq_buf *body);

/* Robustness limits; kq_admin_start uses the defaults shown. */
struct kq_admin_limits {
    size_t max_head;     /* request line + headers, bytes (8192); over it: 431, close */
    size_t max_body;     /* request body, bytes (4096); over it: 413, close */
    unsigned request_ms; /* a request must be complete this long after the connection
                               * got ready for it (accept or previous response), and an
                               * answer that comes later this long after the request
                               * (10000); else the connection closes (late answer: 504) */
    unsigned linger_ms;  /* after the last response, drain input at most this long (2000) */
    size_t max_conns;    /* open connections; more are answered 503 and closed (16) */
    size_t max_response; /* response body, bytes (4 MiB); over it: 500 */
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
                   const struct kq_admin_handlers *h, void *ud, struct kq_admin **out, char *err,
                   size_t errlen);
/* Replace the token (reload); -EINVAL when it would leave a non-loopback admin without one
 * (the old token stays), -ENOMEM. Loop thread. */
int kq_admin_set_token(struct kq_admin *a, const char *token);
/* Replace the limits (tests shorten the timeouts); applies to requests that start later. */
void kq_admin_set_limits(struct kq_admin *a, const struct kq_admin_limits *l);
/* The port actually bound. */
int kq_admin_port(const struct kq_admin *a);
/* Open connections (including those draining before close). */
size_t kq_admin_conn_count(const struct kq_admin *a);
/* Stop listening and close every connection (answers still pending are dropped); `done`
 * (may be NULL) runs on the loop once all handles are closed, after which `a` has been
 * freed. */
void kq_admin_stop(struct kq_admin *a, void (*done)(void *ud), void *ud);
#endif
