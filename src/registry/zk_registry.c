/* ZooKeeper registry: a worker thread owns the zhandle and runs every blocking zoo_* call;
 * ZooKeeper's threads (watchers) only queue jobs for it; results reach the loop as events
 * through the registry's mailbox (core/mailbox). See zk_registry.h for the contract. */
#include "registry/zk_registry.h"

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zookeeper/zookeeper.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/mailbox.h"
#include "registry/bindings.h"

#define MOD "zk"
#define SESSION_TIMEOUT_MS 5000 /* the original hard-codes 5 s */
#define CONNECT_WINDOW_MS 5000  /* not (re)connected after this long: close and back off */
#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 30000
#define SYNC_RETRY_MS 1000 /* a failed publish/read pass is retried after this long */

/* ---- small helpers --------------------------------------------------------------------- */

struct strv {
    char **v;
    size_t n;
};

static void strv_free(struct strv *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    s->v = NULL;
    s->n = 0;
}

static int strv_copy(struct strv *dst, char *const *src, size_t n)
{
    dst->v = calloc(n ? n : 1, sizeof *dst->v);
    dst->n = 0;
    if (!dst->v)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (!(dst->v[i] = strdup(src[i]))) {
            strv_free(dst);
            return -ENOMEM;
        }
        dst->n++;
    }
    return 0;
}

static bool strv_has(const struct strv *s, const char *x)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i], x) == 0)
            return true;
    return false;
}

static int strv_add(struct strv *s, const char *x)
{
    char **v = realloc(s->v, (s->n + 1) * sizeof *v);
    if (!v)
        return -ENOMEM;
    s->v = v;
    if (!(v[s->n] = strdup(x)))
        return -ENOMEM;
    s->n++;
    return 0;
}

static void strv_del(struct strv *s, size_t i)
{
    free(s->v[i]);
    s->v[i] = s->v[--s->n];
}

static uint64_t now_ms(void) { return kq_mono_us() / 1000; }

int kq_zk_parse_uri(const char *uri, char *out, size_t outlen)
{
    if (!uri || strncmp(uri, "zk://", 5) != 0)
        return -EINVAL;
    const char *h = uri + 5;
    size_t n = strcspn(h, "?/");
    if (n == 0 || n >= outlen)
        return -EINVAL;
    memcpy(out, h, n);
    out[n] = '\0';
    return 0;
}

/* ---- jobs (to the worker) and events (to the loop) ------------------------------------- */

enum job_kind {
    JOB_SESSION,
    JOB_READ_TOPIC,
    JOB_READ_GROUP,
    JOB_SET_TOPICS,
    JOB_STOP,
    JOB_WATCH_SERVERS,
    JOB_READ_SERVERS,
    JOB_TAKEOVER_LOCK,
    JOB_TAKEOVER_FINISH
};

struct job {
    struct job *next;
    enum job_kind kind;
    unsigned gen; /* handle generation of a watcher job; stale ones are dropped */
    int state;    /* JOB_SESSION: ZOO_*_STATE */
    char *topic, *group;
    struct strv topics; /* JOB_SET_TOPICS */
};

enum ev_kind { EV_BINDINGS, EV_STATE, EV_STOPPED, EV_SERVERS, EV_TAKEOVER, EV_REGISTERED };

struct event {
    struct kq_mail mail;
    enum ev_kind kind;
    const char *state;
    char *topic, *group;
    struct kq_binding *binds;
    size_t n;               /* EV_BINDINGS: binds; EV_REGISTERED: topics published */
    struct strv alive, all; /* EV_SERVERS */
    int result;             /* EV_TAKEOVER (topic = the dead server) */
};

/* Last good JSON of each group of a topic, to report changes only and removals. */
struct group_cache {
    char *name;
    char *json;
};

struct topic_cache {
    char *name;
    struct group_cache *g;
    size_t n;
};

/* Per-handle watcher context: which registry, which generation of the handle. */
struct hctx {
    struct kq_zk_registry *r;
    unsigned gen;
};

struct kq_zk_registry {
    /* loop thread only */
    uv_loop_t *loop;
    struct kq_zk_events ev;
    void *ud;
    const char *state;
    bool stopping;
    void (*done)(void *ud);
    void *done_ud;
    pthread_t thread;

    /* shared: the worker's job queue (under mu), events to the loop (posted by the worker) */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct job *jobs, **jobs_tail;
    struct kq_mailbox events;

    /* worker thread only */
    char hosts[1024];
    char *bind;
    zhandle_t *zh;
    unsigned gen;
    bool connected;
    bool need_sync;    /* publish + re-read everything at the next chance */
    bool alive_done;   /* alive/all server nodes published in this session */
    uint64_t since;    /* handle created / connection lost (while !connected) */
    uint64_t retry_at; /* when !zh: open a new handle at this time */
    uint64_t sync_at;  /* when need_sync: not before this time */
    int backoff;
    struct strv topics;    /* served */
    struct strv published; /* server nodes created in this session */
    struct topic_cache *tc;
    size_t n_tc;
    char *takeover_key; /* NULL = servers not watched (kq_zk_registry_watch_servers) */
};

static void push_job(struct kq_zk_registry *r, struct job *j)
{
    pthread_mutex_lock(&r->mu);
    j->next = NULL;
    *r->jobs_tail = j;
    r->jobs_tail = &j->next;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->mu);
}

static void free_job(struct job *j)
{
    free(j->topic);
    free(j->group);
    strv_free(&j->topics);
    free(j);
}

static void free_event(struct event *e)
{
    if (e->kind == EV_BINDINGS)
        kq_bindings_free(e->binds, e->n);
    strv_free(&e->alive);
    strv_free(&e->all);
    free(e->topic);
    free(e->group);
    free(e);
}

/* The loop closes the mailbox only on the worker's last event (EV_STOPPED), so a refused post
 * means a bug: say so rather than lose the event silently. */
static void push_event(struct kq_zk_registry *r, struct event *e)
{
    if (kq_mailbox_post(&r->events, &e->mail) != 0) {
        KQ_ERROR(MOD, "event %d after the registry closed: dropped", (int)e->kind);
        free_event(e);
    }
}

static void post_state(struct kq_zk_registry *r, const char *state)
{
    struct event *e = calloc(1, sizeof *e);
    if (!e) {
        KQ_ERROR(MOD, "out of memory, the registry state \"%s\" is not reported", state);
        return;
    }
    e->kind = EV_STATE;
    e->state = state;
    push_event(r, e);
}

static void post_registered(struct kq_zk_registry *r)
{
    struct event *e = calloc(1, sizeof *e);
    if (!e) {
        KQ_ERROR(MOD, "out of memory, the registration of %s is not reported", r->bind);
        return;
    }
    e->kind = EV_REGISTERED;
    e->n = r->published.n;
    push_event(r, e);
}

/* binds (may be NULL when n == 0) is handed over to the loop. */
static void post_bindings(struct kq_zk_registry *r, const char *topic, const char *group,
                          struct kq_binding *binds, size_t n)
{
    struct event *e = calloc(1, sizeof *e);
    if (e) {
        e->topic = strdup(topic);
        e->group = strdup(group);
    }
    if (!e || !e->topic || !e->group) {
        KQ_ERROR(MOD, "out of memory, binding change of %s/%s lost", topic, group);
        if (e) {
            free(e->topic);
            free(e->group);
            free(e);
        }
        kq_bindings_free(binds, n);
        return;
    }
    e->kind = EV_BINDINGS;
    e->binds = binds;
    e->n = n;
    push_event(r, e);
}

#define ALIVE "/kiteq/alive_servers"
#define TAKEOVER "/kiteq/takeover"

/* ---- ZooKeeper's threads: only queue work ---------------------------------------------- */

static void on_zk_log(const char *msg) { KQ_DEBUG(MOD, "client: %s", msg); }

/* The global watcher (every read uses watch=1). Runs on ZooKeeper's completion thread. */
static void on_zk_event(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
    struct hctx *h = ctx;
    static const char sub[] = "/kiteq/sub/";
    struct job *j = calloc(1, sizeof *j);
    if (!j) { /* a watch fires once: this change may go unseen */
        KQ_ERROR(MOD, "out of memory, ZooKeeper event type=%d path=%s lost", type,
                 path ? path : "");
        return;
    }
    j->gen = h->gen;
    if (type == ZOO_SESSION_EVENT) {
        j->kind = JOB_SESSION;
        j->state = state;
        push_job(h->r, j);
        return;
    }
    if (path && strcmp(path, ALIVE) == 0 && type == ZOO_CHILD_EVENT) {
        j->kind = JOB_READ_SERVERS;
        push_job(h->r, j);
        return;
    }
    if (!path || strncmp(path, sub, sizeof sub - 1) != 0 || type == ZOO_NOTWATCHING_EVENT) {
        free(j); /* /kiteq/server/... changes mean nothing to a broker */
        return;
    }
    const char *t = path + sizeof sub - 1;
    const char *slash = strchr(t, '/');
    j->topic = slash ? strndup(t, (size_t)(slash - t)) : strdup(t);
    j->kind = JOB_READ_TOPIC;
    if (slash && type == ZOO_CHANGED_EVENT) {
        const char *child = slash + 1;
        size_t len = strlen(child);
        if (len > 5 && strcmp(child + len - 5, "-bind") == 0) {
            j->kind = JOB_READ_GROUP;
            j->group = strndup(child, len - 5);
        }
    }
    if (!j->topic || (j->kind == JOB_READ_GROUP && !j->group)) {
        KQ_ERROR(MOD, "out of memory, ZooKeeper event type=%d path=%s lost", type, path);
        free_job(j);
        return;
    }
    push_job(h->r, j);
}

/* ---- worker: ZooKeeper operations ------------------------------------------------------ */

/* Errors that mean "the session/connection is gone": retry the whole pass later. */
static bool conn_error(int rc)
{
    return rc == ZCONNECTIONLOSS || rc == ZOPERATIONTIMEOUT || rc == ZSESSIONEXPIRED ||
           rc == ZINVALIDSTATE || rc == ZCLOSING || rc == ZSESSIONMOVED;
}

static int create_node(struct kq_zk_registry *r, const char *path, int mode)
{
    int rc = zoo_create(r->zh, path, NULL, -1, &ZOO_OPEN_ACL_UNSAFE, mode, NULL, 0);
    return rc == ZNODEEXISTS ? ZOK : rc;
}

/* Create path and its parents as persistent nodes when missing. */
static int ensure_path(struct kq_zk_registry *r, const char *path)
{
    char buf[1024];
    size_t len = strlen(path);
    if (len >= sizeof buf)
        return ZBADARGUMENTS;
    memcpy(buf, path, len + 1);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            int rc = create_node(r, buf, ZOO_PERSISTENT);
            if (rc != ZOK)
                return rc;
            *p = c;
            if (c == '\0')
                return ZOK;
        }
    }
}

/* An ephemeral node, deleted first (it may be left by our previous, expired session).
 * One that this very session owns (a connection resumed after ZooKeeper was briefly away)
 * is kept: deleting it would make every client drop its connections to us for nothing. */
static int replace_ephemeral(struct kq_zk_registry *r, const char *parent)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", parent, r->bind);
    struct Stat st;
    const clientid_t *id = zoo_client_id(r->zh);
    int rc = zoo_exists(r->zh, path, 0, &st);
    if (rc == ZOK && id && id->client_id != 0 && st.ephemeralOwner == id->client_id)
        return ZOK;
    if (rc != ZOK && rc != ZNONODE)
        return rc;
    rc = zoo_delete(r->zh, path, -1);
    if (rc != ZOK && rc != ZNONODE)
        return rc;
    if ((rc = ensure_path(r, parent)) != ZOK)
        return rc;
    return create_node(r, path, ZOO_EPHEMERAL);
}

static int publish_topic(struct kq_zk_registry *r, const char *topic)
{
    char path[1024];
    int rc;
    snprintf(path, sizeof path, "/kiteq/pub/%s", topic);
    if ((rc = ensure_path(r, path)) != ZOK)
        return rc;
    snprintf(path, sizeof path, "/kiteq/sub/%s", topic);
    if ((rc = ensure_path(r, path)) != ZOK)
        return rc;
    snprintf(path, sizeof path, "/kiteq/server/%s", topic);
    return replace_ephemeral(r, path);
}

static int withdraw_topic(struct kq_zk_registry *r, const char *topic)
{
    char path[1024];
    snprintf(path, sizeof path, "/kiteq/server/%s/%s", topic, r->bind);
    int rc = zoo_delete(r->zh, path, -1);
    return rc == ZNONODE ? ZOK : rc;
}

static struct topic_cache *topic_cache(struct kq_zk_registry *r, const char *topic, bool add)
{
    for (size_t i = 0; i < r->n_tc; i++)
        if (strcmp(r->tc[i].name, topic) == 0)
            return &r->tc[i];
    if (!add)
        return NULL;
    struct topic_cache *v = realloc(r->tc, (r->n_tc + 1) * sizeof *v);
    if (!v)
        return NULL;
    r->tc = v;
    struct topic_cache *t = &v[r->n_tc];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(topic)))
        return NULL;
    r->n_tc++;
    return t;
}

/* Forget group i of t and report it removed. */
static void drop_group(struct kq_zk_registry *r, struct topic_cache *t, size_t i)
{
    KQ_INFO(MOD, "bindings removed topic=%s group=%s", t->name, t->g[i].name);
    post_bindings(r, t->name, t->g[i].name, NULL, 0);
    free(t->g[i].name);
    free(t->g[i].json);
    t->g[i] = t->g[--t->n];
}

/* Forget a topic no longer served, reporting each of its groups removed. */
static void drop_topic(struct kq_zk_registry *r, const char *topic)
{
    struct topic_cache *t = topic_cache(r, topic, false);
    if (!t)
        return;
    while (t->n)
        drop_group(r, t, t->n - 1);
    free(t->g);
    free(t->name);
    *t = r->tc[--r->n_tc];
}

/* Read /kiteq/sub/<topic>/<group>-bind (re-arming its watch); report when it changed. */
static int read_group(struct kq_zk_registry *r, const char *topic, const char *group)
{
    char path[1024];
    snprintf(path, sizeof path, "/kiteq/sub/%s/%s-bind", topic, group);
    int cap = 4096, len, rc;
    char *buf = NULL;
    struct Stat st;
    for (;;) {
        char *nb = realloc(buf, (size_t)cap + 1);
        if (!nb) {
            free(buf);
            return ZSYSTEMERROR;
        }
        buf = nb;
        len = cap;
        rc = zoo_get(r->zh, path, 1, buf, &len, &st);
        if (rc != ZOK || st.dataLength <= cap)
            break;
        cap = st.dataLength; /* did not fit: read again with the real size */
    }
    struct topic_cache *t = topic_cache(r, topic, true);
    size_t gi = 0;
    while (t && gi < t->n && strcmp(t->g[gi].name, group) != 0)
        gi++;
    bool known = t && gi < t->n;
    if (rc == ZNONODE) {
        if (known)
            drop_group(r, t, gi);
        free(buf);
        return ZOK;
    }
    if (rc != ZOK || !t) {
        free(buf);
        return rc != ZOK ? rc : ZSYSTEMERROR;
    }
    buf[len < 0 ? 0 : len] = '\0';
    if (known && strcmp(t->g[gi].json, buf) == 0) {
        free(buf);
        return ZOK;
    }
    struct kq_binding *binds = NULL;
    char err[256] = "";
    int n = kq_bindings_from_json(buf, strlen(buf), &binds, err, sizeof err);
    if (n < 0) {
        KQ_WARN(MOD, "malformed bindings at %s (%s); group keeps its last good bindings", path,
                err);
        free(buf);
        return ZOK;
    }
    if (!known) {
        struct group_cache *g = realloc(t->g, (t->n + 1) * sizeof *g);
        if (!g || !(g[t->n].name = strdup(group))) {
            if (g)
                t->g = g;
            kq_bindings_free(binds, (size_t)n);
            free(buf);
            return ZSYSTEMERROR;
        }
        t->g = g;
        g[t->n].json = NULL;
        gi = t->n++;
    }
    free(t->g[gi].json);
    t->g[gi].json = buf;
    KQ_INFO(MOD, "bindings changed topic=%s group=%s n=%d", topic, group, n);
    post_bindings(r, topic, group, binds, (size_t)n);
    return ZOK;
}

/* List /kiteq/sub/<topic> (re-arming the child watch) and read every group. */
static int read_topic(struct kq_zk_registry *r, const char *topic)
{
    char path[1024];
    snprintf(path, sizeof path, "/kiteq/sub/%s", topic);
    struct String_vector kids = {0, NULL};
    int rc = zoo_get_children(r->zh, path, 1, &kids);
    if (rc == ZNONODE) {
        /* Missing: watch for its creation. Created just now: list it once more. */
        rc = zoo_exists(r->zh, path, 1, NULL);
        if (rc == ZOK)
            rc = zoo_get_children(r->zh, path, 1, &kids);
        if (rc == ZNONODE)
            rc = ZOK;
    }
    if (rc != ZOK)
        return rc;
    struct topic_cache *t = topic_cache(r, topic, true);
    /* groups whose node is gone */
    for (size_t i = 0; t && i < t->n;) {
        bool found = false;
        for (int k = 0; k < kids.count && !found; k++) {
            size_t len = strlen(kids.data[k]);
            found = len == strlen(t->g[i].name) + 5 &&
                    strncmp(kids.data[k], t->g[i].name, len - 5) == 0 &&
                    strcmp(kids.data[k] + len - 5, "-bind") == 0;
        }
        if (found)
            i++;
        else
            drop_group(r, t, i);
    }
    for (int k = 0; k < kids.count && rc == ZOK; k++) {
        size_t len = strlen(kids.data[k]);
        if (len <= 5 || strcmp(kids.data[k] + len - 5, "-bind") != 0)
            continue;
        char *group = strndup(kids.data[k], len - 5);
        rc = group ? read_group(r, topic, group) : ZSYSTEMERROR;
        free(group);
    }
    deallocate_String_vector(&kids);
    return rc;
}

/* Children of path into a strv (watch: re-arm the global watcher on it). */
static int children(struct kq_zk_registry *r, const char *path, int watch, struct strv *out)
{
    struct String_vector kids = {0, NULL};
    int rc = zoo_get_children(r->zh, path, watch, &kids);
    if (rc == ZNONODE) {
        if ((rc = ensure_path(r, path)) == ZOK)
            rc = zoo_get_children(r->zh, path, watch, &kids);
    }
    if (rc == ZOK && strv_copy(out, kids.data, (size_t)kids.count) != 0)
        rc = ZSYSTEMERROR;
    if (kids.data)
        deallocate_String_vector(&kids);
    return rc;
}

/* /kiteq/alive_servers (watched) and /kiteq/all_servers to the loop. */
static int read_servers(struct kq_zk_registry *r)
{
    struct event *e = calloc(1, sizeof *e);
    if (!e)
        return ZSYSTEMERROR;
    int rc = children(r, ALIVE, 1, &e->alive);
    if (rc == ZOK)
        rc = children(r, "/kiteq/all_servers", 0, &e->all);
    if (rc != ZOK) {
        strv_free(&e->alive);
        strv_free(&e->all);
        free(e);
        return rc;
    }
    e->kind = EV_SERVERS;
    push_event(r, e);
    return ZOK;
}

static void post_takeover(struct kq_zk_registry *r, const char *dead, int result)
{
    struct event *e = calloc(1, sizeof *e);
    if (!e || !(e->topic = strdup(dead))) {
        free(e);
        KQ_ERROR(MOD, "out of memory, takeover answer for %s lost", dead);
        return;
    }
    e->kind = EV_TAKEOVER;
    e->result = result;
    push_event(r, e);
}

/* Lock /kiteq/takeover/<key>/<dead>.lock (ephemeral: it goes with us if we die half-way)
 * unless <dead>.done says it was done, or dead is alive again. */
static void takeover_lock(struct kq_zk_registry *r, const char *dead)
{
    char path[1024], dir[768];
    struct Stat st;
    int result = KQ_TAKEOVER_BUSY;
    snprintf(dir, sizeof dir, TAKEOVER "/%s", r->takeover_key);
    snprintf(path, sizeof path, ALIVE "/%s", dead);
    int rc = zoo_exists(r->zh, path, 0, &st);
    if (rc == ZOK) {
        result = KQ_TAKEOVER_NOT_NEEDED;
        goto out;
    }
    snprintf(path, sizeof path, "%s/%s.done", dir, dead);
    if ((rc = zoo_exists(r->zh, path, 0, &st)) == ZOK) {
        result = KQ_TAKEOVER_NOT_NEEDED;
        goto out;
    }
    if (rc != ZNONODE || (rc = ensure_path(r, dir)) != ZOK)
        goto out;
    snprintf(path, sizeof path, "%s/%s.lock", dir, dead);
    rc = zoo_create(r->zh, path, r->bind, (int)strlen(r->bind), &ZOO_OPEN_ACL_UNSAFE, ZOO_EPHEMERAL,
                    NULL, 0);
    if (rc == ZOK)
        result = KQ_TAKEOVER_LOCKED;
out:
    if (rc != ZOK && rc != ZNONODE && rc != ZNODEEXISTS)
        KQ_WARN(MOD, "takeover lock for %s: %s", dead, zerror(rc));
    post_takeover(r, dead, result);
}

static void takeover_finish(struct kq_zk_registry *r, const char *dead, bool ok)
{
    char path[1024];
    if (ok) {
        snprintf(path, sizeof path, TAKEOVER "/%s/%s.done", r->takeover_key, dead);
        int rc = zoo_create(r->zh, path, r->bind, (int)strlen(r->bind), &ZOO_OPEN_ACL_UNSAFE, 0,
                            NULL, 0);
        if (rc != ZOK && rc != ZNODEEXISTS)
            KQ_WARN(MOD, "takeover marker %s: %s", path, zerror(rc));
    }
    snprintf(path, sizeof path, TAKEOVER "/%s/%s.lock", r->takeover_key, dead);
    zoo_delete(r->zh, path, -1);
}

/* Bring ZooKeeper in line with what we serve: withdraw removed topics, publish new ones,
 * the alive/all server nodes, then re-read all bindings. Stops at the first lost
 * connection; the pass is redone later. */
static void sync_all(struct kq_zk_registry *r)
{
    int rc = ZOK;
    r->need_sync = false;
    for (size_t i = 0; i < r->published.n && rc == ZOK;) {
        if (strv_has(&r->topics, r->published.v[i])) {
            i++;
            continue;
        }
        if ((rc = withdraw_topic(r, r->published.v[i])) == ZOK) {
            KQ_INFO(MOD, "withdrawn topic=%s bind=%s", r->published.v[i], r->bind);
            strv_del(&r->published, i);
        }
    }
    for (size_t i = 0; i < r->topics.n && rc == ZOK; i++) {
        if (strv_has(&r->published, r->topics.v[i]))
            continue;
        if ((rc = publish_topic(r, r->topics.v[i])) == ZOK) {
            KQ_INFO(MOD, "published topic=%s bind=%s", r->topics.v[i], r->bind);
            if (strv_add(&r->published, r->topics.v[i]) != 0)
                rc = ZSYSTEMERROR;
        }
    }
    if (rc == ZOK && !r->alive_done) {
        if ((rc = replace_ephemeral(r, "/kiteq/alive_servers")) == ZOK) {
            char path[1024];
            snprintf(path, sizeof path, "/kiteq/all_servers/%s", r->bind);
            if ((rc = ensure_path(r, path)) == ZOK) {
                r->alive_done = true;
                post_registered(r); /* every node a client looks for is there */
            }
        }
        if (rc == ZOK && r->takeover_key) {
            /* We are back: a later death of ours must be taken over again. */
            char path[1024];
            snprintf(path, sizeof path, TAKEOVER "/%s/%s.done", r->takeover_key, r->bind);
            rc = zoo_delete(r->zh, path, -1);
            if (rc == ZNONODE)
                rc = ZOK;
        }
    }
    if (rc == ZOK && r->takeover_key)
        rc = read_servers(r);
    for (size_t i = 0; i < r->topics.n && rc == ZOK; i++)
        rc = read_topic(r, r->topics.v[i]);
    if (rc != ZOK) {
        if (conn_error(rc))
            KQ_WARN(MOD, "registry pass interrupted (%s); will retry", zerror(rc));
        else
            KQ_ERROR(MOD, "registry pass failed (%s); will retry", zerror(rc));
        r->need_sync = true;
        r->sync_at = now_ms() + SYNC_RETRY_MS;
    }
}

/* ---- worker: session handling ---------------------------------------------------------- */

static void open_handle(struct kq_zk_registry *r)
{
    struct hctx *h = malloc(sizeof *h);
    if (h) {
        h->r = r;
        h->gen = ++r->gen;
        r->zh = zookeeper_init2(r->hosts, on_zk_event, SESSION_TIMEOUT_MS, NULL, h, 0, on_zk_log);
    }
    if (!h || !r->zh) {
        KQ_ERROR(MOD, "cannot create a ZooKeeper handle for %s (%s); retrying in %d ms", r->hosts,
                 strerror(errno), r->backoff);
        free(h);
        r->zh = NULL;
        r->retry_at = now_ms() + (uint64_t)r->backoff;
        r->backoff = r->backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff * 2;
        post_state(r, "unreachable");
        return;
    }
    r->connected = false;
    r->since = now_ms();
    KQ_INFO(MOD, "connecting to %s", r->hosts);
    post_state(r, "connecting");
}

static void close_handle(struct kq_zk_registry *r)
{
    if (!r->zh)
        return;
    struct hctx *h = (struct hctx *)zoo_get_context(r->zh); /* ours, allocated in open_handle */
    zookeeper_close(r->zh); /* joins ZooKeeper's threads: no callback after this */
    free(h);
    r->zh = NULL;
    r->connected = false;
    strv_free(&r->published);
    r->alive_done = false;
}

static void on_session(struct kq_zk_registry *r, int state)
{
    if (state == ZOO_CONNECTED_STATE) {
        const clientid_t *id = zoo_client_id(r->zh);
        KQ_INFO(MOD, "connected to %s session=0x%llx", r->hosts,
                (unsigned long long)(id ? id->client_id : 0));
        r->connected = true;
        r->backoff = BACKOFF_MIN_MS;
        /* A new session or a resumed one: either way re-publish (cheap, and ephemeral nodes
         * of an expired predecessor are replaced) and re-read what changed meanwhile. */
        strv_free(&r->published);
        r->alive_done = false;
        r->need_sync = true;
        r->sync_at = 0;
        post_state(r, "connected");
    } else if (state == ZOO_EXPIRED_SESSION_STATE || state == ZOO_AUTH_FAILED_STATE) {
        KQ_WARN(MOD, "session %s; creating a new one",
                state == ZOO_EXPIRED_SESSION_STATE ? "expired" : "auth failed");
        close_handle(r);
        r->retry_at = 0; /* at once */
        post_state(r, "expired");
    } else if (r->connected) {
        KQ_WARN(MOD, "connection to %s lost; serving with the bindings known", r->hosts);
        r->connected = false;
        r->since = now_ms();
        post_state(r, "connecting");
    }
}

/* Time-driven work: open a handle after back-off, give up on one that does not connect. */
static void on_timers(struct kq_zk_registry *r)
{
    uint64_t now = now_ms();
    if (!r->zh && now >= r->retry_at) {
        open_handle(r);
    } else if (r->zh && !r->connected && now - r->since >= CONNECT_WINDOW_MS) {
        KQ_WARN(MOD,
                "ZooKeeper %s unreachable for %d ms; serving with the bindings known, "
                "retrying in %d ms",
                r->hosts, CONNECT_WINDOW_MS, r->backoff);
        close_handle(r);
        r->retry_at = now + (uint64_t)r->backoff;
        r->backoff = r->backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff * 2;
        post_state(r, "unreachable");
    }
    if (r->zh && r->connected && r->need_sync && now >= r->sync_at)
        sync_all(r);
}

static uint64_t next_wakeup(const struct kq_zk_registry *r)
{
    uint64_t t = now_ms() + 1000;
    if (!r->zh && r->retry_at < t)
        t = r->retry_at;
    if (r->zh && !r->connected && r->since + CONNECT_WINDOW_MS < t)
        t = r->since + CONNECT_WINDOW_MS;
    if (r->zh && r->connected && r->need_sync && r->sync_at < t)
        t = r->sync_at;
    return t;
}

static struct job *wait_job(struct kq_zk_registry *r, uint64_t until_ms)
{
    pthread_mutex_lock(&r->mu);
    while (!r->jobs) {
        uint64_t now = now_ms();
        if (now >= until_ms)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t wait = until_ms - now;
        ts.tv_sec += (time_t)(wait / 1000);
        ts.tv_nsec += (long)(wait % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&r->cond, &r->mu, &ts);
    }
    struct job *j = r->jobs;
    if (j) {
        r->jobs = j->next;
        if (!r->jobs)
            r->jobs_tail = &r->jobs;
    }
    pthread_mutex_unlock(&r->mu);
    return j;
}

static void do_set_topics(struct kq_zk_registry *r, struct strv *topics)
{
    for (size_t i = 0; i < r->topics.n; i++)
        if (!strv_has(topics, r->topics.v[i]))
            drop_topic(r, r->topics.v[i]);
    strv_free(&r->topics);
    r->topics = *topics;
    memset(topics, 0, sizeof *topics);
    r->need_sync = true; /* publishes only what is new, withdraws what is gone */
    r->sync_at = 0;
}

static void do_stop(struct kq_zk_registry *r)
{
    if (r->zh && r->connected) {
        for (size_t i = 0; i < r->published.n; i++)
            withdraw_topic(r, r->published.v[i]);
        char path[1024];
        snprintf(path, sizeof path, "/kiteq/alive_servers/%s", r->bind);
        zoo_delete(r->zh, path, -1);
        KQ_INFO(MOD, "withdrawn bind=%s", r->bind);
    }
    close_handle(r);
    post_state(r, "stopped");
    struct event *e = calloc(1, sizeof *e);
    while (!e) { /* the loop must learn that we are done; retry until memory frees up */
        struct timespec ts = {0, 10000000L};
        nanosleep(&ts, NULL);
        e = calloc(1, sizeof *e);
    }
    e->kind = EV_STOPPED;
    push_event(r, e);
}

static void *worker_main(void *arg)
{
    struct kq_zk_registry *r = arg;
    for (;;) {
        struct job *j = wait_job(r, next_wakeup(r));
        if (j) {
            bool current = r->zh && j->gen == r->gen;
            switch (j->kind) {
            case JOB_STOP:
                free_job(j);
                do_stop(r);
                return NULL;
            case JOB_SET_TOPICS: do_set_topics(r, &j->topics); break;
            case JOB_SESSION:
                if (current)
                    on_session(r, j->state);
                break;
            case JOB_WATCH_SERVERS:
                free(r->takeover_key);
                r->takeover_key = j->topic;
                j->topic = NULL;
                r->need_sync = true; /* clears our marker, reads the servers */
                r->sync_at = 0;
                break;
            case JOB_READ_SERVERS:
                if (current && r->connected && r->takeover_key && read_servers(r) != ZOK) {
                    r->need_sync = true;
                    r->sync_at = now_ms() + SYNC_RETRY_MS;
                }
                break;
            case JOB_TAKEOVER_LOCK:
                if (r->zh && r->connected && r->takeover_key)
                    takeover_lock(r, j->topic);
                else
                    post_takeover(r, j->topic, KQ_TAKEOVER_BUSY);
                break;
            case JOB_TAKEOVER_FINISH:
                if (r->zh && r->connected && r->takeover_key)
                    takeover_finish(r, j->topic, j->state != 0);
                break;
            case JOB_READ_TOPIC:
            case JOB_READ_GROUP:
                if (current && r->connected && strv_has(&r->topics, j->topic)) {
                    int rc = j->kind == JOB_READ_TOPIC ? read_topic(r, j->topic)
                                                       : read_group(r, j->topic, j->group);
                    if (rc != ZOK) { /* the watch may not be re-armed: re-read everything */
                        r->need_sync = true;
                        r->sync_at = now_ms() + SYNC_RETRY_MS;
                    }
                }
                break;
            }
            free_job(j);
        }
        on_timers(r);
    }
}

/* ---- loop side ------------------------------------------------------------------------- */

static void on_closed(void *ud)
{
    struct kq_zk_registry *r = ud;
    void (*done)(void *) = r->done;
    void *done_ud = r->done_ud;
    for (size_t i = 0; i < r->n_tc; i++) {
        for (size_t k = 0; k < r->tc[i].n; k++) {
            free(r->tc[i].g[k].name);
            free(r->tc[i].g[k].json);
        }
        free(r->tc[i].g);
        free(r->tc[i].name);
    }
    free(r->tc);
    strv_free(&r->topics);
    strv_free(&r->published);
    while (r->jobs) {
        struct job *j = r->jobs;
        r->jobs = j->next;
        free_job(j);
    }
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cond);
    free(r->bind);
    free(r->takeover_key);
    free(r);
    if (done)
        done(done_ud);
}

static void on_event(void *ud, struct kq_mail *m)
{
    struct kq_zk_registry *r = ud;
    struct event *e = (struct event *)((char *)m - offsetof(struct event, mail));
    switch (e->kind) {
    case EV_STATE:
        r->state = e->state;
        if (!r->stopping && r->ev.on_state)
            r->ev.on_state(r->ud, e->state);
        break;
    case EV_BINDINGS:
        if (!r->stopping && r->ev.on_bindings)
            r->ev.on_bindings(r->ud, e->topic, e->group, e->binds, e->n);
        break;
    case EV_SERVERS:
        if (!r->stopping && r->ev.on_servers)
            r->ev.on_servers(r->ud, e->alive.v, e->alive.n, e->all.v, e->all.n);
        break;
    case EV_TAKEOVER:
        if (!r->stopping && r->ev.on_takeover)
            r->ev.on_takeover(r->ud, e->topic, e->result);
        break;
    case EV_REGISTERED:
        if (!r->stopping && r->ev.on_registered)
            r->ev.on_registered(r->ud, e->n);
        break;
    case EV_STOPPED: /* the worker's last event */
        pthread_join(r->thread, NULL);
        kq_mailbox_close(&r->events, on_closed);
        break;
    }
    free_event(e);
}

int kq_zk_registry_start(uv_loop_t *loop, const char *zk_uri, const char *bind, char *const *topics,
                         size_t n_topics, const struct kq_zk_events *ev, void *ud,
                         struct kq_zk_registry **out, char *err, size_t errlen)
{
    int rc;
    *out = NULL;
    struct kq_zk_registry *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    if (kq_zk_parse_uri(zk_uri, r->hosts, sizeof r->hosts) != 0) {
        snprintf(err, errlen, "bad ZooKeeper URI '%s' (want zk://host:port[,host:port])",
                 zk_uri ? zk_uri : "");
        free(r);
        return -EINVAL;
    }
    if (!bind || !*bind || strchr(bind, '/')) {
        snprintf(err, errlen, "bad bind address '%s' for the registry", bind ? bind : "");
        free(r);
        return -EINVAL;
    }
    r->loop = loop;
    r->ev = *ev;
    r->ud = ud;
    r->state = "connecting";
    r->backoff = BACKOFF_MIN_MS;
    r->jobs_tail = &r->jobs;
    if (!(r->bind = strdup(bind)) || strv_copy(&r->topics, topics, n_topics) != 0) {
        free(r->bind);
        free(r);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&r->mu, NULL);
    if ((rc = kq_mailbox_init(&r->events, loop, on_event, r)) != 0) {
        snprintf(err, errlen, "cannot make the registry's mailbox: %s", uv_strerror(rc));
        goto fail;
    }
    /* ZooKeeper's own log lines go to our debug log; our module logs every state change. */
    zoo_set_debug_level(ZOO_LOG_LEVEL_WARN);
    if ((rc = pthread_create(&r->thread, NULL, worker_main, r)) != 0) {
        snprintf(err, errlen, "pthread_create: %s", strerror(rc));
        kq_mailbox_close(&r->events, on_closed); /* frees r on the next loop turn */
        return -rc;
    }
    *out = r;
    return 0;

fail:
    strv_free(&r->topics);
    free(r->bind);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cond);
    free(r);
    return rc;
}

void kq_zk_registry_set_topics(struct kq_zk_registry *r, char *const *topics, size_t n)
{
    struct job *j = calloc(1, sizeof *j);
    if (!j || strv_copy(&j->topics, topics, n) != 0) {
        KQ_ERROR(MOD, "out of memory, topic change not applied to the registry");
        free(j);
        return;
    }
    j->kind = JOB_SET_TOPICS;
    push_job(r, j);
}

const char *kq_zk_registry_state(const struct kq_zk_registry *r) { return r->state; }

void kq_zk_registry_stop(struct kq_zk_registry *r, void (*done)(void *ud), void *ud)
{
    if (r->stopping)
        return;
    r->stopping = true;
    r->done = done;
    r->done_ud = ud;
    struct job *j = calloc(1, sizeof *j);
    while (!j) { /* stopping must not fail */
        struct timespec ts = {0, 10000000L};
        nanosleep(&ts, NULL);
        j = calloc(1, sizeof *j);
    }
    j->kind = JOB_STOP;
    push_job(r, j);
}

static void push_named(struct kq_zk_registry *r, enum job_kind kind, const char *name, int state)
{
    struct job *j = calloc(1, sizeof *j);
    if (!j || !(j->topic = strdup(name))) {
        free(j);
        KQ_ERROR(MOD, "out of memory, registry request dropped");
        if (kind == JOB_TAKEOVER_LOCK && r->ev.on_takeover)
            r->ev.on_takeover(r->ud, name, KQ_TAKEOVER_BUSY);
        return;
    }
    j->kind = kind;
    j->state = state;
    push_job(r, j);
}

void kq_zk_registry_watch_servers(struct kq_zk_registry *r, const char *takeover_key)
{
    push_named(r, JOB_WATCH_SERVERS, takeover_key, 0);
}

void kq_zk_registry_takeover_lock(struct kq_zk_registry *r, const char *dead)
{
    push_named(r, JOB_TAKEOVER_LOCK, dead, 0);
}

void kq_zk_registry_takeover_finish(struct kq_zk_registry *r, const char *dead, bool ok)
{
    push_named(r, JOB_TAKEOVER_FINISH, dead, ok);
}
