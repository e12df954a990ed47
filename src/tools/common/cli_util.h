/* Small helpers shared by the command-line tools (kiteq-cli, kiteq-bench, ...). */
#ifndef KQ_TOOLS_CLI_UTIL_H
#define KQ_TOOLS_CLI_UTIL_H
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Exit codes of every tool. */
enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FAIL = 1,    /* the operation ran but did not fully succeed */
    CLI_EXIT_USAGE = 2,   /* bad or missing options */
    CLI_EXIT_CONNECT = 3, /* could not connect or authenticate */
};

/* Parse a decimal integer in [min, max]; on error print "<prog>: bad value for --<opt>"
 * to stderr and return -EINVAL. */
int cli_parse_long(const char *prog, const char *opt, const char *s, long min, long max, long *out);

/* True when s looks like HOST:PORT ("[v6]:PORT" too): a host before the last ':' and a port
 * 1..65535 after it. */
bool cli_is_hostport(const char *s);

/* True when p[0..n) is valid UTF-8 without control characters (tab, CR, LF allowed):
 * such a body can be shown as a JSON string. */
bool cli_is_printable_utf8(const uint8_t *p, size_t n);

/* Blocks SIGINT and SIGTERM (the set, for sigtimedwait, in *set) in the calling thread and
 * the threads it starts afterwards, and ignores SIGPIPE. */
void cli_block_stop_signals(sigset_t *set);

/* Standard base64 with padding; malloc'd, NUL-terminated; NULL on ENOMEM. */
char *cli_base64(const uint8_t *p, size_t n);
#endif
