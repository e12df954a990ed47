/* Small blocks kept for reuse by one Lua state's allocator.
 *
 * A per-message hook makes and drops a few small objects every call (its answer tables,
 * strings); the collector frees them in bursts, more than glibc's per-thread cache holds, so
 * most went through malloc's slow paths (~1 000 instructions a message with the example
 * hooks, docs/BENCHMARKS.md). A freed block of up to KQ_LUA_BLOCK_MAX bytes is kept on a
 * list per 16-byte size class and handed out again for the next block of its class; the
 * lists hold at most KQ_LUA_BLOCKS_KEPT_BYTES in all (a collection cycle frees thousands of
 * blocks at once: a few dozen per class caught only a third of them). The memory cap
 * (lua_budget.c) still counts what Lua asked for; what the lists keep comes on top of it
 * and goes with kq_lua_blocks_release.
 *
 * Threading: the lists of one state, used by the thread running it. */
#ifndef KQ_SANDBOX_LUA_BLOCKS_H
#define KQ_SANDBOX_LUA_BLOCKS_H
#include <stddef.h>

#define KQ_LUA_BLOCK_MAX 256
#define KQ_LUA_BLOCK_CLASSES (KQ_LUA_BLOCK_MAX / 16)
#define KQ_LUA_BLOCKS_KEPT_BYTES (1 << 20)

struct kq_lua_blocks {
    void *free[KQ_LUA_BLOCK_CLASSES]; /* each block's first word: the next one */
    unsigned kept[KQ_LUA_BLOCK_CLASSES];
    size_t kept_bytes;
};

/* realloc(ptr, nsize) with the lists (nsize 0: free; ptr NULL: a new block; osize: ptr's
 * size, as Lua's allocator gets it). NULL when out of memory (ptr then untouched). */
void *kq_lua_blocks_realloc(struct kq_lua_blocks *b, void *ptr, size_t osize, size_t nsize);

/* Frees the blocks kept (after lua_close of the state). */
void kq_lua_blocks_release(struct kq_lua_blocks *b);
#endif
