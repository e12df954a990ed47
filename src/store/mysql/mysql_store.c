/* MySQL store: the loop-side half. Builds SQL text, batches delivery state / commits /
 * deletes per shard table, and hands jobs to the worker pool (pool.c); results come back
 * through the pool's mailbox (core/mailbox) and callbacks run on the loop thread; start-up
 * recovery is in recover.c, dead letters in dlq.c, takeover in takeover.c.
 * docs/STORAGE.md "MySQL store".
 *
 * Ordering: every batched operation of one message goes to its shard table's batch, and a
 * table has at most one batch in flight, so the operations of one id are applied in call
 * order. State updates use UPDATE (never an upsert), so a late update cannot bring back a
 * row that was deleted or moved to the DLQ. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <uthash.h>

#include "core/clock.h"
#include "core/log.h"
#include "store/mysql/mysql_internal.h"
#include "store/store_uri.h"

static const struct kq_store_ops mysql_ops;

static struct my_table *table_of(struct my_store *s, const char *id, int *db, int *tb)
{
    kq_mysql_shard(id, s->conf.shardnum, db, tb);
    return &s->tables[*db * s->conf.hash_num + *tb];
}

void my_table_name(struct my_sql *q, const struct my_store *s, int db, int tb)
{
    if (tb < 0)
        my_sql_printf(q, "`%s_%d`.`kite_msg_dlq`", s->conf.db, db);
    else
        my_sql_printf(q, "`%s_%d`.`kite_msg_%d`", s->conf.db, db, tb);
}

static void pend_free(struct pend *p)
{
    free(p->succ);
    free(p->fail);
    free(p->cbs);
    free(p);
}

/* A finished job, from the pool's mailbox (loop thread). */
static void on_job_done(void *ud, struct kq_mail *m)
{
    struct my_store *s = ud;
    struct my_job *j = (struct my_job *)((char *)m - offsetof(struct my_job, mail));
    my_health_note(s, j); /* first: a failure's callback may ask why */
    j->done(s, j);
}

static void outbox_flush(struct my_store *s)
{
    struct my_job *list = s->outbox;
    s->outbox = NULL;
    s->outbox_tail = &s->outbox;
    uv_idle_stop(&s->outbox_idle);
    if (list)
        my_pool_submit_list(&s->pool, list);
}

static void on_outbox_idle(uv_idle_t *h) { outbox_flush(h->data); }

void my_submit(struct my_store *s, struct my_job *j)
{
    j->next = NULL;
    if (s->direct) {
        my_pool_submit(&s->pool, j);
        return;
    }
    *s->outbox_tail = j;
    s->outbox_tail = &j->next;
    if (!uv_is_active((uv_handle_t *)&s->outbox_idle))
        uv_idle_start(&s->outbox_idle, on_outbox_idle);
}

/* --- save -------------------------------------------------------------------------------- */

static void save_done(struct my_store *s, struct my_job *j)
{
    if (j->status == 0)
        s->st.saves_ok++;
    else
        s->st.saves_failed++;
    j->cb(j->ud, j->status);
    my_job_free(j);
}

/* "(...)" for the 16 columns of m; fail_groups = fail (JSON text). */
static void msg_tuple(struct my_sql *q, const struct my_store *s, const struct kq_stored_msg *m,
                      int32_t count, const char *fail, const char *succ, int64_t next_sec)
{
    my_sql_cat(q, "(");
    my_sql_str(q, m->id);
    my_sql_cat(q, ",");
    my_sql_bin(q, m->header, m->header_len);
    my_sql_cat(q, ",");
    my_sql_bin(q, m->body, m->body_len);
    my_sql_printf(q, ",%u,", (unsigned)m->cmd);
    my_sql_str(q, m->topic ? m->topic : "");
    my_sql_cat(q, ",");
    my_sql_str(q, m->message_type ? m->message_type : "");
    my_sql_cat(q, ",");
    my_sql_str(q, m->publish_group ? m->publish_group : "");
    my_sql_printf(q, ",%d,%lld,%lld,%d,%d,", m->commit ? 1 : 0, (long long)m->publish_time,
                  (long long)m->expired_time, (int)count, (int)m->deliver_limit);
    my_sql_str(q, s->conf.server);
    my_sql_cat(q, ",");
    my_sql_str(q, fail);
    my_sql_cat(q, ",");
    my_sql_str(q, succ);
    my_sql_printf(q, ",%lld)", (long long)next_sec);
}

static int my_save(struct kq_store *base, const struct kq_stored_msg *m, kq_store_done_cb cb,
                   void *ud)
{
    struct my_store *s = (struct my_store *)base;
    if (!my_valid_id(m->id) || !cb)
        return -EINVAL;
    if (s->closing)
        return -ESHUTDOWN;
    if (s->rec.state == REC_BACKGROUND)
        return -EAGAIN; /* rows saved now would show up in the recovery still to come */
    struct my_job *j = calloc(1, sizeof *j);
    if (!j)
        return -ENOMEM;
    struct my_sql q = {0};
    msg_tuple(&q, s, m, 0, "[]", "[]",
              m->deliver_at_ms > 0 ? (m->deliver_at_ms + 999) / 1000 : 0); /* never early */
    j->values_len = q.len;
    if (!(j->values = my_sql_take(&q))) {
        free(j);
        return -ENOMEM;
    }
    j->kind = MY_JOB_SAVE;
    j->rows_stmt = -1;
    kq_mysql_shard(m->id, s->conf.shardnum, &j->db, &j->table);
    j->deadline_us = kq_mono_us() + (uint64_t)s->conf.timeout_sec * 1000000;
    j->done = save_done;
    j->cb = cb;
    j->ud = ud;
    my_submit(s, j);
    return 0;
}

/* --- batched commit / update / remove ---------------------------------------------------------- */

struct flush_ctx {
    struct my_table *t;
    struct pend **items;
    size_t n;
};

static void id_list(struct my_sql *q, struct pend **it, size_t n, bool (*pick)(const struct pend *))
{
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        if (!pick(it[i]))
            continue;
        my_sql_cat(q, first ? "(" : ",");
        my_sql_str(q, it[i]->id);
        first = false;
    }
    my_sql_cat(q, ")");
}

static bool pick_commit(const struct pend *p) { return p->commit && !p->del; }
static bool pick_state(const struct pend *p) { return p->has_state && !p->del; }
static bool pick_del(const struct pend *p) { return p->del; }

static size_t count(struct pend **it, size_t n, bool (*pick)(const struct pend *))
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += pick(it[i]);
    return c;
}

/* One multi-row UPDATE: the states as a derived table joined on the primary key (eq_ref,
 * O(n); a CASE per column would compare every row with every id). */
/* "<verb><table><set> WHERE message_id IN (...)" over the picked entries. */
static char *by_ids_sql(struct my_store *s, int db, int tb, const char *verb, const char *set,
                        struct pend **it, size_t n, bool (*pick)(const struct pend *))
{
    struct my_sql q = {0};
    my_sql_cat(&q, verb);
    my_table_name(&q, s, db, tb);
    my_sql_cat(&q, set);
    my_sql_cat(&q, " WHERE message_id IN ");
    id_list(&q, it, n, pick);
    return my_sql_take(&q);
}

static char *state_sql(struct my_store *s, int db, int tb, struct pend **it, size_t n)
{
    struct my_sql q = {0};
    my_sql_cat(&q, "UPDATE ");
    my_table_name(&q, s, db, tb);
    my_sql_cat(&q, " t JOIN (");
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        if (!pick_state(it[i]))
            continue;
        my_sql_cat(&q, first ? "SELECT " : " UNION ALL SELECT ");
        my_sql_str(&q, it[i]->id);
        my_sql_printf(&q, first ? " AS mid,%d AS dc,%lld AS ndt," : ",%d,%lld,",
                      (int)it[i]->attempts, (long long)it[i]->next_sec);
        my_sql_str(&q, it[i]->succ);
        my_sql_cat(&q, first ? " AS sg," : ",");
        my_sql_str(&q, it[i]->fail);
        if (first)
            my_sql_cat(&q, " AS fg");
        first = false;
    }
    my_sql_cat(&q, ") v ON t.message_id=v.mid SET t.deliver_count=v.dc,"
                   "t.next_deliver_time=v.ndt,t.succ_groups=v.sg,t.fail_groups=v.fg");
    return my_sql_take(&q);
}

static void flush_table(struct my_store *s, int idx);

/* Put back what a failed flush carried, unless a newer operation replaced it. */
static void requeue(struct my_table *t, struct pend *p)
{
    struct pend *cur = NULL;
    HASH_FIND_STR(t->map, p->id, cur);
    p->commit = false; /* its callbacks were told: the broker asks again */
    p->n_cbs = 0;
    if (!cur) {
        if (p->del || p->has_state) {
            HASH_ADD_STR(t->map, id, p);
            t->n_upd += p->has_state;
            t->n_del += p->del;
            return;
        }
    } else if (p->del && !cur->del) {
        cur->del = true;
        t->n_del++;
    }
    pend_free(p);
}

static void flush_done(struct my_store *s, struct my_job *j)
{
    struct flush_ctx *fc = j->ctx;
    if (j->status == 0)
        s->st.flushes++;
    else
        s->st.flush_failures++;
    for (size_t i = 0; i < fc->n; i++) {
        struct pend *p = fc->items[i];
        for (size_t k = 0; k < p->n_cbs; k++)
            p->cbs[k].cb(p->cbs[k].ud, j->status);
        if (j->status == 0)
            pend_free(p);
        else
            requeue(fc->t, p);
    }
    fc->t->inflight = false;
    int idx = (int)(fc->t - s->tables);
    free(fc->items);
    free(fc);
    my_job_free(j);
    struct my_table *t = &s->tables[idx];
    /* more work than a batch is waiting: go on now; otherwise the tick picks it up */
    if (t->map &&
        (t->n_upd >= (size_t)s->conf.batch_update || t->n_del >= (size_t)s->conf.batch_del))
        flush_table(s, idx);
}

static void flush_table(struct my_store *s, int idx)
{
    struct my_table *t = &s->tables[idx];
    if (t->inflight || !t->map || s->stopped)
        return;
    int db = idx / s->conf.hash_num, tb = idx % s->conf.hash_num;
    size_t n = HASH_COUNT(t->map);
    if (n > FLUSH_MAX)
        n = FLUSH_MAX;
    struct flush_ctx *fc = calloc(1, sizeof *fc);
    struct pend **it = calloc(n, sizeof *it);
    if (!fc || !it) {
        free(fc);
        free(it);
        return; /* the next tick tries again */
    }
    struct pend *p, *tmp;
    size_t k = 0;
    HASH_ITER (hh, t->map, p, tmp) {
        if (k == n)
            break;
        HASH_DEL(t->map, p);
        it[k++] = p;
    }
    t->n_upd = t->n_del = 0; /* recounted from what stays */
    HASH_ITER (hh, t->map, p, tmp) {
        t->n_upd += p->has_state || p->commit;
        t->n_del += p->del;
    }
    char *stmts[3];
    size_t ns = 0;
    if (count(it, n, pick_commit))
        stmts[ns++] = by_ids_sql(s, db, tb, "UPDATE ", " SET `commit`=1", it, n, pick_commit);
    if (count(it, n, pick_state))
        stmts[ns++] = state_sql(s, db, tb, it, n);
    if (count(it, n, pick_del))
        stmts[ns++] = by_ids_sql(s, db, tb, "DELETE FROM ", "", it, n, pick_del);
    fc->t = t;
    fc->items = it;
    fc->n = n;
    struct my_job *j = my_job_script(true, flush_done, ns, stmts);
    if (!j) {
        fc->items = it;
        for (size_t i = 0; i < n; i++)
            requeue(t, it[i]);
        free(it);
        free(fc);
        return;
    }
    j->ctx = fc;
    t->inflight = true;
    my_submit(s, j);
}

static struct pend *pend_get(struct my_store *s, const char *id, int *idx)
{
    int db, tb;
    struct my_table *t = table_of(s, id, &db, &tb);
    *idx = db * s->conf.hash_num + tb;
    struct pend *p = NULL;
    HASH_FIND_STR(t->map, id, p);
    if (p)
        return p;
    if (!(p = calloc(1, sizeof *p)))
        return NULL;
    strcpy(p->id, id);
    HASH_ADD_STR(t->map, id, p);
    return p;
}

static void maybe_flush(struct my_store *s, int idx, bool now)
{
    struct my_table *t = &s->tables[idx];
    if (now || t->n_upd >= (size_t)s->conf.batch_update || t->n_del >= (size_t)s->conf.batch_del)
        flush_table(s, idx);
}

static int my_commit(struct kq_store *base, const char *id, kq_store_done_cb cb, void *ud)
{
    struct my_store *s = (struct my_store *)base;
    if (!my_valid_id(id))
        return -EINVAL;
    int idx;
    struct pend *p = pend_get(s, id, &idx);
    if (!p)
        return -ENOMEM;
    if (cb) {
        struct commit_cb *c = realloc(p->cbs, (p->n_cbs + 1) * sizeof *c);
        if (!c)
            return -ENOMEM;
        p->cbs = c;
        c[p->n_cbs++] = (struct commit_cb){cb, ud};
    }
    if (!p->commit && !p->has_state)
        s->tables[idx].n_upd++;
    p->commit = true;
    /* a producer's transaction waits for this: flush now (group commit with what is
     * pending), not after flushSeconds */
    maybe_flush(s, idx, true);
    return 0;
}

static int my_update(struct kq_store *base, const struct kq_delivery_state *st)
{
    struct my_store *s = (struct my_store *)base;
    if (!my_valid_id(st->id))
        return -EINVAL;
    char *succ = my_groups_json(st->groups_done, st->n_done, COL_VARCHAR);
    char *fail = my_groups_json(st->groups_failed, st->n_failed, COL_VARCHAR);
    int idx;
    struct pend *p = succ && fail ? pend_get(s, st->id, &idx) : NULL;
    if (!p) {
        free(succ);
        free(fail);
        return -ENOMEM;
    }
    if (p->del) { /* removed already: nothing to record */
        free(succ);
        free(fail);
        return 0;
    }
    if (!p->has_state && !p->commit)
        s->tables[idx].n_upd++;
    free(p->succ);
    free(p->fail);
    p->succ = succ;
    p->fail = fail;
    p->has_state = true;
    p->attempts = st->attempts;
    /* the column is in seconds: round up so that a retry is never brought forward */
    p->next_sec = st->next_attempt_ms > 0 ? (st->next_attempt_ms + 999) / 1000 : 0;
    maybe_flush(s, idx, false);
    return 0;
}

static int my_remove(struct kq_store *base, const char *id)
{
    struct my_store *s = (struct my_store *)base;
    if (!my_valid_id(id))
        return -EINVAL;
    int idx;
    struct pend *p = pend_get(s, id, &idx);
    if (!p)
        return -ENOMEM;
    if (!p->del)
        s->tables[idx].n_del++;
    p->del = true;
    p->has_state = false;
    maybe_flush(s, idx, false);
    return 0;
}

/* --- dead letters ---------------------------------------------------------------------------- */

/* The fail_groups and succ_groups texts of a dead letter's row (dlq_row.c). 0 or -ENOMEM. */
static int dead_columns(const struct kq_dlq_groups *g, char **fail, char **succ)
{
    const char **names = malloc((g->n_failed + 1) * sizeof *names);
    if (!names)
        return -ENOMEM;
    for (size_t i = 0; i < g->n_failed; i++)
        names[i] = g->failed[i].group;
    *fail = my_groups_json(names, g->n_failed, COL_VARCHAR);
    *succ = my_groups_json((const char **)g->acked, g->n_acked, COL_VARCHAR);
    free(names);
    if (*fail && *succ)
        return 0;
    cJSON_free(*fail);
    cJSON_free(*succ);
    return -ENOMEM;
}

/* ctx: "topic\0group" of the dead letter, for the counters. */
static void dead_done(struct my_store *s, struct my_job *j)
{
    if (j->status == 0 || s->closing || ++j->attempts >= DEAD_LETTER_TRIES) {
        if (j->status)
            KQ_ERROR(MY_MOD, "dead letter not moved after %d tries: %s", j->attempts,
                     strerror(-j->status));
        /* REPLACE says 1 for a new DLQ row (2 replaced one); the INSERT IGNORE, if any, 1 */
        bool added = j->affected[0] == 1 || (j->n_stmts == 3 && j->affected[1] == 1);
        const char *topic = j->ctx;
        if (j->status == 0 && added && topic)
            my_dlq_changed(s, topic, topic + strlen(topic) + 1, 1);
        free(j->ctx);
        my_job_free(j);
        return;
    }
    j->next = s->retry; /* resubmitted by the next tick */
    s->retry = j;
}

static int my_dead_letter(struct kq_store *base, const struct kq_stored_msg *m, const char *reason,
                          const struct kq_dlq_groups *groups)
{
    struct my_store *s = (struct my_store *)base;
    if (!my_valid_id(m->id))
        return -EINVAL;
    int db, tb;
    struct my_table *t = table_of(s, m->id, &db, &tb);
    struct pend *p = NULL;
    HASH_FIND_STR(t->map, m->id, p);
    if (p) { /* the row leaves the table: its queued operations are moot */
        HASH_DEL(t->map, p);
        for (size_t k = 0; k < p->n_cbs; k++)
            p->cbs[k].cb(p->cbs[k].ud, -ECANCELED);
        pend_free(p);
    }
    size_t flen = 0;
    char *field = my_dead_field(reason, kq_now_sec(), groups, &flen), *fail = NULL, *succ = NULL;
    uint8_t *header = field && m->header ? malloc((size_t)m->header_len + flen) : NULL;
    if (!field || (m->header && !header) || (groups && dead_columns(groups, &fail, &succ))) {
        free(field);
        free(header);
        return -ENOMEM;
    }
    char *stmts[3] = {0};
    size_t n = 0;
    struct my_sql q = {0};
    my_sql_cat(&q, "REPLACE INTO ");
    my_table_name(&q, s, db, -1);
    my_sql_cat(&q, " (" MY_COLS ") SELECT message_id,CONCAT(header,");
    my_sql_bin(&q, (const uint8_t *)field, flen);
    my_sql_cat(&q, "),body,msg_type,topic,message_type,publish_group,`commit`,publish_time,"
                   "expired_time,deliver_count,deliver_limit,kite_server,");
    my_sql_cat(&q, fail ? "" : "fail_groups");
    if (fail)
        my_sql_str(&q, fail);
    my_sql_cat(&q, fail ? "," : ",succ_groups");
    if (succ)
        my_sql_str(&q, succ);
    my_sql_cat(&q, ",next_deliver_time FROM ");
    my_table_name(&q, s, db, tb);
    my_sql_cat(&q, " WHERE message_id=");
    my_sql_str(&q, m->id);
    stmts[n++] = my_sql_take(&q);
    if (m->header) { /* not in the table (or not yet): store what the caller gave */
        struct kq_stored_msg dm = *m;
        memcpy(header, m->header, m->header_len);
        memcpy(header + m->header_len, field, flen);
        dm.header = header;
        dm.header_len = m->header_len + (uint32_t)flen;
        my_sql_cat(&q, "INSERT IGNORE INTO ");
        my_table_name(&q, s, db, -1);
        my_sql_cat(&q, " (" MY_COLS ") VALUES ");
        msg_tuple(&q, s, &dm, 0, fail ? fail : "[]", succ ? succ : "[]", 0);
        stmts[n++] = my_sql_take(&q);
    }
    my_sql_cat(&q, "DELETE FROM ");
    my_table_name(&q, s, db, tb);
    my_sql_cat(&q, " WHERE message_id=");
    my_sql_str(&q, m->id);
    stmts[n++] = my_sql_take(&q);
    free(field);
    free(header);
    cJSON_free(fail);
    cJSON_free(succ);
    struct my_job *j = my_job_script(true, dead_done, n, stmts);
    if (!j)
        return -ENOMEM;
    const char *topic = m->topic ? m->topic : "", *group = m->publish_group ? m->publish_group : "";
    size_t tl = strlen(topic), gl = strlen(group);
    if ((j->ctx = malloc(tl + gl + 2))) { /* without it only the next count sees the letter */
        memcpy(j->ctx, topic, tl + 1);
        memcpy((char *)j->ctx + tl + 1, group, gl + 1);
    }
    my_submit(s, j);
    return 0;
}

/* --- rows -> messages -------------------------------------------------------------------------- */

void my_row_msg(const struct my_rows *r, size_t i, struct kq_stored_msg *m)
{
    memset(m, 0, sizeof *m);
    const struct my_cell *id = my_cell(r, i, C_ID);
    snprintf(m->id, sizeof m->id, "%s", id->p ? id->p : "");
    m->cmd = (uint8_t)my_cell_i64(my_cell(r, i, C_TYPE));
    m->topic = my_cell(r, i, C_TOPIC)->p ? my_cell(r, i, C_TOPIC)->p : "";
    m->message_type = my_cell(r, i, C_MTYPE)->p ? my_cell(r, i, C_MTYPE)->p : "";
    m->publish_group = my_cell(r, i, C_GROUP)->p ? my_cell(r, i, C_GROUP)->p : "";
    m->commit = my_cell_i64(my_cell(r, i, C_COMMIT)) != 0;
    m->publish_time = my_cell_i64(my_cell(r, i, C_PUBLISH));
    m->expired_time = my_cell_i64(my_cell(r, i, C_EXPIRED));
    m->deliver_limit = (int32_t)my_cell_i64(my_cell(r, i, C_LIMIT));
    const struct my_cell *h = my_cell(r, i, C_HEADER), *b = my_cell(r, i, C_BODY);
    m->header = (const uint8_t *)(h->p ? h->p : "");
    m->header_len = (uint32_t)h->len;
    m->body = (const uint8_t *)(b->p ? b->p : "");
    m->body_len = (uint32_t)b->len;
}

void my_select_cols(struct my_sql *q, const struct my_store *s, int db, int tb)
{
    my_sql_cat(q, "SELECT " MY_COLS " FROM ");
    my_table_name(q, s, db, tb);
}

static void load_done(struct my_store *s, struct my_job *j)
{
    kq_store_load_cb cb = (kq_store_load_cb)(void (*)(void))j->cb;
    if (j->status == 0 && (!j->rows || j->rows->n == 0))
        j->status = -ENOENT;
    if (j->status) {
        cb(j->ud, j->status, NULL);
    } else {
        struct kq_stored_msg m;
        my_row_msg(j->rows, 0, &m);
        cb(j->ud, 0, &m);
    }
    my_job_free(j);
}

static int my_load(struct kq_store *base, const char *id, kq_store_load_cb cb, void *ud)
{
    struct my_store *s = (struct my_store *)base;
    if (!my_valid_id(id) || !cb)
        return -EINVAL;
    int db, tb;
    kq_mysql_shard(id, s->conf.shardnum, &db, &tb);
    struct my_sql q = {0};
    my_select_cols(&q, s, db, tb);
    my_sql_cat(&q, " WHERE message_id=");
    my_sql_str(&q, id);
    char *sql = my_sql_take(&q);
    struct my_job *j = my_job_script(false, load_done, 1, &sql);
    if (!j)
        return -ENOMEM;
    j->rows_stmt = 0;
    j->cb = (kq_store_done_cb)(void (*)(void))cb;
    j->ud = ud;
    my_submit(s, j);
    return 0;
}

bool my_is_mysql_store(const struct kq_store *base) { return base && base->ops == &mysql_ops; }

/* kq_store_ops.owner: rows carry kite_server; brokers sharing host:port:db see each other. */
static int my_owner(const struct kq_store *base, const char **self, char *shared, size_t len)
{
    const struct my_store *s = (const struct my_store *)base;
    *self = s->conf.server;
    snprintf(shared, len, "%s:%u:%s", s->conf.host, s->conf.port, s->conf.db);
    return 0;
}

int kq_mysql_store_stats(struct kq_store *base, struct kq_mysql_stats *out)
{
    if (!my_is_mysql_store(base))
        return -EINVAL;
    struct my_store *s = (struct my_store *)base;
    *out = s->st;
    out->reconnects = atomic_load(&s->pool.reconnects);
    out->save_batches = atomic_load(&s->pool.save_batches);
    return 0;
}

/* --- tick, close, open ----------------------------------------------------------------------- */

static void on_tick(uv_timer_t *t)
{
    struct my_store *s = t->data;
    for (int i = 0; i < KQ_MYSQL_SHARD_SEED; i++)
        flush_table(s, i);
    my_dlq_count_tick(s);
    struct my_job *r = s->retry;
    s->retry = NULL;
    while (r) {
        struct my_job *j = r;
        r = r->next;
        my_submit(s, j);
    }
}

static void handle_closed(void *ud)
{
    struct my_store *s = ud;
    if (--s->handles_open == 0)
        free(s);
}

static void on_closed(uv_handle_t *h) { handle_closed(h->data); }

static bool batches_pending(struct my_store *s)
{
    for (int i = 0; i < KQ_MYSQL_SHARD_SEED; i++)
        if (s->tables[i].inflight || s->tables[i].map)
            return true;
    return false;
}

/* Flush the batches (blocking: this is shutdown; a few rounds, so a server that stays down
 * cannot hold the broker), let the workers finish what is queued, run the callbacks. */
static void my_close(struct kq_store *base)
{
    struct my_store *s = (struct my_store *)base;
    uv_timer_stop(&s->tick);
    uv_timer_stop(&s->rec.timer);
    uv_timer_stop(&s->avail.probe);
    s->direct = true;
    outbox_flush(s);
    if (s->rec.state == REC_BACKGROUND) /* abandoned: the rows stay for the next start */
        s->rec.state = REC_IDLE;
    uint64_t until = kq_mono_us() + 2ull * (uint64_t)s->conf.timeout_sec * 1000000;
    while (batches_pending(s) && kq_mono_us() < until) {
        for (int i = 0; i < KQ_MYSQL_SHARD_SEED; i++)
            flush_table(s, i);
        kq_mailbox_drain(&s->pool.done, 100);
    }
    s->closing = true;
    on_tick(&s->tick); /* one last try for dead letters */
    my_pool_stop(&s->pool);
    s->stopped = true;
    kq_mailbox_close(&s->pool.done, handle_closed); /* (runs what the workers finished) */
    for (int i = 0; i < KQ_MYSQL_SHARD_SEED; i++) {
        struct pend *p, *tmp;
        HASH_ITER (hh, s->tables[i].map, p, tmp) {
            HASH_DEL(s->tables[i].map, p);
            for (size_t k = 0; k < p->n_cbs; k++)
                p->cbs[k].cb(p->cbs[k].ud, -EIO);
            pend_free(p);
        }
    }
    while (s->retry) {
        struct my_job *j = s->retry;
        s->retry = j->next;
        free(j->ctx);
        my_job_free(j);
    }
    kq_dlq_counts_free(&s->dlq);
    pthread_mutex_destroy(&s->pool.mu);
    pthread_cond_destroy(&s->pool.work_cv);
    pthread_cond_destroy(&s->pool.done_cv);
    uv_close((uv_handle_t *)&s->tick, on_closed);
    uv_close((uv_handle_t *)&s->rec.timer, on_closed);
    uv_close((uv_handle_t *)&s->outbox_idle, on_closed);
    uv_close((uv_handle_t *)&s->avail.probe, on_closed);
    free(s->rec.move[0]);
    free(s->rec.move[1]);
}

static const struct kq_store_ops mysql_ops = {
    .name = "mysql",
    .save = my_save,
    .commit = my_commit,
    .update = my_update,
    .remove = my_remove,
    .dead_letter = my_dead_letter,
    .load = my_load,
    .recover = my_store_recover,
    .unavailable = my_store_unavailable,
    .dlq_counts = my_dlq_counts,
    .dlq_page = my_dlq_page,
    .dlq_get = my_dlq_get,
    .dlq_take = my_dlq_take,
    .dlq_purge = my_dlq_purge,
    .close = my_close,
    .stats = my_stats,
    .owner = my_owner,
    .takeover = my_takeover,
};

static int copy_param(const struct kq_store_uri *u, const char *key, const char *def, char *dst,
                      size_t n, char *err, size_t errlen)
{
    const char *v = kq_store_uri_get(u, key);
    if (!v)
        v = def;
    if (strlen(v) >= n) {
        snprintf(err, errlen, "mysql store: %s is too long", key);
        return -EINVAL;
    }
    strcpy(dst, v);
    return 0;
}

static int parse_conf(const struct kq_store_uri *u, struct my_conf *c, char *err, size_t errlen)
{
    static const char *const allowed[] = {"db",
                                          "username",
                                          "password",
                                          "shardnum",
                                          "batchUpdateSize",
                                          "batchDelSize",
                                          "flushSeconds",
                                          "maxConn",
                                          "server",
                                          "timeout",
                                          NULL};
    int rc = kq_store_uri_check(u, allowed, err, errlen);
    if (rc)
        return rc;
    /* "master:3306[,slave:3306][/]": the slave of the original is not used (reads go to
     * the master, which always has the latest state) */
    char hosts[sizeof u->path];
    snprintf(hosts, sizeof hosts, "%s", u->path);
    hosts[strcspn(hosts, ",/")] = 0;
    char *colon = strrchr(hosts, ':');
    long port = 3306;
    if (colon) {
        char *end;
        port = strtol(colon + 1, &end, 10);
        if (*end || port <= 0 || port > 65535) {
            snprintf(err, errlen, "mysql store: bad port in '%s'", u->path);
            return -EINVAL;
        }
        *colon = 0;
    }
    if (!hosts[0] || strlen(hosts) >= sizeof c->host) {
        snprintf(err, errlen, "mysql store: expected mysql://HOST[:PORT]?db=..., got host '%s'",
                 u->path);
        return -EINVAL;
    }
    strcpy(c->host, hosts);
    c->port = (unsigned)port;
    char hn[256] = "localhost";
    gethostname(hn, sizeof hn - 1);
    if ((rc = copy_param(u, "db", "kite", c->db, sizeof c->db, err, errlen)) ||
        (rc = copy_param(u, "username", "root", c->user, sizeof c->user, err, errlen)) ||
        (rc = copy_param(u, "password", "", c->password, sizeof c->password, err, errlen)) ||
        (rc = copy_param(u, "server", hn, c->server, sizeof c->server, err, errlen)))
        return rc;
    char *probe = kq_mysql_schema_sql(1, c->db);
    if (!probe) {
        snprintf(err, errlen, "mysql store: db '%s' must be 1-48 characters [A-Za-z0-9_]", c->db);
        return -EINVAL;
    }
    free(probe);
    if (!c->server[0]) {
        snprintf(err, errlen, "mysql store: server must not be empty");
        return -EINVAL;
    }
    int64_t v[6];
    if ((rc = kq_store_uri_int(u, "shardnum", 4, 1, 16, &v[0], err, errlen)) ||
        (rc = kq_store_uri_int(u, "batchUpdateSize", 100, 1, 100000, &v[1], err, errlen)) ||
        (rc = kq_store_uri_int(u, "batchDelSize", 100, 1, 100000, &v[2], err, errlen)) ||
        (rc = kq_store_uri_int(u, "flushSeconds", 1, 1, 3600, &v[3], err, errlen)) ||
        (rc = kq_store_uri_int(u, "maxConn", 20, 1, 256, &v[4], err, errlen)) ||
        (rc = kq_store_uri_int(u, "timeout", 5, 1, 300, &v[5], err, errlen)))
        return rc;
    if (!kq_mysql_shardnum_valid((int)v[0])) {
        snprintf(err, errlen, "mysql store: shardnum=%lld must divide 16 (1, 2, 4, 8 or 16)",
                 (long long)v[0]);
        return -EINVAL;
    }
    c->shardnum = (int)v[0];
    c->hash_num = KQ_MYSQL_SHARD_SEED / c->shardnum;
    c->batch_update = (int)v[1];
    c->batch_del = (int)v[2];
    c->flush_sec = (int)v[3];
    c->max_conn = (int)v[4];
    c->timeout_sec = (int)v[5];
    return 0;
}

int kq_mysql_store_check(const struct kq_store_uri *u, char *err, size_t errlen)
{
    struct my_conf c;
    return parse_conf(u, &c, err, errlen);
}

int kq_mysql_store_open(uv_loop_t *loop, const struct kq_store_uri *u, struct kq_store **out,
                        char *err, size_t errlen)
{
    struct my_store *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    int rc = parse_conf(u, &s->conf, err, errlen);
    if (rc) {
        free(s);
        return rc;
    }
    s->base.ops = &mysql_ops;
    s->base.loop = loop;
    if ((rc = my_pool_start(&s->pool, loop, &s->conf, on_job_done, s))) {
        snprintf(err, errlen, "mysql store: cannot start workers: %s", strerror(-rc));
        free(s);
        return rc;
    }
    uv_timer_init(loop, &s->tick);
    s->tick.data = s;
    uv_timer_init(loop, &s->rec.timer);
    s->rec.timer.data = s;
    uv_idle_init(loop, &s->outbox_idle);
    s->outbox_idle.data = s;
    s->outbox_tail = &s->outbox;
    my_health_start(s);
    s->handles_open = 5;
    uv_timer_start(&s->tick, on_tick, (uint64_t)s->conf.flush_sec * 1000,
                   (uint64_t)s->conf.flush_sec * 1000);
    uv_unref((uv_handle_t *)&s->tick);
    my_dlq_count_tick(s); /* the first count; /stat and /metrics wait for it */
    KQ_INFO(MY_MOD, "store %s:%u db=%s_0..%d server=%s workers=%d batch=%d/%d flush=%ds",
            s->conf.host, s->conf.port, s->conf.db, s->conf.shardnum - 1, s->conf.server,
            s->conf.max_conn, s->conf.batch_update, s->conf.batch_del, s->conf.flush_sec);
    *out = &s->base;
    return 0;
}
