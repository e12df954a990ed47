/* libkiteq-client: a KiteQ client for C programs (our CLI, bench and tests use it).
 *
 * One kq_client is one authenticated TCP connection to a broker, with a reader thread
 * that dispatches replies and deliveries, a heartbeat every `heartbeat_ms`, and automatic
 * reconnect (with back-off) when the connection breaks. All functions are thread-safe.
 *
 * Publishing: kq_publish waits for the broker's MessageStoreAck; kq_publish_async returns
 * at once and calls the callback from the reader thread (pipelining). Consuming: the
 * on_message callback runs on the reader thread and its return value is the DeliverAck
 * status (true = done, false = please redeliver). */
#ifndef KITEQ_CLIENT_H
#define KITEQ_CLIENT_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KQ_CLIENT_ID_LEN 32

struct kq_client;

struct kq_property {
    const char *key;
    const char *value;
};

/* A message to publish, or a delivered one (then every pointer is valid only during the
 * callback). A zero-initialised message with topic, message_type and body set is a plain,
 * committed message: delivered as soon as it is stored. */
struct kq_message {
    char message_id[KQ_CLIENT_ID_LEN + 1]; /* empty on publish: generated */
    const char *topic;
    const char *message_type;
    const char *group_id;  /* publishing group; empty on publish = the client's group */
    int64_t expired_time;  /* Unix seconds; -1 = broker default */
    int32_t deliver_limit; /* -1 = broker default (100) */
    bool two_phase;        /* true = two-phase (header commit=false): stored, delivered
                                 * only after kq_tx_finish commits it; false = committed */
    bool fly;              /* not stored, best effort */
    bool string_body;      /* StringMessage (0x12) instead of BytesMessage (0x11) */
    const void *body;
    size_t body_len;
    const struct kq_property *properties;
    size_t n_properties;
    int64_t create_time; /* set by the library when <= 0 */
};

struct kq_publish_result {
    bool status; /* true = the broker stored (or accepted) it */
    char feedback[128];
    char message_id[KQ_CLIENT_ID_LEN + 1];
};

/* Delivery callback: return true to ack, false to nack. */
typedef bool (*kq_on_message_fn)(void *ud, const struct kq_message *m);
/* Broker's transaction check for a two-phase message we published: return
 * 1 commit, 2 rollback, 0 unknown (ask again later). */
typedef int (*kq_on_tx_check_fn)(void *ud, const struct kq_message *header_only);
/* Async publish completion; err is 0, or -ETIMEDOUT / -ECONNRESET when no ack came. */
typedef void (*kq_publish_cb)(void *ud, int err, const struct kq_publish_result *r);

struct kq_client_options {
    const char *broker; /* "host:port" */
    const char *group_id;
    const char *secret;
    int32_t warmingup_sec;
    int connect_timeout_ms; /* default 5000 */
    int ack_timeout_ms;     /* wait for store acks, default 3000 */
    int heartbeat_ms;       /* default 10000 */
    bool reconnect;         /* true: reconnect automatically (recommended; a zeroed struct
                             * means false, which tests of failures use) */
    /* SO_RCVBUF / SO_SNDBUF in bytes, set right after connect (0 = the system's default).
     * The original Go client sets 16 KiB this way; tools use it to behave like it. */
    int socket_rcvbuf, socket_sndbuf;
    kq_on_message_fn on_message;
    kq_on_tx_check_fn on_tx_check;
    void *ud;
};

/* Connect and authenticate. Returns 0 or -errno (-EACCES when the broker refused the
 * group/secret; the broker's feedback is in err). */
int kq_client_open(const struct kq_client_options *o, struct kq_client **out, char *err,
                   size_t errlen);
/* Stops the reader (after the callback in progress and its ack), fails pending publishes
 * with -ECONNRESET and frees everything. Not from a callback, not concurrently with other
 * calls on c. */
void kq_client_close(struct kq_client *c);

/* Returns 0 when the broker's ack arrived (its verdict in r->status / r->feedback), or
 * -ETIMEDOUT, -ECONNRESET (connection lost: not resent), -ENOTCONN (down or reconnecting),
 * -EINVAL, -EMSGSIZE, -EDEADLK (called from a callback: use kq_publish_async there).
 * r (may be NULL) always gets the message id. */
int kq_publish(struct kq_client *c, const struct kq_message *m, struct kq_publish_result *r);
/* 0: cb will be called exactly once (from the reader thread, or from kq_client_close),
 * with r never NULL (status false and an explanation in feedback when err != 0).
 * < 0: not sent and cb will not be called. */
int kq_publish_async(struct kq_client *c, const struct kq_message *m, kq_publish_cb cb, void *ud);
/* Scheduled delivery (docs/CLIENT.md "Scheduled publishing"): as kq_publish /
 * kq_publish_async, and the broker delivers m no earlier than delay_ms after it stored it
 * (the ack comes at once, as for any message; consumers see the due time, Unix ms, in the
 * property x-kiteq-deliver-at). The library adds the property KQ_DELAY_PROPERTY = delay_ms
 * to m's properties (any client, e.g. kq_cluster_publish, may add it itself). delay_ms 0 ..
 * 604800000 (7 days), and the message must not expire before it is due (else the broker
 * refuses it: r->status false, feedback "Invalid Property: ..."). -EINVAL also for a delay
 * out of range or m carrying KQ_DELAY_PROPERTY already. Since KITEQ_CLIENT_1.1. */
#define KQ_DELAY_PROPERTY "x-kiteq-delay-ms"
#define KQ_MAX_DELAY_MS 604800000LL
int kq_publish_delayed(struct kq_client *c, const struct kq_message *m, int64_t delay_ms,
                       struct kq_publish_result *r);
int kq_publish_delayed_async(struct kq_client *c, const struct kq_message *m, int64_t delay_ms,
                             kq_publish_cb cb, void *ud);
/* Second phase of a two-phase message: status 1 commit, 2 rollback. Fire and forget
 * (opaque 0, as the Go client). m->message_id is required; to send the Header exactly as
 * published, set message_id and create_time yourself before kq_publish and pass the same m.
 * Returns 0, -EINVAL, -ENOTCONN or -ECONNRESET. */
int kq_tx_finish(struct kq_client *c, const struct kq_message *m, int status, const char *feedback);

/* Batching publishes: between kq_client_cork and kq_client_uncork, frames wait in the
 * client's write buffer (sent when it passes 64 KiB, or at the last uncork) instead of one
 * send(2) each. Corks nest and apply to every thread using c, so keep corked stretches
 * short: publish what is ready, then uncork. */
void kq_client_cork(struct kq_client *c);
void kq_client_uncork(struct kq_client *c);

/* Counters for tools. */
struct kq_client_stats {
    uint64_t published, acked_ok, acked_fail, delivered, reconnects;
};
void kq_client_stats(struct kq_client *c, struct kq_client_stats *s);

/* 32 hex chars, as the original clients generate them. */
void kq_generate_message_id(char out[KQ_CLIENT_ID_LEN + 1]);

/* Logging. The library writes nothing to stderr (or anywhere) unless asked: install a
 * logger with kq_client_set_logger, or the default one with kq_client_log_to_stderr.
 * Process-wide; call before kq_client_open / kq_cluster_open (not thread-safe against
 * clients that are running). fn is called from any of the library's threads, one whole line
 * per call: "module: message key=value ..." (secrets redacted). fn NULL = silence again. */
enum kq_client_log_level {
    KQ_CLIENT_LOG_DEBUG = 0,
    KQ_CLIENT_LOG_INFO,
    KQ_CLIENT_LOG_WARN,
    KQ_CLIENT_LOG_ERROR,
};
typedef void (*kq_client_log_fn)(void *ud, enum kq_client_log_level level, const char *text);
void kq_client_set_logger(kq_client_log_fn fn, void *ud, enum kq_client_log_level min_level);
/* Lines at min_level and above to stderr, with a timestamp and the level. */
void kq_client_log_to_stderr(enum kq_client_log_level min_level);

#ifdef __cplusplus
}
#endif
#endif
