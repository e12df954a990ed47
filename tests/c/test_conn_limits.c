/* Integration: what connections may cost the broker.
 *  - under a low open-file limit, idle sockets cannot take the descriptors the file store
 *    needs: past maxConnections (derived from RLIMIT_NOFILE) a connection is accepted and
 *    closed at once, publishes that open new segments still succeed, and sockets that do
 *    not authenticate are closed after the auth deadline (5 s);
 *  - a consumer being closed leaves its group at once, not when its last output is gone;
 *  - a consumer whose link dies with data in flight is gone within the heartbeat timeout
 *    (TCP_USER_TIMEOUT), tested in a private network namespace (root only). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "core/clock.h"
#include "support/broker_proc.h"

static struct broker_proc bp;

static uint64_t now_ms(void) { return kq_mono_us() / 1000; }

static int teardown(void **state)
{
    (void)state;
    return bp.pid > 0 && broker_stop(&bp) != 0 ? -1 : 0;
}

/* Sockets of fds[0..n) the broker has closed (fds[i] set to -1 once seen closed). */
static int count_closed(int *fds, int n)
{
    int closed = 0;
    for (int i = 0; i < n; i++) {
        if (fds[i] < 0) {
            closed++;
            continue;
        }
        struct pollfd p = {.fd = fds[i], .events = POLLIN};
        char c;
        if (poll(&p, 1, 0) == 1 && recv(fds[i], &c, 1, MSG_DONTWAIT) <= 0) {
            close(fds[i]);
            fds[i] = -1;
            closed++;
        }
    }
    return closed;
}

/* Until at least `want` of fds are closed or timeout_ms passed; returns how many are. */
static int wait_closed(int *fds, int n, int want, int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    int closed;
    while ((closed = count_closed(fds, n)) < want && now_ms() < deadline)
        usleep(10000);
    return closed;
}

#define FD_LIMIT 256
#define CAP (FD_LIMIT - 64) /* a quarter of the limit, at least 64, is kept for the store */
#define IDLE 400

static void test_idle_sockets_cannot_starve_the_store(void **state)
{
    (void)state;
    struct rlimit old, low;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    if (old.rlim_max != RLIM_INFINITY && old.rlim_max < IDLE + 100) {
        printf("skipped: the test needs %d descriptors (hard limit %llu)\n", IDLE + 100,
               (unsigned long long)old.rlim_max);
        skip();
    }
    if (old.rlim_cur != RLIM_INFINITY && old.rlim_cur < IDLE + 100) {
        old.rlim_cur = IDLE + 100;
        assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    }
    /* The broker inherits the low limit (`ulimit -n 256`); the test keeps its own. */
    low = old;
    low.rlim_cur = FD_LIMIT;
    char cfg[4096];
    broker_default_config(cfg, sizeof cfg, "file://./data?fsync=group&segment_kb=4", NULL);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    int rc = broker_start(&bp, cfg, NULL);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    assert_int_equal(rc, 0);
    char line[96];
    snprintf(line, sizeof line, "maxConnections=%d (from the open-file limit)", CAP);
    assert_true(broker_wait_log(&bp, line, 1000));

    int prod = raw_connect(bp.port);
    assert_true(prod >= 0);
    assert_int_equal(raw_handshake(prod, TEST_PRODUCER, TEST_SECRET), 1);

    static int idle[IDLE];
    for (int i = 0; i < IDLE; i++)
        assert_true((idle[i] = raw_connect(bp.port)) >= 0);
    /* Past the cap (the producer holds one place) they are closed at once... */
    int refused = IDLE - (CAP - 1);
    assert_int_equal(wait_closed(idle, IDLE, refused, 3000), refused);
    assert_true(broker_wait_log(&bp, "connection refused peer=127.0.0.1:", 1000));
    /* ...while the ones within it are held until their auth deadline: one of them sends a
     * frame's first bytes, which buys it nothing. */
    int slow = -1;
    for (int i = 0; i < IDLE && slow < 0; i++)
        if (idle[i] >= 0)
            slow = idle[i];
    assert_int_equal(raw_send(slow, "\0\0\0", 3), 0);
    assert_int_equal(count_closed(idle, IDLE), refused);

    /* The store still has descriptors for new segments (4 KiB each: ~10 of them). */
    char body[1024];
    memset(body, 'b', sizeof body - 1);
    body[sizeof body - 1] = 0;
    struct raw_msg m = {.topic = "trade", .type = "pay-succ", .body = body, .commit = true};
    for (int i = 0; i < 40; i++) {
        char fb[256] = "";
        if (raw_publish(prod, (uint32_t)(i + 1), &m, NULL, fb, sizeof fb) != 1)
            fail_msg("publish %d refused: %s", i, fb);
    }
    assert_false(broker_wait_log(&bp, "Too many open files", 0));

    /* Never authenticated: closed after 5 s, the authenticated producer is not. */
    assert_int_equal(wait_closed(idle, IDLE, IDLE, 10000), IDLE);
    assert_true(broker_wait_log(&bp, "no handshake within 5000 ms, closing peer=", 0));
    assert_int_equal(raw_sync(prod), 0);
    close(prod);
}

/* --- closing and dead consumers ------------------------------------------------------------ */

static int admin_port;

static void start_with_admin(const char *extra)
{
    char cluster[512], cfg[4096];
    snprintf(cluster, sizeof cluster, "admin = \"127.0.0.1:0\", %s", extra);
    broker_default_config(cfg, sizeof cfg, "memory://", cluster);
    assert_int_equal(broker_start(&bp, cfg, NULL), 0);
    assert_true((admin_port = broker_admin_port(&bp)) > 0);
}

static cJSON *get_stat(void)
{
    static char body[65536];
    assert_int_equal(admin_get(admin_port, "/stat", body, sizeof body), 200);
    cJSON *j = cJSON_Parse(body);
    assert_non_null(j);
    return j;
}

/* "127.0.0.1:PORT" as the broker names the peer of our socket fd. */
static void local_name(int fd, char *out, size_t len)
{
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a.sin_addr, ip, sizeof ip);
    snprintf(out, len, "%s:%d", ip, ntohs(a.sin_port));
}

/* Is peer among the connections /stat lists for group? */
static bool stat_lists(const char *group, const char *peer)
{
    cJSON *st = get_stat();
    cJSON *members =
        cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(st, "kiteq"), "groups"), group);
    bool found = false;
    cJSON *it;
    cJSON_ArrayForEach(it, members) found |= strcmp(it->valuestring, peer) == 0;
    cJSON_Delete(st);
    return found;
}

static bool wait_unlisted(const char *group, const char *peer, int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    bool listed;
    while ((listed = stat_lists(group, peer)) && now_ms() < deadline)
        usleep(20000);
    return !listed;
}

/* A connection from bind_ip (NULL: any) with a receive buffer of rcvbuf bytes (0: the
 * default) set before connecting, so that the window it offers is that small too. */
static int connect_with(const char *bind_ip, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    if (bind_ip) {
        inet_pton(AF_INET, bind_ip, &a.sin_addr);
        assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    }
    if (rcvbuf)
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf), 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)bp.port);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

/* A producer connection that has published n trade/pay-succ messages of body_len bytes. */
static int publish(int n, size_t body_len)
{
    int prod = raw_connect(bp.port);
    assert_true(prod >= 0);
    assert_int_equal(raw_handshake(prod, TEST_PRODUCER, TEST_SECRET), 1);
    char *body = malloc(body_len + 1);
    memset(body, 'x', body_len);
    body[body_len] = 0;
    struct raw_msg m = {.topic = "trade", .type = "pay-succ", .body = body, .commit = true};
    for (int i = 0; i < n; i++)
        assert_int_equal(raw_publish(prod, (uint32_t)(i + 1), &m, NULL, NULL, 0), 1);
    free(body);
    return prod;
}

static int stat_int(const char *a, const char *b)
{
    cJSON *st = get_stat();
    int v = cJSON_GetObjectItem(cJSON_GetObjectItem(st, a), b)->valueint;
    cJSON_Delete(st);
    return v;
}

/* A consumer that shrinks its receive buffer after connecting (as the original Go client
 * does) and then does not read gets two deliveries: the first fills its window, the second
 * waits in the broker (writes to a window smaller than a segment are paced). Then it sends
 * a bad frame: the broker closes it, but that output cannot drain. It must leave its group
 * (and /stat) now, not when the connection is finally gone. */
static void test_closing_consumer_leaves_its_group(void **state)
{
    (void)state;
    start_with_admin("");
    int cons = connect_with(NULL, 0), small = 4096;
    assert_int_equal(setsockopt(cons, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
    assert_int_equal(raw_handshake(cons, TEST_CONSUMER, TEST_SECRET), 1);
    char peer[64];
    local_name(cons, peer, sizeof peer);
    assert_true(stat_lists(TEST_CONSUMER, peer));

    int prod = publish(2, 256 * 1024);
    uint64_t deadline = now_ms() + 5000;
    while (stat_int("kiteq", "deliver_go") < 2 && now_ms() < deadline)
        usleep(20000);
    assert_int_equal(stat_int("kiteq", "deliver_go"), 2);
    uint8_t bad[KQ_FRAME_HEADER_LEN];
    memset(bad, 0xff, sizeof bad); /* negative body length */
    assert_int_equal(raw_send(cons, bad, sizeof bad), 0);
    assert_true(broker_wait_log(&bp, "reason=\"bad frame length\"", 5000));

    assert_true(wait_unlisted(TEST_CONSUMER, peer, 2000));
    /* both connections are still open: the consumer's is closing, not gone */
    assert_int_equal(stat_int("network", "connections"), 2);
    close(cons);
    close(prod);
}

#define DEAD_IP "10.9.9.2"

/* The consumer's address disappears while a delivery is in flight: nothing it sent or
 * acknowledges reaches the broker any more (a half-open connection, as when its host or
 * link dies). With heartbeatTimeout = 6 the kernel gives up after 3 s (TCP_USER_TIMEOUT);
 * the idle sweep would only close it after 6 s, and without either it lingers ~15 min. */
static void test_half_open_consumer_is_dropped(void **state)
{
    (void)state;
    if (geteuid() != 0 || unshare(CLONE_NEWNET) != 0) {
        printf("skipped: a private network namespace needs root (unshare: %s)\n", strerror(errno));
        skip();
    }
    /* This process (and the broker it starts) now has a loopback of its own. */
    if (system("ip link set lo up && ip addr add " DEAD_IP "/32 dev lo") != 0) {
        printf("skipped: cannot set up the namespace's loopback with ip(8)\n");
        skip();
    }
    start_with_admin("heartbeatTimeoutSeconds = 6,");
    int cons = connect_with(DEAD_IP, 0);
    assert_int_equal(raw_handshake(cons, TEST_CONSUMER, TEST_SECRET), 1);
    char peer[64];
    local_name(cons, peer, sizeof peer);
    assert_true(stat_lists(TEST_CONSUMER, peer));

    assert_int_equal(system("ip addr del " DEAD_IP "/32 dev lo"), 0);
    close(publish(1, 100));
    char line[128];
    snprintf(line, sizeof line, "closed peer=%s group=%s reason=\"connection timed out\"", peer,
             TEST_CONSUMER);
    assert_true(broker_wait_log(&bp, line, 5000));
    assert_false(stat_lists(TEST_CONSUMER, peer));
    close(cons);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_idle_sockets_cannot_starve_the_store, teardown),
        cmocka_unit_test_teardown(test_closing_consumer_leaves_its_group, teardown),
        /* last: it moves this process into a network namespace of its own */
        cmocka_unit_test_teardown(test_half_open_consumer_is_dropped, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
