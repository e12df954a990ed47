/* Policies: routing, flow control, retry and publishing as Lua hooks operators edit and
 * hot-reload (lua/policies/{routing,flow,retry,publish}.lua), with the built-in C defaults
 * as the fallback for every hook.
 * The only code of the broker that includes lua.h (besides the config loader).
 *
 * A generation (struct kq_policy) = one LuaJIT state + the hook functions resolved once into
 * registry refs + memo caches. Reload = kq_policy_load a new generation; on success swap the
 * pointer and free the old one; on failure keep the old one (it is untouched).
 *
 * Hooks take and return plain data; C validates every result and uses the default when a
 * hook is missing, disabled, fails, overruns or returns nonsense. See docs/POLICIES.md.
 *
 * Threading: a generation is used by one thread at a time. kq_policy_load may run on any
 * thread (a reload runs it on a worker, see broker/reload.c, with that thread's stop flag
 * of sandbox/lua_budget.h); once handed over to the loop (e.g. through a uv_work_t's after-work
 * callback) only the loop thread calls it. Loads on different threads are independent
 * (one Lua state and regex cache each). Every function accepts p == NULL and then answers
 * with the C defaults (uncached). */
#ifndef KQ_POLICY_POLICY_H
#define KQ_POLICY_POLICY_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "registry/bindings.h"

/* Budgets of one hook call (operators' code is never compiled, so the count guard sees every
 * instruction of it; in the broker a traffic call is counted from KQ_WATCHDOG_GRACE_US on,
 * sandbox/watchdog.h). */
#define KQ_POLICY_CALL_INSTRUCTIONS 1000000L      /* Lua VM instructions per call */
#define KQ_POLICY_CALL_MS 20                      /* wall clock per call */
#define KQ_POLICY_MEMORY_BYTES ((size_t)32 << 20) /* per Lua state */
/* Failures/overruns in a row that switch a hook off for one subject: route per (topic,
 * messageType), flow.group per (group, topic), retry and flow.intake as a whole (their
 * calls carry no subject). Other subjects keep the hook. */
#define KQ_POLICY_MAX_STRIKES 5
#define KQ_POLICY_MAX_SUBJECTS 4096 /* subjects with strikes tracked; full = start over */
#define KQ_POLICY_MAX_ROUTES KQ_MAX_GROUPS_PER_TOPIC /* groups per routing answer */
#define KQ_POLICY_RETRY_MAX_MS (24LL * 3600 * 1000)
/* What a published message may carry (publish.c normalises to these; on_publish answers
 * are held to them). */
#define KQ_PUBLISH_MAX_EXPIRED_SEC (7 * 24 * 3600) /* expiry: at most now + this */
#define KQ_PUBLISH_MAX_DELIVER_LIMIT 100
/* on_publish's property changes: at most this many properties on the changed message,
 * keys and values at most this long (bytes, no NUL), the reject reason cut to its size. */
#define KQ_POLICY_MAX_PROPERTIES 64
#define KQ_POLICY_MAX_PROPERTY_KEY 128
#define KQ_POLICY_MAX_PROPERTY_VALUE 1024
#define KQ_POLICY_MAX_REJECT_REASON 256
/* Scheduled delivery: a delay is at most this (and must end before the message expires). */
#define KQ_PUBLISH_MAX_DELAY_MS ((int64_t)KQ_PUBLISH_MAX_EXPIRED_SEC * 1000)
/* Properties of scheduled delivery and per-message groups (docs/POLICIES.md, CLIENT.md): a
 * producer asks for a delay with KQ_PROP_DELAY_MS (decimal ms); the broker stores the due
 * time (Unix ms) as KQ_PROP_DELIVER_AT and on_publish's groups as KQ_PROP_GROUPS (comma
 * separated). Only the broker sets the last two; on_publish may change none of the three. */
#define KQ_PROP_DELAY_MS "x-kiteq-delay-ms"
#define KQ_PROP_DELIVER_AT "x-kiteq-deliver-at"
#define KQ_PROP_GROUPS "x-kiteq-groups"

struct kq_policy;

/* One group a message goes to. `group` points into the binding set (valid while it lives). */
struct kq_route {
    const char *group;
    bool persistent;
    int watermark; /* of the same binding as persistent; <= 0 there -> 6000 */
};

struct kq_retry_verdict {
    bool dead;
    int64_t delay_ms; /* when !dead: wait this long before the next attempt */
    char reason[96];  /* when dead */
};

/* Live figures of one (group, topic) for the flow hook. */
struct kq_flow_figures {
    uint32_t inflight;        /* deliveries outstanding */
    uint64_t backlog;         /* messages waiting for this group */
    uint32_t recent_failures; /* failed deliveries in the last period */
    int watermark;            /* first binding's watermark (<= 0: unset) */
};
/* Token bucket (rate/s, burst; rate 0 = unlimited) and max deliveries in flight (0 = none). */
struct kq_flow_limits {
    double rate;
    double burst;
    uint32_t window;
};

/* One message property (Header.properties). */
struct kq_property_kv {
    const char *key, *value;
};

/* A published message as on_publish sees it (the body is not passed). */
struct kq_publish_view {
    const char *message_id, *topic, *message_type, *group, *peer;
    const struct kq_property_kv *properties;
    size_t n_properties;
    size_t body_size;
    bool fly, commit;
    int64_t expired_time; /* Unix s, already normalised by publish.c */
    int32_t deliver_limit;
    int64_t now_sec;                /* bounds a new expired_time */
    const struct kq_binding *binds; /* the topic's bindings: the groups `groups` may name */
    size_t n_binds;
    /* or, binds NULL: the set whose bindings of the topic they are, looked up only for an
     * answer with `groups` (most answers have none: the lookup is not paid per message) */
    const struct kq_binding_set *bind_set;
};

enum kq_publish_action {
    KQ_PUBLISH_ACCEPT, /* as is (also: no hook, or the hook failed) */
    KQ_PUBLISH_REJECT, /* reason set */
    KQ_PUBLISH_CHANGE, /* store the message with the fields below */
};

/* The answer to one published message. Strings point into the generation's scratch space:
 * valid until the next kq_policy_publish call on the same generation. */
struct kq_publish_verdict {
    enum kq_publish_action action;
    /* KQ_PUBLISH_CHANGE: the whole property list after the changes, the expiry and limit
     * (unchanged ones copied from the view) */
    const struct kq_property_kv *properties;
    size_t n_properties;
    int64_t expired_time;
    int32_t deliver_limit;
    int64_t delay_ms;    /* -1: not asked; else deliver no earlier than now + this */
    const char **groups; /* n_groups > 0: deliver to exactly these (bound, distinct) groups;
                           * the names point into the view's binds */
    size_t n_groups;
    char reason[KQ_POLICY_MAX_REJECT_REASON]; /* KQ_PUBLISH_REJECT (last: the rest is copied
                                                * without it) */
};

/* A policy file a generation loaded: which one is live. */
#define KQ_POLICY_MAX_FILES 8
struct kq_policy_file {
    const char *file;     /* "routing.lua" (static) */
    char sha256[65];      /* of the file's bytes, lowercase hex */
    int64_t loaded_at_ms; /* Unix ms */
};

struct kq_policy_hook_stats {
    const char *name;           /* "route", "retry", "flow.intake", "flow.group", "publish", ... */
    bool loaded;                /* the policy defines this hook */
    bool disabled;              /* switched off (for one subject at least, see
                          * KQ_POLICY_MAX_STRIKES) */
    uint64_t disabled_subjects; /* subjects it is switched off for (retry, flow.intake: 0/1) */
    uint64_t calls;             /* Lua calls (memo hits excluded) */
    uint64_t errors;            /* errors, overruns, invalid results (incl. dropped groups) */
    uint64_t fallbacks;         /* answers given by the C default because of a failure/disable */
    uint64_t cache_hits;        /* route: answers from the memo */
    uint64_t total_us;          /* time spent in Lua */
    uint64_t rejects;           /* publish, connect: rejected; dead: dropped */
};

/* Build a generation from DIR (routing.lua, flow.lua, retry.lua, publish.lua; each optional, each a module
 * returning a table of hook functions). DIR NULL = all C defaults; DIR must exist otherwise
 * (-ENOENT, "DIR: no such folder"), and other .lua files in it are logged as not loaded.
 * Files are loaded in a sandbox and every hook is self-tested with fixtures under the call
 * budgets. Returns 0 and *out, or -ENOENT/-EINVAL/-ENOMEM with "FILE: reason" in err (*out
 * untouched). */
int kq_policy_load(const char *dir, struct kq_policy **out, char *err, size_t errlen);
void kq_policy_free(struct kq_policy *p);

/* Routing: the groups (topic, type) goes to, from the bindings of `topic` in `set`; one route
 * per group, at most max; returns the count. Memoised per (topic, type) while `set` and its
 * generation are unchanged. Groups the hook returns that have no binding on the topic are
 * dropped (and counted); persistent and watermark come from the group's first binding that
 * matches by the built-in rules, else its first binding. */
size_t kq_policy_route(struct kq_policy *p, const struct kq_binding_set *set, const char *topic,
                       const char *type, struct kq_route *out, size_t max);

/* Retry: after `attempts` attempts, the last failing because of `reason` ("nack", "timeout",
 * "connection lost", "no consumer online", "over flow"), with the message's deliver limit and
 * expiry (Unix s, <= 0 = none): a delay (0..24 h, whole ms) or dead + reason. */
void kq_policy_retry(struct kq_policy *p, int32_t attempts, const char *reason,
                     int32_t deliver_limit, int64_t expired_time, int64_t now_sec,
                     struct kq_retry_verdict *v);

/* Flow: limits for the broker intake and per (group, topic). Call on (re)load and about once
 * a second per active group, never per message. */
void kq_policy_flow_intake(struct kq_policy *p, int permits_per_second, struct kq_flow_limits *out);
void kq_policy_flow_group(struct kq_policy *p, const char *group, const char *topic,
                          const struct kq_flow_figures *f, struct kq_flow_limits *out);

/* Publish: true when the generation defines on_publish (without it, kq_policy_publish
 * always accepts: callers skip building the view). */
bool kq_policy_has_publish(const struct kq_policy *p);
/* Publish: the answer of on_publish for one message (subject of strikes: topic, type). A
 * missing, switched-off or failing hook, or an invalid answer (counted and logged), accepts
 * the message unchanged. */
void kq_policy_publish(struct kq_policy *p, const struct kq_publish_view *m,
                       struct kq_publish_verdict *v);

/* ---- per-message and per-connection hooks (hooks_message.c) ---------------------------- */

/* Routing per message: true when routing.lua defines route_message. Without it, callers use
 * kq_policy_route (memoised per (topic, messageType)) and build no view. */
bool kq_policy_has_route_message(const struct kq_policy *p);
/* The groups message m goes to, from route_message(m, binds) (not memoised; m as on_publish
 * sees it, peer empty). A missing, switched-off or failing hook, or nil, answers as
 * kq_policy_route does. Validation as for route. */
size_t kq_policy_route_message(struct kq_policy *p, const struct kq_binding_set *set,
                               const struct kq_publish_view *m, struct kq_route *out, size_t max);

/* A ConnMeta as on_connect sees it. */
struct kq_connect_view {
    const char *group, *peer_ip;
    int peer_port;
    bool secret_ok;       /* the group is known and the secret matches (or no groups set) */
    int32_t warmup;       /* the ConnMeta's warmingupsec (0 = none) */
    uint32_t connections; /* the group's connections open before this one */
};
/* Authentication: true = accept. The built-in answer (also for a missing, failing or
 * switched-off hook) accepts iff secret_ok; the hook can only tighten it: its "accept"
 * never opens a connection whose secret is wrong. false: refuse with reason (never empty;
 * the hook's own reason when it rejected). Strikes per group. */
bool kq_policy_connect(struct kq_policy *p, const struct kq_connect_view *c, char *reason,
                       size_t len);

enum kq_dead_action {
    KQ_DEAD_DLQ,      /* dead-letter it (built-in) */
    KQ_DEAD_DROP,     /* forget it: counted and logged by the caller */
    KQ_DEAD_HANDOVER, /* deliver it to the groups in out instead (each bound on the topic) */
};
/* True when retry.lua defines on_dead (callers then build the message view). */
bool kq_policy_has_dead(const struct kq_policy *p);
/* What to do with a message about to be dead-lettered (m as on_publish sees it, peer empty;
 * attempts made; reason = the dead verdict's). HANDOVER: *n groups in out (at least one).
 * A missing, failing or switched-off hook, or an invalid answer, says KQ_DEAD_DLQ. */
enum kq_dead_action kq_policy_dead(struct kq_policy *p, const struct kq_binding_set *set,
                                   const struct kq_publish_view *m, int32_t attempts,
                                   const char *reason, struct kq_route *out, size_t max, size_t *n);

/* Per-hook statistics (up to max entries, KQ_POLICY_HOOKS hooks); returns the count. Names
 * are static: "route", "retry", "flow.intake", "flow.group", "publish", "route_message",
 * "connect", "dead". rejects counts on_publish's and on_connect's rejects, and on_dead's
 * drops. */
#define KQ_POLICY_HOOKS 8
size_t kq_policy_stats(const struct kq_policy *p, struct kq_policy_hook_stats *out, size_t max);

/* The files the generation loaded (up to max, in load order); returns the count (0 for
 * p == NULL or a folder without policy files). */
size_t kq_policy_files(const struct kq_policy *p, struct kq_policy_file *out, size_t max);

/* The last failed hook call of the generation, as logged ("hook=retry failed: ... strike=1/5";
 * "" when none): the tools show why the built-in answer was used. */
const char *kq_policy_last_failure(const struct kq_policy *p);

/* ---- the built-in defaults (what the hooks fall back to), usable on their own ---------- */

/* Direct = exact messageType, Regx = unanchored PCRE2 search on messageType (bad pattern =
 * no match), Fanout = all. binds = the topic's bindings. One route per group. */
size_t kq_policy_default_route(const struct kq_binding *binds, size_t n, const char *type,
                               struct kq_route *out, size_t max);
/* Immediate for attempts < 3, then 5 s (3-9), 10 s (10-19), 20 s (20-29), 40 s (30-39),
 * 80 s (40-49), 160 s (50+); dead when attempts >= deliver_limit or expired. */
void kq_policy_default_retry(int32_t attempts, int32_t deliver_limit, int64_t expired_time,
                             int64_t now_sec, struct kq_retry_verdict *v);
/* rate = permits, burst = permits / 2 (at least 1), no window; permits <= 0 = unlimited. */
void kq_policy_default_flow_intake(int permits_per_second, struct kq_flow_limits *out);
/* w = watermark (<= 0 -> 6000; not capped, unlike the original): rate w, burst w / 2 (at
 * least 1), window 1000. */
void kq_policy_default_flow_group(const struct kq_flow_figures *f, struct kq_flow_limits *out);

#define KQ_POLICY_DEFAULT_WATERMARK 6000
#define KQ_POLICY_DEFAULT_WINDOW 1000
#endif
