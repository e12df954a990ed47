/* One token bucket (the broker's intake) shared fairly between the clients drawing on it.
 *
 * Each client has a share: the bucket's rate and burst divided by the number of clients
 * that drew on it in this second or the one before. A client within its share gets a token
 * even when the bucket is nearly empty (it may go down to minus half a burst); a client past
 * its share may only take from the upper half of the bucket. So one client sending far more
 * than its share can no longer take the whole budget from the others, while capacity that
 * nobody else asks for still goes to it. A client alone is limited exactly as by the bucket;
 * in any period, all clients together get at most the bucket's rate times the period plus
 * one and a half bursts.
 *
 * Both structs start zeroed and hold no pointers; not thread-safe (the loop thread). */
#ifndef KQ_CORE_FAIR_SHARE_H
#define KQ_CORE_FAIR_SHARE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/token_bucket.h"

/* Per shared bucket. */
struct kq_fair {
    uint64_t second;                /* of `drawing` (monotonic seconds + 1; 0 = never) */
    size_t drawing, drawing_before; /* clients that drew in that second and the one before */
};

/* Per client. */
struct kq_fair_share {
    struct kq_token_bucket own; /* the client's share: rate and burst follow the count */
    uint64_t second;            /* the last second it drew in */
};

/* Take one token from total for client s at now_us (monotonic). total's rate <= 0 means
 * unlimited: always true. */
bool kq_fair_take(struct kq_fair *f, struct kq_token_bucket *total, struct kq_fair_share *s,
                  uint64_t now_us);
#endif
