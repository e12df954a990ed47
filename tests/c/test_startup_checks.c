/* Integration: `kiteq --check` makes the checks of a start (the same code: a file it accepts
 * starts, a file a start refuses fails the check with the same "FILE: key: reason"), reports
 * every problem of a file, warns about what is ignored, and no password reaches the log,
 * --check output or /stat of a broker using a MySQL store (MySQL need not run: the broker
 * starts while it is unreachable). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "support/assert_text.h"
#include "support/broker_proc.h"
#include "support/test_files.h"
#include "support/tmp_dir.h"

#define RUN_MS 15000
#define PASSWORD "S3cretPw-9"

static char dir[64];
static char out[16384];

static int setup(void **state)
{
    (void)state;
    return tmp_dir_make(dir, sizeof dir, "kq-checks-");
}

static int teardown(void **state)
{
    (void)state;
    return tmp_dir_remove(dir);
}

/* dir/cluster.lua: one cluster with the given lines; returns its path. */
static const char *write_config(const char *cluster_lines)
{
    static char path[128];
    snprintf(path, sizeof path, "%s/cluster.lua", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "return { clusters = { t = {\n  bind = \"127.0.0.1:0\", topics = { \"trade\" },\n"
            "  %s\n} } }\n",
            cluster_lines);
    fclose(f);
    return path;
}

static int check(const char *path)
{
    const char *args[] = {"--check", path, NULL};
    return kiteq_run(dir, args, out, sizeof out, RUN_MS);
}

/* What a start refuses, --check refuses with the same line; on today's code --check let
 * every one of these pass. */
static void test_check_makes_the_start_checks(void **state)
{
    (void)state;
    static const struct {
        const char *lines, *reason;
    } cases[] = {
        {"db = \"file://./data?fsync=sometimes\",",
         "db: fsync=sometimes: expected group, interval or none"},
        {"db = \"mysql://127.0.0.1:3306?db=kite&usr=root\",", "db: unknown store parameter 'usr'"},
        {"db = \"memory://\", policies = \"no-such-folder\",",
         "policies: no-such-folder: no such folder (working directory "},
        {"db = \"memory://\", admin = \"broker-admin.example:13801\", "
         "adminToken = \"0123456789abcdef\",",
         "admin: cannot listen on \"broker-admin.example:13801\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *path = write_config(cases[i].lines);
        char line[512];
        snprintf(line, sizeof line, "kiteq: %s: %s", path, cases[i].reason);
        if (check(path) != 2)
            fail_msg("--check accepted %s:\n%s", cases[i].lines, out);
        assert_has(out, line);
        /* the start refuses it for the same reason, before listening */
        const char *args[] = {path, NULL};
        assert_int_equal(kiteq_run(dir, args, out, sizeof out, RUN_MS), 1);
        snprintf(line, sizeof line, "main: cannot start: %s: %s", path, cases[i].reason);
        assert_has(out, line);
        assert_null(strstr(out, "ready port="));
    }
    /* and a good file passes both */
    const char *path = write_config("db = \"memory://\",");
    assert_int_equal(check(path), 0);
    assert_has(out, "kiteq: configuration OK (cluster t, bind 127.0.0.1:0, db memory://)");
}

/* Every problem of a file, each on its own line. */
static void test_check_reports_every_problem(void **state)
{
    (void)state;
    const char *path = write_config(
        "db = \"file://./data?fsync=sometimes\", policies = \"nope\", deliverySeconds = 0,\n"
        "  groups = { [\"p\"] = \"s\" },\n"
        "  bindings = { { groupIds = { \"s-a\", \"s-a\" }, topic = \"trade\", messageType = \"m\" "
        "} },");
    assert_int_equal(check(path), 2);
    char line[512];
    snprintf(line, sizeof line,
             "kiteq: %s: clusters.t.deliverySeconds: must be an integer >= 1 "
             "(got 0)\nkiteq: %s: clusters.t.bindings[1].groupIds[2]: this group is listed twice",
             path, path);
    assert_has(out, line);
    /* the file loads: now the whole configuration and the start checks */
    path = write_config("db = \"file://./data?fsync=sometimes\", policies = \"nope\",\n"
                        "  groups = { [\"p\"] = \"s\" },\n"
                        "  bindings = { { groupIds = { \"s-a\" }, topic = \"trade\", "
                        "messageType = \"m\" } },");
    assert_int_equal(check(path), 2);
    snprintf(line, sizeof line,
             "kiteq: %s: bindings (group s-a): names a group that is not in "
             "groups",
             path);
    assert_has(out, line);
    path = write_config("db = \"file://./data?fsync=sometimes\", policies = \"nope\",");
    assert_int_equal(check(path), 2);
    snprintf(line, sizeof line, "kiteq: %s: db: fsync=sometimes", path);
    assert_has(out, line);
    snprintf(line, sizeof line, "kiteq: %s: policies: nope: no such folder", path);
    assert_has(out, line);
}

/* What is ignored is said, and does not fail the check. */
static void test_check_warns(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/pol", dir);
    mkdir(path, 0700);
    snprintf(path, sizeof path, "%s/pol/Routing.lua", dir);
    test_write_file(path, "return {}\n");
    const char *cfg = write_config(
        "db = \"memory://\", policies = \"pol\",\n"
        "  bindings = { { groupIds = { \"s-a\" }, topic = \"trade\", bindType = \"fanout\",\n"
        "                 messageType = \"pay\" } },");
    assert_int_equal(check(cfg), 0);
    assert_has(out, "warn policy: pol/Routing.lua is not loaded: policy files are routing.lua, "
                    "flow.lua, retry.lua, publish.lua and auth.lua (did you mean routing.lua?)");
    assert_has(out, "clusters.t.bindings[1].messageType: ignored: a fanout binding receives every "
                    "message type");
    assert_has(out, "kiteq: configuration OK");
}

/* The MySQL password is in the config; it is in no output. */
static void test_password_never_printed(void **state)
{
    (void)state;
    char cfg[2048];
    struct broker_proc bp;
    broker_default_config(cfg, sizeof cfg,
                          "mysql://127.0.0.1:1?db=kite&username=root&password=" PASSWORD
                          "&timeout=1",
                          "admin = \"127.0.0.1:0\",");
    assert_int_equal(broker_start(&bp, cfg, NULL), 0);
    assert_true(broker_wait_log(&bp, "password=***", 5000));
    int admin = broker_admin_port(&bp);
    assert_true(admin > 0);

    /* --check of the same file */
    const char *args[] = {"--check", bp.config, NULL};
    assert_int_equal(kiteq_run(bp.dir, args, out, sizeof out, RUN_MS), 0);
    assert_has(out, "password=***");
    assert_null(strstr(out, PASSWORD));

    /* a reload refused because of a db that quotes the password: the log and /stat say
     * why, without it */
    char broken[2048];
    broker_default_config(broken, sizeof broken, "mysq://h?password=" PASSWORD,
                          "admin = \"127.0.0.1:0\",");
    test_write_file(bp.config, broken);
    kill(bp.pid, SIGHUP);
    assert_true(broker_wait_log(&bp, "reload: failed", 5000));
    assert_int_equal(admin_get(admin, "/stat", out, sizeof out), 200);
    assert_has(out, "mysq://h?password=***");
    assert_null(strstr(out, PASSWORD));

    assert_int_equal(broker_stop(&bp), 0);
    char *log = test_read_file(bp.log);
    assert_non_null(log);
    assert_has(log, "listening bind=127.0.0.1:0");
    if (strstr(log, PASSWORD))
        fail_msg("the log shows the password:\n%s", log);
    free(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_makes_the_start_checks),
        cmocka_unit_test(test_check_reports_every_problem),
        cmocka_unit_test(test_check_warns),
        cmocka_unit_test(test_password_never_printed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
