#include "core/log.h"

#include "core/redact.h"

#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* A reload sets the level on the loop thread while other threads log: atomic (relaxed: a line
 * logged during the change may follow either level). */
static atomic_int min_level = KQ_LOG_INFO;
static int log_fd = 2;
static kq_log_sink_fn sink;
static void *sink_ud;

void kq_log_set_sink(kq_log_sink_fn fn, void *ud)
{
    sink_ud = ud;
    sink = fn;
}

static const char *level_names[] = {"debug", "info", "warn", "error"};

void kq_log_set_level(enum kq_log_level level)
{
    atomic_store_explicit(&min_level, (int)level, memory_order_relaxed);
}

bool kq_log_enabled(enum kq_log_level level)
{
    return (int)level >= atomic_load_explicit(&min_level, memory_order_relaxed);
}

int kq_log_parse_level(const char *name, enum kq_log_level *out)
{
    for (int i = 0; i < 4; i++)
        if (strcasecmp(name, level_names[i]) == 0) {
            *out = (enum kq_log_level)i;
            return 0;
        }
    return -EINVAL;
}

int kq_log_open(const char *path)
{
    if (!path) {
        if (log_fd != 2)
            close(log_fd);
        log_fd = 2;
        return 0;
    }
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    if (log_fd == 2) {
        log_fd = fd;
        return 0;
    }
    /* Reopen: dup3 swaps the file under the same descriptor atomically, so a thread logging
     * meanwhile writes to the old or the new file, never to a closed descriptor. */
    int rc = dup3(fd, log_fd, O_CLOEXEC) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

/* Appends msg to line[*len..] as one line: an embedded newline (a list of errors) becomes
 * " | " so that every event stays one line. */
static void append_one_line(char *line, size_t *len, size_t cap, const char *msg)
{
    for (; *msg && *len + 4 < cap; msg++) {
        if (*msg != '\n') {
            line[(*len)++] = *msg;
            continue;
        }
        memcpy(line + *len, " | ", 3);
        *len += 3;
    }
}

void kq_log(enum kq_log_level level, const char *module, const char *fmt, ...)
{
    if (!kq_log_enabled(level))
        return;
    char line[2048], msg[2048], clean[2048];
    int64_t ms = kq_now_ms();
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    int n = snprintf(line, sizeof line,
                     "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %s %s: ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000),
                     level_names[level], module);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* Whatever a caller passes (a store URI, an error quoting a config value), no password
     * reaches the log. */
    const char *text = kq_redact_needed(msg) ? kq_redact(msg, clean, sizeof clean) : msg;
    kq_log_sink_fn fn = sink;
    if (fn) {
        char one[2048];
        size_t tl = 0;
        append_one_line(one, &tl, sizeof one, text);
        one[tl] = 0;
        fn(sink_ud, level, module, one);
        return;
    }
    size_t len = n < 0 ? 0 : (size_t)n;
    append_one_line(line, &len, sizeof line, text);
    line[len++] = '\n';
    /* One write per line keeps lines whole when several threads log. */
    ssize_t w = write(log_fd, line, len);
    (void)w;
}

bool kq_log_ratelimit_pass(struct kq_log_ratelimit *rl, unsigned *suppressed)
{
    int64_t now = kq_now_ms() / 1000;
    int64_t last = atomic_load_explicit(&rl->sec, memory_order_relaxed);
    /* one thread per second wins the exchange and writes the line */
    if (last != now && atomic_compare_exchange_strong(&rl->sec, &last, now)) {
        *suppressed = atomic_exchange(&rl->suppressed, 0);
        return true;
    }
    atomic_fetch_add_explicit(&rl->suppressed, 1, memory_order_relaxed);
    return false;
}

static uint64_t key_hash(const void *key, size_t len)
{
    uint64_t h = 14695981039346656037ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ ((const uint8_t *)key)[i]) * 1099511628211ull;
    return h ? h : 1; /* 0 marks a free slot */
}

bool kq_log_keyed_pass(struct kq_log_keyed *t, const void *key, size_t key_len,
                       unsigned *suppressed)
{
    uint64_t h = key_hash(key, key_len);
    int64_t now = kq_now_ms() / 1000;
    bool pass;
    pthread_mutex_lock(&t->lock);
    size_t first = (size_t)(h % KQ_LOG_KEY_SLOTS), pick = first;
    for (size_t i = 0; i < KQ_LOG_KEY_WAYS; i++) {
        size_t k = (first + i) % KQ_LOG_KEY_SLOTS;
        if (t->slots[k].hash == h) {
            pick = k;
            break;
        }
        if (t->slots[k].sec < t->slots[pick].sec || !t->slots[k].hash)
            pick = k;
    }
    if (t->slots[pick].hash != h) { /* a new key: the oldest candidate makes room */
        t->slots[pick].hash = h;
        t->slots[pick].sec = now - 1;
        t->slots[pick].suppressed = 0;
    }
    pass = t->slots[pick].sec != now;
    if (pass) {
        *suppressed = t->slots[pick].suppressed;
        t->slots[pick].suppressed = 0;
        t->slots[pick].sec = now;
    } else {
        t->slots[pick].suppressed++;
    }
    pthread_mutex_unlock(&t->lock);
    return pass;
}

size_t kq_log_peer_host_len(const char *peer)
{
    const char *colon = strrchr(peer, ':'); /* net writes "ip:port", IPv6 too ("::1:5000") */
    return colon ? (size_t)(colon - peer) : strlen(peer);
}
