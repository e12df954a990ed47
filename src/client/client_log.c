/* The client library's log: nowhere by default in the shared library (an embedding
 * application decides), to the application's callback, or to stderr when asked. */
#include <stdio.h>

#include "client/kiteq_client.h"
#include "core/log.h"

static kq_client_log_fn app_fn;
static void *app_ud;

/* "module: text" in one buffer, so the application gets one whole line per call. */
static void to_app(void *ud, enum kq_log_level level, const char *module, const char *text)
{
    (void)ud;
    char line[2300];
    snprintf(line, sizeof line, "%s: %s", module, text);
    if (app_fn)
        app_fn(app_ud, (enum kq_client_log_level)level, line);
}

static void discard(void *ud, enum kq_log_level level, const char *module, const char *text)
{
    (void)ud, (void)level, (void)module, (void)text;
}

void kq_client_set_logger(kq_client_log_fn fn, void *ud, enum kq_client_log_level min_level)
{
    app_ud = ud;
    app_fn = fn;
    kq_log_set_level((enum kq_log_level)min_level);
    kq_log_set_sink(fn ? to_app : discard, NULL);
}

void kq_client_log_to_stderr(enum kq_client_log_level min_level)
{
    app_fn = NULL;
    kq_log_set_level((enum kq_log_level)min_level);
    kq_log_open(NULL);
    kq_log_set_sink(NULL, NULL);
}

/* Only in libkiteq-client.so (see CMakeLists.txt): silent until the application asks. */
#ifdef KQ_CLIENT_SHARED
__attribute__((constructor)) static void quiet_by_default(void) { kq_log_set_sink(discard, NULL); }
#endif
