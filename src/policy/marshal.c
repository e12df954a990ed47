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
 * not keep them (docs/POLICIES.md). m.properties and the strings that repeat from message
 * to message are kept too (below: "strings that repeat").
 *
 * The builders return m (and binds) and C calls the hook itself: called from the compiled
 * builder, the hook (never compiled) ended the builder's trace in an exit to the
 * interpreter at every call, which cost more than a second lua_call (~800 instructions a
 * message with the example hooks, docs/BENCHMARKS.md).
 *
 * The message id is the one field new for every message (a string made and interned, then
 * garbage, ~350 instructions a call) and few hooks read it: the reused `m` of on_publish
 * and route_message has none, and its metatable's __index answers m.message_id from C
 * (the id of the call running) when a hook asks. */
#include <lauxlib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy/generation.h"
#include "sandbox/sandbox.h"

/* Parameters of the builders in the order push_message_fields pushes them (the message id
 * is nil for `publish` and `route`: see message_id_of): s is the call
 * site's string table (s[1..4]: topic, message_type, group, peer; s[3 + 2i], s[4 + 2i]: the
 * i-th property's key and value), props the properties table to fill with the n properties
 * (rawset: its __newindex notes only a hook's additions). `publish` and `route` fill one `m`
 * table of the generation (a hook that adds a key to it gets a new one next time);
 * `message` builds a new one (on_dead, which adds `attempts`). */
static const char BUILDERS[] =
    "local setmetatable, rawset, message_id_of = ...\n"
    "local reused, dirty\n"
    "local noted = { __metatable = false, __index = message_id_of,\n"
    "                __newindex = function(t, k, v) dirty = true; rawset(t, k, v) end }\n"
    "local function message(s, message_id, body_size, fly, commit, expired_time,\n"
    "                       deliver_limit, props, n)\n"
    "  for i = 1, n do rawset(props, s[3 + 2 * i], s[4 + 2 * i]) end\n"
    "  return { message_id = message_id, topic = s[1], message_type = s[2], group = s[3],\n"
    "           peer = s[4], body_size = body_size, fly = fly, commit = commit,\n"
    "           expired_time = expired_time, deliver_limit = deliver_limit,\n"
    "           properties = props }\n"
    "end\n"
    "local function fill(s, a, b, c, d, e, f, props, n)\n"
    "  if dirty ~= false then -- clean only once made (a call stopped midway retries)\n"
    "    reused = setmetatable(message(s, a, b, c, d, e, f, props, n), noted)\n"
    "    dirty = false\n"
    "    return reused\n"
    "  end\n"
    "  for i = 1, n do rawset(props, s[3 + 2 * i], s[4 + 2 * i]) end\n"
    "  local m = reused\n"
    "  m.topic = s[1]; m.message_type = s[2]; m.group = s[3]; m.peer = s[4]\n"
    "  m.body_size = b; m.fly = c; m.commit = d; m.expired_time = e; m.deliver_limit = f\n"
    "  m.properties = props\n"
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
    "  publish = function(s, a, b, c, d, e, f, props, n)\n"
    "    return fill(s, a, b, c, d, e, f, props, n)\n"
    "  end,\n"
    "  route = function(proto, s, a, b, c, d, e, f, props, n)\n"
    "    return fill(s, a, b, c, d, e, f, props, n), binds_of(proto)\n"
    "  end,\n"
    "}\n";

/* ---- strings that repeat, and a properties table refilled in place ------------------------ */

/* A message's topic, type, group, peer and property keys and values mostly repeat from one
 * message to the next. They reach the builders through a string table per call site
 * (on_publish sees the properties as published, route_message as stored: one site each
 * keeps both repeating), and C remembers the text of what it last stored in each slot: a
 * string that repeats costs a strcmp, not hashing, interning and a C API call (and it stays
 * alive, never garbage). m.properties is one table per site refilled in place while the
 * message has the same keys in the same order and the hook added no key to it (a
 * __newindex notes that). */
enum marshal_site_id { SITE_PUBLISH, SITE_ROUTE, SITE_MESSAGE, MARSHAL_SITES };
enum { SLOT_TOPIC, SLOT_TYPE, SLOT_GROUP, SLOT_PEER, SLOT_PROPS };
#define CACHED_PROPERTIES 16 /* beyond: stored each call, the table is not reused */
#define SLOTS (SLOT_PROPS + 2 * CACHED_PROPERTIES)
#define SLOT_TEXT 64 /* longer strings are stored each call */

struct slot {
    bool set;
    char text[SLOT_TEXT];
};

struct marshal_site {
    struct slot slots[SLOTS];
    int strings;      /* registry ref: the site's string table (slot + 1 -> its string) */
    int props;        /* registry ref: the properties table refilled in place */
    size_t props_n;   /* the properties its keys came from (keys in slots) */
    bool props_dirty; /* the hook added a key to it: make a new one */
    int props_meta;   /* registry ref: the metatable noting an added key */
};

struct kq_policy_marshal { /* one per generation */
    struct marshal_site sites[MARSHAL_SITES];
};

static bool slot_holds(const struct slot *s, const char *text)
{
    return s->set && strcmp(s->text, text) == 0;
}

/* Puts text at strings[slot + 1] and notes it in the slot (NULL: none). */
__attribute__((noinline)) static void store_new_string(lua_State *L, struct slot *s, int slot,
                                                       int strings, const char *text)
{
    if (s)
        s->set = false; /* until the new string is in the table (storing may raise) */
    lua_pushstring(L, text);
    size_t len;
    lua_tolstring(L, -1, &len);
    lua_rawseti(L, strings, slot + 1);
    if (s && len < SLOT_TEXT) {
        memcpy(s->text, text, len + 1);
        s->set = true;
    }
}

/* store_new_string unless the slot says text is there already: the common case, inline. */
static inline void store_string(lua_State *L, struct slot *s, int slot, int strings,
                                const char *text)
{
    if (!s || !slot_holds(s, text))
        store_new_string(L, s, slot, strings, text);
}

/* __newindex of a reused properties table: a key was added, the next call makes a new one. */
static int note_added_property(lua_State *L)
{
    bool *dirty = lua_touserdata(L, lua_upvalueindex(1));
    *dirty = true;
    lua_rawset(L, 1);
    return 0;
}

/* Stores m's properties in the site's string table (at index strings) and pushes the table
 * the builder fills with them. */
static void push_properties(lua_State *L, struct marshal_site *site, int strings,
                            const struct kq_publish_view *m)
{
    size_t n = m->n_properties;
    bool same = !site->props_dirty && n == site->props_n && n <= CACHED_PROPERTIES;
    for (size_t i = 0; i < n && same; i++)
        same = slot_holds(&site->slots[SLOT_PROPS + 2 * i], m->properties[i].key);
    for (size_t i = 0; i < n; i++) {
        int k = SLOT_PROPS + 2 * (int)i;
        bool cached = i < CACHED_PROPERTIES;
        if (!same) /* same: every key is in its slot already */
            store_string(L, cached ? &site->slots[k] : NULL, k, strings, m->properties[i].key);
        store_string(L, cached ? &site->slots[k + 1] : NULL, k + 1, strings,
                     m->properties[i].value);
    }
    if (same) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, site->props);
        return;
    }
    lua_createtable(L, 0, (int)n);
    lua_rawgeti(L, LUA_REGISTRYINDEX, site->props_meta);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawseti(L, LUA_REGISTRYINDEX, site->props);
    site->props_n = n;
    site->props_dirty = false;
}

/* The site's string table, properties table and its metatable into the registry. */
static void init_site(lua_State *L, struct marshal_site *site)
{
    lua_createtable(L, SLOTS, 0);
    site->strings = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newtable(L); /* a placeholder: props_n never matches it */
    site->props = luaL_ref(L, LUA_REGISTRYINDEX);
    site->props_n = SIZE_MAX;
    lua_createtable(L, 0, 2);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pushlightuserdata(L, &site->props_dirty);
    lua_pushcclosure(L, note_added_property, 1);
    lua_setfield(L, -2, "__newindex");
    site->props_meta = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* __index of the reused `m`: m.message_id is the id of the message of the call running
 * (a hook that kept an `m` sees the next message's, as for its other fields). */
static int message_id_of(lua_State *L)
{
    const struct kq_policy *p = lua_touserdata(L, lua_upvalueindex(1));
    const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "";
    if (strcmp(k, "message_id") == 0 && p->message_id)
        lua_pushstring(L, p->message_id);
    else
        lua_pushnil(L);
    return 1;
}

/* The call the protected function runs: per thread (a generation is used by one thread at a
 * time, and its calls never nest), so the function reads it without a Lua API call, and the
 * argument needs no light userdata pushed per call. */
static _Thread_local struct {
    kq_policy_fn fn;
    void *arg;
} running;

static int run_protected(lua_State *L) { return running.fn(L, running.arg); }

int kq_policy_pcall(struct kq_policy *p, kq_policy_fn fn, void *arg)
{
    running.fn = fn;
    running.arg = arg;
    lua_rawgeti(p->L, LUA_REGISTRYINDEX, p->protected_call); /* allocates nothing */
    int rc = lua_pcall(p->L, 0, 0, 0);
    running.fn = NULL;
    p->message_id = NULL; /* it points into the caller's message */
    return rc;
}

/* Runs inside lua_cpcall: the protected function and the chunk's functions into p's refs. */
static int load_builders(lua_State *L)
{
    struct kq_policy *p = lua_touserdata(L, 1);
    lua_settop(L, 0);
    lua_pushcfunction(L, run_protected);
    p->protected_call = luaL_ref(L, LUA_REGISTRYINDEX);
    /* ours, and bounded (loops over the bindings only): compiled, without the count hook */
    if (luaL_loadbufferx(L, BUILDERS, sizeof BUILDERS - 1, "=(policy builders)", "t") != 0)
        return lua_error(L);
    kq_lua_budget_jit_trusted(L);
    lua_newtable(L); /* it needs no globals: what it uses comes as arguments */
    lua_setfenv(L, -2);
    lua_getglobal(L, "setmetatable");
    lua_getglobal(L, "rawset");
    lua_pushlightuserdata(L, p);
    lua_pushcclosure(L, message_id_of, 1);
    kq_lua_budget_begin(L, &p->budget, 1000, 1000);
    lua_call(L, 3, 1);
    static const char *const names[] = {"message", "publish", "route"};
    int *refs[] = {&p->build_message, &p->build_publish, &p->build_route};
    for (size_t i = 0; i < 3; i++) {
        lua_getfield(L, 1, names[i]);
        *refs[i] = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_newtable(L);
    p->binds_protos = luaL_ref(L, LUA_REGISTRYINDEX);
    for (int i = 0; i < MARSHAL_SITES; i++)
        init_site(L, &p->marshal->sites[i]);
    return 0;
}

int kq_policy_marshal_init(struct kq_policy *p)
{
    p->marshal = calloc(1, sizeof *p->marshal);
    if (!p->marshal)
        return -1;
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
        lua_pushstring(L, kq_bind_type_name(b->bind_type));
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

/* Pushes m's fields as the builders take them (9 values). */
static void push_message_fields(lua_State *L, struct kq_policy *p, enum marshal_site_id id,
                                const struct kq_publish_view *m)
{
    struct marshal_site *site = &p->marshal->sites[id];
    lua_rawgeti(L, LUA_REGISTRYINDEX, site->strings);
    int strings = lua_gettop(L);
    const char *texts[] = {m->topic, m->message_type, m->group, m->peer};
    for (int i = SLOT_TOPIC; i <= SLOT_PEER; i++)
        store_string(L, &site->slots[i], i, strings, texts[i] ? texts[i] : "");
    if (id == SITE_MESSAGE) { /* a new table each call: the id in it */
        lua_pushstring(L, m->message_id ? m->message_id : "");
    } else { /* the reused m: asked for through message_id_of */
        lua_pushnil(L);
        p->message_id = m->message_id ? m->message_id : "";
    }
    lua_pushnumber(L, (double)m->body_size);
    lua_pushboolean(L, m->fly);
    lua_pushboolean(L, m->commit);
    lua_pushnumber(L, (double)m->expired_time);
    lua_pushnumber(L, m->deliver_limit);
    push_properties(L, site, strings, m);
    lua_pushnumber(L, (double)m->n_properties);
}

void kq_policy_push_message(lua_State *L, struct kq_policy *p, const struct kq_publish_view *m)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->build_message);
    push_message_fields(L, p, SITE_MESSAGE, m);
    lua_call(L, 9, 1);
}

void kq_policy_call_publish(lua_State *L, struct kq_policy *p, const struct kq_publish_view *m)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->hooks[H_PUBLISH].ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->build_publish);
    push_message_fields(L, p, SITE_PUBLISH, m);
    lua_call(L, 9, 1);
    lua_call(L, 1, 2);
}

void kq_policy_call_route_message(lua_State *L, struct kq_policy *p,
                                  const struct kq_binding_set *set, const struct kq_publish_view *m,
                                  const struct kq_binding *binds, size_t n)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->hooks[H_ROUTE_MESSAGE].ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->build_route);
    push_binds_proto(L, p, set, binds, n);
    push_message_fields(L, p, SITE_ROUTE, m);
    lua_call(L, 10, 2);
    lua_call(L, 2, 1);
}

void kq_policy_marshal_free(struct kq_policy *p) { free(p->marshal); }
