/* What the admin subcommands of kiteq-cli share (src/tools/cli_admin.c): the admin address,
 * token and timeout options, one HTTP request to the broker's admin listener, and how an
 * answer is printed. */
#ifndef KQ_TOOLS_CLI_ADMIN_H
#define KQ_TOOLS_CLI_ADMIN_H
#include "tools/common/cli_opts.h"
#include "tools/common/http_client.h"

struct cli_admin {
    const char *admin, *token;
    long timeout;
};

/* The rows of the options every admin subcommand takes (inside a struct cli_opt table). */
#define CLI_ADMIN_OPTS(a)                                                                    \
    CLI_STRING("admin", &(a)->admin, "HOST:PORT", "the broker's admin address (required)"),  \
    CLI_STRING("token", &(a)->token, "TOKEN",                                               \
               "the broker's adminToken, required by the POSTs when it is set\n"            \
               "(default: $KITEQ_ADMIN_TOKEN; the variable keeps it out of the\n"           \
               "process list)"),                                                            \
    CLI_LONG("timeout", &(a)->timeout, "MS", 1, 3600000,                                    \
             "give up after MS milliseconds (default 10000)")

/* The defaults, before parsing: token from $KITEQ_ADMIN_TOKEN, timeout 10 s. */
void cli_admin_init(struct cli_admin *a);
/* After parsing: CLI_EXIT_OK, or CLI_EXIT_USAGE after a message (no --admin). */
int cli_admin_check(const struct cli_cmd *cmd, const struct cli_admin *a);
/* One request. Returns CLI_EXIT_OK with the 2xx answer in *r (free it with
 * cli_http_response_free), or CLI_EXIT_FAIL after printing the error on stderr. */
int cli_admin_request(const struct cli_cmd *cmd, const struct cli_admin *a, const char *method,
                      const char *target, struct cli_http_response *r);
/* A request whose 2xx answer goes to stdout as it is. */
int cli_admin_print(const struct cli_cmd *cmd, const struct cli_admin *a, const char *method,
                    const char *target);
#endif
