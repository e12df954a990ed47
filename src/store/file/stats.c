/* File store: its figures through the store interface (kq_store_ops.stats), in base units
 * for /metrics; kq_file_store_stats (file_store.c) keeps them in the store's own units. */
#include "store/file/fs_internal.h"

static void counter(kq_store_stat_cb cb, void *ud, const char *name, const char *help, double v)
{
    kq_store_stat_value(cb, ud, KQ_STORE_COUNTER, name, help, v);
}

static void gauge(kq_store_stat_cb cb, void *ud, const char *name, const char *help, double v)
{
    kq_store_stat_value(cb, ud, KQ_STORE_GAUGE, name, help, v);
}

static void histogram(kq_store_stat_cb cb, void *ud, const char *name, const char *help, size_t n,
                      const double *bounds, const uint64_t *counts, double sum)
{
    cb(ud, &(struct kq_store_stat){.name = name,
                                   .help = help,
                                   .kind = KQ_STORE_HISTOGRAM,
                                   .n_bounds = n,
                                   .bounds = bounds,
                                   .counts = counts,
                                   .sum = sum});
}

void fs_stats(struct kq_store *base, kq_store_stat_cb cb, void *ud)
{
    struct kq_file_store_stats st;
    if (kq_file_store_stats(base, &st) != 0)
        return;
    double fsync_bounds_s[KQ_FS_FSYNC_BUCKETS]; /* the writer measures in µs */
    for (size_t i = 0; i < KQ_FS_FSYNC_BUCKETS; i++)
        fsync_bounds_s[i] = kq_fs_fsync_bounds_us[i] / 1e6;
    counter(cb, ud, "fsyncs_total", "fdatasync calls on the file store's data files.",
            (double)st.fsyncs);
    histogram(cb, ud, "fsync_seconds", "fdatasync latency of the file store.", KQ_FS_FSYNC_BUCKETS,
              fsync_bounds_s, st.fsync_hist, (double)st.fsync_us_sum / 1e6);
    counter(cb, ud, "batches_total", "Group-commit batches written.", (double)st.batches);
    counter(cb, ud, "records_total", "Records written (batch size = records / batches).",
            (double)st.records);
    histogram(cb, ud, "batch_records", "Records per group-commit batch.", KQ_FS_BATCH_BUCKETS,
              kq_fs_batch_bounds, st.batch_hist, (double)st.batch_records_sum);
    counter(cb, ud, "written_bytes_total", "Bytes written to the segments and dlq.log.",
            (double)st.bytes_written);
    counter(cb, ud, "write_errors_total", "Failed batches (disk full, I/O errors).",
            (double)st.write_errors);
    gauge(cb, ud, "segments", "Live segment files.", (double)st.segments);
    gauge(cb, ud, "log_bytes", "Bytes in the live segment files.", (double)st.log_bytes);
    gauge(cb, ud, "dead_letters", "Messages in the dead-letter store.", (double)st.dead_letters);
    counter(cb, ud, "segments_deleted_total", "Segment files reclaimed.",
            (double)st.segments_deleted);
    counter(cb, ud, "compactions_total", "Compaction passes started.", (double)st.compactions);
    counter(cb, ud, "compacted_messages_total", "Messages copied forward by compaction.",
            (double)st.compacted_msgs);
    counter(cb, ud, "truncated_bytes_total", "Torn tail bytes cut off when the store opened.",
            (double)st.truncated_bytes);
    counter(cb, ud, "damaged_ranges_total",
            "Damaged byte ranges found when the store opened (copied to quarantine/).",
            (double)st.damaged_ranges);
    gauge(cb, ud, "recover_seconds", "How long the scan took when the store opened.",
          (double)st.recover_ms / 1000.0);
}
