/* Integration: reliable delivery on the file store. Restart keeps pending messages and
 * their delivery state; retries, limits and expiry end in the dead-letter store;
 * persistent vs non-persistent groups; fly; two-phase commit, rollback and unanswered
 * checks; a consumer that never acks; deliveryFirst. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "support/broker_proc.h"

#define EXTRA "deliverySeconds = 1, txCheckSeconds = 1, txMaxChecks = 2,"

static struct broker_proc bp;

static int setup(void **state)
{
    (void)state;
    char cfg[4096];
    broker_default_config(cfg, sizeof cfg, "file://./data?fsync=group", EXTRA);
    return broker_start(&bp, cfg, NULL);
}

static int teardown(void **state)
{
    (void)state;
    return broker_stop(&bp) == 0 ? 0 : -1;
}

static int connect_as(const char *group) { return raw_connect_as(bp.port, group, TEST_SECRET); }

static void restart_broker(struct broker_proc *b, const char *const *extra)
{
    assert_int_equal(broker_stop(b), 0);
    assert_int_equal(broker_restart(b, extra), 0);
}

static void restart(void) { restart_broker(&bp, NULL); }

/* The broker's first transaction check on fd (within 5 s); *f keeps its opaque. */
static Protocol__TxACKPacket *read_tx_check(int fd, struct kq_frame *f)
{
    uint8_t *buf;
    assert_int_equal(raw_read_cmd(fd, KQ_CMD_TX_ACK, 5000, f, &buf), 1);
    Protocol__TxACKPacket *t =
        (Protocol__TxACKPacket *)kq_codec_unpack(f->cmd, f->body, (size_t)f->body_len);
    free(buf);
    assert_non_null(t);
    return t;
}

static void test_restart_keeps_pending(void **state)
{
    (void)state;
    int prod = connect_as(TEST_PRODUCER);
    char ids[20][33];
    struct raw_msg m = {.topic = "trade", .type = "pay-succ", .commit = true};
    for (int i = 0; i < 20; i++)
        assert_int_equal(raw_publish(prod, (uint32_t)i + 1, &m, ids[i], NULL, 0), 1);
    close(prod);
    restart();
    assert_true(broker_wait_log(&bp, "recovered pending=20", 1));
    int a = connect_as(TEST_CONSUMER), b = connect_as(TEST_CONSUMER_B);
    raw_drain_expect(a, ids, 20, 5000);
    raw_drain_expect(b, ids, 20, 5000);
    /* all acked: after another restart nothing is pending */
    close(a);
    close(b);
    restart();
    assert_true(broker_wait_log(&bp, "recovered pending=0", 1));
}

static void test_attempts_survive_restart_then_dead_letter(void **state)
{
    (void)state;
    int prod = connect_as(TEST_PRODUCER);
    int a = connect_as(TEST_CONSUMER);
    char id[33], got[33];
    uint32_t op;
    /* regx binding: only group a; deliverLimit 4 */
    struct raw_msg m = {.topic = "trade", .type = "refund-limit", .commit = true, .limit = 4};
    assert_int_equal(raw_publish(prod, 1, &m, id, NULL, 0), 1);
    for (int i = 0; i < 2; i++) { /* attempts 1 and 2: nacked */
        assert_int_equal(raw_recv_delivery(a, 5000, got, &op, NULL, 0), 1);
        assert_string_equal(got, id);
        raw_deliver_ack(a, op, got, false);
    }
    /* attempt 3 follows at once; the consumer goes away without answering it */
    assert_int_equal(raw_recv_delivery(a, 5000, got, &op, NULL, 0), 1);
    close(a);
    close(prod);
    char needle[96];
    snprintf(needle, sizeof needle, "copy failed id=%s", id);
    restart(); /* attempts = 3 are on disk, next attempt 5 s after the third */
    a = connect_as(TEST_CONSUMER);
    assert_int_equal(raw_recv_delivery(a, 9000, got, &op, NULL, 0), 1);
    assert_string_equal(got, id);
    raw_deliver_ack(a, op, got, false); /* fourth failure: the limit */
    snprintf(needle, sizeof needle, "dead letter id=%s topic=trade type=refund-limit attempts=4",
             id);
    assert_true(broker_wait_log(&bp, needle, 5000));
    assert_int_equal(raw_recv_delivery(a, 1500, got, &op, NULL, 0), 0);
    close(a);
}

static void test_expiry_dead_letters(void **state)
{
    (void)state;
    int prod = connect_as(TEST_PRODUCER);
    char id[33];
    struct raw_msg m = {
        .topic = "trade", .type = "refund-expiring", .commit = true, .expired = time(NULL) + 2};
    assert_int_equal(raw_publish(prod, 1, &m, id, NULL, 0), 1);
    char needle[128];
    snprintf(needle, sizeof needle,
             "dead letter id=%s topic=trade type=refund-expiring attempts=0 reason=\"expired\"",
             id);
    assert_true(broker_wait_log(&bp, needle, 8000));
    close(prod);
}

static void test_consumer_never_acks(void **state)
{
    (void)state;
    int prod = connect_as(TEST_PRODUCER);
    int a = connect_as(TEST_CONSUMER);
    char id[33], got[33];
    uint32_t op;
    struct raw_msg m = {.topic = "trade", .type = "refund-silent", .commit = true, .limit = 2};
    assert_int_equal(raw_publish(prod, 1, &m, id, NULL, 0), 1);
    for (int i = 0; i < 2; i++) { /* delivered, never acked: timeout (1 s), again */
        assert_int_equal(raw_recv_delivery(a, 5000, got, &op, NULL, 0), 1);
        assert_string_equal(got, id);
    }
    char needle[96];
    snprintf(needle, sizeof needle, "dead letter id=%s", id);
    assert_true(broker_wait_log(&bp, needle, 5000));
    close(a);
    close(prod);
}

static void test_non_persistent_group_skips_offline(void **state)
{
    (void)state;
    int prod = connect_as(TEST_PRODUCER);
    char id[33], got[33];
    uint32_t op;
    /* "volatile" binds s-trade-b non-persistent; nobody of b online */
    struct raw_msg m = {.topic = "trade", .type = "volatile", .commit = true};
    assert_int_equal(raw_publish(prod, 1, &m, id, NULL, 0), 1);
    int b = connect_as(TEST_CONSUMER_B);
    assert_int_equal(raw_recv_delivery(b, 2500, got, &op, NULL, 0), 0);
    /* online: it is delivered */
    assert_int_equal(raw_publish(prod, 2, &m, id, NULL, 0), 1);
    raw_take_delivery(b, id, 3000);
    close(b);
    close(prod);
}

static void test_fly_never_stored(void **state)
{
    (void)state;
    int prod = connect_as(TEST_PRODUCER);
    int a = connect_as(TEST_CONSUMER);
    char id[33], got[33];
    uint32_t op;
    struct raw_msg m = {.topic = "trade", .type = "refund-fly", .commit = true, .fly = true};
    assert_int_equal(raw_publish(prod, 1, &m, id, NULL, 0), 1);
    assert_int_equal(raw_recv_delivery(a, 3000, got, &op, NULL, 0), 1);
    raw_deliver_ack(a, op, got, false); /* still retried while the broker runs */
    assert_int_equal(raw_recv_delivery(a, 3000, got, &op, NULL, 0), 1);
    assert_string_equal(got, id);
    close(a); /* consumer gone; the fly message waits in memory only */
    close(prod);
    restart();
    assert_true(broker_wait_log(&bp, "recovered pending=0", 1));
    a = connect_as(TEST_CONSUMER);
    assert_int_equal(raw_recv_delivery(a, 2000, got, &op, NULL, 0), 0);
    close(a);
}

static void test_two_phase_commit_and_rollback(void **state)
{
    (void)state;
    int prod = connect_as(TEST_PRODUCER);
    int a = connect_as(TEST_CONSUMER);
    char id[33], id2[33], got[33], body[64];
    uint32_t op;
    struct raw_msg m = {.topic = "trade", .type = "refund-tx", .commit = false, .body = "tx"};
    assert_int_equal(raw_publish(prod, 1, &m, id, NULL, 0), 1);
    assert_int_equal(raw_recv_delivery(a, 700, got, &op, NULL, 0), 0); /* not delivered yet */
    raw_send_tx(prod, 0, id, "refund-tx", KQ_TX_COMMIT); /* opaque 0, as the Go client */
    assert_int_equal(raw_recv_delivery(a, 3000, got, &op, body, sizeof body), 1);
    assert_string_equal(got, id);
    assert_string_equal(body, "tx");
    raw_deliver_ack(a, op, got, true);
    assert_int_equal(raw_sync(a), 0);
    raw_send_tx(prod, 0, id, "refund-tx", KQ_TX_COMMIT); /* duplicate answer: harmless */
    assert_int_equal(raw_recv_delivery(a, 1000, got, &op, NULL, 0), 0);
    /* rollback: never delivered */
    assert_int_equal(raw_publish(prod, 2, &m, id2, NULL, 0), 1);
    raw_send_tx(prod, 0, id2, "refund-tx", KQ_TX_ROLLBACK);
    raw_send_tx(prod, 0, id2, "refund-tx", KQ_TX_COMMIT); /* late commit after rollback: ignored */
    assert_int_equal(raw_recv_delivery(a, 2500, got, &op, NULL, 0), 0);
    close(a);
    close(prod);
}

static void test_two_phase_checks(void **state)
{
    (void)state;
    int prod = connect_as(TEST_PRODUCER);
    int a = connect_as(TEST_CONSUMER);
    char id[33];
    struct raw_msg m = {.topic = "trade", .type = "refund-check", .commit = false};
    /* answered check: the broker asks after txCheckSeconds; we commit in the reply */
    assert_int_equal(raw_publish(prod, 1, &m, id, NULL, 0), 1);
    struct kq_frame f;
    Protocol__TxACKPacket *t = read_tx_check(prod, &f);
    assert_int_equal(t->status, KQ_TX_UNKNOWN);
    assert_string_equal(t->feedback, "Server Check");
    assert_string_equal(t->header->messageid, id);
    assert_true(f.opaque != 0);
    raw_send_tx(prod, f.opaque, id, "refund-check", KQ_TX_COMMIT);
    kq_codec_free(&t->base);
    raw_take_delivery(a, id, 3000);
    /* unanswered: txMaxChecks = 2 checks, then dead-lettered with the reason */
    assert_int_equal(raw_publish(prod, 2, &m, id, NULL, 0), 1);
    for (int i = 0; i < 2; i++) {
        uint8_t *buf;
        assert_int_equal(raw_read_cmd(prod, KQ_CMD_TX_ACK, 6000, &f, &buf), 1);
        free(buf);
    }
    char needle[128];
    snprintf(needle, sizeof needle, "dead letter id=%s", id);
    assert_true(broker_wait_log(&bp, needle, 8000));
    assert_true(broker_wait_log(&bp, "transaction unresolved", 1));
    close(a);
    close(prod);
}

/* A two-phase message belongs to the group of the connection that published it: a header
 * naming another group is refused, an empty one is the connection's group (its checks come
 * back to the producer), and a commit from another group's connection changes nothing. */
static void test_two_phase_belongs_to_its_publisher(void **state)
{
    (void)state;
    int prod = connect_as(TEST_PRODUCER);
    int a = connect_as(TEST_CONSUMER);
    char id[33], got[33], fb[192];
    uint32_t op;
    struct raw_msg m = {
        .topic = "trade", .type = "refund-owner", .group = TEST_CONSUMER, .commit = false};
    assert_int_equal(raw_publish(prod, 1, &m, id, fb, sizeof fb), 0);
    assert_string_equal(fb, "Invalid GroupId: the header's groupId \"s-trade-a\" is not the "
                            "publishing connection's group \"p-trade\"");
    m.group = "";
    assert_int_equal(raw_publish(prod, 2, &m, id, NULL, 0), 1);
    raw_send_tx(a, 0, id, "refund-owner", KQ_TX_COMMIT); /* s-trade-a is not the publisher */
    assert_int_equal(raw_sync(a), 0);
    /* the check (after txCheckSeconds) goes to the producer's group */
    struct kq_frame f;
    Protocol__TxACKPacket *t = read_tx_check(prod, &f);
    assert_string_equal(t->header->messageid, id);
    assert_string_equal(t->header->groupid, TEST_PRODUCER);
    kq_codec_free(&t->base);
    assert_int_equal(raw_recv_delivery(a, 100, got, &op, NULL, 0), 0); /* still uncommitted */
    raw_send_tx(prod, f.opaque, id, "refund-owner", KQ_TX_COMMIT);
    raw_take_delivery(a, id, 3000);
    assert_true(broker_wait_log(&bp, "tx: answer ignored: id=", 1));
    close(a);
    close(prod);
}

static void test_delivery_first(void **state)
{
    (void)state;
    struct broker_proc df;
    char cfg[4096];
    broker_default_config(cfg, sizeof cfg, "file://./data", EXTRA " deliveryFirst = true,");
    assert_int_equal(broker_start(&df, cfg, NULL), 0);
    int prod = raw_connect_as(df.port, TEST_PRODUCER, TEST_SECRET);
    int a = raw_connect_as(df.port, TEST_CONSUMER, TEST_SECRET);
    char id[33], fb[96];
    /* consumer online and acking: delivered, acked true, never stored */
    struct raw_msg m = {.topic = "trade", .type = "refund-df", .commit = true};
    assert_int_equal(raw_publish_nowait(prod, 1, &m, id), 0);
    raw_take_delivery(a, id, 3000);
    /* the producer's ack comes after the consumer's: status true (the original said false) */
    assert_int_equal(raw_wait_store_ack(prod, 1, fb, sizeof fb), 1);
    assert_memory_equal(fb, "Store Result true", 17);
    close(a);
    /* consumer offline: stored, then acked true, and delivered after a restart */
    assert_int_equal(raw_publish(prod, 2, &m, id, fb, sizeof fb), 1);
    assert_memory_equal(fb, "Store Result true", 17);
    close(prod);
    restart_broker(&df, NULL);
    assert_true(broker_wait_log(&df, "recovered pending=1", 1));
    a = raw_connect_as(df.port, TEST_CONSUMER, TEST_SECRET);
    raw_take_delivery(a, id, 5000);
    close(a);
    assert_int_equal(broker_stop(&df), 0);
}

/* A restarted backlog larger than the groups' queues (deliverWindow 2: at most 8 cold
 * messages are loaded to wait) is parked by id and still delivered, in full. */
static void test_cold_backlog_parked_and_delivered(void **state)
{
    (void)state;
    struct broker_proc cb;
    char cfg[4096];
    broker_default_config(cfg, sizeof cfg, "file://./data", EXTRA " deliverWindow = 2,");
    assert_int_equal(broker_start(&cb, cfg, NULL), 0);
    int prod = raw_connect_as(cb.port, TEST_PRODUCER, TEST_SECRET);
    char ids[40][33];
    struct raw_msg m = {.topic = "trade", .type = "refund-cold", .commit = true};
    for (int i = 0; i < 40; i++)
        assert_int_equal(raw_publish(prod, (uint32_t)i + 1, &m, ids[i], NULL, 0), 1);
    close(prod);
    restart_broker(&cb, NULL);
    assert_true(broker_wait_log(&cb, "recovered pending=40", 1));
    int a = raw_connect_as(cb.port, TEST_CONSUMER, TEST_SECRET);
    raw_drain_expect(a, ids, 40, 5000);
    close(a);
    assert_int_equal(broker_stop(&cb), 0);
}

/* Restarted messages are cold (header and body in the store). With nobody of their groups
 * online an attempt sends nothing, so it must not read them back: every pending message
 * would otherwise be loaded from the store at every recheck. They are loaded once a
 * consumer comes, and delivered. */
static void test_cold_not_loaded_while_nobody_online(void **state)
{
    (void)state;
    struct broker_proc cb;
    char cfg[4096];
    broker_default_config(cfg, sizeof cfg, "file://./data", EXTRA);
    const char *debug[] = {"-logLevel=debug", NULL};
    assert_int_equal(broker_start(&cb, cfg, debug), 0);
    int prod = raw_connect_as(cb.port, TEST_PRODUCER, TEST_SECRET);
    char ids[3][33];
    struct raw_msg m = {.topic = "trade", .type = "refund-offline", .commit = true};
    for (int i = 0; i < 3; i++)
        assert_int_equal(raw_publish(prod, (uint32_t)i + 1, &m, ids[i], NULL, 0), 1);
    close(prod);
    restart_broker(&cb, debug);
    assert_true(broker_wait_log(&cb, "recovered pending=3", 1));
    for (int i = 0; i < 3; i++) { /* each one's first attempt after the restart ... */
        char needle[128];
        snprintf(needle, sizeof needle, "nobody online id=%s cold=1", ids[i]);
        assert_true(broker_wait_log(&cb, needle, 5000));
    }
    assert_false(broker_wait_log(&cb, "loading id=", 0)); /* ... read nothing back */
    int a = raw_connect_as(cb.port, TEST_CONSUMER, TEST_SECRET);
    raw_drain_expect(a, ids, 3, 5000);
    assert_true(broker_wait_log(&cb, "loading id=", 1));
    close(a);
    assert_int_equal(broker_stop(&cb), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_restart_keeps_pending),
        cmocka_unit_test(test_attempts_survive_restart_then_dead_letter),
        cmocka_unit_test(test_expiry_dead_letters),
        cmocka_unit_test(test_consumer_never_acks),
        cmocka_unit_test(test_non_persistent_group_skips_offline),
        cmocka_unit_test(test_fly_never_stored),
        cmocka_unit_test(test_two_phase_commit_and_rollback),
        cmocka_unit_test(test_two_phase_checks),
        cmocka_unit_test(test_two_phase_belongs_to_its_publisher),
        cmocka_unit_test(test_delivery_first),
        cmocka_unit_test(test_cold_backlog_parked_and_delivered),
        cmocka_unit_test(test_cold_not_loaded_while_nobody_online),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
