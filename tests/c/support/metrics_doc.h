/* The metric families docs/ADMIN.md lists ("## Metrics" tables) checked against what a
 * broker's /metrics says, and against the Grafana dashboard's queries. */
#ifndef KQ_TEST_METRICS_DOC_H
#define KQ_TEST_METRICS_DOC_H
#include <stdbool.h>
#include <stddef.h>

struct doc_family {
    char name[96];
    char type[16];   /* counter, gauge, histogram */
    char labels[96]; /* label names, sorted, joined by ',' ("" = none) */
    char scope[8];   /* "broker", "file" or "mysql" (the table it is in) */
};

/* Reads $KITEQ_SOURCE_DIR/docs/ADMIN.md; *out malloc'd. 0, or -1 (unreadable, no table). */
int metrics_doc_load(struct doc_family **out, size_t *n);
const struct doc_family *metrics_doc_find(const struct doc_family *v, size_t n, const char *name);

/* Checks a /metrics text against the doc: every family has one TYPE and its samples
 * together, is listed (in the broker table or the one of `store`) with that type and those
 * labels on every sample; every family of the tables named in must_appear (e.g.
 * "broker,file") is there. Problems go to problems (one per line); returns their number. */
int metrics_doc_check(const char *text, const char *store, const char *must_appear, char *problems,
                      size_t len);

/* Every kiteq_* name in the dashboard's queries ("expr") is a listed family (or a
 * histogram's _bucket/_sum/_count). The same returns. */
int metrics_doc_check_dashboard(const char *json, char *problems, size_t len);

/* A file's contents (malloc'd, NUL-terminated), path relative to $KITEQ_SOURCE_DIR; NULL. */
char *metrics_doc_read_source(const char *rel);
#endif
