/* Text checks for cmocka tests (include after <cmocka.h> and <string.h>). */
#ifndef KQ_TEST_ASSERT_TEXT_H
#define KQ_TEST_ASSERT_TEXT_H

/* Fails the running test unless needle is in hay; shows both. */
#define assert_has(hay, needle)                                                                    \
    do {                                                                                           \
        const char *hay_ = (hay), *needle_ = (needle);                                             \
        if (!strstr(hay_, needle_))                                                                \
            fail_msg("expected \"%s\" in:\n%s", needle_, hay_);                                    \
    } while (0)
#endif
