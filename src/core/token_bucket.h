/* Token bucket (rate tokens/s, burst), non-blocking: the semantics of the original's
 * golang.org/x/time/rate limiters (bucket starts full). */
#ifndef KQ_CORE_TOKEN_BUCKET_H
#define KQ_CORE_TOKEN_BUCKET_H
#include <stdbool.h>
#include <stdint.h>

struct kq_token_bucket {
    double rate; /* tokens per second; <= 0 means unlimited */
    double burst;
    double tokens;
    uint64_t last_us;
};

void kq_token_bucket_init(struct kq_token_bucket *b, double rate, double burst);
/* Add what accrued since the last call (at most up to burst). */
void kq_token_bucket_refill(struct kq_token_bucket *b, uint64_t now_us);
/* Take one token if available. */
bool kq_token_bucket_take(struct kq_token_bucket *b, uint64_t now_us);
/* Take one token only if `keep` tokens are left after it. */
bool kq_token_bucket_take_above(struct kq_token_bucket *b, uint64_t now_us, double keep);
#endif
