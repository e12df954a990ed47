/* kq.changes{...}: an on_publish answer checked once when it is made. Answering it changes a
 * message exactly as the same table of changes does; what depends on the message (its own
 * properties, the groups bound on its topic, a delay against its expiry) is still checked per
 * message; a bad constant fails the load with the reason; later changes to the table it was
 * made from do not reach it; and what marks it cannot be reached from Lua. */
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

static const char PUBLISH[] =
    "local CHANGES = { properties = { region = 'default', tenant = false, ['do'] = 'x' },\n"
    "                  deliver_limit = 7 }\n"
    "local AS_TABLE = CHANGES\n"
    "local AS_CONSTANT = kq.changes(CHANGES)\n"
    "local TO_EU = kq.changes{ groups = { 's-eu', 's-eu' } }\n"
    "local LATER = kq.changes{ delay_ms = 5000 }\n"
    "local source = { properties = { a = '1' } }\n"
    "local KEPT = kq.changes(source)\n"
    "source.properties.a = '2'\n"
    "local MANY = {}\n"
    "for i = 1, 64 do MANY['k' .. i] = 'v' end\n"
    "local TOO_MANY = kq.changes{ properties = MANY }\n"
    "return { on_publish = function(m)\n"
    "  local d = m.properties['do']\n"
    "  if d == 'table' then return AS_TABLE end\n"
    "  if d == 'constant' then return AS_CONSTANT end\n"
    "  if d == 'groups' then return TO_EU end\n"
    "  if d == 'delay' then return LATER end\n"
    "  if d == 'kept' then return KEPT end\n"
    "  if d == 'many' then return TOO_MANY end\n"
    "  if d == 'sealed' then return getmetatable(AS_CONSTANT) == false and 'reject' end\n"
    "  return nil\n"
    "end }\n";

static struct kq_binding binds[] = {
    {(char *)"s-eu", (char *)"trade", (char *)"order", KQ_BIND_DIRECT, 0, true},
};

static struct kq_publish_view view(const char *what, struct kq_property_kv props[3],
                                   int64_t expires_in)
{
    props[0] = (struct kq_property_kv){"do", what};
    props[1] = (struct kq_property_kv){"tenant", "acme"};
    props[2] = (struct kq_property_kv){"trace", "t-1"};
    int64_t now = kq_now_sec();
    return (struct kq_publish_view){.message_id = "0123456789abcdef0123456789abcdef",
                                    .topic = "trade",
                                    .message_type = "order",
                                    .group = "p-trade",
                                    .peer = "127.0.0.1:5",
                                    .properties = props,
                                    .n_properties = 3,
                                    .body_size = 10,
                                    .commit = true,
                                    .expired_time = now + expires_in,
                                    .deliver_limit = 5,
                                    .now_sec = now,
                                    .binds = binds,
                                    .n_binds = 1};
}

/* The verdict as the broker would store it, properties sorted (a table's order is Lua's). */
static void describe(const struct kq_publish_verdict *v, char *out, size_t len)
{
    int k = snprintf(out, len, "action=%d", (int)v->action);
    if (v->action != KQ_PUBLISH_CHANGE)
        return;
    const char *keys[KQ_POLICY_MAX_PROPERTIES];
    const char *vals[KQ_POLICY_MAX_PROPERTIES];
    size_t n = v->n_properties;
    for (size_t i = 0; i < n; i++) {
        size_t j = i;
        while (j > 0 && strcmp(keys[j - 1], v->properties[i].key) > 0) {
            keys[j] = keys[j - 1];
            vals[j] = vals[j - 1];
            j--;
        }
        keys[j] = v->properties[i].key;
        vals[j] = v->properties[i].value;
    }
    k += snprintf(out + k, len - k, " limit=%d delay=%lld groups=%zu props=", v->deliver_limit,
                  (long long)v->delay_ms, v->n_groups);
    for (size_t i = 0; i < n; i++)
        k += snprintf(out + k, len - k, "%s=%s,", keys[i], vals[i]);
}

static void answer(struct kq_policy *p, const char *what, int64_t expires_in, char *out,
                   size_t len)
{
    struct kq_property_kv props[3];
    struct kq_publish_view m = view(what, props, expires_in);
    struct kq_publish_verdict v;
    kq_policy_publish(p, &m, &v);
    describe(&v, out, len);
}

static void test_constant_changes(void **state)
{
    (void)state;
    struct kq_policy *p = NULL;
    assert_int_equal(kq_policy_load(policy_dir("changes", "publish.lua", PUBLISH), &p, err,
                                    sizeof err),
                     0);
    char a[512], b[512];
    answer(p, "table", 60, a, sizeof a);
    answer(p, "constant", 60, b, sizeof b);
    assert_string_equal(a, "action=2 limit=7 delay=-1 groups=0 props=do=x,region=default,"
                           "trace=t-1,");
    assert_string_equal(b, a); /* the same change, read once */
    answer(p, "kept", 60, a, sizeof a);
    assert_non_null(strstr(a, "a=1,")); /* a copy: the source's later change is not in it */
    answer(p, "groups", 60, a, sizeof a);
    assert_non_null(strstr(a, "groups=1 ")); /* a bound group, duplicates collapsed */
    answer(p, "delay", 60, a, sizeof a);
    assert_non_null(strstr(a, "delay=5000 "));
    assert_int_equal(policy_hook_stats(p, "publish").errors, 0);

    /* what depends on the message is still checked per message */
    answer(p, "delay", 3, a, sizeof a); /* due after it expires */
    assert_string_equal(a, "action=0");
    assert_non_null(strstr(kq_policy_last_failure(p), "would make the message due after"));
    answer(p, "many", 60, a, sizeof a); /* 3 + 64 properties */
    assert_string_equal(a, "action=0");
    assert_non_null(strstr(kq_policy_last_failure(p), "would leave more than 64 properties"));
    struct kq_property_kv props[3];
    struct kq_publish_view m = view("groups", props, 60);
    m.n_binds = 0; /* s-eu not bound on this message's topic */
    struct kq_publish_verdict v;
    kq_policy_publish(p, &m, &v);
    assert_int_equal(v.action, KQ_PUBLISH_ACCEPT);
    assert_non_null(strstr(kq_policy_last_failure(p), "groups[1] \"s-eu\" has no binding"));
    /* its metatable is not reachable: a hook cannot change what marks it */
    answer(p, "sealed", 60, a, sizeof a);
    assert_string_equal(a, "action=1");
    assert_int_equal(policy_hook_stats(p, "publish").errors, 3);
    kq_policy_free(p);
}

/* A constant that could never be applied fails the load, with kq.changes' reason. */
static void test_bad_constants_fail_the_load(void **state)
{
    (void)state;
    static const struct {
        const char *constant, *why;
    } cases[] = {
        {"{ expired_time = 5 }", "kq.changes: expired_time is a moment"},
        {"{ properties = { ['x-kiteq-groups'] = 'a' } }", "property \"x-kiteq-groups\" is the"},
        {"{ properties = { k = 5 } }", "properties[\"k\"] must be a string"},
        {"{ properties = 'region' }", "properties must be a table"},
        {"{ deliver_limit = 0 }", "deliver_limit must be a whole number in 1..100"},
        {"{ delay_ms = 1.5 }", "delay_ms must be a whole number"},
        {"{ groups = {} }", "groups must be a non-empty list"},
        {"{ groups = { 'a,b' } }", "groups[1] \"a,b\" contains a comma"},
        {"{ colour = 'red' }", "unknown change 'colour'"},
        {"('region')", "bad argument #1 to 'changes' (table expected"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char src[256];
        snprintf(src, sizeof src,
                 "local X = kq.changes%s\nreturn { on_publish = function() return X end }",
                 cases[i].constant);
        struct kq_policy *p = NULL;
        err[0] = 0;
        assert_int_not_equal(kq_policy_load(policy_dir("bad", "publish.lua", src), &p, err,
                                            sizeof err),
                             0);
        if (!strstr(err, cases[i].why))
            fail_msg("%s: %s", cases[i].constant, err);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_constant_changes),
        cmocka_unit_test(test_bad_constants_fail_the_load),
    };
    return cmocka_run_group_tests(tests, policy_tmp_setup, policy_tmp_teardown);
}
