#include "support/idset.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ID_LEN 32

struct slot {
    char id[ID_LEN + 1];
    uint32_t n; /* 0 = empty */
};

struct idset {
    pthread_mutex_t mu;
    struct slot *slots;
    size_t cap, size; /* cap is a power of two, at most half full */
};

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n, sz);
    if (!p) {
        fprintf(stderr, "idset: out of memory\n");
        abort();
    }
    return p;
}

static size_t hash(const char *id)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < ID_LEN && id[i]; i++)
        h = (h ^ (uint8_t)id[i]) * 1099511628211ULL;
    return (size_t)h;
}

static struct slot *find(struct slot *slots, size_t cap, const char *id)
{
    size_t i = hash(id) & (cap - 1);
    while (slots[i].n && strncmp(slots[i].id, id, ID_LEN) != 0)
        i = (i + 1) & (cap - 1);
    return &slots[i];
}

struct idset *idset_new(void)
{
    struct idset *s = xcalloc(1, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    s->cap = 1024;
    s->slots = xcalloc(s->cap, sizeof *s->slots);
    return s;
}

void idset_free(struct idset *s)
{
    if (!s)
        return;
    pthread_mutex_destroy(&s->mu);
    free(s->slots);
    free(s);
}

static void grow(struct idset *s)
{
    size_t cap = s->cap * 2;
    struct slot *slots = xcalloc(cap, sizeof *slots);
    for (size_t i = 0; i < s->cap; i++)
        if (s->slots[i].n)
            *find(slots, cap, s->slots[i].id) = s->slots[i];
    free(s->slots);
    s->slots = slots;
    s->cap = cap;
}

uint32_t idset_add(struct idset *s, const char *id)
{
    pthread_mutex_lock(&s->mu);
    if ((s->size + 1) * 2 > s->cap)
        grow(s);
    struct slot *e = find(s->slots, s->cap, id);
    if (!e->n) {
        snprintf(e->id, sizeof e->id, "%.*s", ID_LEN, id);
        s->size++;
    }
    uint32_t n = ++e->n;
    pthread_mutex_unlock(&s->mu);
    return n;
}

uint32_t idset_count(const struct idset *cs, const char *id)
{
    struct idset *s = (struct idset *)cs; /* the lock is not part of the value */
    pthread_mutex_lock(&s->mu);
    uint32_t n = find(s->slots, s->cap, id)->n;
    pthread_mutex_unlock(&s->mu);
    return n;
}

size_t idset_size(const struct idset *cs)
{
    struct idset *s = (struct idset *)cs;
    pthread_mutex_lock(&s->mu);
    size_t n = s->size;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void idset_foreach(const struct idset *cs, bool (*fn)(const char *id, uint32_t n, void *ud),
                   void *ud)
{
    struct idset *s = (struct idset *)cs;
    /* fn runs on a copy, without the lock: fn reading another set (whose foreach reads this
     * one) would otherwise take the two locks in both orders (ThreadSanitizer: lock-order
     * inversion, a deadlock when two threads do it). */
    pthread_mutex_lock(&s->mu);
    size_t n = 0;
    struct slot *copy = xcalloc(s->size ? s->size : 1, sizeof *copy);
    for (size_t i = 0; i < s->cap; i++)
        if (s->slots[i].n)
            copy[n++] = s->slots[i];
    pthread_mutex_unlock(&s->mu);
    for (size_t i = 0; i < n; i++)
        if (!fn(copy[i].id, copy[i].n, ud))
            break;
    free(copy);
}
