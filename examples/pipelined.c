/* Publish a burst without waiting for each ack: kq_publish_async returns at once and the
 * callback runs with the broker's answer; cork/uncork sends the burst in one write.
 *   cc pipelined.c $(pkg-config --cflags --libs kiteq-client) -o pipelined
 *   ./pipelined 127.0.0.1:13800 p-trade secret-p trade pay-succ 100 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kiteq/kiteq_client.h>

struct burst {
    pthread_mutex_t mu;
    pthread_cond_t done;
    int waiting, failed;
};

/* Runs on the client's reader thread, once per message (err < 0: no ack came). */
static void on_ack(void *ud, int err, const struct kq_publish_result *r)
{
    struct burst *b = ud;
    if (err || !r->status)
        fprintf(stderr, "not stored %s: %s\n", r->message_id, err ? strerror(-err) : r->feedback);
    pthread_mutex_lock(&b->mu);
    b->failed += err || !r->status;
    if (--b->waiting == 0)
        pthread_cond_signal(&b->done);
    pthread_mutex_unlock(&b->mu);
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: %s BROKER GROUP SECRET TOPIC TYPE COUNT\n", argv[0]);
        return 2;
    }
    kq_client_log_to_stderr(KQ_CLIENT_LOG_WARN);
    struct kq_client_options o = {
        .broker = argv[1], .group_id = argv[2], .secret = argv[3], .reconnect = true};
    struct kq_client *c;
    char err[256];
    if (kq_client_open(&o, &c, err, sizeof err)) {
        fprintf(stderr, "connect: %s\n", err);
        return 1;
    }
    struct burst b = {.mu = PTHREAD_MUTEX_INITIALIZER, .done = PTHREAD_COND_INITIALIZER};
    int count = atoi(argv[6]);
    kq_client_cork(c); /* frames wait in the client's buffer ... */
    for (int i = 0; i < count; i++) {
        char body[64];
        int n = snprintf(body, sizeof body, "pipelined %d", i);
        struct kq_message m = {.topic = argv[4],
                               .message_type = argv[5],
                               .body = body,
                               .body_len = (size_t)n,
                               .expired_time = -1,
                               .deliver_limit = -1};
        pthread_mutex_lock(&b.mu);
        b.waiting++; /* before the call: the ack may come before it returns */
        pthread_mutex_unlock(&b.mu);
        int rc = kq_publish_async(c, &m, on_ack, &b); /* the body is copied: reuse it */
        if (rc < 0) {                                 /* not sent, no callback */
            fprintf(stderr, "not sent: %s\n", strerror(-rc));
            pthread_mutex_lock(&b.mu);
            b.waiting--;
            b.failed++;
            pthread_mutex_unlock(&b.mu);
        }
    }
    kq_client_uncork(c); /* ... and leave in one write */
    pthread_mutex_lock(&b.mu);
    while (b.waiting > 0) /* every callback runs once: an ack, or a timeout / lost connection */
        pthread_cond_wait(&b.done, &b.mu);
    int failed = b.failed;
    pthread_mutex_unlock(&b.mu);
    printf("stored %d of %d\n", count - failed, count);
    kq_client_close(c);
    return failed ? 1 : 0;
}
