/* A two-phase message: stored but not delivered until we commit it; if we never answer,
 * the broker asks us (on_tx_check) whether to commit or roll back.
 *   cc two_phase.c $(pkg-config --cflags --libs kiteq-client) -o two_phase
 *   ./two_phase 127.0.0.1:13800 p-trade secret-p trade pay-succ */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <kiteq/kiteq_client.h>

/* The broker's check-back for a message we published with two_phase and did not finish
 * (say we crashed in between): look at the local transaction and answer. */
static int on_tx_check(void *ud, const struct kq_message *header_only)
{
    (void)ud;
    fprintf(stderr, "broker asks about %s: committing\n", header_only->message_id);
    return 1; /* 1 commit, 2 roll back, 0 not known yet (asked again later) */
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s BROKER GROUP SECRET TOPIC TYPE\n", argv[0]);
        return 2;
    }
    kq_client_log_to_stderr(KQ_CLIENT_LOG_WARN);
    struct kq_client_options o = {.broker = argv[1],
                                  .group_id = argv[2],
                                  .secret = argv[3],
                                  .reconnect = true,
                                  .on_tx_check = on_tx_check};
    struct kq_client *c;
    char err[256];
    if (kq_client_open(&o, &c, err, sizeof err)) {
        fprintf(stderr, "connect: %s\n", err);
        return 1;
    }
    const char *body = "order 42 paid";
    struct kq_message m = {.topic = argv[4],
                           .message_type = argv[5],
                           .body = body,
                           .body_len = strlen(body),
                           .expired_time = -1,
                           .deliver_limit = -1,
                           .two_phase = true};
    /* id and create time fixed here, so kq_tx_finish sends the header exactly as published */
    kq_generate_message_id(m.message_id);
    m.create_time = (int64_t)time(NULL);
    struct kq_publish_result r;
    int rc = kq_publish(c, &m, &r);
    if (rc || !r.status) {
        fprintf(stderr, "not stored: %s\n", rc ? "no answer" : r.feedback);
        kq_client_close(c);
        return 1;
    }
    bool local_tx_ok = true; /* ... run the local transaction here ... */
    rc = kq_tx_finish(c, &m, local_tx_ok ? 1 : 2, local_tx_ok ? "" : "local tx failed");
    printf("%s %s (%d)\n", m.message_id, local_tx_ok ? "committed" : "rolled back", rc);
    kq_client_close(c);
    return rc ? 1 : 0;
}
