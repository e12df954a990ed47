/* MySQL store, takeover of a dead broker's rows (kq_store_ops.takeover): page by page as
 * jobs, rows handed out on the loop. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "store/mysql/mysql_internal.h"

struct takeover {
    struct my_store *s;
    char dead[COL_VARCHAR + 1];
    int table; /* db * hash_num + tb being moved */
    uint64_t moved;
    kq_store_recover_cb row;
    kq_store_takeover_done_cb done;
    void *ud;
};

static void takeover_finish(struct takeover *t, int rc)
{
    if (rc)
        KQ_ERROR(MY_MOD, "takeover of %s failed after %llu rows: %s", t->dead,
                 (unsigned long long)t->moved, strerror(-rc));
    else
        KQ_INFO(MY_MOD, "took over %llu pending messages of %s", (unsigned long long)t->moved,
                t->dead);
    t->done(t->ud, rc, t->moved);
    free(t);
}

static void takeover_page_done(struct my_store *s, struct my_job *j);

/* One page per transaction: the SELECT locks exactly the rows the UPDATE (same order, same
 * limit) then hands to us, so the rows read are the rows moved even while another broker
 * works on the table. */
static int takeover_page(struct takeover *t)
{
    struct my_store *s = t->s;
    int db = t->table / s->conf.hash_num, tb = t->table % s->conf.hash_num;
    struct my_sql q = {0};
    char *stmts[2];
    my_select_cols(&q, s, db, tb);
    my_sql_cat(&q, " WHERE kite_server=");
    my_sql_str(&q, t->dead);
    my_sql_printf(&q, " ORDER BY id LIMIT %d FOR UPDATE", RECOVER_PAGE);
    stmts[0] = my_sql_take(&q);
    my_sql_cat(&q, "UPDATE ");
    my_table_name(&q, s, db, tb);
    my_sql_cat(&q, " SET kite_server=");
    my_sql_str(&q, s->conf.server);
    my_sql_cat(&q, " WHERE kite_server=");
    my_sql_str(&q, t->dead);
    my_sql_printf(&q, " ORDER BY id LIMIT %d", RECOVER_PAGE);
    stmts[1] = my_sql_take(&q);
    struct my_job *j = my_job_script(true, takeover_page_done, 2, stmts);
    if (!j)
        return -ENOMEM;
    j->rows_stmt = 0;
    j->ctx = t;
    my_submit(s, j);
    return 0;
}

static void takeover_page_done(struct my_store *s, struct my_job *j)
{
    struct takeover *t = j->ctx;
    int rc = j->status;
    if (rc == 0) {
        t->moved += j->affected[1];
        rc = my_emit_rows(j->rows, t->row, t->ud);
        if (rc == 0 && j->rows->n < RECOVER_PAGE)
            t->table++;
    }
    my_job_free(j);
    if (rc == 0 && t->table == s->conf.shardnum * s->conf.hash_num)
        takeover_finish(t, 0);
    else if (rc == 0 && s->closing)
        takeover_finish(t, -ESHUTDOWN);
    else if (rc || (rc = takeover_page(t)))
        takeover_finish(t, rc);
}

int my_takeover(struct kq_store *base, const char *dead_server, kq_store_recover_cb row,
                kq_store_takeover_done_cb done, void *ud)
{
    if (!my_is_mysql_store(base) || !dead_server || !*dead_server ||
        strlen(dead_server) > COL_VARCHAR || !row || !done)
        return -EINVAL;
    struct my_store *s = (struct my_store *)base;
    if (s->closing)
        return -ESHUTDOWN;
    struct takeover *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    *t = (struct takeover){.s = s, .row = row, .done = done, .ud = ud};
    snprintf(t->dead, sizeof t->dead, "%s", dead_server);
    int rc = takeover_page(t);
    if (rc)
        free(t);
    return rc;
}
