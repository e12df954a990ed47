/* kiteq-cli mysql init: create the MySQL store's databases and tables (the original
 * KiteQ schema, see docs/STORAGE.md), or --print the SQL. */
#include <errno.h>
#include <getopt.h>
#include <mysql.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/mysql/mysql_store.h"
#include "tools/cli_mysql.h"
#include "tools/common/cli_util.h"

#define PROG "kiteq-cli mysql"

static const char HELP[] =
    "usage: kiteq-cli mysql init [--host HOST:PORT] [--user U] [--password P] [--db NAME]\n"
    "                            [--shardnum N] [--print]\n"
    "Create the databases NAME_0..NAME_{N-1}, each with the tables kite_msg_0.. and\n"
    "kite_msg_dlq (CREATE ... IF NOT EXISTS: existing data is kept).\n\n"
    "  --host HOST:PORT   server (default 127.0.0.1:3306)\n"
    "  --user U           user (default root)\n"
    "  --password P       password (default \"\")\n"
    "  --db NAME          database name prefix (default kite)\n"
    "  --shardnum N       number of databases: 1, 2, 4, 8 or 16 (default 4)\n"
    "  --print            print the SQL instead of running it\n"
    "  -h, --help         show this help\n";

static int run_schema(const char *hostport, const char *user, const char *password,
                      const char *sql)
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
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'H'},  {"user", required_argument, NULL, 'u'},
        {"password", required_argument, NULL, 'p'}, {"db", required_argument, NULL, 'd'},
        {"shardnum", required_argument, NULL, 's'}, {"print", no_argument, NULL, 'P'},
        {"help", no_argument, NULL, 'h'},           {0},
    };
    const char *host = "127.0.0.1:3306", *user = "root", *password = "", *db = "kite";
    long shardnum = 4;
    bool print = false;
    if (argc < 2 || strcmp(argv[1], "init") != 0) {
        bool help = argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"));
        fputs(HELP, help ? stdout : stderr);
        return help ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    }
    argc--, argv++; /* options follow "init" */
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'H': host = optarg; break;
        case 'u': user = optarg; break;
        case 'p': password = optarg; break;
        case 'd': db = optarg; break;
        case 's':
            if (cli_parse_long("kiteq-cli", "shardnum", optarg, 1, 16, &shardnum))
                return CLI_EXIT_USAGE;
            break;
        case 'P': print = true; break;
        case 'h': fputs(HELP, stdout); return CLI_EXIT_OK;
        default: fputs(HELP, stderr); return CLI_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, PROG ": unexpected argument '%s'\n", argv[optind]);
        return CLI_EXIT_USAGE;
    }
    if (!kq_mysql_shardnum_valid((int)shardnum)) {
        fprintf(stderr, PROG ": --shardnum must divide 16 (1, 2, 4, 8 or 16)\n");
        return CLI_EXIT_USAGE;
    }
    char *sql = kq_mysql_schema_sql((int)shardnum, db);
    if (!sql) {
        fprintf(stderr, PROG ": --db must be 1-48 characters [A-Za-z0-9_]\n");
        return CLI_EXIT_USAGE;
    }
    int rc = CLI_EXIT_OK;
    if (print)
        fputs(sql, stdout);
    else if ((rc = run_schema(host, user, password, sql)) == CLI_EXIT_OK)
        printf("created %s_0..%s_%ld with %ld tables each plus kite_msg_dlq\n", db, db,
               shardnum - 1, 16 / shardnum);
    free(sql);
    return rc;
}
