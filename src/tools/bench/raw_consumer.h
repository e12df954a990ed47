/* Consumers that misbehave on purpose, for kiteq-bench --consumer-mode. The client library
 * acks every delivery its callback returns, so these speak the wire protocol themselves
 * (proto/wire.h): connect, ConnMeta, wait for ConnAuthAck, then
 *   never-ack   read every delivery, hand its body to a callback, never send a DeliverAck
 *               (heartbeats every 10 s, as a live client would);
 *   never-read  never read the socket again and send nothing (a frozen process).
 * One thread per never-ack consumer; a never-read consumer is just an open socket. */
#ifndef KQ_BENCH_RAW_CONSUMER_H
#define KQ_BENCH_RAW_CONSUMER_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum bench_consumer_mode {
    BENCH_CONSUMER_NORMAL = 0, /* the client library: ack after the callback */
    BENCH_CONSUMER_NEVER_ACK,
    BENCH_CONSUMER_NEVER_READ,
};

/* "normal", "never-ack", "never-read": 0, or -EINVAL for anything else. */
int bench_consumer_mode_parse(const char *s, enum bench_consumer_mode *out);
const char *bench_consumer_mode_name(enum bench_consumer_mode m);

/* Called on the consumer's thread for each delivered message body. */
typedef void (*bench_raw_delivery_fn)(void *ud, const uint8_t *body, size_t len);

struct bench_raw_consumer_options {
    const char *broker, *group, *secret; /* broker is HOST:PORT */
    enum bench_consumer_mode mode;       /* NEVER_ACK or NEVER_READ */
    int rcvbuf, sndbuf;                  /* > 0: SO_RCVBUF / SO_SNDBUF after connect */
    bench_raw_delivery_fn on_delivery;   /* never-ack only */
    void *ud;
};

struct bench_raw_consumer;

/* Connects and authenticates (5 s deadline), then starts consuming. 0, or a negative errno
 * with a reason in err (the broker's feedback when it refused the group). */
int bench_raw_consumer_open(const struct bench_raw_consumer_options *o,
                            struct bench_raw_consumer **out, char *err, size_t errlen);
/* True once the broker closed the connection (never-ack: seen by the reader; never-read
 * cannot tell and says false). */
bool bench_raw_consumer_closed_by_broker(const struct bench_raw_consumer *c);
/* Stops the thread, closes the socket, frees. NULL is ignored. */
void bench_raw_consumer_close(struct bench_raw_consumer *c);
#endif
