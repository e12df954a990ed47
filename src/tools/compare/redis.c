/* kiteq-bench-redis: kiteq-bench's scenarios against Redis Streams.
 *
 * One stream; producers XADD (inflight > 1 pipelines up to that many XADDs on the connection,
 * replies come back in order); every --consumer-groups name is a consumer group on the
 * stream (each sees every message, like KiteQ's fan-out), read with XREADGROUP ... BLOCK and
 * acknowledged with one XACK per batch read, sent in the same write as the next XREADGROUP.
 * With appendonly yes / appendfsync always, Redis writes and fsyncs its AOF before it sends
 * the replies of an event-loop turn, so an XADD reply means the entry is on disk. */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "tools/compare/cmp.h"

#define STREAM "kiteq-bench"

static redisContext *open_conn(struct cmp_bench *b)
{
    redisContext *c = redisConnect(b->o.host, b->o.port);
    if (!c || c->err) {
        cmp_fail(b, "cannot connect to %s: %s", b->o.server, c ? c->errstr : "out of memory");
        if (c)
            redisFree(c);
        return NULL;
    }
    return c;
}

/* Runs one command; false (after cmp_fail) on a connection or server error. */
static bool command_ok(struct cmp_bench *b, redisContext *c, const char *what, redisReply *r)
{
    bool ok = r && r->type != REDIS_REPLY_ERROR;
    if (!ok)
        cmp_fail(b, "%s: %s", what, r ? r->str : c->errstr);
    freeReplyObject(r);
    return ok;
}

/* A fresh stream with one consumer group per --consumer-groups name. */
static int setup(struct cmp_bench *b)
{
    redisContext *c = open_conn(b);
    if (!c)
        return -1;
    bool ok = command_ok(b, c, "DEL", redisCommand(c, "DEL %s", STREAM));
    for (size_t i = 0; ok && i < b->o.ncgroups; i++)
        ok = command_ok(b, c, "XGROUP CREATE",
                        redisCommand(c, "XGROUP CREATE %s %s $ MKSTREAM", STREAM, b->o.cgroups[i]));
    redisFree(c);
    return ok ? 0 : -1;
}

struct slot {
    uint64_t seq, t_ns;
};

static void *producer(void *arg)
{
    struct cmp_producer *p = arg;
    struct cmp_bench *b = p->b;
    size_t window = (size_t)b->o.inflight, head = 0, n = 0;
    redisContext *c = open_conn(b);
    struct slot *ring = calloc(window, sizeof *ring);
    bool done = !c || !ring;
    while ((!done || n) && !atomic_load(&b->failed)) {
        int64_t wait = -1;
        while (!done && n < window) {
            uint64_t seq, t;
            if (!cmp_next_body(p, &seq, &t, &wait, &done))
                break;
            redisAppendCommand(c, "XADD %s * d %b", STREAM, p->body, (size_t)b->o.size);
            ring[(head + n++) % window] = (struct slot){seq, t};
            cmp_sent(p);
        }
        int wdone = 0;
        while (!wdone)
            if (redisBufferWrite(c, &wdone) != REDIS_OK)
                goto io_error;
        if (!n) {
            if (!done)
                cmp_sleep_ns((uint64_t)wait);
            continue;
        }
        /* wait for replies, or until the next scheduled send */
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        struct timespec ts = {0, 100000000};
        if (wait >= 0 && n < window)
            ts = (struct timespec){wait / 1000000000, wait % 1000000000};
        if (ppoll(&pfd, 1, &ts, NULL) <= 0)
            continue;
        if (redisBufferRead(c) != REDIS_OK)
            goto io_error;
        void *rp;
        while (n && redisReaderGetReply(c->reader, &rp) == REDIS_OK && rp) {
            redisReply *r = rp;
            struct slot *s = &ring[head];
            cmp_acked(p, s->seq, s->t_ns, r->type == REDIS_REPLY_STRING);
            if (r->type == REDIS_REPLY_ERROR && !b->o.quiet)
                fprintf(stderr, "kiteq-bench-redis: XADD: %s\n", r->str);
            freeReplyObject(r);
            head = (head + 1) % window;
            n--;
        }
    }
    goto out;
io_error:
    cmp_fail(b, "producer: %s", c->errstr);
out:
    free(ring);
    if (c)
        redisFree(c);
    return NULL;
}

/* Feeds every entry of an XREADGROUP reply to cmp_delivered and collects their ids into an
 * XACK command (argv[3..]). Returns the number of ids. */
static size_t take_entries(struct cmp_consumer *cs, redisReply *r, const char ***argv,
                           size_t **lens, size_t *cap)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 || r->element[0]->elements < 2)
        return 0; /* nil: BLOCK timed out */
    redisReply *entries = r->element[0]->element[1];
    size_t n = 0;
    if (entries->elements + 3 > *cap) {
        *cap = entries->elements + 3;
        *argv = realloc(*argv, *cap * sizeof **argv);
        *lens = realloc(*lens, *cap * sizeof **lens);
    }
    for (size_t i = 0; i < entries->elements; i++) {
        redisReply *e = entries->element[i], *fields = e->element[1];
        if (fields->type == REDIS_REPLY_ARRAY && fields->elements >= 2)
            cmp_delivered(cs, fields->element[1]->str, fields->element[1]->len);
        (*argv)[3 + n] = e->element[0]->str;
        (*lens)[3 + n] = e->element[0]->len;
        n++;
    }
    return n;
}

static void *consumer(void *arg)
{
    struct cmp_consumer *cs = arg;
    struct cmp_bench *b = cs->b;
    redisContext *c = open_conn(b);
    if (!c)
        return NULL;
    char name[32];
    snprintf(name, sizeof name, "c%d", cs->idx);
    size_t cap = 0, nack = 0;
    const char **argv = NULL;
    size_t *lens = NULL;
    redisReply *prev = NULL; /* the entries in argv point into it until XACK is sent */
    cmp_ready(cs);
    while (!atomic_load(&b->stop_cons)) {
        if (nack) {
            argv[0] = "XACK", lens[0] = 4;
            argv[1] = STREAM, lens[1] = strlen(STREAM);
            argv[2] = cs->g->name, lens[2] = strlen(cs->g->name);
            redisAppendCommandArgv(c, (int)(nack + 3), argv, lens);
        }
        redisAppendCommand(c, "XREADGROUP GROUP %s %s COUNT %ld BLOCK 200 STREAMS %s >",
                           cs->g->name, name, b->o.prefetch, STREAM);
        void *rp = NULL;
        if (nack && (redisGetReply(c, &rp) != REDIS_OK || !command_ok(b, c, "XACK", rp)))
            break;
        freeReplyObject(prev);
        prev = NULL;
        if (redisGetReply(c, &rp) != REDIS_OK || ((redisReply *)rp)->type == REDIS_REPLY_ERROR) {
            cmp_fail(b, "XREADGROUP: %s", rp ? ((redisReply *)rp)->str : c->errstr);
            freeReplyObject(rp);
            break;
        }
        prev = rp;
        nack = take_entries(cs, prev, &argv, &lens, &cap);
    }
    freeReplyObject(prev);
    free(argv);
    free(lens);
    redisFree(c);
    return NULL;
}

int main(int argc, char **argv)
{
    static const struct cmp_driver d = {
        .prog = "kiteq-bench-redis",
        .about =
            "kiteq-bench's scenarios against Redis Streams: XADD (pipelined up to --inflight),\n"
            "one consumer group per --consumer-groups name, XREADGROUP + XACK per batch.",
        .default_port = 6379,
        .setup = setup,
        .producer = producer,
        .consumer = consumer,
    };
    return cmp_main(argc, argv, &d);
}
