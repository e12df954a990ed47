/* `kiteq policy check|call` run by the real binary, and which policy is live: /stat and
 * /metrics show each loaded file's sha256 and load time, the load log line lists them, a
 * failed reload's last_error carries its time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cjson/cJSON.h>

#include "support/assert_text.h"
#include "support/broker_proc.h"
#include "support/test_files.h"
#include "support/tmp_dir.h"

static char dir[64];
static char out[65536];

static int setup(void **state)
{
    (void)state;
    if (tmp_dir_make(dir, sizeof dir, "kq-policy-tool-") != 0)
        return -1;
    char sub[128];
    snprintf(sub, sizeof sub, "%s/policies", dir);
    return mkdir(sub, 0755);
}

static int teardown(void **state)
{
    (void)state;
    return tmp_dir_remove(dir);
}

static void write_file(const char *folder, const char *name, const char *text)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", folder, name);
    test_write_file(path, text);
}

/* Copies the shipped example FILE into the test's policies folder as AS. */
static void copy_example(const char *file, const char *as)
{
    char from[512], to[512], cmd[1200];
    snprintf(from, sizeof from, "%s/lua/policies/examples/%s", getenv("KITEQ_SOURCE_DIR"), file);
    snprintf(to, sizeof to, "%s/policies/%s", dir, as);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", from, to);
    assert_int_equal(system(cmd), 0);
}

/* The sha256 of text, lowercase hex (what the broker must show for a file holding it). */
static void sha256_hex(const char *text, char hex[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    assert_int_equal(EVP_Digest(text, strlen(text), md, &n, EVP_sha256(), NULL), 1);
    for (unsigned int i = 0; i < n; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

static int run(const char *const *args) { return kiteq_run(dir, args, out, sizeof out, 15000); }

static const char RETRY[] = "return { retry = function(m)\n"
                            "  if m.reason == 'loop' then while true do end end\n"
                            "  if m.reason == 'bad' then return 'sometimes' end\n"
                            "  return 'retry', 1234\n"
                            "end }\n";

static void test_check(void **state)
{
    (void)state;
    write_file(dir, "policies/retry.lua", RETRY);
    char hash[65], line[128];
    sha256_hex(RETRY, hash);
    assert_int_equal(run((const char *[]){"policy", "check", "policies", NULL}), 0);
    assert_has(out, "policies policies: loaded, self-tests passed");
    assert_has(out, "hook retry        lua");
    assert_has(out, "hook route        built-in");
    snprintf(line, sizeof line, "file retry.lua    sha256=%s", hash);
    assert_has(out, line);
    /* a folder that does not load: exit 1, the reason as a start would give it */
    write_file(dir, "policies/flow.lua",
               "return { intake = function() return { rate = -1 } end }\n");
    assert_int_equal(run((const char *[]){"policy", "check", "policies", NULL}), 1);
    assert_has(out, "flow.lua");
    assert_has(out, "self-test");
    assert_int_equal(run((const char *[]){"policy", "check", "nonexistent", NULL}), 1);
    assert_has(out, "nonexistent: no such folder");
    assert_int_equal(run((const char *[]){"policy", "check", NULL}), 2);
    assert_has(out, "usage: kiteq policy check DIR");
}

static void test_call(void **state)
{
    (void)state;
    write_file(dir, "policies/retry.lua", RETRY);
    /* the hook's own answer */
    assert_int_equal(run((const char *[]){"policy", "call", "policies", "retry",
                                          "{\"attempts\": 3, \"reason\": \"nack\"}", NULL}),
                     0);
    assert_has(out, "{\"verdict\":\"retry\",\"delay_ms\":1234}");
    /* an endless loop: stopped within the budget, the built-in answer applies (3 -> 5 s) */
    assert_int_equal(run((const char *[]){"policy", "call", "policies", "retry",
                                          "{\"attempts\": 3, \"reason\": \"loop\"}", NULL}),
                     1);
    assert_has(out, "{\"verdict\":\"retry\",\"delay_ms\":5000}");
    assert_has(out, "stopped: over the "); /* instruction or time budget: a loaded machine */
    /* an invalid answer: refused by C's validation, the built-in answer applies */
    assert_int_equal(run((const char *[]){"policy", "call", "policies", "retry",
                                          "{\"attempts\": 0, \"reason\": \"bad\"}", NULL}),
                     1);
    assert_has(out, "{\"verdict\":\"retry\",\"delay_ms\":0}");
    assert_has(out, "hook=retry failed");
    /* a hook the folder does not define: the built-in answer, said so */
    assert_int_equal(run((const char *[]){"policy", "call", "policies", "flow.group",
                                          "{\"watermark\": 1000}", NULL}),
                     1);
    assert_has(out, "{\"rate\":1000,\"burst\":500,\"window\":1000}");
    assert_has(out, "flow.group is not defined by the policies");
    /* usage errors */
    assert_int_equal(run((const char *[]){"policy", "call", "policies", "nope", "{}", NULL}), 2);
    assert_has(out, "unknown hook 'nope' (hooks: route retry flow.intake flow.group publish "
                    "route_message connect dead)");
    assert_int_equal(run((const char *[]){"policy", "call", "policies", "retry", "{", NULL}), 2);
    assert_has(out, "JSON-ARGS is not valid JSON");
    assert_int_equal(
        run((const char *[]){"policy", "call", "policies", "retry", "{\"attempts\": \"3\"}", NULL}),
        2);
    assert_has(out, "attempts: must be a whole number");
    /* a misspelt argument would take the self-test's value: refused, naming the real ones */
    assert_int_equal(
        run((const char *[]){"policy", "call", "policies", "retry", "{\"atempts\": 3}", NULL}), 2);
    assert_has(out, "retry: unknown argument 'atempts' (arguments: attempts deliver_limit "
                    "expired_time now reason)");
    assert_int_equal(
        run((const char *[]){"policy", "call", "policies", "route",
                             "{\"bindings\": [{\"group\": \"g\", \"messagetype\": \"x\"}]}", NULL}),
        2);
    assert_has(out, "bindings[1]: unknown argument 'messagetype'");
}

/* route_message, on_connect and on_dead from the shell, with the shipped examples: each
 * answer as applied, and the built-in one (exit 1, the reason) where C overrules the hook. */
static void test_call_message_hooks(void **state)
{
    (void)state;
    copy_example("routing_by_property.lua", "routing.lua");
    copy_example("auth_allowlist.lua", "auth.lua");
    copy_example("dead_to_handler.lua", "retry.lua");
    const char *binds = "\"bindings\": [{\"group\": \"s-eu\", \"message_type\": \"x\"},"
                        "{\"group\": \"s-all\", \"message_type\": \"*\", "
                        "\"bind_type\": \"fanout\"}]";
    char args[512];
    snprintf(args, sizeof args,
             "{\"topic\": \"trade\", \"message_type\": \"pay\", "
             "\"properties\": {\"region\": \"eu\"}, %s}",
             binds);
    assert_int_equal(
        run((const char *[]){"policy", "call", "policies", "route_message", args, NULL}), 0);
    assert_has(out, "{\"groups\":[{\"group\":\"s-eu\",\"persistent\":true,"
                    "\"watermark\":6000}]}");
    /* nil (no region): the built-in routing, the hook's own answer */
    snprintf(args, sizeof args, "{\"topic\": \"trade\", \"message_type\": \"pay\", %s}", binds);
    assert_int_equal(
        run((const char *[]){"policy", "call", "policies", "route_message", args, NULL}), 0);
    assert_has(out, "{\"groups\":[{\"group\":\"s-all\"");

    assert_int_equal(
        run((const char *[]){"policy", "call", "policies", "connect",
                             "{\"group\": \"s-trade-a\", \"peer_ip\": \"10.9.9.9\"}", NULL}),
        0);
    assert_has(out, "{\"action\":\"reject\",\"reason\":\"group s-trade-a may not connect "
                    "from 10.9.9.9\"}");
    assert_int_equal(
        run((const char *[]){"policy", "call", "policies", "connect",
                             "{\"group\": \"s-trade-a\", \"peer_ip\": \"127.0.0.1\"}", NULL}),
        0);
    assert_has(out, "{\"action\":\"accept\"}");
    /* the hook accepts, the wrong secret does not: refused, and said why */
    assert_int_equal(run((const char *[]){"policy", "call", "policies", "connect",
                                          "{\"group\": \"s-other\", \"secret_ok\": false}", NULL}),
                     1);
    assert_has(out, "{\"action\":\"reject\",\"reason\":\"unknown groupId or wrong "
                    "secretKey\"}");
    assert_has(out, "the hook can only tighten");

    const char *handler = "\"bindings\": [{\"group\": \"s-dead-handler\", "
                          "\"message_type\": \"dead\"}]";
    snprintf(args, sizeof args,
             "{\"topic\": \"trade\", \"message_type\": \"pay\", "
             "\"reason\": \"expired\", %s}",
             handler);
    assert_int_equal(run((const char *[]){"policy", "call", "policies", "dead", args, NULL}), 0);
    assert_has(out, "{\"action\":\"handover\",\"groups\":[\"s-dead-handler\"]}");
    snprintf(args, sizeof args, "{\"topic\": \"trade\", \"message_type\": \"debug-x\"}");
    assert_int_equal(run((const char *[]){"policy", "call", "policies", "dead", args, NULL}), 0);
    assert_has(out, "{\"action\":\"drop\"}");
    /* a two-phase message never committed cannot be handed over: the dead-letter store */
    snprintf(args, sizeof args, "{\"topic\": \"trade\", \"commit\": false, %s}", handler);
    assert_int_equal(run((const char *[]){"policy", "call", "policies", "dead", args, NULL}), 1);
    assert_has(out, "{\"action\":\"dlq\"}");
    assert_has(out, "never committed");
}

/* The shipped policies answer route calls as the built-in rules do (bindings in the shape
 * the hook sees them). */
static void test_call_route_shipped(void **state)
{
    (void)state;
    char shipped[512];
    test_source_path(shipped, sizeof shipped, "lua/policies");
    assert_int_equal(
        run((const char *[]){
            "policy", "call", shipped, "route",
            "{\"topic\": \"trade\", \"message_type\": \"pay-200\", \"bindings\": ["
            "{\"group\": \"s-a\", \"message_type\": \"pay-\\\\d+\", \"bind_type\": \"regx\"},"
            "{\"group\": \"s-b\", \"message_type\": \"refund\"},"
            "{\"group\": \"s-c\", \"message_type\": \"*\", \"bind_type\": \"fanout\", "
            "\"persistent\": false, \"watermark\": 50}]}",
            NULL}),
        0);
    assert_has(out, "{\"groups\":[{\"group\":\"s-a\",\"persistent\":true,\"watermark\":6000},"
                    "{\"group\":\"s-c\",\"persistent\":false,\"watermark\":50}]}");
}

/* /stat, /metrics and the load log line name the live files; a failed reload's last_error
 * carries its time. */
static void test_live_policy(void **state)
{
    (void)state;
    struct broker_proc bp;
    assert_int_equal(broker_prepare(&bp), 0);
    char folder[512];
    snprintf(folder, sizeof folder, "%s/policies", bp.dir);
    assert_int_equal(mkdir(folder, 0755), 0);
    write_file(folder, "retry.lua", RETRY);
    char hash[65], want[256];
    sha256_hex(RETRY, hash);
    char cfg[4096];
    broker_default_config(cfg, sizeof cfg, "memory://",
                          "policies = \"policies\", admin = \"127.0.0.1:0\",");
    assert_int_equal(broker_launch(&bp, cfg, "127.0.0.1:0", NULL), 0);
    snprintf(want, sizeof want, "sha256=retry.lua:%s", hash);
    assert_true(broker_wait_log(&bp, want, 1));
    int admin = broker_admin_port(&bp);
    assert_true(admin > 0);

    assert_int_equal(admin_get(admin, "/stat", out, sizeof out), 200);
    cJSON *stat = cJSON_Parse(strstr(out, "{"));
    assert_non_null(stat);
    cJSON *files = cJSON_GetObjectItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(stat, "broker"), "policy"), "files");
    assert_int_equal(cJSON_GetArraySize(files), 1);
    cJSON *f = cJSON_GetArrayItem(files, 0);
    assert_string_equal(cJSON_GetObjectItem(f, "file")->valuestring, "retry.lua");
    assert_string_equal(cJSON_GetObjectItem(f, "sha256")->valuestring, hash);
    assert_true(cJSON_GetObjectItem(f, "loaded_at")->valuedouble > 1.6e12);
    cJSON_Delete(stat);

    assert_int_equal(admin_get(admin, "/metrics", out, sizeof out), 200);
    snprintf(want, sizeof want, "kiteq_policy_info{file=\"retry.lua\",sha256=\"%s\"}", hash);
    assert_true(prom_sample(out, want) == 1);
    assert_true(prom_sample(out, "kiteq_policy_loaded_timestamp_seconds{file=\"retry.lua\"}") >
                1.6e9);

    /* a broken edit: the old file stays live, last_error says why and when */
    write_file(folder, "retry.lua", "return { retry = 42 }\n");
    assert_int_equal(kill(bp.pid, SIGHUP), 0);
    assert_true(broker_wait_log(&bp, "reload: failed", 10000));
    assert_int_equal(admin_get(admin, "/stat", out, sizeof out), 200);
    assert_has(out, "retry must be a function");
    assert_has(out, "\"last_error_at\":");
    assert_has(out, hash);
    assert_int_equal(broker_stop(&bp), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_check, setup, teardown),
        cmocka_unit_test_setup_teardown(test_call, setup, teardown),
        cmocka_unit_test_setup_teardown(test_call_route_shipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_call_message_hooks, setup, teardown),
        cmocka_unit_test(test_live_policy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
