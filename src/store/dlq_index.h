/* What the stores keep in memory about their dead letters so that the admin API never
 * scans them (docs/ADMIN.md):
 * - counters by topic and by (topic, publishing group): statistics read these, never a
 *   listing (all stores);
 * - the order they entered the DLQ, with stable numbers as page cursors, and the walk of
 *   one bounded page (file and memory stores; MySQL pages with SQL).
 * Loop thread, like the stores that keep it. */
#ifndef KQ_STORE_DLQ_INDEX_H
#define KQ_STORE_DLQ_INDEX_H
#include <stdint.h>
#include <uthash.h>

#include "core/seqlist.h"
#include "store/store.h"

/* Slots one page may step over (dead letters of other topics, holes): what bounds a page
 * whose topic is rare. */
#define KQ_DLQ_PAGE_SCAN 4096

struct kq_dlq_topic_count {
    uint64_t n;
    UT_hash_handle hh;
    char topic[];
};

struct kq_dlq_count { /* one (topic, group) pair */
    uint64_t n;
    struct kq_dlq_topic_count *t;
    const char *group; /* inside key, after the topic's NUL */
    size_t keylen;
    UT_hash_handle hh;
    char key[]; /* "topic\0group" */
};

struct kq_dlq_counts {
    struct kq_dlq_count *pairs;
    struct kq_dlq_topic_count *topics;
    uint64_t total;
};

/* --- counters: entries live while their count is above zero (as many as the distinct
 * pairs among the dead letters, never more) --- */

/* Count n more dead letters of (topic, group) (NULL = ""). Returns the pair's entry, which
 * stays valid while its count is above zero, or NULL on ENOMEM (nothing counted). */
struct kq_dlq_count *kq_dlq_counts_add(struct kq_dlq_counts *c, const char *topic,
                                       const char *group, uint64_t n);
/* The pair's entry, or NULL. */
struct kq_dlq_count *kq_dlq_counts_find(const struct kq_dlq_counts *c, const char *topic,
                                        const char *group);
/* Forget every pair of topic (NULL = all): a purge. */
void kq_dlq_counts_drop_topic(struct kq_dlq_counts *c, const char *topic);
/* n fewer of that pair (at most its count); the entry goes at zero. */
void kq_dlq_counts_sub(struct kq_dlq_counts *c, struct kq_dlq_count *e, uint64_t n);
/* The ops->dlq_counts contract (store.h): per topic (group NULL) or per pair. */
void kq_dlq_counts_each(const struct kq_dlq_counts *c, bool by_group, kq_store_dlq_count_cb cb,
                        void *ud);
void kq_dlq_counts_free(struct kq_dlq_counts *c);

/* --- order and pages --- */

struct kq_dlq_index {
    struct kq_seqlist order;
    struct kq_dlq_counts counts;
};

/* Where one dead letter is in the index; kept in the store's record. */
struct kq_dlq_pos {
    uint64_t seq;
    struct kq_dlq_count *cnt;
};

/* Add rec (the store's record) at the end, counted under (topic, group). 0 or -ENOMEM. */
int kq_dlq_index_add(struct kq_dlq_index *x, void *rec, const char *topic, const char *group,
                     struct kq_dlq_pos *pos);
void kq_dlq_index_remove(struct kq_dlq_index *x, const struct kq_dlq_pos *pos);
/* The topic a record was counted under. */
static inline const char *kq_dlq_pos_topic(const struct kq_dlq_pos *pos)
{
    return pos->cnt->t->topic;
}
/* Reads a record back: 1 (out filled), 0 (skip it: not of `topic`), or -errno. */
typedef int (*kq_dlq_read_fn)(void *store, void *rec, const char *topic,
                              struct kq_dead_letter *out);
/* ops->dlq_page over the index: at most max items and KQ_DLQ_PAGE_SCAN slots; the cursor
 * is the number of the last slot examined. Returns -EINVAL for a cursor this index did
 * not give out (then done is not called), else 0 after calling done. */
int kq_dlq_index_page(const struct kq_dlq_index *x, const char *topic, const char *after,
                      size_t max, kq_dlq_read_fn read, void *store, kq_store_dlq_cb item,
                      kq_store_dlq_page_cb done, void *ud);
void kq_dlq_index_free(struct kq_dlq_index *x);
#endif
