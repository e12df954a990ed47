#include "sandbox/watchdog.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "sandbox/lua_budget.h"

/* A real-time signal (never merged away, not used by the broker or its libraries). */
#define WATCHDOG_SIGNAL (SIGRTMIN + 4)

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv; /* CLOCK_MONOTONIC: the watchdog's sleeps, and its parking */
static pthread_t thread, watched;
static unsigned starts;  /* under mu */
static bool stopping;    /* under mu */
static atomic_bool running;
/* the call in progress: its sequence number (0: none) and start (kq_mono_us) */
static _Atomic uint64_t current, start_us;
static uint64_t seq; /* the watched thread's last call */
static _Atomic uint64_t begun; /* seq of the last call begun (stays after it ended) */
static atomic_bool parked;
static _Atomic uint64_t wakeups, signals, nudges;

static void on_signal(int sig)
{
    (void)sig;
    int saved = errno;
    kq_lua_budget_overdue();
    errno = saved;
}

/* Sleeps (mu held) until woken, or until due_us when due_us != 0. */
static void sleep_until(uint64_t due_us)
{
    if (due_us) {
        struct timespec ts = {(time_t)(due_us / 1000000), (long)(due_us % 1000000) * 1000};
        pthread_cond_timedwait(&cv, &mu, &ts);
    } else {
        pthread_cond_wait(&cv, &mu);
    }
    atomic_fetch_add_explicit(&wakeups, 1, memory_order_relaxed);
}

static void *watch(void *arg)
{
    (void)arg;
    uint64_t signalled = 0, sent_us = 0; /* the call last signalled, and when */
    uint64_t seen = 0;                   /* begun when last looked at between calls */
    pthread_mutex_lock(&mu);
    while (!stopping) {
        uint64_t call = atomic_load(&current);
        uint64_t last = atomic_load_explicit(&begun, memory_order_relaxed);
        if (!call && last != seen) {
            /* calls ran since the last look: look again a grace later instead of parking
             * (each park costs the next call a wake-up, which at a few thousand calls a
             * second would be every call); parked only after a grace without calls */
            seen = last;
            sleep_until(kq_mono_us() + KQ_WATCHDOG_GRACE_US);
            continue;
        }
        if (!call) {
            /* park; kq_watchdog_call_begin wakes us (both sides are seq_cst: either it sees
             * parked, or we see its call) */
            atomic_store(&parked, true);
            if (!atomic_load(&current) && !stopping)
                sleep_until(0);
            atomic_store(&parked, false);
            continue;
        }
        uint64_t start = atomic_load_explicit(&start_us, memory_order_relaxed);
        if (atomic_load(&current) != call)
            continue; /* start may be a later call's */
        uint64_t due = (signalled == call ? sent_us : start) + KQ_WATCHDOG_GRACE_US;
        uint64_t now = kq_mono_us();
        if (now < due) {
            sleep_until(due);
            continue;
        }
        if (atomic_load(&current) == call) {
            atomic_fetch_add_explicit(&signals, 1, memory_order_relaxed); /* counted first */
            pthread_kill(watched, WATCHDOG_SIGNAL);
            signalled = call;
            sent_us = now;
        }
    }
    pthread_mutex_unlock(&mu);
    return NULL;
}

/* Once per process: the handler and the condition variable's clock. */
static int install(char *err, size_t errlen)
{
    static bool done;
    if (done)
        return 0;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc) {
        snprintf(err, errlen, "watchdog: condition variable: %s", strerror(rc));
        return -rc;
    }
    /* SA_RESTART: a system call of the loop thread that the signal interrupts goes on */
    struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    if (sigaction(WATCHDOG_SIGNAL, &sa, NULL) != 0) {
        rc = errno;
        pthread_cond_destroy(&cv);
        snprintf(err, errlen, "watchdog: sigaction: %s", strerror(rc));
        return -rc;
    }
    done = true;
    return 0;
}

#ifndef __has_feature
#define __has_feature(x) 0
#endif

int kq_watchdog_start(char *err, size_t errlen)
{
#if defined(__SANITIZE_THREAD__) || __has_feature(thread_sanitizer)
    /* ThreadSanitizer holds a signal back until the thread calls into libc, which a Lua loop
     * never does: the hook would never be armed */
    snprintf(err, errlen, "watchdog: off under ThreadSanitizer (it delays signals)");
    return -ENOTSUP;
#endif
    pthread_mutex_lock(&mu);
    int rc = 0;
    if (starts) {
        if (pthread_equal(watched, pthread_self()))
            starts++;
        else {
            rc = -EBUSY;
            snprintf(err, errlen, "watchdog: already watching another thread");
        }
        pthread_mutex_unlock(&mu);
        return rc;
    }
    rc = install(err, errlen);
    if (rc == 0) {
        /* the watchdog takes no signal meant for the process (SIGTERM, SIGHUP...) */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        watched = pthread_self();
        stopping = false;
        int e = pthread_create(&thread, NULL, watch, NULL);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (e) {
            snprintf(err, errlen, "watchdog: cannot start its thread: %s", strerror(e));
            rc = -e;
        } else {
            starts = 1;
            atomic_store(&running, true);
        }
    }
    pthread_mutex_unlock(&mu);
    return rc;
}

void kq_watchdog_stop(void)
{
    pthread_mutex_lock(&mu);
    if (!starts || --starts) {
        pthread_mutex_unlock(&mu);
        return;
    }
    atomic_store(&running, false);
    stopping = true;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
    pthread_join(thread, NULL);
}

bool kq_watchdog_watches_me(void)
{
    return atomic_load_explicit(&running, memory_order_acquire) &&
           pthread_equal(watched, pthread_self());
}

void kq_watchdog_call_begin(uint64_t now_us)
{
    atomic_store_explicit(&start_us, now_us, memory_order_relaxed);
    atomic_store_explicit(&begun, seq + 1, memory_order_relaxed);
    atomic_store(&current, ++seq); /* seq_cst: ordered before the load of parked */
    if (atomic_load(&parked)) {    /* idle -> busy: the only time the loop wakes it */
        atomic_fetch_add_explicit(&nudges, 1, memory_order_relaxed);
        pthread_mutex_lock(&mu);
        atomic_store(&parked, false); /* woken: the next calls need not wake it again */
        pthread_cond_signal(&cv);
        pthread_mutex_unlock(&mu);
    }
}

void kq_watchdog_call_end(void) { atomic_store_explicit(&current, 0, memory_order_release); }

uint64_t kq_watchdog_wakeups(void) { return atomic_load(&wakeups); }
bool kq_watchdog_parked(void) { return atomic_load(&parked); }
uint64_t kq_watchdog_signals(void) { return atomic_load(&signals); }
uint64_t kq_watchdog_nudges(void) { return atomic_load(&nudges); }
