/* bench/policy_cost: what one policy call costs (ns), C defaults against the shipped Lua hooks,
 * memo hits and misses. A benchmark, not a test: it asserts nothing about time (moved out of
 * test_policy, whose error count depended on the machine's load).
 *
 *   build/bench_policy_cost [CALLS] [POLICIES_DIR]   # defaults: 20000, lua/policies
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "core/clock.h"
#include "policy/policy.h"
#include "registry/bindings.h"

/* Nine bindings on topic "trade": direct, patterns, a fanout. */
static struct kq_binding bindings[] = {
    {"g-direct", "trade", "pay-200", KQ_BIND_DIRECT, 1000, true},
    {"g-regx", "trade", "pay-\\d+", KQ_BIND_REGX, 0, false},
    {"g-geo", "trade", "feed-geo-*", KQ_BIND_REGX, 0, true},
    {"g-anchored", "trade", "^a$", KQ_BIND_REGX, 0, true},
    {"g-fanout", "trade", "*", KQ_BIND_FANOUT, 0, false},
    {"g-multi", "trade", "b", KQ_BIND_DIRECT, 0, false},
    {"g-multi", "trade", "a", KQ_BIND_REGX, 0, true},
    {"g-multi", "trade", "a", KQ_BIND_DIRECT, 0, false},
    {"g-other-topic", "feed", "pay-200", KQ_BIND_DIRECT, 0, true},
};

static double ns_per_call(uint64_t t0, long n) { return (double)(kq_mono_us() - t0) * 1000.0 / n; }

static uint64_t hook_errors(const struct kq_policy *p)
{
    struct kq_policy_hook_stats st[8];
    size_t n = kq_policy_stats(p, st, 8);
    uint64_t errors = 0;
    for (size_t i = 0; i < n; i++)
        errors += st[i].errors;
    return errors;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 20000;
    const char *dir = argc > 2 ? argv[2] : "lua/policies";
    char err[1024];
    struct kq_policy *lua = NULL, *c = NULL;
    if (n <= 0 || kq_policy_load(dir, &lua, err, sizeof err) ||
        kq_policy_load(NULL, &c, err, sizeof err)) {
        fprintf(stderr, "bench_policy_cost: %s\n", n <= 0 ? "CALLS must be > 0" : err);
        return 1;
    }
    struct kq_config cfg = {.bindings = bindings,
                            .n_bindings = sizeof bindings / sizeof bindings[0]};
    struct kq_binding_set *s = kq_binding_set_from_config(&cfg);
    struct kq_route r[32];
    struct kq_retry_verdict v;
    struct kq_flow_figures f = {1, 2, 0, 1000};
    struct kq_flow_limits l;
    char type[32];
    volatile size_t sink = 0;
    double t[8];
    uint64_t t0;

#define TIME(slot, stmt)                                                                           \
    do {                                                                                           \
        t0 = kq_mono_us();                                                                         \
        for (long i = 0; i < n; i++) {                                                             \
            stmt;                                                                                  \
        }                                                                                          \
        t[slot] = ns_per_call(t0, n);                                                              \
    } while (0)
    TIME(0, sink += kq_policy_route(NULL, s, "trade", "pay-500", r, 32));
    TIME(1, sink += kq_policy_route(c, s, "trade", "pay-500", r, 32));
    TIME(2, sink += kq_policy_route(lua, s, "trade", "pay-500", r, 32));
    /* every call a new messageType: a memo miss each time */
    TIME(3, snprintf(type, sizeof type, "pay-%ld", i);
         sink += kq_policy_route(c, s, "trade", type, r, 32));
    TIME(4, snprintf(type, sizeof type, "pay-%ld", i);
         sink += kq_policy_route(lua, s, "trade", type, r, 32));
    TIME(5, kq_policy_retry(NULL, (int32_t)(i % 60), "nack", 100, 0, 1000, &v);
         sink += (size_t)v.delay_ms);
    TIME(6, kq_policy_retry(lua, (int32_t)(i % 60), "nack", 100, 0, 1000, &v);
         sink += (size_t)v.delay_ms);
    TIME(7, kq_policy_flow_group(lua, "g", "t", &f, &l));
#undef TIME
    (void)sink;
    printf("policy cost per call (ns), %ld calls, 9 bindings on the topic:\n"
           "  route  C default, no memo (p=NULL) %8.0f\n"
           "  route  C default, memo hit         %8.0f\n"
           "  route  Lua hook, memo hit          %8.0f\n"
           "  route  C default, memo miss        %8.0f\n"
           "  route  Lua hook, memo miss         %8.0f\n"
           "  retry  C default                   %8.0f\n"
           "  retry  Lua hook                    %8.0f\n"
           "  flow.group Lua hook                %8.0f\n",
           n, t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]);
    /* a hook stopped by its time budget answers with the default: the figures then mix both */
    uint64_t errors = hook_errors(lua);
    if (errors)
        printf("  (%llu Lua hook calls failed or ran out of budget on this loaded machine: the "
               "figures above include their fallbacks)\n",
               (unsigned long long)errors);
    kq_binding_set_free(s);
    kq_policy_free(lua);
    kq_policy_free(c);
    return 0;
}
