#include "core/seqlist.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int kq_seqlist_push(struct kq_seqlist *l, void *rec, uint64_t *seq)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        struct kq_seqlist_slot *v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = (struct kq_seqlist_slot){++l->last_seq, rec};
    l->live++;
    *seq = l->last_seq;
    return 0;
}

size_t kq_seqlist_after(const struct kq_seqlist *l, uint64_t after)
{
    size_t lo = 0, hi = l->n; /* first slot with seq > after */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (l->v[mid].seq <= after)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Squeeze the holes out once they are the majority: keeps the array (and the walks over
 * it) proportional to the live records. */
static void compact(struct kq_seqlist *l)
{
    size_t o = 0;
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i].rec)
            l->v[o++] = l->v[i];
    l->n = o;
    if (l->cap > 64 && l->n < l->cap / 4) {
        size_t cap = l->cap / 2;
        struct kq_seqlist_slot *v = realloc(l->v, cap * sizeof *v);
        if (v) {
            l->v = v;
            l->cap = cap;
        }
    }
}

void kq_seqlist_remove(struct kq_seqlist *l, uint64_t seq)
{
    size_t i = kq_seqlist_after(l, seq - 1);
    if (seq == 0 || i >= l->n || l->v[i].seq != seq || !l->v[i].rec)
        return;
    l->v[i].rec = NULL;
    l->live--;
    if (l->live == 0)
        l->n = 0;
    else if (l->n >= 64 && l->live < l->n / 2)
        compact(l);
}

void *kq_seqlist_next(const struct kq_seqlist *l, size_t *pos, uint64_t *seq)
{
    while (*pos < l->n) {
        const struct kq_seqlist_slot *s = &l->v[(*pos)++];
        if (s->rec) {
            if (seq)
                *seq = s->seq;
            return s->rec;
        }
    }
    return NULL;
}

void kq_seqlist_free(struct kq_seqlist *l)
{
    free(l->v);
    memset(l, 0, sizeof *l);
}
