/* Log-linear histogram: bucket index = range * HALF + sub-bucket (see hist.h). */
#include "tools/bench/hist.h"

#include <string.h>

#define HALF (1u << (BENCH_HIST_SUB_BITS - 1))
#define VMAX ((UINT64_C(1) << BENCH_HIST_MAX_BITS) - 1)

static int msb(uint64_t v) { return 63 - __builtin_clzll(v); }

/* Range r >= 1 holds values whose top SUB_BITS bits, v >> r, lie in [HALF, 2*HALF); range 0
 * holds 0..2*HALF-1 exactly. Index r*HALF + (v >> r) keeps the ranges contiguous. */
static unsigned index_of(uint64_t v)
{
    int r = v < 2 * HALF ? 0 : msb(v) - BENCH_HIST_SUB_BITS + 1;
    return (unsigned)r * HALF + (unsigned)(v >> r);
}

static uint64_t highest_of(unsigned i)
{
    unsigned r = i < 2 * HALF ? 0 : i / HALF - 1;
    uint64_t sub = i - r * HALF;
    return ((sub + 1) << r) - 1;
}

void bench_hist_init(struct bench_hist *h) { memset(h, 0, sizeof *h); }

void bench_hist_record(struct bench_hist *h, uint64_t v)
{
    if (v > VMAX)
        v = VMAX;
    h->b[index_of(v)]++;
    if (h->count == 0 || v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    h->count++;
    h->sum += (double)v;
}

void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src)
{
    if (!src->count)
        return;
    for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++)
        dst->b[i] += src->b[i];
    if (dst->count == 0 || src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
    dst->count += src->count;
    dst->sum += src->sum;
}

uint64_t bench_hist_percentile(const struct bench_hist *h, double p)
{
    if (!h->count)
        return 0;
    /* rank of the sample at p, 1-based, rounded up as HdrHistogram does */
    uint64_t rank = (uint64_t)((p / 100.0) * (double)h->count + 0.5);
    if (rank < 1)
        rank = 1;
    if (rank > h->count)
        rank = h->count;
    uint64_t seen = 0;
    for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t v = highest_of(i);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

double bench_hist_mean(const struct bench_hist *h)
{
    return h->count ? h->sum / (double)h->count : 0.0;
}
