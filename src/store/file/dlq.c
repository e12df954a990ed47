/* Dead-letter queue of the file store: records in DIR/dlq.log, index in memory
 * (struct fs_dead by id, their order and counters in s->dlq). Counting reads the counters;
 * a page, a lookup and a take read their records back with pread on the loop thread: at
 * most one page (store.h) at a time. */
#include <errno.h>
#include <string.h>

#include "core/log.h"
#include "store/file/fs_internal.h"

static int read_dead(struct fs_store *s, struct fs_dead *d, struct kq_dead_letter *out)
{
    struct fs_rec r;
    if (!fs_read_at(s, true, NULL, d->unsealed, d->off, d->len, &r) ||
        fs_get_dead(r.type, r.payload, r.len, out, &s->dlq_groups))
        return -EIO;
    return 0;
}

int fs_dlq_counts(struct kq_store *base, bool by_group, kq_store_dlq_count_cb cb, void *ud)
{
    kq_dlq_counts_each(&((struct fs_store *)base)->dlq.counts, by_group, cb, ud);
    return 0;
}

static int read_page_item(void *store, void *rec, const char *topic, struct kq_dead_letter *out)
{
    struct fs_dead *d = rec;
    if (topic && strcmp(topic, kq_dlq_pos_topic(&d->pos)) != 0)
        return 0;
    int rc = read_dead(store, d, out);
    return rc ? rc : 1;
}

int fs_dlq_page(struct kq_store *base, const char *topic, const char *after, size_t max,
                kq_store_dlq_cb item, kq_store_dlq_page_cb done, void *ud)
{
    struct fs_store *s = (struct fs_store *)base;
    return kq_dlq_index_page(&s->dlq, topic, after, max, read_page_item, s, item, done, ud);
}

/* Finds and reads the dead letter of id and hands it to cb; *d is its entry. 0, -ENOENT or
 * read_dead's error (cb not called then). */
static int give_letter(struct fs_store *s, const char *id, kq_store_dlq_one_cb cb, void *ud,
                       struct fs_dead **d)
{
    char key[KQ_ID_LEN + 1];
    *d = fs_id_key(id, key) ? fs_find_dead(s, key) : NULL;
    if (!*d)
        return -ENOENT;
    struct kq_dead_letter dl;
    int rc = read_dead(s, *d, &dl);
    if (rc)
        return rc;
    cb(ud, 0, &dl);
    return 0;
}

int fs_dlq_get(struct kq_store *base, const char *id, kq_store_dlq_one_cb cb, void *ud)
{
    struct fs_dead *d;
    return give_letter((struct fs_store *)base, id, cb, ud, &d);
}

int fs_dlq_take(struct kq_store *base, const char *id, kq_store_dlq_one_cb cb, void *ud)
{
    struct fs_store *s = (struct fs_store *)base;
    if (s->closing)
        return -ESHUTDOWN;
    struct fs_dead *d;
    int rc = give_letter(s, id, cb, ud, &d);
    if (rc)
        return rc;
    /* The record may live in the scratch buffer or the open batch: append the DLQ_DEL only
     * after the callback. If that fails the letter stays (a duplicate later, never a loss). */
    if ((rc = fs_append_id(s, FS_DLQ_DEL, true, d->id))) {
        KQ_LOG_RATELIMITED(KQ_LOG_ERROR, FS_MOD,
                           "dead letter id=%s taken but kept in the "
                           "DLQ: %s",
                           d->id, strerror(-rc));
        return 0;
    }
    fs_dead_drop(s, d);
    fs_kick(s);
    return 0;
}

int fs_dlq_purge(struct kq_store *base, const char *topic, kq_store_purge_cb cb, void *ud)
{
    struct fs_store *s = (struct fs_store *)base;
    struct fs_dead *d, *tmp;
    size_t n = 0;
    int rc = 0;
    if (s->closing)
        return -ESHUTDOWN;
    HASH_ITER (hh, s->dead, d, tmp) {
        if (topic && strcmp(topic, kq_dlq_pos_topic(&d->pos)) != 0)
            continue;
        if ((rc = fs_append_id(s, FS_DLQ_DEL, true, d->id)))
            break;
        fs_dead_drop(s, d);
        n++;
    }
    fs_kick(s);
    cb(ud, rc, n);
    return 0;
}
