/* Publish messages to one broker and wait for each store ack.
 *   cc publish.c $(pkg-config --cflags --libs kiteq-client) -o publish
 *   ./publish 127.0.0.1:13800 p-trade secret-p trade pay-succ 10 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kiteq/kiteq_client.h>

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: %s BROKER GROUP SECRET TOPIC TYPE COUNT\n", argv[0]);
        return 2;
    }
    kq_client_log_to_stderr(KQ_CLIENT_LOG_WARN); /* the library is silent unless asked */
    struct kq_client_options o = {
        .broker = argv[1], .group_id = argv[2], .secret = argv[3], .reconnect = true};
    struct kq_client *c;
    char err[256];
    int rc = kq_client_open(&o, &c, err, sizeof err);
    if (rc) {
        fprintf(stderr, "connect: %s (%s)\n", err, strerror(-rc));
        return 1;
    }
    int failed = 0;
    for (int i = 0; i < atoi(argv[6]); i++) {
        char body[64];
        int n = snprintf(body, sizeof body, "message %d", i);
        /* only topic, type and body: a plain committed message (two_phase is false) */
        struct kq_message m = {.topic = argv[4],
                               .message_type = argv[5],
                               .body = body,
                               .body_len = (size_t)n,
                               .expired_time = -1,
                               .deliver_limit = -1};
        struct kq_publish_result r;
        rc = kq_publish(c, &m, &r);
        if (rc == 0 && r.status) {
            printf("stored %s\n", r.message_id);
        } else { /* rc < 0: no answer (see docs/CLIENT.md); status false: the broker's reason */
            fprintf(stderr, "not stored %s: %s\n", r.message_id, rc ? strerror(-rc) : r.feedback);
            failed++;
        }
    }
    kq_client_close(c);
    return failed ? 1 : 0;
}
