#include "tools/common/cli_opts.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/common/cli_util.h"

#define HELP_COLUMN 23 /* where an option's help text starts */

int cli_usage_error(const struct cli_cmd *cmd, const char *fmt, ...)
{
    fprintf(stderr, "%s: ", cmd->prog);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see '%s --help')\n", cmd->prog);
    return CLI_EXIT_USAGE;
}

/* "  --name ARG" then the help, its continuation lines under the first. */
static void print_option(FILE *out, const char *name, const char *arg, const char *help)
{
    int n = fprintf(out, "  %s--%s", strcmp(name, "help") ? "" : "-h, ", name);
    if (arg)
        n += fprintf(out, " %s", arg);
    if (n > HELP_COLUMN - 2) {
        fputc('\n', out);
        n = 0;
    }
    fprintf(out, "%*s", HELP_COLUMN - n, "");
    for (const char *p = help; *p; p++) {
        fputc(*p, out);
        if (*p == '\n' && p[1])
            fprintf(out, "%*s", HELP_COLUMN, "");
    }
    fputc('\n', out);
}

static void print_help(const struct cli_cmd *cmd, const struct cli_opt *opts)
{
    fputs(cmd->usage, stdout);
    fputc('\n', stdout);
    for (const struct cli_opt *o = opts; o->name; o++)
        print_option(stdout, o->name, o->arg, o->help);
    print_option(stdout, "help", NULL, "show this help");
    if (cmd->epilog) {
        fputc('\n', stdout);
        fputs(cmd->epilog, stdout);
    }
}

static int store(const struct cli_cmd *cmd, const struct cli_opt *o, const char *arg)
{
    switch (o->kind) {
    case CLI_OPT_STRING: *(const char **)o->target = arg; return 0;
    case CLI_OPT_LONG: return cli_parse_long(cmd->prog, o->name, arg, o->min, o->max, o->target);
    case CLI_OPT_FLAG: *(bool *)o->target = true; return 0;
    case CLI_OPT_SET: *(int *)o->target = o->value; return 0;
    case CLI_OPT_CALL: return o->call(o->target, arg);
    }
    return -1;
}

bool cli_opts_parse(const struct cli_cmd *cmd, const struct cli_opt *opts, int argc, char **argv,
                    int *exit_code)
{
    size_t n = 0;
    while (opts[n].name)
        n++;
    struct option *longopts = calloc(n + 2, sizeof *longopts);
    if (!longopts) {
        fprintf(stderr, "%s: out of memory\n", cmd->prog);
        *exit_code = CLI_EXIT_FAIL;
        return false;
    }
    for (size_t i = 0; i < n; i++) /* val: the row's index, above any short option */
        longopts[i] = (struct option){opts[i].name, opts[i].arg ? required_argument : no_argument,
                                      NULL, 256 + (int)i};
    longopts[n] = (struct option){"help", no_argument, NULL, 'h'};
    optind = 1;
    int opt, rc = -1;
    while (rc < 0 && (opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (opt == 'h') {
            print_help(cmd, opts);
            rc = CLI_EXIT_OK;
        } else if (opt < 256) { /* getopt said what was wrong */
            fprintf(stderr, "see '%s --help'\n", cmd->prog);
            rc = CLI_EXIT_USAGE;
        } else if (store(cmd, &opts[opt - 256], optarg)) {
            rc = CLI_EXIT_USAGE;
        }
    }
    free(longopts);
    int args = argc - optind;
    if (rc < 0 && args > cmd->max_args)
        rc = cli_usage_error(cmd, "unexpected argument '%s'", argv[optind + cmd->max_args]);
    else if (rc < 0 && args < cmd->min_args)
        rc = cli_usage_error(cmd, "missing %s", cmd->args ? cmd->args : "arguments");
    if (rc < 0)
        return true;
    *exit_code = rc;
    return false;
}
