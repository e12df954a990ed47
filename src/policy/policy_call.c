/* kq_policy_call: JSON arguments -> the broker's policy API -> the answer as applied. One
 * table entry per hook (CALLS); adding a hook to the tools is one entry and its two small
 * functions. */
#include "policy/policy_call.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "registry/bindings.h"

/* ---- reading the arguments -------------------------------------------------------------- */

#define MAX_ARGS 24 /* argument names one hook reads (the message hooks: about 16) */

struct args {
    const cJSON *o;
    char *err;
    size_t errlen;
    const char *read[MAX_ARGS]; /* the names asked for: any other key is a typo */
    size_t n_read;
    char note[200]; /* why the answer is not the hook's own, found by the call itself */
};

static const cJSON *field(struct args *a, const char *key)
{
    if (a->n_read < MAX_ARGS)
        a->read[a->n_read++] = key;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(a->o, key);
    return cJSON_IsNull(v) ? NULL : v;
}

static int by_name(const void *x, const void *y)
{
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

/* A key of the object nobody asked for is refused (a misspelt argument would otherwise take
 * the self-test's value without a word), naming the arguments there are (sorted: the order
 * they were read in is the compiler's). */
static void refuse_unknown(struct args *a, const char *where)
{
    for (const cJSON *kv = a->o ? a->o->child : NULL; kv && !a->err[0]; kv = kv->next) {
        bool known = false;
        for (size_t i = 0; i < a->n_read && !known; i++)
            known = strcmp(a->read[i], kv->string) == 0;
        if (known)
            continue;
        qsort(a->read, a->n_read, sizeof a->read[0], by_name);
        size_t o = (size_t)snprintf(a->err, a->errlen,
                                    "%s: unknown argument '%s' (arguments:", where, kv->string);
        for (size_t i = 0; i < a->n_read && o < a->errlen; i++)
            o += (size_t)snprintf(a->err + o, a->errlen - o, " %s", a->read[i]);
        if (o < a->errlen)
            snprintf(a->err + o, a->errlen - o, ")");
    }
}

/* A string field, def when missing; NULL (err set) when of another type. */
static const char *str_arg(struct args *a, const char *key, const char *def)
{
    const cJSON *v = field(a, key);
    if (!v)
        return def;
    if (cJSON_IsString(v))
        return v->valuestring;
    snprintf(a->err, a->errlen, "%s: must be a string", key);
    return NULL;
}

/* A whole number in lo..hi, def when missing; err set (and def returned) when it is not.
 * Checked in double before any conversion: a double out of the target type's range does not
 * convert (undefined behaviour; found by the policy_call fuzz target with 1e300). */
static int64_t int_arg(struct args *a, const char *key, int64_t def, int64_t lo, int64_t hi)
{
    const cJSON *v = field(a, key);
    if (!v)
        return def;
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(d >= (double)lo && d <= (double)hi && d == floor(d))) {
        snprintf(a->err, a->errlen, "%s: must be a whole number in %lld..%lld", key, (long long)lo,
                 (long long)hi);
        return def;
    }
    return (int64_t)d;
}

/* The bounds int_arg takes, as its last two arguments */
#define WHOLE_MAX (INT64_C(1) << 53) /* whole numbers a double holds exactly */
#define I32 INT32_MIN, INT32_MAX
#define U32 0, UINT32_MAX
#define TIME -WHOLE_MAX, WHOLE_MAX
#define COUNT 0, WHOLE_MAX

static bool bool_arg(struct args *a, const char *key, bool def)
{
    const cJSON *v = field(a, key);
    if (!v)
        return def;
    if (!cJSON_IsBool(v))
        snprintf(a->err, a->errlen, "%s: must be true or false", key);
    return cJSON_IsTrue(v);
}

static cJSON *limits_json(const struct kq_flow_limits *l)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "rate", l->rate);
    cJSON_AddNumberToObject(o, "burst", l->burst);
    cJSON_AddNumberToObject(o, "window", l->window);
    return o;
}

/* ---- bindings: [{group, message_type, bind_type, watermark, persistent}] ----------------- */

static int parse_bind(struct args *a, const cJSON *o, int i, const char *topic,
                      struct kq_binding *b)
{
    struct args in = {.o = o, .err = a->err, .errlen = a->errlen};
    const char *type = cJSON_IsObject(o) ? str_arg(&in, "bind_type", "direct") : NULL;
    b->group_id = (char *)(cJSON_IsObject(o) ? str_arg(&in, "group", NULL) : NULL);
    b->topic = (char *)topic;
    b->message_type = (char *)(cJSON_IsObject(o) ? str_arg(&in, "message_type", "") : NULL);
    b->watermark = (int)int_arg(&in, "watermark", 0, I32);
    b->persistent = bool_arg(&in, "persistent", true);
    char where[32];
    snprintf(where, sizeof where, "bindings[%d]", i + 1);
    refuse_unknown(&in, where);
    bool known = type && kq_bind_type_parse(type, &b->bind_type) == 0;
    if (!a->err[0] && (!b->group_id || !b->message_type || !known))
        snprintf(a->err, a->errlen,
                 "bindings: each is {group = \"name\", message_type = "
                 "\"...\", bind_type = \"direct\"|\"regx\"|\"fanout\", watermark, persistent}");
    return a->err[0] ? -EINVAL : 0;
}

/* A binding set of the topic's bindings (one kq_binding_set_with_group per group, its
 * bindings in the order given). */
static struct kq_binding_set *bindings_arg(struct args *a, const char *topic)
{
    const cJSON *list = field(a, "bindings");
    if (list && !cJSON_IsArray(list)) {
        snprintf(a->err, a->errlen, "bindings: must be a list");
        return NULL;
    }
    int n = list ? cJSON_GetArraySize(list) : 0;
    struct kq_binding *all = calloc((size_t)n + 1, sizeof *all);
    struct kq_binding *group = calloc((size_t)n + 1, sizeof *group);
    struct kq_binding_set *set = all && group ? kq_binding_set_empty() : NULL;
    for (int i = 0; i < n && !a->err[0]; i++)
        parse_bind(a, cJSON_GetArrayItem(list, i), i, topic, &all[i]);
    for (int i = 0; set && i < n && !a->err[0]; i++) {
        bool first = true; /* the first binding of its group: add the group's bindings */
        for (int k = 0; k < i && first; k++)
            first = strcmp(all[k].group_id, all[i].group_id) != 0;
        size_t m = 0;
        for (int k = i; first && k < n; k++)
            if (strcmp(all[k].group_id, all[i].group_id) == 0)
                group[m++] = all[k];
        if (!first)
            continue;
        struct kq_binding_set *next =
            kq_binding_set_with_group(set, topic, all[i].group_id, group, m);
        kq_binding_set_free(set);
        set = next;
    }
    free(all);
    free(group);
    if (!set && !a->err[0])
        snprintf(a->err, a->errlen, "out of memory");
    if (a->err[0]) {
        kq_binding_set_free(set);
        return NULL;
    }
    return set;
}

/* {groups = [{group, persistent, watermark}]}: a routing answer. */
static cJSON *routes_json(const struct kq_route *r, size_t n)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *groups = cJSON_AddArrayToObject(o, "groups");
    for (size_t i = 0; i < n; i++) {
        cJSON *g = cJSON_CreateObject();
        cJSON_AddStringToObject(g, "group", r[i].group);
        cJSON_AddBoolToObject(g, "persistent", r[i].persistent);
        cJSON_AddNumberToObject(g, "watermark", r[i].watermark);
        cJSON_AddItemToArray(groups, g);
    }
    return o;
}

/* ---- a message as the per-message hooks see it: the fields of m (properties = {k = "v"}),
 * its topic's bindings, now ------------------------------------------------------------- */

struct message_args {
    struct kq_publish_view m;
    struct kq_property_kv props[KQ_POLICY_MAX_PROPERTIES];
    struct kq_binding_set *set; /* the topic's bindings (free with kq_binding_set_free) */
};

/* Reads m into ma (peer only when with_peer: route_message and on_dead see it empty);
 * false with a->err set when an argument is wrong. */
static bool message_arg(struct args *a, struct message_args *ma, bool with_peer)
{
    size_t n = 0;
    const cJSON *pl = field(a, "properties");
    if (pl && !cJSON_IsObject(pl))
        snprintf(a->err, a->errlen, "properties: must be an object of strings");
    for (const cJSON *kv = pl ? pl->child : NULL; kv && !a->err[0]; kv = kv->next) {
        if (!cJSON_IsString(kv) || n == KQ_POLICY_MAX_PROPERTIES)
            snprintf(a->err, a->errlen, "properties: at most %d, each a string",
                     KQ_POLICY_MAX_PROPERTIES);
        else
            ma->props[n++] = (struct kq_property_kv){kv->string, kv->valuestring};
    }
    int64_t now = int_arg(a, "now", kq_now_sec(), TIME);
    ma->m = (struct kq_publish_view){
        .message_id = str_arg(a, "message_id", "00000000000000000000000000000001"),
        .topic = str_arg(a, "topic", "selftest"),
        .message_type = str_arg(a, "message_type", ""),
        .group = str_arg(a, "group", "selftest-producer"),
        .peer = with_peer ? str_arg(a, "peer", "127.0.0.1:40000") : NULL,
        .properties = ma->props,
        .n_properties = n,
        .body_size = (size_t)int_arg(a, "body_size", 0, COUNT),
        .fly = bool_arg(a, "fly", false),
        .commit = bool_arg(a, "commit", true),
        .expired_time = int_arg(a, "expired_time", now + 3600, TIME),
        .deliver_limit = (int32_t)int_arg(a, "deliver_limit", KQ_PUBLISH_MAX_DELIVER_LIMIT, I32),
        .now_sec = now,
    };
    if (a->err[0])
        return false;
    ma->set = bindings_arg(a, ma->m.topic);
    if (ma->set)
        ma->m.binds = kq_binding_set_topic(ma->set, ma->m.topic, &ma->m.n_binds);
    return ma->set != NULL;
}

/* ---- route: {topic, message_type, bindings} -> {groups = [{group, persistent, watermark}]}
 * route_message: {the fields of m, bindings} -> the same ---------------------------------- */

static cJSON *call_route(struct kq_policy *p, struct args *a)
{
    const char *topic = str_arg(a, "topic", "selftest");
    const char *type = str_arg(a, "message_type", "");
    if (a->err[0])
        return NULL;
    struct kq_binding_set *set = bindings_arg(a, topic);
    if (!set)
        return NULL;
    struct kq_route *r = malloc(KQ_POLICY_MAX_ROUTES * sizeof *r);
    size_t n = r ? kq_policy_route(p, set, topic, type, r, KQ_POLICY_MAX_ROUTES) : 0;
    cJSON *o = r ? routes_json(r, n) : NULL;
    free(r);
    kq_binding_set_free(set);
    return o;
}

static cJSON *call_route_message(struct kq_policy *p, struct args *a)
{
    struct message_args ma;
    if (!message_arg(a, &ma, false))
        return NULL;
    struct kq_route *r = malloc(KQ_POLICY_MAX_ROUTES * sizeof *r);
    size_t n = r ? kq_policy_route_message(p, ma.set, &ma.m, r, KQ_POLICY_MAX_ROUTES) : 0;
    cJSON *o = r ? routes_json(r, n) : NULL;
    free(r);
    kq_binding_set_free(ma.set);
    return o;
}

/* ---- retry: {attempts, reason, deliver_limit, expired_time, now} -> {verdict = "retry",
 * delay_ms} | {verdict = "dead", reason} ------------------------------------------------- */

static cJSON *call_retry(struct kq_policy *p, struct args *a)
{
    int32_t attempts = (int32_t)int_arg(a, "attempts", 0, I32);
    const char *reason = str_arg(a, "reason", "nack");
    int32_t limit = (int32_t)int_arg(a, "deliver_limit", KQ_PUBLISH_MAX_DELIVER_LIMIT, I32);
    int64_t expired = int_arg(a, "expired_time", 0, TIME);
    int64_t now = int_arg(a, "now", kq_now_sec(), TIME);
    if (a->err[0])
        return NULL;
    struct kq_retry_verdict v;
    kq_policy_retry(p, attempts, reason, limit, expired, now, &v);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "verdict", v.dead ? "dead" : "retry");
    if (v.dead)
        cJSON_AddStringToObject(o, "reason", v.reason);
    else
        cJSON_AddNumberToObject(o, "delay_ms", (double)v.delay_ms);
    return o;
}

/* ---- dead: {the fields of m, attempts, reason, bindings} -> {action = "dlq"} |
 * {action = "drop"} | {action = "handover", groups = ["name", ...]} ---------------------- */

static cJSON *call_dead(struct kq_policy *p, struct args *a)
{
    struct message_args ma;
    if (!message_arg(a, &ma, false))
        return NULL;
    int32_t attempts = (int32_t)int_arg(a, "attempts", ma.m.deliver_limit, I32);
    const char *reason = str_arg(a, "reason", "deliver limit reached");
    struct kq_route *r = a->err[0] ? NULL : malloc(KQ_POLICY_MAX_ROUTES * sizeof *r);
    if (!r) {
        kq_binding_set_free(ma.set);
        return NULL;
    }
    size_t n = 0;
    enum kq_dead_action act =
        kq_policy_dead(p, ma.set, &ma.m, attempts, reason, r, KQ_POLICY_MAX_ROUTES, &n);
    static const char *const actions[] = {"dlq", "drop", "handover"};
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "action", actions[act]);
    if (act == KQ_DEAD_HANDOVER) {
        cJSON *g = cJSON_AddArrayToObject(o, "groups");
        for (size_t i = 0; i < n; i++)
            cJSON_AddItemToArray(g, cJSON_CreateString(r[i].group));
    }
    free(r);
    kq_binding_set_free(ma.set);
    return o;
}

/* ---- flow.intake: {permits} and flow.group: {group, topic, inflight, backlog,
 * recent_failures, watermark} -> {rate, burst, window} ----------------------------------- */

static cJSON *call_flow_intake(struct kq_policy *p, struct args *a)
{
    int permits = (int)int_arg(a, "permits", 20000, I32);
    if (a->err[0])
        return NULL;
    struct kq_flow_limits l;
    kq_policy_flow_intake(p, permits, &l);
    return limits_json(&l);
}

static cJSON *call_flow_group(struct kq_policy *p, struct args *a)
{
    const char *group = str_arg(a, "group", "selftest");
    const char *topic = str_arg(a, "topic", "selftest");
    struct kq_flow_figures f = {
        .inflight = (uint32_t)int_arg(a, "inflight", 0, U32),
        .backlog = (uint64_t)int_arg(a, "backlog", 0, COUNT),
        .recent_failures = (uint32_t)int_arg(a, "recent_failures", 0, U32),
        .watermark = (int)int_arg(a, "watermark", 0, I32),
    };
    if (a->err[0])
        return NULL;
    struct kq_flow_limits l;
    kq_policy_flow_group(p, group, topic, &f, &l);
    return limits_json(&l);
}

/* ---- publish: {the fields of m, peer, bindings (the groups `groups` may name), now} ->
 * {action = "accept"} | {action = "reject", reason} | {action = "change", properties,
 * expired_time, deliver_limit, delay_ms, groups} ----------------------------------------- */

static cJSON *call_publish(struct kq_policy *p, struct args *a)
{
    struct message_args ma;
    if (!message_arg(a, &ma, true))
        return NULL;
    struct kq_publish_verdict v;
    kq_policy_publish(p, &ma.m, &v);
    cJSON *o = cJSON_CreateObject();
    static const char *const actions[] = {"accept", "reject", "change"};
    cJSON_AddStringToObject(o, "action", actions[v.action]);
    if (v.action == KQ_PUBLISH_REJECT)
        cJSON_AddStringToObject(o, "reason", v.reason);
    if (v.action == KQ_PUBLISH_CHANGE) {
        cJSON *out = cJSON_AddObjectToObject(o, "properties");
        for (size_t i = 0; i < v.n_properties; i++)
            cJSON_AddStringToObject(out, v.properties[i].key, v.properties[i].value);
        cJSON_AddNumberToObject(o, "expired_time", (double)v.expired_time);
        cJSON_AddNumberToObject(o, "deliver_limit", v.deliver_limit);
        if (v.delay_ms >= 0)
            cJSON_AddNumberToObject(o, "delay_ms", (double)v.delay_ms);
        if (v.n_groups) {
            cJSON *g = cJSON_AddArrayToObject(o, "groups");
            for (size_t i = 0; i < v.n_groups; i++)
                cJSON_AddItemToArray(g, cJSON_CreateString(v.groups[i]));
        }
    }
    kq_binding_set_free(ma.set); /* after the answer: v.groups point into it */
    return o;
}

static bool hook_stats(const struct kq_policy *p, const char *name,
                       struct kq_policy_hook_stats *out);

/* ---- connect: {group, secret_ok, peer_ip, peer_port, warmup, connections} ->
 * {action = "accept"} | {action = "reject", reason} -------------------------------------- */

static cJSON *call_connect(struct kq_policy *p, struct args *a)
{
    struct kq_connect_view c = {
        .group = str_arg(a, "group", "selftest-consumer"),
        .secret_ok = bool_arg(a, "secret_ok", true),
        .peer_ip = str_arg(a, "peer_ip", "127.0.0.1"),
        .peer_port = (int)int_arg(a, "peer_port", 40000, 0, 65535),
        .warmup = (int32_t)int_arg(a, "warmup", 0, I32),
        .connections = (uint32_t)int_arg(a, "connections", 0, U32),
    };
    if (a->err[0])
        return NULL;
    struct kq_policy_hook_stats before = {0}, after = {0};
    hook_stats(p, "connect", &before);
    char reason[KQ_POLICY_MAX_REJECT_REASON];
    bool ok = kq_policy_connect(p, &c, reason, sizeof reason);
    hook_stats(p, "connect", &after);
    if (before.loaded && !c.secret_ok && after.rejects == before.rejects)
        snprintf(a->note, sizeof a->note,
                 "secret_ok is false: refused with the built-in "
                 "feedback whatever on_connect answers (the hook can only tighten)");
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "action", ok ? "accept" : "reject");
    if (!ok)
        cJSON_AddStringToObject(o, "reason", reason);
    return o;
}
/* ---- the table ---------------------------------------------------------------------------- */

static const struct {
    const char *name; /* as in kq_policy_stats */
    cJSON *(*run)(struct kq_policy *p, struct args *a);
    const char *fallback; /* what answers when the hook is not defined or fails */
} CALLS[] = {
    {"route", call_route, "the built-in answer"},
    {"retry", call_retry, "the built-in answer"},
    {"flow.intake", call_flow_intake, "the built-in answer"},
    {"flow.group", call_flow_group, "the built-in answer"},
    {"publish", call_publish, "the built-in answer (accept as is)"},
    {"route_message", call_route_message, "route's answer (the built-in one without route)"},
    {"connect", call_connect, "the built-in answer (accept iff secret_ok)"},
    {"dead", call_dead, "the built-in answer (dlq)"},
};
#define N_CALLS (sizeof CALLS / sizeof CALLS[0])

const char *kq_policy_call_name(size_t i) { return i < N_CALLS ? CALLS[i].name : NULL; }

static bool hook_stats(const struct kq_policy *p, const char *name,
                       struct kq_policy_hook_stats *out)
{
    struct kq_policy_hook_stats all[16];
    size_t n = kq_policy_stats(p, all, 16);
    for (size_t i = 0; i < n; i++)
        if (strcmp(all[i].name, name) == 0) {
            *out = all[i];
            return true;
        }
    return false;
}

cJSON *kq_policy_call(struct kq_policy *p, const char *name, const cJSON *args,
                      const char **problem, char *err, size_t errlen)
{
    static _Thread_local char why[400];
    err[0] = 0;
    if (problem)
        *problem = NULL;
    size_t i = 0;
    while (i < N_CALLS && strcmp(CALLS[i].name, name) != 0)
        i++;
    if (i == N_CALLS) {
        size_t o = (size_t)snprintf(err, errlen, "unknown hook '%s' (hooks:", name);
        for (size_t k = 0; k < N_CALLS && o < errlen; k++)
            o += (size_t)snprintf(err + o, errlen - o, " %s", CALLS[k].name);
        if (o < errlen)
            snprintf(err + o, errlen - o, ")");
        return NULL;
    }
    if (args && !cJSON_IsObject(args)) {
        snprintf(err, errlen, "the arguments must be an object");
        return NULL;
    }
    struct kq_policy_hook_stats before = {0}, after = {0};
    hook_stats(p, name, &before);
    struct args a = {.o = args, .err = err, .errlen = errlen};
    cJSON *answer = CALLS[i].run(p, &a);
    if (answer)
        refuse_unknown(&a, name);
    if (answer && err[0]) {
        cJSON_Delete(answer);
        answer = NULL;
    }
    if (!answer) {
        if (!err[0])
            snprintf(err, errlen, "out of memory");
        return NULL;
    }
    hook_stats(p, name, &after);
    if (!before.loaded)
        snprintf(why, sizeof why, "%s is not defined by the policies: %s", name, CALLS[i].fallback);
    else if (after.errors > before.errors)
        snprintf(why, sizeof why, "%s", kq_policy_last_failure(p));
    else if (after.fallbacks > before.fallbacks)
        snprintf(why, sizeof why, "%s is switched off for this subject (last failure: %s)", name,
                 kq_policy_last_failure(p));
    else
        snprintf(why, sizeof why, "%s", a.note);
    if (problem && why[0])
        *problem = why;
    return answer;
}
