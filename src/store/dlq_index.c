#include "store/dlq_index.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The pair's entry, or NULL. */
struct kq_dlq_count *kq_dlq_counts_find(const struct kq_dlq_counts *c, const char *topic,
                                        const char *group)
{
    topic = topic ? topic : "";
    group = group ? group : "";
    size_t tl = strlen(topic), gl = strlen(group), kl = tl + 1 + gl;
    struct kq_dlq_count *e = NULL;
    char stack[512], *key = kl <= sizeof stack ? stack : malloc(kl);
    if (!key)
        return NULL;
    memcpy(key, topic, tl + 1);
    memcpy(key + tl + 1, group, gl);
    HASH_FIND(hh, c->pairs, key, kl, e);
    if (key != stack)
        free(key);
    return e;
}

struct kq_dlq_count *kq_dlq_counts_add(struct kq_dlq_counts *c, const char *topic,
                                       const char *group, uint64_t n)
{
    struct kq_dlq_count *e = kq_dlq_counts_find(c, topic, group);
    if (!e) {
        topic = topic ? topic : "";
        group = group ? group : "";
        size_t tl = strlen(topic), gl = strlen(group), kl = tl + 1 + gl;
        struct kq_dlq_topic_count *t = NULL;
        HASH_FIND(hh, c->topics, topic, tl, t);
        if (!t) {
            if (!(t = calloc(1, sizeof *t + tl + 1)))
                return NULL;
            memcpy(t->topic, topic, tl + 1);
            HASH_ADD(hh, c->topics, topic, tl, t);
        }
        if (!(e = calloc(1, sizeof *e + kl + 1))) {
            if (t->n == 0) {
                HASH_DEL(c->topics, t);
                free(t);
            }
            return NULL;
        }
        memcpy(e->key, topic, tl + 1);
        memcpy(e->key + tl + 1, group, gl + 1);
        e->group = e->key + tl + 1;
        e->keylen = kl;
        e->t = t;
        HASH_ADD(hh, c->pairs, key, kl, e);
    }
    e->n += n;
    e->t->n += n;
    c->total += n;
    return e;
}

void kq_dlq_counts_sub(struct kq_dlq_counts *c, struct kq_dlq_count *e, uint64_t n)
{
    if (n > e->n)
        n = e->n;
    e->n -= n;
    e->t->n -= n;
    c->total -= n;
    if (e->n)
        return;
    if (e->t->n == 0) {
        HASH_DEL(c->topics, e->t);
        free(e->t);
    }
    HASH_DEL(c->pairs, e);
    free(e);
}

void kq_dlq_counts_each(const struct kq_dlq_counts *c, bool by_group, kq_store_dlq_count_cb cb,
                        void *ud)
{
    if (by_group) {
        for (struct kq_dlq_count *e = c->pairs; e; e = e->hh.next)
            cb(ud, e->t->topic, e->group, e->n);
    } else {
        for (struct kq_dlq_topic_count *t = c->topics; t; t = t->hh.next)
            cb(ud, t->topic, NULL, t->n);
    }
}

void kq_dlq_counts_drop_topic(struct kq_dlq_counts *c, const char *topic)
{
    struct kq_dlq_count *e, *et;
    HASH_ITER (hh, c->pairs, e, et) {
        if (!topic || strcmp(e->t->topic, topic) == 0)
            kq_dlq_counts_sub(c, e, e->n);
    }
}

void kq_dlq_counts_free(struct kq_dlq_counts *c)
{
    struct kq_dlq_count *e, *et;
    HASH_ITER (hh, c->pairs, e, et) {
        HASH_DEL(c->pairs, e);
        free(e);
    }
    struct kq_dlq_topic_count *t, *tt;
    HASH_ITER (hh, c->topics, t, tt) {
        HASH_DEL(c->topics, t);
        free(t);
    }
    c->total = 0;
}

int kq_dlq_index_add(struct kq_dlq_index *x, void *rec, const char *topic, const char *group,
                     struct kq_dlq_pos *pos)
{
    if (!(pos->cnt = kq_dlq_counts_add(&x->counts, topic, group, 1)))
        return -ENOMEM;
    if (kq_seqlist_push(&x->order, rec, &pos->seq)) {
        kq_dlq_counts_sub(&x->counts, pos->cnt, 1);
        return -ENOMEM;
    }
    return 0;
}

void kq_dlq_index_remove(struct kq_dlq_index *x, const struct kq_dlq_pos *pos)
{
    kq_seqlist_remove(&x->order, pos->seq);
    kq_dlq_counts_sub(&x->counts, pos->cnt, 1);
}

int kq_dlq_index_page(const struct kq_dlq_index *x, const char *topic, const char *after,
                      size_t max, kq_dlq_read_fn read, void *store, kq_store_dlq_cb item,
                      kq_store_dlq_page_cb done, void *ud)
{
    uint64_t from = 0;
    if (after && *after) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(after, &end, 10);
        if (errno || *end || end == after || v > x->order.last_seq)
            return -EINVAL;
        from = v;
    }
    const struct kq_seqlist *l = &x->order;
    size_t start = kq_seqlist_after(l, from), i = start, n = 0;
    void *rec;
    int rc = 0;
    while (n < max && i - start < KQ_DLQ_PAGE_SCAN && (rec = kq_seqlist_next(l, &i, NULL))) {
        struct kq_dead_letter d;
        if ((rc = read(store, rec, topic, &d)) < 0)
            break;
        if (rc > 0) {
            item(ud, &d);
            n++;
        }
    }
    /* Continue after the last slot looked at (a hole keeps its number): every page moves. */
    char next[KQ_DLQ_CURSOR_LEN] = "";
    if (rc >= 0 && i < l->n)
        snprintf(next, sizeof next, "%" PRIu64, i > start ? l->v[i - 1].seq : from);
    done(ud, rc < 0 ? rc : 0, next);
    return 0;
}

void kq_dlq_index_free(struct kq_dlq_index *x)
{
    kq_seqlist_free(&x->order);
    kq_dlq_counts_free(&x->counts);
}
