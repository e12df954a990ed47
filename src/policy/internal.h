/* Shared between the policy module's source files only. */
#ifndef KQ_POLICY_INTERNAL_H
#define KQ_POLICY_INTERNAL_H
#include <stdbool.h>
#include <stddef.h>

#include "policy/policy.h"

/* Compiled PCRE2 patterns by pattern text (bad patterns are remembered too). Bounded: when
 * full it is emptied. Not thread-safe (one per policy generation). */
struct kq_regex_cache;
struct kq_regex_cache *kq_regex_cache_new(void);
void kq_regex_cache_free(struct kq_regex_cache *c);
/* RE2-like: unanchored search of pattern in subject. Returns 1 (match), 0 (no match, also
 * on a match error such as the backtracking limit), or -EINVAL for a pattern that does not
 * compile (reason in err when err != NULL). c == NULL compiles for this call only. */
int kq_regex_match(struct kq_regex_cache *c, const char *pattern, const char *subject,
                   char *err, size_t errlen);

/* The built-in rule for one binding (direct / regx / fanout). */
bool kq_policy_binding_matches(struct kq_regex_cache *rc, const struct kq_binding *b,
                               const char *type);
/* kq_policy_default_route with a regex cache (NULL = none). */
size_t kq_policy_route_builtin(struct kq_regex_cache *rc, const struct kq_binding *binds,
                               size_t n, const char *type, struct kq_route *out, size_t max);
#endif
