/* The `kiteq.policy` Lua module: busted specs load a policies folder with the broker's own
 * code (sandbox, budgets, self-tests, validation, fallbacks) and call its hooks as the broker
 * applies them. Built by CMake from the same sources as the broker (build/lua/kiteq/policy.so,
 * installed under the LuaJIT cpath); see docs/POLICIES.md ("Testing a policy").
 *
 *   local policy = require("kiteq.policy")
 *   local p = assert(policy.load("lua/policies"))   -- nil, "FILE: reason" when it fails
 *   local answer, problem = p:call("retry", { attempts = 3, reason = "nack" })
 *   p:hooks()   -- { route = true, retry = true, ... }: the hooks the folder defines
 *   p:stats()   -- per hook: calls, errors, fallbacks, ...
 *   policy.hooks -- the hook names call knows
 *   policy.load_config(path [, cluster [, text]]) -- a config file through the broker's
 *                   loader: the cluster as loaded | nil, "problems" (config_module.c)
 *
 * Each policy generation is its own Lua state (the broker's sandbox), apart from the state
 * busted runs in; an endless loop in a hook is stopped by the call budget, so a spec fails
 * instead of hanging. Arguments and answers cross as JSON values (policy/policy_call.h). */
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "policy/module/config_module.h"
#include "policy/policy_call.h"

#define META "kiteq.policy.generation"
#define MAX_DEPTH 32

struct gen {
    struct kq_policy *p;
};

/* ---- Lua <-> JSON ----------------------------------------------------------------------- */

static cJSON *to_json(lua_State *L, int idx, int depth);

/* A table with keys 1..n only (n > 0) is a list; anything else an object. */
static bool is_list(lua_State *L, int idx)
{
    size_t n = lua_objlen(L, idx), keys = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        keys++;
        lua_pop(L, 1);
    }
    return n > 0 && keys == n;
}

static cJSON *table_to_json(lua_State *L, int idx, int depth)
{
    if (depth > MAX_DEPTH)
        luaL_error(L, "arguments nested deeper than %d tables", MAX_DEPTH);
    if (is_list(L, idx)) {
        cJSON *a = cJSON_CreateArray();
        for (size_t i = 1; i <= lua_objlen(L, idx); i++) {
            lua_rawgeti(L, idx, (int)i);
            cJSON_AddItemToArray(a, to_json(L, lua_gettop(L), depth + 1));
            lua_pop(L, 1);
        }
        return a;
    }
    cJSON *o = cJSON_CreateObject();
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            cJSON_Delete(o);
            luaL_error(L, "argument tables have string keys or are lists");
        }
        cJSON_AddItemToObject(o, lua_tostring(L, -2), to_json(L, lua_gettop(L), depth + 1));
        lua_pop(L, 1);
    }
    return o;
}

static cJSON *to_json(lua_State *L, int idx, int depth)
{
    switch (lua_type(L, idx)) {
    case LUA_TNIL: return cJSON_CreateNull();
    case LUA_TBOOLEAN: return cJSON_CreateBool(lua_toboolean(L, idx));
    case LUA_TNUMBER: return cJSON_CreateNumber(lua_tonumber(L, idx));
    case LUA_TSTRING: return cJSON_CreateString(lua_tostring(L, idx));
    case LUA_TTABLE: return table_to_json(L, idx, depth);
    default:
        luaL_error(L, "arguments are strings, numbers, booleans and tables (got %s)",
                   luaL_typename(L, idx));
    }
    return NULL;
}

static void push_json(lua_State *L, const cJSON *v)
{
    if (cJSON_IsBool(v)) {
        lua_pushboolean(L, cJSON_IsTrue(v));
    } else if (cJSON_IsNumber(v)) {
        lua_pushnumber(L, v->valuedouble);
    } else if (cJSON_IsString(v)) {
        lua_pushstring(L, v->valuestring);
    } else if (cJSON_IsArray(v) || cJSON_IsObject(v)) {
        lua_newtable(L);
        int i = 1;
        for (const cJSON *c = v->child; c; c = c->next) {
            push_json(L, c);
            if (cJSON_IsArray(v))
                lua_rawseti(L, -2, i++);
            else
                lua_setfield(L, -2, c->string);
        }
    } else {
        lua_pushnil(L);
    }
}

/* ---- the module ------------------------------------------------------------------------- */

static struct gen *check_gen(lua_State *L)
{
    struct gen *g = luaL_checkudata(L, 1, META);
    if (!g->p)
        luaL_error(L, "this policy generation was closed");
    return g;
}

/* policy.load(dir) -> generation | nil, "FILE: reason" */
static int l_load(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    char err[1024];
    struct kq_policy *p = NULL;
    if (kq_policy_load(dir, &p, err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    struct gen *g = lua_newuserdata(L, sizeof *g);
    g->p = p;
    luaL_getmetatable(L, META);
    lua_setmetatable(L, -2);
    return 1;
}

/* p:call(hook, args) -> answer, problem (nil when the hook's answer was applied as given) */
static int l_call(lua_State *L)
{
    struct gen *g = check_gen(L);
    const char *hook = luaL_checkstring(L, 2);
    cJSON *args =
        lua_isnoneornil(L, 3) ? NULL : (luaL_checktype(L, 3, LUA_TTABLE), to_json(L, 3, 0));
    char err[512];
    const char *problem = NULL;
    cJSON *answer = kq_policy_call(g->p, hook, args, &problem, err, sizeof err);
    cJSON_Delete(args);
    if (!answer)
        return luaL_error(L, "%s", err);
    push_json(L, answer);
    cJSON_Delete(answer);
    if (problem)
        lua_pushstring(L, problem);
    else
        lua_pushnil(L);
    return 2;
}

static int l_stats(lua_State *L)
{
    struct gen *g = check_gen(L);
    bool loaded_only = lua_toboolean(L, lua_upvalueindex(1));
    struct kq_policy_hook_stats hs[16];
    size_t n = kq_policy_stats(g->p, hs, 16);
    lua_newtable(L);
    for (size_t i = 0; i < n; i++) {
        if (loaded_only) {
            lua_pushboolean(L, hs[i].loaded);
        } else {
            lua_createtable(L, 0, 8);
            lua_pushboolean(L, hs[i].loaded);
            lua_setfield(L, -2, "loaded");
            lua_pushboolean(L, hs[i].disabled);
            lua_setfield(L, -2, "disabled");
            const struct {
                const char *k;
                uint64_t v;
            } nums[] = {{"calls", hs[i].calls},
                        {"errors", hs[i].errors},
                        {"fallbacks", hs[i].fallbacks},
                        {"cache_hits", hs[i].cache_hits},
                        {"rejects", hs[i].rejects}};
            for (size_t k = 0; k < sizeof nums / sizeof nums[0]; k++) {
                lua_pushnumber(L, (double)nums[k].v);
                lua_setfield(L, -2, nums[k].k);
            }
        }
        lua_setfield(L, -2, hs[i].name);
    }
    return 1;
}

static int l_close(lua_State *L)
{
    struct gen *g = luaL_checkudata(L, 1, META);
    kq_policy_free(g->p);
    g->p = NULL;
    return 0;
}

int luaopen_kiteq_policy(lua_State *L);
int luaopen_kiteq_policy(lua_State *L)
{
    /* why a call fell back is its second answer: keep busted's output to real errors */
    kq_log_set_level(KQ_LOG_ERROR);
    if (luaL_newmetatable(L, META)) {
        lua_newtable(L);
        lua_pushcfunction(L, l_call);
        lua_setfield(L, -2, "call");
        lua_pushboolean(L, 1);
        lua_pushcclosure(L, l_stats, 1);
        lua_setfield(L, -2, "hooks");
        lua_pushboolean(L, 0);
        lua_pushcclosure(L, l_stats, 1);
        lua_setfield(L, -2, "stats");
        lua_pushcfunction(L, l_close);
        lua_setfield(L, -2, "close");
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_close);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushcfunction(L, l_load);
    lua_setfield(L, -2, "load");
    lua_pushcfunction(L, kq_module_load_config);
    lua_setfield(L, -2, "load_config");
    lua_newtable(L);
    for (size_t i = 0; kq_policy_call_name(i); i++) {
        lua_pushstring(L, kq_policy_call_name(i));
        lua_rawseti(L, -2, (int)i + 1);
    }
    lua_setfield(L, -2, "hooks");
    lua_createtable(L, 0, 3);
    lua_pushnumber(L, KQ_POLICY_CALL_INSTRUCTIONS);
    lua_setfield(L, -2, "instructions");
    lua_pushnumber(L, KQ_POLICY_CALL_MS);
    lua_setfield(L, -2, "ms");
    lua_pushnumber(L, (double)KQ_POLICY_MEMORY_BYTES);
    lua_setfield(L, -2, "memory_bytes");
    lua_setfield(L, -2, "budget");
    return 1;
}
