#include "core/idmap.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define KEY(m, rec) ((const char *)(rec) + (m)->key_offset)

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a, then a final mix */
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 1099511628211ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

void kq_idmap_init(struct kq_idmap *m, size_t key_offset)
{
    memset(m, 0, sizeof *m);
    m->key_offset = key_offset;
}

void *kq_idmap_find(const struct kq_idmap *m, const char *key)
{
    if (!m->cap)
        return NULL;
    size_t mask = m->cap - 1;
    for (size_t i = hash(key) & mask;; i = (i + 1) & mask) {
        void *r = m->slots[i];
        if (!r)
            return NULL;
        if (strcmp(KEY(m, r), key) == 0)
            return r;
    }
}

static void place(void **slots, size_t mask, void *rec, const char *key)
{
    size_t i = hash(key) & mask;
    while (slots[i])
        i = (i + 1) & mask;
    slots[i] = rec;
}

static int grow(struct kq_idmap *m)
{
    size_t cap = m->cap ? m->cap * 2 : 1024;
    void **slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -ENOMEM;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i])
            place(slots, cap - 1, m->slots[i], KEY(m, m->slots[i]));
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return 0;
}

int kq_idmap_insert(struct kq_idmap *m, void *rec)
{
    /* load factor at most 0.7 keeps probes short */
    if ((m->len + 1) * 10 > m->cap * 7 && grow(m) != 0)
        return -ENOMEM;
    place(m->slots, m->cap - 1, rec, KEY(m, rec));
    m->len++;
    return 0;
}

void kq_idmap_remove(struct kq_idmap *m, const void *rec)
{
    if (!m->cap)
        return;
    size_t mask = m->cap - 1;
    size_t i = hash(KEY(m, rec)) & mask;
    while (m->slots[i] && m->slots[i] != rec)
        i = (i + 1) & mask;
    if (!m->slots[i])
        return;
    m->slots[i] = NULL;
    m->len--;
    /* Backward-shift deletion: move later records of the run into the hole when their home
     * slot allows it, so lookups never need tombstones. */
    for (size_t j = (i + 1) & mask; m->slots[j]; j = (j + 1) & mask) {
        size_t home = hash(KEY(m, m->slots[j])) & mask;
        /* can the record at j live at i? yes unless home lies cyclically in (i, j] */
        bool between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!between) {
            m->slots[i] = m->slots[j];
            m->slots[j] = NULL;
            i = j;
        }
    }
}

void *kq_idmap_next(const struct kq_idmap *m, size_t *pos)
{
    while (*pos < m->cap) {
        void *r = m->slots[(*pos)++];
        if (r)
            return r;
    }
    return NULL;
}

void kq_idmap_free(struct kq_idmap *m)
{
    free(m->slots);
    m->slots = NULL;
    m->cap = m->len = 0;
}
