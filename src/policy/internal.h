/* Shared between the policy module's source files only. */
#ifndef KQ_POLICY_INTERNAL_H
#define KQ_POLICY_INTERNAL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy/policy.h"

/* Compiled PCRE2 patterns by pattern text (bad patterns are remembered too). Bounded: when
 * full it is emptied. Not thread-safe (one per policy generation). */
struct kq_regex_cache;
struct kq_regex_cache *kq_regex_cache_new(void);
void kq_regex_cache_free(struct kq_regex_cache *c);
/* RE2-like: unanchored search of pattern in subject. Returns 1 (match), 0 (no match, also
 * on a match error such as the backtracking limit), or -EINVAL for a pattern that does not
 * compile (reason in err when err != NULL). c == NULL compiles for this call only. */
int kq_regex_match(struct kq_regex_cache *c, const char *pattern, const char *subject, char *err,
                   size_t errlen);

/* The built-in rule for one binding (direct / regx / fanout). */
bool kq_policy_binding_matches(struct kq_regex_cache *rc, const struct kq_binding *b,
                               const char *type);
/* kq_policy_default_route with a regex cache (NULL = none). */
size_t kq_policy_route_builtin(struct kq_regex_cache *rc, const struct kq_binding *binds, size_t n,
                               const char *type, struct kq_route *out, size_t max);
/* Failures in a row per (hook, subject) (strikes.c). A subject is what one call is about:
 * two strings (route: topic, messageType; flow.group: group, topic), or NULL, NULL for a
 * hook whose calls share one subject (retry, flow.intake). hook < KQ_STRIKES_HOOKS. */
#define KQ_STRIKES_HOOKS 8
struct kq_strikes;
struct kq_strikes *kq_strikes_new(void);
void kq_strikes_free(struct kq_strikes *t);
/* The hash that identifies a subject (also a key for rate-limited log lines). */
uint64_t kq_strikes_key(int hook, const char *a, const char *b);
/* True once the subject failed KQ_POLICY_MAX_STRIKES times in a row (until the next load). */
bool kq_strikes_disabled(const struct kq_strikes *t, int hook, const char *a, const char *b);
/* A call answered: the subject's strikes are forgiven (not a switch-off). */
void kq_strikes_ok(struct kq_strikes *t, int hook, const char *a, const char *b);
/* A call failed: returns the subject's strikes in a row (> 0), -ENOMEM or -EINVAL.
 * *switched_off: this failure switched the hook off for the subject; *started_over: the
 * table was full and was emptied first (switched-off subjects got their hook back). */
int kq_strikes_fail(struct kq_strikes *t, int hook, const char *a, const char *b,
                    bool *switched_off, bool *started_over);
/* Subjects the hook is switched off for. */
size_t kq_strikes_disabled_count(const struct kq_strikes *t, int hook);
#endif
