/* The ZooKeeper registry of the broker, compatible with the original KiteQ layout:
 *   /kiteq/server/<topic>/<bind>     ephemeral, empty (deleted first, then created)
 *   /kiteq/alive_servers/<bind>      ephemeral, empty
 *   /kiteq/all_servers/<bind>        persistent, empty
 *   /kiteq/pub/<topic>, /kiteq/sub/<topic>   persistent, pre-created
 * and it reads + watches /kiteq/sub/<topic>/<groupId>-bind (JSON array of bindings).
 *
 * Threads: every function here is called on the loop thread, and every callback of
 * struct kq_zk_events runs on the loop thread. A private worker thread owns the ZooKeeper
 * handle and makes all (blocking) zoo_* calls; ZooKeeper's own threads only queue jobs for
 * that worker, and the worker hands results to the loop through a uv_async_t.
 *
 * Failures: ZooKeeper unreachable (at start or later) never stops the broker. The registry
 * keeps retrying with back-off (1 s doubling to 30 s), logs each state change, and after
 * every (re)connection re-publishes the server nodes and re-reads every binding. A session
 * expiry re-creates the handle. The bindings already reported stay valid meanwhile. */
#ifndef KQ_REGISTRY_ZK_REGISTRY_H
#define KQ_REGISTRY_ZK_REGISTRY_H
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "config/config.h"

struct kq_zk_registry;

struct kq_zk_events {
    /* The bindings of (topic, group) changed; binds[0..n) is only valid during the call
     * (copy what you keep). n == 0: the group's node was removed (or holds []), or the
     * topic is no longer served. Malformed JSON is logged and not reported. */
    void (*on_bindings)(void *ud, const char *topic, const char *group,
                        const struct kq_binding *binds, size_t n);
    /* "connecting", "connected", "unreachable", "expired", "stopped". May be NULL. */
    void (*on_state)(void *ud, const char *state);
    /* After kq_zk_registry_watch_servers: the children of /kiteq/alive_servers (on every
     * change, and after every (re)connection) and of /kiteq/all_servers (every broker that
     * ever registered). Arrays valid during the call only. May be NULL. */
    void (*on_servers)(void *ud, char *const *alive, size_t n_alive, char *const *all,
                       size_t n_all);
    /* Answer to kq_zk_registry_takeover_lock: KQ_TAKEOVER_*. May be NULL. */
    void (*on_takeover)(void *ud, const char *dead, int result);
    /* The server nodes (/kiteq/server/<topic>/<bind> of each of n_topics topics,
     * /kiteq/alive_servers/<bind>) exist: clients can find the broker. After the first
     * connection and after every reconnection. May be NULL. */
    void (*on_registered)(void *ud, size_t n_topics);
};

#define KQ_TAKEOVER_LOCKED 1     /* ours: take over, then kq_zk_registry_takeover_finish */
#define KQ_TAKEOVER_NOT_NEEDED 0 /* done already (marker), or the server is alive again */
#define KQ_TAKEOVER_BUSY (-1)    /* another broker holds the lock, or ZooKeeper is away */

/* Start the registry: zk_uri is "zk://h:p[,h:p...][?ignored]", bind the "host:port"
 * published for clients, topics[0..n_topics) the topics served (copied). Returns 0 with
 * *out set — even when ZooKeeper is not reachable yet (see kq_zk_registry_state) — or a
 * negative errno with a reason in err (bad URI, out of memory, no thread). */
int kq_zk_registry_start(uv_loop_t *loop, const char *zk_uri, const char *bind, char *const *topics,
                         size_t n_topics, const struct kq_zk_events *ev, void *ud,
                         struct kq_zk_registry **out, char *err, size_t errlen);

/* Replace the served topics (reload): new topics are published and their bindings read,
 * removed topics are withdrawn and their groups reported with n == 0. Copies topics. */
void kq_zk_registry_set_topics(struct kq_zk_registry *r, char *const *topics, size_t n);

/* Report the broker set (on_servers) from now on. takeover_key names the shared store in
 * the lock nodes /kiteq/takeover/<key>/<server>.lock (ephemeral) and .done (persistent);
 * our own .done marker is deleted whenever we (re)register, so that a later death of ours
 * is taken over again. */
void kq_zk_registry_watch_servers(struct kq_zk_registry *r, const char *takeover_key);
/* Try to become the one broker that takes over dead's messages; answered by on_takeover. */
void kq_zk_registry_takeover_lock(struct kq_zk_registry *r, const char *dead);
/* Release the lock; ok = leave the .done marker so that nobody repeats it. */
void kq_zk_registry_takeover_finish(struct kq_zk_registry *r, const char *dead, bool ok);

/* The last state reported to the loop (a static string, see on_state). */
const char *kq_zk_registry_state(const struct kq_zk_registry *r);

/* Withdraw /kiteq/server/<topic>/<bind> and /kiteq/alive_servers/<bind> (when connected),
 * close the session, join the worker, then call done(ud) on the loop and free r. No
 * on_bindings/on_state callback runs after this call. */
void kq_zk_registry_stop(struct kq_zk_registry *r, void (*done)(void *ud), void *ud);

/* "zk://h:p,h:p?x=y" -> "h:p,h:p" in out. Returns 0 or -EINVAL. Shared with the client. */
int kq_zk_parse_uri(const char *uri, char *out, size_t outlen);
#endif
