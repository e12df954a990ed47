/* Private temporary directories of the tests, made in /tmp under a name that
 * scripts/test-dirs.sh knows (kept for a post-mortem when a run fails), and removed with
 * everything below them. */
#ifndef KQ_TEST_TMP_DIR_H
#define KQ_TEST_TMP_DIR_H
#include <stddef.h>

/* Make "/tmp/<prefix>XXXXXX" (e.g. prefix "kq-config-") and put its path into dir.
 * 0, or -1 with the reason on stderr. */
int tmp_dir_make(char *dir, size_t len, const char *prefix);
/* Remove path and everything below it (links are removed, not followed). 0, or -1 with the
 * reason on stderr. */
int tmp_dir_remove(const char *path);
#endif
