/* Store URI parsing shared by the store back-ends: "scheme://PATH?k=v&k=v".
 * Used only inside src/store; the broker calls kq_store_open(). */
#ifndef KQ_STORE_URI_H
#define KQ_STORE_URI_H
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

#define KQ_URI_MAX_PARAMS 16

struct kq_store_uri {
    char path[1024]; /* what follows "scheme://" up to '?' (may be empty) */
    size_t n;
    struct {
        char key[32];
        char val[256];
    } p[KQ_URI_MAX_PARAMS];
};

/* Value of parameter key, or NULL when absent. */
const char *kq_store_uri_get(const struct kq_store_uri *u, const char *key);
/* Reject parameters not in the NULL-terminated list `allowed`: 0 or -EINVAL (+ err). */
int kq_store_uri_check(const struct kq_store_uri *u, const char *const *allowed, char *err,
                       size_t errlen);
/* Parse parameter key as an integer in [min, max]; absent → *out = def. 0 or -EINVAL. */
int kq_store_uri_int(const struct kq_store_uri *u, const char *key, int64_t def, int64_t min,
                     int64_t max, int64_t *out, char *err, size_t errlen);

/* Back-end parameter checks (kq_store_check) and constructors (kq_store_open), called with
 * the parsed URI; each constructor runs its check first. */
int kq_memory_store_check(const struct kq_store_uri *u, char *err, size_t errlen);
int kq_file_store_check(const struct kq_store_uri *u, char *err, size_t errlen);
int kq_mysql_store_check(const struct kq_store_uri *u, char *err, size_t errlen);
int kq_memory_store_open(uv_loop_t *loop, const struct kq_store_uri *u, struct kq_store **out,
                         char *err, size_t errlen);
int kq_file_store_open(uv_loop_t *loop, const struct kq_store_uri *u, struct kq_store **out,
                       char *err, size_t errlen);
int kq_mysql_store_open(uv_loop_t *loop, const struct kq_store_uri *u, struct kq_store **out,
                        char *err, size_t errlen);
#endif
