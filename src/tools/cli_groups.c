/* kiteq-cli groups and purge: the consumer groups' backlog per topic (GET /groups), like
 * `kafka-consumer-groups --describe`, and dropping one group's backlog on a topic
 * (POST /groups/purge). */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "tools/cli_groups.h"
#include "tools/common/cli_util.h"
#include "tools/common/http_client.h"

#define PROG "kiteq-cli"

#define OPS_HELP                                                                             \
    "  --admin HOST:PORT    the broker's admin address (required)\n"                         \
    "  --token TOKEN        the broker's adminToken (default: $KITEQ_ADMIN_TOKEN)\n"          \
    "  --timeout MS         give up after MS milliseconds (default 10000)\n"                  \
    "  -h, --help           show this help\n"

static const char GROUPS_HELP[] =
    "usage: " PROG " groups --admin HOST:PORT [--group G] [--topic T] [--json | --table]\n"
    "The backlog of every consumer group on every topic it is bound to (GET /groups).\n\n"
    "  --group G            only group G\n"
    "  --topic T            only topic T\n"
    "  --json               print the broker's JSON (the default when stdout is not a terminal)\n"
    "  --table              print a table (the default on a terminal)\n" OPS_HELP
    "\nColumns: BACKLOG = pending messages routed to the group and not acked by it (in\n"
    "flight included), INFLIGHT = sent and not answered yet, QUEUED = waiting for room in the\n"
    "group's window or rate, ACKED/S = acked in the last second, OLDEST = age of the oldest\n"
    "message not acked, CONSUMERS = connections. BACKLOG and OLDEST are as of the broker's\n"
    "last pass over its pending messages (its age is printed below the table).\n"
    "Exit: 0 on a 2xx answer, 1 otherwise (the error on stderr), 2 usage.\n";

static const char PURGE_HELP[] =
    "usage: " PROG " purge --admin HOST:PORT --group G --topic T\n"
    "Drop group G's backlog on topic T (POST /groups/purge): every pending message of T that\n"
    "G has not acked is marked done for G (G never gets it; other groups still do, and a\n"
    "message no group needs any more is removed). Needs the adminToken when one is set.\n\n"
    "  --group G            the consumer group (required)\n"
    "  --topic T            the topic (required)\n" OPS_HELP
    "\nPrints {\"group\", \"topic\", \"purged\" (copies marked done), \"removed\" (messages no\n"
    "group needed any more)}. Exit: 0 on success, 1 when the broker refused (e.g. 404: G is\n"
    "not bound to T), 2 usage.\n";

enum { O_ADMIN = 3000, O_TOKEN, O_TIMEOUT, O_GROUP, O_TOPIC, O_JSON, O_TABLE };

struct ops_args {
    const char *admin, *token, *group, *topic;
    long timeout;
    int format; /* 0 = by terminal, 1 = JSON, 2 = table */
};

/* 0 (*help set when --help was printed), or CLI_EXIT_USAGE after a message. */
static int ops_parse(const char *cmd, const char *help_text, int argc, char **argv,
                     struct ops_args *a, bool *help)
{
    static const struct option longopts[] = {
        {"admin", required_argument, NULL, O_ADMIN},
        {"token", required_argument, NULL, O_TOKEN},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"group", required_argument, NULL, O_GROUP},
        {"topic", required_argument, NULL, O_TOPIC},
        {"json", no_argument, NULL, O_JSON},
        {"table", no_argument, NULL, O_TABLE},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    const char *env = getenv("KITEQ_ADMIN_TOKEN");
    *a = (struct ops_args){.timeout = 10000, .token = env && *env ? env : NULL};
    bool purge = !strcmp(cmd, "purge");
    *help = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'h': fputs(help_text, stdout); *help = true; return 0;
        case O_ADMIN: a->admin = optarg; break;
        case O_TOKEN: a->token = optarg; break;
        case O_TIMEOUT:
            if (cli_parse_long(PROG, "timeout", optarg, 1, 3600000, &a->timeout))
                return CLI_EXIT_USAGE;
            break;
        case O_GROUP: a->group = optarg; break;
        case O_TOPIC: a->topic = optarg; break;
        case O_JSON:
        case O_TABLE:
            if (purge) {
                fprintf(stderr, PROG " purge: --json and --table are options of 'groups'\n");
                return CLI_EXIT_USAGE;
            }
            a->format = opt == O_JSON ? 1 : 2;
            break;
        default:
            fprintf(stderr, "see '" PROG " %s --help'\n", cmd);
            return CLI_EXIT_USAGE;
        }
    }
    const char *err = optind < argc ? "unexpected argument"
                      : !a->admin    ? "missing --admin"
                      : purge && (!a->group || !*a->group) ? "missing --group"
                      : purge && (!a->topic || !*a->topic) ? "missing --topic"
                                                           : NULL;
    if (err) {
        fprintf(stderr, PROG " %s: %s%s%s (see '" PROG " %s --help')\n", cmd, err,
                optind < argc ? " " : "", optind < argc ? argv[optind] : "", cmd);
        return CLI_EXIT_USAGE;
    }
    return 0;
}

/* The request; on a 2xx answer *r holds it (free it), else the error is printed. */
static int ops_call(const char *cmd, const struct ops_args *a, const char *method,
                    const char *target, struct cli_http_response *r)
{
    char err[512];
    if (cli_http_request(a->admin, method, target, a->token, (int)a->timeout, r, err,
                         sizeof err)) {
        fprintf(stderr, PROG " %s: %s\n", cmd, err);
        return CLI_EXIT_FAIL;
    }
    if (r->status >= 200 && r->status < 300)
        return CLI_EXIT_OK;
    bool nl = r->body_len && r->body[r->body_len - 1] == '\n';
    fprintf(stderr, PROG " %s: HTTP %d: %s%s", cmd, r->status, r->body, nl ? "" : "\n");
    cli_http_response_free(r);
    return CLI_EXIT_FAIL;
}

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
    struct ops_args a;
    bool help;
    int rc = ops_parse("groups", GROUPS_HELP, argc, argv, &a, &help);
    if (rc || help)
        return rc;
    struct cli_http_response r;
    if ((rc = ops_call("groups", &a, "GET", "/groups", &r)))
        return rc;
    bool table = a.format ? a.format == 2 : isatty(STDOUT_FILENO);
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
    struct ops_args a;
    bool help;
    int rc = ops_parse("purge", PURGE_HELP, argc, argv, &a, &help);
    if (rc || help)
        return rc;
    char group[400], topic[400], target[900];
    if (cli_url_encode(a.group, group, sizeof group) || cli_url_encode(a.topic, topic, sizeof topic)) {
        fprintf(stderr, PROG " purge: --group or --topic too long\n");
        return CLI_EXIT_USAGE;
    }
    snprintf(target, sizeof target, "/groups/purge?group=%s&topic=%s", group, topic);
    struct cli_http_response r;
    if ((rc = ops_call("purge", &a, "POST", target, &r)))
        return rc;
    bool nl = r.body_len && r.body[r.body_len - 1] == '\n';
    fputs(r.body, stdout);
    if (!nl)
        fputc('\n', stdout);
    cli_http_response_free(&r);
    return CLI_EXIT_OK;
}
