/* kiteq-cli's admin subcommands: the options they share, one request to the broker's admin
 * listener (docs/ADMIN.md) and the output a person or a script wants. */
#include "tools/cli_admin.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "tools/common/cli_util.h"

void cli_admin_init(struct cli_admin *a)
{
    const char *token = getenv("KITEQ_ADMIN_TOKEN"), *admin = getenv("KITEQ_ADMIN");
    *a = (struct cli_admin){.admin = admin && *admin ? admin : CLI_ADMIN_DEFAULT,
                            .timeout = 10000,
                            .token = token && *token ? token : NULL};
}

int cli_admin_check(const struct cli_cmd *cmd, const struct cli_admin *a)
{
    if (!cli_is_hostport(a->admin))
        return cli_usage_error(
            cmd, "bad admin address '%s' (expected HOST:PORT, e.g. " CLI_ADMIN_DEFAULT ")",
            a->admin);
    for (const char *t = a->token; t && *t; t++)
        if ((unsigned char)*t <= ' ' || (unsigned char)*t >= 0x7f)
            return cli_usage_error(cmd, "the admin token must be visible ASCII");
    return CLI_EXIT_OK;
}

/* The broker's {"error": ...} when it sent one, else the body as it is. */
static void print_http_error(const struct cli_cmd *cmd, const struct cli_http_response *r)
{
    cJSON *j = cJSON_Parse(r->body);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    if (cJSON_IsString(e)) {
        fprintf(stderr, "%s: %s (HTTP %d)\n", cmd->prog, e->valuestring, r->status);
    } else {
        bool nl = r->body_len && r->body[r->body_len - 1] == '\n';
        fprintf(stderr, "%s: HTTP %d: %s%s", cmd->prog, r->status, r->body, nl ? "" : "\n");
    }
    cJSON_Delete(j);
}

int cli_admin_request(const struct cli_cmd *cmd, const struct cli_admin *a, const char *method,
                      const char *target, struct cli_http_response *r)
{
    char err[512];
    int rc =
        cli_http_request(a->admin, method, target, a->token, (int)a->timeout, r, err, sizeof err);
    if (rc) {
        fprintf(stderr, "%s: %s\n", cmd->prog, err);
        /* a malformed or cut answer came from something listening: not a connect problem */
        return rc == -EPROTO || rc == -EMSGSIZE ? CLI_EXIT_FAIL : CLI_EXIT_CONNECT;
    }
    if (r->status >= 200 && r->status < 300)
        return CLI_EXIT_OK;
    print_http_error(cmd, r);
    cli_http_response_free(r);
    return CLI_EXIT_FAIL;
}

int cli_admin_request_json(const struct cli_cmd *cmd, const struct cli_admin *a, const char *method,
                           const char *target, cJSON **root)
{
    struct cli_http_response r;
    int rc = cli_admin_request(cmd, a, method, target, &r);
    if (rc)
        return rc;
    *root = cJSON_Parse(r.body);
    if (!*root) {
        fprintf(stderr, "%s: the answer is not JSON: %s\n", cmd->prog, r.body);
        rc = CLI_EXIT_FAIL;
    }
    cli_http_response_free(&r);
    return rc;
}

int cli_admin_output(const struct cli_admin *a, const cJSON *root, int (*table)(const cJSON *))
{
    int format = a->format;
    if (format == CLI_FORMAT_AUTO)
        format = !isatty(STDOUT_FILENO) ? CLI_FORMAT_JSON
                 : table                ? CLI_FORMAT_TABLE
                                        : CLI_FORMAT_PRETTY;
    if (format == CLI_FORMAT_TABLE && table)
        return table(root);
    char *s = format == CLI_FORMAT_JSON ? cJSON_PrintUnformatted(root) : cJSON_Print(root);
    if (!s) {
        fprintf(stderr, "kiteq-cli: out of memory printing the answer\n");
        return CLI_EXIT_FAIL;
    }
    puts(s);
    cJSON_free(s);
    return CLI_EXIT_OK;
}

int cli_admin_show(const struct cli_cmd *cmd, const struct cli_admin *a, const char *method,
                   const char *target, int (*table)(const cJSON *))
{
    struct cli_http_response r;
    int rc = cli_admin_request(cmd, a, method, target, &r);
    if (rc)
        return rc;
    cJSON *root = cJSON_Parse(r.body);
    if (root) {
        rc = cli_admin_output(a, root, table);
        cJSON_Delete(root);
    } else { /* Prometheus text */
        fwrite(r.body, 1, r.body_len, stdout);
        if (!r.body_len || r.body[r.body_len - 1] != '\n')
            fputc('\n', stdout);
    }
    cli_http_response_free(&r);
    return rc;
}
