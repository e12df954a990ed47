/* MySQL store, operations that wait for their answer: the takeover of a dead broker's rows.
 * They run a job on a worker and block the calling (loop) thread until it is done, bounded
 * by the connection's read timeout. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "store/mysql/mysql_internal.h"

/* --- synchronous jobs (start-up, administration) -------------------------------------------- */

/* Run one statement list and wait; *out gets the job (rows, affected) on success. */
static int run_sync(struct my_store *s, bool txn, size_t n, char **stmts, int rows_stmt,
                    struct my_job **out)
{
    struct my_job *j = my_job_script(txn, NULL, n, stmts);
    if (!j)
        return -ENOMEM;
    j->rows_stmt = rows_stmt;
    j->deadline_us = 0;
    int rc = my_pool_run_sync(&s->pool, j);
    if (rc || !out)
        my_job_free(j);
    else
        *out = j;
    return rc;
}


int kq_mysql_takeover(struct kq_store *base, const char *dead_server, uint64_t *moved)
{
    if (!my_is_mysql_store(base) || !dead_server || !*dead_server ||
        strlen(dead_server) > COL_VARCHAR)
        return -EINVAL;
    struct my_store *s = (struct my_store *)base;
    char *stmts[KQ_MYSQL_SHARD_SEED];
    size_t n = 0;
    for (int db = 0; db < s->conf.shardnum; db++)
        for (int tb = 0; tb < s->conf.hash_num; tb++) {
            struct my_sql q = {0};
            my_sql_cat(&q, "UPDATE ");
            my_table_name(&q, s, db, tb);
            my_sql_cat(&q, " SET kite_server=");
            my_sql_str(&q, s->conf.server);
            my_sql_cat(&q, " WHERE kite_server=");
            my_sql_str(&q, dead_server);
            stmts[n++] = my_sql_take(&q);
        }
    struct my_job *j;
    int rc = run_sync(s, true, n, stmts, -1, &j); /* one transaction over all shards */
    if (rc)
        return rc;
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += j->affected[i];
    my_job_free(j);
    if (moved)
        *moved = total;
    KQ_INFO(MY_MOD, "took over %llu pending messages of %s", (unsigned long long)total,
            dead_server);
    return 0;
}

int kq_mysql_takeover_load(struct kq_store *base, const char *dead_server,
                           kq_mysql_row_cb cb, void *ud, uint64_t *moved)
{
    if (!my_is_mysql_store(base) || !dead_server || !*dead_server ||
        strlen(dead_server) > COL_VARCHAR || !cb)
        return -EINVAL;
    struct my_store *s = (struct my_store *)base;
    uint64_t total = 0;
    int rc = 0;
    for (int db = 0; rc == 0 && db < s->conf.shardnum; db++)
        for (int tb = 0; rc == 0 && tb < s->conf.hash_num; tb++) {
            for (bool more = true; rc == 0 && more;) {
                /* One page per transaction: the SELECT locks exactly the rows the UPDATE
                 * (same order, same limit) then hands to us, so the rows read are the rows
                 * moved even while another broker works on the table. */
                struct my_sql q = {0};
                char *stmts[2];
                my_select_cols(&q, s, db, tb);
                my_sql_cat(&q, " WHERE kite_server=");
                my_sql_str(&q, dead_server);
                my_sql_printf(&q, " ORDER BY id LIMIT %d FOR UPDATE", RECOVER_PAGE);
                stmts[0] = my_sql_take(&q);
                my_sql_cat(&q, "UPDATE ");
                my_table_name(&q, s, db, tb);
                my_sql_cat(&q, " SET kite_server=");
                my_sql_str(&q, s->conf.server);
                my_sql_cat(&q, " WHERE kite_server=");
                my_sql_str(&q, dead_server);
                my_sql_printf(&q, " ORDER BY id LIMIT %d", RECOVER_PAGE);
                stmts[1] = my_sql_take(&q);
                struct my_job *j;
                if ((rc = run_sync(s, true, 2, stmts, 0, &j)))
                    break;
                total += j->affected[1];
                rc = my_emit_rows(j->rows, cb, ud);
                more = j->rows->n == RECOVER_PAGE;
                my_job_free(j);
            }
        }
    if (moved)
        *moved = total;
    if (rc)
        KQ_ERROR(MY_MOD, "takeover of %s failed after %llu rows: %s", dead_server,
                 (unsigned long long)total, strerror(-rc));
    else
        KQ_INFO(MY_MOD, "took over %llu pending messages of %s", (unsigned long long)total,
                dead_server);
    return rc;
}

