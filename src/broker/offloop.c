#include "broker/offloop.h"

#include <errno.h>
#include <stdlib.h>

#include "core/clock.h"

struct kq_offloop {
    uv_work_t req;
    uv_timer_t deadline;
    struct kq_offloop_ops ops;
    void *ud;
    atomic_bool abandoned;
    bool answered; /* done was called */
    int refs;      /* the work request and the timer handle */
    uint64_t started_us;
};

static void release(struct kq_offloop *o)
{
    if (--o->refs == 0)
        free(o);
}

static void on_timer_closed(uv_handle_t *h) { release(h->data); }

static void answer(struct kq_offloop *o, bool abandoned)
{
    o->answered = true;
    uv_close((uv_handle_t *)&o->deadline, on_timer_closed);
    o->ops.done(o->ud, abandoned);
}

static void on_work(uv_work_t *req)
{
    struct kq_offloop *o = req->data;
    o->ops.work(o->ud, &o->abandoned);
}

static void on_after_work(uv_work_t *req, int status)
{
    (void)status; /* never cancelled: nobody calls uv_cancel */
    struct kq_offloop *o = req->data;
    if (!o->answered)
        answer(o, false);
    else
        o->ops.drop(o->ud, (kq_mono_us() - o->started_us) / 1000);
    release(o);
}

static void on_deadline(uv_timer_t *t) { kq_offloop_abandon(t->data); }

void kq_offloop_abandon(struct kq_offloop *o)
{
    if (o->answered)
        return;
    atomic_store(&o->abandoned, true);
    answer(o, true);
}

int kq_offloop_start(uv_loop_t *loop, const struct kq_offloop_ops *ops, void *ud,
                     unsigned deadline_ms, struct kq_offloop **out)
{
    struct kq_offloop *o = calloc(1, sizeof *o);
    if (!o)
        return -ENOMEM;
    o->ops = *ops;
    o->ud = ud;
    o->req.data = o;
    o->deadline.data = o;
    atomic_init(&o->abandoned, false);
    o->started_us = kq_mono_us();
    uv_timer_init(loop, &o->deadline);
    o->refs = 2;
    int rc = uv_queue_work(loop, &o->req, on_work, on_after_work);
    if (rc) {
        o->refs = 1;
        uv_close((uv_handle_t *)&o->deadline, on_timer_closed);
        return rc;
    }
    uv_timer_start(&o->deadline, on_deadline, deadline_ms, 0);
    *out = o;
    return 0;
}
