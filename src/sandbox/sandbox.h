/* The one Lua sandbox of the broker: the config loader (config/config_lua.c) and the policy
 * loader (policy/policy.c) both run operators' Lua through it, and so do the policy tools
 * (`kiteq policy`, the `kiteq.policy` Lua module of the busted specs).
 *
 * A sandboxed state (kq_lua_budget_newstate, lua_budget.h) runs operators' code interpreted
 * (the JIT off, or on for the broker's own code only: kq_lua_budget_jit_trusted), its memory
 * capped, an instruction and wall-clock budget per run, and bounded Lua patterns. It opens
 * only the base library, string, table, math (and bit); no io, os, package/require, debug,
 * ffi, jit or coroutine is reachable from a chunk's environment. The string metatable is
 * closed: its __index is a private copy of the (bounded) string library without `dump`, and
 * getmetatable("") answers false, so neither ("").dump nor getmetatable("").__index reaches
 * the state's real string table.
 *
 * A chunk runs in its own environment (kq_sandbox_push_env): the safe base functions and
 * fresh copies of the libraries, so what one file changes in `string` stays in that file.
 * Chunks are source text only (bytecode could break the VM's invariants).
 *
 * Threading: as lua_budget.h (one thread at a time per state). */
#ifndef KQ_SANDBOX_SANDBOX_H
#define KQ_SANDBOX_SANDBOX_H
#include <stdbool.h>
#include <stddef.h>

#include "sandbox/lua_budget.h"

/* The base functions a chunk may call (NULL-terminated): no load*, dofile, pcall, getfenv,
 * setfenv, collectgarbage, print, require or module. */
extern const char *const kq_sandbox_base[];

/* Pushes a fresh environment table: the base functions of kq_sandbox_base and copies of
 * string (without dump), table, math and, with_bit, bit. No metatable: the caller adds its
 * own names and rules. */
void kq_sandbox_push_env(struct lua_State *L, bool with_bit);

/* Compiles src (len bytes, source text only) as chunk "@path", its functions (the closures
 * it will ever make included) marked never to be compiled by the JIT, so that the count hook
 * sees every instruction even in a state whose engine is on (kq_lua_budget_jit_trusted);
 * returns 0 with the function
 * on the stack (the caller gives it its environment), or nonzero with the message on the
 * stack ("PATH: must be Lua source text, not bytecode", or the parser's "PATH:LINE: ...").
 * Raises only on out of memory (call it protected). */
int kq_sandbox_load_text(struct lua_State *L, const char *src, size_t len, const char *path);

/* Closes the string metatable of L (see above). kq_lua_budget_newstate calls it. */
void kq_sandbox_close_strings(struct lua_State *L);
#endif
