/* Message histories when memory runs out (broker/history.c): a message that loses its
 * history - at its first event, when it finishes, when it is requeued - is counted in
 * kiteq_message_histories_skipped_total and logged (rate-limited), never dropped silently;
 * a record that cannot grow keeps its latest event in place of an older one (shown as
 * "events not kept"). Runs history.c on a hand-built broker (no loop, no store) with its
 * allocations made to fail (kq_history_fail_allocs). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "broker/internal.h"
#include "support/log_capture.h"

struct fixture {
    struct kq_config cfg;
    struct kq_broker b;
    struct kq_msg m;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    f->cfg.message_history = 8;
    f->b.cfg = &f->cfg;
    assert_int_equal(kq_history_init(&f->b), 0);
    strcpy(f->m.id, "0123456789abcdef0123456789abcdef");
    f->m.topic = "trade";
    f->m.type = "pay-succ";
    f->m.pub_group = "p-trade";
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    kq_history_free(&f->b);
    free(f);
    return 0;
}

static uint64_t skipped(struct fixture *f)
{
    struct kq_history_stats s;
    kq_history_stats(&f->b, &s);
    return s.skipped;
}

/* Runs the events of one message (published, stored, sent, acked, delivered) with
 * allocations failing from event `fail_from` on (0: from the start), then finishes it;
 * returns what was logged. */
static char *run_message(struct fixture *f, int fail_from, bool fail_finish)
{
    static const enum kq_hist_kind kinds[] = {KQ_EV_PUBLISHED, KQ_EV_STORED, KQ_EV_SENT,
                                              KQ_EV_ACKED, KQ_EV_DELIVERED};
    log_capture_begin();
    for (int i = 0; i < (int)(sizeof kinds / sizeof kinds[0]); i++) {
        kq_history_fail_allocs(&f->b, i >= fail_from);
        kq_hist(&f->b, &f->m, kinds[i], NULL, NULL);
    }
    kq_history_fail_allocs(&f->b, fail_finish);
    kq_hist_finish(&f->b, &f->m);
    kq_history_fail_allocs(&f->b, false);
    return log_capture_end(KQ_LOG_WARN);
}

static void test_no_record_for_a_new_message(void **state)
{
    struct fixture *f = *state;
    char *log = run_message(f, 0, false);
    assert_int_equal(skipped(f), 1); /* one message, however many of its events */
    assert_non_null(strstr(log, "out of memory: id=0123456789abcdef0123456789abcdef "
                                "has no history"));
    assert_null(kq_hist_finished_json(&f->b, f->m.id, NULL));
    free(log);
}

static void test_finished_history_not_kept(void **state)
{
    struct fixture *f = *state;
    char *log = run_message(f, 99, true);
    assert_int_equal(skipped(f), 1);
    assert_non_null(strstr(log, "finished history not kept"));
    assert_null(kq_hist_finished_json(&f->b, f->m.id, NULL));
    free(log);

    log = run_message(f, 99, false); /* with memory: kept, nothing counted or logged */
    assert_int_equal(skipped(f), 1);
    assert_null(strstr(log, "out of memory"));
    cJSON *j = kq_hist_finished_json(&f->b, f->m.id, NULL);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "topic")->valuestring, "trade");
    cJSON_Delete(j);
    free(log);
}

static void test_requeued_without_its_history(void **state)
{
    struct fixture *f = *state;
    free(run_message(f, 99, false));
    log_capture_begin();
    kq_history_fail_allocs(&f->b, true);
    kq_hist_resume(&f->b, &f->m);
    kq_history_fail_allocs(&f->b, false);
    char *log = log_capture_end(KQ_LOG_WARN);
    assert_int_equal(skipped(f), 1);
    assert_int_equal(f->m.hist, 0);
    assert_non_null(strstr(log, "requeued without its history"));
    free(log);
}

/* A record full at its first size that cannot grow: the new event goes in, an older one is
 * counted as not kept, and the log says so; the message still has its history. */
static void test_record_that_cannot_grow(void **state)
{
    struct fixture *f = *state;
    log_capture_begin();
    for (int i = 0; i < 6; i++) /* a new record has room for 6 */
        kq_hist(&f->b, &f->m, KQ_EV_SENT, NULL, NULL);
    kq_history_fail_allocs(&f->b, true);
    kq_hist(&f->b, &f->m, KQ_EV_ACKED, NULL, NULL);
    kq_history_fail_allocs(&f->b, false);
    char *log = log_capture_end(KQ_LOG_WARN);
    assert_non_null(strstr(log, "history keeps fewer events"));
    assert_int_equal(skipped(f), 0);
    cJSON *j = kq_hist_json(&f->b, &f->m);
    assert_non_null(j);
    cJSON *ev = NULL, *last = NULL, *not_kept = NULL;
    cJSON_ArrayForEach(ev, j)
    {
        if (strcmp(cJSON_GetObjectItem(ev, "event")->valuestring, "events not kept") == 0)
            not_kept = ev;
        last = ev;
    }
    assert_non_null(not_kept);
    assert_int_equal(cJSON_GetObjectItem(not_kept, "count")->valueint, 1);
    assert_string_equal(cJSON_GetObjectItem(last, "event")->valuestring, "acked");
    cJSON_Delete(j);
    free(log);
    kq_hist_finish(&f->b, &f->m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_no_record_for_a_new_message, setup, teardown),
        cmocka_unit_test_setup_teardown(test_finished_history_not_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_requeued_without_its_history, setup, teardown),
        cmocka_unit_test_setup_teardown(test_record_that_cannot_grow, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
