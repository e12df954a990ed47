/* kiteq-cli groups and purge: the consumer groups' backlog per topic (GET /groups), like
 * `kafka-consumer-groups --describe`, and dropping one group's backlog on a topic
 * (POST /groups/purge). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "tools/cli_admin.h"
#include "tools/cli_groups.h"
#include "tools/common/cli_util.h"

#define PROG "kiteq-cli"

static const struct cli_cmd GROUPS_CMD = {
    .prog = PROG " groups",
    .usage =
        "usage: " PROG " groups --admin HOST:PORT [--group G] [--topic T] [--json | --table]\n"
        "The backlog of every consumer group on every topic it is bound to (GET /groups).\n",
    .epilog =
        "Columns: BACKLOG = pending messages routed to the group and not acked by it (in\n"
        "flight included), INFLIGHT = sent and not answered yet, QUEUED = waiting for room in the\n"
        "group's window or rate, ACKED/S = acked in the last second, OLDEST = age of the oldest\n"
        "message not acked, CONSUMERS = connections. BACKLOG and OLDEST are as of the broker's\n"
        "last pass over its pending messages (its age is printed below the table).\n"
        "Exit: 0 on a 2xx answer, 1 otherwise (the error on stderr), 2 usage.\n",
};

static const struct cli_cmd PURGE_CMD = {
    .prog = PROG " purge",
    .usage =
        "usage: " PROG " purge --admin HOST:PORT --group G --topic T\n"
        "Drop group G's backlog on topic T (POST /groups/purge): every pending message of T that\n"
        "G has not acked is marked done for G (G never gets it; other groups still do, and a\n"
        "message no group needs any more is removed). Needs the adminToken when one is set.\n",
    .epilog =
        "Prints {\"group\", \"topic\", \"purged\" (copies marked done), \"removed\" (messages no\n"
        "group needed any more)}. Exit: 0 on success, 1 when the broker refused (e.g. 404: G is\n"
        "not bound to T), 2 usage.\n",
};

enum { FORMAT_BY_TERMINAL, FORMAT_JSON, FORMAT_TABLE };

struct ops_args {
    struct cli_admin admin;
    const char *group, *topic;
    int format;
};

static double num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static const char *str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static bool wanted(const struct ops_args *a, const cJSON *row)
{
    return (!a->group || !strcmp(a->group, str(row, "group"))) &&
           (!a->topic || !strcmp(a->topic, str(row, "topic")));
}

static void print_age(char *out, size_t len, double sec)
{
    if (sec <= 0)
        snprintf(out, len, "-");
    else if (sec < 120)
        snprintf(out, len, "%.0fs", sec);
    else if (sec < 7200)
        snprintf(out, len, "%.0fm", sec / 60);
    else
        snprintf(out, len, "%.1fh", sec / 3600);
}

static int print_table(const struct ops_args *a, const cJSON *root)
{
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(root, "consumer_groups");
    if (!cJSON_IsArray(rows)) {
        fprintf(stderr, PROG " groups: unexpected answer (no consumer_groups)\n");
        return CLI_EXIT_FAIL;
    }
    int gw = 5, tw = 5; /* "GROUP", "TOPIC" */
    const cJSON *row;
    cJSON_ArrayForEach(row, rows) {
        if (!wanted(a, row))
            continue;
        int g = (int)strlen(str(row, "group")), t = (int)strlen(str(row, "topic"));
        gw = g > gw ? g : gw;
        tw = t > tw ? t : tw;
    }
    printf("%-*s  %-*s  %10s  %8s  %8s  %8s  %8s  %9s\n", gw, "GROUP", tw, "TOPIC", "BACKLOG",
           "INFLIGHT", "QUEUED", "ACKED/S", "OLDEST", "CONSUMERS");
    cJSON_ArrayForEach(row, rows) {
        if (!wanted(a, row))
            continue;
        char age[32];
        print_age(age, sizeof age, num(row, "oldest_sec"));
        printf("%-*s  %-*s  %10.0f  %8.0f  %8.0f  %8.0f  %8s  %9.0f\n", gw, str(row, "group"), tw,
               str(row, "topic"), num(row, "backlog"), num(row, "inflight"), num(row, "queued"),
               num(row, "acked_per_sec"), age, num(row, "consumers"));
    }
    const cJSON *scan = cJSON_GetObjectItemCaseSensitive(root, "backlog_scan");
    const cJSON *age = cJSON_GetObjectItemCaseSensitive(scan, "age_ms");
    if (cJSON_IsNumber(age))
        printf("(BACKLOG and OLDEST as of %.1f s ago: the last pass over %.0f pending messages "
               "took %.1f s)\n", age->valuedouble / 1000, num(scan, "messages"),
               num(scan, "pass_ms") / 1000);
    else
        printf("(BACKLOG and OLDEST not known yet: the first pass over the pending messages "
               "has not completed)\n");
    return CLI_EXIT_OK;
}

int cli_cmd_groups(int argc, char **argv)
{
    struct ops_args a = {0};
    cli_admin_init(&a.admin);
    const struct cli_opt opts[] = {
        CLI_STRING("group", &a.group, "G", "only group G"),
        CLI_STRING("topic", &a.topic, "T", "only topic T"),
        CLI_SET("json", &a.format, FORMAT_JSON,
                "print the broker's JSON (the default when stdout is not a terminal)"),
        CLI_SET("table", &a.format, FORMAT_TABLE, "print a table (the default on a terminal)"),
        CLI_ADMIN_OPTS(&a.admin),
        CLI_OPTS_END,
    };
    int rc;
    if (!cli_opts_parse(&GROUPS_CMD, opts, argc, argv, &rc))
        return rc;
    if ((rc = cli_admin_check(&GROUPS_CMD, &a.admin)))
        return rc;
    struct cli_http_response r;
    if ((rc = cli_admin_request(&GROUPS_CMD, &a.admin, "GET", "/groups", &r)))
        return rc;
    bool table = a.format ? a.format == FORMAT_TABLE : isatty(STDOUT_FILENO);
    cJSON *root = cJSON_Parse(r.body);
    if (!root) {
        fprintf(stderr, PROG " groups: the answer is not JSON: %s\n", r.body);
        rc = CLI_EXIT_FAIL;
    } else if (table) {
        rc = print_table(&a, root);
    } else {
        cJSON *rows = cJSON_GetObjectItemCaseSensitive(root, "consumer_groups");
        for (cJSON *row = rows ? rows->child : NULL, *next; row; row = next) {
            next = row->next;
            if (!wanted(&a, row))
                cJSON_Delete(cJSON_DetachItemViaPointer(rows, row));
        }
        char *s = cJSON_PrintUnformatted(root);
        if (s)
            puts(s);
        free(s);
    }
    cJSON_Delete(root);
    cli_http_response_free(&r);
    return rc;
}

int cli_cmd_purge(int argc, char **argv)
{
    struct ops_args a = {0};
    cli_admin_init(&a.admin);
    const struct cli_opt opts[] = {
        CLI_STRING("group", &a.group, "G", "the consumer group (required)"),
        CLI_STRING("topic", &a.topic, "T", "the topic (required)"),
        CLI_ADMIN_OPTS(&a.admin),
        CLI_OPTS_END,
    };
    int rc;
    if (!cli_opts_parse(&PURGE_CMD, opts, argc, argv, &rc))
        return rc;
    if ((rc = cli_admin_check(&PURGE_CMD, &a.admin)))
        return rc;
    if (!a.group || !*a.group)
        return cli_usage_error(&PURGE_CMD, "missing --group");
    if (!a.topic || !*a.topic)
        return cli_usage_error(&PURGE_CMD, "missing --topic");
    char group[400], topic[400], target[900];
    if (cli_url_encode(a.group, group, sizeof group) || cli_url_encode(a.topic, topic, sizeof topic)) {
        fprintf(stderr, PROG " purge: --group or --topic too long\n");
        return CLI_EXIT_USAGE;
    }
    snprintf(target, sizeof target, "/groups/purge?group=%s&topic=%s", group, topic);
    return cli_admin_print(&PURGE_CMD, &a.admin, "POST", target);
}
