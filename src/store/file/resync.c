/* Damage in a log file at start-up: find the next record that can be trusted after a
 * damaged range, and keep a copy of the damaged bytes aside (docs/STORAGE.md, "Damage").
 * Random access with pread: this is the rare path, the sequential scan stays in recover.c. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "store/file/fs_internal.h"

#define SEARCH_CHUNK (1u << 20)

struct probe {
    int fd;
    uint64_t size;
    bool dlq;
    int err; /* first read error, -errno */
    struct kq_buf rec;
};

static bool read_at(struct probe *p, void *dst, size_t n, uint64_t off)
{
    uint8_t *d = dst;
    while (n) {
        ssize_t got = pread(p->fd, d, n, (off_t)off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            if (!p->err)
                p->err = got < 0 ? -errno : -EIO;
            return false;
        }
        d += got;
        n -= (size_t)got;
        off += (uint64_t)got;
    }
    return true;
}

static bool type_fits(uint8_t type, bool dlq)
{
    if (dlq)
        return type == FS_DLQ_ADD || type == FS_DLQ_DEL || type == FS_DLQ_ADD_GROUPS;
    return type >= FS_SAVE && type <= FS_DEAD;
}

/* Size of the whole, valid record at off (magic, length inside the file, a type of this
 * file, seq above `after`, CRC), or 0. The cheap header checks come before the payload is
 * read. */
static size_t valid_at(struct probe *p, uint64_t off, uint64_t after, uint64_t *seq)
{
    uint8_t h[FS_HDR];
    uint32_t magic, len;
    if (off + FS_HDR > p->size || !read_at(p, h, FS_HDR, off))
        return 0;
    memcpy(&magic, h, 4);
    memcpy(&len, h + 8, 4);
    memcpy(seq, h + 13, 8);
    size_t total = FS_HDR + (size_t)len;
    if (magic != FS_MAGIC || len > FS_MAX_PAYLOAD || off + total > p->size ||
        !type_fits(h[12], p->dlq) || *seq <= after)
        return 0;
    p->rec.len = 0;
    if (kq_buf_reserve(&p->rec, total)) {
        p->err = -ENOMEM;
        return 0;
    }
    struct fs_rec r;
    size_t got;
    if (!read_at(p, p->rec.data, total, off) ||
        fs_rec_parse(p->rec.data, total, &r, &got) != FS_REC_OK)
        return 0;
    return total;
}

/* A valid record right after a candidate whose seq is not above the candidate's proves the
 * candidate false: a record-like byte sequence inside a damaged record's body, not a record
 * the store wrote there. */
static bool contradicted(struct probe *p, uint64_t next, uint64_t cand_seq)
{
    uint64_t seq;
    return valid_at(p, next, 0, &seq) && seq <= cand_seq;
}

int fs_resync(int fd, bool dlq, uint64_t off, uint64_t size, uint64_t after, uint64_t *next)
{
    struct probe p = {.fd = fd, .size = size, .dlq = dlq};
    uint8_t *chunk = NULL;
    uint64_t seq;
    uint8_t h[FS_HDR], needle[4];
    uint32_t magic = FS_MAGIC, len;
    memcpy(needle, &magic, 4);
    int rc = -ENOENT;
    /* 1. The damage stayed inside one record whose magic and length survived (a flipped
     *    body byte, the CRC or the seq): the next record starts where the length says. */
    if (off + FS_HDR <= size && read_at(&p, h, FS_HDR, off) && !memcmp(h, needle, 4)) {
        memcpy(&len, h + 8, 4);
        uint64_t end = off + FS_HDR + (uint64_t)len;
        if (len <= FS_MAX_PAYLOAD && valid_at(&p, end, after, &seq)) {
            *next = end;
            rc = 0;
            goto out;
        }
    }
    /* 2. The first offset after the damage holding a valid record with a higher seq that
     *    nothing contradicts. */
    if (!p.err && !(chunk = malloc(SEARCH_CHUNK)))
        p.err = -ENOMEM;
    for (uint64_t pos = off + 1; !p.err && pos + FS_HDR <= size;) {
        size_t n = size - pos < SEARCH_CHUNK ? (size_t)(size - pos) : SEARCH_CHUNK;
        if (!read_at(&p, chunk, n, pos))
            break;
        for (const uint8_t *q = chunk;
             !p.err && (q = memmem(q, n - (size_t)(q - chunk), needle, 4)); q++) {
            uint64_t at = pos + (uint64_t)(q - chunk);
            size_t total = valid_at(&p, at, after, &seq);
            if (total && !contradicted(&p, at + total, seq) && !p.err) {
                *next = at;
                rc = 0;
                goto out;
            }
        }
        if (n < SEARCH_CHUNK)
            break;
        pos += n - 3; /* a magic cut by the chunk's end is found in the next one */
    }
out:
    if (rc && p.err)
        rc = p.err;
    free(chunk);
    kq_buf_free(&p.rec);
    return rc;
}

/* fsync a directory; failures only make the copy less durable, so they are logged. */
static void sync_dir(const char *dir)
{
    int d = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d < 0 || fsync(d))
        KQ_WARN(FS_MOD, "fsync %s: %s", dir, strerror(errno));
    if (d >= 0)
        close(d);
}

int fs_quarantine(const char *dir, const char *path, int fd, uint64_t from, uint64_t to, char *out,
                  size_t outlen)
{
    char qdir[1100];
    snprintf(qdir, sizeof qdir, "%s/quarantine", dir);
    if (mkdir(qdir, 0755) && errno != EEXIST)
        return -errno;
    const char *name = strrchr(path, '/');
    snprintf(out, outlen, "%s/%s.%" PRIu64 "-%" PRIu64 ".bad", qdir, name ? name + 1 : path, from,
             to);
    int q = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (q < 0)
        return -errno;
    struct probe p = {.fd = fd, .size = to};
    uint8_t *buf = malloc(SEARCH_CHUNK);
    int rc = buf ? 0 : -ENOMEM;
    for (uint64_t off = from; !rc && off < to;) {
        size_t n = to - off < SEARCH_CHUNK ? (size_t)(to - off) : SEARCH_CHUNK;
        if (!read_at(&p, buf, n, off)) {
            rc = p.err;
            break;
        }
        for (size_t w = 0; !rc && w < n;) {
            ssize_t k = write(q, buf + w, n - w);
            if (k < 0 && errno != EINTR)
                rc = -errno;
            else if (k > 0)
                w += (size_t)k;
        }
        off += n;
    }
    if (!rc && fsync(q))
        rc = -errno;
    close(q);
    free(buf);
    if (rc) {
        unlink(out);
        return rc;
    }
    sync_dir(qdir);
    return 0;
}
