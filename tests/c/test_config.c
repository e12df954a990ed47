/* Config loader: the shipped files, defaults, flag overrides, and every error class with a
 * message naming the file and the key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "core/clock.h"
#include "sandbox/lua_budget.h"
#include "support/assert_text.h"
#include "support/log_capture.h"
#include "support/tmp_dir.h"
#include "support/test_files.h"
#include "core/addr.h"

static char tmpdir[64];
static char err[4096];

static int setup(void **state)
{
    (void)state;
    return tmp_dir_make(tmpdir, sizeof tmpdir, "kq-config-");
}

static int teardown(void **state)
{
    (void)state;
    return tmp_dir_remove(tmpdir);
}

/* Writes content to tmpdir/name; returns the path (static buffer, one per call site use). */
static const char *write_tmp(const char *name, const char *content)
{
    static char path[8][256];
    static int next;
    char *p = path[next++ % 8];
    snprintf(p, 256, "%s/%s", tmpdir, name);
    test_write_file(p, content);
    return p;
}

static const char *source_file(const char *rel)
{
    static char path[512];
    return test_source_path(path, sizeof path, rel);
}

/* Loads a file with the given content and expects an error containing every fragment. */
static void expect_load_error(const char *content, const char *cluster, ...)
{
    struct kq_config c;
    kq_config_defaults(&c);
    const char *path = write_tmp("bad.lua", content);
    int rc = kq_config_load_file(&c, path, cluster, err, sizeof err);
    if (rc == 0)
        fail_msg("expected an error for:\n%s", content);
    assert_int_equal(rc, -EINVAL);
    assert_has(err, path);
    va_list ap;
    va_start(ap, cluster);
    for (const char *frag; (frag = va_arg(ap, const char *));)
        assert_has(err, frag);
    va_end(ap);
    kq_config_free(&c);
}

static const struct kq_binding *find_binding(const struct kq_config *c, const char *group,
                                             const char *mtype)
{
    for (size_t i = 0; i < c->n_bindings; i++)
        if (!strcmp(c->bindings[i].group_id, group) && !strcmp(c->bindings[i].message_type, mtype))
            return &c->bindings[i];
    return NULL;
}

/* ---- good configurations ------------------------------------------------------------ */

static void test_defaults(void **state)
{
    (void)state;
    struct kq_config c;
    kq_config_defaults(&c);
    assert_null(c.config_path);
    assert_string_equal(c.registry, "");
    assert_string_equal(c.bind, "127.0.0.1:13800");
    assert_string_equal(c.db, "file://./data");
    assert_int_equal(c.delivery_seconds, 5);
    assert_int_equal(c.max_deliver_workers, 8000);
    assert_int_equal(c.recover_seconds, 10);
    assert_int_equal(c.recieve_permits_per_second, 20000);
    assert_int_equal(c.dlq_exec_hour, 2);
    assert_false(c.delivery_first);
    assert_int_equal(c.heartbeat_timeout_seconds, 90);
    assert_null(c.admin);
    assert_string_equal(c.policies, "lua/policies");
    assert_string_equal(c.log_level, "info");
    assert_int_equal(c.n_topics, 0);
    /* no topics yet: not a runnable config */
    assert_int_equal(kq_config_validate(&c, err, sizeof err), -EINVAL);
    assert_has(err, "topics");
    kq_config_free(&c);

    /* a minimal file: its only cluster is used, everything else keeps its default */
    kq_config_defaults(&c);
    const char *path = write_tmp("min.lua", "return { clusters = { solo = { topics = {'t'} } } }");
    assert_int_equal(kq_config_load_file(&c, path, NULL, err, sizeof err), 0);
    assert_int_equal(kq_config_validate(&c, err, sizeof err), 0);
    assert_string_equal(c.cluster_name, "solo");
    assert_string_equal(c.config_path, path);
    assert_string_equal(c.db, "file://./data");
    assert_int_equal(c.delivery_seconds, 5);
    assert_true(kq_config_has_topic(&c, "t"));
    assert_false(kq_config_has_topic(&c, "u"));
    assert_null(kq_config_group_secret(&c, "g"));
    kq_config_free(&c);
}

static void test_shipped_cluster(void **state)
{
    (void)state;
    struct kq_config c;
    kq_config_defaults(&c);
    int rc = kq_config_load_file(&c, source_file("lua/config/cluster.lua"), NULL, err, sizeof err);
    if (rc)
        fail_msg("%s", err);
    assert_int_equal(kq_config_validate(&c, err, sizeof err), 0);
    assert_string_equal(c.cluster_name, "dev");
    assert_string_equal(c.bind, "127.0.0.1:13800");
    assert_string_equal(c.db, "file://./data?fsync=group");
    assert_string_equal(c.registry, "");
    assert_int_equal(c.n_topics, 2);
    assert_true(kq_config_has_topic(&c, "trade"));
    assert_true(kq_config_has_topic(&c, "user-profile"));
    assert_string_equal(c.admin, "127.0.0.1:13801");
    assert_string_equal(kq_config_group_secret(&c, "s-trade-a"), "secret-a");
    assert_string_equal(kq_config_group_secret(&c, "p-trade"), "secret-p");
    assert_true(c.n_bindings >= 3);
    const struct kq_binding *b = find_binding(&c, "s-trade-a", "pay-succ");
    assert_non_null(b);
    assert_int_equal(b->bind_type, KQ_BIND_DIRECT);
    assert_int_equal(b->watermark, 1000);
    assert_true(b->persistent);
    b = find_binding(&c, "s-trade-a", "*");
    assert_non_null(b);
    assert_int_equal(b->bind_type, KQ_BIND_FANOUT);
    assert_string_equal(b->topic, "user-profile");
    assert_int_equal(b->watermark, 6000);
    assert_false(b->persistent);
    for (size_t i = 0; i < c.n_bindings; i++)
        assert_true(kq_config_has_topic(&c, c.bindings[i].topic));
    kq_config_free(&c);

    kq_config_defaults(&c);
    rc = kq_config_load_file(&c, source_file("lua/config/memory.lua"), NULL, err, sizeof err);
    if (rc)
        fail_msg("%s", err);
    assert_string_equal(c.db, "memory://");
    assert_int_equal(kq_config_validate(&c, err, sizeof err), 0);
    kq_config_free(&c);

    static const char *const zk_clusters[] = {"online", "pre"};
    for (int i = 0; i < 2; i++) {
        kq_config_defaults(&c);
        rc = kq_config_load_file(&c, source_file("lua/config/examples/zookeeper.lua"),
                                 zk_clusters[i], err, sizeof err);
        if (rc)
            fail_msg("%s", err);
        assert_int_equal(kq_config_validate(&c, err, sizeof err), 0);
        assert_int_equal(strncmp(c.registry, "zk://", 5), 0);
        assert_int_equal(c.n_topics, 3);
        assert_int_equal(c.n_bindings, 0);
        kq_config_free(&c);
    }
}

static void test_file_features(void **state)
{
    (void)state;
    struct kq_config c;
    kq_config_defaults(&c);
    const char *path = write_tmp(
        "multi.lua",
        "local common = { deliverySeconds = 7, topics = { 'a', 'b' } }\n"
        "local function cluster(extra)\n"
        "  local t = {}\n"
        "  for k, v in pairs(common) do t[k] = v end\n"
        "  for k, v in pairs(extra) do t[k] = v end\n"
        "  return t\n"
        "end\n"
        "return {\n"
        "  default = 'one',\n"
        "  registry = 'zk://10.0.0.1:2181,10.0.0.2:2181',\n"
        "  clusters = {\n"
        "    one = cluster { bind = '0.0.0.0:14000', admin = false, deliveryFirst = true },\n"
        "    two = cluster { topics = { 'c' }, registry = '',\n"
        "                    bindings = { { groupIds = {'g'}, topic = 'c', messageType = 'x' } } "
        "},\n"
        "  },\n"
        "  bindings = {\n"
        "    { groupIds = { 'g1', 'g2' }, topic = 'a', messageType = 'm', bindType = 'REGX',\n"
        "      watermark = 0 },\n"
        "    { groupIds = { 'g3' }, topic = 'b', bindType = 2, messageType = 'ignored' },\n"
        "    { groupIds = { 'g4' }, topic = 'c', messageType = 'only-in-two', bindType = 0 },\n"
        "  },\n"
        "}\n");
    assert_int_equal(kq_config_load_file(&c, path, NULL, err, sizeof err), 0);
    assert_string_equal(c.cluster_name, "one");
    assert_int_equal(c.delivery_seconds, 7);
    assert_true(c.delivery_first);
    assert_null(c.admin);
    assert_string_equal(c.bind, "0.0.0.0:14000");
    assert_string_equal(c.registry, "zk://10.0.0.1:2181,10.0.0.2:2181");
    /* g1, g2 (one entry, two groups) and g3; g4's topic belongs to cluster two */
    assert_int_equal(c.n_bindings, 3);
    const struct kq_binding *b = find_binding(&c, "g2", "m");
    assert_non_null(b);
    assert_int_equal(b->bind_type, KQ_BIND_REGX);
    assert_int_equal(b->watermark, 6000);
    assert_true(b->persistent);
    b = find_binding(&c, "g3", "*");
    assert_non_null(b);
    assert_int_equal(b->bind_type, KQ_BIND_FANOUT);
    assert_int_equal(kq_config_validate(&c, err, sizeof err), 0);
    kq_config_free(&c);

    /* the other cluster, by name: its own registry and bindings, plus g4's */
    kq_config_defaults(&c);
    assert_int_equal(kq_config_load_file(&c, path, "two", err, sizeof err), 0);
    assert_string_equal(c.registry, "");
    assert_int_equal(c.n_topics, 1);
    assert_int_equal(c.n_bindings, 2);
    assert_non_null(find_binding(&c, "g", "x"));
    assert_non_null(find_binding(&c, "g4", "only-in-two"));
    kq_config_free(&c);
}

/* kq_config_print writes a file that loads back to the same configuration. */
static void test_print_round_trip(void **state)
{
    (void)state;
    struct kq_config a, b;
    kq_config_defaults(&a);
    assert_int_equal(
        kq_config_load_file(&a, source_file("lua/config/cluster.lua"), NULL, err, sizeof err), 0);
    char path[300];
    snprintf(path, sizeof path, "%s/printed.lua", tmpdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    kq_config_print(&a, f);
    fclose(f);
    kq_config_defaults(&b);
    int rc = kq_config_load_file(&b, path, NULL, err, sizeof err);
    if (rc)
        fail_msg("%s", err);
    assert_int_equal(kq_config_validate(&b, err, sizeof err), 0);
    assert_string_equal(a.cluster_name, b.cluster_name);
    assert_string_equal(a.bind, b.bind);
    assert_string_equal(a.db, b.db);
    assert_string_equal(a.admin, b.admin);
    assert_int_equal(a.n_topics, b.n_topics);
    assert_int_equal(a.n_groups, b.n_groups);
    assert_string_equal(kq_config_group_secret(&b, "p-trade"), "(secret)");
    assert_int_equal(a.n_bindings, b.n_bindings);
    for (size_t i = 0; i < a.n_bindings; i++) {
        assert_string_equal(a.bindings[i].message_type, b.bindings[i].message_type);
        assert_int_equal(a.bindings[i].bind_type, b.bindings[i].bind_type);
        assert_int_equal(a.bindings[i].watermark, b.bindings[i].watermark);
        assert_int_equal(a.bindings[i].persistent, b.bindings[i].persistent);
    }
    kq_config_free(&a);
    kq_config_free(&b);
}

/* ---- flags -------------------------------------------------------------------------- */

static int run_args(struct kq_config *c, bool *check, int argc, ...)
{
    char *argv[32];
    va_list ap;
    va_start(ap, argc);
    argv[0] = "kiteq";
    for (int i = 1; i < argc; i++)
        argv[i] = va_arg(ap, char *);
    va_end(ap);
    return kq_config_from_args(c, argc, argv, check, err, sizeof err);
}

static void test_flags_only(void **state)
{
    (void)state;
    struct kq_config c;
    bool check = true;
    int rc = run_args(&c, &check, 4, "-bind=127.0.0.1:13800", "-db=memory://", "-topics=trade");
    if (rc)
        fail_msg("%s", err);
    assert_false(check);
    assert_null(c.config_path);
    assert_string_equal(c.db, "memory://");
    assert_int_equal(c.n_topics, 1);
    assert_string_equal(c.topics[0], "trade");
    assert_int_equal(c.delivery_seconds, 5);
    assert_null(c.admin);
    kq_config_free(&c);

    /* every override, in the three spellings */
    rc = run_args(&c, &check, 14, "--bind=10.1.2.3:14000", "-pport", "14001", "-db", "memory://",
                  "--topics=a,b", "-zkhost=zk1:2181,zk2:2181", "-deliveryFirst", "-logLevel=debug",
                  "-groups=g1:s1,g2:s:2", "-clusterName=adhoc", "--check", "--deliveryFirst=true");
    if (rc)
        fail_msg("%s", err);
    assert_true(check);
    assert_string_equal(c.bind, "10.1.2.3:14000");
    assert_string_equal(c.admin, "127.0.0.1:14001"); /* a bare -pport is loopback only */
    assert_string_equal(c.db, "memory://");
    assert_int_equal(c.n_topics, 2);
    assert_string_equal(c.registry, "zk://zk1:2181,zk2:2181");
    assert_true(c.delivery_first);
    assert_string_equal(c.log_level, "debug");
    assert_string_equal(kq_config_group_secret(&c, "g1"), "s1");
    assert_string_equal(kq_config_group_secret(&c, "g2"), "s:2");
    assert_string_equal(c.cluster_name, "adhoc");
    kq_config_free(&c);

    /* no topics at all: rejected by validation */
    assert_int_equal(run_args(&c, &check, 2, "-db=memory://"), -EINVAL);
    assert_has(err, "topics");
    kq_config_free(&c);
}

static void test_flags_override_file(void **state)
{
    (void)state;
    struct kq_config c;
    bool check = false;
    const char *cfg = source_file("lua/config/cluster.lua");
    char cfgflag[600];
    snprintf(cfgflag, sizeof cfgflag, "-configPath=%s", cfg);
    int rc = run_args(&c, &check, 11, cfgflag, "--cluster", "dev", "-bind=127.0.0.1:15000",
                      "-pport=-1", "-db=memory://", "-deliveryFirst=true", "-logLevel=warn",
                      "-groups=only:one,s-trade-a:x", "-logFile=/var/log/kiteq.log");
    if (rc)
        fail_msg("%s", err);
    assert_string_equal(c.log_file, "/var/log/kiteq.log");
    assert_string_equal(c.config_path, cfg);
    assert_string_equal(c.bind, "127.0.0.1:15000");
    assert_null(c.admin);
    assert_string_equal(c.db, "memory://");
    assert_true(c.delivery_first);
    assert_string_equal(c.log_level, "warn");
    assert_null(kq_config_group_secret(&c, "p-trade"));
    assert_string_equal(kq_config_group_secret(&c, "s-trade-a"), "x");
    assert_string_equal(kq_config_group_secret(&c, "only"), "one");
    assert_int_equal(c.n_topics, 2); /* from the file */
    kq_config_free(&c);

    rc = run_args(&c, &check, 4, cfg, "-pport=9000", "-topics=trade,user-profile,extra");
    if (rc)
        fail_msg("%s", err);
    assert_string_equal(c.admin, "127.0.0.1:9000");
    assert_int_equal(c.n_topics, 3);
    assert_string_equal(c.registry, "");
    assert_null(c.log_file); /* default: stderr */
    kq_config_free(&c);

    /* -zkhost= with no value switches back to static bindings */
    rc = run_args(&c, &check, 3, cfg, "-zkhost=");
    assert_int_equal(rc, 0);
    assert_string_equal(c.registry, "");
    kq_config_free(&c);

    /* dropping a topic that the file's bindings use is caught by validation */
    rc = run_args(&c, &check, 3, cfg, "-topics=trade");
    assert_int_equal(rc, -EINVAL);
    assert_has(err, cfg);
    assert_has(err, "user-profile");
    assert_has(err, "bindings");
    kq_config_free(&c);

    /* -groups replaces the file's groups: the file's bound group s-trade-a must stay */
    rc = run_args(&c, &check, 3, cfg, "-groups=p-trade:x");
    assert_int_equal(rc, -EINVAL);
    assert_has(err, "bindings (group s-trade-a): names a group that is not in groups");
    kq_config_free(&c);

    /* an error in the file comes back as-is */
    rc = run_args(&c, &check, 3, cfg, "--cluster=nope");
    assert_int_equal(rc, -EINVAL);
    assert_has(err, "cluster \"nope\" not found (available: dev)");
    kq_config_free(&c);
}

static void test_flag_errors(void **state)
{
    (void)state;
    struct kq_config c;
    bool check;
    static const struct {
        const char *arg, *frag;
    } cases[] = {
        {"-nosuchflag=1", "unknown flag -nosuchflag"},
        {"-bind=127.0.0.1:70000", "-bind: must be \"host:port\""},
        {"-bind=nohost", "-bind:"},
        {"-pport=abc", "-pport: must be a port"},
        {"-pport=65536", "-pport:"},
        {"-db=redis://x", "-db: must be a store URI"},
        {"-topics=a,,b", "-topics:"},
        {"-topics=a,a", "-topics:"},
        {"-topics=", "-topics:"},
        {"-zkhost=zk1", "-zkhost:"},
        {"-deliveryFirst=maybe", "-deliveryFirst: must be true or false"},
        {"-logLevel=loud", "-logLevel:"},
        {"-groups=g1", "-groups:"},
        {"-groups=g1:s,g1:t", "-groups:"},
        {"-groups=:s", "-groups:"},
        {"-bind", "-bind needs a value"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = run_args(&c, &check, 3, "-topics=t", cases[i].arg);
        if (rc != -EINVAL)
            fail_msg("%s: expected an error", cases[i].arg);
        assert_has(err, cases[i].frag);
        kq_config_free(&c);
    }
    assert_int_equal(run_args(&c, &check, 3, "a.lua", "b.lua"), -EINVAL);
    assert_has(err, "only one config file");
    kq_config_free(&c);
    assert_int_equal(run_args(&c, &check, 2, "/nonexistent/kq.lua"), -EINVAL);
    assert_has(err, "/nonexistent/kq.lua: cannot open");
    kq_config_free(&c);
    /* --help wins over everything else, even a broken file */
    assert_int_equal(run_args(&c, &check, 3, "/nonexistent/kq.lua", "--help"), 1);
    kq_config_free(&c);
}

/* ---- file errors -------------------------------------------------------------------- */

#define CLUSTER(body) "return { clusters = { dev = { topics = { 'trade', 'user' }, " body " } } }"

static void test_syntax_and_runtime_errors(void **state)
{
    (void)state;
    expect_load_error("return {\n  clusters = {\n    dev = { topics = { 'a' } \n  },\n}\n}}\n",
                      NULL, ":6:", NULL);
    expect_load_error("-- comment\nreturn {\n  clusters = { dev = { topics = 'a' 'b' } },\n}\n",
                      NULL, ".lua:3:", NULL);
    expect_load_error("error('boom')\n", NULL, ".lua:1: boom", NULL);
    expect_load_error("return 42", NULL, "file: must end with `return", "(got 42)", NULL);
    expect_load_error("clusters = { dev = { topics = {'a'} } }", NULL, "file:", "(got nil)", NULL);
}

static void test_sandbox(void **state)
{
    (void)state;
    expect_load_error("local f = io.open('/etc/passwd')\nreturn {}", NULL, ":1:", "io", NULL);
    expect_load_error("os.execute('true')\nreturn {}", NULL, ":1:", "os", NULL);
    expect_load_error("local x = require('ffi')\nreturn {}", NULL, ":1:", "require", NULL);
    expect_load_error("dofile('/etc/passwd')", NULL, ":1:", "dofile", NULL);
    expect_load_error("loadstring('return 1')()", NULL, ":1:", "loadstring", NULL);
    expect_load_error("pcall(print)", NULL, ":1:", "pcall", NULL);
    expect_load_error("string.dump(function() end)", NULL, ":1:", "dump", NULL);
    /* endless loops and memory hogs are stopped */
    expect_load_error("local n = 0\n\nwhile true do n = n + 1 end\n", NULL, ".lua:3: stopped",
                      "runs too long", NULL);
    expect_load_error("local t = {}\nwhile true do t[#t + 1] = {} end", NULL, NULL);
    expect_load_error("local s, t = string.rep('x', 1048576), {}\n"
                      "for i = 1, 100 do t[i] = s .. i end",
                      NULL, "uses more than", NULL);
    /* precompiled chunks are refused */
    expect_load_error("\033LJ\002garbage", NULL, "not bytecode", NULL);
}

/* A backtracking pattern used to run for seconds to minutes in one C call that the
 * instruction budget could not see; now it is refused before it starts (its worst case is
 * charged to the budget), naming the line. Plain finds and cheap patterns still work. */
static void test_pathological_pattern_refused(void **state)
{
    (void)state;
    uint64_t t0 = kq_mono_us();
    expect_load_error("local s = string.rep('a', 30) .. 'b'\n"
                      "local hit = s:find('a*a*a*a*a*a*a*a*c')\n" CLUSTER(""),
                      NULL, ".lua:2: string.find: pattern on a 31-byte subject: worst case",
                      "a plain find", NULL);
    expect_load_error(
        "for w in string.gmatch(string.rep('a', 40) .. 'b', '.-.-.-.-.-.-c') do end\n" CLUSTER(""),
        NULL, ".lua:1: string.gmatch: pattern on a 41-byte subject", NULL);
    assert_true(kq_mono_us() - t0 < 1000000);
    struct kq_config c;
    kq_config_defaults(&c);
    const char *path =
        write_tmp("patterns.lua", "local big = string.rep('a*', 500000)\n"
                                  "assert(big:find('a*a*a*c', 1, true) == nil)\n"
                                  "local env = ('prod-eu'):match('^(%a+)%-')\n"
                                  "return { clusters = { [env] = { topics = { 'trade' } } } }\n");
    if (kq_config_load_file(&c, path, NULL, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_string_equal(c.cluster_name, "prod");
    kq_config_free(&c);
}

/* A reload abandons a load that ran past its deadline by raising the stop flag of the
 * thread that loads: the file's Lua stops at its next budget check. */
static void test_load_stops_when_abandoned(void **state)
{
    (void)state;
    atomic_bool stop = true;
    kq_lua_budget_stop_flag(&stop);
    struct kq_config c;
    kq_config_defaults(&c);
    const char *path =
        write_tmp("slow.lua", "local n = 0\nfor i = 1, 1e6 do n = n + i end\n" CLUSTER(""));
    int rc = kq_config_load_file(&c, path, NULL, err, sizeof err);
    kq_lua_budget_stop_flag(NULL);
    assert_int_equal(rc, -EINVAL);
    assert_has(err, ".lua:2: stopped: the load was abandoned");
    kq_config_free(&c);
    kq_config_defaults(&c); /* the same file without the flag */
    assert_int_equal(kq_config_load_file(&c, path, NULL, err, sizeof err), 0);
    kq_config_free(&c);
}

static void test_type_and_key_errors(void **state)
{
    (void)state;
    expect_load_error(CLUSTER("deliverySeconds = 'abc'"), NULL,
                      ": clusters.dev.deliverySeconds: must be an integer >= 1 (got \"abc\")",
                      NULL);
    expect_load_error(CLUSTER("deliveryFirst = 'yes'"), NULL,
                      "clusters.dev.deliveryFirst: must be true or false (got \"yes\")", NULL);
    expect_load_error(CLUSTER("bind = 13800"), NULL,
                      "clusters.dev.bind: must be a string (got 13800)", NULL);
    expect_load_error("return { clusters = { dev = { topics = 'trade' } } }", NULL,
                      "clusters.dev.topics: must be a list", NULL);
    expect_load_error(CLUSTER("groups = { 'a' }"), NULL, "clusters.dev.groups:", NULL);
    expect_load_error(CLUSTER("groups = { g = 5 }"), NULL,
                      "clusters.dev.groups.g: must be a string", NULL);
    expect_load_error(CLUSTER("delivrySeconds = 5"), NULL,
                      "clusters.dev.delivrySeconds: unknown key (did you mean deliverySeconds?)",
                      NULL);
    expect_load_error("return { clusters = { dev = { topics = {'a'} } }, extra = 1 }", NULL,
                      ": extra: unknown key", NULL);
    expect_load_error("return { clusters = { dev = { topics = {'a'} } }, bindings = { { groupIds = "
                      "{'g'}, topic = 'a', messageType = 'm', persistant = true } } }",
                      NULL, "bindings[1].persistant: unknown key (did you mean persistent?)", NULL);
    expect_load_error("return { clusters = { { topics = {'a'} } } }", NULL,
                      "clusters: entries must be named", NULL);
    expect_load_error("return { clusters = 'dev' }", NULL, "clusters: must be a table", NULL);
    expect_load_error("return { clusters = { dev = 1 } }", NULL, "clusters.dev: must be a table",
                      NULL);
}

static void test_bad_values(void **state)
{
    (void)state;
    expect_load_error(CLUSTER("bind = '127.0.0.1:70000'"), NULL,
                      "clusters.dev.bind: must be \"host:port\"", "(got \"127.0.0.1:70000\")",
                      NULL);
    expect_load_error(CLUSTER("admin = 'localhost'"), NULL, "clusters.dev.admin:", NULL);
    expect_load_error(CLUSTER("deliverySeconds = -1"), NULL, "clusters.dev.deliverySeconds",
                      "(got -1)", NULL);
    expect_load_error(CLUSTER("deliverySeconds = 1.5"), NULL, "clusters.dev.deliverySeconds", NULL);
    expect_load_error(CLUSTER("recoverSeconds = 0"), NULL,
                      "clusters.dev.recoverSeconds: must be an integer >= 1 (got 0)", NULL);
    expect_load_error(CLUSTER("dlqExecHour = 24"), NULL,
                      "clusters.dev.dlqExecHour: must be an integer 0-23 (got 24)", NULL);
    expect_load_error(CLUSTER("maxDeliverWorkers = 0"), NULL, "clusters.dev.maxDeliverWorkers",
                      NULL);
    expect_load_error(CLUSTER("maxConnections = -1"), NULL, "clusters.dev.maxConnections", NULL);
    expect_load_error(CLUSTER("db = 'rocksdb://./db'"), NULL,
                      "clusters.dev.db: must be a store URI", NULL);
    expect_load_error(CLUSTER("logLevel = 'verbose'"), NULL, "clusters.dev.logLevel:", NULL);
    expect_load_error(CLUSTER("logFile = 42"), NULL, "clusters.dev.logFile:", NULL);
    expect_load_error(CLUSTER("registry = 'etcd://x'"), NULL, "clusters.dev.registry:", NULL);
    expect_load_error("return { registry = 'zk://', clusters = { dev = { topics = {'a'} } } }",
                      NULL, ": registry:", NULL);
    expect_load_error("return { clusters = { dev = { topics = { 'a', 'b', 'a' } } } }", NULL,
                      "clusters.dev.topics[3]: duplicate topic (got \"a\")", NULL);
    expect_load_error("return { clusters = { dev = { topics = { 'a', '' } } } }", NULL,
                      "clusters.dev.topics[2]:", NULL);
    expect_load_error(CLUSTER("groups = { [''] = 'x' }"), NULL, "clusters.dev.groups:", NULL);
    expect_load_error(CLUSTER("groups = { g = '' }"), NULL, "clusters.dev.groups.g:", NULL);
    expect_load_error("return { clusters = {} }", NULL, "clusters: must define at least one", NULL);
}

/* The admin beyond loopback needs adminToken; a bare -pport stays on loopback. */
static void test_admin_exposure(void **state)
{
    (void)state;
    const char *loop[] = {"127.0.0.1:1", "127.9.9.9:1", "localhost:1", "[::1]:1",
                          "[::ffff:127.0.0.1]:1"};
    const char *wide[] = {"0.0.0.0:1",   "10.0.0.1:1",          "[::]:1",  "myhost:1",
                          "128.0.0.1:1", "[::ffff:10.0.0.1]:1", "nocolon", ""};
    for (size_t i = 0; i < sizeof loop / sizeof loop[0]; i++)
        assert_true(kq_addr_is_loopback(loop[i]));
    for (size_t i = 0; i < sizeof wide / sizeof wide[0]; i++)
        assert_false(kq_addr_is_loopback(wide[i]));

    /* bad tokens: the reason, never the value */
    expect_load_error(CLUSTER("adminToken = 'short-secret'"), NULL,
                      "clusters.dev.adminToken: must be 16-256 characters", NULL);
    assert_null(strstr(err, "short-secret"));
    expect_load_error(CLUSTER("adminToken = 'with a space, long enough'"), NULL,
                      "clusters.dev.adminToken: must be visible ASCII", NULL);
    assert_null(strstr(err, "with a space"));

    struct kq_config c;
    bool check = false;
    const char *open_admin = write_tmp("open-admin.lua", CLUSTER("admin = '0.0.0.0:13801'"));
    assert_int_equal(run_args(&c, &check, 2, open_admin), -EINVAL);
    assert_has(err, "adminToken: required when admin listens beyond loopback");
    assert_has(err, "0.0.0.0:13801");
    kq_config_free(&c);

    const char *tok = write_tmp("token.lua", CLUSTER("admin = '0.0.0.0:13801', "
                                                     "adminToken = 'tok-0123456789abcdef'"));
    if (run_args(&c, &check, 2, tok))
        fail_msg("%s", err);
    assert_string_equal(c.admin_token, "tok-0123456789abcdef");
    char *printed = NULL;
    size_t plen = 0;
    FILE *out = open_memstream(&printed, &plen);
    kq_config_print(&c, out);
    fclose(out);
    assert_null(strstr(printed, "tok-0123456789abcdef"));
    assert_has(printed, "adminToken = (set, not shown)");
    free(printed);
    kq_config_free(&c);

    const char *local = write_tmp("local-admin.lua", CLUSTER("admin = '[::1]:13801'"));
    assert_int_equal(run_args(&c, &check, 2, local), 0);
    assert_null(c.admin_token);
    kq_config_free(&c);

    /* -pport: a port alone is on loopback whatever -bind says; an address is explicit */
    if (run_args(&c, &check, 4, "-bind=0.0.0.0:14000", "-pport=14001", "-topics=t"))
        fail_msg("%s", err);
    assert_string_equal(c.admin, "127.0.0.1:14001");
    kq_config_free(&c);
    assert_int_equal(
        run_args(&c, &check, 4, "-bind=0.0.0.0:14000", "-pport=0.0.0.0:14001", "-topics=t"),
        -EINVAL);
    assert_has(err, "adminToken: required");
    kq_config_free(&c);
    if (run_args(&c, &check, 4, tok, "-pport=10.1.2.3:14001", "-topics=trade,user"))
        fail_msg("%s", err);
    assert_string_equal(c.admin, "10.1.2.3:14001");
    kq_config_free(&c);
    assert_int_equal(run_args(&c, &check, 3, "-pport=1.2.3.4", "-topics=t"), -EINVAL);
    assert_has(err, "-pport:");
    kq_config_free(&c);
}

static void test_cluster_selection(void **state)
{
    (void)state;
    const char *two = "return { clusters = { b = { topics = {'t'} }, a = { topics = {'t'} } } }";
    expect_load_error(two, "nope", "cluster \"nope\" not found (available: a, b)", NULL);
    expect_load_error(two, NULL, "no cluster selected", "(available: a, b)", NULL);
    expect_load_error("return { default = 'c', clusters = { a = { topics = {'t'} } } }", NULL,
                      ": default: cluster \"c\" not found (available: a)", NULL);
    /* an error in a cluster that is not selected is still reported */
    expect_load_error("return { default = 'a', clusters = { a = { topics = {'t'} }, "
                      "b = { recoverSeconds = 0 } } }",
                      NULL, "clusters.b.recoverSeconds", NULL);
}

static void test_binding_errors(void **state)
{
    (void)state;
#define BIND(entry)                                                                                \
    "return { clusters = { dev = { topics = { 'trade' } } }, bindings = { " entry " } }"
    expect_load_error(BIND("{ groupIds = {'g'}, topic = 'nope', messageType = 'm' }"), NULL,
                      "bindings[1].topic: names a topic that no cluster lists", "(got \"nope\")",
                      NULL);
    expect_load_error("return { clusters = { dev = { topics = { 'trade' }, bindings = { "
                      "{ groupIds = {'g'}, topic = 'x', messageType = 'm' } } } } }",
                      NULL, "clusters.dev.bindings[1].topic: names a topic that is not in", NULL);
    expect_load_error(BIND("{ groupIds = {''}, topic = 'trade', messageType = 'm' }"), NULL,
                      "bindings[1].groupIds[1]:", NULL);
    expect_load_error(BIND("{ groupIds = {}, topic = 'trade', messageType = 'm' }"), NULL,
                      "bindings[1].groupIds: must list at least one", NULL);
    expect_load_error(BIND("{ topic = 'trade', messageType = 'm' }"), NULL,
                      "bindings[1].groupIds: is required", NULL);
    expect_load_error(BIND("{ groupIds = {'g'}, topic = 'trade' }"), NULL,
                      "bindings[1].messageType: is required", NULL);
    expect_load_error(
        BIND("{ groupIds = {'g'}, topic = 'trade', messageType = 'm', bindType = 'topic' }"), NULL,
        "bindings[1].bindType: must be \"direct\", \"regx\" or \"fanout\"", NULL);
    expect_load_error(
        BIND("{ groupIds = {'g'}, topic = 'trade', messageType = 'm', bindType = 3 }"), NULL,
        "bindings[1].bindType:", "(got 3)", NULL);
    expect_load_error(
        BIND("{ groupIds = {'g'}, topic = 'trade', messageType = 'a(', bindType = 'regx' }"), NULL,
        "bindings[1].messageType: invalid regular expression", NULL);
    expect_load_error(
        BIND("{ groupIds = {'g'}, topic = 'trade', messageType = 'm', watermark = 'hi' }"), NULL,
        "bindings[1].watermark:", NULL);
    expect_load_error(BIND("{ groupIds = {'g'}, topic = 'trade', messageType = 'm' }, 5"), NULL,
                      "bindings[2]: must be a table", NULL);
#undef BIND
}

/* ---- every problem, new checks, warnings ------------------------------------------- */

static int count_lines(const char *s)
{
    int n = s[0] != '\0';
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* One run names every problem of a file, each on its own line, not only the first. */
static void test_every_problem_reported(void **state)
{
    (void)state;
    struct kq_config c;
    kq_config_defaults(&c);
    const char *path = write_tmp(
        "many.lua",
        "return {\n"
        "  colour = 'red',\n"
        "  clusters = {\n"
        "    a = { topics = { 'trade', 'trade' }, deliverySeconds = 0, bind = 'nohost',\n"
        "          delivrySeconds = 5, groups = { g = '' } },\n"
        "    b = { topics = { 't' }, recoverSeconds = 'x' },\n"
        "  },\n"
        "  default = 'a',\n"
        "  bindings = {\n"
        "    { groupIds = { 'g' }, topic = 'nope', messageType = 'm' },\n"
        "    { groupIds = { 'g' }, topic = 'trade', messageType = 'm', watermark = 'hi',\n"
        "      persistent = 'yes' },\n"
        "  },\n"
        "}\n");
    assert_int_equal(kq_config_load_file(&c, path, NULL, err, sizeof err), -EINVAL);
    static const char *const want[] = {
        ": colour: unknown key",
        ": clusters.a.topics[2]: duplicate topic",
        ": clusters.a.deliverySeconds: must be an integer >= 1 (got 0)",
        ": clusters.a.bind: must be \"host:port\"",
        ": clusters.a.delivrySeconds: unknown key (did you mean deliverySeconds?)",
        ": clusters.a.groups.g: a secret must not be empty",
        ": clusters.b.recoverSeconds: must be an integer >= 1 (got \"x\")",
        ": bindings[1].topic: names a topic that no cluster lists",
        ": bindings[2].watermark:",
        ": bindings[2].persistent: must be true or false",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        assert_has(err, want[i]);
    assert_int_equal(count_lines(err), sizeof want / sizeof want[0]);
    for (const char *line = err; line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
        assert_int_equal(strncmp(line, path, strlen(path)), 0);
    kq_config_free(&c);

    /* and every problem that only the whole configuration shows */
    bool check;
    char fileflag[300];
    snprintf(fileflag, sizeof fileflag, "%s",
             write_tmp("cross.lua", "return { clusters = { a = { topics = { 'trade' },\n"
                                    "  groups = { ['p'] = 's' },\n"
                                    "  bindings = { { groupIds = { 'ghost' }, topic = 'trade',\n"
                                    "                 messageType = 'm' } } } } }\n"));
    assert_int_equal(run_args(&c, &check, 4, fileflag, "-topics=other", "-groups=p:s,q:"), -EINVAL);
    assert_has(err, "-groups: must be"); /* a bad flag stops there */
    kq_config_free(&c);
    assert_int_equal(run_args(&c, &check, 3, fileflag, "-topics=other"), -EINVAL);
    assert_has(err, "bindings (group ghost): binds a topic that is not in topics");
    assert_has(err, "bindings (group ghost): names a group that is not in groups");
    assert_int_equal(count_lines(err), 2);
    kq_config_free(&c);
}

static void test_binding_group_checks(void **state)
{
    (void)state;
#define GROUPS_AND(entry)                                                                          \
    "return { clusters = { dev = { topics = { 'trade' }, groups = { ['s-a'] = 'x', "               \
    "['p'] = 'y' } } }, bindings = { " entry " } }"
    /* a bound group that cannot log in */
    struct kq_config c;
    bool check;
    const char *path = write_tmp(
        "ghost.lua",
        GROUPS_AND("{ groupIds = { 's-a', 's-ghost' }, topic = 'trade', messageType = 'm' },"
                   "{ groupIds = { 's-ghost' }, topic = 'trade', messageType = 'n' }"));
    assert_int_equal(run_args(&c, &check, 2, path), -EINVAL);
    assert_has(err, ": bindings (group s-ghost): names a group that is not in groups, so its "
                    "consumers can never log in (got \"s-ghost\")");
    assert_int_equal(count_lines(err), 1); /* once per group, not per binding */
    kq_config_free(&c);
    /* without groups (authentication off) any group may bind */
    path = write_tmp(
        "open.lua",
        "return { clusters = { dev = { topics = { 'trade' } } }, "
        "bindings = { { groupIds = { 's-any' }, topic = 'trade', messageType = 'm' } } }");
    assert_int_equal(run_args(&c, &check, 2, path), 0);
    kq_config_free(&c);

    /* the same group twice in one groupIds */
    expect_load_error(GROUPS_AND("{ groupIds = { 's-a', 'p', 's-a' }, topic = 'trade', "
                                 "messageType = 'm' }"),
                      NULL, "bindings[1].groupIds[3]: this group is listed twice (got \"s-a\")",
                      NULL);
#undef GROUPS_AND
}

/* More groups bound to one topic than routing can deliver to is refused at load, naming
 * the topic (delivery used to cut silently at 64 groups). */
static void test_too_many_groups_on_a_topic(void **state)
{
    (void)state;
    size_t cap = 256 * 1024, len = 0;
    char *text = malloc(cap);
    len += (size_t)snprintf(text, cap,
                            "local g = {} for i = 1, %d do g[#g + 1] = 'g' .. i end\n"
                            "return { clusters = { dev = { topics = { 'trade' } } }, bindings = {"
                            " { groupIds = g, topic = 'trade', messageType = '*', "
                            "bindType = 'fanout' } } }",
                            KQ_MAX_GROUPS_PER_TOPIC + 1);
    (void)len;
    struct kq_config c;
    bool check;
    const char *path = write_tmp("many.lua", text);
    free(text);
    assert_int_equal(run_args(&c, &check, 2, path), -EINVAL);
    assert_has(err, "bindings: more groups are bound to this topic than the limit of 4096");
    kq_config_free(&c);
}

/* A fanout binding's messageType is ignored: said so in the log, the file still loads. */
static void test_fanout_message_type_warned(void **state)
{
    (void)state;
    struct kq_config c;
    kq_config_defaults(&c);
    const char *path = write_tmp(
        "fanout.lua",
        "return { clusters = { dev = { topics = { 'trade' } } }, bindings = {\n"
        "  { groupIds = { 'g1' }, topic = 'trade', bindType = 'fanout', messageType = 'pay' },\n"
        "  { groupIds = { 'g2' }, topic = 'trade', bindType = 'fanout', messageType = '*' },\n"
        "  { groupIds = { 'g3' }, topic = 'trade', bindType = 'fanout' } } }\n");
    log_capture_begin();
    int rc = kq_config_load_file(&c, path, NULL, err, sizeof err);
    char *log = log_capture_end(KQ_LOG_INFO);
    if (rc)
        fail_msg("%s", err);
    assert_int_equal(c.n_bindings, 3);
    assert_string_equal(find_binding(&c, "g1", "*")->topic, "trade");
    char want[400];
    snprintf(want, sizeof want,
             "warn config: %s: bindings[1].messageType: ignored: a fanout "
             "binding receives every message type of its topic (\"*\") (got \"pay\")",
             path);
    assert_has(log, want);
    assert_null(strstr(log, "bindings[2]"));
    assert_null(strstr(log, "bindings[3]"));
    free(log);
    kq_config_free(&c);
}

/* Settings kept only so that the original's files load are said to have no effect. */
static void test_compat_settings_warned(void **state)
{
    (void)state;
    struct kq_config c;
    kq_config_defaults(&c);
    const char *path = write_tmp("compat.lua", "return { clusters = { dev = { topics = { 'trade' },\n"
                                               "  maxDeliverWorkers = 100, dlqExecHour = 3 } } }\n");
    log_capture_begin();
    int rc = kq_config_load_file(&c, path, NULL, err, sizeof err);
    char *log = log_capture_end(KQ_LOG_INFO);
    if (rc)
        fail_msg("%s", err);
    assert_has(log, "clusters.dev.maxDeliverWorkers: accepted for the original's files, has no "
                    "effect: each group's deliverWindow bounds its deliveries in flight (got 100)");
    assert_has(log, "clusters.dev.dlqExecHour: accepted for the original's files, has no effect");
    free(log);
    kq_config_free(&c);

    /* not set: nothing said */
    path = write_tmp("plain.lua", "return { clusters = { dev = { topics = { 'trade' } } } }\n");
    log_capture_begin();
    rc = kq_config_load_file(&c, path, NULL, err, sizeof err);
    log = log_capture_end(KQ_LOG_INFO);
    assert_int_equal(rc, 0);
    assert_null(strstr(log, "no effect"));
    free(log);
    kq_config_free(&c);
}

/* A history ring that will take a lot of memory is allowed, and its price is logged. */
static void test_large_history_ring_warned(void **state)
{
    (void)state;
    struct kq_config c;
    kq_config_defaults(&c);
    const char *path = write_tmp("ring.lua", "return { clusters = { dev = { topics = { 'trade' },\n"
                                             "  messageHistory = 1000000 } } }\n");
    log_capture_begin();
    int rc = kq_config_load_file(&c, path, NULL, err, sizeof err);
    char *log = log_capture_end(KQ_LOG_INFO);
    if (rc)
        fail_msg("%s", err);
    assert_int_equal(c.message_history, 1000000);
    assert_has(log, "clusters.dev.messageHistory: keeps the histories of the last 1000000 "
                    "finished messages in memory: up to ~420 MB once the ring is full");
    free(log);
    kq_config_free(&c);

    /* the default's size and a little above it: nothing said */
    path = write_tmp("ring2.lua", "return { clusters = { dev = { topics = { 'trade' },\n"
                                  "  messageHistory = 100000 } } }\n");
    log_capture_begin();
    rc = kq_config_load_file(&c, path, NULL, err, sizeof err);
    log = log_capture_end(KQ_LOG_INFO);
    assert_int_equal(rc, 0);
    assert_null(strstr(log, "messageHistory"));
    free(log);
    kq_config_free(&c);
}

/* A policies folder named in the file must exist (checked by the broker's preflight); the
 * default may be missing. The loader says which. */
static void test_policies_named(void **state)
{
    (void)state;
    struct kq_config c;
    kq_config_defaults(&c);
    assert_false(c.policies_set);
    const char *path =
        write_tmp("pol.lua", "return { clusters = { a = { topics = { 't' } }, "
                             "b = { topics = { 't' }, policies = 'x' } }, default = 'a' }");
    assert_int_equal(kq_config_load_file(&c, path, NULL, err, sizeof err), 0);
    assert_false(c.policies_set); /* only cluster b names one */
    kq_config_free(&c);
    kq_config_defaults(&c);
    assert_int_equal(kq_config_load_file(&c, path, "b", err, sizeof err), 0);
    assert_true(c.policies_set);
    assert_string_equal(c.policies, "x");
    kq_config_free(&c);
}

/* The effective configuration never shows the MySQL password. */
static void test_print_redacts_password(void **state)
{
    (void)state;
    struct kq_config c;
    bool check;
    assert_int_equal(run_args(&c, &check, 3, "-topics=t",
                              "-db=mysql://db:3306?db=kite&username=u&password=Hunter2x"),
                     0);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    kq_config_print(&c, f);
    fclose(f);
    assert_null(strstr(text, "Hunter2x"));
    assert_has(text, "db = \"mysql://db:3306?db=kite&username=u&password=***\"");
    free(text);
    kq_config_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_shipped_cluster),
        cmocka_unit_test(test_file_features),
        cmocka_unit_test(test_print_round_trip),
        cmocka_unit_test(test_flags_only),
        cmocka_unit_test(test_flags_override_file),
        cmocka_unit_test(test_flag_errors),
        cmocka_unit_test(test_syntax_and_runtime_errors),
        cmocka_unit_test(test_sandbox),
        cmocka_unit_test(test_pathological_pattern_refused),
        cmocka_unit_test(test_load_stops_when_abandoned),
        cmocka_unit_test(test_type_and_key_errors),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_admin_exposure),
        cmocka_unit_test(test_cluster_selection),
        cmocka_unit_test(test_binding_errors),
        cmocka_unit_test(test_every_problem_reported),
        cmocka_unit_test(test_binding_group_checks),
        cmocka_unit_test(test_too_many_groups_on_a_topic),
        cmocka_unit_test(test_fanout_message_type_warned),
        cmocka_unit_test(test_compat_settings_warned),
        cmocka_unit_test(test_large_history_ring_warned),
        cmocka_unit_test(test_policies_named),
        cmocka_unit_test(test_print_redacts_password),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
