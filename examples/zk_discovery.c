/* Find the brokers in ZooKeeper, as the original clients do: a consumer group registers its
 * binding, a producer finds the brokers serving its topic, publishes, and the consumer gets
 * the messages. Exits 0 once every message came back (at most 15 s).
 *   cc zk_discovery.c $(pkg-config --cflags --libs kiteq-client) -o zk_discovery
 *   ./zk_discovery zk://127.0.0.1:2181 p-trade secret-p s-trade-a secret-a trade pay-succ */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <kiteq/kiteq_cluster.h>

#define COUNT 3

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int received;

/* Runs on the reader thread of the broker connection that delivered it. */
static bool on_message(void *ud, const struct kq_message *m)
{
    (void)ud;
    printf("received %s %s/%s: %.*s\n", m->message_id, m->topic, m->message_type, (int)m->body_len,
           (const char *)m->body);
    fflush(stdout);
    pthread_mutex_lock(&mu);
    received++;
    pthread_mutex_unlock(&mu);
    return true;
}

static int got(void)
{
    pthread_mutex_lock(&mu);
    int n = received;
    pthread_mutex_unlock(&mu);
    return n;
}

int main(int argc, char **argv)
{
    if (argc != 8) {
        fprintf(stderr, "usage: %s REGISTRY PRODUCER SECRET CONSUMER SECRET TOPIC TYPE\n", argv[0]);
        return 2;
    }
    kq_client_log_to_stderr(KQ_CLIENT_LOG_WARN);
    const char *topic = argv[6], *type = argv[7];
    char err[256];
    /* consumer: its binding goes to /kiteq/sub/<topic>/<group>-bind; the brokers read it */
    struct kq_cluster_binding bind = {
        .topic = topic, .message_type = type, .bind_type = 0, .persistent = true};
    struct kq_cluster_options co = {
        .registry = argv[1],
        .bindings = &bind,
        .n_bindings = 1,
        .client = {.group_id = argv[4], .secret = argv[5], .on_message = on_message}};
    struct kq_cluster *consumer, *producer;
    if (kq_cluster_open(&co, &consumer, err, sizeof err)) {
        fprintf(stderr, "consumer: %s\n", err);
        return 1;
    }
    /* producer: sends to the brokers listed under /kiteq/server/<topic> */
    const char *topics[] = {topic};
    struct kq_cluster_options po = {.registry = argv[1],
                                    .publish_topics = topics,
                                    .n_publish_topics = 1,
                                    .client = {.group_id = argv[2], .secret = argv[3]}};
    if (kq_cluster_open(&po, &producer, err, sizeof err)) {
        fprintf(stderr, "producer: %s\n", err);
        kq_cluster_close(consumer);
        return 1;
    }
    char brokers[4][128];
    size_t n = kq_cluster_brokers(producer, topic, brokers, 4);
    printf("brokers serving %s: %zu%s%s\n", topic, n, n ? ", first " : "", n ? brokers[0] : "");
    int stored = 0;
    time_t end = time(NULL) + 15;
    for (int i = 0; i < COUNT && time(NULL) < end;) {
        char body[32];
        int len = snprintf(body, sizeof body, "discovered %d", i);
        struct kq_message m = {.topic = topic,
                               .message_type = type,
                               .body = body,
                               .body_len = (size_t)len,
                               .expired_time = -1,
                               .deliver_limit = -1};
        struct kq_publish_result r;
        int rc = kq_cluster_publish(producer, &m, &r);
        if (rc == -ENOTCONN) { /* no broker yet (the broker reads the binding first) */
            usleep(100000);
            continue;
        }
        if (rc || !r.status) {
            fprintf(stderr, "not stored: %s\n", rc ? strerror(-rc) : r.feedback);
            break;
        }
        stored++;
        i++;
    }
    while (got() < stored && time(NULL) < end)
        usleep(50000);
    kq_cluster_close(producer);
    kq_cluster_close(consumer);
    printf("stored %d, received %d\n", stored, got());
    return stored == COUNT && got() >= COUNT ? 0 : 1;
}
