/* The one Lua sandbox (src/sandbox): every escape route of issue #15 is tried against both
 * loaders that run operators' Lua, the config file loader and the policy loader, and each
 * must fail with its own reason (not a load that succeeds, not a crash or a hang). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "policy/policy.h"
#include "sandbox/watchdog.h"
#include "support/assert_text.h"
#include "support/tmp_dir.h"

static char tmpdir[64];
static char err[4096];

static int setup(void **state)
{
    (void)state;
    return tmp_dir_make(tmpdir, sizeof tmpdir, "kq-sandbox-");
}

static int teardown(void **state)
{
    (void)state;
    return tmp_dir_remove(tmpdir);
}

/* An escape attempt: Lua code that works in a plain LuaJIT and must fail in the sandbox,
 * with what each loader's error must say. */
struct escape {
    const char *name, *code, *policy_says, *config_says;
};

static const struct escape ESCAPES[] = {
    {"(\"\").dump", "local b = ('').dump(function() end)\n", "attempt to call field 'dump'",
     "attempt to call field 'dump'"},
    {"string.dump", "local b = string.dump(function() end)\n", "dump", "dump"},
    {"string metatable __index", "local s = getmetatable('').__index\n",
     "attempt to index a boolean value", "attempt to index a boolean value"},
    {"rawget of the string metatable", "local s = rawget(getmetatable(''), '__index')\n",
     "table expected, got boolean", "table expected, got boolean"},
    {"setmetatable on the string metatable", "setmetatable(getmetatable(''), nil)\n",
     "table expected, got boolean", "table expected, got boolean"},
    {"string metatable through a method", "local mt = ('').getmetatable\nlocal s = mt('')\n",
     "attempt to call local 'mt' (a nil value)", "attempt to call local 'mt' (a nil value)"},
    {"_G.string.dump", "local b = _G.string.dump(function() end)\n", "'_G'", "dump"},
    {"load", "local f = load(function() return nil end)\n", "'load'", "'load'"},
    {"loadstring", "local f = loadstring('return 1')\n", "'loadstring'", "'loadstring'"},
    {"loadfile", "local f = loadfile('/etc/passwd')\n", "'loadfile'", "'loadfile'"},
    {"dofile", "dofile('/etc/passwd')\n", "'dofile'", "'dofile'"},
    {"require", "local ffi = require('ffi')\n", "'require'", "'require'"},
    {"ffi", "local p = ffi.cast('int *', 0)\n", "'ffi'", "'ffi'"},
    {"jit", "jit.on()\n", "'jit'", "'jit'"},
    {"debug", "local r = debug.getregistry()\n", "'debug'", "'debug'"},
    {"getfenv", "local g = getfenv(0)\n", "'getfenv'", "'getfenv'"},
    {"io", "io.open('/etc/passwd')\n", "'io'", "'io'"},
    {"os", "os.exit(1)\n", "'os'", "'os'"},
    {"coroutine", "local c = coroutine.wrap(function() while true do end end)\nc()\n",
     "'coroutine'", "'coroutine'"},
    {"pcall (swallows a budget error)", "pcall(function() while true do end end)\n", "'pcall'",
     "'pcall'"},
    {"string.rep memory bomb", "local s = string.rep('x', 2^30)\n", "memory", "MiB"},
    {"doubling memory bomb", "local s = 'x'\nwhile true do s = s .. s end\n", "memory", "MiB"},
    {"deep recursion", "local function f(n) return 1 + f(n + 1) end\nf(1)\n", "stack overflow",
     "stack overflow"},
    {"infinite loop", "while true do end\n", "stopped: over the instruction budget",
     "stopped: the file runs too long"},
    {"backtracking pattern via a method", "local i = ('a'):rep(30):find(('a*'):rep(8) .. 'c')\n",
     "worst case", "worst case"},
};
#define N_ESCAPES (sizeof ESCAPES / sizeof ESCAPES[0])

static void write_file(const char *path, const char *a, const char *b)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(a, f);
    fputs(b, f);
    fclose(f);
}

/* Loads code (then `return {}`) as the policy folder's routing.lua; the load error, or NULL
 * when it loaded. */
static const char *policy_load(const char *code)
{
    char path[256];
    snprintf(path, sizeof path, "%s/routing.lua", tmpdir);
    write_file(path, code, "return {}\n");
    struct kq_policy *p = NULL;
    int rc = kq_policy_load(tmpdir, &p, err, sizeof err);
    kq_policy_free(p);
    return rc == 0 ? NULL : err;
}

/* Loads code (then a valid config) as a config file. */
static const char *config_load(const char *code)
{
    char path[256];
    snprintf(path, sizeof path, "%s/cluster.lua", tmpdir);
    write_file(path, code, "return { clusters = { dev = { topics = { 'trade' } } } }\n");
    struct kq_config c;
    kq_config_defaults(&c);
    int rc = kq_config_load_file(&c, path, NULL, err, sizeof err);
    kq_config_free(&c);
    return rc == 0 ? NULL : err;
}

/* Every escape through one loader; says_policy: which expected text applies. */
static void expect_escapes_stopped(const char *loader, const char *(*load)(const char *),
                                   bool says_policy)
{
    for (size_t i = 0; i < N_ESCAPES; i++) {
        const char *want = says_policy ? ESCAPES[i].policy_says : ESCAPES[i].config_says;
        const char *why = load(ESCAPES[i].code);
        if (!why)
            fail_msg("%s: escape \"%s\" was not stopped", loader, ESCAPES[i].name);
        if (!strstr(why, want))
            fail_msg("%s: escape \"%s\": expected \"%s\" in \"%s\"", loader, ESCAPES[i].name, want,
                     why);
    }
}

static void test_escapes_policy_loader(void **state)
{
    (void)state;
    expect_escapes_stopped("policy loader", policy_load, true);
}

static void test_escapes_config_loader(void **state)
{
    (void)state;
    expect_escapes_stopped("config loader", config_load, false);
}

/* A file that is bytecode (it starts with ESC, as LuaJIT's dumps do) is refused by both. */
static void test_bytecode_refused(void **state)
{
    (void)state;
    const char *dump = "\033LJ\002\000\000\000";
    assert_has(policy_load(dump), "must be Lua source text, not bytecode");
    assert_has(config_load(dump), "must be Lua source text, not bytecode");
}

/* What the sandbox keeps: string methods (bounded), a file's own copy of string (changing it
 * changes nothing for the next file or for s:method()), and the libraries each loader has. */
static void test_what_stays(void **state)
{
    (void)state;
    static const char keep[] =
        "assert(('abc'):upper() == 'ABC' and ('a-b'):gsub('-', '+') == 'a+b')\n"
        "assert(('x'):rep(3) == 'xxx' and ('k=v'):match('^(%w+)=') == 'k')\n"
        "assert(getmetatable('') == false and getmetatable(string) == nil)\n"
        "string.upper = nil\n"
        "assert(('abc'):upper() == 'ABC')\n"
        "assert(type(table.concat) == 'function' and math.floor(1.5) == 1)\n";
    const char *why = policy_load(keep);
    if (why)
        fail_msg("policy loader: %s", why);
    why = config_load(keep);
    if (why)
        fail_msg("config loader: %s", why);
    /* a file's change to its string table is its own: the next file sees the library */
    char path[256];
    snprintf(path, sizeof path, "%s/flow.lua", tmpdir);
    write_file(path, "assert(string.upper, 'string.upper changed by routing.lua')\n",
               "return {}\n");
    why = policy_load("string.upper = nil\n");
    remove(path);
    if (why)
        fail_msg("policy loader: %s", why);
    /* policies have bit, the config file has not */
    assert_null(policy_load("assert(bit.band(3, 1) == 1)\n"));
    assert_has(config_load("assert(bit.band(3, 1) == 1)\n"), "'bit'");
}

/* The same budgets hold inside a hook call: a hook that loops is stopped by the self-test of
 * the load, within the budget. */
static void test_hook_loop_stopped(void **state)
{
    (void)state;
    char path[256];
    snprintf(path, sizeof path, "%s/retry.lua", tmpdir);
    write_file(path, "return { retry = function(m) while true do end end }\n", "");
    struct kq_policy *p = NULL;
    int rc = kq_policy_load(tmpdir, &p, err, sizeof err);
    remove(path);
    kq_policy_free(p);
    assert_int_equal(rc, -EINVAL);
    assert_has(err, "stopped: over the instruction budget");
}

/* A policy state compiles the broker's own Lua with the JIT (compiled code runs without the
 * count hook), never an operator's function, whichever way it runs: a loop in a hook, a
 * closure made at run time, a function called many times, through a metamethod, as a
 * string.gsub or table.sort callback. Each way below is hot enough to be compiled within one
 * call and, compiled, would finish (within the time budget on a quiet host) instead of being
 * stopped by the count hook. */
static const char HOT[] =
    "local function sum(n) local x = 0; for i = 1, n do x = x + i end; return x end\n"
    "local function maker() return function(n) return sum(n) end end\n"
    "local lazy = setmetatable({}, { __index = function(t, k) return sum(k) end })\n"
    "local WAYS = {\n"
    "  loop = function() local x = 0; for i = 1, 2e6 do x = x + i end end,\n"
    "  closure = function() maker()(2e6) end,\n"
    "  calls = function() local f = maker(); for i = 1, 2e6 do f(1) end end,\n"
    "  metamethod = function() return lazy[2e6] end,\n"
    "  gsub = function() string.gsub(string.rep('a', 200), 'a', function() sum(1e4) end) end,\n"
    "  sort = function()\n"
    "    local t = {}; for i = 1, 200 do t[i] = 200 - i end\n"
    "    table.sort(t, function(a, b) sum(1000); return a < b end)\n"
    "  end,\n"
    "}\n"
    "return { on_publish = function(m)\n"
    "  local way = WAYS[m.message_type]; if way then way() end\n"
    "end }\n";

static void operators_code_never_compiled(void)
{
    char path[256];
    snprintf(path, sizeof path, "%s/publish.lua", tmpdir);
    write_file(path, HOT, "");
    struct kq_policy *p = NULL;
    int rc = kq_policy_load(tmpdir, &p, err, sizeof err);
    remove(path);
    assert_int_equal(rc, 0);
    static const char *const ways[] = {"loop", "calls", "closure", "metamethod", "gsub", "sort"};
    for (size_t i = 0; i < sizeof ways / sizeof ways[0]; i++) {
        struct kq_publish_view m = {.message_id = "0123456789abcdef0123456789abcdef",
                                    .topic = "trade",
                                    .message_type = ways[i],
                                    .group = "p-trade"};
        struct kq_publish_verdict v;
        for (int k = 0; k < 3; k++) /* warm: a trace would be there by the last one */
            kq_policy_publish(p, &m, &v);
        char want[64];
        /* stopped by the count hook (instructions, or time on a busy host); compiled, the
         * call would have finished: answered, or "slow call" */
        snprintf(want, sizeof want, "type=%s failed: stopped: over the", ways[i]);
        if (!strstr(kq_policy_last_failure(p), want))
            fail_msg("%s: expected \"%s\" in \"%s\"", ways[i], want, kq_policy_last_failure(p));
    }
    kq_policy_free(p);
}

static void test_operators_code_never_compiled(void **state)
{
    (void)state;
    operators_code_never_compiled();
}

/* The same as the broker runs traffic calls: without the count hook until the watchdog arms
 * it (sandbox/watchdog.h). Compiled, each way would finish within the grace. */
static void test_operators_code_never_compiled_watched(void **state)
{
    (void)state;
    int rc = kq_watchdog_start(err, sizeof err);
    if (rc == -ENOTSUP) /* a ThreadSanitizer build: every call stays counted */
        skip();
    assert_int_equal(rc, 0);
    operators_code_never_compiled();
    kq_watchdog_stop();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_escapes_policy_loader, setup, teardown),
        cmocka_unit_test_setup_teardown(test_escapes_config_loader, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bytecode_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_what_stays, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hook_loop_stopped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_operators_code_never_compiled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_operators_code_never_compiled_watched, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
