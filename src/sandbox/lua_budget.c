#include "sandbox/lua_budget.h"

#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/clock.h"
#include "sandbox/sandbox.h"
#include "sandbox/watchdog.h"

static const char BUDGET_KEY = 0; /* its address keys the budget in the Lua registry */
static _Thread_local const atomic_bool *thread_stop;

/* The watched run in progress, for the watchdog's signal handler (which runs on the watched
 * thread, the only one that writes these). in_call is set after, and cleared before, every
 * lua_sethook of that thread on a watched state, so the handler's lua_sethook never runs
 * inside another. armed: the run has a hook to remove at its end. */
static lua_State *volatile watched_L;
static struct kq_lua_budget *volatile watched_b;
static volatile sig_atomic_t in_call, armed;

void *kq_lua_budget_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct kq_lua_budget *b = ud;
    if (!ptr)
        osize = 0; /* for a new block osize is a type tag, not a size */
    if (nsize == 0) {
        kq_lua_blocks_realloc(&b->blocks, ptr, osize, 0);
        b->used -= osize;
        return NULL;
    }
    if (nsize > osize && b->used + (nsize - osize) > b->max)
        return NULL;
    void *p = kq_lua_blocks_realloc(&b->blocks, ptr, osize, nsize);
    if (p)
        b->used = b->used - osize + nsize;
    return p;
}

void kq_lua_budget_stop_flag(const atomic_bool *flag) { thread_stop = flag; }

void kq_lua_budget_close(lua_State *L, struct kq_lua_budget *b)
{
    lua_close(L);
    kq_lua_blocks_release(&b->blocks);
}

struct kq_lua_budget *kq_lua_budget_of(lua_State *L)
{
    lua_pushlightuserdata(L, (void *)&BUDGET_KEY);
    lua_rawget(L, LUA_REGISTRYINDEX);
    struct kq_lua_budget *b = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return b;
}

/* Why the run must stop now, or NULL. */
static const char *over(lua_State *L, const struct kq_lua_budget *b)
{
    if (b->stop && atomic_load_explicit(b->stop, memory_order_relaxed))
        return "the load was abandoned";
    if (b->steps > b->max_steps)
        return "over the instruction budget";
    if (kq_mono_us() > b->deadline_us)
        return "over the time budget";
    if (b->gc_count && (size_t)lua_gc(L, LUA_GCCOUNT, 0) > b->max >> 10)
        return "over the memory limit";
    return NULL;
}

static void on_count(lua_State *L, lua_Debug *ar);

/* lua_sethook on the loop's own behalf (count 0: no hook). */
static void set_hook(lua_State *L, const struct kq_lua_budget *b, int count)
{
    bool watched_run = b->watched && in_call;
    if (watched_run) {
        in_call = 0;
        atomic_signal_fence(memory_order_seq_cst);
    }
    lua_sethook(L, count ? on_count : NULL, count ? LUA_MASKCOUNT : 0, count);
    if (watched_run) {
        armed = count != 0;
        atomic_signal_fence(memory_order_seq_cst);
        in_call = 1;
    }
}

void kq_lua_budget_overdue(void)
{
    if (!in_call)
        return;
    lua_sethook(watched_L, on_count, LUA_MASKCOUNT, watched_b->tripped ? 1 : KQ_LUA_HOOK_EVERY);
    armed = 1;
}

/* From now on every instruction fails, so no Lua code can swallow the error. */
static int trip(lua_State *L, struct kq_lua_budget *b, const char *why)
{
    if (!b->tripped) {
        b->tripped = true;
        b->trip_why = why;
        lua_Debug ar;
        for (int level = 0; level < 2 && !b->trip_line; level++)
            if (lua_getstack(L, level, &ar) && lua_getinfo(L, "l", &ar) && ar.currentline > 0)
                b->trip_line = ar.currentline;
        set_hook(L, b, 1);
    }
    lua_pushfstring(L, "stopped: %s", b->trip_why);
    return lua_error(L);
}

static void on_count(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    struct kq_lua_budget *b = kq_lua_budget_of(L);
    if (!b)
        return;
    b->steps += KQ_LUA_HOOK_EVERY;
    const char *why = b->tripped ? b->trip_why : over(L, b);
    if (why)
        trip(L, b, why);
}

void kq_lua_budget_charge(lua_State *L, double steps, const char *what, const char *hint)
{
    struct kq_lua_budget *b = kq_lua_budget_of(L);
    if (!b)
        return;
    const char *why = b->tripped ? b->trip_why : over(L, b);
    if (why)
        trip(L, b, why);
    double left = (double)b->max_steps - (double)b->steps;
    if (steps > left) {
        char msg[512]; /* lua_pushfstring knows neither %g nor %ld */
        snprintf(msg, sizeof msg,
                 "%s: worst case %.3g steps, more than the %.0f left of the "
                 "budget (%ld per run)%s%s",
                 what, steps, left > 0 ? left : 0.0, b->max_steps, hint ? "; " : "",
                 hint ? hint : "");
        luaL_error(L, "%s", msg);
    }
    b->steps += (long)steps;
}

/* Runs L watched (no hook) or counted, as the watchdog allows. */
static void set_watched(lua_State *L, struct kq_lua_budget *b, bool on)
{
    b->watched = on;
    b->tripped = false; /* the hook is set as for a run that was not stopped */
    lua_sethook(L, on ? NULL : on_count, on ? 0 : LUA_MASKCOUNT, KQ_LUA_HOOK_EVERY);
}

uint64_t kq_lua_budget_begin(lua_State *L, struct kq_lua_budget *b, long max_steps, uint64_t ms)
{
    if (b->watched && !kq_watchdog_watches_me())
        set_watched(L, b, false); /* the watchdog stopped: back to counting every run */
    if (b->tripped && !b->watched)
        lua_sethook(L, on_count, LUA_MASKCOUNT, KQ_LUA_HOOK_EVERY);
    b->tripped = false;
    b->trip_why = NULL;
    b->trip_line = 0;
    b->steps = 0;
    b->max_steps = max_steps;
    uint64_t now = kq_mono_us();
    b->deadline_us = now + ms * 1000;
    if (b->watched) {
        watched_L = L;
        watched_b = b;
        atomic_signal_fence(memory_order_seq_cst);
        in_call = 1;
        atomic_signal_fence(memory_order_seq_cst);
        kq_watchdog_call_begin(now);
    }
    return now;
}

uint64_t kq_lua_budget_begin_traffic(lua_State *L, struct kq_lua_budget *b, long max_steps,
                                     uint64_t ms)
{
    if (!b->watched && kq_watchdog_watches_me())
        set_watched(L, b, true);
    return kq_lua_budget_begin(L, b, max_steps, ms);
}

void kq_lua_budget_end(lua_State *L, struct kq_lua_budget *b)
{
    if (!b->watched)
        return;
    in_call = 0;
    atomic_signal_fence(memory_order_seq_cst);
    if (armed) {
        lua_sethook(L, NULL, 0, 0);
        armed = 0;
    }
    kq_watchdog_call_end();
}

void kq_lua_budget_jit_trusted(lua_State *L)
{
    lua_pushcfunction(L, luaopen_jit); /* the compiler's parameters, and the engine on */
    lua_call(L, 0, 0);
    lua_pushnil(L);
    lua_setglobal(L, LUA_JITLIBNAME);
    lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
    lua_pushnil(L);
    lua_setfield(L, -2, LUA_JITLIBNAME);
    lua_pushnil(L);
    lua_setfield(L, -2, LUA_JITLIBNAME ".opt");
    lua_pop(L, 1);
    lua_pushnil(L); /* jit.util and jit.profile's loaders */
    lua_setfield(L, LUA_REGISTRYINDEX, "_PRELOAD");
}

struct opening {
    struct kq_lua_budget *b;
    bool with_bit;
};

/* Runs inside lua_cpcall: out of memory while opening is an error, not a panic. */
static int open_libs(lua_State *L)
{
    const struct opening *o = lua_touserdata(L, 1);
    static const struct {
        const char *name;
        lua_CFunction open;
    } libs[] = {{"", luaopen_base},
                {LUA_STRLIBNAME, luaopen_string},
                {LUA_TABLIBNAME, luaopen_table},
                {LUA_MATHLIBNAME, luaopen_math},
                {LUA_BITLIBNAME, luaopen_bit}};
    size_t n = sizeof libs / sizeof libs[0] - (o->with_bit ? 0 : 1);
    for (size_t i = 0; i < n; i++) {
        lua_pushcfunction(L, libs[i].open);
        lua_pushstring(L, libs[i].name);
        lua_call(L, 1, 0);
    }
    kq_lua_patterns_bound(L);
    kq_sandbox_close_strings(L);
    lua_pushlightuserdata(L, (void *)&BUDGET_KEY);
    lua_pushlightuserdata(L, o->b);
    lua_rawset(L, LUA_REGISTRYINDEX);
    return 0;
}

lua_State *kq_lua_budget_newstate(struct kq_lua_budget *b, bool with_bit)
{
    lua_State *L = lua_newstate(kq_lua_budget_alloc, b);
    b->gc_count = L == NULL;
    if (!L) /* a LuaJIT build that refuses custom allocators: check the GC count instead */
        L = luaL_newstate();
    if (!L)
        return NULL;
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
    struct opening o = {b, with_bit};
    if (lua_cpcall(L, open_libs, &o) != 0) {
        kq_lua_budget_close(L, b);
        return NULL;
    }
    lua_settop(L, 0);
    b->stop = thread_stop;
    b->deadline_us = 0; /* nothing runs before kq_lua_budget_begin */
    lua_sethook(L, on_count, LUA_MASKCOUNT, KQ_LUA_HOOK_EVERY);
    return L;
}
