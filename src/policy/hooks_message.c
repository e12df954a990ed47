/* The per-message and per-connection hooks: routing.lua's route_message(m, binds),
 * auth.lua's on_connect(c) and retry.lua's on_dead(m, reason), with their self-tests, and
 * the kq.now_ms / kq.log helpers every hook gets. Same guards as the other hooks
 * (policy.c's invoke and settle): budgets, validation, the built-in answer on any failure,
 * strikes per subject, statistics. */
#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "policy/generation.h"

#define LOG_LINES_PER_SEC 10 /* kq.log: per generation; the rest is counted */
#define LOG_TEXT_MAX 400

/* ---- helpers ---------------------------------------------------------------------------- */

static int l_now_ms(lua_State *L)
{
    lua_pushnumber(L, (double)kq_now_ms());
    return 1;
}

/* kq.log(level, text): "debug", "info", "warn" or "error"; at most LOG_LINES_PER_SEC lines
 * a second per generation (a hook runs per message: a log line per message would drown the
 * broker's own), the next line that passes says how many were held back. */
static int l_log(lua_State *L)
{
    struct kq_policy *p = lua_touserdata(L, lua_upvalueindex(1));
    static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
    static const enum kq_log_level values[] = {KQ_LOG_DEBUG, KQ_LOG_INFO, KQ_LOG_WARN,
                                               KQ_LOG_ERROR};
    int level = luaL_checkoption(L, 1, NULL, levels);
    size_t len;
    const char *text = luaL_checklstring(L, 2, &len);
    int64_t sec = kq_now_sec();
    if (sec != p->log_sec) {
        p->log_sec = sec;
        p->log_lines = 0;
    }
    if (p->log_lines >= LOG_LINES_PER_SEC) {
        p->log_suppressed++;
        return 0;
    }
    p->log_lines++;
    if (p->log_suppressed) {
        kq_log(KQ_LOG_WARN, "policy", "kq.log: %u lines held back (at most %d a second)",
               p->log_suppressed, LOG_LINES_PER_SEC);
        p->log_suppressed = 0;
    }
    luaL_where(L, 1); /* "lua/policies/routing.lua:12:" */
    kq_log(values[level], "policy", "lua %s%.*s", lua_tostring(L, -1),
           (int)(len < LOG_TEXT_MAX ? len : LOG_TEXT_MAX), text);
    lua_pop(L, 1);
    return 0;
}

void kq_hooks_add_helpers(lua_State *L, struct kq_policy *p)
{
    lua_pushcfunction(L, l_now_ms);
    lua_setfield(L, -2, "now_ms");
    lua_pushlightuserdata(L, p);
    lua_pushcclosure(L, l_log, 1);
    lua_setfield(L, -2, "log");
}

/* A group the hook named has no binding on the topic: counted as an error, logged. */
static void note_dropped(struct kq_policy *p, const struct route_call *rc, const char *hook)
{
    if (!rc->dropped)
        return;
    p->hooks[rc->c.id].errors++;
    /* the tools' answer says why it was cut (kq_policy_last_failure), as for route */
    snprintf(p->last_failure, sizeof p->last_failure,
             "hook=%s topic=%.100s type=%.100s: "
             "dropped %zu group(s) without a binding on the topic, e.g. \"%s\"",
             hook, rc->topic, rc->type, rc->dropped, rc->first_dropped);
    KQ_LOG_RATELIMITED(KQ_LOG_WARN, "policy", "%s", p->last_failure);
}

/* ---- route_message ---------------------------------------------------------------------- */

struct message_call {
    struct route_call rc;
    const struct kq_binding_set *set; /* route_message: rc.binds are this set's (or NULL) */
    const struct kq_publish_view *m;
    int32_t attempts;   /* on_dead */
    const char *reason; /* on_dead */
    enum kq_dead_action action;
    bool selftest; /* on_dead: groups are not checked against the message */
};

static int route_message_protected(lua_State *L, void *arg)
{
    struct message_call *mc = arg;
    struct route_call *rc = &mc->rc;
    kq_policy_call_route_message(L, rc->c.p, mc->set, mc->m, rc->binds, rc->n);
    if (lua_isnil(L, -1))
        rc->c.use_default = true;
    else
        kq_policy_read_routes(L, -1, rc, "route_message");
    return 0;
}

bool kq_policy_has_route_message(const struct kq_policy *p)
{
    return p && p->hooks[H_ROUTE_MESSAGE].ref != LUA_NOREF;
}

size_t kq_policy_route_message(struct kq_policy *p, const struct kq_binding_set *set,
                               const struct kq_publish_view *m, struct kq_route *out, size_t max)
{
    if (!kq_policy_has_route_message(p))
        return kq_policy_route(p, set, m->topic, m->message_type, out, max);
    size_t n = 0;
    const struct kq_binding *binds = set ? kq_binding_set_topic(set, m->topic, &n) : NULL;
    struct message_call mc; /* field by field: see kq_policy_call_init */
    kq_policy_call_init(&mc.rc.c, p, H_ROUTE_MESSAGE, m->topic, m->message_type);
    mc.rc.binds = binds;
    mc.rc.n = n;
    mc.rc.topic = m->topic;
    mc.rc.type = m->message_type;
    mc.rc.out = p->scratch;
    mc.rc.max = KQ_POLICY_MAX_ROUTES;
    mc.rc.found = mc.rc.dropped = 0;
    mc.set = set;
    mc.m = m;
    if (kq_policy_hook_live(p, &mc.rc.c)) {
        enum outcome o = kq_policy_invoke(&mc.rc.c, route_message_protected, false);
        if (kq_policy_settle(&mc.rc.c, o) && !mc.rc.c.use_default) {
            note_dropped(p, &mc.rc, "route_message");
            size_t k = mc.rc.found < max ? mc.rc.found : max;
            memcpy(out, p->scratch, k * sizeof *out);
            return k;
        }
    } else {
        p->hooks[H_ROUTE_MESSAGE].fallbacks++; /* switched off for this (topic, type) */
    }
    return kq_policy_route(p, set, m->topic, m->message_type, out, max);
}

/* ---- on_connect ------------------------------------------------------------------------- */

struct connect_call {
    struct call c;
    const struct kq_connect_view *v;
    bool reject;
    char reason[KQ_POLICY_MAX_REJECT_REASON];
};

static int connect_protected(lua_State *L, void *arg)
{
    struct connect_call *cc = arg;
    const struct kq_connect_view *v = cc->v;
    lua_rawgeti(L, LUA_REGISTRYINDEX, cc->c.p->hooks[H_CONNECT].ref);
    lua_createtable(L, 0, 6);
    lua_pushstring(L, v->group);
    lua_setfield(L, -2, "group");
    lua_pushboolean(L, v->secret_ok);
    lua_setfield(L, -2, "secret_ok");
    lua_pushstring(L, v->peer_ip ? v->peer_ip : "");
    lua_setfield(L, -2, "peer_ip");
    lua_pushnumber(L, v->peer_port);
    lua_setfield(L, -2, "peer_port");
    lua_pushnumber(L, v->warmup);
    lua_setfield(L, -2, "warmup");
    lua_pushnumber(L, v->connections);
    lua_setfield(L, -2, "connections");
    lua_call(L, 1, 2);
    const char *verdict = lua_type(L, 1) == LUA_TSTRING ? lua_tostring(L, 1) : NULL;
    if (lua_isnil(L, 1)) {
        cc->c.use_default = true;
    } else if (verdict && strcmp(verdict, "accept") == 0) {
        cc->reject = false;
    } else if (verdict && strcmp(verdict, "reject") == 0 &&
               (lua_isnil(L, 2) || lua_type(L, 2) == LUA_TSTRING)) {
        const char *why = lua_isnil(L, 2) ? "" : lua_tostring(L, 2);
        cc->reject = true;
        snprintf(cc->reason, sizeof cc->reason, "%s",
                 why[0] ? why : "rejected by the auth policy"); /* never a blank feedback */
    } else {
        snprintf(cc->c.why, sizeof cc->c.why,
                 "on_connect must return \"accept\", \"reject\", "
                 "reason or nil (got %s%s%s)",
                 luaL_typename(L, 1), verdict ? " " : "", verdict ? verdict : "");
    }
    return 0;
}

bool kq_policy_connect(struct kq_policy *p, const struct kq_connect_view *v, char *reason,
                       size_t len)
{
    const char *builtin = "unknown groupId or wrong secretKey";
    struct connect_call cc = {.c = {.p = p, .id = H_CONNECT, .subject = {v->group, NULL}}, .v = v};
    if (p && kq_policy_hook_live(p, &cc.c)) {
        if (kq_policy_settle(&cc.c, kq_policy_invoke(&cc.c, connect_protected, false)) &&
            !cc.c.use_default && cc.reject) {
            p->hooks[H_CONNECT].rejects++;
            snprintf(reason, len, "%s", cc.reason);
            return false;
        }
    } else if (p && p->hooks[H_CONNECT].ref != LUA_NOREF) {
        p->hooks[H_CONNECT].fallbacks++;
    }
    /* the hook can only tighten: its "accept" never opens a connection with a bad secret */
    if (!v->secret_ok)
        snprintf(reason, len, "%s", builtin);
    return v->secret_ok;
}

/* ---- on_dead ---------------------------------------------------------------------------- */

static int dead_protected(lua_State *L, void *arg)
{
    struct message_call *mc = arg;
    struct route_call *rc = &mc->rc;
    lua_rawgeti(L, LUA_REGISTRYINDEX, rc->c.p->hooks[H_DEAD].ref);
    kq_policy_push_message(L, rc->c.p, mc->m);
    lua_pushnumber(L, mc->attempts);
    lua_setfield(L, -2, "attempts");
    lua_pushstring(L, mc->reason);
    lua_call(L, 2, 1);
    const char *verdict = lua_type(L, 1) == LUA_TSTRING ? lua_tostring(L, 1) : NULL;
    if (lua_isnil(L, 1)) {
        rc->c.use_default = true;
        return 0;
    }
    if (verdict && strcmp(verdict, "dlq") == 0) {
        mc->action = KQ_DEAD_DLQ;
        return 0;
    }
    if (verdict && strcmp(verdict, "drop") == 0) {
        mc->action = KQ_DEAD_DROP;
        return 0;
    }
    if (!lua_istable(L, 1)) {
        snprintf(rc->c.why, sizeof rc->c.why,
                 "on_dead must return \"dlq\", \"drop\", "
                 "{ groups = {...} } or nil (got %s%s%s)",
                 luaL_typename(L, 1), verdict ? " " : "", verdict ? verdict : "");
        return 0;
    }
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
        if (strcmp(k, "groups") != 0) {
            snprintf(rc->c.why, sizeof rc->c.why,
                     "on_dead: unknown key '%.60s' (the answer "
                     "table takes groups only)",
                     k[0] ? k : luaL_typename(L, -2));
            return 0;
        }
        lua_pop(L, 1);
    }
    lua_getfield(L, 1, "groups");
    if (!kq_policy_read_routes(L, -1, rc, "on_dead: groups"))
        return 0;
    if (lua_objlen(L, -1) == 0)
        snprintf(rc->c.why, sizeof rc->c.why,
                 "on_dead: groups is empty (answer \"dlq\" or "
                 "\"drop\" instead)");
    else if (!rc->found && !mc->selftest)
        snprintf(rc->c.why, sizeof rc->c.why,
                 "on_dead: none of the groups has a binding on "
                 "topic %.60s, e.g. \"%s\"",
                 rc->topic, rc->first_dropped);
    else if (!mc->m->commit && !mc->selftest)
        snprintf(rc->c.why, sizeof rc->c.why,
                 "on_dead: a two-phase message that was never "
                 "committed cannot be handed to groups (answer \"dlq\" or \"drop\")");
    mc->action = KQ_DEAD_HANDOVER;
    return 0;
}

bool kq_policy_has_dead(const struct kq_policy *p)
{
    return p && p->hooks[H_DEAD].ref != LUA_NOREF;
}

enum kq_dead_action kq_policy_dead(struct kq_policy *p, const struct kq_binding_set *set,
                                   const struct kq_publish_view *m, int32_t attempts,
                                   const char *reason, struct kq_route *out, size_t max, size_t *n)
{
    *n = 0;
    if (!kq_policy_has_dead(p))
        return KQ_DEAD_DLQ;
    size_t nb = 0;
    const struct kq_binding *binds = set ? kq_binding_set_topic(set, m->topic, &nb) : NULL;
    struct message_call mc = {
        .rc = {.c = {.p = p, .id = H_DEAD, .subject = {m->topic, m->message_type}},
               .binds = binds,
               .n = nb,
               .topic = m->topic,
               .type = m->message_type,
               .out = p->scratch,
               .max = KQ_POLICY_MAX_ROUTES},
        .m = m,
        .attempts = attempts,
        .reason = reason ? reason : ""};
    if (!kq_policy_hook_live(p, &mc.rc.c)) {
        p->hooks[H_DEAD].fallbacks++;
        return KQ_DEAD_DLQ;
    }
    enum outcome o = kq_policy_invoke(&mc.rc.c, dead_protected, false);
    if (!kq_policy_settle(&mc.rc.c, o) || mc.rc.c.use_default)
        return KQ_DEAD_DLQ;
    if (mc.action == KQ_DEAD_DROP)
        p->hooks[H_DEAD].rejects++;
    if (mc.action == KQ_DEAD_HANDOVER) {
        note_dropped(p, &mc.rc, "dead");
        *n = mc.rc.found < max ? mc.rc.found : max;
        memcpy(out, p->scratch, *n * sizeof *out);
    }
    return mc.action;
}

/* ---- self-tests ------------------------------------------------------------------------- */

int kq_hooks_selftest(struct kq_policy *p, const char *dir, char *err, size_t errlen)
{
    static const struct kq_binding binds[] = {
        {"selftest-eu", "selftest", "order", KQ_BIND_DIRECT, 1000, true},
        {"selftest-regx", "selftest", "pay-\\d+", KQ_BIND_REGX, 0, false},
        {"selftest-fanout", "selftest", "*", KQ_BIND_FANOUT, 6000, true},
    };
    static const struct kq_property_kv props[] = {{"region", "eu"}, {"size", "large"}};
    int64_t now = kq_now_sec();
    const struct kq_publish_view views[] = {
        {"00000000000000000000000000000011", "selftest", "order", "selftest-producer", NULL, props,
         2, 100, false, true, now + 3600, 100, now, NULL, 0, NULL},
        {"00000000000000000000000000000012", "selftest", "pay-7", "selftest-producer", NULL, NULL,
         0, 1 << 20, true, true, now + 60, 1, now, NULL, 0, NULL},
        {"00000000000000000000000000000013", "selftest", "", "selftest-producer", NULL, props, 1, 0,
         false, false, now + 1, 3, now, NULL, 0, NULL},
    };
    for (size_t i = 0; i < 3 && p->hooks[H_ROUTE_MESSAGE].ref != LUA_NOREF; i++)
        for (size_t nb = 0; nb <= 3; nb += 3) { /* with and without bindings */
            struct message_call mc = {.rc = {.c = {.p = p, .id = H_ROUTE_MESSAGE},
                                             .binds = binds,
                                             .n = nb,
                                             .topic = "selftest",
                                             .type = views[i].message_type,
                                             .out = p->scratch,
                                             .max = KQ_POLICY_MAX_ROUTES},
                                      .m = &views[i]};
            if (kq_policy_invoke(&mc.rc.c, route_message_protected, true) != CALL_OK)
                return kq_policy_selftest_fail(&mc.rc.c, err, errlen, dir);
            if (mc.rc.dropped) {
                snprintf(mc.rc.c.why, sizeof mc.rc.c.why,
                         "returned group \"%s\", which has "
                         "no binding on the topic",
                         mc.rc.first_dropped);
                return kq_policy_selftest_fail(&mc.rc.c, err, errlen, dir);
            }
        }
    static const char *const reasons[] = {"deliver limit reached", "expired",
                                          "transaction unresolved: expired"};
    for (size_t i = 0; i < 3 && p->hooks[H_DEAD].ref != LUA_NOREF; i++) {
        struct message_call mc = {.rc = {.c = {.p = p, .id = H_DEAD},
                                         .binds = binds,
                                         .n = 3,
                                         .topic = "selftest",
                                         .type = views[i].message_type,
                                         .out = p->scratch,
                                         .max = KQ_POLICY_MAX_ROUTES},
                                  .m = &views[i],
                                  .attempts = (int32_t)(100 - i),
                                  .reason = reasons[i],
                                  .selftest = true};
        if (kq_policy_invoke(&mc.rc.c, dead_protected, true) != CALL_OK)
            return kq_policy_selftest_fail(&mc.rc.c, err, errlen, dir);
    }
    const struct kq_connect_view conns[] = {
        {"selftest-consumer", "127.0.0.1", 40000, true, 0, 0},
        {"selftest-consumer", "::1", 40001, false, 30, 5},
        {"selftest-producer", "10.1.2.3", 1, true, 0, 1000},
    };
    for (size_t i = 0; i < 3 && p->hooks[H_CONNECT].ref != LUA_NOREF; i++) {
        struct connect_call cc = {.c = {.p = p, .id = H_CONNECT}, .v = &conns[i]};
        if (kq_policy_invoke(&cc.c, connect_protected, true) != CALL_OK)
            return kq_policy_selftest_fail(&cc.c, err, errlen, dir);
    }
    return 0;
}
