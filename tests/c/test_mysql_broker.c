/* The real broker on the MySQL store against a real MariaDB (scripts/services-up.sh, or
 * MYSQL_HOST/PORT/USER/PASSWORD from the environment), schema made by `kiteq-cli mysql init`:
 * publish/deliver/ack, retries then the dead-letter table (and the admin /dlq), two-phase
 * commit and rollback, recovery after a stop and after kill -9, MariaDB restarted under
 * load (nothing acked with status true is lost), and two brokers sharing the database and a
 * ZooKeeper: one is killed with kill -9 under load and the survivor takes over its
 * messages (takeoverSeconds); MariaDB stopped or frozen while the broker runs: the admin
 * and producers are told why, and all is well again once it is back. MariaDB is always
 * restarted / thawed after a test that stopped it, also when the test fails. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <mysql.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "client/kiteq_client.h"
#include "core/clock.h"
#include "store/mysql/mysql_store.h"
#include "support/assert_text.h"
#include "support/broker_proc.h"
#include "support/client_util.h"
#include "support/metrics_doc.h"
#include "support/idset.h"
#include "support/mariadb_service.h"
#include "support/test_files.h"
#include "support/zk_service.h"

#define EXTRA "deliverySeconds = 1, txCheckSeconds = 1, txMaxChecks = 2, admin = \"127.0.0.1:0\","

static struct {
    struct mariadb_service my; /* base: "" = MYSQL_HOST given */
    bool stopped;              /* we sent it SIGSTOP */
    bool down;                 /* we stopped it (services-down.sh) */
    char db[32];
    MYSQL *c; /* the test's own connection */
    struct broker_proc bp[2];
    bool up[2];
} E;

static uint64_t now_ms(void) { return kq_mono_us() / 1000; }

static MYSQL *connect_direct(void) { return mariadb_service_connect(&E.my, 3); }

/* First column of the first row as an integer; -1 on error. Reconnects once. */
__attribute__((format(printf, 1, 2))) static long long sql_int(const char *fmt, ...)
{
    char sql[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!E.c && !(E.c = connect_direct()))
            return -1;
        long long v;
        if (mariadb_query_int(E.c, sql, &v) == 0)
            return v;
        mysql_close(E.c);
        E.c = NULL;
    }
    return -1;
}

/* Rows of id in its shard table (dlq = the shard database's kite_msg_dlq). */
static long long rows_of(const char *id, bool dlq, const char *extra_where)
{
    int db, tb;
    kq_mysql_shard(id, 4, &db, &tb);
    char table[32];
    if (dlq)
        snprintf(table, sizeof table, "kite_msg_dlq");
    else
        snprintf(table, sizeof table, "kite_msg_%d", tb);
    return sql_int("SELECT COUNT(*) FROM `%s_%d`.`%s` WHERE message_id='%s'%s%s", E.db, db, table,
                   id, extra_where ? " AND " : "", extra_where ? extra_where : "");
}

static bool wait_rows(const char *id, bool dlq, const char *where, long long want, int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    do {
        if (rows_of(id, dlq, where) == want)
            return true;
        usleep(50000);
    } while (now_ms() < end);
    return false;
}

static int run(const char *cmd)
{
    int rc = system(cmd);
    if (rc != 0)
        print_message("'%s' exited with %d\n", cmd, rc);
    return rc;
}

static int group_setup(void **state)
{
    (void)state;
    if (mariadb_service_start(&E.my, "kqmb.") != 0)
        return -1;
    snprintf(E.db, sizeof E.db, "kqb%d", (int)getpid());
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "'%s/kiteq-cli' mysql init --host '%s:%u' --user '%s' --password '%s' --db %s "
             "--shardnum 4 >/dev/null",
             test_build_dir(), E.my.host, E.my.port, E.my.user, E.my.pass, E.db);
    if (run(cmd) != 0)
        return -1;
    E.c = connect_direct();
    return E.c ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    if (E.c) {
        mariadb_service_drop_shards(E.c, E.db, 4);
        mysql_close(E.c);
        E.c = NULL;
    }
    mariadb_service_stop(&E.my);
    return 0;
}

static int services(const char *verb);

static int teardown(void **state)
{
    (void)state;
    if (E.stopped && E.my.pid > 0) /* a failed test must not leave the server frozen */
        kill(E.my.pid, SIGCONT);
    E.stopped = false;
    if (E.down) /* nor stopped */
        services("up");
    for (int i = 0; i < 2; i++)
        if (E.up[i]) {
            broker_stop(&E.bp[i]);
            E.up[i] = false;
        }
    return 0;
}

static void db_uri(char *out, size_t len, const char *extra)
{
    snprintf(out, len, "mysql://%s:%u?db=%s&username=%s&password=%s&shardnum=4%s%s", E.my.host,
             E.my.port, E.db, E.my.user, E.my.pass, extra ? "&" : "", extra ? extra : "");
}

static void start_broker(int i, const char *cluster_extra)
{
    char db[512], cfg[4096];
    db_uri(db, sizeof db, "timeout=2");
    broker_default_config(cfg, sizeof cfg, db, cluster_extra ? cluster_extra : EXTRA);
    assert_int_equal(broker_start(&E.bp[i], cfg, NULL), 0);
    E.up[i] = true;
}

static int connect_as(int i, const char *group)
{
    int fd = raw_connect(E.bp[i].port);
    assert_true(fd >= 0);
    assert_int_equal(raw_handshake(fd, group, TEST_SECRET), 1);
    return fd;
}

/* --- admin HTTP ------------------------------------------------------------------------- */

static int admin_port(const struct broker_proc *bp)
{
    FILE *f = fopen(bp->log, "r");
    if (!f)
        return -1;
    char line[2048];
    int port = -1;
    while (fgets(line, sizeof line, f)) {
        char *p = strstr(line, "listening admin=");
        if (p && (p = strstr(p, " port=")))
            port = atoi(p + 6);
    }
    fclose(f);
    return port;
}

/* GET path; the response (headers and body) malloc'd, or NULL. */
static char *http_get(int port, const char *path)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    ssize_t r;
    while (buf && (r = read(fd, buf + len, cap - len - 1)) > 0) {
        len += (size_t)r;
        if (len + 1 == cap)
            buf = realloc(buf, cap *= 2);
    }
    close(fd);
    if (buf)
        buf[len] = 0;
    return buf;
}

/* --- 1. publish, deliver, ack ----------------------------------------------------------- */

static void test_publish_deliver_ack(void **state)
{
    (void)state;
    start_broker(0, NULL);
    int prod = connect_as(0, TEST_PRODUCER);
    int a = connect_as(0, TEST_CONSUMER), b = connect_as(0, TEST_CONSUMER_B);
    char ids[32][33];
    struct raw_msg m = {.topic = "trade", .type = "pay-succ", .commit = true, .body = "hello"};
    for (int i = 0; i < 32; i++) /* generated ids: every shard table gets some */
        assert_int_equal(raw_publish(prod, (uint32_t)i + 1, &m, ids[i], NULL, 0), 1);
    /* stored before the ack, under this broker's address */
    char where[96];
    snprintf(where, sizeof where, "kite_server='127.0.0.1:%d' AND `commit`=1", E.bp[0].port);
    for (int i = 0; i < 32; i++)
        assert_int_equal(rows_of(ids[i], false, where), 1);
    raw_drain_expect(a, ids, 32, 8000);
    raw_drain_expect(b, ids, 32, 8000);
    /* acked by both groups: the rows go (delete batches, flushSeconds = 1) */
    for (int i = 0; i < 32; i++)
        assert_true(wait_rows(ids[i], false, NULL, 0, 5000));
    char got[33];
    uint32_t op;
    assert_int_equal(raw_recv_delivery(a, 1500, got, &op, NULL, 0), 0);
    /* /metrics: the MySQL store's figures (kq_store_ops.stats), each family as documented */
    char *resp = http_get(admin_port(&E.bp[0]), "/metrics");
    assert_non_null(resp);
    const char *text = strstr(resp, "\r\n\r\n");
    assert_non_null(text);
    char problems[4096];
    int n = metrics_doc_check(text + 4, "mysql", "mysql", problems, sizeof problems);
    if (n)
        fail_msg("%d problems between /metrics and docs/ADMIN.md:\n%s", n, problems);
    assert_true(prom_sample(text + 4, "kiteq_store_saves_total") >= 32);
    assert_true(prom_sample(text + 4, "kiteq_store_save_failures_total") == 0);
    assert_true(prom_sample(text + 4, "kiteq_store_reconnects_total") >= 1);
    free(resp);
    close(a);
    close(b);
    close(prod);
}

/* --- 2. nack, retry, dead letter at the limit ------------------------------------------- */

static void test_retry_then_dead_letter(void **state)
{
    (void)state;
    start_broker(0, NULL);
    int prod = connect_as(0, TEST_PRODUCER), a = connect_as(0, TEST_CONSUMER);
    char id[33], got[33];
    uint32_t op;
    /* regx binding: only group a; deliverLimit 3 */
    struct raw_msg m = {
        .topic = "trade", .type = "refund-limit", .commit = true, .limit = 3, .body = "retry-me"};
    assert_int_equal(raw_publish(prod, 1, &m, id, NULL, 0), 1);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(raw_recv_delivery(a, 8000, got, &op, NULL, 0), 1);
        assert_string_equal(got, id);
        raw_deliver_ack(a, op, got, false);
        if (i == 1) /* the attempts are recorded (update batches) */
            assert_true(wait_rows(id, false, "deliver_count>=2", 1, 5000));
    }
    char needle[128];
    snprintf(needle, sizeof needle, "dead letter id=%s topic=trade type=refund-limit attempts=3",
             id);
    assert_true(broker_wait_log(&E.bp[0], needle, 5000));
    assert_true(wait_rows(id, true, NULL, 1, 5000));
    assert_true(wait_rows(id, false, NULL, 0, 5000));
    assert_int_equal(raw_recv_delivery(a, 1500, got, &op, NULL, 0), 0);
    /* the admin API lists it from the table */
    int ap = admin_port(&E.bp[0]);
    assert_true(ap > 0);
    char *resp = http_get(ap, "/dlq?topic=trade");
    assert_non_null(resp);
    if (!strstr(resp, id) || !strstr(resp, "deliver limit"))
        fail_msg("/dlq does not list %s: %.400s", id, resp);
    free(resp);
    close(a);
    close(prod);
}

/* --- 3. two-phase commit and rollback --------------------------------------------------- */

static void test_two_phase(void **state)
{
    (void)state;
    start_broker(0, "deliverySeconds = 1, txCheckSeconds = 30,");
    int prod = connect_as(0, TEST_PRODUCER), a = connect_as(0, TEST_CONSUMER);
    char id[33], id2[33], got[33], body[64];
    uint32_t op;
    struct raw_msg m = {.topic = "trade", .type = "refund-tx", .commit = false, .body = "tx"};
    assert_int_equal(raw_publish(prod, 1, &m, id, NULL, 0), 1);
    assert_int_equal(rows_of(id, false, "`commit`=0"), 1);
    assert_int_equal(raw_recv_delivery(a, 800, got, &op, NULL, 0), 0);
    raw_send_tx(prod, 0, id, "refund-tx", KQ_TX_COMMIT);
    assert_int_equal(raw_recv_delivery(a, 5000, got, &op, body, sizeof body), 1);
    assert_string_equal(got, id);
    assert_string_equal(body, "tx");
    assert_int_equal(rows_of(id, false, "`commit`=1"), 1); /* durable before delivery */
    raw_deliver_ack(a, op, got, true);
    assert_int_equal(raw_sync(a), 0);
    assert_true(wait_rows(id, false, NULL, 0, 5000));
    /* rollback: deleted, never delivered, a late commit changes nothing */
    assert_int_equal(raw_publish(prod, 2, &m, id2, NULL, 0), 1);
    assert_int_equal(rows_of(id2, false, NULL), 1);
    raw_send_tx(prod, 0, id2, "refund-tx", KQ_TX_ROLLBACK);
    raw_send_tx(prod, 0, id2, "refund-tx", KQ_TX_COMMIT);
    assert_int_equal(raw_recv_delivery(a, 2500, got, &op, NULL, 0), 0);
    assert_true(wait_rows(id2, false, NULL, 0, 5000));
    assert_int_equal(rows_of(id2, true, NULL), 0);
    /* a pending two-phase message survives a restart uncommitted, then commits */
    assert_int_equal(raw_publish(prod, 3, &m, id, NULL, 0), 1);
    close(a);
    close(prod);
    assert_int_equal(broker_stop(&E.bp[0]), 0);
    assert_int_equal(broker_restart(&E.bp[0], NULL), 0);
    assert_true(broker_wait_log(&E.bp[0], "recovered pending=1", 1));
    prod = connect_as(0, TEST_PRODUCER);
    a = connect_as(0, TEST_CONSUMER);
    assert_int_equal(raw_recv_delivery(a, 800, got, &op, NULL, 0), 0);
    raw_send_tx(prod, 0, id, "refund-tx", KQ_TX_COMMIT);
    raw_take_delivery(a, id, 5000);
    close(a);
    close(prod);
}

/* --- 4. recovery after a stop and after kill -9 ----------------------------------------- */

static void test_restart_recovers(void **state)
{
    (void)state;
    start_broker(0, NULL);
    int prod = connect_as(0, TEST_PRODUCER);
    char ids[20][33];
    struct raw_msg m = {.topic = "trade", .type = "pay-succ", .commit = true};
    for (int i = 0; i < 20; i++)
        assert_int_equal(raw_publish(prod, (uint32_t)i + 1, &m, ids[i], NULL, 0), 1);
    /* one of them has failed twice already: the state comes back with it */
    int a = connect_as(0, TEST_CONSUMER);
    char got[33];
    uint32_t op;
    close(prod);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(raw_recv_delivery(a, 5000, got, &op, NULL, 0), 1);
        raw_deliver_ack(a, op, got, false);
    }
    assert_int_equal(raw_sync(a), 0);
    close(a);
    assert_int_equal(broker_stop(&E.bp[0]), 0);
    assert_int_equal(broker_restart(&E.bp[0], NULL), 0);
    assert_true(broker_wait_log(&E.bp[0], "recovered pending=20", 1));
    a = connect_as(0, TEST_CONSUMER);
    int b = connect_as(0, TEST_CONSUMER_B);
    raw_drain_expect(a, ids, 20, 8000);
    raw_drain_expect(b, ids, 20, 8000);
    close(a);
    close(b);
    for (int i = 0; i < 20; i++) /* the acks reached the table (delete batches) */
        assert_true(wait_rows(ids[i], false, NULL, 0, 5000));

    /* kill -9: acked saves are there; acks not yet flushed may come again (duplicates) */
    prod = connect_as(0, TEST_PRODUCER);
    char more[10][33];
    for (int i = 0; i < 10; i++)
        assert_int_equal(raw_publish(prod, (uint32_t)i + 1, &m, more[i], NULL, 0), 1);
    close(prod);
    broker_kill9(&E.bp[0]);
    assert_int_equal(broker_restart(&E.bp[0], NULL), 0);
    a = connect_as(0, TEST_CONSUMER);
    b = connect_as(0, TEST_CONSUMER_B);
    raw_drain_expect(a, more, 10, 8000);
    raw_drain_expect(b, more, 10, 8000);
    close(a);
    close(b);
    assert_int_equal(broker_stop(&E.bp[0]), 0);
    E.up[0] = false;
    for (int i = 0; i < 10; i++)
        assert_int_equal(rows_of(more[i], false, NULL), 0);
    for (int i = 0; i < 20; i++)
        assert_int_equal(rows_of(ids[i], false, NULL), 0);
}

/* --- scheduled delivery: next_deliver_time written at save, honoured after a restart ----- */

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_scheduled_restart(void **state)
{
    (void)state;
    start_broker(0, NULL);
    int prod = connect_as(0, TEST_PRODUCER);
    static const char *const delay[] = {"x-kiteq-delay-ms", "3000", NULL};
    struct raw_msg m = {.topic = "trade", .type = "pay-succ", .commit = true, .props = delay};
    char ids[1][33], got[33], where[128];
    int64_t t0 = wall_ms();
    assert_int_equal(raw_publish(prod, 1, &m, ids[0], NULL, 0), 1);
    int64_t t1 = wall_ms();
    close(prod);
    snprintf(where, sizeof where, "next_deliver_time BETWEEN %lld AND %lld",
             (long long)(t0 + 3000) / 1000, (long long)(t1 + 3000 + 999) / 1000);
    assert_int_equal(rows_of(ids[0], false, where), 1);
    assert_int_equal(broker_stop(&E.bp[0]), 0);
    assert_int_equal(broker_restart(&E.bp[0], NULL), 0);
    int a = connect_as(0, TEST_CONSUMER), b = connect_as(0, TEST_CONSUMER_B);
    uint32_t op;
    int64_t early = t0 + 3000 - 400 - wall_ms(); /* margin: a slow host only delays it */
    if (early > 0)
        assert_int_equal(raw_recv_delivery(a, (int)early, got, &op, NULL, 0), 0);
    assert_int_equal(raw_recv_delivery(a, (int)(t1 + 13000 - wall_ms()), got, &op, NULL, 0), 1);
    assert_true(wall_ms() >= t0 + 3000);
    assert_string_equal(got, ids[0]);
    assert_int_equal(raw_deliver_ack(a, op, got, true), 0);
    raw_drain_expect(b, ids, 1, 10000);
    close(a);
    close(b);
}

/* --- load: producers and consumers through the client library --------------------------- */

struct producer {
    struct kq_client *c;
    pthread_t thread;
    bool running;
    struct idset *acked;
    pthread_mutex_t mu;
    bool stop;
    uint64_t ok, failed, no_answer, max_latency_ms;
    char last_feedback[128];
};

static void *producer_main(void *arg)
{
    struct producer *p = arg;
    static const char body[256] = "load";
    struct kq_message m = trade_pay_message(body, sizeof body);
    for (;;) {
        pthread_mutex_lock(&p->mu);
        bool stop = p->stop;
        pthread_mutex_unlock(&p->mu);
        if (stop)
            break;
        m.message_id[0] = 0;
        m.create_time = 0;
        kq_generate_message_id(m.message_id);
        struct kq_publish_result r;
        uint64_t t0 = now_ms();
        int rc = kq_publish(p->c, &m, &r);
        uint64_t lat = now_ms() - t0;
        pthread_mutex_lock(&p->mu);
        if (lat > p->max_latency_ms)
            p->max_latency_ms = lat;
        if (rc == 0 && r.status) {
            p->ok++;
            idset_add(p->acked, r.message_id);
        } else if (rc == 0) {
            p->failed++;
            snprintf(p->last_feedback, sizeof p->last_feedback, "%s", r.feedback);
        } else {
            p->no_answer++;
        }
        pthread_mutex_unlock(&p->mu);
        if (rc != 0 || !r.status)
            usleep(5000); /* failing fast: do not spin */
    }
    return NULL;
}

static int client_open(struct kq_client **c, int port, const char *group, kq_on_message_fn fn,
                       void *ud)
{
    struct kq_client_options o = {
        .ack_timeout_ms = 20000, .reconnect = true, .on_message = fn, .ud = ud};
    return client_open_local(c, port, group, o);
}

static void producer_start(struct producer *p, int port, struct idset *acked)
{
    memset(p, 0, sizeof *p);
    p->acked = acked;
    pthread_mutex_init(&p->mu, NULL);
    assert_int_equal(client_open(&p->c, port, TEST_PRODUCER, NULL, NULL), 0);
    assert_int_equal(pthread_create(&p->thread, NULL, producer_main, p), 0);
    p->running = true;
}

static void producer_stop(struct producer *p)
{
    if (!p->running)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    kq_client_close(p->c);
    p->running = false;
    pthread_mutex_destroy(&p->mu);
}

static uint64_t producer_ok(struct producer *p)
{
    pthread_mutex_lock(&p->mu);
    uint64_t n = p->ok;
    pthread_mutex_unlock(&p->mu);
    return n;
}

static uint64_t producer_failed(struct producer *p)
{
    pthread_mutex_lock(&p->mu);
    uint64_t n = p->failed;
    pthread_mutex_unlock(&p->mu);
    return n;
}

static bool on_message(void *ud, const struct kq_message *m)
{
    idset_add(ud, m->message_id);
    return true;
}

struct missing_ctx {
    struct idset *delivered[2];
    size_t missing[2];
};

static bool count_missing(const char *id, uint32_t n, void *ud)
{
    (void)n;
    struct missing_ctx *m = ud;
    for (int g = 0; g < 2; g++)
        if (!idset_count(m->delivered[g], id))
            m->missing[g]++;
    return true;
}

/* Wait until every acked id reached both groups; fail naming how many did not. */
static void expect_all_delivered(struct idset *acked, struct idset *delivered[2], int ms)
{
    struct missing_ctx m = {{delivered[0], delivered[1]}, {0, 0}};
    uint64_t end = now_ms() + (uint64_t)ms;
    for (;;) {
        m.missing[0] = m.missing[1] = 0;
        idset_foreach(acked, count_missing, &m);
        if (m.missing[0] == 0 && m.missing[1] == 0)
            return;
        if (now_ms() >= end)
            break;
        usleep(50000);
    }
    fail_msg("LOST acked messages: %zu of %zu never reached %s, %zu never reached %s", m.missing[0],
             idset_size(acked), TEST_CONSUMER, m.missing[1], TEST_CONSUMER_B);
}

static void wait_ok(struct producer *p, uint64_t target, int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    while (producer_ok(p) < target && now_ms() < end)
        usleep(10000);
    if (producer_ok(p) >= target)
        return;
    pthread_mutex_lock(&p->mu);
    fail_msg("only %" PRIu64 " of %" PRIu64 " publishes acked true (failed %" PRIu64
             ", unanswered %" PRIu64 ", last feedback '%s')",
             p->ok, target, p->failed, p->no_answer, p->last_feedback);
}

/* --- 5. MariaDB restarted under load ---------------------------------------------------- */

static void test_mariadb_restart_under_load(void **state)
{
    (void)state;
    if (!E.my.base[0]) {
        print_message("MariaDB given by MYSQL_HOST: not ours to restart, skipped\n");
        skip();
    }
    start_broker(0, NULL);
    struct idset *acked = idset_new(), *delivered[2] = {idset_new(), idset_new()};
    struct kq_client *cons[2] = {NULL, NULL};
    assert_int_equal(client_open(&cons[0], E.bp[0].port, TEST_CONSUMER, on_message, delivered[0]),
                     0);
    assert_int_equal(client_open(&cons[1], E.bp[0].port, TEST_CONSUMER_B, on_message, delivered[1]),
                     0);
    struct producer p[2];
    for (int i = 0; i < 2; i++)
        producer_start(&p[i], E.bp[0].port, acked);
    wait_ok(&p[0], 300, 20000);

    assert_int_equal(services("down"), 0);
    uint64_t down_at = now_ms();
    /* publishes during the outage: answered (status false with a reason), not hanging */
    uint64_t failed0 = producer_failed(&p[0]) + producer_failed(&p[1]);
    while (now_ms() - down_at < 4000)
        usleep(50000);
    uint64_t failed = producer_failed(&p[0]) + producer_failed(&p[1]) - failed0;
    char fb[128];
    pthread_mutex_lock(&p[0].mu);
    snprintf(fb, sizeof fb, "%s", p[0].last_feedback);
    pthread_mutex_unlock(&p[0].mu);
    print_message("outage: %" PRIu64 " publishes answered status=false (feedback '%s')\n", failed,
                  fb);
    assert_true(failed > 0);
    assert_true(fb[0] != 0);

    assert_int_equal(services("up"), 0);
    uint64_t ok_before = producer_ok(&p[0]);
    wait_ok(&p[0], ok_before + 300, 30000);
    print_message("publishing works again %" PRIu64 " ms after the restart began\n",
                  now_ms() - down_at - 4000);
    for (int i = 0; i < 2; i++)
        producer_stop(&p[i]);
    uint64_t max_lat =
        p[0].max_latency_ms > p[1].max_latency_ms ? p[0].max_latency_ms : p[1].max_latency_ms;
    print_message("acked true %zu, failed %" PRIu64 ", unanswered %" PRIu64
                  ", slowest answer %" PRIu64 " ms\n",
                  idset_size(acked), p[0].failed + p[1].failed, p[0].no_answer + p[1].no_answer,
                  max_lat);
    assert_int_equal(p[0].no_answer + p[1].no_answer, 0);
    assert_true(max_lat < 15000);
    expect_all_delivered(acked, delivered, 60000);
    for (int g = 0; g < 2; g++)
        kq_client_close(cons[g]);
    idset_free(acked);
    idset_free(delivered[0]);
    idset_free(delivered[1]);
}

/* --- 6. two brokers, one killed: the survivor takes over its messages --------------------- */

static void write_bind(zhandle_t *zh, const char *group)
{
    char json[512], path[256];
    snprintf(json, sizeof json,
             "[{\"groupId\":\"%s\",\"topic\":\"trade\",\"messageType\":\"pay-succ\","
             "\"bindType\":0,\"version\":\"1.0.0\",\"watermark\":1000,\"persistent\":true}]",
             group);
    snprintf(path, sizeof path, "/kiteq/sub/trade/%s-bind", group);
    assert_int_equal(zk_test_write(zh, path, json), ZOK);
}

static void test_takeover_after_kill9(void **state)
{
    (void)state;
    struct zk_service zk;
    memset(&zk, 0, sizeof zk);
    if (zk_service_start(&zk) != 0)
        fail_msg("ZooKeeper could not be started");
    zhandle_t *zh = zk_test_connect(zk.hosts, 10000);
    assert_non_null(zh);
    write_bind(zh, TEST_CONSUMER);
    write_bind(zh, TEST_CONSUMER_B);
    char extra[512];
    snprintf(extra, sizeof extra, "registry = \"%s\", takeoverSeconds = 2, deliverySeconds = 1,",
             zk.uri);
    for (int i = 0; i < 2; i++) {
        start_broker(i, extra);
        assert_true(broker_wait_log(&E.bp[i], "bindings changed topic=trade group=" TEST_CONSUMER_B,
                                    10000));
        assert_true(broker_wait_log(&E.bp[i], "watching brokers of", 1));
    }
    /* group a consumes on both brokers; group b only on broker 1: what broker 0 stores
     * for b waits there until broker 1 takes it over */
    struct idset *acked = idset_new(), *delivered[2] = {idset_new(), idset_new()};
    struct kq_client *cons[3] = {NULL, NULL, NULL};
    assert_int_equal(client_open(&cons[0], E.bp[0].port, TEST_CONSUMER, on_message, delivered[0]),
                     0);
    assert_int_equal(client_open(&cons[1], E.bp[1].port, TEST_CONSUMER, on_message, delivered[0]),
                     0);
    assert_int_equal(client_open(&cons[2], E.bp[1].port, TEST_CONSUMER_B, on_message, delivered[1]),
                     0);
    struct producer p[2];
    for (int i = 0; i < 2; i++)
        producer_start(&p[i], E.bp[i].port, acked);
    wait_ok(&p[0], 500, 20000);
    wait_ok(&p[1], 500, 20000);
    broker_kill9(&E.bp[0]);
    E.up[0] = false;
    uint64_t killed = now_ms();
    usleep(1000000); /* broker 1 keeps taking publishes meanwhile */
    for (int i = 0; i < 2; i++)
        producer_stop(&p[i]);
    print_message("acked %zu (broker 0: %" PRIu64 ", broker 1: %" PRIu64 ")\n", idset_size(acked),
                  p[0].ok, p[1].ok);
    char needle[128];
    snprintf(needle, sizeof needle, "server=127.0.0.1:%d taken over: moved=", E.bp[0].port);
    assert_true(broker_wait_log(&E.bp[1], needle, 30000));
    print_message("taken over %" PRIu64 " ms after the kill (session 5 s + takeoverSeconds 2)\n",
                  now_ms() - killed);
    expect_all_delivered(acked, delivered, 60000);
    /* the marker: nobody repeats it */
    char path[512];
    snprintf(path, sizeof path, "/kiteq/takeover/%s:%u:%s/127.0.0.1:%d.done", E.my.host, E.my.port,
             E.db, E.bp[0].port);
    assert_true(zk_test_wait_node(zh, path, true, NULL, 5000));
    snprintf(path, sizeof path, "/kiteq/takeover/%s:%u:%s/127.0.0.1:%d.lock", E.my.host, E.my.port,
             E.db, E.bp[0].port);
    assert_true(zk_test_wait_node(zh, path, false, NULL, 5000));
    /* broker 0 comes back on its address: nothing of its own left, and its marker goes so
     * that a later death is taken over again */
    assert_int_equal(broker_restart(&E.bp[0], NULL), 0);
    E.up[0] = true;
    assert_true(broker_wait_log(&E.bp[0], "recovered pending=0", 1));
    snprintf(path, sizeof path, "/kiteq/takeover/%s:%u:%s/127.0.0.1:%d.done", E.my.host, E.my.port,
             E.db, E.bp[0].port);
    assert_true(zk_test_wait_node(zh, path, false, NULL, 10000));
    for (int i = 0; i < 3; i++)
        kq_client_close(cons[i]);
    teardown(NULL);
    zookeeper_close(zh);
    zk_service_stop(&zk);
    idset_free(acked);
    idset_free(delivered[0]);
    idset_free(delivered[1]);
}

/* --- 7. MariaDB down or hung when the broker starts -------------------------------------- */

/* scripts/services-{up,down}.sh BASE mysql; after "up" the new PID is read back. 0 or the
 * script's exit status. */
static int services(const char *verb)
{
    if (E.c) { /* our connection dies with the server */
        mysql_close(E.c);
        E.c = NULL;
    }
    int rc = mariadb_service_script(&E.my, verb);
    if (rc == 0)
        E.down = !strcmp(verb, "down");
    return rc;
}

static void mysql_service(const char *verb) { assert_int_equal(services(verb), 0); }

/* The broker restarted while the server cannot answer: it starts, publishes are refused at
 * once with the reason, and once the server answers the pending messages come back in the
 * background and publishing works again. */
static void restart_while_unavailable(char ids[][33], int n_old, const char *how)
{
    assert_int_equal(broker_restart(&E.bp[0], NULL), 0);
    assert_true(broker_wait_log(&E.bp[0], "store unavailable at start", 1000));
    int prod = connect_as(0, TEST_PRODUCER);
    struct raw_msg m = {.topic = "trade", .type = "pay-succ", .commit = true, .body = "late"};
    char fb[512] = "";
    uint64_t t0 = now_ms();
    assert_int_equal(raw_publish(prod, 100, &m, NULL, fb, sizeof fb), 0);
    print_message("%s: publish answered in %llu ms: '%s'\n", how,
                  (unsigned long long)(now_ms() - t0), fb);
    assert_non_null(strstr(fb, "store unavailable"));
    /* operators see it too, and neither page waits for the server */
    int admin = admin_port(&E.bp[0]);
    char *stat = http_get(admin, "/stat"), *metrics = http_get(admin, "/metrics");
    assert_non_null(stat);
    assert_non_null(metrics);
    assert_non_null(strstr(stat, "\"store_unavailable\""));
    assert_non_null(strstr(metrics, "\nkiteq_store_available 0\n"));
    free(stat);
    free(metrics);
    char *dlq = http_get(admin, "/dlq");
    assert_non_null(dlq);
    assert_non_null(strstr(dlq, " 503 "));
    free(dlq);
    if (!strcmp(how, "hung"))
        assert_int_equal(kill(E.my.pid, SIGCONT), 0);
    else
        mysql_service("up");
    E.stopped = false;
    char want[96];
    snprintf(want, sizeof want, "recovered in the background: %d pending", n_old);
    assert_true(broker_wait_log(&E.bp[0], want, 30000));
    assert_int_equal(raw_publish(prod, 101, &m, ids[n_old], NULL, 0), 1);
    metrics = http_get(admin, "/metrics");
    assert_non_null(metrics);
    assert_non_null(strstr(metrics, "\nkiteq_store_available 1\n"));
    free(metrics);
    close(prod);
    int a = connect_as(0, TEST_CONSUMER), b = connect_as(0, TEST_CONSUMER_B);
    raw_drain_expect(a, ids, n_old + 1, 8000);
    raw_drain_expect(b, ids, n_old + 1, 8000);
    close(a);
    close(b);
}

static void publish_pending(char ids[][33], int n)
{
    int prod = connect_as(0, TEST_PRODUCER);
    struct raw_msg m = {.topic = "trade", .type = "pay-succ", .commit = true, .body = "early"};
    for (int i = 0; i < n; i++) /* no consumer connected: they stay pending */
        assert_int_equal(raw_publish(prod, (uint32_t)i + 1, &m, ids[i], NULL, 0), 1);
    close(prod);
    assert_int_equal(broker_stop(&E.bp[0]), 0);
}

/* --- 8. MariaDB frozen: the broker keeps answering -------------------------------------- */

/* The HTTP status of the response on fd (read to EOF), 0 when none came within ms. */
static int status_within(int fd, int ms)
{
    char buf[4096];
    size_t len = 0;
    uint64_t end = now_ms() + (uint64_t)ms;
    while (len < sizeof buf - 1 && now_ms() < end) {
        struct timeval tv = {0, 100000};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ssize_t r = read(fd, buf + len, sizeof buf - 1 - len);
        if (r == 0)
            break;
        if (r > 0)
            len += (size_t)r;
    }
    buf[len] = 0;
    int st = 0;
    sscanf(buf, "HTTP/1.%*d %d", &st);
    return st;
}

static int send_request(int port, const char *req)
{
    int fd = raw_connect(port);
    assert_true(fd >= 0);
    assert_int_equal(raw_send(fd, req, strlen(req)), 0);
    return fd;
}

/* With the server stopped (SIGSTOP), scrapes answer from memory and heartbeats from the
 * loop, each within 100 ms; what needs the server (a DLQ listing, a dead letter's lookup, a
 * purge, a publish) waits for it without holding anything else up, and is answered after. */
static void test_frozen_mariadb(void **state)
{
    (void)state;
    if (!E.my.base[0] || E.my.pid <= 0) {
        print_message("MariaDB given by MYSQL_HOST: not ours to freeze, skipped\n");
        skip();
    }
    start_broker(0, NULL);
    int ap = admin_port(&E.bp[0]);
    long long in_dlq = 0;
    for (int d = 0; d < 4; d++)
        in_dlq +=
            sql_int("SELECT COUNT(*) FROM `%s_%d`.`kite_msg_dlq` WHERE topic='trade'", E.db, d);
    assert_true(in_dlq >= 1); /* test_retry_then_dead_letter left one */
    char want[96];
    snprintf(want, sizeof want, "kiteq_dlq_messages{topic=\"trade\"} %lld\n", in_dlq);
    bool counted = false;
    for (uint64_t end = now_ms() + 5000; !counted && now_ms() < end; usleep(50000)) {
        char *m = http_get(ap, "/metrics");
        counted = m && strstr(m, want);
        free(m);
    }
    assert_true(counted);
    int hb = connect_as(0, TEST_CONSUMER), prod = connect_as(0, TEST_PRODUCER);

    /* E.my.pid: the server's PID now (read again by every restart of an earlier test) */
    assert_int_equal(kill(E.my.pid, SIGSTOP), 0);
    E.stopped = true;
    int waiting[3] = {
        send_request(ap, "GET /dlq HTTP/1.0\r\n\r\n"),
        send_request(ap, "GET /msg/ffffffffffffffffffffffffffffffff HTTP/1.0\r\n\r\n"),
        send_request(ap, "POST /dlq/purge?topic=no-such-topic HTTP/1.0\r\n\r\n"),
    };
    struct raw_msg m = {.topic = "trade", .type = "pay-succ", .commit = true, .body = "frozen"};
    char id[33];
    assert_int_equal(raw_publish_nowait(prod, 77, &m, id), 0);
    uint64_t worst[3] = {0};
    for (int i = 0; i < 30; i++) {
        uint64_t t0 = kq_mono_us();
        char *text = http_get(ap, "/metrics");
        uint64_t t1 = kq_mono_us();
        assert_int_equal(raw_sync(hb), 0);
        uint64_t t2 = kq_mono_us();
        char *stat = http_get(ap, "/stat");
        uint64_t t3 = kq_mono_us();
        assert_non_null(text);
        assert_non_null(strstr(text, want)); /* the counters, from memory */
        assert_non_null(stat);
        assert_non_null(strstr(stat, " 200 "));
        free(text);
        free(stat);
        uint64_t d[3] = {t1 - t0, t2 - t1, t3 - t2};
        for (int k = 0; k < 3; k++)
            worst[k] = d[k] > worst[k] ? d[k] : worst[k];
        usleep(50000);
    }
    assert_int_equal(kill(E.my.pid, SIGCONT), 0);
    E.stopped = false;
    print_message("MariaDB frozen: worst /metrics %llu us, heartbeat %llu us, /stat %llu us\n",
                  (unsigned long long)worst[0], (unsigned long long)worst[1],
                  (unsigned long long)worst[2]);
    for (int k = 0; k < 3; k++)
        assert_true(worst[k] < 100000);
    /* what needed the server is answered (an error if it gave up meanwhile), and the
     * publish gets its ack */
    for (int k = 0; k < 3; k++) {
        int st = status_within(waiting[k], 15000);
        print_message("request %d waiting for the server: HTTP %d\n", k, st);
        assert_true(st >= 200 && st < 600);
        close(waiting[k]);
    }
    assert_true(raw_wait_store_ack(prod, 77, NULL, 0) >= 0);
    close(hb);
    close(prod);
}

static void test_start_while_mysql_unavailable(void **state)
{
    (void)state;
    if (!E.my.base[0]) {
        print_message("MariaDB given by MYSQL_HOST: not ours to stop, skipped\n");
        skip();
    }
    char ids[11][33];
    start_broker(0, NULL);
    /* stopped: connections are refused */
    publish_pending(ids, 10);
    mysql_service("down");
    restart_while_unavailable(ids, 10, "down");
    /* hung (SIGSTOP): every try costs the timeout (2 s here) */
    publish_pending(ids, 10);
    assert_true(E.my.pid > 0);
    assert_int_equal(kill(E.my.pid, SIGSTOP), 0);
    E.stopped = true;
    restart_while_unavailable(ids, 10, "hung");
    assert_int_equal(broker_stop(&E.bp[0]), 0);
    E.up[0] = false;
}

/* --- 9. MariaDB gone while the broker runs: the truth, at once ------------------------------ */

/* GET path until the answer holds want; false after ms. */
static bool admin_wait(int port, const char *path, const char *want, int ms)
{
    static char body[1 << 16];
    uint64_t end = now_ms() + (uint64_t)ms;
    do {
        if (admin_get(port, path, body, sizeof body) > 0 && strstr(body, want))
            return true;
        usleep(50000);
    } while (now_ms() < end);
    return false;
}

/* The server cannot be reached (reason: what the broker should say): within seconds every
 * way of asking says so, with the reason. */
static void expect_unavailable(int prod, int ap, const char *reason, int nth)
{
    char why[192], want[256], body[8192];
    snprintf(why, sizeof why, "mysql %s:%u: %s", E.my.host, E.my.port, reason);
    uint64_t t0 = now_ms();
    assert_true(admin_wait(ap, "/metrics", "\nkiteq_store_available 0\n", 15000));
    print_message("%s: kiteq_store_available 0 after %llu ms\n", reason,
                  (unsigned long long)(now_ms() - t0));
    assert_true(broker_wait_log_count(&E.bp[0], "error mysql: store unavailable: ", nth, 1000));
    snprintf(want, sizeof want, "store unavailable: %s", why);
    assert_true(broker_wait_log(&E.bp[0], want, 1000));
    snprintf(want, sizeof want, "\"store_unavailable\":\"%s\"", why);
    assert_int_equal(admin_get(ap, "/stat", body, sizeof body), 200);
    assert_non_null(strstr(body, want));
    snprintf(want, sizeof want, "\"error\":\"store unavailable: %s\"", why);
    const char *paths[] = {"/dlq", "/dlq?topic=trade", "/msg/0123456789abcdef0123456789abcdef"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        assert_int_equal(admin_get(ap, paths[i], body, sizeof body), 503);
        assert_non_null(strstr(body, want));
    }
    assert_has(cli_expect(1, "dlq list --admin 127.0.0.1:%d", ap), why);
    assert_has(cli_expect(1, "msg --admin 127.0.0.1:%d 0123456789abcdef0123456789abcdef", ap), why);
    struct raw_msg m = {.topic = "trade", .type = "pay-succ", .commit = true, .body = "down"};
    char fb[512] = "";
    assert_int_equal(raw_publish(prod, 200, &m, NULL, fb, sizeof fb), 0);
    snprintf(want, sizeof want, "Store Result false: store unavailable: %s", why);
    assert_string_equal(fb, want);
}

/* The server is back: within seconds the store is available again and takes saves. */
static void expect_available(int prod, int ap, int nth)
{
    uint64_t t0 = now_ms();
    assert_true(admin_wait(ap, "/metrics", "\nkiteq_store_available 1\n", 15000));
    print_message("kiteq_store_available 1 after %llu ms\n", (unsigned long long)(now_ms() - t0));
    assert_true(broker_wait_log_count(&E.bp[0], "info mysql: store available again", nth, 1000));
    char body[8192];
    assert_int_equal(admin_get(ap, "/stat", body, sizeof body), 200);
    assert_null(strstr(body, "store_unavailable"));
    assert_int_equal(admin_get(ap, "/dlq", body, sizeof body), 200);
    struct raw_msg m = {.topic = "trade", .type = "pay-succ", .commit = true, .body = "back"};
    char fb[512] = "";
    assert_int_equal(raw_publish(prod, 201, &m, NULL, fb, sizeof fb), 1);
}

static void test_mariadb_gone_while_running(void **state)
{
    (void)state;
    if (!E.my.base[0] || E.my.pid <= 0) {
        print_message("MariaDB given by MYSQL_HOST: not ours to stop, skipped\n");
        skip();
    }
    start_broker(0, NULL);
    int ap = admin_port(&E.bp[0]);
    assert_true(admin_wait(ap, "/metrics", "\nkiteq_store_available 1\n", 5000));
    int prod = connect_as(0, TEST_PRODUCER);
    /* stopped: connections are refused (nothing else asks the server: the broker is idle) */
    mysql_service("down");
    expect_unavailable(prod, ap, "connection refused", 1);
    mysql_service("up");
    expect_available(prod, ap, 1);
    /* frozen (SIGSTOP): nothing answers; every try costs the timeout (2 s here) */
    assert_int_equal(kill(E.my.pid, SIGSTOP), 0);
    E.stopped = true;
    expect_unavailable(prod, ap, "no answer within 2 s", 2);
    assert_int_equal(kill(E.my.pid, SIGCONT), 0);
    E.stopped = false;
    expect_available(prod, ap, 2);
    close(prod);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_publish_deliver_ack, teardown),
        cmocka_unit_test_teardown(test_retry_then_dead_letter, teardown),
        cmocka_unit_test_teardown(test_two_phase, teardown),
        cmocka_unit_test_teardown(test_restart_recovers, teardown),
        cmocka_unit_test_teardown(test_scheduled_restart, teardown),
        cmocka_unit_test_teardown(test_mariadb_restart_under_load, teardown),
        cmocka_unit_test_teardown(test_takeover_after_kill9, teardown),
        cmocka_unit_test_teardown(test_frozen_mariadb, teardown),
        cmocka_unit_test_teardown(test_start_while_mysql_unavailable, teardown),
        cmocka_unit_test_teardown(test_mariadb_gone_while_running, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
