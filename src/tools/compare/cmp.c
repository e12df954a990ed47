/* Options, threads, drain and summary of the comparison load generators (see cmp.h). */
#include "tools/compare/cmp.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "tools/bench/procstat.h"
#include "tools/bench/report.h"
#include "tools/common/cli_util.h"

/* What every body starts with (as kiteq-bench's, with another magic); the rest is filler. */
struct body_hdr {
    char magic[4];
    uint32_t run_id;
    uint64_t seq;
    uint64_t t_ns;
};
static const char MAGIC[4] = {'K', 'Q', 'C', '1'};

uint64_t cmp_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void cmp_sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

static void atomic_max(atomic_uint_fast64_t *a, uint64_t v)
{
    uint64_t cur = atomic_load(a);
    while (cur < v && !atomic_compare_exchange_weak(a, &cur, v))
        ;
}

void cmp_fail(struct cmp_bench *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", b->prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    atomic_store(&b->failed, true);
    atomic_store(&b->stop_pub, true);
}

/* --- producers and consumers ---------------------------------------------------------------- */

enum cmp_next_result cmp_next(struct cmp_producer *p, uint64_t now, uint64_t *seq, uint64_t *t_ns,
                              int64_t *wait_ns)
{
    struct cmp_bench *b = p->b;
    const struct cmp_opts *o = &b->o;
    if (atomic_load(&b->stop_pub))
        return CMP_DONE;
    *t_ns = now;
    if (o->rate) { /* producer k sends at t0 + (k + n * producers) / rate */
        double interval = 1e9 * (double)o->producers / (double)o->rate;
        uint64_t sched =
            b->t0 + (uint64_t)(1e9 * p->idx / (double)o->rate + interval * (double)p->n);
        if (sched > now) {
            *wait_ns = (int64_t)(sched - now);
            return CMP_WAIT;
        }
        *t_ns = sched;
    }
    *seq = atomic_fetch_add(&b->next_seq, 1);
    if (o->count > 0 && *seq >= (uint64_t)o->count)
        return CMP_DONE;
    p->n++;
    return CMP_SEND;
}

bool cmp_next_body(struct cmp_producer *p, uint64_t *seq, uint64_t *t_ns, int64_t *wait_ns,
                   bool *done)
{
    enum cmp_next_result r = cmp_next(p, cmp_now_ns(), seq, t_ns, wait_ns);
    if (r == CMP_DONE)
        *done = true;
    if (r != CMP_SEND)
        return false;
    cmp_fill_body(p, *seq, *t_ns);
    return true;
}

void cmp_fill_body(struct cmp_producer *p, uint64_t seq, uint64_t t_ns)
{
    struct body_hdr h = {.run_id = p->b->run_id, .seq = seq, .t_ns = t_ns};
    memcpy(h.magic, MAGIC, sizeof MAGIC);
    memcpy(p->body, &h, sizeof h);
}

void cmp_sent(struct cmp_producer *p) { atomic_fetch_add(&p->b->sent, 1); }

void cmp_acked(struct cmp_producer *p, uint64_t seq, uint64_t t_ns, bool ok)
{
    struct cmp_bench *b = p->b;
    uint64_t now = cmp_now_ns();
    if (!ok) {
        atomic_fetch_add(&b->acked_fail, 1);
        return;
    }
    bench_seqmap_incr(&b->acked, seq);
    atomic_fetch_add(&b->acked_ok, 1);
    if (t_ns >= b->t_measure) {
        atomic_fetch_add(&b->acked_measured, 1);
        bench_hist_record(&p->ack_lat, now - t_ns);
    }
    atomic_max(&b->last_ack_ns, now);
}

void cmp_ready(struct cmp_consumer *c) { atomic_fetch_add(&c->b->consumers_ready, 1); }

void cmp_delivered(struct cmp_consumer *c, const void *body, size_t len)
{
    struct cmp_bench *b = c->b;
    struct cmp_group *g = c->g;
    uint64_t now = cmp_now_ns();
    struct body_hdr h;
    if (len < sizeof h) {
        atomic_fetch_add(&g->stale, 1);
        return;
    }
    memcpy(&h, body, sizeof h);
    if (memcmp(h.magic, MAGIC, sizeof MAGIC) || h.run_id != b->run_id) {
        atomic_fetch_add(&g->stale, 1); /* leftovers of an earlier run */
        return;
    }
    int prev = bench_seqmap_incr(&g->seen, h.seq);
    if (prev > 0)
        atomic_fetch_add(&g->dups, 1);
    else if (prev == 0)
        atomic_fetch_add(&g->delivered, 1);
    if (h.t_ns >= b->t_measure && now >= h.t_ns) {
        bench_hist_record(&c->lat, now - h.t_ns);
        if (prev == 0)
            atomic_fetch_add(&g->delivered_measured, 1);
    }
    atomic_max(&b->last_deliv_ns, now);
}

/* --- summary -------------------------------------------------------------------------------- */

static uint64_t count_missing(struct cmp_bench *b, struct cmp_group *g)
{
    uint64_t end = atomic_load(&b->next_seq), missing = 0;
    for (uint64_t s = 0; s < end; s++)
        if (bench_seqmap_get(&b->acked, s) && !bench_seqmap_get(&g->seen, s))
            missing++;
    return missing;
}

static uint64_t missing_all(struct cmp_bench *b)
{
    uint64_t n = 0;
    for (size_t i = 0; i < b->o.ncgroups; i++)
        n += b->groups[i].lost = count_missing(b, &b->groups[i]);
    return n;
}

struct summary {
    double elapsed_s, publish_s, ack_rate, e2e_rate, cpu_us_per_msg;
    uint64_t dups, lost, stale, delivered;
    struct bench_hist ack, deliv;
    bool have_proc;
    struct bench_procstat before, after_pub, end;
};

static void print_summary(struct cmp_bench *b, const struct summary *s)
{
    const struct cmp_opts *o = &b->o;
    cJSON *j = cJSON_CreateObject(), *c = cJSON_AddObjectToObject(j, "config");
    cJSON_AddStringToObject(c, "tool", b->prog);
    cJSON_AddStringToObject(c, "server", o->server);
    bench_report_strings(c, "consumerGroups", o->cgroups, o->ncgroups);
    cJSON_AddNumberToObject(c, "producers", (double)o->producers);
    cJSON_AddNumberToObject(c, "inflight", (double)o->inflight);
    cJSON_AddNumberToObject(c, "consumers", (double)o->consumers);
    cJSON_AddNumberToObject(c, "prefetch", (double)o->prefetch);
    cJSON_AddNumberToObject(c, "size", (double)o->size);
    cJSON_AddNumberToObject(c, "rate", (double)o->rate);
    cJSON_AddNumberToObject(c, "warmupSec", (double)o->warmup);
    bench_report_run(j, b->run_id, s->elapsed_s, s->publish_s, atomic_load(&b->sent),
                     atomic_load(&b->acked_ok), atomic_load(&b->acked_fail));
    cJSON *d = cJSON_AddObjectToObject(j, "delivered");
    for (size_t i = 0; i < o->ncgroups; i++)
        cJSON_AddNumberToObject(d, b->groups[i].name, (double)atomic_load(&b->groups[i].delivered));
    cJSON_AddNumberToObject(j, "duplicates", (double)s->dups);
    cJSON_AddNumberToObject(j, "lost", (double)s->lost);
    cJSON_AddNumberToObject(j, "stale", (double)s->stale);
    bench_report_rates(j, s->ack_rate, s->e2e_rate, &s->ack, &s->deliv);
    if (s->have_proc)
        bench_report_server(j, o->server_pid, &s->before, &s->after_pub, &s->end,
                            s->cpu_us_per_msg);
    char *out = o->json ? cJSON_PrintUnformatted(j) : cJSON_Print(j);
    if (out)
        puts(out);
    cJSON_free(out);
    cJSON_Delete(j);
}

/* --- main ----------------------------------------------------------------------------------- */

/* Runs the driver's producer, then records when publishing ended. */
static void *producer_thread(void *arg)
{
    struct cmp_producer *p = arg;
    p->b->driver->producer(p);
    atomic_max(&p->b->pub_end_ns, cmp_now_ns());
    atomic_fetch_add(&p->b->producers_done, 1);
    return NULL;
}

static void join_all(struct cmp_bench *b)
{
    for (long k = 0; k < b->o.producers; k++)
        if (b->prod[k].started)
            pthread_join(b->prod[k].th, NULL);
    atomic_store(&b->stop_cons, true);
    for (size_t i = 0; i < b->o.ncgroups * (size_t)b->o.consumers; i++)
        if (b->cons[i].started)
            pthread_join(b->cons[i].th, NULL);
}

static int stop_signal; /* SIGINT or SIGTERM once received */

/* Sleeps up to ms; true when SIGINT/SIGTERM arrived. */
static bool tick(const sigset_t *sigs, long ms)
{
    struct timespec ts = {ms / 1000, ms % 1000 * 1000000};
    int sig = sigtimedwait(sigs, NULL, &ts);
    if (sig > 0)
        stop_signal = sig;
    return sig > 0;
}

static int run(int argc, char **argv, const struct cmp_driver *d);

/* After a Ctrl-C the summary is printed, then the tool dies of SIGINT as the shell expects
 * (a calling script's INT trap runs only when its child was killed by SIGINT). */
int cmp_main(int argc, char **argv, const struct cmp_driver *d)
{
    int rc = run(argc, argv, d);
    sigset_t pending; /* a Ctrl-C may also have stopped the server first: run() then failed */
    sigpending(&pending);
    if (stop_signal == SIGINT || sigismember(&pending, SIGINT) == 1) {
        fflush(stdout);
        sigset_t s;
        sigemptyset(&s);
        sigaddset(&s, SIGINT);
        signal(SIGINT, SIG_DFL);
        pthread_sigmask(SIG_UNBLOCK, &s, NULL);
        raise(SIGINT);
    }
    return rc;
}

static int run(int argc, char **argv, const struct cmp_driver *d)
{
    static struct cmp_bench bench; /* seqmap page tables: not on the stack */
    static struct summary s;
    struct cmp_bench *b = &bench;
    b->prog = d->prog;
    b->driver = d;
    int rc = cmp_parse_opts(argc, argv, d, &b->o);
    if (rc)
        return rc > 0 ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    const struct cmp_opts *o = &b->o;
    sigset_t sigs;
    cli_block_stop_signals(&sigs);

    b->run_id = (uint32_t)(getpid() ^ (uint32_t)cmp_now_ns());
    size_t ncons = o->ncgroups * (size_t)o->consumers;
    b->groups = calloc(o->ncgroups, sizeof *b->groups);
    b->cons = calloc(ncons, sizeof *b->cons);
    b->prod = calloc((size_t)o->producers, sizeof *b->prod);
    if (!b->groups || !b->cons || !b->prod)
        return CLI_EXIT_FAIL;
    b->t0 = b->t_measure = cmp_now_ns();
    if (d->setup(b))
        return CLI_EXIT_CONNECT;

    /* consumers first: subscribed before the first message is published */
    for (size_t i = 0; i < o->ncgroups; i++)
        b->groups[i].name = o->cgroups[i];
    for (size_t i = 0; i < ncons; i++) {
        struct cmp_consumer *c = &b->cons[i];
        *c = (struct cmp_consumer){.b = b,
                                   .g = &b->groups[i / (size_t)o->consumers],
                                   .idx = (int)(i % (size_t)o->consumers)};
        bench_hist_init(&c->lat);
        c->started = pthread_create(&c->th, NULL, d->consumer, c) == 0;
    }
    uint64_t deadline = cmp_now_ns() + 30000000000u;
    while (atomic_load(&b->consumers_ready) < (int)ncons && !atomic_load(&b->failed)) {
        if (cmp_now_ns() > deadline) {
            cmp_fail(b, "consumers not subscribed after 30 s");
            break;
        }
        cmp_sleep_ns(10000000);
    }
    if (o->server_pid) {
        s.have_proc = bench_procstat_read((pid_t)o->server_pid, &s.before) == 0;
        if (!s.have_proc && !o->quiet)
            fprintf(stderr, "%s: cannot read /proc/%ld\n", b->prog, o->server_pid);
    }
    b->t0 = cmp_now_ns();
    b->t_measure = b->t0 + (uint64_t)o->warmup * 1000000000u;
    for (long k = 0; k < o->producers && !atomic_load(&b->failed); k++) {
        struct cmp_producer *p = &b->prod[k];
        *p = (struct cmp_producer){.b = b, .idx = (int)k, .body = malloc((size_t)o->size)};
        if (!p->body)
            return CLI_EXIT_FAIL;
        for (long i = 0; i < o->size; i++)
            p->body[i] = (uint8_t)('a' + i % 26);
        bench_hist_init(&p->ack_lat);
        p->started = pthread_create(&p->th, NULL, producer_thread, p) == 0;
        if (!p->started)
            cmp_fail(b, "cannot start producer thread");
    }

    bool interrupted = false;
    while (atomic_load(&b->producers_done) < o->producers && !atomic_load(&b->failed)) {
        if (tick(&sigs, 100))
            interrupted = true;
        if (interrupted ||
            (o->duration && cmp_now_ns() - b->t0 >= (uint64_t)o->duration * 1000000000u))
            atomic_store(&b->stop_pub, true);
    }
    for (long k = 0; k < o->producers; k++)
        if (b->prod[k].started) {
            pthread_join(b->prod[k].th, NULL);
            b->prod[k].started = false;
        }
    uint64_t t_pub_end = atomic_load(&b->pub_end_ns) ? atomic_load(&b->pub_end_ns) : cmp_now_ns();
    if (s.have_proc)
        bench_procstat_read((pid_t)o->server_pid, &s.after_pub);
    uint64_t drain_start = cmp_now_ns();
    while (!atomic_load(&b->failed) && missing_all(b) &&
           cmp_now_ns() - drain_start < (uint64_t)o->drain * 1000000000u)
        if (tick(&sigs, 100))
            break;
    s.lost = missing_all(b);
    join_all(b);
    if (atomic_load(&b->failed))
        return CLI_EXIT_CONNECT;

    if (s.have_proc)
        bench_procstat_read((pid_t)o->server_pid, &s.end);
    uint64_t t_end = cmp_now_ns();
    bench_hist_init(&s.ack);
    bench_hist_init(&s.deliv);
    for (long k = 0; k < o->producers; k++)
        bench_hist_merge(&s.ack, &b->prod[k].ack_lat);
    for (size_t i = 0; i < ncons; i++)
        bench_hist_merge(&s.deliv, &b->cons[i].lat);
    for (size_t i = 0; i < o->ncgroups; i++) {
        s.dups += atomic_load(&b->groups[i].dups);
        s.stale += atomic_load(&b->groups[i].stale);
        s.delivered += atomic_load(&b->groups[i].delivered_measured);
    }
    s.elapsed_s = (double)(t_end - b->t0) / 1e9;
    s.publish_s = (double)(t_pub_end - b->t0) / 1e9;
    s.ack_rate =
        bench_rate(atomic_load(&b->acked_measured), b->t_measure, atomic_load(&b->last_ack_ns));
    s.e2e_rate = bench_rate(s.delivered, b->t_measure, atomic_load(&b->last_deliv_ns));
    uint64_t acked = atomic_load(&b->acked_ok);
    if (s.have_proc && acked)
        s.cpu_us_per_msg = (s.end.cpu_sec - s.before.cpu_sec) * 1e6 / (double)acked;
    print_summary(b, &s);
    fflush(stdout);
    return s.lost || atomic_load(&b->acked_fail) ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}
