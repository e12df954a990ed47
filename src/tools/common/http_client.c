#include "tools/common/http_client.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>

#include <http_parser.h>

#define MAX_RESPONSE (64u * 1024 * 1024)

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int left_ms(int64_t deadline)
{
    int64_t l = deadline - now_ms();
    return l < 0 ? 0 : l > 1000000 ? 1000000 : (int)l;
}

/* Wait for `events` on fd until the deadline: 0, -ETIMEDOUT or -errno. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, left_ms(deadline));
        if (n > 0)
            return 0;
        if (n == 0)
            return -ETIMEDOUT;
        if (errno != EINTR)
            return -errno;
    }
}

/* Split "host:port" ("[v6]:port" too) and connect with a deadline. Returns fd or -errno. */
static int dial(const char *hostport, int64_t deadline, char *err, size_t errlen)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    size_t hl = colon ? (size_t)(colon - hostport) : 0;
    if (!colon || hl == 0 || hl >= sizeof host || !colon[1]) {
        snprintf(err, errlen, "bad address '%s' (expected HOST:PORT)", hostport);
        return -EINVAL;
    }
    memcpy(host, hostport, hl);
    host[hl] = 0;
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = 0;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int g = getaddrinfo(host, colon + 1, &hints, &res);
    if (g) {
        snprintf(err, errlen, "cannot resolve '%s': %s", hostport, gai_strerror(g));
        return -EINVAL;
    }
    int rc = -ECONNREFUSED;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            rc = -errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            rc = fd;
            break;
        }
        rc = -errno;
        if (rc == -EINPROGRESS && (rc = wait_fd(fd, POLLOUT, deadline)) == 0) {
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
            if (soerr == 0) {
                rc = fd;
                break;
            }
            rc = -soerr;
        }
        close(fd);
        if (rc == -ETIMEDOUT)
            break;
    }
    freeaddrinfo(res);
    if (rc < 0)
        snprintf(err, errlen, "cannot connect to %s: %s", hostport, strerror(-rc));
    return rc;
}

static int send_all(int fd, const char *p, size_t n, int64_t deadline)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && errno == EAGAIN) {
            int rc = wait_fd(fd, POLLOUT, deadline);
            if (rc)
                return rc;
        } else if (w < 0 && errno != EINTR) {
            return -errno;
        }
    }
    return 0;
}

struct rx {
    struct cli_http_response *r;
    size_t cap;
    bool done;
    bool too_big;
};

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct rx *x = p->data;
    struct cli_http_response *r = x->r;
    if (r->body_len + n + 1 > MAX_RESPONSE) {
        x->too_big = true;
        return -1;
    }
    if (r->body_len + n + 1 > x->cap) {
        size_t cap = x->cap ? x->cap : 4096;
        while (cap < r->body_len + n + 1)
            cap *= 2;
        char *b = realloc(r->body, cap);
        if (!b)
            return -1;
        r->body = b;
        x->cap = cap;
    }
    memcpy(r->body + r->body_len, at, n);
    r->body_len += n;
    r->body[r->body_len] = 0;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct rx *x = p->data;
    x->r->status = p->status_code;
    x->done = true;
    http_parser_pause(p, 1); /* anything after the response is not ours */
    return 0;
}

int cli_http_request(const char *hostport, const char *method, const char *target,
                     const char *bearer, int timeout_ms, struct cli_http_response *r, char *err,
                     size_t errlen)
{
    *r = (struct cli_http_response){0};
    int64_t deadline = now_ms() + timeout_ms;
    int fd = dial(hostport, deadline, err, errlen);
    if (fd < 0)
        return fd;

    for (const char *t = bearer; t && *t; t++)
        if ((unsigned char)*t <= ' ' || (unsigned char)*t >= 0x7f) {
            snprintf(err, errlen, "the admin token must be visible ASCII");
            close(fd);
            return -EINVAL;
        }
    char req[2048];
    int n = snprintf(
        req, sizeof req,
        "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: kiteq-cli\r\nAccept: */*\r\n"
        "Connection: close\r\n%s%s%s%s\r\n",
        method, target, hostport, strcmp(method, "POST") ? "" : "Content-Length: 0\r\n",
        bearer ? "Authorization: Bearer " : "", bearer ? bearer : "", bearer ? "\r\n" : "");
    int rc;
    if (n < 0 || (size_t)n >= sizeof req) {
        snprintf(err, errlen, "request target too long");
        rc = -EINVAL;
        goto out;
    }
    if ((rc = send_all(fd, req, (size_t)n, deadline))) {
        snprintf(err, errlen, "cannot send to %s: %s", hostport, strerror(-rc));
        goto out;
    }

    static const http_parser_settings settings = {.on_body = on_body,
                                                  .on_message_complete = on_message_complete};
    struct rx x = {.r = r};
    http_parser hp;
    http_parser_init(&hp, HTTP_RESPONSE);
    hp.data = &x;
    char buf[16384];
    while (!x.done) {
        ssize_t got = recv(fd, buf, sizeof buf, 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0 && errno == EAGAIN) {
            if ((rc = wait_fd(fd, POLLIN, deadline))) {
                snprintf(err, errlen, "no complete response from %s: %s", hostport, strerror(-rc));
                goto out;
            }
            continue;
        }
        if (got < 0) {
            rc = -errno;
            snprintf(err, errlen, "cannot read from %s: %s", hostport, strerror(errno));
            goto out;
        }
        /* got == 0 tells the parser about EOF (ends a body delimited by close) */
        http_parser_execute(&hp, &settings, buf, (size_t)got);
        enum http_errno e = HTTP_PARSER_ERRNO(&hp);
        if (!x.done && e != HPE_OK) {
            rc = x.too_big ? -EMSGSIZE : -EPROTO;
            snprintf(err, errlen, "bad response from %s: %s", hostport,
                     x.too_big ? "larger than 64 MiB" : http_errno_description(e));
            goto out;
        }
        if (got == 0 && !x.done) {
            rc = -EPROTO;
            snprintf(err, errlen, "%s closed the connection before a complete response", hostport);
            goto out;
        }
    }
    if (!r->body && !(r->body = calloc(1, 1))) {
        rc = -ENOMEM;
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    rc = 0;
out:
    close(fd);
    if (rc)
        cli_http_response_free(r);
    return rc;
}

void cli_http_response_free(struct cli_http_response *r)
{
    free(r->body);
    *r = (struct cli_http_response){0};
}

int cli_url_encode(const char *s, char *out, size_t outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        bool keep = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || strchr("-._~", ch);
        size_t need = keep ? 1 : 3;
        if (o + need >= outlen)
            return -ENAMETOOLONG;
        if (keep) {
            out[o++] = (char)ch;
        } else {
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    if (o >= outlen)
        return -ENAMETOOLONG;
    out[o] = 0;
    return 0;
}
