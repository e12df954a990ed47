/* MySQL/MariaDB store: the original KiteQ schema (databases <db>_0..<db>_{shardnum-1}, tables
 * kite_msg_0.. and kite_msg_dlq in each), sharded by the last hex digit of the message id.
 * Opened through kq_store_open("mysql://host:3306?db=kite&username=..&password=..&...");
 * see docs/STORAGE.md "MySQL store" for the parameters and guarantees.
 *
 * schema.c (kq_mysql_shard, kq_mysql_schema_sql) has no libmariadb dependency, so tools can
 * link it alone. */
#ifndef KQ_STORE_MYSQL_MYSQL_STORE_H
#define KQ_STORE_MYSQL_MYSQL_STORE_H
#include <stddef.h>
#include <stdint.h>

struct kq_store; /* store/store.h; not included so that tools need no libuv headers */
struct kq_stored_msg;
struct kq_delivery_state;

#define KQ_MYSQL_SHARD_SEED 16 /* hex digits: the id space is cut into 16 buckets */

/* Placement of a message id: h = last character parsed as hex (anything else = 0);
 * hashNum = 16 / shardnum; database = h / hashNum, table = h % hashNum. shardnum must divide
 * 16 (1, 2, 4, 8, 16). Any thread. */
void kq_mysql_shard(const char *id, int shardnum, int *db, int *table);

/* True when shardnum is a divisor of 16. */
int kq_mysql_shardnum_valid(int shardnum);

/* The CREATE DATABASE / CREATE TABLE statements (IF NOT EXISTS, ';'-terminated, one
 * statement per line group) for `shardnum` databases named dbname_0..; the same columns
 * and index names as the original's table.sh. Returns a malloc'd string the caller frees,
 * or NULL (bad shardnum or dbname, ENOMEM). Any thread. */
char *kq_mysql_schema_sql(int shardnum, const char *dbname);

/* Hand a dead broker's pending messages to this store's server: rewrite kite_server from
 * dead_server to ours for every row of every shard table, one transaction per table set.
 * Blocks the caller until done (tools and tests; a serving broker uses
 * kq_mysql_takeover_start).
 * Returns 0 and the number of rows in *moved, -EINVAL (not a mysql store, bad name) or
 * -EIO/-ETIMEDOUT. Loop thread. */
int kq_mysql_takeover(struct kq_store *s, const char *dead_server, uint64_t *moved);

/* The same, page by page, handing every moved row to row (as recover does: message plus
 * delivery state, header and body borrowed for the call) so that the caller can deliver
 * them. Nothing waits: each page of 500 rows is one transaction on a worker, its rows come
 * back on the loop, then done(ud, status, moved) once: 0, or -EIO/-ETIMEDOUT/-ESHUTDOWN
 * (rows moved before the failure were handed to row). Returns 0 (done will run), or
 * -EINVAL (not a mysql store, bad name), -ENOMEM, -ESHUTDOWN (done will not run). Loop
 * thread. */
typedef void (*kq_mysql_row_cb)(void *ud, const struct kq_stored_msg *m,
                                const struct kq_delivery_state *state);
typedef void (*kq_mysql_takeover_done_cb)(void *ud, int status, uint64_t moved);
int kq_mysql_takeover_start(struct kq_store *s, const char *dead_server, kq_mysql_row_cb row,
                            kq_mysql_takeover_done_cb done, void *ud);

/* This store's kite_server value; NULL if s is not a mysql store. */
const char *kq_mysql_store_server(const struct kq_store *s);
/* "host:port:db" naming the shared database (ZooKeeper takeover locks). 0 or -EINVAL. */
int kq_mysql_store_ident(const struct kq_store *s, char *out, size_t len);

struct kq_mysql_stats {
    uint64_t saves_ok, saves_failed;   /* acked / failed save callbacks */
    uint64_t save_batches;             /* transactions that carried saves */
    uint64_t flushes, flush_failures;  /* update/commit/delete batches */
    uint64_t reconnects;               /* successful (re)connects by workers */
    uint64_t moved_to_dlq;             /* expired / over-limit rows moved by recover */
};

/* Counters; -EINVAL if s is not a mysql store. Loop thread. */
int kq_mysql_store_stats(struct kq_store *s, struct kq_mysql_stats *out);
#endif
