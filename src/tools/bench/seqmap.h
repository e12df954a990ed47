/* A sparse array of small counters indexed by message sequence number, for duplicate and
 * loss detection: one byte per sequence, allocated lazily in 1 Mi pages, so a --duration
 * run needs no size up front. Increments are atomic: any thread may call
 * bench_seqmap_incr concurrently with others (and with reads). */
#ifndef KQ_BENCH_SEQMAP_H
#define KQ_BENCH_SEQMAP_H
#include <stdint.h>

#define BENCH_SEQMAP_PAGE_BITS 20
#define BENCH_SEQMAP_PAGES 4096 /* 4 Gi sequences */

struct bench_seqmap {
    _Atomic(uint8_t *) pages[BENCH_SEQMAP_PAGES];
};

/* Adds one to the counter of seq (saturating at 255) and returns the previous value, or -ENOMEM
 * / -ERANGE. */
int bench_seqmap_incr(struct bench_seqmap *m, uint64_t seq);
/* Counter of seq (0 when never incremented or out of range). */
unsigned bench_seqmap_get(const struct bench_seqmap *m, uint64_t seq);
void bench_seqmap_free(struct bench_seqmap *m);
#endif
