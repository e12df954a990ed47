/* kiteq-bench: load generator and correctness checker for a running broker.
 *
 * Producers (one thread and one connection each) publish numbered messages; every body starts
 * with a small header (magic, run id, sequence number, publish time on CLOCK_MONOTONIC), so
 * consumers in the same machine can measure publish->delivery latency and count, per
 * (group, sequence), how often each message arrived: duplicates and losses fall out of that.
 * Latencies go into log-linear histograms (tools/bench/hist.h), one per thread, merged at
 * the end.
 *
 * Threads: main (options, progress, signals, drain, summary), one per producer, and the
 * client library's reader thread per connection (ack and delivery callbacks). SIGINT and
 * SIGTERM are blocked everywhere and collected by main with sigtimedwait. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "client/kiteq_client.h"
#include "core/log.h"
#include "tools/bench/hist.h"
#include "tools/bench/procstat.h"
#include "tools/bench/raw_consumer.h"
#include "tools/bench/report.h"
#include "tools/bench/seqmap.h"
#include "tools/common/cli_util.h"

#define PROG "kiteq-bench"
#define MAX_LIST 64

/* --- options ----------------------------------------------------------------------------- */

enum tx_mode { TX_NONE = 0, TX_COMMIT = 1, TX_ROLLBACK = 2 }; /* = the protocol's status */

struct opts {
    const char *broker, *group, *secret, *topic, *consumer_secret;
    const char *types[MAX_LIST], *cgroups[MAX_LIST];
    size_t ntypes, ncgroups;
    long producers, inflight, consumers, size, count, duration, rate, slow_ack_ms, drain, warmup,
        expect, ack_timeout, broker_pid, consumer_rcvbuf, consumer_sndbuf, consumer_work_us, hold;
    double nack;
    enum tx_mode tx;
    enum bench_consumer_mode consumer_mode;
    bool json, quiet, allow_failures;
};

static const char HELP[] =
    "usage: " PROG " --broker HOST:PORT [options]\n"
    "Publish numbered messages to a running broker, consume them, and report throughput,\n"
    "latency percentiles, duplicates and losses.\n\n"
    "Connections:\n"
    "  --broker HOST:PORT      broker address (required)\n"
    "  --group G               producer group (default p-trade)\n"
    "  --secret S              producer secret (default secret)\n"
    "  --consumer-groups A,B   consumer groups; each must be bound to every published type\n"
    "                          (default s-g1)\n"
    "  --consumer-secret S     consumer groups' secret (default secret)\n"
    "Load:\n"
    "  --topic T               topic (default trade)\n"
    "  --type M | --types A,B  message type(s); several are used round-robin (default bench)\n"
    "  --producers N           producer connections (default 1; 0 = consume only)\n"
    "  --inflight N            unacked messages per producer: 1 waits for every ack,\n"
    "                          >1 pipelines with kq_publish_async (default 1)\n"
    "  --consumers N           consumer connections per group (default 1; 0 = none)\n"
    "  --size BYTES            body size, at least 24 (default 1024)\n"
    "  --count N               messages in total (default 100000 unless --duration)\n"
    "  --duration SEC          publish for SEC seconds instead of --count\n"
    "  --rate MSG/S            fixed total publish rate, spread over the producers; latencies\n"
    "                          then count from the scheduled send time\n"
    "  --tx commit|rollback    two-phase: publish commit=false, then kq_tx_finish\n"
    "  --nack FRACTION         consumers nack this fraction of deliveries (0..1)\n"
    "  --slow-ack MS           consumers wait MS before each ack\n"
    "  --consumer-work-us N    consumers spend N microseconds on each message (busy) before\n"
    "                          acking it\n"
    "  --consumer-rcvbuf BYTES consumers set SO_RCVBUF after connecting, as the original Go\n"
    "  --consumer-sndbuf BYTES client does (16384 there); 0 = system default\n"
    "  --consumer-mode M       how consumers behave: normal (the client library: ack each\n"
    "                          delivery, default), never-ack (read every delivery, never send a\n"
    "                          DeliverAck; heartbeats go on), never-read (authenticate, then\n"
    "                          never read the socket or send anything, like a frozen process).\n"
    "                          The last two are raw-socket consumers: no --slow-ack, --nack,\n"
    "                          --consumer-work-us or --tx with them, no drain (they do not\n"
    "                          consume), and lost is not judged\n"
    "  --expect N              with --producers 0: expect sequences 0..N-1 (published by an\n"
    "                          earlier run) and report which never arrive\n"
    "Measuring:\n"
    "  --warmup-sec SEC        leave messages published in the first SEC seconds out of the\n"
    "                          latency and throughput figures (still checked for loss)\n"
    "  --drain SEC             after publishing, wait up to SEC for deliveries (default 10)\n"
    "  --ack-timeout MS        store-ack timeout of the client (default 10000)\n"
    "  --broker-pid PID        report broker CPU per message and RSS from /proc/PID\n"
    "  --hold SEC              after the drain, keep the consumers connected until the broker's\n"
    "                          RSS has not grown (by more than 1 % + 256 kB) for 10 s, at most\n"
    "                          SEC; report that RSS and the messages then pending (acked by the\n"
    "                          broker, not yet acked by every consumer group). Needs --broker-pid\n"
    "Output:\n"
    "  --json                  print the summary as one JSON object on stdout\n"
    "  --quiet                 no progress line, no per-error messages\n"
    "  --allow-failures        ack failures do not make the exit status non-zero\n"
    "  --log-level L           client library log level (default warn)\n"
    "  -h, --help              this help\n\n"
    "A live progress line goes to stderr once per second when it is a terminal. Ctrl-C stops\n"
    "publishing, drains and prints the summary; a second Ctrl-C skips the drain.\n"
    "Exit: 0 ok; 1 a message acked by the broker was never delivered to a group, an ack\n"
    "failed (unless --allow-failures) or a rolled-back message was delivered; 2 usage;\n"
    "3 connect/auth.\n";

enum {
    O_BROKER = 1000,
    O_GROUP,
    O_SECRET,
    O_CGROUPS,
    O_CSECRET,
    O_TOPIC,
    O_TYPE,
    O_TYPES,
    O_PRODUCERS,
    O_INFLIGHT,
    O_CONSUMERS,
    O_SIZE,
    O_COUNT,
    O_DURATION,
    O_RATE,
    O_TX,
    O_NACK,
    O_SLOW,
    O_WORK,
    O_RCVBUF,
    O_SNDBUF,
    O_CMODE,
    O_HOLD,
    O_EXPECT,
    O_WARMUP,
    O_DRAIN,
    O_ACKTO,
    O_PID,
    O_JSON,
    O_QUIET,
    O_ALLOW,
    O_LOG,
};

/* Splits a comma-separated list in place (s must stay alive). */
static int split_list(char *s, const char **out, size_t *n, const char *opt)
{
    *n = 0;
    for (char *save = NULL, *t = strtok_r(s, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (*n == MAX_LIST) {
            fprintf(stderr, PROG ": too many values for --%s (max %d)\n", opt, MAX_LIST);
            return -EINVAL;
        }
        out[(*n)++] = t;
    }
    if (*n == 0) {
        fprintf(stderr, PROG ": empty --%s\n", opt);
        return -EINVAL;
    }
    return 0;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
    static const struct option longopts[] = {
        {"broker", required_argument, NULL, O_BROKER},
        {"group", required_argument, NULL, O_GROUP},
        {"secret", required_argument, NULL, O_SECRET},
        {"consumer-groups", required_argument, NULL, O_CGROUPS},
        {"consumer-secret", required_argument, NULL, O_CSECRET},
        {"topic", required_argument, NULL, O_TOPIC},
        {"type", required_argument, NULL, O_TYPE},
        {"types", required_argument, NULL, O_TYPES},
        {"producers", required_argument, NULL, O_PRODUCERS},
        {"inflight", required_argument, NULL, O_INFLIGHT},
        {"consumers", required_argument, NULL, O_CONSUMERS},
        {"size", required_argument, NULL, O_SIZE},
        {"count", required_argument, NULL, O_COUNT},
        {"duration", required_argument, NULL, O_DURATION},
        {"rate", required_argument, NULL, O_RATE},
        {"tx", required_argument, NULL, O_TX},
        {"nack", required_argument, NULL, O_NACK},
        {"slow-ack", required_argument, NULL, O_SLOW},
        {"consumer-work-us", required_argument, NULL, O_WORK},
        {"consumer-rcvbuf", required_argument, NULL, O_RCVBUF},
        {"consumer-sndbuf", required_argument, NULL, O_SNDBUF},
        {"consumer-mode", required_argument, NULL, O_CMODE},
        {"hold", required_argument, NULL, O_HOLD},
        {"expect", required_argument, NULL, O_EXPECT},
        {"warmup-sec", required_argument, NULL, O_WARMUP},
        {"drain", required_argument, NULL, O_DRAIN},
        {"ack-timeout", required_argument, NULL, O_ACKTO},
        {"broker-pid", required_argument, NULL, O_PID},
        {"json", no_argument, NULL, O_JSON},
        {"quiet", no_argument, NULL, O_QUIET},
        {"allow-failures", no_argument, NULL, O_ALLOW},
        {"log-level", required_argument, NULL, O_LOG},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    *o = (struct opts){.group = "p-trade",
                       .secret = "secret",
                       .consumer_secret = "secret",
                       .topic = "trade",
                       .types = {"bench"},
                       .ntypes = 1,
                       .cgroups = {"s-g1"},
                       .ncgroups = 1,
                       .producers = 1,
                       .inflight = 1,
                       .consumers = 1,
                       .size = 1024,
                       .count = -1,
                       .drain = 10,
                       .ack_timeout = 10000};
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int bad = 0;
        switch (opt) {
        case 'h': fputs(HELP, stdout); return 1;
        case O_BROKER: o->broker = optarg; break;
        case O_GROUP: o->group = optarg; break;
        case O_SECRET: o->secret = optarg; break;
        case O_CGROUPS:
            bad = split_list(optarg, o->cgroups, &o->ncgroups, "consumer-groups");
            break;
        case O_CSECRET: o->consumer_secret = optarg; break;
        case O_TOPIC: o->topic = optarg; break;
        case O_TYPE:
            o->types[0] = optarg;
            o->ntypes = 1;
            break;
        case O_TYPES: bad = split_list(optarg, o->types, &o->ntypes, "types"); break;
        case O_PRODUCERS:
            bad = cli_parse_long(PROG, "producers", optarg, 0, 4096, &o->producers);
            break;
        case O_INFLIGHT:
            bad = cli_parse_long(PROG, "inflight", optarg, 1, 1000000, &o->inflight);
            break;
        case O_CONSUMERS:
            bad = cli_parse_long(PROG, "consumers", optarg, 0, 4096, &o->consumers);
            break;
        case O_SIZE: bad = cli_parse_long(PROG, "size", optarg, 24, 16 << 20, &o->size); break;
        case O_COUNT: bad = cli_parse_long(PROG, "count", optarg, 1, 1L << 40, &o->count); break;
        case O_DURATION:
            bad = cli_parse_long(PROG, "duration", optarg, 1, 86400 * 7, &o->duration);
            break;
        case O_RATE: bad = cli_parse_long(PROG, "rate", optarg, 1, 100000000, &o->rate); break;
        case O_SLOW:
            bad = cli_parse_long(PROG, "slow-ack", optarg, 0, 600000, &o->slow_ack_ms);
            break;
        case O_WORK:
            bad =
                cli_parse_long(PROG, "consumer-work-us", optarg, 0, 10000000, &o->consumer_work_us);
            break;
        case O_RCVBUF:
            bad = cli_parse_long(PROG, "consumer-rcvbuf", optarg, 0, 1 << 30, &o->consumer_rcvbuf);
            break;
        case O_SNDBUF:
            bad = cli_parse_long(PROG, "consumer-sndbuf", optarg, 0, 1 << 30, &o->consumer_sndbuf);
            break;
        case O_HOLD: bad = cli_parse_long(PROG, "hold", optarg, 1, 86400, &o->hold); break;
        case O_CMODE:
            if (bench_consumer_mode_parse(optarg, &o->consumer_mode)) {
                fprintf(stderr, PROG ": --consumer-mode takes normal, never-ack or never-read\n");
                bad = 1;
            }
            break;
        case O_EXPECT: bad = cli_parse_long(PROG, "expect", optarg, 1, 1L << 40, &o->expect); break;
        case O_WARMUP: bad = cli_parse_long(PROG, "warmup-sec", optarg, 0, 3600, &o->warmup); break;
        case O_DRAIN: bad = cli_parse_long(PROG, "drain", optarg, 0, 86400, &o->drain); break;
        case O_ACKTO:
            bad = cli_parse_long(PROG, "ack-timeout", optarg, 1, 3600000, &o->ack_timeout);
            break;
        case O_PID:
            bad = cli_parse_long(PROG, "broker-pid", optarg, 1, 1L << 30, &o->broker_pid);
            break;
        case O_TX:
            o->tx = !strcmp(optarg, "commit")     ? TX_COMMIT
                    : !strcmp(optarg, "rollback") ? TX_ROLLBACK
                                                  : TX_NONE;
            if (o->tx == TX_NONE) {
                fprintf(stderr, PROG ": --tx takes commit or rollback\n");
                bad = 1;
            }
            break;
        case O_NACK: {
            char *end;
            o->nack = strtod(optarg, &end);
            if (*end || end == optarg || !(o->nack >= 0 && o->nack <= 1)) {
                fprintf(stderr, PROG ": bad value for --nack (a fraction 0..1)\n");
                bad = 1;
            }
            break;
        }
        case O_JSON: o->json = true; break;
        case O_QUIET: o->quiet = true; break;
        case O_ALLOW: o->allow_failures = true; break;
        case O_LOG: {
            enum kq_log_level l;
            if (kq_log_parse_level(optarg, &l)) {
                fprintf(stderr, PROG ": bad value for --log-level: '%s'\n", optarg);
                bad = 1;
            } else {
                kq_log_set_level(l);
            }
            break;
        }
        default: bad = 1; break;
        }
        if (bad)
            return -EINVAL;
    }
    const char *err =
        optind < argc                     ? "unexpected argument"
        : !o->broker                      ? "missing --broker"
        : o->count > 0 && o->duration > 0 ? "give --count or --duration, not both"
        : o->expect && o->producers       ? "--expect needs --producers 0"
        : o->nack >= 1 && o->consumers    ? "--nack 1 would never ack anything"
        : o->consumer_mode && (o->slow_ack_ms || o->nack > 0 || o->consumer_work_us || o->tx)
            ? "--consumer-mode never-ack/never-read takes no --slow-ack, --nack, "
              "--consumer-work-us or --tx"
        : o->hold && !o->broker_pid ? "--hold needs --broker-pid"
                                    : NULL;
    if (err) {
        fprintf(stderr, PROG ": %s (see '" PROG " --help')\n", err);
        return -EINVAL;
    }
    if (o->count < 0 && o->duration == 0)
        o->count = 100000;
    return 0;
}

/* --- shared state ------------------------------------------------------------------------- */

/* What every body starts with; the rest is filler. Same machine, so host byte order. */
struct body_hdr {
    char magic[4];
    uint32_t run_id;
    uint64_t seq;
    uint64_t t_ns; /* CLOCK_MONOTONIC at (scheduled) publish */
};
static const char MAGIC[4] = {'K', 'Q', 'B', '1'};

struct bench;

struct producer {
    struct bench *b;
    int idx;
    struct kq_client *c;
    pthread_t th;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    long inflight;
    struct bench_hist ack_lat; /* written by one thread at a time: see ack_done */
};

struct consumer {
    struct bench *b;
    struct group *g;
    struct kq_client *c;
    struct bench_raw_consumer *raw; /* --consumer-mode never-ack / never-read instead of c */
    uint64_t rng;
    struct bench_hist lat; /* written only by this connection's reader thread */
};

struct group {
    const char *name;
    struct bench_seqmap seen; /* acked deliveries per sequence */
    atomic_uint_fast64_t delivered, delivered_measured, dups, nacks, stale, unexpected;
    struct consumer *cons;
    uint64_t lost; /* computed after the drain */
};

struct bench {
    struct opts o;
    uint32_t run_id;
    uint64_t t0, t_measure; /* ns, monotonic */
    atomic_uint_fast64_t next_seq;
    atomic_bool stop_pub;
    atomic_int producers_done;
    atomic_uint_fast64_t sent, acked_ok, acked_fail, send_err, acked_measured, last_ack_ns,
        last_deliv_ns, pub_end_ns;
    struct bench_seqmap acked;
    struct producer *prod;
    struct group *groups;
};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_until_ns(uint64_t t)
{
    struct timespec ts = {.tv_sec = (time_t)(t / 1000000000u), .tv_nsec = (long)(t % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static void atomic_max(atomic_uint_fast64_t *a, uint64_t v)
{
    uint64_t cur = atomic_load(a);
    while (cur < v && !atomic_compare_exchange_weak(a, &cur, v))
        ;
}

/* xorshift64*: a cheap per-consumer generator for --nack */
static double rand01(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return (double)((*s * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}

/* --- consumers (reader threads) ----------------------------------------------------------- */

/* Reads the bench header of a delivered body. Leftovers of earlier runs are counted as
 * stale (and acked by the caller), not checked. A consume-only run (--expect) accepts any
 * run id: its messages come from an earlier process. */
static bool read_body_hdr(struct consumer *cs, const uint8_t *body, size_t len, struct body_hdr *h)
{
    const struct bench *b = cs->b;
    if (len >= sizeof *h)
        memcpy(h, body, sizeof *h);
    if (len < sizeof *h || memcmp(h->magic, MAGIC, sizeof MAGIC) ||
        (b->o.producers && h->run_id != b->run_id)) {
        atomic_fetch_add(&cs->g->stale, 1);
        return false;
    }
    return true;
}

/* Counts a delivery of h->seq received at `now` (first delivery, duplicate, latency). */
static void count_delivery(struct consumer *cs, const struct body_hdr *h, uint64_t now)
{
    struct bench *b = cs->b;
    struct group *g = cs->g;
    int prev = bench_seqmap_incr(&g->seen, h->seq);
    if (prev > 0)
        atomic_fetch_add(&g->dups, 1);
    else if (prev == 0)
        atomic_fetch_add(&g->delivered, 1);
    /* consume-only: every message was published before we started */
    if ((h->t_ns >= b->t_measure || !b->o.producers) && now >= h->t_ns) {
        bench_hist_record(&cs->lat, now - h->t_ns);
        if (prev == 0)
            atomic_fetch_add(&g->delivered_measured, 1);
    }
    atomic_max(&b->last_deliv_ns, now);
}

/* --consumer-mode never-ack: the raw consumer read a delivery and will not ack it. */
static void on_raw_delivery(void *ud, const uint8_t *body, size_t len)
{
    struct consumer *cs = ud;
    uint64_t now = mono_ns();
    struct body_hdr h;
    if (read_body_hdr(cs, body, len, &h))
        count_delivery(cs, &h, now);
}

static bool on_message(void *ud, const struct kq_message *m)
{
    struct consumer *cs = ud;
    struct bench *b = cs->b;
    struct group *g = cs->g;
    uint64_t now = mono_ns();
    struct body_hdr h;
    if (!read_body_hdr(cs, m->body, m->body_len, &h))
        return true;
    if (b->o.slow_ack_ms > 0) {
        struct timespec ts = {b->o.slow_ack_ms / 1000, b->o.slow_ack_ms % 1000 * 1000000};
        nanosleep(&ts, NULL);
    }
    if (b->o.consumer_work_us > 0) { /* busy, like a consumer doing real work */
        uint64_t until = mono_ns() + (uint64_t)b->o.consumer_work_us * 1000;
        while (mono_ns() < until)
            ;
    }
    if (b->o.nack > 0 && rand01(&cs->rng) < b->o.nack) {
        atomic_fetch_add(&g->nacks, 1);
        return false;
    }
    if (b->o.tx == TX_ROLLBACK)
        atomic_fetch_add(&g->unexpected, 1);
    count_delivery(cs, &h, now);
    return true;
}

/* --- producers ---------------------------------------------------------------------------- */

/* One message in flight with kq_publish_async. */
struct inflight_msg {
    struct producer *p;
    uint64_t seq, t_ns;
    int64_t create_time;
    char id[KQ_CLIENT_ID_LEN + 1];
};

static const char *type_of(const struct bench *b, uint64_t seq)
{
    return b->o.types[seq % b->o.ntypes];
}

static int tx_check(void *ud, const struct kq_message *m)
{
    const struct bench *b = ud;
    return b->o.tx == TX_ROLLBACK ? TX_ROLLBACK : TX_COMMIT;
}

/* Bookkeeping of one store ack (or failure); from the reader thread in pipelined mode,
 * from the producer thread otherwise, never both for one producer. */
static void ack_done(struct producer *p, const struct inflight_msg *im, int err,
                     const struct kq_publish_result *r)
{
    struct bench *b = p->b;
    uint64_t now = mono_ns();
    if (err || !r->status) {
        atomic_fetch_add(&b->acked_fail, 1);
        if (!b->o.quiet)
            fprintf(stderr, PROG ": message seq=%" PRIu64 " id=%s failed: %s\n", im->seq,
                    r->message_id, *r->feedback ? r->feedback : "status false");
        return;
    }
    if (b->o.tx) {
        struct kq_message m = {.topic = b->o.topic,
                               .message_type = type_of(b, im->seq),
                               .expired_time = -1,
                               .deliver_limit = -1,
                               .two_phase = true,
                               .create_time = im->create_time};
        memcpy(m.message_id, im->id, sizeof m.message_id);
        int rc = kq_tx_finish(p->c, &m, b->o.tx, "");
        if (rc) {
            atomic_fetch_add(&b->acked_fail, 1);
            return;
        }
    }
    bench_seqmap_incr(&b->acked, im->seq);
    atomic_fetch_add(&b->acked_ok, 1);
    if (im->t_ns >= b->t_measure) {
        atomic_fetch_add(&b->acked_measured, 1);
        bench_hist_record(&p->ack_lat, now - im->t_ns);
    }
    atomic_max(&b->last_ack_ns, now);
}

static void on_async_ack(void *ud, int err, const struct kq_publish_result *r)
{
    struct inflight_msg *im = ud;
    struct producer *p = im->p;
    ack_done(p, im, err, r);
    free(im);
    pthread_mutex_lock(&p->mu);
    p->inflight--;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->mu);
}

static void *producer_main(void *arg)
{
    struct producer *p = arg;
    struct bench *b = p->b;
    const struct opts *o = &b->o;
    uint8_t *body = malloc((size_t)o->size);
    if (!body) {
        atomic_store(&b->stop_pub, true);
        goto out;
    }
    for (long i = sizeof(struct body_hdr); i < o->size; i++)
        body[i] = (uint8_t)('a' + i % 26);
    /* --rate: producer k sends at t0 + (k + n * producers) / rate, interleaved with the others */
    double interval = o->rate ? 1e9 * (double)o->producers / (double)o->rate : 0;
    uint64_t first = b->t0 + (uint64_t)(o->rate ? 1e9 * p->idx / (double)o->rate : 0);
    bool corked = false;
    for (uint64_t n = 0; !atomic_load(&b->stop_pub); n++) {
        uint64_t seq = atomic_fetch_add(&b->next_seq, 1);
        if (o->count > 0 && seq >= (uint64_t)o->count)
            break;
        uint64_t t = mono_ns();
        if (o->rate) {
            uint64_t sched = first + (uint64_t)(interval * (double)n);
            if (sched > t)
                sleep_until_ns(sched);
            t = sched; /* late sends keep their schedule: stalls show up as latency */
        }
        if (o->inflight > 1) {
            pthread_mutex_lock(&p->mu);
            if (p->inflight >= o->inflight && corked) {
                /* window full: send the batch, then wait for acks */
                pthread_mutex_unlock(&p->mu);
                kq_client_uncork(p->c);
                corked = false;
                pthread_mutex_lock(&p->mu);
            }
            while (p->inflight >= o->inflight)
                pthread_cond_wait(&p->cond, &p->mu);
            p->inflight++;
            pthread_mutex_unlock(&p->mu);
            if (!o->rate)
                t = mono_ns(); /* the window wait is not part of the latency */
            if (!o->rate && !corked) {
                /* Pipelined at full speed: fill the free part of the window with one
                 * write, as a batching producer would. */
                kq_client_cork(p->c);
                corked = true;
            }
        }
        struct body_hdr h = {.run_id = b->run_id, .seq = seq, .t_ns = t};
        memcpy(h.magic, MAGIC, sizeof MAGIC);
        memcpy(body, &h, sizeof h);
        struct kq_message m = {.topic = o->topic,
                               .message_type = type_of(b, seq),
                               .expired_time = -1,
                               .deliver_limit = -1,
                               .two_phase = o->tx != TX_NONE,
                               .body = body,
                               .body_len = (size_t)o->size};
        struct inflight_msg local = {.p = p, .seq = seq, .t_ns = t};
        if (o->tx) {
            /* kq_tx_finish must repeat the header: fix id and create time ourselves */
            kq_generate_message_id(local.id);
            local.create_time = (int64_t)time(NULL);
            memcpy(m.message_id, local.id, sizeof m.message_id);
            m.create_time = local.create_time;
        }
        int rc;
        if (o->inflight == 1) {
            struct kq_publish_result r = {0};
            rc = kq_publish(p->c, &m, &r);
            /* 0, or sent but no ack (timeout, connection lost): an ack failure */
            if (rc == 0 || rc == -ETIMEDOUT || rc == -ECONNRESET) {
                atomic_fetch_add(&b->sent, 1);
                ack_done(p, &local, rc, &r);
                rc = 0;
            }
        } else {
            struct inflight_msg *im = malloc(sizeof *im);
            rc = -ENOMEM;
            if (im) {
                *im = local;
                atomic_fetch_add(&b->sent, 1); /* before: the ack may beat the return */
                rc = kq_publish_async(p->c, &m, on_async_ack, im);
                if (rc) {
                    atomic_fetch_sub(&b->sent, 1);
                    free(im);
                }
            }
            if (rc) { /* no callback will come: give the window slot back */
                pthread_mutex_lock(&p->mu);
                p->inflight--;
                pthread_mutex_unlock(&p->mu);
            }
        }
        if (rc) {
            atomic_fetch_add(&b->send_err, 1);
            if (!o->quiet)
                fprintf(stderr, PROG ": seq=%" PRIu64 " not sent: %s\n", seq, strerror(-rc));
            if (rc == -ENOTCONN) { /* reconnecting: do not spin */
                struct timespec ts = {0, 10000000};
                nanosleep(&ts, NULL);
            }
        }
    }
    if (corked)
        kq_client_uncork(p->c);
    pthread_mutex_lock(&p->mu);
    while (p->inflight > 0)
        pthread_cond_wait(&p->cond, &p->mu);
    pthread_mutex_unlock(&p->mu);
out:
    free(body);
    atomic_max(&b->pub_end_ns, mono_ns());
    atomic_fetch_add(&b->producers_done, 1);
    return NULL;
}

/* --- main-thread helpers ------------------------------------------------------------------ */

static sigset_t stop_signals;
static int interrupts;
static bool got_sigint;

/* Sleeps up to ms, returning early (and counting it) when SIGINT/SIGTERM arrives. */
static void tick(long ms)
{
    struct timespec ts = {ms / 1000, ms % 1000 * 1000000};
    int sig = sigtimedwait(&stop_signals, NULL, &ts);
    if (sig > 0) {
        interrupts++;
        got_sigint |= sig == SIGINT;
    }
}

static uint64_t delivered_total(struct bench *b)
{
    uint64_t n = 0;
    for (size_t i = 0; i < b->o.ncgroups; i++)
        n += atomic_load(&b->groups[i].delivered);
    return n;
}

static bool progress_on;

static void progress(struct bench *b, double elapsed, uint64_t *last_acked, uint64_t *last_deliv)
{
    uint64_t acked = atomic_load(&b->acked_ok), fail = atomic_load(&b->acked_fail);
    uint64_t sent = atomic_load(&b->sent), deliv = delivered_total(b);
    uint64_t done = acked + fail;
    fprintf(stderr,
            "\r%6.1fs  acked %" PRIu64 " (%" PRIu64 "/s)  in flight %" PRIu64 "  delivered %" PRIu64
            " (%" PRIu64 "/s)  errors %" PRIu64 "\033[K",
            elapsed, acked, acked - *last_acked, sent > done ? sent - done : 0, deliv,
            deliv - *last_deliv, fail + atomic_load(&b->send_err));
    *last_acked = acked;
    *last_deliv = deliv;
    progress_on = true;
}

/* Acked (or, consume-only, expected) sequences not yet delivered to g. */
static uint64_t count_missing(struct bench *b, struct group *g)
{
    if (b->o.tx == TX_ROLLBACK)
        return 0;
    uint64_t end = b->o.producers ? atomic_load(&b->next_seq) : (uint64_t)b->o.expect;
    uint64_t missing = 0;
    for (uint64_t s = 0; s < end; s++) {
        bool expected = b->o.producers ? bench_seqmap_get(&b->acked, s) > 0 : true;
        if (expected && bench_seqmap_get(&g->seen, s) == 0)
            missing++;
    }
    return missing;
}

static uint64_t missing_all(struct bench *b)
{
    uint64_t n = 0;
    for (size_t i = 0; i < b->o.ncgroups; i++)
        n += b->groups[i].lost = count_missing(b, &b->groups[i]);
    return n;
}

static int open_client(struct bench *b, const char *group, const char *secret,
                       kq_on_message_fn on_msg, void *ud, struct kq_client **out)
{
    struct kq_client_options co = {.broker = b->o.broker,
                                   .group_id = group,
                                   .secret = secret,
                                   .ack_timeout_ms = (int)b->o.ack_timeout,
                                   .reconnect = true,
                                   .on_message = on_msg,
                                   .ud = ud};
    if (on_msg) {
        co.socket_rcvbuf = (int)b->o.consumer_rcvbuf;
        co.socket_sndbuf = (int)b->o.consumer_sndbuf;
    }
    if (b->o.tx && !on_msg) {
        co.on_tx_check = tx_check;
        co.ud = b;
    }
    char err[256] = "";
    int rc = kq_client_open(&co, out, err, sizeof err);
    if (rc)
        fprintf(stderr, PROG ": cannot connect to %s as %s: %s\n", b->o.broker, group,
                *err ? err : strerror(-rc));
    return rc;
}

/* A consumer of group g: the client library, or a raw-socket one for --consumer-mode. */
static int open_consumer(struct bench *b, struct consumer *cs)
{
    const struct opts *o = &b->o;
    if (o->consumer_mode == BENCH_CONSUMER_NORMAL)
        return open_client(b, cs->g->name, o->consumer_secret, on_message, cs, &cs->c);
    struct bench_raw_consumer_options ro = {.broker = o->broker,
                                            .group = cs->g->name,
                                            .secret = o->consumer_secret,
                                            .mode = o->consumer_mode,
                                            .rcvbuf = (int)o->consumer_rcvbuf,
                                            .sndbuf = (int)o->consumer_sndbuf,
                                            .on_delivery = on_raw_delivery,
                                            .ud = cs};
    char err[256] = "";
    int rc = bench_raw_consumer_open(&ro, &cs->raw, err, sizeof err);
    if (rc)
        fprintf(stderr, PROG ": cannot connect to %s as %s (%s consumer): %s\n", o->broker,
                cs->g->name, bench_consumer_mode_name(o->consumer_mode), err);
    return rc;
}

/* Messages acked by the broker that not every consumer group has acked yet (as far as this
 * process knows: our own acks; none with --consumer-mode never-ack / never-read). */
static uint64_t pending_now(struct bench *b)
{
    uint64_t acked = atomic_load(&b->acked_ok), done = 0;
    if (b->o.consumers && b->o.consumer_mode == BENCH_CONSUMER_NORMAL && b->o.nack == 0) {
        done = UINT64_MAX;
        for (size_t i = 0; i < b->o.ncgroups; i++) {
            uint64_t d = atomic_load(&b->groups[i].delivered);
            done = d < done ? d : done;
        }
    }
    return acked > done ? acked - done : 0;
}

/* --hold: what the broker looked like once its RSS stopped growing. */
struct hold {
    bool steady;  /* false: --hold ran out (or the broker went away) first */
    double sec;   /* how long it held */
    long rss_kb;  /* the last sample */
    long peak_kb; /* the highest sample */
    uint64_t pending;
};

#define HOLD_STEADY_NS 10000000000u
#define HOLD_SAMPLE_MS 500

/* Keeps the consumers connected, sampling the broker's RSS, until it has not grown by more
 * than 1 % + 256 kB over the last HOLD_STEADY_NS, at most --hold seconds (or Ctrl-C). */
static void hold_until_steady(struct bench *b, struct hold *h)
{
    uint64_t start = mono_ns(), last_growth = start, limit = (uint64_t)b->o.hold * 1000000000u;
    long base_kb = -1;
    int seen_interrupts = interrupts;
    for (;;) {
        struct bench_procstat ps;
        if (bench_procstat_read((pid_t)b->o.broker_pid, &ps))
            break;
        uint64_t now = mono_ns();
        h->rss_kb = ps.rss_kb;
        h->peak_kb = ps.rss_kb > h->peak_kb ? ps.rss_kb : h->peak_kb;
        h->pending = pending_now(b);
        h->sec = (double)(now - start) / 1e9;
        if (base_kb < 0 || ps.rss_kb > base_kb + base_kb / 100 + 256) {
            base_kb = ps.rss_kb;
            last_growth = now;
        }
        if (now - last_growth >= HOLD_STEADY_NS) {
            h->steady = true;
            break;
        }
        if (now - start >= limit || interrupts > seen_interrupts)
            break;
        tick(HOLD_SAMPLE_MS);
    }
}

/* --- summary ------------------------------------------------------------------------------ */

struct summary {
    double elapsed_s, publish_s, ack_rate, e2e_rate, cpu_us_per_msg;
    uint64_t dups, lost, nacks, stale, unexpected, delivered;
    struct bench_hist ack, deliv;
    bool have_proc;
    struct bench_procstat before, after_pub, end;
    struct hold hold;
    uint64_t disconnects; /* raw consumers whose connection the broker closed */
};

static const double PCTS[] = {50, 90, 99, 99.9}; /* the text table's columns */

static void print_json(const struct bench *b, const struct summary *s)
{
    const struct opts *o = &b->o;
    cJSON *j = cJSON_CreateObject(), *c = cJSON_AddObjectToObject(j, "config");
    cJSON_AddStringToObject(c, "broker", o->broker);
    cJSON_AddStringToObject(c, "topic", o->topic);
    bench_report_strings(c, "types", o->types, o->ntypes);
    bench_report_strings(c, "consumerGroups", o->cgroups, o->ncgroups);
    cJSON_AddNumberToObject(c, "producers", (double)o->producers);
    cJSON_AddNumberToObject(c, "inflight", (double)o->inflight);
    cJSON_AddNumberToObject(c, "consumers", (double)o->consumers);
    cJSON_AddNumberToObject(c, "size", (double)o->size);
    cJSON_AddNumberToObject(c, "rate", (double)o->rate);
    cJSON_AddStringToObject(c, "tx",
                            o->tx == TX_COMMIT     ? "commit"
                            : o->tx == TX_ROLLBACK ? "rollback"
                                                   : "none");
    cJSON_AddNumberToObject(c, "nack", o->nack);
    cJSON_AddNumberToObject(c, "warmupSec", (double)o->warmup);
    cJSON_AddNumberToObject(c, "consumerWorkUs", (double)o->consumer_work_us);
    cJSON_AddNumberToObject(c, "consumerRcvbuf", (double)o->consumer_rcvbuf);
    cJSON_AddNumberToObject(c, "consumerSndbuf", (double)o->consumer_sndbuf);
    cJSON_AddStringToObject(c, "consumerMode", bench_consumer_mode_name(o->consumer_mode));
    cJSON_AddNumberToObject(c, "holdSec", (double)o->hold);
    bench_report_run(j, b->run_id, s->elapsed_s, s->publish_s, atomic_load(&b->sent),
                     atomic_load(&b->acked_ok), atomic_load(&b->acked_fail));
    cJSON_AddNumberToObject(j, "sendErrors", (double)atomic_load(&b->send_err));
    cJSON *d = cJSON_AddObjectToObject(j, "delivered");
    for (size_t i = 0; i < o->ncgroups; i++)
        cJSON_AddNumberToObject(d, b->groups[i].name, (double)atomic_load(&b->groups[i].delivered));
    cJSON_AddNumberToObject(j, "duplicates", (double)s->dups);
    if (o->consumers && o->consumer_mode == BENCH_CONSUMER_NORMAL)
        cJSON_AddNumberToObject(j, "lost", (double)s->lost);
    else
        cJSON_AddNullToObject(j, "lost");
    if (o->consumer_mode != BENCH_CONSUMER_NORMAL)
        cJSON_AddNumberToObject(j, "consumerDisconnects", (double)s->disconnects);
    cJSON_AddNumberToObject(j, "nacks", (double)s->nacks);
    cJSON_AddNumberToObject(j, "stale", (double)s->stale);
    cJSON_AddNumberToObject(j, "unexpected", (double)s->unexpected);
    bench_report_rates(j, s->ack_rate, s->e2e_rate, &s->ack, &s->deliv);
    if (s->have_proc)
        bench_report_server(j, o->broker_pid, &s->before, &s->after_pub, &s->end,
                            s->cpu_us_per_msg);
    if (o->hold && s->have_proc) {
        cJSON *h = cJSON_AddObjectToObject(j, "hold");
        cJSON_AddBoolToObject(h, "steady", s->hold.steady);
        cJSON_AddNumberToObject(h, "sec", s->hold.sec);
        cJSON_AddNumberToObject(h, "rssKb", (double)s->hold.rss_kb);
        cJSON_AddNumberToObject(h, "rssKbPeak", (double)s->hold.peak_kb);
        cJSON_AddNumberToObject(h, "pending", (double)s->hold.pending);
    }
    char *out = cJSON_PrintUnformatted(j);
    if (out)
        puts(out);
    cJSON_free(out);
    cJSON_Delete(j);
}

static void print_hist_row(const char *name, const struct bench_hist *h)
{
    printf("  %-18s", name);
    if (!h->count) {
        printf("  (no samples)\n");
        return;
    }
    for (size_t i = 0; i < 4; i++)
        printf(" %9.1f", (double)bench_hist_percentile(h, PCTS[i]) / 1e3);
    printf(" %9.1f %9.1f %10" PRIu64 "\n", (double)h->max / 1e3, bench_hist_mean(h) / 1e3,
           h->count);
}

static void print_text(const struct bench *b, const struct summary *s)
{
    const struct opts *o = &b->o;
    const char *mode = o->consumer_mode ? bench_consumer_mode_name(o->consumer_mode) : NULL;
    printf("kiteq-bench  topic=%s types=%zu producers=%ldx%ld consumers=%zux%ld%s%s size=%ld%s%s\n",
           o->topic, o->ntypes, o->producers, o->inflight, o->ncgroups, o->consumers,
           mode ? " " : "", mode ? mode : "", o->size,
           o->tx == TX_COMMIT     ? " tx=commit"
           : o->tx == TX_ROLLBACK ? " tx=rollback"
                                  : "",
           o->rate ? " (fixed rate)" : "");
    if (o->producers)
        printf("published    sent %" PRIu64 "  acked ok %" PRIu64 "  ack failures %" PRIu64
               "  send errors %" PRIu64 "  in %.2fs\n",
               (uint64_t)atomic_load(&b->sent), (uint64_t)atomic_load(&b->acked_ok),
               (uint64_t)atomic_load(&b->acked_fail), (uint64_t)atomic_load(&b->send_err),
               s->publish_s);
    if (o->consumers) {
        printf("delivered   ");
        for (size_t i = 0; i < o->ncgroups; i++) {
            printf(" %s=%" PRIu64, b->groups[i].name,
                   (uint64_t)atomic_load(&b->groups[i].delivered));
            if (o->consumer_mode == BENCH_CONSUMER_NORMAL)
                printf(" (lost %" PRIu64 ")", b->groups[i].lost);
        }
        if (o->consumer_mode == BENCH_CONSUMER_NORMAL)
            printf("\n             duplicates %" PRIu64 "  lost %" PRIu64 "  nacks %" PRIu64
                   "  stale %" PRIu64 "%s\n",
                   s->dups, s->lost, s->nacks, s->stale,
                   s->unexpected ? "  ROLLED-BACK DELIVERED" : "");
        else
            printf("\n             redelivered %" PRIu64 "  stale %" PRIu64
                   "  connections closed by the broker %" PRIu64 " (loss not judged)\n",
                   s->dups, s->stale, s->disconnects);
    }
    printf("throughput  ");
    if (o->producers)
        printf(" publish->ack %.0f msg/s", s->ack_rate);
    if (o->consumers)
        printf(" end-to-end %.0f msg/s", s->e2e_rate);
    printf("\nlatency (us)            p50       p90       p99     p99.9       max      mean      "
           "count\n");
    if (o->producers)
        print_hist_row("publish->ack", &s->ack);
    if (o->consumers)
        print_hist_row("publish->delivery", &s->deliv);
    if (s->have_proc)
        printf("broker       cpu %.2fs = %.2f us/msg  rss %ld kB -> %ld kB after publish, %ld kB "
               "at end (peak %ld kB)\n",
               s->end.cpu_sec - s->before.cpu_sec, s->cpu_us_per_msg, s->before.rss_kb,
               s->after_pub.rss_kb, s->end.rss_kb, s->end.hwm_kb);
    if (o->hold && s->have_proc)
        printf("hold         %s after %.1fs: rss %ld kB (peak %ld kB) with %" PRIu64
               " messages pending\n",
               s->hold.steady ? "steady" : "NOT steady", s->hold.sec, s->hold.rss_kb,
               s->hold.peak_kb, s->hold.pending);
}

/* --- main --------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    kq_log_set_level(KQ_LOG_WARN);
    static struct bench bench; /* large (seqmap page tables): not on the stack */
    struct bench *b = &bench;
    int rc = parse_opts(argc, argv, &b->o);
    if (rc)
        return rc > 0 ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    const struct opts *o = &b->o;
    int exit_code = CLI_EXIT_OK;
    static struct summary s; /* two histograms: not on the stack either */
    bench_hist_init(&s.ack);
    bench_hist_init(&s.deliv);
    bool show_progress = !o->quiet && isatty(STDERR_FILENO);
    uint64_t last_acked = 0, last_deliv = 0, next_progress = 0, t_pub_end = 0;

    /* Block the stop signals before any thread starts, so that only sigtimedwait sees them. */
    cli_block_stop_signals(&stop_signals);

    b->run_id = (uint32_t)(getpid() ^ (uint32_t)mono_ns());
    b->groups = calloc(o->ncgroups, sizeof *b->groups);
    b->prod = calloc((size_t)(o->producers ? o->producers : 1), sizeof *b->prod);
    if (!b->groups || !b->prod)
        return CLI_EXIT_FAIL;
    b->t0 = b->t_measure = mono_ns(); /* refined below, once connected */

    /* Consumers first: they must be subscribed before the first message is routed. */
    for (size_t i = 0; i < o->ncgroups && o->consumers; i++) {
        struct group *g = &b->groups[i];
        g->name = o->cgroups[i];
        g->cons = calloc((size_t)o->consumers, sizeof *g->cons);
        if (!g->cons)
            return CLI_EXIT_FAIL;
        for (long k = 0; k < o->consumers; k++) {
            struct consumer *cs = &g->cons[k];
            *cs = (struct consumer){
                .b = b, .g = g, .rng = 0x9E3779B97F4A7C15ULL * (i * 4096 + k + 1)};
            bench_hist_init(&cs->lat);
            if (open_consumer(b, cs)) {
                exit_code = CLI_EXIT_CONNECT;
                goto teardown;
            }
        }
    }
    for (size_t i = 0; i < o->ncgroups; i++)
        b->groups[i].name = o->cgroups[i];
    for (long k = 0; k < o->producers; k++) {
        struct producer *p = &b->prod[k];
        p->b = b;
        p->idx = (int)k;
        pthread_mutex_init(&p->mu, NULL);
        pthread_cond_init(&p->cond, NULL);
        bench_hist_init(&p->ack_lat);
        if (open_client(b, o->group, o->secret, NULL, NULL, &p->c)) {
            exit_code = CLI_EXIT_CONNECT;
            goto teardown;
        }
    }

    if (o->broker_pid) {
        s.have_proc = bench_procstat_read((pid_t)o->broker_pid, &s.before) == 0;
        if (!s.have_proc && !o->quiet)
            fprintf(stderr, PROG ": cannot read /proc/%ld: broker figures left out\n",
                    o->broker_pid);
    }
    if (o->producers)
        b->t0 = mono_ns();
    b->t_measure = b->t0 + (uint64_t)o->warmup * 1000000000u;
    for (long k = 0; k < o->producers; k++) {
        if (pthread_create(&b->prod[k].th, NULL, producer_main, &b->prod[k])) {
            atomic_store(&b->stop_pub, true);
            break;
        }
        b->prod[k].started = true;
    }

    /* Publishing phase: until the producers finish, --duration passes, or Ctrl-C. A
     * consume-only run without --expect lasts --duration (or until Ctrl-C). */
    next_progress = b->t0 + 1000000000u;
    for (;;) {
        uint64_t now = mono_ns();
        if (o->producers && atomic_load(&b->producers_done) == o->producers)
            break;
        if (!o->producers && o->expect)
            break;
        if (interrupts || (o->duration && now - b->t0 >= (uint64_t)o->duration * 1000000000u)) {
            atomic_store(&b->stop_pub, true);
            if (!o->producers)
                break;
        }
        if (show_progress && now >= next_progress) {
            progress(b, (double)(now - b->t0) / 1e9, &last_acked, &last_deliv);
            next_progress += 1000000000u;
        }
        tick(100);
    }
    atomic_store(&b->stop_pub, true);
    for (long k = 0; k < o->producers; k++)
        if (b->prod[k].started)
            pthread_join(b->prod[k].th, NULL);
    t_pub_end =
        o->producers && atomic_load(&b->pub_end_ns) ? atomic_load(&b->pub_end_ns) : mono_ns();
    if (s.have_proc)
        bench_procstat_read((pid_t)o->broker_pid, &s.after_pub);

    /* Drain: wait for every acked message to reach every group (a rolled-back one must
     * never arrive: wait a little to catch it). */
    if (o->consumers && o->ncgroups && o->consumer_mode == BENCH_CONSUMER_NORMAL) {
        uint64_t limit =
            (uint64_t)(o->tx == TX_ROLLBACK && o->drain > 2 ? 2 : o->drain) * 1000000000u;
        uint64_t start = mono_ns();
        int seen_interrupts = interrupts;
        for (;;) {
            uint64_t now = mono_ns();
            if ((o->tx != TX_ROLLBACK && missing_all(b) == 0) || now - start >= limit)
                break;
            if (show_progress && now >= next_progress) {
                progress(b, (double)(now - b->t0) / 1e9, &last_acked, &last_deliv);
                next_progress += 1000000000u;
            }
            tick(200);
            if (interrupts > seen_interrupts) /* a Ctrl-C during the drain ends it */
                break;
        }
        s.lost = missing_all(b);
    }
    if (o->hold && s.have_proc)
        hold_until_steady(b, &s.hold);
    if (progress_on)
        fputc('\n', stderr);

teardown:
    for (size_t i = 0; i < o->ncgroups; i++)
        for (long k = 0; b->groups[i].cons && k < o->consumers; k++) {
            struct consumer *cs = &b->groups[i].cons[k];
            if (cs->c)
                kq_client_close(cs->c);
            if (cs->raw) {
                s.disconnects += bench_raw_consumer_closed_by_broker(cs->raw);
                bench_raw_consumer_close(cs->raw);
            }
        }
    for (long k = 0; k < o->producers; k++)
        if (b->prod[k].c)
            kq_client_close(b->prod[k].c);
    if (exit_code)
        return exit_code;

    if (s.have_proc)
        bench_procstat_read((pid_t)o->broker_pid, &s.end);
    uint64_t t_end = mono_ns();
    for (long k = 0; k < o->producers; k++)
        bench_hist_merge(&s.ack, &b->prod[k].ack_lat);
    for (size_t i = 0; i < o->ncgroups; i++) {
        struct group *g = &b->groups[i];
        for (long k = 0; g->cons && k < o->consumers; k++)
            bench_hist_merge(&s.deliv, &g->cons[k].lat);
        s.dups += atomic_load(&g->dups);
        s.nacks += atomic_load(&g->nacks);
        s.stale += atomic_load(&g->stale);
        s.unexpected += atomic_load(&g->unexpected);
        s.delivered += atomic_load(&g->delivered_measured);
    }
    s.elapsed_s = (double)(t_end - b->t0) / 1e9;
    s.publish_s = (double)(t_pub_end - b->t0) / 1e9;
    s.ack_rate =
        bench_rate(atomic_load(&b->acked_measured), b->t_measure, atomic_load(&b->last_ack_ns));
    s.e2e_rate = bench_rate(s.delivered, b->t_measure, atomic_load(&b->last_deliv_ns));
    uint64_t acked = atomic_load(&b->acked_ok);
    uint64_t msgs = acked ? acked : s.delivered;
    if (s.have_proc && msgs)
        s.cpu_us_per_msg = (s.end.cpu_sec - s.before.cpu_sec) * 1e6 / (double)msgs;

    if (o->json)
        print_json(b, &s);
    else
        print_text(b, &s);
    fflush(stdout);

    uint64_t failures = atomic_load(&b->acked_fail) + atomic_load(&b->send_err);
    if (s.lost || s.unexpected || (failures && !o->allow_failures))
        exit_code = CLI_EXIT_FAIL;
    for (size_t i = 0; i < o->ncgroups; i++) {
        bench_seqmap_free(&b->groups[i].seen);
        free(b->groups[i].cons);
    }
    bench_seqmap_free(&b->acked);
    free(b->groups);
    free(b->prod);
    if (got_sigint) {
        /* Summary printed; now die of SIGINT as the shell expects, so that a calling
         * script's INT trap (bench/run) runs instead of carrying on. */
        signal(SIGINT, SIG_DFL);
        pthread_sigmask(SIG_UNBLOCK, &stop_signals, NULL);
        raise(SIGINT);
    }
    return exit_code;
}
