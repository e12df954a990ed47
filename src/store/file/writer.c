/* The writer thread: takes every batch the loop sealed since its last turn as one group,
 * writes it (pwritev at the offsets chosen by the loop), makes it durable according to the
 * fsync mode, and hands the batches back through the store's done mailbox (core/mailbox.h,
 * the one way from a thread to the loop). The next group is taken the moment this one is
 * durable, without waiting for the loop. It never touches the index; the loop never writes
 * to the files. */
#include <errno.h>
#include <semaphore.h>
#include <string.h>
#include <stdlib.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "store/file/fs_internal.h"

static int pwritev_all(int fd, struct iovec *iov, int n, uint64_t off)
{
    while (n > 0) {
        ssize_t w = pwritev(fd, iov, n, (off_t)off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (w == 0)
            return -EIO;
        off += (uint64_t)w;
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

static int pwrite_all(int fd, const uint8_t *p, size_t n, uint64_t off)
{
    struct iovec iov = {.iov_base = (void *)p, .iov_len = n};
    return pwritev_all(fd, &iov, 1, off);
}

const double kq_fs_fsync_bounds_us[KQ_FS_FSYNC_BUCKETS] = {50,   100,  200,   500,   1000,
                                                           2000, 5000, 10000, 50000, 100000};

static int sync_fd(struct fs_writer *w, int fd)
{
    uint64_t t0 = kq_mono_us();
    int rc = fdatasync(fd) ? -errno : 0;
    uint64_t us = kq_mono_us() - t0;
    size_t i = 0;
    while (i < KQ_FS_FSYNC_BUCKETS && (double)us > kq_fs_fsync_bounds_us[i])
        i++;
    atomic_fetch_add_explicit(&w->fsync_hist[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->fsync_us_sum, us, memory_order_relaxed);
    return rc;
}

/* Appending to a file makes every fdatasync also commit the new size and block allocation
 * to the journal. Writing zeros ahead of the log once makes later appends overwrite
 * allocated blocks, and their fdatasync only has to flush data: measured here, 350-900 us per
 * sync became 130-190 us. Recovery treats an all-zero tail as the clean end of the log. */
#define PREFILL_CHUNK (1u << 20)
#define PREFILL_AHEAD (2u << 20)
#define PREFILL_MIN_FREE (64ull << 20)

static void prefill(struct fs_seg *g, uint64_t end)
{
    static const uint8_t zeros[64 * 1024];
    if (g->prefilled < end)
        g->prefilled = end;
    if (g->prefilled - end >= PREFILL_AHEAD / 2)
        return;
    /* Never compete with real data for the last free space of a filling disk. */
    struct statvfs v;
    if (fstatvfs(g->fd, &v) != 0 || (uint64_t)v.f_bavail * v.f_frsize < PREFILL_MIN_FREE)
        return;
    uint64_t target = g->prefilled + PREFILL_CHUNK;
    for (uint64_t off = g->prefilled; off < target; off += sizeof zeros) {
        if (pwrite_all(g->fd, zeros, sizeof zeros, off) != 0) {
            /* best effort (e.g. disk full): give the space back, try again later */
            if (ftruncate(g->fd, (off_t)end) != 0)
                KQ_WARN(FS_MOD, "%s: cannot cut the prefilled tail: %s", g->path, strerror(errno));
            g->prefilled = end;
            return;
        }
    }
    g->prefilled = target;
}

/* interval/none, and lazy batches of group: flush what was written but not synced yet. */
static void sync_dirty(struct fs_writer *w)
{
    int rc = 0;
    if (w->dirty_fd >= 0)
        rc = sync_fd(w, w->dirty_fd);
    if (w->dlq_dirty && !rc)
        rc = sync_fd(w, w->dlq_fd);
    if (rc)
        KQ_ERROR(FS_MOD,
                 "background fdatasync failed: %s (writes not synced yet may be lost on "
                 "power failure: with fsync=interval acknowledged ones, with "
                 "fsync=group removals and delivery states)",
                 strerror(-rc));
    w->dirty_fd = -1;
    w->dlq_dirty = false;
    w->last_sync_ms = kq_now_ms();
}

/* fsync=group: a batch that nobody waits for (REMOVE, STATE: no callback, no dead letter, no
 * segment to create or delete, no SAVE) is written but not synced on its own. The next batch
 * with a waiter syncs it (same file: its one fdatasync covers both), or the writer does once
 * it has been idle for lazy_sync_ms. Otherwise the consumer acks of one batch take a disk
 * flush of their own that the next publisher's batch has to wait behind. Losing such a record
 * to a power failure means a duplicate delivery, never a lost message (docs/STORAGE.md). */
static bool nobody_waits(const struct fs_writer *w, const struct fs_batch *b)
{
    if (w->mode != FS_SYNC_GROUP || w->lazy_sync_ms == 0 || b->n_cbs || b->dlq.len || b->n_drops ||
        b->new_seg)
        return false;
    for (size_t i = 0; i < b->n_items; i++)
        if (b->items[i].type == FS_SAVE) /* compaction copies: the index moves to them */
            return false;
    return true;
}

/* The batches one turn of the writer takes: everything sealed while the previous turn wrote
 * and synced, written with one pwritev per segment and made durable with one fdatasync. */
#define GROUP_MAX 256

/* fsync=group: make the group durable (the segments it wrote, dlq.log if it wrote there),
 * and first what earlier lazy batches left unsynced in another file. */
static int sync_group(struct fs_writer *w, const int *fds, size_t n_fds, bool dlq)
{
    int rc = 0;
    bool dirty_written = false;
    for (size_t i = 0; i < n_fds; i++)
        dirty_written |= fds[i] == w->dirty_fd;
    if (w->dirty_fd >= 0 && !dirty_written)
        rc = sync_fd(w, w->dirty_fd);
    if (!rc && dlq)
        rc = sync_fd(w, w->dlq_fd);
    for (size_t i = 0; !rc && i < n_fds; i++)
        rc = sync_fd(w, fds[i]);
    if (!rc)
        w->dirty_fd = -1;
    return rc;
}

static bool has_dlq_add(const struct fs_batch *b)
{
    for (size_t i = 0; i < b->n_items; i++)
        if (b->items[i].type == FS_DLQ_ADD)
            return true;
    return false;
}

/* The segment part of the group: runs of batches that follow each other in one segment go
 * out with one pwritev each. The segment fds written go to fds (in order). */
static int write_segments(struct fs_writer *w, struct fs_batch **bs, size_t n, bool synced,
                          int *fds, size_t *n_fds)
{
    struct iovec iov[GROUP_MAX];
    size_t i = 0;
    while (i < n) {
        struct fs_batch *first = bs[i];
        if (!first->main.len) {
            i++;
            continue;
        }
        uint64_t end = first->base;
        int k = 0;
        for (; i < n; i++) {
            struct fs_batch *b = bs[i];
            if (!b->main.len)
                continue;
            if (b->seg != first->seg || b->base != end)
                break;
            iov[k++] = (struct iovec){b->main.data, b->main.len};
            end += b->main.len;
        }
        int fd = first->seg->fd;
        /* Not synced as a group (interval, lazy): a segment we leave must still get its sync. */
        if (!synced && w->mode != FS_SYNC_NONE && w->dirty_fd >= 0 && w->dirty_fd != fd)
            sync_dirty(w);
        int rc = pwritev_all(fd, iov, k, first->base);
        if (rc)
            return rc;
        if (*n_fds == 0 || fds[*n_fds - 1] != fd)
            fds[(*n_fds)++] = fd;
        if (!synced) {
            if (w->dirty_fd < 0 && !w->dlq_dirty)
                w->dirty_since_ms = kq_now_ms();
            w->dirty_fd = fd;
        }
    }
    return 0;
}

/* Cut the files back so that nothing half-written stays behind the good records (newest
 * batch first: the files end at the first batch's offsets); the loop requeues what must not
 * be lost and fails the callbacks. */
static void cut_back(struct fs_batch **bs, size_t n, int dlq_fd)
{
    for (size_t i = n; i-- > 0;) {
        struct fs_batch *b = bs[i];
        if (b->main.len) {
            if (ftruncate(b->seg->fd, (off_t)b->base))
                KQ_ERROR(FS_MOD, "truncate %s back to %llu failed: %s", b->seg->path,
                         (unsigned long long)b->base, strerror(errno));
            b->seg->prefilled = b->base;
        }
        if (b->dlq.len && ftruncate(dlq_fd, (off_t)b->dbase))
            KQ_ERROR(FS_MOD, "truncate dlq.log back to %llu failed: %s",
                     (unsigned long long)b->dbase, strerror(errno));
    }
}

/* On a full disk the REMOVEs that emptied these segments cannot be written, and only
 * deleting the segments frees space: waiting for the REMOVEs would wait forever. A dropped
 * segment holds no pending SAVE, so deleting it early is what a durable REMOVE would have
 * achieved. A dead letter is different: its SAVE must stay until its DLQ_ADD is durable, so
 * a failed batch carrying one, or failed after one that did (a deletion is never in an
 * earlier batch than the DLQ_ADD it waits for), keeps its segments. */
static void drop_segments(struct fs_writer *w, struct fs_batch *b, int rc)
{
    if (rc && has_dlq_add(b))
        w->failed_dlq_add = true;
    if (!b->n_drops || (rc && w->failed_dlq_add))
        return;
    b->dropped = rc != 0;
    for (size_t i = 0; i < b->n_drops; i++) {
        struct fs_seg *g = b->drops[i];
        if (g->fd == w->dirty_fd)
            w->dirty_fd = -1;
        close(g->fd);
        g->fd = -1;
        if (unlink(g->path))
            KQ_ERROR(FS_MOD, "unlink %s: %s", g->path, strerror(errno));
    }
    if (fsync(w->dir_fd))
        KQ_WARN(FS_MOD, "fsync of the store directory failed: %s", strerror(errno));
}

/* Write the group bs[0..n) in order and make it durable according to the mode; every batch
 * gets the group's status. failed: an earlier group failed and the loop has not taken it
 * back yet, so nothing is written (the files were cut back before these batches' offsets). */
static int run_group(struct fs_writer *w, struct fs_batch **bs, size_t n, int failed)
{
    int rc = failed;
    if (!failed)
        w->failed_dlq_add = false;
    bool lazy = true, new_seg = false, dlq = false;
    for (size_t i = 0; i < n; i++) {
        lazy &= nobody_waits(w, bs[i]);
        new_seg |= bs[i]->new_seg;
        dlq |= bs[i]->dlq.len > 0;
    }
    bool synced = w->mode == FS_SYNC_GROUP && !lazy;
    int fds[GROUP_MAX];
    size_t n_fds = 0;
    /* dlq.log first: a DEAD record is never durable before its dead letter */
    for (size_t i = 0; !rc && i < n; i++)
        if (bs[i]->dlq.len)
            rc = pwrite_all(w->dlq_fd, bs[i]->dlq.data, bs[i]->dlq.len, bs[i]->dbase);
    if (!rc && dlq && !synced)
        w->dlq_dirty = true;
    if (!rc)
        rc = write_segments(w, bs, n, synced, fds, &n_fds);
    if (!rc && new_seg && w->mode != FS_SYNC_NONE && fsync(w->dir_fd))
        rc = -errno;
    if (!rc && synced)
        rc = sync_group(w, fds, n_fds, dlq);
    else if (!rc && w->mode == FS_SYNC_INTERVAL && kq_now_ms() - w->last_sync_ms >= w->interval_ms)
        sync_dirty(w);
    for (size_t i = n; !rc && w->mode != FS_SYNC_NONE && i-- > 0;)
        if (bs[i]->main.len) { /* after the sync: not on this group's path */
            prefill(bs[i]->seg, bs[i]->base + bs[i]->main.len);
            break;
        }
    if (rc && !failed)
        cut_back(bs, n, w->dlq_fd);
    for (size_t i = 0; i < n; i++) {
        drop_segments(w, bs[i], rc);
        bs[i]->status = rc;
    }
    return rc;
}

/* The writer sleeps on a semaphore, not a condition variable: glibc hands the mutex back
 * from pthread_cond_wait marked contended, which cost a FUTEX_WAKE with nobody to wake at
 * every unlock after a wake-up, i.e. per batch. The loop posts only when the writer said it
 * sleeps (w->sleeping), so a busy writer costs the loop no syscall per submitted batch. */
static void sleep_until_woken(struct fs_writer *w, int64_t wait_ms)
{
    if (wait_ms < 0) {
        while (sem_wait(&w->wake) != 0 && errno == EINTR) {
        }
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += wait_ms / 1000;
    ts.tv_nsec += (wait_ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    while (sem_timedwait(&w->wake, &ts) != 0 && errno == EINTR) {
    }
}

static void list_push(struct fs_batch_list *l, struct fs_batch *b)
{
    b->wnext = NULL;
    if (l->tail)
        l->tail->wnext = b;
    else
        l->head = b;
    l->tail = b;
}

/* Give the group's batches back to the loop, in order. The mailbox wakes the loop once for
 * a burst (one eventfd write when it was empty). It is closed only after the writer stopped,
 * so a post cannot be refused; if it ever were, the batch's callbacks would never run. */
static void hand_back(struct fs_writer *w, struct fs_batch **group, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (kq_mailbox_post(&w->done, &group[i]->mail))
            KQ_ERROR(FS_MOD,
                     "written batch refused by the closed done mailbox (%zu records: "
                     "their callbacks will not run)",
                     group[i]->n_items);
}

static void writer_main(void *arg)
{
    struct fs_writer *w = arg;
    struct fs_batch *group[GROUP_MAX];
    uv_mutex_lock(&w->mu);
    for (;;) {
        if (w->jobs.head) {
            /* Everything sealed while the disk was busy goes out now, as one group. */
            size_t n = 0;
            while (n < GROUP_MAX && w->jobs.head) {
                group[n++] = w->jobs.head;
                w->jobs.head = w->jobs.head->wnext;
            }
            if (!w->jobs.head)
                w->jobs.tail = NULL;
            int failed = w->fail_rc;
            uv_mutex_unlock(&w->mu);
            int rc = run_group(w, group, n, failed);
            if (rc) { /* before the hand-back: the loop clears it once it has them all */
                uv_mutex_lock(&w->mu);
                if (!w->fail_rc)
                    w->fail_rc = rc;
                uv_mutex_unlock(&w->mu);
            }
            hand_back(w, group, n);
            uv_mutex_lock(&w->mu);
            continue;
        }
        if (w->stop)
            break;
        bool dirty = w->dirty_fd >= 0 || w->dlq_dirty;
        int64_t wait = -1; /* ms; -1: until woken */
        if (w->mode != FS_SYNC_NONE && dirty) {
            int64_t due = w->mode == FS_SYNC_GROUP ? w->dirty_since_ms + w->lazy_sync_ms
                                                   : w->last_sync_ms + w->interval_ms;
            wait = due - kq_now_ms();
            if (wait <= 0) {
                uv_mutex_unlock(&w->mu);
                sync_dirty(w);
                uv_mutex_lock(&w->mu);
                continue;
            }
        }
        w->sleeping = true;
        uv_mutex_unlock(&w->mu);
        sleep_until_woken(w, wait);
        uv_mutex_lock(&w->mu);
        w->sleeping = false;
    }
    uv_mutex_unlock(&w->mu);
    sync_dirty(w); /* every mode: a clean close leaves nothing unsynced */
}

int fs_writer_start(struct fs_store *s)
{
    struct fs_writer *w = &s->w;
    w->dirty_fd = -1;
    w->last_sync_ms = kq_now_ms();
    if (uv_mutex_init(&w->mu))
        return -ENOMEM;
    if (sem_init(&w->wake, 0, 0))
        return -ENOMEM;
    int rc = uv_thread_create(&w->thread, writer_main, w);
    if (rc)
        return rc;
    w->started = true;
    return 0;
}

void fs_writer_submit(struct fs_writer *w, struct fs_batch *b)
{
    uv_mutex_lock(&w->mu);
    list_push(&w->jobs, b);
    bool wake = w->sleeping;
    w->sleeping = false;
    uv_mutex_unlock(&w->mu);
    if (wake)
        sem_post(&w->wake); /* after the unlock: the writer wakes to a free mu */
}

void fs_writer_clear_failure(struct fs_writer *w)
{
    uv_mutex_lock(&w->mu);
    w->fail_rc = 0;
    uv_mutex_unlock(&w->mu);
}

void fs_writer_stop(struct fs_writer *w)
{
    if (!w->started)
        return;
    uv_mutex_lock(&w->mu);
    w->stop = true;
    uv_mutex_unlock(&w->mu);
    sem_post(&w->wake);
    uv_thread_join(&w->thread);
    w->started = false;
    sem_destroy(&w->wake);
    uv_mutex_destroy(&w->mu);
}
