/* Unit tests that check what the broker logs: the log goes to a temporary file between
 * begin and end (at level info), and end returns what was written. */
#ifndef KQ_TEST_LOG_CAPTURE_H
#define KQ_TEST_LOG_CAPTURE_H
#include "core/log.h"

/* Log into a fresh temporary file from now on, at level info. */
void log_capture_begin(void);
/* Back to stderr at level `restore`; returns the captured text (malloc'd, never NULL). */
char *log_capture_end(enum kq_log_level restore);
#endif
