/* The way into Lua of every hook call, made cheap: a per-message hook runs for every message,
 * so what surrounds the hook's own code is most of its cost (docs/BENCHMARKS.md, issue #15).
 *
 * Calls run protected like lua_cpcall, but through one C function made at load: lua_cpcall
 * makes a new C closure per call, garbage for the collector.
 *
 * Built from C with lua_setfield, each field of `m` interned its key string and inserted a
 * new key into a growing table, and the whole table was garbage after the call. Here a small
 * Lua chunk of ours fills one `m` per generation, made from a constructor with constant keys
 * (a template copy: the keys are never hashed or interned per call), and route_message's
 * `binds` is one list per topic refilled from a prototype built once per binding set. Every
 * field is written again for every call, so what a hook changed in them is undone; a hook
 * that adds a key to one (seen by a __newindex) gets a new one at the next call. A hook must
 * not keep them (docs/POLICIES.md); m.properties is still a new table per call.
 *
 * The hook is called from the chunk by a tail call, so its errors, results and the budget
 * guard are those of a direct call. */
#include <lauxlib.h>
#include <string.h>

#include "policy/generation.h"
#include "sandbox/sandbox.h"

/* Parameters of the builders in the order push_message_fields pushes them. `publish` and
 * `route` fill one `m` table of the generation (a hook that adds a key to it gets a new one
 * next time); `message` builds a new one (on_dead, which adds `attempts`). */
static const char BUILDERS[] =
    "local setmetatable, rawset = ...\n"
    "local reused, dirty\n"
    "local noted = { __metatable = false,\n"
    "                __newindex = function(t, k, v) dirty = true; rawset(t, k, v) end }\n"
    "local function message(message_id, topic, message_type, group, peer, body_size, fly,\n"
    "                       commit, expired_time, deliver_limit, properties)\n"
    "  return { message_id = message_id, topic = topic, message_type = message_type,\n"
    "           group = group, peer = peer, body_size = body_size, fly = fly, commit = commit,\n"
    "           expired_time = expired_time, deliver_limit = deliver_limit,\n"
    "           properties = properties }\n"
    "end\n"
    "local function fill(a, b, c, d, e, f, g, h, i, j, k)\n"
    "  if dirty ~= false then -- clean only once made (a call stopped midway retries)\n"
    "    reused = setmetatable(message(a, b, c, d, e, f, g, h, i, j, k), noted)\n"
    "    dirty = false\n"
    "    return reused\n"
    "  end\n"
    "  local m = reused\n"
    "  m.message_id = a; m.topic = b; m.message_type = c; m.group = d; m.peer = e\n"
    "  m.body_size = f; m.fly = g; m.commit = h; m.expired_time = i; m.deliver_limit = j\n"
    "  m.properties = k\n"
    "  return m\n"
    "end\n"
    "local function weak() return setmetatable({}, { __mode = 'k' }) end\n"
    "local lists, binds_dirty = weak(), false\n"
    "local function note_bind(t, k, v) binds_dirty = true; rawset(t, k, v) end\n"
    "local noted_bind = { __metatable = false, __newindex = note_bind }\n"
    "local function binds_of(proto)\n"
    "  local c = lists[proto]\n"
    "  if c == nil or binds_dirty then\n"
    "    if binds_dirty then lists, binds_dirty = weak(), false end\n"
    "    c = { {} }\n"
    "    for i = 1, #proto do\n"
    "      c[i + 1] = setmetatable({ group = false, topic = false, message_type = false,\n"
    "                                bind_type = false, watermark = false,\n"
    "                                persistent = false }, noted_bind)\n"
    "      c[1][i] = c[i + 1]\n"
    "    end\n"
    "    setmetatable(c[1], noted_bind)\n"
    "    lists[proto] = c\n"
    "  end\n"
    "  local list = c[1]\n"
    "  for i = 1, #proto do\n"
    "    local b, q = c[i + 1], proto[i]\n"
    "    b.group = q.group; b.topic = q.topic; b.message_type = q.message_type\n"
    "    b.bind_type = q.bind_type; b.watermark = q.watermark; b.persistent = q.persistent\n"
    "    list[i] = b\n"
    "  end\n"
    "  return list\n"
    "end\n"
    "return {\n"
    "  message = message,\n"
    "  publish = function(hook, a, b, c, d, e, f, g, h, i, j, k)\n"
    "    return hook(fill(a, b, c, d, e, f, g, h, i, j, k))\n"
    "  end,\n"
    "  route = function(hook, proto, a, b, c, d, e, f, g, h, i, j, k)\n"
    "    return hook(fill(a, b, c, d, e, f, g, h, i, j, k), binds_of(proto))\n"
    "  end,\n"
    "}\n";

struct protected_call {
    lua_CFunction fn;
    void *arg;
};

/* Its upvalue is the generation; the call to run is p->running. */
static int run_protected(lua_State *L)
{
    const struct kq_policy *p = lua_touserdata(L, lua_upvalueindex(1));
    const struct protected_call *pr = p->running;
    lua_settop(L, 0);
    lua_pushlightuserdata(L, pr->arg); /* may allocate (LuaJIT interns its segment): protected */
    return pr->fn(L);
}

int kq_policy_pcall(struct kq_policy *p, lua_CFunction fn, void *arg)
{
    struct protected_call pr = {fn, arg};
    p->running = &pr;
    lua_rawgeti(p->L, LUA_REGISTRYINDEX, p->protected_call); /* allocates nothing */
    int rc = lua_pcall(p->L, 0, 0, 0);
    p->running = NULL;
    return rc;
}

/* Runs inside lua_cpcall: the protected function and the chunk's functions into p's refs. */
static int load_builders(lua_State *L)
{
    struct kq_policy *p = lua_touserdata(L, 1);
    lua_settop(L, 0);
    lua_pushlightuserdata(L, p);
    lua_pushcclosure(L, run_protected, 1);
    p->protected_call = luaL_ref(L, LUA_REGISTRYINDEX);
    if (kq_sandbox_load_text(L, BUILDERS, sizeof BUILDERS - 1, "(policy builders)") != 0)
        return lua_error(L);
    lua_newtable(L); /* it needs no globals: what it uses comes as arguments */
    lua_setfenv(L, -2);
    lua_getglobal(L, "setmetatable");
    lua_getglobal(L, "rawset");
    kq_lua_budget_begin(L, &p->budget, 1000, 1000);
    lua_call(L, 2, 1);
    static const char *const names[] = {"message", "publish", "route"};
    int *refs[] = {&p->build_message, &p->build_publish, &p->build_route};
    for (size_t i = 0; i < 3; i++) {
        lua_getfield(L, 1, names[i]);
        *refs[i] = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_newtable(L);
    p->binds_protos = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

int kq_policy_marshal_init(struct kq_policy *p)
{
    p->protected_call = p->build_message = p->build_publish = p->build_route = p->binds_protos =
        LUA_NOREF;
    int rc = lua_cpcall(p->L, load_builders, p);
    lua_settop(p->L, 0);
    return rc == 0 ? 0 : -1;
}

/* The bindings as route sees them, built from C (the prototype of the cached copies). */
void kq_policy_push_binds(lua_State *L, const struct kq_binding *binds, size_t n)
{
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        const struct kq_binding *b = &binds[i];
        lua_createtable(L, 0, 6);
        lua_pushstring(L, b->group_id);
        lua_setfield(L, -2, "group");
        lua_pushstring(L, b->topic);
        lua_setfield(L, -2, "topic");
        lua_pushstring(L, b->message_type);
        lua_setfield(L, -2, "message_type");
        lua_pushstring(L, b->bind_type == KQ_BIND_REGX     ? "regx"
                          : b->bind_type == KQ_BIND_FANOUT ? "fanout"
                                                           : "direct");
        lua_setfield(L, -2, "bind_type");
        lua_pushnumber(L, b->watermark);
        lua_setfield(L, -2, "watermark");
        lua_pushboolean(L, b->persistent);
        lua_setfield(L, -2, "persistent");
        lua_rawseti(L, -2, (int)i + 1);
    }
}

/* Pushes the prototype list of binds[0..n): from the cache when set says it is valid. */
static void push_binds_proto(lua_State *L, struct kq_policy *p, const struct kq_binding_set *set,
                             const struct kq_binding *binds, size_t n)
{
    if (!set || !n) { /* self-tests and tools: nothing worth keeping */
        kq_policy_push_binds(L, binds, n);
        return;
    }
    uint64_t gen = kq_binding_set_generation(set);
    if (set != p->protos_set || gen != p->protos_gen) { /* a new set: start a new cache */
        lua_newtable(L);
        lua_rawseti(L, LUA_REGISTRYINDEX, p->binds_protos);
        p->protos_set = set;
        p->protos_gen = gen;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->binds_protos);
    /* a topic's bindings are one array of the (immutable) set: its address is the key */
    lua_pushlightuserdata(L, (void *)binds);
    lua_rawget(L, -2);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        kq_policy_push_binds(L, binds, n);
        lua_pushlightuserdata(L, (void *)binds);
        lua_pushvalue(L, -2);
        lua_rawset(L, -4);
    }
    lua_remove(L, -2);
}

/* Pushes m's fields as the builders take them (11 values). */
static void push_message_fields(lua_State *L, const struct kq_publish_view *m)
{
    lua_pushstring(L, m->message_id ? m->message_id : "");
    lua_pushstring(L, m->topic ? m->topic : "");
    lua_pushstring(L, m->message_type ? m->message_type : "");
    lua_pushstring(L, m->group ? m->group : "");
    lua_pushstring(L, m->peer ? m->peer : "");
    lua_pushnumber(L, (double)m->body_size);
    lua_pushboolean(L, m->fly);
    lua_pushboolean(L, m->commit);
    lua_pushnumber(L, (double)m->expired_time);
    lua_pushnumber(L, m->deliver_limit);
    lua_createtable(L, 0, (int)m->n_properties);
    for (size_t i = 0; i < m->n_properties; i++) {
        lua_pushstring(L, m->properties[i].key);
        lua_pushstring(L, m->properties[i].value);
        lua_rawset(L, -3);
    }
}

void kq_policy_push_message(lua_State *L, struct kq_policy *p, const struct kq_publish_view *m)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->build_message);
    push_message_fields(L, m);
    lua_call(L, 11, 1);
}

void kq_policy_call_publish(lua_State *L, struct kq_policy *p, const struct kq_publish_view *m)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->build_publish);
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->hooks[H_PUBLISH].ref);
    push_message_fields(L, m);
    lua_call(L, 12, 2);
}

void kq_policy_call_route_message(lua_State *L, struct kq_policy *p,
                                  const struct kq_binding_set *set, const struct kq_publish_view *m,
                                  const struct kq_binding *binds, size_t n)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->build_route);
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->hooks[H_ROUTE_MESSAGE].ref);
    push_binds_proto(L, p, set, binds, n);
    push_message_fields(L, m);
    lua_call(L, 13, 1);
}
