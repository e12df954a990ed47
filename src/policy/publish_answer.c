/* on_publish's answers: reading and checking them (nil, "reject", reason, or a table of
 * changes), and kq.changes{...}, an answer checked once when it is made.
 *
 * Why kq.changes: most hooks answer a few constant changes ("add region = default"), and
 * reading a table of changes back from Lua is a dozen C API calls and checks per message
 * (about a third of a cheap hook's cost, docs/BENCHMARKS.md). kq.changes checks the table
 * when it is made - usually at load, so a mistake fails the load instead of every message -
 * and keeps a copy in C form: answering it costs a type check, and what depends on the
 * message (the properties it already has, whether a group is bound on its topic, a delay
 * against its expiry) is checked per message as for a table. Later changes to the table
 * it was made from do not change it. An expiry is a moment, not a constant change: it is
 * refused there. */
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "policy/generation.h"

/* ---- checks shared by both kinds of answer ----------------------------------------------- */

/* The Lua string at idx if it is one of at most max bytes without NUL, else NULL. */
static const char *plain_string(lua_State *L, int idx, size_t max, size_t *len)
{
    if (lua_type(L, idx) != LUA_TSTRING)
        return NULL;
    const char *s = lua_tolstring(L, idx, len);
    return *len <= max && strlen(s) == *len ? s : NULL;
}

/* One properties entry (key at -2, value at -1): true with the key and the value (NULL:
 * false, delete it), or false + why. */
static bool property_entry(lua_State *L, const char **k, size_t *kl, const char **val, size_t *vl,
                           char *why, size_t len)
{
    *k = plain_string(L, -2, KQ_POLICY_MAX_PROPERTY_KEY, kl);
    if (!*k || !*kl) {
        snprintf(why, len,
                 "on_publish: properties keys must be strings of 1..%d bytes without NUL "
                 "(got %s)",
                 KQ_POLICY_MAX_PROPERTY_KEY, luaL_typename(L, -2));
        return false;
    }
    if (strcmp(*k, KQ_PROP_DELAY_MS) == 0 || strcmp(*k, KQ_PROP_DELIVER_AT) == 0 ||
        strcmp(*k, KQ_PROP_GROUPS) == 0) {
        snprintf(why, len,
                 "on_publish: property \"%s\" is the broker's (answer delay_ms or groups "
                 "instead)",
                 *k);
        return false;
    }
    bool del = lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1);
    *val = del ? NULL : plain_string(L, -1, KQ_POLICY_MAX_PROPERTY_VALUE, vl);
    if (!del && !*val) {
        snprintf(why, len,
                 "on_publish: properties[\"%.60s\"] must be a string of at most %d bytes "
                 "without NUL, or false to delete (got %s)",
                 *k, KQ_POLICY_MAX_PROPERTY_VALUE, luaL_typename(L, -1));
        return false;
    }
    if (del)
        *vl = 0;
    return true;
}

/* A whole number in [lo, hi] at -1 into *out, or false + why. */
static bool whole_number(lua_State *L, const char *k, double lo, double hi, double *out, char *why,
                         size_t len)
{
    double d = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : NAN;
    if (!(d >= lo && d <= hi && d == floor(d))) {
        snprintf(why, len, "on_publish: %s must be a whole number in %.0f..%.0f (got %s)", k, lo,
                 hi, lua_type(L, -1) == LUA_TNUMBER ? lua_tostring(L, -1) : luaL_typename(L, -1));
        return false;
    }
    *out = d;
    return true;
}

/* The i-th name of a groups answer at -1 (1-based): a string without a comma (they are stored
 * comma separated), or NULL + why. */
static const char *group_name(lua_State *L, size_t i, char *why, size_t len)
{
    const char *g = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    if (!g || strchr(g, ','))
        snprintf(why, len, "on_publish: groups[%zu] %s%.60s%s %s", i, g ? "\"" : "",
                 g ? g : luaL_typename(L, -1), g ? "\"" : "",
                 g ? "contains a comma" : "is not a group name");
    return g && !strchr(g, ',') ? g : NULL;
}

static void unknown_change(const char *k, const char *type, char *why, size_t len)
{
    snprintf(why, len,
             "on_publish: unknown change '%.60s' (changes are properties, expired_time, "
             "deliver_limit, delay_ms, groups)",
             k[0] ? k : type);
}

/* ---- applying changes to the message of the call ---------------------------------------- */

static const char *copy_string(struct publish_call *pc, const char *s, size_t len)
{
    char *dst = pc->c.p->publish_strings + pc->used; /* fits: see PUBLISH_SCRATCH_BYTES */
    memcpy(dst, s, len);
    dst[len] = 0;
    pc->used += len + 1;
    return dst;
}

/* The verdict as "change nothing yet": the message's own fields. */
static void start_changes(struct publish_call *pc)
{
    const struct kq_publish_view *m = pc->m;
    struct kq_publish_verdict *v = &pc->v;
    v->action = KQ_PUBLISH_CHANGE;
    v->properties = m->properties;
    v->n_properties = m->n_properties;
    v->expired_time = m->expired_time;
    v->deliver_limit = m->deliver_limit;
    v->delay_ms = -1;
    v->groups = NULL;
    v->n_groups = 0;
}

/* The message's properties copied into the list the changes are made to; false + why. */
static bool start_properties(struct publish_call *pc)
{
    if (pc->m->n_properties > KQ_POLICY_MAX_PROPERTIES) {
        snprintf(pc->c.why, sizeof pc->c.why,
                 "on_publish: the message has %zu properties, more than the %d a change may "
                 "leave",
                 pc->m->n_properties, KQ_POLICY_MAX_PROPERTIES);
        return false;
    }
    if (pc->m->n_properties) /* properties is NULL when there are none */
        memcpy(pc->c.p->publish_props, pc->m->properties,
               pc->m->n_properties * sizeof *pc->m->properties);
    pc->v.n_properties = pc->m->n_properties;
    pc->v.properties = pc->c.p->publish_props;
    return true;
}

/* Sets key k to val (NULL: deletes it) in the verdict's list; false + why when the list
 * would grow past its bound. */
static bool set_property(struct publish_call *pc, const char *k, size_t kl, const char *val,
                         size_t vl)
{
    struct kq_publish_verdict *v = &pc->v;
    struct kq_property_kv *list = pc->c.p->publish_props;
    bool set = false;
    for (size_t i = 0; i < v->n_properties;) {
        if (strcmp(list[i].key, k) != 0) {
            i++;
        } else if (val && !set) { /* the first one takes the value, duplicates go */
            list[i++].value = copy_string(pc, val, vl);
            set = true;
        } else {
            memmove(&list[i], &list[i + 1], (v->n_properties - i - 1) * sizeof *list);
            v->n_properties--;
        }
    }
    if (!val || set)
        return true;
    if (v->n_properties >= KQ_POLICY_MAX_PROPERTIES) {
        snprintf(pc->c.why, sizeof pc->c.why,
                 "on_publish: setting \"%.60s\" would leave more than %d properties", k,
                 KQ_POLICY_MAX_PROPERTIES);
        return false;
    }
    list[v->n_properties].key = copy_string(pc, k, kl);
    list[v->n_properties].value = copy_string(pc, val, vl);
    v->n_properties++;
    return true;
}

/* Adds group g (the answer's i-th) to the verdict's groups if it is bound on the message's
 * topic (duplicates collapse); false + why when it is not. */
static bool add_group(struct publish_call *pc, const char *g, size_t i)
{
    const struct kq_publish_view *m = pc->m;
    const struct kq_binding *binds = m->binds;
    size_t n_binds = m->n_binds;
    if (!binds && m->bind_set)
        binds = kq_binding_set_topic(m->bind_set, m->topic, &n_binds);
    const char *bound = NULL;
    for (size_t j = 0; binds && j < n_binds && !bound; j++)
        if (strcmp(binds[j].group_id, g) == 0)
            bound = binds[j].group_id;
    if (!bound) {
        snprintf(pc->c.why, sizeof pc->c.why,
                 "on_publish: groups[%zu] \"%.60s\" has no binding on the topic", i, g);
        return false;
    }
    if (!pc->v.groups) {
        pc->v.groups = pc->c.p->publish_groups;
        pc->v.n_groups = 0;
    }
    bool dup = false;
    for (size_t j = 0; j < pc->v.n_groups && !dup; j++)
        dup = strcmp(pc->v.groups[j], bound) == 0;
    if (!dup && pc->v.n_groups < KQ_POLICY_MAX_ROUTES) /* bound ones are fewer than that */
        pc->v.groups[pc->v.n_groups++] = bound;
    return true;
}

/* After all changes: a delay must end before the (maybe changed) expiry. */
static void check_delay(struct publish_call *pc)
{
    const struct kq_publish_verdict *v = &pc->v;
    if (!pc->c.why[0] && v->delay_ms > 0 &&
        pc->m->now_sec * 1000 + v->delay_ms >= v->expired_time * 1000)
        snprintf(pc->c.why, sizeof pc->c.why,
                 "on_publish: delay_ms %lld would make the message due after it expires "
                 "(expired_time %lld)",
                 (long long)v->delay_ms, (long long)v->expired_time);
}

/* ---- a table of changes ------------------------------------------------------------------ */

static bool table_properties(lua_State *L, struct publish_call *pc)
{
    if (!lua_istable(L, -1)) {
        snprintf(pc->c.why, sizeof pc->c.why,
                 "on_publish: properties must be a table of key = string or false (got %s)",
                 luaL_typename(L, -1));
        return false;
    }
    if (!start_properties(pc))
        return false;
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        const char *k, *val;
        size_t kl, vl;
        if (!property_entry(L, &k, &kl, &val, &vl, pc->c.why, sizeof pc->c.why) ||
            !set_property(pc, k, kl, val, vl))
            return false;
        lua_pop(L, 1);
    }
    return true;
}

static bool table_groups(lua_State *L, struct publish_call *pc)
{
    size_t n = lua_istable(L, -1) ? lua_objlen(L, -1) : 0;
    if (n == 0) {
        snprintf(pc->c.why, sizeof pc->c.why,
                 "on_publish: groups must be a non-empty list of group names (got %s)",
                 luaL_typename(L, -1));
        return false;
    }
    pc->v.groups = pc->c.p->publish_groups;
    pc->v.n_groups = 0;
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, (int)i);
        const char *g = group_name(L, i, pc->c.why, sizeof pc->c.why);
        if (!g || !add_group(pc, g, i))
            return false;
        lua_pop(L, 1);
    }
    return true;
}

/* The changes table at index 1: every key known and valid, or nothing is applied. */
static void table_changes(lua_State *L, struct publish_call *pc)
{
    const struct kq_publish_view *m = pc->m;
    struct kq_publish_verdict *v = &pc->v;
    char *why = pc->c.why;
    size_t wl = sizeof pc->c.why;
    start_changes(pc);
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
        double d;
        if (strcmp(k, "properties") == 0) {
            if (!table_properties(L, pc))
                return;
        } else if (strcmp(k, "expired_time") == 0) {
            if (!whole_number(L, k, (double)m->now_sec + 1,
                              (double)(m->now_sec + KQ_PUBLISH_MAX_EXPIRED_SEC), &d, why, wl))
                return;
            v->expired_time = (int64_t)d;
        } else if (strcmp(k, "deliver_limit") == 0) {
            if (!whole_number(L, k, 1, KQ_PUBLISH_MAX_DELIVER_LIMIT, &d, why, wl))
                return;
            v->deliver_limit = (int32_t)d;
        } else if (strcmp(k, "delay_ms") == 0) {
            if (!whole_number(L, k, 0, (double)KQ_PUBLISH_MAX_DELAY_MS, &d, why, wl))
                return;
            v->delay_ms = (int64_t)d;
        } else if (strcmp(k, "groups") == 0) {
            if (!table_groups(L, pc))
                return;
        } else {
            unknown_change(k, luaL_typename(L, -2), why, wl);
            return;
        }
        lua_pop(L, 1);
    }
    check_delay(pc); /* after the loop: the expiry may have been changed by the same answer */
}

/* ---- kq.changes -------------------------------------------------------------------------- */

/* A checked answer, in one userdata: the header, then the entries, then their text. */
struct constant_changes {
    bool has_properties;
    size_t n_properties;
    int32_t deliver_limit; /* 0: unchanged */
    int64_t delay_ms;      /* -1: unchanged */
    size_t n_groups;
    struct constant_property {
        const char *key, *value; /* value NULL: delete the key */
        size_t key_len, value_len;
    } *properties;
    const char **groups;
};

/* What kq.changes{...} copies: entries and bytes of text. */
struct constant_size {
    size_t properties, groups, text;
};

/* Checks the table at 1 (raises with why when it is not a valid constant answer), counting
 * its entries and text into size; with k, also copies them into k and text (sized by a first
 * pass without k). Raw reads only: no metamethod runs between the two passes. */
static void read_constant(lua_State *L, struct constant_size *size, struct constant_changes *k,
                          char *text)
{
    char why[256];
    const size_t skip = strlen("on_publish: "); /* the shared checks' prefix */
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
        bool limit = strcmp(key, "deliver_limit") == 0;
        double d;
        if (strcmp(key, "properties") == 0) {
            if (!lua_istable(L, -1))
                luaL_error(L, "kq.changes: properties must be a table of key = string or false");
            if (k)
                k->has_properties = true;
            lua_pushnil(L);
            while (lua_next(L, -2)) {
                const char *pk, *pv;
                size_t kl, vl;
                if (!property_entry(L, &pk, &kl, &pv, &vl, why, sizeof why))
                    luaL_error(L, "kq.changes: %s", why + skip);
                if (k) {
                    struct constant_property *e = &k->properties[size->properties];
                    e->key = memcpy(text + size->text, pk, kl + 1);
                    e->key_len = kl;
                    e->value = pv ? memcpy(text + size->text + kl + 1, pv, vl + 1) : NULL;
                    e->value_len = vl;
                }
                size->properties++;
                size->text += kl + 1 + (pv ? vl + 1 : 0);
                lua_pop(L, 1);
            }
        } else if (limit || strcmp(key, "delay_ms") == 0) {
            if (!whole_number(L, key, limit ? 1 : 0,
                              limit ? KQ_PUBLISH_MAX_DELIVER_LIMIT
                                    : (double)KQ_PUBLISH_MAX_DELAY_MS,
                              &d, why, sizeof why))
                luaL_error(L, "kq.changes: %s", why + skip);
            if (k && limit)
                k->deliver_limit = (int32_t)d;
            else if (k)
                k->delay_ms = (int64_t)d;
        } else if (strcmp(key, "groups") == 0) {
            size_t n = lua_istable(L, -1) ? lua_objlen(L, -1) : 0;
            if (n == 0)
                luaL_error(L, "kq.changes: groups must be a non-empty list of group names");
            for (size_t i = 1; i <= n; i++) {
                lua_rawgeti(L, -1, (int)i);
                const char *g = group_name(L, i, why, sizeof why);
                if (!g)
                    luaL_error(L, "kq.changes: %s", why + skip);
                size_t gl = strlen(g);
                if (k)
                    k->groups[size->groups] = memcpy(text + size->text, g, gl + 1);
                size->groups++;
                size->text += gl + 1;
                lua_pop(L, 1);
            }
        } else if (strcmp(key, "expired_time") == 0) {
            luaL_error(L, "kq.changes: expired_time is a moment, not a constant change: "
                          "answer it in a table made per message");
        } else {
            unknown_change(key, luaL_typename(L, -2), why, sizeof why);
            luaL_error(L, "kq.changes: %s", why + skip);
        }
        lua_pop(L, 1);
    }
}

/* kq.changes(t): a checked copy of the changes table t, for on_publish to return. Its
 * upvalue is the generation (whose metatable marks the copies). */
static int l_changes(lua_State *L)
{
    const struct kq_policy *p = lua_touserdata(L, lua_upvalueindex(1));
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    struct constant_size size = {0, 0, 0}, copied = {0, 0, 0};
    read_constant(L, &size, NULL, NULL);
    struct constant_changes *k = lua_newuserdata(
        L, sizeof *k + size.properties * sizeof *k->properties +
               size.groups * sizeof *k->groups + size.text);
    *k = (struct constant_changes){.delay_ms = -1};
    k->properties = (struct constant_property *)(k + 1);
    k->groups = (const char **)(k->properties + size.properties);
    read_constant(L, &copied, k, (char *)(k->groups + size.groups));
    k->n_properties = copied.properties;
    k->n_groups = copied.groups;
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->changes_meta);
    lua_setmetatable(L, 2);
    return 1;
}

void kq_policy_add_changes(lua_State *L, struct kq_policy *p)
{
    if (p->changes_meta == LUA_NOREF) { /* one per generation: it marks kq.changes' values */
        lua_createtable(L, 0, 2);
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "__metatable");
        lua_pushliteral(L, "kq.changes");
        lua_setfield(L, -2, "__name");
        p->changes_meta_at = lua_topointer(L, -1);
        p->changes_meta = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_pushlightuserdata(L, p);
    lua_pushcclosure(L, l_changes, 1);
    lua_setfield(L, -2, "changes");
}

/* The value at idx if kq.changes made it (in this generation), else NULL. */
static const struct constant_changes *constant_at(lua_State *L, int idx, const struct kq_policy *p)
{
    if (lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx))
        return NULL;
    bool ours = lua_topointer(L, -1) == p->changes_meta_at; /* the registry keeps it alive */
    lua_pop(L, 1);
    return ours ? lua_touserdata(L, idx) : NULL;
}

static void constant_changes(struct publish_call *pc, const struct constant_changes *k)
{
    struct kq_publish_verdict *v = &pc->v;
    start_changes(pc);
    if (k->has_properties && !start_properties(pc))
        return;
    for (size_t i = 0; i < k->n_properties; i++) {
        const struct constant_property *e = &k->properties[i];
        if (!set_property(pc, e->key, e->key_len, e->value, e->value_len))
            return;
    }
    if (k->deliver_limit)
        v->deliver_limit = k->deliver_limit;
    v->delay_ms = k->delay_ms;
    for (size_t i = 0; i < k->n_groups; i++)
        if (!add_group(pc, k->groups[i], i + 1))
            return;
    check_delay(pc);
}

/* ---- the answer -------------------------------------------------------------------------- */

void kq_policy_read_publish_answer(lua_State *L, struct publish_call *pc)
{
    const struct constant_changes *k;
    if (lua_isnil(L, 1)) {
        pc->c.use_default = true;
    } else if (lua_istable(L, 1)) {
        table_changes(L, pc);
    } else if ((k = constant_at(L, 1, pc->c.p))) {
        constant_changes(pc, k);
    } else if (lua_type(L, 1) == LUA_TSTRING && strcmp(lua_tostring(L, 1), "reject") == 0 &&
               (lua_isnil(L, 2) || lua_type(L, 2) == LUA_TSTRING)) {
        pc->v.action = KQ_PUBLISH_REJECT;
        const char *why = lua_isnil(L, 2) ? "" : lua_tostring(L, 2);
        snprintf(pc->v.reason, sizeof pc->v.reason, "%s",
                 why[0] ? why : "rejected by the publish policy"); /* never a blank feedback */
    } else {
        snprintf(pc->c.why, sizeof pc->c.why,
                 "on_publish must return nil, \"reject\", reason, a table of changes or "
                 "kq.changes{...} (got %s%s%s)",
                 luaL_typename(L, 1), lua_type(L, 1) == LUA_TSTRING ? " " : "",
                 lua_type(L, 1) == LUA_TSTRING ? lua_tostring(L, 1) : "");
    }
}
