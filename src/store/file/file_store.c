/* File store: the operations, batching (group commit) on the loop thread, reclaim and
 * compaction. Layout, fsync modes and recovery are described in docs/STORAGE.md.
 *
 * Convention shared by all stores: a negative return value means the callback will not
 * be called; otherwise it is called exactly once (for the file store always later, on
 * the loop, after the batch holding the record was written). */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "store/file/fs_internal.h"
#include "store/store_uri.h"

#define RETRY_BACKOFF_MS 200
#define COMPACT_MIN_SEGMENTS 3 /* "the log is long": at least this many segments */
#define SPARES_MAX 8           /* reset batches kept for reuse */

static const struct kq_store_ops file_ops;

const double kq_fs_batch_bounds[KQ_FS_BATCH_BUCKETS] = {1, 2, 4, 16, 64, 256, 1024, 4096};

/* ---- index helpers ---------------------------------------------------------------------- */

struct fs_entry *fs_find(struct fs_store *s, const char *key)
{
    return kq_idmap_find(&s->index, key);
}

struct fs_dead *fs_find_dead(struct fs_store *s, const char *key)
{
    struct fs_dead *d = NULL;
    HASH_FIND(hh, s->dead, key, KQ_ID_LEN, d);
    return d;
}

void fs_entry_drop(struct fs_store *s, struct fs_entry *e)
{
    if (!e->unsealed && e->seg) {
        e->seg->live--;
        e->seg->live_bytes -= e->len;
    }
    kq_idmap_remove(&s->index, e);
    s->pending--;
    free(e->state);
    free(e);
}

struct fs_dead *fs_dead_new(struct fs_store *s, const char *key, const char *topic,
                            const char *group)
{
    struct fs_dead *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    if (kq_dlq_index_add(&s->dlq, d, topic, group, &d->pos)) {
        free(d);
        return NULL;
    }
    memcpy(d->id, key, sizeof d->id);
    return d;
}

void fs_dead_insert(struct fs_store *s, struct fs_dead *d)
{
    struct fs_dead *old = fs_find_dead(s, d->id);
    if (old)
        fs_dead_drop(s, old);
    HASH_ADD(hh, s->dead, id, KQ_ID_LEN, d);
}

void fs_dead_drop(struct fs_store *s, struct fs_dead *d)
{
    kq_dlq_index_remove(&s->dlq, &d->pos);
    if (fs_find_dead(s, d->id) == d)
        HASH_DEL(s->dead, d);
    free(d);
}

/* ---- batches ----------------------------------------------------------------------------- */

static bool batch_empty(const struct fs_batch *b)
{
    return !b->main.len && !b->dlq.len && !b->n_drops;
}

static void batch_reset(struct fs_batch *b)
{
    if (b->main.cap > (16u << 20)) /* do not keep the memory of an exceptional burst */
        kq_buf_free(&b->main);
    if (b->dlq.cap > (16u << 20))
        kq_buf_free(&b->dlq);
    b->main.len = b->dlq.len = 0;
    b->n_items = b->n_cbs = b->n_drops = 0;
    b->seg = NULL;
    b->base = b->dbase = 0;
    b->new_seg = false;
    b->status = 0;
    b->dropped = false;
}

static void batch_free(struct fs_batch *b)
{
    if (!b)
        return;
    kq_buf_free(&b->main);
    kq_buf_free(&b->dlq);
    free(b->items);
    free(b->cbs);
    free(b->drops);
    free(b);
}

/* Make room for one more element in *arr (n used of *cap); keeps the block on failure. */
static int grow(void *arr, size_t n, size_t *cap, size_t elem)
{
    void **p = arr;
    if (n < *cap)
        return 0;
    size_t c = *cap ? *cap * 2 : 64;
    void *q = realloc(*p, c * elem);
    if (!q)
        return -ENOMEM;
    *p = q;
    *cap = c;
    return 0;
}

#define GROW(arr, n, cap) grow(&(arr), (n), &(cap), sizeof *(arr))

static void list_push(struct fs_batch_list *l, struct fs_batch *b)
{
    b->next = NULL;
    if (l->tail)
        l->tail->next = b;
    else
        l->head = b;
    l->tail = b;
}

static struct fs_batch *list_pop(struct fs_batch_list *l)
{
    struct fs_batch *b = l->head;
    if (b && !(l->head = b->next))
        l->tail = NULL;
    return b;
}

/* A reset batch for the next open batch: a spare, or a new one (NULL on ENOMEM). */
static struct fs_batch *spare_take(struct fs_store *s)
{
    struct fs_batch *b = s->spares;
    if (!b)
        return calloc(1, sizeof *b);
    s->spares = b->next;
    s->n_spares--;
    b->next = NULL;
    return b;
}

static void spare_give(struct fs_store *s, struct fs_batch *b)
{
    batch_reset(b);
    if (s->n_spares >= SPARES_MAX) {
        batch_free(b);
        return;
    }
    b->next = s->spares;
    s->spares = b;
    s->n_spares++;
}

static int add_item(struct fs_batch *b, uint8_t type, bool dlq, size_t rel, size_t len,
                    const char *key, struct fs_seg *from, uint32_t from_off)
{
    if (GROW(b->items, b->n_items, b->cap_items))
        return -ENOMEM;
    struct fs_item *it = &b->items[b->n_items++];
    it->type = type;
    it->dlq = dlq;
    it->rel = (uint32_t)rel;
    it->len = (uint32_t)len;
    memcpy(it->id, key, sizeof it->id);
    it->from = from;
    it->from_off = from_off;
    return 0;
}

static int add_cb(struct fs_batch *b, kq_store_done_cb cb, void *ud)
{
    if (GROW(b->cbs, b->n_cbs, b->cap_cbs))
        return -ENOMEM;
    b->cbs[b->n_cbs++] = (struct fs_cb){cb, ud};
    return 0;
}

static int add_drop(struct fs_batch *b, struct fs_seg *g)
{
    if (GROW(b->drops, b->n_drops, b->cap_drops))
        return -ENOMEM;
    b->drops[b->n_drops++] = g;
    return 0;
}

/* ---- reading records back ---------------------------------------------------------------- */

struct fs_batch *fs_unwritten(struct fs_store *s, bool dlq, const struct fs_seg *seg, uint64_t off)
{
    struct fs_batch *lists[] = {s->flight.head, s->failed.head};
    for (size_t i = 0; i < 2; i++)
        for (struct fs_batch *b = lists[i]; b; b = b->next) {
            if (dlq ? b->dlq.len && off >= b->dbase && off < b->dbase + b->dlq.len
                    : b->main.len && b->seg == seg && off >= b->base && off < b->base + b->main.len)
                return b;
        }
    return NULL;
}

const uint8_t *fs_read_at(struct fs_store *s, bool dlq, struct fs_seg *seg, bool unsealed,
                          uint64_t off, uint32_t len, struct fs_rec *r)
{
    const uint8_t *p = NULL;
    struct fs_batch *f;
    if (unsealed) {
        p = (dlq ? s->open->dlq.data : s->open->main.data) + off;
    } else if ((f = fs_unwritten(s, dlq, seg, off))) {
        /* with the writer right now: read-only */
        p = dlq ? f->dlq.data + (off - f->dbase) : f->main.data + (off - f->base);
    } else {
        /* pread on the loop thread: loads hit the page cache in the common case (recently
         * written or recovered); see docs/STORAGE.md. */
        if (kq_buf_reserve(&s->scratch, len))
            return NULL;
        int fd = dlq ? s->dlq_fd : seg->fd;
        size_t got = 0;
        while (got < len) {
            ssize_t n = pread(fd, s->scratch.data + got, len - got, (off_t)(off + got));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                return NULL;
            got += (size_t)n;
        }
        p = s->scratch.data;
    }
    size_t total;
    if (fs_rec_parse(p, len, r, &total) != FS_REC_OK || total != len) {
        KQ_LOG_RATELIMITED(KQ_LOG_ERROR, FS_MOD, "bad record read back from %s offset %llu",
                           dlq ? "dlq.log" : seg->path, (unsigned long long)off);
        return NULL;
    }
    return p;
}

/* ---- appending records (loop thread) ----------------------------------------------------- */

/* Append an id-only record (COMMIT, REMOVE, DEAD, DLQ_DEL) to the open batch. */
int fs_append_id(struct fs_store *s, uint8_t type, bool dlq, const char *key)
{
    struct fs_batch *b = s->open;
    struct kq_buf *buf = dlq ? &b->dlq : &b->main;
    size_t start;
    int rc = fs_rec_begin(buf, type, s->seq + 1, &start);
    if (!rc && !(rc = fs_put_id(buf, key)))
        rc = fs_rec_end(buf, start);
    if (!rc && (rc = add_item(b, type, dlq, start, buf->len - start, key, NULL, 0)))
        buf->len = start;
    if (rc)
        return rc;
    s->seq++;
    return 0;
}

static int append_state(struct fs_store *s, const char *key, const uint8_t *body, size_t n)
{
    struct kq_buf *buf = &s->open->main;
    size_t start;
    int rc = fs_rec_begin(buf, FS_STATE, s->seq + 1, &start);
    if (!rc && !(rc = fs_put_id(buf, key)))
        rc = kq_buf_append(buf, body, n) ? -ENOMEM : fs_rec_end(buf, start);
    if (!rc && (rc = add_item(s->open, FS_STATE, false, start, buf->len - start, key, NULL, 0)))
        buf->len = start;
    if (rc)
        return rc;
    s->seq++;
    return 0;
}

/* Append a SAVE record; from != NULL for a compaction copy. */
static int append_save(struct fs_store *s, const struct kq_stored_msg *m, uint64_t orig_seq,
                       struct fs_seg *from, uint32_t from_off, size_t *rel, size_t *len)
{
    struct kq_buf *buf = &s->open->main;
    size_t start;
    char key[KQ_ID_LEN + 1];
    fs_id_key(m->id, key);
    int rc = fs_rec_begin(buf, FS_SAVE, s->seq + 1, &start);
    if (!rc && !(rc = fs_put_msg(buf, m, orig_seq ? orig_seq : s->seq + 1)))
        rc = fs_rec_end(buf, start);
    if (!rc &&
        (rc = add_item(s->open, FS_SAVE, false, start, buf->len - start, key, from, from_off)))
        buf->len = start;
    if (rc) {
        buf->len = start;
        return rc;
    }
    s->seq++;
    *rel = start;
    *len = buf->len - start;
    return 0;
}

/* ---- store operations -------------------------------------------------------------------- */

static int fs_save(struct kq_store *base, const struct kq_stored_msg *m, kq_store_done_cb cb,
                   void *ud)
{
    struct fs_store *s = (struct fs_store *)base;
    char key[KQ_ID_LEN + 1];
    if (s->closing)
        return -ESHUTDOWN;
    if (!fs_id_key(m->id, key))
        return -EINVAL;
    if (fs_find(s, key))
        return -EEXIST;
    struct fs_entry *e = calloc(1, sizeof *e);
    if (!e)
        return -ENOMEM;
    size_t rel, len;
    int rc = append_save(s, m, 0, NULL, 0, &rel, &len);
    if (!rc && (rc = add_cb(s->open, cb, ud))) {
        s->open->main.len = rel; /* also drop its item */
        s->open->n_items--;
    }
    if (rc) {
        free(e);
        return rc;
    }
    memcpy(e->id, key, sizeof e->id);
    e->commit = m->commit;
    e->unsealed = true;
    e->off = (uint32_t)rel;
    e->len = (uint32_t)len;
    e->orig_seq = s->seq;
    if (kq_idmap_insert(&s->index, e) != 0) {
        free(e); /* the record is in the batch but unindexed: its save is reported failed */
        return -ENOMEM;
    }
    s->pending++;
    fs_kick(s);
    return 0;
}

/* The index entry of a pending message: 0, or -ESHUTDOWN, -EINVAL (bad id), -ENOENT. */
static int find_pending(struct fs_store *s, const char *id, char key[KQ_ID_LEN + 1],
                        struct fs_entry **out)
{
    if (s->closing)
        return -ESHUTDOWN;
    if (!fs_id_key(id, key))
        return -EINVAL;
    *out = fs_find(s, key);
    return *out ? 0 : -ENOENT;
}

static int fs_commit(struct kq_store *base, const char *id, kq_store_done_cb cb, void *ud)
{
    struct fs_store *s = (struct fs_store *)base;
    char key[KQ_ID_LEN + 1];
    struct fs_entry *e;
    int found = find_pending(s, id, key, &e);
    if (found)
        return found;
    size_t mark = s->open->main.len;
    int rc = fs_append_id(s, FS_COMMIT, false, key);
    if (!rc && (rc = add_cb(s->open, cb, ud))) {
        s->open->main.len = mark;
        s->open->n_items--;
    }
    if (rc)
        return rc;
    e->commit = true;
    fs_kick(s);
    return 0;
}

static int fs_update(struct kq_store *base, const struct kq_delivery_state *st)
{
    struct fs_store *s = (struct fs_store *)base;
    char key[KQ_ID_LEN + 1];
    if (s->closing)
        return -ESHUTDOWN;
    if (!fs_id_key(st->id, key))
        return -EINVAL;
    struct fs_entry *e = fs_find(s, key);
    if (!e)
        return -ENOENT;
    /* Encode the body once: it is both the record and the in-memory copy. */
    struct kq_buf body = {0};
    uint32_t n = 0;
    int rc = kq_buf_append(&body, &n, 4) ? -ENOMEM : fs_put_state_body(&body, st);
    if (!rc)
        rc = append_state(s, key, body.data + 4, body.len - 4);
    if (rc) {
        kq_buf_free(&body);
        return rc;
    }
    n = (uint32_t)(body.len - 4);
    memcpy(body.data, &n, 4);
    uint8_t *blob = malloc(body.len); /* exact size: one per pending message */
    if (blob) {
        memcpy(blob, body.data, body.len);
        free(e->state);
        e->state = blob;
    }
    kq_buf_free(&body);
    fs_kick(s);
    return 0;
}

static int fs_remove(struct kq_store *base, const char *id)
{
    struct fs_store *s = (struct fs_store *)base;
    char key[KQ_ID_LEN + 1];
    struct fs_entry *e;
    int found = find_pending(s, id, key, &e);
    if (found)
        return found;
    int rc = fs_append_id(s, FS_REMOVE, false, key);
    if (rc)
        return rc;
    fs_entry_drop(s, e);
    fs_kick(s);
    return 0;
}

static int fs_dead_letter(struct kq_store *base, const struct kq_stored_msg *m, const char *reason,
                          const struct kq_dlq_groups *groups)
{
    struct fs_store *s = (struct fs_store *)base;
    char key[KQ_ID_LEN + 1];
    if (s->closing)
        return -ESHUTDOWN;
    if (!fs_id_key(m->id, key))
        return -EINVAL;
    struct fs_entry *e = fs_find(s, key);
    struct kq_stored_msg stored;
    const struct kq_stored_msg *src = m;
    if (e && !m->header && !m->body) {
        /* Only the index fields were passed: take header and body from the log. */
        struct fs_rec r;
        if (!fs_read_at(s, false, e->seg, e->unsealed, e->off, e->len, &r) ||
            fs_get_msg(r.payload, r.len, &stored, NULL))
            return -EIO;
        stored.commit = e->commit;
        src = &stored;
    }
    struct fs_dead *d = fs_dead_new(s, key, src->topic, src->publish_group);
    if (!d)
        return -ENOMEM;
    struct fs_batch *b = s->open;
    size_t start, mark_items = b->n_items;
    int rc = fs_rec_begin(&b->dlq, groups ? FS_DLQ_ADD_GROUPS : FS_DLQ_ADD, s->seq + 1, &start);
    if (!rc && !(rc = fs_put_dead(&b->dlq, src, reason, kq_now_sec(), groups)))
        rc = fs_rec_end(&b->dlq, start);
    if (!rc)
        rc = add_item(b, FS_DLQ_ADD, true, start, b->dlq.len - start, key, NULL, 0);
    if (!rc)
        s->seq++;
    if (!rc && e && (rc = fs_append_id(s, FS_DEAD, false, key))) {
        b->n_items = mark_items;
    }
    if (rc) {
        b->dlq.len = start;
        fs_dead_drop(s, d);
        return rc;
    }
    d->unsealed = true;
    d->off = start;
    d->len = (uint32_t)(b->dlq.len - start);
    fs_dead_insert(s, d);
    if (e)
        fs_entry_drop(s, e);
    fs_kick(s);
    return 0;
}

static int fs_load(struct kq_store *base, const char *id, kq_store_load_cb cb, void *ud)
{
    struct fs_store *s = (struct fs_store *)base;
    char key[KQ_ID_LEN + 1];
    if (!fs_id_key(id, key))
        return -EINVAL;
    struct fs_entry *e = fs_find(s, key);
    if (!e)
        return -ENOENT;
    struct fs_rec r;
    struct kq_stored_msg m;
    if (!fs_read_at(s, false, e->seg, e->unsealed, e->off, e->len, &r) ||
        fs_get_msg(r.payload, r.len, &m, NULL)) {
        cb(ud, -EIO, NULL);
        return 0;
    }
    m.commit = e->commit;
    cb(ud, 0, &m);
    return 0;
}

/* ---- reclaim and compaction -------------------------------------------------------------- */

/* Copy the live messages of the oldest segment to the head (SAVE with the merged commit
 * flag and the original publish seq, then the latest STATE) so that it can be deleted. The
 * index moves to the copies only once they are durable (on_done). Reads use pread on the
 * loop; a segment qualifies only when under 25% of it is live, so this is bounded. */
static void compact(struct fs_store *s, struct fs_seg *g)
{
    g->compacting = true;
    s->st.compactions++;
    KQ_INFO(FS_MOD, "compacting %s live=%llu live_bytes=%llu size=%llu", g->path,
            (unsigned long long)g->live, (unsigned long long)g->live_bytes,
            (unsigned long long)g->size);
    struct fs_entry *e;
    for (size_t pos = 0; (e = kq_idmap_next(&s->index, &pos));) {
        if (e->unsealed || e->seg != g)
            continue;
        struct fs_rec r;
        struct kq_stored_msg m;
        size_t rel, len;
        if (!fs_read_at(s, false, g, false, e->off, e->len, &r) ||
            fs_get_msg(r.payload, r.len, &m, NULL)) {
            g->compacting = false; /* keep the segment; try again later */
            return;
        }
        m.commit = e->commit;
        if (append_save(s, &m, e->orig_seq, g, e->off, &rel, &len)) {
            g->compacting = false;
            return;
        }
        if (e->state) {
            uint32_t n;
            memcpy(&n, e->state, 4);
            append_state(s, e->id, e->state + 4, n);
        }
        s->st.compacted_msgs++;
    }
    fs_kick(s);
}

/* Delete segments from the old end once none of their SAVE records is pending. Only the
 * oldest may go: a REMOVE in a newer segment may refer to a SAVE in an older one, and
 * deleting the newer one first would bring that message back at the next start. */
static void reclaim(struct fs_store *s)
{
    struct fs_seg *g;
    while ((g = s->oldest) && g != s->head && g->live == 0) {
        if (add_drop(s->open, g))
            return;
        fs_seg_unlink(s, g);
        s->st.segments_deleted++;
    }
    g = s->oldest;
    if (g && g != s->head && !g->compacting && s->n_segs >= COMPACT_MIN_SEGMENTS &&
        g->live_bytes * 4 < g->size && s->backoff_until <= kq_now_ms())
        compact(s, g);
    if (!batch_empty(s->open))
        fs_kick(s);
}

/* ---- sealing, completion ----------------------------------------------------------------- */

static void undo_failed(struct fs_store *s, struct fs_batch *b);
static void finish(struct fs_store *s, struct fs_batch *b);

/* Seal the open batch (its records get their place in the files) and queue it for the
 * writer, even while the writer is busy: it takes everything queued as its next group the
 * moment the disk is free. Not while failed batches wait for the rest to come back. */
static void seal_and_submit(struct fs_store *s)
{
    struct fs_batch *b = s->open;
    if (s->failed.head || batch_empty(b))
        return;
    struct fs_batch *next = spare_take(s);
    if (!next)
        return; /* out of memory: the next kick tries again */
    int rc = 0;
    if (b->main.len) {
        struct fs_seg *h = s->head;
        if (!h || h->size >= s->seg_max || h->size + b->main.len > UINT32_MAX) {
            uint64_t first;
            memcpy(&first, b->main.data + 13, 8);
            struct fs_seg *g;
            if ((rc = fs_seg_create(s, first, &g)))
                KQ_LOG_RATELIMITED(KQ_LOG_ERROR, FS_MOD, "cannot create segment: %s",
                                   strerror(-rc));
            else
                b->new_seg = true;
        }
        if (!rc) {
            b->seg = s->head;
            b->base = s->head->size;
            s->head->size += b->main.len;
        }
    }
    b->dbase = s->dlq_size;
    s->dlq_size += b->dlq.len;
    /* Entries of this batch get their final location now (seg stays NULL if it failed). */
    for (size_t i = 0; i < b->n_items; i++) {
        struct fs_item *it = &b->items[i];
        if (it->type == FS_SAVE && !it->from) {
            struct fs_entry *e = fs_find(s, it->id);
            if (e && e->unsealed && e->off == it->rel) {
                e->unsealed = false;
                e->seg = b->seg;
                e->off = (uint32_t)(b->base + it->rel);
                if (b->seg) {
                    b->seg->live++;
                    b->seg->live_bytes += e->len;
                }
            }
        } else if (it->type == FS_DLQ_ADD) {
            struct fs_dead *d = fs_find_dead(s, it->id);
            if (d && d->unsealed && d->off == it->rel) {
                d->unsealed = false;
                d->off = b->dbase + it->rel;
            }
        }
    }
    s->open = next;
    s->held_until = 0;
    if (rc) { /* handled like a failed write; nothing of it reached the writer */
        b->status = rc;
        undo_failed(s, b);
        s->backoff_until = kq_now_ms() + RETRY_BACKOFF_MS;
        finish(s, b);
        fs_kick(s); /* the requeued records: after the back-off */
        return;
    }
    list_push(&s->flight, b);
    fs_writer_submit(&s->w, b);
}

/* Put the records of a failed batch that must not be lost (STATE, REMOVE, DEAD, DLQ) in
 * front of the open batch, with their original bytes and sequence numbers, so that the
 * order on disk stays the order of the calls. */
static void requeue(struct fs_store *s, struct fs_batch *f)
{
    struct fs_batch *o = s->open;
    struct fs_batch *n = calloc(1, sizeof *n);
    if (!n)
        goto oom;
    for (size_t i = 0; i < f->n_items; i++) {
        struct fs_item it = f->items[i];
        if (it.type == FS_SAVE || it.type == FS_COMMIT)
            continue;
        struct kq_buf *dst = it.dlq ? &n->dlq : &n->main;
        const uint8_t *src = (it.dlq ? f->dlq.data : f->main.data) + it.rel;
        size_t rel = dst->len;
        if (kq_buf_append(dst, src, it.len) ||
            add_item(n, it.type, it.dlq, rel, it.len, it.id, NULL, 0))
            goto oom;
        if (it.type == FS_DLQ_ADD) {
            struct fs_dead *d = fs_find_dead(s, it.id);
            if (d && !d->unsealed && d->off == f->dbase + it.rel) {
                d->unsealed = true;
                d->off = rel;
            }
        }
    }
    for (size_t i = 0; i < f->n_drops; i++)
        if (add_drop(n, f->drops[i]))
            goto oom;
    size_t shift_m = n->main.len, shift_d = n->dlq.len;
    for (size_t i = 0; i < o->n_items; i++) {
        struct fs_item it = o->items[i];
        if (it.type == FS_SAVE && !it.from) {
            struct fs_entry *e = fs_find(s, it.id);
            if (e && e->unsealed && e->off == it.rel)
                e->off += (uint32_t)shift_m;
        } else if (it.type == FS_DLQ_ADD) {
            struct fs_dead *d = fs_find_dead(s, it.id);
            if (d && d->unsealed && d->off == it.rel)
                d->off += shift_d;
        }
        it.rel += (uint32_t)(it.dlq ? shift_d : shift_m);
        if (add_item(n, it.type, it.dlq, it.rel, it.len, it.id, it.from, it.from_off))
            goto oom;
    }
    if (kq_buf_append(&n->main, o->main.data, o->main.len) ||
        kq_buf_append(&n->dlq, o->dlq.data, o->dlq.len))
        goto oom;
    for (size_t i = 0; i < o->n_cbs; i++)
        if (add_cb(n, o->cbs[i].cb, o->cbs[i].ud))
            goto oom;
    for (size_t i = 0; i < o->n_drops; i++)
        if (add_drop(n, o->drops[i]))
            goto oom;
    s->open = n;
    batch_free(o);
    return;
oom:
    /* Cannot happen short of memory exhaustion; the records are then lost (logged). */
    KQ_ERROR(FS_MOD, "out of memory while requeueing a failed batch");
    batch_free(n);
}

/* A batch is durable: stats, and the index moves to its compaction copies. */
static void complete_ok(struct fs_store *s, struct fs_batch *b)
{
    s->st.batches++;
    s->st.records += b->n_items;
    size_t bi = 0;
    while (bi < KQ_FS_BATCH_BUCKETS && (double)b->n_items > kq_fs_batch_bounds[bi])
        bi++;
    s->st.batch_hist[bi]++;
    s->st.batch_records_sum += b->n_items;
    s->st.bytes_written += b->main.len + b->dlq.len;
    /* Compaction copies are durable: move the index to them. */
    for (size_t i = 0; i < b->n_items; i++) {
        struct fs_item *it = &b->items[i];
        if (it->type != FS_SAVE || !it->from)
            continue;
        struct fs_entry *e = fs_find(s, it->id);
        if (!e || e->unsealed || e->seg != it->from || e->off != it->from_off)
            continue;
        it->from->live--;
        it->from->live_bytes -= e->len;
        e->seg = b->seg;
        e->off = (uint32_t)(b->base + it->rel);
        e->len = it->len;
        b->seg->live++;
        b->seg->live_bytes += e->len;
    }
    for (size_t i = 0; i < b->n_drops; i++)
        free(b->drops[i]);
    b->n_drops = 0;
}

/* A batch failed: give back its place in the files, forget what it would have stored, and
 * put what must not be lost in front of the open batch. Called newest batch first. */
static void undo_failed(struct fs_store *s, struct fs_batch *b)
{
    s->st.write_errors++;
    KQ_LOG_RATELIMITED(KQ_LOG_ERROR, FS_MOD,
                       "batch write failed: %s (%zu records; saves and commits of the "
                       "batch fail, the rest is retried)",
                       strerror(-b->status), b->n_items);
    if (b->seg)
        b->seg->size = b->base;
    s->dlq_size = b->dbase;
    for (size_t i = 0; i < b->n_items; i++) {
        struct fs_item *it = &b->items[i];
        if (it->type == FS_SAVE && it->from) {
            it->from->compacting = false;
        } else if (it->type == FS_SAVE) {
            struct fs_entry *e = fs_find(s, it->id);
            if (e && !e->unsealed && e->seg == b->seg && e->off == b->base + it->rel)
                fs_entry_drop(s, e);
        } else if (it->type == FS_COMMIT) {
            struct fs_entry *e = fs_find(s, it->id);
            if (e)
                e->commit = false;
        }
    }
    /* after the loop above: a compaction copy may still point at a dropped segment */
    if (b->dropped) { /* done by the writer all the same: nothing to retry */
        for (size_t i = 0; i < b->n_drops; i++)
            free(b->drops[i]);
        b->n_drops = 0;
    }
    requeue(s, b);
}

/* The callbacks of a batch that is done (its status), then the batch is reused. */
static void finish(struct fs_store *s, struct fs_batch *b)
{
    for (size_t i = 0; i < b->n_cbs; i++)
        if (b->cbs[i].cb)
            b->cbs[i].cb(b->cbs[i].ud, b->status);
    spare_give(s, b);
}

/* Every failed batch is back: undo them newest first, so that the requeued records keep the
 * call order and the files end where the first failed batch began, then fail their
 * callbacks in order. */
static void undo_all_failed(struct fs_store *s)
{
    struct fs_batch *newest_first = NULL, *b;
    while ((b = list_pop(&s->failed))) {
        b->next = newest_first;
        newest_first = b;
    }
    for (b = newest_first; b; b = b->next)
        undo_failed(s, b);
    struct fs_batch *oldest_first = NULL;
    while ((b = newest_first)) {
        newest_first = b->next;
        b->next = oldest_first;
        oldest_first = b;
    }
    fs_writer_clear_failure(&s->w);
    s->backoff_until = kq_now_ms() + RETRY_BACKOFF_MS;
    while ((b = oldest_first)) {
        oldest_first = b->next;
        finish(s, b);
    }
}

/* A batch back from the writer: the done mailbox delivers them in the order they were
 * sealed. A failed one waits until every batch sealed after it is back too (the writer fails
 * those without writing: the file was cut back before their offsets). */
static void take_back(void *ud, struct kq_mail *m)
{
    struct fs_store *s = ud;
    struct fs_batch *b = (struct fs_batch *)((char *)m - offsetof(struct fs_batch, mail));
    list_pop(&s->flight); /* == b: the writer returns them in order */
    if (b->status) {
        list_push(&s->failed, b);
    } else {
        complete_ok(s, b);
        finish(s, b);
    }
    if (s->failed.head && !s->flight.head)
        undo_all_failed(s);
    if (!s->closing)
        reclaim(s);
    /* Everything that arrived while these batches were written goes out now: group commit. */
    if (!s->closing)
        fs_kick(s);
}

static void on_kick(uv_idle_t *h)
{
    struct fs_store *s = h->data;
    uv_idle_stop(h);
    seal_and_submit(s);
}

static void on_later(uv_timer_t *h) { fs_kick(h->data); }

/* Submit the open batch at the end of this loop iteration (so that every call made in the
 * same iteration shares one write and one fdatasync), or right away if the writer is idle
 * and we are called from a completion. A batch that carries no callback waits: after a
 * failed write RETRY_BACKOFF_MS, so that a full disk is not hammered; with fsync=group up
 * to lazy_sync_ms from its first record, for a call somebody waits for (a save, a commit)
 * whose batch it then joins: the consumer acks (REMOVEs) between two saves of a waiting
 * producer cost no hand-off to the writer of their own (docs/STORAGE.md). */
void fs_kick(struct fs_store *s)
{
    if (batch_empty(s->open) || s->closing || s->failed.head)
        return;
    int64_t now = kq_now_ms();
    if (s->open->n_cbs == 0) {
        if (!s->held_until && s->mode == FS_SYNC_GROUP)
            s->held_until = now + s->lazy_sync_ms;
        int64_t until = s->held_until > s->backoff_until ? s->held_until : s->backoff_until;
        if (now < until) {
            if (!uv_is_active((uv_handle_t *)&s->later))
                uv_timer_start(&s->later, on_later, (uint64_t)(until - now), 0);
            return;
        }
    }
    if (!uv_is_active((uv_handle_t *)&s->kick))
        uv_idle_start(&s->kick, on_kick);
}

/* ---- open / close / stats ---------------------------------------------------------------- */

/* The last of the kick and later handles and the done mailbox frees the store. */
static void on_closed(void *ud)
{
    struct fs_store *s = ud;
    if (--s->handles_open == 0)
        free(s);
}

static void on_handle_closed(uv_handle_t *h) { on_closed(h->data); }

/* After free_all, with the writer stopped: nothing can be posted to done any more. */
static void close_handles(struct fs_store *s)
{
    kq_mailbox_close(&s->w.done, on_closed);
    uv_close((uv_handle_t *)&s->kick, on_handle_closed);
    uv_close((uv_handle_t *)&s->later, on_handle_closed);
}

static void free_all(struct fs_store *s)
{
    struct fs_entry *e;
    for (size_t pos = 0; (e = kq_idmap_next(&s->index, &pos));) {
        free(e->state);
        free(e);
    }
    kq_idmap_free(&s->index);
    s->pending = 0;
    struct fs_dead *d, *dt;
    HASH_ITER (hh, s->dead, d, dt)
        fs_dead_drop(s, d);
    kq_dlq_index_free(&s->dlq);
    kq_dlq_groups_buf_free(&s->dlq_groups);
    while (s->oldest) {
        struct fs_seg *g = s->oldest;
        fs_seg_unlink(s, g);
        if (g->fd >= 0)
            close(g->fd);
        free(g);
    }
    if (s->dlq_fd >= 0)
        close(s->dlq_fd);
    if (s->w.dir_fd >= 0)
        close(s->w.dir_fd);
    batch_free(s->open);
    s->open = NULL;
    while (s->spares) {
        struct fs_batch *b = s->spares;
        s->spares = b->next;
        batch_free(b);
    }
    s->n_spares = 0;
    kq_buf_free(&s->scratch);
}

/* Blocking (this is shutdown): deliver the writer's batches as they come back until none is
 * with it any more. */
static void wait_flight(struct fs_store *s)
{
    for (int waited_s = 0; s->flight.head;) {
        if (kq_mailbox_drain(&s->w.done, 1000) == 0 && s->flight.head)
            KQ_WARN(FS_MOD, "close: waited %d s for the writer (disk not answering?) dir=%s",
                    ++waited_s, s->dir);
    }
}

/* Flush everything pending, stop the writer, release. The store's memory goes once libuv
 * has closed its handles (next loop iteration). */
static void fs_close(struct kq_store *base)
{
    struct fs_store *s = (struct fs_store *)base;
    for (int rounds = 0; rounds < 8; rounds++) {
        wait_flight(s);
        if (batch_empty(s->open))
            break;
        s->backoff_until = 0;
        seal_and_submit(s);
    }
    s->closing = true;
    wait_flight(s);
    /* Anything still open (a disk that stays full) fails its callbacks. */
    if (s->open)
        for (size_t i = 0; i < s->open->n_cbs; i++)
            if (s->open->cbs[i].cb)
                s->open->cbs[i].cb(s->open->cbs[i].ud, -EIO);
    fs_writer_stop(&s->w);
    free_all(s);
    close_handles(s);
}

int kq_file_store_stats(struct kq_store *base, struct kq_file_store_stats *out)
{
    if (!base || base->ops != &file_ops)
        return -EINVAL;
    struct fs_store *s = (struct fs_store *)base;
    *out = s->st;
    out->pending = s->pending;
    out->dead_letters = HASH_COUNT(s->dead);
    out->segments = s->n_segs;
    out->log_bytes = 0;
    for (struct fs_seg *g = s->oldest; g; g = g->next)
        out->log_bytes += g->size;
    /* The count is the histogram's total, not a counter of its own: the writer thread
     * updates them one after the other, and a scrape in between saw them disagree. */
    out->fsyncs = 0;
    for (size_t i = 0; i <= KQ_FS_FSYNC_BUCKETS; i++) {
        out->fsync_hist[i] = atomic_load_explicit(&s->w.fsync_hist[i], memory_order_relaxed);
        out->fsyncs += out->fsync_hist[i];
    }
    out->fsync_us_sum = atomic_load_explicit(&s->w.fsync_us_sum, memory_order_relaxed);
    return 0;
}

static const struct kq_store_ops file_ops = {
    .name = "file",
    .save = fs_save,
    .commit = fs_commit,
    .update = fs_update,
    .remove = fs_remove,
    .dead_letter = fs_dead_letter,
    .load = fs_load,
    .recover = fs_recover,
    .dlq_counts = fs_dlq_counts,
    .dlq_page = fs_dlq_page,
    .dlq_get = fs_dlq_get,
    .dlq_take = fs_dlq_take,
    .dlq_purge = fs_dlq_purge,
    .close = fs_close,
    .stats = fs_stats,
};

static int parse_params(struct fs_store *s, const struct kq_store_uri *u, char *err, size_t errlen)
{
    static const char *const allowed[] = {"fsync",      "interval",   "lazy_sync_ms",
                                          "segment_mb", "segment_kb", NULL};
    int rc = kq_store_uri_check(u, allowed, err, errlen);
    if (rc)
        return rc;
    if (!u->path[0]) {
        snprintf(err, errlen, "file store needs a directory: file://DIR");
        return -EINVAL;
    }
    snprintf(s->dir, sizeof s->dir, "%s", u->path);
    const char *m = kq_store_uri_get(u, "fsync");
    if (!m || !strcmp(m, "group"))
        s->mode = FS_SYNC_GROUP;
    else if (!strcmp(m, "interval"))
        s->mode = FS_SYNC_INTERVAL;
    else if (!strcmp(m, "none"))
        s->mode = FS_SYNC_NONE;
    else {
        snprintf(err, errlen, "fsync=%s: expected group, interval or none", m);
        return -EINVAL;
    }
    int64_t iv, lazy, mb, kb;
    if ((rc = kq_store_uri_int(u, "interval", 1000, 1, 3600000, &iv, err, errlen)) ||
        (rc = kq_store_uri_int(u, "lazy_sync_ms", 5, 0, 60000, &lazy, err, errlen)) ||
        (rc = kq_store_uri_int(u, "segment_mb", 64, 1, 1024, &mb, err, errlen)) ||
        (rc = kq_store_uri_int(u, "segment_kb", 0, 1, 1024 * 1024, &kb, err, errlen)))
        return rc;
    s->interval_ms = iv;
    s->lazy_sync_ms = lazy;
    /* segment_kb (tests) wins over segment_mb; offsets are u32, batches may overshoot. */
    s->seg_max = kb ? (uint64_t)kb << 10 : (uint64_t)mb << 20;
    return 0;
}

int kq_file_store_check(const struct kq_store_uri *u, char *err, size_t errlen)
{
    struct fs_store *s = calloc(1, sizeof *s); /* parse_params fills only plain fields */
    if (!s)
        return -ENOMEM;
    int rc = parse_params(s, u, err, errlen);
    free(s);
    return rc;
}

int kq_file_store_open(uv_loop_t *loop, const struct kq_store_uri *u, struct kq_store **out,
                       char *err, size_t errlen)
{
    struct fs_store *s = calloc(1, sizeof *s);
    if (s)
        kq_idmap_init(&s->index, offsetof(struct fs_entry, id));
    if (!s)
        return -ENOMEM;
    s->base.ops = &file_ops;
    s->base.loop = loop;
    s->dlq_fd = s->w.dir_fd = -1;
    int rc = parse_params(s, u, err, errlen);
    if (rc)
        goto fail;
    if (mkdir(s->dir, 0755) && errno != EEXIST) {
        rc = -errno;
        snprintf(err, errlen, "mkdir %s: %s", s->dir, strerror(errno));
        goto fail;
    }
    s->w.dir_fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    s->open = calloc(1, sizeof *s->open);
    if (s->w.dir_fd < 0 || !s->open) {
        rc = s->w.dir_fd < 0 ? -errno : -ENOMEM;
        snprintf(err, errlen, "open %s: %s", s->dir, strerror(-rc));
        goto fail;
    }
    if ((rc = fs_scan(s, err, errlen)))
        goto fail;
    s->w.mode = s->mode;
    s->w.interval_ms = s->interval_ms;
    s->w.lazy_sync_ms = s->lazy_sync_ms;
    s->w.dlq_fd = s->dlq_fd;
    s->kick.data = s->later.data = s;
    if ((rc = kq_mailbox_init(&s->w.done, loop, take_back, s))) {
        snprintf(err, errlen, "cannot set up the writer's done mailbox: %s", uv_strerror(rc));
        goto fail;
    }
    uv_idle_init(loop, &s->kick);
    uv_timer_init(loop, &s->later);
    s->handles_open = 3;
    if ((rc = fs_writer_start(s))) {
        snprintf(err, errlen, "cannot start the writer thread: %s", uv_strerror(rc));
        s->closing = true;
        free_all(s);
        close_handles(s);
        return rc;
    }
    KQ_INFO(FS_MOD, "opened %s fsync=%s segments=%zu pending=%zu dead=%u in %llu ms", s->dir,
            s->mode == FS_SYNC_GROUP      ? "group"
            : s->mode == FS_SYNC_INTERVAL ? "interval"
                                          : "none",
            s->n_segs, s->pending, HASH_COUNT(s->dead), (unsigned long long)s->st.recover_ms);
    *out = &s->base;
    return 0;
fail:
    free_all(s);
    free(s);
    return rc;
}
