/* The admin HTTP handlers: statistics (/stat), subscriptions (/binds), one message's state
 * (/msg/<id>) and reload; /metrics in admin_metrics.c, dead letters in admin_dlq.c. All run on the loop
 * thread and cost what the broker's own state costs to print: dead letters are counted by
 * the store's counters and found by its id index, never listed. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/admin_internal.h"
#include "core/log.h"
#include "core/redact.h"
#include "registry/zk_registry.h"

#define KITEQ_VERSION "0.1.0"

/* cJSON's builders (cJSON_Create*, cJSON_Add*) answer NULL when memory runs out, and the
 * handlers do not check every call: a document would go out with keys missing and look
 * whole. So cJSON allocates through json_malloc, which notes a failure, and kq_adm_reply
 * answers 500 for the document it prints after one. A failure elsewhere in between (another
 * handler's parse, another thread's registry JSON) makes that reply a 500 too: only when
 * memory really runs out, where a 500 is the honest answer anyway. */
static atomic_bool json_alloc_failed;

static void *json_malloc(size_t n)
{
    void *p = malloc(n);
    if (!p)
        atomic_store_explicit(&json_alloc_failed, true, memory_order_relaxed);
    return p;
}

static void install_json_hooks(void)
{
    cJSON_Hooks hooks = {.malloc_fn = json_malloc, .free_fn = free};
    cJSON_InitHooks(&hooks);
}

void kq_adm_json_memory_watch(void)
{
    /* once: cJSON's hooks are one unguarded global, read by every thread that builds JSON
     * (a broker started again in the same process must not write it under their feet) */
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, install_json_hooks);
}

int kq_adm_reply(struct kq_buf *out, cJSON *o, int status)
{
    bool lost = atomic_exchange_explicit(&json_alloc_failed, false, memory_order_relaxed);
    char *s = lost ? NULL : cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    /* Out of memory (now or while o was built): 500, and out is marked so that the admin
     * server logs it and answers a short error instead of what out holds. */
    int rc = s ? kq_buf_append(out, s, strlen(s)) : -ENOMEM;
    free(s);
    if (rc)
        out->failed = true;
    return rc ? 500 : status;
}

static cJSON *names_json(const char *const *v, size_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(v[i]));
    return a;
}

/* --- dead-letter counters ----------------------------------------------------------------- */

struct tally {
    const char *topic;
    cJSON *by_topic, *by_group;
    uint64_t total;
};

static void add_to(cJSON *o, const char *key, uint64_t n)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (v)
        cJSON_SetNumberValue(v, v->valuedouble + (double)n);
    else
        cJSON_AddNumberToObject(o, key, (double)n);
}

static void tally_one(void *ud, const char *topic, const char *group, uint64_t n)
{
    struct tally *t = ud;
    if (t->topic && strcmp(t->topic, topic) != 0)
        return;
    t->total += n;
    if (t->by_topic)
        add_to(t->by_topic, topic, n);
    if (t->by_group && group)
        add_to(t->by_group, group, n);
}

int kq_adm_dlq_tally(struct kq_broker *b, const char *topic, cJSON *by_topic, cJSON *by_group,
                     uint64_t *total)
{
    struct tally t = {topic, by_topic, by_group, 0};
    /* per topic unless groups are asked for: as many entries as topics */
    int rc = b->store->ops->dlq_counts(b->store, by_group != NULL, tally_one, &t);
    if (rc == 0 && total)
        *total = t.total;
    return rc;
}

/* --- /stat ------------------------------------------------------------------------------ */

static int h_stat(void *ud, struct kq_buf *out)
{
    struct kq_broker *b = ud;
    cJSON *root = cJSON_CreateObject();
    cJSON *k = cJSON_AddObjectToObject(root, "kiteq");
    cJSON_AddNumberToObject(k, "deliver_go", (double)b->stats.inflight);
    cJSON_AddNumberToObject(k, "deliver_count", (double)b->last_sec.acked);
    cJSON_AddNumberToObject(k, "recieve_count", (double)b->last_sec.received);
    cJSON *mc = cJSON_AddObjectToObject(k, "message_count");
    for (size_t i = 0; i < b->cfg->n_topics; i++)
        cJSON_AddNumberToObject(mc, b->cfg->topics[i], 0);
    cJSON *td = cJSON_AddObjectToObject(k, "topics_deliver");
    cJSON *tr = cJSON_AddObjectToObject(k, "topics_recieve");
    for (size_t i = 0; i < b->cfg->n_topics; i++) {
        cJSON_AddNumberToObject(td, b->cfg->topics[i], 0);
        cJSON_AddNumberToObject(tr, b->cfg->topics[i], 0);
    }
    struct kq_topic_stats *ts, *ttmp;
    HASH_ITER (hh, b->topic_stats, ts, ttmp) {
        cJSON *n = cJSON_GetObjectItemCaseSensitive(mc, ts->topic);
        if (n)
            cJSON_SetNumberValue(n, (double)ts->pending);
        if ((n = cJSON_GetObjectItemCaseSensitive(td, ts->topic)))
            cJSON_SetNumberValue(n, (double)ts->last_sec_delivered);
        if ((n = cJSON_GetObjectItemCaseSensitive(tr, ts->topic)))
            cJSON_SetNumberValue(n, (double)ts->last_sec_received);
    }
    cJSON *groups = cJSON_AddObjectToObject(k, "groups");
    struct kq_group *g, *gtmp;
    HASH_ITER (hh, b->groups, g, gtmp) {
        cJSON *a = cJSON_AddArrayToObject(groups, g->id);
        for (size_t i = 0; i < g->n; i++)
            cJSON_AddItemToArray(a, cJSON_CreateString(kq_conn_peer(g->members[i]->conn)));
    }
    cJSON *al = cJSON_AddArrayToObject(k, "accept_limiter");
    cJSON_AddItemToArray(al, cJSON_CreateNumber((double)b->last_sec.received));
    cJSON_AddItemToArray(al, cJSON_CreateNumber(b->intake.rate));
    cJSON *net = cJSON_AddObjectToObject(root, "network");
    cJSON_AddNumberToObject(net, "connections", (double)kq_net_conn_count(b->net));
    /* previous second, as the original; "write_count" counts write calls (frames are
     * coalesced into one write per connection and loop iteration) */
    cJSON_AddNumberToObject(net, "read_count", (double)b->net_last_sec.read_frames);
    cJSON_AddNumberToObject(net, "read_bytes", (double)b->net_last_sec.read_bytes);
    cJSON_AddNumberToObject(net, "write_count", (double)b->net_last_sec.writes);
    cJSON_AddNumberToObject(net, "write_bytes", (double)b->net_last_sec.write_bytes);
    cJSON *br = cJSON_AddObjectToObject(root, "broker");
    cJSON_AddStringToObject(br, "version", KITEQ_VERSION);
    cJSON_AddNumberToObject(br, "uptime_sec", (double)(kq_now_sec() - b->started_sec));
    cJSON_AddStringToObject(br, "bind", b->cfg->bind);
    cJSON_AddStringToObject(br, "store", b->store->ops->name);
    cJSON_AddStringToObject(br, "registry", b->registry_state ? b->registry_state : "static");
    cJSON_AddNumberToObject(br, "pending", (double)b->msgs.len);
    const char *why = kq_store_unavailable(b->store);
    char clean[512];
    if (why)
        cJSON_AddStringToObject(br, "store_unavailable", kq_redact(why, clean, sizeof clean));
    cJSON *dlq_by_topic = cJSON_CreateObject();
    uint64_t dlq_total = 0;
    if (kq_adm_dlq_tally(b, NULL, dlq_by_topic, NULL, &dlq_total) == 0)
        cJSON_AddNumberToObject(br, "dlq_count", (double)dlq_total);
    else /* the store has not counted them yet (MySQL) */
        cJSON_AddNullToObject(br, "dlq_count");
    cJSON_AddItemToObject(br, "dlq_by_topic", dlq_by_topic);
    cJSON *tot = cJSON_AddObjectToObject(br, "totals");
    cJSON_AddNumberToObject(tot, "received", (double)b->stats.received);
    cJSON_AddNumberToObject(tot, "stored", (double)b->stats.stored);
    cJSON_AddNumberToObject(tot, "rejected", (double)b->stats.rejected);
    cJSON_AddNumberToObject(tot, "delivered", (double)b->stats.delivered);
    cJSON_AddNumberToObject(tot, "acked", (double)b->stats.acked);
    cJSON_AddNumberToObject(tot, "retried", (double)b->stats.retried);
    cJSON_AddNumberToObject(tot, "dead_lettered", (double)b->stats.dead_lettered);
    cJSON_AddNumberToObject(tot, "unrouted", (double)b->stats.unrouted);
    cJSON *unrouted = cJSON_AddObjectToObject(br, "unrouted_by_topic");
    HASH_ITER (hh, b->topic_stats, ts, ttmp) {
        if (ts->unrouted)
            cJSON_AddNumberToObject(unrouted, ts->topic, (double)ts->unrouted);
    }
    kq_adm_groups_add(b, br);
    cJSON *rl = cJSON_AddObjectToObject(br, "reload");
    cJSON_AddNumberToObject(rl, "generation", (double)b->reload_generation);
    cJSON_AddNumberToObject(rl, "failures", (double)b->reload_failures);
    if (b->reload_error[0]) {
        cJSON_AddStringToObject(rl, "last_error", b->reload_error);
        cJSON_AddNumberToObject(rl, "last_error_at", (double)b->reload_error_at_ms);
    } else {
        cJSON_AddNullToObject(rl, "last_error");
        cJSON_AddNullToObject(rl, "last_error_at");
    }
    /* which policy is live: each loaded file's sha256 and load time (Unix ms) */
    cJSON *pfiles = cJSON_AddArrayToObject(cJSON_AddObjectToObject(br, "policy"), "files");
    struct kq_policy_file pf[KQ_POLICY_MAX_FILES];
    size_t npf = kq_policy_files(b->policy, pf, KQ_POLICY_MAX_FILES);
    for (size_t i = 0; i < npf; i++) {
        cJSON *f = cJSON_CreateObject();
        cJSON_AddStringToObject(f, "file", pf[i].file);
        cJSON_AddStringToObject(f, "sha256", pf[i].sha256);
        cJSON_AddNumberToObject(f, "loaded_at", (double)pf[i].loaded_at_ms);
        cJSON_AddItemToArray(pfiles, f);
    }
    cJSON *hooks = cJSON_AddObjectToObject(br, "hooks");
    struct kq_policy_hook_stats hs[8];
    size_t nh = kq_policy_stats(b->policy, hs, 8);
    for (size_t i = 0; i < nh; i++) {
        cJSON *h = cJSON_AddObjectToObject(hooks, hs[i].name);
        cJSON_AddBoolToObject(h, "loaded", hs[i].loaded);
        cJSON_AddBoolToObject(h, "disabled", hs[i].disabled);
        cJSON_AddNumberToObject(h, "disabled_subjects", (double)hs[i].disabled_subjects);
        cJSON_AddNumberToObject(h, "calls", (double)hs[i].calls);
        cJSON_AddNumberToObject(h, "errors", (double)hs[i].errors);
        cJSON_AddNumberToObject(h, "fallbacks", (double)hs[i].fallbacks);
        cJSON_AddNumberToObject(h, "rejects", (double)hs[i].rejects); /* publish only */
    }
    return kq_adm_reply(out, root, 200);
}

/* --- /binds ----------------------------------------------------------------------------- */

static int h_binds(void *ud, struct kq_buf *out)
{
    struct kq_broker *b = ud;
    cJSON *root = cJSON_CreateObject();
    cJSON *t2g = cJSON_AddObjectToObject(root, "topic_2_groups");
    cJSON *list = cJSON_AddArrayToObject(root, "bindings");
    size_t n;
    const struct kq_binding *v = kq_binding_set_all(b->bindings, &n);
    for (size_t i = 0; i < n; i++) {
        cJSON *groups = cJSON_GetObjectItemCaseSensitive(t2g, v[i].topic);
        if (!groups)
            groups = cJSON_AddArrayToObject(t2g, v[i].topic);
        bool seen = false;
        cJSON *it;
        cJSON_ArrayForEach(it, groups) seen |= strcmp(it->valuestring, v[i].group_id) == 0;
        if (!seen)
            cJSON_AddItemToArray(groups, cJSON_CreateString(v[i].group_id));
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "groupId", v[i].group_id);
        cJSON_AddStringToObject(o, "topic", v[i].topic);
        cJSON_AddStringToObject(o, "messageType", v[i].message_type);
        cJSON_AddNumberToObject(o, "bindType", v[i].bind_type);
        cJSON_AddNumberToObject(o, "watermark", v[i].watermark);
        cJSON_AddBoolToObject(o, "persistent", v[i].persistent);
        cJSON_AddItemToArray(list, o);
    }
    cJSON_AddNumberToObject(root, "generation", (double)kq_binding_set_generation(b->bindings));
    return kq_adm_reply(out, root, 200);
}

/* --- /msg/<id> -------------------------------------------------------------------------- */

cJSON *kq_adm_dead_json(const struct kq_dead_letter *d)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "messageId", d->msg.id);
    cJSON_AddStringToObject(o, "topic", d->msg.topic);
    cJSON_AddStringToObject(o, "messageType", d->msg.message_type);
    cJSON_AddStringToObject(o, "publishGroup", d->msg.publish_group);
    cJSON_AddStringToObject(o, "reason", d->reason ? d->reason : "");
    cJSON_AddNumberToObject(o, "deadTime", (double)d->dead_time);
    cJSON_AddNumberToObject(o, "bodyLen", d->msg.body_len);
    if (!d->groups_known) /* dead before groups were recorded (or moved by the Go broker) */
        cJSON_AddNullToObject(o, "failedGroups");
    else {
        cJSON *failed = cJSON_AddArrayToObject(o, "failedGroups");
        for (size_t i = 0; i < d->groups.n_failed; i++) {
            cJSON *g = cJSON_CreateObject();
            cJSON_AddStringToObject(g, "group", d->groups.failed[i].group);
            cJSON_AddStringToObject(g, "reason", d->groups.failed[i].reason);
            cJSON_AddItemToArray(failed, g);
        }
    }
    cJSON_AddItemToObject(o, "ackedGroups",
                          names_json((const char *const *)d->groups.acked, d->groups.n_acked));
    return o;
}

int kq_adm_store_failed(struct kq_broker *b, int status, cJSON *o, struct kq_buf *out)
{
    /* the store is gone (NULL) once the broker has stopped */
    const char *why = b->store ? kq_store_unavailable(b->store) : "broker shutting down";
    char text[512], clean[480];
    if (why)
        snprintf(text, sizeof text, "store unavailable: %s", kq_redact(why, clean, sizeof clean));
    else
        snprintf(text, sizeof text, "%s", strerror(-status));
    int code = why ? 503 : 500;
    if (!o)
        o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", text);
    cJSON_AddNumberToObject(o, "status", code);
    return kq_adm_reply(out, o, code);
}

int kq_adm_store_down(struct kq_broker *b, struct kq_buf *out)
{
    return kq_store_unavailable(b->store) ? kq_adm_store_failed(b, -EAGAIN, NULL, out) : 0;
}

static int unknown_msg(const char *id, struct kq_buf *out)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "messageId", id);
    cJSON_AddStringToObject(o, "state", "unknown");
    cJSON_AddStringToObject(
        o, "error",
        "not pending, not in the dead-letter store and not among the last messageHistory finished "
        "messages (never stored, or finished long ago)");
    return kq_adm_reply(out, o, 404);
}

struct msg_ctx {
    struct kq_broker *b;
    struct kq_admin_req *r;
    char id[];
};

/* The store's answer for an id that is not pending: a dead letter, or unknown. */
static void on_dead_found(void *ud, int status, const struct kq_dead_letter *d)
{
    struct msg_ctx *c = ud;
    struct kq_buf out = {0};
    if (status == 0) {
        cJSON *o = kq_adm_dead_json(d);
        cJSON_AddStringToObject(o, "state", "dead");
        kq_adm_msg_history(c->b, c->id, o);
        status = kq_adm_reply(&out, o, 200);
    } else if (status == -ENOENT) {
        if (!(status = kq_adm_msg_finished(c->b, c->id, true, &out)))
            status = unknown_msg(c->id, &out);
    } else {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "messageId", c->id);
        status = kq_adm_store_failed(c->b, status, o, &out);
    }
    kq_admin_req_done(c->r, status, &out);
    kq_buf_free(&out);
    free(c);
}

static int h_msg(void *ud, struct kq_admin_req *r, const char *id, struct kq_buf *out)
{
    struct kq_broker *b = ud;
    struct kq_msg *m = kq_delivery_find(b, id);
    if (m) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "messageId", m->id);
        cJSON_AddStringToObject(o, "state", m->commit ? "pending" : "uncommitted");
        cJSON_AddStringToObject(o, "topic", m->topic);
        cJSON_AddStringToObject(o, "messageType", m->type);
        cJSON_AddStringToObject(o, "publishGroup", m->pub_group);
        cJSON_AddBoolToObject(o, "stored", m->stored);
        cJSON_AddBoolToObject(o, "committed", m->commit);
        cJSON_AddBoolToObject(o, "fly", m->fly);
        cJSON_AddNumberToObject(o, "attempts", m->attempts);
        cJSON_AddNumberToObject(o, "deliverLimit", m->deliver_limit);
        cJSON_AddNumberToObject(o, "expiredTime", (double)m->expired_time);
        cJSON_AddNumberToObject(o, "txChecks", m->tx_checks);
        cJSON_AddNumberToObject(o, "inflight", m->inflight);
        if (kq_msg_failure(m))
            cJSON_AddStringToObject(o, "lastFailure", kq_msg_failure(m));
        else
            cJSON_AddNullToObject(o, "lastFailure");
        if (m->timer.pos != KQ_HEAP_NONE)
            cJSON_AddNumberToObject(o, "nextAttemptMs", (double)m->timer.key);
        cJSON_AddItemToObject(o, "groupsDone",
                              names_json(kq_names_view(&m->done, m->n_done), m->n_done));
        cJSON_AddItemToObject(o, "groupsFailed",
                              names_json(kq_names_view(&m->failed, m->n_failed), m->n_failed));
        cJSON *history = kq_hist_json(b, m);
        if (history)
            cJSON_AddItemToObject(o, "history", history);
        return kq_adm_reply(out, o, 200);
    }
    int done = kq_adm_msg_finished(b, id, false, out); /* delivered, rolled back, ... */
    if (done)
        return done;
    int down = kq_adm_store_down(b, out);
    if (down)
        return down;
    if (strlen(id) > KQ_ID_LEN) /* no store holds such an id */
        return unknown_msg(id, out);
    struct msg_ctx *c = malloc(sizeof *c + strlen(id) + 1);
    if (!c)
        return 500;
    c->b = b;
    c->r = r;
    strcpy(c->id, id);
    int rc = b->store->ops->dlq_get(b->store, id, on_dead_found, c); /* an index lookup */
    if (rc < 0)
        on_dead_found(c, rc, NULL);
    return KQ_ADMIN_LATER;
}

/* POST /reload answers with the reload's result: it runs off the loop (reload.c). */
struct reload_answer {
    struct kq_broker *b;
    struct kq_admin_req *r;
};

static void on_reloaded(void *ud, int rc)
{
    struct reload_answer *ra = ud;
    struct kq_broker *b = ra->b;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddBoolToObject(root, "ok", rc == 0);
    cJSON_AddNumberToObject(root, "generation", (double)b->reload_generation);
    if (rc)
        cJSON_AddStringToObject(root, "error", b->reload_error);
    struct kq_buf body = {0};
    int status = kq_adm_reply(&body, root, rc ? 500 : 200);
    kq_admin_req_done(ra->r, status, &body);
    kq_buf_free(&body);
    free(ra);
}

static int h_reload(void *ud, struct kq_admin_req *r, struct kq_buf *out)
{
    (void)out;
    struct kq_broker *b = ud;
    struct reload_answer *ra = calloc(1, sizeof *ra);
    if (!ra)
        return 500;
    *ra = (struct reload_answer){b, r};
    int rc = kq_broker_reload_start(b, on_reloaded, ra);
    if (rc < 0) /* not started: the callback will not run */
        on_reloaded(ra, rc);
    return KQ_ADMIN_LATER;
}

static const struct kq_admin_handlers handlers = {
    h_stat,           h_binds,
    kq_adm_metrics,   h_msg,
    kq_adm_dlq_list,  kq_adm_dlq_requeue,
    kq_adm_dlq_purge, h_reload,
    kq_adm_groups,    kq_adm_groups_purge,
    kq_adm_dlq_show,
};

int kq_admin_api_start(struct kq_broker *b, char *err, size_t errlen)
{
    if (kq_adm_jobs_start(b) || kq_adm_purges_start(b)) {
        snprintf(err, errlen, "admin: out of memory");
        return -ENOMEM;
    }
    int rc = kq_admin_start(b->loop, b->cfg->admin, b->cfg->admin_token, &handlers, b, &b->admin,
                            err, errlen);
    if (rc == 0)
        KQ_INFO("admin", "listening admin=%s port=%d token=%s", b->cfg->admin,
                kq_admin_port(b->admin), b->cfg->admin_token ? "required for POST" : "none");
    return rc;
}

void kq_admin_api_stop(struct kq_broker *b)
{
    kq_adm_jobs_stop(b);
    kq_adm_purges_stop(b);
}
