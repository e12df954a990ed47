/* Worker threads of the MySQL store. Each worker owns one connection (made lazily,
 * re-made after any client-side error with exponential back-off) and executes jobs whose
 * SQL text was built on the loop thread. Finished jobs go back through the pool's mailbox
 * (core/mailbox); a job the submitter waits for (my_pool_run_sync) is handed back under the
 * pool's lock instead.
 *
 * While a worker cannot connect it fails the jobs it takes at once (-EIO) instead of
 * holding them: a producer learns within a bounded time that its message was not stored.
 * Every job comes back with what it showed about the server (enum my_health) and, when the
 * server could not be reached, why: the store's availability is kept from that (health.c). */
#include <ctype.h>
#include <errno.h>
#include <mysql.h>
#include <errmsg.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "store/mysql/mysql_internal.h"

#define SAVE_BATCH_MAX 256          /* saves per transaction */
#define SAVE_BATCH_BYTES (4u << 20) /* stay well below max_allowed_packet (16 MiB) */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
/* Ping a connection idle longer than this before using it: a batch of saves is one
 * multi-statement round trip that cannot be retried blindly (it may have committed), so a
 * connection the server closed meanwhile (restart, wait_timeout) is found out first. A
 * connection is also pinged once after another worker found the server gone or got a
 * connection back after a back-off (pool->lost_epoch): a restart quicker than this leaves
 * the others' connections dead. */
#define IDLE_PING_US (1ull * 1000000)
#define ER_SERVER_SHUTDOWN 1053
#define ER_DUP_KEY_ENTRY 1062
#define ER_LOCK_WAIT 1205
#define ER_DEADLOCK 1213
#define ER_CONNECTION_KILLED 1927
#define PROBE_CONNECT_MS 1000 /* the diagnostic connect of a refused connection */
#define DEADLOCK_TRIES 4      /* a transaction chosen as deadlock victim was rolled back whole */

struct my_worker {
    struct my_pool *pool;
    pthread_t th;
    MYSQL *conn;
    uint64_t retry_at_us, last_used_us;
    unsigned backoff_ms;
    uint64_t down_epoch;   /* pool->up_epoch when this worker went into back-off */
    uint64_t lost_seen;    /* pool->lost_epoch when conn was last known to work */
    bool fresh;            /* the connection was made for the current job */
    bool took_saves;       /* alternate between save batches and other jobs */
    enum my_health health; /* the last thing the current job showed about the server */
    char why[300];         /* the current job's last failure: "mysql HOST:PORT: reason" */
};

/* --- jobs ------------------------------------------------------------------------------------ */

void my_rows_free(struct my_rows *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n * r->ncols; i++)
        free(r->cells[i].p);
    free(r->cells);
    free(r);
}

int64_t my_cell_i64(const struct my_cell *c) { return c->p ? strtoll(c->p, NULL, 10) : 0; }

struct my_job *my_job_script(bool txn, my_done_fn done, size_t n, char **stmts)
{
    struct my_job *j = calloc(1, sizeof *j);
    bool ok = j && n <= MY_MAX_STMTS;
    for (size_t i = 0; i < n; i++)
        ok = ok && stmts[i];
    if (!ok) {
        for (size_t i = 0; i < n; i++)
            free(stmts[i]);
        free(j);
        return NULL;
    }
    j->kind = MY_JOB_SCRIPT;
    j->txn = txn;
    j->done = done;
    j->rows_stmt = -1;
    j->n_stmts = n;
    memcpy(j->stmts, stmts, n * sizeof *stmts);
    return j;
}

void my_job_free(struct my_job *j)
{
    for (size_t i = 0; i < j->n_stmts; i++)
        free(j->stmts[i]);
    my_rows_free(j->rows);
    free(j->values);
    free(j->why);
    free(j);
}

/* --- connection --------------------------------------------------------------------------------- */

static void drop_conn(struct my_worker *w)
{
    if (w->conn)
        mysql_close(w->conn);
    w->conn = NULL;
}

/* This worker found the server gone (its connection broke, or a connect failed): the other
 * workers check their connections before their next use. */
static void server_lost(struct my_worker *w)
{
    drop_conn(w);
    atomic_fetch_add(&w->pool->lost_epoch, 1);
}

static void backoff(struct my_worker *w)
{
    w->backoff_ms = w->backoff_ms ? w->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (w->backoff_ms > BACKOFF_MAX_MS)
        w->backoff_ms = BACKOFF_MAX_MS;
    w->retry_at_us = kq_mono_us() + (uint64_t)w->backoff_ms * 1000;
    w->down_epoch = atomic_load(&w->pool->up_epoch);
}

/* The call that started at t0_us waited (about) the whole timeout: the server hangs. */
static bool took_timeout(const struct my_conf *c, uint64_t t0_us)
{
    return kq_mono_us() - t0_us + 200000 >= (uint64_t)c->timeout_sec * 1000000;
}

static void server_up(struct my_worker *w) { w->health = MY_HEALTH_UP; }

/* w->why = "mysql HOST:PORT: " + the reason of a failure (no password: the text names only
 * the address and the server's or client library's words). */
static void set_why(struct my_worker *w, const char *reason)
{
    const struct my_conf *c = w->pool->conf;
    int n = snprintf(w->why, sizeof w->why, "mysql %s:%u: ", c->host, c->port);
    if (n > 0 && (size_t)n < sizeof w->why) /* (cut when the host name is very long) */
        snprintf(w->why + n, sizeof w->why - (size_t)n, "%s", reason);
}

/* The server could not be reached, or did not answer: the store is unavailable. */
static void server_down(struct my_worker *w, const char *reason)
{
    set_why(w, reason);
    w->health = MY_HEALTH_DOWN;
}

static void no_answer(struct my_worker *w)
{
    char text[48];
    snprintf(text, sizeof text, "no answer within %d s", w->pool->conf->timeout_sec);
    server_down(w, text);
}

/* libmariadb reports every failed TCP connect as error 115 (EINPROGRESS, its non-blocking
 * connect), which would tell an operator nothing: ask the kernel what a connect to the
 * server gets. 0 (it connects), or the errno (ECONNREFUSED, EHOSTUNREACH, ETIMEDOUT...). */
static int tcp_connect_errno(const char *host, unsigned port)
{
    char service[8];
    snprintf(service, sizeof service, "%u", port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(host, service, &hints, &ai) != 0)
        return 0; /* not a connect problem: the server's own message says more */
    int err = 0, fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        err = errno;
    else if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && (err = errno) == EINPROGRESS) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int n = poll(&p, 1, PROBE_CONNECT_MS);
        socklen_t len = sizeof err;
        if (n == 0)
            err = ETIMEDOUT;
        else if (n < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
    }
    if (fd >= 0)
        close(fd);
    freeaddrinfo(ai);
    return err;
}

static void connect_failed(struct my_worker *w, MYSQL *m, uint64_t t0_us)
{
    const struct my_conf *c = w->pool->conf;
    unsigned e = mysql_errno(m);
    int err = 0;
    if (took_timeout(c, t0_us)) {
        no_answer(w);
    } else if ((e == CR_CONNECTION_ERROR || e == CR_CONN_HOST_ERROR) &&
               strcmp(c->host, "localhost") != 0 && /* (a unix socket) */
               (err = tcp_connect_errno(c->host, c->port)) != 0) {
        char text[64];
        snprintf(text, sizeof text, "%s", strerror(err));
        text[0] = (char)tolower((unsigned char)text[0]); /* "connection refused" */
        server_down(w, text);
    } else {
        server_down(w, mysql_error(m));
    }
}

/* 0 with a usable connection, -EIO while the server is unreachable (in back-off). */
static int ensure_conn(struct my_worker *w)
{
    const struct my_conf *c = w->pool->conf;
    uint64_t now = kq_mono_us(), lost = atomic_load(&w->pool->lost_epoch);
    if (w->conn && (now - w->last_used_us > IDLE_PING_US || lost != w->lost_seen)) {
        if (mysql_ping(w->conn) == 0) {
            w->lost_seen = lost;
        } else {
            server_lost(w);             /* wait_timeout or a server restart closed it meanwhile */
            if (took_timeout(c, now)) { /* no answer: a new connection would wait as long */
                no_answer(w);
                backoff(w);
                return -ETIMEDOUT;
            }
        }
    }
    w->fresh = false;
    if (w->conn)
        return 0;
    /* in back-off, unless another worker got through since: then the server is back */
    if (now < w->retry_at_us && atomic_load(&w->pool->up_epoch) == w->down_epoch)
        return -EIO;
    MYSQL *m = mysql_init(NULL);
    if (!m)
        return -ENOMEM;
    unsigned t = (unsigned)c->timeout_sec;
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &t);
    mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &t);
    mysql_options(m, MYSQL_OPT_WRITE_TIMEOUT, &t);
    /* the tables are CHARSET=utf8 (utf8mb3): literals in the same charset keep the
     * message_id comparisons on the primary key */
    mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8");
    /* multi-statements: a batch of saves is one round trip (BEGIN; INSERT..; COMMIT) */
    if (!mysql_real_connect(m, c->host, c->user, c->password, NULL, c->port, NULL,
                            CLIENT_MULTI_STATEMENTS) ||
        /* the SQL we build escapes with backslashes */
        mysql_query(m, "SET SESSION sql_mode=REPLACE(@@sql_mode,'NO_BACKSLASH_ESCAPES','')") ||
        /* no gap locks: inserts and batched deletes of one table do not block each other */
        mysql_query(m, "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")) {
        connect_failed(w, m, now);
        server_lost(w);
        KQ_LOG_RATELIMITED(KQ_LOG_WARN, MY_MOD, "connect failed: %s (%s; retry in %u ms)", w->why,
                           mysql_error(m), w->backoff_ms ? w->backoff_ms * 2 : BACKOFF_MIN_MS);
        mysql_close(m);
        backoff(w);
        /* a refused connection fails at once; a hung server costs the whole timeout */
        return took_timeout(c, now) ? -ETIMEDOUT : -EIO;
    }
    if (w->backoff_ms) { /* the server was away: the others' connections may be stale */
        KQ_INFO(MY_MOD, "reconnected to %s:%u", c->host, c->port);
        atomic_fetch_add(&w->pool->lost_epoch, 1);
    }
    w->conn = m;
    w->lost_seen = atomic_load(&w->pool->lost_epoch);
    w->fresh = true;
    w->backoff_ms = 0;
    w->last_used_us = now;
    atomic_fetch_add(&w->pool->reconnects, 1);
    atomic_fetch_add(&w->pool->up_epoch, 1);
    server_up(w);
    return 0;
}

/* Map the connection's last error to -errno; a client-side error (lost connection, timeout)
 * or the server closing the connection makes it unusable, so it is dropped and re-made by
 * the next job: the server is down for now. Any other error is the server's answer. */
static int query_error(struct my_worker *w, uint64_t t0_us, const char *what)
{
    unsigned e = mysql_errno(w->conn);
    int rc = -EIO;
    bool lost = (e >= CR_MIN_ERROR && e <= CR_MAX_ERROR) || e == ER_SERVER_SHUTDOWN ||
                e == ER_CONNECTION_KILLED;
    if (!lost)
        server_up(w);
    if (e == ER_DUP_KEY_ENTRY)
        return -EEXIST;
    if (e == ER_DEADLOCK)
        return -EDEADLK; /* retried by the caller, not worth a warning */
    if (e == ER_LOCK_WAIT)
        rc = -ETIMEDOUT;
    KQ_LOG_RATELIMITED(KQ_LOG_WARN, MY_MOD, "%s failed: %u %s", what, e, mysql_error(w->conn));
    if (!lost) { /* the server's answer: the job fails, the server is there */
        char text[256];
        snprintf(text, sizeof text, "%s failed: %u %s", what, e, mysql_error(w->conn));
        set_why(w, text);
    } else {
        if (took_timeout(w->pool->conf, t0_us)) {
            rc = -ETIMEDOUT;
            no_answer(w);
        } else {
            server_down(w, mysql_error(w->conn));
        }
        server_lost(w);
    }
    return rc;
}

static int run_sql(struct my_worker *w, const char *sql, size_t len, uint64_t *affected,
                   struct my_rows **rows_out, const char *what)
{
    uint64_t t0 = kq_mono_us();
    w->last_used_us = t0;
    if (mysql_real_query(w->conn, sql, len))
        return query_error(w, t0, what);
    MYSQL_RES *res = mysql_store_result(w->conn);
    if (!res && mysql_field_count(w->conn))
        return query_error(w, t0, what);
    server_up(w);
    if (!res) {
        if (affected)
            *affected = mysql_affected_rows(w->conn);
        return 0;
    }
    int rc = 0;
    if (rows_out) {
        struct my_rows *r = calloc(1, sizeof *r);
        r->n = (size_t)mysql_num_rows(res);
        r->ncols = mysql_num_fields(res);
        r->cells = calloc(r->n * r->ncols + 1, sizeof *r->cells);
        if (!r->cells)
            rc = -ENOMEM;
        MYSQL_ROW row;
        for (size_t i = 0; rc == 0 && (row = mysql_fetch_row(res)); i++) {
            unsigned long *lens = mysql_fetch_lengths(res);
            for (size_t k = 0; k < r->ncols && rc == 0; k++) {
                struct my_cell *c = &r->cells[i * r->ncols + k];
                if (!row[k])
                    continue;
                c->len = lens[k];
                if (!(c->p = malloc(c->len + 1)))
                    rc = -ENOMEM;
                else {
                    memcpy(c->p, row[k], c->len);
                    c->p[c->len] = 0;
                }
            }
        }
        if (rc)
            my_rows_free(r);
        else
            *rows_out = r;
    }
    if (affected)
        *affected = mysql_num_rows(res);
    mysql_free_result(res);
    return rc;
}

/* The first statement of a job: when it fails because a reused connection died (the server
 * restarted while this worker was idle), nothing has been done yet, so reconnect once and
 * try again instead of failing the job. Used for START TRANSACTION and read-only jobs. */
static int run_first(struct my_worker *w, const char *sql, size_t len, uint64_t *affected,
                     struct my_rows **rows, const char *what)
{
    bool fresh = w->fresh;
    int rc = run_sql(w, sql, len, affected, rows, what);
    if (rc == -EIO && !fresh && !w->conn) { /* (not after a timeout: the server hangs) */
        w->retry_at_us = 0;
        if ((rc = ensure_conn(w)) == 0)
            rc = run_sql(w, sql, len, affected, rows, what);
    }
    return rc;
}

static void rollback(struct my_worker *w)
{
    if (w->conn && mysql_query(w->conn, "ROLLBACK"))
        drop_conn(w);
}

/* --- execution ---------------------------------------------------------------------------------- */

static bool expired(const struct my_job *j)
{
    return j->deadline_us && kq_mono_us() > j->deadline_us;
}

static int script_once(struct my_worker *w, struct my_job *j)
{
    /* scripts without a transaction only read: their first statement may be retried */
    int rc = j->txn ? run_first(w, "START TRANSACTION", 17, NULL, NULL, "begin") : 0;
    for (size_t i = 0; rc == 0 && i < j->n_stmts; i++)
        rc = (i == 0 && !j->txn ? run_first
                                : run_sql)(w, j->stmts[i], strlen(j->stmts[i]), &j->affected[i],
                                           (int)i == j->rows_stmt ? &j->rows : NULL, "statement");
    if (rc == 0 && j->txn)
        rc = run_sql(w, "COMMIT", 6, NULL, NULL, "commit");
    if (rc && j->txn)
        rollback(w);
    if (rc) {
        my_rows_free(j->rows);
        j->rows = NULL;
    }
    return rc;
}

static void run_script(struct my_worker *w, struct my_job *j)
{
    if (expired(j)) {
        j->status = -ETIMEDOUT;
        return;
    }
    if (j->force_connect && !w->conn)
        w->retry_at_us = 0;
    if ((j->status = ensure_conn(w)))
        return;
    int rc = script_once(w, j);
    for (int t = 1; rc == -EDEADLK && t < DEADLOCK_TRIES && w->conn; t++)
        rc = script_once(w, j);
    j->status = rc == -EDEADLK ? -EIO : rc;
}

static void insert_prefix(struct my_sql *q, const struct my_conf *c, int db, int table)
{
    my_sql_printf(q, "INSERT INTO `%s_%d`.`kite_msg_%d` (" MY_COLS ") VALUES ", c->db, db, table);
}

/* Saves of one table: one multi-row INSERT; if some id already exists the rows go one by
 * one so that only the duplicates fail. 0 or a fatal -errno (the transaction is lost). */
static int insert_group(struct my_worker *w, struct my_job **g, size_t n)
{
    const struct my_conf *c = w->pool->conf;
    struct my_sql q = {0};
    insert_prefix(&q, c, g[0]->db, g[0]->table);
    for (size_t i = 0; i < n; i++) {
        if (i)
            my_sql_cat(&q, ",");
        my_sql_cat(&q, g[i]->values);
    }
    if (q.oom) {
        my_sql_free(&q);
        return -ENOMEM;
    }
    int rc = run_sql(w, q.p, q.len, NULL, NULL, "insert");
    my_sql_free(&q);
    if (rc != -EEXIST)
        return rc;
    for (size_t i = 0; i < n; i++) {
        struct my_sql one = {0};
        insert_prefix(&one, c, g[i]->db, g[i]->table);
        my_sql_cat(&one, g[i]->values);
        rc = one.oom ? -ENOMEM : run_sql(w, one.p, one.len, NULL, NULL, "insert");
        my_sql_free(&one);
        if (rc == -EEXIST)
            g[i]->status = -EEXIST;
        else if (rc)
            return rc;
    }
    return 0;
}

static int cmp_table(const void *a, const void *b)
{
    const struct my_job *x = *(struct my_job *const *)a, *y = *(struct my_job *const *)b;
    return x->db != y->db ? x->db - y->db : x->table - y->table;
}

/* Every statement of a multi-statement text, results discarded. Once one fails the server
 * skips the rest; the caller rolls back. 0 or -errno as run_sql. */
static int run_multi(struct my_worker *w, const char *sql, size_t len, const char *what)
{
    uint64_t t0 = kq_mono_us();
    w->last_used_us = t0;
    if (mysql_real_query(w->conn, sql, len))
        return query_error(w, t0, what);
    for (;;) {
        MYSQL_RES *res = mysql_store_result(w->conn);
        if (res)
            mysql_free_result(res);
        else if (mysql_field_count(w->conn))
            return query_error(w, t0, what);
        int st = mysql_next_result(w->conn);
        if (st < 0) {
            server_up(w);
            return 0;
        }
        if (st > 0)
            return query_error(w, t0, what);
    }
}

/* "START TRANSACTION;INSERT ..(one per table)..;COMMIT" for saves sorted by table. */
static int saves_sql(const struct my_conf *c, struct my_job **live, size_t n, struct my_sql *q)
{
    my_sql_cat(q, "START TRANSACTION");
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || cmp_table(&live[i - 1], &live[i]) != 0) {
            my_sql_cat(q, ";");
            insert_prefix(q, c, live[i]->db, live[i]->table);
        } else {
            my_sql_cat(q, ",");
        }
        my_sql_cat(q, live[i]->values);
    }
    my_sql_cat(q, ";COMMIT");
    return q->oom ? -ENOMEM : 0;
}

/* The whole batch in one round trip. -EEXIST when some id exists already: nothing was
 * committed, and the caller goes statement by statement to fail only the duplicates. */
static int saves_fast(struct my_worker *w, struct my_job **live, size_t n)
{
    struct my_sql q = {0};
    int rc = saves_sql(w->pool->conf, live, n, &q);
    if (rc == 0)
        rc = run_multi(w, q.p, q.len, "insert batch");
    my_sql_free(&q);
    if (rc)
        rollback(w);
    return rc;
}

/* Statement by statement, duplicates failed row by row. */
static int saves_once(struct my_worker *w, struct my_job **live, size_t n)
{
    for (size_t i = 0; i < n; i++)
        live[i]->status = 0;
    int rc = run_first(w, "START TRANSACTION", 17, NULL, NULL, "begin");
    for (size_t i = 0; rc == 0 && i < n;) {
        size_t k = i + 1;
        while (k < n && cmp_table(&live[i], &live[k]) == 0)
            k++;
        rc = insert_group(w, live + i, k - i);
        i = k;
    }
    if (rc == 0)
        rc = run_sql(w, "COMMIT", 6, NULL, NULL, "commit");
    if (rc)
        rollback(w);
    return rc;
}

/* A list of saves in one transaction: acked (status 0) only after COMMIT returned. */
static void run_saves(struct my_worker *w, struct my_job *list)
{
    struct my_job *live[SAVE_BATCH_MAX];
    size_t n = 0;
    for (struct my_job *j = list; j; j = j->next) {
        j->status = expired(j) ? -ETIMEDOUT : 0;
        if (j->status == 0)
            live[n++] = j;
    }
    if (n == 0)
        return;
    /* tables in one order in every transaction (fewer deadlocks); qsort is not stable,
     * but rows of one table need no order among themselves */
    qsort(live, n, sizeof *live, cmp_table);
    int rc = ensure_conn(w);
    if (rc == 0)
        rc = saves_fast(w, live, n);
    for (int t = 1; (rc == -EDEADLK || rc == -EEXIST) && t < DEADLOCK_TRIES && w->conn; t++)
        rc = saves_once(w, live, n);
    if (rc)
        for (size_t i = 0; i < n; i++)
            live[i]->status = rc == -EEXIST || rc == -EDEADLK ? -EIO : rc;
    atomic_fetch_add(&w->pool->save_batches, 1);
}

/* --- the pool ---------------------------------------------------------------------------------- */

/* What the job's execution showed about the server, for the loop (health.c), and why it
 * failed. */
static void note_health(struct my_worker *w, struct my_job *j, uint64_t started_us)
{
    j->health = w->health;
    j->started_us = started_us;
    j->finished_us = kq_mono_us();
    free(j->why);
    j->why = w->why[0] && (j->status || w->health == MY_HEALTH_DOWN) ? strdup(w->why) : NULL;
}

/* The store closes the mailbox only after the workers are joined, so a finished job always
 * finds it open; should that ever change, the job is not lost silently. */
static void drop_late_job(struct my_job *j)
{
    KQ_ERROR(MY_MOD, "a job finished after the store closed: its result is dropped");
    my_job_free(j);
}

/* Detach up to SAVE_BATCH_MAX saves (and SAVE_BATCH_BYTES) from the queue. Locked. */
static struct my_job *take_saves(struct my_pool *p)
{
    struct my_job *head = p->saves, *last = head;
    size_t n = 1, bytes = head->values_len;
    while (last->next && n < SAVE_BATCH_MAX && bytes + last->next->values_len <= SAVE_BATCH_BYTES) {
        last = last->next;
        bytes += last->values_len;
        n++;
    }
    p->saves = last->next;
    if (!p->saves)
        p->saves_tail = &p->saves;
    last->next = NULL;
    return head;
}

static void *worker_main(void *arg)
{
    struct my_worker *w = arg;
    struct my_pool *p = w->pool;
    mysql_thread_init();
    pthread_mutex_lock(&p->mu);
    for (;;) {
        if (!p->saves && !p->jobs) {
            if (p->stop)
                break;
            pthread_cond_wait(&p->work_cv, &p->mu);
            continue;
        }
        struct my_job *list;
        if (p->saves && (!p->jobs || !w->took_saves)) {
            list = take_saves(p);
            w->took_saves = true;
        } else {
            list = p->jobs;
            p->jobs = list->next;
            if (!p->jobs)
                p->jobs_tail = &p->jobs;
            list->next = NULL;
            w->took_saves = false;
        }
        pthread_mutex_unlock(&p->mu);
        w->health = MY_HEALTH_NONE;
        w->why[0] = 0;
        uint64_t started = kq_mono_us();
        if (list->kind == MY_JOB_SAVE)
            run_saves(w, list);
        else
            run_script(w, list);
        if (w->health == MY_HEALTH_UP) /* workers in back-off may try again */
            atomic_fetch_add(&p->up_epoch, 1);
        for (struct my_job *j = list; j; j = j->next)
            note_health(w, j, started);
        while (list) {
            struct my_job *j = list;
            list = j->next;
            j->next = NULL;
            if (!j->sync) {
                if (kq_mailbox_post(&p->done, &j->mail) != 0)
                    drop_late_job(j);
                continue;
            }
            pthread_mutex_lock(&p->mu);
            j->finished = true; /* the submitter reads and frees it from here on */
            pthread_cond_broadcast(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    drop_conn(w);
    mysql_thread_end();
    return NULL;
}

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static void lib_init(void) { mysql_library_init(0, NULL, NULL); }

int my_pool_start(struct my_pool *p, uv_loop_t *loop, const struct my_conf *conf,
                  kq_mailbox_deliver_fn on_done, void *ud)
{
    pthread_once(&lib_once, lib_init); /* mysql_library_init is not thread-safe */
    p->conf = conf;
    p->saves_tail = &p->saves;
    p->jobs_tail = &p->jobs;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    int rc = -ENOMEM;
    p->workers = calloc((size_t)conf->max_conn, sizeof *p->workers);
    for (int i = 0; p->workers && i < conf->max_conn; i++) {
        p->workers[i].pool = p;
        if ((rc = pthread_create(&p->workers[i].th, NULL, worker_main, &p->workers[i]))) {
            rc = -rc;
            goto fail;
        }
        p->n_workers++;
    }
    /* Workers post to the mailbox only after a job, and jobs come after this. */
    if (p->workers && (rc = kq_mailbox_init(&p->done, loop, on_done, ud)) == 0)
        return 0;
fail:
    my_pool_stop(p);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work_cv);
    pthread_cond_destroy(&p->done_cv);
    return rc;
}

void my_pool_submit(struct my_pool *p, struct my_job *j)
{
    j->next = NULL;
    pthread_mutex_lock(&p->mu);
    if (j->kind == MY_JOB_SAVE) {
        *p->saves_tail = j;
        p->saves_tail = &j->next;
    } else {
        *p->jobs_tail = j;
        p->jobs_tail = &j->next;
    }
    pthread_cond_signal(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
}

void my_pool_submit_list(struct my_pool *p, struct my_job *list)
{
    size_t wake = 0;
    bool saves = false;
    pthread_mutex_lock(&p->mu);
    while (list) {
        struct my_job *j = list;
        list = j->next;
        j->next = NULL;
        if (j->kind == MY_JOB_SAVE) {
            *p->saves_tail = j;
            p->saves_tail = &j->next;
            saves = true; /* one worker takes them all (up to a batch) */
        } else {
            *p->jobs_tail = j;
            p->jobs_tail = &j->next;
            wake++;
        }
    }
    wake += saves;
    for (size_t i = 0; i < wake && i < (size_t)p->n_workers; i++)
        pthread_cond_signal(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
}

int my_pool_run_sync(struct my_pool *p, struct my_job *j)
{
    j->sync = true;
    j->finished = false;
    my_pool_submit(p, j);
    pthread_mutex_lock(&p->mu);
    while (!j->finished)
        pthread_cond_wait(&p->done_cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
    return j->status;
}

void my_pool_stop(struct my_pool *p)
{
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_workers; i++)
        pthread_join(p->workers[i].th, NULL);
    p->n_workers = 0;
    free(p->workers);
    p->workers = NULL;
}
