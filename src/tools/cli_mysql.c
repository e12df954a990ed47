/* kiteq-cli mysql init: create the MySQL store's databases and tables (the original
 * KiteQ schema, see docs/STORAGE.md), or --print the SQL. */
#include <errno.h>
#include <mysql.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/mysql/schema.h"
#include "tools/cli_mysql.h"
#include "tools/common/cli_opts.h"
#include "tools/common/cli_util.h"

#define PROG "kiteq-cli mysql"

static const struct cli_cmd MYSQL_CMD = {
    .prog = PROG,
    .usage =
        "usage: kiteq-cli mysql init [--host HOST:PORT] [--user U] [--password P] [--db NAME]\n"
        "                            [--shardnum N] [--print]\n"
        "Create the databases NAME_0..NAME_{N-1}, each with the tables kite_msg_0.. and\n"
        "kite_msg_dlq (CREATE ... IF NOT EXISTS: existing data is kept).\n",
    .epilog = "Exit: 0 created (or printed), 1 the SQL failed, 2 usage, 3 cannot connect.\n",
};

static int run_schema(const char *hostport, const char *user, const char *password, const char *sql)
{
    char host[256];
    snprintf(host, sizeof host, "%s", hostport);
    unsigned port = 3306;
    char *colon = strrchr(host, ':');
    if (colon) {
        char *end;
        long p = strtol(colon + 1, &end, 10);
        if (*end || p <= 0 || p > 65535) {
            fprintf(stderr, PROG ": bad port in --host '%s'\n", hostport);
            return CLI_EXIT_USAGE;
        }
        port = (unsigned)p;
        *colon = 0;
    }
    MYSQL *m = mysql_init(NULL);
    unsigned t = 10;
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &t);
    if (!mysql_real_connect(m, host, user, password, NULL, port, NULL, CLIENT_MULTI_STATEMENTS)) {
        fprintf(stderr, PROG ": cannot connect to %s:%u as %s: %s\n", host, port, user,
                mysql_error(m));
        mysql_close(m);
        return CLI_EXIT_CONNECT;
    }
    int rc = CLI_EXIT_OK;
    if (mysql_query(m, sql))
        rc = CLI_EXIT_FAIL;
    else
        do { /* every statement's result, so that a failure in the middle is seen */
            MYSQL_RES *r = mysql_store_result(m);
            if (r)
                mysql_free_result(r);
        } while (mysql_next_result(m) == 0);
    if (rc || mysql_errno(m)) {
        fprintf(stderr, PROG ": schema failed: %s\n", mysql_error(m));
        rc = CLI_EXIT_FAIL;
    }
    mysql_close(m);
    return rc;
}

int cli_cmd_mysql(int argc, char **argv)
{
    const char *host = "127.0.0.1:3306", *user = "root", *password = "", *db = "kite";
    long shardnum = 4;
    bool print = false;
    const struct cli_opt opts[] = {
        CLI_STRING("host", &host, "HOST:PORT", "server (default 127.0.0.1:3306)"),
        CLI_STRING("user", &user, "U", "user (default root)"),
        CLI_STRING("password", &password, "P", "password (default \"\")"),
        CLI_STRING("db", &db, "NAME", "database name prefix (default kite)"),
        CLI_LONG("shardnum", &shardnum, "N", 1, 16,
                 "number of databases: 1, 2, 4, 8 or 16 (default 4)"),
        CLI_FLAG("print", &print, "print the SQL instead of running it"),
        CLI_OPTS_END,
    };
    int rc;
    bool init = argc >= 2 && !strcmp(argv[1], "init");
    if (init) { /* options follow "init" */
        argc--, argv++;
        argv[0] = (char *)"kiteq-cli mysql init"; /* getopt's messages start with it */
    }
    if (!cli_opts_parse(&MYSQL_CMD, opts, argc, argv, &rc))
        return rc;
    if (!init)
        return cli_usage_error(&MYSQL_CMD, "missing action: init");
    if (!kq_mysql_shardnum_valid((int)shardnum)) {
        fprintf(stderr, PROG ": --shardnum must divide 16 (1, 2, 4, 8 or 16)\n");
        return CLI_EXIT_USAGE;
    }
    char *sql = kq_mysql_schema_sql((int)shardnum, db);
    if (!sql) {
        fprintf(stderr, PROG ": --db must be 1-48 characters [A-Za-z0-9_]\n");
        return CLI_EXIT_USAGE;
    }
    rc = CLI_EXIT_OK;
    if (print)
        fputs(sql, stdout);
    else if ((rc = run_schema(host, user, password, sql)) == CLI_EXIT_OK)
        printf("created %s_0..%s_%ld with %ld tables each plus kite_msg_dlq\n", db, db,
               shardnum - 1, 16 / shardnum);
    free(sql);
    return rc;
}
