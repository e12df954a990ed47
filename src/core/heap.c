#include "core/heap.h"

#include <errno.h>
#include <stdlib.h>

static void place(struct kq_heap *h, size_t i, struct kq_heap_item *it)
{
    h->items[i] = it;
    it->pos = i;
}

static void sift_up(struct kq_heap *h, size_t i)
{
    struct kq_heap_item *it = h->items[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h->items[parent]->key <= it->key)
            break;
        place(h, i, h->items[parent]);
        i = parent;
    }
    place(h, i, it);
}

static void sift_down(struct kq_heap *h, size_t i)
{
    struct kq_heap_item *it = h->items[i];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        int64_t mk = it->key;
        if (l < h->len && h->items[l]->key < mk) {
            m = l;
            mk = h->items[l]->key;
        }
        if (r < h->len && h->items[r]->key < mk)
            m = r;
        if (m == i)
            break;
        place(h, i, h->items[m]);
        i = m;
    }
    place(h, i, it);
}

int kq_heap_push(struct kq_heap *h, struct kq_heap_item *it)
{
    if (h->len == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 1024;
        struct kq_heap_item **p = realloc(h->items, cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        h->items = p;
        h->cap = cap;
    }
    place(h, h->len++, it);
    sift_up(h, h->len - 1);
    return 0;
}

struct kq_heap_item *kq_heap_top(const struct kq_heap *h) { return h->len ? h->items[0] : NULL; }

void kq_heap_remove(struct kq_heap *h, struct kq_heap_item *it)
{
    size_t i = it->pos;
    if (i == KQ_HEAP_NONE || i >= h->len || h->items[i] != it)
        return;
    it->pos = KQ_HEAP_NONE;
    struct kq_heap_item *last = h->items[--h->len];
    if (i == h->len)
        return;
    place(h, i, last);
    sift_down(h, i);
    sift_up(h, last->pos);
}

void kq_heap_free(struct kq_heap *h)
{
    free(h->items);
    h->items = NULL;
    h->len = h->cap = 0;
}
