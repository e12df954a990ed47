/* Integration-test helpers for MariaDB: use MYSQL_HOST/PORT/USER/PASSWORD (and MYSQL_PID,
 * MYSQL_PIDFILE) from the environment when MYSQL_HOST is set, else start a private server
 * with scripts/services-up.sh BASE mysql in a temp BASE and stop it at mariadb_service_stop.
 * What services.env says is kept in the struct, not put into the environment: brokers and
 * scripts started later must not inherit MYSQL_HOST & co. */
#ifndef KQ_TEST_MARIADB_SERVICE_H
#define KQ_TEST_MARIADB_SERVICE_H
#include <mysql.h>
#include <stdbool.h>
#include <sys/types.h>

struct mariadb_service {
    char host[64], user[64], pass[64];
    unsigned port;
    pid_t pid;         /* the server's, when known */
    char pidfile[256]; /* MYSQL_PIDFILE, when given */
    char base[64];     /* services BASE when we started the server, else "" */
};

/* base_prefix names the temp BASE (/tmp/<prefix>XXXXXX, see tmp_dir.h). 0, or -1 with the
 * reason on stderr. */
int mariadb_service_start(struct mariadb_service *m, const char *base_prefix);
/* Stop the server we started (services-down.sh BASE --purge) and remove BASE; nothing for
 * a server from the environment. */
void mariadb_service_stop(struct mariadb_service *m);
/* scripts/services-VERB.sh BASE mysql (verb "up" or "down") on the server we started, then
 * read BASE/services.env again (a restarted server has a new PID). The script's exit
 * status, or -1 when the server is not ours. */
int mariadb_service_script(struct mariadb_service *m, const char *verb);
/* A new connection (connect timeout 3 s; read timeout read_timeout_s, 0 = none), or NULL. */
MYSQL *mariadb_service_connect(const struct mariadb_service *m, unsigned read_timeout_s);
/* DROP DATABASE <db>_0 ... <db>_<shards-1> (the store's shard databases), if they exist. */
void mariadb_service_drop_shards(MYSQL *c, const char *db, int shards);
/* Runs sql; the first column of its first row as an integer into *v (-1 when there is no row
 * or it is NULL). 0, or -1 when the query failed (said on stderr). */
int mariadb_query_int(MYSQL *c, const char *sql, long long *v);
#endif
