#include "net/net.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "core/log.h"
#include "net/tcp_window.h"

#define READ_CHUNK (64 * 1024)
/* Writes smaller than this skip the peer-window check (store acks, heartbeats). */
#define PACE_CHECK_MIN 512
/* A paced connection whose last chunk is still unsent is looked at again this soon. */
#define PACE_RETRY_MS 1

struct kq_conn {
    uv_tcp_t tcp;
    struct kq_net *net;
    uint64_t id;
    char peer[64];
    struct kq_buf in;
    struct kq_buf out;    /* frames queued during this loop iteration */
    struct kq_buf flight; /* bytes being written: flight.data[flight_off..len) still to go */
    size_t flight_off;
    size_t write_len; /* bytes of the uv_write in progress */
    uv_write_t wreq;
    bool writing;
    bool dirty;
    bool closing;
    bool closed;
    bool released;     /* on_close was called */
    bool pace_waiting; /* in the net's list of paced connections to retry */
    bool paced_logged;
    bool want_drain;  /* call on_drain once the output is written */
    bool read_paused; /* output over KQ_CONN_OUT_HIGH: not reading (back-pressure) */
    uint64_t paused_since_ms;
    uint64_t last_read_ms;
    uint64_t opened_ms;
    void *user;
    struct kq_conn *prev, *next;             /* all connections */
    struct kq_conn *dirty_next, *dirty_prev; /* connections with output to flush */
    struct kq_conn *pace_next;               /* in the pacing list */
};

struct kq_net {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_check_t flusher;    /* after poll: output produced by reads */
    uv_prepare_t flusher2; /* before poll: output produced by timers and other callbacks */
    uv_timer_t pacer;      /* retries paced connections whose last chunk is still unsent */
    struct kq_conn *pace_list;
    const struct kq_net_handler *h;
    void *ud;
    struct kq_conn *conns;
    struct kq_conn *dirty, *dirty_last; /* flushed in the order of their latest output */
    size_t n_conns;
    uint64_t next_id;
    struct kq_net_stats stats;
    struct kq_net_limits limits;
    int port;
    bool stopping;
    int handles_open;
    void (*done)(void *);
    void *done_ud;
};

static uint64_t mono_ms(void) { return kq_mono_us() / 1000; }
static void pace_forget(struct kq_conn *c);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

int kq_net_parse_addr(const char *hostport, struct sockaddr_storage *ss)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    if (!colon || colon == hostport || strlen(colon + 1) == 0)
        return -EINVAL;
    size_t hl = (size_t)(colon - hostport);
    if (hl >= sizeof host)
        return -EINVAL;
    memcpy(host, hostport, hl);
    host[hl] = 0;
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') { /* [::1]:port */
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = 0;
    }
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535)
        return -EINVAL;
    if (strcmp(host, "localhost") == 0 || host[0] == 0)
        strcpy(host, "127.0.0.1");
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) == 0)
        return 0;
    if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss) == 0)
        return 0;
    return -EINVAL;
}

/* --- closing ------------------------------------------------------------------------------ */

static void maybe_done(struct kq_net *n)
{
    if (n->stopping && n->handles_open == 0 && n->n_conns == 0 && n->done) {
        void (*done)(void *) = n->done;
        n->done = NULL;
        done(n->done_ud);
    }
}

static void on_conn_closed(uv_handle_t *h)
{
    struct kq_conn *c = h->data;
    struct kq_net *n = c->net;
    kq_buf_free(&c->in);
    kq_buf_free(&c->out);
    kq_buf_free(&c->flight);
    free(c);
    n->n_conns--;
    maybe_done(n);
}

/* The owner forgets c once: when it starts closing (it is no longer anybody's consumer
 * while its last output drains, which can take until a dead peer times out) or when it is
 * gone. */
static void release_owner(struct kq_conn *c, const char *reason)
{
    if (c->released)
        return;
    c->released = true;
    c->want_drain = false;
    if (c->net->h->on_close)
        c->net->h->on_close(c->net->ud, c, reason);
}

static void dirty_unlink(struct kq_conn *c)
{
    struct kq_net *n = c->net;
    if (c->dirty_prev)
        c->dirty_prev->dirty_next = c->dirty_next;
    else
        n->dirty = c->dirty_next;
    if (c->dirty_next)
        c->dirty_next->dirty_prev = c->dirty_prev;
    else
        n->dirty_last = c->dirty_prev;
    c->dirty_next = c->dirty_prev = NULL;
    c->dirty = false;
}

static void conn_destroy(struct kq_conn *c, const char *reason)
{
    if (c->closed)
        return;
    c->closed = true;
    struct kq_net *n = c->net;
    if (c->prev)
        c->prev->next = c->next;
    else
        n->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    pace_forget(c);
    /* Remove from the dirty list so the flusher never sees a closed connection. */
    if (c->dirty)
        dirty_unlink(c);
    release_owner(c, reason);
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

void kq_conn_close(struct kq_conn *c, const char *reason)
{
    if (c->closing || c->closed)
        return;
    c->closing = true;
    uv_read_stop((uv_stream_t *)&c->tcp);
    KQ_INFO("net", "closing connection peer=%s reason=\"%s\"", c->peer, reason);
    release_owner(c, reason);
    if (!c->writing && kq_conn_backlog(c) == 0) {
        conn_destroy(c, reason);
        return;
    }
    /* Output still queued: the flusher destroys the connection once it is written. */
    kq_conn_flush_later(c);
}

void kq_conn_abort(struct kq_conn *c, const char *reason)
{
    if (c->closed)
        return;
    KQ_INFO("net", "closing connection peer=%s reason=\"%s\" (dropping %zu queued bytes)", c->peer,
            reason, kq_conn_backlog(c));
    conn_destroy(c, reason);
}

bool kq_conn_closing(const struct kq_conn *c)
{
    return c->closing || c->closed || c->net->stopping;
}

/* --- writing ------------------------------------------------------------------------------ */

/* Pacing. A peer that shrinks its receive buffer after the handshake (the original Go client
 * sets SO_RCVBUF to 16 KiB on a dialed connection) keeps the window scale agreed for the big
 * default, so our kernel's segment size stays larger than the window the peer can now offer.
 * A queued segment larger than the window is only sent by the zero-window probe, every
 * ~200 ms: delivery collapses to a few dozen messages a second. So when the peer's window
 * is smaller than one segment, we hand the kernel at most half a window at a time, and only
 * once what we gave it before has left: every segment then fits the window. */
static size_t writable_now(struct kq_conn *c, size_t want)
{
    if (want < PACE_CHECK_MIN || c->net->stopping)
        return want;
    struct kq_tcp_window w;
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0 || kq_tcp_window(fd, &w) != 0)
        return want; /* an older kernel tells nothing: write as usual */
    if (w.segment == 0 || w.peer_window >= w.segment)
        return want;
    if (!c->paced_logged && w.peer_window > 0) { /* 0 is only a full peer, not a small one */
        c->paced_logged = true;
        KQ_INFO("net",
                "pacing writes peer=%s: its receive window (%u bytes) is smaller than "
                "a segment (%u bytes)",
                c->peer, w.peer_window, w.segment);
    }
    if (w.notsent > 0)
        return 0;
    size_t chunk = w.peer_window / 2;
    if (chunk < 1024)
        chunk = 1024;
    return want < chunk ? want : chunk;
}

static void on_pacer(uv_timer_t *t);
static void write_some(struct kq_conn *c);

static void pace_wait(struct kq_conn *c)
{
    if (c->pace_waiting)
        return;
    c->pace_waiting = true;
    c->pace_next = c->net->pace_list;
    c->net->pace_list = c;
    if (!uv_is_active((uv_handle_t *)&c->net->pacer))
        uv_timer_start(&c->net->pacer, on_pacer, PACE_RETRY_MS, 0);
}

static void pace_forget(struct kq_conn *c)
{
    if (!c->pace_waiting)
        return;
    for (struct kq_conn **pp = &c->net->pace_list; *pp; pp = &(*pp)->pace_next)
        if (*pp == c) {
            *pp = c->pace_next;
            break;
        }
    c->pace_waiting = false;
}

static void on_pacer(uv_timer_t *t)
{
    struct kq_net *n = t->data;
    struct kq_conn *list = n->pace_list;
    n->pace_list = NULL;
    while (list) {
        struct kq_conn *c = list;
        list = c->pace_next;
        c->pace_waiting = false;
        write_some(c);
    }
}

size_t kq_conn_backlog(const struct kq_conn *c)
{
    return c->out.len + (c->flight.len - c->flight_off);
}

/* Read c (again). A connection that cannot be read would never be served and, paused, never
 * closed by the owner's deadline either: close it, naming libuv's reason. */
static bool start_reading(struct kq_conn *c)
{
    int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc == 0)
        return true;
    KQ_LOG_RATELIMITED(KQ_LOG_ERROR, "net", "cannot read from peer=%s: %s; closing it", c->peer,
                       uv_strerror(rc));
    kq_conn_close(c, "cannot read");
    return false;
}

/* Output went down: resume reading below the low mark, tell the owner once it is all out. */
static void output_progress(struct kq_conn *c)
{
    size_t left = kq_conn_backlog(c);
    if (c->read_paused && left <= KQ_CONN_OUT_LOW && !c->closing) {
        c->read_paused = false;
        if (!start_reading(c))
            return;
        KQ_DEBUG("net", "output drained, reading again peer=%s", c->peer);
    }
    if (c->want_drain && left == 0 && c->net->h->on_drain) {
        c->want_drain = false;
        c->net->h->on_drain(c->net->ud, c);
    }
}

static void on_write(uv_write_t *req, int status);

/* Hand the kernel what it may take now: the rest of `flight`, then `out` (swapped in). One
 * write(2) a turn unless pacing splits it. Returns when everything is written, a write is in
 * progress, or pacing waits. */
static void write_some(struct kq_conn *c)
{
    while (!c->writing && !c->closed) {
        if (c->flight_off == c->flight.len) {
            c->flight.len = c->flight_off = 0;
            if (c->out.len == 0)
                break;
            struct kq_buf tmp = c->flight; /* swap: everything queued goes out together */
            c->flight = c->out;
            c->out = tmp;
            c->out.len = 0;
        }
        size_t want = c->flight.len - c->flight_off;
        size_t n = writable_now(c, want);
        if (n == 0) {
            pace_wait(c);
            return;
        }
        pace_forget(c);
        uv_buf_t b = uv_buf_init((char *)c->flight.data + c->flight_off, (unsigned)n);
        c->net->stats.write_bytes += n;
        c->net->stats.writes++;
        int rc = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (rc < 0 && rc != UV_EAGAIN && rc != UV_ENOSYS) {
            conn_destroy(c, uv_strerror(rc));
            return;
        }
        size_t done = rc > 0 ? (size_t)rc : 0;
        c->flight_off += done;
        if (done == n)
            continue;
        /* The kernel's buffer is full: libuv finishes this piece when the socket drains. */
        b.base += done;
        b.len -= (unsigned)done;
        c->writing = true;
        c->write_len = b.len;
        c->wreq.data = c;
        rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write);
        if (rc < 0) {
            c->writing = false;
            conn_destroy(c, uv_strerror(rc));
            return;
        }
    }
    if (c->closed)
        return;
    output_progress(c);
    if (c->closing && !c->writing && kq_conn_backlog(c) == 0)
        conn_destroy(c, "closed");
}

static void on_write(uv_write_t *req, int status)
{
    struct kq_conn *c = req->data;
    c->writing = false;
    if (c->closed)
        return;
    if (status < 0) {
        conn_destroy(c, uv_strerror(status));
        return;
    }
    c->flight_off += c->write_len;
    write_some(c);
}

static void flush_all(struct kq_net *n)
{
    while (n->dirty) {
        struct kq_conn *c = n->dirty;
        dirty_unlink(c);
        if (c->closed || c->writing)
            continue;
        write_some(c); /* a paced connection too: new output often comes with room */
    }
}

static void on_flush(uv_check_t *h) { flush_all(h->data); }
static void on_flush_before_poll(uv_prepare_t *h) { flush_all(h->data); }

struct kq_buf *kq_conn_out(struct kq_conn *c) { return &c->out; }

void kq_conn_flush_later(struct kq_conn *c)
{
    struct kq_net *n = c->net;
    if (c->closed || n->dirty_last == c)
        return;
    /* In the order of the latest output: the store callbacks of a group queue each producer's
     * ack before the delivery it causes, so the consumers' writes (and wake-ups) come after
     * every ack of the group, and a waiting producer is woken first. */
    if (c->dirty)
        dirty_unlink(c);
    c->dirty = true;
    c->dirty_next = NULL;
    c->dirty_prev = n->dirty_last;
    if (n->dirty_last)
        n->dirty_last->dirty_next = c;
    else
        n->dirty = c;
    n->dirty_last = c;
}

void kq_conn_notify_drain(struct kq_conn *c) { c->want_drain = true; }

/* --- reading ------------------------------------------------------------------------------ */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct kq_conn *c = h->data;
    if (kq_buf_reserve(&c->in, READ_CHUNK) != 0) {
        buf->base = NULL;
        buf->len = 0;
        return;
    }
    buf->base = (char *)c->in.data + c->in.len;
    buf->len = c->in.cap - c->in.len;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct kq_conn *c = s->data;
    if (nread < 0) {
        conn_destroy(c, nread == UV_EOF ? "peer closed" : uv_strerror((int)nread));
        return;
    }
    if (nread == 0)
        return;
    c->in.len += (size_t)nread;
    c->net->stats.read_bytes += (uint64_t)nread;
    c->last_read_ms = mono_ms();
    size_t off = 0;
    while (!c->closing && !c->closed) {
        struct kq_frame f;
        int used = kq_frame_parse(c->in.data + off, c->in.len - off, &f);
        if (used == 0)
            break;
        if (used < 0) {
            KQ_LOG_PER_PEER(KQ_LOG_WARN, "net", c->peer, "bad frame length, closing peer=%s",
                            c->peer);
            kq_conn_close(c, "bad frame length");
            return;
        }
        off += (size_t)used;
        c->net->stats.read_frames++;
        c->net->h->on_frame(c->net->ud, c, &f);
    }
    if (c->closed)
        return;
    kq_buf_consume(&c->in, off);
    /* A peer that sends but does not read its answers must not grow our memory: stop
     * reading until it has taken them (the owner closes it if that takes too long). */
    if (!c->read_paused && !c->closing && kq_conn_backlog(c) > KQ_CONN_OUT_HIGH) {
        c->read_paused = true;
        c->paused_since_ms = mono_ms();
        uv_read_stop((uv_stream_t *)&c->tcp);
        KQ_LOG_RATELIMITED(KQ_LOG_WARN, "net",
                           "peer does not read its answers: %zu bytes "
                           "queued, not reading from it until they are taken peer=%s",
                           kq_conn_backlog(c), c->peer);
    }
}

/* "ip:port" of the peer, "?:0" when the kernel does not say. */
static void peer_name(uv_tcp_t *t, char *out, size_t len)
{
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    char ip[48] = "?";
    int port = 0;
    if (uv_tcp_getpeername(t, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        } else {
            uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        }
    }
    snprintf(out, len, "%s:%d", ip, port);
}

/* A peer whose link died must be gone within the heartbeat timeout, not after the kernel's
 * ~15 minutes of retransmissions: TCP_USER_TIMEOUT ends a connection whose data stays
 * unacknowledged for ms, keepalive probes (from ms/2 of silence) find one with nothing in
 * flight. A live peer with a full receive buffer answers the zero-window probes and stays. */
static void set_dead_peer_timeout(struct kq_conn *c, unsigned ms)
{
    uv_os_fd_t fd;
    if (ms == 0 || uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0)
        return;
    int one = 1, cnt = 3;
    int idle = ms / 2000 > 0 ? (int)(ms / 2000) : 1;
    int intvl = idle / 3 > 0 ? idle / 3 : 1;
    unsigned timeout = ms;
    if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &timeout, sizeof timeout) != 0)
        KQ_LOG_RATELIMITED(KQ_LOG_WARN, "net",
                           "cannot set the dead-peer timeout peer=%s: %s "
                           "(a dead peer may linger until the heartbeat timeout)",
                           c->peer, strerror(errno));
}

static void on_refused_closed(uv_handle_t *h) { free(h); }

/* Over the cap: accept and close at once, so that the peer learns it now and the listen
 * queue does not fill up with connections nobody will serve. */
static void refuse_connection(struct kq_net *n, uv_stream_t *server)
{
    uv_tcp_t *t = malloc(sizeof *t);
    if (!t) {
        KQ_LOG_RATELIMITED(KQ_LOG_ERROR, "net", "out of memory refusing a connection");
        return;
    }
    uv_tcp_init(n->loop, t);
    char peer[64] = "?";
    int rc = uv_accept(server, (uv_stream_t *)t);
    if (rc == 0)
        peer_name(t, peer, sizeof peer);
    else
        KQ_LOG_RATELIMITED(KQ_LOG_WARN, "net", "accept failed (refusing a connection): %s",
                           uv_strerror(rc));
    n->stats.refused++;
    KQ_LOG_RATELIMITED(KQ_LOG_WARN, "net",
                       "connection refused peer=%s: %zu connections "
                       "open, maxConnections=%zu",
                       peer, n->n_conns, n->limits.max_conns);
    uv_close((uv_handle_t *)t, on_refused_closed);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct kq_net *n = server->data;
    if (status < 0) {
        /* (Out of descriptors, libuv itself accepts and closes the waiting connections with
         * a descriptor it keeps spare for that.) */
        KQ_LOG_RATELIMITED(KQ_LOG_WARN, "net", "accept failed: %s", uv_strerror(status));
        return;
    }
    if (n->limits.max_conns && n->n_conns >= n->limits.max_conns) {
        refuse_connection(n, server);
        return;
    }
    struct kq_conn *c = calloc(1, sizeof *c);
    if (!c) { /* left in the listen queue: libuv stops accepting until one is accepted */
        KQ_LOG_RATELIMITED(KQ_LOG_ERROR, "net", "out of memory accepting a connection");
        return;
    }
    uv_tcp_init(n->loop, &c->tcp);
    c->tcp.data = c;
    c->net = n;
    int rc = uv_accept(server, (uv_stream_t *)&c->tcp);
    if (rc != 0) {
        KQ_LOG_RATELIMITED(KQ_LOG_WARN, "net", "accept failed: %s", uv_strerror(rc));
        n->n_conns++;
        c->closed = true;
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->id = ++n->next_id;
    c->last_read_ms = c->opened_ms = mono_ms();
    peer_name(&c->tcp, c->peer, sizeof c->peer);
    set_dead_peer_timeout(c, n->limits.dead_peer_ms);
    c->next = n->conns;
    if (n->conns)
        n->conns->prev = c;
    n->conns = c;
    n->n_conns++;
    if (n->h->on_open)
        n->h->on_open(n->ud, c);
    if (!c->closing && !c->closed)
        start_reading(c);
}

int kq_net_listen(uv_loop_t *loop, const char *hostport, const struct kq_net_handler *h, void *ud,
                  struct kq_net **out, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    if (kq_net_parse_addr(hostport, &ss) != 0) {
        snprintf(err, errlen, "bind: cannot parse address \"%s\" (want host:port)", hostport);
        return -EINVAL;
    }
    struct kq_net *n = calloc(1, sizeof *n);
    if (!n)
        return -ENOMEM;
    n->loop = loop;
    n->h = h;
    n->ud = ud;
    uv_tcp_init(loop, &n->listener);
    n->listener.data = n;
    const char *doing = "listen on";
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    int rc = uv_tcp_bind(&n->listener, (struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&n->listener, 1024, on_connection);
    if (rc == 0) { /* the port (port 0 asks for any) is what the registry and clients need */
        doing = "read the port bound for";
        rc = uv_tcp_getsockname(&n->listener, (struct sockaddr *)&bound, &blen);
    }
    if (rc < 0) {
        snprintf(err, errlen, "bind: cannot %s %s: %s", doing, hostport, uv_strerror(rc));
        uv_close((uv_handle_t *)&n->listener, NULL);
        uv_run(loop, UV_RUN_NOWAIT);
        free(n);
        return rc;
    }
    n->port = ntohs(bound.ss_family == AF_INET ? ((struct sockaddr_in *)&bound)->sin_port
                                               : ((struct sockaddr_in6 *)&bound)->sin6_port);
    uv_check_init(loop, &n->flusher);
    n->flusher.data = n;
    uv_check_start(&n->flusher, on_flush);
    uv_prepare_init(loop, &n->flusher2);
    n->flusher2.data = n;
    uv_prepare_start(&n->flusher2, on_flush_before_poll);
    uv_timer_init(loop, &n->pacer);
    n->pacer.data = n;
    n->handles_open = 4;
    *out = n;
    return 0;
}

int kq_net_port(const struct kq_net *n) { return n->port; }
size_t kq_net_conn_count(const struct kq_net *n) { return n->n_conns; }
void kq_net_set_limits(struct kq_net *n, const struct kq_net_limits *l) { n->limits = *l; }

size_t kq_net_max_conns(int configured)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return configured > 0 ? (size_t)configured : 0;
    size_t limit = (size_t)rl.rlim_cur;
    size_t reserve = limit / 4 > 64 ? limit / 4 : 64;
    if (reserve > limit / 2)
        reserve = limit / 2;
    size_t budget = limit - reserve;
    if (configured <= 0)
        return budget;
    if ((size_t)configured > budget) {
        KQ_WARN("net",
                "maxConnections=%d is more than the open-file limit allows: "
                "RLIMIT_NOFILE=%zu, %zu kept for the store, log and admin; using %zu (raise "
                "`ulimit -n` for more)",
                configured, limit, reserve, budget);
        return budget;
    }
    return (size_t)configured;
}
void kq_net_stats(const struct kq_net *n, struct kq_net_stats *out) { *out = n->stats; }

void kq_net_foreach(struct kq_net *n, void (*fn)(void *ud, struct kq_conn *c), void *ud)
{
    struct kq_conn *c = n->conns;
    while (c) {
        struct kq_conn *next = c->next; /* fn may close c */
        fn(ud, c);
        c = next;
    }
}

static void on_net_handle_closed(uv_handle_t *h)
{
    struct kq_net *n = h->data;
    n->handles_open--;
    maybe_done(n);
}

void kq_net_close(struct kq_net *n, void (*done)(void *ud), void *ud)
{
    n->stopping = true;
    n->done = done;
    n->done_ud = ud;
    uv_close((uv_handle_t *)&n->listener, on_net_handle_closed);
    for (struct kq_conn *c = n->conns; c;) {
        struct kq_conn *next = c->next;
        kq_conn_close(c, "broker shutting down");
        c = next;
    }
    /* push out what is queued now; pacing is off while stopping */
    for (struct kq_conn *c = n->pace_list; c; c = c->pace_next) {
        c->pace_waiting = false;
        kq_conn_flush_later(c);
    }
    n->pace_list = NULL;
    flush_all(n);
    uv_timer_stop(&n->pacer);
    uv_close((uv_handle_t *)&n->pacer, on_net_handle_closed);
    uv_check_stop(&n->flusher);
    uv_prepare_stop(&n->flusher2);
    uv_close((uv_handle_t *)&n->flusher, on_net_handle_closed);
    uv_close((uv_handle_t *)&n->flusher2, on_net_handle_closed);
}

void kq_net_free(struct kq_net *n) { free(n); }

const char *kq_conn_peer(const struct kq_conn *c) { return c->peer; }
uint64_t kq_conn_id(const struct kq_conn *c) { return c->id; }
uint64_t kq_conn_last_read_ms(const struct kq_conn *c) { return c->last_read_ms; }
uint64_t kq_conn_opened_ms(const struct kq_conn *c) { return c->opened_ms; }
uint64_t kq_conn_read_paused_ms(const struct kq_conn *c)
{
    return c->read_paused ? mono_ms() - c->paused_since_ms : 0;
}
void *kq_conn_user(const struct kq_conn *c) { return c->user; }
void kq_conn_set_user(struct kq_conn *c, void *user) { c->user = user; }
