/* MySQL store, start-up recovery: pages through this broker's rows of every shard table in
 * index order and hands them to the broker; dead rows go to the DLQ on the way. When the
 * server cannot be reached it goes on in the background (see "recover" below). Loop thread. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "store/mysql/mysql_internal.h"

/* One row (MY_COLS) to a recover callback, with its delivery state. */
static int emit_row(const struct my_rows *r, size_t i, kq_store_recover_cb cb, void *ud)
{
    struct kq_stored_msg m;
    my_row_msg(r, i, &m);
    struct kq_delivery_state st = {0};
    memcpy(st.id, m.id, sizeof st.id);
    st.attempts = (int32_t)my_cell_i64(my_cell(r, i, C_COUNT));
    int64_t next = my_cell_i64(my_cell(r, i, C_NEXT));
    st.next_attempt_ms = next * 1000;
    const char **done = NULL, **failed = NULL;
    int rc = 0;
    if (my_groups_parse(my_cell(r, i, C_SUCC)->p, &done, &st.n_done) ||
        my_groups_parse(my_cell(r, i, C_FAIL)->p, &failed, &st.n_failed))
        rc = -ENOMEM;
    st.groups_done = done;
    st.groups_failed = failed;
    bool fresh = st.attempts == 0 && next == 0 && !st.n_done && !st.n_failed;
    if (rc == 0)
        cb(ud, &m, fresh ? NULL : &st);
    free(done);
    free(failed);
    return rc;
}

int my_emit_rows(const struct my_rows *r, kq_store_recover_cb cb, void *ud)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < r->n; i++)
        rc = emit_row(r, i, cb, ud);
    return rc;
}

/* --- recover ----------------------------------------------------------------------------------
 *
 * Each shard table is read in idx_recover_a order (next_deliver_time, kite_server,
 * expired_time, deliver_count, deliver_limit, then the primary key) with kite_server fixed,
 * one keyset page at a time: every page is a range scan of that index (no sort, no rescan of
 * what was read, no full-table statement). Rows that are expired or over their delivery limit
 * are not handed out: their ids are moved to the DLQ by primary key, in the transaction of the
 * next page's job.
 *
 * When the server is unreachable (or too slow) at start-up, recover() returns -EINPROGRESS
 * and goes on in the background with back-off, from where it stopped; until it is done the
 * store reports itself unavailable and refuses saves. */

#define REC_ORDER " ORDER BY next_deliver_time,expired_time,deliver_count,deliver_limit,message_id"
#define REC_BACKOFF_MIN_MS 100
#define REC_BACKOFF_MAX_MS 5000

static bool rec_finished(const struct my_store *s)
{
    return s->rec.table >= s->conf.shardnum * s->conf.hash_num && !s->rec.move[0];
}

/* " AND (row after the cursor in index order)": expanded, so that the range optimizer turns
 * it into ranges of idx_recover_a (a row constructor comparison would not be). */
static void rec_after_key(struct my_sql *q, const struct rec_key *k)
{
    my_sql_printf(q,
                  " AND (next_deliver_time>%lld OR (next_deliver_time=%lld AND "
                  "(expired_time>%lld OR (expired_time=%lld AND "
                  "(deliver_count>%lld OR (deliver_count=%lld AND "
                  "(deliver_limit>%lld OR (deliver_limit=%lld AND message_id>",
                  (long long)k->next, (long long)k->next, (long long)k->exp, (long long)k->exp,
                  (long long)k->count, (long long)k->count, (long long)k->limit,
                  (long long)k->limit);
    my_sql_str(q, k->id);
    my_sql_cat(q, "))))))))");
}

static char *rec_page_sql(struct my_store *s)
{
    const struct my_recovery *r = &s->rec;
    int db = r->table / s->conf.hash_num, tb = r->table % s->conf.hash_num;
    struct my_sql q = {0};
    my_sql_cat(&q, "SELECT " MY_COLS_NO_PAYLOAD " FROM ");
    my_table_name(&q, s, db, tb);
    my_sql_cat(&q, " WHERE kite_server=");
    my_sql_str(&q, s->conf.server);
    if (r->has_key)
        rec_after_key(&q, &r->key);
    my_sql_printf(&q, REC_ORDER " LIMIT %d", RECOVER_PAGE);
    return my_sql_take(&q);
}

/* The next job: the dead rows of the previous page (if any), then the next page. */
static struct my_job *rec_job(struct my_store *s)
{
    struct my_recovery *r = &s->rec;
    char *stmts[3];
    size_t n = 0;
    if (r->move[0]) {
        stmts[n++] = strdup(r->move[0]);
        stmts[n++] = strdup(r->move[1]);
    }
    if (r->table < s->conf.shardnum * s->conf.hash_num)
        stmts[n++] = rec_page_sql(s);
    struct my_job *j = my_job_script(n > 1, NULL, n, stmts);
    if (!j)
        return NULL;
    j->rows_stmt = r->table < s->conf.shardnum * s->conf.hash_num ? (int)n - 1 : -1;
    j->force_connect = true; /* recovery has its own back-off */
    return j;
}

/* REPLACE into the DLQ + DELETE of the listed ids, still dead in the table (as before: the
 * reason says why). ids: "('a','b')". */
static void rec_moves(struct my_store *s, int db, int tb, const char *ids)
{
    char cond[160];
    snprintf(cond, sizeof cond, " AND (deliver_count>=deliver_limit OR expired_time<=%lld)",
             (long long)s->rec.now);
    struct my_sql q = {0};
    my_sql_cat(&q, "REPLACE INTO ");
    my_table_name(&q, s, db, -1);
    size_t el = 0, ll = 0;
    char *expired = my_dead_field("expired", s->rec.now, NULL, &el);
    char *limit = my_dead_field("deliver limit reached", s->rec.now, NULL, &ll);
    my_sql_cat(&q, " (" MY_COLS ") SELECT message_id,");
    if (expired && limit) { /* the reason in the header (dlq_row.c); the groups stay */
        my_sql_printf(&q, "CONCAT(header,IF(expired_time<=%lld,", (long long)s->rec.now);
        my_sql_bin(&q, (const uint8_t *)expired, el);
        my_sql_cat(&q, ",");
        my_sql_bin(&q, (const uint8_t *)limit, ll);
        my_sql_cat(&q, "))");
    } else {
        q.oom = true;
    }
    free(expired);
    free(limit);
    my_sql_cat(&q, ",body,msg_type,topic,message_type,publish_group,`commit`,publish_time,"
                   "expired_time,deliver_count,deliver_limit,kite_server,fail_groups,"
                   "succ_groups,next_deliver_time FROM ");
    my_table_name(&q, s, db, tb);
    my_sql_printf(&q, " WHERE message_id IN %s%s", ids, cond);
    s->rec.move[0] = my_sql_take(&q);
    my_sql_cat(&q, "DELETE FROM ");
    my_table_name(&q, s, db, tb);
    my_sql_printf(&q, " WHERE message_id IN %s%s", ids, cond);
    s->rec.move[1] = my_sql_take(&q);
}

static void rec_key_of(const struct my_rows *rows, size_t i, struct rec_key *k)
{
    k->next = my_cell_i64(my_cell(rows, i, C_NEXT));
    k->exp = my_cell_i64(my_cell(rows, i, C_EXPIRED));
    k->count = my_cell_i64(my_cell(rows, i, C_COUNT));
    k->limit = my_cell_i64(my_cell(rows, i, C_LIMIT));
    const char *id = my_cell(rows, i, C_ID)->p;
    snprintf(k->id, sizeof k->id, "%s", id ? id : "");
}

/* A finished job: count the moves it made, hand out its live rows, queue its dead rows,
 * advance the cursor. 0 or -ENOMEM. */
static int rec_page(struct my_store *s, struct my_job *j)
{
    struct my_recovery *r = &s->rec;
    if (r->move[0]) {
        s->st.moved_to_dlq += j->affected[1];
        if (j->affected[1]) { /* new dead letters: count again */
            s->dlq_changes++;
            s->dlq_next_count_ms = 0;
        }
        free(r->move[0]);
        free(r->move[1]);
        r->move[0] = r->move[1] = NULL;
    }
    if (j->rows_stmt < 0)
        return 0;
    const struct my_rows *rows = j->rows;
    struct my_sql dead = {0};
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < rows->n; i++) {
        struct rec_key k;
        rec_key_of(rows, i, &k);
        if (k.count >= k.limit || k.exp <= r->now) {
            my_sql_cat(&dead, dead.len ? "," : "(");
            my_sql_str(&dead, k.id);
            continue;
        }
        rc = emit_row(rows, i, r->cb, r->ud);
        r->rows += rc == 0;
    }
    if (rc == 0 && dead.len) {
        my_sql_cat(&dead, ")");
        if (dead.oom)
            rc = -ENOMEM;
        else
            rec_moves(s, r->table / s->conf.hash_num, r->table % s->conf.hash_num, dead.p);
    }
    my_sql_free(&dead);
    if (rc)
        return rc; /* the page is read again: the broker ignores ids it has already */
    if (rows->n == RECOVER_PAGE) {
        rec_key_of(rows, rows->n - 1, &r->key);
        r->has_key = true;
    } else {
        r->table++;
        r->has_key = false;
    }
    return rc;
}

static void rec_submit(struct my_store *s);
static void rec_on_timer(uv_timer_t *t) { rec_submit(t->data); }

static void rec_finish(struct my_store *s)
{
    struct my_recovery *r = &s->rec;
    bool background = r->state == REC_BACKGROUND;
    r->state = REC_DONE;
    my_health_up(s); /* it got through: saves may go */
    if (background)
        KQ_INFO(MY_MOD,
                "recovered in the background: %llu pending messages, %llu ms after "
                "start; the store is available",
                (unsigned long long)r->rows,
                (unsigned long long)((kq_mono_us() - r->t0_us) / 1000));
}

/* why: the failed job's reason ("mysql HOST:PORT: ..."), or NULL. */
static void rec_failed(struct my_store *s, int status, const char *why)
{
    struct my_recovery *r = &s->rec;
    r->backoff_ms = r->backoff_ms ? r->backoff_ms * 2 : REC_BACKOFF_MIN_MS;
    if (r->backoff_ms > REC_BACKOFF_MAX_MS)
        r->backoff_ms = REC_BACKOFF_MAX_MS;
    char fallback[300];
    if (!why) {
        snprintf(fallback, sizeof fallback, "mysql %s:%u: %s", s->conf.host, s->conf.port,
                 strerror(-status));
        why = fallback;
    }
    snprintf(r->why, sizeof r->why,
             "%s; start-up recovery pending, retried with back-off (at least every %u s)", why,
             REC_BACKOFF_MAX_MS / 1000);
    KQ_LOG_RATELIMITED(KQ_LOG_WARN, MY_MOD, "recovery: %s; next try in %u ms", why, r->backoff_ms);
    uv_timer_start(&r->timer, rec_on_timer, r->backoff_ms, 0);
}

static void rec_done(struct my_store *s, struct my_job *j)
{
    struct my_recovery *r = &s->rec;
    int rc = j->status;
    if (rc == 0 && !s->closing && r->state == REC_BACKGROUND)
        rc = rec_page(s, j);
    if (s->closing || r->state != REC_BACKGROUND) {
        my_job_free(j);
        return; /* the store is closing: no more rows for the broker */
    }
    if (rc)
        rec_failed(s, rc, j->status ? j->why : NULL);
    my_job_free(j);
    if (rc)
        return;
    r->backoff_ms = 0;
    if (rec_finished(s))
        rec_finish(s);
    else
        rec_submit(s);
}

static void rec_submit(struct my_store *s)
{
    struct my_job *j = rec_job(s);
    if (!j) {
        rec_failed(s, -ENOMEM, NULL);
        return;
    }
    j->done = rec_done;
    my_submit(s, j);
}

int my_store_recover(struct kq_store *base, kq_store_recover_cb cb, void *ud)
{
    struct my_store *s = (struct my_store *)base;
    struct my_recovery *r = &s->rec;
    if (r->state != REC_IDLE && r->state != REC_DONE)
        return -EBUSY;
    free(r->move[0]);
    free(r->move[1]);
    r->move[0] = r->move[1] = NULL;
    r->cb = cb;
    r->ud = ud;
    r->table = 0;
    r->has_key = false;
    r->now = kq_now_sec();
    r->rows = 0;
    r->t0_us = kq_mono_us();
    r->state = REC_SYNC;
    r->backoff_ms = 0;
    int rc = 0;
    char *why = NULL; /* of the failed job */
    while (rc == 0 && !rec_finished(s)) {
        struct my_job *j = rec_job(s);
        if (!j)
            return -ENOMEM;
        if ((rc = my_pool_run_sync(&s->pool, j)) == 0)
            rc = rec_page(s, j);
        else if (j->why)
            why = strdup(j->why);
        my_job_free(j);
    }
    if (rc == 0) {
        rec_finish(s);
        return 0;
    }
    /* The broker starts all the same: the rest comes in the background. */
    r->state = REC_BACKGROUND;
    KQ_ERROR(MY_MOD,
             "recovery from %s:%u failed at %s_%d.kite_msg_%d after %llu messages: %s; "
             "the store is unavailable until it succeeds",
             s->conf.host, s->conf.port, s->conf.db, r->table / s->conf.hash_num,
             r->table % s->conf.hash_num, (unsigned long long)r->rows, why ? why : strerror(-rc));
    rec_failed(s, rc, why);
    free(why);
    return -EINPROGRESS;
}
