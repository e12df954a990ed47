/* Integration: kiteq-cli as a person (and a script) uses it, against a real broker (issue 16,
 * "kiteq-cli that fits a person's habits"): addresses from the environment, compact JSON when
 * piped and tables on request, pub's body sources and properties, sub's arrival time and
 * attempt, errors that say what is expected, and --help, README and the code agreeing on the
 * commands and exit codes. The tests run piped, so tables are asked for with --table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "support/assert_text.h"
#include "support/broker_proc.h"
#include "support/test_files.h"

#define PRODUCER "--group p-trade --secret secret"
#define CONSUMER "--group s-user-profile --secret 123456" /* the only group of user-profile */

static struct broker_proc bp;
static char admin[64], broker[64];

static int setup(void **state)
{
    (void)state;
    char cfg[4096];
    broker_default_config(cfg, sizeof cfg, "memory://", "admin = \"127.0.0.1:0\",");
    if (broker_start(&bp, cfg, NULL) != 0)
        return -1;
    snprintf(admin, sizeof admin, "127.0.0.1:%d", broker_admin_port(&bp));
    snprintf(broker, sizeof broker, "127.0.0.1:%d", bp.port);
    return broker_admin_port(&bp) > 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return broker_stop(&bp) == 0 ? 0 : -1;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* Publish one message to user-profile with extra pub options; its id into id. */
static void publish(const char *options, char id[33])
{
    const char *out = cli_expect(0, "pub --broker %s " PRODUCER " --topic user-profile --type t %s",
                                 broker, options);
    const char *p = strstr(out, "id=");
    assert_non_null(p);
    snprintf(id, 33, "%.32s", p + 3);
}

/* Consume n messages of user-profile as JSON lines (extra sub options: e.g. --nack). */
static cJSON *consume(int n, const char *options)
{
    char *out = NULL;
    assert_int_equal(cli_runf(&out, "sub --broker %s " CONSUMER " --count %d --timeout 10 %s",
                              broker, n, options),
                     0);
    cJSON *lines = cJSON_CreateArray();
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        if (!j)
            fail_msg("sub printed a line that is not JSON: %s", line);
        cJSON_AddItemToArray(lines, j);
    }
    free(out);
    assert_int_equal(cJSON_GetArraySize(lines), n);
    return lines;
}

static const char *str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* --- the tests ---------------------------------------------------------------------------- */

/* --help names every command (each answers its own --help) and the exit codes, and README.md
 * lists the same exit codes word for word. */
static void test_help_lists_commands_and_exit_codes(void **state)
{
    (void)state;
    char *help = strdup(cli_expect(0, "--help"));
    char *readme = test_read_source("README.md");

    enum { NONE, COMMANDS, EXIT_CODES } section = NONE;
    int commands = 0, codes = 0;
    for (char *line = strtok(help, "\n"); line; line = strtok(NULL, "\n")) {
        if (!strcmp(line, "commands:") || !strcmp(line, "exit codes:")) {
            section = line[0] == 'c' ? COMMANDS : EXIT_CODES;
            continue;
        }
        if (line[0] != ' ') {
            section = NONE;
            continue;
        }
        if (section == COMMANDS) {
            char name[32], want[64];
            assert_int_equal(sscanf(line, "%31s", name), 1);
            snprintf(want, sizeof want, "usage: kiteq-cli %s", name);
            char *out = cli_expect(0, "%s --help", name);
            assert_true(strncmp(out, want, strlen(want)) == 0);
            commands++;
        } else if (section == EXIT_CODES) {
            int code = -1;
            assert_int_equal(sscanf(line, " %d", &code), 1);
            assert_int_equal(code, codes); /* 0, 1, 2, 3 in order */
            assert_has(readme, line);
            codes++;
        }
    }
    free(help);
    free(readme);
    assert_true(commands >= 11);
    assert_int_equal(codes, 4);
    cli_expect(2, "no-such-command");
}

/* $KITEQ_ADMIN and $KITEQ_BROKER stand for --admin and --broker; piped JSON is one line. */
static void test_addresses_from_environment(void **state)
{
    (void)state;
    setenv("KITEQ_ADMIN", admin, 1);
    setenv("KITEQ_BROKER", broker, 1);
    char *out = cli_expect(0, "stat --json");
    assert_int_equal(count_lines(out), 1);
    cJSON *j = cJSON_Parse(out);
    assert_non_null(cJSON_GetObjectItem(j, "broker"));
    cJSON_Delete(j);
    out = cli_expect(0, "stat"); /* piped: the compact JSON too */
    assert_int_equal(count_lines(out), 1);
    cli_expect(0, "pub " PRODUCER " --topic user-profile --type t --body from-env");
    cJSON *lines = consume(1, "");
    assert_string_equal(str(cJSON_GetArrayItem(lines, 0), "body"), "from-env");
    cJSON_Delete(lines);
    /* --broker and the variable: the option wins; --registry with the variable is no conflict */
    cli_expect(3, "pub --broker 127.0.0.1:1 " PRODUCER " --topic user-profile --type t --body x");
    unsetenv("KITEQ_BROKER");
    cli_expect(2, "pub " PRODUCER " --topic user-profile --type t --body x"); /* no broker at all */
    setenv("KITEQ_ADMIN", "127.0.0.1:1", 1);
    assert_has(cli_expect(3, "stat"), "127.0.0.1:1"); /* nobody listens: says where it tried */
    unsetenv("KITEQ_ADMIN");
}

/* --pretty indents, --table prints the tables of stat, binds, groups. */
static void test_formats(void **state)
{
    (void)state;
    char *out = cli_expect(0, "stat --admin %s --pretty", admin);
    assert_true(count_lines(out) > 10);
    cJSON *j = cJSON_Parse(out);
    assert_non_null(j);
    cJSON_Delete(j);
    out = cli_expect(0, "stat --admin %s --table", admin);
    assert_has(out, "TOPIC");
    assert_has(out, "user-profile");
    assert_has(out, "BACKLOG");
    out = cli_expect(0, "binds --admin %s --table", admin);
    assert_has(out, "GROUP           TOPIC         MESSAGE TYPE  BIND    WATERMARK");
    assert_has(out, "s-user-profile  user-profile  *             fanout");
    out = cli_expect(0, "metrics --admin %s --pretty", admin); /* Prometheus text stays text */
    assert_has(out, "# TYPE");
    cli_expect(2, "metrics --admin %s --table", admin); /* no table for metrics */
}

/* pub: --body -, --file, --property (repeated), --delay; sub shows them with the arrival time
 * and the attempt. */
static void test_pub_body_sources_and_properties(void **state)
{
    (void)state;
    char id[3][33], file[400];
    snprintf(file, sizeof file, "%s/body.txt", bp.dir);
    test_write_file(file, "from a file");
    char opts[600];
    snprintf(opts, sizeof opts, "--file '%s' --property region=eu --property tier=gold", file);
    publish(opts, id[0]);
    publish("--body - --delay 250 < /dev/null", id[1]); /* an empty body from stdin */
    publish("--body plain", id[2]);
    cJSON *lines = consume(3, "");
    bool seen[3] = {false};
    for (int i = 0; i < 3; i++) {
        cJSON *m = cJSON_GetArrayItem(lines, i);
        const cJSON *props = cJSON_GetObjectItem(m, "properties");
        assert_int_equal(cJSON_GetObjectItem(m, "attempt")->valueint, 1);
        assert_int_equal(strlen(str(m, "receivedAt")), strlen("2024-01-02T03:04:05.678Z"));
        for (int k = 0; k < 3; k++) {
            if (strcmp(str(m, "messageId"), id[k]))
                continue;
            seen[k] = true;
            if (k == 0) {
                assert_string_equal(str(m, "body"), "from a file");
                assert_string_equal(str(props, "region"), "eu");
                assert_string_equal(str(props, "tier"), "gold");
            } else if (k == 1) {
                assert_string_equal(str(m, "body"), "");
                /* the broker turned the requested delay into the due time it stores */
                assert_null(cJSON_GetObjectItem(props, "x-kiteq-delay-ms"));
                assert_true(strlen(str(props, "x-kiteq-deliver-at")) >= 13);
            } else {
                assert_null(props);
            }
        }
    }
    assert_true(seen[0] && seen[1] && seen[2]);
    cJSON_Delete(lines);

    /* pacing: 4 messages at 10/s cannot take less than 300 ms */
    char *out = cli_expect(0,
                           "pub --broker %s " PRODUCER " --topic user-profile --type t --body r "
                           "--count 4 --rate 10",
                           broker);
    long ms = -1;
    const char *p = strstr(out, "elapsed_ms=");
    assert_non_null(p);
    sscanf(p, "elapsed_ms=%ld", &ms);
    assert_true(ms >= 300);
    cJSON_Delete(consume(4, ""));

    const char *base = "pub --broker 127.0.0.1:1 " PRODUCER " --topic user-profile --type t";
    assert_has(cli_expect(2, "%s --body a --file x", base), "exactly one of");
    assert_has(cli_expect(2, "%s --file /no/such/file", base), "/no/such/file");
    assert_has(cli_expect(2, "%s --body a --property novalue", base), "expected KEY=VALUE");
    assert_has(cli_expect(2, "%s --body a --delay 5 --property x-kiteq-delay-ms=5", base),
               "not both");
}

/* A message nacked by sub comes back to the same sub as attempt 2. */
static void test_sub_counts_attempts(void **state)
{
    (void)state;
    char id[33];
    publish("--body again", id);
    cJSON *lines = consume(2, "--nack");
    assert_string_equal(str(cJSON_GetArrayItem(lines, 0), "messageId"), id);
    assert_string_equal(str(cJSON_GetArrayItem(lines, 1), "messageId"), id);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(lines, 1), "attempt")->valueint, 2);
    cJSON_Delete(lines);
    cJSON_Delete(consume(1, "")); /* acked now */
}

/* msg ID: a table of events with --table, one line of JSON piped. */
static void test_msg_history_table(void **state)
{
    (void)state;
    char id[33];
    publish("--body hist", id);
    cJSON_Delete(consume(1, ""));
    char *out = cli_expect(0, "msg --admin %s --table %s", admin, id);
    assert_has(out, "TIME");
    assert_has(out, "EVENT");
    assert_has(out, "CONNECTION");
    assert_has(out, "DETAIL");
    assert_has(out, "published");
    assert_has(out, "p-trade");
    assert_has(out, "attempt=1");
    assert_has(out, "s-user-profile");
    out = cli_expect(0, "msg --admin %s %s", admin, id);
    assert_int_equal(count_lines(out), 1);
    cJSON *j = cJSON_Parse(out);
    assert_non_null(cJSON_GetObjectItem(j, "history"));
    cJSON_Delete(j);
}

/* dlq list --table shows a dead letter; unknown ids and topics are errors that say so. */
static void test_dlq_table_and_unknowns(void **state)
{
    (void)state;
    char id[33];
    publish("--body dead --limit 1", id);
    cJSON_Delete(consume(1, "--nack"));
    char *out = NULL;
    /* dead-lettered when the nack is handled: wait for it, at most 5 s */
    for (int i = 0;
         i < 50 && !strstr(out = cli_expect(0, "dlq list --admin %s --table", admin), id); i++)
        nanosleep(&(struct timespec){.tv_nsec = 100 * 1000000}, NULL);
    assert_has(out, "MESSAGE ID");
    assert_has(out, id);
    assert_has(out, "deliver limit");
    assert_has(cli_expect(1, "dlq requeue --admin %s --id 00000000000000000000000000000000", admin),
               "no dead letter with this id");
    assert_has(cli_expect(1, "dlq purge --admin %s --topic no-such-topic", admin), "unknown topic");
    cli_expect(2, "dlq purge --admin %s --topic user-profile --table", admin);
}

/* Usage errors say what is expected and exit 2. */
static void test_usage_errors(void **state)
{
    (void)state;
    assert_has(cli_expect(2, "sub --broker %s " CONSUMER " --topic user-profile", broker),
               "need --registry");
    assert_has(cli_expect(2, "sub --broker %s " CONSUMER " --watermark 5", broker),
               "need --registry");
    assert_has(cli_expect(2, "pub --broker nocolon " PRODUCER " --topic t --type m --body x"),
               "expected HOST:PORT");
    assert_has(cli_expect(2, "sub --registry 127.0.0.1:2181 " CONSUMER " --topic t --type m"),
               "expected zk://HOST:PORT");
    assert_has(cli_expect(2, "stat --admin 127.0.0.1"), "expected HOST:PORT");
    assert_has(cli_expect(2, "stat --admin %s --bogus", admin), "see 'kiteq-cli stat --help'");
    assert_has(cli_expect(2, "msg --admin %s", admin), "missing MESSAGE_ID");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help_lists_commands_and_exit_codes),
        cmocka_unit_test(test_addresses_from_environment),
        cmocka_unit_test(test_formats),
        cmocka_unit_test(test_pub_body_sources_and_properties),
        cmocka_unit_test(test_sub_counts_attempts),
        cmocka_unit_test(test_msg_history_table),
        cmocka_unit_test(test_dlq_table_and_unknowns),
        cmocka_unit_test(test_usage_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
