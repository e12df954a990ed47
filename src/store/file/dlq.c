/* Dead-letter queue of the file store: records in DIR/dlq.log, index in memory
 * (struct fs_dead). Listing and taking read the records back with pread on the loop thread:
 * an operator action on few messages. */
#include <errno.h>
#include <string.h>

#include "store/file/fs_internal.h"

static int read_dead(struct fs_store *s, struct fs_dead *d, struct kq_dead_letter *out)
{
    struct fs_rec r;
    if (!fs_read_at(s, true, NULL, d->unsealed, d->off, d->len, &r) ||
        fs_get_dead(r.payload, r.len, out))
        return -EIO;
    return 0;
}

int fs_dlq_list(struct kq_store *base, const char *topic, kq_store_dlq_cb cb, void *ud)
{
    struct fs_store *s = (struct fs_store *)base;
    struct fs_dead *d, *tmp;
    HASH_ITER(hh, s->dead, d, tmp)
    {
        if (topic && strcmp(topic, d->topic) != 0)
            continue;
        struct kq_dead_letter dl;
        if (read_dead(s, d, &dl))
            return -EIO;
        if (!cb(ud, &dl))
            break;
    }
    return 0;
}

int fs_dlq_take(struct kq_store *base, const char *id, kq_store_dlq_cb cb, void *ud)
{
    struct fs_store *s = (struct fs_store *)base;
    char key[KQ_ID_LEN + 1];
    if (s->closing)
        return -ESHUTDOWN;
    if (!fs_id_key(id, key))
        return -EINVAL;
    struct fs_dead *d = fs_find_dead(s, key);
    if (!d)
        return -ENOENT;
    struct kq_dead_letter dl;
    int rc = read_dead(s, d, &dl);
    if (rc)
        return rc;
    /* The record may live in the scratch buffer: append the DLQ_DEL after the callback. */
    cb(ud, &dl);
    if ((rc = fs_append_id(s, FS_DLQ_DEL, true, key)))
        return rc;
    fs_dead_drop(s, d);
    fs_kick(s);
    return 0;
}

int fs_dlq_purge(struct kq_store *base, const char *topic, size_t *purged)
{
    struct fs_store *s = (struct fs_store *)base;
    struct fs_dead *d, *tmp;
    size_t n = 0;
    int rc = 0;
    if (s->closing)
        return -ESHUTDOWN;
    HASH_ITER(hh, s->dead, d, tmp)
    {
        if (topic && strcmp(topic, d->topic) != 0)
            continue;
        if ((rc = fs_append_id(s, FS_DLQ_DEL, true, d->id)))
            break;
        fs_dead_drop(s, d);
        n++;
    }
    if (purged)
        *purged = n;
    fs_kick(s);
    return rc;
}

