/* The stores' dead-letter operations, waited for: each runs the store's loop until its
 * callback came (10 s at most; then the test fails). For store tests. */
#ifndef KQ_TEST_DLQ_SYNC_H
#define KQ_TEST_DLQ_SYNC_H
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

/* Every dead letter of topic (NULL = all), pages of `page`, to cb; returns the page count
 * (cb's return value is ignored, as by the stores). first_only: one page only. */
size_t dlq_walk(struct kq_store *s, const char *topic, size_t page, bool first_only,
                kq_store_dlq_cb cb, void *ud);
/* get / take one: the status (0, -ENOENT...); cb gets the dead letter when 0. */
int dlq_get_sync(struct kq_store *s, const char *id, kq_store_dlq_cb cb, void *ud);
int dlq_take_sync(struct kq_store *s, const char *id, kq_store_dlq_cb cb, void *ud);
/* purge: the status; *purged set. */
int dlq_purge_sync(struct kq_store *s, const char *topic, size_t *purged);
/* The store's counter for topic (NULL = all), or -1 while it does not know. */
int64_t dlq_counted(struct kq_store *s, const char *topic);
#endif
