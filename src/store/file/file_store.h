/* File store: append-only segment log with group commit (docs/STORAGE.md).
 * Opened through kq_store_open("file://DIR?fsync=group|interval|none&..."). */
#ifndef KQ_STORE_FILE_FILE_STORE_H
#define KQ_STORE_FILE_FILE_STORE_H
#include <stdint.h>

#include "store/store.h"

/* Upper bounds of the fsync latency histogram (µs) and of the batch size histogram
 * (records); one more bucket counts everything above the last bound. */
#define KQ_FS_FSYNC_BUCKETS 10
#define KQ_FS_BATCH_BUCKETS 8
extern const double kq_fs_fsync_bounds_us[KQ_FS_FSYNC_BUCKETS];
extern const double kq_fs_batch_bounds[KQ_FS_BATCH_BUCKETS];

struct kq_file_store_stats {
    uint64_t pending;          /* messages in the index */
    uint64_t dead_letters;     /* entries in the DLQ */
    uint64_t segments;         /* live segment files */
    uint64_t log_bytes;        /* bytes in live segments */
    uint64_t batches;          /* batches written */
    uint64_t records;          /* records written */
    uint64_t bytes_written;    /* bytes written to segments and dlq.log */
    uint64_t fsyncs;           /* fdatasync/fsync calls on data files */
    uint64_t write_errors;     /* failed batches (ENOSPC, EIO) */
    uint64_t segments_deleted; /* reclaimed segment files */
    uint64_t compactions;      /* compaction passes started */
    uint64_t compacted_msgs;   /* messages copied forward by compaction */
    uint64_t truncated_bytes;  /* torn tail bytes cut off at open */
    uint64_t damaged_ranges;   /* damaged byte ranges found at open (copied to quarantine/) */
    uint64_t damaged_bytes;    /* their bytes (truncated tails included) */
    uint64_t recover_ms;       /* time spent scanning at open */
    uint64_t fsync_hist[KQ_FS_FSYNC_BUCKETS + 1]; /* fdatasync latencies, per bucket */
    uint64_t fsync_us_sum;
    uint64_t batch_hist[KQ_FS_BATCH_BUCKETS + 1]; /* records per batch, per bucket */
    uint64_t batch_records_sum;
};

/* Counters of a file store; -EINVAL if s is not a file store. Loop thread only. */
int kq_file_store_stats(struct kq_store *s, struct kq_file_store_stats *out);
#endif
