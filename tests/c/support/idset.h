/* A thread-safe multiset of 32-character message ids (tests: which ids were published,
 * acked, delivered, and how often). Every function may be called from any thread. */
#ifndef KQ_TEST_IDSET_H
#define KQ_TEST_IDSET_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct idset;

/* Aborts on out of memory (tests only). */
struct idset *idset_new(void);
void idset_free(struct idset *s);
/* Count one more occurrence of id (its first 32 characters); returns the new count. */
uint32_t idset_add(struct idset *s, const char *id);
/* Occurrences of id, 0 when absent. */
uint32_t idset_count(const struct idset *s, const char *id);
/* Distinct ids. */
size_t idset_size(const struct idset *s);
/* Calls fn for every distinct id with its count until fn returns false, on a copy taken at
 * the call: fn may read or change any set, this one included (it sees the copy). */
void idset_foreach(const struct idset *s, bool (*fn)(const char *id, uint32_t n, void *ud),
                   void *ud);
#endif
