/* The groups a message's current attempt failed for (kq_msg.failed) and, kept beside them,
 * the pending messages by failed group. When a group comes online, the messages waiting for
 * it are found in its own table: the cost follows the group's backlog, not the broker's.
 *
 * Every change of m->failed goes through kq_failed_*, so a message is in a group's table
 * exactly while that group is in its failed list. Memory: one slot of a kq_idmap (a pointer
 * and a distance byte, 9 bytes) per (message, failed group), at a load of 1/4 to 7/10 (a
 * table that empties below 1/4 is rebuilt smaller): at most 36 bytes, usually 13 to 26, per
 * failed group of each pending message; plus one entry and the first 1024 slots (~9 KiB)
 * per group with failed messages, freed when its last one leaves. */
#include <errno.h>
#include <stdlib.h>
#include <uthash.h>

#include "broker/internal.h"

/* The messages that failed for one group. */
struct kq_failed_group {
    const char *group; /* the atom: its messages' failed lists hold it while it is here */
    struct kq_idmap msgs;
    UT_hash_handle hh; /* by the atom's address */
};

#define SHRINK_BELOW 4 /* rebuild a table whose load fell under 1 / SHRINK_BELOW */

static struct kq_failed_group *find_group(struct kq_broker *b, const char *atom)
{
    struct kq_failed_group *fg = NULL;
    if (atom)
        HASH_FIND_PTR(b->failed_index, &atom, fg);
    return fg;
}

/* A table of len messages in a map grown for many more: rebuilt for len (a table shrinks
 * as its group's backlog drains). Out of memory: the larger one stays. */
static void shrink(struct kq_failed_group *fg)
{
    struct kq_idmap small;
    kq_idmap_init(&small, offsetof(struct kq_msg, id));
    void *m;
    for (size_t pos = 0; (m = kq_idmap_next(&fg->msgs, &pos));)
        if (kq_idmap_insert(&small, m) != 0) {
            kq_idmap_free(&small);
            return;
        }
    kq_idmap_free(&fg->msgs);
    fg->msgs = small;
}

static void unindex(struct kq_broker *b, struct kq_msg *m, const char *atom)
{
    struct kq_failed_group *fg = find_group(b, atom);
    if (!fg)
        return;
    kq_idmap_remove(&fg->msgs, m);
    if (fg->msgs.len == 0) {
        HASH_DEL(b->failed_index, fg);
        kq_idmap_free(&fg->msgs);
        free(fg);
    } else if (fg->msgs.cap > 1024 && fg->msgs.len * SHRINK_BELOW < fg->msgs.cap) {
        shrink(fg);
    }
}

static int index_msg(struct kq_broker *b, struct kq_msg *m, const char *atom)
{
    struct kq_failed_group *fg = find_group(b, atom);
    if (!fg) {
        if (!(fg = calloc(1, sizeof *fg)))
            return -ENOMEM;
        fg->group = atom;
        kq_idmap_init(&fg->msgs, offsetof(struct kq_msg, id));
        HASH_ADD_PTR(b->failed_index, group, fg);
    }
    if (kq_idmap_insert(&fg->msgs, m) == 0)
        return 0;
    if (fg->msgs.len == 0) {
        HASH_DEL(b->failed_index, fg);
        free(fg);
    }
    return -ENOMEM;
}

int kq_failed_add(struct kq_broker *b, struct kq_msg *m, const char *group)
{
    uint16_t before = m->n_failed;
    int rc = kq_names_add(b, &m->failed, &m->n_failed, group);
    if (rc || m->n_failed == before)
        return rc; /* not recorded, or there already */
    const char *atom = kq_names_view(&m->failed, m->n_failed)[m->n_failed - 1];
    if (index_msg(b, m, atom) == 0)
        return 0;
    kq_names_remove(&m->failed, &m->n_failed, atom);
    return -ENOMEM;
}

void kq_failed_remove(struct kq_broker *b, struct kq_msg *m, const char *atom)
{
    if (!atom || !kq_names_has(&m->failed, m->n_failed, atom))
        return;
    unindex(b, m, atom);
    kq_names_remove(&m->failed, &m->n_failed, atom);
}

void kq_failed_clear(struct kq_broker *b, struct kq_msg *m)
{
    const char *const *names = kq_names_view(&m->failed, m->n_failed);
    for (uint16_t i = 0; i < m->n_failed; i++)
        unindex(b, m, names[i]);
    kq_names_clear(&m->failed, &m->n_failed);
}

size_t kq_failed_each(struct kq_broker *b, const char *group, kq_failed_cb cb, void *ud)
{
    struct kq_failed_group *fg = find_group(b, kq_atom_find(b, group));
    if (!fg)
        return 0;
    struct kq_msg *m;
    size_t n = 0;
    for (size_t pos = 0; (m = kq_idmap_next(&fg->msgs, &pos)); n++)
        cb(b, m, ud);
    return n;
}

void kq_failed_index_free(struct kq_broker *b)
{
    struct kq_failed_group *fg, *tmp;
    HASH_ITER (hh, b->failed_index, fg, tmp) {
        HASH_DEL(b->failed_index, fg);
        kq_idmap_free(&fg->msgs);
        free(fg);
    }
}
