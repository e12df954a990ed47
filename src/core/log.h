/* Logging: one line per event, "ts level module: message key=value ...".
 * Thread-safe (a single write(2) per line). Repeats of one call site are rate-limited
 * with KQ_LOG_RATELIMITED. */
#ifndef KQ_CORE_LOG_H
#define KQ_CORE_LOG_H

enum kq_log_level { KQ_LOG_DEBUG = 0, KQ_LOG_INFO, KQ_LOG_WARN, KQ_LOG_ERROR };

void kq_log_set_level(enum kq_log_level level);
/* Parses "debug|info|warn|error"; returns 0 or -EINVAL. */
int kq_log_parse_level(const char *name, enum kq_log_level *out);
/* Redirect to a file (append); NULL = stderr. Returns 0 or -errno. Call again to reopen. */
int kq_log_open(const char *path);
void kq_log(enum kq_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define KQ_DEBUG(mod, ...) kq_log(KQ_LOG_DEBUG, mod, __VA_ARGS__)
#define KQ_INFO(mod, ...) kq_log(KQ_LOG_INFO, mod, __VA_ARGS__)
#define KQ_WARN(mod, ...) kq_log(KQ_LOG_WARN, mod, __VA_ARGS__)
#define KQ_ERROR(mod, ...) kq_log(KQ_LOG_ERROR, mod, __VA_ARGS__)

/* At most one line per second from this call site; the number suppressed is appended. */
#define KQ_LOG_RATELIMITED(level, mod, fmt, ...)                                          \
    do {                                                                                  \
        static long kq_rl_sec_;                                                           \
        static unsigned kq_rl_dropped_;                                                   \
        long kq_rl_now_ = (long)(kq_now_ms() / 1000);                                     \
        if (kq_rl_now_ != kq_rl_sec_) {                                                   \
            kq_log(level, mod, fmt " suppressed=%u", ##__VA_ARGS__, kq_rl_dropped_);      \
            kq_rl_sec_ = kq_rl_now_;                                                      \
            kq_rl_dropped_ = 0;                                                           \
        } else {                                                                          \
            kq_rl_dropped_++;                                                             \
        }                                                                                 \
    } while (0)

#include "core/clock.h"
#endif
