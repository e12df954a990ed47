/* Secrets out of printed text: every place that prints a store URI, a config value or an
 * error that may quote one (the log, /stat, `kiteq --check`) passes it through here. */
#ifndef KQ_CORE_REDACT_H
#define KQ_CORE_REDACT_H
#include <stdbool.h>
#include <stddef.h>

#define KQ_REDACTED "***"

/* Copies text to out (always NUL-terminated, cut to outlen - 1 bytes) with the value of every
 * `KEY=value` whose KEY contains "pass", "pwd", "secret" or "token" (any case), and the
 * password of every `scheme://user:password@`, replaced by "***". A value ends at '&',
 * whitespace, a quote, ',' ')' or ';'. Returns out. Thread-safe (no state). */
const char *kq_redact(const char *text, char *out, size_t outlen);
/* True when kq_redact would change text (cheap test before copying). */
bool kq_redact_needed(const char *text);
#endif
