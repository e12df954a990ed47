/* A bump allocator for short-lived data: everything allocated from it is released at once by
 * kq_arena_reset. The broker decodes each inbound frame into one (protobuf-c makes a separate
 * allocation for every string and bytes field, which made malloc/free the largest cost per
 * message). Not thread-safe; one arena per thread that uses it. */
#ifndef KQ_CORE_ARENA_H
#define KQ_CORE_ARENA_H
#include <stddef.h>

struct kq_arena_chunk;

struct kq_arena {
    struct kq_arena_chunk *head; /* current chunk; older ones follow */
    size_t chunk_size;           /* size of ordinary chunks (bigger requests get their own) */
};

void kq_arena_init(struct kq_arena *a, size_t chunk_size);
/* n bytes aligned for any type, or NULL when out of memory. */
void *kq_arena_alloc(struct kq_arena *a, size_t n);
/* Release everything allocated since init (or the last reset); keeps one ordinary chunk. */
void kq_arena_reset(struct kq_arena *a);
void kq_arena_free(struct kq_arena *a);
#endif
