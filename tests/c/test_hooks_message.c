/* The per-message and per-connection hooks at the policy's interface: route_message routes
 * per message (properties included, never memoised) and falls back to route; on_connect
 * can refuse but never accept a wrong secret; on_dead answers dlq, drop or groups, each
 * validated; kq.log is rate-limited and kq.now_ms is the wall clock; self-tests refuse
 * broken hooks at load. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"
#include "core/clock.h"
#include "core/log.h"
#include "policy/policy.h"
#include "support/log_capture.h"
#include "support/policy_dir.h"
#include "support/test_files.h"

static char err[512];

#define B(g, t, bt)                                                                                \
    {                                                                                              \
        (char *)(g), (char *)"trade", (char *)(t), bt, 0, true                                     \
    }
static struct kq_binding fixture[] = {
    B("s-eu", "order", KQ_BIND_DIRECT),
    B("s-us", "order", KQ_BIND_DIRECT),
    B("s-dead-handler", "never", KQ_BIND_DIRECT),
};

static struct kq_binding_set *fixture_set(void)
{
    return policy_binding_set(fixture, sizeof fixture / sizeof fixture[0]);
}

static struct kq_publish_view view(const char *type, const char *region, bool commit)
{
    static const struct kq_property_kv eu = {"region", "eu"}, us = {"region", "us"},
                                       ghost = {"region", "ghost"}, boom = {"region", "boom"};
    const struct kq_property_kv *props = !region                    ? NULL
                                         : !strcmp(region, "eu")    ? &eu
                                         : !strcmp(region, "us")    ? &us
                                         : !strcmp(region, "ghost") ? &ghost
                                                                    : &boom;
    int64_t now = kq_now_sec();
    return (struct kq_publish_view){"0123456789abcdef0123456789abcdef",
                                    "trade",
                                    type,
                                    "p-trade",
                                    NULL,
                                    props,
                                    region ? 1 : 0,
                                    10,
                                    false,
                                    commit,
                                    now + 60,
                                    5,
                                    now,
                                    NULL,
                                    0,
                                    NULL};
}

static const char ROUTING[] =
    "local M = {}\n"
    "function M.route_message(m, binds)\n"
    "  if m.properties.region == 'boom' then error('boom') end\n"
    "  if m.properties.region == 'ghost' then return { 's-ghost' } end\n"
    "  local want = m.properties.region and ('s-' .. m.properties.region)\n"
    "  for _, b in ipairs(binds) do\n"
    "    if b.group == want then return { b.group } end\n"
    "  end\n"
    "  return nil\n"
    "end\n"
    "return M\n";

static void test_route_message(void **state)
{
    (void)state;
    struct kq_policy *p = NULL;
    assert_int_equal(
        kq_policy_load(policy_dir("route", "routing.lua", ROUTING), &p, err, sizeof err), 0);
    assert_true(kq_policy_has_route_message(p));
    struct kq_binding_set *s = fixture_set();
    struct kq_route r[8];
    struct kq_publish_view eu = view("order", "eu", true), none = view("order", NULL, true);

    assert_int_equal(kq_policy_route_message(p, s, &eu, r, 8), 1);
    assert_string_equal(r[0].group, "s-eu");
    /* not memoised: the same (topic, type) with another region routes elsewhere */
    struct kq_publish_view us = view("order", "us", true);
    assert_int_equal(kq_policy_route_message(p, s, &us, r, 8), 1);
    assert_string_equal(r[0].group, "s-us");
    /* nil: the built-in routing (both direct bindings of "order") */
    assert_int_equal(kq_policy_route_message(p, s, &none, r, 8), 2);
    assert_int_equal(policy_hook_stats(p, "route_message").calls, 3);
    assert_int_equal(policy_hook_stats(p, "route_message").cache_hits, 0);

    /* a group without a binding is dropped and counted; an error falls back */
    struct kq_publish_view ghost = view("order", "ghost", true), boom = view("order", "boom", true);
    assert_int_equal(kq_policy_route_message(p, s, &ghost, r, 8), 0);
    assert_int_equal(policy_hook_stats(p, "route_message").errors, 1);
    assert_int_equal(kq_policy_route_message(p, s, &boom, r, 8), 2);
    assert_int_equal(policy_hook_stats(p, "route_message").errors, 2);
    assert_int_equal(policy_hook_stats(p, "route_message").fallbacks, 1);
    kq_policy_free(p);

    /* with only route defined nothing changes: no per-message hook */
    assert_int_equal(kq_policy_load(policy_dir("route-only", "routing.lua",
                                               "return { route = function() return nil end }"),
                                    &p, err, sizeof err),
                     0);
    assert_false(kq_policy_has_route_message(p));
    assert_int_equal(kq_policy_route_message(p, s, &eu, r, 8), 2);
    assert_int_equal(policy_hook_stats(p, "route").calls, 1);
    kq_policy_free(p);
    kq_binding_set_free(s);
}

/* m and binds are refilled for every call (m's table is reused, the bindings cached per
 * binding set): what a call changes in them, or adds to them, is gone at the next call. */
static const char LEFTOVERS[] =
    "return { route_message = function(m, binds)\n"
    "  if m.message_type == 'change' then\n"
    "    m.topic = 'changed'; m.properties.region = 'mars'; m.properties.added = 'x'\n"
    "    binds[1].group = 'hacked'; binds[#binds] = nil\n"
    "    return nil\n"
    "  elseif m.message_type ~= 'check' then\n"
    "    m.added = true\n"
    "    if binds[1] then binds[1].added = true; binds[#binds + 1] = binds[1] end\n"
    "    return nil\n"
    "  end\n"
    "  if m.added ~= nil or m.topic ~= 'trade' or m.properties.region ~= 'eu'\n"
    "     or m.properties.added ~= nil or binds[1].group == 'hacked'\n"
    "     or binds[1].added ~= nil then\n"
    "    error('leftovers of an earlier call')\n"
    "  end\n"
    "  local groups = {}\n"
    "  for i, b in ipairs(binds) do groups[i] = b.group end\n"
    "  return groups\n"
    "end }\n";

static void test_arguments_are_fresh(void **state)
{
    (void)state;
    struct kq_policy *p = NULL;
    assert_int_equal(
        kq_policy_load(policy_dir("leftovers", "routing.lua", LEFTOVERS), &p, err, sizeof err), 0);
    struct kq_binding_set *s = fixture_set();
    struct kq_route r[8];
    const char *sequence[] = {"check", "change", "check", "add", "check", "change", "add", "check"};
    for (size_t i = 0; i < sizeof sequence / sizeof sequence[0]; i++) {
        struct kq_publish_view m = view(sequence[i], "eu", true);
        size_t n = kq_policy_route_message(p, s, &m, r, 8);
        if (strcmp(sequence[i], "check") == 0)
            assert_int_equal(n, 3); /* every binding: none removed by an earlier call */
    }
    assert_int_equal(policy_hook_stats(p, "route_message").errors, 0);
    kq_binding_set_free(s);
    /* another binding set: the hook sees its bindings, not the cached ones of the first */
    struct kq_config cfg = {.bindings = fixture, .n_bindings = 2};
    s = kq_binding_set_from_config(&cfg);
    struct kq_publish_view m = view("check", "eu", true);
    assert_int_equal(kq_policy_route_message(p, s, &m, r, 8), 2);
    assert_int_equal(policy_hook_stats(p, "route_message").errors, 0);
    kq_binding_set_free(s);
    kq_policy_free(p);
}

/* m.message_id is not stored in the reused m but answered on demand (marshal.c): each call
 * reads its own message's id, so does an m kept from an earlier call, and an id a hook
 * wrote over is gone at the next call. The message type carries the id the hook must see. */
static const char MESSAGE_IDS[] =
    "local kept\n"
    "return { route_message = function(m, binds)\n"
    "  if #m.message_type ~= 32 then return nil end -- a self-test\n"
    "  if m.message_id ~= m.message_type then error('saw id ' .. tostring(m.message_id)) end\n"
    "  if kept and kept.message_id ~= m.message_id then error('kept m: another id') end\n"
    "  if m.no_such_field ~= nil then error('an unknown field is not nil') end\n"
    "  kept = m\n"
    "  if m.properties.region == 'us' then m.message_id = 'forged'; kept = nil end\n"
    "  return nil\n"
    "end }\n";

static void test_message_id_on_demand(void **state)
{
    (void)state;
    struct kq_policy *p = NULL;
    assert_int_equal(
        kq_policy_load(policy_dir("ids", "routing.lua", MESSAGE_IDS), &p, err, sizeof err), 0);
    struct kq_binding_set *s = fixture_set();
    struct kq_route r[8];
    static const char *const ids[] = {
        "00000000000000000000000000000001", "00000000000000000000000000000002",
        "00000000000000000000000000000003", "00000000000000000000000000000004"};
    for (size_t i = 0; i < 4; i++) {
        struct kq_publish_view m = view(ids[i], i == 1 ? "us" : "eu", true);
        m.message_id = ids[i];
        kq_policy_route_message(p, s, &m, r, 8);
    }
    assert_int_equal(policy_hook_stats(p, "route_message").calls, 4);
    assert_int_equal(policy_hook_stats(p, "route_message").errors, 0);
    kq_binding_set_free(s);
    kq_policy_free(p);
}

/* m.properties is refilled in place while messages have the same keys, and its strings are
 * kept per call site: whatever the keys, values, their order, their length, what a call
 * changed, removed or added, and whichever hook ran before, each call sees exactly its
 * message's properties. The message type carries what the hook must see ("k=v,..." sorted)
 * and what it then does to m.properties. */
static const char SEEN[] =
    "local function seen(props)\n"
    "  local t = {}\n"
    "  for k, v in pairs(props) do t[#t + 1] = k .. '=' .. tostring(v) end\n"
    "  table.sort(t)\n"
    "  return table.concat(t, ',')\n"
    "end\n"
    "local function check(m)\n"
    "  local want, action = m.message_type:match('^(.-)|(.*)$')\n"
    "  if not want then return end -- a self-test\n"
    "  if seen(m.properties) ~= want then\n"
    "    error('saw ' .. seen(m.properties) .. ', not ' .. want)\n"
    "  end\n"
    "  if action == 'drop' then m.properties.a = nil\n"
    "  elseif action == 'add' then m.properties.z = 'x'\n"
    "  elseif action == 'set' then m.properties.b = 'changed'\n"
    "  elseif action == 'readd' then m.properties.a = nil; m.properties.a = 'y' end\n"
    "end\n"
    "return { %s = function(m) check(m); return nil end }\n";

static void test_properties_reused(void **state)
{
    (void)state;
    static char long1[100], long2[100];
    memset(long1, 'l', sizeof long1 - 1);
    memset(long2, 'l', sizeof long2 - 1);
    long2[50] = 'X';
    static struct kq_property_kv many[20];
    static char many_keys[20][8], many_seen[400] = "";
    for (int i = 0; i < 20; i++) { /* sorted as the hook sorts them: k10 < k11 < ... */
        snprintf(many_keys[i], sizeof many_keys[i], "k%d", 10 + i);
        many[i] = (struct kq_property_kv){many_keys[i], "v"};
        snprintf(many_seen + strlen(many_seen), sizeof many_seen - strlen(many_seen), "%s%s=v",
                 i ? "," : "", many_keys[i]);
    }
    char long1_seen[128], long2_seen[128];
    snprintf(long1_seen, sizeof long1_seen, "a=%s|", long1);
    snprintf(long2_seen, sizeof long2_seen, "a=%s|", long2);
    const struct kq_property_kv ab[] = {{"a", "1"}, {"b", "2"}}, ab3[] = {{"a", "1"}, {"b", "3"}},
                                ba[] = {{"b", "2"}, {"a", "1"}}, a[] = {{"a", "1"}},
                                l1[] = {{"a", long1}}, l2[] = {{"a", long2}};
    const struct {
        const char *type;
        const struct kq_property_kv *props;
        size_t n;
    } calls[] = {
        {"a=1,b=2|drop", ab, 2}, {"a=1,b=2|add", ab, 2}, {"a=1,b=2|set", ab, 2},
        {"a=1,b=3|", ab3, 2},    {"a=1|", a, 1},         {"a=1,b=2|", ba, 2},
        {long1_seen, l1, 1},     {long2_seen, l2, 1},    {"a=1|readd", a, 1},
        {"a=1|", a, 1},          {"|add", NULL, 0},      {"|", NULL, 0},
        {NULL, many, 20},        {NULL, many, 20},       {"a=1,b=2|", ab, 2},
    };
    char many_type[420];
    snprintf(many_type, sizeof many_type, "%s|add", many_seen);
    char publish[1024], routing[1024];
    snprintf(publish, sizeof publish, SEEN, "on_publish");
    snprintf(routing, sizeof routing, SEEN, "route_message");
    policy_dir("reused", "publish.lua", publish);
    struct kq_policy *p = NULL;
    assert_int_equal(
        kq_policy_load(policy_dir("reused", "routing.lua", routing), &p, err, sizeof err), 0);
    struct kq_binding_set *s = fixture_set();
    struct kq_route r[8];
    struct kq_publish_verdict v;
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
        struct kq_publish_view m = view(calls[i].type ? calls[i].type : many_type, NULL, true);
        m.properties = calls[i].props;
        m.n_properties = calls[i].n;
        kq_policy_publish(p, &m, &v); /* the two hooks in turn, as the broker calls them */
        kq_policy_route_message(p, s, &m, r, 8);
        kq_policy_route_message(p, s, &m, r, 8);
        assert_int_equal(policy_hook_stats(p, "publish").errors, 0);
        assert_int_equal(policy_hook_stats(p, "route_message").errors, 0);
    }
    kq_binding_set_free(s);
    kq_policy_free(p);
}

static const char AUTH[] =
    "local ALLOW = { ['s-eu'] = { ['127.0.0.1'] = true } }\n"
    "return { on_connect = function(c)\n"
    "  if c.group == 'broken' then return 42 end\n"
    "  if c.group == 'capped' and c.connections >= 2 then\n"
    "    return 'reject', 'at most 2 connections for ' .. c.group\n"
    "  end\n"
    "  local allow = ALLOW[c.group]\n"
    "  if allow and not allow[c.peer_ip] then\n"
    "    return 'reject', 'peer ' .. c.peer_ip .. ':' .. c.peer_port .. ' not allowed'\n"
    "  end\n"
    "  return 'accept'\n"
    "end }\n";

static void test_on_connect(void **state)
{
    (void)state;
    struct kq_policy *p = NULL;
    assert_int_equal(kq_policy_load(policy_dir("auth", "auth.lua", AUTH), &p, err, sizeof err), 0);
    char why[256];
    struct kq_connect_view ok = {"s-eu", "127.0.0.1", 4000, true, 0, 0};
    assert_true(kq_policy_connect(p, &ok, why, sizeof why));
    struct kq_connect_view far = {"s-eu", "10.0.0.9", 4001, true, 0, 0};
    assert_false(kq_policy_connect(p, &far, why, sizeof why));
    assert_string_equal(why, "peer 10.0.0.9:4001 not allowed");
    struct kq_connect_view capped = {"capped", "127.0.0.1", 1, true, 0, 2};
    assert_false(kq_policy_connect(p, &capped, why, sizeof why));
    assert_string_equal(why, "at most 2 connections for capped");
    capped.connections = 1;
    assert_true(kq_policy_connect(p, &capped, why, sizeof why));
    /* "accept" cannot open a connection whose secret is wrong */
    struct kq_connect_view bad = {"other", "127.0.0.1", 1, false, 0, 0};
    assert_false(kq_policy_connect(p, &bad, why, sizeof why));
    assert_string_equal(why, "unknown groupId or wrong secretKey");
    /* nonsense: the built-in answer (accept iff the secret is right), counted */
    struct kq_connect_view broken = {"broken", "127.0.0.1", 1, true, 0, 0};
    assert_true(kq_policy_connect(p, &broken, why, sizeof why));
    broken.secret_ok = false;
    assert_false(kq_policy_connect(p, &broken, why, sizeof why));
    assert_int_equal(policy_hook_stats(p, "connect").errors, 2);
    assert_int_equal(policy_hook_stats(p, "connect").rejects, 2);
    kq_policy_free(p);
    /* no hook: accept iff secret_ok */
    assert_true(kq_policy_connect(NULL, &ok, why, sizeof why));
    assert_false(kq_policy_connect(NULL, &bad, why, sizeof why));
}

static const char RETRY[] =
    "return { on_dead = function(m, reason)\n"
    "  if m.message_type == 'junk' then return 'drop' end\n"
    "  if m.message_type == 'ghost' then return { groups = { 's-nobody' } } end\n"
    "  if m.message_type == 'bad' then return { groups = { 's-eu' }, extra = 1 } end\n"
    "  if m.properties.region == 'eu' and m.attempts == 5 and reason == 'expired' then\n"
    "    return { groups = { 's-dead-handler', 's-nobody' } }\n"
    "  end\n"
    "  if m.message_type == 'order' then return 'dlq' end\n"
    "  return nil\n"
    "end }\n";

static void test_on_dead(void **state)
{
    (void)state;
    struct kq_policy *p = NULL;
    assert_int_equal(kq_policy_load(policy_dir("dead", "retry.lua", RETRY), &p, err, sizeof err),
                     0);
    assert_true(kq_policy_has_dead(p));
    struct kq_binding_set *s = fixture_set();
    struct kq_route r[8];
    size_t n;
    struct kq_publish_view m = view("order", "eu", true);
    assert_int_equal(kq_policy_dead(p, s, &m, 5, "expired", r, 8, &n), KQ_DEAD_HANDOVER);
    assert_int_equal(n, 1); /* s-nobody has no binding: dropped, counted */
    assert_string_equal(r[0].group, "s-dead-handler");
    assert_int_equal(policy_hook_stats(p, "dead").errors, 1);
    assert_int_equal(kq_policy_dead(p, s, &m, 4, "expired", r, 8, &n), KQ_DEAD_DLQ);
    m = view("junk", NULL, true);
    assert_int_equal(kq_policy_dead(p, s, &m, 5, "expired", r, 8, &n), KQ_DEAD_DROP);
    assert_int_equal(policy_hook_stats(p, "dead").rejects, 1);
    m = view("other", NULL, true);
    assert_int_equal(kq_policy_dead(p, s, &m, 5, "expired", r, 8, &n), KQ_DEAD_DLQ);
    /* invalid answers: a dead letter as without the hook */
    m = view("ghost", NULL, true);
    assert_int_equal(kq_policy_dead(p, s, &m, 5, "expired", r, 8, &n), KQ_DEAD_DLQ);
    m = view("bad", NULL, true);
    assert_int_equal(kq_policy_dead(p, s, &m, 5, "expired", r, 8, &n), KQ_DEAD_DLQ);
    m = view("order", "eu", false); /* never committed: cannot be delivered */
    assert_int_equal(kq_policy_dead(p, s, &m, 5, "expired", r, 8, &n), KQ_DEAD_DLQ);
    assert_int_equal(n, 0);
    assert_int_equal(policy_hook_stats(p, "dead").errors, 4);
    assert_int_equal(policy_hook_stats(p, "dead").fallbacks, 3);
    kq_binding_set_free(s);
    kq_policy_free(p);
}

static void test_helpers(void **state)
{
    (void)state;
    struct kq_policy *p = NULL;
    static const char src[] = "local last = 0\n"
                              "return { on_connect = function(c)\n"
                              "  last = kq.now_ms()\n"
                              "  if c.group == 'chatty' then\n"
                              "    for i = 1, 100 do kq.log('warn', 'line ' .. i) end\n"
                              "  end\n"
                              "  if c.group == 'clock' then return 'reject', tostring(last) end\n"
                              "  return 'accept'\n"
                              "end }\n";
    assert_int_equal(kq_policy_load(policy_dir("helpers", "auth.lua", src), &p, err, sizeof err),
                     0);
    char why[256];
    int64_t before = kq_now_ms();
    struct kq_connect_view clock = {"clock", "127.0.0.1", 1, true, 0, 0};
    assert_false(kq_policy_connect(p, &clock, why, sizeof why));
    int64_t at = atoll(why);
    assert_true(at >= before && at <= kq_now_ms());

    log_capture_begin();
    struct kq_connect_view chatty = {"chatty", "127.0.0.1", 1, true, 0, 0};
    assert_true(kq_policy_connect(p, &chatty, why, sizeof why));
    char *log = log_capture_end(KQ_LOG_ERROR);
    int lines = 0;
    for (const char *q = log; (q = strstr(q, "auth.lua:5: line ")); q++)
        lines++;
    if (lines < 1 || lines > 10)
        fail_msg("%d kq.log lines:\n%s", lines, log);
    free(log);
    kq_policy_free(p);
}

static void expect_load_error(const char *name, const char *file, const char *src, const char *want)
{
    struct kq_policy *p = NULL;
    assert_int_not_equal(kq_policy_load(policy_dir(name, file, src), &p, err, sizeof err), 0);
    assert_null(p);
    if (!strstr(err, want))
        fail_msg("load error \"%s\" lacks \"%s\"", err, want);
}

static void test_selftests(void **state)
{
    (void)state;
    expect_load_error("st-route", "routing.lua",
                      "return { route_message = function(m) return { 's-ghost' } end }",
                      "routing.lua: route_message: self-test failed: returned group "
                      "\"s-ghost\", which has no binding");
    expect_load_error("st-auth", "auth.lua", "return { on_connect = function(c) return 1 end }",
                      "auth.lua: on_connect: self-test failed: on_connect must return");
    expect_load_error("st-dead", "retry.lua",
                      "return { on_dead = function(m, r) return 'maybe' end }",
                      "retry.lua: on_dead: self-test failed: on_dead must return");
    expect_load_error("st-unknown", "auth.lua", "return { on_conect = function(c) end }",
                      "unknown hook 'on_conect' (expected: on_connect");
    /* handing over to a group the self-test's topic does not bind is fine at load */
    struct kq_policy *p = NULL;
    int rc = kq_policy_load(policy_dir("st-dead-ok", "retry.lua",
                                       "return { on_dead = function(m, r) return "
                                       "{ groups = { 's-dead-handler' } } end }"),
                            &p, err, sizeof err);
    if (rc != 0)
        fail_msg("%s", err);
    kq_policy_free(p);
}

/* Loads lua/policies/examples/<example> as <file> in a fresh folder. */
/* The broker only reads a hook's answer: a table kept in a module local can answer every
 * call (docs/POLICIES.md "Writing cheap hooks", the shipped examples do it). Each hook checks
 * that its shared answer is still exactly as made before returning it again. */
#define SHARED_ANSWERS                                                                             \
    "local CHANGE = { properties = { region = 'eu', stale = false }, deliver_limit = 3 }\n"        \
    "local ROUTE, DEAD = { 's-eu' }, { groups = { 's-dead-handler' } }\n"                          \
    "local function keys(t) local n = 0; for _ in pairs(t) do n = n + 1 end; return n end\n"       \
    "local function intact()\n"                                                                    \
    "  assert(keys(CHANGE) == 2 and keys(CHANGE.properties) == 2, 'changes table changed')\n"      \
    "  assert(CHANGE.properties.region == 'eu' and CHANGE.properties.stale == false)\n"            \
    "  assert(CHANGE.deliver_limit == 3 and keys(ROUTE) == 1 and ROUTE[1] == 's-eu')\n"            \
    "  assert(keys(DEAD) == 1 and keys(DEAD.groups) == 1 and DEAD.groups[1] == "                   \
    "'s-dead-handler')\n"                                                                          \
    "end\n"

static void test_shared_answers(void **state)
{
    (void)state;
    struct kq_policy *p = NULL;
    policy_dir("shared", "publish.lua",
               SHARED_ANSWERS "return { on_publish = function(m) intact(); return CHANGE end }");
    policy_dir("shared", "routing.lua",
               SHARED_ANSWERS
               "return { route_message = function(m, b) intact()\n"
               "  for i = 1, #b do if b[i].group == 's-eu' then return ROUTE end end\n"
               "end }");
    const char *dir = policy_dir(
        "shared", "retry.lua",
        SHARED_ANSWERS "return { on_dead = function(m, reason) intact(); return DEAD end }");
    if (kq_policy_load(dir, &p, err, sizeof err) != 0)
        fail_msg("%s", err);
    struct kq_binding_set *s = fixture_set();
    struct kq_route r[8];
    size_t n;
    for (int i = 0; i < 3; i++) {
        struct kq_publish_view m = view("order", "us", true);
        struct kq_publish_verdict v;
        kq_policy_publish(p, &m, &v);
        assert_int_equal(v.action, KQ_PUBLISH_CHANGE);
        assert_int_equal(v.n_properties, 1);
        assert_string_equal(v.properties[0].value, "eu");
        assert_int_equal(v.deliver_limit, 3);
        assert_int_equal(kq_policy_route_message(p, s, &m, r, 8), 1);
        assert_string_equal(r[0].group, "s-eu");
        assert_int_equal(kq_policy_dead(p, s, &m, 5, "expired", r, 8, &n), KQ_DEAD_HANDOVER);
        assert_string_equal(r[0].group, "s-dead-handler");
    }
    assert_int_equal(policy_hook_stats(p, "publish").errors, 0);
    assert_int_equal(policy_hook_stats(p, "route_message").errors, 0);
    assert_int_equal(policy_hook_stats(p, "dead").errors, 0);
    kq_policy_free(p);
    kq_binding_set_free(s);
}

static struct kq_policy *load_example(const char *example, const char *file)
{
    char rel[512];
    snprintf(rel, sizeof rel, "lua/policies/examples/%s", example);
    char *text = test_read_source(rel);
    struct kq_policy *p = NULL;
    int rc = kq_policy_load(policy_dir(example, file, text), &p, err, sizeof err);
    free(text);
    if (rc != 0)
        fail_msg("%s: %s", example, err);
    return p;
}

/* The shipped examples load in the real sandbox, pass the self-tests and answer as their
 * comments say. */
static void test_examples(void **state)
{
    (void)state;
    struct kq_binding_set *s = fixture_set();
    struct kq_route r[8];
    size_t n;
    char why[256];
    struct kq_policy *p = load_example("routing_by_property.lua", "routing.lua");
    struct kq_publish_view eu = view("order", "eu", true);
    for (int i = 0; i < 2; i++) { /* the second answer is the table kept from the first */
        assert_int_equal(kq_policy_route_message(p, s, &eu, r, 8), 1);
        assert_string_equal(r[0].group, "s-eu");
    }
    kq_policy_free(p);

    p = load_example("auth_allowlist.lua", "auth.lua");
    struct kq_connect_view far = {"s-trade-a", "10.9.9.9", 1, true, 0, 0},
                           near = {"s-trade-a", "10.0.0.7", 1, true, 0, 0};
    assert_false(kq_policy_connect(p, &far, why, sizeof why));
    assert_string_equal(why, "group s-trade-a may not connect from 10.9.9.9");
    assert_true(kq_policy_connect(p, &near, why, sizeof why));
    kq_policy_free(p);

    p = load_example("dead_to_handler.lua", "retry.lua");
    struct kq_publish_view m = view("order", NULL, true);
    assert_int_equal(kq_policy_dead(p, s, &m, 100, "expired", r, 8, &n), KQ_DEAD_HANDOVER);
    assert_string_equal(r[0].group, "s-dead-handler");
    m = view("debug-1", NULL, true);
    assert_int_equal(kq_policy_dead(p, s, &m, 100, "expired", r, 8, &n), KQ_DEAD_DROP);
    kq_policy_free(p);

    p = load_example("publish.lua", "publish.lua");
    struct kq_publish_view big = view("order", NULL, true);
    big.topic = "user-profile";
    big.body_size = 1 << 20;
    struct kq_publish_verdict v;
    kq_policy_publish(p, &big, &v);
    assert_int_equal(v.action, KQ_PUBLISH_REJECT);
    struct kq_publish_view plain = view("order", NULL, true);
    for (int i = 0; i < 2; i++) { /* one answer table for every message without a region */
        kq_policy_publish(p, &plain, &v);
        assert_int_equal(v.action, KQ_PUBLISH_CHANGE);
        assert_int_equal(v.n_properties, 1);
        assert_string_equal(v.properties[0].key, "region");
        assert_string_equal(v.properties[0].value, "default");
    }
    kq_policy_free(p);
    kq_binding_set_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_message),
        cmocka_unit_test(test_arguments_are_fresh),
        cmocka_unit_test(test_message_id_on_demand),
        cmocka_unit_test(test_properties_reused),
        cmocka_unit_test(test_on_connect),
        cmocka_unit_test(test_on_dead),
        cmocka_unit_test(test_helpers),
        cmocka_unit_test(test_selftests),
        cmocka_unit_test(test_examples),
        cmocka_unit_test(test_shared_answers),
    };
    return cmocka_run_group_tests(tests, policy_tmp_setup, policy_tmp_teardown);
}
