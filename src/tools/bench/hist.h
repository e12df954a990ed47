/* A log-linear latency histogram in the spirit of HdrHistogram: values (nanoseconds, or any
 * unit) fall into power-of-two ranges, each split into 128 linear sub-buckets, so any
 * recorded value is known to within 1/128 (< 0.8 %) from 0 up to 2^42 (~73 minutes in ns).
 * Fixed size (~37 KiB), no allocation after init. Not thread-safe: give each thread its own
 * histogram and merge them at the end. */
#ifndef KQ_BENCH_HIST_H
#define KQ_BENCH_HIST_H
#include <stdint.h>

#define BENCH_HIST_SUB_BITS 8  /* 2^8 first-range sub-buckets */
#define BENCH_HIST_MAX_BITS 42 /* larger values are clamped */
#define BENCH_HIST_BUCKETS                                                                         \
    ((BENCH_HIST_MAX_BITS - BENCH_HIST_SUB_BITS + 1) * (1 << (BENCH_HIST_SUB_BITS - 1)) +          \
     (1 << (BENCH_HIST_SUB_BITS - 1)))

struct bench_hist {
    uint64_t count, min, max;
    double sum;
    uint64_t b[BENCH_HIST_BUCKETS];
};

void bench_hist_init(struct bench_hist *h);
void bench_hist_record(struct bench_hist *h, uint64_t v);
/* Adds every sample of src to dst. */
void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src);
/* Value at percentile p (0..100]: the highest value equivalent to the bucket holding the
 * sample of that rank (never above max); 0 when empty. */
uint64_t bench_hist_percentile(const struct bench_hist *h, double p);
double bench_hist_mean(const struct bench_hist *h);
#endif
