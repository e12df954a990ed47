/* broker/offloop: work on libuv's threadpool with a deadline. The loop hears back once:
 * done(false) when the work returned in time; done(true) at the deadline (or on
 * kq_offloop_abandon) while the work still runs - the loop keeps turning meanwhile - and
 * drop once that work returned. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>
#include <uv.h>

#include "broker/offloop.h"
#include "core/clock.h"

struct job {
    unsigned work_ms;     /* how long the work runs at most */
    bool honour_flag;     /* returns early once abandoned */
    atomic_bool returned; /* the work has returned */
    int done_calls, drop_calls;
    bool abandoned;
    uint64_t started_us, done_us, drop_us;
    bool returned_at_done; /* the work had returned when done was called */
};

static void work(void *ud, const atomic_bool *abandoned)
{
    struct job *j = ud;
    uint64_t end = kq_mono_us() + j->work_ms * 1000ULL;
    while (kq_mono_us() < end && !(j->honour_flag && atomic_load(abandoned)))
        usleep(1000);
    atomic_store(&j->returned, true);
}

static void done(void *ud, bool abandoned)
{
    struct job *j = ud;
    j->done_calls++;
    j->abandoned = abandoned;
    j->done_us = kq_mono_us();
    j->returned_at_done = atomic_load(&j->returned);
}

static void drop(void *ud, uint64_t returned_ms)
{
    struct job *j = ud;
    (void)returned_ms;
    j->drop_calls++;
    j->drop_us = kq_mono_us();
}

static const struct kq_offloop_ops ops = {work, done, drop};

/* Counts loop turns while the work runs: the loop must not wait for it. */
static int ticks;
static void on_tick(uv_timer_t *t)
{
    (void)t;
    ticks++;
}

static void run(struct job *j, unsigned deadline_ms, unsigned abandon_after_ms)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_timer_t tick;
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, on_tick, 10, 10);
    uv_unref((uv_handle_t *)&tick); /* the loop ends when the work and its timer are done */
    ticks = 0;
    struct kq_offloop *o = NULL;
    j->started_us = kq_mono_us();
    assert_int_equal(kq_offloop_start(&loop, &ops, j, deadline_ms, &o), 0);
    if (abandon_after_ms) {
        uint64_t until = kq_mono_us() + abandon_after_ms * 1000ULL;
        while (kq_mono_us() < until && !j->done_calls)
            uv_run(&loop, UV_RUN_NOWAIT);
        if (!j->done_calls)
            kq_offloop_abandon(o);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0); /* nothing left behind */
}

static void test_in_time(void **state)
{
    (void)state;
    struct job j = {.work_ms = 20};
    run(&j, 5000, 0);
    assert_int_equal(j.done_calls, 1);
    assert_false(j.abandoned);
    assert_true(j.returned_at_done);
    assert_int_equal(j.drop_calls, 0);
}

static void test_deadline_abandons_a_stuck_work(void **state)
{
    (void)state;
    struct job j = {.work_ms = 600}; /* ignores the flag, as a long C call would */
    run(&j, 50, 0);
    assert_int_equal(j.done_calls, 1);
    assert_true(j.abandoned);
    assert_false(j.returned_at_done);  /* answered while the work still ran */
    assert_int_equal(j.drop_calls, 1); /* and dropped once it returned */
    assert_true(j.drop_us > j.done_us);
    assert_true(j.done_us - j.started_us < 500000);
    assert_true(ticks >= 3); /* the loop kept turning */
}

static void test_abandon_raises_the_flag(void **state)
{
    (void)state;
    struct job j = {.work_ms = 10000, .honour_flag = true};
    run(&j, 60000, 30);
    assert_int_equal(j.done_calls, 1);
    assert_true(j.abandoned);
    assert_int_equal(j.drop_calls, 1);
    assert_true(j.drop_us - j.started_us < 5000000); /* the work saw the flag */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_in_time),
        cmocka_unit_test(test_deadline_abandons_a_stuck_work),
        cmocka_unit_test(test_abandon_raises_the_flag),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
