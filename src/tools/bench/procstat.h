/* Resource use of another process (the broker) from /proc, for CPU-per-message and RSS. */
#ifndef KQ_BENCH_PROCSTAT_H
#define KQ_BENCH_PROCSTAT_H
#include <sys/types.h>

struct bench_procstat {
    double cpu_sec; /* utime + stime, seconds */
    long rss_kb;    /* VmRSS */
    long hwm_kb;    /* VmHWM: peak RSS */
};

/* Reads /proc/PID/stat and /proc/PID/status. 0 or -errno (-ENOENT: no such process). */
int bench_procstat_read(pid_t pid, struct bench_procstat *out);
#endif
