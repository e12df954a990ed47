/* on_publish and route_message run for many messages with one entry into Lua
 * (kq_policy_publish_batch, kq_policy_route_message_batch) answer every message exactly as
 * the one-message calls do - changes, rejects, nil, errors, invalid answers, statistics -
 * and each message keeps its own budget and its own failure: one that raises, loops or
 * answers nonsense gets the built-in answer, and the messages after it in the batch get
 * their hook's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "policy/policy.h"
#include "support/policy_dir.h"

static char err[512];

/* What on_publish does depends on the message's property "do". */
static const char PUBLISH[] =
    "local M = {}\n"
    "local SHARED = { properties = { seen = 'yes' } }\n"
    "function M.on_publish(m)\n"
    "  local d = m.properties['do']\n"
    "  if d == 'reject' then return 'reject', 'no ' .. m.properties.n end\n"
    "  if d == 'change' then return { properties = { n = false, tag = 't' .. m.properties.n },\n"
    "                                 deliver_limit = 7, delay_ms = 1000 } end\n"
    "  if d == 'shared' then return SHARED end\n"
    "  if d == 'raise' then error('raised for ' .. m.properties.n) end\n"
    "  if d == 'nonsense' then return 42 end\n"
    "  if d == 'spin' then while true do end end\n"
    "  if d == 'heavy' then local x = 0; for i = 1, 100000 do x = x + i end end\n"
    "  return nil\n"
    "end\n"
    "return M\n";

#define MAX_MSGS 80

struct msgs {
    struct kq_publish_view v[MAX_MSGS];
    struct kq_property_kv props[MAX_MSGS][2];
    char n[MAX_MSGS][8];
    size_t count;
};

static void add(struct msgs *ms, const char *topic, const char *type, const char *what)
{
    size_t i = ms->count++;
    assert_true(i < MAX_MSGS);
    snprintf(ms->n[i], sizeof ms->n[i], "%zu", i);
    ms->props[i][0] = (struct kq_property_kv){"do", what};
    ms->props[i][1] = (struct kq_property_kv){"n", ms->n[i]};
    int64_t now = kq_now_sec();
    ms->v[i] = (struct kq_publish_view){.message_id = "0123456789abcdef0123456789abcdef",
                                        .topic = topic,
                                        .message_type = type,
                                        .group = "p-trade",
                                        .peer = "127.0.0.1:5",
                                        .properties = ms->props[i],
                                        .n_properties = 2,
                                        .body_size = 10,
                                        .commit = true,
                                        .expired_time = now + 60,
                                        .deliver_limit = 5,
                                        .now_sec = now};
}

/* A verdict as text: what the broker would store. */
static void describe(const struct kq_publish_verdict *v, char *out, size_t len)
{
    int k = snprintf(out, len, "action=%d reason=%s", (int)v->action, v->reason);
    if (v->action == KQ_PUBLISH_CHANGE) {
        k += snprintf(out + k, len - k, " limit=%d delay=%lld props=", v->deliver_limit,
                      (long long)v->delay_ms);
        for (size_t i = 0; i < v->n_properties; i++)
            k += snprintf(out + k, len - k, "%s=%s,", v->properties[i].key,
                          v->properties[i].value);
    }
}

struct answers {
    char text[MAX_MSGS][256];
    bool seen[MAX_MSGS];
};

static void apply(void *ud, size_t i, const struct kq_publish_verdict *v)
{
    struct answers *a = ud;
    assert_false(a->seen[i]); /* once each */
    a->seen[i] = true;
    describe(v, a->text[i], sizeof a->text[i]);
}

static struct kq_policy *load(const char *name, const char *file, const char *src)
{
    struct kq_policy *p = NULL;
    assert_int_equal(kq_policy_load(policy_dir(name, file, src), &p, err, sizeof err), 0);
    return p;
}

static void assert_same_stats(const struct kq_policy *a, const struct kq_policy *b,
                              const char *hook)
{
    struct kq_policy_hook_stats x = policy_hook_stats(a, hook), y = policy_hook_stats(b, hook);
    assert_int_equal(x.calls, y.calls);
    assert_int_equal(x.errors, y.errors);
    assert_int_equal(x.fallbacks, y.fallbacks);
    assert_int_equal(x.rejects, y.rejects);
}

/* The same messages one call each and in one batch: the same answers and statistics. */
static void publish_both_ways(const struct msgs *ms, struct kq_policy **one, struct kq_policy **all,
                              struct answers *batch)
{
    *one = load("one", "publish.lua", PUBLISH);
    *all = load("all", "publish.lua", PUBLISH);
    memset(batch, 0, sizeof *batch);
    kq_policy_publish_batch(*all, ms->v, ms->count, apply, batch);
    for (size_t i = 0; i < ms->count; i++) {
        struct kq_publish_verdict v;
        char text[256];
        kq_policy_publish(*one, &ms->v[i], &v);
        describe(&v, text, sizeof text);
        assert_true(batch->seen[i]);
        assert_string_equal(batch->text[i], text);
    }
    assert_same_stats(*one, *all, "publish");
}

static void test_publish_batch_answers_as_one_call_each(void **state)
{
    (void)state;
    static const char *const kinds[] = {"none", "reject", "change", "shared", "raise", "nonsense"};
    struct msgs ms = {0};
    for (size_t i = 0; i < 48; i++) /* two subjects: strikes are counted per subject */
        add(&ms, "trade", i % 2 ? "pay" : "order", kinds[(i * 7 + i / 6) % 6]);
    struct kq_policy *one, *all;
    struct answers a;
    publish_both_ways(&ms, &one, &all, &a);
    assert_int_equal(policy_hook_stats(all, "publish").calls, 48);
    assert_true(policy_hook_stats(all, "publish").errors > 0);
    assert_true(policy_hook_stats(all, "publish").rejects > 0);
    /* a failing message does not fail the next one: raise, then change */
    struct msgs two = {0};
    add(&two, "trade", "order", "raise");
    add(&two, "trade", "order", "change");
    kq_policy_free(one);
    kq_policy_free(all);
    publish_both_ways(&two, &one, &all, &a);
    assert_string_equal(a.text[0], "action=0 reason=");
    assert_non_null(strstr(a.text[1], "props=do=change,tag=t1,"));
    assert_non_null(strstr(kq_policy_last_failure(all), "raised for 0"));
    kq_policy_free(one);
    kq_policy_free(all);
}

/* Five failures in a row switch the hook off for their subject, in the middle of a batch:
 * the subject's later messages get the built-in answer without a call, others still call. */
static void test_strikes_within_a_batch(void **state)
{
    (void)state;
    struct msgs ms = {0};
    for (size_t i = 0; i < 8; i++)
        add(&ms, "trade", "order", "raise");
    add(&ms, "trade", "pay", "reject");
    add(&ms, "trade", "order", "reject");
    struct kq_policy *one, *all;
    struct answers a;
    publish_both_ways(&ms, &one, &all, &a);
    struct kq_policy_hook_stats s = policy_hook_stats(all, "publish");
    assert_int_equal(s.calls, 6);      /* 5 that raised, and the other subject's */
    assert_int_equal(s.fallbacks, 9);  /* 5 failures, 4 switched off */
    assert_string_equal(a.text[9], "action=0 reason=");
    assert_non_null(strstr(a.text[8], "reason=no 8"));
    kq_policy_free(one);
    kq_policy_free(all);
}

/* Each message has the whole budget: three heavy messages (each well within one call's
 * budget, together over it) are all answered; one that never ends is stopped alone. */
static void test_budget_per_message(void **state)
{
    (void)state;
    struct msgs ms = {0};
    for (size_t i = 0; i < 6; i++)
        add(&ms, "trade", "order", "heavy");
    add(&ms, "trade", "order", "spin");
    add(&ms, "trade", "order", "change");
    struct kq_policy *p = load("budget", "publish.lua", PUBLISH);
    struct answers a = {0};
    kq_policy_publish_batch(p, ms.v, ms.count, apply, &a);
    struct kq_policy_hook_stats s = policy_hook_stats(p, "publish");
    assert_int_equal(s.calls, 8);
    assert_int_equal(s.errors, 1);
    assert_non_null(strstr(kq_policy_last_failure(p), "stopped"));
    assert_string_equal(a.text[6], "action=0 reason=");
    assert_non_null(strstr(a.text[7], "tag=t7"));
    kq_policy_free(p);
}

/* ---- route_message ---------------------------------------------------------------------- */

#define BIND(g, t)                                                                                 \
    {                                                                                              \
        (char *)(g), (char *)"trade", (char *)(t), KQ_BIND_DIRECT, 0, true                         \
    }
static struct kq_binding fixture[] = {BIND("s-eu", "order"), BIND("s-us", "order"),
                                      BIND("s-pay", "pay")};

static const char ROUTING[] =
    "local M = {}\n"
    "function M.route_message(m, binds)\n"
    "  local d = m.properties['do']\n"
    "  if d == 'raise' then error('boom') end\n"
    "  if d == 'ghost' then return { 's-ghost', 's-us' } end\n"
    "  if d == 'nonsense' then return 'eu' end\n"
    "  if d == 'eu' or d == 'us' then return { 's-' .. d } end\n"
    "  return nil\n"
    "end\n"
    "return M\n";

struct routes {
    char text[MAX_MSGS][128];
    bool seen[MAX_MSGS];
};

static void answer(void *ud, size_t i, const struct kq_route *r, size_t n)
{
    struct routes *a = ud;
    assert_false(a->seen[i]);
    a->seen[i] = true;
    int k = 0;
    for (size_t j = 0; j < n; j++)
        k += snprintf(a->text[i] + k, sizeof a->text[i] - k, "%s,", r[j].group);
}

static void test_route_batch_answers_as_one_call_each(void **state)
{
    (void)state;
    static const char *const kinds[] = {"eu", "us", "none", "ghost", "raise", "nonsense"};
    struct msgs ms = {0};
    for (size_t i = 0; i < 70; i++) /* more than KQ_POLICY_MAX_BATCH: two entries into Lua */
        add(&ms, "trade", i % 3 ? "order" : "pay", kinds[(i * 5 + i / 7) % 6]);
    struct kq_binding_set *set = policy_binding_set(fixture, 3);
    struct kq_policy *one = load("r-one", "routing.lua", ROUTING);
    struct kq_policy *all = load("r-all", "routing.lua", ROUTING);
    struct routes a = {0};
    kq_policy_route_message_batch(all, set, ms.v, ms.count, answer, &a);
    for (size_t i = 0; i < ms.count; i++) {
        struct kq_route r[8];
        size_t n = kq_policy_route_message(one, set, &ms.v[i], r, 8);
        struct routes b = {0};
        answer(&b, 0, r, n);
        assert_true(a.seen[i]);
        assert_string_equal(a.text[i], b.text[0]);
    }
    assert_same_stats(one, all, "route_message");
    assert_int_equal(policy_hook_stats(all, "route_message").calls, 70);
    kq_policy_free(one);
    kq_policy_free(all);
    kq_binding_set_free(set);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_publish_batch_answers_as_one_call_each),
        cmocka_unit_test(test_strikes_within_a_batch),
        cmocka_unit_test(test_budget_per_message),
        cmocka_unit_test(test_route_batch_answers_as_one_call_each),
    };
    return cmocka_run_group_tests(tests, policy_tmp_setup, policy_tmp_teardown);
}
