/* Policy generations: one sandboxed LuaJIT state per load, hooks resolved once into registry
 * refs, every call guarded, every result validated, the C default on any failure.
 *
 * Guards (sandbox/sandbox.h, sandbox/lua_budget.h). The state runs with the JIT off: hooks are short (routing is
 * memoised, retry and flow are rare), and in the interpreter the instruction-count hook
 * fires reliably, so a runaway loop is stopped after KQ_POLICY_CALL_INSTRUCTIONS or
 * KQ_POLICY_CALL_MS (count hooks do not fire inside JIT-compiled loops). Lua patterns are
 * charged their worst case against the same instruction budget before they run (a
 * backtracking pattern is refused, not run for minutes); kq.regex_match is bounded by
 * PCRE2's match limit; a huge string.rep by the memory cap. Arguments are marshalled and
 * results read inside a protected call (marshal.c), so an out-of-memory error cannot escape.
 * A hook that fails or overruns KQ_POLICY_MAX_STRIKES times in a row for one subject (route:
 * a topic and messageType) is off for that subject until the next load (strikes.c); a
 * failure changes nothing for other subjects. */
#include <dirent.h>
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <openssl/evp.h>
#include <uthash.h>

#include "core/clock.h"
#include "core/log.h"
#include "policy/generation.h"
#include "policy/internal.h"
#include "sandbox/sandbox.h"

#define LOAD_INSTRUCTIONS 10000000L /* running a policy file's top level */
#define LOAD_MS 1000
#define SELFTEST_MS 250 /* self-tests run on a cold state, maybe a busy host */
#define MAX_FILE_BYTES (1 << 20)
#define MEMO_MAX 16384 /* (topic, type) answers kept per generation */
#define MEMO_KEY_MAX 512

/* subject: the names of the two strings a call's strikes are kept by (NULL: one subject) */
static const struct {
    const char *file, *key, *name, *subject[2];
} HOOKS[H_COUNT] = {
    [H_ROUTE] = {"routing.lua", "route", "route", {"topic", "type"}},
    [H_RETRY] = {"retry.lua", "retry", "retry", {NULL, NULL}},
    [H_INTAKE] = {"flow.lua", "intake", "flow.intake", {NULL, NULL}},
    [H_GROUP] = {"flow.lua", "group", "flow.group", {"group", "topic"}},
    [H_PUBLISH] = {"publish.lua", "on_publish", "publish", {"topic", "type"}},
    [H_ROUTE_MESSAGE] = {"routing.lua", "route_message", "route_message", {"topic", "type"}},
    [H_CONNECT] = {"auth.lua", "on_connect", "connect", {"group", NULL}},
    [H_DEAD] = {"retry.lua", "on_dead", "dead", {"topic", "type"}},
};
static const char *const FILES[] = {"routing.lua", "flow.lua", "retry.lua", "publish.lua",
                                    "auth.lua"};
struct memo {
    char *key; /* topic '\0' type */
    size_t key_len;
    size_t n;
    struct kq_route *routes;
    UT_hash_handle hh;
};

/* ---- sandbox ---------------------------------------------------------------------------- */

static int l_regex_match(lua_State *L)
{
    struct kq_policy *p = lua_touserdata(L, lua_upvalueindex(1));
    const char *pattern = luaL_checkstring(L, 1);
    size_t len;
    const char *subject = luaL_checklstring(L, 2, &len);
    /* the backtracking is bounded by PCRE2's match limit; the scan is charged per byte */
    kq_lua_budget_charge(L, 1 + (double)len / 16, "kq.regex_match", NULL);
    char why[128];
    int rc = kq_regex_match(p->rc, pattern, subject, why, sizeof why);
    lua_pushboolean(L, rc == 1);
    if (rc >= 0)
        return 1;
    lua_pushstring(L, why); /* false, reason: callers may tell a bad pattern from a miss */
    return 2;
}

static int l_strict_index(lua_State *L)
{
    const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?";
    return luaL_error(L,
                      "undefined global '%s' (the sandbox has string, table, math, bit "
                      "and kq)",
                      k);
}

static int l_strict_newindex(lua_State *L)
{
    const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?";
    return luaL_error(L, "assignment to global '%s' (policies keep no globals: use local)", k);
}

/* Pushes a fresh environment for one policy file: the sandbox's (sandbox.h, with bit) and
 * the kq helpers; reads of unknown globals and writes of any global raise errors. */
static void push_env(lua_State *L, struct kq_policy *p)
{
    kq_sandbox_push_env(L, true);
    lua_newtable(L);
    lua_pushlightuserdata(L, p);
    lua_pushcclosure(L, l_regex_match, 1);
    lua_setfield(L, -2, "regex_match");
    kq_hooks_add_helpers(L, p);
    kq_policy_add_changes(L, p);
    lua_setfield(L, -2, "kq");
    lua_newtable(L);
    lua_pushcfunction(L, l_strict_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_strict_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
}

/* ---- loading ---------------------------------------------------------------------------- */

struct file_load {
    struct kq_policy *p;
    const char *path, *file, *src;
    size_t len;
    char *err;
    size_t errlen;
};

static bool file_has_hook(const char *file, const char *key, enum hook_id *id)
{
    for (int i = 0; i < H_COUNT; i++)
        if (strcmp(HOOKS[i].file, file) == 0 && strcmp(HOOKS[i].key, key) == 0) {
            *id = (enum hook_id)i;
            return true;
        }
    return false;
}

static void expected_hooks(const char *file, char *buf, size_t len)
{
    buf[0] = 0;
    for (int i = 0; i < H_COUNT; i++)
        if (strcmp(HOOKS[i].file, file) == 0)
            snprintf(buf + strlen(buf), len - strlen(buf), "%s%s", buf[0] ? ", " : "",
                     HOOKS[i].key);
}

/* Runs inside lua_cpcall: compile, run the top level under the load guard, take the refs. */
static int load_protected(lua_State *L)
{
    struct file_load *fl = lua_touserdata(L, 1);
    struct kq_policy *p = fl->p;
    lua_settop(L, 0);
    if (kq_sandbox_load_text(L, fl->src, fl->len, fl->path) != 0) {
        const char *m = lua_tostring(L, -1);
        snprintf(fl->err, fl->errlen, "%s", m ? m : "cannot compile");
        return 0;
    }
    push_env(L, p);
    lua_setfenv(L, -2);
    kq_lua_budget_begin(L, &p->budget, LOAD_INSTRUCTIONS, LOAD_MS);
    int rc = lua_pcall(L, 0, 1, 0);
    if (rc != 0) {
        const char *m = lua_tostring(L, -1);
        if (rc == LUA_ERRMEM)
            snprintf(fl->err, fl->errlen, "%s: over the memory limit (%zu MiB)", fl->path,
                     KQ_POLICY_MEMORY_BYTES >> 20);
        else if (m && strncmp(m, fl->path, strlen(fl->path)) == 0)
            snprintf(fl->err, fl->errlen, "%s", m);
        else
            snprintf(fl->err, fl->errlen, "%s: %s", fl->path, m ? m : "error");
        return 0;
    }
    if (!lua_istable(L, 1)) {
        snprintf(fl->err, fl->errlen, "%s: must return a table of hook functions (got %s)",
                 fl->path, luaL_typename(L, 1));
        return 0;
    }
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        enum hook_id id;
        char want[64];
        expected_hooks(fl->file, want, sizeof want);
        if (lua_type(L, -2) != LUA_TSTRING || !file_has_hook(fl->file, lua_tostring(L, -2), &id)) {
            snprintf(fl->err, fl->errlen,
                     "%s: unknown hook '%s' (expected: %s; keep helpers "
                     "local)",
                     fl->path,
                     lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : luaL_typename(L, -2),
                     want);
            return 0;
        }
        if (!lua_isfunction(L, -1)) {
            snprintf(fl->err, fl->errlen, "%s: %s must be a function (got %s)", fl->path,
                     HOOKS[id].key, luaL_typename(L, -1));
            return 0;
        }
        lua_pushvalue(L, -1);
        p->hooks[id].ref = luaL_ref(L, LUA_REGISTRYINDEX);
        lua_pop(L, 1);
    }
    return 0;
}

static int read_whole(const char *path, char **out, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT)
            return 1; /* no such policy: the default answers */
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -EINVAL;
    }
    char *buf = malloc(MAX_FILE_BYTES + 1);
    size_t n = buf ? fread(buf, 1, MAX_FILE_BYTES + 1, f) : 0;
    bool failed = !buf || ferror(f);
    fclose(f);
    if (failed || n > MAX_FILE_BYTES) {
        free(buf);
        snprintf(err, errlen, "%s: %s", path, failed ? "cannot read" : "larger than 1 MiB");
        return -EINVAL;
    }
    *out = buf;
    *len = n;
    return 0;
}

/* Which file is live: its sha256 and when it was loaded (/stat, /metrics, the load log). */
static int remember_file(struct kq_policy *p, const char *file, const char *src, size_t len)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (p->n_files == KQ_POLICY_MAX_FILES || !EVP_Digest(src, len, md, &n, EVP_sha256(), NULL))
        return -EINVAL;
    struct kq_policy_file *f = &p->files[p->n_files++];
    f->file = file;
    for (unsigned int i = 0; i < n && 2 * i + 2 < sizeof f->sha256; i++)
        snprintf(f->sha256 + 2 * i, 3, "%02x", md[i]);
    f->loaded_at_ms = kq_now_ms();
    return 0;
}

static int load_file(struct kq_policy *p, const char *dir, const char *file, char *err,
                     size_t errlen)
{
    char path[1024];
    char *src = NULL;
    size_t len = 0;
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, file) >= sizeof path) {
        snprintf(err, errlen, "%s: path too long", dir);
        return -EINVAL;
    }
    int rc = read_whole(path, &src, &len, err, errlen);
    if (rc)
        return rc > 0 ? 0 : rc;
    if (remember_file(p, file, src, len) != 0) {
        free(src);
        snprintf(err, errlen, "%s: cannot compute its sha256", path);
        return -EINVAL;
    }
    struct file_load fl = {p, path, file, src, len, err, errlen};
    err[0] = 0;
    if (lua_cpcall(p->L, load_protected, &fl) != 0)
        snprintf(err, errlen, "%s: %s", path, lua_tostring(p->L, -1));
    lua_settop(p->L, 0);
    free(src);
    return err[0] ? -EINVAL : 0;
}

/* ---- calls ------------------------------------------------------------------------------ */

/* Runs fn under the guard. */
static enum outcome invoke(struct call *c, kq_policy_fn fn, bool selftest)
{
    struct kq_policy *p = c->p;
    struct hook *h = &p->hooks[c->id];
    c->why[0] = 0;
    c->use_default = false;
    /* traffic: without the count hook when the watchdog watches this thread (lua_budget.h) */
    uint64_t t0 = (selftest ? kq_lua_budget_begin : kq_lua_budget_begin_traffic)(
        p->L, &p->budget, KQ_POLICY_CALL_INSTRUCTIONS, selftest ? SELFTEST_MS : KQ_POLICY_CALL_MS);
    int rc = kq_policy_pcall(p, fn, c);
    kq_lua_budget_end(p->L, &p->budget);
    uint64_t dt = kq_mono_us() - t0;
    h->calls++;
    h->total_us += dt;
    if (rc != 0) {
        if (rc == LUA_ERRMEM)
            snprintf(c->why, sizeof c->why, "out of memory (limit %zu MiB)",
                     KQ_POLICY_MEMORY_BYTES >> 20);
        else if (p->budget.tripped)
            snprintf(c->why, sizeof c->why,
                     "stopped: %s (%s budget per call: %ld "
                     "instructions / %d ms)",
                     p->budget.trip_why, selftest ? "self-test" : "traffic",
                     KQ_POLICY_CALL_INSTRUCTIONS, selftest ? SELFTEST_MS : KQ_POLICY_CALL_MS);
        else
            snprintf(c->why, sizeof c->why, "%s",
                     lua_isstring(p->L, -1) ? lua_tostring(p->L, -1)
                                            : "error object is not a string");
        lua_settop(p->L, 0);
        lua_gc(p->L, LUA_GCCOLLECT, 0); /* give back what a runaway took */
        return CALL_FAILED;
    }
    lua_settop(p->L, 0);
    if (c->why[0])
        return CALL_FAILED;
    if (!selftest && dt > (uint64_t)KQ_POLICY_CALL_MS * 1000) {
        /* finished, but slowly (a long C call the count hook cannot see): use the answer,
         * count the overrun towards switching the hook off */
        snprintf(c->why, sizeof c->why, "slow call: %llu us (budget %d ms)", (unsigned long long)dt,
                 KQ_POLICY_CALL_MS);
        return CALL_SLOW;
    }
    return CALL_OK;
}

/* " topic=trade type=pay-1" for the log, "" for hooks without a subject. */
static void describe(const struct call *c, char *buf, size_t len)
{
    buf[0] = 0;
    for (int i = 0; i < 2 && HOOKS[c->id].subject[i]; i++)
        snprintf(buf + strlen(buf), len - strlen(buf), " %s=%.100s", HOOKS[c->id].subject[i],
                 c->subject[i] ? c->subject[i] : "");
}

/* Bookkeeping after a run-time call. Returns true when the caller may use the hook's answer.
 * A failure counts a strike for the call's subject only. */
static bool settle(struct call *c, enum outcome o)
{
    struct kq_policy *p = c->p;
    struct hook *h = &p->hooks[c->id];
    if (o == CALL_OK) {
        kq_strikes_ok(p->strikes, c->id, c->subject[0], c->subject[1]);
        return true;
    }
    h->errors++;
    bool off, over;
    int n = kq_strikes_fail(p->strikes, c->id, c->subject[0], c->subject[1], &off, &over);
    char who[240];
    describe(c, who, sizeof who);
    if (over)
        KQ_LOG_RATELIMITED(KQ_LOG_WARN, "policy",
                           "hook strikes: %d subjects tracked, starting "
                           "over (subjects switched off get their hooks back)",
                           KQ_POLICY_MAX_SUBJECTS);
    /* a long reason is cut to the buffer on purpose: the log line and /stat show its start */
    if (snprintf(p->last_failure, sizeof p->last_failure, "hook=%s%s failed: %s strike=%d/%d",
                 HOOKS[c->id].name, who, c->why, n < 0 ? 0 : n, KQ_POLICY_MAX_STRIKES) < 0)
        p->last_failure[0] = '\0';
    uint64_t key = kq_strikes_key(c->id, c->subject[0], c->subject[1]);
    KQ_LOG_RATELIMITED_BY(KQ_LOG_WARN, "policy", &key, sizeof key, "%s", p->last_failure);
    if (off)
        KQ_LOG_RATELIMITED(KQ_LOG_WARN, "policy",
                           "hook=%s%s switched off until the next reload "
                           "after %d failures in a row (last: %s); the built-in answer is used "
                           "%s",
                           HOOKS[c->id].name, who, KQ_POLICY_MAX_STRIKES, c->why,
                           HOOKS[c->id].subject[0] ? "for this subject only" : "for every call");
    if (o == CALL_SLOW)
        return true;
    h->fallbacks++;
    return false;
}

/* The hook may be called for this subject (defined, not switched off for it). */
static bool hook_live(const struct kq_policy *p, const struct call *c)
{
    return p->hooks[c->id].ref != LUA_NOREF &&
           !kq_strikes_disabled(p->strikes, c->id, c->subject[0], c->subject[1]);
}

static void set_number_field(lua_State *L, const char *k, double v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

/* -- route -- */

/* The group's binding that decides persistence: its first one matching by the built-in
 * rules (as the original), else its first one. NULL when the topic has no such group. */
static const struct kq_binding *group_binding(struct kq_policy *p, const struct kq_binding *b,
                                              size_t n, const char *group, const char *type)
{
    const struct kq_binding *first = NULL;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(b[i].group_id, group) != 0)
            continue;
        if (!first)
            first = &b[i];
        if (kq_policy_binding_matches(p->rc, &b[i], type))
            return &b[i];
    }
    return first;
}

bool kq_policy_read_routes(lua_State *L, int idx, struct route_call *rc, const char *what)
{
    struct kq_policy *p = rc->c.p;
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    if (!lua_istable(L, idx)) {
        snprintf(rc->c.why, sizeof rc->c.why,
                 "%s must return a list of group names or nil "
                 "(got %s)",
                 what, luaL_typename(L, idx));
        return false;
    }
    size_t len = lua_objlen(L, idx);
    for (size_t i = 1; i <= len; i++) {
        lua_rawgeti(L, idx, (int)i);
        if (lua_type(L, -1) != LUA_TSTRING) {
            snprintf(rc->c.why, sizeof rc->c.why,
                     "%s result[%zu] must be a group name "
                     "(got %s)",
                     what, i, luaL_typename(L, -1));
            return false;
        }
        const char *g = lua_tostring(L, -1);
        const struct kq_binding *b = group_binding(p, rc->binds, rc->n, g, rc->type);
        lua_pop(L, 1);
        if (!b) {
            if (rc->dropped++ == 0)
                snprintf(rc->first_dropped, sizeof rc->first_dropped, "%s", g);
            continue;
        }
        bool seen = false;
        for (size_t k = 0; k < rc->found && !seen; k++)
            seen = rc->out[k].group == b->group_id;
        if (!seen && rc->found < rc->max) {
            rc->out[rc->found].group = b->group_id; /* the set's string, not Lua's */
            rc->out[rc->found].persistent = b->persistent;
            rc->out[rc->found].watermark =
                b->watermark > 0 ? b->watermark : KQ_POLICY_DEFAULT_WATERMARK;
            rc->found++;
        }
    }
    return true;
}

static int route_protected(lua_State *L, void *arg)
{
    struct route_call *rc = arg;
    lua_rawgeti(L, LUA_REGISTRYINDEX, rc->c.p->hooks[H_ROUTE].ref);
    lua_pushstring(L, rc->topic);
    lua_pushstring(L, rc->type);
    kq_policy_push_binds(L, rc->binds, rc->n);
    lua_call(L, 3, 1);
    if (lua_isnil(L, -1))
        rc->c.use_default = true;
    else
        kq_policy_read_routes(L, -1, rc, "route");
    return 0;
}

/* -- retry -- */

struct retry_call {
    struct call c;
    int32_t attempts, deliver_limit;
    const char *reason;
    int64_t expired_time, now_sec;
    struct kq_retry_verdict *v;
};

static int retry_protected(lua_State *L, void *arg)
{
    struct retry_call *rc = arg;
    lua_rawgeti(L, LUA_REGISTRYINDEX, rc->c.p->hooks[H_RETRY].ref);
    lua_createtable(L, 0, 5);
    set_number_field(L, "attempts", rc->attempts);
    lua_pushstring(L, rc->reason);
    lua_setfield(L, -2, "reason");
    set_number_field(L, "deliver_limit", rc->deliver_limit);
    set_number_field(L, "expired_time", (double)rc->expired_time);
    set_number_field(L, "now", (double)rc->now_sec);
    lua_call(L, 1, 2);
    if (lua_isnil(L, 1)) {
        rc->c.use_default = true;
        return 0;
    }
    const char *verdict = lua_type(L, 1) == LUA_TSTRING ? lua_tostring(L, 1) : NULL;
    if (verdict && strcmp(verdict, "retry") == 0) {
        double d = lua_type(L, 2) == LUA_TNUMBER ? lua_tonumber(L, 2) : -1;
        if (!(d >= 0 && d <= (double)KQ_POLICY_RETRY_MAX_MS && d == floor(d))) {
            snprintf(rc->c.why, sizeof rc->c.why,
                     "retry: \"retry\" needs a delay in whole ms "
                     "0..%lld (got %s)",
                     (long long)KQ_POLICY_RETRY_MAX_MS,
                     lua_type(L, 2) == LUA_TNUMBER ? lua_tostring(L, 2) : luaL_typename(L, 2));
            return 0;
        }
        rc->v->dead = false;
        rc->v->delay_ms = (int64_t)d;
        rc->v->reason[0] = 0;
        return 0;
    }
    if (verdict && strcmp(verdict, "dead") == 0) {
        if (!lua_isnil(L, 2) && lua_type(L, 2) != LUA_TSTRING) {
            snprintf(rc->c.why, sizeof rc->c.why,
                     "retry: \"dead\" takes a reason string "
                     "(got %s)",
                     luaL_typename(L, 2));
            return 0;
        }
        rc->v->dead = true;
        rc->v->delay_ms = 0;
        snprintf(rc->v->reason, sizeof rc->v->reason, "%s",
                 lua_isnil(L, 2) ? "dead by retry policy" : lua_tostring(L, 2));
        return 0;
    }
    snprintf(rc->c.why, sizeof rc->c.why,
             "retry must return \"retry\", ms or \"dead\", "
             "reason or nil (got %s)",
             verdict ? verdict : luaL_typename(L, 1));
    return 0;
}

/* -- flow -- */

struct flow_call {
    struct call c;
    int permits;
    const char *group, *topic;
    const struct kq_flow_figures *f;
    struct kq_flow_limits *out; /* holds the default on entry; fields present override it */
};

/* Reads an optional numeric field of the result table at index 1 into *v. */
static bool flow_field(lua_State *L, struct flow_call *fc, const char *k, double max, bool integer,
                       double *v)
{
    lua_getfield(L, 1, k);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return true;
    }
    double d = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : -1;
    if (!(d >= 0 && d <= max) || (integer && d != floor(d))) {
        snprintf(fc->c.why, sizeof fc->c.why, "%s: %s must be %s 0..%.0f (got %s)",
                 HOOKS[fc->c.id].name, k, integer ? "an integer" : "a number", max,
                 lua_type(L, -1) == LUA_TNUMBER ? lua_tostring(L, -1) : luaL_typename(L, -1));
        return false;
    }
    *v = d;
    lua_pop(L, 1);
    return true;
}

static int flow_protected(lua_State *L, void *arg)
{
    struct flow_call *fc = arg;
    lua_rawgeti(L, LUA_REGISTRYINDEX, fc->c.p->hooks[fc->c.id].ref);
    if (fc->c.id == H_INTAKE) {
        lua_pushnumber(L, fc->permits);
        lua_call(L, 1, 1);
    } else {
        lua_pushstring(L, fc->group);
        lua_pushstring(L, fc->topic);
        lua_createtable(L, 0, 4);
        set_number_field(L, "inflight", fc->f ? fc->f->inflight : 0);
        set_number_field(L, "backlog", fc->f ? (double)fc->f->backlog : 0);
        set_number_field(L, "recent_failures", fc->f ? fc->f->recent_failures : 0);
        set_number_field(L, "watermark", fc->f ? fc->f->watermark : 0);
        lua_call(L, 3, 1);
    }
    if (lua_isnil(L, 1)) {
        fc->c.use_default = true;
        return 0;
    }
    if (!lua_istable(L, 1)) {
        snprintf(fc->c.why, sizeof fc->c.why,
                 "%s must return {rate=, burst=, window=} or nil "
                 "(got %s)",
                 HOOKS[fc->c.id].name, luaL_typename(L, 1));
        return 0;
    }
    struct kq_flow_limits l = *fc->out;
    double window = l.window;
    if (!flow_field(L, fc, "rate", 1e9, false, &l.rate) ||
        !flow_field(L, fc, "burst", 1e9, false, &l.burst) ||
        !flow_field(L, fc, "window", 1e7, true, &window))
        return 0;
    if (l.rate > 0 && l.burst < 1) {
        snprintf(fc->c.why, sizeof fc->c.why, "%s: burst must be >= 1 when rate > 0 (got %g)",
                 HOOKS[fc->c.id].name, l.burst);
        return 0;
    }
    l.window = (uint32_t)window;
    *fc->out = l;
    return 0;
}

/* -- publish (its answers: publish_answer.c) -- */

static int publish_protected(lua_State *L, void *arg)
{
    struct publish_call *pc = arg;
    kq_policy_call_publish(L, pc->c.p, pc->m);
    kq_policy_read_publish_answer(L, pc);
    return 0;
}

/* ---- for hooks_message.c ---------------------------------------------------------------- */

enum outcome kq_policy_invoke(struct call *c, kq_policy_fn fn, bool selftest)
{
    return invoke(c, fn, selftest);
}

bool kq_policy_settle(struct call *c, enum outcome o) { return settle(c, o); }

bool kq_policy_hook_live(const struct kq_policy *p, const struct call *c)
{
    return hook_live(p, c);
}

/* ---- self-tests ------------------------------------------------------------------------- */

int kq_policy_selftest_fail(struct call *c, char *err, size_t errlen, const char *dir)
{
    snprintf(err, errlen, "%s/%s: %s: self-test failed: %s", dir, HOOKS[c->id].file,
             HOOKS[c->id].key, c->why);
    return -EINVAL;
}

static int selftest(struct kq_policy *p, const char *dir, char *err, size_t errlen)
{
    static const struct kq_binding binds[] = {
        {"selftest-direct", "selftest", "pay-200", KQ_BIND_DIRECT, 1000, true},
        {"selftest-regx", "selftest", "pay-\\d+", KQ_BIND_REGX, 0, false},
        {"selftest-fanout", "selftest", "*", KQ_BIND_FANOUT, 6000, true},
    };
    if (p->hooks[H_ROUTE].ref != LUA_NOREF) {
        static const char *const types[] = {"pay-200", "pay-1", "other", ""};
        for (size_t i = 0; i < 4; i++) {
            struct kq_route *out = p->scratch;
            for (size_t nb = 0; nb <= 3; nb += 3) { /* with and without bindings */
                struct route_call rc = {.c = {.p = p, .id = H_ROUTE},
                                        .binds = binds,
                                        .n = nb,
                                        .topic = "selftest",
                                        .type = types[i],
                                        .out = out,
                                        .max = KQ_POLICY_MAX_ROUTES};
                if (invoke(&rc.c, route_protected, true) != CALL_OK)
                    return kq_policy_selftest_fail(&rc.c, err, errlen, dir);
                if (rc.dropped) {
                    snprintf(rc.c.why, sizeof rc.c.why,
                             "returned group \"%s\", which has no "
                             "binding on the topic",
                             rc.first_dropped);
                    return kq_policy_selftest_fail(&rc.c, err, errlen, dir);
                }
            }
        }
    }
    if (p->hooks[H_RETRY].ref != LUA_NOREF) {
        static const struct {
            int32_t attempts, limit;
            int64_t expired;
            const char *reason;
        } cases[] = {{0, 100, 0, "nack"},
                     {3, 100, 0, "timeout"},
                     {50, 100, 0, "connection lost"},
                     {100, 100, 0, "over flow"},
                     {5, 100, 1, "no consumer online"}};
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            struct kq_retry_verdict v;
            struct retry_call rc = {.c = {.p = p, .id = H_RETRY},
                                    .attempts = cases[i].attempts,
                                    .deliver_limit = cases[i].limit,
                                    .reason = cases[i].reason,
                                    .expired_time = cases[i].expired,
                                    .now_sec = kq_now_sec(),
                                    .v = &v};
            if (invoke(&rc.c, retry_protected, true) != CALL_OK)
                return kq_policy_selftest_fail(&rc.c, err, errlen, dir);
        }
    }
    for (enum hook_id id = H_INTAKE; id <= H_GROUP; id++) {
        if (p->hooks[id].ref == LUA_NOREF)
            continue;
        static const int watermarks[] = {0, 1, 1000, 100000};
        for (size_t i = 0; i < 4; i++) {
            struct kq_flow_figures f = {0, 0, 0, watermarks[i]};
            struct kq_flow_limits l = {0};
            struct flow_call fc = {.c = {.p = p, .id = id},
                                   .permits = 20000,
                                   .group = "selftest",
                                   .topic = "selftest",
                                   .f = &f,
                                   .out = &l};
            if (invoke(&fc.c, flow_protected, true) != CALL_OK)
                return kq_policy_selftest_fail(&fc.c, err, errlen, dir);
        }
    }
    if (p->hooks[H_PUBLISH].ref != LUA_NOREF) {
        static const struct kq_property_kv props[] = {{"region", "eu"}, {"trace", "t-1"}};
        int64_t now = kq_now_sec();
        const struct kq_publish_view views[] = {
            {"00000000000000000000000000000001", "selftest", "pay-200", "selftest-producer",
             "127.0.0.1:40000", NULL, 0, 0, false, true, now + 3600, 100, now, binds, 3, NULL},
            {"00000000000000000000000000000002", "selftest", "other", "selftest-producer",
             "[::1]:40000", props, 2, 4096, true, true, now + 60, 1, now, binds, 3, NULL},
            {"00000000000000000000000000000003", "selftest", "", "selftest-producer", "", props, 1,
             0, false, false, now + 1, 3, now, NULL, 0, NULL},
        };
        for (size_t i = 0; i < sizeof views / sizeof views[0]; i++) {
            struct publish_call pc = {.c = {.p = p, .id = H_PUBLISH}, .m = &views[i]};
            if (invoke(&pc.c, publish_protected, true) != CALL_OK)
                return kq_policy_selftest_fail(&pc.c, err, errlen, dir);
        }
    }
    int rc = kq_hooks_selftest(p, dir, err, errlen);
    if (rc)
        return rc;
    /* self-test calls are not traffic */
    for (int i = 0; i < H_COUNT; i++)
        p->hooks[i].calls = p->hooks[i].total_us = 0;
    return 0;
}

/* ---- the folder ------------------------------------------------------------------------- */

static bool is_hook_file(const char *name)
{
    for (size_t i = 0; i < sizeof FILES / sizeof FILES[0]; i++)
        if (strcmp(name, FILES[i]) == 0)
            return true;
    return false;
}

/* The folder must exist (a typo in `policies` would otherwise mean silent defaults), and a
 * .lua file in it that is not one of FILES is never loaded: say so, naming it. */
static int check_dir(const char *dir, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    if (!d) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", dir,
                 e == ENOENT    ? "no such folder"
                 : e == ENOTDIR ? "not a folder"
                                : strerror(e));
        return e == ENOENT ? -ENOENT : -EINVAL;
    }
    for (struct dirent *e; (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        if (n < 4 || strcmp(e->d_name + n - 4, ".lua") != 0 || is_hook_file(e->d_name))
            continue;
        const char *hint = NULL;
        for (size_t i = 0; i < sizeof FILES / sizeof FILES[0]; i++)
            if (strcasecmp(e->d_name, FILES[i]) == 0)
                hint = FILES[i];
        KQ_WARN("policy",
                "%s/%s is not loaded: policy files are routing.lua, flow.lua, "
                "retry.lua, publish.lua and auth.lua%s%s%s",
                dir, e->d_name, hint ? " (did you mean " : "", hint ? hint : "", hint ? "?)" : "");
    }
    closedir(d);
    return 0;
}

/* "route,retry" into buf: the hooks that are (loaded) or are not (!loaded) defined in Lua. */
static const char *hook_names(const struct kq_policy *p, bool loaded, char *buf, size_t len)
{
    buf[0] = 0;
    for (int i = 0; i < H_COUNT; i++)
        if ((p->hooks[i].ref != LUA_NOREF) == loaded)
            snprintf(buf + strlen(buf), len - strlen(buf), "%s%s", buf[0] ? "," : "",
                     HOOKS[i].name);
    return buf;
}

/* ---- public ----------------------------------------------------------------------------- */

int kq_policy_load(const char *dir, struct kq_policy **out, char *err, size_t errlen)
{
    char dummy[8];
    if (!err || !errlen) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = 0;
    struct kq_policy *p = calloc(1, sizeof *p);
    if (!p)
        goto oom;
    for (int i = 0; i < H_COUNT; i++)
        p->hooks[i].ref = LUA_NOREF;
    p->changes_meta = LUA_NOREF;
    p->rc = kq_regex_cache_new();
    p->strikes = kq_strikes_new();
    p->scratch = malloc(KQ_POLICY_MAX_ROUTES * sizeof *p->scratch);
    if (!p->rc || !p->strikes || !p->scratch)
        goto oom;
    p->budget.max = KQ_POLICY_MEMORY_BYTES;
    p->L = kq_lua_budget_newstate(&p->budget, true);
    if (!p->L || kq_policy_marshal_init(p) != 0)
        goto oom;

    if (dir) {
        int rc = check_dir(dir, err, errlen);
        if (rc) {
            kq_policy_free(p);
            return rc;
        }
        for (size_t i = 0; i < sizeof FILES / sizeof FILES[0]; i++) {
            rc = load_file(p, dir, FILES[i], err, errlen);
            if (rc) {
                kq_policy_free(p);
                return rc;
            }
        }
        if (p->hooks[H_PUBLISH].ref != LUA_NOREF) {
            p->publish_props = malloc(KQ_POLICY_MAX_PROPERTIES * sizeof *p->publish_props);
            p->publish_strings = malloc(PUBLISH_SCRATCH_BYTES);
            p->publish_groups = malloc(KQ_POLICY_MAX_ROUTES * sizeof *p->publish_groups);
            if (!p->publish_props || !p->publish_strings || !p->publish_groups)
                goto oom;
        }
        rc = selftest(p, dir, err, errlen);
        if (rc) {
            kq_policy_free(p);
            return rc;
        }
    }
    char lua[128], builtin[128];
    hook_names(p, true, lua, sizeof lua);
    hook_names(p, false, builtin, sizeof builtin);
    char files[KQ_POLICY_MAX_FILES * 80] = "";
    for (size_t i = 0; i < p->n_files; i++)
        snprintf(files + strlen(files), sizeof files - strlen(files), "%s%s:%s", i ? "," : "",
                 p->files[i].file, p->files[i].sha256);
    KQ_INFO("policy", "loaded dir=%s hooks=%s built_in=%s memory_cap=%s sha256=%s",
            dir ? dir : "(none)", lua[0] ? lua : "(defaults only)", builtin[0] ? builtin : "-",
            p->budget.gc_count ? "gc-count" : "allocator", files[0] ? files : "-");
    p->budget.stop = NULL; /* the loader's stop flag: from now on the calls have budgets only */
    *out = p;
    return 0;
oom:
    snprintf(err, errlen, "%s: out of memory creating the Lua state", dir ? dir : "policy");
    kq_policy_free(p);
    return -ENOMEM;
}

static void memo_clear(struct kq_policy *p)
{
    struct memo *m, *tmp;
    HASH_ITER (hh, p->memo, m, tmp) {
        HASH_DEL(p->memo, m);
        free(m->key);
        free(m->routes);
        free(m);
    }
    p->n_memo = 0;
    p->memo_last = NULL;
}

void kq_policy_free(struct kq_policy *p)
{
    if (!p)
        return;
    if (p->L)
        kq_lua_budget_close(p->L, &p->budget); /* refs and all go with the state */
    kq_policy_marshal_free(p);
    memo_clear(p);
    kq_regex_cache_free(p->rc);
    kq_strikes_free(p->strikes);
    free(p->scratch);
    free(p->publish_props);
    free(p->publish_strings);
    free(p->publish_groups);
    free(p);
}

static void memo_add(struct kq_policy *p, const char *key, size_t key_len, const struct kq_route *r,
                     size_t n)
{
    if (p->n_memo >= MEMO_MAX)
        memo_clear(p); /* producers choose messageTypes: bound the cache, start over */
    struct memo *m = calloc(1, sizeof *m);
    if (!m)
        return;
    m->key = malloc(key_len);
    m->routes = malloc((n ? n : 1) * sizeof *r);
    if (!m->key || !m->routes) {
        free(m->key);
        free(m->routes);
        free(m);
        return;
    }
    memcpy(m->key, key, key_len);
    memcpy(m->routes, r, n * sizeof *r);
    m->key_len = key_len;
    m->n = n;
    HASH_ADD_KEYPTR(hh, p->memo, m->key, key_len, m);
    p->n_memo++;
    p->memo_last = m;
}

size_t kq_policy_route(struct kq_policy *p, const struct kq_binding_set *set, const char *topic,
                       const char *type, struct kq_route *out, size_t max)
{
    size_t n = 0;
    const struct kq_binding *binds;
    if (!p) {
        binds = set ? kq_binding_set_topic(set, topic, &n) : NULL;
        return kq_policy_default_route(binds, n, type, out, max);
    }

    /* answers depend on (topic, type, bindings, policy): valid while the set is */
    uint64_t gen = set ? kq_binding_set_generation(set) : 0;
    if (set != p->memo_set || gen != p->memo_gen) {
        memo_clear(p);
        p->memo_set = set;
        p->memo_gen = gen;
    }
    char key[MEMO_KEY_MAX];
    size_t tl = strlen(topic), yl = strlen(type), key_len = tl + 1 + yl;
    bool cacheable = key_len <= sizeof key;
    if (cacheable) {
        memcpy(key, topic, tl + 1);
        memcpy(key + tl + 1, type, yl);
        struct memo *m = p->memo_last;
        if (!m || m->key_len != key_len || memcmp(m->key, key, key_len) != 0)
            HASH_FIND(hh, p->memo, key, key_len, m);
        if (m) {
            p->memo_last = m;
            p->hooks[H_ROUTE].cache_hits++;
            size_t k = m->n < max ? m->n : max;
            memcpy(out, m->routes, k * sizeof *out);
            return k;
        }
    }

    /* found in the memo, the bindings are not needed: the lookup is left for a miss (it
     * showed in profiles, the routes of a message are asked for twice) */
    binds = set ? kq_binding_set_topic(set, topic, &n) : NULL;
    struct kq_route *r = p->scratch;
    size_t found = 0;
    bool answered = false;
    struct route_call rc = {.c = {.p = p, .id = H_ROUTE, .subject = {topic, type}},
                            .binds = binds,
                            .n = n,
                            .topic = topic,
                            .type = type,
                            .out = r,
                            .max = KQ_POLICY_MAX_ROUTES};
    if (hook_live(p, &rc.c)) {
        enum outcome o = invoke(&rc.c, route_protected, false);
        answered = settle(&rc.c, o) && !rc.c.use_default;
        if (o == CALL_FAILED)
            cacheable = false; /* try the hook again next time */
        if (answered && rc.dropped) {
            p->hooks[H_ROUTE].errors++;
            snprintf(p->last_failure, sizeof p->last_failure,
                     "hook=route topic=%.100s "
                     "type=%.100s: dropped %zu group(s) without a binding on the topic, e.g. "
                     "\"%s\"",
                     topic, type, rc.dropped, rc.first_dropped);
            KQ_LOG_RATELIMITED(KQ_LOG_WARN, "policy", "%s", p->last_failure);
        }
        if (answered)
            found = rc.found;
    } else if (p->hooks[H_ROUTE].ref != LUA_NOREF) {
        /* switched off for this (topic, type): not memoised, so that every message routed
         * by the fallback is counted */
        p->hooks[H_ROUTE].fallbacks++;
        cacheable = false;
    }
    if (!answered)
        found = kq_policy_route_builtin(p->rc, binds, n, type, r, KQ_POLICY_MAX_ROUTES);
    if (cacheable)
        memo_add(p, key, key_len, r, found);
    size_t k = found < max ? found : max;
    memcpy(out, r, k * sizeof *out);
    return k;
}

void kq_policy_retry(struct kq_policy *p, int32_t attempts, const char *reason,
                     int32_t deliver_limit, int64_t expired_time, int64_t now_sec,
                     struct kq_retry_verdict *v)
{
    struct retry_call rc = {.c = {.p = p, .id = H_RETRY},
                            .attempts = attempts,
                            .deliver_limit = deliver_limit,
                            .reason = reason ? reason : "",
                            .expired_time = expired_time,
                            .now_sec = now_sec,
                            .v = v};
    if (p && hook_live(p, &rc.c)) {
        if (settle(&rc.c, invoke(&rc.c, retry_protected, false)) && !rc.c.use_default)
            return;
    } else if (p && p->hooks[H_RETRY].ref != LUA_NOREF) {
        p->hooks[H_RETRY].fallbacks++;
    }
    kq_policy_default_retry(attempts, deliver_limit, expired_time, now_sec, v);
}

static void flow(struct kq_policy *p, struct flow_call *fc)
{
    struct kq_flow_limits def = *fc->out;
    if (!p)
        return;
    if (hook_live(p, &fc->c)) {
        if (settle(&fc->c, invoke(&fc->c, flow_protected, false)) && !fc->c.use_default)
            return;
    } else if (p->hooks[fc->c.id].ref != LUA_NOREF) {
        p->hooks[fc->c.id].fallbacks++;
    }
    *fc->out = def;
}

void kq_policy_flow_intake(struct kq_policy *p, int permits_per_second, struct kq_flow_limits *out)
{
    kq_policy_default_flow_intake(permits_per_second, out);
    struct flow_call fc = {
        .c = {.p = p, .id = H_INTAKE}, .permits = permits_per_second, .out = out};
    flow(p, &fc);
}

void kq_policy_flow_group(struct kq_policy *p, const char *group, const char *topic,
                          const struct kq_flow_figures *f, struct kq_flow_limits *out)
{
    kq_policy_default_flow_group(f, out);
    struct flow_call fc = {.c = {.p = p, .id = H_GROUP, .subject = {group, topic}},
                           .group = group,
                           .topic = topic,
                           .f = f,
                           .out = out};
    flow(p, &fc);
}

size_t kq_policy_stats(const struct kq_policy *p, struct kq_policy_hook_stats *out, size_t max)
{
    size_t n = 0;
    for (int i = 0; i < H_COUNT && n < max; i++, n++) {
        const struct hook *h = p ? &p->hooks[i] : NULL;
        out[n] = (struct kq_policy_hook_stats){
            .name = HOOKS[i].name,
            .loaded = h && h->ref != LUA_NOREF,
            .disabled = p && kq_strikes_disabled_count(p->strikes, i) > 0,
            .disabled_subjects = p ? kq_strikes_disabled_count(p->strikes, i) : 0,
            .calls = h ? h->calls : 0,
            .errors = h ? h->errors : 0,
            .fallbacks = h ? h->fallbacks : 0,
            .cache_hits = h ? h->cache_hits : 0,
            .total_us = h ? h->total_us : 0,
            .rejects = h ? h->rejects : 0,
        };
    }
    return n;
}

size_t kq_policy_files(const struct kq_policy *p, struct kq_policy_file *out, size_t max)
{
    size_t n = 0;
    for (; p && n < p->n_files && n < max; n++)
        out[n] = p->files[n];
    return n;
}

const char *kq_policy_last_failure(const struct kq_policy *p) { return p ? p->last_failure : ""; }

bool kq_policy_has_publish(const struct kq_policy *p)
{
    return p && p->hooks[H_PUBLISH].ref != LUA_NOREF;
}

void kq_policy_publish(struct kq_policy *p, const struct kq_publish_view *m,
                       struct kq_publish_verdict *v)
{
    v->action = KQ_PUBLISH_ACCEPT;
    v->reason[0] = 0;
    v->delay_ms = -1;
    v->n_groups = 0;
    if (!kq_policy_has_publish(p))
        return;
    /* set field by field: an initializer would clear its ~500 bytes of text per message */
    struct publish_call pc;
    kq_policy_call_init(&pc.c, p, H_PUBLISH, m->topic, m->message_type);
    pc.m = m;
    pc.used = 0;
    pc.v.action = KQ_PUBLISH_ACCEPT;
    if (!hook_live(p, &pc.c)) {
        p->hooks[H_PUBLISH].fallbacks++; /* switched off for this (topic, type): as is */
        return;
    }
    if (!settle(&pc.c, invoke(&pc.c, publish_protected, false)) || pc.c.use_default)
        return;
    if (pc.v.action == KQ_PUBLISH_REJECT) {
        p->hooks[H_PUBLISH].rejects++;
        v->action = KQ_PUBLISH_REJECT;
        memcpy(v->reason, pc.v.reason, sizeof v->reason);
    } else if (pc.v.action == KQ_PUBLISH_CHANGE) {
        memcpy(v, &pc.v, offsetof(struct kq_publish_verdict, reason));
    }
}
