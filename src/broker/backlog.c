/* Backlog per (consumer group, topic): how many copies each group has not acked yet and
 * since when the oldest waits, for /stat, /groups, /metrics and `kiteq-cli groups`.
 *
 * Exact counting would need every routing answer kept in step with every binding change, so
 * the figures come from a scan instead, and the scan never stalls the broker: each tick
 * looks at a fixed number of slots of the pending index (SCAN_SLOTS_PER_TICK), routing each
 * message it finds (memoised) and adding it to the rows of the groups that still need it.
 * The rows of a pass replace the published ones when the pass completes; a new pass starts
 * at most once per PASS_INTERVAL_MS. So the figures are as of the last completed pass
 * (its age is published with them) and cost the loop the same whatever the backlog.
 * Messages that come and go during a pass may be missed or, rarely, seen twice (the index
 * moves records when others leave); the next pass corrects it.
 *
 * In flight, queued for room, acked and acked per second are the live counters of the
 * group's flow entry for the topic (struct kq_group_rate), exact at any time. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "broker/internal.h"
#include "core/log.h"

#define SCAN_SLOTS_PER_TICK 8192 /* ~0.5 ms per 100 ms tick; a million pending: ~25 s a pass */
#define PASS_INTERVAL_MS 1000

/* One (group, topic) of a pass. key = group NUL topic NUL. */
struct row {
    UT_hash_handle hh;
    uint64_t backlog;
    int64_t oldest_sec; /* publish time of the oldest copy not acked (Unix s) */
    size_t glen;        /* strlen(group) */
    char key[];
};

struct kq_backlog {
    struct row *published; /* the last completed pass */
    struct row *next;      /* the pass in progress */
    size_t pos;            /* next slot of b->msgs to look at */
    size_t cap;            /* b->msgs.cap when the pass started: a resize restarts it */
    bool running;
    uint64_t started_mono, done_mono; /* monotonic ms */
    int64_t done_unix_ms;             /* when the published pass completed (0: never) */
    uint64_t pass_ms;                 /* how long it took */
    uint64_t passes, seen, seen_published;
    /* Routing of the last (topic, type) looked at, valid within one tick: a backlog is
     * mostly a few (topic, type) pairs. */
    const char *memo_topic, *memo_type;
    size_t memo_n;
    struct row **memo_rows;  /* KQ_POLICY_MAX_ROUTES */
    const char **memo_atoms; /* the groups' atoms (NULL: no message has it done) */
};

static void rows_free(struct row **rows)
{
    struct row *r, *tmp;
    HASH_ITER (hh, *rows, r, tmp) {
        HASH_DEL(*rows, r);
        free(r);
    }
}

static struct row *row_get(struct row **rows, const char *group, const char *topic)
{
    size_t gl = strlen(group), tl = strlen(topic), kl = gl + 1 + tl + 1;
    char stack[256], *key = kl <= sizeof stack ? stack : malloc(kl);
    if (!key)
        return NULL;
    memcpy(key, group, gl + 1);
    memcpy(key + gl + 1, topic, tl + 1);
    struct row *r;
    HASH_FIND(hh, *rows, key, kl, r);
    if (!r && (r = calloc(1, sizeof *r + kl))) {
        memcpy(r->key, key, kl);
        r->glen = gl;
        HASH_ADD(hh, *rows, key[0], kl, r);
    }
    if (key != stack)
        free(key);
    return r;
}

int kq_backlog_init(struct kq_broker *b)
{
    struct kq_backlog *k = calloc(1, sizeof *k);
    if (!k)
        return -ENOMEM;
    k->memo_rows = malloc(KQ_POLICY_MAX_ROUTES * sizeof *k->memo_rows);
    k->memo_atoms = malloc(KQ_POLICY_MAX_ROUTES * sizeof *k->memo_atoms);
    if (!k->memo_rows || !k->memo_atoms) {
        free(k->memo_rows);
        free(k->memo_atoms);
        free(k);
        return -ENOMEM;
    }
    b->backlog = k;
    return 0;
}

void kq_backlog_free(struct kq_broker *b)
{
    struct kq_backlog *k = b->backlog;
    if (!k)
        return;
    rows_free(&k->published);
    rows_free(&k->next);
    free(k->memo_rows);
    free(k->memo_atoms);
    free(k);
    b->backlog = NULL;
}

/* Route m (or reuse the memo) and count it for every group that has not acked it. */
static int count_message(struct kq_broker *b, struct kq_backlog *k, const struct kq_msg *m)
{
    if (m->extra || m->topic != k->memo_topic || m->type != k->memo_type) {
        struct kq_route *routes = b->routes; /* not inside an attempt: free to use */
        size_t n = kq_msg_route(b, m, routes, KQ_POLICY_MAX_ROUTES);
        for (size_t i = 0; i < n; i++) {
            if (!(k->memo_rows[i] = row_get(&k->next, routes[i].group, m->topic)))
                return -ENOMEM;
            k->memo_atoms[i] = kq_atom_find(b, routes[i].group);
        }
        k->memo_n = n;
        k->memo_topic = m->extra ? NULL : m->topic; /* its own groups: not its type's */
        k->memo_type = m->type;
    }
    for (size_t i = 0; i < k->memo_n; i++) {
        if (k->memo_atoms[i] && kq_names_has(&m->done, m->n_done, k->memo_atoms[i]))
            continue;
        struct row *r = k->memo_rows[i];
        if (r->backlog++ == 0 || m->publish_time < r->oldest_sec)
            r->oldest_sec = m->publish_time;
    }
    return 0;
}

void kq_backlog_tick(struct kq_broker *b)
{
    struct kq_backlog *k = b->backlog;
    if (!k)
        return;
    uint64_t now = kq_broker_mono_ms();
    if (!k->running) {
        if (k->passes && now - k->started_mono < PASS_INTERVAL_MS)
            return;
        k->running = true;
        k->started_mono = now;
        k->pos = 0;
        k->cap = b->msgs.cap;
        k->seen = 0;
    }
    if (b->msgs.cap != k->cap) { /* the index grew: positions moved, start over */
        rows_free(&k->next);
        k->pos = 0;
        k->cap = b->msgs.cap;
        k->seen = 0;
    }
    /* Atoms and bindings may have changed since the last tick. */
    k->memo_topic = k->memo_type = NULL;
    size_t end = k->pos + SCAN_SLOTS_PER_TICK;
    struct kq_msg *m;
    while (k->pos < end && (m = kq_idmap_next(&b->msgs, &k->pos))) {
        if (!m->commit)
            continue; /* not deliverable yet: no group's backlog */
        k->seen++;
        if (count_message(b, k, m) != 0) {
            KQ_LOG_RATELIMITED(KQ_LOG_ERROR, "backlog",
                               "out of memory counting the backlog: "
                               "this pass is dropped");
            rows_free(&k->next);
            k->running = false;
            k->passes++; /* wait PASS_INTERVAL_MS before the next try */
            return;
        }
    }
    if (k->pos < b->msgs.cap)
        return; /* more next tick */
    rows_free(&k->published);
    k->published = k->next;
    k->next = NULL;
    k->running = false;
    k->passes++;
    k->done_mono = kq_broker_mono_ms();
    k->done_unix_ms = kq_now_ms();
    k->pass_ms = k->done_mono - k->started_mono;
    k->seen_published = k->seen;
}

void kq_backlog_info(const struct kq_broker *b, struct kq_backlog_info *out)
{
    const struct kq_backlog *k = b->backlog;
    memset(out, 0, sizeof *out);
    if (!k)
        return;
    out->passes = k->passes;
    out->as_of_unix_ms = k->done_unix_ms;
    out->age_ms = k->done_unix_ms ? kq_broker_mono_ms() - k->done_mono : 0;
    out->pass_ms = k->pass_ms;
    out->messages = k->seen_published;
}

void kq_backlog_second(struct kq_broker *b)
{
    struct kq_group *g, *tmp;
    HASH_ITER (hh, b->groups, g, tmp) {
        for (size_t i = 0; i < g->n_rates; i++) {
            struct kq_group_rate *r = &g->rates[i];
            r->acked_last_sec = r->acked - r->acked_mark;
            r->acked_mark = r->acked;
        }
    }
}

/* --- rows for the admin ------------------------------------------------------------------- */

static int cmp_rows(const void *a, const void *b)
{
    const struct row *x = *(struct row *const *)a, *y = *(struct row *const *)b;
    int c = strcmp(x->key, y->key);
    return c ? c : strcmp(x->key + x->glen + 1, y->key + y->glen + 1);
}

int kq_backlog_each(struct kq_broker *b, kq_backlog_row_cb cb, void *ud)
{
    struct kq_backlog *k = b->backlog;
    /* The published rows, plus every bound (group, topic) (a group with nothing waiting
     * shows 0): as many rows as bindings, whatever the backlog. */
    struct row *all = NULL, *r, *tmp, *p;
    int rc = 0;
    for (p = k ? k->published : NULL; p && rc == 0; p = p->hh.next) {
        if (!(r = row_get(&all, p->key, p->key + p->glen + 1))) {
            rc = -ENOMEM;
        } else {
            r->backlog = p->backlog;
            r->oldest_sec = p->oldest_sec;
        }
    }
    size_t nb;
    const struct kq_binding *v = kq_binding_set_all(b->bindings, &nb);
    for (size_t i = 0; i < nb && rc == 0; i++)
        if (!row_get(&all, v[i].group_id, v[i].topic))
            rc = -ENOMEM;
    size_t n = HASH_COUNT(all), i = 0;
    struct row **sorted = n ? malloc(n * sizeof *sorted) : NULL;
    if (n && !sorted)
        rc = -ENOMEM;
    if (rc == 0) {
        HASH_ITER (hh, all, r, tmp)
            sorted[i++] = r;
        if (n > 1) /* sorted is NULL when there is no row: qsort must not see it */
            qsort(sorted, n, sizeof *sorted, cmp_rows);
        int64_t now = kq_now_sec();
        for (i = 0; i < n; i++) {
            r = sorted[i];
            struct kq_backlog_row out = {
                .group = r->key, .topic = r->key + r->glen + 1, .backlog = r->backlog};
            if (r->backlog)
                out.oldest_sec = now > r->oldest_sec ? now - r->oldest_sec : 0;
            struct kq_group *g = kq_group_get(b, out.group, false);
            struct kq_group_rate *gr = g ? kq_delivery_rate_find(g, out.topic) : NULL;
            out.consumers = g ? g->n : 0;
            if (gr) {
                out.inflight = gr->inflight;
                out.queued = gr->waiting;
                out.acked = gr->acked;
                out.acked_last_sec = gr->acked_last_sec;
            }
            cb(ud, &out);
        }
    }
    free(sorted);
    rows_free(&all);
    return rc;
}
