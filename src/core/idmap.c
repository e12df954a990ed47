#include "core/idmap.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define KEY(m, rec) ((const char *)(rec) + (m)->key_offset)

/* Eight bytes at a time: ids are 32 characters, and a byte-at-a-time hash showed up in
 * profiles. Multiply-xorshift rounds; quality matters only for spreading home slots. */
static uint32_t hash(const char *s)
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
    return (uint32_t)h;
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
    uint32_t h = hash(key);
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        void *r = m->slots[i];
        if (!r)
            return NULL;
        if (m->hashes[i] == h && strcmp(KEY(m, r), key) == 0)
            return r;
    }
}

static void place(void **slots, uint32_t *hashes, size_t mask, void *rec, uint32_t h)
{
    size_t i = h & mask;
    while (slots[i])
        i = (i + 1) & mask;
    slots[i] = rec;
    hashes[i] = h;
}

static int grow(struct kq_idmap *m)
{
    size_t cap = m->cap ? m->cap * 2 : 1024;
    void **slots = calloc(cap, sizeof *slots);
    uint32_t *hashes = malloc(cap * sizeof *hashes);
    if (!slots || !hashes) {
        free(slots);
        free(hashes);
        return -ENOMEM;
    }
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i])
            place(slots, hashes, cap - 1, m->slots[i], m->hashes[i]);
    free(m->slots);
    free(m->hashes);
    m->slots = slots;
    m->hashes = hashes;
    m->cap = cap;
    return 0;
}

int kq_idmap_insert(struct kq_idmap *m, void *rec)
{
    /* load factor at most 0.7 keeps probes short */
    if ((m->len + 1) * 10 > m->cap * 7 && grow(m) != 0)
        return -ENOMEM;
    place(m->slots, m->hashes, m->cap - 1, rec, hash(KEY(m, rec)));
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
        size_t home = m->hashes[j] & mask;
        /* can the record at j live at i? yes unless home lies cyclically in (i, j] */
        bool between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!between) {
            m->slots[i] = m->slots[j];
            m->hashes[i] = m->hashes[j];
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
    free(m->hashes);
    m->slots = NULL;
    m->hashes = NULL;
    m->cap = m->len = 0;
}
