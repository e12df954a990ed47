/* Per-message delivery choices: a due time (scheduled delivery: the producer's
 * x-kiteq-delay-ms, or on_publish's delay_ms) and a group list (on_publish's groups).
 *
 * Both are written into the message's header as properties (x-kiteq-deliver-at = Unix ms,
 * x-kiteq-groups = comma separated), so every store keeps them with the message, a restart
 * reads them back, and consumers see them. While the message is pending they are kept in a
 * side table keyed by its kq_msg (m->extra says it has an entry): the 152-byte kq_msg does
 * not grow for the messages that use neither, and the table holds one entry per pending
 * message that does (bounded by the pending count). Loop thread. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/internal.h"
#include "core/log.h"

struct extra {
    const struct kq_msg *msg; /* key */
    int64_t due_ms;           /* Unix ms; 0 = none */
    uint16_t n_groups;
    const char **groups; /* atoms */
    UT_hash_handle hh;
};

struct kq_msg_extras {
    struct extra *by_msg;
    struct kq_route *routes; /* KQ_POLICY_MAX_ROUTES: kq_msg_route's answer being built */
};

static struct extra *find(const struct kq_broker *b, const struct kq_msg *m)
{
    struct extra *e = NULL;
    if (m->extra && b->extras)
        HASH_FIND_PTR(b->extras->by_msg, &m, e);
    return e;
}

static void extra_free(struct extra *e)
{
    for (uint16_t i = 0; i < e->n_groups; i++)
        kq_atom_release(e->groups[i]);
    free(e->groups);
    free(e);
}

int kq_msg_extra_set(struct kq_broker *b, struct kq_msg *m, int64_t due_ms,
                     const char *const *groups, size_t n)
{
    if (n > UINT16_MAX)
        return -E2BIG;
    if (!b->extras && !(b->extras = calloc(1, sizeof *b->extras)))
        return -ENOMEM;
    struct extra *e = calloc(1, sizeof *e);
    if (!e || (n && !(e->groups = calloc(n, sizeof *e->groups)))) {
        free(e);
        return -ENOMEM;
    }
    e->msg = m;
    e->due_ms = due_ms;
    for (; e->n_groups < n; e->n_groups++)
        if (!(e->groups[e->n_groups] = kq_atom(b, groups[e->n_groups]))) {
            extra_free(e);
            return -ENOMEM;
        }
    kq_msg_extra_drop(b, m);
    HASH_ADD_PTR(b->extras->by_msg, msg, e);
    m->extra = true;
    return 0;
}

int64_t kq_msg_due_ms(const struct kq_broker *b, const struct kq_msg *m)
{
    const struct extra *e = find(b, m);
    return e ? e->due_ms : 0;
}

void kq_msg_extra_drop(struct kq_broker *b, struct kq_msg *m)
{
    struct extra *e = find(b, m);
    if (e) {
        HASH_DEL(b->extras->by_msg, e);
        extra_free(e);
    }
    m->extra = false;
}

void kq_msg_extras_free(struct kq_broker *b)
{
    if (!b->extras)
        return;
    struct extra *e, *tmp;
    HASH_ITER (hh, b->extras->by_msg, e, tmp) {
        HASH_DEL(b->extras->by_msg, e);
        extra_free(e);
    }
    free(b->extras->routes);
    free(b->extras);
    b->extras = NULL;
}

size_t kq_msg_route(struct kq_broker *b, const struct kq_msg *m, struct kq_route *out, size_t max)
{
    size_t n = kq_route_msg(b, m, out, max); /* the policy's answer, per message if it says */
    const struct extra *e = find(b, m);
    if (!e || !e->n_groups)
        return n;
    struct kq_msg_extras *x = b->extras;
    if (!x->routes && !(x->routes = malloc(KQ_POLICY_MAX_ROUTES * sizeof *x->routes))) {
        KQ_LOG_RATELIMITED(KQ_LOG_ERROR, "delivery",
                           "out of memory routing id=%s to its "
                           "groups: this attempt sends nothing",
                           m->id);
        return 0;
    }
    /* Exactly the chosen groups that are still bound on the topic, whatever their bindings'
     * messageTypes: the routing answer's entry when it has one, else the first binding. */
    size_t nb, k = 0;
    const struct kq_binding *binds = kq_binding_set_topic(b->bindings, m->topic, &nb);
    for (uint16_t g = 0; g < e->n_groups && k < max; g++) {
        bool found = false;
        for (size_t i = 0; i < n && !found; i++)
            if ((found = strcmp(out[i].group, e->groups[g]) == 0))
                x->routes[k++] = out[i];
        for (size_t j = 0; j < nb && !found; j++)
            if ((found = strcmp(binds[j].group_id, e->groups[g]) == 0))
                x->routes[k++] =
                    (struct kq_route){binds[j].group_id, binds[j].persistent, binds[j].watermark};
    }
    memcpy(out, x->routes, k * sizeof *out);
    return k;
}

/* --- intake ---------------------------------------------------------------------------- */

static const char *prop(const struct kq_header_view *h, const char *key, size_t *count)
{
    const char *v = NULL;
    *count = 0;
    for (size_t i = 0; i < h->n_properties; i++) {
        const char *k = h->properties[i].key;
        if (k && k[0] == key[0] && strcmp(k, key) == 0) { /* most keys differ at once */
            v = h->properties[i].value ? h->properties[i].value : "";
            ++*count;
        }
    }
    return v;
}

const char *kq_msg_intake_delay(const struct kq_header_view *h, int64_t *delay_ms, char *fb,
                                size_t fblen)
{
    *delay_ms = -1;
    if (!h->n_properties)
        return NULL; /* most messages */
    size_t count;
    static const char *const reserved[] = {KQ_PROP_DELIVER_AT, KQ_PROP_GROUPS};
    for (size_t i = 0; i < 2; i++)
        if (prop(h, reserved[i], &count)) {
            snprintf(fb, fblen,
                     "Invalid Property: %s is set by the broker (ask for a delay "
                     "with %s)",
                     reserved[i], KQ_PROP_DELAY_MS);
            return fb;
        }
    const char *v = prop(h, KQ_PROP_DELAY_MS, &count);
    if (!v)
        return NULL;
    size_t len = strlen(v);
    bool digits = len > 0 && len <= 10 && strspn(v, "0123456789") == len;
    long long d = digits ? strtoll(v, NULL, 10) : -1;
    if (count > 1 || d < 0 || d > KQ_PUBLISH_MAX_DELAY_MS) {
        snprintf(fb, fblen,
                 "Invalid Property: %s must be given once, as a whole number of "
                 "milliseconds in 0..%lld (got \"%.40s\"%s)",
                 KQ_PROP_DELAY_MS, (long long)KQ_PUBLISH_MAX_DELAY_MS, v,
                 count > 1 ? " and more" : "");
        return fb;
    }
    *delay_ms = d;
    return NULL;
}

const char *kq_msg_intake_apply(struct kq_broker *b, struct kq_header_view *h, int64_t delay_ms,
                                const char *const *groups, size_t n_groups, int64_t now_ms,
                                int64_t *due_ms, char *fb, size_t fblen)
{
    size_t count;
    *due_ms = delay_ms > 0 ? now_ms + delay_ms : 0;
    if (*due_ms && *due_ms >= h->expired_time * 1000) {
        snprintf(fb, fblen,
                 "Invalid Property: %s %lld: the message would be due after it "
                 "expires (expiredTime %lld)",
                 KQ_PROP_DELAY_MS, (long long)delay_ms, (long long)h->expired_time);
        return fb;
    }
    if (!*due_ms && !n_groups && (!h->n_properties || !prop(h, KQ_PROP_DELAY_MS, &count)))
        return NULL; /* the usual message: the header stays as published */
    struct kq_arena *a = &b->frame_arena;
    struct kq_header_property *ps = kq_arena_alloc(a, (h->n_properties + 2) * sizeof *ps);
    char *at = kq_arena_alloc(a, 24);
    size_t glen = 1;
    for (size_t i = 0; i < n_groups; i++)
        glen += strlen(groups[i]) + 1;
    char *gs = kq_arena_alloc(a, glen);
    if (!ps || !at || !gs)
        return "Store Result false: out of memory";
    size_t n = 0;
    for (size_t i = 0; i < h->n_properties; i++) /* the request is answered: not stored */
        if (!h->properties[i].key || strcmp(h->properties[i].key, KQ_PROP_DELAY_MS) != 0)
            ps[n++] = h->properties[i];
    snprintf(at, 24, "%lld", (long long)*due_ms);
    gs[0] = 0;
    for (size_t i = 0, off = 0; i < n_groups; i++)
        off += (size_t)sprintf(gs + off, "%s%s", i ? "," : "", groups[i]);
    if (*due_ms)
        ps[n++] = (struct kq_header_property){.key = KQ_PROP_DELIVER_AT, .value = at};
    if (n_groups)
        ps[n++] = (struct kq_header_property){.key = KQ_PROP_GROUPS, .value = gs};
    h->properties = ps;
    h->n_properties = n;
    return NULL;
}

/* --- recovery -------------------------------------------------------------------------- */

int64_t kq_msg_extra_recover(struct kq_broker *b, struct kq_msg *m, const uint8_t *hdr, size_t len)
{
    static const char mark[] = "x-kiteq-"; /* most headers have none: skip the decoding */
    if (!len || !memmem(hdr, len, mark, sizeof mark - 1))
        return 0;
    struct kq_arena a;
    kq_arena_init(&a, KQ_HEADER_ARENA_CHUNK);
    struct kq_header_view h;
    if (kq_header_decode(&a, hdr, len, &h) != 0) {
        KQ_LOG_RATELIMITED(KQ_LOG_ERROR, "broker",
                           "recovering id=%s: its header does not decode: no due time or "
                           "groups read (it goes out now, to its routed groups)",
                           m->id);
        kq_arena_free(&a);
        return 0;
    }
    size_t count;
    const char *at = prop(&h, KQ_PROP_DELIVER_AT, &count), *gs = prop(&h, KQ_PROP_GROUPS, &count);
    int64_t due = at ? strtoll(at, NULL, 10) : 0;
    size_t cap = 1, n = 0;
    for (const char *c = gs ? gs : ""; *c; c++)
        cap += *c == ',';
    const char **groups = calloc(cap, sizeof *groups);
    char *copy = gs ? strdup(gs) : NULL, *save = NULL;
    int rc = !groups || (gs && !copy) ? -ENOMEM : 0;
    for (char *g = rc || !copy ? NULL : strtok_r(copy, ",", &save); g;
         g = strtok_r(NULL, ",", &save))
        groups[n++] = g;
    if (!rc && (due > 0 || n))
        rc = kq_msg_extra_set(b, m, due > 0 ? due : 0, groups, n);
    if (rc)
        KQ_LOG_RATELIMITED(KQ_LOG_ERROR, "broker",
                           "recovering id=%s: out of memory for its "
                           "due time and groups (it goes out now, to its routed groups)",
                           m->id);
    free(groups);
    free(copy);
    kq_arena_free(&a);
    return due > 0 && m->extra ? due : 0;
}
