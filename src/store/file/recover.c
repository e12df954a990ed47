/* Start-up scan (rebuild the index from the segments and dlq.log) and recover(), which
 * streams the pending messages back in publish order. Both read sequentially with a big
 * buffer; bodies are never kept in memory. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "store/file/fs_internal.h"

#define SCAN_BUF (8u << 20)

enum sc_res { SC_REC, SC_END, SC_TORN, SC_BAD, SC_IOERR };

/* Sequential record reader over one file. */
struct scan {
    int fd;
    uint8_t *buf;
    size_t cap, have, pos;
    uint64_t boff; /* file offset of buf[0] */
    bool eof;
    uint64_t last_seq;
    const char *why; /* what was wrong where SC_BAD / SC_TORN stopped */
};

static void scan_seek(struct scan *sc, uint64_t off)
{
    sc->boff = off;
    sc->have = sc->pos = 0;
    sc->eof = false;
}

static const char *bad_reason(const uint8_t *p)
{
    uint32_t magic, len;
    memcpy(&magic, p, 4);
    memcpy(&len, p + 8, 4);
    return magic != FS_MAGIC ? "bad magic" : len > FS_MAX_PAYLOAD ? "bad length" : "bad CRC";
}

static enum sc_res scan_next(struct scan *sc, struct fs_rec *r, uint64_t *off, size_t *total)
{
    for (;;) {
        *off = sc->boff + sc->pos;
        enum fs_parse p = fs_rec_parse(sc->buf + sc->pos, sc->have - sc->pos, r, total);
        if (p == FS_REC_OK) {
            /* Sequence numbers only grow; an older one is a leftover of a failed write. */
            if (r->seq <= sc->last_seq) {
                sc->why = "sequence number not above the previous record's";
                return SC_BAD;
            }
            sc->last_seq = r->seq;
            sc->pos += *total;
            return SC_REC;
        }
        if (p == FS_REC_BAD) {
            sc->why = bad_reason(sc->buf + sc->pos);
            return SC_BAD;
        }
        if (sc->eof) {
            sc->why = "torn record"; /* runs past the end of the file */
            return sc->pos == sc->have ? SC_END : SC_TORN;
        }
        memmove(sc->buf, sc->buf + sc->pos, sc->have - sc->pos);
        sc->boff += sc->pos;
        sc->have -= sc->pos;
        sc->pos = 0;
        if (*total > sc->cap) {
            uint8_t *nb = realloc(sc->buf, *total);
            if (!nb)
                return SC_IOERR;
            sc->buf = nb;
            sc->cap = *total;
        }
        ssize_t n;
        do
            n = pread(sc->fd, sc->buf + sc->have, sc->cap - sc->have, (off_t)(sc->boff + sc->have));
        while (n < 0 && errno == EINTR);
        if (n < 0)
            return SC_IOERR;
        if (n == 0)
            sc->eof = true;
        sc->have += (size_t)n;
    }
}

static void apply_save(struct fs_store *s, struct fs_seg *g, const struct fs_rec *r, uint64_t off,
                       size_t total)
{
    struct kq_stored_msg m;
    uint64_t orig;
    if (fs_get_msg(r->payload, r->len, &m, &orig)) { /* its CRC holds: not damage, a bug */
        KQ_LOG_RATELIMITED(KQ_LOG_ERROR, FS_MOD,
                           "%s offset %" PRIu64 ": a message record (seq %" PRIu64
                           ") that does not decode: not recovered",
                           g->path, off, r->seq);
        return;
    }
    struct fs_entry *e = fs_find(s, m.id);
    if (e) {
        e->seg->live--;
        e->seg->live_bytes -= e->len;
        if (orig == e->orig_seq) {
            /* A compaction copy: the message moves to the newer record. */
            e->commit = e->commit || m.commit;
        } else {
            /* A new message under the id of one whose REMOVE or DEAD was in a damaged range:
             * the earlier one is gone; its commit flag and state must not pass to this one. */
            KQ_LOG_RATELIMITED(KQ_LOG_WARN, FS_MOD,
                               "message %s saved again while pending: the "
                               "earlier one's removal was lost, the new one replaces it",
                               m.id);
            e->commit = m.commit;
            free(e->state);
            e->state = NULL;
        }
    } else {
        if ((e = calloc(1, sizeof *e)))
            memcpy(e->id, m.id, sizeof e->id);
        if (!e || kq_idmap_insert(&s->index, e) != 0) {
            free(e);
            KQ_LOG_RATELIMITED(KQ_LOG_ERROR, FS_MOD,
                               "%s offset %" PRIu64 ": out of memory: message %s not recovered",
                               g->path, off, m.id);
            return;
        }
        e->commit = m.commit;
        s->pending++;
    }
    e->seg = g;
    e->off = (uint32_t)off;
    e->len = (uint32_t)total;
    e->orig_seq = orig;
    g->live++;
    g->live_bytes += total;
}

static void apply(struct fs_store *s, struct fs_seg *g, const struct fs_rec *r, uint64_t off,
                  size_t total)
{
    char key[KQ_ID_LEN + 1];
    if (r->type == FS_SAVE) {
        apply_save(s, g, r, off, total);
        return;
    }
    if (r->type < FS_COMMIT || r->type > FS_DEAD || fs_get_id(r->payload, r->len, key)) {
        KQ_LOG_RATELIMITED(KQ_LOG_ERROR, FS_MOD,
                           "%s offset %" PRIu64 ": a record of type %u (seq %" PRIu64
                           ") that this version does not know or cannot decode: skipped",
                           g->path, off, r->type, r->seq);
        return;
    }
    struct fs_entry *e = fs_find(s, key);
    if (!e)
        return; /* refers to a message removed earlier or in a deleted segment */
    switch (r->type) {
    case FS_COMMIT: e->commit = true; break;
    case FS_STATE: {
        uint32_t n = r->len - KQ_ID_LEN;
        uint8_t *blob = malloc(4 + (size_t)n);
        if (!blob) {
            KQ_LOG_RATELIMITED(KQ_LOG_ERROR, FS_MOD,
                               "out of memory: the latest delivery state of %s not recovered "
                               "(groups that acked since the one before may get it again)",
                               key);
            break;
        }
        memcpy(blob, &n, 4);
        memcpy(blob + 4, r->payload + KQ_ID_LEN, n);
        free(e->state);
        e->state = blob;
        break;
    }
    case FS_REMOVE:
    case FS_DEAD: fs_entry_drop(s, e); break;
    }
}

static void apply_dlq(struct fs_store *s, const struct fs_rec *r, uint64_t off, size_t total)
{
    char key[KQ_ID_LEN + 1];
    struct kq_dead_letter d;
    bool add = r->type == FS_DLQ_ADD || r->type == FS_DLQ_ADD_GROUPS;
    if (add ? fs_get_dead(r->type, r->payload, r->len, &d, NULL) != 0
            : r->type != FS_DLQ_DEL || fs_get_id(r->payload, r->len, key) != 0) {
        KQ_LOG_RATELIMITED(KQ_LOG_ERROR, FS_MOD,
                           "dlq.log offset %" PRIu64 ": a record of type %u (seq %" PRIu64
                           ") that this version does not know or cannot decode: skipped",
                           off, r->type, r->seq);
        return;
    }
    if (add) {
        struct fs_dead *x;
        if (!fs_id_key(d.msg.id, key) ||
            !(x = fs_dead_new(s, key, d.msg.topic, d.msg.publish_group))) {
            KQ_LOG_RATELIMITED(KQ_LOG_ERROR, FS_MOD,
                               "dlq.log offset %llu: dead letter not "
                               "indexed (bad id or out of memory)",
                               (unsigned long long)off);
            return;
        }
        x->off = off;
        x->len = (uint32_t)total;
        fs_dead_insert(s, x);
    } else {
        struct fs_dead *x = fs_find_dead(s, key);
        if (x)
            fs_dead_drop(s, x);
    }
}

/* Offset just after the last non-zero byte from off to EOF: off when all of it is zero (the
 * writer's prefilled tail), UINT64_MAX on a read error. */
static uint64_t data_end(int fd, uint64_t off)
{
    uint8_t buf[64 * 1024];
    uint64_t end = off;
    for (;;) {
        ssize_t n = pread(fd, buf, sizeof buf, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return UINT64_MAX;
        if (n == 0)
            return end;
        for (ssize_t i = n; i > 0; i--)
            if (buf[i - 1]) {
                end = off + (uint64_t)i;
                break;
            }
        off += (uint64_t)n;
    }
}

/* Copy a damaged range aside and count it; `note` says where the copy is (or why not). */
static void quarantine(struct fs_store *s, const char *path, int fd, uint64_t from, uint64_t to,
                       char *note, size_t n)
{
    char q[1200];
    int rc = fs_quarantine(s->dir, path, fd, from, to, q, sizeof q);
    if (rc)
        snprintf(note, n, "could not keep a copy: %s", strerror(-rc));
    else
        snprintf(note, n, "copy kept in %s", q);
    s->st.damaged_ranges++;
    s->st.damaged_bytes += to - from;
}

/* No record can be trusted from off to the end. The newest segment (and dlq.log) lose a
 * torn tail: it is cut so that appends continue after the last good record. An older
 * segment is never written again: its bad tail is only skipped. */
static void bad_tail(struct fs_store *s, struct scan *sc, const char *path, uint64_t off,
                     uint64_t size, uint64_t dend, bool last)
{
    char note[1300];
    quarantine(s, path, sc->fd, off, dend < size ? dend : size, note, sizeof note);
    if (last) {
        KQ_WARN(FS_MOD,
                "%s: %s at offset %" PRIu64 " and no valid record after it: truncating %" PRIu64
                " bytes after the last good record (%s)",
                path, sc->why, off, size - off, note);
        if (ftruncate(sc->fd, (off_t)off) || fsync(sc->fd))
            KQ_ERROR(FS_MOD, "%s: truncate failed: %s", path, strerror(errno));
        s->st.truncated_bytes += size - off;
    } else {
        KQ_ERROR(FS_MOD,
                 "%s: %s at offset %" PRIu64 " and no valid record after it: the %" PRIu64
                 " bytes to the end of this older segment are skipped (%s)",
                 path, sc->why, off, size - off, note);
    }
}

/* Scan one file, applying its records; returns the offset after the last good record.
 * Damage in the middle costs the damaged range only: the scan resynchronises on the next
 * record that can be trusted (resync.c). `last` says whether a bad tail may be cut off (the
 * newest segment, dlq.log) or must only be skipped. */
static uint64_t scan_file(struct fs_store *s, struct scan *sc, struct fs_seg *g, const char *path,
                          bool last)
{
    struct fs_rec r;
    uint64_t off, next;
    size_t total;
    enum sc_res res;
    for (;;) {
        while ((res = scan_next(sc, &r, &off, &total)) == SC_REC) {
            if (g)
                apply(s, g, &r, off, total);
            else
                apply_dlq(s, &r, off, total);
        }
        if (res == SC_END)
            return off;
        struct stat st;
        int rc = res == SC_IOERR ? -EIO : fstat(sc->fd, &st) ? -errno : 0;
        uint64_t size = rc ? off : (uint64_t)st.st_size;
        uint64_t dend = rc ? UINT64_MAX : data_end(sc->fd, off);
        if (dend == off)
            return off; /* the end followed by prefilled zeros */
        if (!rc)
            rc = fs_resync(sc->fd, !g, off, size, sc->last_seq, &next);
        if (rc == -ENOENT) {
            bad_tail(s, sc, path, off, size, dend, last);
            return off;
        }
        if (rc) {
            KQ_ERROR(FS_MOD,
                     "%s: read error at offset %" PRIu64 " of %" PRIu64 " (%s); skipping "
                     "the rest of this file",
                     path, off, size, strerror(-rc));
            return off;
        }
        if (res == SC_TORN) /* not torn after all: a valid record follows */
            sc->why = "bad length (past the end of the file)";
        char note[1300];
        quarantine(s, path, sc->fd, off, next, note, sizeof note);
        KQ_ERROR(FS_MOD,
                 "%s: %s at offset %" PRIu64 ": skipped %" PRIu64 " damaged bytes "
                 "(offsets %" PRIu64 "-%" PRIu64 "), resynchronised on the valid record "
                 "at %" PRIu64 " (%s)",
                 path, sc->why, off, next - off, off, next, next, note);
        scan_seek(sc, next);
    }
}

static int scan_dlq(struct fs_store *s, struct scan *sc, char *err, size_t errlen)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/dlq.log", s->dir);
    bool existed = access(path, F_OK) == 0;
    s->dlq_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (s->dlq_fd < 0) {
        int rc = -errno;
        snprintf(err, errlen, "open %s: %s", path, strerror(errno));
        return rc;
    }
    if (!existed && fsync(s->w.dir_fd))
        KQ_WARN(FS_MOD, "fsync %s: %s", s->dir, strerror(errno));
    sc->fd = s->dlq_fd;
    s->dlq_size = scan_file(s, sc, NULL, path, true);
    return 0;
}

int fs_scan(struct fs_store *s, char *err, size_t errlen)
{
    uint64_t t0 = kq_mono_us();
    struct scan sc = {.cap = SCAN_BUF};
    uint64_t *seqs = NULL;
    size_t n = 0;
    int rc = -ENOMEM;
    if (!(sc.buf = malloc(sc.cap)))
        goto out;
    if ((rc = scan_dlq(s, &sc, err, errlen)))
        goto out;
    uint64_t max_seq = sc.last_seq;
    if ((rc = fs_seg_list(s->dir, &seqs, &n))) {
        snprintf(err, errlen, "list %s: %s", s->dir, strerror(-rc));
        goto out;
    }
    sc.last_seq = 0;
    for (size_t i = 0; i < n; i++) {
        struct fs_seg *g = fs_seg_new(s->dir, seqs[i], -1);
        if (!g) {
            rc = -ENOMEM;
            goto out;
        }
        g->fd = open(g->path, O_RDWR | O_CLOEXEC);
        if (g->fd < 0) {
            rc = -errno;
            snprintf(err, errlen, "open %s: %s", g->path, strerror(errno));
            free(g);
            goto out;
        }
        fs_seg_append(s, g);
        sc.fd = g->fd;
        scan_seek(&sc, 0);
        g->size = scan_file(s, &sc, g, g->path, i + 1 == n);
    }
    if (sc.last_seq > max_seq)
        max_seq = sc.last_seq;
    s->seq = max_seq;
    /* Segments with nothing pending at the old end go now. */
    struct fs_seg *g;
    bool removed = false;
    while ((g = s->oldest) && g != s->head && g->live == 0) {
        fs_seg_unlink(s, g);
        close(g->fd);
        if (unlink(g->path))
            KQ_ERROR(FS_MOD, "unlink %s: %s", g->path, strerror(errno));
        free(g);
        s->st.segments_deleted++;
        removed = true;
    }
    if (removed)
        fsync(s->w.dir_fd);
    rc = 0;
out:
    free(sc.buf);
    free(seqs);
    s->st.recover_ms = (kq_mono_us() - t0) / 1000;
    return rc;
}

static int cmp_seq(const void *a, const void *b)
{
    const struct fs_entry *x = *(struct fs_entry *const *)a, *y = *(struct fs_entry *const *)b;
    return x->orig_seq < y->orig_seq ? -1 : x->orig_seq > y->orig_seq;
}

int fs_recover(struct kq_store *base, kq_store_recover_cb cb, void *ud)
{
    struct fs_store *s = (struct fs_store *)base;
    size_t n = s->pending, i = 0;
    if (!n)
        return 0;
    struct fs_entry **all = malloc(n * sizeof *all);
    struct kq_buf win = {0};
    if (!all || kq_buf_reserve(&win, SCAN_BUF)) {
        free(all);
        kq_buf_free(&win);
        return -ENOMEM;
    }
    struct fs_entry *e;
    for (size_t pos = 0; (e = kq_idmap_next(&s->index, &pos));)
        all[i++] = e;
    qsort(all, n, sizeof *all, cmp_seq);
    /* A window of the file: consecutive SAVE records come out of one read. */
    struct fs_seg *wseg = NULL;
    uint64_t woff = 0;
    size_t failed = 0;
    for (i = 0; i < n; i++) {
        e = all[i];
        struct fs_rec r;
        const uint8_t *p = NULL;
        if (e->unsealed || fs_unwritten(s, false, e->seg, e->off)) {
            p = fs_read_at(s, false, e->seg, e->unsealed, e->off, e->len, &r);
        } else {
            if (wseg != e->seg || e->off < woff || e->off + e->len > woff + win.len) {
                if (e->len > win.cap && kq_buf_reserve(&win, e->len))
                    goto bad;
                ssize_t got = pread(e->seg->fd, win.data, win.cap, (off_t)e->off);
                if (got < (ssize_t)e->len) {
                    wseg = NULL;
                    goto bad;
                }
                wseg = e->seg;
                woff = e->off;
                win.len = (size_t)got;
            }
            size_t total;
            p = win.data + (e->off - woff);
            if (fs_rec_parse(p, e->len, &r, &total) != FS_REC_OK || total != e->len)
                p = NULL;
        }
        struct kq_stored_msg m;
        if (!p || fs_get_msg(r.payload, r.len, &m, NULL))
            goto bad;
        m.commit = e->commit;
        struct kq_delivery_state st = {0}, *stp = NULL;
        if (e->state) {
            uint32_t len;
            memcpy(&len, e->state, 4);
            if (fs_get_state_body(e->state + 4, len, &st) == 0) {
                memcpy(st.id, e->id, sizeof st.id);
                stp = &st;
            }
        }
        cb(ud, &m, stp);
        fs_state_free(&st);
        continue;
bad:
        failed++;
        KQ_LOG_RATELIMITED(KQ_LOG_ERROR, FS_MOD, "recover: cannot read message %s", e->id);
    }
    free(all);
    kq_buf_free(&win);
    return failed ? -EIO : 0;
}
