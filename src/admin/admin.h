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

struct kq_admin;
int kq_admin_start(uv_loop_t *loop, const char *hostport, const struct kq_admin_handlers *h,
                   void *ud, struct kq_admin **out, char *err, size_t errlen);
int kq_admin_port(const struct kq_admin *a);
void kq_admin_stop(struct kq_admin *a, void (*done)(void *ud), void *ud);
#endif
