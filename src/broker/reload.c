/* Hot reload (SIGHUP, POST /reload): re-read the config file with the original command-line
 * flags, build the new policies and binding set off to the side, and only when everything
 * is valid swap them in at once. The file must pass the checks of a start (preflight), also
 * for the options that cannot change while running (listen address, store, registry, admin
 * address): those are reported and keep their running values; adminToken changes (a token
 * rotation needs no restart).
 *
 * Building is Lua (the config file, the policy files and their self-tests), so it runs on
 * libuv's threadpool (offloop.h) while the loop keeps serving; the swap runs on the loop. A
 * build still running after RELOAD_DEADLINE_MS is abandoned: the reload fails and the
 * running generation stays; the worker's Lua states stop at their next budget check (the
 * stop flag of sandbox/lua_budget.h) and what it built is freed when it returns. One reload
 * at a time: the requests that come while one runs (or while an abandoned one has not
 * returned yet) share the next one. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin.h"
#include "broker/internal.h"
#include "broker/offloop.h"
#include "core/addr.h"
#include "core/log.h"
#include "core/redact.h"
#include "sandbox/lua_budget.h"
#include "registry/zk_registry.h"

#define RELOAD_DEADLINE_MS 8000 /* under the admin's 10 s for a late answer */

/* Someone waiting for the end of a reload (kq_broker_reload_start's callback). */
struct kq_reload_waiter {
    void (*done)(void *ud, int rc);
    void *ud;
    struct kq_reload_waiter *next;
};

struct kq_reload {
    struct kq_broker *b;
    struct kq_offloop *job; /* NULL once the loop heard back (done) */
    uint64_t generation;    /* serving when it started */
    /* read by the worker */
    int argc;
    char **argv;
    bool with_bindings; /* static registry: the bindings come from the file */
    /* built by the worker */
    struct kq_config *next;
    struct kq_policy *policy;
    struct kq_binding_set *bindings;
    int rc;
    char err[2048];                   /* as b->reload_error */
    struct kq_reload_waiter *waiters; /* answered when it ends */
};

static const char *str_or_empty(const char *s) { return s ? s : ""; }

static void answer(struct kq_reload_waiter *w, int rc)
{
    while (w) {
        struct kq_reload_waiter *next = w->next;
        w->done(w->ud, rc);
        free(w);
        w = next;
    }
}

static void reload_free(struct kq_reload *r)
{
    kq_binding_set_free(r->bindings);
    kq_policy_free(r->policy);
    if (r->next)
        kq_config_free(r->next);
    free(r->next);
    free(r);
}

static void report_failure(struct kq_broker *b, const char *why)
{
    b->reload_failures++;
    kq_redact(why, b->reload_error, sizeof b->reload_error); /* shown by /stat */
    b->reload_error_at_ms = kq_now_ms();
    KQ_ERROR("reload", "failed, the previous configuration keeps serving: %s", why);
}

/* ---- on a threadpool thread ------------------------------------------------------------ */

static void build(void *ud, const atomic_bool *abandoned)
{
    struct kq_reload *r = ud;
    kq_lua_budget_stop_flag(abandoned); /* the Lua states made here stop when abandoned */
    r->next = calloc(1, sizeof *r->next);
    if (!r->next) {
        snprintf(r->err, sizeof r->err, "out of memory");
        r->rc = -ENOMEM;
        goto out;
    }
    bool check_only = false; /* kq_config_from_args starts from the defaults */
    r->rc = kq_config_from_args(r->next, r->argc, r->argv, &check_only, r->err, sizeof r->err);
    /* The file as written must be one a restart accepts, fixed options included (a broken
     * db left on disk would otherwise only show at the next restart). */
    if (r->rc == 0)
        r->rc = kq_broker_preflight(r->next, &r->policy, r->err, sizeof r->err);
    if (r->rc == 0 && r->with_bindings && !(r->bindings = kq_binding_set_from_config(r->next))) {
        snprintf(r->err, sizeof r->err, "bindings: out of memory");
        r->rc = -ENOMEM;
    }
    if (r->rc > 0)
        r->rc = -EINVAL;
out:
    kq_lua_budget_stop_flag(NULL);
}

/* ---- on the loop ------------------------------------------------------------------------ */

/* Keep the running value of a fixed option, saying so when the file asks for another. */
static int keep_fixed(const char *name, char *running, char **wanted)
{
    if (strcmp(str_or_empty(running), str_or_empty(*wanted)) == 0)
        return 0;
    KQ_WARN("reload", "%s changed from \"%s\" to \"%s\": needs a restart, keeping \"%s\"", name,
            str_or_empty(running), str_or_empty(*wanted), str_or_empty(running));
    char *copy = running ? strdup(running) : NULL;
    if (running && !copy)
        return -ENOMEM;
    free(*wanted);
    *wanted = copy;
    return 0;
}

static bool same_topics(const struct kq_config *a, const struct kq_config *b)
{
    if (a->n_topics != b->n_topics)
        return false;
    for (size_t i = 0; i < a->n_topics; i++)
        if (!kq_config_has_topic(b, a->topics[i]))
            return false;
    return true;
}

/* Puts what r built in place of the running generation (r keeps the old parts, to free). */
static int swap(struct kq_broker *b, struct kq_reload *r)
{
    struct kq_config *old = b->cfg, *next = r->next;
    if (keep_fixed("bind", old->bind, &next->bind) || keep_fixed("db", old->db, &next->db) ||
        keep_fixed("registry", old->registry, &next->registry) ||
        keep_fixed("admin", old->admin, &next->admin) ||
        keep_fixed("logFile", old->log_file, &next->log_file)) {
        snprintf(r->err, sizeof r->err, "out of memory");
        return -ENOMEM;
    }
    if (next->message_history != old->message_history) {
        KQ_WARN("reload", "messageHistory changed from %d to %d: needs a restart, keeping %d",
                old->message_history, next->message_history, old->message_history);
        next->message_history = old->message_history;
    }
    if (next->admin && !next->admin_token && !kq_addr_is_loopback(next->admin)) {
        snprintf(r->err, sizeof r->err,
                 "adminToken: required while admin listens beyond loopback (%s)", next->admin);
        return -EINVAL;
    }
    /* Everything is built: swap. Nothing below can fail. */
    struct kq_policy *policy = b->policy;
    b->policy = r->policy;
    r->policy = policy;
    if (r->bindings) {
        struct kq_binding_set *bindings = b->bindings;
        b->bindings = r->bindings;
        r->bindings = bindings;
        kq_delivery_bindings_changed(b, NULL);
    }
    struct kq_flow_limits intake;
    kq_policy_flow_intake(b->policy, next->recieve_permits_per_second, &intake);
    kq_token_bucket_init(&b->intake, intake.rate, intake.burst);
    if (b->zk && !same_topics(old, next))
        kq_zk_registry_set_topics(b->zk, next->topics, next->n_topics);
    enum kq_log_level lvl;
    if (next->log_level && kq_log_parse_level(next->log_level, &lvl) == 0)
        kq_log_set_level(lvl);
    if (b->admin && kq_admin_set_token(b->admin, next->admin_token))
        KQ_ERROR("reload", "adminToken: out of memory, keeping the previous token");
    b->cfg = next;
    r->next = old;
    kq_broker_apply_net_limits(b);
    /* Messages that waited for a group that is now bound go out on their next attempt. */
    return 0;
}

static int start(struct kq_broker *b, struct kq_reload_waiter *waiters);

/* The reload is over (its worker returned): the next one may start. */
static void finish(struct kq_broker *b, struct kq_reload *r)
{
    reload_free(r);
    b->reload = NULL;
    if (b->reload_queued && !b->stopping) {
        struct kq_reload_waiter *w = b->reload_queue;
        b->reload_queued = false;
        b->reload_queue = NULL;
        start(b, w);
    }
}

static void on_built(void *ud, bool abandoned)
{
    struct kq_reload *r = ud;
    struct kq_broker *b = r->b;
    r->job = NULL;
    int rc = -ECANCELED;
    if (abandoned) {
        if (b->stopping) {
            KQ_INFO("reload", "abandoned: the broker is stopping");
        } else {
            char why[256];
            snprintf(why, sizeof why,
                     "abandoned after %d ms: loading the config file and the "
                     "policies did not finish (its Lua stops at its next budget check; what "
                     "it built is freed when it returns)",
                     RELOAD_DEADLINE_MS);
            report_failure(b, why);
            rc = -ETIMEDOUT;
        }
        answer(r->waiters, rc);
        r->waiters = NULL;
        return; /* b->reload stays until the worker returns (on_dropped) */
    }
    if (b->stopping) {
        KQ_INFO("reload", "dropped: the broker is stopping");
    } else if ((rc = r->rc) != 0 || (rc = swap(b, r)) != 0) {
        report_failure(b, r->err);
    } else {
        b->reload_generation++;
        b->reload_error[0] = 0;
        KQ_INFO("reload", "done generation=%llu", (unsigned long long)b->reload_generation);
    }
    answer(r->waiters, rc);
    r->waiters = NULL;
    finish(b, r);
}

static void on_dropped(void *ud, uint64_t returned_ms)
{
    struct kq_reload *r = ud;
    KQ_WARN("reload",
            "the abandoned reload (serving=%llu) returned after %llu ms; what it "
            "built is dropped%s%s",
            (unsigned long long)r->generation, (unsigned long long)returned_ms, r->rc ? ": " : "",
            r->rc ? r->err : "");
    finish(r->b, r);
}

static const struct kq_offloop_ops reload_ops = {build, on_built, on_dropped};

static int start(struct kq_broker *b, struct kq_reload_waiter *waiters)
{
    KQ_INFO("reload", "start serving=%llu", (unsigned long long)b->reload_generation);
    struct kq_reload *r = calloc(1, sizeof *r);
    int rc = -ENOMEM;
    if (r) {
        *r = (struct kq_reload){.b = b,
                                .generation = b->reload_generation,
                                .argc = b->argc,
                                .argv = b->argv,
                                .with_bindings = !b->zk,
                                .waiters = waiters};
        rc = kq_offloop_start(b->loop, &reload_ops, r, RELOAD_DEADLINE_MS, &r->job);
    }
    if (rc) {
        char why[128];
        snprintf(why, sizeof why, "cannot start the reload: %s", strerror(-rc));
        report_failure(b, why);
        answer(waiters, rc);
        free(r);
        return rc;
    }
    b->reload = r;
    return 0;
}

int kq_broker_reload_start(struct kq_broker *b, void (*done)(void *ud, int rc), void *ud)
{
    if (b->stopping)
        return -ECANCELED;
    if (!b->cfg->config_path || !b->argv) {
        KQ_INFO("reload", "start serving=%llu", (unsigned long long)b->reload_generation);
        report_failure(b, "nothing to reload: the broker was started without a config file");
        return -EINVAL;
    }
    struct kq_reload_waiter *w = NULL;
    if (done) {
        if (!(w = malloc(sizeof *w)))
            return -ENOMEM;
        *w = (struct kq_reload_waiter){done, ud, NULL};
    }
    if (!b->reload) { /* a start that fails has answered its waiter already */
        int rc = start(b, w);
        return rc < 0 && !w ? rc : 0;
    }
    if (w) {
        w->next = b->reload_queue;
        b->reload_queue = w;
    }
    if (!b->reload_queued)
        KQ_INFO("reload", "queued: the reload started at serving=%llu is still running",
                (unsigned long long)b->reload->generation);
    b->reload_queued = true;
    return 0;
}

int kq_broker_reload(struct kq_broker *b) { return kq_broker_reload_start(b, NULL, NULL); }

void kq_reload_stop(struct kq_broker *b)
{
    b->reload_queued = false;
    answer(b->reload_queue, -ECANCELED);
    b->reload_queue = NULL;
    if (b->reload && b->reload->job)
        kq_offloop_abandon(b->reload->job); /* its Lua stops; freed when the worker returns */
}
