/* Internals of the MySQL store, shared by its files (never included outside
 * src/store/mysql). Threads: the loop thread owns struct my_store and builds every SQL
 * text; worker threads (pool.c) own one connection each and only execute jobs. */
#ifndef KQ_STORE_MYSQL_INTERNAL_H
#define KQ_STORE_MYSQL_INTERNAL_H
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <uthash.h>
#include <uv.h>

#include "core/mailbox.h"
#include "store/dlq_groups.h"
#include "store/dlq_index.h"
#include "store/mysql/mysql_store.h"
#include "store/store.h"

#define MY_MOD "mysql"

/* The 16 columns the original writes, in its order (id is AUTO_INCREMENT). */
#define MY_COLS                                                                                    \
    "message_id,header,body,msg_type,topic,message_type,publish_group,`commit`,"                   \
    "publish_time,expired_time,deliver_count,deliver_limit,kite_server,fail_groups,"               \
    "succ_groups,next_deliver_time"
/* The same columns without body and, unless it holds a property of scheduled delivery or
 * per-message groups (x-kiteq-...: the broker reads them at recovery), without header (empty
 * in their place): the broker loads them when a message's attempt starts. */
#define MY_COLS_NO_PAYLOAD                                                                         \
    "message_id,IF(LOCATE('x-kiteq-',header)>0,header,''),'',msg_type,topic,message_type,publish_" \
    "group,`commit`,"                                                                              \
    "publish_time,expired_time,deliver_count,deliver_limit,kite_server,fail_groups,"               \
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

/* What a job's execution showed about the server; the loop keeps the store's availability
 * from it (health.c). */
enum my_health {
    MY_HEALTH_NONE, /* the server was not asked (deadline passed, worker in back-off) */
    MY_HEALTH_UP,   /* the server answered (an SQL error is an answer too) */
    MY_HEALTH_DOWN, /* no connection or no answer: why says which */
};

enum my_job_kind {
    MY_JOB_SCRIPT, /* run stmts in order (in one transaction when txn) */
    MY_JOB_SAVE,   /* one INSERT row; consecutive saves share a transaction */
};

#define MY_MAX_STMTS 20 /* takeover: one UPDATE per table (16) */

struct my_job {
    struct my_job *next; /* in the workers' queues */
    struct kq_mail mail; /* in the pool's mailbox once finished (async jobs) */
    enum my_job_kind kind;
    my_done_fn done;
    int status;           /* 0 or -errno, set by the worker */
    uint64_t deadline_us; /* monotonic; 0 = none. Past it the job fails with -ETIMEDOUT */
    bool sync;            /* the submitter waits (my_pool_run_sync) */
    bool force_connect;   /* try to connect even while the worker backs off (the submitter
                             has its own back-off: recovery) */
    bool finished;
    enum my_health health;            /* set by the worker */
    uint64_t started_us, finished_us; /* monotonic: the worker's execution of the job */
    char *why; /* why it failed: "mysql HOST:PORT: reason" (malloc'd; NULL: unknown) */
    /* MY_JOB_SCRIPT */
    bool txn;
    size_t n_stmts;
    char *stmts[MY_MAX_STMTS];
    uint64_t affected[MY_MAX_STMTS];
    int rows_stmt;        /* index of the statement whose rows are kept, -1 = none */
    struct my_rows *rows; /* owned by the job */
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
    pthread_cond_t done_cv; /* a sync job finished */
    struct my_job *saves, **saves_tail;
    struct my_job *jobs, **jobs_tail;
    bool stop;
    struct kq_mailbox done; /* finished async jobs, to the loop */
    const struct my_conf *conf;
    struct my_worker *workers;
    int n_workers;
    atomic_uint_fast64_t reconnects, save_batches;
    atomic_uint_fast64_t up_epoch; /* +1 whenever a worker got through to the server */
    /* +1 whenever a worker found the server gone or made a connection after a back-off */
    atomic_uint_fast64_t lost_epoch;
};

/* Start conf->max_conn workers (connections are made lazily, with back-off); finished async
 * jobs reach on_done(ud, &job->mail) on the loop thread, in the order each worker finished
 * them. 0 or -errno. The owner closes p->done after my_pool_stop. */
int my_pool_start(struct my_pool *p, uv_loop_t *loop, const struct my_conf *conf,
                  kq_mailbox_deliver_fn on_done, void *ud);
/* Queue a job; its done runs on the loop thread. Loop thread. */
void my_pool_submit(struct my_pool *p, struct my_job *j);
/* Queue a list of jobs (linked by next) under one lock, waking as few workers as they need:
 * all saves count as one batch. Loop thread. */
void my_pool_submit_list(struct my_pool *p, struct my_job *list);
/* Queue a job and wait for its execution (blocks the caller); the caller then reads the
 * job and frees it. Returns j->status. */
int my_pool_run_sync(struct my_pool *p, struct my_job *j);
/* Let the workers finish every queued job, then join them. Loop thread. */
void my_pool_stop(struct my_pool *p);

/* New script job: stmts are taken over (freed with the job). NULL on ENOMEM (stmts freed). */
struct my_job *my_job_script(bool txn, my_done_fn done, size_t n, char **stmts);
void my_job_free(struct my_job *j);

/* --- the loop-side store (mysql_store.c, recover.c); loop thread only ------------------------ */

#define FLUSH_MAX 1000       /* ids per flush transaction */
#define RECOVER_PAGE 500     /* rows per recover / dlq_list query */
#define DEAD_LETTER_TRIES 20 /* a failed DLQ move is retried on each flush tick */
#define COL_VARCHAR 255

/* Column indexes in MY_COLS order. */
enum {
    C_ID,
    C_HEADER,
    C_BODY,
    C_TYPE,
    C_TOPIC,
    C_MTYPE,
    C_GROUP,
    C_COMMIT,
    C_PUBLISH,
    C_EXPIRED,
    C_COUNT,
    C_LIMIT,
    C_SERVER,
    C_FAIL,
    C_SUCC,
    C_NEXT,
    C_NCOLS
};

struct commit_cb {
    kq_store_done_cb cb;
    void *ud;
};

/* The coalesced batched operations of one id. */
struct pend {
    char id[KQ_ID_LEN + 1];
    bool del, commit, has_state;
    int32_t attempts;
    int64_t next_sec;
    char *succ, *fail; /* JSON arrays */
    struct commit_cb *cbs;
    size_t n_cbs;
    UT_hash_handle hh;
};

struct my_table {
    struct pend *map;
    size_t n_upd, n_del; /* approximate counts that trigger a flush */
    bool inflight;
};

/* Start-up recovery: a cursor over the shard tables (see "recover" below). */
struct rec_key {
    int64_t next, exp, count, limit;
    char id[KQ_ID_LEN + 1];
};

enum rec_state { REC_IDLE, REC_SYNC, REC_BACKGROUND, REC_DONE };

struct my_recovery {
    kq_store_recover_cb cb;
    void *ud;
    int table;    /* db * hash_num + tb being read */
    bool has_key; /* key = the last row read from that table */
    struct rec_key key;
    char *move[2]; /* REPLACE into the DLQ + DELETE of the last page's dead rows */
    int64_t now;   /* Unix s at the start: what counts as expired */
    uint64_t rows, t0_us;
    enum rec_state state;
    unsigned backoff_ms;
    char why[400];    /* the reason given while unavailable */
    uv_timer_t timer; /* next background try */
};

/* Whether the server answers (health.c), kept from what every finished job showed. */
struct my_availability {
    bool down;
    bool probing;           /* a probe job is out */
    char why[320];          /* while down: "mysql HOST:PORT: reason" */
    uint64_t down_at_us;    /* monotonic: the latest failure seen */
    uint64_t down_since_us; /* when it went down */
    uint64_t up_at_us;      /* the latest answer seen */
    uv_timer_t probe;       /* every second: SELECT 1 while down or when idle */
};

struct my_store {
    struct kq_store base;
    struct my_recovery rec;
    struct my_availability avail;
    /* Jobs of this loop iteration, handed to the workers together (uv_idle: at the start of
     * the next iteration, which then polls without waiting): saves that arrive together go
     * out as one batch, with one lock and one wake-up instead of a context switch per
     * message. */
    struct my_job *outbox, **outbox_tail;
    uv_idle_t outbox_idle;
    bool direct; /* closing: submit at once */
    struct my_conf conf;
    struct my_pool pool;
    struct my_table tables[KQ_MYSQL_SHARD_SEED]; /* db * hash_num + table */
    uv_timer_t tick;
    struct my_job *retry; /* failed dead-letter moves */
    /* dead letters by topic and publishing group (dlq.c) */
    struct kq_dlq_counts dlq;
    bool dlq_known;             /* a count came in */
    bool dlq_counting;          /* a count is in flight */
    uint64_t dlq_changes;       /* this broker's DLQ changes so far */
    uint64_t dlq_count_mark;    /* dlq_changes when the count in flight was asked */
    uint64_t dlq_next_count_ms; /* monotonic ms of the next count */
    int handles_open;
    bool closing; /* no new saves, no more dead-letter retries */
    bool stopped; /* the workers are gone */
    struct kq_mysql_stats st;
};

/* Shared by mysql_store.c, recover.c, dlq.c and takeover.c. */
static inline bool my_valid_id(const char *id) { return id && *id && strlen(id) <= KQ_ID_LEN; }
bool my_is_mysql_store(const struct kq_store *base);
void my_table_name(struct my_sql *q, const struct my_store *s, int db, int tb);
void my_select_cols(struct my_sql *q, const struct my_store *s, int db, int tb);
void my_row_msg(const struct my_rows *r, size_t i, struct kq_stored_msg *m);
/* Hand a job to the workers with the others of this loop iteration. */
void my_submit(struct my_store *s, struct my_job *j);
/* Each row (MY_COLS) to cb with its delivery state (NULL for a fresh message). */
int my_emit_rows(const struct my_rows *r, kq_store_recover_cb cb, void *ud);
/* kq_store_ops.takeover (takeover.c) and .stats (stats.c). */
int my_takeover(struct kq_store *base, const char *dead_server, kq_store_recover_cb row,
                kq_store_takeover_done_cb done, void *ud);
void my_stats(struct kq_store *base, kq_store_stat_cb cb, void *ud);
/* kq_store_ops.dlq_* (dlq.c: jobs that complete on the loop; counters in memory). */
int my_dlq_counts(struct kq_store *base, bool by_group, kq_store_dlq_count_cb cb, void *ud);
int my_dlq_page(struct kq_store *base, const char *topic, const char *after, size_t max,
                kq_store_dlq_cb item, kq_store_dlq_page_cb done, void *ud);
int my_dlq_get(struct kq_store *base, const char *id, kq_store_dlq_one_cb cb, void *ud);
int my_dlq_take(struct kq_store *base, const char *id, kq_store_dlq_one_cb cb, void *ud);
int my_dlq_purge(struct kq_store *base, const char *topic, kq_store_purge_cb cb, void *ud);
/* delta dead letters of (topic, group) by this broker (a move: +1, a take: -1). */
void my_dlq_changed(struct my_store *s, const char *topic, const char *group, int64_t delta);
/* Count the dead letters again when it is time (the flush tick). */
void my_dlq_count_tick(struct my_store *s);
/* kq_store_ops.recover (recover.c). */
int my_store_recover(struct kq_store *base, kq_store_recover_cb cb, void *ud);
/* Availability (health.c). unavailable: kq_store_ops.unavailable (recovery pending, or the
 * server down). note: what a finished job showed (every async job, before its done).
 * up: the server answers (recovery got through). start: the probe timer (one handle). */
const char *my_store_unavailable(struct kq_store *base);
void my_health_note(struct my_store *s, const struct my_job *j);
void my_health_up(struct my_store *s);
void my_health_start(struct my_store *s);
/* --- dead-letter rows (dlq_row.c) ----------------------------------------------------------- */

/* The header field (tag, length, JSON) that carries what kite_msg_dlq has no column for;
 * g may be NULL. malloc'd; NULL on ENOMEM. */
char *my_dead_field(const char *reason, int64_t dead_time, const struct kq_dlq_groups *g,
                    size_t *len);
/* A kite_msg_dlq row read back; d borrows from the row and from this struct. */
struct my_dead {
    struct kq_dead_letter d;
    char reason[1024];
    struct cJSON *json;
    const char **fail, **succ;
    struct kq_dlq_groups_buf gb; /* reused from row to row */
};
/* Fill x from row i: 0 or -ENOMEM. my_dead_release after each row (also after a failure),
 * my_dead_free at the end. */
int my_dead_row(const struct my_rows *r, size_t i, struct my_dead *x);
void my_dead_release(struct my_dead *x);
void my_dead_free(struct my_dead *x);
#endif
