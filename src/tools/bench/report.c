#include "tools/bench/report.h"

#include <stddef.h>

static cJSON *hist_json(const struct bench_hist *h)
{
    static const double pcts[] = {50, 90, 99, 99.9};
    static const char *const names[] = {"p50", "p90", "p99", "p99.9"};
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "count", (double)h->count);
    for (size_t i = 0; i < sizeof pcts / sizeof pcts[0]; i++)
        cJSON_AddNumberToObject(j, names[i], (double)bench_hist_percentile(h, pcts[i]) / 1e3);
    cJSON_AddNumberToObject(j, "max", (double)h->max / 1e3);
    cJSON_AddNumberToObject(j, "mean", bench_hist_mean(h) / 1e3);
    return j;
}

double bench_rate(uint64_t count, uint64_t t_from_ns, uint64_t t_last_ns)
{
    return t_last_ns > t_from_ns ? (double)count * 1e9 / (double)(t_last_ns - t_from_ns) : 0;
}

void bench_report_strings(cJSON *j, const char *name, const char *const *v, size_t n)
{
    cJSON *a = cJSON_AddArrayToObject(j, name);
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(v[i]));
}

void bench_report_run(cJSON *j, uint32_t run_id, double elapsed_s, double publish_s, uint64_t sent,
                      uint64_t acked_ok, uint64_t ack_failures)
{
    cJSON_AddNumberToObject(j, "runId", (double)run_id);
    cJSON_AddNumberToObject(j, "elapsedSec", elapsed_s);
    cJSON_AddNumberToObject(j, "publishSec", publish_s);
    cJSON_AddNumberToObject(j, "sent", (double)sent);
    cJSON_AddNumberToObject(j, "ackedOk", (double)acked_ok);
    cJSON_AddNumberToObject(j, "ackFailures", (double)ack_failures);
}

void bench_report_rates(cJSON *j, double ack_rate, double e2e_rate, const struct bench_hist *ack,
                        const struct bench_hist *deliv)
{
    cJSON *t = cJSON_AddObjectToObject(j, "throughput");
    cJSON_AddNumberToObject(t, "publishAck", ack_rate);
    cJSON_AddNumberToObject(t, "endToEnd", e2e_rate);
    cJSON *l = cJSON_AddObjectToObject(j, "latencyUs");
    cJSON_AddItemToObject(l, "publishAck", hist_json(ack));
    cJSON_AddItemToObject(l, "publishDelivery", hist_json(deliv));
}

void bench_report_server(cJSON *j, pid_t pid, const struct bench_procstat *before,
                         const struct bench_procstat *after_pub, const struct bench_procstat *end,
                         double cpu_us_per_msg)
{
    cJSON *p = cJSON_AddObjectToObject(j, "broker");
    cJSON_AddNumberToObject(p, "pid", (double)pid);
    cJSON_AddNumberToObject(p, "cpuSec", end->cpu_sec - before->cpu_sec);
    cJSON_AddNumberToObject(p, "cpuUsPerMsg", cpu_us_per_msg);
    cJSON_AddNumberToObject(p, "rssKbBefore", (double)before->rss_kb);
    cJSON_AddNumberToObject(p, "rssKbAfterPublish", (double)after_pub->rss_kb);
    cJSON_AddNumberToObject(p, "rssKbEnd", (double)end->rss_kb);
    cJSON_AddNumberToObject(p, "rssKbPeak", (double)end->hwm_kb);
}
