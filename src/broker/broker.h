/* The broker: sessions (handshake, auth, heartbeats), the publish pipeline
 * (check -> store -> ack -> deliver) and delivery with retries and dead letters.
 * Everything here runs on the one libuv loop thread. */
#ifndef KQ_BROKER_BROKER_H
#define KQ_BROKER_BROKER_H
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config/config.h"

struct kq_broker;

/* Start listening and serving with config `cfg` (malloc'd; owned by the broker once *out is
 * set, and freed by kq_broker_free). Returns 0 or -errno with a reason in err; on an error
 * after the listener was up, *out is set too and must be stopped and freed. */
int kq_broker_start(uv_loop_t *loop, struct kq_config *cfg, char *err, size_t errlen,
                    struct kq_broker **out);
/* Graceful stop: stop accepting, flush, close connections and the store; `done` is called
 * when everything is closed. */
void kq_broker_stop(struct kq_broker *b, void (*done)(void *ud), void *ud);
void kq_broker_free(struct kq_broker *b);
/* Remember the command line: a reload re-reads the config file and re-applies its flags. */
void kq_broker_set_args(struct kq_broker *b, int argc, char **argv);
/* Reload the reloadable part of the config and the policies (SIGHUP). The new state is built
 * and checked off to the side and swapped in whole; on failure the old one keeps serving and
 * the reason is logged and returned. 0 or -errno. */
int kq_broker_reload(struct kq_broker *b);
int kq_broker_port(const struct kq_broker *b);

struct kq_broker_stats {
    uint64_t connections, received, stored, delivered, acked, retried, dead_lettered,
        rejected, pending, inflight;
    uint64_t unrouted; /* accepted while no group was bound to their (topic, messageType) */
};
void kq_broker_stats(const struct kq_broker *b, struct kq_broker_stats *s);
#endif
