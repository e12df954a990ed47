#include "admin/prom.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct kq_prom_family {
    char *name;
    const char *type;    /* "counter", "gauge", "histogram" (static strings) */
    struct kq_buf lines; /* HELP, TYPE and the samples so far */
};

void kq_prom_init(struct kq_prom *p, struct kq_buf *out) { *p = (struct kq_prom){.out = out}; }

int kq_prom_finish(struct kq_prom *p)
{
    for (size_t i = 0; i < p->n_families; i++) {
        struct kq_buf *l = &p->families[i].lines;
        if (l->failed) /* a line of it is partial: the output must not pass for whole */
            p->out->failed = true;
        if (kq_buf_append(p->out, l->data, l->len))
            return -ENOMEM;
        kq_buf_free(l); /* written: a second finish adds nothing */
    }
    return p->error;
}

/* Remember the first failure for kq_prom_finish; returns rc. */
static int note(struct kq_prom *p, const char *name, int rc)
{
    if (rc && !p->error) {
        p->error = rc;
        snprintf(p->error_name, sizeof p->error_name, "%s", name ? name : "(null)");
    }
    return rc;
}

void kq_prom_free(struct kq_prom *p)
{
    for (size_t i = 0; i < p->n_families; i++) {
        free(p->families[i].name);
        kq_buf_free(&p->families[i].lines);
    }
    free(p->families);
    *p = (struct kq_prom){0};
}

/* [a-zA-Z_:][a-zA-Z0-9_:]* for metrics; no ':' for labels. */
static bool name_ok(const char *s, bool label)
{
    if (!s || !*s || (*s >= '0' && *s <= '9'))
        return false;
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || (c == ':' && !label)))
            return false;
    }
    return true;
}

static bool labels_ok(const char *const *labels)
{
    for (size_t i = 0; labels && labels[i]; i += 2)
        if (!name_ok(labels[i], true) || !labels[i + 1] || !strcmp(labels[i], "le"))
            return false;
    return true;
}

static int put(struct kq_buf *b, const char *s) { return kq_buf_append(b, s, strlen(s)); }

/* Escape for a label value (quotes too) or a HELP text (quote = false). */
static int put_escaped(struct kq_buf *b, const char *s, bool quote)
{
    int rc = 0;
    for (; *s && !rc; s++) {
        if (*s == '\\')
            rc = put(b, "\\\\");
        else if (*s == '\n')
            rc = put(b, "\\n");
        else if (*s == '"' && quote)
            rc = put(b, "\\\"");
        else
            rc = kq_buf_append(b, s, 1);
    }
    return rc;
}

/* The shortest of %.15g..%.17g that reads back as v: 0.005 rather than 0.0050000000000000001. */
static void fmt_double(char *tmp, size_t n, double v)
{
    if (isnan(v))
        snprintf(tmp, n, "NaN");
    else if (isinf(v))
        snprintf(tmp, n, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 9e15) /* integers without an exponent */
        snprintf(tmp, n, "%.0f", v);
    else
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(tmp, n, "%.*g", prec, v);
            if (strtod(tmp, NULL) == v)
                break;
        }
}

static int put_value(struct kq_buf *b, double v)
{
    char tmp[40];
    fmt_double(tmp, sizeof tmp, v);
    return put(b, tmp);
}

/* The family's lines, started with HELP and TYPE the first time it is seen; NULL when it was
 * seen with another type (-EINVAL in *rc) or memory ran out (-ENOMEM). */
static struct kq_buf *family(struct kq_prom *p, const char *name, const char *help,
                             const char *type, int *rc)
{
    for (size_t i = 0; i < p->n_families; i++)
        if (!strcmp(p->families[i].name, name)) {
            *rc = strcmp(p->families[i].type, type) ? -EINVAL : 0;
            return *rc ? NULL : &p->families[i].lines;
        }
    *rc = -ENOMEM;
    if (p->n_families == p->cap_families) {
        size_t cap = p->cap_families ? p->cap_families * 2 : 32;
        struct kq_prom_family *f = realloc(p->families, cap * sizeof *f);
        if (!f)
            return NULL;
        p->families = f;
        p->cap_families = cap;
    }
    struct kq_prom_family *f = &p->families[p->n_families];
    *f = (struct kq_prom_family){.name = strdup(name), .type = type};
    if (!f->name)
        return NULL;
    p->n_families++;
    struct kq_buf *b = &f->lines;
    int bad = 0;
    if (help && *help)
        bad = put(b, "# HELP ") || put(b, name) || put(b, " ") || put_escaped(b, help, false) ||
              put(b, "\n");
    bad = bad || put(b, "# TYPE ") || put(b, name) || put(b, " ") || put(b, type) || put(b, "\n");
    if (bad)
        return NULL;
    *rc = 0;
    return b;
}

/* name{labels[,le="x"]} value\n; `suffix` is appended to the name (_bucket, _sum...). */
static int sample(struct kq_buf *b, const char *name, const char *suffix, const char *const *labels,
                  const char *le, double v)
{
    int rc = put(b, name) || put(b, suffix);
    bool any = (labels && labels[0]) || le;
    if (!rc && any) {
        rc = put(b, "{");
        const char *sep = "";
        for (size_t i = 0; labels && labels[i] && !rc; i += 2, sep = ",")
            rc = put(b, sep) || put(b, labels[i]) || put(b, "=\"") ||
                 put_escaped(b, labels[i + 1], true) || put(b, "\"");
        if (!rc && le)
            rc = put(b, sep) || put(b, "le=\"") || put(b, le) || put(b, "\"");
        rc = rc || put(b, "}");
    }
    rc = rc || put(b, " ") || put_value(b, v) || put(b, "\n");
    return rc ? -ENOMEM : 0;
}

static int simple(struct kq_prom *p, const char *type, const char *name, const char *help,
                  const char *const *labels, double v)
{
    if (!name_ok(name, false) || !labels_ok(labels))
        return note(p, name, -EINVAL);
    int rc;
    struct kq_buf *b = family(p, name, help, type, &rc);
    return note(p, name, b ? sample(b, name, "", labels, NULL, v) : rc);
}

int kq_prom_counter(struct kq_prom *p, const char *name, const char *help,
                    const char *const *labels, double value)
{
    return simple(p, "counter", name, help, labels, value);
}

int kq_prom_gauge(struct kq_prom *p, const char *name, const char *help, const char *const *labels,
                  double value)
{
    return simple(p, "gauge", name, help, labels, value);
}

/* --- histogram ---------------------------------------------------------------------------- */

int kq_prom_hist_init(struct kq_prom_hist *h, const double *bounds, size_t n)
{
    if (n == 0 || n > KQ_PROM_HIST_MAX)
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (isnan(bounds[i]) || isinf(bounds[i]) || (i && !(bounds[i] > bounds[i - 1])))
            return -EINVAL;
    h->n = n;
    memcpy(h->bounds, bounds, n * sizeof *bounds);
    for (size_t i = 0; i <= KQ_PROM_HIST_MAX; i++)
        atomic_init(&h->counts[i], 0);
    atomic_init(&h->sum, 0.0);
    return 0;
}

void kq_prom_hist_observe(struct kq_prom_hist *h, double v)
{
    size_t i = 0;
    while (i < h->n && v > h->bounds[i]) /* le: a value equal to a bound is in that bucket */
        i++;
    atomic_fetch_add_explicit(&h->counts[i], 1, memory_order_relaxed);
    double old = atomic_load_explicit(&h->sum, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&h->sum, &old, old + v, memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
}

int kq_prom_histogram_of(struct kq_prom *p, const char *name, const char *help,
                         const char *const *labels, const double *bounds, size_t n,
                         const uint64_t *counts, double sum)
{
    if (!name_ok(name, false) || !labels_ok(labels) || n > KQ_PROM_HIST_MAX)
        return note(p, name, -EINVAL);
    int rc;
    struct kq_buf *b = family(p, name, help, "histogram", &rc);
    if (!b)
        return note(p, name, rc);
    uint64_t cum = 0;
    char le[40];
    for (size_t i = 0; i <= n && !rc; i++) {
        cum += counts[i];
        if (i < n)
            fmt_double(le, sizeof le, bounds[i]);
        rc = sample(b, name, "_bucket", labels, i < n ? le : "+Inf", (double)cum);
    }
    if (!rc)
        rc = sample(b, name, "_sum", labels, NULL, sum);
    if (!rc)
        rc = sample(b, name, "_count", labels, NULL, (double)cum); /* = the +Inf bucket */
    return note(p, name, rc);
}

int kq_prom_histogram(struct kq_prom *p, const char *name, const char *help,
                      const char *const *labels, const struct kq_prom_hist *h)
{
    uint64_t counts[KQ_PROM_HIST_MAX + 1];
    for (size_t i = 0; i <= h->n; i++)
        counts[i] = atomic_load_explicit((_Atomic uint64_t *)&h->counts[i], memory_order_relaxed);
    double sum = atomic_load_explicit((_Atomic double *)&h->sum, memory_order_relaxed);
    return kq_prom_histogram_of(p, name, help, labels, h->bounds, h->n, counts, sum);
}
