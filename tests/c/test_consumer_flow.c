/* Integration: delivery adapts to consumers that behave unlike ours.
 *  - small socket buffers set after connect (the original Go client: 16 KiB), acking each
 *    message with its own write: must keep pace, not fall to a few dozen messages a second;
 *  - a consumer that is slow per message: its window shrinks instead of its deliveries
 *    timing out and being sent again;
 *  - a consumer that warms up: its first message comes when the warm-up allows, not after
 *    recoverSeconds;
 *  - a client that sends and never reads its answers: the broker stops reading from it
 *    (its memory stays bounded) and closes it as stuck;
 *  - what original clients see: a committed two-phase message arrives with commit=true,
 *    a second ConnMeta is answered "Auth Succ". */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/clock.h"
#include "support/broker_proc.h"
#include "support/idset.h"

static struct broker_proc bp;

static uint64_t now_ms(void) { return kq_mono_us() / 1000; }
static double metric(int admin, const char *sample);

static void start_with(const char *extra)
{
    char cfg[4096];
    broker_default_config(cfg, sizeof cfg, "memory://", extra);
    assert_int_equal(broker_start(&bp, cfg, NULL), 0);
}

static int teardown(void **state)
{
    (void)state;
    return broker_stop(&bp) == 0 ? 0 : -1;
}

/* Connect like the original client: buffers shrunk right after connect, then ConnMeta. */
static int connect_small_buffers(const char *group, int bytes)
{
    int fd = raw_connect(bp.port);
    assert_true(fd >= 0);
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes), 0);
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes), 0);
    assert_int_equal(raw_handshake(fd, group, TEST_SECRET), 1);
    return fd;
}

struct producer {
    int n;
    const char *type;
    size_t body_len;
    bool wait_each; /* one message at a time, waiting for its store ack (sync send) */
    int acked;
};

/* Publishes n messages on one connection, pipelined or one by one. */
static void *produce(void *arg)
{
    struct producer *p = arg;
    int fd = raw_connect(bp.port);
    if (fd < 0 || raw_handshake(fd, TEST_PRODUCER, TEST_SECRET) != 1)
        return NULL;
    char *body = malloc(p->body_len + 1);
    memset(body, 'x', p->body_len);
    body[p->body_len] = 0;
    struct raw_msg m = {.topic = "trade", .type = p->type, .body = body, .commit = true};
    if (p->wait_each) {
        for (int i = 0; i < p->n; i++)
            if (raw_publish(fd, (uint32_t)(i + 1), &m, NULL, NULL, 0) == 1)
                p->acked++;
    } else {
        for (int i = 0; i < p->n; i++)
            if (raw_publish_nowait(fd, (uint32_t)(i + 1), &m, NULL) != 0)
                break;
        for (int i = 0; i < p->n; i++)
            if (raw_wait_store_ack(fd, (uint32_t)(i + 1), NULL, 0) == 1)
                p->acked++;
    }
    free(body);
    close(fd);
    return NULL;
}

/* Receive and ack (each on its own write) until `want` distinct ids arrived or the deadline
 * passes; every delivery is counted in seen (duplicates too). work_ms: time per message. */
static size_t consume(int fd, size_t want, int work_ms, uint64_t deadline, struct idset *seen)
{
    while (idset_size(seen) < want && now_ms() < deadline) {
        char id[33];
        uint32_t op;
        int rc = raw_recv_delivery(fd, (int)(deadline - now_ms()), id, &op, NULL, 0);
        if (rc <= 0)
            break;
        if (work_ms) {
            struct timespec ts = {0, work_ms * 1000000L};
            nanosleep(&ts, NULL);
        }
        idset_add(seen, id);
        assert_int_equal(raw_deliver_ack(fd, op, id, true), 0);
    }
    return idset_size(seen);
}

static bool count_repeats(const char *id, uint32_t n, void *ud)
{
    (void)id;
    *(uint32_t *)ud += n - 1;
    return true;
}

/* 4 producers sending 2 KiB messages one at a time (as the original's benchmark does) to a
 * consumer with 16 KiB buffers: before the broker paced its writes this fell to ~65
 * messages a second within a second (one zero-window probe every ~200 ms). */
static void test_small_buffer_consumer_keeps_pace(void **state)
{
    (void)state;
    start_with("deliverySeconds = 5,");
    int fd = connect_small_buffers(TEST_CONSUMER, 16384);
    struct producer p[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        p[i] = (struct producer){
            .n = 1500, .type = "refund-flow", .body_len = 2048, .wait_each = true};
        assert_int_equal(pthread_create(&t[i], NULL, produce, &p[i]), 0);
    }
    struct idset *seen = idset_new();
    uint64_t t0 = now_ms();
    size_t got = consume(fd, 6000, 0, t0 + 30000, seen);
    uint64_t took = now_ms() - t0;
    int acked = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        acked += p[i].acked;
    }
    print_message("small-buffer consumer: %zu messages in %llu ms\n", got,
                  (unsigned long long)took);
    assert_int_equal(acked, 6000);
    assert_int_equal(got, 6000);
    assert_true(took < 20000); /* ~1 s here; the stalled path needs ~90 s */
    uint32_t repeats = 0;
    idset_foreach(seen, count_repeats, &repeats);
    assert_int_equal(repeats, 0);
    idset_free(seen);
    close(fd);
}

/* deliverySeconds = 1 and a consumer taking 10 ms a message: with a fixed window of 1 000
 * the 300 messages would sit in its socket for 3 s and time out; the adaptive window keeps
 * only what it can answer within the latency target in flight. */
static void test_slow_consumer_window_shrinks(void **state)
{
    (void)state;
    start_with("deliverySeconds = 1,");
    int fd = raw_connect(bp.port);
    assert_true(fd >= 0);
    assert_int_equal(raw_handshake(fd, TEST_CONSUMER, TEST_SECRET), 1);
    struct producer p = {.n = 300, .type = "refund-flow", .body_len = 100};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, produce, &p), 0);
    struct idset *seen = idset_new();
    size_t got = consume(fd, (size_t)p.n, 10, now_ms() + 60000, seen);
    pthread_join(t, NULL);
    assert_int_equal(got, (size_t)p.n);
    /* copies sent again after a timeout queue up behind the first ones: read on a while */
    consume(fd, (size_t)p.n + 1, 0, now_ms() + 2500, seen);
    uint32_t repeats = 0;
    idset_foreach(seen, count_repeats, &repeats);
    print_message("slow consumer: %zu messages, %u delivered again\n", got, repeats);
    assert_int_equal(repeats, 0);
    assert_false(broker_wait_log(&bp, "delivery timeouts", 0));
    idset_free(seen);
    close(fd);
}

/* Timeouts are said, not silent: a consumer that never acks produces a log line that names
 * the group and counts them. */
static void test_timeouts_are_logged(void **state)
{
    (void)state;
    start_with("deliverySeconds = 1, admin = \"127.0.0.1:0\",");
    int fd = raw_connect(bp.port);
    assert_int_equal(raw_handshake(fd, TEST_CONSUMER, TEST_SECRET), 1);
    struct producer p = {.n = 5, .type = "refund-flow", .body_len = 10};
    produce(&p);
    assert_int_equal(p.acked, 5);
    assert_true(broker_wait_log(&bp, "delivery timeouts group=" TEST_CONSUMER " count=", 5000));
    /* and counted per (group, topic) for an alert */
    double n = metric(broker_admin_port(&bp),
                      "kiteq_delivery_timeouts_total{group=\"" TEST_CONSUMER "\",topic=\"trade\"}");
    print_message("kiteq_delivery_timeouts_total = %.0f\n", n);
    assert_true(n >= 5);
    /* an ack that comes after its copy timed out is counted, not taken */
    int admin = broker_admin_port(&bp);
    assert_true(metric(admin, "kiteq_acks_unmatched_total") == 0);
    char id[33];
    uint32_t op;
    assert_int_equal(raw_recv_delivery(fd, 2000, id, &op, NULL, 0), 1); /* a timed-out copy */
    assert_int_equal(raw_deliver_ack(fd, op, id, true), 0);
    uint64_t deadline = now_ms() + 5000;
    while (metric(admin, "kiteq_acks_unmatched_total") < 1 && now_ms() < deadline)
        usleep(20000);
    assert_true(metric(admin, "kiteq_acks_unmatched_total") == 1);
    close(fd);
}

/* ConnMeta with warmingupSec, then wait for the ack. */
static int connect_warming(const char *group, int32_t warmup_sec)
{
    int fd = raw_connect(bp.port);
    assert_true(fd >= 0);
    struct kq_buf b = {0};
    assert_int_equal(kq_codec_append_conn_meta(&b, 1, group, TEST_SECRET, warmup_sec), 0);
    assert_int_equal(raw_send_buf(fd, &b), 0);
    kq_buf_free(&b);
    struct kq_frame f;
    uint8_t *body;
    assert_int_equal(raw_read_cmd(fd, KQ_CMD_CONN_AUTH, 5000, &f, &body), 1);
    free(body);
    return fd;
}

/* A consumer with a 5 s warm-up gets a message published at once within about 5 s, although
 * recoverSeconds is 10 (the retry used to wait for it). */
static void test_warmup_retry_when_warm(void **state)
{
    (void)state;
    start_with("recoverSeconds = 10,");
    int c = connect_warming(TEST_CONSUMER, 5);
    int prod = raw_connect(bp.port);
    assert_int_equal(raw_handshake(prod, TEST_PRODUCER, TEST_SECRET), 1);
    uint64_t t0 = now_ms();
    struct raw_msg m = {.topic = "trade", .type = "refund-w", .commit = true};
    char id[33], got[33];
    assert_int_equal(raw_publish(prod, 1, &m, id, NULL, 0), 1);
    uint32_t op;
    assert_int_equal(raw_recv_delivery(c, 9000, got, &op, NULL, 0), 1);
    uint64_t took = now_ms() - t0;
    print_message("warming consumer: first message after %llu ms\n", (unsigned long long)took);
    assert_string_equal(got, id);
    assert_true(took <= 7000);
    raw_deliver_ack(c, op, got, true);
    close(prod);
    close(c);
}

/* A client that sends heartbeats as fast as it can and never reads the answers: 200 MB of
 * them used to become 200 MB of queued replies in the broker. Now the broker stops reading
 * from it past 1 MiB of queued output, so it reads nothing more and is closed after
 * heartbeatTimeout (as "stuck" while reading is paused, else as idle). */
static void test_client_that_never_reads(void **state)
{
    (void)state;
    start_with("heartbeatTimeoutSeconds = 3,");
    int fd = raw_connect(bp.port);
    assert_int_equal(raw_handshake(fd, TEST_PRODUCER, TEST_SECRET), 1);
    long rss0 = proc_rss_kb(bp.pid);
    struct kq_buf b = {0};
    for (int i = 0; i < 4096; i++)
        kq_codec_append_heartbeat(&b, (uint32_t)i + 10, i);
    struct timeval tv = {0, 200000}; /* a send that blocks means the broker stopped reading */
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    size_t sent = 0;
    for (int round = 0; round < 5000; round++) {
        ssize_t w = send(fd, b.data, b.len, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        sent += (size_t)w;
    }
    kq_buf_free(&b);
    long rss1 = proc_rss_kb(bp.pid);
    print_message("never-reading client: sent %zu bytes, broker RSS %ld -> %ld kB\n", sent, rss0,
                  rss1);
    assert_true(rss1 - rss0 < 32 * 1024);
    assert_true(broker_wait_log(&bp, "does not read its answers", 5000));
    assert_true(raw_wait_closed(fd, 10000));
    close(fd);
    /* and the broker still serves others */
    int other = raw_connect(bp.port);
    assert_int_equal(raw_handshake(other, TEST_PRODUCER, TEST_SECRET), 1);
    assert_int_equal(raw_sync(other), 0);
    close(other);
}

/* Decided in docs/ARCHITECTURE.md (spec notes): a committed two-phase message is delivered
 * with Header.commit = true, and a repeated ConnMeta gets the original's "Auth Succ". */
static void test_what_original_clients_see(void **state)
{
    (void)state;
    start_with("");
    int prod = raw_connect(bp.port);
    assert_int_equal(raw_handshake(prod, TEST_PRODUCER, TEST_SECRET), 1);
    int c = raw_connect(bp.port);
    assert_int_equal(raw_handshake(c, TEST_CONSUMER, TEST_SECRET), 1);
    /* the same ConnMeta again */
    struct kq_buf b = {0};
    kq_codec_append_conn_meta(&b, 9, TEST_CONSUMER, TEST_SECRET, 0);
    assert_int_equal(raw_send_buf(c, &b), 0);
    kq_buf_free(&b);
    struct kq_frame f;
    uint8_t *body;
    assert_int_equal(raw_read_cmd(c, KQ_CMD_CONN_AUTH, 3000, &f, &body), 1);
    ProtobufCMessage *pm = kq_codec_unpack(f.cmd, f.body, (size_t)f.body_len);
    assert_non_null(pm);
    assert_true(((Protocol__ConnAuthAck *)pm)->status);
    assert_string_equal(((Protocol__ConnAuthAck *)pm)->feedback, "Auth Succ");
    kq_codec_free(pm);
    free(body);
    /* two-phase, committed */
    char id[33];
    struct raw_msg m = {.topic = "trade", .type = "refund-2pc", .commit = false, .body = "tx"};
    assert_int_equal(raw_publish(prod, 1, &m, id, NULL, 0), 1);
    assert_int_equal(raw_send_tx(prod, 0, id, "refund-2pc", KQ_TX_COMMIT), 0);
    assert_int_equal(raw_read_cmd(c, KQ_CMD_STRING_MESSAGE, 5000, &f, &body), 1);
    pm = kq_codec_unpack(f.cmd, f.body, (size_t)f.body_len);
    struct kq_message_view v;
    assert_int_equal(kq_message_view(f.cmd, pm, &v), 0);
    assert_string_equal(v.header->messageid, id);
    assert_true(v.header->commit);
    assert_int_equal(raw_deliver_ack(c, f.opaque, id, true), 0);
    kq_codec_free(pm);
    free(body);
    close(c);
    close(prod);
}

/* A topic with 300 bound groups: every group gets the message (delivery used to cut the
 * routes at 64, and the message was removed once those 64 acked). */
static void test_fanout_to_300_groups(void **state)
{
    (void)state;
    enum { N = 300 };
    size_t cap = 64 * 1024, len = 0;
    char *cfg = malloc(cap);
    len +=
        (size_t)snprintf(cfg + len, cap - len,
                         "return { default = \"t\", clusters = { t = {\n"
                         "  bind = \"127.0.0.1:0\", topics = { \"trade\" }, db = \"memory://\",\n"
                         "  groups = { [\"p-trade\"] = \"secret\",\n");
    for (int i = 0; i < N; i++)
        len += (size_t)snprintf(cfg + len, cap - len, "    [\"g%03d\"] = \"secret\",\n", i);
    len += (size_t)snprintf(cfg + len, cap - len, "} } },\n  bindings = { { groupIds = {");
    for (int i = 0; i < N; i++)
        len += (size_t)snprintf(cfg + len, cap - len, " \"g%03d\",", i);
    snprintf(cfg + len, cap - len,
             " }, topic = \"trade\", messageType = \"*\", "
             "bindType = \"fanout\", persistent = true } },\n}\n");
    assert_int_equal(broker_start(&bp, cfg, NULL), 0);
    free(cfg);
    int fds[N];
    for (int i = 0; i < N; i++) {
        char g[8];
        snprintf(g, sizeof g, "g%03d", i);
        fds[i] = raw_connect(bp.port);
        assert_true(fds[i] >= 0);
        assert_int_equal(raw_handshake(fds[i], g, TEST_SECRET), 1);
    }
    int prod = raw_connect(bp.port);
    assert_int_equal(raw_handshake(prod, TEST_PRODUCER, TEST_SECRET), 1);
    char id[33], got[33];
    struct raw_msg m = {.topic = "trade", .type = "any", .body = "to all", .commit = true};
    assert_int_equal(raw_publish(prod, 1, &m, id, NULL, 0), 1);
    int received = 0;
    for (int i = 0; i < N; i++) {
        uint32_t op;
        if (raw_recv_delivery(fds[i], 5000, got, &op, NULL, 0) == 1 && strcmp(got, id) == 0) {
            received++;
            raw_deliver_ack(fds[i], op, got, true);
        }
    }
    print_message("fan-out: %d of %d groups received the message\n", received, N);
    assert_int_equal(received, N);
    for (int i = 0; i < N; i++)
        close(fds[i]);
    close(prod);
}

/* A sample's value from /metrics, or -1 (no answer or no such sample). */
static double metric(int admin, const char *sample)
{
    static char text[1 << 20];
    if (admin_get(admin, "/metrics", text, sizeof text) != 200)
        return -1;
    double v = prom_sample(text, sample);
    return v == v ? v : -1; /* NAN: absent */
}

/* 3 000 distinct messageTypes, all delivered: the names they brought are gone afterwards
 * (they used to be interned for good: ~3 KB each, 300 MB per 100 000 types). */
static void test_names_released_after_delivery(void **state)
{
    (void)state;
    start_with("admin = \"127.0.0.1:0\",");
    int admin = broker_admin_port(&bp);
    assert_true(admin > 0);
    int c = raw_connect(bp.port);
    assert_int_equal(raw_handshake(c, TEST_CONSUMER, TEST_SECRET), 1);
    int prod = raw_connect(bp.port);
    assert_int_equal(raw_handshake(prod, TEST_PRODUCER, TEST_SECRET), 1);
    double before = metric(admin, "kiteq_interned_names");
    enum { N = 3000 };
    char type[32];
    for (int i = 0; i < N; i++) {
        snprintf(type, sizeof type, "refund-%d", i);
        struct raw_msg m = {.topic = "trade", .type = type, .body = "x", .commit = true};
        assert_int_equal(raw_publish_nowait(prod, (uint32_t)i + 1, &m, NULL), 0);
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(raw_wait_store_ack(prod, (uint32_t)i + 1, NULL, 0), 1);
    double during = metric(admin, "kiteq_interned_names"); /* all pending, none acked */
    struct idset *seen = idset_new();
    assert_int_equal(consume(c, N, 0, now_ms() + 30000, seen), N);
    idset_free(seen);
    assert_int_equal(raw_sync(c), 0);
    double after = -1;
    for (uint64_t deadline = now_ms() + 5000; now_ms() < deadline;) {
        after = metric(admin, "kiteq_interned_names");
        if (after >= 0 && after <= before + 2)
            break;
        struct timespec ts = {0, 50000000};
        nanosleep(&ts, NULL);
    }
    print_message("interned names: %.0f before, %.0f pending, %.0f after %d distinct types\n",
                  before, during, after, N);
    assert_true(before >= 0);
    assert_true(during >= N);
    assert_true(after <= before + 2);
    assert_int_equal((int)metric(admin, "kiteq_store_errors_total"), 0);
    close(prod);
    close(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_small_buffer_consumer_keeps_pace, teardown),
        cmocka_unit_test_teardown(test_slow_consumer_window_shrinks, teardown),
        cmocka_unit_test_teardown(test_timeouts_are_logged, teardown),
        cmocka_unit_test_teardown(test_warmup_retry_when_warm, teardown),
        cmocka_unit_test_teardown(test_client_that_never_reads, teardown),
        cmocka_unit_test_teardown(test_what_original_clients_see, teardown),
        cmocka_unit_test_teardown(test_fanout_to_300_groups, teardown),
        cmocka_unit_test_teardown(test_names_released_after_delivery, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
