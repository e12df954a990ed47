/* The groups a dead letter failed for (struct kq_dlq_groups, store.h): a flat copy for the
 * stores that keep them in memory, and reusable arrays for those that decode them from
 * disk or rows. Loop thread. */
#ifndef KQ_STORE_DLQ_GROUPS_H
#define KQ_STORE_DLQ_GROUPS_H
#include "store/store.h"

/* g in one allocation (arrays and strings inline; release with free()); NULL on ENOMEM.
 * g may be NULL: an empty copy. */
struct kq_dlq_groups *kq_dlq_groups_copy(const struct kq_dlq_groups *g);

/* Arrays a decoder fills and reuses from one dead letter to the next. */
struct kq_dlq_groups_buf {
    struct kq_dlq_group *failed;
    const char **acked;
    size_t cap_failed, cap_acked;
};
/* Room for n_failed and n_acked entries. 0 or -ENOMEM. */
int kq_dlq_groups_buf_fit(struct kq_dlq_groups_buf *b, size_t n_failed, size_t n_acked);
void kq_dlq_groups_buf_free(struct kq_dlq_groups_buf *b);
#endif
