/* The per-message hooks on the broker's side: routing a pending message (route_message, or
 * the memoised route when the policy has none) and the on_dead verdict before a dead
 * letter. Both see the message as on_publish does, properties included, read from its
 * packed header. Costs nothing when the policy defines neither hook.
 *
 * A message on_dead handed to groups carries the mark HANDED_OVER among its done groups
 * (persisted with them, so a restart keeps it): from then on it goes to every group bound
 * on its topic that is not done - the handler groups, since the others were marked done -
 * its expiry no longer applies, and when it fails again it is dead-lettered for real. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/internal.h"
#include "core/log.h"

#define HANDED_OVER "(handed over by on_dead)"

bool kq_msg_handed_over(struct kq_broker *b, const struct kq_msg *m)
{
    if (!m->n_done)
        return false;
    const char *atom = kq_atom_find(b, HANDED_OVER);
    return atom && kq_names_has(&m->done, m->n_done, atom);
}

int64_t kq_msg_expiry(struct kq_broker *b, const struct kq_msg *m)
{
    return kq_msg_handed_over(b, m) ? 0 : m->expired_time;
}

/* Every group bound on m's topic, once each (its first binding). */
static size_t topic_groups(struct kq_broker *b, const struct kq_msg *m, struct kq_route *out,
                           size_t max)
{
    size_t nb = 0, n = 0;
    const struct kq_binding *binds =
        b->bindings ? kq_binding_set_topic(b->bindings, m->topic, &nb) : NULL;
    for (size_t i = 0; i < nb && n < max; i++) {
        bool seen = false;
        for (size_t k = 0; k < n && !seen; k++)
            seen = strcmp(out[k].group, binds[i].group_id) == 0;
        if (!seen)
            out[n++] = (struct kq_route){binds[i].group_id, binds[i].persistent,
                                         binds[i].watermark > 0 ? binds[i].watermark
                                                                : KQ_POLICY_DEFAULT_WATERMARK};
    }
    return n;
}

/* A hook is asked about m without its properties (why): its answer may differ from the one
 * it would give with them, so the operator must be able to tell. One line a second per
 * reason: one cause does not hide another. */
static void without_properties(const struct kq_msg *m, const char *hook, const char *why)
{
    KQ_LOG_RATELIMITED_BY(KQ_LOG_ERROR, "delivery", why, strlen(why),
                          "%s sees id=%s without its properties: %s", hook, m->id, why);
}

#define PROPS_INLINE 16 /* the properties of most messages: no allocation per hook call */

/* The view of m a hook gets, its properties pointing into h (NULL h: none); they are listed
 * in `inline_props`, or past PROPS_INLINE in `heap` (the caller frees it). */
struct hook_view {
    struct kq_publish_view v;
    struct kq_property_kv inline_props[PROPS_INLINE];
    struct kq_property_kv *heap;
};

static void hook_view_of(const struct kq_msg *m, const struct kq_header_view *h, const char *hook,
                         struct hook_view *hv)
{
    struct kq_property_kv *props = hv->inline_props;
    hv->heap = NULL;
    if (h && h->n_properties > PROPS_INLINE) {
        props = hv->heap = malloc(h->n_properties * sizeof *props);
        if (!props) {
            without_properties(m, hook, "out of memory");
            h = NULL;
        }
    }
    size_t np = h ? h->n_properties : 0;
    for (size_t i = 0; i < np; i++)
        props[i] = (struct kq_property_kv){h->properties[i].key, h->properties[i].value};
    hv->v = (struct kq_publish_view){.message_id = m->id,
                                     .topic = m->topic,
                                     .message_type = m->type,
                                     .group = m->pub_group,
                                     .properties = np ? props : NULL,
                                     .n_properties = np,
                                     .body_size = m->block ? KQ_MSG_BODY_LEN(m) : 0,
                                     .fly = m->fly,
                                     .commit = m->commit,
                                     .expired_time = m->expired_time,
                                     .deliver_limit = m->deliver_limit,
                                     .now_sec = kq_now_sec()};
}

/* m's header decoded into h (in a, an arena the caller frees): h, or NULL when it is not in
 * memory or does not decode (logged). */
static const struct kq_header_view *decode_header(const struct kq_msg *m, struct kq_arena *a,
                                                  struct kq_header_view *h)
{
    kq_arena_init(a, KQ_HEADER_ARENA_CHUNK);
    if (!m->block)
        return NULL;
    if (kq_header_decode(a, KQ_MSG_HDR(m), KQ_MSG_HDR_LEN(m), h) == 0)
        return h;
    KQ_LOG_RATELIMITED(KQ_LOG_ERROR, "delivery",
                       "cannot read the header of id=%s: the "
                       "per-message hooks see it without properties",
                       m->id);
    return NULL;
}

static size_t route_with_header(struct kq_broker *b, const struct kq_msg *m,
                                const struct kq_header_view *h, struct kq_route *out, size_t max)
{
    struct hook_view hv;
    hook_view_of(m, h, "route_message", &hv);
    size_t n = kq_policy_route_message(b->policy, b->bindings, &hv.v, out, max);
    free(hv.heap);
    return n;
}

/* The answer just computed for a message being published, kept for its first attempt that
 * follows at once (memory store, deliveryFirst, fly): one hook call per message, not two.
 * Any other routing clears it. */
static _Thread_local struct {
    char id[KQ_ID_LEN + 1];
    const struct kq_policy *policy;
    const struct kq_binding_set *set;
    uint64_t set_gen;
    size_t n;
    struct kq_route routes[KQ_POLICY_MAX_ROUTES];
} once; /* one per thread: brokers embedded in one process may run on several */

size_t kq_route_msg(struct kq_broker *b, const struct kq_msg *m, struct kq_route *out, size_t max)
{
    if (kq_msg_handed_over(b, m)) {
        once.id[0] = 0;
        return topic_groups(b, m, out, max);
    }
    if (!kq_policy_has_route_message(b->policy))
        return kq_policy_route(b->policy, b->bindings, m->topic, m->type, out, max);
    uint64_t gen = b->bindings ? kq_binding_set_generation(b->bindings) : 0;
    if (once.id[0] && strcmp(once.id, m->id) == 0 && once.policy == b->policy &&
        once.set == b->bindings && once.set_gen == gen) {
        once.id[0] = 0;
        size_t k = once.n < max ? once.n : max;
        memcpy(out, once.routes, k * sizeof *out);
        return k;
    }
    once.id[0] = 0;
    if (!m->block) /* cold: every group of the topic may be one (loaded when one is online) */
        return topic_groups(b, m, out, max);
    struct kq_arena arena;
    struct kq_header_view hv;
    size_t n = route_with_header(b, m, decode_header(m, &arena, &hv), out, max);
    kq_arena_free(&arena);
    return n;
}

size_t kq_route_published(struct kq_broker *b, const struct kq_msg *m,
                          const struct kq_header_view *h, struct kq_route *out, size_t max)
{
    if (!kq_policy_has_route_message(b->policy))
        return kq_policy_route(b->policy, b->bindings, m->topic, m->type, out, max);
    once.n = route_with_header(b, m, h, once.routes, KQ_POLICY_MAX_ROUTES);
    memcpy(once.id, m->id, sizeof once.id);
    once.policy = b->policy;
    once.set = b->bindings;
    once.set_gen = b->bindings ? kq_binding_set_generation(b->bindings) : 0;
    size_t k = once.n < max ? once.n : max;
    memcpy(out, once.routes, k * sizeof *out);
    return k;
}

/* --- on_dead ----------------------------------------------------------------------------- */

/* Hand m to the groups in r instead of dead-lettering it: every other group of the topic
 * counts as done, the handler groups get a fresh deliver_limit of attempts from now. */
static void hand_over(struct kq_broker *b, struct kq_msg *m, const struct kq_route *r, size_t n,
                      const char *reason)
{
    struct kq_route all[KQ_POLICY_MAX_ROUTES];
    size_t na = topic_groups(b, m, all, KQ_POLICY_MAX_ROUTES);
    int rc = kq_names_add(b, &m->done, &m->n_done, HANDED_OVER);
    for (size_t i = 0; i < na && rc == 0; i++) {
        bool handler = false;
        for (size_t k = 0; k < n && !handler; k++)
            handler = strcmp(all[i].group, r[k].group) == 0;
        if (handler)
            kq_names_remove(&m->done, &m->n_done, kq_atom_find(b, all[i].group));
        else
            rc = kq_names_add(b, &m->done, &m->n_done, all[i].group);
    }
    char groups[512] = "";
    for (size_t k = 0; k < n; k++) {
        snprintf(groups + strlen(groups), sizeof groups - strlen(groups), "%s%s", k ? "," : "",
                 r[k].group);
        kq_hist(b, m, KQ_EV_REQUEUED, r[k].group, NULL);
    }
    if (rc != 0) { /* the mark or a done group could not be recorded: a dead letter after all */
        KQ_LOG_RATELIMITED(KQ_LOG_ERROR, "delivery",
                           "cannot hand id=%s over to groups=%s "
                           "(out of memory): dead-lettered",
                           m->id, groups);
        kq_delivery_dead_letter_now(b, m, reason);
        return;
    }
    KQ_WARN("delivery",
            "dead letter handed over by on_dead id=%s topic=%s type=%s groups=%s "
            "reason=\"%s\"",
            m->id, m->topic, m->type, groups, reason);
    kq_failed_clear(b, m);
    m->attempts = 0;
    int64_t now = kq_now_ms();
    kq_delivery_persist(b, m, now);
    kq_delivery_schedule(b, m, now);
}

/* Asks on_dead with m's header at hand; true when the hook took the message. */
static bool decide(struct kq_broker *b, struct kq_msg *m, const char *reason)
{
    struct kq_arena arena;
    struct kq_header_view header;
    struct hook_view hv;
    hook_view_of(m, decode_header(m, &arena, &header), "on_dead", &hv);
    struct kq_route r[KQ_POLICY_MAX_ROUTES];
    size_t n = 0;
    enum kq_dead_action a = kq_policy_dead(b->policy, b->bindings, &hv.v, m->attempts, reason, r,
                                           KQ_POLICY_MAX_ROUTES, &n);
    free(hv.heap);
    kq_arena_free(&arena);
    if (a == KQ_DEAD_DROP) {
        KQ_LOG_RATELIMITED(KQ_LOG_WARN, "delivery",
                           "dead letter dropped by on_dead id=%s "
                           "topic=%s type=%s reason=\"%s\"",
                           m->id, m->topic, m->type, reason);
        kq_hist_text(b, m, KQ_EV_DEAD, NULL, "dropped by on_dead");
        kq_delivery_drop(b, m, true);
        return true;
    }
    if (a == KQ_DEAD_HANDOVER && n > 0) {
        hand_over(b, m, r, n, reason);
        return true;
    }
    return false;
}

struct dead_load {
    struct kq_broker *broker;
    char id[KQ_ID_LEN + 1];
    char reason[200];
};

static void on_dead_loaded(void *ud, int status, const struct kq_stored_msg *sm)
{
    struct dead_load *dl = ud;
    struct kq_broker *b = dl->broker;
    struct kq_msg *m = kq_delivery_find(b, dl->id);
    if (m && m->loading) {
        m->loading = false;
        if (status == 0 &&
            kq_msg_set_block(m, sm->header, sm->header_len, sm->body, sm->body_len) == 0) {
            if (m->commit)
                kq_msg_mark_header_committed(m);
        } else {
            KQ_LOG_RATELIMITED(KQ_LOG_ERROR, "delivery",
                               "cannot read id=%s back for on_dead: "
                               "it sees the message without properties",
                               m->id);
        }
        if (!decide(b, m, dl->reason))
            kq_delivery_dead_letter_now(b, m, dl->reason);
    }
    free(dl);
}

bool kq_dead_hook(struct kq_broker *b, struct kq_msg *m, const char *reason)
{
    if (!kq_policy_has_dead(b->policy))
        return false;
    if (kq_msg_handed_over(b, m))
        return false; /* once: failing again after the handover is a dead letter */
    if (m->block || !m->stored)
        return decide(b, m, reason);
    /* its header is in the store only: read it back for the properties first */
    struct dead_load *dl = calloc(1, sizeof *dl);
    if (!dl) {
        without_properties(m, "on_dead", "out of memory to read it back from the store");
        return decide(b, m, reason);
    }
    dl->broker = b;
    memcpy(dl->id, m->id, sizeof dl->id);
    snprintf(dl->reason, sizeof dl->reason, "%s", reason);
    m->loading = true;
    int rc = b->store->ops->load(b->store, m->id, on_dead_loaded, dl);
    if (rc == 0)
        return true; /* on_dead_loaded decides (maybe already did) */
    m->loading = false;
    free(dl);
    char why[128];
    snprintf(why, sizeof why, "the store cannot read it back: %s", strerror(rc < 0 ? -rc : rc));
    without_properties(m, "on_dead", why);
    return decide(b, m, reason);
}
