/* MySQL store, dead letters (the kite_msg_dlq table of each shard database): counters kept
 * in memory, and the DLQ operations as jobs that complete on the loop, so that neither a
 * scrape nor an operator's command ever waits for the server on the loop thread.
 *
 * Counters: counted from the tables at start and every DLQ_COUNT_MS (other brokers share
 * the tables), moved at once by this broker's own dead letters, takes and purges. A count
 * that overlapped such a change is thrown away and asked again (it may or may not include
 * the change); until the first count is in, dlq_counts says -EAGAIN. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/clock.h"
#include "core/log.h"
#include "store/mysql/mysql_internal.h"

#define DLQ_COUNT_MS 30000

/* --- rows ------------------------------------------------------------------------------------ */

/* A job of one or more statements whose done gets the callback in j->cb/j->ud (cast back
 * by the done function) and ctx. NULL on ENOMEM (stmts freed). */
static struct my_job *dlq_job(bool txn, my_done_fn done, size_t n, char **stmts, int rows_stmt,
                              void (*cb)(void), void *ud, void *ctx)
{
    struct my_job *j = my_job_script(txn, done, n, stmts);
    if (!j)
        return NULL;
    j->rows_stmt = rows_stmt;
    j->cb = (kq_store_done_cb)cb;
    j->ud = ud;
    j->ctx = ctx;
    return j;
}

/* --- counters -------------------------------------------------------------------------------- */

void my_dlq_changed(struct my_store *s, const char *topic, const char *group, int64_t delta)
{
    s->dlq_changes++;
    if (delta > 0) {
        if (!kq_dlq_counts_add(&s->dlq, topic, group, (uint64_t)delta))
            s->dlq_next_count_ms = 0; /* out of memory: count again */
        return;
    }
    struct kq_dlq_count *e = kq_dlq_counts_find(&s->dlq, topic, group);
    if (e)
        kq_dlq_counts_sub(&s->dlq, e, (uint64_t)-delta);
}

static void count_done(struct my_store *s, struct my_job *j)
{
    s->dlq_counting = false;
    if (j->status || s->dlq_changes != s->dlq_count_mark) {
        if (j->status)
            KQ_LOG_RATELIMITED(KQ_LOG_WARN, MY_MOD, "dead letters not counted: %s",
                               strerror(-j->status));
        s->dlq_next_count_ms = kq_mono_us() / 1000 + 1000; /* again soon */
        my_job_free(j);
        return;
    }
    kq_dlq_counts_free(&s->dlq);
    bool ok = true;
    for (size_t i = 0; ok && i < j->rows->n; i++) {
        int64_t n = my_cell_i64(my_cell(j->rows, i, 2));
        ok = n <= 0 || kq_dlq_counts_add(&s->dlq, my_cell(j->rows, i, 0)->p,
                                         my_cell(j->rows, i, 1)->p, (uint64_t)n);
    }
    s->dlq_known = ok; /* out of memory: unknown, and asked again at once */
    s->dlq_next_count_ms = ok ? kq_mono_us() / 1000 + DLQ_COUNT_MS : 0;
    my_job_free(j);
}

void my_dlq_count_tick(struct my_store *s)
{
    if (s->dlq_counting || s->closing || kq_mono_us() / 1000 < s->dlq_next_count_ms)
        return;
    struct my_sql q = {0};
    for (int db = 0; db < s->conf.shardnum; db++) {
        my_sql_cat(&q, db ? " UNION ALL " : "");
        my_sql_cat(&q, "SELECT topic,publish_group,COUNT(*) FROM ");
        my_table_name(&q, s, db, -1);
        my_sql_cat(&q, " GROUP BY topic,publish_group");
    }
    char *sql = my_sql_take(&q);
    struct my_job *j = my_job_script(false, count_done, 1, &sql);
    if (!j)
        return;
    j->rows_stmt = 0;
    s->dlq_counting = true;
    s->dlq_count_mark = s->dlq_changes;
    my_submit(s, j);
}

int my_dlq_counts(struct kq_store *base, bool by_group, kq_store_dlq_count_cb cb, void *ud)
{
    struct my_store *s = (struct my_store *)base;
    if (!s->dlq_known)
        return -EAGAIN;
    kq_dlq_counts_each(&s->dlq, by_group, cb, ud);
    return 0;
}

/* --- a page ---------------------------------------------------------------------------------- */

/* The cursor is "DB:LAST_ID": the shard database being listed and the last id listed
 * there (ORDER BY message_id, the primary key). */
struct page_ctx {
    kq_store_dlq_cb item;
    int db;
    size_t max;
};

static void page_done(struct my_store *s, struct my_job *j)
{
    struct page_ctx *c = j->ctx;
    kq_store_dlq_page_cb done = (kq_store_dlq_page_cb)(void (*)(void))j->cb;
    char next[KQ_DLQ_CURSOR_LEN] = "";
    int status = j->status;
    if (status == 0) {
        struct my_dead x = {0};
        for (size_t i = 0; i < j->rows->n && !status; i++) {
            if (!(status = my_dead_row(j->rows, i, &x)))
                c->item(j->ud, &x.d);
            my_dead_release(&x);
        }
        my_dead_free(&x);
        if (j->rows->n == c->max && j->rows->n)
            snprintf(next, sizeof next, "%d:%s", c->db, my_cell(j->rows, j->rows->n - 1, C_ID)->p);
        else if (c->db + 1 < s->conf.shardnum)
            snprintf(next, sizeof next, "%d:", c->db + 1);
    }
    done(j->ud, status, status ? "" : next);
    free(c);
    my_job_free(j);
}

int my_dlq_page(struct kq_store *base, const char *topic, const char *after, size_t max,
                kq_store_dlq_cb item, kq_store_dlq_page_cb done, void *ud)
{
    struct my_store *s = (struct my_store *)base;
    int db = 0;
    char last[KQ_ID_LEN + 1] = "";
    if (after && *after) {
        char *end;
        long v = strtol(after, &end, 10);
        if (end == after || *end != ':' || v < 0 || v >= s->conf.shardnum ||
            strlen(end + 1) > KQ_ID_LEN)
            return -EINVAL;
        db = (int)v;
        strcpy(last, end + 1);
    }
    if (max == 0 || max > RECOVER_PAGE)
        max = RECOVER_PAGE;
    struct page_ctx *c = malloc(sizeof *c);
    if (!c)
        return -ENOMEM;
    *c = (struct page_ctx){item, db, max};
    struct my_sql q = {0};
    my_select_cols(&q, s, db, -1);
    my_sql_cat(&q, " WHERE message_id>");
    my_sql_str(&q, last);
    if (topic) {
        my_sql_cat(&q, " AND topic=");
        my_sql_str(&q, topic);
    }
    my_sql_printf(&q, " ORDER BY message_id LIMIT %zu", max);
    char *sql = my_sql_take(&q);
    struct my_job *j = dlq_job(false, page_done, 1, &sql, 0, (void (*)(void))done, ud, c);
    if (!j) {
        free(c);
        return -ENOMEM;
    }
    my_submit(s, j);
    return 0;
}

/* --- one dead letter: get, take ---------------------------------------------------------------- */

static void one_done(struct my_store *s, struct my_job *j)
{
    kq_store_dlq_one_cb cb = (kq_store_dlq_one_cb)(void (*)(void))j->cb;
    bool take = j->txn; /* a take runs as a transaction, a get does not */
    int status = j->status;
    if (status == 0 && (!j->rows || j->rows->n == 0))
        status = -ENOENT;
    struct my_dead x = {0};
    if (!status && (status = my_dead_row(j->rows, 0, &x)) && take)
        KQ_ERROR(MY_MOD, "dead letter taken out of the DLQ but not read (out of memory)");
    if (status) {
        cb(j->ud, status, NULL);
    } else {
        if (take)
            my_dlq_changed(s, x.d.msg.topic, x.d.msg.publish_group, -1);
        cb(j->ud, 0, &x.d);
    }
    my_dead_free(&x);
    my_job_free(j);
}

/* take: the row is locked, read and deleted in one transaction. */
static int one(struct kq_store *base, const char *id, bool take, kq_store_dlq_one_cb cb, void *ud)
{
    struct my_store *s = (struct my_store *)base;
    if (!my_valid_id(id))
        return -EINVAL;
    int db, tb;
    kq_mysql_shard(id, s->conf.shardnum, &db, &tb);
    struct my_sql q = {0};
    char *stmts[2];
    my_select_cols(&q, s, db, -1);
    my_sql_cat(&q, " WHERE message_id=");
    my_sql_str(&q, id);
    if (take)
        my_sql_cat(&q, " FOR UPDATE");
    stmts[0] = my_sql_take(&q);
    if (take) {
        my_sql_cat(&q, "DELETE FROM ");
        my_table_name(&q, s, db, -1);
        my_sql_cat(&q, " WHERE message_id=");
        my_sql_str(&q, id);
        stmts[1] = my_sql_take(&q);
    }
    struct my_job *j =
        dlq_job(take, one_done, take ? 2 : 1, stmts, 0, (void (*)(void))cb, ud, NULL);
    if (!j)
        return -ENOMEM;
    my_submit(s, j);
    return 0;
}

int my_dlq_get(struct kq_store *base, const char *id, kq_store_dlq_one_cb cb, void *ud)
{
    return one(base, id, false, cb, ud);
}

int my_dlq_take(struct kq_store *base, const char *id, kq_store_dlq_one_cb cb, void *ud)
{
    return one(base, id, true, cb, ud);
}

/* --- purge ----------------------------------------------------------------------------------- */

static void purge_done(struct my_store *s, struct my_job *j)
{
    kq_store_purge_cb cb = (kq_store_purge_cb)(void (*)(void))j->cb;
    const char *topic = j->ctx;
    size_t n = 0;
    if (j->status == 0)
        for (int db = 0; db < s->conf.shardnum; db++)
            n += (size_t)j->affected[db];
    /* the topic's pairs go; a count follows to catch rows that came in meanwhile */
    s->dlq_changes++;
    kq_dlq_counts_drop_topic(&s->dlq, topic);
    s->dlq_next_count_ms = 0;
    cb(j->ud, j->status, n);
    free(j->ctx);
    my_job_free(j);
}

int my_dlq_purge(struct kq_store *base, const char *topic, kq_store_purge_cb cb, void *ud)
{
    struct my_store *s = (struct my_store *)base;
    char *stmts[KQ_MYSQL_SHARD_SEED];
    char *copy = topic ? strdup(topic) : NULL;
    if (topic && !copy)
        return -ENOMEM;
    for (int db = 0; db < s->conf.shardnum; db++) {
        struct my_sql q = {0};
        my_sql_cat(&q, "DELETE FROM ");
        my_table_name(&q, s, db, -1);
        if (topic) {
            my_sql_cat(&q, " WHERE topic=");
            my_sql_str(&q, topic);
        }
        stmts[db] = my_sql_take(&q);
    }
    struct my_job *j = dlq_job(true, purge_done, (size_t)s->conf.shardnum, stmts, -1,
                               (void (*)(void))cb, ud, copy);
    if (!j) {
        free(copy);
        return -ENOMEM;
    }
    my_submit(s, j);
    return 0;
}
