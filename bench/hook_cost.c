/* bench/hook_cost: what the per-message hooks cost per call, through the broker's own entry
 * points (kq_policy_publish, kq_policy_route_message) with a message as the broker builds it
 * (three properties, a 1 KiB body, one binding on the topic). For instruction counts, which a
 * shared machine does not disturb, run it under callgrind and divide the inclusive cost of
 * each entry point by CALLS (docs/BENCHMARKS.md has the commands); the ns it prints are only
 * a hint. A benchmark, not a test: it asserts nothing about time.
 *
 *   build/bench_hook_cost [CALLS] [POLICIES_DIR]
 *   # POLICIES_DIR: defaults to a copy of lua/policies/examples/publish.lua as publish.lua
 *   # and routing_by_property.lua as routing.lua (what bench/run's +examplehooks loads)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "core/clock.h"
#include "policy/policy.h"
#include "registry/bindings.h"
#include "sandbox/watchdog.h"

static struct kq_binding bindings[] = {
    {"s-g1", "trade", "bench", KQ_BIND_DIRECT, 1000000, true},
};

/* DIR with the two examples under the names the broker loads; false when it cannot be made. */
static bool example_dir(char *dir, size_t len)
{
    static const char *const copies[][2] = {
        {"lua/policies/examples/publish.lua", "publish.lua"},
        {"lua/policies/examples/routing_by_property.lua", "routing.lua"},
    };
    snprintf(dir, len, "/tmp/kq-hookcost.XXXXXX");
    if (!mkdtemp(dir))
        return false;
    for (size_t i = 0; i < 2; i++) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "cp '%s' '%s/%s'", copies[i][0], dir, copies[i][1]);
        if (system(cmd) != 0)
            return false;
    }
    return true;
}

static void remove_dir(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_hook_cost: could not remove %s\n", dir);
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 20000;
    char tmp[64] = "";
    const char *dir = argc > 2 ? argv[2] : NULL;
    if (!dir) {
        if (!example_dir(tmp, sizeof tmp)) {
            fprintf(stderr, "bench_hook_cost: cannot copy the examples (run from the tree)\n");
            return 1;
        }
        dir = tmp;
    }
    char err[1024];
    /* as in the broker: traffic calls run without the count hook (sandbox/watchdog.h) */
    if (kq_watchdog_start(err, sizeof err) != 0)
        fprintf(stderr, "bench_hook_cost: no watchdog, every call counted: %s\n", err);
    struct kq_policy *p = NULL;
    int rc = n > 0 ? kq_policy_load(dir, &p, err, sizeof err) : -1;
    if (tmp[0])
        remove_dir(tmp);
    if (rc) {
        fprintf(stderr, "bench_hook_cost: %s\n", n <= 0 ? "CALLS must be > 0" : err);
        return 1;
    }
    struct kq_config cfg = {.bindings = bindings,
                            .n_bindings = sizeof bindings / sizeof bindings[0]};
    struct kq_binding_set *set = kq_binding_set_from_config(&cfg);
    static const struct kq_property_kv props[] = {
        {"trace-id", "4bf92f3577b34da6a3ce929d0e0e4736"}, {"tenant", "acme"}, {"source", "web"}};
    size_t nb = 0;
    const struct kq_binding *binds = kq_binding_set_topic(set, "trade", &nb);
    int64_t now = kq_now_sec();
    char id[33]; /* a new id per message, as traffic has: a new Lua string each time */
    struct kq_publish_view m = {.message_id = id,
                                .topic = "trade",
                                .message_type = "bench",
                                .group = "p-trade",
                                .peer = "127.0.0.1:40000",
                                .properties = props,
                                .n_properties = 3,
                                .body_size = 1024,
                                .commit = true,
                                .expired_time = now + 7 * 86400,
                                .deliver_limit = 100,
                                .now_sec = now,
                                .binds = binds,
                                .n_binds = nb};
    struct kq_publish_verdict v;
    struct kq_route r[8];
    volatile size_t sink = 0;
    uint64_t t0 = kq_mono_us();
    for (long i = 0; i < n; i++) {
        snprintf(id, sizeof id, "0123456789abcdef%016lx", (unsigned long)i);
        kq_policy_publish(p, &m, &v);
        sink += v.action;
    }
    double publish_ns = (double)(kq_mono_us() - t0) * 1000.0 / n;
    /* route_message sees the message as stored: with the property on_publish added */
    struct kq_publish_view stored = m;
    if (v.action == KQ_PUBLISH_CHANGE) {
        stored.properties = v.properties;
        stored.n_properties = v.n_properties;
    }
    stored.peer = "";
    t0 = kq_mono_us();
    for (long i = 0; i < n; i++) {
        snprintf(id, sizeof id, "0123456789abcdef%016lx", (unsigned long)i);
        sink += kq_policy_route_message(p, set, &stored, r, 8);
    }
    double route_ns = (double)(kq_mono_us() - t0) * 1000.0 / n;
    (void)sink;
    struct kq_policy_hook_stats st[KQ_POLICY_HOOKS];
    size_t ns = kq_policy_stats(p, st, KQ_POLICY_HOOKS);
    uint64_t errors = 0;
    for (size_t i = 0; i < ns; i++)
        errors += st[i].errors;
    printf("per-message hooks, %ld calls each (%s):\n"
           "  on_publish     %8.0f ns/call (answer: %s)\n"
           "  route_message  %8.0f ns/call\n",
           n, argc > 2 ? dir : "the examples", publish_ns,
           v.action == KQ_PUBLISH_CHANGE   ? "changes"
           : v.action == KQ_PUBLISH_REJECT ? "reject"
                                           : "accept",
           route_ns);
    if (errors)
        printf("  (%llu hook calls failed: the figures include their fallbacks)\n",
               (unsigned long long)errors);
    kq_binding_set_free(set);
    kq_policy_free(p);
    kq_watchdog_stop();
    return errors ? 1 : 0;
}
