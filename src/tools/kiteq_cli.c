/* kiteq-cli: publish and consume from the command line (built on libkiteq-client).
 *
 * Subcommands live in the `commands` table below: add a row and a cmd_<name> function to
 * add one. Every subcommand parses its own options (getopt_long) and answers --help. */
#include <errno.h>
#include <getopt.h>
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
#include "tools/cli_groups.h"
#include "tools/cli_mysql.h"
#include "tools/common/cli_util.h"
#include "tools/common/http_client.h"

#define PROG "kiteq-cli"

/* --- options shared by the subcommands that connect ----------------------------------------- */

struct conn_args {
    const char *broker, *registry, *group, *secret;
    long warmup;
};

enum { OPT_BROKER = 1000, OPT_REGISTRY, OPT_GROUP, OPT_SECRET, OPT_WARMUP, OPT_LOG };

#define CONN_LONG_OPTIONS                                                                    \
    {"broker", required_argument, NULL, OPT_BROKER},                                        \
        {"registry", required_argument, NULL, OPT_REGISTRY},                                \
        {"group", required_argument, NULL, OPT_GROUP},                                      \
        {"secret", required_argument, NULL, OPT_SECRET},                                    \
        {"warmup", required_argument, NULL, OPT_WARMUP},                                    \
        {"log-level", required_argument, NULL, OPT_LOG}, {"help", no_argument, NULL, 'h'}

#define CONN_HELP                                                                            \
    "  --broker HOST:PORT   broker address (this or --registry is required)\n"               \
    "  --registry zk://H:P[,H:P]  find the brokers in ZooKeeper instead, as the original\n"  \
    "                       clients do (producers register, consumers publish bindings)\n" \
    "  --group G            client group id (required)\n"                                    \
    "  --secret S           group secret (default \"\")\n"                                   \
    "  --warmup SEC         warm-up seconds announced in ConnMeta (default 0)\n"              \
    "  --log-level L        debug|info|warn|error for library logs on stderr (default warn)\n" \
    "  -h, --help           show this help\n"

/* Returns 1 when the option was a connection option, 0 when not, -1 on a bad value. */
static int conn_arg(struct conn_args *a, int opt, const char *arg)
{
    switch (opt) {
    case OPT_BROKER: a->broker = arg; return 1;
    case OPT_REGISTRY: a->registry = arg; return 1;
    case OPT_GROUP: a->group = arg; return 1;
    case OPT_SECRET: a->secret = arg; return 1;
    case OPT_WARMUP: return cli_parse_long(PROG, "warmup", arg, 0, 3600, &a->warmup) ? -1 : 1;
    case OPT_LOG: {
        enum kq_log_level l;
        if (kq_log_parse_level(arg, &l)) {
            fprintf(stderr, PROG ": bad value for --log-level: '%s'\n", arg);
            return -1;
        }
        kq_log_set_level(l);
        return 1;
    }
    default: return 0;
    }
}

static int conn_check(const char *cmd, const struct conn_args *a)
{
    if (a->broker && a->registry) {
        fprintf(stderr, PROG " %s: give --broker or --registry, not both\n", cmd);
        return -EINVAL;
    }
    const char *missing = !a->broker && !a->registry ? "--broker or --registry"
                          : !a->group                ? "--group"
                                                     : NULL;
    if (missing) {
        fprintf(stderr, PROG " %s: missing %s (see '" PROG " %s --help')\n", cmd, missing, cmd);
        return -EINVAL;
    }
    return 0;
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

static int unknown_option(const char *cmd)
{
    fprintf(stderr, "see '" PROG " %s --help'\n", cmd);
    return CLI_EXIT_USAGE;
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

static const char PUB_HELP[] =
    "usage: " PROG " pub (--broker HOST:PORT | --registry zk://H:P) --group G [--secret S]\n"
    "                     --topic T --type M\n"
    "                     (--body TEXT | --size N) [options]\n"
    "Publish messages and wait for the broker's store acks.\n\n" CONN_HELP
    "  --topic T            topic (required)\n"
    "  --type M             message type (required)\n"
    "  --body TEXT          message body\n"
    "  --size N             body of N generated printable bytes instead of --body\n"
    "  --count N            number of messages (default 1)\n"
    "  --string             send StringMessage (0x12) instead of BytesMessage (0x11)\n"
    "  --fly                fly message: not stored, best effort\n"
    "  --uncommitted        two-phase message (commit=false), left uncommitted\n"
    "  --expire SEC         expire SEC seconds from now (default: broker default)\n"
    "  --limit N            deliver limit (default: broker default)\n"
    "  --id ID              message id (32 hex digits; only with --count 1)\n"
    "  --pipeline N         messages in flight at once (default 1)\n"
    "  --ack-timeout MS     wait at most MS for each store ack (default 3000)\n\n"
    "Failures (with the broker's feedback) go to stderr; one summary line to stdout.\n"
    "Exit: 0 every message acked with status true, 1 otherwise, 2 usage, 3 connect/auth.\n";

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

static int cmd_pub(int argc, char **argv)
{
    static const struct option longopts[] = {
        CONN_LONG_OPTIONS,
        {"topic", required_argument, NULL, 't'},
        {"type", required_argument, NULL, 'm'},
        {"body", required_argument, NULL, 'b'},
        {"size", required_argument, NULL, 's'},
        {"count", required_argument, NULL, 'n'},
        {"string", no_argument, NULL, 'S'},
        {"fly", no_argument, NULL, 'f'},
        {"uncommitted", no_argument, NULL, 'u'},
        {"expire", required_argument, NULL, 'e'},
        {"limit", required_argument, NULL, 'l'},
        {"id", required_argument, NULL, 'i'},
        {"pipeline", required_argument, NULL, 'p'},
        {"ack-timeout", required_argument, NULL, 'a'},
        {0},
    };
    struct conn_args ca = {0};
    const char *topic = NULL, *type = NULL, *body = NULL, *id = NULL;
    long size = -1, count = 1, expire = -1, limit = -1, pipeline = 1, ack_timeout = 3000;
    bool string_body = false, fly = false, uncommitted = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int r = conn_arg(&ca, opt, optarg);
        if (r < 0)
            return CLI_EXIT_USAGE;
        if (r > 0)
            continue;
        int bad = 0;
        switch (opt) {
        case 'h': fputs(PUB_HELP, stdout); return CLI_EXIT_OK;
        case 't': topic = optarg; break;
        case 'm': type = optarg; break;
        case 'b': body = optarg; break;
        case 's': bad = cli_parse_long(PROG, "size", optarg, 0, 2000000, &size); break;
        case 'n': bad = cli_parse_long(PROG, "count", optarg, 1, 1000000000, &count); break;
        case 'S': string_body = true; break;
        case 'f': fly = true; break;
        case 'u': uncommitted = true; break;
        case 'e': bad = cli_parse_long(PROG, "expire", optarg, 0, 100L * 365 * 86400, &expire); break;
        case 'l': bad = cli_parse_long(PROG, "limit", optarg, -1, 1000000, &limit); break;
        case 'i': id = optarg; break;
        case 'p': bad = cli_parse_long(PROG, "pipeline", optarg, 1, 100000, &pipeline); break;
        case 'a': bad = cli_parse_long(PROG, "ack-timeout", optarg, 1, 3600000, &ack_timeout); break;
        default: return unknown_option("pub");
        }
        if (bad)
            return CLI_EXIT_USAGE;
    }
    if (optind < argc) {
        fprintf(stderr, PROG " pub: unexpected argument '%s'\n", argv[optind]);
        return unknown_option("pub");
    }
    if (conn_check("pub", &ca))
        return CLI_EXIT_USAGE;
    const char *err = !topic ? "missing --topic"
                      : !type ? "missing --type"
                      : (body != NULL) == (size >= 0) ? "give exactly one of --body and --size"
                      : id && count != 1 ? "--id needs --count 1"
                      : id && strlen(id) > KQ_CLIENT_ID_LEN ? "--id is longer than 32 characters"
                                                            : NULL;
    if (err) {
        fprintf(stderr, PROG " pub: %s (see '" PROG " pub --help')\n", err);
        return CLI_EXIT_USAGE;
    }

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
    int rc = conn_open(&ca, &o, &c, topic, NULL);
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

static const char SUB_HELP[] =
    "usage: " PROG " sub --broker HOST:PORT --group G [--secret S] [--count N] [--timeout SEC]\n"
    "                     [--nack]\n"
    "       " PROG " sub --registry zk://H:P --group G --topic T --type M [--bind-type B]\n"
    "                     [--watermark N] [--non-persistent] [...]\n"
    "Print every message delivered to the group as one JSON line on stdout, then ack it.\n\n"
    CONN_HELP
    "  --topic T, --type M  with --registry: the binding published for the group (required)\n"
    "  --bind-type B        direct|regx|fanout (or 0|1|2; default direct)\n"
    "  --watermark N        messages/s for the group in the binding (default 1000)\n"
    "  --non-persistent     binding with persistent=false (default true)\n"
    "  --count N            exit after N messages\n"
    "  --timeout SEC        give up after SEC seconds\n"
    "  --nack               answer every delivery with status false (the broker redelivers)\n\n"
    "Line format: {\"messageId\",\"topic\",\"messageType\",\"groupId\",\"body\"} where body is a\n"
    "string when the body is printable UTF-8; otherwise \"body\" is absent and \"bodyBase64\"\n"
    "holds the bytes in standard base64. \"properties\" (an object) is added when the message\n"
    "has any. Deliveries that arrive after --count was reached are nacked and not printed.\n"
    "Exit: 0 after --count messages, or at --timeout when no --count was given, or on\n"
    "SIGINT/SIGTERM without --count; 1 when --timeout expires (or a signal arrives) before\n"
    "--count messages; 2 usage; 3 connect/auth.\n";

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

static int cmd_sub(int argc, char **argv)
{
    static const struct option longopts[] = {
        CONN_LONG_OPTIONS,
        {"count", required_argument, NULL, 'n'},
        {"timeout", required_argument, NULL, 'T'},
        {"nack", no_argument, NULL, 'N'},
        {"topic", required_argument, NULL, 't'},
        {"type", required_argument, NULL, 'm'},
        {"bind-type", required_argument, NULL, 'B'},
        {"watermark", required_argument, NULL, 'w'},
        {"non-persistent", no_argument, NULL, 'P'},
        {0},
    };
    struct conn_args ca = {0};
    long count = 0, timeout = -1, watermark = 1000;
    bool nack = false;
    struct kq_cluster_binding bind = {.persistent = true};
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int r = conn_arg(&ca, opt, optarg);
        if (r < 0)
            return CLI_EXIT_USAGE;
        if (r > 0)
            continue;
        int bad = 0;
        switch (opt) {
        case 'h': fputs(SUB_HELP, stdout); return CLI_EXIT_OK;
        case 'n': bad = cli_parse_long(PROG, "count", optarg, 1, 1000000000, &count); break;
        case 'T': bad = cli_parse_long(PROG, "timeout", optarg, 0, 100L * 365 * 86400, &timeout); break;
        case 'N': nack = true; break;
        case 't': bind.topic = optarg; break;
        case 'm': bind.message_type = optarg; break;
        case 'B':
            if (!strcmp(optarg, "direct") || !strcmp(optarg, "0"))
                bind.bind_type = 0;
            else if (!strcmp(optarg, "regx") || !strcmp(optarg, "1"))
                bind.bind_type = 1;
            else if (!strcmp(optarg, "fanout") || !strcmp(optarg, "2"))
                bind.bind_type = 2;
            else {
                fprintf(stderr, PROG " sub: bad value for --bind-type: '%s'\n", optarg);
                bad = 1;
            }
            break;
        case 'w': bad = cli_parse_long(PROG, "watermark", optarg, 1, 1000000000, &watermark); break;
        case 'P': bind.persistent = false; break;
        default: return unknown_option("sub");
        }
        if (bad)
            return CLI_EXIT_USAGE;
    }
    if (optind < argc) {
        fprintf(stderr, PROG " sub: unexpected argument '%s'\n", argv[optind]);
        return unknown_option("sub");
    }
    if (conn_check("sub", &ca))
        return CLI_EXIT_USAGE;
    if (ca.registry && (!bind.topic || !bind.message_type)) {
        fprintf(stderr, PROG " sub: --registry needs --topic and --type (see '" PROG
                             " sub --help')\n");
        return CLI_EXIT_USAGE;
    }
    bind.watermark = (int)watermark;

    struct sub_state s = {.count = count, .nack = nack};
    pthread_mutex_init(&s.mu, NULL);
    cond_init_mono(&s.cond);
    struct kq_client_options o = {.on_message = sub_on_message, .ud = &s};
    struct conn c = {0};
    int rc = conn_open(&ca, &o, &c, NULL, ca.registry ? &bind : NULL);
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

/* --- admin commands: HTTP to the broker's admin listener (docs/ADMIN.md) ------------------ */

#define ADMIN_HELP                                                                           \
    "  --admin HOST:PORT    the broker's admin address (required)\n"                         \
    "  --token TOKEN        the broker's adminToken, required by requeue, purge and reload\n"  \
    "                       when it is set (default: $KITEQ_ADMIN_TOKEN; the variable keeps\n" \
    "                       it out of the process list)\n"                                      \
    "  --timeout MS         give up after MS milliseconds (default 10000)\n"                  \
    "  -h, --help           show this help\n\n"                                              \
    "Prints the response body (JSON; Prometheus text for metrics) on stdout.\n"               \
    "Exit: 0 on a 2xx answer, 1 otherwise (the error on stderr), 2 usage.\n"

enum { OPT_ADMIN = 2000, OPT_TIMEOUT, OPT_TOPIC, OPT_ID, OPT_ALL, OPT_LIMIT, OPT_TOKEN,
       OPT_AFTER, OPT_DLQ_GROUP };

struct admin_args {
    const char *admin, *topic, *id, *token, *after;
    long timeout, limit;
    bool all;
    char groups[400]; /* dlq requeue --group G (repeatable): "G1,G2", URL-encoded */
};

/* Parse the admin options; *help is set for --help. 0, or CLI_EXIT_USAGE after a message. */
static int admin_parse(const char *cmd, int argc, char **argv, struct admin_args *a, bool *help)
{
    static const struct option longopts[] = {
        {"admin", required_argument, NULL, OPT_ADMIN},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"topic", required_argument, NULL, OPT_TOPIC},
        {"id", required_argument, NULL, OPT_ID},
        {"all", no_argument, NULL, OPT_ALL},
        {"limit", required_argument, NULL, OPT_LIMIT},
        {"token", required_argument, NULL, OPT_TOKEN},
        {"after", required_argument, NULL, OPT_AFTER},
        {"group", required_argument, NULL, OPT_DLQ_GROUP},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    const char *env_token = getenv("KITEQ_ADMIN_TOKEN");
    *a = (struct admin_args){.timeout = 10000, .limit = -1,
                             .token = env_token && *env_token ? env_token : NULL};
    *help = false;
    bool dlq = !strcmp(cmd, "dlq");
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int bad = 0;
        switch (opt) {
        case 'h': *help = true; return 0;
        case OPT_ADMIN: a->admin = optarg; break;
        case OPT_TOKEN: a->token = optarg; break;
        case OPT_TIMEOUT: bad = cli_parse_long(PROG, "timeout", optarg, 1, 3600000, &a->timeout); break;
        case OPT_TOPIC: a->topic = optarg; bad = !dlq; break;
        case OPT_ID: a->id = optarg; bad = !dlq; break;
        case OPT_ALL: a->all = true; bad = !dlq; break;
        case OPT_LIMIT: bad = !dlq || cli_parse_long(PROG, "limit", optarg, 1, 1000, &a->limit); break;
        case OPT_AFTER: a->after = optarg; bad = !dlq; break;
        case OPT_DLQ_GROUP: {
            size_t n = strlen(a->groups);
            if (n && n + 3 < sizeof a->groups)
                strcpy(a->groups + n, "%2C"); /* the comma between groups, encoded */
            n = strlen(a->groups);
            bad = !dlq || n + 3 >= sizeof a->groups ||
                  cli_url_encode(optarg, a->groups + n, sizeof a->groups - n);
            break;
        }
        default: return unknown_option(cmd);
        }
        if (bad) {
            if (!dlq)
                fprintf(stderr, PROG " %s: --%s is an option of 'dlq'\n", cmd,
                        longopts[opt - OPT_ADMIN].name);
            return CLI_EXIT_USAGE;
        }
    }
    if (!a->admin) {
        fprintf(stderr, PROG " %s: missing --admin (see '" PROG " %s --help')\n", cmd, cmd);
        return CLI_EXIT_USAGE;
    }
    return 0;
}

/* One request; the body goes to stdout on 2xx, to stderr otherwise. */
static int admin_call(const char *cmd, const struct admin_args *a, const char *method,
                      const char *target)
{
    struct cli_http_response r;
    char err[512];
    if (cli_http_request(a->admin, method, target, a->token, (int)a->timeout, &r, err,
                         sizeof err)) {
        fprintf(stderr, PROG " %s: %s\n", cmd, err);
        return CLI_EXIT_FAIL;
    }
    bool ok = r.status >= 200 && r.status < 300;
    bool nl = r.body_len && r.body[r.body_len - 1] == '\n';
    if (ok) {
        fwrite(r.body, 1, r.body_len, stdout);
        if (!nl)
            fputc('\n', stdout);
    } else {
        fprintf(stderr, PROG " %s: HTTP %d: %s%s", cmd, r.status, r.body, nl ? "" : "\n");
    }
    cli_http_response_free(&r);
    return ok ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

static int no_more_args(const char *cmd, int argc, char **argv)
{
    if (optind < argc) {
        fprintf(stderr, PROG " %s: unexpected argument '%s'\n", cmd, argv[optind]);
        return unknown_option(cmd);
    }
    return 0;
}

/* stat, binds, metrics, reload: no arguments, one request. */
static int admin_simple(int argc, char **argv, const char *cmd, const char *method,
                        const char *target, const char *help)
{
    struct admin_args a;
    bool want_help;
    int rc = admin_parse(cmd, argc, argv, &a, &want_help);
    if (want_help) {
        fputs(help, stdout);
        return CLI_EXIT_OK;
    }
    if (rc || (rc = no_more_args(cmd, argc, argv)))
        return rc;
    return admin_call(cmd, &a, method, target);
}

static int cmd_stat(int argc, char **argv)
{
    return admin_simple(argc, argv, "stat", "GET", "/stat",
                        "usage: " PROG " stat --admin HOST:PORT\n"
                        "Show the broker's statistics (GET /stat).\n\n" ADMIN_HELP);
}

static int cmd_binds(int argc, char **argv)
{
    return admin_simple(argc, argv, "binds", "GET", "/binds",
                        "usage: " PROG " binds --admin HOST:PORT\n"
                        "Show the subscriptions: groups by topic (GET /binds).\n\n" ADMIN_HELP);
}

static int cmd_metrics(int argc, char **argv)
{
    return admin_simple(argc, argv, "metrics", "GET", "/metrics",
                        "usage: " PROG " metrics --admin HOST:PORT\n"
                        "Show the Prometheus metrics (GET /metrics).\n\n" ADMIN_HELP);
}

static int cmd_reload(int argc, char **argv)
{
    return admin_simple(argc, argv, "reload", "POST", "/reload",
                        "usage: " PROG " reload --admin HOST:PORT\n"
                        "Reload the configuration and policies, like SIGHUP (POST /reload).\n\n"
                        ADMIN_HELP);
}

static const char MSG_HELP[] =
    "usage: " PROG " msg --admin HOST:PORT MESSAGE_ID\n"
    "Show one message (GET /msg/<id>): pending, recently finished or dead, with the history\n"
    "of its events (published, stored, each delivery attempt and its answer, retries, ...).\n\n"
    ADMIN_HELP;

static int cmd_msg(int argc, char **argv)
{
    struct admin_args a;
    bool want_help;
    int rc = admin_parse("msg", argc, argv, &a, &want_help);
    if (want_help) {
        fputs(MSG_HELP, stdout);
        return CLI_EXIT_OK;
    }
    if (rc)
        return rc;
    if (optind >= argc) {
        fprintf(stderr, PROG " msg: missing MESSAGE_ID (see '" PROG " msg --help')\n");
        return CLI_EXIT_USAGE;
    }
    char id[400], target[450];
    if (cli_url_encode(argv[optind++], id, sizeof id)) {
        fprintf(stderr, PROG " msg: MESSAGE_ID too long\n");
        return CLI_EXIT_USAGE;
    }
    if ((rc = no_more_args("msg", argc, argv)))
        return rc;
    snprintf(target, sizeof target, "/msg/%s", id);
    return admin_call("msg", &a, "GET", target);
}

static const char DLQ_HELP[] =
    "usage: " PROG " dlq list    --admin HOST:PORT [--topic T] [--limit N] [--after NEXT]\n"
    "       " PROG " dlq show    --admin HOST:PORT ID\n"
    "       " PROG " dlq requeue --admin HOST:PORT (--id ID | --all) [--group G]...\n"
    "       " PROG " dlq purge   --admin HOST:PORT (--topic T | --all)\n"
    "List, show, requeue or purge dead letters (GET /dlq, GET /dlq/ID, POST /dlq/requeue,\n"
    "POST /dlq/purge). show prints the message with its body (\"body\" as text when it is\n"
    "printable UTF-8, else \"bodyBase64\"), its properties, the groups it failed for with\n"
    "each one's last reason (\"failedGroups\") and the groups that had acked it.\n"
    "A requeue delivers only to the groups the message failed for, or to the --group ones.\n\n"
    "  --topic T            list: only topic T; purge: the topic to purge\n"
    "  --id ID              requeue: the message to deliver again\n"
    "  --all                requeue every dead letter / purge every topic\n"
    "  --group G            requeue: deliver to consumer group G (repeat for more) instead of\n"
    "                       the groups it failed for\n"
    "  --limit N            list: at most N messages (1..1000, broker default 100)\n"
    "  --after NEXT         list: the page after the one whose \"next\" was NEXT\n"
    ADMIN_HELP;

static int cmd_dlq(int argc, char **argv)
{
    struct admin_args a;
    bool want_help;
    int rc = admin_parse("dlq", argc, argv, &a, &want_help);
    if (want_help) {
        fputs(DLQ_HELP, stdout);
        return CLI_EXIT_OK;
    }
    if (rc)
        return rc;
    const char *action = optind < argc ? argv[optind++] : NULL;
    const char *show_id = action && !strcmp(action, "show") && optind < argc ? argv[optind++]
                                                                             : NULL;
    if ((rc = no_more_args("dlq", argc, argv)))
        return rc;
    char topic[400] = "", id[400] = "", after[200] = "", target[1200];
    if ((a.topic && cli_url_encode(a.topic, topic, sizeof topic)) ||
        (a.id && cli_url_encode(a.id, id, sizeof id)) ||
        (show_id && cli_url_encode(show_id, id, sizeof id)) ||
        (a.after && cli_url_encode(a.after, after, sizeof after))) {
        fprintf(stderr, PROG " dlq: --topic, --id or --after too long\n");
        return CLI_EXIT_USAGE;
    }
    const char *err = NULL;
    if (!action) {
        err = "missing action: list, show, requeue or purge";
    } else if (!strcmp(action, "list")) {
        if (a.id || a.all)
            err = "list takes --topic, --limit and --after only";
        else
            snprintf(target, sizeof target, "/dlq?limit=%ld%s%s%s%s",
                     a.limit > 0 ? a.limit : 100, a.topic ? "&topic=" : "", topic,
                     a.after ? "&after=" : "", after);
    } else if (a.after) {
        err = "--after is an option of list";
    } else if (a.groups[0] && strcmp(action, "requeue")) {
        err = "--group is an option of requeue";
    } else if (!strcmp(action, "show")) {
        if (!show_id || a.id || a.all || a.topic || a.limit > 0)
            err = "show takes the message id only";
        else
            snprintf(target, sizeof target, "/dlq/%s", id);
    } else if (!strcmp(action, "requeue")) {
        if (a.topic || a.limit > 0 || !a.id == !a.all)
            err = "requeue takes exactly one of --id and --all";
        else
            snprintf(target, sizeof target, "/dlq/requeue?id=%s%s%s", a.all ? "*" : id,
                     a.groups[0] ? "&groups=" : "", a.groups);
    } else if (!strcmp(action, "purge")) {
        if (a.id || a.limit > 0 || !a.topic == !a.all)
            err = "purge takes exactly one of --topic and --all";
        else
            snprintf(target, sizeof target, "/dlq/purge?topic=%s", a.all ? "*" : topic);
    } else {
        err = "unknown action (want list, show, requeue or purge)";
    }
    if (err) {
        fprintf(stderr, PROG " dlq: %s (see '" PROG " dlq --help')\n", err);
        return CLI_EXIT_USAGE;
    }
    bool get = !strcmp(action, "list") || !strcmp(action, "show");
    return admin_call("dlq", &a, get ? "GET" : "POST", target);
}

/* --- dispatch ------------------------------------------------------------------------------ */

struct command {
    const char *name;
    int (*run)(int argc, char **argv); /* argv[0] is the subcommand name */
    const char *summary;
};

static const struct command commands[] = {
    {"pub", cmd_pub, "publish messages and wait for the store acks"},
    {"sub", cmd_sub, "print delivered messages as JSON lines and ack them"},
    {"stat", cmd_stat, "show broker statistics (admin HTTP)"},
    {"binds", cmd_binds, "show groups subscribed to each topic (admin HTTP)"},
    {"metrics", cmd_metrics, "show Prometheus metrics (admin HTTP)"},
    {"msg", cmd_msg, "show one message and its history (admin HTTP)"},
    {"dlq", cmd_dlq, "list, requeue or purge dead letters (admin HTTP)"},
    {"groups", cli_cmd_groups, "backlog of each consumer group per topic (admin HTTP)"},
    {"purge", cli_cmd_purge, "drop a consumer group's backlog on a topic (admin HTTP)"},
    {"reload", cmd_reload, "reload configuration and policies (admin HTTP)"},
    {"mysql", cli_cmd_mysql, "create (init) the MySQL store's databases and tables"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: " PROG " <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\nRun '" PROG " <command> --help' for the options of a command.\n");
}

int main(int argc, char **argv)
{
    kq_log_set_level(KQ_LOG_WARN);
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return CLI_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(argv[1], commands[i].name))
            continue;
        /* getopt prefixes its messages with argv[0] */
        char name[64];
        snprintf(name, sizeof name, PROG " %s", commands[i].name);
        argv[1] = name;
        return commands[i].run(argc - 1, argv + 1);
    }
    fprintf(stderr, PROG ": unknown command '%s'\n", argv[1]);
    usage(stderr);
    return CLI_EXIT_USAGE;
}
