/* TCP listener and connections on the libuv loop: framed reads, coalesced writes.
 * Reads are split into KiteQ frames (src/proto/frame.h) and handed to the handler one by
 * one. Writes are appended to the connection's output buffer and flushed once per loop
 * iteration (one write(2) for everything a connection got during that iteration; connections
 * in the order of their latest output), paced in half-window pieces when the peer's receive
 * window is smaller than a TCP segment (see writable_now in net.c). A connection whose queued
 * output passes KQ_CONN_OUT_HIGH is not read until the peer has taken it. */
#ifndef KQ_NET_NET_H
#define KQ_NET_NET_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/buf.h"
#include "proto/frame.h"

struct kq_net;
struct kq_conn;

struct kq_net_handler {
    void (*on_open)(void *ud, struct kq_conn *c);
    /* One complete frame; f->body points into the read buffer, valid during the call. */
    void (*on_frame)(void *ud, struct kq_conn *c, const struct kq_frame *f);
    /* The connection starts closing (kq_conn_close: its queued output is still written
     * afterwards) or is gone; called once. Its user data must be released here: no frame
     * and no on_drain follow. */
    void (*on_close)(void *ud, struct kq_conn *c, const char *reason);
    /* Everything queued on c has been handed to the kernel (after kq_conn_notify_drain). */
    void (*on_drain)(void *ud, struct kq_conn *c);
};

/* Output bound of one connection: past HIGH bytes queued, the connection is not read until
 * its queue is down to LOW (back-pressure on a peer that sends but does not read). */
#define KQ_CONN_OUT_HIGH ((size_t)1 << 20)
#define KQ_CONN_OUT_LOW ((size_t)256 << 10)

/* Limits for the connections accepted from now on (kq_net_set_limits). */
struct kq_net_limits {
    size_t max_conns;      /* past this many open connections a new one is accepted and closed at
                       * once (0 = no cap; see kq_net_max_conns) */
    unsigned dead_peer_ms; /* a peer that acknowledges nothing this long is gone: TCP_USER_TIMEOUT
                            * and keepalive probes (0 = the kernel's ~15 minutes) */
};

/* Listen on "host:port" (IPv4 or IPv6 literal, or "localhost"). Returns 0 or -errno with a
 * reason in err. */
int kq_net_listen(uv_loop_t *loop, const char *hostport, const struct kq_net_handler *h, void *ud,
                  struct kq_net **out, char *err, size_t errlen);
/* The port actually bound (useful with port 0). */
int kq_net_port(const struct kq_net *n);
/* Free the net after kq_net_close has called `done`. */
void kq_net_free(struct kq_net *n);
/* Stop accepting and close every connection (output is flushed first); `done` runs once
 * everything is closed. */
void kq_net_close(struct kq_net *n, void (*done)(void *ud), void *ud);
size_t kq_net_conn_count(const struct kq_net *n);
void kq_net_set_limits(struct kq_net *n, const struct kq_net_limits *l);
/* The connection cap for a configured maxConnections (0 = automatic): the descriptors
 * RLIMIT_NOFILE leaves after keeping a reserve (a quarter of the limit, at least 64, at
 * most half) for the store's files, the log, the admin and the registry, so client sockets
 * can never starve the store; a configured value above that is lowered, with a warning. */
size_t kq_net_max_conns(int configured);
/* Traffic since start: bytes and frames read, bytes written and write calls made;
 * connections refused over the cap. */
struct kq_net_stats {
    uint64_t read_bytes, read_frames, write_bytes, writes;
    uint64_t refused;
};
void kq_net_stats(const struct kq_net *n, struct kq_net_stats *out);
void kq_net_foreach(struct kq_net *n, void (*fn)(void *ud, struct kq_conn *c), void *ud);

/* Output buffer to append whole frames to; call kq_conn_flush_later afterwards. */
struct kq_buf *kq_conn_out(struct kq_conn *c);
void kq_conn_flush_later(struct kq_conn *c);
/* Bytes queued and not yet handed to the kernel (back-pressure signal). */
size_t kq_conn_backlog(const struct kq_conn *c);
/* Call the handler's on_drain once c's queued output has all been handed to the kernel. */
void kq_conn_notify_drain(struct kq_conn *c);
/* How long c has not been read because its peer does not take its output (0 = reading). */
uint64_t kq_conn_read_paused_ms(const struct kq_conn *c);
/* Close after the queued output is written; no more frames are delivered, on_close is
 * called now. */
void kq_conn_close(struct kq_conn *c, const char *reason);
/* Close now, dropping whatever is queued (a peer that is gone or does not read). */
void kq_conn_abort(struct kq_conn *c, const char *reason);
/* Closing, closed, or the net is shutting down: no new work for it. */
bool kq_conn_closing(const struct kq_conn *c);
const char *kq_conn_peer(const struct kq_conn *c);
uint64_t kq_conn_id(const struct kq_conn *c);
uint64_t kq_conn_last_read_ms(const struct kq_conn *c); /* monotonic ms */
uint64_t kq_conn_opened_ms(const struct kq_conn *c);    /* monotonic ms */
void *kq_conn_user(const struct kq_conn *c);
void kq_conn_set_user(struct kq_conn *c, void *user);

/* Resolve "host:port" into a sockaddr (numeric hosts and "localhost"). 0 or -errno. */
int kq_net_parse_addr(const char *hostport, struct sockaddr_storage *ss);
#endif
