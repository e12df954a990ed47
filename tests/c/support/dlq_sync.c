#include "support/dlq_sync.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/clock.h"

struct wait {
    bool done;
    int status;
    size_t n;
    char next[KQ_DLQ_CURSOR_LEN];
    kq_store_dlq_cb cb;
    void *ud;
};

static void on_wake(uv_timer_t *t) { (void)t; }

static void run_until_done(struct kq_store *s, struct wait *w)
{
    uv_timer_t t;
    uv_timer_init(s->loop, &t);
    uv_timer_start(&t, on_wake, 5, 5);
    uint64_t end = kq_mono_us() + 10000000;
    while (!w->done && kq_mono_us() < end)
        uv_run(s->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(s->loop, UV_RUN_NOWAIT);
    if (!w->done)
        fail_msg("a dead-letter operation did not complete within 10 s");
}

static bool on_item(void *ud, const struct kq_dead_letter *d)
{
    struct wait *w = ud;
    w->n++;
    if (w->cb)
        w->cb(w->ud, d);
    return true;
}

static void on_page(void *ud, int status, const char *next)
{
    struct wait *w = ud;
    w->done = true;
    w->status = status;
    snprintf(w->next, sizeof w->next, "%s", next);
}

size_t dlq_walk(struct kq_store *s, const char *topic, size_t page, bool first_only,
                kq_store_dlq_cb cb, void *ud)
{
    char after[KQ_DLQ_CURSOR_LEN] = "";
    size_t pages = 0;
    do {
        struct wait w = {.cb = cb, .ud = ud};
        int rc = s->ops->dlq_page(s, topic, after, page, on_item, on_page, &w);
        assert_int_equal(rc, 0);
        run_until_done(s, &w);
        assert_int_equal(w.status, 0);
        assert_true(w.n <= page);
        pages++;
        snprintf(after, sizeof after, "%s", w.next);
        assert_true(pages < 100000);
    } while (after[0] && !first_only);
    return pages;
}

static void on_one(void *ud, int status, const struct kq_dead_letter *d)
{
    struct wait *w = ud;
    w->done = true;
    w->status = status;
    if (status == 0 && w->cb)
        w->cb(w->ud, d);
}

static int one(struct kq_store *s, const char *id, bool take, kq_store_dlq_cb cb, void *ud)
{
    struct wait w = {.cb = cb, .ud = ud};
    int rc = (take ? s->ops->dlq_take : s->ops->dlq_get)(s, id, on_one, &w);
    if (rc < 0)
        return rc;
    run_until_done(s, &w);
    return w.status;
}

int dlq_get_sync(struct kq_store *s, const char *id, kq_store_dlq_cb cb, void *ud)
{
    return one(s, id, false, cb, ud);
}

int dlq_take_sync(struct kq_store *s, const char *id, kq_store_dlq_cb cb, void *ud)
{
    return one(s, id, true, cb, ud);
}

static void on_purged(void *ud, int status, size_t purged)
{
    struct wait *w = ud;
    w->done = true;
    w->status = status;
    w->n = purged;
}

int dlq_purge_sync(struct kq_store *s, const char *topic, size_t *purged)
{
    struct wait w = {0};
    int rc = s->ops->dlq_purge(s, topic, on_purged, &w);
    if (rc < 0)
        return rc;
    run_until_done(s, &w);
    if (purged)
        *purged = w.n;
    return w.status;
}

struct count {
    const char *topic;
    int64_t n;
};

static void on_count(void *ud, const char *topic, const char *group, uint64_t n)
{
    struct count *c = ud;
    if (!c->topic || strcmp(c->topic, topic) == 0)
        c->n += (int64_t)n;
}

int64_t dlq_counted(struct kq_store *s, const char *topic)
{
    struct count c = {topic, 0};
    return s->ops->dlq_counts(s, false, on_count, &c) ? -1 : c.n;
}
