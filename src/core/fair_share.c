#include "core/fair_share.h"

/* Clients drawing now: those of this second, or of the last one if that had more (a client
 * sending once every few hundred milliseconds is still counted at the turn of a second). */
static size_t drawing(struct kq_fair *f, struct kq_fair_share *s, uint64_t now_us)
{
    uint64_t second = now_us / 1000000 + 1;
    if (f->second != second) {
        f->drawing_before = f->second + 1 == second ? f->drawing : 0;
        f->drawing = 0;
        f->second = second;
    }
    if (s->second != second) {
        s->second = second;
        f->drawing++;
    }
    return f->drawing > f->drawing_before ? f->drawing : f->drawing_before;
}

bool kq_fair_take(struct kq_fair *f, struct kq_token_bucket *total, struct kq_fair_share *s,
                  uint64_t now_us)
{
    if (total->rate <= 0)
        return true;
    bool fresh = s->second == 0;
    size_t n = drawing(f, s, now_us);
    double rate = total->rate / (double)n, burst = total->burst / (double)n;
    if (fresh) {
        kq_token_bucket_init(&s->own, rate, burst); /* a new client starts with its burst */
    } else {
        s->own.rate = rate;
        s->own.burst = burst < 1 ? 1 : burst;
    }
    kq_token_bucket_refill(&s->own, now_us);
    if (s->own.tokens < 1) /* past its share: only what the others leave */
        return kq_token_bucket_take_above(total, now_us, total->burst / 2);
    /* Within its share: even from a bucket a greedy client emptied before this one came
     * (borrowing at most half a burst, which the greedy one, now past its share, leaves). */
    if (!kq_token_bucket_take_above(total, now_us, -total->burst / 2))
        return false;
    s->own.tokens -= 1;
    return true;
}
