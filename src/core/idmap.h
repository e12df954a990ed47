/* A hash set of records keyed by a NUL-terminated string stored inside each record (at
 * key_offset), with open addressing and linear probing: one pointer per slot, no per-record
 * handle. Used for the millions of pending messages, where a 56-byte uthash handle per
 * message would cost more than the message record itself.
 *
 * Each slot also keeps one byte: how far its record sits from its home slot, so deletion
 * (backward shift) moves records without reading and rehashing their keys, which
 * profiles showed as the largest cost per message. One byte, not a hash, because every
 * byte per slot is about two bytes per pending message. Not thread-safe. */
#ifndef KQ_CORE_IDMAP_H
#define KQ_CORE_IDMAP_H
#include <stddef.h>
#include <stdint.h>

struct kq_idmap {
    void **slots;
    uint8_t *dist; /* slot - home slot, or DIST_FAR when that is 255 or more */
    size_t cap;    /* power of two, or 0 */
    size_t len;
    size_t key_offset;
};

void kq_idmap_init(struct kq_idmap *m, size_t key_offset);
void *kq_idmap_find(const struct kq_idmap *m, const char *key);
/* Insert a record whose key is not in the map yet. 0 or -ENOMEM. */
int kq_idmap_insert(struct kq_idmap *m, void *rec);
/* Remove the record (by its key); no-op when absent. */
void kq_idmap_remove(struct kq_idmap *m, const void *rec);
/* Iterate: for (size_t i = 0; (r = kq_idmap_next(m, &i));) -- do not insert or remove
 * while iterating. */
void *kq_idmap_next(const struct kq_idmap *m, size_t *pos);
void kq_idmap_free(struct kq_idmap *m);
#endif
