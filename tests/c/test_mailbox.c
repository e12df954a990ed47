/* core/mailbox: items from other threads reach the loop in posting order, a burst costs one
 * wake-up, many producers lose nothing, and a close delivers what is queued and refuses the
 * rest (also when the close comes from a deliver callback). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>
#include <errno.h>
#include <pthread.h>

#include "core/clock.h"
#include "core/mailbox.h"

#define PRODUCERS 4
#define PER_PRODUCER 20000
#define DEADLINE_US (60ull * 1000000)

struct item {
    struct kq_mail mail;
    int producer, seq;
};

#define ITEM_OF(m) ((struct item *)((char *)(m)-offsetof(struct item, mail)))

struct sink {
    struct kq_mailbox mb;
    size_t n;
    int last_seq[PRODUCERS];
    bool in_order;
    int close_at;         /* close the mailbox when the item with this seq arrives (-1: never) */
    int post_after_close; /* what a post right after that close returned */
    bool closed;
};

static int post(struct kq_mailbox *mb, int producer, int seq);

static void on_item(void *ud, struct kq_mail *m)
{
    struct sink *s = ud;
    struct item *it = ITEM_OF(m);
    if (it->seq != s->last_seq[it->producer] + 1)
        s->in_order = false;
    s->last_seq[it->producer] = it->seq;
    s->n++;
    if (it->seq == s->close_at) {
        kq_mailbox_close(&s->mb, NULL);
        s->post_after_close = post(&s->mb, 0, 1000);
    }
    free(it);
}

static void on_closed(void *ud) { ((struct sink *)ud)->closed = true; }

static void sink_init(struct sink *s, uv_loop_t *loop)
{
    *s = (struct sink){.in_order = true, .close_at = -1};
    for (int i = 0; i < PRODUCERS; i++)
        s->last_seq[i] = -1;
    assert_int_equal(kq_mailbox_init(&s->mb, loop, on_item, s), 0);
}

static int post(struct kq_mailbox *mb, int producer, int seq)
{
    struct item *it = malloc(sizeof *it);
    assert_non_null(it);
    it->producer = producer;
    it->seq = seq;
    int rc = kq_mailbox_post(mb, &it->mail);
    if (rc)
        free(it);
    return rc;
}

struct producer {
    struct kq_mailbox *mb;
    int id, count;
};

static void *produce(void *arg)
{
    struct producer *p = arg;
    for (int i = 0; i < p->count; i++)
        if (post(p->mb, p->id, i) != 0)
            return (void *)1;
    return NULL;
}

static void close_and_finish(uv_loop_t *loop, struct sink *s)
{
    if (!s->closed && !uv_is_closing((uv_handle_t *)&s->mb.poll))
        kq_mailbox_close(&s->mb, on_closed);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

/* A burst posted from another thread before the loop runs: one wake-up, and one loop turn
 * delivers all of it in order. */
static void test_burst_one_wakeup_in_order(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct sink s;
    sink_init(&s, &loop);
    struct producer p = {&s.mb, 0, 1000};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, produce, &p), 0);
    void *failed;
    pthread_join(th, &failed);
    assert_null(failed);
    assert_int_equal(kq_mailbox_wakeups(&s.mb), 1);
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(s.n, 1000);
    assert_true(s.in_order);
    /* the next post after the list was emptied wakes the loop again */
    assert_int_equal(post(&s.mb, 0, 1000), 0);
    assert_int_equal(kq_mailbox_wakeups(&s.mb), 2);
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(s.n, 1001);
    close_and_finish(&loop, &s);
}

/* Producers post while the loop drains: every item arrives once, each producer's in its
 * order, and wake-ups never outnumber the posts. */
static void test_many_producers(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct sink s;
    sink_init(&s, &loop);
    struct producer p[PRODUCERS];
    pthread_t th[PRODUCERS];
    for (int i = 0; i < PRODUCERS; i++) {
        p[i] = (struct producer){&s.mb, i, PER_PRODUCER};
        assert_int_equal(pthread_create(&th[i], NULL, produce, &p[i]), 0);
    }
    uint64_t until = kq_mono_us() + DEADLINE_US;
    while (s.n < (size_t)PRODUCERS * PER_PRODUCER && kq_mono_us() < until)
        uv_run(&loop, UV_RUN_ONCE); /* (the poll handle keeps it waiting for posts) */
    for (int i = 0; i < PRODUCERS; i++) {
        void *failed;
        pthread_join(th[i], &failed);
        assert_null(failed);
    }
    assert_int_equal(s.n, (size_t)PRODUCERS * PER_PRODUCER);
    assert_true(s.in_order);
    for (int i = 0; i < PRODUCERS; i++)
        assert_int_equal(s.last_seq[i], PER_PRODUCER - 1);
    uint64_t wakeups = kq_mailbox_wakeups(&s.mb);
    assert_true(wakeups >= 1 && wakeups <= (uint64_t)PRODUCERS * PER_PRODUCER);
    close_and_finish(&loop, &s);
}

/* What is queued at the close is delivered before kq_mailbox_close returns; later posts are
 * refused (the poster keeps its item); on_closed runs once the handle is closed. */
static void test_close_delivers_queued_refuses_later(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct sink s;
    sink_init(&s, &loop);
    for (int i = 0; i < 3; i++)
        assert_int_equal(post(&s.mb, 0, i), 0);
    kq_mailbox_close(&s.mb, on_closed);
    assert_int_equal(s.n, 3);
    assert_true(s.in_order);
    assert_int_equal(post(&s.mb, 0, 3), -EPIPE);
    assert_false(s.closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_true(s.closed);
    assert_int_equal(s.n, 3);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* A deliver callback that closes the mailbox (the ZooKeeper registry's "stopped" event): the
 * items after it in the same batch still come, in order, and nothing more is accepted. */
static void test_close_from_deliver(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct sink s;
    sink_init(&s, &loop);
    s.close_at = 1;
    for (int i = 0; i < 4; i++)
        assert_int_equal(post(&s.mb, 0, i), 0);
    uv_run(&loop, UV_RUN_DEFAULT); /* returns: the close took the only handle */
    assert_int_equal(s.n, 4);
    assert_true(s.in_order);
    assert_int_equal(s.post_after_close, -EPIPE);
    assert_int_equal(uv_loop_close(&loop), 0);
}

struct later {
    struct kq_mailbox *mb;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool go;
};

static void *post_when_told(void *arg)
{
    struct later *l = arg;
    pthread_mutex_lock(&l->mu);
    while (!l->go)
        pthread_cond_wait(&l->cv, &l->mu);
    pthread_mutex_unlock(&l->mu);
    return (void *)(intptr_t)post(l->mb, 0, 0);
}

/* A shutdown path's drain without the loop: nothing queued and no wait gives 0 at once; a
 * drain that waits gets an item posted meanwhile. */
static void test_drain_waits_for_a_post(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct sink s;
    sink_init(&s, &loop);
    assert_int_equal(kq_mailbox_drain(&s.mb, 0), 0);
    assert_int_equal(kq_mailbox_drain(&s.mb, 1), 0);
    struct later l = {.mb = &s.mb};
    pthread_mutex_init(&l.mu, NULL);
    pthread_cond_init(&l.cv, NULL);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, post_when_told, &l), 0);
    pthread_mutex_lock(&l.mu);
    l.go = true;
    pthread_cond_signal(&l.cv);
    pthread_mutex_unlock(&l.mu);
    size_t n = 0;
    uint64_t until = kq_mono_us() + DEADLINE_US;
    while (n == 0 && kq_mono_us() < until)
        n = kq_mailbox_drain(&s.mb, 10000);
    void *rc;
    pthread_join(th, &rc);
    assert_null(rc);
    assert_int_equal(n, 1);
    assert_int_equal(s.n, 1);
    pthread_mutex_destroy(&l.mu);
    pthread_cond_destroy(&l.cv);
    close_and_finish(&loop, &s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_one_wakeup_in_order),
        cmocka_unit_test(test_many_producers),
        cmocka_unit_test(test_close_delivers_queued_refuses_later),
        cmocka_unit_test(test_close_from_deliver),
        cmocka_unit_test(test_drain_waits_for_a_post),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
