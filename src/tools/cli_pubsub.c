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
#define CONN_OPTS(a)                                                                               \
    CLI_STRING("broker", &(a)->broker, "HOST:PORT",                                                \
               "broker address (this or --registry is required)"),                                 \
        CLI_STRING("registry", &(a)->registry, "zk://H:P[,H:P]",                                   \
                   "find the brokers in ZooKeeper instead, as the original\n"                      \
                   "clients do (producers register, consumers publish bindings)"),                 \
        CLI_STRING("group", &(a)->group, "G", "client group id (required)"),                       \
        CLI_STRING("secret", &(a)->secret, "S", "group secret (default \"\")"),                    \
        CLI_LONG("warmup", &(a)->warmup, "SEC", 0, 3600,                                           \
                 "warm-up seconds announced in ConnMeta (default 0)"),                             \
        CLI_CALL("log-level", parse_log_level, NULL, "L",                                          \
                 "debug|info|warn|error for library logs on stderr (default warn)")

/* After parsing: --broker defaults to $KITEQ_BROKER when neither --broker nor --registry
 * was given. CLI_EXIT_OK or CLI_EXIT_USAGE after a message. */
static int conn_check(const struct cli_cmd *cmd, struct conn_args *a)
{
    const char *env = getenv("KITEQ_BROKER");
    if (!a->broker && !a->registry && env && *env)
        a->broker = env;
    if (a->broker && a->registry)
        return cli_usage_error(cmd, "give --broker or --registry, not both");
    if (!a->broker && !a->registry)
        return cli_usage_error(cmd, "missing --broker (or $KITEQ_BROKER) or --registry");
    if (a->broker && !cli_is_hostport(a->broker))
        return cli_usage_error(cmd,
                               "bad broker address '%s' (expected HOST:PORT, e.g. "
                               "127.0.0.1:13800)",
                               a->broker);
    if (a->registry && strncmp(a->registry, "zk://", 5))
        return cli_usage_error(cmd, "bad registry '%s' (expected zk://HOST:PORT[,HOST:PORT])",
                               a->registry);
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
        struct kq_cluster_options co = {.registry = a->registry,
                                        .client = *o,
                                        .publish_topics = pub_topic ? &pub_topic : NULL,
                                        .n_publish_topics = pub_topic ? 1 : 0,
                                        .bindings = bind,
                                        .n_bindings = bind ? 1 : 0};
        rc = kq_cluster_open(&co, &k->cluster, err, sizeof err);
    } else {
        rc = kq_client_open(o, &k->client, err, sizeof err);
    }
    if (rc) {
        /* -EINVAL without a reason: an address the resolver or connect refused */
        const char *why = rc == -EACCES || *err ? err
                          : rc == -EINVAL       ? (a->registry ? "bad address (expected "
                                                                 "zk://HOST:PORT[,HOST:PORT])"
                                                               : "bad address (expected HOST:PORT)")
                                                : strerror(-rc);
        fprintf(stderr, PROG ": cannot connect to %s as %s: %s\n",
                a->registry ? a->registry : a->broker, a->group, why);
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
        "usage: " PROG " pub [--broker HOST:PORT | --registry zk://H:P] --group G [--secret S]\n"
        "                     --topic T --type M\n"
        "                     (--body TEXT | --body - | --file PATH | --size N) [options]\n"
        "Publish messages and wait for the broker's store acks.\n",
    .epilog =
        "Failures (with the broker's feedback) go to stderr; one summary line to stdout.\n"
        "Exit: 0 every message acked with status true, 1 otherwise, 2 usage, 3 connect/auth.\n",
};

/* The protocol's limit on a body (the original's 2 MiB). */
#define BODY_MAX 2097152

/* The body from --body TEXT, --body - (stdin), --file PATH or --size N: *gen is what to free.
 * CLI_EXIT_OK, or CLI_EXIT_FAIL / CLI_EXIT_USAGE after a message. */
static int load_body(const char *text, const char *path, long size, const char **body, size_t *len,
                     char **gen)
{
    *gen = NULL;
    if (text && strcmp(text, "-")) {
        *body = text;
        *len = strlen(text);
        return CLI_EXIT_OK;
    }
    if (!text && !path) { /* --size: generated printable bytes */
        static const char pattern[] = "abcdefghijklmnopqrstuvwxyz0123456789";
        if (!(*gen = malloc((size_t)size + 1)))
            return CLI_EXIT_FAIL;
        for (long i = 0; i < size; i++)
            (*gen)[i] = pattern[i % (long)(sizeof pattern - 1)];
        *body = *gen;
        *len = (size_t)size;
        return CLI_EXIT_OK;
    }
    FILE *f = path ? fopen(path, "rb") : stdin;
    const char *name = path ? path : "stdin";
    if (!f) {
        fprintf(stderr, PROG " pub: cannot open --file %s: %s\n", path, strerror(errno));
        return CLI_EXIT_USAGE;
    }
    /* one byte more than allowed, to tell a body over the limit */
    if (!(*gen = malloc(BODY_MAX + 1)))
        return CLI_EXIT_FAIL;
    *len = fread(*gen, 1, BODY_MAX + 1, f);
    int rc = CLI_EXIT_OK;
    if (ferror(f)) {
        fprintf(stderr, PROG " pub: cannot read %s: %s\n", name, strerror(errno));
        rc = CLI_EXIT_FAIL;
    } else if (*len > BODY_MAX) {
        fprintf(stderr, PROG " pub: the body from %s is over %d bytes (the protocol's limit)\n",
                name, BODY_MAX);
        rc = CLI_EXIT_USAGE;
    }
    if (path)
        fclose(f);
    *body = *gen;
    return rc;
}

/* --property k=v (repeatable) and --delay: the message's properties. */
struct props {
    struct kq_property *p;
    size_t n;
};

static int add_property(void *target, const char *arg)
{
    struct props *ps = target;
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg) {
        fprintf(stderr, PROG " pub: bad value for --property: '%s' (expected KEY=VALUE)\n", arg);
        return -1;
    }
    struct kq_property *p = realloc(ps->p, (ps->n + 1) * sizeof *p);
    char *key = strndup(arg, (size_t)(eq - arg));
    if (!p || !key) {
        free(key);
        fprintf(stderr, PROG " pub: out of memory\n");
        return -1;
    }
    ps->p = p;
    ps->p[ps->n++] = (struct kq_property){.key = key, .value = eq + 1};
    return 0;
}

static void props_free(struct props *ps)
{
    for (size_t i = 0; i < ps->n; i++)
        free((char *)ps->p[i].key);
    free(ps->p);
}

/* The property a producer asks for scheduled delivery with (docs/ADMIN.md, kiteq-cli pub). */
#define DELAY_PROPERTY "x-kiteq-delay-ms"

static int add_delay(struct props *ps, long delay_ms, char *buf, size_t len)
{
    for (size_t i = 0; i < ps->n; i++)
        if (!strcmp(ps->p[i].key, DELAY_PROPERTY))
            return cli_usage_error(&PUB_CMD,
                                   "give --delay or --property " DELAY_PROPERTY "=MS, not both");
    snprintf(buf, len, DELAY_PROPERTY "=%ld", delay_ms);
    return add_property(ps, buf) ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

/* --rate: wait until message number `sent` is due (sent / rate seconds after t0). */
static void pace(int64_t t0, long sent, long rate)
{
    int64_t due = t0 + (int64_t)((double)sent * 1000.0 / (double)rate);
    for (int64_t left; !interrupted && (left = due - mono_ms()) > 0;) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(left < 100 ? left : 100) * 1000000};
        nanosleep(&ts, NULL);
    }
}

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
                err            ? r->feedback
                : *r->feedback ? r->feedback
                               : "status false");
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
    const char *topic = NULL, *type = NULL, *text = NULL, *path = NULL, *id = NULL;
    long size = -1, count = 1, expire = -1, limit = -1, pipeline = 1, ack_timeout = 3000;
    long rate = 0, delay = -1;
    bool string_body = false, fly = false, uncommitted = false;
    struct props props = {0};
    const struct cli_opt opts[] = {
        CONN_OPTS(&ca),
        CLI_STRING("topic", &topic, "T", "topic (required)"),
        CLI_STRING("type", &type, "M", "message type (required)"),
        CLI_STRING("body", &text, "TEXT", "message body; - reads it from stdin"),
        CLI_STRING("file", &path, "PATH", "message body: the bytes of file PATH"),
        CLI_LONG("size", &size, "N", 0, 2000000,
                 "body of N generated printable bytes instead of --body"),
        CLI_CALL("property", add_property, &props, "KEY=VALUE",
                 "a message property (repeat for more)"),
        CLI_LONG("delay", &delay, "MS", 0, 100L * 365 * 86400 * 1000,
                 "deliver MS milliseconds after the broker accepts it\n"
                 "(sets the property " DELAY_PROPERTY ")"),
        CLI_LONG("count", &count, "N", 1, 1000000000, "number of messages (default 1)"),
        CLI_LONG("rate", &rate, "MSG/S", 1, 10000000,
                 "send at most MSG/S messages a second (default: as fast as acks come)"),
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
    char delay_prop[64];
    const char *body = NULL;
    size_t body_len = 0;
    char *gen = NULL;
    if (!cli_opts_parse(&PUB_CMD, opts, argc, argv, &rc) || (rc = conn_check(&PUB_CMD, &ca)))
        goto out;
    int sources = (text != NULL) + (path != NULL) + (size >= 0);
    const char *err = !topic             ? "missing --topic"
                      : !type            ? "missing --type"
                      : sources != 1     ? "give exactly one of --body, --file and --size"
                      : id && count != 1 ? "--id needs --count 1"
                      : id && strlen(id) > KQ_CLIENT_ID_LEN ? "--id is longer than 32 characters"
                                                            : NULL;
    if (err) {
        rc = cli_usage_error(&PUB_CMD, "%s", err);
        goto out;
    }
    if ((delay >= 0 && (rc = add_delay(&props, delay, delay_prop, sizeof delay_prop))) ||
        (rc = load_body(text, path, size, &body, &body_len, &gen)))
        goto out;

    struct kq_client_options o = {.ack_timeout_ms = (int)ack_timeout};
    struct conn c = {0};
    if ((rc = conn_open(&ca, &o, &c, topic, NULL)))
        goto out;

    struct pub_state s = {0};
    pthread_mutex_init(&s.mu, NULL);
    cond_init_mono(&s.cond);
    struct kq_message m = {.topic = topic,
                           .message_type = type,
                           .deliver_limit = (int32_t)limit,
                           .two_phase = uncommitted,
                           .fly = fly,
                           .string_body = string_body,
                           .body = body,
                           .body_len = body_len,
                           .properties = props.p,
                           .n_properties = props.n};
    if (id)
        snprintf(m.message_id, sizeof m.message_id, "%s", id);
    catch_signals();
    int64_t t0 = mono_ms();
    long sent = 0;
    for (; sent < count && !interrupted; sent++) {
        if (rate && (pace(t0, sent, rate), interrupted))
            break;
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
    rc = s.ok == count ? CLI_EXIT_OK : CLI_EXIT_FAIL;
out:
    free(gen);
    props_free(&props);
    return rc;
}

/* --- sub --------------------------------------------------------------------------------- */

static const struct cli_cmd SUB_CMD = {
    .prog = PROG " sub",
    .usage =
        "usage: " PROG " sub [--broker HOST:PORT] --group G [--secret S] [--count N]\n"
        "                     [--timeout SEC] [--nack]\n"
        "       " PROG " sub --registry zk://H:P --group G --topic T --type M [--bind-type B]\n"
        "                     [--watermark N] [--non-persistent] [...]\n"
        "Print every message delivered to the group as one JSON line on stdout, then ack it.\n",
    .epilog =
        "Line format: {\"receivedAt\",\"attempt\",\"messageId\",\"topic\",\"messageType\",\n"
        "\"groupId\",\"body\"}. receivedAt: when it arrived (UTC, ISO 8601 with milliseconds).\n"
        "attempt: how many times this sub has received this message id (1 = first; the\n"
        "protocol carries no attempt number, so deliveries to other consumers are not counted:\n"
        "the broker's count is in 'kiteq-cli msg ID'). body is a string when the body is\n"
        "printable UTF-8; otherwise \"body\" is absent and \"bodyBase64\"\n"
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

/* How many times this process received a message id: a small table of recent ids (one slot
 * per hash, a newer id takes the slot), so memory stays fixed however long sub runs. */
#define SEEN_SLOTS 4096

struct seen_slot {
    char id[KQ_CLIENT_ID_LEN + 1];
    long times;
};

struct sub_state {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    long seen, count; /* count 0 = unlimited */
    bool nack;
    struct seen_slot *ids; /* SEEN_SLOTS */
};

/* The attempt number of this delivery as this process saw it (1 = first time). */
static long count_attempt(struct sub_state *s, const char *id)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const char *p = id; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    struct seen_slot *slot = &s->ids[h % SEEN_SLOTS];
    if (strcmp(slot->id, id)) {
        snprintf(slot->id, sizeof slot->id, "%s", id);
        slot->times = 0;
    }
    return ++slot->times;
}

/* Unix milliseconds as UTC "YYYY-MM-DDTHH:MM:SS.mmmZ". */
static void iso_time(char *out, size_t len, int64_t unix_ms)
{
    time_t sec = (time_t)(unix_ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    size_t n = strftime(out, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, len - n, ".%03dZ", (int)(unix_ms % 1000));
}

static char *message_json(const struct kq_message *m, long attempt)
{
    cJSON *j = cJSON_CreateObject();
    if (!j)
        return NULL;
    char received[40];
    iso_time(received, sizeof received, (int64_t)kq_now_ms());
    cJSON_AddStringToObject(j, "receivedAt", received);
    cJSON_AddNumberToObject(j, "attempt", (double)attempt);
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
        char *line = message_json(m, count_attempt(s, m->message_id));
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
    long count = 0, timeout = -1, watermark = -1;
    bool nack = false, non_persistent = false;
    struct kq_cluster_binding bind = {.persistent = true, .bind_type = -1};
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
    bool bind_type_given = bind.bind_type >= 0, watermark_given = watermark >= 0;
    bool binding_opts =
        bind.topic || bind.message_type || bind_type_given || watermark_given || non_persistent;
    if (!ca.registry && binding_opts)
        return cli_usage_error(&SUB_CMD,
                               "--topic, --type, --bind-type, --watermark and "
                               "--non-persistent publish a binding in the registry: they need "
                               "--registry (with --broker the broker's configured bindings apply)");
    if (ca.registry && (!bind.topic || !bind.message_type))
        return cli_usage_error(&SUB_CMD, "--registry needs --topic and --type");
    bind.persistent = !non_persistent;
    bind.watermark = watermark_given ? (int)watermark : 1000;
    bind.bind_type = bind_type_given ? bind.bind_type : 0;

    struct sub_state s = {.count = count, .nack = nack, .ids = calloc(SEEN_SLOTS, sizeof *s.ids)};
    if (!s.ids)
        return CLI_EXIT_FAIL;
    pthread_mutex_init(&s.mu, NULL);
    cond_init_mono(&s.cond);
    struct kq_client_options o = {.on_message = sub_on_message, .ud = &s};
    struct conn c = {0};
    rc = conn_open(&ca, &o, &c, NULL, ca.registry ? &bind : NULL);
    if (rc) {
        free(s.ids);
        return rc;
    }
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
    free(s.ids);
    return done ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}
