#include "policy/lua_budget.h"

#include <stdlib.h>

void *kq_lua_budget_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct kq_lua_budget *b = ud;
    if (!ptr)
        osize = 0; /* for a new block osize is a type tag, not a size */
    if (nsize == 0) {
        free(ptr);
        b->used -= osize;
        return NULL;
    }
    if (nsize > osize && b->used + (nsize - osize) > b->max)
        return NULL;
    void *p = realloc(ptr, nsize);
    if (p)
        b->used = b->used - osize + nsize;
    return p;
}
