/* Shared by the config module's files only: value checks used by the Lua loader, the flag
 * parser and kq_config_validate, so that every source of a value obeys the same rules. */
#ifndef KQ_CONFIG_INTERNAL_H
#define KQ_CONFIG_INTERNAL_H
#include <stdarg.h>
#include "config/config.h"

#define KQ_DEFAULT_WATERMARK 6000

/* strdup that aborts on out-of-memory: config strings are tiny and set up at start-up. */
char *kq_cfg_strdup(const char *s);
/* Free *dst and store a copy of s (NULL stays NULL). */
void kq_cfg_set_str(char **dst, const char *s);
void kq_cfg_free_topics(struct kq_config *c);
void kq_cfg_free_groups(struct kq_config *c);
void kq_cfg_free_bindings(struct kq_config *c);
/* Append helpers (abort on out-of-memory). */
void kq_cfg_add_topic(struct kq_config *c, const char *topic);
void kq_cfg_add_group(struct kq_config *c, const char *group, const char *secret);
void kq_cfg_add_binding(struct kq_config *c, const struct kq_binding *b);

/* The entry of kq_config_ints for key, NULL when key is no integer setting. */
const struct kq_config_int *kq_cfg_int_setting(const char *key);

/* Each check returns NULL when the value is acceptable, else a reason such as
 * "must be \"host:port\" with a port 1-65535"; callers add the key and the value. */
const char *kq_cfg_check_hostport(const char *s);
const char *kq_cfg_check_name(const char *s); /* topic or group id */
const char *kq_cfg_check_db(const char *s);
const char *kq_cfg_check_registry(const char *s);
const char *kq_cfg_check_log_level(const char *s);
const char *kq_cfg_check_admin_token(const char *s);
const char *kq_cfg_check_regex(const char *pattern, char *buf, size_t len);

/* Appends one line to err (a '\n' before it unless err is empty; a line that does not fit
 * ends the buffer in "..."); returns -EINVAL for `return kq_cfg_err(...)`. The public entry
 * points start with an empty err, so err collects every problem found. */
int kq_cfg_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Writes s as a short quoted, escaped string ("abc", long values cut with "...") into buf. */
const char *kq_cfg_quote(const char *s, char *buf, size_t len);
#endif
