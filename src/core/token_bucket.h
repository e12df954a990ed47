/* Token bucket (rate tokens/s, burst), non-blocking: the semantics of the original's
 * golang.org/x/time/rate limiters (bucket starts full). */
#ifndef KQ_CORE_TOKEN_BUCKET_H
#define KQ_CORE_TOKEN_BUCKET_H
#include <stdbool.h>
#include <stdint.h>

struct kq_token_bucket {
    double rate;   /* tokens per second; <= 0 means unlimited */
    double burst;
    double tokens;
    uint64_t last_us;
};

void kq_token_bucket_init(struct kq_token_bucket *b, double rate, double burst);
/* Take one token if available. */
bool kq_token_bucket_take(struct kq_token_bucket *b, uint64_t now_us);
#endif
