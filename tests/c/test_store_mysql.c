/* MySQL store against a real MariaDB on 127.0.0.1. MYSQL_HOST/PORT/USER/PASSWORD come from
 * the environment; when MYSQL_HOST is unset the test starts a private server through
 * scripts/services-up.sh BASE mysql (support/mariadb_service.h) and stops it at the end.
 * Each run uses its own databases kqt<pid>_0... */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <mysql.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "core/clock.h"
#include "core/log.h"
#include "store/mysql/mysql_store.h"
#include "store/store.h"
#include "support/dlq_sync.h"
#include "support/mariadb_service.h"
#include "support/test_files.h"

static struct {
    struct mariadb_service my; /* pid, when known, enables the outage test */
    char db[32];
    MYSQL *c; /* the test's own connection, for checks */
    uv_loop_t loop;
    bool loop_ready;
    int seq;
} E;

/* --- environment ---------------------------------------------------------------------------- */

static int run_sql(const char *sql)
{
    if (mysql_real_query(E.c, sql, strlen(sql))) {
        fprintf(stderr, "SQL failed: %s\n  %s\n", mysql_error(E.c), sql);
        return -1;
    }
    do {
        MYSQL_RES *r = mysql_store_result(E.c);
        if (r)
            mysql_free_result(r);
    } while (mysql_next_result(E.c) == 0);
    return mysql_errno(E.c) ? -1 : 0;
}

/* First column of the first row as an integer (-1 on error / no row). */
__attribute__((format(printf, 1, 2))) static long long sql_int(const char *fmt, ...)
{
    char sql[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    long long v;
    return mariadb_query_int(E.c, sql, &v) == 0 ? v : -1;
}

/* First column of the first row as text into out. */
__attribute__((format(printf, 3, 4))) static void sql_text(char *out, size_t n, const char *fmt,
                                                           ...)
{
    char sql[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    out[0] = 0;
    if (mysql_query(E.c, sql))
        return;
    MYSQL_RES *r = mysql_store_result(E.c);
    MYSQL_ROW row = r ? mysql_fetch_row(r) : NULL;
    if (row && row[0])
        snprintf(out, n, "%s", row[0]);
    if (r)
        mysql_free_result(r);
}

static MYSQL *connect_direct(void) { return mariadb_service_connect(&E.my, 0); }

static int group_setup(void **state)
{
    (void)state;
    kq_log_set_level(getenv("KQ_TEST_LOG") ? KQ_LOG_DEBUG : KQ_LOG_ERROR);
    if (mariadb_service_start(&E.my, "kqmy.") != 0)
        return -1;
    if (!(E.c = connect_direct())) {
        fprintf(stderr, "test_store_mysql: cannot connect to MariaDB at %s:%u as %s\n", E.my.host,
                E.my.port, E.my.user);
        return -1;
    }
    snprintf(E.db, sizeof E.db, "kqt%d", (int)getpid());
    char *schema = kq_mysql_schema_sql(4, E.db);
    int rc = schema ? run_sql(schema) : -1;
    free(schema);
    E.loop_ready = uv_loop_init(&E.loop) == 0;
    return rc;
}

static int group_teardown(void **state)
{
    (void)state;
    if (E.c) {
        mariadb_service_drop_shards(E.c, E.db, 4);
        mysql_close(E.c);
    }
    if (E.loop_ready)
        uv_loop_close(&E.loop);
    mariadb_service_stop(&E.my);
    return 0;
}

/* --- store helpers ------------------------------------------------------------------------- */

static struct kq_store *open_store(const char *server, const char *extra)
{
    char uri[1024], err[256];
    snprintf(uri, sizeof uri,
             "mysql://%s:%u?db=%s&username=%s&password=%s&shardnum=4&maxConn=4&server=%s%s%s",
             E.my.host, E.my.port, E.db, E.my.user, E.my.pass, server, extra ? "&" : "",
             extra ? extra : "");
    struct kq_store *s = NULL;
    int rc = kq_store_open(&E.loop, uri, &s, err, sizeof err);
    if (rc)
        fprintf(stderr, "open %s: %s\n", uri, err);
    assert_int_equal(rc, 0);
    return s;
}

static void close_store(struct kq_store *s)
{
    s->ops->close(s);
    uv_run(&E.loop, UV_RUN_NOWAIT);
}

static void on_wake(uv_timer_t *t) { (void)t; }

/* Run the loop until cond(arg) or timeout; true when cond held. */
static bool run_until(bool (*cond)(void *), void *arg, int timeout_ms)
{
    uv_timer_t t;
    uv_timer_init(&E.loop, &t);
    uv_timer_start(&t, on_wake, 20, 20);
    uint64_t end = kq_mono_us() + (uint64_t)timeout_ms * 1000;
    bool ok;
    while (!(ok = cond(arg)) && kq_mono_us() < end)
        uv_run(&E.loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&E.loop, UV_RUN_NOWAIT);
    return ok;
}

struct waiter {
    int calls, ok, failed, last;
    uint64_t max_latency_us, t0;
};

static void on_done(void *ud, int status)
{
    struct waiter *w = ud;
    w->calls++;
    if (status == 0)
        w->ok++;
    else
        w->failed++;
    w->last = status;
    uint64_t lat = kq_mono_us() - w->t0;
    if (lat > w->max_latency_us)
        w->max_latency_us = lat;
}

struct count_goal {
    struct waiter *w;
    int n;
};
static bool calls_reached(void *a)
{
    struct count_goal *g = a;
    return g->w->calls >= g->n;
}

static bool wait_calls(struct waiter *w, int n, int timeout_ms)
{
    struct count_goal g = {w, n};
    return run_until(calls_reached, &g, timeout_ms);
}

/* A 32-character id whose last hex digit is h, unique in this run. */
static void make_id(char *id, int h)
{
    unsigned n = (unsigned)++E.seq;
    snprintf(id, KQ_ID_LEN + 1, "%08x%08x%015x%x", (unsigned)getpid(), n, n, h & 15);
}

static const uint8_t HEADER[] = {0x0a, 0x02, 'h', 0, '\'', '\\', '"', 0x1a, 0xff, '\n'};

static struct kq_stored_msg make_msg(const char *id, const char *topic, const uint8_t *body,
                                     uint32_t body_len)
{
    struct kq_stored_msg m;
    memset(&m, 0, sizeof m);
    snprintf(m.id, sizeof m.id, "%s", id);
    m.cmd = 0x11;
    m.topic = topic;
    m.message_type = "pay-succ";
    m.publish_group = "p-trade";
    m.commit = true;
    m.publish_time = kq_now_sec();
    m.expired_time = kq_now_sec() + 3600;
    m.deliver_limit = 10;
    m.header = HEADER;
    m.header_len = sizeof HEADER;
    m.body = body;
    m.body_len = body_len;
    return m;
}

/* Save n messages (ids[i] ending in hex digit i % 16) and wait for every ack. */
static void save_n(struct kq_store *s, char (*ids)[KQ_ID_LEN + 1], int n, const char *topic)
{
    struct waiter w = {.t0 = kq_mono_us()};
    for (int i = 0; i < n; i++) {
        make_id(ids[i], i);
        char body[64];
        int bl = snprintf(body, sizeof body, "body-%d-", i);
        memcpy(body + bl, "\0-'x'\\", 6); /* bytes that need escaping */
        struct kq_stored_msg m = make_msg(ids[i], topic, (const uint8_t *)body, (uint32_t)bl + 6);
        assert_int_equal(s->ops->save(s, &m, on_done, &w), 0);
    }
    assert_true(wait_calls(&w, n, 10000));
    assert_int_equal(w.ok, n);
}

static long long rows_of(const char *id)
{
    int db, tb;
    kq_mysql_shard(id, 4, &db, &tb);
    return sql_int("SELECT COUNT(*) FROM `%s_%d`.`kite_msg_%d` WHERE message_id='%s'", E.db, db, tb,
                   id);
}

static long long all_rows(const char *where)
{
    long long n = 0;
    for (int d = 0; d < 4; d++)
        for (int t = 0; t < 4; t++)
            n += sql_int("SELECT COUNT(*) FROM `%s_%d`.`kite_msg_%d` WHERE %s", E.db, d, t, where);
    return n;
}

static long long dlq_rows(const char *where)
{
    long long n = 0;
    for (int d = 0; d < 4; d++)
        n += sql_int("SELECT COUNT(*) FROM `%s_%d`.`kite_msg_dlq` WHERE %s", E.db, d, where);
    return n;
}

/* --- tests ---------------------------------------------------------------------------------- */

static void test_uri_errors(void **state)
{
    (void)state;
    static const struct {
        const char *uri, *needle;
    } cases[] = {
        {"mysql://127.0.0.1:3306?shardnum=3", "shardnum"},
        {"mysql://127.0.0.1:3306?shardnum=32", "shardnum"},
        {"mysql://?db=kite", "host"},
        {"mysql://127.0.0.1:99999?db=kite", "port"},
        {"mysql://127.0.0.1?bogus=1", "bogus"},
        {"mysql://127.0.0.1?db=bad-name", "db"},
        {"mysql://127.0.0.1?maxConn=0", "maxConn"},
        {"mysql://127.0.0.1?batchUpdateSize=x", "batchUpdateSize"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[256] = "";
        struct kq_store *s = NULL;
        assert_int_equal(kq_store_open(&E.loop, cases[i].uri, &s, err, sizeof err), -EINVAL);
        assert_null(s);
        if (!strstr(err, cases[i].needle))
            fail_msg("%s: reason '%s' does not mention %s", cases[i].uri, err, cases[i].needle);
    }
}

static void test_shard_placement_function(void **state)
{
    (void)state;
    static const int nums[] = {1, 2, 4, 8, 16};
    const char *hex = "0123456789abcdef";
    for (size_t k = 0; k < 5; k++)
        for (int h = 0; h < 16; h++) {
            char id[4] = {'x', 'y', hex[h], 0};
            int db, tb, hn = 16 / nums[k];
            kq_mysql_shard(id, nums[k], &db, &tb);
            assert_int_equal(db, h / hn);
            assert_int_equal(tb, h % hn);
        }
    int db, tb;
    kq_mysql_shard("abcF", 4, &db, &tb);
    assert_true(db == 3 && tb == 3);
    kq_mysql_shard("abcz", 4, &db, &tb); /* not hex: shard 0, as the original */
    assert_true(db == 0 && tb == 0);
    assert_null(kq_mysql_schema_sql(3, "kite"));
    assert_null(kq_mysql_schema_sql(4, "ki`te"));
}

static void test_schema(void **state)
{
    (void)state;
    assert_int_equal(sql_int("SELECT COUNT(*) FROM information_schema.TABLES WHERE "
                             "TABLE_SCHEMA LIKE '%s\\_%%'",
                             E.db),
                     20);
    for (int d = 0; d < 4; d++) {
        for (int t = 0; t < 4; t++)
            assert_int_equal(sql_int("SELECT COUNT(*) FROM information_schema.TABLES WHERE "
                                     "TABLE_SCHEMA='%s_%d' AND TABLE_NAME='kite_msg_%d'",
                                     E.db, d, t),
                             1);
        assert_int_equal(sql_int("SELECT COUNT(*) FROM information_schema.TABLES WHERE "
                                 "TABLE_SCHEMA='%s_%d' AND TABLE_NAME='kite_msg_dlq'",
                                 E.db, d),
                         1);
    }
    char cols[1024], idx[512], rec[256];
    sql_text(
        cols, sizeof cols,
        "SELECT GROUP_CONCAT(COLUMN_NAME ORDER BY ORDINAL_POSITION) "
        "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA='%s_3' AND TABLE_NAME='kite_msg_2'",
        E.db);
    assert_string_equal(cols, "id,header,body,msg_type,message_id,topic,message_type,"
                              "publish_group,commit,expired_time,publish_time,deliver_count,"
                              "deliver_limit,kite_server,fail_groups,succ_groups,"
                              "next_deliver_time");
    sql_text(
        idx, sizeof idx,
        "SELECT GROUP_CONCAT(DISTINCT INDEX_NAME ORDER BY INDEX_NAME) FROM "
        "information_schema.STATISTICS WHERE TABLE_SCHEMA='%s_1' AND TABLE_NAME='kite_msg_dlq'",
        E.db);
    assert_string_equal(idx, "idx_commit,idx_expired_time,idx_id,idx_kite_server,idx_recover_a,"
                             "PRIMARY");
    sql_text(rec, sizeof rec,
             "SELECT GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX) FROM "
             "information_schema.STATISTICS WHERE TABLE_SCHEMA='%s_0' AND TABLE_NAME='kite_msg_0' "
             "AND INDEX_NAME='idx_recover_a'",
             E.db);
    assert_string_equal(rec, "next_deliver_time,kite_server,expired_time,deliver_count,"
                             "deliver_limit");
    char type[64];
    sql_text(type, sizeof type,
             "SELECT COLUMN_TYPE FROM information_schema.COLUMNS WHERE "
             "TABLE_SCHEMA='%s_0' AND TABLE_NAME='kite_msg_0' AND COLUMN_NAME='message_id'",
             E.db);
    assert_string_equal(type, "varchar(32)");
    /* idempotent */
    char *schema = kq_mysql_schema_sql(4, E.db);
    assert_int_equal(run_sql(schema), 0);
    free(schema);
}

/* kiteq-cli mysql init creates the same schema (here with shardnum 2: 2 x (8 + dlq)). */
static void test_cli_init(void **state)
{
    (void)state;
    char cli[512], cmd[1400], db[40];
    snprintf(cli, sizeof cli, "%s/kiteq-cli", test_build_dir());
    if (access(cli, X_OK) != 0)
        skip();
    snprintf(db, sizeof db, "kqc%d", (int)getpid());
    snprintf(cmd, sizeof cmd,
             "'%s' mysql init --host %s:%u --user '%s' --password '%s' --db %s "
             "--shardnum 2 >/dev/null",
             cli, E.my.host, E.my.port, E.my.user, E.my.pass, db);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(sql_int("SELECT COUNT(*) FROM information_schema.TABLES WHERE "
                             "TABLE_SCHEMA LIKE '%s\\_%%'",
                             db),
                     18);
    assert_int_equal(sql_int("SELECT COUNT(*) FROM information_schema.TABLES WHERE "
                             "TABLE_SCHEMA='%s_1' AND TABLE_NAME='kite_msg_7'",
                             db),
                     1);
    char sql[128];
    for (int d = 0; d < 2; d++) {
        snprintf(sql, sizeof sql, "DROP DATABASE `%s_%d`", db, d);
        assert_int_equal(run_sql(sql), 0);
    }
}

struct recovered {
    int n;
    char ids[64][KQ_ID_LEN + 1];
    struct kq_delivery_state st[64];
    bool has_state[64];
    char groups[64][128];
    bool intact[64];
};

struct load_res {
    int calls, status;
    char topic[32];
    uint32_t body_len;
    bool intact; /* header and body as saved by save_n */
};
static void on_load(void *ud, int status, const struct kq_stored_msg *m)
{
    struct load_res *l = ud;
    l->calls++;
    l->status = status;
    if (m) {
        snprintf(l->topic, sizeof l->topic, "%s", m->topic);
        l->body_len = m->body_len;
        l->intact = m->header_len == sizeof HEADER && !memcmp(m->header, HEADER, sizeof HEADER) &&
                    m->body_len > 6 && !memcmp(m->body, "body-", 5);
    }
}
static bool load_called(void *a) { return ((struct load_res *)a)->calls > 0; }

static void on_recover(void *ud, const struct kq_stored_msg *m, const struct kq_delivery_state *st)
{
    struct recovered *r = ud;
    if (r->n >= 64)
        return;
    int i = r->n++;
    memcpy(r->ids[i], m->id, sizeof r->ids[i]);
    r->has_state[i] = st != NULL;
    /* recovery leaves header and body out (the broker loads them for an attempt) */
    r->intact[i] = m->header_len == 0 && m->body_len == 0 && !strcmp(m->topic, "trade") &&
                   !strcmp(m->message_type, "pay-succ") && !strcmp(m->publish_group, "p-trade") &&
                   m->cmd == 0x11 && m->commit && m->deliver_limit == 10 &&
                   m->expired_time > kq_now_sec();
    if (st) {
        r->st[i] = *st;
        int off = 0;
        for (size_t k = 0; k < st->n_done; k++)
            off +=
                snprintf(r->groups[i] + off, sizeof r->groups[i] - off, "+%s", st->groups_done[k]);
        for (size_t k = 0; k < st->n_failed; k++)
            off += snprintf(r->groups[i] + off, sizeof r->groups[i] - off, "-%s",
                            st->groups_failed[k]);
    }
}

static int find_rec(const struct recovered *r, const char *id)
{
    for (int i = 0; i < r->n; i++)
        if (!strcmp(r->ids[i], id))
            return i;
    return -1;
}

static void test_save_recover_and_sharding(void **state)
{
    (void)state;
    struct kq_store *s = open_store("srv-a", NULL);
    char ids[32][KQ_ID_LEN + 1];
    save_n(s, ids, 32, "trade");
    /* every id in its shard: database h / 4, table h % 4, and nowhere else */
    for (int i = 0; i < 32; i++)
        assert_int_equal(rows_of(ids[i]), 1);
    assert_int_equal(all_rows("kite_server='srv-a'"), 32);
    char body[80];
    sql_text(body, sizeof body,
             "SELECT HEX(header) FROM `%s_%d`.`kite_msg_%d` WHERE message_id='%s'", E.db, 0, 0,
             ids[0]);
    assert_string_equal(body, "0A026800275C221AFF0A");
    /* a duplicate id is refused, never acked */
    struct waiter w = {0};
    uint8_t b[] = "x";
    struct kq_stored_msg dup = make_msg(ids[5], "trade", b, 1);
    assert_int_equal(s->ops->save(s, &dup, on_done, &w), 0);
    assert_true(wait_calls(&w, 1, 5000));
    assert_int_equal(w.last, -EEXIST);

    int64_t next_ms = kq_now_ms() + 90500;
    const char *done[] = {"s-a", "s-b"}, *failed[] = {"s-c"};
    for (int i = 0; i < 4; i++) {
        struct kq_delivery_state st = {.attempts = 2 + i,
                                       .next_attempt_ms = next_ms,
                                       .groups_done = done,
                                       .n_done = 2,
                                       .groups_failed = failed,
                                       .n_failed = 1};
        memcpy(st.id, ids[i], sizeof st.id);
        assert_int_equal(s->ops->update(s, &st), 0);
    }
    close_store(s); /* flushes the batch */

    struct recovered *r = calloc(1, sizeof *r);
    s = open_store("srv-a", NULL);
    assert_int_equal(s->ops->recover(s, on_recover, r), 0);
    assert_int_equal(r->n, 32);
    for (int i = 0; i < 32; i++) {
        int k = find_rec(r, ids[i]);
        assert_true(k >= 0);
        assert_true(r->intact[k]);
        assert_int_equal(r->has_state[k], i < 4);
        if (i % 8 == 0) { /* ... and load() brings them back intact */
            struct load_res l = {0};
            assert_int_equal(s->ops->load(s, ids[i], on_load, &l), 0);
            assert_true(run_until(load_called, &l, 5000));
            assert_int_equal(l.status, 0);
            assert_true(l.intact);
        }
        if (i < 4) {
            assert_int_equal(r->st[k].attempts, 2 + i);
            assert_int_equal(r->st[k].next_attempt_ms, (next_ms + 999) / 1000 * 1000);
            assert_string_equal(r->groups[k], "+s-a+s-b-s-c");
        }
    }
    close_store(s);
    memset(r, 0, sizeof *r);
    s = open_store("srv-other", NULL); /* only this server's rows */
    assert_int_equal(s->ops->recover(s, on_recover, r), 0);
    assert_int_equal(r->n, 0);
    close_store(s);
    free(r);
}

static bool commit_set(void *a) { return sql_int("%s", (const char *)a) == 1; }

struct poll_q {
    const char *where;
    long long want;
};
static bool rows_match(void *a)
{
    struct poll_q *q = a;
    return all_rows(q->where) == q->want;
}

/* One figure of kq_store_ops.stats, by name (a counter or gauge; -1 when absent). */
struct stat_pick {
    const char *name;
    double value;
};

static void pick_stat(void *ud, const struct kq_store_stat *st)
{
    struct stat_pick *p = ud;
    if (!strcmp(st->name, p->name) && st->kind != KQ_STORE_HISTOGRAM)
        p->value = st->value;
}

static void test_batching(void **state)
{
    (void)state;
    struct kq_store *s = open_store("srv-batch", "batchUpdateSize=5&batchDelSize=5&flushSeconds=2");
    char ids[12][KQ_ID_LEN + 1];
    save_n(s, ids, 12, "trade");

    struct load_res l = {0};
    assert_int_equal(s->ops->load(s, ids[3], on_load, &l), 0);
    assert_true(run_until(load_called, &l, 5000));
    assert_int_equal(l.status, 0);
    assert_string_equal(l.topic, "trade");
    memset(&l, 0, sizeof l);
    assert_int_equal(s->ops->load(s, "00000000000000000000000000000000", on_load, &l), 0);
    assert_true(run_until(load_called, &l, 5000));
    assert_int_equal(l.status, -ENOENT);

    /* four updates stay queued (below batchUpdateSize) ... */
    for (int i = 0; i < 5; i++) {
        struct kq_delivery_state st = {.attempts = 3, .next_attempt_ms = 1};
        memcpy(st.id, ids[i], sizeof st.id);
        assert_int_equal(s->ops->update(s, &st), 0);
        if (i == 3)
            assert_int_equal(all_rows("kite_server='srv-batch' AND deliver_count=3"), 0);
    }
    /* ... the fifth fills the batch: one multi-row UPDATE */
    struct poll_q q = {"kite_server='srv-batch' AND deliver_count=3 AND next_deliver_time=1", 5};
    assert_true(run_until(rows_match, &q, 3000));

    /* deletes below batchDelSize go out with the flushSeconds tick */
    for (int i = 0; i < 3; i++)
        assert_int_equal(s->ops->remove(s, ids[i]), 0);
    /* an update after the remove does not bring the row back */
    struct kq_delivery_state st = {.attempts = 9};
    memcpy(st.id, ids[0], sizeof st.id);
    assert_int_equal(s->ops->update(s, &st), 0);
    assert_int_equal(all_rows("kite_server='srv-batch'"), 12);
    q = (struct poll_q){"kite_server='srv-batch'", 9};
    assert_true(run_until(rows_match, &q, 5000));
    assert_int_equal(rows_of(ids[0]), 0);

    /* commit: flushed at once, the callback after the row changed */
    char id[KQ_ID_LEN + 1];
    make_id(id, 7);
    struct waiter w = {0};
    uint8_t b[] = "tx";
    struct kq_stored_msg m = make_msg(id, "trade", b, 2);
    m.commit = false;
    assert_int_equal(s->ops->save(s, &m, on_done, &w), 0);
    assert_true(wait_calls(&w, 1, 5000));
    assert_int_equal(w.ok, 1);
    assert_int_equal(s->ops->commit(s, id, on_done, &w), 0);
    assert_true(wait_calls(&w, 2, 5000));
    assert_int_equal(w.ok, 2);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT `commit` FROM `%s_1`.`kite_msg_3` WHERE message_id='%s'",
             E.db, id);
    assert_true(commit_set(sql));

    struct kq_mysql_stats ms;
    assert_int_equal(kq_mysql_store_stats(s, &ms), 0);
    assert_true(ms.flushes >= 3);
    assert_int_equal(ms.saves_ok, 13);
    /* the same counters through the store interface (/metrics exports them) */
    struct stat_pick saves = {"saves_total", -1}, flushes = {"flushes_total", -1};
    s->ops->stats(s, pick_stat, &saves);
    s->ops->stats(s, pick_stat, &flushes);
    assert_true(saves.value == 13);
    assert_true(flushes.value == (double)ms.flushes);
    close_store(s);
}

struct dlq_seen {
    int n;
    char reasons[8][128];
    char ids[8][KQ_ID_LEN + 1];
    bool body_ok[8];
    int64_t dead_time[8];
    int stop_after;
};
static bool on_dlq(void *ud, const struct kq_dead_letter *d)
{
    struct dlq_seen *s = ud;
    if (s->n < 8) {
        snprintf(s->reasons[s->n], sizeof s->reasons[0], "%s", d->reason);
        memcpy(s->ids[s->n], d->msg.id, sizeof s->ids[0]);
        s->body_ok[s->n] = d->msg.body_len > 5 && !memcmp(d->msg.body, "body-", 5) &&
                           d->msg.header_len == sizeof HEADER;
        s->dead_time[s->n] = d->dead_time;
    }
    s->n++;
    return !s->stop_after || s->n < s->stop_after;
}

struct poll_counted {
    struct kq_store *s;
    const char *topic;
    int64_t want;
};

static bool counted_is(void *arg)
{
    struct poll_counted *p = arg;
    return dlq_counted(p->s, p->topic) == p->want;
}

static void test_dead_letter_and_dlq(void **state)
{
    (void)state;
    struct kq_store *s = open_store("srv-dlq", NULL);
    char ids[3][KQ_ID_LEN + 1], other[1][KQ_ID_LEN + 1];
    save_n(s, ids, 3, "t-dlq");
    save_n(s, other, 1, "t-other");
    uint8_t b[] = "body-x";
    struct kq_stored_msg m = make_msg(ids[0], "t-dlq", b, 6);
    assert_int_equal(s->ops->dead_letter(s, &m, "deliver limit reached", NULL), 0);
    m = make_msg(ids[1], "t-dlq", b, 6);
    assert_int_equal(s->ops->dead_letter(s, &m, "bad \"quoted\" reason", NULL), 0);
    /* index fields only: header and body come from the table */
    m = make_msg(other[0], "t-other", NULL, 0);
    m.header = NULL;
    m.header_len = 0;
    assert_int_equal(s->ops->dead_letter(s, &m, "no subscriber", NULL), 0);
    struct poll_q q = {"kite_server='srv-dlq'", 1};
    assert_true(run_until(rows_match, &q, 5000));
    assert_int_equal(dlq_rows("kite_server='srv-dlq'"), 3);

    struct dlq_seen seen = {0};
    dlq_walk(s, NULL, 100, false, on_dlq, &seen);
    assert_int_equal(seen.n, 3);
    memset(&seen, 0, sizeof seen);
    dlq_walk(s, NULL, 1, false, on_dlq, &seen); /* pages of one: each row once */
    assert_int_equal(seen.n, 3);
    /* counted in memory by the moves (the start's count may still be on its way) */
    struct poll_counted pc = {s, "t-dlq", 2}, po = {s, "t-other", 1};
    assert_true(run_until(counted_is, &pc, 5000));
    assert_true(run_until(counted_is, &po, 5000)); /* its move may finish after the others */
    memset(&seen, 0, sizeof seen);
    dlq_walk(s, "t-dlq", 100, false, on_dlq, &seen);
    assert_int_equal(seen.n, 2);
    for (int i = 0; i < 2; i++) {
        assert_true(seen.body_ok[i]);
        assert_true(seen.dead_time[i] >= kq_now_sec() - 60);
        const char *want =
            !strcmp(seen.ids[i], ids[0]) ? "deliver limit reached" : "bad \"quoted\" reason";
        assert_string_equal(seen.reasons[i], want);
    }
    memset(&seen, 0, sizeof seen);
    assert_int_equal(dlq_walk(s, NULL, 1, true, on_dlq, &seen), 1);
    assert_int_equal(seen.n, 1);

    memset(&seen, 0, sizeof seen);
    assert_int_equal(dlq_get_sync(s, ids[1], on_dlq, &seen), 0);
    assert_int_equal(dlq_take_sync(s, ids[1], on_dlq, &seen), 0);
    assert_int_equal(seen.n, 2);
    assert_string_equal(seen.reasons[1], "bad \"quoted\" reason");
    assert_int_equal(dlq_counted(s, "t-dlq"), 1);
    assert_int_equal(dlq_take_sync(s, ids[1], on_dlq, &seen), -ENOENT);
    assert_int_equal(dlq_get_sync(s, ids[1], on_dlq, &seen), -ENOENT);
    size_t purged = 0;
    assert_int_equal(dlq_purge_sync(s, "t-other", &purged), 0);
    assert_int_equal(purged, 1);
    assert_int_equal(dlq_counted(s, "t-other"), 0);
    assert_int_equal(dlq_purge_sync(s, NULL, &purged), 0);
    assert_true(purged >= 1);
    assert_int_equal(dlq_counted(s, NULL), 0);
    assert_int_equal(dlq_rows("1"), 0);

    /* recover moves expired and over-limit rows of this server to the DLQ */
    char late[2][KQ_ID_LEN + 1];
    struct waiter w = {0};
    make_id(late[0], 1);
    m = make_msg(late[0], "t-dlq", b, 6);
    m.expired_time = kq_now_sec() - 5;
    assert_int_equal(s->ops->save(s, &m, on_done, &w), 0);
    make_id(late[1], 2);
    m = make_msg(late[1], "t-dlq", b, 6);
    m.deliver_limit = 3;
    assert_int_equal(s->ops->save(s, &m, on_done, &w), 0);
    assert_true(wait_calls(&w, 2, 5000));
    assert_int_equal(w.ok, 2);
    struct kq_delivery_state st = {.attempts = 3};
    memcpy(st.id, late[1], sizeof st.id);
    assert_int_equal(s->ops->update(s, &st), 0);
    close_store(s);

    struct recovered *r = calloc(1, sizeof *r);
    s = open_store("srv-dlq", NULL);
    assert_int_equal(s->ops->recover(s, on_recover, r), 0);
    assert_int_equal(r->n, 1); /* ids[2] only */
    assert_string_equal(r->ids[0], ids[2]);
    free(r);
    memset(&seen, 0, sizeof seen);
    dlq_walk(s, "t-dlq", 100, false, on_dlq, &seen);
    assert_int_equal(seen.n, 2);
    pc = (struct poll_counted){s, "t-dlq", 2}; /* recovery's moves are counted */
    assert_true(run_until(counted_is, &pc, 5000));
    for (int i = 0; i < 2; i++)
        assert_string_equal(seen.reasons[i],
                            !strcmp(seen.ids[i], late[0]) ? "expired" : "deliver limit reached");
    struct kq_mysql_stats ms;
    kq_mysql_store_stats(s, &ms);
    assert_int_equal(ms.moved_to_dlq, 2);
    close_store(s);
}

/* Recovery pages through idx_recover_a: more rows than pages, in one shard table, with
 * ties on next_deliver_time and expired_time across page boundaries and dead rows spread
 * over the pages. Every live row comes back exactly once, every dead one goes to the DLQ. */
struct id_list {
    size_t n;
    char (*ids)[KQ_ID_LEN + 1];
};

static void collect_id(void *ud, const struct kq_stored_msg *m, const struct kq_delivery_state *st)
{
    (void)st;
    struct id_list *l = ud;
    memcpy(l->ids[l->n++], m->id, KQ_ID_LEN + 1);
}

static int cmp_id(const void *a, const void *b) { return strcmp(a, b); }

static void test_recover_pages(void **state)
{
    (void)state;
    enum { N = 1300, DEAD_EVERY = 37 };
    struct kq_store *s = open_store("srv-pages", NULL);
    char(*ids)[KQ_ID_LEN + 1] = calloc(N, sizeof *ids);
    struct waiter w = {0};
    uint8_t b[] = "body-pages";
    int64_t now = kq_now_sec();
    for (int i = 0; i < N; i++) {
        make_id(ids[i], 7); /* one table */
        struct kq_stored_msg m = make_msg(ids[i], "trade", b, sizeof b - 1);
        m.expired_time = now + 3600 + i % 3; /* ties across every page boundary */
        assert_int_equal(s->ops->save(s, &m, on_done, &w), 0);
    }
    assert_true(wait_calls(&w, N, 20000));
    assert_int_equal(w.ok, N);
    int dead = 0;
    for (int i = 0; i < N; i++) {
        struct kq_delivery_state st = {.attempts = i % DEAD_EVERY == 0 ? 10 : 1,
                                       .next_attempt_ms = (now + 60 + i % 2) * 1000};
        dead += i % DEAD_EVERY == 0;
        memcpy(st.id, ids[i], sizeof st.id);
        assert_int_equal(s->ops->update(s, &st), 0);
    }
    close_store(s);

    s = open_store("srv-pages", NULL);
    struct id_list got = {0, calloc(N, sizeof *ids)};
    assert_int_equal(s->ops->recover(s, collect_id, &got), 0);
    assert_int_equal(got.n, N - dead);
    qsort(got.ids, got.n, sizeof *got.ids, cmp_id);
    for (size_t i = 1; i < got.n; i++)
        assert_true(strcmp(got.ids[i - 1], got.ids[i]) < 0); /* none twice */
    struct kq_mysql_stats ms;
    kq_mysql_store_stats(s, &ms);
    assert_int_equal(ms.moved_to_dlq, dead);
    close_store(s);
    free(got.ids);
    free(ids);
}

/* What a takeover handed over: rows (rec first: on_recover takes the same pointer) and the end. */
struct taken {
    struct recovered rec;
    int calls, status;
    uint64_t moved;
};

static void on_moved(void *ud, int status, uint64_t moved)
{
    struct taken *t = ud;
    t->calls++;
    t->status = status;
    t->moved = moved;
}

static bool moved_called(void *a) { return ((struct taken *)a)->calls > 0; }

/* The broker's takeover through the store interface: owner names this broker and the shared
 * database; takeover moves the dead broker's rows page by page and hands each to row. */
static void test_takeover(void **state)
{
    (void)state;
    struct kq_store *s = open_store("srv-dead", NULL);
    char ids[5][KQ_ID_LEN + 1];
    save_n(s, ids, 5, "trade");
    close_store(s);
    s = open_store("srv-heir", NULL);
    const char *self = NULL;
    char shared[256], want[256];
    assert_int_equal(s->ops->owner(s, &self, shared, sizeof shared), 0);
    assert_string_equal(self, "srv-heir");
    snprintf(want, sizeof want, "%s:%u:%s", E.my.host, E.my.port, E.db);
    assert_string_equal(shared, want);
    struct taken *t = calloc(1, sizeof *t);
    assert_int_equal(s->ops->takeover(s, "srv-dead", on_recover, on_moved, t), 0);
    assert_true(run_until(moved_called, t, 10000));
    assert_int_equal(t->status, 0);
    assert_int_equal(t->moved, 5);
    assert_int_equal(t->rec.n, 5); /* every moved row was handed over */
    for (int i = 0; i < 5; i++)
        assert_true(find_rec(&t->rec, ids[i]) >= 0);
    assert_int_equal(all_rows("kite_server='srv-dead'"), 0);
    memset(t, 0, sizeof *t);
    assert_int_equal(s->ops->recover(s, on_recover, &t->rec), 0);
    assert_int_equal(t->rec.n, 5);
    memset(t, 0, sizeof *t);
    assert_int_equal(s->ops->takeover(s, "srv-dead", on_recover, on_moved, t), 0);
    assert_true(run_until(moved_called, t, 10000));
    assert_int_equal(t->status, 0);
    assert_int_equal(t->moved, 0);
    assert_int_equal(t->rec.n, 0);
    /* a name that cannot be in kite_server is refused at once */
    assert_int_equal(s->ops->takeover(s, "", on_recover, on_moved, t), -EINVAL);
    free(t);
    close_store(s);
}

/* --- outage: the server stops (SIGSTOP = hung, SIGTERM = down) and comes back ------------------ */

static bool pid_alive(pid_t pid)
{
    char p[64], st[256];
    snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(p, "r");
    if (!f)
        return false;
    bool alive = fgets(st, sizeof st, f) && !strstr(st, ") Z");
    fclose(f);
    return alive;
}

/* The server's argv from /proc, to start it again the same way. */
static char **read_cmdline(pid_t pid)
{
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/cmdline", (int)pid);
    FILE *f = fopen(p, "r");
    if (!f)
        return NULL;
    static char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    static char *argv[128];
    int k = 0;
    for (size_t i = 0; i < n && k < 127; i += strlen(buf + i) + 1)
        argv[k++] = buf + i;
    argv[k] = NULL;
    return k ? argv : NULL;
}

static void respawn(char **argv)
{
    pid_t c = fork();
    if (c == 0) { /* double fork: the server must not stay our child (or our zombie) */
        setsid();
        if (fork() == 0) {
            int fd = open("/dev/null", O_RDWR);
            dup2(fd, 0);
            dup2(fd, 1);
            dup2(fd, 2);
            execv(argv[0], argv);
            _exit(127);
        }
        _exit(0);
    }
    waitpid(c, NULL, 0);
}

static void save_batch(struct kq_store *s, struct waiter *w, int n, char (*ids)[KQ_ID_LEN + 1])
{
    uint8_t b[] = "body-outage";
    for (int i = 0; i < n; i++) {
        make_id(ids[i], i);
        struct kq_stored_msg m = make_msg(ids[i], "trade", b, sizeof b - 1);
        assert_int_equal(s->ops->save(s, &m, on_done, w), 0);
    }
}

static void test_outage(void **state)
{
    (void)state;
    if (E.my.pid <= 0 && E.my.pidfile[0]) {
        FILE *f = fopen(E.my.pidfile, "r");
        if (f) {
            int p = 0;
            if (fscanf(f, "%d", &p) == 1)
                E.my.pid = p;
            fclose(f);
        }
    }
    if (E.my.pid <= 0 || !pid_alive(E.my.pid)) {
        print_message("no MYSQL_PID/MYSQL_PIDFILE for the server: outage test skipped\n");
        skip();
    }
    struct kq_store *s = open_store("srv-outage", "timeout=2");
    char before[20][KQ_ID_LEN + 1], during[10][KQ_ID_LEN + 1], after[20][KQ_ID_LEN + 1];
    save_n(s, before, 20, "trade");

    /* hung server: saves fail with a timeout, not never */
    kill(E.my.pid, SIGSTOP);
    struct waiter w = {.t0 = kq_mono_us()};
    save_batch(s, &w, 5, during);
    bool all = wait_calls(&w, 5, 15000);
    kill(E.my.pid, SIGCONT);
    assert_true(all);
    assert_int_equal(w.ok, 0);
    print_message("hung server: 5 saves failed (last %d) after at most %llu ms\n", w.last,
                  (unsigned long long)(w.max_latency_us / 1000));
    assert_true(w.max_latency_us < 10000000);

    /* stopped server: through our own scripts when we started it, else by PID */
    char **argv = NULL;
    if (E.my.base[0]) {
        assert_int_equal(mariadb_service_script(&E.my, "down"), 0);
    } else {
        argv = read_cmdline(E.my.pid);
        assert_non_null(argv);
        kill(E.my.pid, SIGTERM);
    }
    /* a server just thawed from SIGSTOP can take long to shut down on a busy machine */
    for (int i = 0; i < 600 && pid_alive(E.my.pid); i++)
        usleep(50000);
    if (pid_alive(E.my.pid)) {
        print_message("mysqld %d still up 30 s after the stop: SIGKILL\n", (int)E.my.pid);
        kill(E.my.pid, SIGKILL);
        for (int i = 0; i < 200 && pid_alive(E.my.pid); i++)
            usleep(50000);
    }
    assert_false(pid_alive(E.my.pid));
    mysql_close(E.c);
    E.c = NULL;
    w = (struct waiter){.t0 = kq_mono_us()};
    save_batch(s, &w, 10, during);
    assert_true(wait_calls(&w, 10, 15000));
    assert_int_equal(w.ok, 0);
    print_message("stopped server: 10 saves failed (last %d) after at most %llu ms\n", w.last,
                  (unsigned long long)(w.max_latency_us / 1000));
    assert_true(w.max_latency_us < 10000000);

    if (E.my.base[0]) {
        assert_int_equal(mariadb_service_script(&E.my, "up"), 0);
    } else {
        respawn(argv);
    }
    for (int i = 0; i < 200 && !(E.c = connect_direct()); i++)
        usleep(100000);
    assert_non_null(E.c);
    E.my.pid = 0; /* the new one's pid is in the pidfile */
    /* the workers come back by themselves (back-off at most 5 s) */
    uint64_t t0 = kq_mono_us();
    bool back = false;
    while (!back && kq_mono_us() - t0 < 20000000) {
        w = (struct waiter){0};
        char one[1][KQ_ID_LEN + 1];
        save_batch(s, &w, 1, one);
        assert_true(wait_calls(&w, 1, 10000));
        back = w.ok == 1;
        if (!back)
            usleep(200000);
    }
    assert_true(back);
    print_message("saves succeed again %llu ms after the restart\n",
                  (unsigned long long)((kq_mono_us() - t0) / 1000));
    w = (struct waiter){0};
    save_batch(s, &w, 20, after);
    assert_true(wait_calls(&w, 20, 10000));
    assert_int_equal(w.ok, 20);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(rows_of(before[i]), 1);
        assert_int_equal(rows_of(after[i]), 1);
    }
    for (int i = 0; i < 10; i++)
        assert_int_equal(rows_of(during[i]), 0);
    close_store(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uri_errors),
        cmocka_unit_test(test_shard_placement_function),
        cmocka_unit_test(test_schema),
        cmocka_unit_test(test_cli_init),
        cmocka_unit_test(test_save_recover_and_sharding),
        cmocka_unit_test(test_batching),
        cmocka_unit_test(test_dead_letter_and_dlq),
        cmocka_unit_test(test_recover_pages),
        cmocka_unit_test(test_takeover),
        cmocka_unit_test(test_outage),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
