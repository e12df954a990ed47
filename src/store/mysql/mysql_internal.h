/* Internals of the MySQL store, shared by its files (never included outside
 * src/store/mysql). Threads: the loop thread owns struct my_store and builds every SQL
 * text; worker threads (pool.c) own one connection each and only execute jobs. */
#ifndef KQ_STORE_MYSQL_INTERNAL_H
#define KQ_STORE_MYSQL_INTERNAL_H
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "store/mysql/mysql_store.h"
#include "store/store.h"

#define MY_MOD "mysql"

/* The 16 columns the original writes, in its order (id is AUTO_INCREMENT). */
#define MY_COLS                                                                           \
    "message_id,header,body,msg_type,topic,message_type,publish_group,`commit`,"          \
    "publish_time,expired_time,deliver_count,deliver_limit,kite_server,fail_groups,"      \
    "succ_groups,next_deliver_time"

/* --- SQL text (sql.c); any thread ---------------------------------------------------------- */

struct my_sql {
    char *p; /* NUL-terminated */
    size_t len, cap;
    bool oom;
};

void my_sql_cat(struct my_sql *q, const char *s);
void my_sql_printf(struct my_sql *q, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* 'escaped' string literal (NULL → NULL) and _binary'escaped' blob literal. */
void my_sql_str(struct my_sql *q, const char *s);
void my_sql_strn(struct my_sql *q, const char *s, size_t n);
void my_sql_bin(struct my_sql *q, const uint8_t *p, size_t n);
void my_sql_free(struct my_sql *q);
/* Take ownership of the text (NULL after an allocation failure). */
char *my_sql_take(struct my_sql *q);

/* JSON array of strings that fits in max bytes (later names are dropped to fit: the
 * columns are varchar(255)). malloc'd; NULL on ENOMEM. */
char *my_groups_json(const char **g, size_t n, size_t max);
/* Parse a JSON array of strings (NULL, "null", bad JSON → 0 names). *out is one malloc'd
 * block (pointer array + strings) the caller frees. 0 or -ENOMEM. */
int my_groups_parse(const char *json, const char ***out, size_t *n);

/* --- result rows copied out of libmariadb by the worker ----------------------------------- */

struct my_cell {
    char *p; /* NUL-terminated copy, NULL for SQL NULL */
    unsigned long len;
};

struct my_rows {
    size_t n, ncols;
    struct my_cell *cells; /* n * ncols */
};

void my_rows_free(struct my_rows *r);
static inline const struct my_cell *my_cell(const struct my_rows *r, size_t row, size_t col)
{
    return &r->cells[row * r->ncols + col];
}
int64_t my_cell_i64(const struct my_cell *c); /* NULL or junk → 0 */

/* --- the worker pool (pool.c) -------------------------------------------------------------- */

struct my_conf {
    char host[256];
    unsigned port;
    char db[64];
    char user[128];
    char password[128];
    char server[256]; /* the kite_server value of this broker */
    int shardnum, hash_num;
    int batch_update, batch_del, flush_sec, max_conn, timeout_sec;
};

struct my_job;
struct my_store;
struct my_worker;
/* done runs on the loop thread (or the thread that waited for a sync job) and frees j. */
typedef void (*my_done_fn)(struct my_store *s, struct my_job *j);

enum my_job_kind {
    MY_JOB_SCRIPT, /* run stmts in order (in one transaction when txn) */
    MY_JOB_SAVE,   /* one INSERT row; consecutive saves share a transaction */
};

#define MY_MAX_STMTS 20 /* takeover: one UPDATE per table (16) */

struct my_job {
    struct my_job *next;
    enum my_job_kind kind;
    my_done_fn done;
    int status;           /* 0 or -errno, set by the worker */
    uint64_t deadline_us; /* monotonic; 0 = none. Past it the job fails with -ETIMEDOUT */
    bool sync;            /* the submitter waits (my_pool_run_sync) */
    bool force_connect;   /* try to connect even while the worker backs off (the submitter
                             has its own back-off: recovery) */
    bool finished;
    /* MY_JOB_SCRIPT */
    bool txn;
    size_t n_stmts;
    char *stmts[MY_MAX_STMTS];
    uint64_t affected[MY_MAX_STMTS];
    int rows_stmt;         /* index of the statement whose rows are kept, -1 = none */
    struct my_rows *rows;  /* owned by the job */
    /* MY_JOB_SAVE */
    int db, table;
    char *values; /* "(...)" tuple for the 16 columns */
    size_t values_len;
    /* owned by the submitter (loop side) */
    kq_store_done_cb cb;
    void *ud;
    void *ctx;
    int attempts;
};

struct my_pool {
    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* queued work or stop */
    pthread_cond_t done_cv; /* a job finished */
    struct my_job *saves, **saves_tail;
    struct my_job *jobs, **jobs_tail;
    struct my_job *done, **done_tail;
    bool stop;
    uv_async_t async; /* done jobs are waiting */
    const struct my_conf *conf;
    struct my_worker *workers;
    int n_workers;
    atomic_uint_fast64_t reconnects, save_batches;
    atomic_uint_fast64_t up_epoch; /* +1 on every successful connect */
};

/* Start conf->max_conn workers (connections are made lazily, with back-off). 0 or -errno. */
int my_pool_start(struct my_pool *p, uv_loop_t *loop, const struct my_conf *conf,
                  uv_async_cb on_done);
/* Queue a job; its done runs on the loop thread. Loop thread. */
void my_pool_submit(struct my_pool *p, struct my_job *j);
/* Queue a list of jobs (linked by next) under one lock, waking as few workers as they need:
 * all saves count as one batch. Loop thread. */
void my_pool_submit_list(struct my_pool *p, struct my_job *list);
/* Queue a job and wait for its execution (blocks the caller); the caller then reads the
 * job and frees it. Returns j->status. */
int my_pool_run_sync(struct my_pool *p, struct my_job *j);
/* Detach the finished jobs (FIFO); wait up to wait_ms for one when none is there. */
struct my_job *my_pool_take_done(struct my_pool *p, int wait_ms);
/* Let the workers finish every queued job, then join them. Loop thread. */
void my_pool_stop(struct my_pool *p);

/* New script job: stmts are taken over (freed with the job). NULL on ENOMEM (stmts freed). */
struct my_job *my_job_script(bool txn, my_done_fn done, size_t n, char **stmts);
void my_job_free(struct my_job *j);
#endif
