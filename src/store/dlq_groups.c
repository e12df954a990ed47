#include "store/dlq_groups.h"

#include <errno.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

static size_t str_size(const char *s) { return strlen(s ? s : "") + 1; }

static char *put_str(char **at, const char *s)
{
    size_t n = str_size(s);
    char *dst = *at;
    memcpy(dst, s ? s : "", n);
    *at += n;
    return dst;
}

struct kq_dlq_groups *kq_dlq_groups_copy(const struct kq_dlq_groups *g)
{
    static const struct kq_dlq_groups none = {0};
    if (!g)
        g = &none;
    size_t strings = 0;
    for (size_t i = 0; i < g->n_failed; i++)
        strings += str_size(g->failed[i].group) + str_size(g->failed[i].reason);
    for (size_t i = 0; i < g->n_acked; i++)
        strings += str_size(g->acked[i]);
    _Static_assert(alignof(struct kq_dlq_group) == alignof(const char *), "one alignment");
    size_t arrays = sizeof(struct kq_dlq_groups) + g->n_failed * sizeof(struct kq_dlq_group) +
                    g->n_acked * sizeof(const char *);
    struct kq_dlq_groups *c = malloc(arrays + strings);
    if (!c)
        return NULL;
    struct kq_dlq_group *failed = (struct kq_dlq_group *)(c + 1);
    const char **acked = (const char **)(failed + g->n_failed);
    char *at = (char *)c + arrays;
    for (size_t i = 0; i < g->n_failed; i++) {
        failed[i].group = put_str(&at, g->failed[i].group);
        failed[i].reason = put_str(&at, g->failed[i].reason);
    }
    for (size_t i = 0; i < g->n_acked; i++)
        acked[i] = put_str(&at, g->acked[i]);
    *c = (struct kq_dlq_groups){failed, g->n_failed, acked, g->n_acked};
    return c;
}

int kq_dlq_groups_buf_fit(struct kq_dlq_groups_buf *b, size_t n_failed, size_t n_acked)
{
    if (n_failed > b->cap_failed) {
        struct kq_dlq_group *v = realloc(b->failed, n_failed * sizeof *v);
        if (!v)
            return -ENOMEM;
        b->failed = v;
        b->cap_failed = n_failed;
    }
    if (n_acked > b->cap_acked) {
        const char **v = realloc(b->acked, n_acked * sizeof *v);
        if (!v)
            return -ENOMEM;
        b->acked = v;
        b->cap_acked = n_acked;
    }
    return 0;
}

void kq_dlq_groups_buf_free(struct kq_dlq_groups_buf *b)
{
    free(b->failed);
    free(b->acked);
    memset(b, 0, sizeof *b);
}
