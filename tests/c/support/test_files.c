#include "support/test_files.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static const char *dir_from_env(const char *name, const char *fallback)
{
    const char *dir = getenv(name);
    if (dir && *dir)
        return dir;
    fprintf(stderr, "tests: %s is not set; using \"%s\"\n", name, fallback);
    return fallback;
}

const char *test_source_dir(void)
{
    static const char *dir;
    if (!dir)
        dir = dir_from_env("KITEQ_SOURCE_DIR", "..");
    return dir;
}

const char *test_build_dir(void)
{
    static const char *dir;
    if (!dir)
        dir = dir_from_env("KITEQ_BUILD_DIR", ".");
    return dir;
}

char *test_source_path(char *out, size_t len, const char *rel)
{
    snprintf(out, len, "%s/%s", test_source_dir(), rel);
    return out;
}

char *test_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *text = NULL;
    size_t cap = 0;
    ssize_t n = getdelim(&text, &cap, '\0', f);
    fclose(f);
    if (n < 0) { /* an empty file */
        free(text);
        return strdup("");
    }
    return text;
}

char *test_read_source(const char *rel)
{
    char path[1024];
    char *text = test_read_file(test_source_path(path, sizeof path, rel));
    if (!text)
        fail_msg("cannot read %s", path);
    return text;
}

void test_write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        fail_msg("cannot write %s: %s", path, strerror(errno));
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}
