/* Consume from one broker: print each message, ack it (return true) or, for an empty body,
 * nack it (return false: the broker delivers it again later). Runs until Ctrl-C.
 *   cc consume.c $(pkg-config --cflags --libs kiteq-client) -o consume
 *   ./consume 127.0.0.1:13800 s-trade-a secret-a */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <kiteq/kiteq_client.h>

static volatile sig_atomic_t stop;
static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

/* Runs on the client's reader thread; the pointers in m are valid during the call only. */
static bool on_message(void *ud, const struct kq_message *m)
{
    (void)ud;
    printf("%s %s/%s: %.*s\n", m->message_id, m->topic, m->message_type, (int)m->body_len,
           (const char *)m->body);
    fflush(stdout);
    return m->body_len > 0;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s BROKER GROUP SECRET\n", argv[0]);
        return 2;
    }
    kq_client_log_to_stderr(KQ_CLIENT_LOG_WARN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    struct kq_client_options o = {.broker = argv[1],
                                  .group_id = argv[2],
                                  .secret = argv[3],
                                  .reconnect = true,
                                  .on_message = on_message};
    struct kq_client *c;
    char err[256];
    if (kq_client_open(&o, &c, err, sizeof err)) {
        fprintf(stderr, "connect: %s\n", err);
        return 1;
    }
    while (!stop)
        pause();
    kq_client_close(c); /* waits for the callback in progress and its ack */
    return 0;
}
