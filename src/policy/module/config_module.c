/* policy.load_config: runs a config file exactly as `kiteq CONFIG` reads it
 * (kq_config_load_file, or kq_config_load_buffer for text, then kq_config_validate: the
 * broker's sandbox, budgets and checks) and answers the selected cluster as loaded, so a
 * spec checks the real loader's verdict instead of a Lua copy of its rules. The flags, the
 * policies folder, the store and the addresses (what `kiteq --check` adds) are not looked
 * at. Group secrets are not handed out: `groups` lists the group names. */
#include "policy/module/config_module.h"

#include <lauxlib.h>
#include <stdlib.h>

#include "config/config.h"

static void set_string(lua_State *L, const char *key, const char *value)
{
    if (!value)
        return; /* unset: nil */
    lua_pushstring(L, value);
    lua_setfield(L, -2, key);
}

static void set_number(lua_State *L, const char *key, double value)
{
    lua_pushnumber(L, value);
    lua_setfield(L, -2, key);
}

static void push_bindings(lua_State *L, const struct kq_config *c)
{
    lua_createtable(L, (int)c->n_bindings, 0);
    for (size_t i = 0; i < c->n_bindings; i++) {
        const struct kq_binding *b = &c->bindings[i];
        lua_createtable(L, 0, 6);
        set_string(L, "group", b->group_id);
        set_string(L, "topic", b->topic);
        set_string(L, "message_type", b->message_type);
        set_string(L, "bind_type", kq_bind_type_name(b->bind_type));
        set_number(L, "watermark", b->watermark);
        lua_pushboolean(L, b->persistent);
        lua_setfield(L, -2, "persistent");
        lua_rawseti(L, -2, (int)i + 1);
    }
}

/* The loaded cluster, keys as in the file (the numbers after defaults). */
static void push_config(lua_State *L, const struct kq_config *c)
{
    lua_createtable(L, 0, 28);
    set_string(L, "cluster", c->cluster_name);
    set_string(L, "registry", c->registry);
    set_string(L, "env", c->env);
    set_string(L, "bind", c->bind);
    set_string(L, "db", c->db);
    set_string(L, "admin", c->admin);
    set_string(L, "policies", c->policies);
    set_string(L, "logLevel", c->log_level);
    set_string(L, "logFile", c->log_file);
    lua_pushboolean(L, c->admin_token != NULL);
    lua_setfield(L, -2, "adminToken"); /* set or not; the token itself stays here */
    lua_pushboolean(L, c->delivery_first);
    lua_setfield(L, -2, "deliveryFirst");
    for (size_t i = 0; i < kq_config_n_ints; i++)
        set_number(L, kq_config_ints[i].key, kq_config_int_value(c, &kq_config_ints[i]));
    lua_createtable(L, (int)c->n_topics, 0);
    for (size_t i = 0; i < c->n_topics; i++) {
        lua_pushstring(L, c->topics[i]);
        lua_rawseti(L, -2, (int)i + 1);
    }
    lua_setfield(L, -2, "topics");
    lua_createtable(L, (int)c->n_groups, 0);
    for (size_t i = 0; i < c->n_groups; i++) {
        lua_pushstring(L, c->groups[i].group_id);
        lua_rawseti(L, -2, (int)i + 1);
    }
    lua_setfield(L, -2, "groups");
    push_bindings(L, c);
    lua_setfield(L, -2, "bindings");
}

int kq_module_load_config(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    const char *cluster = luaL_optstring(L, 2, NULL);
    size_t len = 0;
    const char *text = luaL_optlstring(L, 3, NULL, &len);
    struct kq_config *c = calloc(1, sizeof *c);
    char *err = malloc(8192);
    if (!c || !err) {
        free(c);
        free(err);
        return luaL_error(L, "out of memory");
    }
    err[0] = 0;
    kq_config_defaults(c);
    int rc = text ? kq_config_load_buffer(c, path, text, len, cluster, err, 8192)
                  : kq_config_load_file(c, path, cluster, err, 8192);
    if (rc == 0)
        rc = kq_config_validate(c, err, 8192);
    if (rc == 0) {
        push_config(L, c);
    } else {
        lua_pushnil(L);
        lua_pushstring(L, err);
    }
    kq_config_free(c);
    free(c);
    free(err);
    return rc == 0 ? 1 : 2;
}
