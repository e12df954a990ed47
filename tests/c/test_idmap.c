/* The open-addressing id map: insert, find, remove with backward shift, iteration, growth,
 * checked against a plain array model under random operations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/idmap.h"

struct rec {
    int live;
    char id[33];
};

static void test_random_ops(void **state)
{
    (void)state;
    enum { N = 20000 };
    struct rec *recs = calloc(N, sizeof *recs);
    struct kq_idmap m;
    kq_idmap_init(&m, offsetof(struct rec, id));
    srand(7);
    for (int i = 0; i < N; i++)
        snprintf(recs[i].id, sizeof recs[i].id, "%08x%08x%016d", rand(), rand(), i);
    size_t live = 0;
    for (int step = 0; step < 200000; step++) {
        struct rec *r = &recs[rand() % N];
        if (r->live) {
            assert_ptr_equal(kq_idmap_find(&m, r->id), r);
            kq_idmap_remove(&m, r);
            r->live = 0;
            live--;
            assert_null(kq_idmap_find(&m, r->id));
        } else {
            assert_null(kq_idmap_find(&m, r->id));
            assert_int_equal(kq_idmap_insert(&m, r), 0);
            r->live = 1;
            live++;
        }
        assert_int_equal(m.len, live);
    }
    /* every live record is found, iteration visits exactly the live ones */
    size_t seen = 0, pos = 0;
    struct rec *r;
    while ((r = kq_idmap_next(&m, &pos))) {
        assert_true(r->live);
        seen++;
    }
    assert_int_equal(seen, live);
    for (int i = 0; i < N; i++)
        if (recs[i].live)
            assert_ptr_equal(kq_idmap_find(&m, recs[i].id), &recs[i]);
    kq_idmap_free(&m);
    free(recs);
}

/* A distance byte of 255 means "recompute from the key" (runs that long are rare): with
 * every byte forced to 255, removal must still keep every other record reachable. */
static void test_far_distances(void **state)
{
    (void)state;
    enum { N = 700 };
    struct rec *recs = calloc(N, sizeof *recs);
    struct kq_idmap m;
    kq_idmap_init(&m, offsetof(struct rec, id));
    for (int i = 0; i < N; i++) {
        snprintf(recs[i].id, sizeof recs[i].id, "%032d", i * 7919);
        assert_int_equal(kq_idmap_insert(&m, &recs[i]), 0);
    }
    memset(m.dist, 255, m.cap);
    for (int i = 0; i < N; i += 2)
        kq_idmap_remove(&m, &recs[i]);
    for (int i = 0; i < N; i++)
        assert_ptr_equal(kq_idmap_find(&m, recs[i].id), i % 2 ? &recs[i] : NULL);
    assert_int_equal(m.len, N / 2);
    kq_idmap_free(&m);
    free(recs);
}

static void test_empty(void **state)
{
    (void)state;
    struct kq_idmap m;
    kq_idmap_init(&m, offsetof(struct rec, id));
    assert_null(kq_idmap_find(&m, "x"));
    struct rec r = {.id = "abc"};
    kq_idmap_remove(&m, &r);
    size_t pos = 0;
    assert_null(kq_idmap_next(&m, &pos));
    kq_idmap_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_ops),
        cmocka_unit_test(test_far_distances),
        cmocka_unit_test(test_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
