#include "support/mariadb_service.h"
#include "support/test_files.h"
#include "support/tmp_dir.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void copy(char *dst, size_t len, const char *src) { snprintf(dst, len, "%s", src); }

/* One KEY=VALUE into the struct (unknown keys are left alone). */
static void set_field(struct mariadb_service *m, const char *key, const char *v)
{
    if (!strcmp(key, "MYSQL_HOST"))
        copy(m->host, sizeof m->host, v);
    else if (!strcmp(key, "MYSQL_PORT"))
        m->port = (unsigned)atoi(v);
    else if (!strcmp(key, "MYSQL_USER"))
        copy(m->user, sizeof m->user, v);
    else if (!strcmp(key, "MYSQL_PASSWORD"))
        copy(m->pass, sizeof m->pass, v);
    else if (!strcmp(key, "MYSQL_PID"))
        m->pid = (pid_t)atoi(v);
    else if (!strcmp(key, "MYSQL_PIDFILE"))
        copy(m->pidfile, sizeof m->pidfile, v);
}

static int read_services_env(struct mariadb_service *m)
{
    char path[128], line[512];
    snprintf(path, sizeof path, "%s/services.env", m->base);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "mariadb_service: cannot read %s\n", path);
        return -1;
    }
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = '\0';
        set_field(m, line, eq + 1);
    }
    fclose(f);
    return 0;
}

static void from_environment(struct mariadb_service *m)
{
    static const char *const keys[] = {"MYSQL_HOST",     "MYSQL_PORT", "MYSQL_USER",
                                       "MYSQL_PASSWORD", "MYSQL_PID",  "MYSQL_PIDFILE"};
    m->port = 3306;
    copy(m->user, sizeof m->user, "root");
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (getenv(keys[i]))
            set_field(m, keys[i], getenv(keys[i]));
}

static int run_script(const struct mariadb_service *m, const char *script, const char *arg)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s/scripts/%s' '%s' %s", test_source_dir(), script, m->base, arg);
    int rc = system(cmd);
    if (rc != 0)
        fprintf(stderr, "mariadb_service: '%s' exited with %d\n", cmd, rc);
    return rc;
}

int mariadb_service_start(struct mariadb_service *m, const char *base_prefix)
{
    memset(m, 0, sizeof *m);
    const char *host = getenv("MYSQL_HOST");
    if (host && *host) {
        from_environment(m);
        return 0;
    }
    if (tmp_dir_make(m->base, sizeof m->base, base_prefix) != 0)
        return -1;
    if (run_script(m, "services-up.sh", "mysql") != 0 || read_services_env(m) != 0) {
        fprintf(stderr, "mariadb_service: MYSQL_HOST is not set and no MariaDB could be "
                        "started (install mariadb-server-core, or point MYSQL_HOST/PORT/USER/"
                        "PASSWORD at a server)\n");
        mariadb_service_stop(m); /* whatever the script left running */
        return -1;
    }
    return 0;
}

void mariadb_service_stop(struct mariadb_service *m)
{
    if (!m->base[0])
        return;
    run_script(m, "services-down.sh", "--purge");
    tmp_dir_remove(m->base);
    m->base[0] = '\0';
}

int mariadb_service_script(struct mariadb_service *m, const char *verb)
{
    if (!m->base[0])
        return -1;
    char script[64];
    snprintf(script, sizeof script, "services-%s.sh", verb);
    int rc = run_script(m, script, "mysql");
    read_services_env(m);
    return rc;
}

MYSQL *mariadb_service_connect(const struct mariadb_service *m, unsigned read_timeout_s)
{
    MYSQL *c = mysql_init(NULL);
    unsigned t = 3;
    mysql_options(c, MYSQL_OPT_CONNECT_TIMEOUT, &t);
    if (read_timeout_s)
        mysql_options(c, MYSQL_OPT_READ_TIMEOUT, &read_timeout_s);
    if (!mysql_real_connect(c, m->host, m->user, m->pass, NULL, m->port, NULL,
                            CLIENT_MULTI_STATEMENTS)) {
        mysql_close(c);
        return NULL;
    }
    return c;
}

void mariadb_service_drop_shards(MYSQL *c, const char *db, int shards)
{
    char sql[128];
    for (int d = 0; d < shards; d++) {
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS `%s_%d`", db, d);
        if (mysql_query(c, sql))
            fprintf(stderr, "mariadb_service: %s: %s\n", sql, mysql_error(c));
        else /* run_sql's multi-statement results, if any, are gone by now */
            mysql_free_result(mysql_store_result(c));
    }
}

int mariadb_query_int(MYSQL *c, const char *sql, long long *v)
{
    if (mysql_query(c, sql)) {
        fprintf(stderr, "SQL failed: %s\n  %s\n", mysql_error(c), sql);
        return -1;
    }
    MYSQL_RES *r = mysql_store_result(c);
    MYSQL_ROW row = r ? mysql_fetch_row(r) : NULL;
    *v = row && row[0] ? atoll(row[0]) : -1;
    if (r)
        mysql_free_result(r);
    return 0;
}
