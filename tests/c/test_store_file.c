/* File store: durability, recovery, group commit, corruption, reclaim, compaction,
 * disk full and the DLQ. Every test works in its own mkdtemp directory. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/clock.h"
#include "core/log.h"
#include "store/file/file_store.h"
#include "store/file/fs_internal.h"
#include "store/file/record.h"
#include "store/store.h"
#include "support/dlq_sync.h"
#include "support/test_files.h"
#include "support/tmp_dir.h"

/* ---- helpers ------------------------------------------------------------------------------ */

struct fx {
    uv_loop_t loop;
    char dir[256];
    char uri[512];
    struct kq_store *s;
    int done, failed, last_status;
};

static void on_tick(uv_timer_t *t) { (void)t; }

/* Run the loop until *counter >= target or the deadline passes. */
static bool wait_for(struct fx *f, int *counter, int target, int ms)
{
    uv_timer_t tick;
    uv_timer_init(&f->loop, &tick);
    uv_timer_start(&tick, on_tick, 5, 5);
    uint64_t deadline = kq_mono_us() + (uint64_t)ms * 1000;
    while (*counter < target && kq_mono_us() < deadline)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    return *counter >= target;
}

static void on_done(void *ud, int status)
{
    struct fx *f = ud;
    f->done++;
    f->last_status = status;
    if (status)
        f->failed++;
}

static void store_open(struct fx *f)
{
    char err[256];
    int rc = kq_store_open(&f->loop, f->uri, &f->s, err, sizeof err);
    if (rc)
        fail_msg("open %s: %s", f->uri, err);
}

static void store_close(struct fx *f)
{
    f->s->ops->close(f->s);
    f->s = NULL;
    uv_run(&f->loop, UV_RUN_NOWAIT); /* let the store's handles close */
}

static struct fx *fx_new(const char *params)
{
    struct fx *f = calloc(1, sizeof *f);
    uv_loop_init(&f->loop);
    assert_int_equal(tmp_dir_make(f->dir, sizeof f->dir, "kq-fs-"), 0);
    snprintf(f->uri, sizeof f->uri, "file://%s%s%s", f->dir, params ? "?" : "",
             params ? params : "");
    store_open(f);
    return f;
}

static void fx_free(struct fx *f)
{
    if (f->s)
        store_close(f);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    tmp_dir_remove(f->dir);
    free(f);
}

static int count_segments(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        n += strncmp(de->d_name, "seg-", 4) == 0;
    closedir(d);
    return n;
}

/* Path of the newest (or oldest) segment. */
static void segment_path(const char *dir, bool newest, char *out, size_t n)
{
    DIR *d = opendir(dir);
    char best[256] = "";
    struct dirent *de;
    while ((de = readdir(d)))
        if (strncmp(de->d_name, "seg-", 4) == 0 &&
            (!best[0] || (strcmp(de->d_name, best) > 0) == newest))
            snprintf(best, sizeof best, "%s", de->d_name);
    closedir(d);
    snprintf(out, n, "%s/%s", dir, best);
}

static void make_id(char *id, int i) { snprintf(id, KQ_ID_LEN + 1, "%032x", i); }

/* Deterministic message i: body of body_len bytes derived from i. */
struct msgbuf {
    struct kq_stored_msg m;
    uint8_t header[16];
    uint8_t body[8192];
};

static void make_msg(struct msgbuf *b, int i, uint32_t body_len)
{
    memset(&b->m, 0, sizeof b->m);
    make_id(b->m.id, i);
    b->m.cmd = i % 2 ? 0x11 : 0x12;
    b->m.topic = i % 3 ? "trade" : "user";
    b->m.message_type = "pay-succ";
    b->m.publish_group = "g-producer";
    b->m.commit = i % 5 != 0;
    b->m.publish_time = 1700000000 + i;
    b->m.expired_time = 1800000000 + i;
    b->m.deliver_limit = 100;
    for (int k = 0; k < 16; k++)
        b->header[k] = (uint8_t)(i + k);
    for (uint32_t k = 0; k < body_len; k++)
        b->body[k] = (uint8_t)(i * 7 + k);
    b->m.header = b->header;
    b->m.header_len = 16;
    b->m.body = b->body;
    b->m.body_len = body_len;
}

static uint32_t body_len_of(int i) { return 10 + (uint32_t)(i * 37) % 900; }

static void check_msg(const struct kq_stored_msg *m, int i)
{
    struct msgbuf want;
    make_msg(&want, i, body_len_of(i));
    assert_string_equal(m->id, want.m.id);
    assert_int_equal(m->cmd, want.m.cmd);
    assert_string_equal(m->topic, want.m.topic);
    assert_string_equal(m->message_type, "pay-succ");
    assert_string_equal(m->publish_group, "g-producer");
    assert_int_equal(m->publish_time, want.m.publish_time);
    assert_int_equal(m->expired_time, want.m.expired_time);
    assert_int_equal(m->deliver_limit, 100);
    assert_int_equal(m->header_len, 16);
    assert_memory_equal(m->header, want.header, 16);
    assert_int_equal(m->body_len, want.m.body_len);
    assert_memory_equal(m->body, want.body, m->body_len);
}

static int save_range(struct fx *f, int from, int to)
{
    struct msgbuf b;
    int before = f->done;
    for (int i = from; i < to; i++) {
        make_msg(&b, i, body_len_of(i));
        assert_int_equal(f->s->ops->save(f->s, &b.m, on_done, f), 0);
    }
    assert_true(wait_for(f, &f->done, before + (to - from), 10000));
    return f->failed;
}

/* Saves in small groups, one batch each: spreads messages over small segments. */
static int save_spread(struct fx *f, int from, int to)
{
    for (int i = from; i < to; i += 5)
        save_range(f, i, i + 5 < to ? i + 5 : to);
    return f->failed;
}

/* Recovered messages, in order. */
struct rec_list {
    int n;
    int ids[20000];
    bool commit[20000];
    int attempts[20000];
    int n_done[20000];
    char first_done[20000][16];
};

static void on_recover(void *ud, const struct kq_stored_msg *m, const struct kq_delivery_state *st)
{
    struct rec_list *l = ud;
    int i = (int)strtol(m->id, NULL, 16);
    check_msg(m, i);
    l->ids[l->n] = i;
    l->commit[l->n] = m->commit;
    l->attempts[l->n] = st ? st->attempts : -1;
    l->n_done[l->n] = st ? (int)st->n_done : -1;
    if (st && st->n_done)
        snprintf(l->first_done[l->n], 16, "%s", st->groups_done[0]);
    if (st)
        assert_string_equal(st->id, m->id);
    l->n++;
}

static struct rec_list *recover_all(struct fx *f)
{
    struct rec_list *l = calloc(1, sizeof *l);
    assert_int_equal(f->s->ops->recover(f->s, on_recover, l), 0);
    return l;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_save_reopen_recover(void **state)
{
    (void)state;
    struct fx *f = fx_new("fsync=group");
    const int N = 1000;
    assert_int_equal(save_range(f, 0, N), 0);
    char id[KQ_ID_LEN + 1];
    /* commit the uncommitted ones with id % 10 == 0, update 1..., remove 2..., dead 3... */
    int commits = 0;
    for (int i = 0; i < N; i += 10) {
        make_id(id, i);
        assert_int_equal(f->s->ops->commit(f->s, id, on_done, f), 0);
        commits++;
    }
    const char *groups[] = {"g-a", "g-b"};
    for (int i = 1; i < N; i += 10) {
        struct kq_delivery_state st = {.attempts = i,
                                       .next_attempt_ms = 5,
                                       .tx_checks = 1,
                                       .groups_done = groups,
                                       .n_done = 2,
                                       .groups_failed = groups + 1,
                                       .n_failed = 1};
        make_id(st.id, i);
        assert_int_equal(f->s->ops->update(f->s, &st), 0);
    }
    for (int i = 2; i < N; i += 10) {
        make_id(id, i);
        assert_int_equal(f->s->ops->remove(f->s, id), 0);
    }
    for (int i = 3; i < N; i += 10) {
        struct kq_stored_msg m = {0};
        make_id(m.id, i);
        m.topic = "trade";
        assert_int_equal(f->s->ops->dead_letter(f->s, &m, "too many attempts", NULL), 0);
    }
    int base = f->done;
    assert_true(wait_for(f, &f->done, base + commits, 5000));
    assert_int_equal(f->failed, 0);
    /* duplicate and unknown ids */
    struct msgbuf b;
    make_msg(&b, 5, 10);
    assert_int_equal(f->s->ops->save(f->s, &b.m, on_done, f), -EEXIST);
    make_id(id, 2);
    assert_int_equal(f->s->ops->remove(f->s, id), -ENOENT);
    store_close(f);

    store_open(f);
    struct kq_file_store_stats fs;
    assert_int_equal(kq_file_store_stats(f->s, &fs), 0);
    assert_int_equal(fs.pending, N - 2 * (N / 10));
    assert_int_equal(fs.dead_letters, N / 10);
    struct rec_list *l = recover_all(f);
    assert_int_equal(l->n, N - 2 * (N / 10));
    int prev = -1;
    for (int k = 0; k < l->n; k++) {
        int i = l->ids[k];
        assert_true(i > prev); /* publish order */
        prev = i;
        assert_true(i % 10 != 2 && i % 10 != 3);
        assert_int_equal(l->commit[k], i % 5 != 0 || i % 10 == 0);
        if (i % 10 == 1) {
            assert_int_equal(l->attempts[k], i);
            assert_int_equal(l->n_done[k], 2);
            assert_string_equal(l->first_done[k], "g-a");
        } else {
            assert_int_equal(l->attempts[k], -1);
        }
    }
    free(l);
    fx_free(f);
}

struct cb_check {
    struct fx *f;
    const char *body_marker;
    bool seen_in_file;
    uint64_t fsyncs_at_cb;
};

static bool file_contains(const char *path, const void *needle, size_t n)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return false;
    static uint8_t buf[1 << 20];
    size_t got = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    return memmem(buf, got, needle, n) != NULL;
}

static void on_done_check(void *ud, int status)
{
    struct cb_check *c = ud;
    assert_int_equal(status, 0);
    char path[512];
    segment_path(c->f->dir, true, path, sizeof path);
    c->seen_in_file = file_contains(path, c->body_marker, strlen(c->body_marker));
    struct kq_file_store_stats st;
    kq_file_store_stats(c->f->s, &st);
    c->fsyncs_at_cb = st.fsyncs;
    c->f->done++;
}

/* A committed message whose body is a marker string, to be found in the log file. */
static struct kq_stored_msg marker_msg(int id, const char *marker)
{
    struct kq_stored_msg m = {.cmd = 0x12,
                              .topic = "t",
                              .message_type = "x",
                              .publish_group = "g",
                              .commit = true,
                              .deliver_limit = 1};
    make_id(m.id, id);
    m.body = (const uint8_t *)marker;
    m.body_len = (uint32_t)strlen(marker);
    return m;
}

static void test_callback_after_write(void **state)
{
    (void)state;
    struct fx *f = fx_new(NULL);
    struct cb_check c = {.f = f, .body_marker = "the-body-marker-0123456789"};
    struct kq_stored_msg m = marker_msg(42, c.body_marker);
    assert_int_equal(f->s->ops->save(f->s, &m, on_done_check, &c), 0);
    assert_int_equal(f->done, 0); /* never synchronously */
    assert_true(wait_for(f, &f->done, 1, 5000));
    assert_true(c.seen_in_file);
    assert_true(c.fsyncs_at_cb >= 1);
    fx_free(f);
}

static void test_group_commit(void **state)
{
    (void)state;
    struct fx *f = fx_new("fsync=group");
    const int N = 5000;
    uint64_t t0 = kq_mono_us();
    assert_int_equal(save_range(f, 0, N), 0);
    uint64_t us = kq_mono_us() - t0;
    struct kq_file_store_stats st;
    kq_file_store_stats(f->s, &st);
    print_message("group commit: %d saves, %llu batches, %llu fsyncs, %.0f saves/s\n", N,
                  (unsigned long long)st.batches, (unsigned long long)st.fsyncs,
                  N * 1e6 / (double)us);
    assert_true(st.fsyncs <= 10);
    assert_true(st.batches <= 5);
    /* Saves trickling in while a batch is in flight share the next fsync. */
    struct msgbuf b;
    int before = f->done;
    for (int round = 0; round < 50; round++) {
        for (int k = 0; k < 20; k++) {
            make_msg(&b, N + round * 20 + k, 100);
            assert_int_equal(f->s->ops->save(f->s, &b.m, on_done, f), 0);
        }
        uv_run(&f->loop, UV_RUN_NOWAIT);
    }
    assert_true(wait_for(f, &f->done, before + 1000, 10000));
    kq_file_store_stats(f->s, &st);
    print_message("trickle: 1000 saves over 50 iterations, total fsyncs %llu\n",
                  (unsigned long long)st.fsyncs);
    assert_true(st.fsyncs < 10 + 50);
    fx_free(f);
}

/* A batch sealed while the writer is busy with the one before is written as soon as the
 * disk is free, by the writer alone: the loop does not have to take the first batch back
 * first (before, it stayed in the open batch until the loop had run the first callbacks). */
static void test_group_next_without_loop(void **state)
{
    (void)state;
    struct fx *f = fx_new("fsync=group");
    const char *markers[2] = {"first-batch-marker-4711", "second-batch-marker-4712"};
    for (int i = 0; i < 2; i++) {
        struct kq_stored_msg m = marker_msg(100 + i, markers[i]);
        assert_int_equal(f->s->ops->save(f->s, &m, on_done, f), 0);
        /* one iteration: seals this save's batch and hands it to the writer (the first
         * one creates the segment: a directory fsync and an fdatasync, still running) */
        uv_run(&f->loop, UV_RUN_NOWAIT);
    }
    char path[512];
    segment_path(f->dir, true, path, sizeof path);
    uint64_t deadline = kq_mono_us() + 5000000;
    bool written = false;
    while (!(written = file_contains(path, markers[1], strlen(markers[1]))) &&
           kq_mono_us() < deadline)
        usleep(1000); /* the loop does not run here on purpose */
    assert_true(written);
    assert_true(f->done < 2); /* the second callback waits for the loop */
    assert_true(wait_for(f, &f->done, 2, 5000));
    assert_int_equal(f->failed, 0);
    fx_free(f);
}

/* Closing with batches still with the writer (or written and not taken back: the loop does
 * not run between the saves and the close) and one still open takes every one back through
 * the done mailbox before close returns: each callback has run, successfully, and a reopened
 * store recovers every message. */
static void test_close_takes_back_batches_in_flight(void **state)
{
    (void)state;
    struct fx *f = fx_new("fsync=group");
    struct msgbuf b;
    for (int i = 0; i < 45; i++) {
        make_msg(&b, i, body_len_of(i));
        assert_int_equal(f->s->ops->save(f->s, &b.m, on_done, f), 0);
        if (i % 10 == 9 && i < 40)
            uv_run(&f->loop, UV_RUN_NOWAIT); /* seals a batch: four go to the writer */
    }
    assert_true(f->done <= 40); /* the last five are in the open batch */
    store_close(f);
    assert_int_equal(f->done, 45);
    assert_int_equal(f->failed, 0);
    store_open(f);
    struct rec_list *l = recover_all(f);
    assert_int_equal(l->n, 45);
    free(l);
    fx_free(f);
}

enum damage { GARBAGE, TRUNCATE, FLIP };

/* Whether a line of the log file has the level and every one of the words. */
static bool log_has(const char *logpath, const char *level, const char *a, const char *b)
{
    FILE *fp = fopen(logpath, "r");
    char line[2048];
    bool found = false;
    while (fp && fgets(line, sizeof line, fp))
        found |= strstr(line, level) && strstr(line, a) && (!b || strstr(line, b));
    if (fp)
        fclose(fp);
    return found;
}

/* The one quarantine copy in DIR/quarantine: it must be of the file `name`; its range goes
 * to from/to and its size is returned. */
static off_t only_quarantined(const char *dir, const char *name, off_t *from, off_t *to)
{
    char q[700];
    snprintf(q, sizeof q, "%s/quarantine", dir);
    DIR *d = opendir(q);
    assert_non_null(d);
    struct dirent *de;
    int n = 0;
    char found[300] = "";
    while ((de = readdir(d)))
        if (de->d_name[0] != '.') {
            n++;
            snprintf(found, sizeof found, "%s", de->d_name);
        }
    closedir(d);
    assert_int_equal(n, 1);
    size_t len = strlen(name);
    long long a, b;
    assert_memory_equal(found, name, len);
    assert_int_equal(sscanf(found + len, ".%lld-%lld.bad", &a, &b), 2);
    *from = a;
    *to = b;
    struct stat st;
    snprintf(q + strlen(q), sizeof q - strlen(q), "/%s", found);
    assert_int_equal(stat(q, &st), 0);
    assert_int_equal(st.st_size, b - a);
    return st.st_size;
}

/* The end of the records: the writer prefills the segment with zeros past it. */
static off_t log_end(int fd)
{
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    uint8_t *buf = malloc((size_t)st.st_size + 1);
    assert_int_equal(pread(fd, buf, (size_t)st.st_size, 0), st.st_size);
    off_t end = st.st_size;
    while (end > 0 && buf[end - 1] == 0)
        end--;
    free(buf);
    return end;
}

static void corrupt_tail(enum damage how)
{
    struct fx *f = fx_new(NULL);
    assert_int_equal(save_range(f, 0, 10), 0);
    store_close(f);
    char path[512];
    segment_path(f->dir, true, path, sizeof path);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    st.st_size = log_end(fd);
    if (how == GARBAGE) {
        char junk[100];
        memset(junk, 0xab, sizeof junk);
        assert_int_equal(pwrite(fd, junk, sizeof junk, st.st_size), (ssize_t)sizeof junk);
    } else if (how == TRUNCATE) {
        assert_int_equal(ftruncate(fd, st.st_size - 7), 0);
    } else {
        uint8_t byte;
        assert_int_equal(pread(fd, &byte, 1, st.st_size - 3), 1);
        byte ^= 0x40;
        assert_int_equal(pwrite(fd, &byte, 1, st.st_size - 3), 1);
    }
    close(fd);
    char logpath[300];
    snprintf(logpath, sizeof logpath, "%s.log", f->dir);
    kq_log_open(logpath);
    store_open(f);
    kq_log_open(NULL);
    struct kq_file_store_stats fs;
    kq_file_store_stats(f->s, &fs);
    assert_true(fs.truncated_bytes > 0);
    int want = how == GARBAGE ? 10 : 9;
    struct rec_list *l = recover_all(f);
    assert_int_equal(l->n, want);
    for (int k = 0; k < want; k++)
        assert_int_equal(l->ids[k], k);
    free(l);
    /* the warning was logged, and the cut bytes (all but the zeros) were kept aside */
    assert_true(log_has(logpath, " warn ", "truncating", "copy kept in"));
    unlink(logpath);
    off_t from, to;
    assert_int_equal(fs.damaged_ranges, 1);
    assert_int_equal(only_quarantined(f->dir, strrchr(path, '/') + 1, &from, &to),
                     fs.damaged_bytes);
    if (how == GARBAGE) {
        assert_int_equal(from, st.st_size);
        assert_int_equal(to, st.st_size + 100);
    }
    /* appends after the cut are read back */
    assert_int_equal(save_range(f, 100, 105), 0);
    store_close(f);
    store_open(f);
    l = recover_all(f);
    assert_int_equal(l->n, want + 5);
    assert_int_equal(l->ids[want], 100);
    free(l);
    fx_free(f);
}

static void test_corrupt_garbage(void **state)
{
    (void)state;
    corrupt_tail(GARBAGE);
}
static void test_corrupt_truncated(void **state)
{
    (void)state;
    corrupt_tail(TRUNCATE);
}
static void test_corrupt_flipped(void **state)
{
    (void)state;
    corrupt_tail(FLIP);
}

/* ---- damage in the middle of the log ------------------------------------------------------ */

/* Offsets of the records of an intact log file (following the length fields): offs[k] for
 * k < n, offs[n] = the end of the last one; types[k] if types. Returns n. */
static int record_offsets(const char *path, off_t *offs, uint8_t *types, int max)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    off_t size = lseek(fd, 0, SEEK_END);
    uint8_t *buf = malloc((size_t)size);
    assert_int_equal(pread(fd, buf, (size_t)size, 0), size);
    close(fd);
    off_t pos = 0;
    int n = 0;
    uint32_t magic, len;
    while (n < max && pos + FS_HDR <= size && (memcpy(&magic, buf + pos, 4), magic == FS_MAGIC)) {
        memcpy(&len, buf + pos + 8, 4);
        if (types)
            types[n] = buf[pos + 12];
        offs[n++] = pos;
        pos += FS_HDR + len;
    }
    offs[n] = pos;
    free(buf);
    return n;
}

static void xor_bytes(const char *path, off_t at, int n, uint8_t mask)
{
    int fd = open(path, O_RDWR);
    uint8_t b[16];
    assert_true(n <= 16 && pread(fd, b, (size_t)n, at) == n);
    for (int k = 0; k < n; k++)
        b[k] ^= mask;
    assert_int_equal(pwrite(fd, b, (size_t)n, at), n);
    close(fd);
}

static void insert_bytes(const char *path, off_t at, const uint8_t *p, size_t n)
{
    int fd = open(path, O_RDWR);
    off_t size = lseek(fd, 0, SEEK_END);
    uint8_t *rest = malloc((size_t)(size - at));
    assert_int_equal(pread(fd, rest, (size_t)(size - at), at), size - at);
    assert_int_equal(pwrite(fd, p, n, at), (ssize_t)n);
    assert_int_equal(pwrite(fd, rest, (size_t)(size - at), at + (off_t)n), size - at);
    free(rest);
    close(fd);
}

/* Open with the log going to DIR.log (returned in logpath) instead of stderr. */
static void store_open_logged(struct fx *f, char *logpath, size_t n)
{
    snprintf(logpath, n, "%s.log", f->dir);
    kq_log_open(logpath);
    store_open(f);
    kq_log_open(NULL);
}

enum mid_damage {
    FLIP_BODY,   /* 4 bytes inside a body: the record's length is still right */
    FLIP_LENGTH, /* 4 bytes of the length field: the next record must be searched for */
    ZEROED,      /* 3000 zero bytes over several records */
    INSERTED,    /* 777 bytes of garbage between two records, one of them record-like */
};

/* 1000 records in one segment (followed by a newer one with 10 more when `older`); damage
 * in the middle costs the damaged records only, the range is copied aside and logged, and
 * the log keeps working. */
static void damage_middle(bool older, enum mid_damage how)
{
    struct fx *f = fx_new(older ? "segment_kb=256" : NULL);
    assert_int_equal(save_range(f, 0, 1000), 0);
    int total = 1000;
    if (older) {
        assert_int_equal(save_range(f, 1000, 1010), 0); /* rolls to a new segment */
        total = 1010;
        assert_int_equal(count_segments(f->dir), 2);
    }
    store_close(f);
    char path[512];
    segment_path(f->dir, !older, path, sizeof path);
    static off_t offs[1001];
    assert_int_equal(record_offsets(path, offs, NULL, 1000), 1000);
    off_t from = offs[500], to = offs[501];
    int lost_from = 500, lost_to = 501; /* ids [lost_from, lost_to) are lost */
    uint8_t junk[777];
    if (how == FLIP_BODY) {
        xor_bytes(path, (offs[500] + offs[501]) / 2, 4, 0xff);
    } else if (how == FLIP_LENGTH) {
        xor_bytes(path, offs[500] + 8, 4, 0x01); /* ~16 MiB: runs past the end of the file */
    } else if (how == ZEROED) {
        static const uint8_t zeros[3000];
        int fd = open(path, O_RDWR);
        assert_int_equal(pwrite(fd, zeros, sizeof zeros, offs[400] + 10), (ssize_t)sizeof zeros);
        close(fd);
        from = offs[400];
        for (lost_from = 400, lost_to = 401; offs[lost_to] < offs[400] + 10 + 3000; lost_to++)
            ;
        to = offs[lost_to];
    } else {
        for (size_t k = 0; k < sizeof junk; k++)
            junk[k] = (uint8_t)(k * 131 + 7);
        /* a record-like header (magic, small length) whose CRC cannot match */
        uint32_t magic = FS_MAGIC, len = 40;
        memcpy(junk + 100, &magic, 4);
        memcpy(junk + 108, &len, 4);
        junk[112] = FS_REMOVE;
        insert_bytes(path, offs[600], junk, sizeof junk);
        from = offs[600];
        to = from + (off_t)sizeof junk;
        lost_from = lost_to = 0;
    }
    char logpath[300];
    store_open_logged(f, logpath, sizeof logpath);
    struct rec_list *l = recover_all(f);
    int lost = lost_to - lost_from;
    assert_int_equal(l->n, total - lost);
    for (int k = 0, i = 0; k < l->n; k++, i++) {
        if (i == lost_from)
            i = lost_to;
        assert_int_equal(l->ids[k], i);
    }
    free(l);
    struct kq_file_store_stats fs;
    kq_file_store_stats(f->s, &fs);
    assert_int_equal(fs.truncated_bytes, 0);
    assert_int_equal(fs.damaged_ranges, 1);
    assert_int_equal(fs.damaged_bytes, to - from);
    /* the damaged range is kept aside and logged with the segment's name and offsets */
    const char *name = strrchr(path, '/') + 1;
    off_t qfrom, qto;
    only_quarantined(f->dir, name, &qfrom, &qto);
    assert_int_equal(qfrom, from);
    assert_int_equal(qto, to);
    if (how == INSERTED) {
        char q[700];
        snprintf(q, sizeof q, "%s/quarantine/%s.%lld-%lld.bad", f->dir, name, (long long)from,
                 (long long)to);
        assert_true(file_contains(q, junk, sizeof junk));
    }
    char offsets[64];
    snprintf(offsets, sizeof offsets, "offsets %lld-%lld", (long long)from, (long long)to);
    assert_true(log_has(logpath, " error ", name, offsets));
    unlink(logpath);
    /* appends go on after the last record and everything is read back again */
    assert_int_equal(save_range(f, 2000, 2005), 0);
    store_close(f);
    kq_log_set_level(KQ_LOG_ERROR + 1); /* the same damage is reported again: not here */
    store_open(f);
    kq_log_set_level(KQ_LOG_INFO);
    l = recover_all(f);
    assert_int_equal(l->n, total - lost + 5);
    assert_int_equal(l->ids[l->n - 1], 2004);
    free(l);
    fx_free(f);
}

/* The eight damage_middle cases, one test each: older or newest segment x kind of damage. */
struct mid_case {
    bool older;
    enum mid_damage how;
};

static void test_damage_middle(void **state)
{
    const struct mid_case *c = *state;
    damage_middle(c->older, c->how);
}

#define DAMAGE_MIDDLE_TEST(name, older, how)                                                       \
    {                                                                                              \
        "test_damage_" name, test_damage_middle, NULL, NULL, &(struct mid_case) { older, how }     \
    }

/* Message 100's body ends with a valid record: a REMOVE of message 50 with sequence number
 * fake_seq. Normally it is skipped as part of its SAVE; when that SAVE is damaged, the fake
 * must not be taken for a record. Body damage: the intact length leads past it. Header
 * damage (the length cannot be trusted): the search meets the fake first, and only the
 * record after it, with a lower seq, shows it is false. */
static void fake_record_in_body(uint64_t fake_seq, bool header_damage)
{
    struct fx *f = fx_new(NULL);
    assert_int_equal(save_range(f, 0, 100), 0); /* seqs 1..100 */
    struct kq_buf fake = {0};
    size_t start;
    char victim[KQ_ID_LEN + 1];
    make_id(victim, 50);
    assert_int_equal(fs_rec_begin(&fake, FS_REMOVE, fake_seq, &start), 0);
    assert_int_equal(fs_put_id(&fake, victim), 0);
    assert_int_equal(fs_rec_end(&fake, start), 0);
    struct msgbuf b;
    make_msg(&b, 100, 200);
    memcpy(b.body + 200 - fake.len, fake.data, fake.len); /* ends where its SAVE ends */
    assert_int_equal(f->s->ops->save(f->s, &b.m, on_done, f), 0);
    assert_true(wait_for(f, &f->done, 101, 5000));
    kq_buf_free(&fake);
    assert_int_equal(save_range(f, 101, 110), 0);
    store_close(f);
    char path[512];
    segment_path(f->dir, true, path, sizeof path);
    static off_t offs[111];
    assert_int_equal(record_offsets(path, offs, NULL, 110), 110);
    xor_bytes(path, header_damage ? offs[100] : offs[100] + 100, 4, 0xff);
    kq_log_set_level(KQ_LOG_ERROR + 1);
    store_open(f);
    kq_log_set_level(KQ_LOG_INFO);
    struct rec_list *l = recover_all(f);
    assert_int_equal(l->n, 109);
    for (int k = 0; k < l->n; k++)
        assert_int_equal(l->ids[k], k < 100 ? k : k + 1); /* 50 included */
    free(l);
    fx_free(f);
}

/* 101 is the seq of message 100's own SAVE: the only one that fits between its neighbours. */
static void test_damage_fake_record_body(void **s)
{
    (void)s;
    fake_record_in_body(101, false);
}
static void test_damage_fake_record_header(void **s)
{
    (void)s;
    fake_record_in_body(1ull << 40, true);
}

/* Message 5 (committed, with a delivery state) is removed and published again under the
 * same id; the REMOVE is damaged. The new message must not inherit the old one's commit
 * flag and state (its groups would be skipped as already done). */
static void test_damage_lost_remove_then_same_id(void **state)
{
    (void)state;
    struct fx *f = fx_new(NULL);
    assert_int_equal(save_range(f, 0, 10), 0);
    char id[KQ_ID_LEN + 1];
    make_id(id, 5);
    assert_int_equal(f->s->ops->commit(f->s, id, on_done, f), 0);
    const char *groups[] = {"g-a"};
    struct kq_delivery_state st = {.attempts = 3, .groups_done = groups, .n_done = 1};
    make_id(st.id, 5);
    assert_int_equal(f->s->ops->update(f->s, &st), 0);
    assert_int_equal(f->s->ops->remove(f->s, id), 0);
    assert_int_equal(save_range(f, 10, 11), 0); /* the batch with the above */
    assert_int_equal(save_range(f, 5, 6), 0);   /* message 5 again: not committed (5 % 5) */
    assert_int_equal(save_range(f, 11, 20), 0);
    store_close(f);
    char path[512];
    segment_path(f->dir, true, path, sizeof path);
    static off_t offs[64];
    static uint8_t types[64];
    int n = record_offsets(path, offs, types, 63), removes = 0;
    for (int k = 0; k < n; k++)
        if (types[k] == FS_REMOVE) {
            xor_bytes(path, offs[k] + FS_HDR + 3, 2, 0xff); /* inside the id */
            removes++;
        }
    assert_int_equal(removes, 1);
    kq_log_set_level(KQ_LOG_ERROR + 1);
    store_open(f);
    kq_log_set_level(KQ_LOG_INFO);
    struct rec_list *l = recover_all(f);
    assert_int_equal(l->n, 20);
    int k5 = 10; /* 0-4, 6-10, then the new 5 in publish order */
    assert_int_equal(l->ids[k5], 5);
    assert_false(l->commit[k5]);
    assert_int_equal(l->attempts[k5], -1); /* no state */
    free(l);
    fx_free(f);
}

/* Records whose CRC holds but that the scan cannot use (a SAVE that does not decode, a
 * type this version does not know, as a newer one might write) are skipped with an error
 * in the log, never silently; the messages around them are recovered. */
static void test_undecodable_records_are_logged(void **state)
{
    (void)state;
    struct fx *f = fx_new(NULL);
    assert_int_equal(save_range(f, 0, 10), 0);
    store_close(f);
    struct kq_buf recs = {0};
    size_t start;
    static const uint8_t garbage[] = {0xde, 0xad, 0xbe, 0xef, 0x01};
    char id[KQ_ID_LEN + 1];
    make_id(id, 3);
    assert_int_equal(fs_rec_begin(&recs, FS_SAVE, 1000, &start), 0);
    assert_int_equal(kq_buf_append(&recs, garbage, sizeof garbage), 0);
    assert_int_equal(fs_rec_end(&recs, start), 0);
    assert_int_equal(fs_rec_begin(&recs, 9, 1001, &start), 0); /* no such type */
    assert_int_equal(fs_put_id(&recs, id), 0);
    assert_int_equal(fs_rec_end(&recs, start), 0);
    char path[512], logpath[600];
    segment_path(f->dir, true, path, sizeof path);
    static off_t offs[16];
    int n = record_offsets(path, offs, NULL, 15);
    insert_bytes(path, offs[n], recs.data, recs.len);
    kq_buf_free(&recs);
    store_open_logged(f, logpath, sizeof logpath);
    struct rec_list *l = recover_all(f);
    assert_int_equal(l->n, 10);
    free(l);
    char *log = test_read_file(logpath);
    assert_non_null(log);
    if (!strstr(log, "a message record (seq 1000) that does not decode: not recovered") ||
        !strstr(log, "a record of type 9 (seq 1001) that this version does not know"))
        fail_msg("expected both records in the log:\n%s", log);
    free(log);
    unlink(logpath);
    fx_free(f);
}

/* A damaged dead letter in the middle of dlq.log costs that one only. */
static void test_damage_dlq_middle(void **state)
{
    (void)state;
    struct fx *f = fx_new(NULL);
    assert_int_equal(save_range(f, 0, 20), 0);
    for (int i = 0; i < 20; i++) {
        struct msgbuf b;
        make_msg(&b, i, body_len_of(i));
        assert_int_equal(f->s->ops->dead_letter(f->s, &b.m, "expired", NULL), 0);
    }
    assert_int_equal(save_range(f, 20, 21), 0); /* flushes the dead letters */
    store_close(f);
    char path[512];
    snprintf(path, sizeof path, "%s/dlq.log", f->dir);
    static off_t offs[21];
    assert_int_equal(record_offsets(path, offs, NULL, 20), 20);
    xor_bytes(path, offs[10] + 40, 4, 0xff);
    kq_log_set_level(KQ_LOG_ERROR + 1);
    store_open(f);
    kq_log_set_level(KQ_LOG_INFO);
    struct kq_file_store_stats fs;
    kq_file_store_stats(f->s, &fs);
    assert_int_equal(fs.dead_letters, 19);
    assert_int_equal(fs.truncated_bytes, 0);
    off_t from, to;
    only_quarantined(f->dir, "dlq.log", &from, &to);
    assert_int_equal(from, offs[10]);
    assert_int_equal(to, offs[11]);
    fx_free(f);
}

static void test_reclaim(void **state)
{
    (void)state;
    struct fx *f = fx_new("segment_kb=8");
    assert_int_equal(save_spread(f, 0, 200), 0);
    int segs = count_segments(f->dir);
    assert_true(segs >= 10);
    char id[KQ_ID_LEN + 1];
    for (int i = 0; i < 200; i++) {
        make_id(id, i);
        assert_int_equal(f->s->ops->remove(f->s, id), 0);
    }
    /* one more save flushes the removes; reclaim follows its completion */
    assert_int_equal(save_range(f, 1000, 1001), 0);
    struct kq_file_store_stats st;
    for (int k = 0; k < 100; k++) {
        kq_file_store_stats(f->s, &st);
        if (st.segments <= 2 && count_segments(f->dir) <= 2) /* unlinked by the writer */
            break;
        int z = 0;
        wait_for(f, &z, 1, 10);
    }
    assert_true(st.segments <= 2);
    assert_true(count_segments(f->dir) <= 2);
    store_close(f);
    store_open(f);
    struct rec_list *l = recover_all(f);
    assert_int_equal(l->n, 1);
    assert_int_equal(l->ids[0], 1000);
    free(l);
    fx_free(f);
}

static void test_compaction(void **state)
{
    (void)state;
    struct fx *f = fx_new("segment_kb=8");
    /* message 7 lives long, with state and a commit */
    assert_int_equal(save_range(f, 0, 1), 0);
    assert_int_equal(save_range(f, 5, 6), 0);
    assert_int_equal(save_range(f, 7, 8), 0);
    char id[KQ_ID_LEN + 1];
    make_id(id, 5);
    f->s->ops->remove(f->s, id);
    make_id(id, 0);
    f->s->ops->remove(f->s, id);
    make_id(id, 7);
    const char *g[] = {"g-long"};
    struct kq_delivery_state ds = {.attempts = 3, .groups_done = g, .n_done = 1};
    memcpy(ds.id, id, sizeof ds.id);
    f->s->ops->update(f->s, &ds);
    char first[512];
    segment_path(f->dir, false, first, sizeof first);
    /* churn: many short-lived messages */
    for (int round = 0; round < 40; round++) {
        int from = 100 + round * 20;
        assert_int_equal(save_range(f, from, from + 20), 0);
        for (int i = from; i < from + 20; i++) {
            make_id(id, i);
            assert_int_equal(f->s->ops->remove(f->s, id), 0);
        }
    }
    assert_int_equal(save_range(f, 5000, 5001), 0);
    struct kq_file_store_stats st;
    for (int k = 0; k < 100; k++) {
        kq_file_store_stats(f->s, &st);
        if (st.segments <= 3 && access(first, F_OK) != 0)
            break;
        int z = 0;
        wait_for(f, &z, 1, 10);
    }
    print_message("compaction: %llu passes, %llu messages copied, %llu segments left\n",
                  (unsigned long long)st.compactions, (unsigned long long)st.compacted_msgs,
                  (unsigned long long)st.segments);
    assert_true(st.compactions >= 1);
    assert_true(st.segments <= 3);
    assert_true(access(first, F_OK) != 0); /* the segment of message 7 is gone */
    store_close(f);
    store_open(f);
    struct rec_list *l = recover_all(f);
    assert_int_equal(l->n, 2);
    assert_int_equal(l->ids[0], 7); /* publish order survives the copy */
    assert_int_equal(l->attempts[0], 3);
    assert_string_equal(l->first_done[0], "g-long");
    assert_true(l->commit[0]);
    assert_int_equal(l->ids[1], 5000);
    free(l);
    fx_free(f);
}

static void on_load(void *ud, int status, const struct kq_stored_msg *m)
{
    assert_int_equal(status, 0);
    check_msg(m, 3);
    (*(int *)ud)++;
}

static void test_load(void **state)
{
    (void)state;
    struct fx *f = fx_new(NULL);
    struct msgbuf b;
    make_msg(&b, 3, body_len_of(3));
    assert_int_equal(f->s->ops->save(f->s, &b.m, on_done, f), 0);
    /* loading before the write completes reads from the batch in memory */
    int loaded = 0;
    assert_int_equal(f->s->ops->load(f->s, b.m.id, on_load, &loaded), 0);
    assert_true(wait_for(f, &f->done, 1, 5000));
    assert_int_equal(f->s->ops->load(f->s, b.m.id, on_load, &loaded), 0);
    store_close(f);
    store_open(f);
    assert_int_equal(f->s->ops->load(f->s, b.m.id, on_load, &loaded), 0);
    assert_int_equal(loaded, 3);
    char id[KQ_ID_LEN + 1];
    make_id(id, 4);
    assert_int_equal(f->s->ops->load(f->s, id, on_load, &loaded), -ENOENT);
    fx_free(f);
}

static void test_fsync_modes(void **state)
{
    (void)state;
    const char *modes[] = {"fsync=interval&interval=20", "fsync=none"};
    for (int k = 0; k < 2; k++) {
        struct fx *f = fx_new(modes[k]);
        assert_int_equal(save_range(f, 0, 300), 0);
        struct kq_file_store_stats st;
        kq_file_store_stats(f->s, &st);
        if (k == 1)
            assert_int_equal(st.fsyncs, 0);
        store_close(f);
        store_open(f);
        struct rec_list *l = recover_all(f);
        assert_int_equal(l->n, 300);
        free(l);
        fx_free(f);
    }
}

/* Run the loop until the store's counter at `field` (a uint64_t of kq_file_store_stats)
 * reaches target or ms pass. */
static bool wait_stat(struct fx *f, size_t field, uint64_t target, int ms)
{
    uint64_t deadline = kq_mono_us() + (uint64_t)ms * 1000;
    for (;;) {
        struct kq_file_store_stats st;
        kq_file_store_stats(f->s, &st);
        uint64_t v;
        memcpy(&v, (const char *)&st + field, sizeof v);
        if (v >= target)
            return true;
        if (kq_mono_us() >= deadline)
            return false;
        int never = 0;
        wait_for(f, &never, 1, 5); /* runs the loop for one 5 ms tick */
    }
}

static struct kq_file_store_stats stats_of(struct fx *f)
{
    struct kq_file_store_stats st;
    assert_int_equal(kq_file_store_stats(f->s, &st), 0);
    return st;
}

/* fsync=group: records nobody waits for (REMOVE, STATE) wait up to lazy_sync_ms for a call
 * somebody waits for and share its batch and fdatasync; without one they are written and
 * synced after lazy_sync_ms (twice: once on the loop, once in the writer), close writes and
 * syncs them, and lazy_sync_ms=0 writes and syncs every batch at once. */
static void test_group_lazy_sync(void **state)
{
    (void)state;
    struct fx *f = fx_new("fsync=group&lazy_sync_ms=60000");
    assert_int_equal(save_range(f, 0, 3), 0);
    struct kq_file_store_stats st0 = stats_of(f);
    char id[KQ_ID_LEN + 1];
    make_id(id, 0);
    assert_int_equal(f->s->ops->remove(f->s, id), 0);
    struct kq_delivery_state ds = {.attempts = 7};
    make_id(ds.id, 1);
    assert_int_equal(f->s->ops->update(f->s, &ds), 0);
    int never = 0;
    wait_for(f, &never, 1, 30);
    assert_int_equal(stats_of(f).batches, st0.batches); /* held for a batch with a waiter */
    assert_int_equal(save_range(f, 3, 4), 0);
    struct kq_file_store_stats st = stats_of(f);
    assert_int_equal(st.batches, st0.batches + 1); /* one batch, one fdatasync for all */
    assert_int_equal(st.fsyncs, st0.fsyncs + 1);
    make_id(id, 2);
    assert_int_equal(f->s->ops->remove(f->s, id), 0);
    store_close(f); /* writes and syncs the held REMOVE */
    store_open(f);
    struct rec_list *l = recover_all(f);
    assert_int_equal(l->n, 2);
    assert_int_equal(l->ids[0], 1);
    assert_int_equal(l->attempts[0], 7);
    assert_int_equal(l->ids[1], 3);
    free(l);
    fx_free(f);

    const char *params[] = {"fsync=group&lazy_sync_ms=1", "fsync=group&lazy_sync_ms=0"};
    for (int k = 0; k < 2; k++) {
        f = fx_new(params[k]);
        assert_int_equal(save_range(f, 0, 1), 0);
        st0 = stats_of(f);
        make_id(id, 0);
        assert_int_equal(f->s->ops->remove(f->s, id), 0);
        assert_true(
            wait_stat(f, offsetof(struct kq_file_store_stats, fsyncs), st0.fsyncs + 1, 5000));
        fx_free(f);
    }
}

/* ---- dlq --------------------------------------------------------------------------------- */

struct dlq_seen {
    int n;
    char ids[64][KQ_ID_LEN + 1];
    char reason[64];
    int stop_after;
};

static bool on_dlq(void *ud, const struct kq_dead_letter *d)
{
    struct dlq_seen *s = ud;
    int i = (int)strtol(d->msg.id, NULL, 16);
    check_msg(&d->msg, i);
    snprintf(s->ids[s->n++], KQ_ID_LEN + 1, "%s", d->msg.id);
    snprintf(s->reason, sizeof s->reason, "%s", d->reason);
    assert_true(d->dead_time > 1600000000);
    return !s->stop_after || s->n < s->stop_after;
}

/* The groups a dead letter failed for, written as DLQ_ADD_GROUPS, come back after a reopen;
 * a dead letter written without them (a DLQ_ADD record, the format of older logs) still
 * recovers and says its groups are unknown. */
struct dlq_groups_seen {
    bool known;
    char groups[256];
};

static void on_dlq_groups(void *ud, int status, const struct kq_dead_letter *d)
{
    struct dlq_groups_seen *s = ud;
    assert_int_equal(status, 0);
    check_msg(&d->msg, (int)strtol(d->msg.id, NULL, 16));
    s->known = d->groups_known;
    size_t n = 0;
    for (size_t i = 0; i < d->groups.n_failed; i++)
        n += (size_t)snprintf(s->groups + n, sizeof s->groups - n, "%s=%s;",
                              d->groups.failed[i].group, d->groups.failed[i].reason);
    for (size_t i = 0; i < d->groups.n_acked; i++)
        n += (size_t)snprintf(s->groups + n, sizeof s->groups - n, "+%s;", d->groups.acked[i]);
}

static void test_dlq_groups_kept(void **state)
{
    (void)state;
    struct fx *f = fx_new(NULL);
    assert_int_equal(save_range(f, 0, 2), 0);
    struct kq_stored_msg m = {0};
    make_id(m.id, 0);
    assert_int_equal(f->s->ops->dead_letter(f->s, &m, "expired", NULL), 0); /* DLQ_ADD */
    const struct kq_dlq_group failed[] = {{"g-b", "nack"}, {"g-c", "timeout"}};
    const char *acked[] = {"g-a"};
    struct kq_dlq_groups g = {failed, 2, acked, 1};
    make_id(m.id, 1);
    assert_int_equal(f->s->ops->dead_letter(f->s, &m, "deliver limit 3 reached", &g), 0);
    store_close(f);
    store_open(f);
    char id[KQ_ID_LEN + 1];
    struct dlq_groups_seen s = {0};
    make_id(id, 0);
    assert_int_equal(f->s->ops->dlq_get(f->s, id, on_dlq_groups, &s), 0);
    assert_false(s.known);
    assert_string_equal(s.groups, "");
    make_id(id, 1);
    assert_int_equal(f->s->ops->dlq_get(f->s, id, on_dlq_groups, &s), 0);
    assert_true(s.known);
    assert_string_equal(s.groups, "g-b=nack;g-c=timeout;+g-a;");
    assert_int_equal(dlq_counted(f->s, NULL), 2);
    fx_free(f);
}

static void test_dlq(void **state)
{
    (void)state;
    struct fx *f = fx_new(NULL);
    assert_int_equal(save_range(f, 0, 9), 0);
    for (int i = 0; i < 6; i++) {
        struct kq_stored_msg m = {0};
        make_id(m.id, i);
        assert_int_equal(f->s->ops->dead_letter(f->s, &m, "expired", NULL), 0);
    }
    /* a dead letter given in full that was never pending */
    struct msgbuf b;
    make_msg(&b, 50, body_len_of(50));
    assert_int_equal(f->s->ops->dead_letter(f->s, &b.m, "no binding", NULL), 0);

    struct dlq_seen s = {0};
    assert_int_equal(dlq_walk(f->s, NULL, 100, false, on_dlq, &s), 1); /* before the write */
    assert_int_equal(s.n, 7);
    assert_string_equal(s.reason, "no binding");
    for (int i = 0; i < 7; i++) /* oldest first */
        assert_int_equal((int)strtol(s.ids[i], NULL, 16), i < 6 ? i : 50);
    assert_int_equal(dlq_counted(f->s, NULL), 7);
    store_close(f);
    store_open(f);
    struct rec_list *l = recover_all(f);
    assert_int_equal(l->n, 3); /* 6, 7, 8 */
    free(l);
    assert_int_equal(dlq_counted(f->s, NULL), 7); /* counted again from dlq.log */
    assert_int_equal(dlq_counted(f->s, "user"), 2);
    memset(&s, 0, sizeof s);
    dlq_walk(f->s, "user", 100, false, on_dlq, &s); /* i % 3 == 0 */
    assert_int_equal(s.n, 2);                       /* 0 and 3 */
    memset(&s, 0, sizeof s);
    assert_int_equal(dlq_walk(f->s, NULL, 2, true, on_dlq, &s), 1);
    assert_int_equal(s.n, 2);
    memset(&s, 0, sizeof s);
    char id[KQ_ID_LEN + 1];
    make_id(id, 1);
    assert_int_equal(dlq_get_sync(f->s, id, on_dlq, &s), 0);
    assert_int_equal(dlq_take_sync(f->s, id, on_dlq, &s), 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.ids[1], id);
    assert_int_equal(dlq_take_sync(f->s, id, on_dlq, &s), -ENOENT);
    assert_int_equal(dlq_get_sync(f->s, id, on_dlq, &s), -ENOENT);
    size_t purged = 0;
    assert_int_equal(dlq_purge_sync(f->s, "user", &purged), 0);
    assert_int_equal(purged, 2);
    store_close(f);
    store_open(f);
    memset(&s, 0, sizeof s);
    dlq_walk(f->s, NULL, 100, false, on_dlq, &s);
    assert_int_equal(s.n, 4); /* 2, 4, 5, 50 */
    assert_int_equal(dlq_counted(f->s, NULL), 4);
    assert_int_equal(dlq_purge_sync(f->s, NULL, &purged), 0);
    assert_int_equal(purged, 4);
    store_close(f);
    store_open(f);
    memset(&s, 0, sizeof s);
    dlq_walk(f->s, NULL, 100, false, on_dlq, &s);
    assert_int_equal(s.n, 0);
    assert_int_equal(dlq_counted(f->s, NULL), 0);
    fx_free(f);
}

/* ---- disk full --------------------------------------------------------------------------- */

/* A 1 MiB tmpfs at mnt (a mkdtemp template) to fill up; false (and a SKIP line) when this
 * process may not mount. */
static bool mount_tiny_disk(char *mnt)
{
    assert_non_null(mkdtemp(mnt));
    if (geteuid() == 0 && mount("tmpfs", mnt, "tmpfs", 0, "size=1m") == 0)
        return true;
    rmdir(mnt);
    print_message("SKIP disk full: cannot mount a 1 MiB tmpfs (need root / CAP_SYS_ADMIN)\n");
    return false;
}

/* The fixture may still hold files open: detach lazily instead of leaving it mounted. */
static void unmount_tiny_disk(const char *mnt)
{
    if (umount(mnt) != 0)
        umount2(mnt, MNT_DETACH);
    rmdir(mnt);
}

/* A fixture whose store lives on the tiny file system mounted at mnt. */
static struct fx *store_on_disk(const char *mnt, const char *params)
{
    struct fx *f = calloc(1, sizeof *f);
    uv_loop_init(&f->loop);
    snprintf(f->dir, sizeof f->dir, "%s/store", mnt);
    snprintf(f->uri, sizeof f->uri, "file://%s%s%s", f->dir, params ? "?" : "",
             params ? params : "");
    store_open(f);
    return f;
}

/* Close the store, remove it and unmount the disk it was on. */
static void store_off_disk(struct fx *f, const char *mnt)
{
    store_close(f);
    uv_loop_close(&f->loop);
    tmp_dir_remove(f->dir);
    free(f);
    unmount_tiny_disk(mnt);
}

/* Fill the file system mounted at mnt to the last block. */
static void fill_disk(const char *mnt)
{
    char filler[300];
    snprintf(filler, sizeof filler, "%s/filler", mnt);
    int fd = open(filler, O_WRONLY | O_CREAT, 0644);
    static char block[4096];
    while (write(fd, block, sizeof block) > 0)
        ;
    close(fd);
}

/* Give back what fill_disk took. */
static void free_disk(const char *mnt)
{
    char filler[300];
    snprintf(filler, sizeof filler, "%s/filler", mnt);
    unlink(filler);
}

static void test_disk_full(void **state)
{
    (void)state;
    char mnt[] = "/tmp/kq-full-XXXXXX";
    if (!mount_tiny_disk(mnt))
        skip();
    struct fx *f = store_on_disk(mnt, NULL);
    assert_int_equal(save_range(f, 0, 20), 0);
    fill_disk(mnt);
    kq_log_set_level(KQ_LOG_ERROR + 1);
    int failed0 = f->failed;
    save_range(f, 20, 30);
    assert_int_equal(f->failed - failed0, 10);
    assert_int_equal(f->last_status, -ENOSPC);
    /* removes issued meanwhile are retried, not lost */
    char id[KQ_ID_LEN + 1];
    make_id(id, 0);
    assert_int_equal(f->s->ops->remove(f->s, id), 0);
    int z = 0;
    wait_for(f, &z, 1, 300);
    kq_log_set_level(KQ_LOG_INFO);
    free_disk(mnt);
    failed0 = f->failed;
    assert_int_equal(save_range(f, 30, 40), failed0); /* space is back: saves succeed */
    store_close(f);
    store_open(f);
    struct rec_list *l = recover_all(f);
    assert_int_equal(l->n, 29); /* 1..19 and 30..39 */
    assert_int_equal(l->ids[0], 1);
    assert_int_equal(l->ids[18], 19);
    assert_int_equal(l->ids[19], 30);
    free(l);
    store_off_disk(f, mnt);
}

/* A disk filled by the log itself: draining every message must give the space back
 * although the REMOVEs cannot be written (the emptied segments are deleted regardless). */
static void test_disk_full_drain_recovers(void **state)
{
    (void)state;
    char mnt[] = "/tmp/kq-full-XXXXXX";
    if (!mount_tiny_disk(mnt))
        skip();
    struct fx *f = store_on_disk(mnt, "segment_kb=64");
    kq_log_set_level(KQ_LOG_ERROR + 1);
    int n = 0;
    while (f->failed == 0 && n < 10000) {
        save_range(f, n, n + 50);
        n += 50;
    }
    assert_int_equal(f->last_status, -ENOSPC);
    assert_true(count_segments(f->dir) > 3);
    char id[KQ_ID_LEN + 1];
    for (int i = 0; i < n; i++) {
        make_id(id, i);
        f->s->ops->remove(f->s, id); /* -ENOENT for the saves that failed */
    }
    /* the removes fail (back-off), the retry carries the deletions of the emptied segments */
    uint64_t deadline = kq_mono_us() + 5000000;
    int z = 0;
    while (count_segments(f->dir) > 1 && kq_mono_us() < deadline)
        wait_for(f, &z, 1, 20);
    kq_log_set_level(KQ_LOG_INFO);
    assert_int_equal(count_segments(f->dir), 1);
    int failed0 = f->failed;
    assert_int_equal(save_range(f, 20000, 20010), failed0); /* space is back */
    store_close(f);
    store_open(f);
    struct rec_list *l = recover_all(f);
    assert_int_equal(l->n, 10);
    assert_int_equal(l->ids[0], 20000);
    free(l);
    store_off_disk(f, mnt);
}

/* Until the writer has handed a batch back (white box: its done mailbox). */
static void wait_writer_done(struct fx *f)
{
    struct fs_writer *w = &((struct fs_store *)f->s)->w;
    uint64_t deadline = kq_mono_us() + 5000000;
    bool done = false;
    while (!done && kq_mono_us() < deadline) {
        pthread_mutex_lock(&w->done.mu);
        done = w->done.head != NULL;
        pthread_mutex_unlock(&w->done.mu);
        if (!done)
            usleep(1000);
    }
    assert_true(done);
}

/* Batches sealed after one that failed, while the loop has not seen the failure yet: the
 * writer fails them without a write (the file was cut back before their offsets), and the
 * loop requeues the records of all of them in call order once every one is back. */
static void test_disk_full_batches_in_flight(void **state)
{
    (void)state;
    char mnt[] = "/tmp/kq-full-XXXXXX";
    if (!mount_tiny_disk(mnt))
        skip();
    struct fx *f = store_on_disk(mnt, NULL);
    assert_int_equal(save_range(f, 0, 10), 0);
    fill_disk(mnt);
    kq_log_set_level(KQ_LOG_ERROR + 1);
    /* White box: the loop does not take batches back until both A and B are with the writer */
    uv_poll_t *back = &((struct fs_store *)f->s)->w.done.poll;
    uv_poll_cb take_back = back->poll_cb;
    uv_poll_stop(back);
    /* batch A: state of message 1 (attempts 1), remove 2, save 20; the writer fails it */
    struct msgbuf b;
    struct kq_delivery_state ds = {.attempts = 1};
    make_id(ds.id, 1);
    char id[KQ_ID_LEN + 1];
    assert_int_equal(f->s->ops->update(f->s, &ds), 0);
    make_id(id, 2);
    assert_int_equal(f->s->ops->remove(f->s, id), 0);
    make_msg(&b, 20, body_len_of(20));
    assert_int_equal(f->s->ops->save(f->s, &b.m, on_done, f), 0);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    wait_writer_done(f); /* A failed; the loop has not taken it back */
    /* batch B, sealed and handed over before the loop sees A's failure */
    ds.attempts = 2;
    assert_int_equal(f->s->ops->update(f->s, &ds), 0);
    make_id(id, 3);
    assert_int_equal(f->s->ops->remove(f->s, id), 0);
    make_msg(&b, 21, body_len_of(21));
    assert_int_equal(f->s->ops->save(f->s, &b.m, on_done, f), 0);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    uv_poll_start(back, UV_READABLE, take_back);
    assert_true(wait_for(f, &f->done, 12, 5000));
    assert_int_equal(f->failed, 2);
    assert_int_equal(f->last_status, -ENOSPC);
    kq_log_set_level(KQ_LOG_INFO);
    free_disk(mnt);
    assert_int_equal(save_range(f, 30, 31), 2); /* space is back: carries A's and B's records */
    store_close(f);
    store_open(f);
    struct rec_list *l = recover_all(f);
    int want[] = {0, 1, 4, 5, 6, 7, 8, 9, 30};
    assert_int_equal(l->n, 9);
    for (int i = 0; i < 9; i++)
        assert_int_equal(l->ids[i], want[i]);
    assert_int_equal(l->attempts[1], 2); /* B's state, written after A's */
    free(l);
    store_off_disk(f, mnt);
}

/* ---- URIs -------------------------------------------------------------------------------- */

static void test_bad_uris(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct kq_store *s;
    char err[256];
    const char *bad[] = {"rocksdb://x",
                         "nothing",
                         "file://",
                         "file:///tmp/x?fsync=always",
                         "file:///tmp/x?segment_mb=0",
                         "file:///tmp/x?colour=blue",
                         "file:///tmp/x?interval=abc",
                         "memory://?bogus=1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        assert_int_equal(kq_store_open(&loop, bad[i], &s, err, sizeof err), -EINVAL);
        assert_true(err[0] != 0);
    }
    assert_int_equal(kq_store_open(&loop, "memory://?maxcap=10", &s, err, sizeof err), 0);
    assert_int_equal(kq_file_store_stats(s, &(struct kq_file_store_stats){0}), -EINVAL);
    s->ops->close(s);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- benchmark (KITEQ_STORE_BENCH=N) ----------------------------------------------------- */

static long rss_kb(void)
{
    FILE *fp = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (fp) {
        if (fscanf(fp, "%ld %ld", &pages, &res) != 2)
            res = 0;
        fclose(fp);
    }
    return res * (sysconf(_SC_PAGESIZE) / 1024);
}

static void count_cb(void *ud, const struct kq_stored_msg *m, const struct kq_delivery_state *s)
{
    (void)m;
    (void)s;
    (*(int *)ud)++;
}

static void test_bench(void **state)
{
    (void)state;
    const char *env = getenv("KITEQ_STORE_BENCH");
    if (!env)
        skip();
    int N = atoi(env);
    struct fx *f = fx_new("fsync=group");
    struct msgbuf b;
    uint64_t t0 = kq_mono_us();
    for (int i = 0; i < N; i++) {
        make_msg(&b, i, 1024);
        f->s->ops->save(f->s, &b.m, on_done, f);
        if (i % 1000 == 999)
            uv_run(&f->loop, UV_RUN_NOWAIT);
    }
    wait_for(f, &f->done, N, 600000);
    double secs = (double)(kq_mono_us() - t0) / 1e6;
    struct kq_file_store_stats st;
    kq_file_store_stats(f->s, &st);
    print_message("bench: %d saves of 1 KiB in %.2f s = %.0f saves/s, %llu fsyncs\n", N, secs,
                  N / secs, (unsigned long long)st.fsyncs);
    store_close(f);
    long rss0 = rss_kb();
    t0 = kq_mono_us();
    store_open(f);
    double open_s = (double)(kq_mono_us() - t0) / 1e6;
    long rss1 = rss_kb();
    int n = 0;
    t0 = kq_mono_us();
    f->s->ops->recover(f->s, count_cb, &n);
    double rec_s = (double)(kq_mono_us() - t0) / 1e6;
    print_message("bench: open %.2f s, recover %.2f s (%d msgs), index ~%ld bytes/msg\n", open_s,
                  rec_s, n, (rss1 - rss0) * 1024 / (N ? N : 1));
    assert_int_equal(n, N);
    fx_free(f);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_uris),
        cmocka_unit_test(test_save_reopen_recover),
        cmocka_unit_test(test_dlq_groups_kept),
        cmocka_unit_test(test_callback_after_write),
        cmocka_unit_test(test_group_commit),
        cmocka_unit_test(test_group_next_without_loop),
        cmocka_unit_test(test_close_takes_back_batches_in_flight),
        cmocka_unit_test(test_load),
        cmocka_unit_test(test_corrupt_garbage),
        cmocka_unit_test(test_corrupt_truncated),
        cmocka_unit_test(test_corrupt_flipped),
        DAMAGE_MIDDLE_TEST("newest_body", false, FLIP_BODY),
        DAMAGE_MIDDLE_TEST("newest_length", false, FLIP_LENGTH),
        DAMAGE_MIDDLE_TEST("newest_zeroed", false, ZEROED),
        DAMAGE_MIDDLE_TEST("newest_inserted", false, INSERTED),
        DAMAGE_MIDDLE_TEST("older_body", true, FLIP_BODY),
        DAMAGE_MIDDLE_TEST("older_length", true, FLIP_LENGTH),
        DAMAGE_MIDDLE_TEST("older_zeroed", true, ZEROED),
        DAMAGE_MIDDLE_TEST("older_inserted", true, INSERTED),
        cmocka_unit_test(test_damage_fake_record_body),
        cmocka_unit_test(test_damage_fake_record_header),
        cmocka_unit_test(test_damage_lost_remove_then_same_id),
        cmocka_unit_test(test_undecodable_records_are_logged),
        cmocka_unit_test(test_damage_dlq_middle),
        cmocka_unit_test(test_reclaim),
        cmocka_unit_test(test_compaction),
        cmocka_unit_test(test_fsync_modes),
        cmocka_unit_test(test_group_lazy_sync),
        cmocka_unit_test(test_dlq),
        cmocka_unit_test(test_disk_full),
        cmocka_unit_test(test_disk_full_drain_recovers),
        cmocka_unit_test(test_disk_full_batches_in_flight),
        cmocka_unit_test(test_bench),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
