/* Memory store: same semantics as the file store, synchronous, nothing survives. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "store/store.h"
#include "support/dlq_sync.h"

static int done, last_status;

static void on_done(void *ud, int status)
{
    (void)ud;
    done++;
    last_status = status;
}

static struct kq_stored_msg msg(int i, char *id)
{
    snprintf(id, KQ_ID_LEN + 1, "%032x", i);
    struct kq_stored_msg m = {.cmd = 0x11,
                              .topic = i % 2 ? "odd" : "even",
                              .message_type = "t",
                              .publish_group = "g",
                              .commit = false,
                              .publish_time = i,
                              .expired_time = 99,
                              .deliver_limit = 3,
                              .header = (const uint8_t *)"hdr",
                              .header_len = 3,
                              .body = (const uint8_t *)"body",
                              .body_len = 4};
    memcpy(m.id, id, KQ_ID_LEN + 1);
    return m;
}

struct seen {
    int n;
    int order[16];
    bool commit[16];
    int attempts[16];
};

static void on_recover(void *ud, const struct kq_stored_msg *m, const struct kq_delivery_state *st)
{
    struct seen *s = ud;
    assert_memory_equal(m->body, "body", 4);
    s->order[s->n] = (int)m->publish_time;
    s->commit[s->n] = m->commit;
    s->attempts[s->n++] = st ? st->attempts : -1;
}

static void on_load(void *ud, int status, const struct kq_stored_msg *m)
{
    assert_int_equal(status, 0);
    assert_string_equal(m->topic, "odd");
    (*(int *)ud)++;
}

static bool on_dlq(void *ud, const struct kq_dead_letter *d)
{
    assert_string_equal(d->reason, "expired");
    assert_memory_equal(d->msg.header, "hdr", 3); /* taken from the pending copy */
    (*(int *)ud)++;
    return true;
}

static void test_memory_store(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct kq_store *s;
    char err[128], id[KQ_ID_LEN + 1];
    assert_int_equal(kq_store_open(&loop, "memory://", &s, err, sizeof err), 0);
    assert_string_equal(s->ops->name, "memory");
    for (int i = 0; i < 8; i++) {
        struct kq_stored_msg m = msg(i, id);
        assert_int_equal(s->ops->save(s, &m, on_done, NULL), 0);
    }
    assert_int_equal(done, 8); /* synchronous */
    struct kq_stored_msg m = msg(3, id);
    assert_int_equal(s->ops->save(s, &m, on_done, NULL), -EEXIST);
    assert_int_equal(s->ops->commit(s, id, on_done, NULL), 0);
    assert_int_equal(last_status, 0);
    const char *g[] = {"a"};
    struct kq_delivery_state st = {.attempts = 2, .groups_done = g, .n_done = 1};
    memcpy(st.id, id, sizeof st.id);
    assert_int_equal(s->ops->update(s, &st), 0);
    int loaded = 0;
    assert_int_equal(s->ops->load(s, id, on_load, &loaded), 0);
    assert_int_equal(loaded, 1);
    msg(4, id);
    assert_int_equal(s->ops->remove(s, id), 0);
    assert_int_equal(s->ops->remove(s, id), -ENOENT);
    assert_int_equal(s->ops->load(s, id, on_load, &loaded), -ENOENT);
    for (int i = 5; i < 8; i++) {
        struct kq_stored_msg d = {0};
        msg(i, d.id);
        assert_int_equal(s->ops->dead_letter(s, &d, "expired", NULL), 0);
    }
    struct seen seen = {0};
    assert_int_equal(s->ops->recover(s, on_recover, &seen), 0);
    assert_int_equal(seen.n, 4);
    int want[] = {0, 1, 2, 3};
    for (int k = 0; k < 4; k++)
        assert_int_equal(seen.order[k], want[k]);
    assert_true(seen.commit[3]);
    assert_int_equal(seen.attempts[3], 2);
    assert_int_equal(seen.attempts[0], -1);
    int n = 0;
    assert_int_equal(dlq_walk(s, NULL, 100, false, on_dlq, &n), 1);
    assert_int_equal(n, 3);
    assert_int_equal(dlq_counted(s, NULL), 3);
    n = 0;
    assert_int_equal(dlq_walk(s, NULL, 1, false, on_dlq, &n), 3); /* pages of one */
    assert_int_equal(n, 3);
    n = 0;
    dlq_walk(s, "odd", 100, false, on_dlq, &n);
    assert_int_equal(n, 2); /* 5 and 7 */
    assert_int_equal(dlq_counted(s, "odd"), 2);
    n = 0;
    msg(6, id);
    assert_int_equal(dlq_get_sync(s, id, on_dlq, &n), 0);
    assert_int_equal(dlq_take_sync(s, id, on_dlq, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(dlq_take_sync(s, id, on_dlq, &n), -ENOENT);
    assert_int_equal(dlq_get_sync(s, id, on_dlq, &n), -ENOENT);
    assert_int_equal(dlq_counted(s, NULL), 2);
    size_t purged;
    assert_int_equal(dlq_purge_sync(s, "odd", &purged), 0);
    assert_int_equal(purged, 2);
    assert_int_equal(dlq_counted(s, NULL), 0);
    s->ops->close(s);
    /* nothing survives */
    assert_int_equal(kq_store_open(&loop, "memory://", &s, err, sizeof err), 0);
    seen.n = 0;
    assert_int_equal(s->ops->recover(s, on_recover, &seen), 0);
    assert_int_equal(seen.n, 0);
    s->ops->close(s);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_memory_store)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
