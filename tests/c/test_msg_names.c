/* A message's group lists (union kq_names): a list of one holds its name inline, a longer
 * one an array; adding, finding, removing back to one name and clearing keep the interned
 * names counted (none is left once the lists are cleared). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "broker/internal.h"

static void test_one_inline_then_array_then_back(void **state)
{
    (void)state;
    struct kq_broker b;
    memset(&b, 0, sizeof b);
    union kq_names v = {NULL};
    uint16_t n = 0;
    assert_int_equal(kq_names_add(&b, &v, &n, "a"), 0);
    assert_int_equal(n, 1);
    const char *a = kq_atom_find(&b, "a");
    assert_ptr_equal(v.one, a); /* inline: no array */
    assert_true(kq_names_has(&v, n, a));
    assert_int_equal(kq_names_add(&b, &v, &n, "a"), 0); /* already there */
    assert_int_equal(n, 1);
    assert_int_equal(kq_names_add(&b, &v, &n, "b"), 0);
    assert_int_equal(kq_names_add(&b, &v, &n, "c"), 0);
    assert_int_equal(n, 3);
    const char *const *view = kq_names_view(&v, n);
    assert_string_equal(view[0], "a");
    assert_string_equal(view[1], "b");
    assert_string_equal(view[2], "c");
    kq_names_remove(&v, &n, a);
    kq_names_remove(&v, &n, kq_atom_find(&b, "c"));
    assert_int_equal(n, 1);
    assert_string_equal(v.one, "b");    /* back to the inline form */
    assert_null(kq_atom_find(&b, "a")); /* its last reference went with it */
    assert_false(kq_names_has(&v, n, kq_atom_find(&b, "c")));
    kq_names_remove(&v, &n, NULL); /* no-op */
    assert_int_equal(n, 1);
    kq_names_clear(&v, &n);
    assert_int_equal(n, 0);
    assert_int_equal(kq_atoms_count(&b), 0);
}

static void test_two_lists_share_names(void **state)
{
    (void)state;
    struct kq_broker b;
    memset(&b, 0, sizeof b);
    union kq_names done = {NULL}, failed = {NULL};
    uint16_t n_done = 0, n_failed = 0;
    for (int i = 0; i < 40; i++) {
        char name[16];
        snprintf(name, sizeof name, "g%d", i);
        assert_int_equal(
            kq_names_add(&b, i % 2 ? &done : &failed, i % 2 ? &n_done : &n_failed, name), 0);
        assert_int_equal(kq_names_add(&b, &done, &n_done, "shared"), 0);
    }
    assert_int_equal(n_done, 21);
    assert_int_equal(n_failed, 20);
    assert_int_equal(kq_atoms_count(&b), 41);
    kq_names_clear(&done, &n_done);
    assert_int_equal(kq_atoms_count(&b), 20);
    kq_names_clear(&failed, &n_failed);
    assert_int_equal(kq_atoms_count(&b), 0);
}

/* The array grows by doubling and never shrinks: removing down to a power of two and adding
 * again must find room (an overflow here is what the sanitizer build would catch); a name
 * added by its atom counts the same as by its name. */
static void test_remove_then_grow_again(void **state)
{
    (void)state;
    struct kq_broker b;
    memset(&b, 0, sizeof b);
    union kq_names v = {NULL};
    uint16_t n = 0;
    char name[16];
    for (int i = 0; i < 9; i++) {
        snprintf(name, sizeof name, "g%d", i);
        assert_int_equal(kq_names_add(&b, &v, &n, name), 0);
    }
    for (int i = 0; i < 5; i++) { /* 9 -> 4 */
        snprintf(name, sizeof name, "g%d", i);
        kq_names_remove(&v, &n, kq_atom_find(&b, name));
    }
    assert_int_equal(n, 4);
    const char *held = kq_atom(&b, "by-atom");
    for (int i = 9; i < 26; i++) { /* 4 -> 21, one of them by its atom */
        snprintf(name, sizeof name, "g%d", i);
        assert_int_equal(i == 20 ? kq_names_add_atom(&v, &n, held) : kq_names_add(&b, &v, &n, name),
                         0);
    }
    assert_int_equal(kq_names_add_atom(&v, &n, held), 0); /* already there */
    assert_int_equal(n, 21);
    const char *const *view = kq_names_view(&v, n);
    assert_string_equal(view[0], "g5");
    assert_string_equal(view[4], "g9");
    assert_string_equal(view[15], "by-atom");
    assert_string_equal(view[20], "g25");
    kq_names_clear(&v, &n);
    assert_int_equal(kq_atoms_count(&b), 1); /* only the test's own reference */
    kq_atom_release(held);
    assert_int_equal(kq_atoms_count(&b), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_inline_then_array_then_back),
        cmocka_unit_test(test_two_lists_share_names),
        cmocka_unit_test(test_remove_then_grow_again),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
