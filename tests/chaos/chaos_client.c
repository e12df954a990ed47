/* kiteq-chaos-client: the checked workload of tests/chaos/run, and its small tools.
 *
 *   produce BROKERS GROUP SECRET TOPIC TYPE ACKED_FILE [THREADS]
 *       publishes committed messages until SIGTERM, each thread to the next broker of the
 *       comma-separated list (another one after a failure); every id the broker acked (status
 *       true) is appended to ACKED_FILE at once. At the end one line on stderr:
 *       "produce: acked=N refused=R failed=F" and the first feedback of each kind.
 *   consume BROKERS GROUP SECRET RECEIVED_FILE
 *       one reconnecting client per broker; every delivered id is appended to RECEIVED_FILE
 *       (before the ack), until SIGTERM.
 *   relay LISTEN_ADDR:PORT TARGET_ADDR:PORT DELAY_MS
 *       a TCP relay that holds every chunk DELAY_MS before passing it on, both ways (this
 *       kernel has no netem), once SIGUSR1 switched it on; the next SIGUSR1 switches it off.
 *   zk-write HOSTS PATH DATA          create PATH (and its parents) with DATA, or set it
 *   zk-wait HOSTS PATH present|absent TIMEOUT_MS
 *       exit 0 once PATH is there (or gone), 1 at the deadline
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zookeeper/zookeeper.h>

#include "client/kiteq_client.h"

static atomic_bool stopping;
static void on_term(int sig)
{
    (void)sig;
    stopping = true;
}

static void die(const char *what)
{
    fprintf(stderr, "kiteq-chaos-client: %s\n", what);
    exit(2);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) { usleep((useconds_t)ms * 1000); }

/* Split "a,b,c" into at most max strings (in place). */
static int split(char *list, char **out, int max)
{
    int n = 0;
    for (char *save = NULL, *p = strtok_r(list, ",", &save); p && n < max;
         p = strtok_r(NULL, ",", &save))
        out[n++] = p;
    return n;
}

/* ---- the checked workload ------------------------------------------------------------------ */

#define MAX_BROKERS 4
static char *brokers[MAX_BROKERS];
static int n_brokers;
static const char *group, *secret, *topic, *type;
static FILE *record; /* ACKED_FILE or RECEIVED_FILE, one id a line */
static pthread_mutex_t record_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_ulong acked, refused, failed;
static char first_refusal[160], first_failure[160];

static void record_id(const char *id)
{
    pthread_mutex_lock(&record_lock);
    fprintf(record, "%s\n", id);
    fflush(record); /* a kill -9 of this process must not lose what was recorded */
    pthread_mutex_unlock(&record_lock);
}

__attribute__((format(printf, 3, 4))) static void remember(char *slot, size_t len, const char *fmt,
                                                           ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&record_lock);
    if (!slot[0])
        vsnprintf(slot, len, fmt, ap);
    pthread_mutex_unlock(&record_lock);
    va_end(ap);
}

/* A consumer keeps trying (its broker may start later); a producer tries once and moves on. */
static struct kq_client *open_client(const char *broker, kq_on_message_fn on_message, bool retry)
{
    struct kq_client_options o = {.broker = broker,
                                  .group_id = group,
                                  .secret = secret,
                                  .reconnect = true,
                                  .heartbeat_ms = 1000,
                                  .connect_timeout_ms = 3000,
                                  .on_message = on_message};
    struct kq_client *c = NULL;
    char err[256] = "";
    while (!stopping) {
        if (kq_client_open(&o, &c, err, sizeof err) == 0)
            return c;
        remember(first_failure, sizeof first_failure, "connect %s: %d", err, 0);
        if (!retry)
            break;
        sleep_ms(200);
    }
    return NULL;
}

static void *produce_thread(void *arg)
{
    int b = (int)(intptr_t)arg % n_brokers;
    struct kq_client *c[MAX_BROKERS] = {0};
    while (!stopping) {
        if (!c[b] && !(c[b] = open_client(brokers[b], NULL, false))) {
            failed++;
            b = (b + 1) % n_brokers;
            sleep_ms(100);
            continue;
        }
        struct kq_message m = {.topic = topic,
                               .message_type = type,
                               .expired_time = -1,
                               .deliver_limit = -1,
                               .body = "chaos",
                               .body_len = 5};
        struct kq_publish_result r;
        int rc = kq_publish(c[b], &m, &r);
        if (rc == 0 && r.status) {
            record_id(r.message_id);
            acked++;
            continue;
        }
        if (rc == 0) {
            refused++;
            remember(first_refusal, sizeof first_refusal, "%s (broker %d)", r.feedback, b);
        } else {
            failed++;
            remember(first_failure, sizeof first_failure, "%s (errno %d)", brokers[b], -rc);
        }
        b = (b + 1) % n_brokers; /* the next broker, after a short pause */
        sleep_ms(rc == 0 ? 50 : 100);
    }
    for (int i = 0; i < n_brokers; i++)
        if (c[i])
            kq_client_close(c[i]);
    return NULL;
}

static bool on_message(void *ud, const struct kq_message *m)
{
    (void)ud;
    record_id(m->message_id);
    return true;
}

static int run_workload(bool produce, int threads)
{
    pthread_t t[16];
    struct kq_client *cons[MAX_BROKERS] = {0};
    if (produce) {
        for (int i = 0; i < threads; i++)
            pthread_create(&t[i], NULL, produce_thread, (void *)(intptr_t)i);
    } else {
        for (int i = 0; i < n_brokers; i++)
            cons[i] = open_client(brokers[i], on_message, true);
    }
    while (!stopping)
        sleep_ms(50);
    if (produce) {
        for (int i = 0; i < threads; i++)
            pthread_join(t[i], NULL);
        fprintf(stderr, "produce: acked=%lu refused=%lu failed=%lu%s%s%s%s\n", (unsigned long)acked,
                (unsigned long)refused, (unsigned long)failed,
                first_refusal[0] ? " first_refusal=" : "", first_refusal,
                first_failure[0] ? " first_failure=" : "", first_failure);
    } else {
        for (int i = 0; i < n_brokers; i++)
            if (cons[i])
                kq_client_close(cons[i]);
    }
    fclose(record);
    return 0;
}

/* ---- relay with a delay -------------------------------------------------------------------- */

static atomic_bool delay_on; /* off until the first SIGUSR1 */
static int delay_ms;
static void on_usr1(int sig)
{
    (void)sig;
    delay_on = !delay_on;
}

struct chunk {
    uint64_t due;
    size_t len;
    struct chunk *next;
    char data[];
};

/* One direction: read from `from`, hold each chunk until due, write to `to`. Ends at EOF or
 * an error of either side, then shuts both down (the other direction ends too). */
struct pipe_dir {
    int from, to;
};

static void *relay_dir(void *arg)
{
    struct pipe_dir *d = arg;
    struct chunk *head = NULL, **tail = &head;
    bool eof = false;
    while (!eof || head) {
        int wait = -1;
        if (head) {
            uint64_t t = now_ms();
            wait = head->due > t ? (int)(head->due - t) : 0;
        }
        struct pollfd p = {.fd = d->from, .events = eof ? 0 : POLLIN};
        int n = poll(&p, 1, wait < 0 || wait > 100 ? 100 : wait);
        if (n > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR)) && !eof) {
            struct chunk *c = malloc(sizeof *c + 65536);
            ssize_t r = c ? read(d->from, c->data, 65536) : -1;
            if (r <= 0) {
                free(c);
                eof = true;
            } else {
                c->len = (size_t)r;
                c->due = now_ms() + (delay_on ? (uint64_t)delay_ms : 0);
                c->next = NULL;
                *tail = c;
                tail = &c->next;
            }
        }
        while (head && head->due <= now_ms()) {
            struct chunk *c = head;
            bool ok = send(d->to, c->data, c->len, MSG_NOSIGNAL) == (ssize_t)c->len;
            if (!(head = c->next))
                tail = &head;
            free(c);
            if (!ok)
                eof = true;
        }
    }
    shutdown(d->to, SHUT_WR);
    shutdown(d->from, SHUT_RD);
    return NULL;
}

struct relay_conn {
    struct pipe_dir up, down;
};

static void *relay_conn(void *arg)
{
    struct relay_conn *c = arg;
    pthread_t t;
    pthread_create(&t, NULL, relay_dir, &c->up);
    relay_dir(&c->down);
    pthread_join(t, NULL);
    close(c->up.from);
    close(c->up.to);
    free(c);
    return NULL;
}

static struct sockaddr_in parse_addr(const char *hp)
{
    char host[64];
    const char *colon = strrchr(hp, ':');
    if (!colon || colon - hp >= (long)sizeof host)
        die("address must be A.B.C.D:PORT");
    snprintf(host, sizeof host, "%.*s", (int)(colon - hp), hp);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
        die("address must be A.B.C.D:PORT");
    return a;
}

static int run_relay(const char *listen_at, const char *target, int delay)
{
    delay_ms = delay;
    signal(SIGUSR1, on_usr1);
    struct sockaddr_in la = parse_addr(listen_at), ta = parse_addr(target);
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (struct sockaddr *)&la, sizeof la) || listen(ls, 64))
        die("relay: cannot listen");
    fprintf(stderr, "relay: %s -> %s delay=%d ms (on SIGUSR1)\n", listen_at, target, delay);
    while (!stopping) {
        struct pollfd p = {.fd = ls, .events = POLLIN};
        if (poll(&p, 1, 200) <= 0)
            continue;
        int in = accept(ls, NULL, NULL);
        if (in < 0)
            continue;
        int out = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(out, (struct sockaddr *)&ta, sizeof ta)) {
            close(in);
            close(out);
            continue;
        }
        setsockopt(in, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(out, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct relay_conn *c = malloc(sizeof *c);
        *c = (struct relay_conn){{in, out}, {out, in}};
        pthread_t t;
        pthread_create(&t, NULL, relay_conn, c);
        pthread_detach(t);
    }
    return 0;
}

/* ---- ZooKeeper tools ----------------------------------------------------------------------- */

static zhandle_t *zk_open(const char *hosts)
{
    zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR);
    zhandle_t *zh = zookeeper_init(hosts, NULL, 5000, NULL, NULL, 0);
    for (uint64_t end = now_ms() + 10000; zh && now_ms() < end; sleep_ms(50))
        if (zoo_state(zh) == ZOO_CONNECTED_STATE)
            return zh;
    die("zookeeper: not connected within 10 s");
    return NULL;
}

static int zk_write(const char *hosts, const char *path, const char *data)
{
    zhandle_t *zh = zk_open(hosts);
    char parent[512];
    for (const char *p = strchr(path + 1, '/'); p; p = strchr(p + 1, '/')) {
        snprintf(parent, sizeof parent, "%.*s", (int)(p - path), path);
        zoo_create(zh, parent, NULL, -1, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0);
    }
    int rc = zoo_create(zh, path, data, (int)strlen(data), &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0);
    if (rc == ZNODEEXISTS)
        rc = zoo_set(zh, path, data, (int)strlen(data), -1);
    zookeeper_close(zh);
    if (rc != ZOK)
        fprintf(stderr, "zk-write %s: %s\n", path, zerror(rc));
    return rc == ZOK ? 0 : 1;
}

static int zk_wait(const char *hosts, const char *path, bool want, int timeout_ms)
{
    zhandle_t *zh = zk_open(hosts);
    int rc;
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    while ((rc = zoo_exists(zh, path, 0, NULL)), (rc == ZOK) != want && now_ms() < end)
        sleep_ms(100);
    zookeeper_close(zh);
    return (rc == ZOK) == want ? 0 : 1;
}

int main(int argc, char **argv)
{
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    signal(SIGPIPE, SIG_IGN);
    const char *mode = argc > 1 ? argv[1] : "";
    if ((!strcmp(mode, "produce") && argc >= 8) || (!strcmp(mode, "consume") && argc == 6)) {
        bool produce = mode[0] == 'p';
        n_brokers = split(argv[2], brokers, MAX_BROKERS);
        group = argv[3];
        secret = argv[4];
        topic = produce ? argv[5] : NULL;
        type = produce ? argv[6] : NULL;
        const char *file = argv[produce ? 7 : 5];
        int threads = produce && argc > 8 ? atoi(argv[8]) : 1;
        if (n_brokers < 1 || threads < 1 || threads > 16 || !(record = fopen(file, "a")))
            die("bad brokers, threads or file");
        return run_workload(produce, threads);
    }
    if (!strcmp(mode, "relay") && argc == 5)
        return run_relay(argv[2], argv[3], atoi(argv[4]));
    if (!strcmp(mode, "zk-write") && argc == 5)
        return zk_write(argv[2], argv[3], argv[4]);
    if (!strcmp(mode, "zk-wait") && argc == 6)
        return zk_wait(argv[2], argv[3], !strcmp(argv[4], "present"), atoi(argv[5]));
    fprintf(stderr, "usage: see the comment at the top of tests/chaos/chaos_client.c\n");
    return 2;
}
