/* The watchdog (src/sandbox/watchdog.h): a state that serves traffic on the watched thread
 * runs its calls without LuaJIT's count hook, a call that runs on is armed and stopped by
 * its budgets all the same, loads and self-tests stay counted, and an idle watchdog sleeps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "policy/generation.h"
#include "sandbox/lua_budget.h"
#include "sandbox/watchdog.h"
#include "support/assert_text.h"
#include "support/tmp_dir.h"

/* Lua: hooked() = whether a hook is set on the running state right now. */
static int l_hooked(lua_State *L)
{
    lua_pushboolean(L, lua_gethook(L) != NULL);
    return 1;
}

static lua_State *new_state(struct kq_lua_budget *b)
{
    memset(b, 0, sizeof *b);
    b->max = 8 << 20;
    lua_State *L = kq_lua_budget_newstate(b, false);
    assert_non_null(L);
    lua_register(L, "hooked", l_hooked);
    return L;
}

/* Runs code as a traffic call (or as a load / self-test run): its first result as a boolean
 * into *result, or its error into err (returns the pcall's code). */
static int run(lua_State *L, struct kq_lua_budget *b, const char *code, bool traffic,
               bool *result, char *err, size_t errlen)
{
    assert_int_equal(luaL_loadstring(L, code), 0);
    if (traffic)
        kq_lua_budget_begin_traffic(L, b, KQ_POLICY_CALL_INSTRUCTIONS, KQ_POLICY_CALL_MS);
    else
        kq_lua_budget_begin(L, b, KQ_POLICY_CALL_INSTRUCTIONS, KQ_POLICY_CALL_MS);
    int rc = lua_pcall(L, 0, 1, 0);
    kq_lua_budget_end(L, b);
    if (rc == 0 && result)
        *result = lua_toboolean(L, -1);
    if (rc != 0 && err)
        snprintf(err, errlen, "%s", lua_tostring(L, -1));
    lua_settop(L, 0);
    return rc;
}

static bool hooked_in(lua_State *L, struct kq_lua_budget *b, bool traffic)
{
    bool hooked = false;
    assert_int_equal(run(L, b, "return hooked()", traffic, &hooked, NULL, 0), 0);
    return hooked;
}

/* A traffic call (made by call(ctx), which answers whether it saw a hook) runs without a
 * hook. A call the watchdog did arm proves nothing (the host paused the test for the grace,
 * or a signal meant for the call before came late): it is tried again; a hook that no
 * signal set is a failure at once. */
static void assert_unhooked(bool (*call)(void *ctx), void *ctx)
{
    for (int i = 0; i < 20; i++) {
        uint64_t sent = kq_watchdog_signals();
        if (!call(ctx))
            return;
        if (kq_watchdog_signals() == sent)
            fail_msg("a traffic call ran with the count hook set (the watchdog sent no signal)");
    }
    fail_msg("20 traffic calls in a row armed by the watchdog");
}

struct state_call {
    lua_State *L;
    struct kq_lua_budget *b;
};

static bool state_traffic_hooked(void *ctx)
{
    struct state_call *sc = ctx;
    return hooked_in(sc->L, sc->b, true);
}

static void assert_traffic_unhooked(lua_State *L, struct kq_lua_budget *b)
{
    assert_unhooked(state_traffic_hooked, &(struct state_call){L, b});
}

/* Stops the watchdog a failed test left running (each test starts its own). */
static int stop_watchdog(void **state)
{
    (void)state;
    while (kq_watchdog_watches_me())
        kq_watchdog_stop();
    return 0;
}

static void start_watchdog(void)
{
    char err[128];
    int rc = kq_watchdog_start(err, sizeof err);
    if (rc == -ENOTSUP) /* a ThreadSanitizer build: every call stays counted */
        skip();
    assert_int_equal(rc, 0);
}

/* Without a watchdog (tools, the kiteq.policy module, tests without a broker) every call
 * is counted. */
static void test_counted_without_watchdog(void **state)
{
    (void)state;
    struct kq_lua_budget b;
    lua_State *L = new_state(&b);
    assert_false(kq_watchdog_watches_me());
    assert_true(hooked_in(L, &b, true));
    kq_lua_budget_close(L, &b);
}

/* With the watchdog, a traffic call runs without a hook; a load-like run still has it. */
static void test_traffic_call_runs_unhooked(void **state)
{
    (void)state;
    start_watchdog();
    struct kq_lua_budget b;
    lua_State *L = new_state(&b);
    assert_true(hooked_in(L, &b, false)); /* a fresh state (load, self-test): counted */
    assert_traffic_unhooked(L, &b);
    assert_traffic_unhooked(L, &b);
    struct kq_lua_budget fresh;
    lua_State *L2 = new_state(&fresh);
    assert_true(hooked_in(L2, &fresh, false));
    kq_lua_budget_close(L2, &fresh);
    kq_lua_budget_close(L, &b);
    kq_watchdog_stop();
}

/* A traffic call that loops forever is armed by the watchdog and stopped by its budgets;
 * the next call runs without a hook again. Also a loop that swallows nothing: the trip
 * makes every instruction fail. */
static void test_runaway_traffic_call_stopped(void **state)
{
    (void)state;
    start_watchdog();
    struct kq_lua_budget b;
    lua_State *L = new_state(&b);
    assert_traffic_unhooked(L, &b);
    uint64_t signals = kq_watchdog_signals();
    for (int i = 0; i < 2; i++) {
        char err[256] = "";
        assert_int_not_equal(run(L, &b, "local n = 0\nwhile true do n = n + 1 end", true, NULL,
                                 err, sizeof err),
                             0);
        assert_has(err, "stopped: over the "); /* instruction or time budget: a loaded host */
        assert_true(b.tripped);
        assert_true(kq_watchdog_signals() > signals);
        assert_traffic_unhooked(L, &b);
        assert_false(b.tripped);
        signals = kq_watchdog_signals();
    }
    kq_lua_budget_close(L, &b);
    kq_watchdog_stop();
}

/* A watched state whose watchdog stopped is counted again (never a call without a guard). */
static void test_counted_again_after_stop(void **state)
{
    (void)state;
    start_watchdog();
    struct kq_lua_budget b;
    lua_State *L = new_state(&b);
    assert_traffic_unhooked(L, &b);
    kq_watchdog_stop();
    assert_true(hooked_in(L, &b, true));
    char err[256] = "";
    assert_int_not_equal(run(L, &b, "while true do end", true, NULL, err, sizeof err), 0);
    assert_has(err, "stopped: over the ");
    kq_lua_budget_close(L, &b);
}

/* Waits (up to 5 s) until the watchdog is parked. */
static void wait_parked(void)
{
    uint64_t deadline = kq_mono_us() + 5000000;
    while (!kq_watchdog_parked() && kq_mono_us() < deadline)
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    assert_true(kq_watchdog_parked());
}

/* With no call in progress the watchdog sleeps until the next call: its wake-ups do not
 * grow over ten graces of idleness, after short calls or after a runaway one. */
static void test_parks_when_idle(void **state)
{
    (void)state;
    start_watchdog();
    struct kq_lua_budget b;
    lua_State *L = new_state(&b);
    for (int round = 0; round < 3; round++) {
        if (round == 1)
            assert_traffic_unhooked(L, &b);
        if (round == 2)
            assert_int_not_equal(run(L, &b, "while true do end", true, NULL, NULL, 0), 0);
        wait_parked();
        uint64_t woke = kq_watchdog_wakeups();
        struct timespec idle = {0, 10L * KQ_WATCHDOG_GRACE_US * 1000};
        nanosleep(&idle, NULL);
        assert_true(kq_watchdog_parked());
        /* polling once a grace would be 10; POSIX allows one spurious wake-up */
        assert_in_range(kq_watchdog_wakeups(), woke, woke + 1);
    }
    kq_lua_budget_close(L, &b);
    kq_watchdog_stop();
}

/* Calls a little apart (less than a grace) do not each have to wake the watchdog (a system
 * call on the loop thread): between calls it looks again a grace later rather than parking,
 * and only a park costs the next call a wake-up. A park needs a whole grace without calls,
 * so at most 1 + elapsed / grace calls wake it; a watchdog that parked after every call was
 * woken by about every fourth of these 40 calls (10 in 7 ms here). */
static void test_calls_apart_do_not_wake_it_each(void **state)
{
    (void)state;
    start_watchdog();
    struct kq_lua_budget b;
    lua_State *L = new_state(&b);
    assert_int_equal(run(L, &b, "return true", true, NULL, NULL, 0), 0);
    wait_parked();
    uint64_t nudged = kq_watchdog_nudges(), t0 = kq_mono_us();
    enum { CALLS = 40 };
    for (int i = 0; i < CALLS; i++) {
        assert_int_equal(run(L, &b, "return true", true, NULL, NULL, 0), 0);
        struct timespec gap = {0, KQ_WATCHDOG_GRACE_US * 1000L / 20};
        nanosleep(&gap, NULL);
    }
    uint64_t elapsed = kq_mono_us() - t0, n = kq_watchdog_nudges() - nudged;
    assert_true(n >= 1); /* the first call woke it from its park */
    assert_true(n <= 1 + elapsed / KQ_WATCHDOG_GRACE_US);
    kq_lua_budget_close(L, &b);
    kq_watchdog_stop();
}

/* ---- through the policy module ---------------------------------------------------------- */

static char tmpdir[64];

static int setup(void **state)
{
    (void)state;
    return tmp_dir_make(tmpdir, sizeof tmpdir, "kq-watchdog-");
}

static int teardown(void **state)
{
    stop_watchdog(state);
    return tmp_dir_remove(tmpdir);
}

/* A call whose protected function records whether the state has a hook. */
struct probe {
    struct call c;
    bool hooked;
};

static int probe_protected(lua_State *L, void *arg)
{
    struct probe *pr = arg;
    pr->hooked = lua_gethook(L) != NULL;
    return 0;
}

static bool probe(struct kq_policy *p, bool selftest)
{
    struct probe pr = {.c = {.p = p, .id = H_ROUTE}};
    assert_int_equal(kq_policy_invoke(&pr.c, probe_protected, selftest), CALL_OK);
    return pr.hooked;
}

static bool policy_traffic_hooked(void *p) { return probe(p, false); }

/* A generation's self-tests run counted; its traffic calls unhooked; a route that loops
 * forever on one topic is stopped (the built-in answer), and the next call is unhooked. */
static void test_policy_traffic_unhooked(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/routing.lua", tmpdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("local M = {}\n"
          "function M.route(topic, message_type, binds)\n"
          "  if topic == 'spin' then while true do end end\n"
          "  return nil\n"
          "end\n"
          "return M\n",
          f);
    fclose(f);
    start_watchdog();
    char err[512];
    struct kq_policy *p = NULL;
    assert_int_equal(kq_policy_load(tmpdir, &p, err, sizeof err), 0);
    assert_true(probe(p, true)); /* as the self-tests ran at load */
    assert_unhooked(policy_traffic_hooked, p);
    struct kq_binding binds[] = {{"s-g", "spin", "t", KQ_BIND_DIRECT, 1000, true}};
    struct kq_binding_set *empty = kq_binding_set_empty();
    assert_non_null(empty);
    struct kq_binding_set *set = kq_binding_set_with_group(empty, "spin", "s-g", binds, 1);
    kq_binding_set_free(empty);
    assert_non_null(set);
    struct kq_route out[4];
    assert_int_equal(kq_policy_route(p, set, "spin", "t", out, 4), 1); /* the built-in */
    assert_has(kq_policy_last_failure(p), "stopped: over the ");
    assert_unhooked(policy_traffic_hooked, p);
    kq_binding_set_free(set);
    kq_policy_free(p);
    kq_watchdog_stop();
}

int main(void)
{
    alarm(60); /* a runaway call that nothing stops fails the test instead of hanging it */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_counted_without_watchdog, stop_watchdog),
        cmocka_unit_test_teardown(test_traffic_call_runs_unhooked, stop_watchdog),
        cmocka_unit_test_teardown(test_runaway_traffic_call_stopped, stop_watchdog),
        cmocka_unit_test_teardown(test_counted_again_after_stop, stop_watchdog),
        cmocka_unit_test_teardown(test_parks_when_idle, stop_watchdog),
        cmocka_unit_test_teardown(test_calls_apart_do_not_wake_it_each, stop_watchdog),
        cmocka_unit_test_setup_teardown(test_policy_traffic_unhooked, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
