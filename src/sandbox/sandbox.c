/* The safe globals of a chunk's environment and the closed string metatable (sandbox.h). */
#include "sandbox/sandbox.h"

#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <string.h>

const char *const kq_sandbox_base[] = {"assert",   "error",        "ipairs",       "next",
                                       "pairs",    "rawequal",     "rawget",       "rawset",
                                       "select",   "setmetatable", "getmetatable", "tonumber",
                                       "tostring", "type",         "unpack",       NULL};

/* Pushes a shallow copy of the table at idx without its `dump` field. */
static void push_copy(lua_State *L, int idx)
{
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    lua_newtable(L);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -4);
    }
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
}

void kq_sandbox_push_env(lua_State *L, bool with_bit)
{
    static const char *const libs[] = {"string", "table", "math", "bit", NULL};
    lua_newtable(L);
    for (const char *const *n = kq_sandbox_base; *n; n++) {
        lua_getglobal(L, *n);
        lua_setfield(L, -2, *n);
    }
    for (const char *const *n = libs; *n; n++) {
        if (!with_bit && strcmp(*n, "bit") == 0)
            continue;
        lua_getglobal(L, *n);
        push_copy(L, -1);
        lua_setfield(L, -3, *n);
        lua_pop(L, 1);
    }
}

int kq_sandbox_load_text(lua_State *L, const char *src, size_t len, const char *path)
{
    lua_pushfstring(L, "@%s", path);
    const char *chunk = lua_tostring(L, -1);
    int rc = luaL_loadbufferx(L, src, len, chunk, "t");
    lua_remove(L, -2);
    if (rc == 0) /* this function and every function it contains: interpreted only, ever */
        luaJIT_setmode(L, -1, LUAJIT_MODE_ALLFUNC | LUAJIT_MODE_OFF);
    if (rc != 0) {
        const char *m = lua_tostring(L, -1);
        if (m && strcmp(m, "attempt to load chunk with wrong mode") == 0) {
            lua_pop(L, 1);
            lua_pushfstring(L, "%s: must be Lua source text, not bytecode", path);
        }
    }
    return rc;
}

void kq_sandbox_close_strings(lua_State *L)
{
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1); /* the metatable every string shares */
    lua_getglobal(L, "string");
    push_copy(L, -1); /* what s:name() finds: the bounded functions, no dump */
    lua_setfield(L, -3, "__index");
    lua_pop(L, 1);
    lua_pushboolean(L, 0); /* getmetatable("") answers false */
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 2);
}
