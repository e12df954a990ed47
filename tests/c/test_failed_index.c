/* The pending messages by failed group (broker/failed_index.c): a group coming online looks
 * at the messages that failed for it (and those that found no subscriber), never at every
 * pending message; the index follows every change of a message's failed groups and lets go
 * of a group's table once its backlog is gone. Runs the broker's own code on a hand-built
 * broker (loop, schedule and index only), counting the messages looked at. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "broker/internal.h"
#include "core/clock.h"

#define LATER_MS 600000 /* when the waiting messages would look again by themselves */

struct fixture {
    uv_loop_t loop;
    struct kq_broker b;
    int next_id;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    uv_loop_init(&f->loop);
    f->b.loop = &f->loop;
    uv_timer_init(&f->loop, &f->b.retry_timer);
    f->b.retry_timer.data = &f->b;
    kq_idmap_init(&f->b.msgs, offsetof(struct kq_msg, id));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    kq_delivery_free_all(&f->b);
    assert_null(f->b.failed_index);
    kq_atoms_free(&f->b);
    struct kq_topic_stats *t, *tmp; /* kq_delivery_drop counted its topic */
    HASH_ITER (hh, f->b.topic_stats, t, tmp) {
        HASH_DEL(f->b.topic_stats, t);
        free(t->topic);
        free(t);
    }
    uv_close((uv_handle_t *)&f->b.retry_timer, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    uv_loop_close(&f->loop);
    free(f);
    return 0;
}

/* A committed pending message whose last attempt failed for group, waiting until LATER_MS. */
static struct kq_msg *waiting_msg(struct fixture *f, const char *group)
{
    struct kq_stored_msg sm = {.cmd = 0x11,
                               .topic = "t",
                               .message_type = "y",
                               .publish_group = "p",
                               .commit = true,
                               .expired_time = 1,
                               .deliver_limit = 10};
    snprintf(sm.id, sizeof sm.id, "%032d", f->next_id++);
    struct kq_msg *m = kq_msg_new(&f->b, &sm, false);
    assert_non_null(m);
    assert_int_equal(kq_idmap_insert(&f->b.msgs, m), 0);
    assert_int_equal(kq_failed_add(&f->b, m, group), 0);
    kq_delivery_schedule(&f->b, m, kq_now_ms() + LATER_MS);
    return m;
}

static bool woken(const struct kq_msg *m) { return m->timer.key <= kq_now_ms(); }

static void test_online_looks_at_its_own_backlog(void **state)
{
    struct fixture *f = *state;
    struct kq_msg *other[2000], *mine[5], *nosub[2];
    for (size_t i = 0; i < 2000; i++)
        other[i] = waiting_msg(f, "busy");
    for (size_t i = 0; i < 5; i++)
        mine[i] = waiting_msg(f, "small");
    for (size_t i = 0; i < 2; i++)
        nosub[i] = waiting_msg(f, KQ_NO_SUBSCRIBER);
    assert_int_equal(kq_failed_add(&f->b, other[0], "small"), 0); /* failed for both */

    struct kq_group g = {.id = "small"};
    /* 5 + 1 that failed for it, 2 with no subscriber: not the 2007 pending */
    assert_int_equal(kq_delivery_group_online(&f->b, &g), 8);
    for (size_t i = 0; i < 5; i++)
        assert_true(woken(mine[i]));
    for (size_t i = 0; i < 2; i++)
        assert_true(woken(nosub[i]));
    assert_true(woken(other[0]));
    for (size_t i = 1; i < 2000; i++)
        assert_false(woken(other[i]));

    struct kq_group nobody = {.id = "never-failed"};
    assert_int_equal(kq_delivery_group_online(&f->b, &nobody), 2); /* the unrouted only */
}

static void visit(struct kq_broker *b, struct kq_msg *m, void *ud)
{
    (void)b;
    (void)m;
    (*(size_t *)ud)++;
}

static size_t visits(struct fixture *f, const char *group)
{
    size_t n = 0, looked_at = kq_failed_each(&f->b, group, visit, &n);
    assert_int_equal(looked_at, n);
    return n;
}

static void test_index_follows_failed_groups(void **state)
{
    struct fixture *f = *state;
    struct kq_msg *m[3000];
    for (size_t i = 0; i < 3000; i++)
        m[i] = waiting_msg(f, "g");
    assert_int_equal(visits(f, "g"), 3000);
    assert_int_equal(kq_failed_add(&f->b, m[0], "g"), 0); /* already there: once */
    assert_int_equal(visits(f, "g"), 3000);
    assert_non_null(f->b.failed_index);
    /* a new attempt clears, a purge removes one group, a drop takes the message out */
    for (size_t i = 0; i < 2900; i++) {
        if (i % 3 == 0)
            kq_failed_clear(&f->b, m[i]);
        else if (i % 3 == 1)
            kq_failed_remove(&f->b, m[i], kq_atom_find(&f->b, "g"));
        else
            kq_delivery_drop(&f->b, m[i], false);
    }
    assert_int_equal(visits(f, "g"), 100); /* found in a table rebuilt smaller */
    for (size_t i = 0; i < 2900; i += 3)
        assert_int_equal(m[i]->n_failed, 0);
    for (size_t i = 2900; i < 3000; i++)
        kq_failed_clear(&f->b, m[i]);
    assert_int_equal(visits(f, "g"), 0);
    assert_null(f->b.failed_index); /* nothing waits: no table kept */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_online_looks_at_its_own_backlog, setup, teardown),
        cmocka_unit_test_setup_teardown(test_index_follows_failed_groups, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
