/* MySQL/MariaDB store: the original KiteQ schema (databases <db>_0..<db>_{shardnum-1}, tables
 * kite_msg_0.. and kite_msg_dlq in each), sharded by the last hex digit of the message id.
 * Opened through kq_store_open("mysql://host:3306?db=kite&username=..&password=..&...");
 * see docs/STORAGE.md "MySQL store" for the parameters and guarantees.
 *
 * The schema and shard placement (schema.h) have no libmariadb dependency: kiteq-cli links
 * them alone (library kiteq_store_schema). */
#ifndef KQ_STORE_MYSQL_MYSQL_STORE_H
#define KQ_STORE_MYSQL_MYSQL_STORE_H
#include <stddef.h>
#include <stdint.h>

#include "store/mysql/schema.h"

struct kq_store; /* store/store.h; not included so that tools need no libuv headers */

struct kq_mysql_stats {
    uint64_t saves_ok, saves_failed;  /* acked / failed save callbacks */
    uint64_t save_batches;            /* transactions that carried saves */
    uint64_t flushes, flush_failures; /* update/commit/delete batches */
    uint64_t reconnects;              /* successful (re)connects by workers */
    uint64_t moved_to_dlq;            /* expired / over-limit rows moved by recover */
};

/* Counters (the broker reads them as kq_store_ops.stats); -EINVAL if s is not a mysql store.
 * Loop thread. The takeover of a dead broker's rows is kq_store_ops.owner/takeover. */
int kq_mysql_store_stats(struct kq_store *s, struct kq_mysql_stats *out);
#endif
