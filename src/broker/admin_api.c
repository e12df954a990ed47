/* The admin HTTP handlers: statistics (/stat, /metrics), subscriptions (/binds), one
 * message's state (/msg/<id>), dead letters (/dlq) and reload. All run on the loop thread
 * and only read broker state, except requeue (a store save) and reload. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin.h"
#include "admin/prom.h"
#include "broker/internal.h"
#include "core/log.h"
#include "registry/zk_registry.h"
#include "store/file/file_store.h"

#define KITEQ_VERSION "0.1.0"

static int reply_json(struct kq_buf *out, cJSON *o, int status)
{
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s)
        return 500;
    kq_buf_append(out, s, strlen(s));
    free(s);
    return status;
}

static cJSON *names_json(const char *const *v, size_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(v[i]));
    return a;
}

/* Dead-letter totals: count, and per topic and per publishing group when the objects are
 * given. One pass over the store's list (the DLQ is small: operators purge it). */
struct dlq_count {
    const char *topic; /* filter, NULL = all */
    size_t n;
    cJSON *by_topic, *by_group;
};

static void bump(cJSON *o, const char *key)
{
    if (!o)
        return;
    cJSON *n = cJSON_GetObjectItemCaseSensitive(o, key);
    if (n)
        cJSON_SetNumberValue(n, n->valuedouble + 1);
    else
        cJSON_AddNumberToObject(o, key, 1);
}

static bool count_one(void *ud, const struct kq_dead_letter *d)
{
    struct dlq_count *c = ud;
    if (c->topic && strcmp(c->topic, d->msg.topic) != 0)
        return true;
    c->n++;
    bump(c->by_topic, d->msg.topic);
    bump(c->by_group, d->msg.publish_group);
    return true;
}

static void dlq_count(struct kq_broker *b, struct dlq_count *c)
{
    b->store->ops->dlq_list(b->store, c->topic, count_one, c);
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
    HASH_ITER(hh, b->topic_stats, ts, ttmp) {
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
    HASH_ITER(hh, b->groups, g, gtmp) {
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
    struct dlq_count dc = {.by_topic = cJSON_CreateObject()};
    const char *why = kq_store_unavailable(b->store);
    if (why) /* and no DLQ count: it would wait for the server on the loop */
        cJSON_AddStringToObject(br, "store_unavailable", why);
    else
        dlq_count(b, &dc);
    cJSON_AddNumberToObject(br, "dlq_count", (double)dc.n);
    cJSON_AddItemToObject(br, "dlq_by_topic", dc.by_topic);
    cJSON *tot = cJSON_AddObjectToObject(br, "totals");
    cJSON_AddNumberToObject(tot, "received", (double)b->stats.received);
    cJSON_AddNumberToObject(tot, "stored", (double)b->stats.stored);
    cJSON_AddNumberToObject(tot, "rejected", (double)b->stats.rejected);
    cJSON_AddNumberToObject(tot, "delivered", (double)b->stats.delivered);
    cJSON_AddNumberToObject(tot, "acked", (double)b->stats.acked);
    cJSON_AddNumberToObject(tot, "retried", (double)b->stats.retried);
    cJSON_AddNumberToObject(tot, "dead_lettered", (double)b->stats.dead_lettered);
    cJSON *rl = cJSON_AddObjectToObject(br, "reload");
    cJSON_AddNumberToObject(rl, "generation", (double)b->reload_generation);
    cJSON_AddNumberToObject(rl, "failures", (double)b->reload_failures);
    if (b->reload_error[0])
        cJSON_AddStringToObject(rl, "last_error", b->reload_error);
    else
        cJSON_AddNullToObject(rl, "last_error");
    cJSON *hooks = cJSON_AddObjectToObject(br, "hooks");
    struct kq_policy_hook_stats hs[8];
    size_t nh = kq_policy_stats(b->policy, hs, 8);
    for (size_t i = 0; i < nh; i++) {
        cJSON *h = cJSON_AddObjectToObject(hooks, hs[i].name);
        cJSON_AddBoolToObject(h, "loaded", hs[i].loaded);
        cJSON_AddBoolToObject(h, "disabled", hs[i].disabled);
        cJSON_AddNumberToObject(h, "calls", (double)hs[i].calls);
        cJSON_AddNumberToObject(h, "errors", (double)hs[i].errors);
        cJSON_AddNumberToObject(h, "fallbacks", (double)hs[i].fallbacks);
    }
    return reply_json(out, root, 200);
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
    return reply_json(out, root, 200);
}

/* --- /metrics --------------------------------------------------------------------------- */

static int h_metrics(void *ud, struct kq_buf *out)
{
    struct kq_broker *b = ud;
    struct kq_prom p;
    kq_prom_init(&p, out);
    kq_prom_gauge(&p, "kiteq_connections", "Open client connections.", NULL,
                  (double)kq_net_conn_count(b->net));
    struct kq_group *g, *gtmp;
    HASH_ITER(hh, b->groups, g, gtmp) {
        const char *l[] = {"group", g->id, NULL};
        kq_prom_gauge(&p, "kiteq_group_connections", "Authenticated connections per group.", l, (double)g->n);
        kq_prom_gauge(&p, "kiteq_group_inflight", "Deliveries waiting for an ack, per group.", l, g->inflight);
        kq_prom_gauge(&p, "kiteq_group_waiting", "Messages waiting for room in the group's window or rate.", l, (double)g->n_waiting);
        kq_prom_counter(&p, "kiteq_deliveries_sent_total", "Copies sent to the group.", l, (double)g->sent);
        kq_prom_counter(&p, "kiteq_deliveries_acked_total", "Copies the group acked.", l, (double)g->acked);
        kq_prom_counter(&p, "kiteq_deliveries_failed_total", "Copies nacked, timed out or lost.", l, (double)g->failed);
    }
    struct kq_topic_stats *t, *ttmp;
    HASH_ITER(hh, b->topic_stats, t, ttmp) {
        const char *l[] = {"topic", t->topic, NULL};
        kq_prom_counter(&p, "kiteq_messages_received_total", "Messages accepted from producers.", l, (double)t->received);
        kq_prom_counter(&p, "kiteq_messages_stored_total", "Messages the store confirmed.", l, (double)t->stored);
        kq_prom_counter(&p, "kiteq_messages_delivered_total", "Messages delivered to every group.", l, (double)t->delivered);
        kq_prom_counter(&p, "kiteq_messages_retried_total", "Attempts that ended with a retry.", l, (double)t->retried);
        kq_prom_counter(&p, "kiteq_messages_dead_lettered_total", "Messages moved to the dead-letter store.", l, (double)t->dead_lettered);
    }
    kq_prom_counter(&p, "kiteq_messages_rejected_total", "Publishes answered with status false.", NULL, (double)b->stats.rejected);
    kq_prom_gauge(&p, "kiteq_pending_messages", "Messages in the broker's index (backlog).", NULL, (double)b->msgs.len);
    kq_prom_gauge(&p, "kiteq_inflight", "Deliveries waiting for an ack.", NULL, (double)b->stats.inflight);
    struct kq_file_store_stats fs;
    if (kq_file_store_stats(b->store, &fs) == 0) {
        kq_prom_counter(&p, "kiteq_store_fsyncs_total", "fdatasync calls of the file store.", NULL, (double)fs.fsyncs);
        kq_prom_counter(&p, "kiteq_store_batches_total", "Group-commit batches written.", NULL, (double)fs.batches);
        kq_prom_counter(&p, "kiteq_store_records_total", "Records written (batch size = records / batches).", NULL, (double)fs.records);
        kq_prom_counter(&p, "kiteq_store_write_errors_total", "Failed batches (disk full, I/O errors).", NULL, (double)fs.write_errors);
        struct kq_prom_hist h;
        kq_prom_hist_init(&h, kq_fs_fsync_bounds_us, KQ_FS_FSYNC_BUCKETS);
        for (size_t i = 0; i <= KQ_FS_FSYNC_BUCKETS; i++)
            h.counts[i] = fs.fsync_hist[i];
        h.sum = (double)fs.fsync_us_sum;
        kq_prom_histogram(&p, "kiteq_store_fsync_microseconds", "fdatasync latency of the file store.", NULL, &h);
        kq_prom_hist_init(&h, kq_fs_batch_bounds, KQ_FS_BATCH_BUCKETS);
        for (size_t i = 0; i <= KQ_FS_BATCH_BUCKETS; i++)
            h.counts[i] = fs.batch_hist[i];
        h.sum = (double)fs.batch_records_sum;
        kq_prom_histogram(&p, "kiteq_store_batch_records", "Records per group-commit batch.", NULL, &h);
        kq_prom_gauge(&p, "kiteq_store_segments", "Live segment files.", NULL, (double)fs.segments);
        kq_prom_gauge(&p, "kiteq_store_dead_letters", "Messages in the dead-letter store.", NULL, (double)fs.dead_letters);
    }
    bool store_up = !kq_store_unavailable(b->store);
    kq_prom_gauge(&p, "kiteq_store_available",
                  "1 while the store takes saves, 0 while it refuses them (MySQL unreachable "
                  "at start, recovery pending).", NULL, store_up ? 1 : 0);
    struct dlq_count dc = {.by_topic = cJSON_CreateObject()};
    if (store_up) /* else it would wait for the server on the loop */
        dlq_count(b, &dc);
    for (size_t i = 0; i < b->cfg->n_topics; i++) { /* every topic, so a dashboard sees 0 */
        const char *l[] = {"topic", b->cfg->topics[i], NULL};
        cJSON *n = cJSON_GetObjectItemCaseSensitive(dc.by_topic, b->cfg->topics[i]);
        kq_prom_gauge(&p, "kiteq_dlq_messages", "Dead letters per topic.", l, n ? n->valuedouble : 0);
    }
    cJSON_Delete(dc.by_topic);
    const char *reg[] = {"state", b->registry_state ? b->registry_state : "static", NULL};
    kq_prom_gauge(&p, "kiteq_registry_state", "Registry state (value 1, state in the label).", reg, 1);
    kq_prom_counter(&p, "kiteq_reload_generation", "Successful reloads.", NULL, (double)b->reload_generation);
    kq_prom_counter(&p, "kiteq_reload_failures_total", "Failed reloads.", NULL, (double)b->reload_failures);
    struct kq_policy_hook_stats hs[8];
    size_t nh = kq_policy_stats(b->policy, hs, 8);
    for (size_t i = 0; i < nh; i++) {
        const char *l[] = {"hook", hs[i].name, NULL};
        kq_prom_counter(&p, "kiteq_hook_calls_total", "Lua hook calls.", l, (double)hs[i].calls);
        kq_prom_counter(&p, "kiteq_hook_errors_total", "Hook errors, overruns and invalid answers.", l, (double)hs[i].errors);
        kq_prom_counter(&p, "kiteq_hook_seconds_total", "Time spent in the hook.", l, (double)hs[i].total_us / 1e6);
    }
    kq_prom_free(&p);
    return 200;
}

/* --- /msg/<id> -------------------------------------------------------------------------- */

struct dlq_find {
    const char *id;
    cJSON *found;
};

static cJSON *dead_json(const struct kq_dead_letter *d)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "messageId", d->msg.id);
    cJSON_AddStringToObject(o, "topic", d->msg.topic);
    cJSON_AddStringToObject(o, "messageType", d->msg.message_type);
    cJSON_AddStringToObject(o, "publishGroup", d->msg.publish_group);
    cJSON_AddStringToObject(o, "reason", d->reason ? d->reason : "");
    cJSON_AddNumberToObject(o, "deadTime", (double)d->dead_time);
    cJSON_AddNumberToObject(o, "bodyLen", d->msg.body_len);
    return o;
}

static bool find_dead(void *ud, const struct kq_dead_letter *d)
{
    struct dlq_find *f = ud;
    if (strcmp(d->msg.id, f->id) != 0)
        return true;
    f->found = dead_json(d);
    return false;
}

/* 503 with the reason while the store refuses saves (MySQL unreachable at start): its DLQ
 * calls would wait for the server on the loop. 0 when the store is available. */
static int store_down(struct kq_broker *b, struct kq_buf *out)
{
    const char *why = kq_store_unavailable(b->store);
    if (!why)
        return 0;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", why);
    cJSON_AddNumberToObject(o, "status", 503);
    return reply_json(out, o, 503);
}

static int h_msg(void *ud, const char *id, struct kq_buf *out)
{
    struct kq_broker *b = ud;
    struct kq_msg *m = kq_delivery_find(b, id);
    cJSON *o;
    if (m) {
        o = cJSON_CreateObject();
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
        cJSON_AddItemToObject(o, "groupsDone", names_json(KQ_NAMES(m->done, m->n_done), m->n_done));
        cJSON_AddItemToObject(o, "groupsFailed", names_json(KQ_NAMES(m->failed, m->n_failed), m->n_failed));
        return reply_json(out, o, 200);
    }
    int down = store_down(b, out);
    if (down)
        return down;
    struct dlq_find f = {id, NULL};
    b->store->ops->dlq_list(b->store, NULL, find_dead, &f);
    if (f.found) {
        cJSON_AddStringToObject(f.found, "state", "dead");
        return reply_json(out, f.found, 200);
    }
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "messageId", id);
    cJSON_AddStringToObject(o, "state", "unknown");
    cJSON_AddStringToObject(o, "error", "not pending and not in the dead-letter store (delivered, rolled back, or never stored)");
    return reply_json(out, o, 404);
}

/* --- /dlq ------------------------------------------------------------------------------- */

struct dlq_listing {
    cJSON *items;
    size_t limit, n;
    const char *id;             /* requeue: one id, or NULL for all */
    struct kq_broker *broker;   /* requeue */
    size_t requeued;
};

static bool list_one(void *ud, const struct kq_dead_letter *d)
{
    struct dlq_listing *l = ud;
    cJSON_AddItemToArray(l->items, dead_json(d));
    return ++l->n < l->limit;
}

/* {"topic", "limit", "count" (all matching), "byTopic", "byGroup" (publishing group),
 * "deadLetters" (the first `limit`, oldest first), "more"} */
static int h_dlq_list(void *ud, const char *topic, size_t limit, struct kq_buf *out)
{
    struct kq_broker *b = ud;
    int down = store_down(b, out);
    if (down)
        return down;
    cJSON *root = cJSON_CreateObject();
    if (topic)
        cJSON_AddStringToObject(root, "topic", topic);
    else
        cJSON_AddNullToObject(root, "topic");
    cJSON_AddNumberToObject(root, "limit", (double)limit);
    struct dlq_count dc = {.topic = topic, .by_topic = cJSON_CreateObject(),
                           .by_group = cJSON_CreateObject()};
    dlq_count(b, &dc);
    cJSON_AddNumberToObject(root, "count", (double)dc.n);
    cJSON_AddItemToObject(root, "byTopic", dc.by_topic);
    cJSON_AddItemToObject(root, "byGroup", dc.by_group);
    struct dlq_listing l = {.items = cJSON_AddArrayToObject(root, "deadLetters"), .limit = limit};
    if (limit > 0)
        b->store->ops->dlq_list(b->store, topic, list_one, &l);
    cJSON_AddBoolToObject(root, "more", dc.n > l.n);
    return reply_json(out, root, 200);
}

struct requeue_ctx {
    struct kq_broker *broker;
    struct kq_msg *msg;
};

static bool drop_taken(void *ud, const struct kq_dead_letter *d)
{
    (void)ud;
    (void)d;
    return false;
}

/* Saved as a pending message again: only now leave the DLQ (a crash in between gives a
 * duplicate, never a loss). */
static void on_requeued(void *ud, int status)
{
    struct requeue_ctx *rc = ud;
    struct kq_broker *b = rc->broker;
    struct kq_msg *m = rc->msg;
    free(rc);
    if (status != 0) {
        KQ_ERROR("dlq", "requeue of id=%s not stored: %s", m->id, strerror(-status));
        kq_msg_free(m);
        return;
    }
    b->store->ops->dlq_take(b->store, m->id, drop_taken, NULL);
    m->stored = true;
    KQ_INFO("dlq", "requeued id=%s topic=%s", m->id, m->topic);
    kq_delivery_add(b, m, kq_now_ms());
}

static bool requeue_one(void *ud, const struct kq_dead_letter *d)
{
    struct dlq_listing *l = ud;
    if (l->id && strcmp(l->id, d->msg.id) != 0)
        return true;
    struct kq_broker *b = l->broker;
    if (kq_delivery_find(b, d->msg.id))
        return l->id == NULL; /* already pending again */
    struct kq_msg *m = kq_msg_new(b, &d->msg, true);
    struct requeue_ctx *rc = calloc(1, sizeof *rc);
    if (!m || !rc) {
        kq_msg_free(m);
        free(rc);
        return false;
    }
    /* A fresh start: the operator asked for it to be delivered. */
    m->commit = true;
    int64_t min_expiry = kq_now_sec() + 24 * 3600;
    if (m->expired_time < min_expiry)
        m->expired_time = min_expiry;
    rc->broker = b;
    rc->msg = m;
    struct kq_stored_msg sm;
    kq_msg_to_stored(m, &sm);
    if (b->store->ops->save(b->store, &sm, on_requeued, rc) != 0) {
        kq_msg_free(m);
        free(rc);
        return l->id == NULL;
    }
    l->requeued++;
    return l->id == NULL;
}

static int h_dlq_requeue(void *ud, const char *id, struct kq_buf *out)
{
    struct kq_broker *b = ud;
    int down = store_down(b, out);
    if (down)
        return down;
    bool all = strcmp(id, "*") == 0;
    struct dlq_listing l = {.id = all ? NULL : id, .broker = b};
    b->store->ops->dlq_list(b->store, NULL, requeue_one, &l);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddNumberToObject(root, "requeued", (double)l.requeued);
    return reply_json(out, root, l.requeued || all ? 200 : 404);
}

static int h_dlq_purge(void *ud, const char *topic, struct kq_buf *out)
{
    struct kq_broker *b = ud;
    int down = store_down(b, out);
    if (down)
        return down;
    size_t purged = 0;
    int rc = b->store->ops->dlq_purge(b->store, topic, &purged);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddNumberToObject(root, "purged", (double)purged);
    if (rc)
        cJSON_AddStringToObject(root, "error", strerror(-rc));
    KQ_INFO("dlq", "purged topic=%s count=%zu", topic ? topic : "*", purged);
    return reply_json(out, root, rc ? 500 : 200);
}

static int h_reload(void *ud, struct kq_buf *out)
{
    struct kq_broker *b = ud;
    int rc = kq_broker_reload(b);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddBoolToObject(root, "ok", rc == 0);
    cJSON_AddNumberToObject(root, "generation", (double)b->reload_generation);
    if (rc)
        cJSON_AddStringToObject(root, "error", b->reload_error);
    return reply_json(out, root, rc ? 500 : 200);
}

static const struct kq_admin_handlers handlers = {
    h_stat, h_binds, h_metrics, h_msg, h_dlq_list, h_dlq_requeue, h_dlq_purge, h_reload,
};

int kq_admin_api_start(struct kq_broker *b, char *err, size_t errlen)
{
    int rc = kq_admin_start(b->loop, b->cfg->admin, b->cfg->admin_token, &handlers, b,
                            &b->admin, err, errlen);
    if (rc == 0)
        KQ_INFO("admin", "listening admin=%s port=%d token=%s", b->cfg->admin,
                kq_admin_port(b->admin), b->cfg->admin_token ? "required for POST" : "none");
    return rc;
}
