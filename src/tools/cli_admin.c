/* kiteq-cli's admin subcommands: the options they share and one request to the broker's
 * admin listener (docs/ADMIN.md). */
#include "tools/cli_admin.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "tools/common/cli_util.h"

void cli_admin_init(struct cli_admin *a)
{
    const char *token = getenv("KITEQ_ADMIN_TOKEN");
    *a = (struct cli_admin){.timeout = 10000, .token = token && *token ? token : NULL};
}

int cli_admin_check(const struct cli_cmd *cmd, const struct cli_admin *a)
{
    return a->admin ? CLI_EXIT_OK : cli_usage_error(cmd, "missing --admin");
}

int cli_admin_request(const struct cli_cmd *cmd, const struct cli_admin *a, const char *method,
                      const char *target, struct cli_http_response *r)
{
    char err[512];
    if (cli_http_request(a->admin, method, target, a->token, (int)a->timeout, r, err,
                         sizeof err)) {
        fprintf(stderr, "%s: %s\n", cmd->prog, err);
        return CLI_EXIT_FAIL;
    }
    if (r->status >= 200 && r->status < 300)
        return CLI_EXIT_OK;
    bool nl = r->body_len && r->body[r->body_len - 1] == '\n';
    fprintf(stderr, "%s: HTTP %d: %s%s", cmd->prog, r->status, r->body, nl ? "" : "\n");
    cli_http_response_free(r);
    return CLI_EXIT_FAIL;
}

int cli_admin_print(const struct cli_cmd *cmd, const struct cli_admin *a, const char *method,
                    const char *target)
{
    struct cli_http_response r;
    int rc = cli_admin_request(cmd, a, method, target, &r);
    if (rc)
        return rc;
    fwrite(r.body, 1, r.body_len, stdout);
    if (!r.body_len || r.body[r.body_len - 1] != '\n')
        fputc('\n', stdout);
    cli_http_response_free(&r);
    return CLI_EXIT_OK;
}
