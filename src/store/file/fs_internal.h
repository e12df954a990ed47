/* Internals shared by the file-store sources. Threading: everything here belongs to the
 * loop thread except what struct fs_writer says (writer.c). */
#ifndef KQ_STORE_FILE_INTERNAL_H
#define KQ_STORE_FILE_INTERNAL_H
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uthash.h>
#include <uv.h>

#include "core/buf.h"
#include "core/idmap.h"
#include "core/mailbox.h"
#include "store/file/file_store.h"
#include "store/dlq_index.h"
#include "store/file/record.h"
#include "store/store.h"

#define FS_MOD "store.file"

/* One segment file DIR/seg-<16 hex first seq>.log. */
struct fs_seg {
    uint64_t first_seq;
    int fd;
    uint64_t size;       /* end of the last record written or being written */
    uint64_t live;       /* pending messages whose current SAVE record is here */
    uint64_t live_bytes; /* bytes of those SAVE records */
    bool compacting;     /* its live messages are being copied forward */
    uint64_t prefilled;  /* writer thread only: zeros written up to here (see writer.c) */
    struct fs_seg *prev, *next;
    char path[];
};

/* Index entry of one pending message (~130 bytes + the state blob). */
struct fs_entry {
    char id[KQ_ID_LEN + 1]; /* zero-padded: the hash key is all KQ_ID_LEN bytes */
    bool commit;
    bool unsealed; /* SAVE is still in the open batch: off is relative to its buffer */
    struct fs_seg *seg;
    uint32_t off;      /* offset of the SAVE record */
    uint32_t len;      /* its total size */
    uint64_t orig_seq; /* seq of the first SAVE: publish order, kept by compaction */
    uint8_t *state;    /* NULL or u32 length + STATE body of the latest update */
};

/* Index entry of one dead letter (record in dlq.log). */
struct fs_dead {
    char id[KQ_ID_LEN + 1];
    bool unsealed;
    uint64_t off;
    uint32_t len;
    struct kq_dlq_pos pos; /* order and counters (topic, publishing group) */
    UT_hash_handle hh;
};

/* One record of a batch: enough to fix offsets at seal time and to undo / requeue it if
 * the batch cannot be written. */
struct fs_item {
    uint8_t type;
    bool dlq;     /* record is in the dlq buffer */
    uint32_t rel; /* offset in the batch buffer */
    uint32_t len;
    char id[KQ_ID_LEN + 1];
    struct fs_seg *from; /* compaction copy: the message's location before the copy */
    uint32_t from_off;
};

struct fs_cb {
    kq_store_done_cb cb;
    void *ud;
};

/* Records collected on the loop and written by the writer as one unit. */
struct fs_batch {
    struct kq_buf main, dlq;
    struct fs_item *items;
    size_t n_items, cap_items;
    struct fs_cb *cbs;
    size_t n_cbs, cap_cbs;
    struct fs_seg **drops; /* segments to close and unlink once the batch is durable */
    size_t n_drops, cap_drops;
    /* set at seal time */
    struct fs_seg *seg;
    uint64_t base, dbase;
    bool new_seg;
    /* set by the writer */
    int status;
    bool dropped;           /* the drops were done although the write failed (writer.c) */
    struct fs_batch *next;  /* loop: in the store's flight, failed or spare list */
    struct fs_batch *wnext; /* under the writer's mu: in its jobs list */
    struct kq_mail mail;    /* written: on its way back to the loop (the writer's done) */
};

/* A list of batches in the order they were sealed (linked by next, or by wnext). */
struct fs_batch_list {
    struct fs_batch *head, *tail;
};

enum fs_sync { FS_SYNC_GROUP, FS_SYNC_INTERVAL, FS_SYNC_NONE };

/* The writer thread. jobs/sleeping/fail_rc/stop are guarded by mu; the dirty_* fields
 * belong to the writer thread. Batches go to it through jobs (woken by wake) and come back,
 * written, through the done mailbox (core/mailbox.h), drained on the loop. */
struct fs_writer {
    uv_thread_t thread;
    uv_mutex_t mu;
    sem_t wake;                /* loop -> writer: job or stop (writer.c: why not a condvar) */
    struct fs_batch_list jobs; /* sealed, not taken by the writer yet */
    struct kq_mailbox done;    /* writer -> loop: written batches, in the order sealed */
    bool sleeping;             /* the writer waits on wake (or is about to): a job must post */
    int fail_rc; /* a write failed: later jobs fail without a write until the loop saw it */
    bool stop, started;
    enum fs_sync mode;
    int64_t interval_ms;
    int64_t lazy_sync_ms; /* group: how long a batch nobody waits for may stay unsynced */
    int dir_fd, dlq_fd;
    int dirty_fd; /* segment written but not yet synced (interval/none, lazy group batches) */
    bool dlq_dirty;
    bool failed_dlq_add; /* a failed batch since the last good group carried a DLQ_ADD */
    int64_t last_sync_ms;
    int64_t dirty_since_ms; /* first write that is not synced yet */
    atomic_uint_fast64_t fsync_hist[KQ_FS_FSYNC_BUCKETS + 1]; /* written by the writer only */
    atomic_uint_fast64_t fsync_us_sum;
};

struct fs_store {
    struct kq_store base;
    char dir[1024];
    enum fs_sync mode;
    int64_t interval_ms, lazy_sync_ms;
    uint64_t seg_max;
    struct fs_seg *oldest, *head; /* list oldest → head; writes go to head */
    size_t n_segs;
    struct kq_idmap index; /* struct fs_entry by id */
    size_t pending;
    struct fs_dead *dead;                /* by id */
    struct kq_dlq_index dlq;             /* their order and counters */
    struct kq_dlq_groups_buf dlq_groups; /* the groups of the dead letter read last */
    int dlq_fd;
    uint64_t dlq_size;
    uint64_t seq; /* last sequence number used */
    struct fs_batch *open;
    struct fs_batch_list flight; /* sealed and not completed yet (with the writer) */
    struct fs_batch_list failed; /* back from the writer failed, waiting for the rest */
    struct fs_batch *spares;     /* reset batches for reuse, up to SPARES_MAX */
    size_t n_spares;
    struct fs_writer w;
    uv_idle_t kick;
    uv_timer_t later;   /* a batch nobody waits for: back-off, lazy_sync_ms (fs_kick) */
    int64_t held_until; /* the open batch waits for a waiter until then (0: not yet held) */
    int64_t backoff_until;
    int handles_open;
    bool closing;
    struct kq_buf scratch;
    struct kq_file_store_stats st;
};

/* segment.c */
int fs_seg_create(struct fs_store *s, uint64_t first_seq, struct fs_seg **out);
struct fs_seg *fs_seg_new(const char *dir, uint64_t first_seq, int fd);
void fs_seg_append(struct fs_store *s, struct fs_seg *g);
void fs_seg_unlink(struct fs_store *s, struct fs_seg *g);
/* Sorted first_seqs of DIR/seg-*.log; *out malloc'ed. */
int fs_seg_list(const char *dir, uint64_t **out, size_t *n);

/* writer.c */
int fs_writer_start(struct fs_store *s);
/* Queue a sealed batch; the writer takes every queued batch at once when the disk is free
 * and posts each one to w->done once written (status set), in the order submitted. */
void fs_writer_submit(struct fs_writer *w, struct fs_batch *b);
/* The loop has every failed batch back: later jobs are written again. */
void fs_writer_clear_failure(struct fs_writer *w);
void fs_writer_stop(struct fs_writer *w);

/* recover.c */
int fs_scan(struct fs_store *s, char *err, size_t errlen);
int fs_recover(struct kq_store *base, kq_store_recover_cb cb, void *ud);

/* resync.c (start-up only) */
/* After damage at `off` in a file of `size` bytes (dlq: dlq.log, else a segment) whose last
 * good record had seq `after`: *next = the offset of the next record that can be trusted
 * (valid, seq above `after`, not contradicted by the record after it). 0, -ENOENT when
 * there is none before the end, or -errno on a read error. */
int fs_resync(int fd, bool dlq, uint64_t off, uint64_t size, uint64_t after, uint64_t *next);
/* Copy bytes [from, to) of the file `path` (open as fd) to DIR/quarantine/<name>.<from>-<to>.bad
 * (fsync'ed, replacing an earlier copy of the same range); its path goes to out. 0 or -errno. */
int fs_quarantine(const char *dir, const char *path, int fd, uint64_t from, uint64_t to, char *out,
                  size_t outlen);

/* file_store.c */
struct fs_entry *fs_find(struct fs_store *s, const char *key);
struct fs_dead *fs_find_dead(struct fs_store *s, const char *key);
void fs_entry_drop(struct fs_store *s, struct fs_entry *e);
void fs_dead_drop(struct fs_store *s, struct fs_dead *d);
/* A new index entry for a dead letter of (topic, group), counted and ordered last but not
 * findable by id until fs_dead_insert (which replaces an entry of the same id); undo with
 * fs_dead_drop before inserting. NULL on ENOMEM. */
struct fs_dead *fs_dead_new(struct fs_store *s, const char *key, const char *topic,
                            const char *group);
void fs_dead_insert(struct fs_store *s, struct fs_dead *d);
/* Append an id-only record (COMMIT, REMOVE, DEAD, DLQ_DEL) to the open batch. */
int fs_append_id(struct fs_store *s, uint8_t type, bool dlq, const char *key);
/* Make sure the open batch gets written (end of this loop iteration, or after back-off). */
void fs_kick(struct fs_store *s);
/* The sealed batch not yet completed that holds the record at off (dlq.log, or seg), if any:
 * its bytes may not be in the file yet. */
struct fs_batch *fs_unwritten(struct fs_store *s, bool dlq, const struct fs_seg *seg, uint64_t off);
/* dlq.c */
int fs_dlq_counts(struct kq_store *base, bool by_group, kq_store_dlq_count_cb cb, void *ud);
int fs_dlq_page(struct kq_store *base, const char *topic, const char *after, size_t max,
                kq_store_dlq_cb item, kq_store_dlq_page_cb done, void *ud);
int fs_dlq_get(struct kq_store *base, const char *id, kq_store_dlq_one_cb cb, void *ud);
int fs_dlq_take(struct kq_store *base, const char *id, kq_store_dlq_one_cb cb, void *ud);
int fs_dlq_purge(struct kq_store *base, const char *topic, kq_store_purge_cb cb, void *ud);
/* stats.c: kq_store_ops.stats */
void fs_stats(struct kq_store *base, kq_store_stat_cb cb, void *ud);
/* Bytes of a record wherever it is (open batch, batch in flight, file); NULL on error. */
const uint8_t *fs_read_at(struct fs_store *s, bool dlq, struct fs_seg *seg, bool unsealed,
                          uint64_t off, uint32_t len, struct fs_rec *r);
#endif
