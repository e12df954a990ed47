/* Sharding and the schema of the original KiteQ MySQL store (its table.sh): kept free of
 * libmariadb so that kiteq-cli can print the SQL without a server. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/text.h"
#include "store/mysql/schema.h"

int kq_mysql_shardnum_valid(int shardnum)
{
    return shardnum > 0 && shardnum <= KQ_MYSQL_SHARD_SEED && KQ_MYSQL_SHARD_SEED % shardnum == 0;
}

void kq_mysql_shard(const char *id, int shardnum, int *db, int *table)
{
    size_t n = id ? strlen(id) : 0;
    int h = n ? kq_hex_digit(id[n - 1]) : 0;
    if (h < 0)
        h = 0; /* the original falls back to shard 0 when the digit does not parse */
    int hash_num = KQ_MYSQL_SHARD_SEED / shardnum;
    *db = h / hash_num;
    *table = h % hash_num;
}

/* Columns, types and keys exactly as the original's table.sh creates them. Note the
 * primary key is message_id; `id` only carries AUTO_INCREMENT (so it needs idx_id). */
static const char TABLE_BODY[] =
    " (\n"
    "  `id` int NOT NULL AUTO_INCREMENT,\n"
    "  `header` mediumblob,\n"
    "  `body` mediumblob,\n"
    "  `msg_type` tinyint(3) unsigned DEFAULT NULL,\n"
    "  `message_id` varchar(32) NOT NULL,\n"
    "  `topic` varchar(255) DEFAULT NULL,\n"
    "  `message_type` varchar(255) DEFAULT NULL,\n"
    "  `publish_group` varchar(255) DEFAULT NULL,\n"
    "  `commit` tinyint(1) DEFAULT NULL,\n"
    "  `expired_time` bigint(13) DEFAULT NULL,\n"
    "  `publish_time` bigint(13) DEFAULT NULL,\n"
    "  `deliver_count` int(11) DEFAULT NULL,\n"
    "  `deliver_limit` int(11) DEFAULT NULL,\n"
    "  `kite_server` varchar(255) DEFAULT NULL,\n"
    "  `fail_groups` varchar(255) DEFAULT NULL,\n"
    "  `succ_groups` varchar(255) DEFAULT NULL,\n"
    "  `next_deliver_time` bigint(13) DEFAULT NULL,\n"
    "  PRIMARY KEY (`message_id`),\n"
    "  KEY `idx_id` (`id`),\n"
    "  KEY `idx_commit` (`commit`),\n"
    "  KEY `idx_kite_server` (`kite_server`),\n"
    "  KEY `idx_expired_time` (`expired_time`),\n"
    "  KEY `idx_recover_a` "
    "(`next_deliver_time`,`kite_server`,`expired_time`,`deliver_count`,`deliver_limit`)\n"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8;\n";

static int valid_dbname(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 48)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_'))
            return 0;
    return 1;
}

char *kq_mysql_schema_sql(int shardnum, const char *dbname)
{
    if (!kq_mysql_shardnum_valid(shardnum) || !valid_dbname(dbname))
        return NULL;
    int hash_num = KQ_MYSQL_SHARD_SEED / shardnum;
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (!f)
        return NULL;
    for (int d = 0; d < shardnum; d++) {
        fprintf(f, "CREATE DATABASE IF NOT EXISTS `%s_%d`;\n", dbname, d);
        for (int t = 0; t <= hash_num; t++) {
            /* the last table of each database is the dead-letter table */
            if (t < hash_num)
                fprintf(f, "CREATE TABLE IF NOT EXISTS `%s_%d`.`kite_msg_%d`", dbname, d, t);
            else
                fprintf(f, "CREATE TABLE IF NOT EXISTS `%s_%d`.`kite_msg_dlq`", dbname, d);
            fputs(TABLE_BODY, f);
        }
    }
    if (fclose(f) != 0) {
        free(out);
        return NULL;
    }
    return out;
}
