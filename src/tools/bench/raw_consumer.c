#include "tools/bench/raw_consumer.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client/client_net.h"
#include "core/buf.h"
#include "core/clock.h"
#include "proto/wire.h"

#define AUTH_TIMEOUT_MS 5000
#define HEARTBEAT_MS 10000 /* the client library's default interval */
#define READ_CHUNK 65536

struct bench_raw_consumer {
    struct bench_raw_consumer_options o;
    int fd;
    int stop[2]; /* pipe: written by close to wake the reader */
    pthread_t th;
    bool started;
    atomic_bool closed_by_broker;
    struct kq_buf in;
    struct kq_arena frames; /* what is decoded from `in` (the same thread), reset per frame */
    uint32_t next_opaque;
};

static int64_t mono_ms(void) { return (int64_t)(kq_mono_us() / 1000); }

int bench_consumer_mode_parse(const char *s, enum bench_consumer_mode *out)
{
    static const enum bench_consumer_mode all[] = {BENCH_CONSUMER_NORMAL, BENCH_CONSUMER_NEVER_ACK,
                                                   BENCH_CONSUMER_NEVER_READ};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (!strcmp(s, bench_consumer_mode_name(all[i]))) {
            *out = all[i];
            return 0;
        }
    return -EINVAL;
}

const char *bench_consumer_mode_name(enum bench_consumer_mode m)
{
    switch (m) {
    case BENCH_CONSUMER_NEVER_ACK: return "never-ack";
    case BENCH_CONSUMER_NEVER_READ: return "never-read";
    default: return "normal";
    }
}

/* Reads what the socket has into c->in: > 0 bytes read, 0 at EOF, or a negative errno. */
static ssize_t read_some(struct bench_raw_consumer *c)
{
    if (kq_buf_reserve(&c->in, READ_CHUNK))
        return -ENOMEM;
    ssize_t n;
    do
        n = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    c->in.len += (size_t)n;
    return n;
}

static int send_frame(struct bench_raw_consumer *c, struct kq_buf *b)
{
    int rc = kqc_send_all(c->fd, b->data, b->len);
    b->len = 0;
    return rc;
}

/* ConnMeta, then frames until the ConnAuthAck (anything before it is skipped). */
static int authenticate(struct bench_raw_consumer *c, char *err, size_t errlen)
{
    struct kq_buf b = {0};
    uint32_t op = ++c->next_opaque;
    int rc = kq_codec_append_conn_meta(&b, op, c->o.group, c->o.secret, 0);
    if (rc == 0)
        rc = send_frame(c, &b);
    kq_buf_free(&b);
    if (rc) {
        snprintf(err, errlen, "send ConnMeta: %s", strerror(-rc));
        return rc;
    }
    int64_t deadline = mono_ms() + AUTH_TIMEOUT_MS;
    for (;;) {
        struct kq_frame f;
        int used;
        while ((used = kq_frame_parse(c->in.data, c->in.len, &f)) > 0) {
            /* a refusal comes with opaque 0 */
            if (f.cmd == KQ_CMD_CONN_AUTH && (f.opaque == op || f.opaque == 0)) {
                struct kq_frame_view v;
                rc = kq_frame_decode(&c->frames, f.cmd, f.body, (size_t)f.body_len, NULL, &v);
                if (rc == 0 && !v.conn_auth.status)
                    rc = -EACCES;
                if (rc)
                    snprintf(err, errlen, "%s",
                             rc == -EACCES ? v.conn_auth.feedback : "undecodable ConnAuthAck");
                kq_arena_reset(&c->frames);
                kq_buf_consume(&c->in, (size_t)used);
                return rc;
            }
            kq_buf_consume(&c->in, (size_t)used);
        }
        if (used < 0) {
            snprintf(err, errlen, "bad frame from the broker");
            return -EPROTO;
        }
        int64_t left = deadline - mono_ms();
        struct pollfd pf = {.fd = c->fd, .events = POLLIN};
        int ready = left > 0 ? poll(&pf, 1, (int)left) : 0;
        if (ready == 0) {
            snprintf(err, errlen, "no ConnAuthAck within %d ms", AUTH_TIMEOUT_MS);
            return -ETIMEDOUT;
        }
        if (ready < 0)
            continue; /* EINTR */
        ssize_t n = read_some(c);
        if (n <= 0 && n != -EAGAIN) {
            snprintf(err, errlen, "broker closed the connection during the handshake");
            return n == 0 ? -ECONNRESET : (int)n;
        }
    }
}

/* Hands the body of every complete delivery frame to the callback; drops everything else
 * (heartbeat echoes). A frame that does not decode ends the connection: the bench must not
 * count on a stream it misread. */
static int dispatch(struct bench_raw_consumer *c)
{
    struct kq_frame f;
    int used;
    while ((used = kq_frame_parse(c->in.data, c->in.len, &f)) > 0) {
        if (f.cmd == KQ_CMD_BYTES_MESSAGE || f.cmd == KQ_CMD_STRING_MESSAGE) {
            struct kq_frame_view v;
            int rc = kq_frame_decode(&c->frames, f.cmd, f.body, (size_t)f.body_len, NULL, &v);
            if (rc == 0 && c->o.on_delivery)
                c->o.on_delivery(c->o.ud, v.message.body, v.message.body_len);
            kq_arena_reset(&c->frames);
            if (rc) {
                fprintf(stderr, "kiteq-bench: undecodable delivery (%s): consumer stops\n",
                        kq_cmd_name(f.cmd));
                return -EPROTO;
            }
        }
        kq_buf_consume(&c->in, (size_t)used);
    }
    return used < 0 ? used : 0;
}

/* never-ack: read and count everything, ack nothing, keep the connection alive. */
static void *never_ack_main(void *arg)
{
    struct bench_raw_consumer *c = arg;
    struct kq_buf hb = {0};
    int64_t next_hb = mono_ms() + HEARTBEAT_MS;
    if (dispatch(c)) /* frames that arrived with the ConnAuthAck */
        goto out;
    for (;;) {
        int64_t now = mono_ms();
        if (now >= next_hb) {
            if (kq_codec_append_heartbeat(&hb, ++c->next_opaque, kq_now_sec()) ||
                send_frame(c, &hb))
                break;
            next_hb = now + HEARTBEAT_MS;
        }
        struct pollfd pf[2] = {{.fd = c->fd, .events = POLLIN},
                               {.fd = c->stop[0], .events = POLLIN}};
        if (poll(pf, 2, (int)(next_hb - now)) < 0 && errno != EINTR)
            break;
        if (pf[1].revents)
            goto out; /* bench_raw_consumer_close */
        if (!pf[0].revents)
            continue;
        ssize_t n = read_some(c);
        if (n == -EAGAIN)
            continue;
        if (n <= 0 || dispatch(c))
            break;
    }
    atomic_store(&c->closed_by_broker, true);
out:
    kq_buf_free(&hb);
    return NULL;
}

int bench_raw_consumer_open(const struct bench_raw_consumer_options *o,
                            struct bench_raw_consumer **out, char *err, size_t errlen)
{
    *out = NULL;
    struct bench_raw_consumer *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->o = *o;
    c->fd = c->stop[0] = c->stop[1] = -1;
    kq_arena_init(&c->frames, 16384);
    int rc = kqc_connect(o->broker, AUTH_TIMEOUT_MS, AUTH_TIMEOUT_MS, -1, &c->fd);
    if (rc) {
        snprintf(err, errlen, "connect: %s", strerror(-rc));
        goto fail;
    }
    /* after connect, as the original Go client does (see --consumer-rcvbuf) */
    if (o->rcvbuf > 0)
        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &o->rcvbuf, sizeof o->rcvbuf);
    if (o->sndbuf > 0)
        setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &o->sndbuf, sizeof o->sndbuf);
    if ((rc = authenticate(c, err, errlen)))
        goto fail;
    if (o->mode == BENCH_CONSUMER_NEVER_ACK) {
        if (pipe(c->stop)) {
            rc = -errno;
            snprintf(err, errlen, "pipe: %s", strerror(errno));
            goto fail;
        }
        if ((rc = -pthread_create(&c->th, NULL, never_ack_main, c))) {
            snprintf(err, errlen, "thread: %s", strerror(-rc));
            goto fail;
        }
        c->started = true;
    }
    *out = c;
    return 0;
fail:
    bench_raw_consumer_close(c);
    return rc;
}

bool bench_raw_consumer_closed_by_broker(const struct bench_raw_consumer *c)
{
    return atomic_load(&c->closed_by_broker);
}

void bench_raw_consumer_close(struct bench_raw_consumer *c)
{
    if (!c)
        return;
    if (c->started) {
        ssize_t w;
        do
            w = write(c->stop[1], "x", 1);
        while (w < 0 && errno == EINTR);
        pthread_join(c->th, NULL);
    }
    for (int i = 0; i < 2; i++)
        if (c->stop[i] >= 0)
            close(c->stop[i]);
    if (c->fd >= 0)
        close(c->fd);
    kq_buf_free(&c->in);
    kq_arena_free(&c->frames);
    free(c);
}
