/* What a hook answers is never trusted: C checks every answer of on_publish, route_message,
 * on_dead and on_connect and falls back to the built-in answer (docs/POLICIES.md). The
 * input is read as a recipe for a Lua value (nested tables of the keys the broker knows and
 * others, numbers at and past every bound, strings with NULs, commas, reserved property
 * names, functions, kq.changes values, several return values); all four hooks return it for traffic (the
 * self-tests see nil, so the generation loads), and whatever C makes of it must be a valid
 * verdict: the bounds of policy.h held, only bound groups, every refusal with a reason. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"
#include "core/log.h"
#include "fuzz.h"
#include "policy/policy.h"
#include "registry/bindings.h"

#define SRC_MAX 16384

struct recipe {
    const uint8_t *p;
    size_t left;
    char *out;
    size_t len;
};

static unsigned next(struct recipe *r)
{
    if (!r->left)
        return 0;
    r->left--;
    return *r->p++;
}

static void put(struct recipe *r, const char *s)
{
    size_t n = strlen(s);
    if (r->len + n < SRC_MAX) {
        memcpy(r->out + r->len, s, n + 1);
        r->len += n;
    }
}

static const char *const NUMBERS[] = {
    "0",
    "1",
    "-1",
    "0.5",
    "3",
    "100",
    "101",
    "1e308",
    "-1e308",
    "0/0",
    "1/0",
    "-1/0",
    "2^53",
    "2^63",
    "64",
    "65",
    "kq.now_ms() / 1000 + 60",
    "kq.now_ms() / 1000 + 7 * 86400 + 1",
    "kq.now_ms()",
    "7 * 86400 * 1000",
    "7 * 86400 * 1000 + 1",
    "-0",
};
static const char *const STRINGS[] = {
    "'reject'",
    "'accept'",
    "'dlq'",
    "'drop'",
    "''",
    "'s-eu'",
    "'s-us'",
    "'s-none'",
    "'a,b'",
    "'x\\0y'",
    "'region'",
    "'groups'",
    "'properties'",
    "'expired_time'",
    "'deliver_limit'",
    "'delay_ms'",
    "'x-kiteq-delay-ms'",
    "'x-kiteq-groups'",
    "string.rep('k', 129)",
    "string.rep('v', 1025)",
    "string.rep('r', 300)",
};
static const char *const KEYS[] = {
    "properties", "expired_time", "deliver_limit", "delay_ms",
    "groups",     "region",       "tenant",        "x",
    "[1]",        "[2]",          "[0]",           "['x-kiteq-deliver-at']",
};
#define N(a) (sizeof(a) / sizeof((a)[0]))

static void value(struct recipe *r, int depth);

static void table(struct recipe *r, int depth)
{
    put(r, "{");
    unsigned n = next(r) % 5;
    for (unsigned i = 0; i < n; i++) {
        unsigned k = next(r);
        if (k % 3 == 0) { /* a list entry */
            value(r, depth + 1);
        } else {
            put(r, KEYS[k % N(KEYS)]);
            put(r, " = ");
            value(r, depth + 1);
        }
        put(r, ", ");
    }
    if (next(r) % 4 == 0) { /* many properties: past KQ_POLICY_MAX_PROPERTIES */
        put(r, "properties = (function() local t = {} for i = 1, 70 do t['p' .. i] = 'v' end "
               "return t end)(), ");
    }
    put(r, "}");
}

static void raw_string(struct recipe *r)
{
    unsigned n = next(r) % 16;
    put(r, "'");
    for (unsigned i = 0; i < n; i++) {
        char esc[8];
        snprintf(esc, sizeof esc, "\\%03u", next(r));
        put(r, esc);
    }
    put(r, "'");
}

static void value(struct recipe *r, int depth)
{
    unsigned b = next(r);
    switch (depth >= 3 ? b % 5 : b % 10) {
    case 0: put(r, "nil"); break;
    case 1: put(r, b & 16 ? "true" : "false"); break;
    case 2: put(r, NUMBERS[next(r) % N(NUMBERS)]); break;
    case 3: put(r, STRINGS[next(r) % N(STRINGS)]); break;
    case 4: raw_string(r); break;
    case 5:
    case 6: table(r, depth); break;
    case 7: put(r, "function() end"); break;
    case 8: put(r, "setmetatable({}, { __index = function() error('trap') end })"); break;
    default: /* a checked answer (kq.changes raises for what it refuses: then nil) */
        put(r, "select(2, pcall(kq.changes, ");
        table(r, depth);
        put(r, "))");
        break;
    }
}

static void write_file(const char *dir, const char *file, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "w");
    FUZZ_CHECK(f != NULL);
    fputs(text, f);
    fclose(f);
}

static char dir[64];
static const char *const FILES[] = {"publish.lua", "routing.lua", "retry.lua", "auth.lua"};

static void remove_dir(void)
{
    char path[512];
    for (size_t i = 0; i < N(FILES); i++) {
        snprintf(path, sizeof path, "%s/%s", dir, FILES[i]);
        unlink(path);
    }
    rmdir(dir);
}
static struct kq_binding_set *set;
static struct kq_binding binds[] = {
    {"s-eu", "trade", "order", KQ_BIND_DIRECT, 1000, true},
    {"s-us", "trade", "order", KQ_BIND_DIRECT, 0, false},
    {"s-all", "trade", "*", KQ_BIND_FANOUT, 0, true},
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    kq_log_set_level(KQ_LOG_ERROR + 1);
    snprintf(dir, sizeof dir, "/tmp/kq-fuzz-policy.%d", (int)getpid());
    mkdir(dir, 0700);
    atexit(remove_dir);
    struct kq_config cfg = {.bindings = binds, .n_bindings = N(binds)};
    set = kq_binding_set_from_config(&cfg);
    FUZZ_CHECK(set != NULL);
    return 0;
}

static bool bound(const char *g)
{
    for (size_t i = 0; i < N(binds); i++)
        if (strcmp(binds[i].group_id, g) == 0)
            return true;
    return false;
}

static void check_publish(struct kq_policy *p, const struct kq_publish_view *m)
{
    struct kq_publish_verdict v;
    kq_policy_publish(p, m, &v);
    FUZZ_CHECK(v.action == KQ_PUBLISH_ACCEPT || v.action == KQ_PUBLISH_REJECT ||
               v.action == KQ_PUBLISH_CHANGE);
    if (v.action == KQ_PUBLISH_REJECT)
        FUZZ_CHECK(v.reason[0] != '\0' && strlen(v.reason) < sizeof v.reason);
    if (v.action != KQ_PUBLISH_CHANGE)
        return;
    FUZZ_CHECK(v.n_properties <= KQ_POLICY_MAX_PROPERTIES);
    for (size_t i = 0; i < v.n_properties; i++) {
        size_t kl = strlen(v.properties[i].key), vl = strlen(v.properties[i].value);
        FUZZ_CHECK(kl >= 1 && kl <= KQ_POLICY_MAX_PROPERTY_KEY &&
                   vl <= KQ_POLICY_MAX_PROPERTY_VALUE);
        FUZZ_CHECK(strcmp(v.properties[i].key, KQ_PROP_DELAY_MS) != 0 &&
                   strcmp(v.properties[i].key, KQ_PROP_DELIVER_AT) != 0 &&
                   strcmp(v.properties[i].key, KQ_PROP_GROUPS) != 0);
        for (size_t k = 0; k < i; k++)
            FUZZ_CHECK(strcmp(v.properties[i].key, v.properties[k].key) != 0);
    }
    FUZZ_CHECK(
        v.expired_time == m->expired_time ||
        (v.expired_time > m->now_sec && v.expired_time <= m->now_sec + KQ_PUBLISH_MAX_EXPIRED_SEC));
    FUZZ_CHECK(v.deliver_limit >= 1 && v.deliver_limit <= KQ_PUBLISH_MAX_DELIVER_LIMIT);
    FUZZ_CHECK(v.delay_ms == -1 || (v.delay_ms >= 0 && v.delay_ms <= KQ_PUBLISH_MAX_DELAY_MS));
    if (v.delay_ms > 0)
        FUZZ_CHECK(m->now_sec * 1000 + v.delay_ms < v.expired_time * 1000);
    for (size_t i = 0; i < v.n_groups; i++) {
        FUZZ_CHECK(bound(v.groups[i]) && strchr(v.groups[i], ',') == NULL);
        for (size_t k = 0; k < i; k++)
            FUZZ_CHECK(strcmp(v.groups[i], v.groups[k]) != 0);
    }
}

static void check_routes(const struct kq_route *r, size_t n)
{
    FUZZ_CHECK(n <= KQ_POLICY_MAX_ROUTES);
    for (size_t i = 0; i < n; i++) {
        FUZZ_CHECK(r[i].group != NULL && bound(r[i].group));
        for (size_t k = 0; k < i; k++)
            FUZZ_CHECK(strcmp(r[i].group, r[k].group) != 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char expr[SRC_MAX], text[SRC_MAX + 512];
    struct recipe r = {data, size, expr, 0};
    expr[0] = 0;
    value(&r, 0);
    if (next(&r) % 3 == 0) { /* a second value: "reject", reason and the like */
        put(&r, ", ");
        value(&r, 1);
    }
    static const struct {
        const char *file, *hook, *skip;
    } hooks[] = {
        {"publish.lua", "on_publish(m)", "m.topic == 'selftest'"},
        {"routing.lua", "route_message(m, binds)", "m.topic == 'selftest'"},
        {"retry.lua", "on_dead(m, reason)", "m.topic == 'selftest'"},
        {"auth.lua", "on_connect(c)", "c.group:sub(1, 8) == 'selftest'"},
    };
    for (size_t i = 0; i < N(hooks); i++) {
        snprintf(text, sizeof text,
                 "local M = {}\nfunction M.%s\n  if %s then return nil end\n"
                 "  return %s\nend\nreturn M\n",
                 hooks[i].hook, hooks[i].skip, expr);
        write_file(dir, hooks[i].file, text);
    }
    struct kq_policy *p = NULL;
    char err[1024] = "";
    if (kq_policy_load(dir, &p, err, sizeof err) != 0) {
        FUZZ_CHECK(err[0] != '\0'); /* a refusal says why (e.g. a syntax error) */
        return 0;
    }
    static const struct kq_property_kv props[] = {{"region", "eu"}, {"tenant", "acme"}};
    int64_t now = 1700000000;
    size_t nb = 0;
    const struct kq_binding *tb = kq_binding_set_topic(set, "trade", &nb);
    struct kq_publish_view m = {"0123456789abcdef0123456789abcdef",
                                "trade",
                                "order",
                                "p-trade",
                                "10.0.0.1:5000",
                                props,
                                2,
                                100,
                                false,
                                true,
                                now + 3600,
                                5,
                                now,
                                tb,
                                nb,
                                NULL};
    struct kq_route routes[KQ_POLICY_MAX_ROUTES];
    for (int round = 0; round < 2; round++) { /* the second: after a strike, or memoised */
        check_publish(p, &m);
        check_routes(routes, kq_policy_route_message(p, set, &m, routes, KQ_POLICY_MAX_ROUTES));
        size_t n = 0;
        enum kq_dead_action a =
            kq_policy_dead(p, set, &m, 5, "expired", routes, KQ_POLICY_MAX_ROUTES, &n);
        FUZZ_CHECK(a == KQ_DEAD_DLQ || a == KQ_DEAD_DROP || a == KQ_DEAD_HANDOVER);
        FUZZ_CHECK(a == KQ_DEAD_HANDOVER ? n >= 1 : n == 0);
        check_routes(routes, n);
        char why[KQ_POLICY_MAX_REJECT_REASON];
        for (int secret_ok = 0; secret_ok < 2; secret_ok++) {
            struct kq_connect_view c = {"s-eu", "10.0.0.9", 4000, secret_ok, 0, 3};
            why[0] = 0;
            bool ok = kq_policy_connect(p, &c, why, sizeof why);
            FUZZ_CHECK(ok || why[0] != '\0'); /* a refusal has feedback */
            FUZZ_CHECK(secret_ok || !ok);     /* a hook never lets a wrong secret in */
        }
    }
    kq_policy_free(p);
    return 0;
}
