/* The stores' dead-letter index: the sequence list (order, stable cursors, holes and their
 * compaction) against a plain array model under random operations, the bounded page walk
 * (every record exactly once, in order, whatever is removed between pages; a page never
 * steps over more than KQ_DLQ_PAGE_SCAN slots), and the counters. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/seqlist.h"
#include "store/dlq_index.h"

enum { N = 20000 };

struct rec {
    int i;
    bool live;
    uint64_t seq;
};

static void test_seqlist_random(void **state)
{
    (void)state;
    struct rec *recs = calloc(N, sizeof *recs);
    struct kq_seqlist l = {0};
    srand(11);
    size_t live = 0;
    for (int i = 0; i < N; i++) {
        recs[i].i = i;
        uint64_t seq;
        assert_int_equal(kq_seqlist_push(&l, &recs[i], &seq), 0);
        assert_true(i == 0 || seq > recs[i - 1].seq);
        recs[i].seq = seq;
        recs[i].live = true;
        live++;
        if (rand() % 3 == 0) { /* remove a random earlier one */
            struct rec *r = &recs[rand() % (i + 1)];
            if (r->live) {
                kq_seqlist_remove(&l, r->seq);
                r->live = false;
                live--;
            }
        }
    }
    for (int i = 0; i < N; i += 2) /* then most of the rest: compaction runs */
        if (recs[i].live) {
            kq_seqlist_remove(&l, recs[i].seq);
            recs[i].live = false;
            live--;
        }
    kq_seqlist_remove(&l, 0);               /* no such number */
    kq_seqlist_remove(&l, l.last_seq + 10); /* nor this */
    assert_int_equal(kq_seqlist_len(&l), live);
    assert_true(l.n <= 2 * live + 64);
    /* from every cursor: exactly the live ones after it, in order */
    for (int k = 0; k < 50; k++) {
        uint64_t after = k == 0 ? 0 : recs[rand() % N].seq;
        size_t pos = kq_seqlist_after(&l, after);
        int expect = 0;
        while (expect < N && (recs[expect].seq <= after || !recs[expect].live))
            expect++;
        struct rec *r;
        uint64_t seq;
        while ((r = kq_seqlist_next(&l, &pos, &seq))) {
            assert_int_equal(r->i, expect);
            assert_int_equal(seq, recs[expect].seq);
            do
                expect++;
            while (expect < N && !recs[expect].live);
        }
        assert_int_equal(expect, N);
    }
    kq_seqlist_free(&l);
    free(recs);
}

/* --- pages over the index ------------------------------------------------------------------- */

struct letter {
    char id[KQ_ID_LEN + 1];
    const char *topic;
    struct kq_dlq_pos pos;
    bool live;
};

static int read_letter(void *store, void *rec, const char *topic, struct kq_dead_letter *out)
{
    struct letter *l = rec;
    if (topic && strcmp(topic, l->topic) != 0)
        return 0;
    memset(out, 0, sizeof *out);
    memcpy(out->msg.id, l->id, sizeof out->msg.id);
    out->msg.topic = l->topic;
    return 1;
}

struct page {
    char ids[200][KQ_ID_LEN + 1];
    size_t n;
    char next[KQ_DLQ_CURSOR_LEN];
    bool done;
};

static bool on_item(void *ud, const struct kq_dead_letter *d)
{
    struct page *p = ud;
    assert_true(p->n < 200);
    memcpy(p->ids[p->n++], d->msg.id, KQ_ID_LEN + 1);
    return true;
}

static void on_done(void *ud, int status, const char *next)
{
    struct page *p = ud;
    assert_int_equal(status, 0);
    snprintf(p->next, sizeof p->next, "%s", next);
    p->done = true;
}

static void test_pages(void **state)
{
    (void)state;
    struct kq_dlq_index x = {0};
    struct letter *v = calloc(N, sizeof *v);
    for (int i = 0; i < N; i++) {
        snprintf(v[i].id, sizeof v[i].id, "%032x", i);
        v[i].topic = i % 1000 == 7 ? "rare" : i % 2 ? "odd" : "even";
        v[i].live = true;
        assert_int_equal(kq_dlq_index_add(&x, &v[i], v[i].topic, i % 3 ? "g1" : "g2", &v[i].pos),
                         0);
    }
    assert_int_equal(x.counts.total, N);

    /* pages of 100 of every topic, removing some letters between pages, before and after
     * the cursor: each letter still live when the walk passes it comes exactly once */
    struct page p = {0};
    int expect = 0, pages = 0;
    char cursor[KQ_DLQ_CURSOR_LEN] = "";
    for (;;) {
        memset(&p, 0, sizeof p);
        assert_int_equal(
            kq_dlq_index_page(&x, NULL, cursor, 100, read_letter, NULL, on_item, on_done, &p), 0);
        assert_true(p.done && p.n <= 100);
        for (size_t k = 0; k < p.n; k++) {
            while (!v[expect].live)
                expect++;
            assert_string_equal(p.ids[k], v[expect].id);
            expect++;
        }
        pages++;
        for (int k = 0; k < 30; k++) { /* remove some anywhere */
            struct letter *l = &v[rand() % N];
            if (l->live) {
                kq_dlq_index_remove(&x, &l->pos);
                l->live = false;
            }
        }
        if (!p.next[0])
            break;
        snprintf(cursor, sizeof cursor, "%s", p.next);
    }
    while (expect < N && !v[expect].live)
        expect++;
    assert_int_equal(expect, N);
    assert_true(pages >= 100);

    /* a rare topic: pages step over at most KQ_DLQ_PAGE_SCAN slots, yet the walk ends */
    int rare = 0;
    cursor[0] = 0;
    pages = 0;
    do {
        memset(&p, 0, sizeof p);
        assert_int_equal(
            kq_dlq_index_page(&x, "rare", cursor, 100, read_letter, NULL, on_item, on_done, &p), 0);
        rare += (int)p.n;
        snprintf(cursor, sizeof cursor, "%s", p.next);
        pages++;
    } while (cursor[0]);
    int live_rare = 0;
    for (int i = 0; i < N; i++)
        live_rare += v[i].live && !strcmp(v[i].topic, "rare");
    assert_int_equal(rare, live_rare);
    assert_true(pages >= (int)(x.order.n / KQ_DLQ_PAGE_SCAN));

    /* a cursor it never gave */
    assert_int_equal(kq_dlq_index_page(&x, NULL, "abc", 1, read_letter, NULL, on_item, on_done, &p),
                     -EINVAL);
    assert_int_equal(
        kq_dlq_index_page(&x, NULL, "99999999", 1, read_letter, NULL, on_item, on_done, &p),
        -EINVAL);

    /* counters follow the removals */
    uint64_t live = 0, odd = 0;
    for (int i = 0; i < N; i++) {
        live += v[i].live;
        odd += v[i].live && !strcmp(v[i].topic, "odd");
    }
    assert_int_equal(x.counts.total, live);
    struct kq_dlq_count *e1 = kq_dlq_counts_find(&x.counts, "odd", "g1");
    struct kq_dlq_count *e2 = kq_dlq_counts_find(&x.counts, "odd", "g2");
    assert_non_null(e1);
    assert_int_equal(e1->t->n, odd);
    assert_int_equal(e1->n + (e2 ? e2->n : 0), odd);
    kq_dlq_counts_drop_topic(&x.counts, "odd");
    assert_null(kq_dlq_counts_find(&x.counts, "odd", "g1"));
    assert_int_equal(x.counts.total, live - odd);
    kq_dlq_counts_drop_topic(&x.counts, NULL);
    assert_int_equal(x.counts.total, 0);
    assert_null(x.counts.topics);
    kq_seqlist_free(&x.order);
    free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seqlist_random),
        cmocka_unit_test(test_pages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
