/* Segment files: naming, creation, the ordered list and directory listing. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/file/fs_internal.h"

struct fs_seg *fs_seg_new(const char *dir, uint64_t first_seq, int fd)
{
    size_t n = strlen(dir) + 32;
    struct fs_seg *g = calloc(1, sizeof *g + n);
    if (!g)
        return NULL;
    snprintf(g->path, n, "%s/seg-%016" PRIx64 ".log", dir, first_seq);
    g->first_seq = first_seq;
    g->fd = fd;
    return g;
}

/* Create an empty segment on the loop thread (open(2) only; the writer fsyncs the
 * directory with the first batch written to it). */
int fs_seg_create(struct fs_store *s, uint64_t first_seq, struct fs_seg **out)
{
    struct fs_seg *g = fs_seg_new(s->dir, first_seq, -1);
    if (!g)
        return -ENOMEM;
    g->fd = open(g->path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (g->fd < 0) {
        int rc = -errno;
        free(g);
        return rc;
    }
    fs_seg_append(s, g);
    *out = g;
    return 0;
}

void fs_seg_append(struct fs_store *s, struct fs_seg *g)
{
    g->prev = s->head;
    g->next = NULL;
    if (s->head)
        s->head->next = g;
    else
        s->oldest = g;
    s->head = g;
    s->n_segs++;
}

void fs_seg_unlink(struct fs_store *s, struct fs_seg *g)
{
    if (g->prev)
        g->prev->next = g->next;
    else
        s->oldest = g->next;
    if (g->next)
        g->next->prev = g->prev;
    else
        s->head = g->prev;
    g->prev = g->next = NULL;
    s->n_segs--;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int fs_seg_list(const char *dir, uint64_t **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return -errno;
    size_t cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        uint64_t seq;
        char tail[8];
        /* exactly seg-<16 hex>.log */
        if (strlen(de->d_name) != 4 + 16 + 4 ||
            sscanf(de->d_name, "seg-%16" SCNx64 "%7s", &seq, tail) != 2 ||
            strcmp(tail, ".log") != 0)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            uint64_t *p = realloc(*out, cap * sizeof *p);
            if (!p) {
                closedir(d);
                free(*out);
                *out = NULL;
                return -ENOMEM;
            }
            *out = p;
        }
        (*out)[(*n)++] = seq;
    }
    closedir(d);
    if (*n > 1) /* *out is NULL when the directory has no segment: qsort must not see it */
        qsort(*out, *n, sizeof **out, cmp_u64);
    return 0;
}
