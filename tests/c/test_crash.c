/* Crash tests of the real broker on the file store (fsync=group): kill -9 at random moments
 * while a pipelined producer runs, a damaged tail of the newest segment, a full disk.
 * The promise checked everywhere: every message whose store ack came back with status
 * true is delivered to each persistent group afterwards (duplicates are allowed and
 * counted). KITEQ_CRASH_SEED=N replays the random kill points of a failed run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <pthread.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "client/kiteq_client.h"
#include "core/clock.h"
#include "support/broker_proc.h"
#include "support/client_util.h"
#include "support/idset.h"
#include "support/tmp_dir.h"

#define BODY_LEN 1024
#define ROUNDS 6

static uint64_t now_ms(void) { return kq_mono_us() / 1000; }

/* --- seeded PRNG (xorshift64*) ---------------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Uniform-enough in [lo, hi]. */
static unsigned rng_range(unsigned lo, unsigned hi)
{
    return lo + (unsigned)(rng_next() % (uint64_t)(hi - lo + 1));
}

/* --- waiting on conditions -------------------------------------------------------------- */

typedef bool (*cond_fn)(void *ud);

static bool wait_until(cond_fn fn, void *ud, int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        if (fn(ud))
            return true;
        if (now_ms() >= deadline)
            return false;
        usleep(2000);
    }
}

/* --- the producer: a thread keeping `window` publishes in flight ------------------------ */

struct producer {
    struct kq_client *c;
    pthread_t thread;
    bool running;
    int window;
    struct idset *published, *acked;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int inflight;
    bool stop;
    uint64_t failed;  /* acks with status false or no ack at all */
    uint64_t nospace; /* status false naming ENOSPC */
    char last_feedback[128];
};

static void on_ack(void *ud, int err, const struct kq_publish_result *r)
{
    struct producer *p = ud;
    if (err == 0 && r->status)
        idset_add(p->acked, r->message_id);
    pthread_mutex_lock(&p->mu);
    if (!(err == 0 && r->status)) {
        p->failed++;
        if (err == 0) {
            snprintf(p->last_feedback, sizeof p->last_feedback, "%s", r->feedback);
            if (strstr(r->feedback, strerror(ENOSPC)))
                p->nospace++;
        }
    }
    p->inflight--;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static void *producer_main(void *arg)
{
    struct producer *p = arg;
    static char body[BODY_LEN];
    memset(body, 'x', sizeof body);
    struct kq_message m = trade_pay_message(body, sizeof body);
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->stop && p->inflight >= p->window)
            pthread_cond_wait(&p->cv, &p->mu);
        bool stop = p->stop;
        if (!stop)
            p->inflight++;
        pthread_mutex_unlock(&p->mu);
        if (stop)
            break;
        kq_generate_message_id(m.message_id);
        m.create_time = 0;
        idset_add(p->published, m.message_id);
        int rc = kq_publish_async(p->c, &m, on_ack, p);
        if (rc < 0) { /* not sent (broker gone): the callback will not come */
            pthread_mutex_lock(&p->mu);
            p->inflight--;
            p->stop = true;
            pthread_mutex_unlock(&p->mu);
            break;
        }
    }
    return NULL;
}

static int client_open(struct kq_client **c, int port, const char *group, kq_on_message_fn fn,
                       void *ud)
{
    struct kq_client_options o = {.ack_timeout_ms = 5000, .on_message = fn, .ud = ud};
    return client_open_local(c, port, group, o);
}

static void producer_start(struct producer *p, int port, int window, struct idset *published,
                           struct idset *acked)
{
    memset(p, 0, sizeof *p);
    p->window = window;
    p->published = published;
    p->acked = acked;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    assert_int_equal(client_open(&p->c, port, TEST_PRODUCER, NULL, NULL), 0);
    assert_int_equal(pthread_create(&p->thread, NULL, producer_main, p), 0);
    p->running = true;
}

/* Stops the thread and closes the client: afterwards no ack callback runs any more. */
static void producer_stop(struct producer *p)
{
    if (!p->running)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    kq_client_close(p->c);
    p->c = NULL;
    p->running = false;
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
}

static bool producer_idle(void *ud)
{
    struct producer *p = ud;
    pthread_mutex_lock(&p->mu);
    bool idle = p->inflight == 0;
    pthread_mutex_unlock(&p->mu);
    return idle;
}

static bool producer_nospace(void *ud)
{
    struct producer *p = ud;
    pthread_mutex_lock(&p->mu);
    bool full = p->nospace > 0;
    pthread_mutex_unlock(&p->mu);
    return full;
}

/* --- consumers of both groups ----------------------------------------------------------- */

struct consumer {
    struct kq_client *c;
    struct idset *delivered;
};

static bool on_message(void *ud, const struct kq_message *m)
{
    struct consumer *k = ud;
    idset_add(k->delivered, m->message_id);
    return true;
}

struct world {
    struct broker_proc bp;
    bool broker_up;
    struct idset *published, *acked, *delivered[2];
    struct producer prod;
    struct consumer cons[2];
    char mnt[64]; /* tmpfs mount point of the disk-full test, "" when none */
    bool passed;  /* set last by a test: teardown then deletes the data (kept on failure) */
};

static struct world W;

static void consumers_open(void)
{
    static const char *groups[2] = {TEST_CONSUMER, TEST_CONSUMER_B};
    for (int g = 0; g < 2; g++) {
        W.cons[g].delivered = W.delivered[g];
        assert_int_equal(client_open(&W.cons[g].c, W.bp.port, groups[g], on_message, &W.cons[g]),
                         0);
    }
}

static void consumers_close(void)
{
    for (int g = 0; g < 2; g++)
        if (W.cons[g].c) {
            kq_client_close(W.cons[g].c);
            W.cons[g].c = NULL;
        }
}

struct missing_ctx {
    size_t missing[2];
    const struct idset *except; /* ids not expected (damaged on purpose), may be NULL */
};

static bool count_missing(const char *id, uint32_t n, void *ud)
{
    (void)n;
    struct missing_ctx *m = ud;
    if (m->except && idset_count(m->except, id))
        return true;
    for (int g = 0; g < 2; g++)
        if (!idset_count(W.delivered[g], id))
            m->missing[g]++;
    return true;
}

static bool all_delivered(void *ud)
{
    struct missing_ctx *m = ud;
    m->missing[0] = m->missing[1] = 0;
    idset_foreach(W.acked, count_missing, m);
    return m->missing[0] == 0 && m->missing[1] == 0;
}

/* Consume with both groups until every acked id (but `except`) reached each of them. */
static void expect_all_delivered(const struct idset *except, int timeout_ms)
{
    consumers_open();
    struct missing_ctx m = {.except = except};
    bool ok = wait_until(all_delivered, &m, timeout_ms);
    consumers_close();
    if (!ok)
        fail_msg("LOST acked messages: %zu of %zu never reached %s, %zu never reached %s",
                 m.missing[0], idset_size(W.acked), TEST_CONSUMER, m.missing[1], TEST_CONSUMER_B);
}

struct dup_ctx {
    uint64_t repeated; /* deliveries beyond the first of an id */
    uint64_t unacked;  /* ids delivered that were published but never acked true */
    uint64_t unknown;  /* ids nobody published: must not happen */
};

static bool count_dups(const char *id, uint32_t n, void *ud)
{
    struct dup_ctx *d = ud;
    d->repeated += n - 1;
    if (!idset_count(W.acked, id)) {
        if (idset_count(W.published, id))
            d->unacked++;
        else
            d->unknown++;
    }
    return true;
}

static void report_duplicates(const char *what)
{
    static const char *groups[2] = {TEST_CONSUMER, TEST_CONSUMER_B};
    for (int g = 0; g < 2; g++) {
        struct dup_ctx d = {0};
        idset_foreach(W.delivered[g], count_dups, &d);
        print_message("%s %s: acked=%zu delivered ids=%zu repeated deliveries=%" PRIu64
                      " published-not-acked delivered=%" PRIu64 "\n",
                      what, groups[g], idset_size(W.acked), idset_size(W.delivered[g]), d.repeated,
                      d.unacked);
        assert_int_equal(d.unknown, 0);
    }
}

/* --- setup / teardown ------------------------------------------------------------------- */

static int setup(void **state)
{
    (void)state;
    memset(&W, 0, sizeof W);
    W.published = idset_new();
    W.acked = idset_new();
    W.delivered[0] = idset_new();
    W.delivered[1] = idset_new();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    producer_stop(&W.prod);
    consumers_close();
    if (W.broker_up && W.bp.pid > 0)
        broker_stop(&W.bp);
    if (W.passed && W.bp.dir[0]) {
        char data[300];
        snprintf(data, sizeof data, "%s/data", W.bp.dir);
        tmp_dir_remove(data);
    }
    if (W.mnt[0]) {
        if (umount2(W.mnt, 0) && umount2(W.mnt, MNT_DETACH))
            print_message("umount %s: %s\n", W.mnt, strerror(errno));
        rmdir(W.mnt);
    }
    idset_free(W.published);
    idset_free(W.acked);
    idset_free(W.delivered[0]);
    idset_free(W.delivered[1]);
    memset(&W, 0, sizeof W);
    return 0;
}

static void start_broker(const char *db)
{
    char cfg[4096];
    broker_default_config(cfg, sizeof cfg, db, NULL);
    assert_int_equal(broker_start(&W.bp, cfg, NULL), 0);
    W.broker_up = true;
}

static bool acked_at_least(void *ud) { return idset_size(W.acked) >= *(size_t *)ud; }

/* --- 1. kill -9 at random moments ------------------------------------------------------- */

static void test_kill9_loses_nothing_acked(void **state)
{
    (void)state;
    uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16);
    const char *env = getenv("KITEQ_CRASH_SEED");
    if (env && *env)
        seed = strtoull(env, NULL, 0);
    print_message("crash seed: KITEQ_CRASH_SEED=%" PRIu64 "\n", seed);
    rng_state = seed ? seed : 1;

    /* Small segments: the crashes also hit segment rolls, reclaim and compaction. */
    start_broker("file://./data?fsync=group&segment_kb=256");
    for (int round = 0; round < ROUNDS; round++) {
        /* Odd rounds consume while producing: removes, reclaim and compaction are in
         * flight when the broker dies. */
        bool live = round % 2 == 1;
        int window = (int)rng_range(64, 256);
        size_t base = idset_size(W.acked);
        if (live)
            consumers_open();
        producer_start(&W.prod, W.bp.port, window, W.published, W.acked);
        char how[64];
        if (rng_range(0, 2) == 0) {
            size_t one = base + 1;
            assert_true(wait_until(acked_at_least, &one, 10000));
            unsigned delay = rng_range(20, 600);
            uint64_t until = now_ms() + delay;
            while (now_ms() < until) /* the random delay itself is the point here */
                usleep(1000);
            snprintf(how, sizeof how, "%u ms after the first ack", delay);
        } else {
            size_t target = base + rng_range(300, 3000);
            assert_true(wait_until(acked_at_least, &target, 20000));
            snprintf(how, sizeof how, "after %zu acks", target - base);
        }
        broker_kill9(&W.bp);
        producer_stop(&W.prod);
        consumers_close();
        print_message("round %d: window=%d live consumers=%d killed %s (acked this round %zu)\n",
                      round, window, live, how, idset_size(W.acked) - base);
        assert_int_equal(broker_restart(&W.bp, NULL), 0);
        expect_all_delivered(NULL, 20000);
        report_duplicates("  after restart");
    }
    W.passed = true;
}

/* --- 2. damaged tail of the newest segment ---------------------------------------------- */

/* Path of the newest seg-*.log in dir/data. */
static void newest_segment(char *out, size_t len)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/data", W.bp.dir);
    DIR *d = opendir(dir);
    assert_non_null(d);
    char best[256] = "";
    struct dirent *de;
    while ((de = readdir(d)))
        if (strncmp(de->d_name, "seg-", 4) == 0 && strcmp(de->d_name, best) > 0)
            snprintf(best, sizeof best, "%s", de->d_name); /* fixed-width hex: sorts */
    closedir(d);
    assert_true(best[0]);
    snprintf(out, len, "%s/%s", dir, best);
}

static void publish_all_acked(int n)
{
    size_t target = idset_size(W.acked) + (size_t)n;
    producer_start(&W.prod, W.bp.port, 128, W.published, W.acked);
    assert_true(wait_until(acked_at_least, &target, 20000));
    pthread_mutex_lock(&W.prod.mu);
    W.prod.stop = true;
    pthread_cond_broadcast(&W.prod.cv);
    pthread_mutex_unlock(&W.prod.mu);
    assert_true(wait_until(producer_idle, &W.prod, 10000));
    assert_int_equal(W.prod.failed, 0);
    producer_stop(&W.prod);
}

#define REC_HEADER 21 /* magic crc len type seq, docs/STORAGE.md */

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Cut the last SAVE record of `path` in its middle (and whatever follows it, including the
 * zero-filled space ahead of the log); its id goes to `cut`: that message is lost on
 * purpose. */
static void truncate_last_save(const char *path, struct idset *cut, bool zero_fill)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    uint8_t *buf = malloc((size_t)st.st_size);
    assert_non_null(buf);
    assert_int_equal(pread(fd, buf, (size_t)st.st_size, 0), st.st_size);
    size_t off = 0, last = 0, last_len = 0, after = 0;
    while (off + REC_HEADER <= (size_t)st.st_size) {
        if (le32(buf + off) == 0)
            break; /* the writer's zero-filled space ahead of the log */
        assert_int_equal(le32(buf + off), 0x3151454Bu);
        size_t total = REC_HEADER + le32(buf + off + 8);
        if (buf[off + 12] == 1) { /* SAVE */
            last = off;
            last_len = total;
            after = 0;
        } else {
            after++;
        }
        off += total;
    }
    for (size_t i = off; i < (size_t)st.st_size; i++)
        assert_int_equal(buf[i], 0);
    assert_true(last_len > 0);
    char id[33]; /* the payload starts with the zero-padded id */
    memcpy(id, buf + last + REC_HEADER, 32);
    id[32] = 0;
    idset_add(cut, id);
    print_message("cutting SAVE of %s at offset %zu + %zu of %zu (%zu records after it)\n", id,
                  last, last_len / 2, last_len, after);
    size_t cut_at = last + last_len / 2;
    if (zero_fill) { /* a torn write into the prefilled space: zeros, the size unchanged */
        memset(buf, 0, (size_t)st.st_size - cut_at);
        assert_int_equal(pwrite(fd, buf, (size_t)st.st_size - cut_at, (off_t)cut_at),
                         st.st_size - (off_t)cut_at);
    } else {
        assert_int_equal(ftruncate(fd, (off_t)cut_at), 0);
    }
    close(fd);
    free(buf);
}

static bool never_delivered(const char *id, uint32_t n, void *ud)
{
    (void)n;
    (void)ud;
    assert_int_equal(idset_count(W.delivered[0], id) + idset_count(W.delivered[1], id), 0);
    return true;
}

static void test_corrupt_tail(void **state)
{
    (void)state;
    start_broker("file://./data?fsync=group");
    /* garbage after the last record */
    publish_all_acked(400);
    broker_kill9(&W.bp);
    char seg[700];
    newest_segment(seg, sizeof seg);
    FILE *f = fopen(seg, "ab");
    assert_non_null(f);
    for (int i = 0; i < 777; i++)
        fputc((i * 131 + 7) & 0xff, f);
    fclose(f);
    assert_int_equal(broker_restart(&W.bp, NULL), 0);
    /* (the count includes the zero-filled space the writer keeps ahead of the log) */
    assert_true(broker_wait_log(&W.bp, "bytes after the last good record", 1));
    /* the store appends at the cut: more messages, then a torn last record */
    publish_all_acked(300);
    broker_kill9(&W.bp);
    newest_segment(seg, sizeof seg);
    struct idset *cut = idset_new();
    truncate_last_save(seg, cut, false);
    assert_int_equal(broker_restart(&W.bp, NULL), 0);
    assert_true(broker_wait_log(&W.bp, "torn record", 1));
    /* and a SAVE whose second half is zeros, the file size unchanged */
    publish_all_acked(200);
    broker_kill9(&W.bp);
    newest_segment(seg, sizeof seg);
    truncate_last_save(seg, cut, true);
    assert_int_equal(broker_restart(&W.bp, NULL), 0);
    assert_true(broker_wait_log(&W.bp, "bytes after the last good record", 1));
    expect_all_delivered(cut, 20000);
    report_duplicates("corrupt tail");
    idset_foreach(cut, never_delivered, NULL); /* the torn SAVE does not come back */
    idset_free(cut);
    W.passed = true;
}

/* --- 3. disk full ----------------------------------------------------------------------- */

struct try_ctx {
    struct kq_client *c;
    char feedback[128];
};

/* One synchronous publish; true when it was stored. */
static bool publish_once(void *ud)
{
    struct try_ctx *t = ud;
    static char body[BODY_LEN];
    memset(body, 'y', sizeof body);
    struct kq_message m = trade_pay_message(body, sizeof body);
    kq_generate_message_id(m.message_id);
    idset_add(W.published, m.message_id);
    struct kq_publish_result r;
    if (kq_publish(t->c, &m, &r) != 0)
        return false;
    snprintf(t->feedback, sizeof t->feedback, "%s", r.feedback);
    if (r.status)
        idset_add(W.acked, r.message_id);
    return r.status;
}

static void test_disk_full(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip(); /* cmocka prints the test as skipped */
    snprintf(W.mnt, sizeof W.mnt, "/tmp/kiteq-full-XXXXXX");
    if (!mkdtemp(W.mnt)) {
        W.mnt[0] = 0;
        fail_msg("mkdtemp: %s", strerror(errno));
    }
    if (mount("tmpfs", W.mnt, "tmpfs", 0, "size=3m,mode=0755")) {
        print_message("disk-full test skipped: mount -t tmpfs failed: %s\n", strerror(errno));
        rmdir(W.mnt);
        W.mnt[0] = 0;
        skip();
    }
    char db[256];
    snprintf(db, sizeof db, "file://%s/data?fsync=group&segment_kb=256", W.mnt);
    start_broker(db);

    producer_start(&W.prod, W.bp.port, 64, W.published, W.acked);
    if (!wait_until(producer_nospace, &W.prod, 20000))
        fail_msg("no ENOSPC after %zu acks (last feedback \"%s\")", idset_size(W.acked),
                 W.prod.last_feedback);
    producer_stop(&W.prod);
    print_message("disk full after %zu acks: \"%s\" (%" PRIu64 " failed)\n", idset_size(W.acked),
                  W.prod.last_feedback, W.prod.failed);
    assert_true(idset_size(W.acked) > 100);

    /* still serving: heartbeat answered, a fly message acked */
    int fd = raw_connect(W.bp.port);
    assert_true(fd >= 0);
    assert_int_equal(raw_handshake(fd, TEST_PRODUCER, TEST_SECRET), 1);
    assert_int_equal(raw_sync(fd), 0);
    struct raw_msg fly = {.topic = "trade", .type = "pay-succ", .commit = true, .fly = true};
    char fb[128] = "", fly_id[33];
    assert_int_equal(raw_publish(fd, 1, &fly, fly_id, fb, sizeof fb), 1);
    idset_add(W.published, fly_id); /* not stored: its delivery may or may not happen */
    close(fd);

    /* consume everything acked; the removes let the store reclaim segments */
    expect_all_delivered(NULL, 20000);

    struct try_ctx t = {0};
    assert_int_equal(client_open(&t.c, W.bp.port, TEST_PRODUCER, NULL, NULL), 0);
    /* The drained segments are deleted although the REMOVEs that emptied them cannot be
     * written yet: that frees the space, and the retried batch and new saves go through. */
    bool recovered = wait_until(publish_once, &t, 5000);
    kq_client_close(t.c);
    if (!recovered)
        fail_msg("publishing still fails after everything was consumed: \"%s\"", t.feedback);
    print_message("store recovered after consuming: \"%s\"\n", t.feedback);

    /* and keeps working */
    publish_all_acked(200);
    expect_all_delivered(NULL, 20000);
    report_duplicates("disk full");
    assert_int_equal(broker_stop(&W.bp), 0);
    W.broker_up = false;
    W.passed = true;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_kill9_loses_nothing_acked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disk_full, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
