/* Where a test finds the source tree and the build, and whole files read or written in one call.
 * CMake gives every test $KITEQ_SOURCE_DIR and $KITEQ_BUILD_DIR; a test run by hand without
 * them is taken to run in the build directory right below the source tree ("..", "."),
 * and says so once on stderr. */
#ifndef KQ_TEST_FILES_H
#define KQ_TEST_FILES_H
#include <stddef.h>

const char *test_source_dir(void);
const char *test_build_dir(void);
/* "<source dir>/<rel>" into out; returns out. */
char *test_source_path(char *out, size_t len, const char *rel);
/* A whole file (malloc'd, NUL-terminated), or NULL when it cannot be read. */
char *test_read_file(const char *path);
/* Write text to path (created or truncated); fails the running cmocka test when it cannot. */
void test_write_file(const char *path, const char *text);
/* A whole source file (rel to the source dir); fails the running cmocka test when it cannot
 * be read. */
char *test_read_source(const char *rel);
#endif
