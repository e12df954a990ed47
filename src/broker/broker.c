/* Broker lifecycle: open the store, recover pending messages, listen, tick timers,
 * graceful stop. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin.h"
#include "broker/admin_internal.h"
#include "broker/internal.h"
#include "core/log.h"
#include "sandbox/watchdog.h"

#define TICK_MS 100

static void on_open(void *ud, struct kq_conn *c) { kq_session_open(ud, c); }
static void on_frame(void *ud, struct kq_conn *c, const struct kq_frame *f)
{
    kq_session_on_frame(ud, c, f);
}
static void on_close(void *ud, struct kq_conn *c, const char *reason)
{
    kq_session_close(ud, c, reason);
}

static void on_drain(void *ud, struct kq_conn *c) { kq_delivery_conn_drained(ud, c); }

static const struct kq_net_handler net_handler = {on_open, on_frame, on_close, on_drain};

/* Connection limits from the config, at start and after a reload (for new connections). */
void kq_broker_apply_net_limits(struct kq_broker *b)
{
    /* A dead peer goes at half the heartbeat timeout if it has data in flight (the kernel
     * notices), at the heartbeat timeout otherwise (kq_session_sweep_idle). */
    uint64_t dead_ms = (uint64_t)b->cfg->heartbeat_timeout_seconds * 500;
    struct kq_net_limits l = {
        .max_conns = kq_net_max_conns(b->cfg->max_connections),
        .dead_peer_ms = dead_ms < INT_MAX ? (unsigned)dead_ms : INT_MAX,
    };
    kq_net_set_limits(b->net, &l);
    KQ_INFO("broker", "connections: maxConnections=%zu%s", l.max_conns,
            b->cfg->max_connections ? "" : " (from the open-file limit)");
}

static void on_tick(uv_timer_t *timer)
{
    struct kq_broker *b = timer->data;
    kq_delivery_check_timeouts(b);
    kq_delivery_pump_all(b);
    kq_backlog_tick(b);
    static uint64_t last_sweep;
    uint64_t now = kq_broker_mono_ms();
    if (now - last_sweep >= 1000) {
        last_sweep = now;
        kq_session_sweep_idle(b);
        kq_delivery_log_timeouts(b);
        kq_backlog_second(b);
        /* the original's /stat shows the previous second's figures */
        struct kq_broker_stats cur = b->stats;
        b->last_sec.received = cur.received - b->prev_stats.received;
        b->last_sec.delivered = cur.delivered - b->prev_stats.delivered;
        b->last_sec.acked = cur.acked - b->prev_stats.acked;
        b->prev_stats = cur;
        struct kq_topic_stats *t, *tmp;
        HASH_ITER (hh, b->topic_stats, t, tmp) {
            t->last_sec_received = t->received - t->mark_received;
            t->last_sec_delivered = t->delivered - t->mark_delivered;
            t->mark_received = t->received;
            t->mark_delivered = t->delivered;
        }
        struct kq_net_stats ns;
        kq_net_stats(b->net, &ns);
        b->net_last_sec.read_bytes = ns.read_bytes - b->net_mark.read_bytes;
        b->net_last_sec.read_frames = ns.read_frames - b->net_mark.read_frames;
        b->net_last_sec.write_bytes = ns.write_bytes - b->net_mark.write_bytes;
        b->net_last_sec.writes = ns.writes - b->net_mark.writes;
        b->net_mark = ns;
    }
}

/* Pending messages from the store go back into the index with their delivery state. */
void kq_broker_adopt(struct kq_broker *b, const struct kq_stored_msg *sm,
                     const struct kq_delivery_state *st)
{
    if (kq_delivery_find(b, sm->id))
        return;
    /* header and body stay in the store until the message's next attempt */
    struct kq_msg *m = kq_msg_new(b, sm, false);
    if (!m) {
        KQ_ERROR("broker", "out of memory recovering id=%s", sm->id);
        return;
    }
    m->stored = true;
    int64_t when = kq_now_ms();
    if (st) {
        m->attempts = st->attempts;
        m->tx_checks = st->tx_checks;
        int lost = 0; /* a done group not recorded gets it again; a failed one is only a hint */
        for (size_t i = 0; i < st->n_done; i++)
            lost += kq_names_add(b, &m->done, &m->n_done, st->groups_done[i]) != 0;
        /* so that a failed group coming back online gets it at once */
        for (size_t i = 0; i < st->n_failed; i++)
            lost += kq_failed_add(b, m, st->groups_failed[i]) != 0;
        if (lost) {
            b->stats.names_lost += (uint64_t)lost;
            KQ_LOG_RATELIMITED(KQ_LOG_ERROR, "broker",
                               "recovering id=%s: %d group name(s) not "
                               "recorded (out of memory); groups done may get it again",
                               sm->id, lost);
        }
        if (st->next_attempt_ms > when)
            when = st->next_attempt_ms;
    }
    int64_t due = kq_msg_extra_recover(b, m, sm->header, sm->header_len);
    if (due > when) /* scheduled: not before it is due, however its state was written */
        when = due;
    if (kq_idmap_insert(&b->msgs, m) != 0) {
        KQ_ERROR("broker", "out of memory recovering id=%s", sm->id);
        kq_failed_clear(b, m);
        kq_msg_extra_drop(b, m);
        kq_msg_free(m);
        return;
    }
    kq_msg_topic_stats(b, m)->pending++;
    kq_hist(b, m, KQ_EV_RECOVERED, NULL, NULL);
    /* Restart neither forgets nor floods: each resumes at its persisted next time. */
    kq_delivery_schedule(b, m, when);
}

static void on_recovered(void *ud, const struct kq_stored_msg *sm,
                         const struct kq_delivery_state *st)
{
    kq_broker_adopt(ud, sm, st);
}

void kq_broker_advertised(const struct kq_broker *b, char *out, size_t len)
{
    const char *bind = b->cfg->bind;
    const char *colon = strrchr(bind, ':');
    if (colon && strcmp(colon, ":0") == 0 && b->net)
        snprintf(out, len, "%.*s:%d", (int)(colon - bind), bind, kq_net_port(b->net));
    else
        snprintf(out, len, "%s", bind);
}

/* cfg->db, plus server=<advertised address> for a mysql store that names none: the
 * original used the hostname, under which two brokers on one host would share (and
 * recover, and move to the DLQ) each other's rows. malloc'd. */
static char *store_uri(const struct kq_broker *b)
{
    const char *db = b->cfg->db;
    if (strncmp(db, "mysql://", 8) != 0 || strstr(db, "?server=") || strstr(db, "&server="))
        return strdup(db);
    char addr[256];
    kq_broker_advertised(b, addr, sizeof addr);
    size_t n = strlen(db) + strlen(addr) + 16;
    char *uri = malloc(n);
    if (uri)
        snprintf(uri, n, "%s%sserver=%s", db, strchr(db, '?') ? "&" : "?", addr);
    return uri;
}

int kq_broker_start(uv_loop_t *loop, struct kq_config *cfg, char *err, size_t errlen,
                    struct kq_broker **out)
{
    *out = NULL;
    struct kq_broker *b = calloc(1, sizeof *b);
    if (!b)
        return -ENOMEM;
    b->loop = loop;
    b->cfg = cfg;
    kq_adm_json_memory_watch(); /* an admin answer that lost keys to memory is a 500 */
    /* traffic hooks run without LuaJIT's count hook, armed for a long call (watchdog.h) */
    char why[128];
    b->watchdog = kq_watchdog_start(why, sizeof why) == 0;
    if (!b->watchdog)
        KQ_WARN("broker", "%s: every hook call runs counted (slower)", why);
    b->routes = malloc(KQ_POLICY_MAX_ROUTES * sizeof *b->routes);
    if (!b->routes) {
        free(b);
        return -ENOMEM;
    }
    if (kq_backlog_init(b) || kq_history_init(b)) {
        kq_backlog_free(b);
        free(b->routes);
        free(b);
        return -ENOMEM;
    }
    kq_idmap_init(&b->msgs, offsetof(struct kq_msg, id));
    b->turns = (struct kq_msg_path_turns){kq_tx_check_due, kq_publish_first_attempt_done};
    kq_arena_init(&b->frame_arena, 64 * 1024);
    uv_timer_init(loop, &b->tick);
    b->tick.data = b;
    uv_timer_init(loop, &b->retry_timer);
    b->retry_timer.data = b;
    /* the checks `kiteq --check` makes, so that what it accepts starts */
    int rc = kq_broker_preflight(cfg, &b->policy, err, errlen);
    if (rc)
        goto fail_rc;
    struct kq_flow_limits intake;
    kq_policy_flow_intake(b->policy, cfg->recieve_permits_per_second, &intake);
    kq_token_bucket_init(&b->intake, intake.rate, intake.burst);
    b->bindings = kq_binding_set_from_config(cfg);
    if (!b->bindings) {
        snprintf(err, errlen, "bindings: out of memory");
        goto fail;
    }
    /* Listen first (nothing is accepted before the loop runs): a shared MySQL store names
     * this broker's rows by its address, which needs the port really bound. */
    rc = kq_net_listen(loop, cfg->bind, &net_handler, b, &b->net, err, errlen);
    if (rc)
        goto fail_rc;
    kq_broker_apply_net_limits(b);
    char *db = store_uri(b);
    if (!db) {
        snprintf(err, errlen, "store: out of memory");
        rc = -ENOMEM;
        goto fail_listening;
    }
    rc = kq_store_open(loop, db, &b->store, err, errlen);
    free(db);
    if (rc)
        goto fail_listening;
    uint64_t t0 = kq_mono_us();
    rc = b->store->ops->recover(b->store, on_recovered, b);
    bool partial = rc == -EINPROGRESS;
    if (partial) {
        /* Serve all the same (fly messages, the admin API, registry): publishes are refused
         * with the reason until the store has caught up by itself. */
        KQ_WARN("broker", "store unavailable at start, recovering in the background: %s",
                kq_store_unavailable(b->store) ? kq_store_unavailable(b->store) : "?");
        rc = 0;
    }
    if (rc) {
        snprintf(err, errlen, "store: recovery failed: %s", strerror(-rc));
        goto fail_listening;
    }
    KQ_INFO("broker", "recovered pending=%zu ms=%llu store=%s%s", b->msgs.len,
            (unsigned long long)((kq_mono_us() - t0) / 1000), b->store->ops->name,
            partial ? " (so far: the rest comes in the background)" : "");
    /* Registered only once we listen, so clients never find a broker that is not there. */
    rc = kq_registry_link_start(b, err, errlen);
    if (rc == 0 && cfg->admin && cfg->admin[0])
        rc = kq_admin_api_start(b, err, errlen);
    if (rc)
        goto fail_listening;
    b->started_sec = kq_now_sec();
    uv_timer_start(&b->tick, on_tick, TICK_MS, TICK_MS);
    /* Anything recovered is due now or later: arm the timer. */
    kq_delivery_rearm(b);
    KQ_INFO("broker", "listening bind=%s port=%d topics=%zu groups=%zu bindings=%zu db=%s",
            cfg->bind, kq_net_port(b->net), cfg->n_topics, cfg->n_groups, cfg->n_bindings, cfg->db);
    if (cfg->n_groups == 0)
        KQ_WARN("broker", "no groups configured: authentication is OFF, any groupId is "
                          "accepted (configure `groups` or -groups=g:secret)");
    *out = b;
    return 0;
fail_listening:
    /* listener and registry are up: stop them through the normal path */
    KQ_ERROR("broker", "cannot start: %s", err);
    *out = b;
    return rc;
fail:
    rc = -EINVAL;
fail_rc:
    if (b->store)
        b->store->ops->close(b->store);
    kq_delivery_free_all(b);
    kq_binding_set_free(b->bindings);
    kq_policy_free(b->policy);
    kq_backlog_free(b);
    kq_history_free(b);
    uv_close((uv_handle_t *)&b->tick, NULL);
    uv_close((uv_handle_t *)&b->retry_timer, NULL);
    uv_run(loop, UV_RUN_NOWAIT); /* let the handles close before freeing */
    if (b->watchdog)
        kq_watchdog_stop();
    free(b);
    return rc;
}

int kq_broker_port(const struct kq_broker *b) { return kq_net_port(b->net); }

static void on_handle_closed(uv_handle_t *h) { (void)h; }

static void on_net_closed(void *ud)
{
    struct kq_broker *b = ud;
    if (b->store)                       /* NULL when the start failed at the store */
        b->store->ops->close(b->store); /* flushes what is queued */
    b->store = NULL;
    kq_admin_api_stop(b); /* after the store: its last callbacks may end admin requests */
    uv_close((uv_handle_t *)&b->tick, on_handle_closed);
    uv_close((uv_handle_t *)&b->retry_timer, on_handle_closed);
    if (b->stop_done)
        b->stop_done(b->stop_ud);
}

static void on_admin_closed(void *ud)
{
    struct kq_broker *b = ud;
    KQ_INFO("broker", "stopping: closing %zu connections", kq_net_conn_count(b->net));
    kq_net_close(b->net, on_net_closed, b);
}

/* The registry nodes go first so clients move away before their connections close. */
static void on_registry_withdrawn(void *ud)
{
    struct kq_broker *b = ud;
    if (b->admin) {
        struct kq_admin *a = b->admin;
        b->admin = NULL;
        kq_admin_stop(a, on_admin_closed, b);
    } else {
        on_admin_closed(b);
    }
}

void kq_broker_stop(struct kq_broker *b, void (*done)(void *ud), void *ud)
{
    if (b->stopping)
        return;
    b->stopping = true;
    b->stop_done = done;
    b->stop_ud = ud;
    kq_reload_stop(b);
    uv_timer_stop(&b->retry_timer);
    kq_registry_link_stop(b, on_registry_withdrawn, b);
}

void kq_broker_set_args(struct kq_broker *b, int argc, char **argv)
{
    b->argc = argc;
    b->argv = argv;
}

struct kq_topic_stats *kq_topic_stats(struct kq_broker *b, const char *topic)
{
    static struct kq_topic_stats sink; /* out of memory: count nowhere */
    /* Called several times per message, nearly always for the topic of the last call. */
    struct kq_topic_stats *t = b->last_topic_stats;
    if (t && strcmp(t->topic, topic) == 0)
        return t;
    HASH_FIND_STR(b->topic_stats, topic, t);
    if (t)
        return b->last_topic_stats = t;
    t = calloc(1, sizeof *t);
    if (!t || !(t->topic = strdup(topic))) {
        free(t);
        return &sink;
    }
    HASH_ADD_KEYPTR(hh, b->topic_stats, t->topic, strlen(t->topic), t);
    return b->last_topic_stats = t;
}

struct kq_topic_stats *kq_msg_topic_stats(struct kq_broker *b, const struct kq_msg *m)
{
    /* The atom is held while it is the key here, so its address cannot name another topic;
     * stats are never freed before the broker is. */
    if (m->topic && m->topic == b->stats_atom)
        return b->stats_of_atom;
    struct kq_topic_stats *t = kq_topic_stats(b, m->topic);
    if (m->topic && t->topic) { /* not the out-of-memory sink: it is asked for again */
        kq_atom_release(b->stats_atom);
        b->stats_atom = kq_atom_ref(m->topic);
        b->stats_of_atom = t;
    }
    return t;
}

void kq_broker_free(struct kq_broker *b)
{
    if (!b)
        return;
    struct kq_topic_stats *t, *tmp;
    HASH_ITER (hh, b->topic_stats, t, tmp) {
        HASH_DEL(b->topic_stats, t);
        free(t->topic);
        free(t);
    }
    kq_delivery_free_all(b);
    kq_backlog_free(b);
    kq_groups_free(b);
    kq_history_free(b);
    kq_atom_release(b->stats_atom);
    b->stats_atom = NULL;
    kq_atoms_free(b);
    kq_arena_free(&b->frame_arena);
    kq_binding_set_free(b->bindings);
    kq_policy_free(b->policy);
    if (b->watchdog)
        kq_watchdog_stop();
    if (b->net)
        kq_net_free(b->net);
    kq_config_free(b->cfg);
    free(b->cfg);
    free(b);
}

void kq_broker_stats(const struct kq_broker *b, struct kq_broker_stats *s)
{
    *s = b->stats;
    s->pending = b->msgs.len;
}
