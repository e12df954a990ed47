/* GET /metrics: the broker's figures in the Prometheus text format (src/admin/prom.h), the
 * store's through kq_store_ops.stats. Conventions (docs/ADMIN.md lists every family): base
 * units (seconds, bytes), counters end in _total, each family's samples together (the
 * writer groups them), delivery figures only for consuming groups. Loop thread; costs what
 * the broker's state costs to print. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/prom.h"
#include "broker/admin_internal.h"
#include "core/log.h"

static void connection_metrics(struct kq_broker *b, struct kq_prom *p)
{
    kq_prom_gauge(p, "kiteq_connections", "Open client connections.", NULL,
                  (double)kq_net_conn_count(b->net));
    struct kq_net_stats ns;
    kq_net_stats(b->net, &ns);
    kq_prom_counter(p, "kiteq_connections_refused_total",
                    "Connections closed at once because maxConnections was reached.", NULL,
                    (double)ns.refused);
    struct kq_group *g, *gtmp;
    HASH_ITER (hh, b->groups, g, gtmp) {
        const char *l[] = {"group", g->id, NULL};
        kq_prom_gauge(p, "kiteq_group_connections", "Authenticated connections per group.", l,
                      (double)g->n);
    }
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The groups bound to a topic, sorted for bsearch (*out malloc'd, NULL when none). */
static int bound_groups(struct kq_broker *b, const char ***out, size_t *n)
{
    size_t nb;
    const struct kq_binding *v = kq_binding_set_all(b->bindings, &nb);
    *out = NULL;
    *n = 0;
    if (nb == 0)
        return 0;
    const char **names = malloc(nb * sizeof *names);
    if (!names)
        return -ENOMEM;
    for (size_t i = 0; i < nb; i++)
        names[i] = v[i].group_id;
    qsort(names, nb, sizeof *names, cmp_name);
    *out = names;
    *n = nb;
    return 0;
}

/* A group takes deliveries when it is bound to a topic, or has taken some (its counters
 * must not vanish when a binding goes): producer groups stay out of the delivery figures. */
static bool consumes(const struct kq_group *g, const char **bound, size_t n_bound)
{
    const char *id = g->id;
    return g->sent || g->inflight || g->n_waiting ||
           (n_bound && bsearch(&id, bound, n_bound, sizeof *bound, cmp_name));
}

static int delivery_metrics(struct kq_broker *b, struct kq_prom *p)
{
    const char **bound;
    size_t n_bound;
    if (bound_groups(b, &bound, &n_bound))
        return -ENOMEM;
    struct kq_group *g, *gtmp;
    HASH_ITER (hh, b->groups, g, gtmp) {
        if (!consumes(g, bound, n_bound))
            continue;
        const char *l[] = {"group", g->id, NULL};
        kq_prom_gauge(p, "kiteq_group_inflight", "Deliveries waiting for an ack, per group.", l,
                      g->inflight);
        kq_prom_gauge(p, "kiteq_group_waiting",
                      "Messages waiting for room in the group's window or rate.", l,
                      (double)g->n_waiting);
        kq_prom_counter(p, "kiteq_deliveries_sent_total",
                        "Copies sent to the group (each attempt sends again).", l, (double)g->sent);
        kq_prom_counter(p, "kiteq_deliveries_acked_total", "Copies the group acked.", l,
                        (double)g->acked);
        kq_prom_counter(p, "kiteq_deliveries_failed_total",
                        "Copies nacked, timed out or lost with the connection.", l,
                        (double)g->failed);
        for (size_t i = 0; i < g->n_rates; i++) {
            const char *lt[] = {"group", g->id, "topic", g->rates[i].topic, NULL};
            kq_prom_counter(p, "kiteq_delivery_timeouts_total",
                            "Copies not acked within deliverySeconds (retried).", lt,
                            (double)g->rates[i].timeouts);
        }
    }
    free(bound);
    return 0;
}

static void message_metrics(struct kq_broker *b, struct kq_prom *p)
{
    struct kq_topic_stats *t, *ttmp;
    HASH_ITER (hh, b->topic_stats, t, ttmp) {
        const char *l[] = {"topic", t->topic, NULL};
        kq_prom_counter(p, "kiteq_messages_received_total",
                        "Publishes that passed the intake limit and the header checks.", l,
                        (double)t->received);
        kq_prom_counter(p, "kiteq_messages_stored_total", "Messages the store confirmed.", l,
                        (double)t->stored);
        kq_prom_counter(p, "kiteq_messages_delivered_total",
                        "Messages acked by every group they were routed to.", l,
                        (double)t->delivered);
        kq_prom_counter(p, "kiteq_messages_retried_total",
                        "Attempts that ended with a failed copy and a retry.", l,
                        (double)t->retried);
        kq_prom_counter(p, "kiteq_messages_dead_lettered_total",
                        "Messages moved to the dead-letter store.", l, (double)t->dead_lettered);
        kq_prom_counter(p, "kiteq_unrouted_messages_total",
                        "Messages accepted while no group was bound to their (topic, "
                        "messageType).",
                        l, (double)t->unrouted);
    }
    kq_prom_counter(p, "kiteq_messages_rejected_total", "Publishes answered with status false.",
                    NULL, (double)b->stats.rejected);
    kq_prom_counter(p, "kiteq_store_errors_total",
                    "Store updates, removes and dead letters that failed (the store may be "
                    "behind; a restart may deliver again).",
                    NULL, (double)b->stats.store_errors);
    kq_prom_counter(p, "kiteq_names_lost_total",
                    "Group names delivery could not record (out of memory); the attempt was "
                    "retried.",
                    NULL, (double)b->stats.names_lost);
    kq_prom_counter(p, "kiteq_deliveries_unsent_total",
                    "Copies neither sent nor queued for room: out of memory (the attempt failed "
                    "for the group and is retried).",
                    NULL, (double)b->stats.unsent);
    kq_prom_counter(p, "kiteq_acks_unmatched_total",
                    "Acks that matched no delivery outstanding on their connection (late: the "
                    "copy had timed out and was retried; or never sent there).",
                    NULL, (double)b->stats.acks_unmatched);
    kq_prom_gauge(p, "kiteq_interned_names",
                  "Distinct topic, messageType and group names held by pending messages and known "
                  "groups.",
                  NULL, (double)kq_atoms_count(b));
    kq_prom_gauge(p, "kiteq_pending_messages", "Messages in the broker's index (backlog).", NULL,
                  (double)b->msgs.len);
    kq_prom_gauge(p, "kiteq_inflight", "Deliveries waiting for an ack.", NULL,
                  (double)b->stats.inflight);
}

/* One figure of the store's (kq_store_ops.stats) as kiteq_store_<name>. */
static void store_figure(void *ud, const struct kq_store_stat *st)
{
    struct kq_prom *p = ud;
    char name[128];
    snprintf(name, sizeof name, "kiteq_store_%s", st->name);
    if (st->kind == KQ_STORE_COUNTER)
        kq_prom_counter(p, name, st->help, NULL, st->value);
    else if (st->kind == KQ_STORE_GAUGE)
        kq_prom_gauge(p, name, st->help, NULL, st->value);
    else
        kq_prom_histogram_of(p, name, st->help, NULL, st->bounds, st->n_bounds, st->counts,
                             st->sum);
}

static void store_metrics(struct kq_broker *b, struct kq_prom *p)
{
    if (b->store->ops->stats)
        b->store->ops->stats(b->store, store_figure, p);
    bool store_up = !kq_store_unavailable(b->store);
    kq_prom_gauge(p, "kiteq_store_available",
                  "1 while the store takes saves, 0 while it refuses them (MySQL down or not "
                  "answering, start-up recovery pending; /stat says why).",
                  NULL, store_up ? 1 : 0);
    cJSON *dlq_by_topic = cJSON_CreateObject();
    /* every topic, so a dashboard sees 0; none while the store has not counted (MySQL) */
    if (dlq_by_topic && kq_adm_dlq_tally(b, NULL, dlq_by_topic, NULL, NULL) == 0)
        for (size_t i = 0; i < b->cfg->n_topics; i++) {
            const char *l[] = {"topic", b->cfg->topics[i], NULL};
            cJSON *n = cJSON_GetObjectItemCaseSensitive(dlq_by_topic, b->cfg->topics[i]);
            kq_prom_gauge(p, "kiteq_dlq_messages", "Dead letters per topic.", l,
                          n ? n->valuedouble : 0);
        }
    cJSON_Delete(dlq_by_topic);
}

static void control_metrics(struct kq_broker *b, struct kq_prom *p)
{
    const char *reg[] = {"state", b->registry_state ? b->registry_state : "static", NULL};
    kq_prom_gauge(p, "kiteq_registry_state", "Registry state (value 1, state in the label).", reg,
                  1);
    kq_prom_gauge(p, "kiteq_reload_generation",
                  "Configuration generation serving (successful reloads since start).", NULL,
                  (double)b->reload_generation);
    kq_prom_counter(p, "kiteq_reload_failures_total", "Failed reloads.", NULL,
                    (double)b->reload_failures);
    struct kq_policy_hook_stats hs[16];
    size_t nh = kq_policy_stats(b->policy, hs, 16);
    for (size_t i = 0; i < nh; i++) {
        const char *l[] = {"hook", hs[i].name, NULL};
        kq_prom_counter(p, "kiteq_hook_calls_total", "Lua hook calls.", l, (double)hs[i].calls);
        kq_prom_counter(p, "kiteq_hook_errors_total", "Hook errors, overruns and invalid answers.",
                        l, (double)hs[i].errors);
        kq_prom_counter(p, "kiteq_hook_seconds_total", "Time spent in the hook.", l,
                        (double)hs[i].total_us / 1e6);
        kq_prom_counter(p, "kiteq_hook_fallbacks_total",
                        "Answers given by the built-in rules because the hook failed or is "
                        "switched off.",
                        l, (double)hs[i].fallbacks);
        kq_prom_counter(p, "kiteq_hook_rejects_total",
                        "Messages on_publish rejected, connections on_connect refused, dead "
                        "letters on_dead dropped.",
                        l, (double)hs[i].rejects);
        kq_prom_gauge(p, "kiteq_hook_disabled",
                      "Subjects the hook is switched off for after failing 5 times in a row "
                      "(route: topic and messageType; flow.group: group and topic; retry, "
                      "flow.intake: 1 = every call).",
                      l, (double)hs[i].disabled_subjects);
    }
    /* which policy is live */
    struct kq_policy_file pf[KQ_POLICY_MAX_FILES];
    size_t npf = kq_policy_files(b->policy, pf, KQ_POLICY_MAX_FILES);
    for (size_t i = 0; i < npf; i++) {
        const char *l[] = {"file", pf[i].file, "sha256", pf[i].sha256, NULL};
        kq_prom_gauge(p, "kiteq_policy_info",
                      "A loaded policy file (value 1; its sha256 in the label).", l, 1);
    }
    for (size_t i = 0; i < npf; i++) {
        const char *l[] = {"file", pf[i].file, NULL};
        kq_prom_gauge(p, "kiteq_policy_loaded_timestamp_seconds",
                      "When the policy file was loaded (Unix s).", l,
                      (double)pf[i].loaded_at_ms / 1e3);
    }
}

int kq_adm_metrics(void *ud, struct kq_buf *out)
{
    struct kq_broker *b = ud;
    struct kq_prom p;
    kq_prom_init(&p, out);
    connection_metrics(b, &p);
    int rc = delivery_metrics(b, &p);
    message_metrics(b, &p);
    kq_adm_groups_metrics(b, &p);
    kq_adm_history_metrics(b, &p);
    store_metrics(b, &p);
    control_metrics(b, &p);
    if (!rc)
        rc = kq_prom_finish(&p);
    if (rc) /* a family the code got wrong, or memory: say which, never a silent gap */
        KQ_ERROR("admin", "/metrics: %s%s%s", p.error ? p.error_name : "", p.error ? ": " : "",
                 strerror(-rc));
    kq_prom_free(&p);
    return rc == -ENOMEM ? 500 : 200;
}
