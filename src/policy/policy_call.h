/* One hook call by name, with JSON arguments, answered as the broker applies it: the way in
 * of the policy tools (`kiteq policy call`, src/policy_tool.c) and of the `kiteq.policy` Lua
 * module of the busted specs (src/policy/lua_module.c). Each call goes through the broker's
 * own API (kq_policy_route, kq_policy_retry, ...), so the answer is the one after C's
 * validation, strikes and fallbacks, never a copy of them. The arguments and answers of each
 * hook are listed in docs/POLICIES.md ("Trying a policy").
 *
 * Threading: as policy.h (one thread at a time per generation). */
#ifndef KQ_POLICY_POLICY_CALL_H
#define KQ_POLICY_POLICY_CALL_H
#include <cjson/cJSON.h>
#include <stddef.h>

#include "policy/policy.h"

/* The i-th hook name kq_policy_call knows ("route", "retry", ...), NULL past the last. */
const char *kq_policy_call_name(size_t i);

/* Runs hook `name` of p with args (a JSON object; missing fields take the values the
 * self-test uses). Returns the answer as applied (a new cJSON object the caller deletes), or
 * NULL with the reason in err (unknown hook, bad arguments, out of memory). *problem (may be
 * NULL) is set to NULL when the policy's hook answered and its answer was applied as given,
 * else to what happened: the hook failed or was switched off and the built-in answer was
 * used, its answer was cut (route: groups without a binding dropped), or the policies do not
 * define the hook. The string is valid until the thread's next kq_policy_call. */
cJSON *kq_policy_call(struct kq_policy *p, const char *name, const cJSON *args,
                      const char **problem, char *err, size_t errlen);
#endif
