/* kiteq-cli pub and sub: publish and consume through libkiteq-client, with one broker
 * (--broker) or the brokers of a ZooKeeper registry (--registry). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "client/kiteq_client.h"
#include "client/kiteq_cluster.h"
#include "core/clock.h"
#include "core/log.h"
#include "tools/cli_pubsub.h"
#include "tools/common/cli_opts.h"
#include "tools/common/cli_util.h"

#define PROG "kiteq-cli"

/* --- options shared by the subcommands that connect ----------------------------------------- */

struct conn_args {
    const char *broker, *registry, *group, *secret;
    long warmup;
};

static int parse_log_level(void *target, const char *arg)
{
    (void)target;
    enum kq_log_level l;
    if (kq_log_parse_level(arg, &l)) {
        fprintf(stderr, PROG ": bad value for --log-level: '%s'\n", arg);
        return -1;
    }
    kq_log_set_level(l);
    return 0;
}

/* The rows of the connection options (inside a struct cli_opt table). */
#define CONN_OPTS(a)                                                                         \
    CLI_STRING("broker", &(a)->broker, "HOST:PORT",                                         \
               "broker address (this or --registry is required)"),                          \
    CLI_STRING("registry", &(a)->registry, "zk://H:P[,H:P]",                                \
               "find the brokers in ZooKeeper instead, as the original\n"                   \
               "clients do (producers register, consumers publish bindings)"),              \
    CLI_STRING("group", &(a)->group, "G", "client group id (required)"),                    \
    CLI_STRING("secret", &(a)->secret, "S", "group secret (default \"\")"),                  \
    CLI_LONG("warmup", &(a)->warmup, "SEC", 0, 3600,                                        \
             "warm-up seconds announced in ConnMeta (default 0)"),                          \
    CLI_CALL("log-level", parse_log_level, NULL, "L",                                       \
             "debug|info|warn|error for library logs on stderr (default warn)")

static int conn_check(const struct cli_cmd *cmd, const struct conn_args *a)
{
    if (a->broker && a->registry)
        return cli_usage_error(cmd, "give --broker or --registry, not both");
    if (!a->broker && !a->registry)
        return cli_usage_error(cmd, "missing --broker or --registry");
    if (!a->group)
        return cli_usage_error(cmd, "missing --group");
    return CLI_EXIT_OK;
}

/* One broker (--broker) or the brokers of a registry (--registry). */
struct conn {
    struct kq_client *client;
    struct kq_cluster *cluster;
};

/* With --registry: pub_topic is registered as published, bind (may be NULL) as the
 * group's subscription. */
static int conn_open(const struct conn_args *a, struct kq_client_options *o, struct conn *k,
                     const char *pub_topic, const struct kq_cluster_binding *bind)
{
    o->broker = a->broker;
    o->group_id = a->group;
    o->secret = a->secret ? a->secret : "";
    o->warmingup_sec = (int32_t)a->warmup;
    o->reconnect = true;
    char err[256] = "";
    int rc;
    if (a->registry) {
        struct kq_cluster_options co = {.registry = a->registry, .client = *o,
                                        .publish_topics = pub_topic ? &pub_topic : NULL,
                                        .n_publish_topics = pub_topic ? 1 : 0,
                                        .bindings = bind, .n_bindings = bind ? 1 : 0};
        rc = kq_cluster_open(&co, &k->cluster, err, sizeof err);
    } else {
        rc = kq_client_open(o, &k->client, err, sizeof err);
    }
    if (rc) {
        fprintf(stderr, PROG ": cannot connect to %s as %s: %s\n",
                a->registry ? a->registry : a->broker, a->group,
                rc == -EACCES ? err : *err ? err : strerror(-rc));
        return CLI_EXIT_CONNECT;
    }
    return 0;
}

static int conn_publish_async(struct conn *k, const struct kq_message *m, kq_publish_cb cb,
                              void *ud)
{
    return k->cluster ? kq_cluster_publish_async(k->cluster, m, cb, ud)
                      : kq_publish_async(k->client, m, cb, ud);
}

static void conn_close(struct conn *k)
{
    if (k->cluster)
        kq_cluster_close(k->cluster);
    if (k->client)
        kq_client_close(k->client);
}

static int64_t mono_ms(void) { return (int64_t)(kq_mono_us() / 1000); }

static struct timespec abs_mono(int64_t ms_from_now)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t ns = (int64_t)ts.tv_nsec + ms_from_now % 1000 * 1000000;
    ts.tv_sec += (time_t)(ms_from_now / 1000 + ns / 1000000000);
    ts.tv_nsec = (long)(ns % 1000000000);
    return ts;
}

static void cond_init_mono(pthread_cond_t *c)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(c, &ca);
    pthread_condattr_destroy(&ca);
}

static volatile sig_atomic_t interrupted;
static void on_signal(int sig) { interrupted = sig; }

static void catch_signals(void)
{
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* --- pub --------------------------------------------------------------------------------- */

static const struct cli_cmd PUB_CMD = {
    .prog = PROG " pub",
    .usage =
        "usage: " PROG " pub (--broker HOST:PORT | --registry zk://H:P) --group G [--secret S]\n"
        "                     --topic T --type M\n"
        "                     (--body TEXT | --size N) [options]\n"
        "Publish messages and wait for the broker's store acks.\n",
    .epilog = "Failures (with the broker's feedback) go to stderr; one summary line to stdout.\n"
              "Exit: 0 every message acked with status true, 1 otherwise, 2 usage, 3 connect/auth.\n",
};

struct pub_state {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    long inflight, ok, failed;
    char last_id[KQ_CLIENT_ID_LEN + 1];
};

static void pub_done(void *ud, int err, const struct kq_publish_result *r)
{
    struct pub_state *s = ud;
    if (err || !r->status)
        fprintf(stderr, PROG " pub: message %s failed: %s\n", r->message_id,
                err ? r->feedback : *r->feedback ? r->feedback : "status false");
    pthread_mutex_lock(&s->mu);
    if (err || !r->status) {
        s->failed++;
    } else {
        s->ok++;
        memcpy(s->last_id, r->message_id, sizeof s->last_id);
    }
    s->inflight--;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

int cli_cmd_pub(int argc, char **argv)
{
    struct conn_args ca = {0};
    const char *topic = NULL, *type = NULL, *body = NULL, *id = NULL;
    long size = -1, count = 1, expire = -1, limit = -1, pipeline = 1, ack_timeout = 3000;
    bool string_body = false, fly = false, uncommitted = false;
    const struct cli_opt opts[] = {
        CONN_OPTS(&ca),
        CLI_STRING("topic", &topic, "T", "topic (required)"),
        CLI_STRING("type", &type, "M", "message type (required)"),
        CLI_STRING("body", &body, "TEXT", "message body"),
        CLI_LONG("size", &size, "N", 0, 2000000,
                 "body of N generated printable bytes instead of --body"),
        CLI_LONG("count", &count, "N", 1, 1000000000, "number of messages (default 1)"),
        CLI_FLAG("string", &string_body,
                 "send StringMessage (0x12) instead of BytesMessage (0x11)"),
        CLI_FLAG("fly", &fly, "fly message: not stored, best effort"),
        CLI_FLAG("uncommitted", &uncommitted, "two-phase message (commit=false), left uncommitted"),
        CLI_LONG("expire", &expire, "SEC", 0, 100L * 365 * 86400,
                 "expire SEC seconds from now (default: broker default)"),
        CLI_LONG("limit", &limit, "N", -1, 1000000, "deliver limit (default: broker default)"),
        CLI_STRING("id", &id, "ID", "message id (32 hex digits; only with --count 1)"),
        CLI_LONG("pipeline", &pipeline, "N", 1, 100000, "messages in flight at once (default 1)"),
        CLI_LONG("ack-timeout", &ack_timeout, "MS", 1, 3600000,
                 "wait at most MS for each store ack (default 3000)"),
        CLI_OPTS_END,
    };
    int rc;
    if (!cli_opts_parse(&PUB_CMD, opts, argc, argv, &rc))
        return rc;
    if ((rc = conn_check(&PUB_CMD, &ca)))
        return rc;
    const char *err = !topic ? "missing --topic"
                      : !type ? "missing --type"
                      : (body != NULL) == (size >= 0) ? "give exactly one of --body and --size"
                      : id && count != 1 ? "--id needs --count 1"
                      : id && strlen(id) > KQ_CLIENT_ID_LEN ? "--id is longer than 32 characters"
                                                            : NULL;
    if (err)
        return cli_usage_error(&PUB_CMD, "%s", err);

    char *gen = NULL;
    size_t body_len = body ? strlen(body) : (size_t)size;
    if (!body) {
        static const char pattern[] = "abcdefghijklmnopqrstuvwxyz0123456789";
        gen = malloc(body_len + 1);
        if (!gen)
            return CLI_EXIT_FAIL;
        for (size_t i = 0; i < body_len; i++)
            gen[i] = pattern[i % (sizeof pattern - 1)];
        gen[body_len] = 0;
        body = gen;
    }

    struct kq_client_options o = {.ack_timeout_ms = (int)ack_timeout};
    struct conn c = {0};
    rc = conn_open(&ca, &o, &c, topic, NULL);
    if (rc) {
        free(gen);
        return rc;
    }

    struct pub_state s = {0};
    pthread_mutex_init(&s.mu, NULL);
    cond_init_mono(&s.cond);
    struct kq_message m = {.topic = topic, .message_type = type, .deliver_limit = (int32_t)limit,
                           .two_phase = uncommitted, .fly = fly, .string_body = string_body,
                           .body = body, .body_len = body_len};
    if (id)
        snprintf(m.message_id, sizeof m.message_id, "%s", id);
    catch_signals();
    int64_t t0 = mono_ms();
    long sent = 0;
    for (; sent < count && !interrupted; sent++) {
        pthread_mutex_lock(&s.mu);
        while (s.inflight >= pipeline)
            pthread_cond_wait(&s.cond, &s.mu);
        s.inflight++;
        pthread_mutex_unlock(&s.mu);
        m.expired_time = expire >= 0 ? kq_now_sec() + expire : -1;
        m.create_time = 0;
        int prc = conn_publish_async(&c, &m, pub_done, &s);
        if (prc) {
            fprintf(stderr, PROG " pub: message %ld not sent: %s\n", sent + 1, strerror(-prc));
            pthread_mutex_lock(&s.mu);
            s.inflight--;
            s.failed++;
            pthread_mutex_unlock(&s.mu);
        }
    }
    pthread_mutex_lock(&s.mu);
    while (s.inflight > 0)
        pthread_cond_wait(&s.cond, &s.mu);
    pthread_mutex_unlock(&s.mu);
    int64_t ms = mono_ms() - t0;
    conn_close(&c);

    printf("pub: sent=%ld ok=%ld failed=%ld elapsed_ms=%lld rate=%.0f/s", sent, s.ok, s.failed,
           (long long)ms, ms > 0 ? (double)(s.ok + s.failed) * 1000.0 / (double)ms : 0.0);
    if (count == 1 && s.ok == 1)
        printf(" id=%s", s.last_id);
    printf("\n");
    fflush(stdout);
    pthread_cond_destroy(&s.cond);
    pthread_mutex_destroy(&s.mu);
    free(gen);
    return s.ok == count ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

/* --- sub --------------------------------------------------------------------------------- */

static const struct cli_cmd SUB_CMD = {
    .prog = PROG " sub",
    .usage =
        "usage: " PROG " sub --broker HOST:PORT --group G [--secret S] [--count N] [--timeout SEC]\n"
        "                     [--nack]\n"
        "       " PROG " sub --registry zk://H:P --group G --topic T --type M [--bind-type B]\n"
        "                     [--watermark N] [--non-persistent] [...]\n"
        "Print every message delivered to the group as one JSON line on stdout, then ack it.\n",
    .epilog =
        "Line format: {\"messageId\",\"topic\",\"messageType\",\"groupId\",\"body\"} where body is a\n"
        "string when the body is printable UTF-8; otherwise \"body\" is absent and \"bodyBase64\"\n"
        "holds the bytes in standard base64. \"properties\" (an object) is added when the message\n"
        "has any. Deliveries that arrive after --count was reached are nacked and not printed.\n"
        "Exit: 0 after --count messages, or at --timeout when no --count was given, or on\n"
        "SIGINT/SIGTERM without --count; 1 when --timeout expires (or a signal arrives) before\n"
        "--count messages; 2 usage; 3 connect/auth.\n",
};

static int parse_bind_type(void *target, const char *arg)
{
    static const char *const names[] = {"direct", "regx", "fanout"};
    for (int i = 0; i < 3; i++) {
        char digit[2] = {(char)('0' + i), 0};
        if (!strcmp(arg, names[i]) || !strcmp(arg, digit)) {
            *(int *)target = i;
            return 0;
        }
    }
    fprintf(stderr, PROG " sub: bad value for --bind-type: '%s'\n", arg);
    return -1;
}

struct sub_state {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    long seen, count; /* count 0 = unlimited */
    bool nack;
};

static char *message_json(const struct kq_message *m)
{
    cJSON *j = cJSON_CreateObject();
    if (!j)
        return NULL;
    cJSON_AddStringToObject(j, "messageId", m->message_id);
    cJSON_AddStringToObject(j, "topic", m->topic);
    cJSON_AddStringToObject(j, "messageType", m->message_type);
    cJSON_AddStringToObject(j, "groupId", m->group_id);
    if (cli_is_printable_utf8(m->body, m->body_len)) {
        char *s = malloc(m->body_len + 1);
        if (s) {
            memcpy(s, m->body, m->body_len);
            s[m->body_len] = 0;
            cJSON_AddStringToObject(j, "body", s);
            free(s);
        }
    } else {
        char *b64 = cli_base64(m->body, m->body_len);
        if (b64)
            cJSON_AddStringToObject(j, "bodyBase64", b64);
        free(b64);
    }
    if (m->n_properties) {
        cJSON *p = cJSON_AddObjectToObject(j, "properties");
        for (size_t i = 0; p && i < m->n_properties; i++)
            cJSON_AddStringToObject(p, m->properties[i].key, m->properties[i].value);
    }
    char *out = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return out;
}

static bool sub_on_message(void *ud, const struct kq_message *m)
{
    struct sub_state *s = ud;
    pthread_mutex_lock(&s->mu);
    bool take = s->count == 0 || s->seen < s->count;
    if (take) {
        char *line = message_json(m);
        if (line) {
            fputs(line, stdout);
            fputc('\n', stdout);
            fflush(stdout);
            cJSON_free(line);
        }
        s->seen++;
        pthread_cond_signal(&s->cond);
    }
    pthread_mutex_unlock(&s->mu);
    return take && !s->nack;
}

int cli_cmd_sub(int argc, char **argv)
{
    struct conn_args ca = {0};
    long count = 0, timeout = -1, watermark = 1000;
    bool nack = false, non_persistent = false;
    struct kq_cluster_binding bind = {.persistent = true};
    const struct cli_opt opts[] = {
        CONN_OPTS(&ca),
        CLI_STRING("topic", &bind.topic, "T",
                   "with --registry: the binding published for the group (required)"),
        CLI_STRING("type", &bind.message_type, "M", "with --registry: its message type (required)"),
        CLI_CALL("bind-type", parse_bind_type, &bind.bind_type, "B",
                 "direct|regx|fanout (or 0|1|2; default direct)"),
        CLI_LONG("watermark", &watermark, "N", 1, 1000000000,
                 "messages/s for the group in the binding (default 1000)"),
        CLI_FLAG("non-persistent", &non_persistent, "binding with persistent=false (default true)"),
        CLI_LONG("count", &count, "N", 1, 1000000000, "exit after N messages"),
        CLI_LONG("timeout", &timeout, "SEC", 0, 100L * 365 * 86400, "give up after SEC seconds"),
        CLI_FLAG("nack", &nack, "answer every delivery with status false (the broker redelivers)"),
        CLI_OPTS_END,
    };
    int rc;
    if (!cli_opts_parse(&SUB_CMD, opts, argc, argv, &rc))
        return rc;
    if ((rc = conn_check(&SUB_CMD, &ca)))
        return rc;
    if (ca.registry && (!bind.topic || !bind.message_type))
        return cli_usage_error(&SUB_CMD, "--registry needs --topic and --type");
    bind.persistent = !non_persistent;
    bind.watermark = (int)watermark;

    struct sub_state s = {.count = count, .nack = nack};
    pthread_mutex_init(&s.mu, NULL);
    cond_init_mono(&s.cond);
    struct kq_client_options o = {.on_message = sub_on_message, .ud = &s};
    struct conn c = {0};
    rc = conn_open(&ca, &o, &c, NULL, ca.registry ? &bind : NULL);
    if (rc)
        return rc;
    catch_signals();
    int64_t deadline = timeout >= 0 ? mono_ms() + timeout * 1000 : INT64_MAX;
    pthread_mutex_lock(&s.mu);
    /* Short waits so that a signal is noticed promptly. */
    while ((count == 0 || s.seen < count) && !interrupted && mono_ms() < deadline) {
        int64_t left = deadline - mono_ms();
        struct timespec ts = abs_mono(left < 100 ? left : 100);
        pthread_cond_timedwait(&s.cond, &s.mu, &ts);
    }
    bool done = count == 0 || s.seen >= count;
    pthread_mutex_unlock(&s.mu);
    /* close lets the reader finish the delivery in hand, so the last ack is sent */
    conn_close(&c);
    if (!done)
        fprintf(stderr, PROG " sub: %s after %ld of %ld messages\n",
                interrupted ? "interrupted" : "timed out", s.seen, count);
    pthread_cond_destroy(&s.cond);
    pthread_mutex_destroy(&s.mu);
    return done ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

