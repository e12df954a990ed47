#include "core/arena.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>

struct kq_arena_chunk {
    struct kq_arena_chunk *next;
    size_t size, used;
    alignas(max_align_t) unsigned char data[];
};

#define ALIGN (alignof(max_align_t))

void kq_arena_init(struct kq_arena *a, size_t chunk_size)
{
    a->head = NULL;
    a->chunk_size = chunk_size ? chunk_size : 65536;
}

static struct kq_arena_chunk *chunk_new(size_t size)
{
    struct kq_arena_chunk *c = malloc(sizeof *c + size);
    if (c) {
        c->next = NULL;
        c->size = size;
        c->used = 0;
    }
    return c;
}

void *kq_arena_alloc(struct kq_arena *a, size_t n)
{
    if (n > SIZE_MAX - ALIGN)
        return NULL;
    n = (n + ALIGN - 1) & ~(ALIGN - 1);
    struct kq_arena_chunk *c = a->head;
    if (!c || c->size - c->used < n) {
        c = chunk_new(n > a->chunk_size ? n : a->chunk_size);
        if (!c)
            return NULL;
        c->next = a->head;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    return p;
}

void kq_arena_reset(struct kq_arena *a)
{
    /* Keep the oldest ordinary chunk: the common case (one frame at a time) then never
     * calls malloc again. */
    struct kq_arena_chunk *keep = NULL, *c = a->head;
    while (c) {
        struct kq_arena_chunk *next = c->next;
        if (!keep && !next && c->size == a->chunk_size) {
            keep = c;
            keep->used = 0;
        } else {
            free(c);
        }
        c = next;
    }
    a->head = keep;
}

void kq_arena_free(struct kq_arena *a)
{
    kq_arena_reset(a);
    free(a->head);
    a->head = NULL;
}
