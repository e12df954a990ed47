/* Logging: one line per event, "ts level module: message key=value ...".
 * Thread-safe (a single write(2) per line). Repeats of one call site are rate-limited
 * with KQ_LOG_RATELIMITED, or per key (peer, topic...) with KQ_LOG_RATELIMITED_BY. */
#ifndef KQ_CORE_LOG_H
#define KQ_CORE_LOG_H
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum kq_log_level { KQ_LOG_DEBUG = 0, KQ_LOG_INFO, KQ_LOG_WARN, KQ_LOG_ERROR };

/* Lines below level are dropped. Any thread, also while others log. */
void kq_log_set_level(enum kq_log_level level);
/* Whether a line of this level is written (to skip building costly debug lines). */
bool kq_log_enabled(enum kq_log_level level);
/* Parses "debug|info|warn|error"; returns 0 or -EINVAL. */
int kq_log_parse_level(const char *name, enum kq_log_level *out);
/* Redirect to a file (append); NULL = stderr. Returns 0 or -errno. Call again to reopen. */
int kq_log_open(const char *path);
void kq_log(enum kq_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Send log lines to fn instead of the log file: text is the message (redacted, one line,
 * no timestamp). fn NULL = back to the file. Set it before other threads log (the client
 * library's kq_client_set_logger is the public way). */
typedef void (*kq_log_sink_fn)(void *ud, enum kq_log_level level, const char *module,
                               const char *text);
void kq_log_set_sink(kq_log_sink_fn fn, void *ud);

#define KQ_DEBUG(mod, ...) kq_log(KQ_LOG_DEBUG, mod, __VA_ARGS__)
#define KQ_INFO(mod, ...) kq_log(KQ_LOG_INFO, mod, __VA_ARGS__)
#define KQ_WARN(mod, ...) kq_log(KQ_LOG_WARN, mod, __VA_ARGS__)
#define KQ_ERROR(mod, ...) kq_log(KQ_LOG_ERROR, mod, __VA_ARGS__)

/* One rate limit: at most one line per second, the lines held back counted. Any thread
 * (lock-free); zero-initialised = ready. Returns true when a line may be written now, with
 * *suppressed = the lines held back since the previous one; false counts this one. */
struct kq_log_ratelimit {
    _Atomic int64_t sec; /* the second of the last line written */
    _Atomic unsigned suppressed;
};
bool kq_log_ratelimit_pass(struct kq_log_ratelimit *rl, unsigned *suppressed);

/* At most one line per second from this call site; the number suppressed is appended. */
#define KQ_LOG_RATELIMITED(level, mod, fmt, ...)                                                   \
    do {                                                                                           \
        static struct kq_log_ratelimit kq_rl_;                                                     \
        unsigned kq_rl_n_;                                                                         \
        if (kq_log_ratelimit_pass(&kq_rl_, &kq_rl_n_))                                             \
            kq_log(level, mod, fmt " suppressed=%u", ##__VA_ARGS__, kq_rl_n_);                     \
    } while (0)

/* Rate limits per key (a peer's address, a topic and message type): one line per second per
 * key. A fixed table per call site keeps memory bounded whatever the keys: each key has
 * KQ_LOG_KEY_WAYS candidate slots, and a new key takes the one that logged longest ago
 * (forgetting that key's held-back count). Keys are told apart by a 64-bit hash. Any thread
 * (one mutex per table). */
#define KQ_LOG_KEY_SLOTS 256
#define KQ_LOG_KEY_WAYS 4
struct kq_log_keyed {
    pthread_mutex_t lock;
    struct {
        uint64_t hash; /* 0 = free */
        int64_t sec;
        unsigned suppressed;
    } slots[KQ_LOG_KEY_SLOTS];
};
#define KQ_LOG_KEYED_INIT                                                                          \
    {                                                                                              \
        .lock = PTHREAD_MUTEX_INITIALIZER                                                          \
    }
/* As kq_log_ratelimit_pass, for the key's own limit. */
bool kq_log_keyed_pass(struct kq_log_keyed *t, const void *key, size_t key_len,
                       unsigned *suppressed);
/* The length of the host part of a peer address "ip:port" (as net writes it, IPv6 too):
 * the key that limits the lines of one peer whatever port it connects from. */
size_t kq_log_peer_host_len(const char *peer);

/* At most one line per second from this call site per key (key_len bytes at key). */
#define KQ_LOG_RATELIMITED_BY(level, mod, key, key_len, fmt, ...)                                  \
    do {                                                                                           \
        static struct kq_log_keyed kq_lk_ = KQ_LOG_KEYED_INIT;                                     \
        unsigned kq_lk_n_;                                                                         \
        if (kq_log_keyed_pass(&kq_lk_, key, key_len, &kq_lk_n_))                                   \
            kq_log(level, mod, fmt " suppressed=%u", ##__VA_ARGS__, kq_lk_n_);                     \
    } while (0)
/* The same per peer host (peer = kq_conn_peer()). */
#define KQ_LOG_PER_PEER(level, mod, peer, fmt, ...)                                                \
    KQ_LOG_RATELIMITED_BY(level, mod, peer, kq_log_peer_host_len(peer), fmt, ##__VA_ARGS__)

#include "core/clock.h"
#endif
