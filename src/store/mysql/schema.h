/* The original KiteQ MySQL schema and where a message id lives in it. Pure C (no libmariadb,
 * no libuv): the store and `kiteq-cli mysql-schema` share it (library kiteq_store_schema). */
#ifndef KQ_STORE_MYSQL_SCHEMA_H
#define KQ_STORE_MYSQL_SCHEMA_H

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

#endif
