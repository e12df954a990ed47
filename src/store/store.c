/* kq_store_open() and kq_store_check(): parse the URI and dispatch on its scheme. A new
 * back-end adds one line to the table below and its check and constructor to store_uri.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_uri.h"

typedef int (*store_ctor)(uv_loop_t *loop, const struct kq_store_uri *u, struct kq_store **out,
                          char *err, size_t errlen);
typedef int (*store_check)(const struct kq_store_uri *u, char *err, size_t errlen);

static const struct scheme {
    const char *scheme;
    store_check check;
    store_ctor open;
} schemes[] = {
    {"memory", kq_memory_store_check, kq_memory_store_open},
    {"file", kq_file_store_check, kq_file_store_open},
    {"mysql", kq_mysql_store_check, kq_mysql_store_open},
};

const char *kq_store_uri_get(const struct kq_store_uri *u, const char *key)
{
    for (size_t i = 0; i < u->n; i++)
        if (strcmp(u->p[i].key, key) == 0)
            return u->p[i].val;
    return NULL;
}

int kq_store_uri_check(const struct kq_store_uri *u, const char *const *allowed, char *err,
                       size_t errlen)
{
    for (size_t i = 0; i < u->n; i++) {
        size_t k = 0;
        while (allowed[k] && strcmp(allowed[k], u->p[i].key) != 0)
            k++;
        if (!allowed[k]) {
            snprintf(err, errlen, "unknown store parameter '%s'", u->p[i].key);
            return -EINVAL;
        }
    }
    return 0;
}

int kq_store_uri_int(const struct kq_store_uri *u, const char *key, int64_t def, int64_t min,
                     int64_t max, int64_t *out, char *err, size_t errlen)
{
    const char *v = kq_store_uri_get(u, key);
    if (!v) {
        *out = def;
        return 0;
    }
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < min || x > max) {
        snprintf(err, errlen, "store parameter %s=%s: expected an integer in [%lld, %lld]", key, v,
                 (long long)min, (long long)max);
        return -EINVAL;
    }
    *out = x;
    return 0;
}

/* Split "k=v&k2=v2" into u->p; keys without '=' get an empty value. */
static int parse_query(const char *q, struct kq_store_uri *u, char *err, size_t errlen)
{
    while (*q) {
        const char *amp = strchr(q, '&');
        size_t n = amp ? (size_t)(amp - q) : strlen(q);
        if (n) {
            const char *eq = memchr(q, '=', n);
            size_t kl = eq ? (size_t)(eq - q) : n;
            size_t vl = eq ? n - kl - 1 : 0;
            if (u->n == KQ_URI_MAX_PARAMS || kl == 0 || kl >= sizeof u->p[0].key ||
                vl >= sizeof u->p[0].val) {
                snprintf(err, errlen, "bad store URI parameter '%.*s'", (int)n, q);
                return -EINVAL;
            }
            memcpy(u->p[u->n].key, q, kl);
            u->p[u->n].key[kl] = 0;
            if (eq)
                memcpy(u->p[u->n].val, eq + 1, vl);
            u->p[u->n].val[vl] = 0;
            u->n++;
        }
        q += n + (amp ? 1 : 0);
    }
    return 0;
}

/* Splits uri into its scheme (*sc) and a parsed kq_store_uri (*out, malloc'd). */
static int parse_uri(const char *uri, const struct scheme **sc, struct kq_store_uri **out,
                     char *err, size_t errlen)
{
    if (errlen)
        err[0] = 0;
    *out = NULL;
    const char *sep = uri ? strstr(uri, "://") : NULL;
    if (!sep) {
        snprintf(err, errlen,
                 "store URI '%s' has no scheme (expected e.g. memory:// or file://DIR)",
                 uri ? uri : "(null)");
        return -EINVAL;
    }
    size_t sl = (size_t)(sep - uri);
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
        if (strlen(schemes[i].scheme) != sl || strncmp(uri, schemes[i].scheme, sl) != 0)
            continue;
        struct kq_store_uri *u = calloc(1, sizeof *u);
        if (!u)
            return -ENOMEM;
        const char *rest = sep + 3, *q = strchr(rest, '?');
        size_t pl = q ? (size_t)(q - rest) : strlen(rest);
        int rc = 0;
        if (pl >= sizeof u->path) {
            snprintf(err, errlen, "store path too long");
            rc = -EINVAL;
        } else {
            memcpy(u->path, rest, pl);
            u->path[pl] = 0;
            if (q)
                rc = parse_query(q + 1, u, err, errlen);
        }
        if (rc) {
            free(u);
            return rc;
        }
        *sc = &schemes[i];
        *out = u;
        return 0;
    }
    snprintf(err, errlen, "unknown store scheme '%.*s' (known: memory, file, mysql)", (int)sl, uri);
    return -EINVAL;
}

int kq_store_open(uv_loop_t *loop, const char *uri, struct kq_store **out, char *err, size_t errlen)
{
    const struct scheme *sc;
    struct kq_store_uri *u;
    *out = NULL;
    int rc = parse_uri(uri, &sc, &u, err, errlen);
    if (rc == 0)
        rc = sc->open(loop, u, out, err, errlen);
    free(u);
    return rc;
}

int kq_store_check(const char *uri, char *err, size_t errlen)
{
    const struct scheme *sc;
    struct kq_store_uri *u;
    int rc = parse_uri(uri, &sc, &u, err, errlen);
    if (rc == 0)
        rc = sc->check(u, err, errlen);
    free(u);
    return rc;
}

void kq_store_stat_value(kq_store_stat_cb cb, void *ud, enum kq_store_stat_kind kind,
                         const char *name, const char *help, double value)
{
    cb(ud, &(struct kq_store_stat){.name = name, .help = help, .kind = kind, .value = value});
}
