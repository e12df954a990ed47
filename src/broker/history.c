/* Message histories: what happened to each message (published, stored, every delivery
 * attempt and its answer, retries, dead letter, removal), for GET /msg/<id> and, at debug
 * level, one log line per event.
 *
 * Memory is the constraint (a backlog can hold millions of messages, and struct kq_msg is
 * kept at 152 bytes): a pending message's history is a small record of 24-byte events in a
 * side table, reached through a 4-byte slot number that lives in kq_msg's padding; names
 * (groups, connections, reasons) are atoms of the history's own table, shared by every
 * event. A record holds at most KQ_HIST_MAX events: the first KQ_HIST_HEAD (how it started)
 * and the latest; the ones in between are counted as dropped. An attempt that found nobody
 * online, repeated every recheck, updates its events (a count and the latest time) instead
 * of adding new ones. When the message finishes, its events are copied into a ring of
 * the last cfg->message_history finished messages, each slot keeping its buffer for the
 * next message there, and the record is kept for the next message's history: a record that
 * moved into the ring was freed ten thousand messages later, cold, and the allocator handed
 * that cold memory to the next new record - in a fan-out the histories cost ~25 % of the
 * broker's CPU that way, for ~5 % of its instructions. The ring has no index: a message
 * finishes thousands of times a second but is looked up by an operator, so finding one is a
 * scan from the newest (the newest story of a republished id wins), and finishing costs no
 * hashing. docs/ADMIN.md gives the costs. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "broker/internal.h"
#include "core/log.h"

struct event {
    uint32_t at;       /* ms after the history's start (saturates at ~49 days) */
    uint8_t kind;      /* enum kq_hist_kind */
    bool group_held;   /* group is a group's hist_name, held for the broker's life: this
                          * event takes no reference on it (one less count per event) */
    uint16_t n;        /* SENT: the attempt; coalesced kinds: how many times */
    const char *group; /* atom of the history table, or NULL */
    union {
        const char *peer; /* atom: the connection, or the reason of DEAD / NOT_SENT */
        int64_t when_ms;  /* RETRY: the next attempt, Unix ms */
    } u;
};
_Static_assert(sizeof(struct event) == 24, "history events are 24 bytes");

struct kq_history {
    int64_t start_ms; /* Unix ms of the first event */
    uint8_t n, cap;
    uint16_t dropped; /* events dropped between the first KQ_HIST_HEAD and the latest */
    bool delivered;   /* the last event is "delivered", kept here, not in ev: the message
                       * finishes at once (kq_hist_finish, the same loop time), so the event
                       * is shown at its finishedTime; one event less per message */
    struct event ev[];
};

/* A finished message in the ring. */
struct finished {
    char id[KQ_ID_LEN + 1];
    uint8_t state; /* the last event's kind */
    int64_t finished_ms;
    struct kq_history *h; /* the events (a copy); kept for the next message in this slot */
    char *names;          /* topic NUL type NUL publishGroup NUL (not atoms: finished messages
                         * must not keep the broker's names interned); the buffer is kept
                         * for the next message in this ring slot */
    uint32_t names_cap;
};

/* Finished records kept for new ones: messages are published and finished in bursts (a
 * pipelining producer's read, then the consumers' acks), so a few hundred. */
#define HIST_SPARES 256

struct kq_history_tab {
    struct kq_atom *names;
    struct kq_history **slab; /* pending messages' histories; free slots chain (tagged) */
    uint32_t slab_cap, free_head, live;
    struct finished *ring;
    size_t ring_cap, ring_next, ring_len;
    struct kq_history *spare[HIST_SPARES]; /* finished records for the next new ones (hot) */
    unsigned n_spare;
    uint64_t bytes;      /* all of it (kiteq_message_history_bytes) */
    uint64_t ring_bytes; /* of which the ring of finished messages: its entries and buffers */
    uint64_t skipped;    /* messages without a history: HISTORY_MAX_BYTES, or out of memory */
    bool fail_allocs;    /* tests only (kq_history_fail_allocs): every allocation fails */
    struct kq_group *last_group; /* group_name's memo (groups live as long as the broker) */
    uint8_t first_cap;           /* events a new record gets room for (see history_new) */
    uint64_t clock_at;           /* hist_now_ms: the loop time of the last wall-clock reading */
    int64_t clock_off;           /* and wall ms - loop ms then */
};

#define FREE_TAG(next) ((struct kq_history *)(((uintptr_t)(next) << 1) | 1))
#define IS_FREE(p) (((uintptr_t)(p)) & 1)
#define FREE_NEXT(p) ((uint32_t)((uintptr_t)(p) >> 1))
#define NO_SLOT UINT32_MAX
/* Histories are a help, not a duty: past this much memory for pending messages (their
 * records and slots) new messages get none and records stop growing (they keep how they
 * started and the latest), so a large backlog stays within the pending-count memory budget.
 * Counted in `skipped`. The ring of finished messages is not counted against it: its size is
 * the operator's messageHistory (~420 bytes an entry), and counting it let a ring of more
 * than ~75 000 entries take the whole budget, so that no message got a history at all. */
#define HISTORY_MAX_BYTES ((uint64_t)32 << 20)
/* Events a new record has room for at least: a message delivered at the first attempt to one
 * group (published, stored, sent, acked, delivered, removed) never grows its record. A
 * record starts as large as the last finished one needed (a fan-out to 4 groups: 11), so a
 * steady stream never grows one (a realloc per message showed in profiles). */
#define HIST_FIRST_CAP 6

static uint64_t pending_bytes(const struct kq_history_tab *t) { return t->bytes - t->ring_bytes; }

static const char *const kind_names[] = {
    [KQ_EV_PUBLISHED] = "published",
    [KQ_EV_RECOVERED] = "recovered",
    [KQ_EV_REQUEUED] = "requeued",
    [KQ_EV_STORED] = "stored",
    [KQ_EV_NOT_STORED] = "not stored",
    [KQ_EV_COMMITTED] = "committed",
    [KQ_EV_ROLLED_BACK] = "rolled back",
    [KQ_EV_TX_CHECK] = "transaction check",
    [KQ_EV_SENT] = "sent",
    [KQ_EV_QUEUED] = "queued for room",
    [KQ_EV_ACKED] = "acked",
    [KQ_EV_NACKED] = "nacked",
    [KQ_EV_TIMEOUT] = "timeout",
    [KQ_EV_LOST] = "connection lost",
    [KQ_EV_NO_CONSUMER] = "no consumer online",
    [KQ_EV_WARMING] = "consumers warming up",
    [KQ_EV_SKIPPED] = "skipped (not persistent)",
    [KQ_EV_NOT_SENT] = "not sent",
    [KQ_EV_NO_SUBSCRIBER] = "no group bound",
    [KQ_EV_RETRY] = "retry scheduled",
    [KQ_EV_DEAD] = "dead-lettered",
    [KQ_EV_DELIVERED] = "delivered",
    [KQ_EV_PURGED] = "purged",
    [KQ_EV_REMOVED] = "removed",
};

/* The state a finished message is shown in, by its last event. */
static const char *final_state(uint8_t kind)
{
    switch (kind) {
    case KQ_EV_DELIVERED: return "delivered";
    case KQ_EV_DEAD: return "dead";
    case KQ_EV_ROLLED_BACK: return "rolled back";
    case KQ_EV_NOT_STORED: return "not stored";
    case KQ_EV_REMOVED: return "removed";
    default: return "dropped";
    }
}

/* Kinds that repeat while nothing changes (rechecks of a message nobody can take). */
static bool coalesces(uint8_t kind)
{
    return kind == KQ_EV_NO_CONSUMER || kind == KQ_EV_WARMING || kind == KQ_EV_NO_SUBSCRIBER ||
           kind == KQ_EV_RETRY || kind == KQ_EV_QUEUED || kind == KQ_EV_TX_CHECK;
}

static size_t record_size(unsigned cap)
{
    return sizeof(struct kq_history) + cap * sizeof(struct event);
}

/* Every allocation of the histories after kq_history_init (malloc is realloc of NULL). */
static void *hist_realloc(struct kq_history_tab *t, void *p, size_t n)
{
    return t->fail_allocs ? NULL : realloc(p, n);
}

void kq_history_fail_allocs(struct kq_broker *b, bool on) { b->history->fail_allocs = on; }

/* m gets no history (the memory cap, or out of memory): counted once a message. */
static void skip(struct kq_history_tab *t, struct kq_msg *m)
{
    if (!m->hist_skipped)
        t->skipped++;
    m->hist_skipped = true;
}

/* Memory ran out: what message m lost (`what`, a literal) is logged, rate-limited per call
 * site; when it lost its whole history, it is counted (skip) too. */
#define OUT_OF_MEMORY(t, m, what, whole)                                                           \
    do {                                                                                           \
        if (whole)                                                                                 \
            skip(t, m);                                                                            \
        KQ_LOG_RATELIMITED(KQ_LOG_WARN, "history", "out of memory: id=%s " what, (m)->id);         \
    } while (0)

int kq_history_init(struct kq_broker *b)
{
    struct kq_history_tab *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    t->free_head = NO_SLOT;
    t->first_cap = HIST_FIRST_CAP;
    size_t cap = b->cfg->message_history > 0 ? (size_t)b->cfg->message_history : 0;
    if (cap && !(t->ring = calloc(cap, sizeof *t->ring))) {
        free(t);
        return -ENOMEM;
    }
    t->ring_cap = cap;
    t->bytes = t->ring_bytes = cap * sizeof *t->ring;
    b->history = t;
    return 0;
}

static void event_release(const struct event *e)
{
    if (!e->group_held)
        kq_atom_release(e->group);
    if (e->kind != KQ_EV_RETRY)
        kq_atom_release(e->u.peer);
}

static void events_release(struct kq_history *h, unsigned from, unsigned to)
{
    for (unsigned i = from; i < to; i++)
        event_release(&h->ev[i]);
}

static void history_free(struct kq_history_tab *t, struct kq_history *h)
{
    if (!h)
        return;
    events_release(h, 0, h->n);
    t->bytes -= record_size(h->cap);
    free(h);
}

/* Empty a ring slot; its buffers stay for the next message (see free_ring). */
static void finished_clear(struct kq_history_tab *t, struct finished *f)
{
    if (!f->id[0])
        return;
    events_release(f->h, 0, f->h->n);
    f->h->n = 0;
    f->id[0] = '\0';
    t->ring_len--;
}

/* At the end only: the records go without giving their names back one by one (the table of
 * names goes next, whole; ten thousand finished records took longer than a second of
 * traffic). */
static void free_ring(struct kq_history_tab *t)
{
    for (size_t i = 0; i < t->ring_cap; i++) {
        free(t->ring[i].h);
        free(t->ring[i].names);
    }
    free(t->ring);
}

/* The newest finished record of id, or NULL. */
static struct finished *finished_find(struct kq_history_tab *t, const char *id)
{
    for (size_t k = 1; k <= t->ring_cap; k++) { /* holes: histories resumed (requeued) */
        struct finished *f = &t->ring[(t->ring_next + t->ring_cap - k) % t->ring_cap];
        if (f->id[0] && strcmp(f->id, id) == 0)
            return f;
    }
    return NULL;
}

void kq_history_free(struct kq_broker *b)
{
    struct kq_history_tab *t = b->history;
    if (!t)
        return;
    for (uint32_t i = 0; i < t->slab_cap; i++)
        if (!IS_FREE(t->slab[i]))
            free(t->slab[i]); /* as free_ring: the names go with their table */
    free(t->slab);
    while (t->n_spare)
        free(t->spare[--t->n_spare]);
    free_ring(t);
    kq_atoms_free_table(&t->names);
    free(t);
    b->history = NULL;
}

/* --- the side table of pending messages --------------------------------------------------- */

static struct kq_history **slot_of(struct kq_history_tab *t, const struct kq_msg *m)
{
    return m->hist ? &t->slab[m->hist - 1] : NULL;
}

/* A free slot for h (m->hist set), or -ENOMEM. */
static int slot_take(struct kq_history_tab *t, struct kq_msg *m, struct kq_history *h)
{
    if (t->free_head == NO_SLOT) {
        uint32_t cap = t->slab_cap ? t->slab_cap * 2 : 1024;
        if (cap <= t->slab_cap || cap >= NO_SLOT)
            return -ENOMEM;
        struct kq_history **v = hist_realloc(t, t->slab, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        for (uint32_t i = cap; i-- > t->slab_cap;) { /* chained in ascending order */
            v[i] = FREE_TAG(t->free_head);
            t->free_head = i;
        }
        t->bytes += (uint64_t)(cap - t->slab_cap) * sizeof *v;
        t->slab = v;
        t->slab_cap = cap;
    }
    uint32_t i = t->free_head;
    t->free_head = FREE_NEXT(t->slab[i]);
    t->slab[i] = h;
    m->hist = i + 1;
    t->live++;
    return 0;
}

/* Take m's history out of the side table (NULL when it has none). */
static struct kq_history *slot_give_back(struct kq_history_tab *t, struct kq_msg *m)
{
    struct kq_history **p = slot_of(t, m);
    if (!p)
        return NULL;
    struct kq_history *h = *p;
    *p = FREE_TAG(t->free_head);
    t->free_head = m->hist - 1;
    m->hist = 0;
    t->live--;
    return h;
}

/* --- recording ---------------------------------------------------------------------------- */

/* Wall-clock ms of an event: the loop's cached time plus an offset read once a second. A
 * message has ~7 events and the broker handles ~10^5 messages a second, so a clock call
 * per event showed up in profiles; an event's time is within a second of ms resolution
 * anyway once the wall clock steps. */
static int64_t hist_clock_read(struct kq_broker *b, struct kq_history_tab *t)
{
    if (!b->loop)
        return kq_now_ms();
    uint64_t mono = uv_now(b->loop);
    t->clock_off = kq_now_ms() - (int64_t)mono;
    t->clock_at = mono ? mono : 1;
    return (int64_t)mono + t->clock_off;
}

static inline int64_t hist_now_ms(struct kq_broker *b, struct kq_history_tab *t)
{
    uint64_t mono = b->loop ? uv_now(b->loop) : 0;
    if (t->clock_at && mono - t->clock_at < 1000)
        return (int64_t)mono + t->clock_off;
    return hist_clock_read(b, t); /* a second passed (or no loop): read the wall clock */
}

static const char *name_of(struct kq_history_tab *t, const char *s)
{
    return s ? kq_atom_in(&t->names, s) : NULL;
}

/* e's group: the group's own hist_name when there is a group (no reference taken). */
static void set_group(struct kq_history_tab *t, struct kq_broker *b, struct event *e,
                      const char *group, const struct kq_session *s)
{
    if (!group)
        return;
    /* the connection's own group, or the last one looked up (most events): no lookup */
    struct kq_group *g = s && s->group && s->group->id == group        ? s->group
                         : t->last_group && t->last_group->id == group ? t->last_group
                                                                       : NULL;
    if (!g && (g = kq_group_get(b, group, false)))
        t->last_group = g;
    if (g && !g->hist_name)
        g->hist_name = name_of(t, g->id); /* held for the group's (the broker's) life */
    e->group_held = g && g->hist_name;
    e->group = e->group_held ? g->hist_name : name_of(t, group);
}

static const char *peer_name(struct kq_history_tab *t, struct kq_session *s)
{
    if (!s)
        return NULL;
    if (!s->hist_peer)
        s->hist_peer = name_of(t, kq_conn_peer(s->conn)); /* released at close */
    return kq_atom_ref(s->hist_peer);
}

static void log_event(const struct kq_msg *m, const struct event *e)
{
    const char *what = kind_names[e->kind];
    if (e->kind == KQ_EV_RETRY)
        KQ_DEBUG("history", "id=%s event=\"%s\" in=%lldms", m->id, what,
                 (long long)(e->u.when_ms - kq_now_ms()));
    else if (e->kind == KQ_EV_DEAD || e->kind == KQ_EV_NOT_SENT || e->kind == KQ_EV_NOT_STORED)
        KQ_DEBUG("history", "id=%s event=\"%s\"%s%s reason=\"%s\"", m->id, what,
                 e->group ? " group=" : "", e->group ? e->group : "", e->u.peer ? e->u.peer : "");
    else if (e->kind == KQ_EV_SENT)
        KQ_DEBUG("history", "id=%s event=\"%s\" group=%s peer=%s attempt=%u", m->id, what,
                 e->group ? e->group : "", e->u.peer ? e->u.peer : "", e->n);
    else
        KQ_DEBUG("history", "id=%s event=\"%s\"%s%s%s%s", m->id, what, e->group ? " group=" : "",
                 e->group ? e->group : "", e->u.peer ? " peer=" : "", e->u.peer ? e->u.peer : "");
}

/* The latest events of h, back to the first that does not repeat: the same (kind, group)
 * among them is the event to update instead of adding one. */
static struct event *repeat_of(struct kq_history *h, const struct event *e)
{
    for (unsigned i = h->n; i-- > 0 && h->n - i <= 4 && coalesces(h->ev[i].kind);)
        if (h->ev[i].kind == e->kind && h->ev[i].group == e->group)
            return &h->ev[i];
    return NULL;
}

/* Add e (its names taken over) to h; h may move (*hp). Returns 0, or -ENOMEM when the
 * record could not grow: e is added all the same, in place of an older event (counted as
 * dropped, like a record at the cap; every record has room for more than KQ_HIST_HEAD). */
static int append(struct kq_history_tab *t, struct kq_history **hp, const struct event *e)
{
    struct kq_history *h = *hp;
    int rc = 0;
    if (h->n == h->cap) {
        unsigned cap = h->cap * 2 > KQ_HIST_MAX ? KQ_HIST_MAX : h->cap * 2;
        struct kq_history *nh = NULL;
        if (h->cap < KQ_HIST_MAX && pending_bytes(t) < HISTORY_MAX_BYTES &&
            !(nh = hist_realloc(t, h, record_size(cap))))
            rc = -ENOMEM;
        if (nh) {
            t->bytes += record_size(cap) - record_size(nh->cap);
            nh->cap = (uint8_t)cap;
            *hp = h = nh;
        } else { /* keep how it started and the latest: drop the oldest of the rest */
            events_release(h, KQ_HIST_HEAD, KQ_HIST_HEAD + 1);
            memmove(&h->ev[KQ_HIST_HEAD], &h->ev[KQ_HIST_HEAD + 1],
                    (h->n - KQ_HIST_HEAD - 1) * sizeof h->ev[0]);
            h->n--;
            if (h->dropped < UINT16_MAX)
                h->dropped++;
        }
    }
    h->ev[h->n++] = *e;
    return rc;
}

static uint32_t event_offset(const struct kq_history *h, int64_t now)
{
    int64_t off = now - h->start_ms;
    return off < 0 ? 0 : off > UINT32_MAX ? UINT32_MAX : (uint32_t)off;
}

static void delivered_event(struct kq_history **hp, int64_t now)
{
    struct kq_history *h = *hp;
    struct event e = {.kind = KQ_EV_DELIVERED, .at = event_offset(h, now)};
    h->delivered = false;
    h->ev[h->n++] = e; /* it had room when recorded, and nothing came after */
}

static struct kq_history *history_new(struct kq_history_tab *t, int64_t now)
{
    struct kq_history *h = t->n_spare ? t->spare[--t->n_spare] : NULL;
    uint8_t cap = t->first_cap;
    if (h && h->cap < cap) { /* too small for what messages need now */
        t->bytes -= record_size(h->cap);
        free(h);
        h = NULL;
    }
    if (!h) {
        if (!(h = hist_realloc(t, NULL, record_size(cap))))
            return NULL;
        t->bytes += record_size(cap);
    } else {
        cap = h->cap;
    }
    memset(h, 0, sizeof *h);
    h->start_ms = now;
    h->cap = cap;
    return h;
}

/* A record whose events went elsewhere (names and all): kept as a spare, or freed. */
static void history_retire(struct kq_history_tab *t, struct kq_history *h)
{
    h->n = 0;
    if (t->n_spare < HIST_SPARES) {
        t->spare[t->n_spare++] = h;
        return;
    }
    t->bytes -= record_size(h->cap);
    free(h);
}

static void record(struct kq_broker *b, struct kq_msg *m, uint8_t kind, const char *group,
                   struct kq_session *s, const char *text, int64_t when_ms)
{
    struct kq_history_tab *t = b->history;
    bool logging = kq_log_enabled(KQ_LOG_DEBUG);
    if (!t || (!t->ring_cap && !logging))
        return; /* messageHistory = 0: no histories */
    struct event e = {.kind = kind};
    set_group(t, b, &e, group, s);
    if (kind == KQ_EV_RETRY)
        e.u.when_ms = when_ms;
    else
        e.u.peer = text ? name_of(t, text) : peer_name(t, s);
    if (kind == KQ_EV_SENT)
        e.n = m->attempts > UINT16_MAX ? UINT16_MAX : (uint16_t)m->attempts;
    if (logging)
        log_event(m, &e);
    struct kq_history **hp = t->ring_cap ? slot_of(t, m) : NULL;
    struct kq_history *h = hp ? *hp : NULL;
    if (h && kind == KQ_EV_DELIVERED && h->n < h->cap) {
        h->delivered = true; /* room for it: shown as it would have been */
        return;
    }
    int64_t now = hist_now_ms(b, t);
    if (h && h->delivered) /* not finished after all: the event goes in its place */
        delivered_event(hp, now);
    if (t->ring_cap && !h && pending_bytes(t) >= HISTORY_MAX_BYTES)
        skip(t, m);
    else if (t->ring_cap && !h) {
        if (!(h = history_new(t, now)) || slot_take(t, m, h) != 0) {
            if (h)
                history_free(t, h);
            h = NULL;
            OUT_OF_MEMORY(t, m, "has no history", true);
        }
        hp = h ? slot_of(t, m) : NULL;
    }
    if (!h) { /* no history kept (messageHistory = 0, or out of memory) */
        event_release(&e);
        return;
    }
    e.at = event_offset(h, now);
    struct event *same = coalesces(kind) ? repeat_of(h, &e) : NULL;
    if (same) { /* counted, and moved last: the events stay in the order of their latest */
        struct event upd = *same;
        upd.at = e.at;
        if (upd.n < UINT16_MAX)
            upd.n++;
        if (kind == KQ_EV_RETRY)
            upd.u.when_ms = e.u.when_ms;
        memmove(same, same + 1, (size_t)(&h->ev[h->n - 1] - same) * sizeof *same);
        h->ev[h->n - 1] = upd;
        event_release(&e);
        return;
    }
    if (coalesces(kind))
        e.n = 1;
    if (append(t, hp, &e) != 0)
        OUT_OF_MEMORY(t, m, "history keeps fewer events", false);
}

void kq_hist(struct kq_broker *b, struct kq_msg *m, enum kq_hist_kind kind, const char *group,
             struct kq_session *s)
{
    record(b, m, (uint8_t)kind, group, s, NULL, 0);
}

/* A copy's events (sent, and its answer): two per group per attempt, most of a fan-out's
 * events. The usual case - a record with room, the names already held, no debug log - is
 * written here directly, as record() would write it; anything else goes through record(). */
void kq_hist_copy(struct kq_broker *b, struct kq_msg *m, enum kq_hist_kind kind, struct kq_group *g,
                  struct kq_session *s)
{
    struct kq_history_tab *t = b->history;
    struct kq_history *h = t && m->hist ? t->slab[m->hist - 1] : NULL;
    if (!h || h->n == h->cap || h->delivered || !g->hist_name || !s->hist_peer ||
        kq_log_enabled(KQ_LOG_DEBUG)) {
        record(b, m, (uint8_t)kind, g->id, s, NULL, 0);
        return;
    }
    struct event *e = &h->ev[h->n++];
    *e = (struct event){.kind = (uint8_t)kind,
                        .at = event_offset(h, hist_now_ms(b, t)),
                        .group_held = true,
                        .group = g->hist_name,
                        .u.peer = kq_atom_ref(s->hist_peer)};
    if (kind == KQ_EV_SENT)
        e->n = m->attempts > UINT16_MAX ? UINT16_MAX : (uint16_t)m->attempts;
}

void kq_hist_retry(struct kq_broker *b, struct kq_msg *m, int64_t when_ms)
{
    record(b, m, KQ_EV_RETRY, NULL, NULL, NULL, when_ms);
}

void kq_hist_text(struct kq_broker *b, struct kq_msg *m, enum kq_hist_kind kind, const char *group,
                  const char *text)
{
    record(b, m, (uint8_t)kind, group, NULL, text ? text : "", 0);
}

void kq_hist_session_closed(struct kq_session *s)
{
    kq_atom_release(s->hist_peer);
    s->hist_peer = NULL;
}

/* Why group last failed m, from its history: "nack", "timeout", "connection lost", "no
 * consumer online", "consumers warming up" or "not sent: <reason>" (static text or the
 * history's atom, valid while m's history lives); NULL when its history has none (none
 * kept, or the group never failed). Dead letters record it per group. */
const char *kq_hist_last_failure(struct kq_broker *b, const struct kq_msg *m, const char *group)
{
    struct kq_history_tab *t = b->history;
    struct kq_history **p = t ? slot_of(t, m) : NULL;
    const struct kq_history *h = p ? *p : NULL;
    for (unsigned i = h ? h->n : 0; i-- > 0;) {
        const struct event *e = &h->ev[i];
        if (!e->group || strcmp(e->group, group) != 0)
            continue;
        switch (e->kind) {
        case KQ_EV_NACKED: return "nack";
        case KQ_EV_TIMEOUT: return "timeout";
        case KQ_EV_LOST: return "connection lost";
        case KQ_EV_NO_CONSUMER: return "no consumer online";
        case KQ_EV_WARMING: return "consumers warming up";
        case KQ_EV_NOT_SENT: return e->u.peer ? e->u.peer : "not sent";
        case KQ_EV_ACKED: return NULL; /* its last word was an ack */
        default: break;
        }
    }
    return NULL;
}

/* --- the ring of finished messages -------------------------------------------------------- */

void kq_hist_finish(struct kq_broker *b, struct kq_msg *m)
{
    struct kq_history_tab *t = b->history;
    struct kq_history *h = t ? slot_give_back(t, m) : NULL;
    if (!h)
        return;
    unsigned used = h->n + (h->delivered ? 1u : 0u);
    t->first_cap = (uint8_t)(used < HIST_FIRST_CAP ? HIST_FIRST_CAP : used);
    if (!t->ring_cap || !h->n) {
        events_release(h, 0, h->n);
        history_retire(t, h);
        return;
    }
    struct finished *f = &t->ring[t->ring_next];
    finished_clear(t, f); /* the oldest goes */
    t->ring_next = (t->ring_next + 1) % t->ring_cap;
    size_t tl = strlen(m->topic), yl = strlen(m->type), gl = strlen(m->pub_group);
    size_t need = tl + yl + gl + 3;
    if (need > f->names_cap) {
        char *nb = hist_realloc(t, f->names, need);
        if (nb) {
            t->bytes += need - f->names_cap;
            t->ring_bytes += need - f->names_cap;
            f->names = nb;
            f->names_cap = (uint32_t)need;
        }
    }
    if (need <= f->names_cap) {
        memcpy(f->names, m->topic, tl + 1);
        memcpy(f->names + tl + 1, m->type, yl + 1);
        memcpy(f->names + tl + yl + 2, m->pub_group, gl + 1);
    } else {
        if (f->names_cap)
            f->names[0] = '\0';
        OUT_OF_MEMORY(t, m, "finished history keeps no topic, type or group", false);
    }
    if (!f->h || f->h->cap < used) { /* the slot's buffer, grown to what this one needs
                                       * (room for its delivered event: kq_hist_resume) */
        size_t had = f->h ? record_size(f->h->cap) : 0;
        struct kq_history *nb = hist_realloc(t, f->h, record_size(h->cap));
        if (!nb) {
            history_free(t, h);
            OUT_OF_MEMORY(t, m, "finished history not kept", true);
            return;
        }
        t->bytes += record_size(h->cap) - had;
        t->ring_bytes += record_size(h->cap) - had;
        nb->cap = h->cap;
        f->h = nb;
    }
    uint8_t cap = f->h->cap;
    memcpy(f->h, h, record_size(h->n)); /* the events' names move with them */
    f->h->cap = cap;
    memcpy(f->id, m->id, sizeof f->id);
    t->ring_len++;
    f->state = h->delivered ? KQ_EV_DELIVERED : h->ev[h->n - 1].kind;
    f->finished_ms = hist_now_ms(b, t);
    history_retire(t, h);
}

void kq_hist_resume(struct kq_broker *b, struct kq_msg *m)
{
    struct kq_history_tab *t = b->history;
    struct finished *f = t && t->ring_cap ? finished_find(t, m->id) : NULL;
    if (!f || m->hist)
        return;
    /* the slot keeps its buffer: the story moves to a record of its own */
    struct kq_history *h = hist_realloc(t, NULL, record_size(f->h->cap));
    if (!h) {
        finished_clear(t, f);
        OUT_OF_MEMORY(t, m, "requeued without its history", true);
        return;
    }
    t->bytes += record_size(f->h->cap);
    memcpy(h, f->h, record_size(f->h->n));
    f->h->n = 0; /* its names went with the copy */
    finished_clear(t, f);
    if (h->delivered) /* its story goes on: the event goes in its place, at its time */
        delivered_event(&h, f->finished_ms);
    if (slot_take(t, m, h) != 0) {
        history_free(t, h);
        OUT_OF_MEMORY(t, m, "requeued without its history", true);
    }
}

/* --- JSON --------------------------------------------------------------------------------- */

static cJSON *events_json(const struct kq_history *h, int64_t delivered_ms)
{
    cJSON *a = cJSON_CreateArray();
    for (unsigned i = 0; i < h->n; i++) {
        const struct event *e = &h->ev[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "time", (double)(h->start_ms + e->at));
        cJSON_AddStringToObject(o, "event", kind_names[e->kind]);
        if (e->group)
            cJSON_AddStringToObject(o, "group", e->group);
        if (e->kind == KQ_EV_RETRY)
            cJSON_AddNumberToObject(o, "at", (double)e->u.when_ms);
        else if (e->u.peer)
            cJSON_AddStringToObject(o,
                                    e->kind == KQ_EV_DEAD || e->kind == KQ_EV_NOT_SENT ||
                                            e->kind == KQ_EV_NOT_STORED
                                        ? "reason"
                                        : "connection",
                                    e->u.peer);
        if (e->kind == KQ_EV_SENT)
            cJSON_AddNumberToObject(o, "attempt", e->n);
        else if (coalesces(e->kind) && e->n > 1)
            cJSON_AddNumberToObject(o, "times", e->n); /* "time" is the latest */
        cJSON_AddItemToArray(a, o);
        if (i + 1 == KQ_HIST_HEAD && h->dropped) {
            cJSON *d = cJSON_CreateObject();
            cJSON_AddStringToObject(d, "event", "events not kept");
            cJSON_AddNumberToObject(d, "count", h->dropped);
            cJSON_AddItemToArray(a, d);
        }
    }
    if (h->delivered) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "time", (double)delivered_ms);
        cJSON_AddStringToObject(o, "event", kind_names[KQ_EV_DELIVERED]);
        cJSON_AddItemToArray(a, o);
    }
    return a;
}

cJSON *kq_hist_json(struct kq_broker *b, const struct kq_msg *m)
{
    struct kq_history_tab *t = b->history;
    struct kq_history **p = t ? slot_of(t, m) : NULL;
    return p ? events_json(*p, kq_now_ms()) : NULL;
}

cJSON *kq_hist_finished_json(struct kq_broker *b, const char *id, enum kq_hist_kind *final_kind)
{
    struct kq_history_tab *t = b->history;
    struct finished *f = t && t->ring_cap ? finished_find(t, id) : NULL;
    if (!f)
        return NULL;
    if (final_kind)
        *final_kind = f->state;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "messageId", f->id);
    cJSON_AddStringToObject(o, "state", final_state(f->state));
    if (f->names && f->names[0]) {
        const char *type = f->names + strlen(f->names) + 1;
        cJSON_AddStringToObject(o, "topic", f->names);
        cJSON_AddStringToObject(o, "messageType", type);
        cJSON_AddStringToObject(o, "publishGroup", type + strlen(type) + 1);
    }
    cJSON_AddNumberToObject(o, "finishedTime", (double)f->finished_ms);
    cJSON_AddItemToObject(o, "history", events_json(f->h, f->finished_ms));
    return o;
}

void kq_history_stats(const struct kq_broker *b, struct kq_history_stats *out)
{
    const struct kq_history_tab *t = b->history;
    memset(out, 0, sizeof *out);
    if (!t)
        return;
    out->pending = t->live;
    out->finished = t->ring_len;
    out->bytes = t->bytes;
    out->names = kq_atoms_count_table(t->names);
    out->skipped = t->skipped;
}
