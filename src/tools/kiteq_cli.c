/* kiteq-cli: publish, consume and ask the broker's admin listener from the command line
 * (built on libkiteq-client).
 *
 * Subcommands live in the `commands` table below: add a row and a cmd_<name> function to
 * add one. Every subcommand describes its options in a struct cli_opt table
 * (common/cli_opts.h), which parses them and answers --help. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "tools/cli_admin.h"
#include "tools/cli_groups.h"
#include "tools/cli_mysql.h"
#include "tools/cli_pubsub.h"
#include "tools/cli_render.h"
#include "tools/common/cli_opts.h"
#include "tools/common/cli_util.h"

#define PROG "kiteq-cli"

/* --- admin commands: HTTP to the broker's admin listener (docs/ADMIN.md) ------------------ */

#define ADMIN_EPILOG                                                                               \
    "Output: a table (stat, binds, msg, dlq list) or indented JSON on a terminal, one line of\n"   \
    "JSON when piped; --table, --pretty and --json choose.\n" CLI_ADMIN_EXIT

/* The admin commands that show (or trigger) one endpoint: the admin options, no arguments. */
struct admin_view {
    struct cli_cmd cmd;
    const char *method, *target;
    int (*table)(const cJSON *); /* NULL: no --table */
};

#define TABLE_OPTS " [--table | --json | --pretty]"
#define ADMIN_VIEW(name, opts, what, epilog_, method_, target_, table_)                            \
    {                                                                                              \
        .cmd = {.prog = PROG " " name,                                                             \
                .usage = "usage: " PROG " " name " [--admin HOST:PORT]" opts "\n" what "\n",       \
                .epilog = epilog_},                                                                \
        .method = method_, .target = target_, .table = table_                                      \
    }

static const struct admin_view admin_views[] = {
    ADMIN_VIEW("stat", TABLE_OPTS, "Show the broker's statistics (GET /stat).", ADMIN_EPILOG, "GET",
               "/stat", cli_render_stat),
    ADMIN_VIEW("binds", TABLE_OPTS, "Show the subscriptions: groups by topic (GET /binds).",
               ADMIN_EPILOG, "GET", "/binds", cli_render_binds),
    ADMIN_VIEW("metrics", "", "Show the Prometheus metrics (GET /metrics), as text.",
               CLI_ADMIN_EXIT, "GET", "/metrics", NULL),
    ADMIN_VIEW("reload", "", "Reload the configuration and policies, like SIGHUP (POST /reload).",
               ADMIN_EPILOG, "POST", "/reload", NULL),
};

/* argv[0] names the view ("kiteq-cli stat"). */
static int cmd_admin_view(int argc, char **argv)
{
    const struct admin_view *v = NULL;
    for (size_t i = 0; !v && i < sizeof admin_views / sizeof admin_views[0]; i++)
        if (!strcmp(argv[0], admin_views[i].cmd.prog))
            v = &admin_views[i];
    if (!v) { /* main dispatches only the names above */
        fprintf(stderr, "%s: not an admin view\n", argv[0]);
        return CLI_EXIT_USAGE;
    }
    struct cli_admin a;
    cli_admin_init(&a);
    const struct cli_opt with_table[] = {CLI_ADMIN_TABLE_OPT(&a), CLI_ADMIN_OPTS(&a), CLI_OPTS_END};
    const struct cli_opt no_table[] = {CLI_ADMIN_OPTS(&a), CLI_OPTS_END};
    int rc;
    if (!cli_opts_parse(&v->cmd, v->table ? with_table : no_table, argc, argv, &rc))
        return rc;
    if ((rc = cli_admin_check(&v->cmd, &a)))
        return rc;
    return cli_admin_show(&v->cmd, &a, v->method, v->target, v->table);
}

static const struct cli_cmd MSG_CMD = {
    .prog = PROG " msg",
    .usage = "usage: " PROG " msg [--admin HOST:PORT] [--table | --json | --pretty] MESSAGE_ID\n"
             "Show one message (GET /msg/<id>): pending, recently finished or dead, with the\n"
             "history of its events (published, stored, each delivery attempt and its answer,\n"
             "retries, ...) as a table of events (time, event, group, connection, detail) on a\n"
             "terminal.\n",
    .epilog = ADMIN_EPILOG,
    .args = "MESSAGE_ID",
    .min_args = 1,
    .max_args = 1,
};

static int cmd_msg(int argc, char **argv)
{
    struct cli_admin a;
    cli_admin_init(&a);
    const struct cli_opt opts[] = {CLI_ADMIN_TABLE_OPT(&a), CLI_ADMIN_OPTS(&a), CLI_OPTS_END};
    int rc;
    if (!cli_opts_parse(&MSG_CMD, opts, argc, argv, &rc))
        return rc;
    if ((rc = cli_admin_check(&MSG_CMD, &a)))
        return rc;
    char id[400], target[450];
    if (cli_url_encode(argv[optind], id, sizeof id))
        return cli_usage_error(&MSG_CMD, "MESSAGE_ID too long");
    snprintf(target, sizeof target, "/msg/%s", id);
    return cli_admin_show(&MSG_CMD, &a, "GET", target, cli_render_msg);
}

static const struct cli_cmd DLQ_CMD = {
    .prog = PROG " dlq",
    .usage =
        "usage: " PROG " dlq list    [--admin HOST:PORT] [--topic T] [--limit N] [--after NEXT]\n"
        "       " PROG " dlq show    [--admin HOST:PORT] ID\n"
        "       " PROG " dlq requeue [--admin HOST:PORT] (--id ID | --all) [--group G]...\n"
        "       " PROG " dlq purge   [--admin HOST:PORT] (--topic T | --all)\n"
        "List, show, requeue or purge dead letters (GET /dlq, GET /dlq/ID, POST /dlq/requeue,\n"
        "POST /dlq/purge). show prints the message with its body (\"body\" as text when it is\n"
        "printable UTF-8, else \"bodyBase64\"), its properties, the groups it failed for with\n"
        "each one's last reason (\"failedGroups\") and the groups that had acked it.\n"
        "A requeue delivers only to the groups the message failed for, or to the --group ones.\n",
    .epilog = ADMIN_EPILOG,
    .args = "action: list, show ID, requeue or purge",
    .min_args = 1,
    .max_args = 2,
};

/* --group G (repeatable): "G1,G2" URL-encoded into a char[400]. */
static int add_dlq_group(void *target, const char *arg)
{
    char *groups = target;
    size_t n = strlen(groups), cap = 400;
    if (n) {
        if (n + 3 >= cap)
            goto too_long;
        memcpy(groups + n, "%2C", 4); /* the comma between groups, encoded */
        n += 3;
    }
    if (cli_url_encode(arg, groups + n, cap - n) == 0)
        return 0;
too_long:
    fprintf(stderr, PROG " dlq: too many or too long --group values\n");
    return -1;
}

static int cmd_dlq(int argc, char **argv)
{
    struct cli_admin a;
    cli_admin_init(&a);
    const char *topic_arg = NULL, *id_arg = NULL, *after_arg = NULL;
    long limit = -1;
    bool all = false;
    char groups[400] = "";
    const struct cli_opt opts[] = {
        CLI_STRING("topic", &topic_arg, "T", "list: only topic T; purge: the topic to purge"),
        CLI_STRING("id", &id_arg, "ID", "requeue: the message to deliver again"),
        CLI_FLAG("all", &all, "requeue every dead letter / purge every topic"),
        CLI_CALL("group", add_dlq_group, groups, "G",
                 "requeue: deliver to consumer group G (repeat for more) instead of\n"
                 "the groups it failed for"),
        CLI_LONG("limit", &limit, "N", 1, 1000,
                 "list: at most N messages (1..1000, broker default 100)"),
        CLI_STRING("after", &after_arg, "NEXT",
                   "list: the page after the one whose \"next\" was NEXT"),
        CLI_ADMIN_TABLE_OPT(&a),
        CLI_ADMIN_OPTS(&a),
        CLI_OPTS_END,
    };
    int rc;
    if (!cli_opts_parse(&DLQ_CMD, opts, argc, argv, &rc))
        return rc;
    if ((rc = cli_admin_check(&DLQ_CMD, &a)))
        return rc;
    const char *action = argv[optind];
    const char *show_id = optind + 1 < argc ? argv[optind + 1] : NULL;
    char topic[400] = "", id[400] = "", after[200] = "", target[1200];
    if ((topic_arg && cli_url_encode(topic_arg, topic, sizeof topic)) ||
        (id_arg && cli_url_encode(id_arg, id, sizeof id)) ||
        (show_id && cli_url_encode(show_id, id, sizeof id)) ||
        (after_arg && cli_url_encode(after_arg, after, sizeof after)))
        return cli_usage_error(&DLQ_CMD, "--topic, --id or --after too long");
    const char *err = NULL;
    bool show = !strcmp(action, "show");
    if (show_id && !show) {
        err = "only show takes a message id argument";
    } else if (groups[0] && strcmp(action, "requeue")) {
        err = "--group is an option of requeue";
    } else if (show) {
        if (!show_id || id_arg || all || topic_arg || limit > 0 || after_arg)
            err = "show takes the message id only";
        else
            snprintf(target, sizeof target, "/dlq/%s", id);
    } else if (!strcmp(action, "list")) {
        if (id_arg || all)
            err = "list takes --topic, --limit and --after only";
        else
            snprintf(target, sizeof target, "/dlq?limit=%ld%s%s%s%s", limit > 0 ? limit : 100,
                     topic_arg ? "&topic=" : "", topic, after_arg ? "&after=" : "", after);
    } else if (after_arg) {
        err = "--after is an option of list";
    } else if (!strcmp(action, "requeue")) {
        if (topic_arg || limit > 0 || !id_arg == !all)
            err = "requeue takes exactly one of --id and --all";
        else
            snprintf(target, sizeof target, "/dlq/requeue?id=%s%s%s", all ? "*" : id,
                     groups[0] ? "&groups=" : "", groups);
    } else if (!strcmp(action, "purge")) {
        if (id_arg || limit > 0 || !topic_arg == !all)
            err = "purge takes exactly one of --topic and --all";
        else
            snprintf(target, sizeof target, "/dlq/purge?topic=%s", all ? "*" : topic);
    } else {
        err = "unknown action (want list, show, requeue or purge)";
    }
    if (err)
        return cli_usage_error(&DLQ_CMD, "%s", err);
    bool list = !strcmp(action, "list");
    if (!list && a.format == CLI_FORMAT_TABLE)
        return cli_usage_error(&DLQ_CMD, "--table is an option of list");
    return cli_admin_show(&DLQ_CMD, &a, list || show ? "GET" : "POST", target,
                          list ? cli_render_dlq : NULL);
}

/* --- dispatch ------------------------------------------------------------------------------ */

struct command {
    const char *name;
    int (*run)(int argc, char **argv); /* argv[0] is the subcommand name */
    const char *summary;
};

static const struct command commands[] = {
    {"pub", cli_cmd_pub, "publish messages and wait for the store acks"},
    {"sub", cli_cmd_sub, "print delivered messages as JSON lines and ack them"},
    {"stat", cmd_admin_view, "show broker statistics (admin HTTP)"},
    {"binds", cmd_admin_view, "show groups subscribed to each topic (admin HTTP)"},
    {"metrics", cmd_admin_view, "show Prometheus metrics (admin HTTP)"},
    {"msg", cmd_msg, "show one message and its history (admin HTTP)"},
    {"dlq", cmd_dlq, "list, show, requeue or purge dead letters (admin HTTP)"},
    {"groups", cli_cmd_groups, "backlog of each consumer group per topic (admin HTTP)"},
    {"purge", cli_cmd_purge, "drop a consumer group's backlog on a topic (admin HTTP)"},
    {"reload", cmd_admin_view, "reload configuration and policies (admin HTTP)"},
    {"mysql", cli_cmd_mysql, "create (init) the MySQL store's databases and tables"},
};

/* The exit codes of every subcommand; --help prints them, README.md lists the same. */
static const struct {
    int code;
    const char *meaning;
} exit_codes[] = {
    {CLI_EXIT_OK, "success"},
    {CLI_EXIT_FAIL, "the broker (or MySQL) answered but refused or failed; pub: a message not "
                    "stored; sub: timed out"},
    {CLI_EXIT_USAGE, "bad usage: unknown option, bad value, missing argument"},
    {CLI_EXIT_CONNECT, "cannot connect or authenticate: broker, admin listener, ZooKeeper or "
                       "MySQL"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: " PROG " <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\nexit codes:\n");
    for (size_t i = 0; i < sizeof exit_codes / sizeof exit_codes[0]; i++)
        fprintf(out, "  %d  %s\n", exit_codes[i].code, exit_codes[i].meaning);
    fprintf(out,
            "\nenvironment:\n"
            "  KITEQ_BROKER        default --broker of pub and sub\n"
            "  KITEQ_ADMIN         default --admin of the admin commands (else " CLI_ADMIN_DEFAULT
            ")\n"
            "  KITEQ_ADMIN_TOKEN   default --token\n"
            "\nRun '" PROG " <command> --help' for the options of a command.\n");
}

int main(int argc, char **argv)
{
    kq_log_set_level(KQ_LOG_WARN);
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return CLI_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(argv[1], commands[i].name))
            continue;
        /* getopt prefixes its messages with argv[0] */
        char name[64];
        snprintf(name, sizeof name, PROG " %s", commands[i].name);
        argv[1] = name;
        return commands[i].run(argc - 1, argv + 1);
    }
    fprintf(stderr, PROG ": unknown command '%s'\n", argv[1]);
    usage(stderr);
    return CLI_EXIT_USAGE;
}
