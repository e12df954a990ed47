/* Running the built kiteq-cli (build dir from support/test_files.h) and checking what it
 * says. */
#ifndef KQ_TEST_CLI_PROC_H
#define KQ_TEST_CLI_PROC_H
#include <stddef.h>

/* Run `build/kiteq-cli ARGS` (args: a shell word list, quoted as needed) until it exits; its
 * stdout and stderr go to out (NUL-terminated, cut to len). Returns the exit status, or -1. */
int cli_run(const char *args, char *out, size_t len);
/* The same, args as a printf format; only stdout, into *out (malloc'd; may be NULL). */
int cli_runf(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* cli_run with args as a printf format; fails the running cmocka test unless it exits with
 * want. Returns its stdout and stderr (a static buffer, good until the next call). */
char *cli_expect(int want, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#endif
