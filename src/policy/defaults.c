/* The built-in policies: what every hook falls back to, and what runs with no Lua at all.
 * They reproduce the original broker (docs/POLICIES.md lists the few deliberate changes). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "policy/internal.h"

bool kq_policy_binding_matches(struct kq_regex_cache *rc, const struct kq_binding *b,
                               const char *type)
{
    switch (b->bind_type) {
    case KQ_BIND_FANOUT: return true;
    case KQ_BIND_REGX:
        /* a pattern that does not compile matches nothing, as in the original */
        return kq_regex_match(rc, b->message_type, type, NULL, 0) == 1;
    default: return strcmp(b->message_type, type) == 0;
    }
}

size_t kq_policy_route_builtin(struct kq_regex_cache *rc, const struct kq_binding *binds, size_t n,
                               const char *type, struct kq_route *out, size_t max)
{
    size_t found = 0;
    for (size_t i = 0; i < n && found < max; i++) {
        const struct kq_binding *b = &binds[i];
        if (!kq_policy_binding_matches(rc, b, type))
            continue;
        /* several matching bindings of one group give one copy; the first decides
         * persistence (the original's groupBinds) */
        bool seen = false;
        for (size_t k = 0; k < found && !seen; k++)
            seen = strcmp(out[k].group, b->group_id) == 0;
        if (!seen) {
            out[found].group = b->group_id;
            out[found].persistent = b->persistent;
            out[found].watermark = b->watermark > 0 ? b->watermark : KQ_POLICY_DEFAULT_WATERMARK;
            found++;
        }
    }
    return found;
}

size_t kq_policy_default_route(const struct kq_binding *binds, size_t n, const char *type,
                               struct kq_route *out, size_t max)
{
    return kq_policy_route_builtin(NULL, binds, n, type, out, max);
}

/* The original's redelivery windows, without its gap at attempt 3 (it waited 0 s there). */
static int64_t window_delay_sec(int32_t attempts)
{
    static const struct {
        int32_t from;
        int64_t sec;
    } windows[] = {
        {50, 160}, {40, 80}, {30, 40}, {20, 20}, {10, 10}, {3, 5},
    };
    for (size_t i = 0; i < sizeof windows / sizeof windows[0]; i++)
        if (attempts >= windows[i].from)
            return windows[i].sec;
    return 0; /* attempts 0-2 follow each other at once */
}

void kq_policy_default_retry(int32_t attempts, int32_t deliver_limit, int64_t expired_time,
                             int64_t now_sec, struct kq_retry_verdict *v)
{
    v->dead = false;
    v->delay_ms = 0;
    v->reason[0] = 0;
    if (attempts >= deliver_limit) {
        v->dead = true;
        snprintf(v->reason, sizeof v->reason, "deliver limit reached (%d attempts)", attempts);
        return;
    }
    if (expired_time > 0 && expired_time <= now_sec) {
        v->dead = true;
        snprintf(v->reason, sizeof v->reason, "expired");
        return;
    }
    v->delay_ms = window_delay_sec(attempts) * 1000;
}

void kq_policy_default_flow_intake(int permits_per_second, struct kq_flow_limits *out)
{
    out->window = 0;
    if (permits_per_second <= 0) {
        out->rate = 0; /* unlimited */
        out->burst = 0;
        return;
    }
    out->rate = permits_per_second;
    out->burst = permits_per_second / 2 >= 1 ? permits_per_second / 2 : 1;
}

void kq_policy_default_flow_group(const struct kq_flow_figures *f, struct kq_flow_limits *out)
{
    int w = f ? f->watermark : 0;
    /* unset -> 6000; an explicit watermark above 6000 is honoured (the original capped it) */
    if (w <= 0)
        w = KQ_POLICY_DEFAULT_WATERMARK;
    out->rate = w;
    /* the original's burst w/2 is 0 for w = 1, which never lets anything through */
    out->burst = w / 2 >= 1 ? w / 2 : 1;
    out->window = KQ_POLICY_DEFAULT_WINDOW;
}
