/* File store recovery over a damaged log. Three valid messages are written as records
 * (SAVE 1, SAVE 2, STATE 2, SAVE 3, COMMIT 3); the input follows them as damage:
 *   byte 0 % 3 == 0: the rest is appended to the same (newest) segment;
 *                == 1: the rest is a newer segment of its own;
 *                == 2: the rest is appended to the segment, and an empty newer segment
 *                      follows (damage in an older segment is skipped, never cut).
 * Opening the store and recovering must not crash, and must return the three messages
 * intact unless the damage holds a valid record naming the same message (a REMOVE for it
 * is a legitimate change, not a loss). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "fuzz.h"
#include "store/file/record.h"

#define N_MSGS 3

static uv_loop_t loop;
static const char *tmp; /* /dev/shm when there is one: less I/O per run */
static struct kq_buf prefix;

static void make_msg(int i, struct kq_stored_msg *m, uint8_t *body, size_t body_len)
{
    memset(m, 0, sizeof *m);
    snprintf(m->id, sizeof m->id, "%032x", i);
    m->cmd = 0x11;
    m->topic = "trade";
    m->message_type = "pay-succ";
    m->publish_group = "g-producer";
    m->commit = i != 3;
    m->publish_time = 1700000000 + i;
    m->expired_time = 1800000000 + i;
    m->deliver_limit = 100;
    for (size_t k = 0; k < body_len; k++)
        body[k] = (uint8_t)(i * 7 + k);
    m->header = body;
    m->header_len = 4;
    m->body = body;
    m->body_len = (uint32_t)body_len;
}

static void add_record(uint8_t type, uint64_t seq, const struct kq_stored_msg *m,
                       const struct kq_delivery_state *st)
{
    size_t start;
    FUZZ_CHECK(fs_rec_begin(&prefix, type, seq, &start) == 0);
    if (type == FS_SAVE)
        FUZZ_CHECK(fs_put_msg(&prefix, m, seq) == 0);
    else
        FUZZ_CHECK(fs_put_id(&prefix, m->id) == 0);
    if (type == FS_STATE)
        FUZZ_CHECK(fs_put_state_body(&prefix, st) == 0);
    FUZZ_CHECK(fs_rec_end(&prefix, start) == 0);
}

static void rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    char p[512];
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            if (unlink(p) && errno == EISDIR) /* quarantine/ */
                rm_rf(p);
        }
    closedir(d);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    kq_log_set_level(KQ_LOG_ERROR + 1); /* every damaged input is logged: too much noise */
    FUZZ_CHECK(uv_loop_init(&loop) == 0);
    tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";

    uint8_t body[80];
    struct kq_stored_msg m;
    uint64_t seq = 1;
    for (int i = 1; i <= N_MSGS; i++) {
        make_msg(i, &m, body, 10 + 20 * (size_t)i);
        add_record(FS_SAVE, seq++, &m, NULL);
        if (i == 2) {
            const char *done[] = {"g-consumer"};
            struct kq_delivery_state st = {
                .attempts = 2, .next_attempt_ms = 1700000000000, .groups_done = done, .n_done = 1};
            memcpy(st.id, m.id, sizeof st.id);
            add_record(FS_STATE, seq++, &m, &st);
        }
    }
    make_msg(3, &m, body, 70);
    add_record(FS_COMMIT, seq++, &m, NULL);
    return 0;
}

static void write_file(const char *dir, uint64_t first_seq, const void *a, size_t alen,
                       const void *b, size_t blen)
{
    char path[256];
    snprintf(path, sizeof path, "%s/seg-%016" PRIx64 ".log", dir, first_seq);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    FUZZ_CHECK(fd >= 0);
    FUZZ_CHECK(write(fd, a, alen) == (ssize_t)alen);
    if (blen)
        FUZZ_CHECK(write(fd, b, blen) == (ssize_t)blen);
    close(fd);
}

/* Does the damage hold a valid record (at any offset) whose payload starts with message i's
 * id? Then recovery may rightly return that message changed or not at all. */
static bool named_in(const uint8_t *p, size_t n, int i)
{
    char id[KQ_ID_LEN + 1], got[KQ_ID_LEN + 1];
    snprintf(id, sizeof id, "%032x", i);
    for (size_t off = 0; off + FS_HDR <= n; off++) {
        struct fs_rec r;
        size_t total;
        if (fs_rec_parse(p + off, n - off, &r, &total) == FS_REC_OK &&
            fs_get_id(r.payload, r.len, got) == 0 && strcmp(got, id) == 0)
            return true;
    }
    return false;
}

struct seen {
    bool msg[N_MSGS + 1];
    const uint8_t *damage;
    size_t damage_len;
};

static void on_recover(void *ud, const struct kq_stored_msg *m, const struct kq_delivery_state *st)
{
    struct seen *s = ud;
    char *end;
    unsigned long i = strtoul(m->id, &end, 16);
    if (*end || i < 1 || i > N_MSGS || named_in(s->damage, s->damage_len, (int)i))
        return;             /* a message the damage made up or changed */
    FUZZ_CHECK(!s->msg[i]); /* once */
    s->msg[i] = true;
    uint8_t body[80];
    struct kq_stored_msg want;
    make_msg((int)i, &want, body, 10 + 20 * i);
    want.commit = true; /* 3 was committed by its COMMIT record */
    FUZZ_CHECK(m->commit == want.commit && m->cmd == want.cmd);
    FUZZ_CHECK(strcmp(m->topic, want.topic) == 0);
    FUZZ_CHECK(m->publish_time == want.publish_time && m->deliver_limit == 100);
    FUZZ_CHECK(m->body_len == 0 ||
               (m->body_len == want.body_len && memcmp(m->body, want.body, m->body_len) == 0));
    if (i == 2) {
        FUZZ_CHECK(st && st->attempts == 2 && st->n_done == 1);
        FUZZ_CHECK(strcmp(st->groups_done[0], "g-consumer") == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int mode = data[0] % 3;
    struct seen seen = {.damage = data + 1, .damage_len = size - 1};
    char dir[128], uri[160], err[256];
    /* a fresh directory per run, removed at its end (libFuzzer exits without atexit); a
     * finding leaves it behind for a look */
    snprintf(dir, sizeof dir, "%s/kq-fuzz-store-XXXXXX", tmp);
    FUZZ_CHECK(mkdtemp(dir) != NULL);
    if (mode == 1) {
        write_file(dir, 1, prefix.data, prefix.len, NULL, 0);
        write_file(dir, 100, data + 1, size - 1, NULL, 0);
    } else {
        write_file(dir, 1, prefix.data, prefix.len, data + 1, size - 1);
        if (mode == 2)
            write_file(dir, 1000000, "", 0, NULL, 0);
    }
    snprintf(uri, sizeof uri, "file://%s?fsync=none", dir);
    struct kq_store *s;
    int rc = kq_store_open(&loop, uri, &s, err, sizeof err);
    if (rc != 0) { /* only a failure to read or write the directory may stop an open */
        fprintf(stderr, "open %s: %s\n", uri, err);
        abort();
    }
    FUZZ_CHECK(s->ops->recover(s, on_recover, &seen) == 0);
    for (int i = 1; i <= N_MSGS; i++)
        FUZZ_CHECK(seen.msg[i] || named_in(data + 1, size - 1, i)); /* never lost */
    s->ops->close(s);
    uv_run(&loop, UV_RUN_NOWAIT);
    rm_rf(dir);
    return 0;
}
