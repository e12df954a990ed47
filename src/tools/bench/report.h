/* The JSON shape every load generator reports (kiteq-bench and the comparison tools), so that
 * bench/run reads all of them the same way: throughput, latency percentiles, server CPU and
 * memory. */
#ifndef KQ_BENCH_REPORT_H
#define KQ_BENCH_REPORT_H
#include <cjson/cJSON.h>
#include <stdint.h>
#include <sys/types.h>

#include "tools/bench/hist.h"
#include "tools/bench/procstat.h"

/* Messages a second from t_from_ns to t_last_ns (monotonic), 0 when t_last_ns is not later. */
double bench_rate(uint64_t count, uint64_t t_from_ns, uint64_t t_last_ns);
/* Adds the array of strings v[0..n) as name. */
void bench_report_strings(cJSON *j, const char *name, const char *const *v, size_t n);
/* Adds what every load generator counts in a run: "runId", "elapsedSec", "publishSec", "sent",
 * "ackedOk" and "ackFailures". */
void bench_report_run(cJSON *j, uint32_t run_id, double elapsed_s, double publish_s, uint64_t sent,
                      uint64_t acked_ok, uint64_t ack_failures);
/* Adds "throughput" {publishAck, endToEnd} and "latencyUs" {publishAck, publishDelivery},
 * each latency with count, p50, p90, p99, p99.9, max and mean in microseconds (histograms
 * hold nanoseconds). */
void bench_report_rates(cJSON *j, double ack_rate, double e2e_rate, const struct bench_hist *ack,
                        const struct bench_hist *deliv);
/* Adds "broker" {pid, cpuSec, cpuUsPerMsg, rssKbBefore, rssKbAfterPublish, rssKbEnd,
 * rssKbPeak} for the server process that was watched. */
void bench_report_server(cJSON *j, pid_t pid, const struct bench_procstat *before,
                         const struct bench_procstat *after_pub, const struct bench_procstat *end,
                         double cpu_us_per_msg);
#endif
