/* The broker: sessions (handshake, auth, heartbeats), the publish pipeline
 * (check -> store -> ack -> deliver) and delivery with retries and dead letters.
 * Everything here runs on the one libuv loop thread, except the building of a reload
 * (reload.c: the config file and policies are loaded on libuv's threadpool). */
#ifndef KQ_BROKER_BROKER_H
#define KQ_BROKER_BROKER_H
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config/config.h"

struct kq_broker;
struct kq_policy;

/* Every check a start makes before it takes a resource: the listen and admin addresses, the
 * store URI and its parameters, the registry URI, the log file, and the policies (loaded and
 * self-tested; a folder named in the file must exist). Used by kq_broker_start, reload and
 * `kiteq --check`. 0, with the loaded policies in *policy when policy is not NULL (the
 * caller frees them); or -EINVAL with every problem in err, one "FILE: key: reason" line
 * each. Any thread (the reload runs it on a worker); cfg is only read. */
int kq_broker_preflight(const struct kq_config *cfg, struct kq_policy **policy, char *err,
                        size_t errlen);

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
/* Reload the reloadable part of the config and the policies (SIGHUP, POST /reload). The new
 * state is built and checked off the loop thread (loading Lua: the config file, the policy
 * files and their self-tests) while the loop keeps serving, then swapped in whole on the
 * loop. On failure, or when the build still runs 10 s after it started (it is abandoned),
 * the old state keeps serving and the reason is logged and kept for /stat. One reload at a
 * time: requests made while one runs share the next one. done(ud, rc) (may be NULL) is
 * called on the loop once the reload serving this request has ended: 0 (swapped in),
 * -EINVAL/-ENOMEM (failed), -ETIMEDOUT (abandoned) or -ECANCELED (the broker stopped).
 * Returns 0 when done will be called (maybe already: a reload that failed to start answers
 * at once), or -errno when it will not be. Loop thread. */
int kq_broker_reload_start(struct kq_broker *b, void (*done)(void *ud, int rc), void *ud);
/* kq_broker_reload_start(b, NULL, NULL) (SIGHUP). */
int kq_broker_reload(struct kq_broker *b);
int kq_broker_port(const struct kq_broker *b);
/* cb(ud) once clients can find the broker: at once with static bindings, else when its
 * nodes are registered in ZooKeeper for the first time (which waits for ZooKeeper). */
void kq_broker_when_ready(struct kq_broker *b, void (*cb)(void *ud), void *ud);

struct kq_broker_stats {
    uint64_t connections, received, stored, delivered, acked, retried, dead_lettered, rejected,
        pending, inflight;
    uint64_t unrouted; /* accepted while no group was bound to their (topic, messageType) */
    /* Errors delivery could not act on: store update/remove/dead-letter calls that failed
     * (the store copy may be behind the index; a restart may deliver again), group names
     * that could not be recorded for lack of memory (the attempt is retried), and copies
     * neither sent nor queued for room for lack of memory (the attempt failed for the group
     * and is retried). */
    uint64_t store_errors, names_lost, unsent;
    /* Acks that matched no delivery outstanding on their connection: late (the copy timed
     * out and was retried) or for an opaque never sent there. */
    uint64_t acks_unmatched;
};
void kq_broker_stats(const struct kq_broker *b, struct kq_broker_stats *s);
#endif
