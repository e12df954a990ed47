/* The budgets of one Lua state, shared by the policy bridge and the config loader (the two
 * places that run Lua).
 *
 * Each run of Lua code (a file's top level, a hook call) gets an instruction budget and a
 * wall-clock deadline, checked by a count hook every KQ_LUA_HOOK_EVERY instructions (the
 * operators' code is always interpreted, so the hook fires reliably); the allocator caps the state's memory. A count
 * hook cannot see inside a long C call, and Lua's pattern matcher backtracks without bound
 * (`a*a*a*a*a*a*a*a*c` on 31 bytes runs for minutes): the string library's find, match,
 * gmatch and gsub are replaced by versions that charge their worst case to the run's
 * instruction budget before they start and refuse to start when it does not fit, and a
 * plain find is a linear search (lua_patterns.c).
 *
 * A load that runs on a worker thread can be abandoned: the thread names a stop flag
 * (kq_lua_budget_stop_flag) before it loads; the states it creates meanwhile check the flag
 * in the count hook and in kq_lua_budget_charge, and stop as if over budget.
 *
 * A state that serves traffic on the broker's loop thread runs its calls without the count
 * hook (kq_lua_budget_begin_traffic): the hook makes LuaJIT send every bytecode through its
 * hook dispatch, and the watchdog (watchdog.h) sets it only on a call that has run longer
 * than KQ_WATCHDOG_GRACE_US; from then on the instruction budget is counted and both budgets
 * are checked as for any run. Loads, self-tests and the config loader keep the hook on.
 *
 * Threading: a state and its budget are used by one thread at a time. */
#ifndef KQ_SANDBOX_LUA_BUDGET_H
#define KQ_SANDBOX_LUA_BUDGET_H
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sandbox/lua_blocks.h"

struct lua_State;

#define KQ_LUA_HOOK_EVERY 1000 /* instructions between two checks of the budgets */

struct kq_lua_budget {
    size_t used, max;        /* memory: bytes in use, and the cap (set before newstate) */
    struct kq_lua_blocks blocks; /* small blocks freed, kept for the next ones */
    bool gc_count;           /* no custom allocator: the hook checks the GC count instead */
    const atomic_bool *stop; /* raised by another thread: stop (NULL: none) */
    /* the run in progress (kq_lua_budget_begin) */
    long steps, max_steps; /* instructions run and pattern work charged, and the budget */
    uint64_t deadline_us;  /* kq_mono_us() */
    bool watched;          /* no count hook: the watchdog arms it for a long call */
    bool tripped;          /* stopped: every instruction fails until the next begin */
    const char *trip_why;  /* "over the instruction budget", "over the time budget",
                              * "over the memory limit", "the load was abandoned" */
    int trip_line;         /* the line of Lua code that was stopped (0: unknown) */
};

/* lua_newstate(kq_lua_budget_alloc, &budget): allocations beyond budget.max fail, and Lua
 * raises "not enough memory" in the code that asked. */
void *kq_lua_budget_alloc(void *ud, void *ptr, size_t osize, size_t nsize);

/* A fresh state for b (b->max set, the rest zero): memory capped at b->max, JIT off, the
 * base library, string, table, math (and bit when with_bit) opened, the pattern functions
 * bounded, the count hook on, and b->stop = the calling thread's stop flag. No Lua runs
 * until kq_lua_budget_begin (a run before it is over budget at once). NULL when out of
 * memory. The caller closes it with kq_lua_budget_close (b must outlive the state). */
struct lua_State *kq_lua_budget_newstate(struct kq_lua_budget *b, bool with_bit);

/* lua_close(L), then frees the blocks b kept for it. */
void kq_lua_budget_close(struct lua_State *L, struct kq_lua_budget *b);

/* Turns L's JIT engine on for the broker's own Lua (loaded with luaL_loadbuffer*, not
 * kq_sandbox_load_text): compiled code runs without the count hook, so only code whose every
 * run is bounded may be compiled. Operators' chunks stay interpreted: kq_sandbox_load_text
 * marks all their functions never to be compiled, and LuaJIT neither starts a trace in such a
 * function nor records a call into one. The jit library this opens is not left reachable
 * (no global, not in package.loaded). Raises on out of memory (call it protected). */
void kq_lua_budget_jit_trusted(struct lua_State *L);

/* Starts a run of at most max_steps instructions (pattern work included) and ms of wall
 * clock; a run stopped before is forgotten. Returns the start (kq_mono_us()), so that a
 * caller timing the run needs no clock read of its own. */
uint64_t kq_lua_budget_begin(struct lua_State *L, struct kq_lua_budget *b, long max_steps,
                             uint64_t ms);

/* kq_lua_budget_begin for a call that serves traffic. When the watchdog watches the calling
 * thread, L runs watched from now on: without the count hook, armed by the watchdog once the
 * call has run KQ_WATCHDOG_GRACE_US; otherwise (no watchdog, another thread) L is counted
 * as by kq_lua_budget_begin. Every begin of a watched state is paired with
 * kq_lua_budget_end, and runs of watched states do not nest. */
uint64_t kq_lua_budget_begin_traffic(struct lua_State *L, struct kq_lua_budget *b, long max_steps,
                                     uint64_t ms);
/* The run of L is over: for a watched state, the watchdog is told and the hook it armed (or a
 * trip set) is removed. Nothing for a counted state. */
void kq_lua_budget_end(struct lua_State *L, struct kq_lua_budget *b);
/* The watchdog's signal handler (on the watched thread): sets the count hook on the watched
 * run in progress, if one is. Async-signal-safe. */
void kq_lua_budget_overdue(void);

/* For C functions called from Lua: counts `steps` of work against the run in progress.
 * Raises a Lua error when the run was stopped (stop flag, deadline), and "WHAT: worst case
 * N steps, more than ... left ...; HINT" when the steps do not fit in what is left of the
 * budget (nothing is counted then; hint may be NULL). */
void kq_lua_budget_charge(struct lua_State *L, double steps, const char *what, const char *hint);

/* The budget of a state made by kq_lua_budget_newstate. */
struct kq_lua_budget *kq_lua_budget_of(struct lua_State *L);

/* Names the stop flag of the states this thread creates from now on (NULL: none). The flag
 * must outlive the runs of those states, or the owner clears budget.stop before it goes. */
void kq_lua_budget_stop_flag(const atomic_bool *flag);

/* lua_patterns.c: replaces string.find, match, gmatch and gsub in the state's string table
 * (the one the string metatable points to, so s:find() is bounded too) by bounded ones. */
void kq_lua_patterns_bound(struct lua_State *L);
/* An upper bound of the matcher steps of one call with `pattern` (len bytes) on an n-byte
 * subject: find/match/gsub (a leading '^' anchors) or gmatch (never anchored). Saturates at
 * 1e18. Exposed for tests (test_policy.c). */
double kq_lua_pattern_cost(const char *pattern, size_t len, size_t n, bool gmatch);
#endif
