/* PCRE2 behind kq.regex_match and the built-in Regx rule: unanchored search, as Go's
 * regexp.MatchString. Patterns are compiled once and kept in a small bounded cache; a match
 * limit bounds backtracking (RE2 is linear, PCRE2 is not), and hitting it counts as no match. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <errno.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include "policy/internal.h"

#define CACHE_MAX 1024
#define PATTERN_MAX 4096
#define MATCH_LIMIT 100000
#define DEPTH_LIMIT 10000

struct entry {
    char *pattern;
    pcre2_code *re; /* NULL: the pattern does not compile */
    char error[96];
    UT_hash_handle hh;
};

struct kq_regex_cache {
    struct entry *by_pattern;
    size_t n;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
};

struct kq_regex_cache *kq_regex_cache_new(void)
{
    struct kq_regex_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->md = pcre2_match_data_create(1, NULL);
    c->mctx = pcre2_match_context_create(NULL);
    if (!c->md || !c->mctx) {
        kq_regex_cache_free(c);
        return NULL;
    }
    pcre2_set_match_limit(c->mctx, MATCH_LIMIT);
    pcre2_set_depth_limit(c->mctx, DEPTH_LIMIT);
    return c;
}

static void clear(struct kq_regex_cache *c)
{
    struct entry *e, *tmp;
    HASH_ITER (hh, c->by_pattern, e, tmp) {
        HASH_DEL(c->by_pattern, e);
        pcre2_code_free(e->re);
        free(e->pattern);
        free(e);
    }
    c->n = 0;
}

void kq_regex_cache_free(struct kq_regex_cache *c)
{
    if (!c)
        return;
    clear(c);
    pcre2_match_data_free(c->md);
    pcre2_match_context_free(c->mctx);
    free(c);
}

/* Compiles into e (e->re NULL and e->error set when the pattern is bad). */
static void compile(struct entry *e, const char *pattern)
{
    int ec;
    PCRE2_SIZE off;
    if (strlen(pattern) > PATTERN_MAX) {
        snprintf(e->error, sizeof e->error, "pattern longer than %d bytes", PATTERN_MAX);
        return;
    }
    e->re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &ec, &off, NULL);
    if (!e->re) {
        PCRE2_UCHAR msg[80];
        pcre2_get_error_message(ec, msg, sizeof msg);
        snprintf(e->error, sizeof e->error, "at offset %zu: %s", (size_t)off, (char *)msg);
        return;
    }
    pcre2_jit_compile(e->re, PCRE2_JIT_COMPLETE); /* optional: falls back to interpretation */
}

static int run(const struct entry *e, pcre2_match_data *md, pcre2_match_context *mctx,
               const char *subject, char *err, size_t errlen)
{
    if (!e->re) {
        if (err && errlen)
            snprintf(err, errlen, "%s", e->error);
        return -EINVAL;
    }
    /* UTF check on: an invalid UTF-8 subject is an error, i.e. no match */
    return pcre2_match(e->re, (PCRE2_SPTR)subject, strlen(subject), 0, 0, md, mctx) >= 0;
}

int kq_regex_match(struct kq_regex_cache *c, const char *pattern, const char *subject, char *err,
                   size_t errlen)
{
    if (!c) {
        struct entry tmp = {0};
        pcre2_match_data *md = pcre2_match_data_create(1, NULL);
        pcre2_match_context *mctx = pcre2_match_context_create(NULL);
        int rc = 0;
        if (md && mctx) {
            pcre2_set_match_limit(mctx, MATCH_LIMIT);
            pcre2_set_depth_limit(mctx, DEPTH_LIMIT);
            compile(&tmp, pattern);
            rc = run(&tmp, md, mctx, subject, err, errlen);
        }
        pcre2_code_free(tmp.re);
        pcre2_match_data_free(md);
        pcre2_match_context_free(mctx);
        return rc;
    }
    struct entry *e;
    HASH_FIND_STR(c->by_pattern, pattern, e);
    if (!e) {
        if (c->n >= CACHE_MAX)
            clear(c); /* patterns come from bindings: a full cache means churn, start over */
        e = calloc(1, sizeof *e);
        if (e)
            e->pattern = strdup(pattern);
        if (!e || !e->pattern) {
            free(e);
            struct entry tmp = {0};
            compile(&tmp, pattern);
            int rc = run(&tmp, c->md, c->mctx, subject, err, errlen);
            pcre2_code_free(tmp.re);
            return rc;
        }
        compile(e, pattern);
        HASH_ADD_KEYPTR(hh, c->by_pattern, e->pattern, strlen(e->pattern), e);
        c->n++;
    }
    return run(e, c->md, c->mctx, subject, err, errlen);
}
