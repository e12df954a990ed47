/* The small-block lists of a Lua state's allocator (sandbox/lua_blocks.c): blocks are reused
 * within their size class, contents survive every resize (within a class, across classes,
 * between small and large), the lists keep at most KQ_LUA_BLOCKS_KEPT_BYTES in all, and
 * release empties them (the sanitizer run checks that nothing leaks). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "sandbox/lua_blocks.h"

static void fill(unsigned char *p, size_t n, unsigned char seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(seed + i);
}

static void check(const unsigned char *p, size_t n, unsigned char seed)
{
    for (size_t i = 0; i < n; i++)
        assert_int_equal(p[i], (unsigned char)(seed + i));
}

static void test_reused_within_class(void **state)
{
    (void)state;
    struct kq_lua_blocks b = {0};
    void *a = kq_lua_blocks_realloc(&b, NULL, 0, 20); /* class 32 */
    assert_non_null(a);
    kq_lua_blocks_realloc(&b, a, 20, 0);
    assert_int_equal(b.kept[1], 1);
    void *c = kq_lua_blocks_realloc(&b, NULL, 0, 32); /* the same class: the same block */
    assert_ptr_equal(c, a);
    assert_int_equal(b.kept[1], 0);
    fill(c, 32, 7); /* the whole class size is usable */
    void *d = kq_lua_blocks_realloc(&b, NULL, 0, 33); /* the next class: another block */
    assert_ptr_not_equal(d, a);
    kq_lua_blocks_realloc(&b, c, 32, 0);
    kq_lua_blocks_realloc(&b, d, 33, 0);
    kq_lua_blocks_release(&b);
    for (size_t i = 0; i < KQ_LUA_BLOCK_CLASSES; i++) {
        assert_null(b.free[i]);
        assert_int_equal(b.kept[i], 0);
    }
}

/* Lua's allocator is also asked to free NULL (nsize 0): nothing is allocated, nothing kept
 * (a malloc(0) there leaked a block every time). */
static void test_free_of_null(void **state)
{
    (void)state;
    struct kq_lua_blocks b = {0};
    assert_null(kq_lua_blocks_realloc(&b, NULL, 0, 0));
    assert_null(kq_lua_blocks_realloc(&b, NULL, 64, 0));
    assert_int_equal(b.kept_bytes, 0);
    kq_lua_blocks_release(&b);
}

static void test_resizes_keep_contents(void **state)
{
    (void)state;
    struct kq_lua_blocks b = {0};
    /* small -> same class -> larger class -> large -> larger -> small */
    static const size_t sizes[] = {10, 16, 100, 256, 257, 4000, 70, 1};
    size_t n = sizes[0];
    unsigned char *p = kq_lua_blocks_realloc(&b, NULL, 0, n);
    assert_non_null(p);
    fill(p, n, 3);
    for (size_t i = 1; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t m = sizes[i];
        p = kq_lua_blocks_realloc(&b, p, n, m);
        assert_non_null(p);
        check(p, n < m ? n : m, 3);
        fill(p, m, 3);
        n = m;
    }
    kq_lua_blocks_realloc(&b, p, n, 0);
    kq_lua_blocks_release(&b);
}

static void test_lists_bounded(void **state)
{
    (void)state;
    struct kq_lua_blocks b = {0};
    enum { N = KQ_LUA_BLOCKS_KEPT_BYTES / 256 + 10 };
    void **blocks = malloc(N * sizeof *blocks);
    assert_non_null(blocks);
    for (size_t i = 0; i < N; i++)
        assert_non_null(blocks[i] = kq_lua_blocks_realloc(&b, NULL, 0, 250));
    for (size_t i = 0; i < N; i++)
        kq_lua_blocks_realloc(&b, blocks[i], 250, 0);
    free(blocks);
    assert_int_equal(b.kept[(250 - 1) / 16], KQ_LUA_BLOCKS_KEPT_BYTES / 256);
    assert_int_equal(b.kept_bytes, KQ_LUA_BLOCKS_KEPT_BYTES);
    /* full: a small block freed now goes back to malloc; large blocks are never kept */
    void *small = kq_lua_blocks_realloc(&b, NULL, 0, 16);
    void *big = kq_lua_blocks_realloc(&b, NULL, 0, KQ_LUA_BLOCK_MAX + 1);
    kq_lua_blocks_realloc(&b, big, KQ_LUA_BLOCK_MAX + 1, 0);
    kq_lua_blocks_realloc(&b, small, 16, 0);
    assert_int_equal(b.kept[0], 0);
    assert_int_equal(b.kept_bytes, KQ_LUA_BLOCKS_KEPT_BYTES);
    /* one 256-byte block taken: room for a small one again */
    void *taken = kq_lua_blocks_realloc(&b, NULL, 0, 250);
    small = kq_lua_blocks_realloc(&b, NULL, 0, 16);
    kq_lua_blocks_realloc(&b, small, 16, 0);
    assert_int_equal(b.kept[0], 1);
    kq_lua_blocks_realloc(&b, taken, 250, 0); /* no room for it now */
    assert_int_equal(b.kept[(250 - 1) / 16], KQ_LUA_BLOCKS_KEPT_BYTES / 256 - 1);
    assert_true(b.kept_bytes <= KQ_LUA_BLOCKS_KEPT_BYTES);
    kq_lua_blocks_release(&b);
    assert_int_equal(b.kept_bytes, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reused_within_class),
        cmocka_unit_test(test_free_of_null),
        cmocka_unit_test(test_resizes_keep_contents),
        cmocka_unit_test(test_lists_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
