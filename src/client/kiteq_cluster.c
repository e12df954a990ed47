/* kq_cluster: brokers from ZooKeeper, one kq_client per broker. See kiteq_cluster.h.
 *
 * Threads: the worker thread owns the zhandle, makes every zoo_* call and opens/closes the
 * broker clients. ZooKeeper's completion thread only sets flags under mu (a synchronous
 * zoo_* call from a watcher would deadlock the client). Publishers take a reference on a
 * broker under mu, so the worker never closes a client that is in use. */
#include "client/kiteq_cluster.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zookeeper/zookeeper.h>

#include "core/clock.h"
#include "core/log.h"

#define MOD "cluster"
#define SESSION_TIMEOUT_MS 5000 /* as the original clients */
#define TICK_MS 1000            /* retry failed broker connections this often */
#define MAX_TRIES 16            /* brokers tried for one publish */
#define ADDR_LEN 128

struct broker {
    char addr[ADDR_LEN];
    struct kq_client *cl; /* NULL until connected; set/cleared by the worker under mu */
    int refs;             /* publishers using cl */
    bool wanted;          /* listed under a watched /kiteq/server/<topic> */
    bool warned;          /* a failed connect was logged */
};

struct topic_servers {
    char *topic;
    char (*addrs)[ADDR_LEN];
    size_t n;
};

struct kq_cluster {
    struct kq_client_options copts; /* template for every broker connection */
    char *group, *secret;
    char hosts[1024];
    char hostname[256];
    char **pub_topics;
    size_t n_pub;
    struct kq_cluster_binding *binds; /* deep copy */
    size_t n_binds;

    zhandle_t *zh; /* worker (and open/close) only */
    pthread_t thread;

    pthread_mutex_t mu;
    pthread_cond_t cond;
    /* under mu */
    bool stop, connected, expired, dirty, need_register, passed;
    struct broker **b;
    size_t nb;
    struct topic_servers *ts; /* one per watched topic, fixed at open */
    size_t nts;
    unsigned rr;
};

/* ---- ZooKeeper ------------------------------------------------------------------------- */

static void on_zk_log(const char *msg) { KQ_DEBUG(MOD, "zk: %s", msg); }

/* ZooKeeper's completion thread: flags only. */
static void on_zk_event(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
    struct kq_cluster *c = ctx;
    pthread_mutex_lock(&c->mu);
    if (type == ZOO_SESSION_EVENT) {
        if (state == ZOO_CONNECTED_STATE) {
            c->connected = true;
            c->need_register = true; /* cheap, and needed after an expiry */
            c->dirty = true;
        } else if (state == ZOO_EXPIRED_SESSION_STATE || state == ZOO_AUTH_FAILED_STATE) {
            c->connected = false;
            c->expired = true;
        } else {
            c->connected = false;
        }
    } else if (type != ZOO_NOTWATCHING_EVENT) {
        c->dirty = true; /* a /kiteq/server/<topic> list changed */
    }
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
}

static int ensure_path(zhandle_t *zh, const char *path)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char ch = *p;
        *p = '\0';
        int rc = zoo_create(zh, buf, NULL, -1, &ZOO_OPEN_ACL_UNSAFE, ZOO_PERSISTENT, NULL, 0);
        if (rc != ZOK && rc != ZNODEEXISTS)
            return rc;
        if (ch == '\0')
            return ZOK;
        *p = ch;
    }
}

/* JSON string as Go's encoding/json writes it (HTML-safe escapes included). */
static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p == '\n')
            fputs("\\n", f);
        else if (*p == '\r')
            fputs("\\r", f);
        else if (*p == '\t')
            fputs("\\t", f);
        else if (*p < 0x20 || *p == '<' || *p == '>' || *p == '&')
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

/* The original clients' JSON array of this group's bindings of one topic. */
static char *bindings_json(const struct kq_cluster *c, const char *topic)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (!f)
        return NULL;
    fputc('[', f);
    bool first = true;
    for (size_t i = 0; i < c->n_binds; i++) {
        const struct kq_cluster_binding *b = &c->binds[i];
        if (strcmp(b->topic, topic) != 0)
            continue;
        fputs(first ? "{\"groupId\":" : ",{\"groupId\":", f);
        first = false;
        json_str(f, c->group);
        fputs(",\"topic\":", f);
        json_str(f, b->topic);
        fputs(",\"messageType\":", f);
        json_str(f, b->message_type);
        fprintf(f, ",\"bindType\":%d,\"version\":\"1.0.0\",\"watermark\":%d,\"persistent\":%s}",
                b->bind_type, b->watermark, b->persistent ? "true" : "false");
    }
    fputc(']', f);
    fclose(f);
    return out;
}

/* Producer and consumer nodes. Returns ZOK or the first error. */
static int do_register(struct kq_cluster *c)
{
    char path[1024];
    int rc = ZOK;
    for (size_t i = 0; i < c->n_pub && rc == ZOK; i++) {
        snprintf(path, sizeof path, "/kiteq/pub/%s/%s/%s", c->pub_topics[i], c->group, c->hostname);
        rc = ensure_path(c->zh, path);
    }
    for (size_t i = 0; i < c->n_binds && rc == ZOK; i++) {
        bool done_before = false; /* one node per topic */
        for (size_t k = 0; k < i && !done_before; k++)
            done_before = strcmp(c->binds[k].topic, c->binds[i].topic) == 0;
        if (done_before)
            continue;
        char *json = bindings_json(c, c->binds[i].topic);
        if (!json)
            return ZSYSTEMERROR;
        snprintf(path, sizeof path, "/kiteq/sub/%s/%s-bind", c->binds[i].topic, c->group);
        rc = ensure_path(c->zh, path); /* created empty if missing, then set */
        if (rc == ZOK)
            rc = zoo_set(c->zh, path, json, (int)strlen(json), -1);
        if (rc == ZOK)
            KQ_INFO(MOD, "bindings published %s %s", path, json);
        free(json);
    }
    return rc;
}

/* Read (and watch) /kiteq/server/<topic> for every topic. */
static int refresh_servers(struct kq_cluster *c)
{
    for (size_t i = 0; i < c->nts; i++) {
        char path[1024];
        snprintf(path, sizeof path, "/kiteq/server/%s", c->ts[i].topic);
        struct String_vector kids = {0, NULL};
        int rc = zoo_get_children(c->zh, path, 1, &kids);
        if (rc == ZNONODE) {
            rc = zoo_exists(c->zh, path, 1, NULL); /* tells us when a broker creates it */
            rc = rc == ZNONODE ? ZOK : rc == ZOK ? ZNONODE : rc; /* created meanwhile: again */
        }
        if (rc != ZOK)
            return rc;
        char(*addrs)[ADDR_LEN] = calloc(kids.count ? (size_t)kids.count : 1, ADDR_LEN);
        if (!addrs) {
            deallocate_String_vector(&kids);
            return ZSYSTEMERROR;
        }
        for (int k = 0; k < kids.count; k++)
            snprintf(addrs[k], ADDR_LEN, "%s", kids.data[k]);
        pthread_mutex_lock(&c->mu);
        free(c->ts[i].addrs);
        c->ts[i].addrs = addrs;
        c->ts[i].n = (size_t)kids.count;
        pthread_mutex_unlock(&c->mu);
        KQ_DEBUG(MOD, "topic=%s brokers=%d", c->ts[i].topic, kids.count);
        deallocate_String_vector(&kids);
    }
    return ZOK;
}

/* ---- broker connections ---------------------------------------------------------------- */

static struct broker *find_broker(struct kq_cluster *c, const char *addr)
{
    for (size_t i = 0; i < c->nb; i++)
        if (strcmp(c->b[i]->addr, addr) == 0)
            return c->b[i];
    return NULL;
}

/* Open connections to listed brokers, close those no longer listed (once unused). */
static void reconcile(struct kq_cluster *c)
{
    struct broker *closing[64], *opening[64];
    size_t n_close = 0, n_open = 0;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->nb; i++)
        c->b[i]->wanted = false;
    for (size_t t = 0; t < c->nts; t++) {
        for (size_t k = 0; k < c->ts[t].n; k++) {
            struct broker *b = find_broker(c, c->ts[t].addrs[k]);
            if (!b) {
                struct broker **v = realloc(c->b, (c->nb + 1) * sizeof *v);
                if (!v || !(b = calloc(1, sizeof *b))) {
                    if (v)
                        c->b = v;
                    continue;
                }
                c->b = v;
                snprintf(b->addr, sizeof b->addr, "%s", c->ts[t].addrs[k]);
                c->b[c->nb++] = b;
            }
            b->wanted = true;
        }
    }
    for (size_t i = 0; i < c->nb;) {
        struct broker *b = c->b[i];
        if (!b->wanted && b->refs == 0 && n_close < 64) {
            closing[n_close++] = b;
            c->b[i] = c->b[--c->nb];
            continue;
        }
        if (b->wanted && !b->cl && n_open < 64)
            opening[n_open++] = b; /* only the worker frees entries: safe to use unlocked */
        i++;
    }
    pthread_mutex_unlock(&c->mu);

    for (size_t i = 0; i < n_close; i++) {
        KQ_INFO(MOD, "broker %s left the registry; closing", closing[i]->addr);
        if (closing[i]->cl)
            kq_client_close(closing[i]->cl);
        free(closing[i]);
    }
    for (size_t i = 0; i < n_open; i++) {
        struct broker *b = opening[i];
        struct kq_client_options o = c->copts;
        o.broker = b->addr;
        struct kq_client *cl = NULL;
        char err[256] = "";
        int rc = kq_client_open(&o, &cl, err, sizeof err);
        if (rc) {
            if (!b->warned)
                KQ_WARN(MOD, "cannot connect to broker %s: %s; retrying", b->addr,
                        *err ? err : strerror(-rc));
            b->warned = true;
            continue;
        }
        KQ_INFO(MOD, "connected to broker %s", b->addr);
        pthread_mutex_lock(&c->mu);
        b->cl = cl;
        b->warned = false;
        pthread_mutex_unlock(&c->mu);
    }
}

static void *worker_main(void *arg)
{
    struct kq_cluster *c = arg;
    pthread_mutex_lock(&c->mu);
    while (!c->stop) {
        if (!c->expired && !(c->connected && (c->dirty || c->need_register))) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += TICK_MS / 1000;
            pthread_cond_timedwait(&c->cond, &c->mu, &ts);
            if (c->stop)
                break;
        }
        bool expired = c->expired, connected = c->connected;
        bool reg = connected && c->need_register, dirty = connected && c->dirty;
        c->expired = false;
        if (reg)
            c->need_register = false;
        if (dirty)
            c->dirty = false;
        pthread_mutex_unlock(&c->mu);

        int rc = ZOK;
        if (expired) {
            KQ_WARN(MOD, "ZooKeeper session expired; opening a new one");
            zookeeper_close(c->zh);
            c->zh =
                zookeeper_init2(c->hosts, on_zk_event, SESSION_TIMEOUT_MS, NULL, c, 0, on_zk_log);
            if (!c->zh)
                KQ_ERROR(MOD, "cannot create a ZooKeeper handle: %s", strerror(errno));
        }
        if (!c->zh)
            reg = dirty = false;
        if (reg && (rc = do_register(c)) != ZOK)
            KQ_WARN(MOD, "registering in ZooKeeper failed (%s); will retry", zerror(rc));
        int rc2 = dirty ? refresh_servers(c) : ZOK;
        if (rc2 != ZOK)
            KQ_WARN(MOD, "reading brokers from ZooKeeper failed (%s); will retry", zerror(rc2));
        reconcile(c);

        pthread_mutex_lock(&c->mu);
        if (!c->zh)
            c->expired = true; /* try again next tick */
        if (rc != ZOK)
            c->need_register = true;
        if (rc2 != ZOK)
            c->dirty = true;
        if (connected && rc == ZOK && rc2 == ZOK)
            c->passed = true;
        pthread_cond_broadcast(&c->cond);
        if (!c->zh || rc != ZOK || rc2 != ZOK) { /* do not spin on a failing call */
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&c->cond, &c->mu, &ts);
        }
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* ---- public API ------------------------------------------------------------------------ */

static void free_cluster(struct kq_cluster *c)
{
    for (size_t i = 0; i < c->nb; i++) {
        if (c->b[i]->cl)
            kq_client_close(c->b[i]->cl);
        free(c->b[i]);
    }
    free(c->b);
    for (size_t i = 0; i < c->nts; i++) {
        free(c->ts[i].topic);
        free(c->ts[i].addrs);
    }
    free(c->ts);
    for (size_t i = 0; i < c->n_pub; i++)
        free(c->pub_topics[i]);
    free(c->pub_topics);
    for (size_t i = 0; i < c->n_binds; i++) {
        free((char *)c->binds[i].topic);
        free((char *)c->binds[i].message_type);
    }
    free(c->binds);
    free(c->group);
    free(c->secret);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cond);
    free(c);
}

static int add_topic(struct kq_cluster *c, const char *t)
{
    for (size_t i = 0; i < c->nts; i++)
        if (strcmp(c->ts[i].topic, t) == 0)
            return 0;
    struct topic_servers *v = realloc(c->ts, (c->nts + 1) * sizeof *v);
    if (!v)
        return -ENOMEM;
    c->ts = v;
    memset(&v[c->nts], 0, sizeof *v);
    if (!(v[c->nts].topic = strdup(t)))
        return -ENOMEM;
    c->nts++;
    return 0;
}

/* Deep-copies the options. */
static int copy_options(struct kq_cluster *c, const struct kq_cluster_options *o)
{
    c->copts = o->client;
    c->copts.reconnect = true;
    c->group = strdup(o->client.group_id);
    c->secret = strdup(o->client.secret ? o->client.secret : "");
    if (!c->group || !c->secret)
        return -ENOMEM;
    c->copts.group_id = c->group;
    c->copts.secret = c->secret;
    c->pub_topics = calloc(o->n_publish_topics + 1, sizeof *c->pub_topics);
    c->binds = calloc(o->n_bindings + 1, sizeof *c->binds);
    if (!c->pub_topics || !c->binds)
        return -ENOMEM;
    for (; c->n_pub < o->n_publish_topics; c->n_pub++) {
        if (!(c->pub_topics[c->n_pub] = strdup(o->publish_topics[c->n_pub])) ||
            add_topic(c, o->publish_topics[c->n_pub]) != 0)
            return -ENOMEM;
    }
    for (; c->n_binds < o->n_bindings; c->n_binds++) {
        const struct kq_cluster_binding *s = &o->bindings[c->n_binds];
        struct kq_cluster_binding *d = &c->binds[c->n_binds];
        *d = *s;
        d->topic = strdup(s->topic);
        d->message_type = strdup(s->message_type);
        if (d->watermark <= 0)
            d->watermark = 1000;
        if (!d->topic || !d->message_type || add_topic(c, s->topic) != 0) {
            c->n_binds++; /* so that free_cluster frees what was copied */
            return -ENOMEM;
        }
    }
    return 0;
}

static bool all_topics_served(struct kq_cluster *c)
{
    for (size_t t = 0; t < c->nts; t++) {
        bool ok = false;
        for (size_t k = 0; k < c->ts[t].n && !ok; k++) {
            struct broker *b = find_broker(c, c->ts[t].addrs[k]);
            ok = b && b->cl;
        }
        if (!ok)
            return false;
    }
    return true;
}

int kq_cluster_open(const struct kq_cluster_options *o, struct kq_cluster **out, char *err,
                    size_t errlen)
{
    *out = NULL;
    if (!o->client.group_id || !*o->client.group_id) {
        snprintf(err, errlen, "a group id is required");
        return -EINVAL;
    }
    for (size_t i = 0; i < o->n_bindings; i++) {
        const struct kq_cluster_binding *b = &o->bindings[i];
        if (!b->topic || !b->message_type || b->bind_type < 0 || b->bind_type > 2) {
            snprintf(err, errlen, "binding %zu: needs topic, message type, bind type 0-2", i);
            return -EINVAL;
        }
    }
    const char *uri = o->registry;
    size_t n = uri && strncmp(uri, "zk://", 5) == 0 ? strcspn(uri + 5, "?/") : 0;
    struct kq_cluster *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (n == 0 || n >= sizeof c->hosts) {
        snprintf(err, errlen, "bad registry '%s' (want zk://host:port[,host:port])",
                 uri ? uri : "");
        free_cluster(c);
        return -EINVAL;
    }
    memcpy(c->hosts, uri + 5, n);
    if (gethostname(c->hostname, sizeof c->hostname) != 0 || !c->hostname[0])
        snprintf(c->hostname, sizeof c->hostname, "localhost");
    int rc = copy_options(c, o);
    if (rc) {
        snprintf(err, errlen, "out of memory");
        free_cluster(c);
        return rc;
    }
    zoo_set_debug_level(ZOO_LOG_LEVEL_WARN); /* its lines go to our debug log */
    c->zh = zookeeper_init2(c->hosts, on_zk_event, SESSION_TIMEOUT_MS, NULL, c, 0, on_zk_log);
    if (!c->zh) {
        rc = -errno;
        snprintf(err, errlen, "ZooKeeper handle for %s: %s", c->hosts, strerror(errno));
        free_cluster(c);
        return rc ? rc : -EINVAL;
    }
    if ((rc = pthread_create(&c->thread, NULL, worker_main, c)) != 0) {
        snprintf(err, errlen, "pthread_create: %s", strerror(rc));
        zookeeper_close(c->zh);
        free_cluster(c);
        return -rc;
    }
    /* Wait for ZooKeeper, the first pass, and ideally a broker for every topic. */
    int wait_ms = o->open_wait_ms > 0 ? o->open_wait_ms : 5000;
    uint64_t end = kq_mono_us() / 1000 + (uint64_t)wait_ms;
    pthread_mutex_lock(&c->mu);
    while (!(c->passed && all_topics_served(c)) && kq_mono_us() / 1000 < end) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 50 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&c->cond, &c->mu, &ts);
    }
    bool passed = c->passed;
    pthread_mutex_unlock(&c->mu);
    if (!passed) {
        snprintf(err, errlen, "ZooKeeper %s not reachable within %d ms", c->hosts, wait_ms);
        kq_cluster_close(c);
        return -ETIMEDOUT;
    }
    *out = c;
    return 0;
}

/* Up to max connected brokers of topic, round robin, each with a reference taken. */
static size_t pick(struct kq_cluster *c, const char *topic, struct broker **out, size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&c->mu);
    for (size_t t = 0; t < c->nts; t++) {
        if (strcmp(c->ts[t].topic, topic) != 0)
            continue;
        size_t cnt = c->ts[t].n;
        unsigned start = c->rr++;
        for (size_t k = 0; k < cnt && n < max; k++) {
            struct broker *b = find_broker(c, c->ts[t].addrs[(start + k) % cnt]);
            if (b && b->cl) {
                b->refs++;
                out[n++] = b;
            }
        }
        break;
    }
    pthread_mutex_unlock(&c->mu);
    return n;
}

static void unref(struct kq_cluster *c, struct broker **b, size_t n)
{
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < n; i++)
        b[i]->refs--;
    pthread_mutex_unlock(&c->mu);
}

int kq_cluster_publish(struct kq_cluster *c, const struct kq_message *m,
                       struct kq_publish_result *r)
{
    if (!m || !m->topic)
        return -EINVAL;
    struct broker *b[MAX_TRIES];
    size_t n = pick(c, m->topic, b, MAX_TRIES);
    int rc = -ENOTCONN;
    for (size_t i = 0; i < n && rc == -ENOTCONN; i++)
        rc = kq_publish(b[i]->cl, m, r); /* -ENOTCONN: not sent, so try the next broker */
    unref(c, b, n);
    if (n == 0 && r) {
        memset(r, 0, sizeof *r);
        snprintf(r->feedback, sizeof r->feedback, "no broker connected for topic %s", m->topic);
    }
    return rc;
}

int kq_cluster_publish_async(struct kq_cluster *c, const struct kq_message *m, kq_publish_cb cb,
                             void *ud)
{
    if (!m || !m->topic)
        return -EINVAL;
    struct broker *b[MAX_TRIES];
    size_t n = pick(c, m->topic, b, MAX_TRIES);
    int rc = -ENOTCONN;
    for (size_t i = 0; i < n && rc == -ENOTCONN; i++)
        rc = kq_publish_async(b[i]->cl, m, cb, ud);
    unref(c, b, n);
    return rc;
}

size_t kq_cluster_brokers(struct kq_cluster *c, const char *topic, char (*out)[128], size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&c->mu);
    for (size_t t = 0; t < c->nts; t++) {
        if (strcmp(c->ts[t].topic, topic) != 0)
            continue;
        for (size_t k = 0; k < c->ts[t].n; k++) {
            struct broker *b = find_broker(c, c->ts[t].addrs[k]);
            if (b && b->cl) {
                if (n < max)
                    snprintf(out[n], 128, "%s", b->addr);
                n++;
            }
        }
    }
    pthread_mutex_unlock(&c->mu);
    return n;
}

void kq_cluster_close(struct kq_cluster *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    if (c->zh)
        zookeeper_close(c->zh);
    free_cluster(c);
}
