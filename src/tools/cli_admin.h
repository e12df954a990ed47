/* What the admin subcommands of kiteq-cli share (src/tools/cli_admin.c): the admin address,
 * token, timeout and output options, one HTTP request to the broker's admin listener, and
 * how an answer is printed. */
#ifndef KQ_TOOLS_CLI_ADMIN_H
#define KQ_TOOLS_CLI_ADMIN_H
#include <cjson/cJSON.h>

#include "tools/common/cli_opts.h"
#include "tools/common/http_client.h"

#define CLI_ADMIN_DEFAULT "127.0.0.1:13801"

enum cli_format {
    CLI_FORMAT_AUTO,   /* a table (or pretty JSON) on a terminal, compact JSON when piped */
    CLI_FORMAT_JSON,   /* one line */
    CLI_FORMAT_PRETTY, /* indented */
    CLI_FORMAT_TABLE,  /* for the commands that have one */
};

struct cli_admin {
    const char *admin, *token;
    long timeout;
    int format; /* enum cli_format */
};

/* The rows of the options every admin subcommand takes (inside a struct cli_opt table). */
#define CLI_ADMIN_OPTS(a)                                                                          \
    CLI_STRING("admin", &(a)->admin, "HOST:PORT",                                                  \
               "the broker's admin address (default: $KITEQ_ADMIN, else\n" CLI_ADMIN_DEFAULT ")"), \
        CLI_STRING("token", &(a)->token, "TOKEN",                                                  \
                   "the broker's adminToken, required by the POSTs when it is set\n"               \
                   "(default: $KITEQ_ADMIN_TOKEN; the variable keeps it out of the\n"              \
                   "process list)"),                                                               \
        CLI_LONG("timeout", &(a)->timeout, "MS", 1, 3600000,                                       \
                 "give up after MS milliseconds (default 10000)"),                                 \
        CLI_SET("json", &(a)->format, CLI_FORMAT_JSON,                                             \
                "print the answer as one line of JSON (the default when piped)"),                  \
        CLI_SET("pretty", &(a)->format, CLI_FORMAT_PRETTY, "print the answer as indented JSON")
/* The row of --table, for the commands that have a table. */
#define CLI_ADMIN_TABLE_OPT(a)                                                                     \
    CLI_SET("table", &(a)->format, CLI_FORMAT_TABLE, "print a table (the default on a terminal)")

/* The exit codes of an admin subcommand, for its help. */
#define CLI_ADMIN_EXIT                                                                             \
    "Exit: 0 on a 2xx answer, 1 when the broker answered with an error (on stderr), 2 usage,\n"    \
    "3 the admin address could not be reached.\n"

/* The defaults, before parsing: admin from $KITEQ_ADMIN (else CLI_ADMIN_DEFAULT), token from
 * $KITEQ_ADMIN_TOKEN, timeout 10 s. */
void cli_admin_init(struct cli_admin *a);
/* After parsing: CLI_EXIT_OK, or CLI_EXIT_USAGE after a message (an admin address that is
 * not HOST:PORT). */
int cli_admin_check(const struct cli_cmd *cmd, const struct cli_admin *a);
/* One request. Returns CLI_EXIT_OK with the 2xx answer in *r (free it with
 * cli_http_response_free), or after printing the error on stderr CLI_EXIT_CONNECT (the
 * admin listener could not be reached) or CLI_EXIT_FAIL (it answered with an error). */
int cli_admin_request(const struct cli_cmd *cmd, const struct cli_admin *a, const char *method,
                      const char *target, struct cli_http_response *r);
/* The same for a JSON answer: *root (cJSON_Delete it) on CLI_EXIT_OK. */
int cli_admin_request_json(const struct cli_cmd *cmd, const struct cli_admin *a, const char *method,
                           const char *target, cJSON **root);
/* Print a JSON answer as a->format asks; table (may be NULL: no table) prints the table. */
int cli_admin_output(const struct cli_admin *a, const cJSON *root, int (*table)(const cJSON *));
/* Request and output in one: a JSON answer as a->format asks, any other answer (metrics) as
 * it is. */
int cli_admin_show(const struct cli_cmd *cmd, const struct cli_admin *a, const char *method,
                   const char *target, int (*table)(const cJSON *));
#endif
