/* kiteq-cli groups and purge: the consumer groups' backlog per topic (GET /groups), like
 * `kafka-consumer-groups --describe`, and dropping one group's backlog on a topic
 * (POST /groups/purge). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tools/cli_admin.h"
#include "tools/cli_groups.h"
#include "tools/cli_render.h"
#include "tools/common/cli_util.h"

#define PROG "kiteq-cli"

static const struct cli_cmd GROUPS_CMD = {
    .prog = PROG " groups",
    .usage =
        "usage: " PROG " groups [--admin HOST:PORT] [--group G] [--topic T] [--table | --json]\n"
        "The backlog of every consumer group on every topic it is bound to (GET /groups).\n",
    .epilog =
        "Columns: BACKLOG = pending messages routed to the group and not acked by it (in\n"
        "flight included), INFLIGHT = sent and not answered yet, QUEUED = waiting for room in the\n"
        "group's window or rate, ACKED/S = acked in the last second, OLDEST = age of the oldest\n"
        "message not acked, CONSUMERS = connections. BACKLOG and OLDEST are as of the broker's\n"
        "last pass over its pending messages (its age is printed below the "
        "table).\n" CLI_ADMIN_EXIT,
};

static const struct cli_cmd PURGE_CMD = {
    .prog = PROG " purge",
    .usage =
        "usage: " PROG " purge [--admin HOST:PORT] --group G --topic T\n"
        "Drop group G's backlog on topic T (POST /groups/purge): every pending message of T that\n"
        "G has not acked is marked done for G (G never gets it; other groups still do, and a\n"
        "message no group needs any more is removed). Needs the adminToken when one is set.\n",
    .epilog =
        "Prints {\"group\", \"topic\", \"purged\" (copies marked done), \"removed\" (messages no\n"
        "group needed any more)}. Exit: 0 on success, 1 when the broker refused (e.g. 404: G is\n"
        "not bound to T), 2 usage, 3 the admin address could not be reached.\n",
};

static bool wanted(const cJSON *row, const char *group, const char *topic)
{
    return (!group || !strcmp(group, cli_json_str(row, "group"))) &&
           (!topic || !strcmp(topic, cli_json_str(row, "topic")));
}

int cli_groups_table(const cJSON *root, const char *group, const char *topic)
{
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(root, "consumer_groups");
    if (!cJSON_IsArray(rows)) {
        fprintf(stderr, PROG ": unexpected answer (no consumer_groups); try --json\n");
        return CLI_EXIT_FAIL;
    }
    static const char *const heads[] = {"GROUP",  "TOPIC",   "BACKLOG", "INFLIGHT",
                                        "QUEUED", "ACKED/S", "OLDEST",  "CONSUMERS"};
    struct cli_table tab;
    cli_table_init(&tab, 8, heads, "llrrrrrr");
    const cJSON *row;
    cJSON_ArrayForEach(row, rows)
    {
        if (!wanted(row, group, topic))
            continue;
        char n[5][32], age[32];
        static const char *const keys[] = {"backlog", "inflight", "queued", "acked_per_sec",
                                           "consumers"};
        for (int i = 0; i < 5; i++)
            snprintf(n[i], sizeof n[i], "%.0f", cli_json_num(row, keys[i]));
        cli_format_age(age, sizeof age, cli_json_num(row, "oldest_sec"));
        const char *cells[] = {cli_json_str(row, "group"),
                               cli_json_str(row, "topic"),
                               n[0],
                               n[1],
                               n[2],
                               n[3],
                               age,
                               n[4]};
        cli_table_add(&tab, cells);
    }
    cli_table_print(&tab);
    const cJSON *scan = cJSON_GetObjectItemCaseSensitive(root, "backlog_scan");
    const cJSON *age = cJSON_GetObjectItemCaseSensitive(scan, "age_ms");
    if (cJSON_IsNumber(age))
        printf("(BACKLOG and OLDEST as of %.1f s ago: the last pass over %.0f pending messages "
               "took %.1f s)\n",
               age->valuedouble / 1000, cli_json_num(scan, "messages"),
               cli_json_num(scan, "pass_ms") / 1000);
    else
        printf("(BACKLOG and OLDEST not known yet: the first pass over the pending messages "
               "has not completed)\n");
    return CLI_EXIT_OK;
}

/* The filters of `groups`, for its table callback. */
static const char *filter_group, *filter_topic;

static int groups_table(const cJSON *root)
{
    return cli_groups_table(root, filter_group, filter_topic);
}

int cli_cmd_groups(int argc, char **argv)
{
    struct cli_admin a;
    cli_admin_init(&a);
    const struct cli_opt opts[] = {
        CLI_STRING("group", &filter_group, "G", "only group G"),
        CLI_STRING("topic", &filter_topic, "T", "only topic T"),
        CLI_ADMIN_TABLE_OPT(&a),
        CLI_ADMIN_OPTS(&a),
        CLI_OPTS_END,
    };
    int rc;
    if (!cli_opts_parse(&GROUPS_CMD, opts, argc, argv, &rc))
        return rc;
    if ((rc = cli_admin_check(&GROUPS_CMD, &a)))
        return rc;
    cJSON *root;
    if ((rc = cli_admin_request_json(&GROUPS_CMD, &a, "GET", "/groups", &root)))
        return rc;
    cJSON *rows = cJSON_GetObjectItemCaseSensitive(root, "consumer_groups");
    for (cJSON *row = cJSON_IsArray(rows) ? rows->child : NULL, *next; row; row = next) {
        next = row->next;
        if (!wanted(row, filter_group, filter_topic))
            cJSON_Delete(cJSON_DetachItemViaPointer(rows, row));
    }
    rc = cli_admin_output(&a, root, groups_table);
    cJSON_Delete(root);
    return rc;
}

int cli_cmd_purge(int argc, char **argv)
{
    struct cli_admin a;
    const char *group_arg = NULL, *topic_arg = NULL;
    cli_admin_init(&a);
    const struct cli_opt opts[] = {
        CLI_STRING("group", &group_arg, "G", "the consumer group (required)"),
        CLI_STRING("topic", &topic_arg, "T", "the topic (required)"),
        CLI_ADMIN_OPTS(&a),
        CLI_OPTS_END,
    };
    int rc;
    if (!cli_opts_parse(&PURGE_CMD, opts, argc, argv, &rc))
        return rc;
    if ((rc = cli_admin_check(&PURGE_CMD, &a)))
        return rc;
    if (!group_arg || !*group_arg)
        return cli_usage_error(&PURGE_CMD, "missing --group");
    if (!topic_arg || !*topic_arg)
        return cli_usage_error(&PURGE_CMD, "missing --topic");
    char group[400], topic[400], target[900];
    if (cli_url_encode(group_arg, group, sizeof group) ||
        cli_url_encode(topic_arg, topic, sizeof topic))
        return cli_usage_error(&PURGE_CMD, "--group or --topic too long");
    snprintf(target, sizeof target, "/groups/purge?group=%s&topic=%s", group, topic);
    return cli_admin_show(&PURGE_CMD, &a, "POST", target, NULL);
}
