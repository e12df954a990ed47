/* Hot reload (SIGHUP, POST /reload): re-read the config file with the original command-line
 * flags, build the new policies and binding set off to the side, and only when everything
 * is valid swap them in at once. The file must pass the checks of a start (preflight), also
 * for the options that cannot change while running (listen address, store, registry, admin
 * address): those are reported and keep their running values; adminToken changes (a token
 * rotation needs no restart). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin.h"
#include "broker/internal.h"
#include "core/addr.h"
#include "core/log.h"
#include "registry/zk_registry.h"

static const char *str_or_empty(const char *s) { return s ? s : ""; }

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

int kq_broker_reload_now(struct kq_broker *b, char *err, size_t errlen)
{
    struct kq_config *old = b->cfg;
    if (!old->config_path || !b->argv) {
        snprintf(err, errlen, "nothing to reload: the broker was started without a config file");
        return -EINVAL;
    }
    struct kq_config *next = calloc(1, sizeof *next);
    if (!next)
        return -ENOMEM;
    bool check_only = false; /* kq_config_from_args starts from the defaults */
    int rc = kq_config_from_args(next, b->argc, b->argv, &check_only, err, errlen);
    if (rc != 0)
        goto fail_cfg;
    /* The file as written must be one a restart accepts, fixed options included (a broken
     * db left on disk would otherwise only show at the next restart). */
    struct kq_policy *policy = NULL;
    rc = kq_broker_preflight(next, &policy, err, errlen);
    if (rc != 0)
        goto fail_cfg;
    if ((rc = keep_fixed("bind", old->bind, &next->bind)) ||
        (rc = keep_fixed("db", old->db, &next->db)) ||
        (rc = keep_fixed("registry", old->registry, &next->registry)) ||
        (rc = keep_fixed("admin", old->admin, &next->admin))) {
        kq_policy_free(policy);
        goto fail_cfg;
    }
    if (next->admin && !next->admin_token && !kq_addr_is_loopback(next->admin)) {
        snprintf(err, errlen, "adminToken: required while admin listens beyond loopback (%s)",
                 next->admin);
        kq_policy_free(policy);
        rc = -EINVAL;
        goto fail_cfg;
    }
    struct kq_binding_set *bindings = NULL;
    if (!b->zk) { /* static registry: bindings come from the file */
        bindings = kq_binding_set_from_config(next);
        if (!bindings) {
            snprintf(err, errlen, "bindings: out of memory");
            kq_policy_free(policy);
            rc = -ENOMEM;
            goto fail_cfg;
        }
    }

    /* Everything is built: swap. Nothing below can fail. */
    kq_policy_free(b->policy);
    b->policy = policy;
    if (bindings) {
        kq_binding_set_free(b->bindings);
        b->bindings = bindings;
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
    kq_config_free(old);
    free(old);
    /* Messages that waited for a group that is now bound go out on their next attempt. */
    return 0;

fail_cfg:
    kq_config_free(next);
    free(next);
    return rc < 0 ? rc : -EINVAL;
}
