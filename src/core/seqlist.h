/* Records in the order they were added, each with a sequence number that never changes:
 * append and remove cost O(1) amortised, finding "the first record after sequence N" costs
 * O(log n). Listings page through it with N as their cursor, which stays valid while
 * records come and go (a removed record just leaves a hole; holes are squeezed out once
 * they are half the array). Used for the dead letters of the file and memory stores.
 * 16 bytes per record. Not thread-safe. */
#ifndef KQ_CORE_SEQLIST_H
#define KQ_CORE_SEQLIST_H
#include <stddef.h>
#include <stdint.h>

struct kq_seqlist_slot {
    uint64_t seq;
    void *rec; /* NULL: a hole */
};

struct kq_seqlist {
    struct kq_seqlist_slot *v;
    size_t n, cap, live;
    uint64_t last_seq; /* the last number given out; numbers start at 1 */
};

/* Append rec; *seq gets its number (> every number before). 0 or -ENOMEM. */
int kq_seqlist_push(struct kq_seqlist *l, void *rec, uint64_t *seq);
/* Remove the record numbered seq; no-op when absent. */
void kq_seqlist_remove(struct kq_seqlist *l, uint64_t seq);
/* Iterate from the first record numbered above `after` (0 = from the start):
 *   for (size_t i = kq_seqlist_after(l, after); (r = kq_seqlist_next(l, &i, &seq));)
 * Do not push or remove while iterating. pos only grows: a walk's cost (holes included)
 * is how far pos moved, which is how callers bound it. */
size_t kq_seqlist_after(const struct kq_seqlist *l, uint64_t after);
void *kq_seqlist_next(const struct kq_seqlist *l, size_t *pos, uint64_t *seq);
static inline size_t kq_seqlist_len(const struct kq_seqlist *l) { return l->live; }
void kq_seqlist_free(struct kq_seqlist *l);
#endif
