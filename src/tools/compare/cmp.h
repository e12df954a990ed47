/* Shared part of the comparison load generators (kiteq-bench-rabbitmq, kiteq-bench-redis).
 *
 * They measure other brokers the way kiteq-bench measures KiteQ: numbered bodies carrying a
 * run id, a sequence number and the publish time (CLOCK_MONOTONIC), log-linear histograms per
 * thread, per-(group, sequence) delivery counters for duplicates and losses, the server's CPU
 * from /proc/PID/stat, and the same JSON summary fields, so bench/run can print their rows
 * next to KiteQ's.
 *
 * A driver supplies three functions: setup (fresh queues or stream and groups), a producer
 * thread and a consumer thread. This file owns options, threads, the drain and the summary.
 * Producers use cmp_next / cmp_fill_body / cmp_acked; consumers cmp_ready / cmp_delivered and
 * return once b->stop_cons is set. */
#ifndef KQ_TOOLS_COMPARE_CMP_H
#define KQ_TOOLS_COMPARE_CMP_H
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tools/bench/hist.h"
#include "tools/bench/seqmap.h"

#define CMP_MAX_GROUPS 64

struct cmp_opts {
    const char *server; /* HOST:PORT as given */
    char host[256];
    int port;
    const char *cgroups[CMP_MAX_GROUPS];
    size_t ncgroups;
    long producers, inflight, consumers, size, count, duration, rate, drain, warmup, server_pid,
        prefetch;
    bool json, quiet;
};

struct cmp_bench;

struct cmp_producer {
    struct cmp_bench *b;
    int idx;
    uint64_t n;    /* messages this producer sent (its --rate schedule) */
    uint8_t *body; /* o.size bytes, filler after the header */
    struct bench_hist ack_lat;
    pthread_t th;
    bool started;
};

struct cmp_group {
    const char *name;
    struct bench_seqmap seen;
    atomic_uint_fast64_t delivered, delivered_measured, dups, stale;
    uint64_t lost;
};

struct cmp_consumer {
    struct cmp_bench *b;
    struct cmp_group *g;
    int idx; /* within its group */
    struct bench_hist lat;
    pthread_t th;
    bool started;
};

struct cmp_driver;

struct cmp_bench {
    struct cmp_opts o;
    const char *prog;
    const struct cmp_driver *driver;
    uint32_t run_id;
    uint64_t t0, t_measure;
    atomic_uint_fast64_t next_seq, sent, acked_ok, acked_fail, acked_measured, last_ack_ns,
        last_deliv_ns, pub_end_ns;
    atomic_bool stop_pub, stop_cons, failed;
    atomic_int producers_done, consumers_ready;
    struct bench_seqmap acked;
    struct cmp_producer *prod;
    struct cmp_group *groups;
    struct cmp_consumer *cons; /* ncgroups * consumers */
};

struct cmp_driver {
    const char *prog;
    const char *about; /* one paragraph for --help */
    long default_port;
    int (*setup)(struct cmp_bench *b); /* 0, or -1 after printing why */
    void *(*producer)(void *arg);      /* struct cmp_producer * */
    void *(*consumer)(void *arg);      /* struct cmp_consumer * */
};

int cmp_main(int argc, char **argv, const struct cmp_driver *d);
/* 0, 1 after --help, or -EINVAL after printing why (cmp_opts.c). */
int cmp_parse_opts(int argc, char **argv, const struct cmp_driver *d, struct cmp_opts *o);

enum cmp_next_result { CMP_SEND, CMP_WAIT, CMP_DONE };
/* What producer p should do at time now: CMP_SEND message *seq, stamped *t_ns (the scheduled
 * time with --rate: a late send keeps its schedule, so stalls show up as latency); CMP_WAIT
 * *wait_ns for the next scheduled send; CMP_DONE (count reached, duration over, stopped). */
enum cmp_next_result cmp_next(struct cmp_producer *p, uint64_t now, uint64_t *seq, uint64_t *t_ns,
                              int64_t *wait_ns);
void cmp_fill_body(struct cmp_producer *p, uint64_t seq, uint64_t t_ns);
/* cmp_next now, and cmp_fill_body when it says CMP_SEND: true then, with *seq and *t_ns to
 * send; false to wait *wait_ns, or with *done set on CMP_DONE. */
bool cmp_next_body(struct cmp_producer *p, uint64_t *seq, uint64_t *t_ns, int64_t *wait_ns,
                   bool *done);
void cmp_sent(struct cmp_producer *p);
/* The server confirmed (ok) or refused message seq published at t_ns. */
void cmp_acked(struct cmp_producer *p, uint64_t seq, uint64_t t_ns, bool ok);

/* A consumer is subscribed: producers start once every consumer is. */
void cmp_ready(struct cmp_consumer *c);
void cmp_delivered(struct cmp_consumer *c, const void *body, size_t len);

/* A thread cannot go on: prints the reason (prog: ...), stops the run, exit status 3. */
void cmp_fail(struct cmp_bench *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
uint64_t cmp_now_ns(void);
void cmp_sleep_ns(uint64_t ns);
#endif
