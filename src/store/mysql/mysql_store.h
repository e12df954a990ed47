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

struct kq_mysql_stats {
    uint64_t saves_ok, saves_failed;   /* acked / failed save callbacks */
    uint64_t save_batches;             /* transactions that carried saves */
    uint64_t flushes, flush_failures;  /* update/commit/delete batches */
    uint64_t reconnects;               /* successful (re)connects by workers */
    uint64_t moved_to_dlq;             /* expired / over-limit rows moved by recover */
};

/* Counters (the broker reads them as kq_store_ops.stats); -EINVAL if s is not a mysql store.
 * Loop thread. The takeover of a dead broker's rows is kq_store_ops.owner/takeover. */
int kq_mysql_store_stats(struct kq_store *s, struct kq_mysql_stats *out);
#endif
