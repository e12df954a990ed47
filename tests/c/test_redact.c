/* Secrets never printed: kq_redact on the shapes of text the broker prints (store URIs, config
 * errors quoting them, userinfo URLs), and every log line passes through it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/redact.h"
#include "support/log_capture.h"

static void test_redact_shapes(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"mysql://h:3306?db=kite&username=root&password=hunter2&shardnum=4",
         "mysql://h:3306?db=kite&username=root&password=***&shardnum=4"},
        {"listening db=mysql://h?password=p@ss:w0rd topics=2",
         "listening db=mysql://h?password=*** topics=2"},
        {"db: must be a store URI (got \"mysq://h?PassWord=x\")",
         "db: must be a store URI (got \"mysq://h?PassWord=***\")"},
        {"a pwd=1, secretKey=abc; token=t)", "a pwd=***, secretKey=***; token=***)"},
        {"mysql://root:hunter2@db:3306/kite", "mysql://root:***@db:3306/kite"},
        {"password=", "password="},
        /* nothing secret: unchanged */
        {"zk://127.0.0.1:2181,h2:2181?x=y", "zk://127.0.0.1:2181,h2:2181?x=y"},
        {"mysql://127.0.0.1:3306?db=kite&username=root",
         "mysql://127.0.0.1:3306?db=kite&username=root"},
        {"configure `groups` or -groups=g:secret", "configure `groups` or -groups=g:secret"},
        {"http://h:80/a@b", "http://h:80/a@b"},
    };
    char out[256];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kq_redact(cases[i].in, out, sizeof out);
        if (strcmp(out, cases[i].out) != 0)
            fail_msg("redact(%s) = %s, want %s", cases[i].in, out, cases[i].out);
        assert_int_equal(kq_redact_needed(cases[i].in), strcmp(cases[i].in, cases[i].out) != 0);
    }
    /* a short buffer is cut, never overrun, and never ends inside the secret */
    kq_redact("password=hunter2", out, 12);
    assert_string_equal(out, "password=**");
}

static void test_log_lines(void **state)
{
    (void)state;
    log_capture_begin();
    KQ_INFO("broker", "listening db=%s", "mysql://h?username=u&password=Hunter2x");
    KQ_ERROR("main", "cannot start: %s", "FILE: db: bad\nFILE: admin: bad");
    char *log = log_capture_end(KQ_LOG_INFO);
    assert_null(strstr(log, "Hunter2x"));
    assert_non_null(strstr(log, "info broker: listening db=mysql://h?username=u&password=***\n"));
    /* one event, one line, also for a list of problems */
    assert_non_null(strstr(log, "error main: cannot start: FILE: db: bad | FILE: admin: bad\n"));
    free(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redact_shapes),
        cmocka_unit_test(test_log_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
