/* A lua_Alloc that caps the memory of one Lua state, shared by the policy bridge and the
 * config loader (the two places that run Lua). */
#ifndef KQ_POLICY_LUA_BUDGET_H
#define KQ_POLICY_LUA_BUDGET_H
#include <stddef.h>

struct kq_lua_budget {
    size_t used;
    size_t max;
};

/* lua_newstate(kq_lua_budget_alloc, &budget): allocations beyond budget.max fail, and Lua
 * raises "not enough memory" in the code that asked. */
void *kq_lua_budget_alloc(void *ud, void *ptr, size_t osize, size_t nsize);
#endif
