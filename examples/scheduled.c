/* Publish a message the broker delivers later: it is stored (and acked) now, and delivered no
 * earlier than DELAY_MS from now, also across a broker restart. Consumers see the due time
 * (Unix ms) in the property x-kiteq-deliver-at.
 *   cc scheduled.c $(pkg-config --cflags --libs kiteq-client) -o scheduled
 *   ./scheduled 127.0.0.1:13800 p-trade secret-p trade pay-succ 60000 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kiteq/kiteq_client.h>

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: %s BROKER GROUP SECRET TOPIC TYPE DELAY_MS\n", argv[0]);
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
    static const char body[] = "scheduled reminder";
    struct kq_message m = {.topic = argv[4],
                           .message_type = argv[5],
                           .body = body,
                           .body_len = sizeof body - 1,
                           .expired_time = -1,
                           .deliver_limit = -1};
    struct kq_publish_result r;
    /* 0 .. 7 days; the message must not expire before it is due (default expiry: 7 days) */
    int rc = kq_publish_delayed(c, &m, atoll(argv[6]), &r);
    if (rc == 0 && r.status)
        printf("stored %s, due in %s ms\n", r.message_id, argv[6]);
    else /* -EINVAL: a delay out of range; status false: the broker's reason */
        fprintf(stderr, "not stored: %s\n", rc ? strerror(-rc) : r.feedback);
    kq_client_close(c);
    return rc == 0 && r.status ? 0 : 1;
}
