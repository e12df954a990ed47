#include "core/token_bucket.h"

void kq_token_bucket_init(struct kq_token_bucket *b, double rate, double burst)
{
    b->rate = rate;
    b->burst = burst < 1 ? 1 : burst;
    b->tokens = b->burst;
    b->last_us = 0;
}

void kq_token_bucket_refill(struct kq_token_bucket *b, uint64_t now_us)
{
    if (b->last_us && now_us > b->last_us)
        b->tokens += (double)(now_us - b->last_us) * b->rate / 1e6;
    if (b->tokens > b->burst)
        b->tokens = b->burst;
    if (now_us > b->last_us)
        b->last_us = now_us;
}

bool kq_token_bucket_take_above(struct kq_token_bucket *b, uint64_t now_us, double keep)
{
    if (b->rate <= 0)
        return true;
    kq_token_bucket_refill(b, now_us);
    if (b->tokens < 1 + keep)
        return false;
    b->tokens -= 1;
    return true;
}

bool kq_token_bucket_take(struct kq_token_bucket *b, uint64_t now_us)
{
    return kq_token_bucket_take_above(b, now_us, 0);
}
