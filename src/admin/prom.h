/* Prometheus text exposition (format 0.0.4) helpers for the /metrics handler.
 *
 * A kq_prom writer appends sample lines to a buffer and writes "# HELP" and "# TYPE" the
 * first time it sees a metric family. Labels are given as a NULL-terminated array of
 * name/value pairs: (const char *[]){"topic", "trade", "group", "g1", NULL}; values are
 * escaped (\\, \", \n). Names are checked: a bad metric or label name fails with -EINVAL and
 * writes nothing. */
#ifndef KQ_ADMIN_PROM_H
#define KQ_ADMIN_PROM_H
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

struct kq_prom {
    struct kq_buf *out;
    char **seen; /* families whose HELP/TYPE are written */
    size_t n_seen, cap_seen;
};

void kq_prom_init(struct kq_prom *p, struct kq_buf *out);
/* Frees the writer's bookkeeping, not `out`. */
void kq_prom_free(struct kq_prom *p);

/* One sample of a counter (name should end in _total) or a gauge. 0, -EINVAL or -ENOMEM. */
int kq_prom_counter(struct kq_prom *p, const char *name, const char *help,
                    const char *const *labels, double value);
int kq_prom_gauge(struct kq_prom *p, const char *name, const char *help,
                  const char *const *labels, double value);

/* A histogram with fixed upper bounds (ascending, at most KQ_PROM_HIST_MAX; +Inf is
 * implicit). observe may run on any thread while render runs on another (relaxed atomics:
 * a render racing an observe may see the sum without the count, never a torn value). */
#define KQ_PROM_HIST_MAX 24
struct kq_prom_hist {
    size_t n;
    double bounds[KQ_PROM_HIST_MAX];
    _Atomic uint64_t counts[KQ_PROM_HIST_MAX + 1]; /* per bucket, not cumulative */
    _Atomic double sum;
};
/* 0, or -EINVAL when n is 0, too large, or the bounds are not strictly ascending. */
int kq_prom_hist_init(struct kq_prom_hist *h, const double *bounds, size_t n);
void kq_prom_hist_observe(struct kq_prom_hist *h, double v);
/* name_bucket{...,le="b"} (cumulative), name_sum and name_count. 0, -EINVAL or -ENOMEM. */
int kq_prom_histogram(struct kq_prom *p, const char *name, const char *help,
                      const char *const *labels, const struct kq_prom_hist *h);
#endif
