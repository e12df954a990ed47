/* Delivery: the index of pending messages, one copy per bound group per attempt, acks
 * matched per connection, timeouts, retries on the policy's schedule, dead letters.
 *
 * A message's life: kq_delivery_add -> (scheduled) -> attempt: a copy to one connection of
 * every bound group that has not acked yet -> every copy acked, nacked, timed out or lost ->
 * finish: all groups done => removed from the store; else the retry policy gives a delay
 * (state persisted) or a dead-letter verdict. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/internal.h"
#include "core/log.h"

#define NO_SUBSCRIBER KQ_NO_SUBSCRIBER
/* With no consumer online for a message, look at it again this often (at most). */
#define NOBODY_RECHECK_MS 30000
/* Deliveries are queued on a connection only while less than this is waiting for the
 * kernel: the rest waits in the group's queue, where no ack timeout runs, and the memory a
 * consumer that does not read can hold is bounded. */
#define DELIVERY_QUEUE_BYTES ((size_t)256 << 10)
/* A connection's delivery window starts here and doubles per round trip while acks come
 * back within the latency target (see window_on_answer). */
#define WINDOW_INITIAL 32.0
#define WINDOW_MIN 1.0
/* How often the delivery timeouts of a group are logged (with the count since the last). */
#define TIMEOUT_LOG_MS 10000

static void start_attempt(struct kq_broker *b, struct kq_msg *m);
static void undefer(struct kq_broker *b);
static void finish_attempt(struct kq_broker *b, struct kq_msg *m);
static void pump(struct kq_broker *b, struct kq_group *g);
static bool load_for_group(struct kq_broker *b, struct kq_msg *m, struct kq_group *g);
static struct kq_group_rate *find_rate(struct kq_group *g, const char *topic);
/* Set while load_for_group waits for the store: an answer given at once must not pump. */
static bool loading_inline;

/* Groups are kept as atoms, so membership is a pointer comparison. */
static bool name_in(struct kq_broker *b, const union kq_names *v, uint16_t n, const char *name)
{
    if (n == 0)
        return false; /* the usual case: no lookup */
    const char *atom = kq_atom_find(b, name);
    return atom && kq_names_has(v, n, atom);
}

/* Record that group failed this attempt. If that cannot be recorded (out of memory), the
 * whole attempt counts as failed, so the message is retried rather than taken as delivered. */
static void add_failed(struct kq_broker *b, struct kq_msg *m, const char *group)
{
    if (m->n_done && name_in(b, &m->done, m->n_done, group))
        return; /* purged for the group meanwhile (kq_delivery_purge_copy): not a failure */
    if (kq_failed_add(b, m, group) == 0)
        return;
    m->names_lost = true;
    b->stats.names_lost++;
    KQ_LOG_RATELIMITED(KQ_LOG_ERROR, "delivery",
                       "cannot record group=%s as failed for id=%s "
                       "(out of memory): the message is retried",
                       group, m->id);
}

/* A copy for group was neither sent nor queued for room: memory ran out (`doing` what). The
 * attempt fails for the group and is retried; counted and logged, since a group that keeps
 * missing its messages must show why. */
static void copy_not_made(struct kq_broker *b, struct kq_msg *m, const char *group,
                          const char *doing)
{
    b->stats.unsent++;
    KQ_LOG_RATELIMITED(KQ_LOG_ERROR, "delivery",
                       "out of memory %s id=%s group=%s: the attempt failed for the group and "
                       "is retried",
                       doing, m->id, group);
    add_failed(b, m, group);
    kq_hist_text(b, m, KQ_EV_NOT_SENT, group, "out of memory");
}

/* Record that group has the message. If that cannot be recorded, the group gets it again on
 * the next attempt (at least once still holds). g: the group when known (its atom spares a
 * lookup of the name). */
static void add_done(struct kq_broker *b, struct kq_msg *m, const char *group, struct kq_group *g)
{
    if ((g && g->atom ? kq_names_add_atom(&m->done, &m->n_done, g->atom)
                      : kq_names_add(b, &m->done, &m->n_done, group)) == 0)
        return;
    m->names_lost = true;
    b->stats.names_lost++;
    KQ_LOG_RATELIMITED(KQ_LOG_ERROR, "delivery",
                       "cannot record group=%s as done for id=%s "
                       "(out of memory): it will get the message again",
                       group, m->id);
}

struct kq_msg *kq_delivery_find(struct kq_broker *b, const char *id)
{
    return kq_idmap_find(&b->msgs, id);
}

/* A store call delivery cannot undo: say so and count it (the store copy may now be behind
 * the index; after a restart the message may be delivered again, never lost). */
static void store_result(struct kq_broker *b, const char *op, const char *id, int rc)
{
    if (rc == 0)
        return;
    b->stats.store_errors++;
    KQ_LOG_RATELIMITED(KQ_LOG_ERROR, "delivery", "store %s failed id=%s: %s", op, id,
                       strerror(rc < 0 ? -rc : rc));
}

/* --- scheduling ---------------------------------------------------------------------------- */

static void on_retry_timer(uv_timer_t *t);

void kq_delivery_rearm(struct kq_broker *b)
{
    struct kq_heap_item *top = kq_heap_top(&b->schedule);
    if (!top) {
        uv_timer_stop(&b->retry_timer);
        return;
    }
    int64_t wait = top->key - kq_now_ms();
    uv_timer_start(&b->retry_timer, on_retry_timer, wait > 0 ? (uint64_t)wait : 0, 0);
}

void kq_delivery_schedule(struct kq_broker *b, struct kq_msg *m, int64_t when_ms)
{
    kq_heap_remove(&b->schedule, &m->timer);
    m->timer.key = when_ms;
    if (kq_heap_push(&b->schedule, &m->timer) != 0) {
        KQ_ERROR("delivery", "out of memory scheduling id=%s", m->id);
        return;
    }
    if (kq_heap_top(&b->schedule) == &m->timer)
        kq_delivery_rearm(b);
}

#define MSG_OF_TIMER(it) ((struct kq_msg *)((char *)(it)-offsetof(struct kq_msg, timer)))

static void on_retry_timer(uv_timer_t *t)
{
    struct kq_broker *b = t->data;
    int64_t now = kq_now_ms();
    /* Bound the work per callback so one burst of due messages cannot starve the loop. */
    for (int n = 0; n < 10000; n++) {
        struct kq_heap_item *top = kq_heap_top(&b->schedule);
        if (!top || top->key > now)
            break;
        kq_heap_remove(&b->schedule, top);
        start_attempt(b, MSG_OF_TIMER(top));
    }
    kq_delivery_rearm(b);
}

void kq_delivery_add(struct kq_broker *b, struct kq_msg *m, int64_t when_ms)
{
    if (kq_idmap_insert(&b->msgs, m) != 0) {
        KQ_ERROR("delivery", "out of memory indexing id=%s", m->id);
        kq_hist_finish(b, m);
        kq_msg_extra_drop(b, m);
        kq_msg_free(m); /* the producer was acked: it stays in the store for a restart */
        return;
    }
    kq_msg_topic_stats(b, m)->pending++;
    if (!m->commit) {
        kq_delivery_schedule(b, m, when_ms); /* its first transaction check */
        kq_msg_evict(m); /* waits for its commit: loaded again for the check or delivery */
    } else if (when_ms <= kq_now_ms())
        start_attempt(b, m); /* a new message goes out at once, not on the next timer */
    else
        kq_delivery_schedule(b, m, when_ms);
}

/* Forget a message. The store copy is removed too when asked (delivered, rolled back). */
void kq_delivery_drop(struct kq_broker *b, struct kq_msg *m, bool remove_from_store)
{
    kq_heap_remove(&b->schedule, &m->timer);
    if (remove_from_store && m->stored)
        store_result(b, "remove", m->id, b->store->ops->remove(b->store, m->id));
    kq_idmap_remove(&b->msgs, m);
    kq_failed_clear(b, m);
    kq_msg_topic_stats(b, m)->pending--;
    kq_hist_finish(b, m);
    kq_msg_extra_drop(b, m);
    kq_msg_free(m);
}

void kq_delivery_dead_letter(struct kq_broker *b, struct kq_msg *m, const char *reason)
{
    if (!kq_dead_hook(b, m, reason))
        kq_delivery_dead_letter_now(b, m, reason);
}

void kq_delivery_dead_letter_now(struct kq_broker *b, struct kq_msg *m, const char *reason)
{
    KQ_WARN("delivery", "dead letter id=%s topic=%s type=%s attempts=%d reason=\"%s\"", m->id,
            m->topic, m->type, m->attempts, reason);
    b->stats.dead_lettered++;
    kq_msg_topic_stats(b, m)->dead_lettered++;
    kq_hist_text(b, m, KQ_EV_DEAD, NULL, reason);
    if (m->stored) {
        struct kq_stored_msg sm;
        kq_msg_to_stored(m, &sm);
        struct kq_dlq_groups g; /* who it failed for: a requeue goes only to them */
        bool known = kq_dead_groups_of(b, m, reason, &g) == 0;
        store_result(b, "dead_letter", m->id,
                     b->store->ops->dead_letter(b->store, &sm, reason, known ? &g : NULL));
        kq_dead_groups_free(&g);
    }
    kq_delivery_drop(b, m, false);
}

/* --- one attempt --------------------------------------------------------------------------- */

static void tq_unlink(struct kq_broker *b, struct kq_inflight *f)
{
    if (f->tprev)
        f->tprev->tnext = f->tnext;
    else
        b->tq_head = f->tnext;
    if (f->tnext)
        f->tnext->tprev = f->tprev;
    else
        b->tq_tail = f->tprev;
}

/* A copy's record is taken and given back for every copy: the last answered ones are kept
 * for the next (a calloc and a free per copy were ~4 % of a fan-out's instructions). At
 * most SPARE_COPIES, so the memory follows the copies in flight, not the traffic. */
#if defined(__SANITIZE_ADDRESS__)
#define SPARE_COPIES 0 /* under ASan every copy is freed, so a use after its answer is caught */
#else
#define SPARE_COPIES 1024
#endif

static struct kq_inflight *copy_new(struct kq_broker *b)
{
    struct kq_inflight *f = b->spare_copies;
    if (!f)
        return calloc(1, sizeof *f);
    b->spare_copies = f->tnext;
    b->n_spare_copies--;
    memset(f, 0, sizeof *f);
    return f;
}

static void copy_free(struct kq_broker *b, struct kq_inflight *f)
{
    if (b->n_spare_copies + 1 > SPARE_COPIES) { /* ">= SPARE_COPIES": a warning when it is 0 */
        free(f);
        return;
    }
    f->tnext = b->spare_copies;
    b->spare_copies = f;
    b->n_spare_copies++;
}

/* now: kq_broker_mono_ms(), the caller's */
static bool send_copy(struct kq_broker *b, struct kq_msg *m, struct kq_group *g,
                      struct kq_session *s, uint64_t now)
{
    struct kq_inflight *f = copy_new(b);
    if (!f)
        return false;
    uint32_t op = s->next_opaque++;
    if (op == 0) /* 0 means "unassigned" to the original clients */
        op = s->next_opaque++;
    if (kq_codec_append_message(kq_conn_out(s->conn), op, m->cmd, KQ_MSG_HDR(m), KQ_MSG_HDR_LEN(m),
                                KQ_MSG_BODY(m), KQ_MSG_BODY_LEN(m)) != 0) {
        copy_free(b, f);
        return false;
    }
    kq_session_send_flush(s);
    f->opaque = op;
    f->session = s;
    f->msg = m;
    f->group = g;
    f->sent_ms = now;
    f->deadline_ms = f->sent_ms + (uint64_t)b->cfg->delivery_seconds * 1000;
    s->n_inflight++;
    HASH_ADD(hh, s->inflight, opaque, sizeof f->opaque, f);
    /* All deliveries share one timeout, so appending keeps the queue sorted. */
    f->tprev = b->tq_tail;
    if (b->tq_tail)
        b->tq_tail->tnext = f;
    else
        b->tq_head = f;
    b->tq_tail = f;
    m->inflight++;
    /* An attempt counts once a copy goes out: a persistent group that is offline keeps its
     * messages until it comes back or they expire, instead of burning the limit. */
    if (m->sent++ == 0)
        m->attempts++;
    kq_hist_copy(b, m, KQ_EV_SENT, g, s);
    g->inflight++;
    g->sent++;
    b->stats.inflight++;
    return true;
}

/* --- per-connection delivery window --------------------------------------------------- */

/* A consumer is sent at most `window` deliveries at a time. The window adapts to what the
 * connection shows: it doubles per round trip while acks come back within the latency
 * target (slow start), then grows by one per round trip; an ack later than the target halves
 * it (once per round trip), a timeout halves it and ends slow start. The group's window
 * (deliverWindow, flow policy) stays the ceiling. So a consumer that takes 1 ms a message
 * holds about target / 1 ms deliveries, never deliverySeconds' worth, and a fast one
 * reaches the ceiling within a few round trips. */
static uint64_t latency_target_ms(const struct kq_broker *b)
{
    uint64_t t = (uint64_t)b->cfg->delivery_seconds * 1000 / 10;
    return t < 50 ? 50 : t;
}

void kq_delivery_session_init(struct kq_broker *b, struct kq_session *s)
{
    s->window = WINDOW_INITIAL;
    s->slow_start_until = (double)b->cfg->deliver_window;
}

bool kq_delivery_session_has_room(struct kq_session *s)
{
    if (s->n_inflight >= (uint32_t)s->window)
        return false; /* an answer on s pumps its group again */
    if (kq_conn_backlog(s->conn) >= DELIVERY_QUEUE_BYTES) {
        kq_conn_notify_drain(s->conn);
        return false;
    }
    return true;
}

static void window_cut(struct kq_session *s, uint64_t now)
{
    s->window = s->window / 2 < WINDOW_MIN ? WINDOW_MIN : s->window / 2;
    s->slow_start_until = s->window;
    s->window_cut_ms = now;
}

static void window_on_answer(struct kq_broker *b, struct kq_session *s, const struct kq_inflight *f,
                             bool timed_out)
{
    uint64_t now = kq_broker_mono_ms();
    uint64_t latency = now - f->sent_ms;
    double ceiling = (double)b->cfg->deliver_window;
    if (timed_out || latency > latency_target_ms(b)) {
        /* one cut per round trip: the answers of one late batch arrive together */
        if (now - s->window_cut_ms >= latency) {
            window_cut(s, now);
            KQ_DEBUG("delivery", "window cut peer=%s window=%.0f latency=%llums%s",
                     kq_conn_peer(s->conn), s->window, (unsigned long long)latency,
                     timed_out ? " (timeout)" : "");
        }
        return;
    }
    s->window += s->window < s->slow_start_until ? 1.0 : 1.0 / s->window;
    if (s->window > ceiling)
        s->window = ceiling;
}

void kq_delivery_conn_drained(struct kq_broker *b, struct kq_conn *c)
{
    struct kq_session *s = kq_conn_user(c);
    if (s && s->group && s->group->wait_head)
        pump(b, s->group);
}

/* Timeouts mean a consumer does not keep up (or is gone without closing): say so, per group,
 * with how many, at most every TIMEOUT_LOG_MS. */
static void log_group_timeouts(struct kq_broker *b, struct kq_group *g, uint64_t now)
{
    KQ_WARN("delivery",
            "delivery timeouts group=%s count=%llu in the last %llus: copies not "
            "acked within deliverySeconds=%d are retried (consumer too slow or not reading?)",
            g->id, (unsigned long long)g->timeouts_unlogged,
            (unsigned long long)(g->timeouts_logged_ms ? (now - g->timeouts_logged_ms) / 1000
                                                       : (uint64_t)b->cfg->delivery_seconds),
            b->cfg->delivery_seconds);
    g->timeouts_unlogged = 0;
    g->timeouts_logged_ms = now;
}

static void note_timeout(struct kq_broker *b, struct kq_group *g, const char *topic)
{
    struct kq_group_rate *r = find_rate(g, topic);
    if (r)
        r->timeouts++;
    g->timeouts_unlogged++;
    uint64_t now = kq_broker_mono_ms();
    if (!g->timeouts_logged_ms || now - g->timeouts_logged_ms >= TIMEOUT_LOG_MS)
        log_group_timeouts(b, g, now);
}

void kq_delivery_log_timeouts(struct kq_broker *b)
{
    uint64_t now = kq_broker_mono_ms();
    struct kq_group *g, *tmp;
    HASH_ITER (hh, b->groups, g, tmp) {
        if (g->timeouts_unlogged && now - g->timeouts_logged_ms >= TIMEOUT_LOG_MS)
            log_group_timeouts(b, g, now);
    }
}

/* --- flow control: per-group window and per-(group, topic) rate ----------------------- */

/* The flow.group policy is asked at most this often per (group, topic), and after a reload
 * or a binding change; never per message. */
#define FLOW_ASK_MS 1000

/* topic is usually a message's atom: found by its address (the entry holds the atom, so the
 * same address is the same name), else by name. */
static struct kq_group_rate *find_rate_scan(struct kq_group *g, const char *topic)
{
    for (size_t i = 0; i < g->n_rates; i++)
        if (g->rates[i].topic_atom == topic)
            return &g->rates[i];
    for (size_t i = 0; i < g->n_rates; i++)
        if (strcmp(g->rates[i].topic, topic) == 0)
            return &g->rates[i];
    return NULL;
}

static inline struct kq_group_rate *find_rate(struct kq_group *g, const char *topic)
{
    if (g->n_rates && g->rates[0].topic_atom == topic)
        return &g->rates[0]; /* most groups consume one topic */
    return find_rate_scan(g, topic);
}

struct kq_group_rate *kq_delivery_rate_find(struct kq_group *g, const char *topic)
{
    return find_rate(g, topic);
}

/* Refresh r's limits from the policy with the live figures. The bucket keeps the tokens it
 * holds (asking must not refill it); it starts full only when new or rebound. */
static void flow_ask(struct kq_broker *b, struct kq_group *g, struct kq_group_rate *r, uint64_t now)
{
    struct kq_flow_figures f = {r->inflight, r->waiting, r->failures, r->watermark};
    struct kq_flow_limits l;
    kq_policy_flow_group(b->policy, g->id, r->topic, &f, &l);
    if (!r->asked_ms) {
        kq_token_bucket_init(&r->bucket, l.rate, l.burst);
    } else if (l.rate != r->limits.rate || l.burst != r->limits.burst) {
        struct kq_token_bucket old = r->bucket;
        kq_token_bucket_init(&r->bucket, l.rate, l.burst);
        if (old.rate > 0 && old.tokens < r->bucket.tokens)
            r->bucket.tokens = old.tokens;
        r->bucket.last_us = old.last_us;
    }
    r->limits = l;
    r->failures = 0;
    r->asked_ms = now ? now : 1;
    r->generation = b->reload_generation;
}

/* The flow entry of (g, topic), created on first use; watermark > 0 updates the binding's.
 * now: kq_broker_mono_ms() (the caller's, read once: a clock call per message showed). */
static struct kq_group_rate *rate_for(struct kq_broker *b, struct kq_group *g, const char *topic,
                                      int watermark, uint64_t now)
{
    struct kq_group_rate *r = find_rate(g, topic);
    if (!r) {
        struct kq_group_rate *p = realloc(g->rates, (g->n_rates + 1) * sizeof *p);
        if (!p)
            return NULL;
        g->rates = p;
        r = &p[g->n_rates];
        memset(r, 0, sizeof *r);
        if (!(r->topic = strdup(topic)))
            return NULL;
        r->topic_atom = kq_atom(b, topic); /* NULL (out of memory): found by name */
        g->n_rates++;
        r->watermark = watermark;
    } else if (watermark > 0 && r->watermark != watermark) { /* binding changed */
        r->watermark = watermark;
        r->asked_ms = 0;
    }
    if (!r->asked_ms || now - r->asked_ms >= FLOW_ASK_MS || r->generation != b->reload_generation)
        flow_ask(b, g, r, now);
    return r;
}

/* deliverWindow caps the group; the policy's window (0 = none) caps it per topic. */
static bool has_room(const struct kq_broker *b, const struct kq_group *g,
                     const struct kq_group_rate *r)
{
    if (g->inflight >= (uint32_t)b->cfg->deliver_window)
        return false;
    return !r || r->limits.window == 0 || r->inflight < r->limits.window;
}

/* A copy of (g, topic) was answered (or lost). */
static void flow_done(struct kq_group *g, const char *topic, bool ok)
{
    struct kq_group_rate *r = find_rate(g, topic);
    if (!r)
        return;
    if (r->inflight)
        r->inflight--;
    if (ok)
        r->acked++;
    else
        r->failures++;
}

void kq_delivery_fail_waits(struct kq_broker *b, bool on) { b->fail_waits = on; }

static void enqueue_wait(struct kq_broker *b, struct kq_group *g, struct kq_msg *m)
{
    struct kq_wait *w = b->fail_waits ? NULL : calloc(1, sizeof *w);
    if (!w) {
        copy_not_made(b, m, g->id, "queueing a copy for room");
        return;
    }
    w->msg = m;
    if (m->block) {
        w->charged = m->block->header_len + m->block->body_len;
        b->hot_waiting_bytes += w->charged;
    }
    if (g->wait_tail)
        g->wait_tail->next = w;
    else
        g->wait_head = w;
    g->wait_tail = w;
    g->n_waiting++;
    b->n_waiting_total++;
    m->waiting++;
    struct kq_group_rate *r = find_rate(g, m->topic);
    if (r)
        r->waiting++;
    kq_hist(b, m, KQ_EV_QUEUED, g->id, NULL);
    if (!g->in_pump_list) {
        g->in_pump_list = true;
        g->pump_next = b->pump_list;
        b->pump_list = g;
    }
}

static struct kq_msg *dequeue_wait(struct kq_broker *b, struct kq_group *g)
{
    struct kq_wait *w = g->wait_head;
    g->wait_head = w->next;
    if (!g->wait_head)
        g->wait_tail = NULL;
    g->n_waiting--;
    b->n_waiting_total--;
    b->hot_waiting_bytes -= w->charged;
    struct kq_msg *m = w->msg;
    free(w);
    m->waiting--;
    struct kq_group_rate *r = find_rate(g, m->topic);
    if (r && r->waiting)
        r->waiting--;
    return m;
}

static bool attempt_over(const struct kq_msg *m) { return m->inflight == 0 && m->waiting == 0; }

/* Memory is bounded by the pending count, not by what consumers do: once its copies are
 * written to the connections, a stored message keeps only its id while they are out (an
 * answer needs no body; a retry reads it back). Copies waiting for room keep theirs only
 * while the queued bodies are few (a pipelining producer fills the queues for a moment;
 * reading every body back then cost ~1.8k instructions per message, more than the memory),
 * so a consumer that never acks holds ids, not bodies. Counted in bytes, so large bodies
 * cannot multiply the bound; a body that waits for several groups counts once per group
 * (an overestimate: it is evicted sooner, never later). */
#define HOT_WAITING_BYTES ((size_t)16 << 20)

static void drop_block_while_out(struct kq_broker *b, struct kq_msg *m)
{
    if (m->waiting == 0 || b->hot_waiting_bytes > HOT_WAITING_BYTES)
        kq_msg_evict(m);
}

/* A waiting copy that cannot be sent (its body cannot be read back) fails for g now. */
static void fail_waiting_copy(struct kq_broker *b, struct kq_group *g, struct kq_msg *m)
{
    for (struct kq_wait **pp = &g->wait_head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next) {
        if ((*pp)->msg != m)
            continue;
        struct kq_wait *w = *pp;
        *pp = w->next;
        if (g->wait_tail == w)
            g->wait_tail = prev;
        g->n_waiting--;
        b->n_waiting_total--;
        b->hot_waiting_bytes -= w->charged;
        m->waiting--;
        struct kq_group_rate *r = find_rate(g, m->topic);
        if (r && r->waiting)
            r->waiting--;
        free(w);
        add_failed(b, m, g->id);
        kq_hist_text(b, m, KQ_EV_NOT_SENT, g->id, "cannot read it back from the store");
        kq_msg_set_failure(m, "nack");
        if (attempt_over(m))
            finish_attempt(b, m);
        return;
    }
}

/* Send what waits for room in g, in FIFO order, as far as window and rate allow. */
static void pump(struct kq_broker *b, struct kq_group *g)
{
    if (!g->wait_head)
        return; /* every answer pumps: most find nothing waiting */
    uint64_t now = kq_broker_mono_ms();
    while (g->wait_head) {
        struct kq_msg *m = g->wait_head->msg;
        if (m->n_done && name_in(b, &m->done, m->n_done, g->id)) {
            dequeue_wait(b, g); /* purged while it waited: not sent */
            if (attempt_over(m))
                finish_attempt(b, m);
            continue;
        }
        struct kq_group_rate *r = rate_for(b, g, m->topic, 0, now);
        if (!has_room(b, g, r))
            break; /* FIFO: an answer or the tick tries again */
        if (r && !kq_token_bucket_take(&r->bucket, kq_mono_us()))
            break; /* the tick tries again */
        enum kq_pick_fail why;
        struct kq_session *s = kq_group_pick_delivery(g, now, &why);
        if (!s)
            break; /* full: an answer or a drained connection pumps again; warming up: the
                    * tick; offline is handled by kq_delivery_group_offline */
        if (!m->block && !load_for_group(b, m, g))
            break; /* being read back (on_loaded pumps again), or failed (no longer here) */
        dequeue_wait(b, g);
        if (!send_copy(b, m, g, s, now))
            copy_not_made(b, m, g->id, "sending a copy");
        else if (r)
            r->inflight++;
        if (attempt_over(m))
            finish_attempt(b, m);
        else
            drop_block_while_out(b, m);
    }
}

void kq_delivery_pump_all(struct kq_broker *b)
{
    struct kq_group *list = b->pump_list;
    b->pump_list = NULL;
    while (list) {
        struct kq_group *g = list;
        list = g->pump_next;
        g->in_pump_list = false;
        pump(b, g);
        undefer(b);
        if (g->wait_head && !g->in_pump_list) {
            g->in_pump_list = true;
            g->pump_next = b->pump_list;
            b->pump_list = g;
        }
    }
}

/* The group of an attempt's route i. Attempts of the same (topic, type) have the same routes
 * in the same order (a fan-out's groups), so the group last found for route i is nearly
 * always the one: one compare instead of hashing the name. */
static struct kq_group *offered_group(struct kq_broker *b, const char *name, size_t i)
{
    const size_t n = sizeof b->offered / sizeof b->offered[0];
    if (i < n && b->offered[i] && strcmp(b->offered[i]->id, name) == 0)
        return b->offered[i];
    struct kq_group *g = kq_group_get(b, name, false);
    if (g && i < n)
        b->offered[i] = g;
    return g;
}

/* One group's copy of this attempt: sent now, queued for room, or failed. */
static void offer(struct kq_broker *b, struct kq_msg *m, const struct kq_route *rt, size_t i)
{
    struct kq_group *g = offered_group(b, rt->group, i);
    enum kq_pick_fail why = KQ_PICK_OFFLINE;
    uint64_t now = kq_broker_mono_ms();
    struct kq_session *s = kq_group_pick_delivery(g, now, &why);
    if (!s && why == KQ_PICK_WARMING) {
        /* online but every connection is still warming up: try again soon */
        add_failed(b, m, rt->group);
        kq_msg_set_failure(m, "no consumer online");
        kq_hist(b, m, KQ_EV_WARMING, rt->group, NULL);
        m->retry_soon = true;
        return;
    }
    if (!s && why == KQ_PICK_OFFLINE) {
        if (!rt->persistent) {
            add_done(b, m, rt->group, g); /* nobody online: this group skips it */
            kq_hist(b, m, KQ_EV_SKIPPED, rt->group, NULL);
        } else {
            add_failed(b, m, rt->group);
            kq_msg_set_failure(m, "no consumer online");
            kq_hist(b, m, KQ_EV_NO_CONSUMER, rt->group, NULL);
        }
        return;
    }
    struct kq_group_rate *r = rate_for(b, g, m->topic, rt->watermark, now);
    if (!s || g->wait_head || !has_room(b, g, r) ||
        (r && !kq_token_bucket_take(&r->bucket, kq_mono_us()))) {
        enqueue_wait(b, g, m); /* no connection has room (s == NULL), or the group's flow */
        return;
    }
    if (!send_copy(b, m, g, s, now)) {
        kq_msg_set_failure(m, "over flow"); /* out of memory for the frame */
        copy_not_made(b, m, rt->group, "sending a copy");
    } else if (r) {
        r->inflight++;
    }
}

struct load_ctx {
    struct kq_broker *broker;
    char id[KQ_ID_LEN + 1];
    /* NULL = for an attempt; else for that group's waiting copy. Groups live as long as the
     * broker (and longer than the messages on_loaded looks up first). */
    struct kq_group *group;
};

/* Header and body as read back from the store, with the commit the stored header predates. */
static int set_loaded_block(struct kq_msg *m, const struct kq_stored_msg *sm)
{
    if (kq_msg_set_block(m, sm->header, sm->header_len, sm->body, sm->body_len) != 0)
        return -ENOMEM;
    if (m->commit)
        kq_msg_mark_header_committed(m);
    return 0;
}

static void fail_waiting_copy(struct kq_broker *b, struct kq_group *g, struct kq_msg *m);

/* A waiting copy's header and body are back (or not): send what g can now. */
static void on_loaded_for_group(struct kq_broker *b, struct kq_msg *m, struct kq_group *g,
                                int status, const struct kq_stored_msg *sm)
{
    if (status != 0 || set_loaded_block(m, sm) != 0) {
        KQ_LOG_RATELIMITED(KQ_LOG_ERROR, "delivery",
                           "cannot read id=%s back from the store for "
                           "group=%s: %s (this attempt fails for the group)",
                           m->id, g->id, strerror(status ? -status : ENOMEM));
        fail_waiting_copy(b, g, m);
        return;
    }
    if (g->wait_head && !loading_inline) /* at once: load_for_group's caller goes on */
        pump(b, g);
}

/* Header and body are back from the store: run the attempt that asked for them. */
static void on_loaded(void *ud, int status, const struct kq_stored_msg *sm)
{
    struct load_ctx *lc = ud;
    struct kq_broker *b = lc->broker;
    struct kq_msg *m = kq_delivery_find(b, lc->id);
    struct kq_group *group = lc->group;
    free(lc);
    if (!m || !m->loading)
        return; /* dropped meanwhile (rolled back) */
    m->loading = false;
    if (group) {
        on_loaded_for_group(b, m, group, status, sm);
        return;
    }
    if (status != 0 || set_loaded_block(m, sm) != 0) {
        KQ_LOG_RATELIMITED(KQ_LOG_ERROR, "delivery", "cannot read id=%s back from the store: %s",
                           m->id, strerror(status ? -status : ENOMEM));
        kq_delivery_schedule(b, m, kq_now_ms() + (int64_t)b->cfg->recover_seconds * 1000);
        return;
    }
    start_attempt(b, m);
}

/* Read a waiting copy's header and body back for g (they were dropped while it waited).
 * Returns true when they are there now (a store that answers at once), false while the read
 * is in flight (on_loaded pumps g) or after a failure (the copy failed for g). */
static bool load_for_group(struct kq_broker *b, struct kq_msg *m, struct kq_group *g)
{
    if (m->loading)
        return false;
    struct load_ctx *lc = calloc(1, sizeof *lc);
    if (!lc)
        return false; /* the tick pumps again */
    lc->broker = b;
    memcpy(lc->id, m->id, sizeof lc->id);
    lc->group = g;
    char id[KQ_ID_LEN + 1];
    memcpy(id, m->id, sizeof id);
    m->loading = true;
    loading_inline = true;
    int rc = b->store->ops->load(b->store, m->id, on_loaded, lc);
    loading_inline = false;
    if (rc != 0) {
        m->loading = false;
        free(lc);
        KQ_LOG_RATELIMITED(KQ_LOG_ERROR, "delivery", "cannot load id=%s for group=%s", m->id,
                           g->id);
        fail_waiting_copy(b, g, m);
        return false;
    }
    /* an answer at once may have failed the copy (and finished the message) */
    return kq_delivery_find(b, id) == m && m->block && g->wait_head && g->wait_head->msg == m;
}

static void load_then_attempt(struct kq_broker *b, struct kq_msg *m)
{
    struct load_ctx *lc = calloc(1, sizeof *lc);
    if (lc) {
        lc->broker = b;
        memcpy(lc->id, m->id, sizeof lc->id);
        m->loading = true;
        KQ_DEBUG("delivery", "loading id=%s for its attempt", m->id);
        if (b->store->ops->load(b->store, m->id, on_loaded, lc) == 0)
            return; /* on_loaded runs (maybe already did) */
        m->loading = false;
        free(lc);
    }
    KQ_LOG_RATELIMITED(KQ_LOG_ERROR, "delivery", "cannot load id=%s from the store", m->id);
    kq_delivery_schedule(b, m, kq_now_ms() + (int64_t)b->cfg->recover_seconds * 1000);
}

/* A cold message (header and body in the store) is loaded only when the groups' queues have
 * room for it: draining a large backlog must not bring every body back into memory at once.
 * Cold messages that would only wait are parked by id, in order, and started as the queues
 * drain. */
#define COLD_WAIT_LIMIT(b) (4u * (size_t)(b)->cfg->deliver_window)

static void defer_cold(struct kq_broker *b, struct kq_msg *m)
{
    struct kq_id_ring *r = &b->deferred;
    if (r->len == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 1024;
        char(*ids)[KQ_ID_LEN + 1] = malloc(cap * sizeof *ids);
        if (!ids) { /* cannot park it: retry a little later */
            kq_delivery_schedule(b, m, kq_now_ms() + 1000);
            return;
        }
        for (size_t i = 0; i < r->len; i++)
            memcpy(ids[i], r->ids[(r->head + i) % r->cap], sizeof ids[i]);
        free(r->ids);
        r->ids = ids;
        r->cap = cap;
        r->head = 0;
    }
    memcpy(r->ids[(r->head + r->len) % r->cap], m->id, sizeof r->ids[0]);
    r->len++;
    m->deferred = true;
}

static void start_attempt(struct kq_broker *b, struct kq_msg *m);

/* Start parked cold messages while the queues have room (a bounded number per call). */
static void undefer(struct kq_broker *b)
{
    struct kq_id_ring *r = &b->deferred;
    for (int n = 0; n < 512 && r->len && b->n_waiting_total < COLD_WAIT_LIMIT(b) / 2; n++) {
        struct kq_msg *m = kq_delivery_find(b, r->ids[r->head]);
        r->head = (r->head + 1) % r->cap;
        r->len--;
        if (m && m->deferred) { /* gone or re-added meanwhile: skip */
            m->deferred = false;
            start_attempt(b, m);
        }
    }
}

/* Could this attempt send a copy: is a group that still needs the message online? Only
 * then is a cold message worth loading. With nobody online the attempt only records "no
 * consumer online" and needs neither header nor body: rechecking 800 000 cold messages had
 * loaded every body back from the store every 30 s (MySQL: one query each, and the memory
 * held by the queued loads grew by 1.4 KB per message). */
static bool any_group_online(struct kq_broker *b, const struct kq_msg *m)
{
    struct kq_route *routes = b->routes; /* KQ_POLICY_MAX_ROUTES: every bound group */
    size_t n = kq_msg_route(b, m, routes, KQ_POLICY_MAX_ROUTES);
    for (size_t i = 0; i < n; i++) {
        if (name_in(b, &m->done, m->n_done, routes[i].group))
            continue;
        struct kq_group *g = kq_group_get(b, routes[i].group, false);
        if (g && g->n > 0)
            return true;
    }
    return false;
}

static void start_attempt(struct kq_broker *b, struct kq_msg *m)
{
    if (!attempt_over(m) || m->loading)
        return; /* an attempt is still open */
    /* A committed cold message with nobody to send to goes on without its body. */
    if (!m->block && (!m->commit || any_group_online(b, m))) {
        if (b->n_waiting_total >= COLD_WAIT_LIMIT(b) && m->commit)
            defer_cold(b, m);
        else
            load_then_attempt(b, m);
        return;
    }
    if (!m->commit) {
        b->turns.tx_check_due(b, m);
        return;
    }
    /* Limits and expiry only: the retry hook is asked after a failure (finish_attempt), not
     * before every attempt of every message. */
    struct kq_retry_verdict v;
    kq_policy_default_retry(m->attempts, m->deliver_limit, kq_msg_expiry(b, m), kq_now_sec(), &v);
    if (v.dead) {
        kq_delivery_dead_letter(b, m, v.reason);
        return;
    }
    struct kq_route *routes = b->routes; /* KQ_POLICY_MAX_ROUTES: every bound group */
    size_t n = kq_msg_route(b, m, routes, KQ_POLICY_MAX_ROUTES);
    kq_failed_clear(b, m);
    m->names_lost = false;
    m->sent = 0;
    m->retry_soon = false;
    m->done_at_start = m->n_done;
    for (size_t i = 0; i < n; i++)
        if (!name_in(b, &m->done, m->n_done, routes[i].group))
            offer(b, m, &routes[i], i);
    if (n == 0) {
        add_failed(b, m, NO_SUBSCRIBER);
        kq_msg_set_failure(m, "no consumer online");
        kq_hist(b, m, KQ_EV_NO_SUBSCRIBER, NULL, NULL);
    }
    if (attempt_over(m))
        finish_attempt(b, m);
    else
        drop_block_while_out(b, m);
}

void kq_delivery_persist(struct kq_broker *b, struct kq_msg *m, int64_t next_ms)
{
    if (!m->stored)
        return;
    struct kq_delivery_state st;
    memset(&st, 0, sizeof st);
    memcpy(st.id, m->id, sizeof st.id);
    st.attempts = m->attempts;
    st.next_attempt_ms = next_ms;
    st.tx_checks = m->tx_checks;
    st.groups_done = (const char **)kq_names_view(&m->done, m->n_done);
    st.n_done = m->n_done;
    st.groups_failed = (const char **)kq_names_view(&m->failed, m->n_failed);
    st.n_failed = m->n_failed;
    store_result(b, "update", m->id, b->store->ops->update(b->store, &st));
}

/* Retry delay for an attempt that found only connections still warming up: once a second
 * while the warm-up ramp gives them a growing share, and no later than the first one's end. */
static int64_t warm_retry_ms(struct kq_broker *b, const struct kq_msg *m)
{
    uint64_t now = kq_broker_mono_ms(), best = 1000;
    const char *const *failed = kq_names_view(&m->failed, m->n_failed);
    for (uint16_t i = 0; i < m->n_failed; i++) {
        uint64_t in = kq_group_warm_in_ms(kq_group_get(b, failed[i], false), now);
        if (in > 0 && in < best)
            best = in;
    }
    return best < 50 ? 50 : (int64_t)best;
}

static void finish_attempt(struct kq_broker *b, struct kq_msg *m)
{
    if (m->first_ack) {
        b->turns.first_attempt_done(b, m, m->n_failed == 0);
        return;
    }
    if (m->n_failed == 0 && !m->names_lost) {
        b->stats.delivered++;
        kq_msg_topic_stats(b, m)->delivered++;
        kq_hist(b, m, KQ_EV_DELIVERED, NULL, NULL);
        kq_delivery_drop(b, m, true);
        return;
    }
    struct kq_retry_verdict v;
    kq_policy_retry(b->policy, m->attempts, kq_msg_failure(m) ? kq_msg_failure(m) : "nack",
                    m->deliver_limit, kq_msg_expiry(b, m), kq_now_sec(), &v);
    if (v.dead) {
        kq_delivery_dead_letter(b, m, v.reason);
        return;
    }
    int64_t now = kq_now_ms();
    int64_t next = now + v.delay_ms;
    bool changed = m->sent > 0 || m->n_done != m->done_at_start;
    if (m->sent == 0) {
        /* Nobody to send to. A group coming online (or a binding change) triggers the next
         * attempt at once; until then look again rarely, and at the latest at expiry. */
        next = now + NOBODY_RECHECK_MS;
        KQ_DEBUG("delivery", "nobody online id=%s cold=%d", m->id, !m->block);
        if (m->expired_time > 0 && m->expired_time * 1000 < next)
            next = m->expired_time * 1000;
        if (next < now + (int64_t)b->cfg->recover_seconds * 1000)
            next = now + (int64_t)b->cfg->recover_seconds * 1000;
        if (m->retry_soon) /* connections warming up: as their share grows, at the latest
                            * when the first is fully warm */
            next = now + warm_retry_ms(b, m);
    } else {
        b->stats.retried++;
        kq_msg_topic_stats(b, m)->retried++;
    }
    if (changed) /* nothing to write when the attempt changed nothing */
        kq_delivery_persist(b, m, next);
    kq_hist_retry(b, m, next);
    kq_delivery_schedule(b, m, next);
    if (next - now >= 1000)
        kq_msg_evict(m); /* waits a while: the store keeps header and body meanwhile */
}

/* --- answers --------------------------------------------------------------------------- */

/* How a copy's attempt ended, when it was not acked. */
enum copy_end { END_NACK, END_TIMEOUT, END_LOST };

static void complete(struct kq_broker *b, struct kq_inflight *f, bool ok, enum copy_end why)
{
    /* literals: kept as the message's failure text */
    static const char *const why_text[] = {
        [END_NACK] = "nack", [END_TIMEOUT] = "timeout", [END_LOST] = "connection lost"};
    static const uint8_t why_event[] = {
        [END_NACK] = KQ_EV_NACKED, [END_TIMEOUT] = KQ_EV_TIMEOUT, [END_LOST] = KQ_EV_LOST};
    struct kq_msg *m = f->msg;
    struct kq_session *s = f->session;
    struct kq_group *g = f->group;
    HASH_DEL(s->inflight, f);
    tq_unlink(b, f);
    s->n_inflight--;
    g->inflight--;
    b->stats.inflight--;
    bool timed_out = why == END_TIMEOUT;
    if (ok || why != END_LOST)
        window_on_answer(b, s, f, timed_out && !ok);
    if (!ok && timed_out)
        note_timeout(b, g, m->topic);
    if (ok) {
        add_done(b, m, g->id, g);
        b->stats.acked++;
        g->acked++;
        kq_hist_copy(b, m, KQ_EV_ACKED, g, s);
    } else {
        kq_hist_copy(b, m, why_event[why], g, s);
        add_failed(b, m, g->id);
        g->failed++;
        kq_msg_set_failure(m, why_text[why]);
        KQ_DEBUG("delivery", "copy failed id=%s group=%s reason=%s", m->id, g->id, why_text[why]);
    }
    flow_done(g, m->topic, ok);
    copy_free(b, f);
    if (--m->inflight == 0 && m->waiting == 0)
        finish_attempt(b, m);
    pump(b, g); /* a slot is free */
    undefer(b);
}

void kq_delivery_on_ack(struct kq_broker *b, struct kq_session *s, uint32_t opaque, bool status)
{
    struct kq_inflight *f;
    HASH_FIND(hh, s->inflight, &opaque, sizeof opaque, f);
    if (!f) {
        /* Late (after its timeout: the copy was retried) or unknown: counted, since many
         * late acks mean deliverySeconds is shorter than the consumers' work. */
        b->stats.acks_unmatched++;
        KQ_DEBUG("delivery", "ack for unknown opaque=%u peer=%s", opaque, kq_conn_peer(s->conn));
        return;
    }
    complete(b, f, status, END_NACK);
}

void kq_delivery_session_closed(struct kq_broker *b, struct kq_session *s)
{
    struct kq_inflight *f, *tmp;
    HASH_ITER (hh, s->inflight, f, tmp)
        complete(b, f, false, END_LOST);
}

void kq_delivery_check_timeouts(struct kq_broker *b)
{
    uint64_t now = kq_broker_mono_ms();
    while (b->tq_head && b->tq_head->deadline_ms <= now)
        complete(b, b->tq_head, false, END_TIMEOUT);
}

/* Messages that wait for a later attempt go now when it may reach a consumer (see
 * kq_delivery_group_online and kq_delivery_bindings_changed). Attempts that sent copies keep
 * their retry delay. */
static bool waits_for_later(struct kq_broker *b, const struct kq_msg *m, int64_t now)
{
    if (!m->commit || !attempt_over(m) || m->timer.pos == KQ_HEAP_NONE || m->timer.key <= now)
        return false;
    return !m->extra || kq_msg_due_ms(b, m) <= now; /* scheduled: never before it is due */
}

static void wake_if_waiting(struct kq_broker *b, struct kq_msg *m, void *now)
{
    if (waits_for_later(b, m, *(int64_t *)now))
        kq_delivery_schedule(b, m, *(int64_t *)now);
}

/* Those whose last attempt failed for the group, or found no route at all: found in the
 * failed index, so the cost is the group's backlog (and the unrouted), not every message. */
size_t kq_delivery_group_online(struct kq_broker *b, struct kq_group *g)
{
    int64_t now = kq_now_ms();
    size_t n = kq_failed_each(b, g->id, wake_if_waiting, &now);
    n += kq_failed_each(b, NO_SUBSCRIBER, wake_if_waiting, &now);
    KQ_DEBUG("delivery", "group online group=%s looked at %zu waiting message(s)", g->id, n);
    return n;
}

/* The bindings of `topic` changed (NULL = any topic): those whose last attempt sent nothing.
 * The new bindings may route them to a group that is online; if it is not, the attempt
 * records it among their failed groups, so that its coming online wakes them. "No route"
 * alone is not enough: ZooKeeper reports each group's bindings on their own, and once one
 * offline group of the topic is bound, the backlog has a route - to that group only. */
void kq_delivery_bindings_changed(struct kq_broker *b, const char *topic)
{
    int64_t now = kq_now_ms();
    const char *ta = topic ? kq_atom_find(b, topic) : NULL; /* lookup only: no reference */
    struct kq_msg *m;
    for (size_t pos = 0; (m = kq_idmap_next(&b->msgs, &pos));)
        if (m->sent == 0 && (!topic || m->topic == ta) && waits_for_later(b, m, now))
            kq_delivery_schedule(b, m, now);
}

void kq_delivery_group_offline(struct kq_broker *b, struct kq_group *g)
{
    while (g->wait_head) {
        struct kq_msg *m = dequeue_wait(b, g);
        add_failed(b, m, g->id);
        kq_hist(b, m, KQ_EV_NO_CONSUMER, g->id, NULL);
        if (attempt_over(m))
            finish_attempt(b, m);
    }
}

void kq_delivery_finish(struct kq_broker *b, struct kq_msg *m) { finish_attempt(b, m); }

/* An operator dropped group's backlog (POST /groups/purge): its copy of m counts as done.
 * An open attempt ends by itself (a queued copy is not sent, a late nack or timeout is not
 * a failure); between attempts, a message no routed group needs any more is removed now,
 * else the state is persisted and its schedule kept for the others. */
int kq_delivery_purge_copy(struct kq_broker *b, struct kq_msg *m, const char *group)
{
    if (m->n_done && name_in(b, &m->done, m->n_done, group))
        return 0; /* acked, or purged before */
    int rc = kq_names_add(b, &m->done, &m->n_done, group);
    if (rc)
        return rc;
    kq_hist(b, m, KQ_EV_PURGED, group, NULL);
    const char *atom = kq_atom_find(b, group);
    kq_failed_remove(b, m, atom);
    if (!attempt_over(m) || m->loading || m->first_ack)
        return 1;
    struct kq_route *routes = b->routes; /* KQ_POLICY_MAX_ROUTES: every bound group */
    size_t n = kq_msg_route(b, m, routes, KQ_POLICY_MAX_ROUTES);
    for (size_t i = 0; i < n; i++)
        if (!name_in(b, &m->done, m->n_done, routes[i].group)) {
            kq_delivery_persist(b, m, m->timer.pos != KQ_HEAP_NONE ? m->timer.key : kq_now_ms());
            return 1;
        }
    kq_hist(b, m, KQ_EV_REMOVED, NULL, NULL);
    kq_delivery_drop(b, m, true);
    return 2;
}

void kq_delivery_free_all(struct kq_broker *b)
{
    struct kq_msg *m;
    for (size_t pos = 0; (m = kq_idmap_next(&b->msgs, &pos));)
        kq_msg_free(m);
    kq_idmap_free(&b->msgs);
    kq_failed_index_free(b);
    kq_msg_extras_free(b);
    kq_heap_free(&b->schedule);
    free(b->deferred.ids);
    memset(&b->deferred, 0, sizeof b->deferred);
    while (b->spare_copies) {
        struct kq_inflight *f = b->spare_copies;
        b->spare_copies = f->tnext;
        free(f);
    }
    b->n_spare_copies = 0;
    free(b->routes);
    b->routes = NULL;
}
