/* libkiteq-client.so as an application embeds it: silent on stderr unless asked, log lines
 * to the application's callback when it installs one. (The other client tests link the
 * static library, whose log goes to stderr like the tools'.) */
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "client/kiteq_client.h"
#include "support/broker_proc.h"

static struct broker_proc bp;

static bool on_message(void *ud, const struct kq_message *m)
{
    (void)ud, (void)m;
    return true;
}

static struct kq_client *open_consumer(void)
{
    struct kq_client_options o = {.broker = NULL,
                                  .group_id = TEST_CONSUMER,
                                  .secret = TEST_SECRET,
                                  .reconnect = true,
                                  .heartbeat_ms = 200,
                                  .on_message = on_message};
    char addr[64], err[256];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", bp.port);
    o.broker = addr;
    struct kq_client *c = NULL;
    assert_int_equal(kq_client_open(&o, &c, err, sizeof err), 0);
    return c;
}

/* Runs a client through a broker going away (the library then logs "connection lost")
 * while fd 2 points at a file; returns what reached that file. */
static char *stderr_during_broker_loss(void)
{
    char cfg[4096];
    broker_default_config(cfg, sizeof cfg, "memory://", "");
    assert_int_equal(broker_start(&bp, cfg, NULL), 0);
    char path[] = "/tmp/kq-embed-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    int saved = dup(2);
    dup2(fd, 2);
    struct kq_client *c = open_consumer();
    broker_kill9(&bp);
    struct timespec ts = {0, 600 * 1000000L}; /* the reader notices the loss and retries */
    nanosleep(&ts, NULL);
    kq_client_close(c);
    dup2(saved, 2);
    close(saved);
    off_t n = lseek(fd, 0, SEEK_END);
    char *text = calloc(1, (size_t)n + 1);
    pread(fd, text, (size_t)n, 0);
    close(fd);
    unlink(path);
    return text;
}

static void test_silent_by_default(void **state)
{
    (void)state;
    char *text = stderr_during_broker_loss();
    if (*text)
        fail_msg("the library wrote to stderr on its own: %s", text);
    free(text);
}

struct captured {
    pthread_mutex_t mu;
    int lines, warn_lines;
    char last[512];
};

static void capture(void *ud, enum kq_client_log_level level, const char *text)
{
    struct captured *cap = ud;
    pthread_mutex_lock(&cap->mu);
    cap->lines++;
    cap->warn_lines += level >= KQ_CLIENT_LOG_WARN;
    snprintf(cap->last, sizeof cap->last, "%s", text);
    pthread_mutex_unlock(&cap->mu);
}

static void test_logger_callback(void **state)
{
    (void)state;
    struct captured cap = {.mu = PTHREAD_MUTEX_INITIALIZER};
    kq_client_set_logger(capture, &cap, KQ_CLIENT_LOG_INFO);
    char *text = stderr_during_broker_loss();
    kq_client_set_logger(NULL, NULL, KQ_CLIENT_LOG_INFO);
    print_message("logger got %d lines (%d warn+), last: %s\n", cap.lines, cap.warn_lines,
                  cap.last);
    assert_string_equal(text, ""); /* to the callback, not to stderr */
    free(text);
    assert_true(cap.warn_lines >= 1);
    assert_non_null(strstr(cap.last, "client"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_silent_by_default),
        cmocka_unit_test(test_logger_callback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
