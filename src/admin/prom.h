/* Prometheus text exposition (format 0.0.4) helpers for the /metrics handler.
 *
 * A kq_prom writer collects sample lines per metric family (the format wants all samples of
 * a family together, under one "# HELP" and "# TYPE"), so callers may write the samples of
 * several families in any order, e.g. one group at a time; kq_prom_finish then appends the
 * families to the output in the order they were first seen. Labels are given as a
 * NULL-terminated array of name/value pairs: (const char *[]){"topic", "trade", "group",
 * "g1", NULL}; values are escaped (\\, \", \n). Names are checked: a bad metric or label
 * name, or a family written with two types, fails with -EINVAL and writes nothing. */
#ifndef KQ_ADMIN_PROM_H
#define KQ_ADMIN_PROM_H
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

struct kq_prom_family; /* prom.c: name, type and the family's lines so far */

struct kq_prom {
    struct kq_buf *out;
    struct kq_prom_family *families; /* in first-seen order */
    size_t n_families, cap_families;
    int error;           /* the first failed call's -errno (0 = none) */
    char error_name[64]; /* and its metric name */
};

void kq_prom_init(struct kq_prom *p, struct kq_buf *out);
/* Append every family (HELP, TYPE, samples) to `out`. Returns 0, -ENOMEM, or the first
 * error a call returned (p->error, p->error_name: the caller reports it; what the other
 * calls wrote is in `out`). A family that lost a line to memory sets out->failed. */
int kq_prom_finish(struct kq_prom *p);
/* Frees the writer's bookkeeping (and lines not finished), not `out`. */
void kq_prom_free(struct kq_prom *p);

/* One sample of a counter (name should end in _total) or a gauge. 0, -EINVAL or -ENOMEM. */
int kq_prom_counter(struct kq_prom *p, const char *name, const char *help,
                    const char *const *labels, double value);
int kq_prom_gauge(struct kq_prom *p, const char *name, const char *help, const char *const *labels,
                  double value);

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
/* The same from plain figures: n bounds, counts[n + 1] per bucket (not cumulative), sum. */
int kq_prom_histogram_of(struct kq_prom *p, const char *name, const char *help,
                         const char *const *labels, const double *bounds, size_t n,
                         const uint64_t *counts, double sum);
#endif
