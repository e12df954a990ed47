/* kq_cluster: a KiteQ client that finds its brokers in ZooKeeper, like the original clients
 * (registry "zk://h:p[,h:p]"). It keeps one kq_client per broker it needs:
 *
 *  - producers register /kiteq/pub/<topic>/<groupId>/<hostname> (persistent, empty) and send
 *    each message to one of the brokers listed under /kiteq/server/<topic> (watched), round
 *    robin, moving on to the next broker when one is down (-ENOTCONN) or leaves the list;
 *  - consumers write their bindings as the original's JSON array to
 *    /kiteq/sub/<topic>/<groupId>-bind (persistent) and connect to every broker serving one
 *    of their topics; deliveries from all of them reach the one on_message callback.
 *
 * A private thread owns the ZooKeeper handle (re-created on session expiry, which also
 * re-registers) and opens/closes the broker connections; ZooKeeper's own threads only set
 * flags. All functions are thread-safe; on_message/on_tx_check run on the reader thread of
 * the broker connection concerned (so possibly concurrently). */
#ifndef KITEQ_CLUSTER_H
#define KITEQ_CLUSTER_H
#include "kiteq_client.h" /* same folder: works in the tree and installed */

#ifdef __cplusplus
extern "C" {
#endif

struct kq_cluster;

/* One subscription of a consumer group (the original's Binding). */
struct kq_cluster_binding {
    const char *topic;
    const char *message_type; /* exact type (0), RE2 pattern (1), "*" (2) */
    int bind_type;            /* 0 direct, 1 regx, 2 fanout */
    int watermark;            /* messages/s for the group; <= 0 means 1000 */
    bool persistent;
};

struct kq_cluster_options {
    const char *registry; /* "zk://host:port[,host:port][?ignored]" */
    /* group_id, secret, timeouts, callbacks for every broker connection; broker is ignored
     * and reconnect is forced on. */
    struct kq_client_options client;
    const char *const *publish_topics; /* producer: topics it publishes to */
    size_t n_publish_topics;
    const struct kq_cluster_binding *bindings; /* consumer: its subscriptions */
    size_t n_bindings;
    /* kq_cluster_open waits up to this long for ZooKeeper and for one connected broker per
     * topic; 0 = 5000. */
    int open_wait_ms;
};

/* Connect to ZooKeeper, register, connect to the brokers. Returns 0 (possibly with no broker
 * connected yet: publishes then fail with -ENOTCONN until one appears), -EINVAL (bad
 * options/URI), -ETIMEDOUT (ZooKeeper not reachable within open_wait_ms), -ENOMEM. */
int kq_cluster_open(const struct kq_cluster_options *o, struct kq_cluster **out, char *err,
                    size_t errlen);
/* kq_publish on a broker serving m->topic; -ENOTCONN when none is connected. Other results
 * as kq_publish (a message whose connection broke after sending, -ECONNRESET, is not resent
 * elsewhere: it may have been stored). */
int kq_cluster_publish(struct kq_cluster *c, const struct kq_message *m,
                       struct kq_publish_result *r);
/* kq_publish_async likewise: 0 = cb will be called once; < 0 = not sent. */
int kq_cluster_publish_async(struct kq_cluster *c, const struct kq_message *m, kq_publish_cb cb,
                             void *ud);
/* Connected brokers serving topic: copies up to max addresses ("host:port") into out and
 * returns how many there are. For tools and tests. */
size_t kq_cluster_brokers(struct kq_cluster *c, const char *topic, char (*out)[128], size_t max);
/* Close every broker connection and the ZooKeeper session (registrations are persistent
 * and stay, as with the original clients). Not from a callback. */
void kq_cluster_close(struct kq_cluster *c);

#ifdef __cplusplus
}
#endif
#endif
