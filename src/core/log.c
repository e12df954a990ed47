#include "core/log.h"

#include "core/redact.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static enum kq_log_level min_level = KQ_LOG_INFO;
static int log_fd = 2;

static const char *level_names[] = {"debug", "info", "warn", "error"};

void kq_log_set_level(enum kq_log_level level) { min_level = level; }

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
    if (level < min_level)
        return;
    char line[2048], msg[2048], clean[2048];
    int64_t ms = kq_now_ms();
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %s %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (int)(ms % 1000), level_names[level], module);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* Whatever a caller passes (a store URI, an error quoting a config value), no password
     * reaches the log. */
    const char *text = kq_redact_needed(msg) ? kq_redact(msg, clean, sizeof clean) : msg;
    size_t len = n < 0 ? 0 : (size_t)n;
    append_one_line(line, &len, sizeof line, text);
    line[len++] = '\n';
    /* One write per line keeps lines whole when several threads log. */
    ssize_t w = write(log_fd, line, len);
    (void)w;
}
