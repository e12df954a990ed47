#include "sandbox/lua_blocks.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* The class of a block of size bytes (1..KQ_LUA_BLOCK_MAX): blocks of class c are all
 * 16 * (c + 1) bytes, whatever was asked for, so that any of them serves any request of c. */
static size_t class_of(size_t size) { return (size - 1) / 16; }

static void *take(struct kq_lua_blocks *b, size_t size)
{
    size_t c = class_of(size);
    void *p = b->free[c];
    if (p) {
        memcpy(&b->free[c], p, sizeof p);
        b->kept[c]--;
        b->kept_bytes -= 16 * (c + 1);
        return p;
    }
    return malloc(16 * (c + 1));
}

static void give_back(struct kq_lua_blocks *b, void *p, size_t size)
{
    size_t c = class_of(size);
    if (b->kept_bytes + 16 * (c + 1) > KQ_LUA_BLOCKS_KEPT_BYTES) {
        free(p);
        return;
    }
    memcpy(p, &b->free[c], sizeof p);
    b->free[c] = p;
    b->kept[c]++;
    b->kept_bytes += 16 * (c + 1);
}

static bool small(size_t size) { return size > 0 && size <= KQ_LUA_BLOCK_MAX; }

void *kq_lua_blocks_realloc(struct kq_lua_blocks *b, void *ptr, size_t osize, size_t nsize)
{
    if (!ptr) /* LuaJIT also "frees" NULL (nsize 0): nothing to do, as free(NULL) */
        return !nsize ? NULL : small(nsize) ? take(b, nsize) : malloc(nsize);
    if (nsize == 0) {
        if (small(osize))
            give_back(b, ptr, osize);
        else
            free(ptr);
        return NULL;
    }
    if (!small(osize) && !small(nsize))
        return realloc(ptr, nsize);
    if (small(osize) && small(nsize) && class_of(osize) == class_of(nsize))
        return ptr; /* the block is as large as its class */
    void *p = small(nsize) ? take(b, nsize) : malloc(nsize);
    if (!p)
        return NULL;
    memcpy(p, ptr, osize < nsize ? osize : nsize);
    if (small(osize))
        give_back(b, ptr, osize);
    else
        free(ptr);
    return p;
}

void kq_lua_blocks_release(struct kq_lua_blocks *b)
{
    for (size_t c = 0; c < KQ_LUA_BLOCK_CLASSES; c++) {
        while (b->free[c]) {
            void *p = b->free[c];
            memcpy(&b->free[c], p, sizeof p);
            free(p);
        }
        b->kept[c] = 0;
    }
    b->kept_bytes = 0;
}
