/* kq_hex_digit, the one hex-digit reader that the admin's URL decoding, the MySQL shard choice
 * and the golden-frame loader share; and the shard choice's fallback for a last character that
 * is not a hex digit (the original's: shard 0). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "core/text.h"
#include "store/mysql/schema.h"

static void test_hex_digit(void **state)
{
    (void)state;
    const char *digits = "0123456789abcdef", *upper = "ABCDEF";
    for (int v = 0; v < 16; v++)
        assert_int_equal(kq_hex_digit(digits[v]), v);
    for (int v = 0; v < 6; v++)
        assert_int_equal(kq_hex_digit(upper[v]), 10 + v);
    for (int c = -128; c < 128; c++)
        if (!strchr("0123456789abcdefABCDEF", c) || c == 0)
            assert_int_equal(kq_hex_digit((char)c), -1);
}

static void test_shard_of_last_digit(void **state)
{
    (void)state;
    int db, tb;
    kq_mysql_shard("0123456789abcdef0123456789abcdef", 4, &db, &tb); /* 15 = db 3, table 3 */
    assert_int_equal(db, 3);
    assert_int_equal(tb, 3);
    kq_mysql_shard("0123456789abcdef0123456789abcdeA", 4, &db, &tb); /* 10 = db 2, table 2 */
    assert_int_equal(db, 2);
    assert_int_equal(tb, 2);
    kq_mysql_shard("0123456789abcdef0123456789abcdez", 4, &db, &tb); /* not hex: shard 0 */
    assert_int_equal(db, 0);
    assert_int_equal(tb, 0);
    kq_mysql_shard("", 4, &db, &tb);
    assert_int_equal(db, 0);
    assert_int_equal(tb, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hex_digit),
        cmocka_unit_test(test_shard_of_last_digit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
