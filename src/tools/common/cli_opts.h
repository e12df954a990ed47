/* Table-driven option parsing for the command-line tools.
 *
 * A command describes its options once, in an array of struct cli_opt (rows made with
 * CLI_STRING, CLI_LONG, ..., ended by CLI_OPTS_END):
 * cli_opts_parse runs getopt_long over it, stores each value where the row says, answers
 * -h/--help with a text made from the same rows, and checks the count of positional
 * arguments. So the options, their checks and their help cannot disagree. */
#ifndef KQ_TOOLS_CLI_OPTS_H
#define KQ_TOOLS_CLI_OPTS_H
#include <stdbool.h>

enum cli_opt_kind {
    CLI_OPT_STRING = 1, /* const char **target = the argument */
    CLI_OPT_LONG,       /* long *target = a decimal integer in [min, max] */
    CLI_OPT_FLAG,       /* bool *target = true */
    CLI_OPT_SET,        /* int *target = value (several rows may share a target: --json/--table) */
    CLI_OPT_CALL,       /* call(target, argument): 0, or -1 after printing why (repeatable
                         * options, values with their own syntax) */
};

struct cli_opt {
    const char *name; /* without "--"; NULL ends the table */
    enum cli_opt_kind kind;
    void *target;
    const char *arg;  /* the argument's name in the help ("HOST:PORT"); NULL: takes none */
    const char *help; /* its help, lines separated by "\n" */
    long min, max;    /* CLI_OPT_LONG */
    int value;        /* CLI_OPT_SET */
    int (*call)(void *target, const char *arg); /* CLI_OPT_CALL */
};

/* Rows of a table, ended by CLI_OPTS_END. */
#define CLI_STRING(name_, target_, arg_, help_)                                                    \
    {                                                                                              \
        .name = (name_), .kind = CLI_OPT_STRING, .target = (target_), .arg = (arg_),               \
        .help = (help_)                                                                            \
    }
#define CLI_LONG(name_, target_, arg_, min_, max_, help_)                                          \
    {                                                                                              \
        .name = (name_), .kind = CLI_OPT_LONG, .target = (target_), .arg = (arg_),                 \
        .help = (help_), .min = (min_), .max = (max_)                                              \
    }
#define CLI_FLAG(name_, target_, help_)                                                            \
    {                                                                                              \
        .name = (name_), .kind = CLI_OPT_FLAG, .target = (target_), .help = (help_)                \
    }
#define CLI_SET(name_, target_, value_, help_)                                                     \
    {                                                                                              \
        .name = (name_), .kind = CLI_OPT_SET, .target = (target_), .help = (help_),                \
        .value = (value_)                                                                          \
    }
#define CLI_CALL(name_, call_, target_, arg_, help_)                                               \
    {                                                                                              \
        .name = (name_), .kind = CLI_OPT_CALL, .target = (target_), .arg = (arg_),                 \
        .help = (help_), .call = (call_)                                                           \
    }
#define CLI_OPTS_END                                                                               \
    {                                                                                              \
        .name = NULL                                                                               \
    }

struct cli_cmd {
    const char *prog;   /* "kiteq-cli pub": prefixes messages and the help's hint */
    const char *usage;  /* the "usage:" lines and a description, printed before the options */
    const char *epilog; /* printed after the options (output, exit codes); may be NULL */
    const char *args;   /* the positional arguments' name for "missing ..." ("MESSAGE_ID") */
    int min_args, max_args;
};

/* Parse argv[1..argc) (argv[0] is the command's name). Returns true when the command should
 * go on: its positional arguments are argv[optind..argc). Returns false with *exit_code set
 * otherwise: CLI_EXIT_OK after printing the help on stdout, CLI_EXIT_USAGE after printing
 * what was wrong on stderr (unknown option, bad value, argument count). */
bool cli_opts_parse(const struct cli_cmd *cmd, const struct cli_opt *opts, int argc, char **argv,
                    int *exit_code);

/* "<prog>: <why> (see '<prog> --help')" on stderr, why as printf; returns CLI_EXIT_USAGE. */
int cli_usage_error(const struct cli_cmd *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
#endif
