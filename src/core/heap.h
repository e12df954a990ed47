/* A binary min-heap of pointers ordered by an int64 key. Each element remembers its own
 * position (via the index callback) so it can be removed or re-keyed in O(log n). */
#ifndef KQ_CORE_HEAP_H
#define KQ_CORE_HEAP_H
#include <stddef.h>
#include <stdint.h>

#define KQ_HEAP_NONE ((size_t)-1)

struct kq_heap_item {
    int64_t key;
    size_t pos; /* KQ_HEAP_NONE when not in the heap */
};

struct kq_heap {
    struct kq_heap_item **items;
    size_t len, cap;
};

int kq_heap_push(struct kq_heap *h, struct kq_heap_item *it); /* 0 or -ENOMEM */
struct kq_heap_item *kq_heap_top(const struct kq_heap *h);    /* NULL when empty */
void kq_heap_remove(struct kq_heap *h, struct kq_heap_item *it);
void kq_heap_free(struct kq_heap *h);
#endif
