#include "support/tmp_dir.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int tmp_dir_make(char *dir, size_t len, const char *prefix)
{
    if ((size_t)snprintf(dir, len, "/tmp/%sXXXXXX", prefix) >= len) {
        fprintf(stderr, "tmp_dir_make: /tmp/%sXXXXXX is longer than %zu\n", prefix, len - 1);
        dir[0] = '\0';
        return -1;
    }
    if (!mkdtemp(dir)) {
        fprintf(stderr, "tmp_dir_make: mkdtemp %s: %s\n", dir, strerror(errno));
        dir[0] = '\0';
        return -1;
    }
    return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0) {
        fprintf(stderr, "tmp_dir_remove: %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

int tmp_dir_remove(const char *path)
{
    /* depth first: a directory is removed after what it holds */
    if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT)
        return -1;
    return 0;
}
