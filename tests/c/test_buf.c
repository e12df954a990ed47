/* The growable byte buffer: appends keep every byte in order; a size no memory can hold is
 * refused (marked failed) at once, not looped on; a failure sticks until kq_buf_free. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"

static void test_appends_keep_order(void **state)
{
    (void)state;
    struct kq_buf b = {0};
    char chunk[1000];
    for (int i = 0; i < 100; i++) { /* grows past the first 4 KiB several times */
        memset(chunk, 'a' + i % 26, sizeof chunk);
        assert_int_equal(kq_buf_append(&b, chunk, sizeof chunk), 0);
    }
    assert_int_equal(b.len, 100000);
    for (int i = 0; i < 100; i++)
        assert_int_equal(b.data[i * 1000 + 999], 'a' + i % 26);
    assert_false(b.failed);
    kq_buf_free(&b);
}

static void test_impossible_sizes_are_refused(void **state)
{
    (void)state;
    struct kq_buf b = {0};
    /* on an empty buffer the doubling used to wrap to 0 and loop forever */
    assert_int_equal(kq_buf_reserve(&b, SIZE_MAX), -ENOMEM);
    assert_int_equal(kq_buf_reserve(&b, SIZE_MAX / 2 + 1), -ENOMEM);
    assert_true(b.failed);
    assert_int_equal(kq_buf_append(&b, "x", 1), 0); /* the buffer still works ... */
    assert_true(b.failed);                          /* ... and still says a piece is missing */
    assert_int_equal(kq_buf_reserve(&b, SIZE_MAX - 1), -ENOMEM); /* with bytes in it too */
    kq_buf_free(&b);
    assert_false(b.failed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_appends_keep_order),
        cmocka_unit_test(test_impossible_sizes_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
