#include "core/idmap.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define KEY(m, rec) ((const char *)(rec) + (m)->key_offset)
#define DIST_FAR 255 /* distance not stored: recompute it from the key */

/* Eight bytes at a time: ids are 32 characters, and a byte-at-a-time hash showed up in
 * profiles. Multiply-xorshift rounds; quality matters only for spreading home slots. */
static uint64_t hash(const char *s)
{
    size_t n = strlen(s);
    uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
    for (; n >= 8; s += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 0x94d049bb133111ebull;
    h ^= h >> 29;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 32;
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

static uint8_t dist_byte(size_t d) { return d < DIST_FAR ? (uint8_t)d : DIST_FAR; }

static void place(struct kq_idmap *m, void *rec)
{
    size_t mask = m->cap - 1, home = hash(KEY(m, rec)) & mask, i = home;
    while (m->slots[i])
        i = (i + 1) & mask;
    m->slots[i] = rec;
    m->dist[i] = dist_byte((i - home) & mask);
}

static int grow(struct kq_idmap *m)
{
    struct kq_idmap old = *m;
    m->cap = old.cap ? old.cap * 2 : 1024;
    m->slots = calloc(m->cap, sizeof *m->slots);
    m->dist = malloc(m->cap);
    if (!m->slots || !m->dist) {
        free(m->slots);
        free(m->dist);
        *m = old;
        return -ENOMEM;
    }
    for (size_t i = 0; i < old.cap; i++)
        if (old.slots[i])
            place(m, old.slots[i]);
    free(old.slots);
    free(old.dist);
    return 0;
}

int kq_idmap_insert(struct kq_idmap *m, void *rec)
{
    /* load factor at most 0.7 keeps probes short */
    if ((m->len + 1) * 10 > m->cap * 7 && grow(m) != 0)
        return -ENOMEM;
    place(m, rec);
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
     * slot allows it (it is not after the hole), so lookups never need tombstones. */
    for (size_t j = (i + 1) & mask; m->slots[j]; j = (j + 1) & mask) {
        size_t d = m->dist[j];
        if (d == DIST_FAR)
            d = (j - (hash(KEY(m, m->slots[j])) & mask)) & mask;
        size_t gap = (j - i) & mask;
        if (d >= gap) {
            m->slots[i] = m->slots[j];
            m->dist[i] = dist_byte(d - gap);
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
    free(m->dist);
    m->slots = NULL;
    m->dist = NULL;
    m->cap = m->len = 0;
}
