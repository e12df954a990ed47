#include "client/client_net.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/clock.h"

int kqc_split_hostport(const char *s, char *host, size_t hostlen, char *port, size_t portlen)
{
    if (!s)
        return -EINVAL;
    const char *h = s, *colon;
    size_t hl;
    if (*s == '[') { /* IPv6 literal */
        const char *end = strchr(s, ']');
        if (!end || end[1] != ':')
            return -EINVAL;
        h = s + 1;
        hl = (size_t)(end - h);
        colon = end + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return -EINVAL;
        hl = (size_t)(colon - s);
    }
    const char *p = colon + 1;
    size_t pl = strlen(p);
    if (hl == 0 || hl >= hostlen || pl == 0 || pl >= portlen)
        return -EINVAL;
    memcpy(host, h, hl);
    host[hl] = 0;
    memcpy(port, p, pl + 1);
    return 0;
}

static int set_blocking(int fd, int blocking)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -errno;
    fl = blocking ? (fl & ~O_NONBLOCK) : (fl | O_NONBLOCK);
    return fcntl(fd, F_SETFL, fl) < 0 ? -errno : 0;
}

/* Non-blocking connect, then wait for writability (or the wake fd) until the deadline. */
static int connect_one(const struct addrinfo *ai, int64_t deadline_ms, int wake_fd, int *out)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0)
        return -errno;
    int rc = set_blocking(fd, 0);
    if (rc)
        goto fail;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        if (errno != EINPROGRESS) {
            rc = -errno;
            goto fail;
        }
        for (;;) {
            int64_t left = deadline_ms - (int64_t)(kq_mono_us() / 1000);
            if (left <= 0) {
                rc = -ETIMEDOUT;
                goto fail;
            }
            struct pollfd pf[2] = {{.fd = fd, .events = POLLOUT},
                                   {.fd = wake_fd, .events = POLLIN}};
            int n = poll(pf, wake_fd >= 0 ? 2 : 1, (int)left);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                rc = -errno;
                goto fail;
            }
            if (wake_fd >= 0 && (pf[1].revents & POLLIN)) {
                rc = -ECANCELED;
                goto fail;
            }
            if (pf[0].revents)
                break;
        }
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
            soerr = errno;
        if (soerr) {
            rc = -soerr;
            goto fail;
        }
    }
    if ((rc = set_blocking(fd, 1)))
        goto fail;
    *out = fd;
    return 0;
fail:
    close(fd);
    return rc;
}

int kqc_connect(const char *hostport, int timeout_ms, int send_timeout_ms, int wake_fd, int *out_fd)
{
    char host[256], port[32];
    int rc = kqc_split_hostport(hostport, host, sizeof host, port, sizeof port);
    if (rc)
        return rc;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host, port, &hints, &res);
    if (gai)
        return gai == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
    int64_t deadline = (int64_t)(kq_mono_us() / 1000) + timeout_ms;
    rc = -EHOSTUNREACH;
    int fd = -1;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        rc = connect_one(ai, deadline, wake_fd, &fd);
        if (rc == 0 || rc == -ECANCELED || rc == -ETIMEDOUT)
            break;
    }
    freeaddrinfo(res);
    if (rc)
        return rc;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    /* A broker that stops reading must not block a writer (and with it close) forever:
     * a send that times out is treated as a dead connection by the caller. */
    struct timeval tv = {.tv_sec = send_timeout_ms / 1000,
                         .tv_usec = (send_timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    *out_fd = fd;
    return 0;
}

int kqc_send_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}
