/* Who a dead letter failed for (struct kq_dlq_groups, store.h), recorded with it so that a
 * requeue goes only to those groups (admin_dlq.c), and which groups a requeued copy is
 * for. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/internal.h"

/* Groups that take m now: its routes as an attempt sees them (the policy's, per message when
 * it routes per message, or the groups on_publish chose). Copied (the broker's route buffer
 * serves every attempt). malloc'd array of atoms' names; NULL on ENOMEM. */
static const char **routed_groups(struct kq_broker *b, const struct kq_msg *m, size_t *n)
{
    size_t nr = kq_msg_route(b, m, b->routes, KQ_POLICY_MAX_ROUTES);
    const char **v = malloc((nr + 1) * sizeof *v);
    if (!v)
        return NULL;
    for (size_t i = 0; i < nr; i++)
        v[i] = b->routes[i].group;
    *n = nr;
    return v;
}

static bool listed(const char *const *v, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(v[i], name))
            return true;
    return false;
}

int kq_dead_groups_of(struct kq_broker *b, const struct kq_msg *m, const char *reason,
                      struct kq_dlq_groups *out)
{
    memset(out, 0, sizeof *out);
    size_t nr = 0;
    const char **routed = routed_groups(b, m, &nr);
    const char *const *done = kq_names_view(&m->done, m->n_done);
    const char *const *failed = kq_names_view(&m->failed, m->n_failed);
    struct kq_dlq_group *v = routed ? malloc((nr + m->n_failed + 1) * sizeof *v) : NULL;
    if (!v) {
        free(routed);
        return -ENOMEM;
    }
    size_t n = 0;
    /* the routed groups without an ack, then those that failed but are no longer bound */
    for (size_t i = 0; i < nr + m->n_failed; i++) {
        const char *g = i < nr ? routed[i] : failed[i - nr];
        if (listed(done, m->n_done, g) || !strcmp(g, KQ_NO_SUBSCRIBER) ||
            (i >= nr && listed(routed, nr, g)))
            continue;
        /* its own last failure when the history has it, else the last attempt's */
        bool last_failed = listed(failed, m->n_failed, g);
        const char *why = kq_hist_last_failure(b, m, g);
        if (!why)
            why = last_failed && kq_msg_failure(m) ? kq_msg_failure(m) : reason;
        v[n++] = (struct kq_dlq_group){g, why ? why : ""};
    }
    free(routed);
    *out = (struct kq_dlq_groups){v, n, done, m->n_done};
    return 0;
}

void kq_dead_groups_free(struct kq_dlq_groups *g)
{
    free((void *)g->failed);
    memset(g, 0, sizeof *g);
}

int kq_requeue_targets(struct kq_broker *b, struct kq_msg *m, const struct kq_dead_letter *d,
                       const char *const *picked, size_t n_picked, char *why, size_t whylen)
{
    size_t nr = 0;
    const char **routed = routed_groups(b, m, &nr);
    if (!routed) {
        snprintf(why, whylen, "out of memory");
        return -ENOMEM;
    }
    for (size_t i = 0; i < n_picked; i++)
        if (!listed(routed, nr, picked[i])) {
            snprintf(why, whylen, "group %.200s is not bound to topic %.200s, type %.200s",
                     picked[i], m->topic, m->type);
            free(routed);
            return -EINVAL;
        }
    const char **failed = malloc((d->groups.n_failed + 1) * sizeof *failed);
    for (size_t i = 0; failed && i < d->groups.n_failed; i++)
        failed[i] = d->groups.failed[i].group;
    size_t targets = 0;
    int rc = failed ? 0 : -ENOMEM;
    /* every routed group that is not a target is marked done: it does not get the copy */
    for (size_t i = 0; !rc && i < nr; i++) {
        bool target = n_picked          ? listed(picked, n_picked, routed[i])
                      : d->groups_known ? listed(failed, d->groups.n_failed, routed[i])
                                        : !listed(d->groups.acked, d->groups.n_acked, routed[i]);
        if (target)
            targets++;
        else
            rc = kq_names_add(b, &m->done, &m->n_done, routed[i]);
    }
    if (rc)
        snprintf(why, whylen, "out of memory");
    else if (nr && !targets) {
        snprintf(why, whylen,
                 "none of the groups it failed for is bound to topic %.200s, "
                 "type %.200s now (pick groups)",
                 m->topic, m->type);
        rc = -ENOENT;
    }
    free(failed);
    free(routed);
    return rc;
}
