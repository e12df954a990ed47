/* The per-message hooks (on_publish, route_message) for many messages with one entry into Lua.
 *
 * Why: one call per message pays a protected call, the guard around it, C entering Lua twice
 * (builder, hook) and the builder's trace exit, every time: most of what a cheap hook costs
 * (docs/BENCHMARKS.md, issue #15). Here a loop of ours in Lua (marshal.c: publish_batch,
 * route_batch) calls `step`, a C function, between messages: step reads the answer of the
 * message just called and settles it, then hands the loop the next message's arguments. The
 * protected call, and the entry into Lua, are paid once per batch.
 *
 * Each message is still a call of its own, answered exactly as the one-message functions in
 * policy.c and hooks_message.c answer it:
 * - budgets: step starts a new run of the budget for every message (kq_lua_budget_next), so
 *   each has the whole instruction and time budget, and the watchdog sees each as a call;
 * - failures: an error, a stopped run or an invalid answer is the failing message's alone.
 *   An error unwinds the batch's protected call: C settles the message it was in (strike,
 *   built-in answer) and runs the messages after it in a new protected call;
 * - strikes: a message whose subject is switched off is not called (built-in answer), and a
 *   subject switched off by a message of the batch is off for the messages after it;
 * - statistics: calls, errors, fallbacks, time and rejects per message.
 * The built-in answers of route_message (kq_policy_route, which may call `route` in Lua) are
 * given after the batch's protected call returns: Lua runs never nest. */
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "policy/generation.h"

struct kq_policy_batch {
    struct kq_policy *p;
    enum hook_id id;
    const struct kq_publish_view *ms;
    size_t n;
    size_t cur;       /* the message being called, or the next one */
    bool in_hook;     /* ms[cur]'s arguments were handed to the loop: an error is its own */
    uint64_t started; /* kq_mono_us() when the call of ms[cur] began */
    /* on_publish */
    kq_publish_verdict_fn *apply;
    void *apply_ud;
    struct publish_call pc;
    /* route_message */
    const struct kq_binding_set *set;
    kq_route_answer_fn *answer;
    void *answer_ud;
    struct route_call rc;
    bool *builtin; /* per message: answered by kq_policy_route after the batch */
    size_t first;  /* ms[0] is the caller's message `first` (the answers' index) */
};

/* ---- the two hooks' parts ------------------------------------------------------------- */

/* Sets up the call of ms[cur]; false when its hook is switched off for it (answered). */
static bool publish_start(struct kq_policy *p, struct kq_policy_batch *bt)
{
    const struct kq_publish_view *m = &bt->ms[bt->cur];
    bt->pc = (struct publish_call){
        .c = {.p = p, .id = H_PUBLISH, .subject = {m->topic, m->message_type}}, .m = m};
    if (kq_policy_hook_live(p, &bt->pc.c))
        return true;
    p->hooks[H_PUBLISH].fallbacks++; /* switched off for this (topic, type): as is */
    struct kq_publish_verdict v = {.action = KQ_PUBLISH_ACCEPT, .delay_ms = -1};
    bt->apply(bt->apply_ud, bt->cur, &v);
    return false;
}

static void publish_finish(struct kq_policy *p, struct kq_policy_batch *bt, enum outcome o)
{
    struct kq_publish_verdict v = {.action = KQ_PUBLISH_ACCEPT, .delay_ms = -1};
    if (kq_policy_settle(&bt->pc.c, o) && !bt->pc.c.use_default) {
        v = bt->pc.v;
        if (v.action == KQ_PUBLISH_REJECT)
            p->hooks[H_PUBLISH].rejects++;
    }
    bt->apply(bt->apply_ud, bt->cur, &v);
}

static bool route_start(struct kq_policy *p, struct kq_policy_batch *bt)
{
    const struct kq_publish_view *m = &bt->ms[bt->cur];
    size_t n = 0;
    const struct kq_binding *binds = bt->set ? kq_binding_set_topic(bt->set, m->topic, &n) : NULL;
    bt->rc = (struct route_call){
        .c = {.p = p, .id = H_ROUTE_MESSAGE, .subject = {m->topic, m->message_type}},
        .binds = binds,
        .n = n,
        .topic = m->topic,
        .type = m->message_type,
        .out = p->scratch,
        .max = KQ_POLICY_MAX_ROUTES};
    if (kq_policy_hook_live(p, &bt->rc.c))
        return true;
    p->hooks[H_ROUTE_MESSAGE].fallbacks++; /* switched off for this (topic, type) */
    bt->builtin[bt->cur] = true;
    return false;
}

static void route_finish(struct kq_policy *p, struct kq_policy_batch *bt, enum outcome o)
{
    if (kq_policy_settle(&bt->rc.c, o) && !bt->rc.c.use_default) {
        kq_policy_note_dropped(p, &bt->rc, "route_message");
        bt->answer(bt->answer_ud, bt->first + bt->cur, p->scratch, bt->rc.found);
    } else {
        bt->builtin[bt->cur] = true;
    }
}

static struct call *current_call(struct kq_policy_batch *bt)
{
    return bt->id == H_PUBLISH ? &bt->pc.c : &bt->rc.c;
}

/* ---- the loop's step -------------------------------------------------------------------- */

/* The answer of ms[cur] (ended at `now`) settled and handed on. */
static void finish(struct kq_policy *p, struct kq_policy_batch *bt, enum outcome o, uint64_t now)
{
    uint64_t dt = now - bt->started;
    p->hooks[bt->id].calls++;
    p->hooks[bt->id].total_us += dt;
    struct call *c = current_call(bt);
    if (o == CALL_OK && c->why[0])
        o = CALL_FAILED;
    if (o == CALL_OK && dt > (uint64_t)KQ_POLICY_CALL_MS * 1000) {
        snprintf(c->why, sizeof c->why, "slow call: %llu us (budget %d ms)",
                 (unsigned long long)dt, KQ_POLICY_CALL_MS);
        o = CALL_SLOW;
    }
    if (bt->id == H_PUBLISH)
        publish_finish(p, bt, o);
    else
        route_finish(p, bt, o);
    bt->in_hook = false;
    bt->cur++;
}

/* step(answers of the previous message) -> the next message's builder arguments, or none. */
static int batch_step(lua_State *L)
{
    struct kq_policy *p = lua_touserdata(L, lua_upvalueindex(1));
    struct kq_policy_batch *bt = p->batch;
    uint64_t now = 0;
    if (bt->in_hook) {
        if (bt->id == H_PUBLISH)
            kq_policy_read_publish_answer(L, &bt->pc);
        else
            kq_policy_read_route_message_answer(L, &bt->rc);
        now = kq_mono_us();
        finish(p, bt, CALL_OK, now);
    }
    while (bt->cur < bt->n &&
           !(bt->id == H_PUBLISH ? publish_start(p, bt) : route_start(p, bt)))
        bt->cur++;
    if (bt->cur == bt->n)
        return 0;
    bt->started =
        kq_lua_budget_next(L, &p->budget, KQ_POLICY_CALL_INSTRUCTIONS, KQ_POLICY_CALL_MS, now);
    bt->in_hook = true;
    lua_settop(L, 0);
    const struct kq_publish_view *m = &bt->ms[bt->cur];
    if (bt->id == H_PUBLISH) {
        kq_policy_push_publish_args(L, p, m);
        return 9;
    }
    kq_policy_push_route_args(L, p, bt->set, m, bt->rc.binds, bt->rc.n);
    return 10;
}

void kq_policy_batch_init(lua_State *L, struct kq_policy *p)
{
    lua_pushlightuserdata(L, p);
    lua_pushcclosure(L, batch_step, 1);
    p->batch_step = luaL_ref(L, LUA_REGISTRYINDEX);
}

static int batch_protected(lua_State *L)
{
    struct kq_policy_batch *bt = lua_touserdata(L, 1);
    struct kq_policy *p = bt->p;
    lua_settop(L, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, bt->id == H_PUBLISH ? p->batch_publish : p->batch_route);
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->batch_step);
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->hooks[bt->id].ref);
    lua_call(L, 2, 0);
    return 0;
}

/* Runs the batch from bt->cur to its end, a protected call per failing message. */
static void run(struct kq_policy *p, struct kq_policy_batch *bt)
{
    p->batch = bt;
    while (bt->cur < bt->n) {
        bt->in_hook = false;
        kq_lua_budget_begin_traffic(p->L, &p->budget, KQ_POLICY_CALL_INSTRUCTIONS,
                                    KQ_POLICY_CALL_MS);
        int rc = kq_policy_pcall(p, batch_protected, bt);
        kq_lua_budget_end(p->L, &p->budget);
        if (rc == 0 || !bt->in_hook) { /* done (an error outside any message: none left) */
            lua_settop(p->L, 0);
            break;
        }
        struct call *c = current_call(bt);
        if (rc == LUA_ERRMEM)
            snprintf(c->why, sizeof c->why, "out of memory (limit %zu MiB)",
                     KQ_POLICY_MEMORY_BYTES >> 20);
        else if (p->budget.tripped)
            snprintf(c->why, sizeof c->why,
                     "stopped: %s (traffic budget per call: %ld instructions / %d ms)",
                     p->budget.trip_why, KQ_POLICY_CALL_INSTRUCTIONS, KQ_POLICY_CALL_MS);
        else
            snprintf(c->why, sizeof c->why, "%s",
                     lua_isstring(p->L, -1) ? lua_tostring(p->L, -1)
                                            : "error object is not a string");
        lua_settop(p->L, 0);
        lua_gc(p->L, LUA_GCCOLLECT, 0); /* give back what a runaway took */
        finish(p, bt, CALL_FAILED, kq_mono_us());
    }
    p->batch = NULL;
    /* a message the loop never reached (an error outside any message) is answered below */
}

/* A batch asked for while one runs (a callback calling back into the policy): a bug. */
static bool nested(struct kq_policy *p, const char *hook)
{
    if (!p->batch)
        return false;
    KQ_LOG_RATELIMITED(KQ_LOG_ERROR, "policy",
                       "%s batch asked for inside another batch: answered by the built-in "
                       "policy",
                       hook);
    return true;
}

void kq_policy_publish_batch(struct kq_policy *p, const struct kq_publish_view *ms, size_t n,
                             kq_publish_verdict_fn *apply, void *ud)
{
    struct kq_policy_batch bt = {
        .p = p, .id = H_PUBLISH, .ms = ms, .n = n, .apply = apply, .apply_ud = ud};
    if (kq_policy_has_publish(p) && !nested(p, "on_publish"))
        run(p, &bt);
    for (; bt.cur < n; bt.cur++) { /* no hook: accepted as is */
        struct kq_publish_verdict v = {.action = KQ_PUBLISH_ACCEPT, .delay_ms = -1};
        apply(ud, bt.cur, &v);
    }
}

void kq_policy_route_message_batch(struct kq_policy *p, const struct kq_binding_set *set,
                                   const struct kq_publish_view *ms, size_t n,
                                   kq_route_answer_fn *answer, void *ud)
{
    if (!p) { /* a bug of the caller's: every broker has a generation */
        KQ_LOG_RATELIMITED(KQ_LOG_ERROR, "policy", "route_message batch without a policy");
        for (size_t i = 0; i < n; i++)
            answer(ud, i, NULL, 0);
        return;
    }
    bool hook = kq_policy_has_route_message(p) && !nested(p, "route_message");
    for (size_t first = 0; first < n; first += KQ_POLICY_MAX_BATCH) {
        bool builtin[KQ_POLICY_MAX_BATCH] = {false};
        size_t k = n - first < KQ_POLICY_MAX_BATCH ? n - first : KQ_POLICY_MAX_BATCH;
        struct kq_policy_batch bt = {.p = p,
                                     .id = H_ROUTE_MESSAGE,
                                     .ms = ms + first,
                                     .n = k,
                                     .set = set,
                                     .answer = answer,
                                     .answer_ud = ud,
                                     .builtin = builtin,
                                     .first = first};
        if (hook)
            run(p, &bt);
        for (size_t i = 0; i < k; i++)
            if (builtin[i] || i >= bt.cur) {
                const struct kq_publish_view *m = &ms[first + i];
                size_t found = kq_policy_route(p, set, m->topic, m->message_type,
                                               p->builtin_routes, KQ_POLICY_MAX_ROUTES);
                answer(ud, first + i, p->builtin_routes, found);
            }
    }
}
