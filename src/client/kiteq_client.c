/* libkiteq-client: blocking sockets, one reader thread per client.
 *
 * Threads: the caller's threads publish (writes serialised by `wmu`); the reader thread
 * reads and dispatches frames, sends heartbeats, expires pending publishes and
 * reconnects. Frames go through one write buffer (`out`, under `wmu`) so that corked
 * publishes and the DeliverAcks of one read batch leave in a single send(2). `mu` guards
 * the connection state, the pending table, the opaque counter and the stats. The socket fd
 * changes only with both `mu` and `wmu` held, and only the thread that owns the connection
 * (open, then the reader) closes it.
 *
 * A pending publish is completed exactly once, by whoever removes it from the table
 * (ack, timeout sweep, connection loss, close), always outside the locks. */
#include "client/kiteq_client.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <fcntl.h>
#include <uthash.h>

#include "client/client_net.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/log.h"
#include "proto/wire.h"

#define MOD "client"
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define HB_MAX_MISSED 3
#define POLL_TICK_MS 50 /* upper bound on timeout/heartbeat latency */
#define SWEEP_EVERY_MS 10
#define READ_CHUNK 65536
#define OUT_FLUSH_BYTES 65536 /* a corked buffer is sent once it holds this much */
#define ACK_HOLD_US 1000      /* DeliverAcks wait about this long for their batch */
/* c->frames: a delivery of a few KiB decodes into one chunk */
#define FRAME_ARENA_CHUNK 16384

struct pending {
    uint32_t opaque;
    int64_t deadline_ms; /* monotonic */
    kq_publish_cb cb;
    void *ud;
    char message_id[KQ_CLIENT_ID_LEN + 1];
    struct pending *next; /* only while being completed outside the lock */
    UT_hash_handle hh;
};

struct kq_client {
    struct kq_client_options o; /* string pointers replaced by our copies below */
    char *broker, *group, *secret;

    pthread_mutex_t mu;
    pthread_mutex_t wmu;
    int fd;            /* -1 while not connected */
    struct kq_buf out; /* frames not sent yet (under wmu) */
    int corked;        /* under wmu: > 0 holds frames in `out` */
    bool stopping;
    uint32_t next_opaque;
    struct pending *pending;
    struct kq_client_stats stats;

    int wake[2]; /* written once by close: wakes the reader's poll and back-off */
    pthread_t reader;
    bool reader_started;

    /* reader thread only (or open, before the thread exists) */
    struct kq_buf rbuf;
    struct kq_arena frames;  /* each inbound frame is decoded into it, reset after the frame */
    struct kq_buf acks;      /* DeliverAcks of the batch being dispatched */
    uint64_t batch_start_us; /* when that batch was read */
    int64_t next_hb_ms;
    bool hb_outstanding;
    int hb_missed;
    int64_t next_sweep_ms;
};

static int64_t mono_ms(void) { return (int64_t)(kq_mono_us() / 1000); }

static uint32_t take_opaque_locked(struct kq_client *c)
{
    uint32_t op = c->next_opaque++;
    if (c->next_opaque == 0) /* 0 means "unassigned" to the original implementations */
        c->next_opaque = 1;
    return op;
}

static bool is_stopping(struct kq_client *c)
{
    pthread_mutex_lock(&c->mu);
    bool s = c->stopping;
    pthread_mutex_unlock(&c->mu);
    return s;
}

__attribute__((format(printf, 3, 4))) static void set_err(char *err, size_t errlen, const char *fmt,
                                                          ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
}

/* Send everything in `out`. A failed write kills the connection (a partial frame would
 * desynchronise the stream); the reader then notices and fails the pending publishes. */
static int flush_locked(struct kq_client *c)
{
    if (c->out.len == 0)
        return 0;
    int rc = -ENOTCONN;
    if (c->fd >= 0) {
        rc = kqc_send_all(c->fd, c->out.data, c->out.len);
        if (rc) {
            KQ_WARN(MOD, "write failed broker=%s err=%s", c->broker, strerror(-rc));
            shutdown(c->fd, SHUT_RDWR);
            rc = -ECONNRESET;
        }
    }
    c->out.len = 0;
    return rc;
}

/* Queue complete frames on the current connection and send them unless corked. */
static int send_bytes(struct kq_client *c, const void *p, size_t n)
{
    pthread_mutex_lock(&c->wmu);
    int rc = -ENOTCONN;
    if (c->fd >= 0) {
        rc = kq_buf_append(&c->out, p, n);
        if (rc == 0 && (c->corked == 0 || c->out.len >= OUT_FLUSH_BYTES))
            rc = flush_locked(c);
    }
    pthread_mutex_unlock(&c->wmu);
    return rc;
}

static int send_frame(struct kq_client *c, const struct kq_buf *b)
{
    return send_bytes(c, b->data, b->len);
}

void kq_client_cork(struct kq_client *c)
{
    pthread_mutex_lock(&c->wmu);
    c->corked++;
    pthread_mutex_unlock(&c->wmu);
}

void kq_client_uncork(struct kq_client *c)
{
    pthread_mutex_lock(&c->wmu);
    if (c->corked > 0 && --c->corked == 0)
        flush_locked(c);
    pthread_mutex_unlock(&c->wmu);
}

/* The reader's DeliverAcks: sent together after the read batch, or before each callback
 * once the batch has run ACK_HOLD_US (a slow consumer must not hold earlier acks back). */
static void flush_acks(struct kq_client *c)
{
    if (c->acks.len) {
        send_bytes(c, c->acks.data, c->acks.len);
        c->acks.len = 0;
    }
}

/* --- completing publishes ------------------------------------------------------------------ */

static const char *err_text(int err)
{
    switch (err) {
    case -ETIMEDOUT: return "no store ack before the timeout";
    case -ECONNRESET: return "connection lost before the store ack";
    default: return strerror(-err);
    }
}

static void complete(struct pending *p, int err, bool status, const char *feedback)
{
    struct kq_publish_result r = {.status = err == 0 && status};
    snprintf(r.feedback, sizeof r.feedback, "%s", err ? err_text(err) : feedback ? feedback : "");
    memcpy(r.message_id, p->message_id, sizeof r.message_id);
    p->cb(p->ud, err, &r);
    free(p);
}

static void complete_list(struct pending *list, int err)
{
    while (list) {
        struct pending *n = list->next;
        complete(list, err, false, NULL);
        list = n;
    }
}

/* Remove every pending publish (all of them, or only the expired ones) under the lock. */
static struct pending *steal_pending_locked(struct kq_client *c, bool only_expired, int64_t now)
{
    struct pending *p, *tmp, *list = NULL;
    HASH_ITER (hh, c->pending, p, tmp) {
        if (only_expired && p->deadline_ms > now)
            continue;
        HASH_DEL(c->pending, p);
        p->next = list;
        list = p;
    }
    return list;
}

/* --- building frames ----------------------------------------------------------------------- */

/* Pack the Header of m as the original Go client does: all required fields, properties,
 * createTime (now if unset), no snappy. `id` is the message id to use. The bytes live in
 * `a`; -EINVAL for a missing topic, message type, property key or value. */
static int pack_header(struct kq_client *c, const struct kq_message *m, const char *id,
                       struct kq_arena *a, uint8_t **out, size_t *len)
{
    if (m->n_properties && !m->properties)
        return -EINVAL;
    struct kq_header_property *props = NULL;
    if (m->n_properties && !(props = kq_arena_alloc(a, m->n_properties * sizeof *props)))
        return -ENOMEM;
    for (size_t i = 0; i < m->n_properties; i++)
        props[i] = (struct kq_header_property){.key = m->properties[i].key,
                                               .value = m->properties[i].value};
    struct kq_header_view h = {
        .message_id = id,
        .topic = m->topic,
        .message_type = m->message_type,
        .expired_time = m->expired_time, /* -1 passes through: the broker applies its default */
        .deliver_limit = m->deliver_limit,
        .group = m->group_id && *m->group_id ? m->group_id : c->group,
        .commit = !m->two_phase,
        .fly = m->fly,
        .properties = props,
        .n_properties = m->n_properties,
        .has_create_time = true,
        .create_time = m->create_time > 0 ? m->create_time : kq_now_sec()};
    return kq_header_encode(a, &h, out, len);
}

/* --- publishing ------------------------------------------------------------------------------ */

/* Register, then send. Returns 0 when the callback will be called exactly once. */
static int publish_start(struct kq_client *c, const struct kq_message *m, kq_publish_cb cb,
                         void *ud, uint32_t *opaque_out, char id_out[KQ_CLIENT_ID_LEN + 1])
{
    if (!c || !m || !cb)
        return -EINVAL;
    struct pending *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    if (m->message_id[0])
        snprintf(p->message_id, sizeof p->message_id, "%s", m->message_id);
    else
        kq_message_id_generate(p->message_id);
    if (id_out)
        memcpy(id_out, p->message_id, sizeof p->message_id);
    p->cb = cb;
    p->ud = ud;

    uint8_t *hdr = NULL;
    size_t hlen = 0;
    struct kq_buf frame = {0};
    struct kq_arena a; /* the packed header; a caller's thread: not c->frames */
    kq_arena_init(&a, KQ_HEADER_ARENA_CHUNK);
    int rc = pack_header(c, m, p->message_id, &a, &hdr, &hlen);
    if (rc)
        goto fail;

    /* Register before writing: the ack may beat the return of send(). */
    pthread_mutex_lock(&c->mu);
    if (c->stopping || c->fd < 0) {
        pthread_mutex_unlock(&c->mu);
        rc = -ENOTCONN;
        goto fail;
    }
    uint32_t op = take_opaque_locked(c);
    p->opaque = op;
    p->deadline_ms = mono_ms() + c->o.ack_timeout_ms;
    HASH_ADD(hh, c->pending, opaque, sizeof p->opaque, p);
    c->stats.published++;
    pthread_mutex_unlock(&c->mu);
    if (opaque_out)
        *opaque_out = op;

    uint8_t cmd = m->string_body ? KQ_CMD_STRING_MESSAGE : KQ_CMD_BYTES_MESSAGE;
    rc = kq_codec_append_message(&frame, op, cmd, hdr, hlen, m->body, m->body ? m->body_len : 0);
    if (rc == 0)
        rc = send_frame(c, &frame);
    kq_arena_free(&a);
    kq_buf_free(&frame);
    if (rc == 0)
        return 0;

    /* Not sent. If the entry is still ours, take it back and report synchronously; if
     * someone else removed it (connection loss), they complete it. */
    pthread_mutex_lock(&c->mu);
    struct pending *found = NULL;
    HASH_FIND(hh, c->pending, &op, sizeof op, found);
    if (found == p) {
        HASH_DEL(c->pending, p);
        c->stats.published--;
    }
    pthread_mutex_unlock(&c->mu);
    if (found != p)
        return 0;
    free(p);
    return rc;
fail:
    kq_arena_free(&a);
    kq_buf_free(&frame);
    free(p);
    return rc;
}

int kq_publish_async(struct kq_client *c, const struct kq_message *m, kq_publish_cb cb, void *ud)
{
    return publish_start(c, m, cb, ud, NULL, NULL);
}

/* m with KQ_DELAY_PROPERTY = delay_ms added: *copy borrows m's pointers and *props (malloc'd:
 * free it after the publish call, which packs the header before it returns) and digits. */
static int with_delay(const struct kq_message *m, int64_t delay_ms, struct kq_message *copy,
                      struct kq_property **props, char digits[24])
{
    if (!m || delay_ms < 0 || delay_ms > KQ_MAX_DELAY_MS || (m->n_properties && !m->properties))
        return -EINVAL;
    for (size_t i = 0; i < m->n_properties; i++)
        if (m->properties[i].key && strcmp(m->properties[i].key, KQ_DELAY_PROPERTY) == 0)
            return -EINVAL;
    if (!(*props = malloc((m->n_properties + 1) * sizeof **props)))
        return -ENOMEM;
    if (m->n_properties)
        memcpy(*props, m->properties, m->n_properties * sizeof **props);
    snprintf(digits, 24, "%lld", (long long)delay_ms);
    (*props)[m->n_properties] = (struct kq_property){KQ_DELAY_PROPERTY, digits};
    *copy = *m;
    copy->properties = *props;
    copy->n_properties = m->n_properties + 1;
    return 0;
}

int kq_publish_delayed(struct kq_client *c, const struct kq_message *m, int64_t delay_ms,
                       struct kq_publish_result *r)
{
    struct kq_message copy;
    struct kq_property *props;
    char digits[24];
    int rc = with_delay(m, delay_ms, &copy, &props, digits);
    if (rc)
        return rc;
    rc = kq_publish(c, &copy, r);
    free(props);
    return rc;
}

int kq_publish_delayed_async(struct kq_client *c, const struct kq_message *m, int64_t delay_ms,
                             kq_publish_cb cb, void *ud)
{
    struct kq_message copy;
    struct kq_property *props;
    char digits[24];
    int rc = with_delay(m, delay_ms, &copy, &props, digits);
    if (rc)
        return rc;
    rc = kq_publish_async(c, &copy, cb, ud);
    free(props);
    return rc;
}

struct sync_wait {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool done;
    int err;
    struct kq_publish_result r;
};

static void on_sync_done(void *ud, int err, const struct kq_publish_result *r)
{
    struct sync_wait *w = ud;
    pthread_mutex_lock(&w->mu);
    w->err = err;
    w->r = *r;
    w->done = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
}

int kq_publish(struct kq_client *c, const struct kq_message *m, struct kq_publish_result *r)
{
    if (!c || !m)
        return -EINVAL;
    /* Only the reader thread can deliver the ack; waiting on it from there would hang. */
    if (c->reader_started && pthread_equal(pthread_self(), c->reader))
        return -EDEADLK;
    struct sync_wait w = {.done = false};
    pthread_mutex_init(&w.mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w.cond, &ca);
    pthread_condattr_destroy(&ca);

    uint32_t op = 0;
    char id[KQ_CLIENT_ID_LEN + 1] = "";
    int rc = publish_start(c, m, on_sync_done, &w, &op, id);
    if (rc == 0) {
        /* The reader's sweep normally expires us; this backstop covers a reader stuck
         * in a slow user callback. */
        int64_t deadline = mono_ms() + c->o.ack_timeout_ms + 2 * POLL_TICK_MS;
        struct timespec ts = {.tv_sec = deadline / 1000, .tv_nsec = (deadline % 1000) * 1000000};
        pthread_mutex_lock(&w.mu);
        while (!w.done) {
            if (pthread_cond_timedwait(&w.cond, &w.mu, &ts) != ETIMEDOUT)
                continue;
            pthread_mutex_lock(&c->mu);
            struct pending *p = NULL;
            HASH_FIND(hh, c->pending, &op, sizeof op, p);
            if (p && p->ud == &w)
                HASH_DEL(c->pending, p);
            else
                p = NULL;
            pthread_mutex_unlock(&c->mu);
            if (p) {
                w.err = -ETIMEDOUT;
                snprintf(w.r.feedback, sizeof w.r.feedback, "%s", err_text(-ETIMEDOUT));
                memcpy(w.r.message_id, p->message_id, sizeof w.r.message_id);
                w.done = true;
                free(p);
            } else {
                ts.tv_sec += 1; /* being completed right now by someone else */
            }
        }
        pthread_mutex_unlock(&w.mu);
        rc = w.err;
    } else {
        w.r.status = false;
        snprintf(w.r.feedback, sizeof w.r.feedback, "%s", strerror(-rc));
        memcpy(w.r.message_id, id, sizeof id);
    }
    if (r)
        *r = w.r;
    pthread_cond_destroy(&w.cond);
    pthread_mutex_destroy(&w.mu);
    return rc;
}

int kq_tx_finish(struct kq_client *c, const struct kq_message *m, int status, const char *feedback)
{
    if (!c || !m || !m->message_id[0] || (status != KQ_TX_COMMIT && status != KQ_TX_ROLLBACK))
        return -EINVAL;
    uint8_t *hdr = NULL;
    size_t hlen = 0;
    struct kq_arena a;
    kq_arena_init(&a, KQ_HEADER_ARENA_CHUNK);
    struct kq_buf frame = {0};
    int rc = pack_header(c, m, m->message_id, &a, &hdr, &hlen);
    /* Opaque 0, no reply expected: exactly what the Go client sends. */
    if (rc == 0)
        rc = kq_codec_append_tx_ack(&frame, 0, hdr, hlen, status, feedback ? feedback : "");
    if (rc == 0)
        rc = send_frame(c, &frame);
    kq_arena_free(&a);
    kq_buf_free(&frame);
    return rc;
}

/* --- inbound frames (reader thread) ------------------------------------------------------- */

/* A delivered Header as a kq_message; its properties are allocated in a. */
static int message_from_header(const struct kq_header_view *h, struct kq_arena *a,
                               struct kq_message *m)
{
    memset(m, 0, sizeof *m);
    snprintf(m->message_id, sizeof m->message_id, "%s", h->message_id);
    m->topic = h->topic;
    m->message_type = h->message_type;
    m->group_id = h->group;
    m->expired_time = h->expired_time;
    m->deliver_limit = h->deliver_limit;
    m->two_phase = !h->commit;
    m->fly = h->fly;
    m->create_time = h->has_create_time ? h->create_time : 0;
    if (h->n_properties) {
        struct kq_property *props = kq_arena_alloc(a, h->n_properties * sizeof *props);
        if (!props)
            return -ENOMEM;
        for (size_t i = 0; i < h->n_properties; i++)
            props[i] = (struct kq_property){h->properties[i].key, h->properties[i].value};
        m->properties = props;
        m->n_properties = h->n_properties;
    }
    return 0;
}

static void on_store_ack(struct kq_client *c, uint32_t opaque, const struct kq_store_ack_view *a)
{
    struct pending *p = NULL;
    pthread_mutex_lock(&c->mu);
    HASH_FIND(hh, c->pending, &opaque, sizeof opaque, p);
    if (p) {
        HASH_DEL(c->pending, p);
        if (a->status)
            c->stats.acked_ok++;
        else
            c->stats.acked_fail++;
    }
    pthread_mutex_unlock(&c->mu);
    if (p)
        complete(p, 0, a->status, a->feedback);
    else
        KQ_DEBUG(MOD, "store ack for unknown opaque=%u (late?)", opaque);
}

static void on_delivery(struct kq_client *c, const struct kq_frame *f,
                        const struct kq_message_frame_view *v)
{
    struct kq_message m;
    bool ok = false;
    if (message_from_header(&v->header, &c->frames, &m) == 0) {
        m.string_body = f->cmd == KQ_CMD_STRING_MESSAGE;
        m.body = v->body;
        m.body_len = v->body_len;
        pthread_mutex_lock(&c->mu);
        c->stats.delivered++;
        pthread_mutex_unlock(&c->mu);
        /* Once the batch has taken longer than the hold (slow callbacks), every ack leaves
         * before the next callback. */
        if (c->acks.len && kq_mono_us() - c->batch_start_us >= ACK_HOLD_US)
            flush_acks(c);
        ok = c->o.on_message ? c->o.on_message(c->o.ud, &m) : false;
    }
    const struct kq_header_view *h = &v->header;
    /* groupId is the publisher's group from the Header, as the Go client sends it. */
    if (kq_codec_append_deliver_ack(&c->acks, f->opaque, h->message_id, h->topic, h->message_type,
                                    h->group, ok, "") != 0)
        KQ_LOG_RATELIMITED(KQ_LOG_WARN, MOD, "no memory for the ack of opaque=%u", f->opaque);
}

static void on_tx_check(struct kq_client *c, uint32_t opaque, const struct kq_tx_ack_view *t)
{
    if (t->status != KQ_TX_UNKNOWN) {
        KQ_DEBUG(MOD, "ignoring tx ack with status=%d from broker", t->status);
        return;
    }
    struct kq_message m;
    int status = KQ_TX_UNKNOWN;
    if (message_from_header(&t->header, &c->frames, &m) == 0 && c->o.on_tx_check) {
        status = c->o.on_tx_check(c->o.ud, &m);
        if (status != KQ_TX_COMMIT && status != KQ_TX_ROLLBACK)
            status = KQ_TX_UNKNOWN;
    }
    /* Re-encoding keeps unknown Header fields (kq_header_encode), so the header goes back
     * as received. */
    uint8_t *hdr = NULL;
    size_t hlen = 0;
    struct kq_buf b = {0};
    if (kq_header_encode(&c->frames, &t->header, &hdr, &hlen) == 0 &&
        kq_codec_append_tx_ack(&b, opaque, hdr, hlen, status, "") == 0)
        send_frame(c, &b);
    kq_buf_free(&b);
}

/* One inbound frame, decoded into c->frames (reset after it). */
static void dispatch(struct kq_client *c, const struct kq_frame *f)
{
    switch (f->cmd) {
    case KQ_CMD_HEARTBEAT:
        c->hb_outstanding = false;
        c->hb_missed = 0;
        return;
    case KQ_CMD_MESSAGE_STORE_ACK:
    case KQ_CMD_BYTES_MESSAGE:
    case KQ_CMD_STRING_MESSAGE:
    case KQ_CMD_TX_ACK:
    case KQ_CMD_CONN_AUTH: break;
    default: KQ_DEBUG(MOD, "ignoring cmd=0x%02x opaque=%u", f->cmd, f->opaque); return;
    }
    struct kq_frame_view v;
    if (kq_frame_decode(&c->frames, f->cmd, f->body, (size_t)f->body_len, NULL, &v) != 0) {
        /* A delivery is not acked: the broker will redeliver, and maybe a newer client can
         * read it. */
        KQ_LOG_RATELIMITED(KQ_LOG_WARN, MOD, "undecodable %s opaque=%u", kq_cmd_name(f->cmd),
                           f->opaque);
        kq_arena_reset(&c->frames);
        return;
    }
    switch (f->cmd) {
    case KQ_CMD_MESSAGE_STORE_ACK: on_store_ack(c, f->opaque, &v.store_ack); break;
    case KQ_CMD_TX_ACK: on_tx_check(c, f->opaque, &v.tx_ack); break;
    case KQ_CMD_CONN_AUTH: /* after the handshake: the broker's "Unauthorized" before it closes */
        if (!v.conn_auth.status)
            KQ_WARN(MOD, "broker refused us: %s", v.conn_auth.feedback);
        break;
    default: on_delivery(c, f, &v.message); break;
    }
    kq_arena_reset(&c->frames);
}

/* Read what is available into rbuf. Returns bytes read, 0 on EOF, or -errno. */
static int read_some(struct kq_client *c, int fd)
{
    if (kq_buf_reserve(&c->rbuf, READ_CHUNK))
        return -ENOMEM;
    for (;;) {
        ssize_t n = recv(fd, c->rbuf.data + c->rbuf.len, c->rbuf.cap - c->rbuf.len, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? -EAGAIN : -errno;
        c->rbuf.len += (size_t)n;
        return (int)n;
    }
}

/* --- connection setup -------------------------------------------------------------------- */

/* Wait for the ConnAuthAck answering ConnMeta `op`. Frames that follow it stay in rbuf. */
static int await_auth(struct kq_client *c, int fd, uint32_t op, int64_t deadline, char *err,
                      size_t errlen)
{
    for (;;) {
        struct kq_frame f;
        int used;
        while ((used = kq_frame_parse(c->rbuf.data, c->rbuf.len, &f)) > 0) {
            /* The broker's refusal is sent with opaque 0, so accept that too. */
            if (f.cmd == KQ_CMD_CONN_AUTH && (f.opaque == op || f.opaque == 0)) {
                struct kq_frame_view v;
                int rc = kq_frame_decode(&c->frames, f.cmd, f.body, (size_t)f.body_len, NULL, &v);
                if (rc == 0 && !v.conn_auth.status) {
                    rc = -EACCES;
                    set_err(err, errlen, "%s", v.conn_auth.feedback);
                } else if (rc) {
                    set_err(err, errlen, "%s", "undecodable ConnAuthAck");
                }
                kq_arena_reset(&c->frames);
                kq_buf_consume(&c->rbuf, (size_t)used);
                return rc;
            }
            KQ_DEBUG(MOD, "ignoring cmd=0x%02x before auth", f.cmd);
            kq_buf_consume(&c->rbuf, (size_t)used);
        }
        if (used < 0) {
            set_err(err, errlen, "%s", "bad frame from broker");
            return -EPROTO;
        }
        int64_t left = deadline - mono_ms();
        if (left <= 0) {
            set_err(err, errlen, "%s", "no ConnAuthAck before the timeout");
            return -ETIMEDOUT;
        }
        struct pollfd pf[2] = {{.fd = fd, .events = POLLIN}, {.fd = c->wake[0], .events = POLLIN}};
        int n = poll(pf, 2, (int)left);
        if (n < 0 && errno != EINTR)
            return -errno;
        if (pf[1].revents & POLLIN) {
            set_err(err, errlen, "%s", "client closing");
            return -ECANCELED;
        }
        if (n <= 0 || !pf[0].revents)
            continue;
        int r = read_some(c, fd);
        if (r == 0 || (r < 0 && r != -EAGAIN)) {
            set_err(err, errlen, "%s", "broker closed the connection during the handshake");
            return r == 0 ? -ECONNRESET : r;
        }
    }
}

/* Connect, send ConnMeta, wait for ConnAuthAck, then install the socket. */
static int establish(struct kq_client *c, char *err, size_t errlen)
{
    int fd = -1;
    int rc =
        kqc_connect(c->broker, c->o.connect_timeout_ms, c->o.connect_timeout_ms, c->wake[0], &fd);
    if (rc) {
        set_err(err, errlen, "connect: %s", strerror(-rc));
        return rc;
    }
    /* After connect, as the original client does: the window scale is already agreed for the
     * default buffer, so this is the case a broker must not flood. */
    if (c->o.socket_rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &c->o.socket_rcvbuf, sizeof c->o.socket_rcvbuf);
    if (c->o.socket_sndbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &c->o.socket_sndbuf, sizeof c->o.socket_sndbuf);
    int64_t deadline = mono_ms() + c->o.connect_timeout_ms;
    pthread_mutex_lock(&c->mu);
    uint32_t op = take_opaque_locked(c);
    pthread_mutex_unlock(&c->mu);
    struct kq_buf b = {0};
    rc = kq_codec_append_conn_meta(&b, op, c->group, c->secret, c->o.warmingup_sec);
    if (rc == 0)
        rc = kqc_send_all(fd, b.data, b.len);
    kq_buf_free(&b);
    if (rc) {
        set_err(err, errlen, "send ConnMeta: %s", strerror(-rc));
        goto fail;
    }
    c->rbuf.len = 0;
    if ((rc = await_auth(c, fd, op, deadline, err, errlen)))
        goto fail;

    pthread_mutex_lock(&c->mu);
    pthread_mutex_lock(&c->wmu);
    c->fd = fd;
    c->out.len = 0;
    pthread_mutex_unlock(&c->wmu);
    pthread_mutex_unlock(&c->mu);
    c->hb_outstanding = false;
    c->hb_missed = 0;
    c->next_hb_ms = mono_ms() + c->o.heartbeat_ms;
    return 0;
fail:
    close(fd);
    return rc;
}

/* Uninstall and close the socket, failing every pending publish. */
static void drop_connection(struct kq_client *c, bool graceful)
{
    int fd = c->fd;
    if (fd < 0)
        return;
    if (graceful) {
        /* Let our last acks (and anything corked) leave before close: unread input would
         * make close send RST. */
        flush_acks(c);
        pthread_mutex_lock(&c->wmu);
        flush_locked(c);
        pthread_mutex_unlock(&c->wmu);
        shutdown(fd, SHUT_WR);
        char tmp[4096];
        while (recv(fd, tmp, sizeof tmp, MSG_DONTWAIT) > 0) {
        }
    } else {
        shutdown(fd, SHUT_RDWR); /* unblocks a writer stuck in send() */
    }
    pthread_mutex_lock(&c->mu);
    pthread_mutex_lock(&c->wmu);
    c->fd = -1;
    c->out.len = 0; /* frames for a dead connection: their publishes fail below */
    pthread_mutex_unlock(&c->wmu);
    c->acks.len = 0; /* their deliveries will come again on the next connection */
    struct pending *list = steal_pending_locked(c, false, 0);
    pthread_mutex_unlock(&c->mu);
    close(fd);
    complete_list(list, -ECONNRESET);
}

/* --- the reader thread --------------------------------------------------------------------- */

static void tick(struct kq_client *c, bool *dead)
{
    int64_t now = mono_ms();
    if (now >= c->next_sweep_ms) {
        c->next_sweep_ms = now + SWEEP_EVERY_MS;
        pthread_mutex_lock(&c->mu);
        struct pending *list = steal_pending_locked(c, true, now);
        pthread_mutex_unlock(&c->mu);
        complete_list(list, -ETIMEDOUT);
    }
    if (now < c->next_hb_ms)
        return;
    if (c->hb_outstanding && ++c->hb_missed >= HB_MAX_MISSED) {
        KQ_WARN(MOD, "%d heartbeats unanswered broker=%s", c->hb_missed, c->broker);
        *dead = true;
        return;
    }
    pthread_mutex_lock(&c->mu);
    uint32_t op = take_opaque_locked(c);
    pthread_mutex_unlock(&c->mu);
    struct kq_buf b = {0};
    if (kq_codec_append_heartbeat(&b, op, kq_now_sec()) == 0)
        send_frame(c, &b);
    kq_buf_free(&b);
    c->hb_outstanding = true;
    c->next_hb_ms = now + c->o.heartbeat_ms;
}

/* Dispatch every complete frame in rbuf. Returns -EMSGSIZE on a bad frame length. */
static int dispatch_buffered(struct kq_client *c)
{
    size_t off = 0;
    struct kq_frame f;
    int used;
    c->batch_start_us = kq_mono_us();
    while ((used = kq_frame_parse(c->rbuf.data + off, c->rbuf.len - off, &f)) > 0) {
        dispatch(c, &f);
        off += (size_t)used;
        if (is_stopping(c))
            break; /* undispatched deliveries stay unacked: the broker resends */
    }
    flush_acks(c);
    kq_buf_consume(&c->rbuf, off);
    return used < 0 ? used : 0;
}

/* Serve the installed connection until it breaks or the client closes. */
static void serve(struct kq_client *c)
{
    int fd = c->fd;
    c->next_sweep_ms = 0;
    for (;;) {
        /* First what is already buffered: the handshake may have read past its ack. */
        if (dispatch_buffered(c)) {
            KQ_ERROR(MOD, "bad frame length from broker=%s, closing", c->broker);
            return;
        }
        if (is_stopping(c))
            return;
        struct pollfd pf[2] = {{.fd = fd, .events = POLLIN}, {.fd = c->wake[0], .events = POLLIN}};
        int n = poll(pf, 2, POLL_TICK_MS);
        if (n < 0 && errno != EINTR) {
            KQ_ERROR(MOD, "poll: %s", strerror(errno));
            return;
        }
        if (n > 0 && pf[0].revents) {
            int r = read_some(c, fd);
            if (r == 0 || (r < 0 && r != -EAGAIN)) {
                KQ_WARN(MOD, "connection lost broker=%s err=%s", c->broker,
                        r == 0 ? "EOF" : strerror(-r));
                return;
            }
        }
        bool dead = false;
        tick(c, &dead);
        if (dead)
            return;
    }
}

/* Interruptible sleep; true when the client is closing. */
static bool backoff_wait(struct kq_client *c, int ms)
{
    struct pollfd pf = {.fd = c->wake[0], .events = POLLIN};
    int64_t deadline = mono_ms() + ms;
    for (;;) {
        int64_t left = deadline - mono_ms();
        if (left <= 0)
            return is_stopping(c);
        if (poll(&pf, 1, (int)left) > 0)
            return true;
    }
}

static void *reader_main(void *arg)
{
    struct kq_client *c = arg;
    int backoff = BACKOFF_MIN_MS;
    for (;;) {
        if (c->fd >= 0) {
            serve(c);
            drop_connection(c, is_stopping(c));
        }
        if (is_stopping(c) || !c->o.reconnect)
            break;
        if (backoff_wait(c, backoff))
            break;
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
        char err[160] = "";
        int rc = establish(c, err, sizeof err);
        if (rc == 0) {
            backoff = BACKOFF_MIN_MS;
            pthread_mutex_lock(&c->mu);
            c->stats.reconnects++;
            pthread_mutex_unlock(&c->mu);
            KQ_INFO(MOD, "reconnected broker=%s", c->broker);
        } else if (rc != -ECANCELED) {
            KQ_LOG_RATELIMITED(KQ_LOG_WARN, MOD, "reconnect failed broker=%s: %s", c->broker, err);
        }
    }
    return NULL;
}

/* --- lifecycle ----------------------------------------------------------------------------- */

static void client_free(struct kq_client *c)
{
    if (c->wake[0] >= 0)
        close(c->wake[0]);
    if (c->wake[1] >= 0)
        close(c->wake[1]);
    kq_buf_free(&c->rbuf);
    kq_arena_free(&c->frames);
    kq_buf_free(&c->acks);
    kq_buf_free(&c->out);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->wmu);
    free(c->broker);
    free(c->group);
    free(c->secret);
    free(c);
}

int kq_client_open(const struct kq_client_options *o, struct kq_client **out, char *err,
                   size_t errlen)
{
    if (err && errlen)
        err[0] = 0;
    if (!o || !out || !o->broker || !o->group_id || !*o->group_id) {
        set_err(err, errlen, "%s", "broker and group_id are required");
        return -EINVAL;
    }
    struct kq_client *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->o = *o;
    c->fd = -1;
    c->wake[0] = c->wake[1] = -1;
    c->next_opaque = 1;
    kq_arena_init(&c->frames, FRAME_ARENA_CHUNK);
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->wmu, NULL);
    if (c->o.connect_timeout_ms <= 0)
        c->o.connect_timeout_ms = 5000;
    if (c->o.ack_timeout_ms <= 0)
        c->o.ack_timeout_ms = 3000;
    if (c->o.heartbeat_ms <= 0)
        c->o.heartbeat_ms = 10000;
    c->broker = strdup(o->broker);
    c->group = strdup(o->group_id);
    c->secret = strdup(o->secret ? o->secret : "");
    c->o.broker = c->broker;
    c->o.group_id = c->group;
    c->o.secret = c->secret;
    int rc = -ENOMEM;
    if (!c->broker || !c->group || !c->secret)
        goto fail;
    if (pipe2(c->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
        rc = -errno;
        set_err(err, errlen, "pipe: %s", strerror(-rc));
        goto fail;
    }
    if ((rc = establish(c, err, errlen)))
        goto fail;
    rc = -pthread_create(&c->reader, NULL, reader_main, c);
    if (rc) {
        close(c->fd);
        set_err(err, errlen, "pthread_create: %s", strerror(-rc));
        goto fail;
    }
    c->reader_started = true;
    *out = c;
    return 0;
fail:
    client_free(c);
    return rc;
}

void kq_client_close(struct kq_client *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->stopping = true;
    pthread_mutex_unlock(&c->mu);
    /* The reader finishes the frame it is dispatching (so its ack goes out), then
     * closes the socket gracefully. */
    ssize_t w = write(c->wake[1], "x", 1);
    (void)w;
    if (c->reader_started)
        pthread_join(c->reader, NULL);
    drop_connection(c, true);
    pthread_mutex_lock(&c->mu);
    struct pending *list = steal_pending_locked(c, false, 0);
    pthread_mutex_unlock(&c->mu);
    complete_list(list, -ECONNRESET);
    client_free(c);
}

void kq_client_stats(struct kq_client *c, struct kq_client_stats *s)
{
    pthread_mutex_lock(&c->mu);
    *s = c->stats;
    pthread_mutex_unlock(&c->mu);
}

void kq_generate_message_id(char out[KQ_CLIENT_ID_LEN + 1]) { kq_message_id_generate(out); }
