/* Bounded pattern functions (see lua_budget.h): string.find, match, gmatch and gsub charge
 * the worst case of their matching to the run's instruction budget before they start, and
 * refuse to start when it does not fit.
 *
 * Lua's matcher backtracks, and its only choices are how many bytes each repetition item
 * (x*, x+, x-, x?) takes. With u unbounded repetitions and q optional items before a point
 * of the pattern, and L bytes of subject, at most 2^q * C(L + u, u) ways reach that point;
 * summed over the start positions of an unanchored search, 2^q * C(n + u + 1, u + 1). Each
 * way costs about the width of the item there (a set [...] is scanned per byte; %b and back
 * references scan up to L bytes). A repetition that ends the pattern (but for closing
 * captures) does not branch: its first try ends the match. The bound charged is the sum
 * over the items: `a*a*c` on 200 bytes ~5.6e6 steps (it runs in ~7 ms), `a*a*a*a*a*a*a*a*c`
 * on 31 bytes ~1.3e9 (1.5 s, and every further `a*` multiplies it by ~4), `[%w_]+` in a
 * gmatch over n bytes ~5n. A step is counted as one Lua instruction.
 *
 * test_policy.c checks the numbers; the busted specs run this code itself (kiteq.policy). */
#include <lauxlib.h>
#include <lua.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h> /* memmem: _GNU_SOURCE comes from the build */

#include "sandbox/lua_budget.h"

#define COST_MAX 1e18
#define SPECIALS "^$*+?.([%-"
#define HINT                                                                                       \
    "anchor it with ^, use fewer repetitions (* + - ?), or a plain find "                          \
    "(string.find(s, p, 1, true))"

/* Ways to reach the current point of the pattern (see above). */
struct ways {
    double n; /* subject bytes */
    bool anchored;
    int u;       /* unbounded repetitions so far */
    double comb; /* C(n + u, u), or C(n + u + 1, u + 1) over every start */
    double pow2; /* 2^q */
};

static double ways_now(const struct ways *w)
{
    double v = w->comb * w->pow2;
    return v < COST_MAX ? v : COST_MAX;
}

static void ways_repeat(struct ways *w, char quantifier)
{
    if (quantifier == '?') {
        w->pow2 = w->pow2 < COST_MAX ? w->pow2 * 2 : COST_MAX;
        return;
    }
    w->u++;
    w->comb =
        w->anchored ? w->comb * (w->n + w->u) / w->u : w->comb * (w->n + 1 + w->u) / (w->u + 1);
    if (w->comb > COST_MAX)
        w->comb = COST_MAX;
}

/* Where the single-byte class at p ends (Lua's classend; a malformed class runs to the end,
 * the real function reports it). */
static size_t class_end(const char *p, size_t i, size_t m)
{
    if (p[i] == '%')
        return i + 2 < m ? i + 2 : m;
    if (p[i] != '[')
        return i + 1;
    i++;
    if (i < m && p[i] == '^')
        i++;
    do { /* the first byte of a set may be ']' */
        if (i >= m)
            return m;
        if (p[i++] == '%' && i < m)
            i++;
    } while (i < m && p[i] != ']');
    return i < m ? i + 1 : m;
}

double kq_lua_pattern_cost(const char *p, size_t m, size_t n, bool gmatch)
{
    const char *nul = memchr(p, '\0', m); /* the matcher stops at a NUL */
    if (nul)
        m = (size_t)(nul - p);
    size_t closers = m; /* from here on the pattern only closes captures */
    while (closers > 0 && p[closers - 1] == ')')
        closers--;
    size_t i = 0;
    struct ways w = {.n = (double)n, .anchored = !gmatch && m > 0 && p[0] == '^', .pow2 = 1};
    if (w.anchored)
        i++;
    w.comb = w.anchored ? 1 : w.n + 1;
    double total = 0;
    while (i < m && total < COST_MAX) {
        size_t end;
        double extra = 0;
        if (p[i] == '(' || p[i] == ')') {
            end = i + 1 + (p[i] == '(' && i + 1 < m && p[i + 1] == ')');
        } else if (p[i] == '$' && i + 1 == m) {
            end = m;
        } else if (p[i] == '%' && i + 1 < m && p[i + 1] == 'b') {
            end = i + 4 < m ? i + 4 : m;
            extra = w.n; /* scans for the closing byte */
        } else if (p[i] == '%' && i + 1 < m && p[i + 1] == 'f') {
            end = i + 2 < m ? class_end(p, i + 2, m) : m;
        } else if (p[i] == '%' && i + 1 < m && p[i + 1] >= '0' && p[i + 1] <= '9') {
            end = i + 2;
            extra = w.n; /* compares the capture */
        } else {
            end = class_end(p, i, m);
            double width = (double)(end - i);
            total += ways_now(&w) * width;
            if (end < m && strchr("*+-?", p[end])) {
                end++;
                if (end >= closers) {
                    /* last item: its first try ends the match, and the bytes it counts
                     * belong to that match (a search goes on past it) */
                    total += ways_now(&w) + (w.n + 1) * width;
                } else {
                    ways_repeat(&w, p[end - 1]);
                    total += ways_now(&w) * (width + 1); /* each way: a byte tested, a call */
                }
            }
            i = end;
            continue;
        }
        total += ways_now(&w) * ((double)(end - i) + extra);
        i = end;
    }
    total += ways_now(&w); /* the end of the pattern reached */
    return total < COST_MAX ? total : COST_MAX;
}

/* ---- the bounded functions ---------------------------------------------------------- */

enum fn { F_FIND, F_MATCH, F_GMATCH, F_GSUB };
static const char *const NAMES[] = {"string.find", "string.match", "string.gmatch", "string.gsub"};

static bool has_specials(const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (strchr(SPECIALS, p[i]) && p[i])
            return true;
    return false;
}

/* Where find and match start (LuaJIT's rules: negative from the end, clamped). */
static size_t start_of(lua_State *L, size_t len)
{
    lua_Integer init = luaL_optinteger(L, 3, 1);
    init = init < 0 ? init + (lua_Integer)len : init - 1;
    if (init < 0)
        return 0;
    return (size_t)init > len ? len : (size_t)init;
}

/* A plain find is a linear search (LuaJIT's own is O(subject x pattern)). */
static int plain_find(lua_State *L, const char *s, size_t ls, const char *p, size_t lp)
{
    size_t st = start_of(L, ls);
    kq_lua_budget_charge(L, 1 + (double)(ls - st + lp) / 16, NAMES[F_FIND], NULL);
    const char *q = memmem(s + st, ls - st, p, lp);
    if (!q) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushinteger(L, (lua_Integer)(q - s) + 1);
    lua_pushinteger(L, (lua_Integer)(q - s) + (lua_Integer)lp);
    return 2;
}

/* upvalue 1: which function; 2: the original */
static int bounded(lua_State *L)
{
    enum fn fn = (enum fn)lua_tointeger(L, lua_upvalueindex(1));
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    if (fn == F_FIND && (lua_toboolean(L, 4) || !has_specials(p, lp)))
        return plain_find(L, s, ls, p, lp);
    size_t from = fn == F_FIND || fn == F_MATCH ? start_of(L, ls) : 0;
    char what[96];
    snprintf(what, sizeof what, "%s: pattern on a %zu-byte subject", NAMES[fn], ls - from);
    kq_lua_budget_charge(L, kq_lua_pattern_cost(p, lp, ls - from, fn == F_GMATCH), what, HINT);
    int n = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_insert(L, 1);
    lua_call(L, n, LUA_MULTRET);
    return lua_gettop(L);
}

void kq_lua_patterns_bound(lua_State *L)
{
    static const char *const keys[] = {"find", "match", "gmatch", "gsub"};
    lua_getglobal(L, "string");
    for (int i = 0; i < 4; i++) {
        lua_pushinteger(L, i);
        lua_getfield(L, -2, keys[i]);
        lua_pushcclosure(L, bounded, 2);
        lua_setfield(L, -2, keys[i]);
    }
    lua_pop(L, 1);
}
