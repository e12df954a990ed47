/* The watchdog of the broker's Lua calls: one thread for the process that lets the loop
 * thread run its traffic calls without LuaJIT's count hook.
 *
 * Why: while any count hook is set, LuaJIT's interpreter sends every bytecode through its
 * hook dispatch, whatever the count (~630 CPU instructions per hook call in bench_hook_cost).
 * So a state that serves traffic (lua_budget.h, kq_lua_budget_begin_traffic) runs with no
 * hook; the loop thread marks each call's start and end here (atomics only: no system call,
 * no lock), and when a call has run longer than KQ_WATCHDOG_GRACE_US the watchdog sends the
 * loop thread a signal whose handler sets the count hook on the running state
 * (kq_lua_budget_overdue): from then on the call is counted and stopped exactly as a counted
 * one. While the call goes on, the signal is sent again every grace (a hook set from a
 * signal handler could be lost if it lands inside LuaJIT's own update of its dispatch).
 * Between calls it looks again a grace later; only after a whole grace without a call does it
 * park until the loop thread's next call wakes it (the idle->busy transition), so a busy
 * broker costs at most one watchdog wake-up a grace (500 a second) and no call a system
 * call, and an idle one costs no wake-ups.
 *
 * Threading: kq_watchdog_start and kq_watchdog_stop are called by the thread to watch (the
 * broker's loop thread); starts nest (counted), the last stop joins the thread. Only the
 * watched thread calls kq_watchdog_call_begin/end. The signal handler stays installed after
 * a stop (a signal sent just before it must not kill the process); it does nothing then. */
#ifndef KQ_SANDBOX_WATCHDOG_H
#define KQ_SANDBOX_WATCHDOG_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A call runs this long without the count hook before the watchdog arms it. */
#define KQ_WATCHDOG_GRACE_US 2000

/* Starts watching the calling thread (0), or -errno with a reason in err (the broker then
 * serves with every call counted, as without a watchdog). A second start from another
 * thread while one runs is refused (-EBUSY): one watched thread per process. Refused in a
 * ThreadSanitizer build (-ENOTSUP), which delivers a signal only when the thread calls libc. */
int kq_watchdog_start(char *err, size_t errlen);
/* Undoes one start; the last one stops and joins the thread. */
void kq_watchdog_stop(void);
/* The watchdog runs and watches the calling thread. */
bool kq_watchdog_watches_me(void);

/* The watched thread: a call started at now_us (kq_mono_us()), and it ended. */
void kq_watchdog_call_begin(uint64_t now_us);
void kq_watchdog_call_end(void);

/* For tests: the times the watchdog thread woke up (from parking or from a timed sleep),
 * whether it is parked now, the signals it sent, and the times a call had to wake it. */
uint64_t kq_watchdog_wakeups(void);
bool kq_watchdog_parked(void);
uint64_t kq_watchdog_signals(void);
uint64_t kq_watchdog_nudges(void);
#endif
