/* Shared between the broker's source files only. */
#ifndef KQ_BROKER_INTERNAL_H
#define KQ_BROKER_INTERNAL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uthash.h>
#include <uv.h>

#include "broker/broker.h"
#include "core/heap.h"
#include "core/idmap.h"
#include "core/token_bucket.h"
#include "net/net.h"
#include "policy/policy.h"
#include "proto/wire.h"
#include "store/store.h"

#define KQ_GROUP_MAX 128

struct kq_msg;
struct kq_atom;
struct kq_group;

/* A list of group names (atoms) whose length n is kept beside it (kq_msg packs its counts
 * together): most messages have one group done or failed, so a list of one holds its name
 * inline and only a longer one allocates an array. kq_names_view gives an array of either. */
union kq_names {
    const char *one;   /* n == 1 */
    const char **many; /* n > 1: an array of n (room for 4, or n's next power of two) */
};

/* A request the broker sent and waits an answer for: a delivery (answered by DeliverAck on
 * the same connection with the same opaque). Keyed per connection: a client's own opaques
 * can never complete ours (the original's shared table did, §1.2). */
struct kq_inflight {
    uint32_t opaque;
    struct kq_session *session;
    struct kq_msg *msg;
    struct kq_group *group;
    uint64_t sent_ms;                  /* monotonic */
    uint64_t deadline_ms;              /* monotonic */
    struct kq_inflight *tprev, *tnext; /* broker-wide timeout queue, oldest first */
    UT_hash_handle hh;
};

/* Per connection. */
struct kq_session {
    struct kq_broker *broker;
    struct kq_conn *conn;
    bool authed;
    struct kq_group *group;
    int32_t warmup_sec;
    uint64_t auth_ms; /* monotonic */
    uint32_t next_opaque;
    struct kq_inflight *inflight;  /* by opaque */
    size_t group_pos;              /* index in group->members */
    struct kq_pending_save *saves; /* store saves whose ack goes to this connection */
    /* This connection's delivery window (delivery.c): grown while acks come back quickly,
     * cut when they come back later than the latency target or not at all. */
    uint32_t n_inflight;     /* deliveries outstanding on this connection */
    double window;           /* most deliveries outstanding at once, >= 1 */
    double slow_start_until; /* the window doubles per round trip below this */
    uint64_t window_cut_ms;  /* monotonic: last decrease (at most one per round trip) */
    const char *hist_peer;   /* the peer address as message histories name it (history.c) */
    struct kq_intake_share *intake_share; /* once it has published (intake.c) */
};

/* A message waiting for room in a group's window or rate. */
struct kq_wait {
    struct kq_msg *msg;
    struct kq_wait *next;
    uint32_t charged; /* body bytes counted in b->hot_waiting_bytes for this copy */
};

/* Flow of a group on one topic: the limits the flow.group policy gave (asked about once a
 * second and after a reload) and the live figures it is asked with. */
struct kq_group_rate {
    char *topic;
    const char *topic_atom;              /* topic's atom, held (find by address) */
    int watermark;                       /* of the group's binding on the topic (<= 0: unset) */
    struct kq_token_bucket bucket;       /* limits.rate / limits.burst */
    struct kq_flow_limits limits;        /* window 0 = the config's deliverWindow */
    uint32_t inflight;                   /* copies of this topic outstanding to the group */
    uint64_t waiting;                    /* of this topic, waiting for room */
    uint32_t failures;                   /* failed copies since the last ask */
    uint64_t timeouts;                   /* copies not acked within deliverySeconds, ever */
    uint64_t acked;                      /* copies of this topic the group acked, ever */
    uint64_t acked_mark, acked_last_sec; /* for acked per second (backlog.c) */
    uint64_t asked_ms;                   /* monotonic; 0 = never */
    uint64_t generation;                 /* b->reload_generation when asked */
};

/* Counters of one topic (for /stat and /metrics). */
struct kq_topic_stats {
    char *topic;
    uint64_t received, stored, delivered, retried, dead_lettered;
    uint64_t unrouted; /* accepted while no group was bound to their messageType */
    uint64_t pending;  /* messages of this topic in the index */
    uint64_t last_sec_received, last_sec_delivered; /* the previous second (/stat) */
    uint64_t mark_received, mark_delivered;
    UT_hash_handle hh;
};
struct kq_topic_stats *kq_topic_stats(struct kq_broker *b, const char *topic);
/* The same for a message's topic, found by its atom without comparing strings: called
 * several times per message. */
struct kq_topic_stats *kq_msg_topic_stats(struct kq_broker *b, const struct kq_msg *m);

/* Connections that authenticated with one groupId, and the group's delivery flow:
 * at most `window` copies in flight, at most `watermark` per second per topic; the rest wait
 * in FIFO order so a slow group never holds up producers or other groups. */
struct kq_group {
    char id[KQ_GROUP_MAX];
    struct kq_session **members;
    size_t n, cap;
    uint32_t inflight; /* deliveries outstanding to this group */
    struct kq_wait *wait_head, *wait_tail;
    size_t n_waiting;
    struct kq_group_rate *rates;
    size_t n_rates;
    uint64_t sent, acked, failed; /* copies delivered / acked / failed (nack, timeout, lost) */
    uint64_t timeouts_unlogged;   /* timeouts since the last log line about them */
    uint64_t timeouts_logged_ms;  /* monotonic; when that line was written */
    const char *hist_name;        /* the name as message histories hold it (history.c) */
    const char *atom;             /* the name in b->atoms, held for the group's life: acks put
                                 * it in done lists without interning it again per message */
    struct kq_group *pump_next;   /* in the broker's list of groups with waiters */
    bool in_pump_list;
    UT_hash_handle hh;
};

/* One pending message: the broker's in-memory index entry (message.c keeps it small). */
struct kq_msg {
    /* Field order and the one-bit flags keep this at 152 bytes (a 160-byte malloc chunk):
     * with a million pending messages every 16 bytes here is 16 MB. */
    struct kq_heap_item timer; /* next attempt (key = Unix ms) */
    char id[KQ_ID_LEN + 1];
    uint8_t cmd;
    bool commit : 1, fly : 1;
    bool stored : 1;        /* the store has it (false: fly, or deliveryFirst before saving) */
    bool loading : 1;       /* header and body are being read back from the store */
    bool retry_soon : 1;    /* the last attempt found only connections still warming up */
    bool deferred : 1;      /* parked in the broker's ring of cold messages (delivery.c) */
    bool names_lost : 1;    /* a failed group could not be recorded: the attempt failed */
    bool extra : 1;         /* has a due time or its own groups (msg_extra.c) */
    bool hdr_committed : 1; /* the stored header says commit (published so): read back, it
                             * needs no check (kq_msg_mark_header_committed) */
    bool hist_skipped : 1;  /* counted as given no history (history.c: once a message) */
    uint8_t failure : 3;    /* kq_msg_failure(): an index of its 6 texts */
    int32_t deliver_limit;
    int32_t attempts;
    int32_t tx_checks;
    const char *topic, *type, *pub_group; /* atoms (kq_atom) */
    int64_t publish_time, expired_time;
    uint16_t inflight; /* deliveries outstanding in the current attempt */
    uint16_t sent;     /* copies sent in the current attempt */
    uint16_t waiting;  /* groups where this attempt waits for room (flow control) */
    uint16_t n_done, n_failed;
    uint16_t done_at_start;            /* n_done when the current attempt began */
    uint32_t hist;                     /* its event history (history.c): slot + 1, 0 = none */
    union kq_names done;               /* groups that acked (n_done of them) */
    union kq_names failed;             /* groups that failed the current attempt (n_failed) */
    struct kq_msg_block *block;        /* packed header and body; NULL while evicted */
    struct kq_pending_save *first_ack; /* deliveryFirst: producer ack after the attempt */
};
/* Header and body of a message, in one allocation with their lengths. */
struct kq_msg_block {
    uint32_t header_len, body_len;
    uint8_t data[]; /* header, then body */
};
#define KQ_MSG_HDR(m) ((m)->block->data)
#define KQ_MSG_HDR_LEN(m) ((m)->block->header_len)
#define KQ_MSG_BODY(m) ((m)->block->data + (m)->block->header_len)
#define KQ_MSG_BODY_LEN(m) ((m)->block->body_len)
/* Why the last copy failed, for the retry hook: "nack", "timeout", "connection lost",
 * "no consumer online", "over flow" (NULL before any failure). */
const char *kq_msg_failure(const struct kq_msg *m);
void kq_msg_set_failure(struct kq_msg *m, const char *why);

/* The message path reads one way: accept (publish.c, tx.c) -> store -> schedule and deliver
 * (delivery.c) -> finish. Where it must turn back to an earlier stage, delivery.c calls
 * these (set by kq_broker_start), never publish.c or tx.c directly. */
struct kq_msg_path_turns {
    /* An uncommitted message is due (header loaded): ask its producer, schedule the next
     * check (tx.c: kq_tx_check_due). */
    void (*tx_check_due)(struct kq_broker *b, struct kq_msg *m);
    /* deliveryFirst: m's first attempt is over; ack the producer, storing what is left
     * (publish.c: kq_publish_first_attempt_done). */
    void (*first_attempt_done)(struct kq_broker *b, struct kq_msg *m, bool all_done);
};

struct kq_broker {
    uv_loop_t *loop;
    struct kq_config *cfg;
    struct kq_store *store;
    struct kq_net *net;
    uv_timer_t tick; /* timeouts, idle connections */
    uv_timer_t retry_timer;
    struct kq_group *groups;
    struct kq_idmap msgs;        /* pending messages (struct kq_msg) by id */
    struct kq_atom *atoms;       /* interned topic, type and group names */
    struct kq_arena frame_arena; /* the decoded frame being handled; reset after each */
    struct kq_heap schedule;     /* messages waiting for their next attempt */
    struct kq_inflight *tq_head, *tq_tail;
    struct kq_inflight *spare_copies; /* delivery.c: answered copies' records, for reuse */
    size_t n_spare_copies;
    struct kq_token_bucket intake;
    struct kq_group *pump_list; /* groups with waiting messages */
    size_t n_waiting_total;     /* messages waiting in all groups' queues */
    size_t hot_waiting_bytes;   /* header + body bytes of waiting copies queued with their
                                 * block in memory (delivery.c drop_block_while_out) */
    struct kq_id_ring {         /* cold messages parked until the queues have room */
        char (*ids)[KQ_ID_LEN + 1];
        size_t head, len, cap;
    } deferred;
    struct kq_policy *policy;        /* routing / retry / intake hooks (C defaults inside) */
    bool watchdog;                   /* kq_watchdog_start succeeded: stop it when freed */
    struct kq_route *routes;         /* KQ_POLICY_MAX_ROUTES: the routes of one attempt */
    struct kq_binding_set *bindings; /* what routing reads; swapped whole on a change */
    struct kq_broker_stats stats;
    struct kq_topic_stats *topic_stats;      /* per topic counters, by name */
    struct kq_topic_stats *last_topic_stats; /* the last one looked up (a cache) */
    const char *stats_atom;                  /* the topic atom of the last message looked up
                                              * by kq_msg_topic_stats (held), and its stats */
    struct kq_topic_stats *stats_of_atom;
    struct kq_group *offered[8];  /* delivery.c offer's memo by route (groups live as long as b) */
    struct kq_zk_registry *zk;    /* NULL with static bindings */
    struct kq_takeover *takeover; /* mysql store + ZooKeeper only (takeover.c) */
    const char *registry_state;   /* "static" or the ZooKeeper state */
    bool findable;                /* static, or registered in ZooKeeper once */
    void (*ready_cb)(void *ud);   /* kq_broker_when_ready, called once */
    void *ready_ud;
    struct kq_admin *admin;               /* NULL when `admin` is unset */
    struct kq_adm_jobs *admin_jobs;       /* its dead-letter listings (admin_dlq.c) */
    struct kq_backlog *backlog;           /* per (group, topic) backlog scan (backlog.c) */
    struct kq_purges *purges;             /* POST /groups/purge jobs (admin_purge.c) */
    struct kq_history_tab *history;       /* message histories (history.c) */
    struct kq_msg_extras *extras;         /* due times and groups of messages (msg_extra.c) */
    struct kq_failed_group *failed_index; /* pending messages by failed group (failed_index.c) */
    struct kq_msg_path_turns turns;       /* delivery back to publish / tx */
    int argc;                             /* the command line, re-applied on reload */
    char **argv;
    uint64_t reload_generation; /* successful reloads */
    uint64_t reload_failures;
    char reload_error[2048];               /* last failure, "" after a success */
    int64_t reload_error_at_ms;            /* when reload_error was set (Unix ms) */
    struct kq_reload *reload;              /* being built off the loop (reload.c), or NULL */
    bool reload_queued;                    /* another reload starts when it is over */
    struct kq_reload_waiter *reload_queue; /* waiting for that next one */
    int64_t started_sec;
    struct kq_broker_stats last_sec, prev_stats; /* per-second deltas for /stat */
    struct kq_net_stats net_last_sec, net_mark;
    bool stopping;
    void (*stop_done)(void *);
    void *stop_ud;
    bool fail_waits; /* tests only (kq_delivery_fail_waits) */
};

/* session.c */
void kq_session_on_frame(struct kq_broker *b, struct kq_conn *c, const struct kq_frame *f);
void kq_session_open(struct kq_broker *b, struct kq_conn *c);
void kq_session_close(struct kq_broker *b, struct kq_conn *c, const char *reason);
void kq_session_sweep_idle(struct kq_broker *b);

/* groups.c */
struct kq_group *kq_group_get(struct kq_broker *b, const char *id, bool create);
int kq_group_join(struct kq_group *g, struct kq_session *s);
void kq_group_leave(struct kq_group *g, struct kq_session *s);
/* Why kq_group_pick found no connection. */
enum kq_pick_fail {
    KQ_PICK_OFFLINE = 1, /* no connection (or all closing) */
    KQ_PICK_WARMING,     /* connections, all still warming up (this time) */
    KQ_PICK_FULL,        /* warm connections, none with room in its delivery window */
};
/* One random warm member with room for a delivery (kq_delivery_session_has_room), or NULL
 * with the reason in *why. */
struct kq_session *kq_group_pick_delivery(struct kq_group *g, uint64_t now_ms,
                                          enum kq_pick_fail *why);
/* One random warm member, room or not (transaction checks), or NULL. */
struct kq_session *kq_group_pick(struct kq_group *g, uint64_t now_ms);
/* Milliseconds until the first member of g is fully warm (0: one is already). */
uint64_t kq_group_warm_in_ms(const struct kq_group *g, uint64_t now_ms);
void kq_groups_free(struct kq_broker *b);

/* Routing (struct kq_route) and retry (struct kq_retry_verdict) come from policy/policy.h:
 * kq_policy_route(b->policy, b->bindings, ...) and kq_policy_retry(b->policy, ...). */

/* publish.c; what v points at lives in b->frame_arena, reset by the caller after the call */
void kq_publish_handle(struct kq_broker *b, struct kq_session *s, uint32_t opaque, uint8_t cmd,
                       struct kq_message_frame_view *v);
void kq_tx_handle(struct kq_broker *b, struct kq_session *s, const struct kq_tx_ack_view *t);

/* tx.c: two-phase messages */
/* When the next transaction check of uncommitted m is due (Unix ms). */
int64_t kq_tx_next_check_ms(const struct kq_broker *b, const struct kq_msg *m);
void kq_tx_check_due(struct kq_broker *b, struct kq_msg *m); /* b->turns.tx_check_due */

/* A producer's publish waiting for the store; detached if the connection goes away. */
struct kq_pending_save {
    struct kq_broker *broker;
    struct kq_session *session; /* NULL once the connection closed */
    struct kq_msg *msg;
    uint32_t opaque;
    uint64_t start_ms;
    struct kq_pending_save *prev, *next;
};
void kq_publish_session_closed(struct kq_session *s);
/* deliveryFirst: the first attempt is over; ack the producer (storing what is left).
 * b->turns.first_attempt_done. */
void kq_publish_first_attempt_done(struct kq_broker *b, struct kq_msg *m, bool all_done);

/* message.c */
/* Interned names, counted: kq_atom takes a reference (NULL on OOM), kq_atom_release gives it
 * back (the last one frees it); kq_atom_find looks up without taking one (NULL: unknown). */
const char *kq_atom(struct kq_broker *b, const char *s);
const char *kq_atom_find(struct kq_broker *b, const char *s);
void kq_atom_release(const char *atom);
size_t kq_atoms_count(const struct kq_broker *b);
void kq_atoms_free(struct kq_broker *b);
/* The same on another table (message histories keep their names apart, so that
 * kiteq_interned_names counts what pending messages hold); kq_atom_ref takes one more
 * reference on an atom of any table (NULL stays NULL). */
const char *kq_atom_in(struct kq_atom **table, const char *s);
const char *kq_atom_ref(const char *atom);
void kq_atoms_free_table(struct kq_atom **table);
size_t kq_atoms_count_table(const struct kq_atom *table);
struct kq_msg *kq_msg_new(struct kq_broker *b, const struct kq_stored_msg *sm, bool with_body);
void kq_msg_free(struct kq_msg *m);
void kq_msg_to_stored(const struct kq_msg *m, struct kq_stored_msg *sm);
int kq_msg_set_block(struct kq_msg *m, const uint8_t *header, uint32_t header_len,
                     const uint8_t *body, uint32_t body_len);
/* Drop header and body of a stored message until its next attempt. */
void kq_msg_evict(struct kq_msg *m);
/* Re-pack the header of a committed message with commit=true (consumers see it). */
void kq_msg_mark_header_committed(struct kq_msg *m);
/* Group lists (union kq_names, n names). kq_names_add returns 0, or -ENOMEM / -E2BIG when
 * the name could not be recorded: the caller must act on it (see names_lost in delivery.c). */
const char *const *kq_names_view(const union kq_names *v, uint16_t n);
bool kq_names_has(const union kq_names *v, uint16_t n, const char *atom);
int kq_names_add(struct kq_broker *b, union kq_names *v, uint16_t *n, const char *name);
/* The same for an atom the caller holds (a group's): no lookup of the name. */
int kq_names_add_atom(union kq_names *v, uint16_t *n, const char *atom);
void kq_names_clear(union kq_names *v, uint16_t *n);
/* Take atom out of the list (no-op when absent or NULL). */
void kq_names_remove(union kq_names *v, uint16_t *n, const char *atom);

/* failed_index.c: the groups m's current attempt failed for (m->failed), and the messages by
 * failed group beside them. m->failed changes only through these. kq_failed_add returns 0,
 * or -ENOMEM / -E2BIG when the group could not be recorded (the caller acts on it). */
int kq_failed_add(struct kq_broker *b, struct kq_msg *m, const char *group);
/* Take atom out of m's failed groups (no-op when absent or NULL). */
void kq_failed_remove(struct kq_broker *b, struct kq_msg *m, const char *atom);
/* Before a new attempt, and before m leaves the index. */
void kq_failed_clear(struct kq_broker *b, struct kq_msg *m);
/* cb for every message whose current attempt failed for group (cb must not change failed
 * groups); returns how many it visited: the group's backlog, never the broker's. */
typedef void (*kq_failed_cb)(struct kq_broker *b, struct kq_msg *m, void *ud);
size_t kq_failed_each(struct kq_broker *b, const char *group, kq_failed_cb cb, void *ud);
void kq_failed_index_free(struct kq_broker *b);

/* msg_extra.c: a message's due time (scheduled delivery) and own group list, kept in a
 * side table while it is pending and in its header as properties (policy.h: KQ_PROP_*).
 * kq_msg_extra_drop must run before kq_msg_free of a message that may have an entry. */
int kq_msg_extra_set(struct kq_broker *b, struct kq_msg *m, int64_t due_ms,
                     const char *const *groups, size_t n);
/* Unix ms before which m is not delivered (0: none). */
int64_t kq_msg_due_ms(const struct kq_broker *b, const struct kq_msg *m);
void kq_msg_extra_drop(struct kq_broker *b, struct kq_msg *m);
void kq_msg_extras_free(struct kq_broker *b);
/* The routes of m: kq_policy_route's answer, or exactly m's own groups that are still bound
 * on its topic. At most max; out may be b->routes. */
size_t kq_msg_route(struct kq_broker *b, const struct kq_msg *m, struct kq_route *out, size_t max);
/* Intake, before on_publish: the producer's KQ_PROP_DELAY_MS (-1 when absent) in *delay_ms;
 * NULL, or the feedback (written to fb) for a bad value or a property only the broker sets. */
const char *kq_msg_intake_delay(const struct kq_header_view *h, int64_t *delay_ms, char *fb,
                                size_t fblen);
/* Intake, after on_publish: the final delay (<= 0: none) and groups written into h's
 * properties (b->frame_arena), KQ_PROP_DELAY_MS taken out; *due_ms = Unix ms or 0. NULL, or
 * the feedback when the message would be due after it expires. */
const char *kq_msg_intake_apply(struct kq_broker *b, struct kq_header_view *h, int64_t delay_ms,
                                const char *const *groups, size_t n_groups, int64_t now_ms,
                                int64_t *due_ms, char *fb, size_t fblen);
/* Recovery: m's due time and groups from its stored header (if it has any); returns the due
 * time (0: none). */
int64_t kq_msg_extra_recover(struct kq_broker *b, struct kq_msg *m, const uint8_t *hdr, size_t len);

/* delivery.c */
void kq_delivery_dead_letter(struct kq_broker *b, struct kq_msg *m, const char *reason);
/* The same without asking on_dead (the hook said "dlq", or the message was handed over). */
void kq_delivery_dead_letter_now(struct kq_broker *b, struct kq_msg *m, const char *reason);

/* Per-message hooks (msg_hooks.c). The groups m goes to now: route_message when the policy
 * has it (cold: every group bound on the topic), the memoised route otherwise, every group
 * of the topic not done once on_dead handed it over. Loop thread. */
size_t kq_route_msg(struct kq_broker *b, const struct kq_msg *m, struct kq_route *out, size_t max);
/* The same for a message being published, with its decoded header h; the answer is kept
 * for its first attempt when that follows at once. */
size_t kq_route_published(struct kq_broker *b, const struct kq_msg *m,
                          const struct kq_header_view *h, struct kq_route *out, size_t max);
/* on_dead before a dead letter: true when the hook took m (dropped, handed over, or being
 * read back for it). */
bool kq_dead_hook(struct kq_broker *b, struct kq_msg *m, const char *reason);
/* on_dead handed m to groups (its expiry then no longer applies: kq_msg_expiry). */
bool kq_msg_handed_over(struct kq_broker *b, const struct kq_msg *m);
int64_t kq_msg_expiry(struct kq_broker *b, const struct kq_msg *m);
void kq_delivery_persist(struct kq_broker *b, struct kq_msg *m, int64_t next_ms);

/* dead_groups.c. The failed "group" of an attempt with no route. */
#define KQ_NO_SUBSCRIBER "(no subscriber)"
/* Who m failed for as it is dead-lettered: every group it routes to (or failed) without an
 * ack, with the last reason (the failure of the last attempt, else `reason`), and the
 * groups that acked (borrowed from m). Release with kq_dead_groups_free. 0 or -ENOMEM. */
int kq_dead_groups_of(struct kq_broker *b, const struct kq_msg *m, const char *reason,
                      struct kq_dlq_groups *out);
void kq_dead_groups_free(struct kq_dlq_groups *g);
/* A requeued copy m of d goes only to the picked groups (n_picked > 0; each must be routed
 * for it), else to the groups d failed for (else to those that had not acked): the other
 * routed groups are marked done. 0, or -EINVAL / -ENOENT (nobody left to send it to) /
 * -ENOMEM with why. */
int kq_requeue_targets(struct kq_broker *b, struct kq_msg *m, const struct kq_dead_letter *d,
                       const char *const *picked, size_t n_picked, char *why, size_t whylen);
/* The attempt of m is over (all copies answered): delete, retry or dead-letter. */
void kq_delivery_finish(struct kq_broker *b, struct kq_msg *m);
/* g came online: its messages waiting for a later attempt (those that failed for it or found
 * no subscriber) go now. Returns how many it looked at (the debug log; tests). */
size_t kq_delivery_group_online(struct kq_broker *b, struct kq_group *g);
/* The last connection of g is gone: messages waiting for it fail for this group. */
void kq_delivery_group_offline(struct kq_broker *b, struct kq_group *g);
/* Send what waits for room, for every group (called on the tick). */
void kq_delivery_pump_all(struct kq_broker *b);
/* m enters the index: a committed message is attempted at when_ms (at once when due); an
 * uncommitted one waits, evicted, for its transaction check at when_ms. */
void kq_delivery_add(struct kq_broker *b, struct kq_msg *m, int64_t when_ms);
void kq_delivery_on_ack(struct kq_broker *b, struct kq_session *s, uint32_t opaque, bool status);
void kq_delivery_session_closed(struct kq_broker *b, struct kq_session *s);
void kq_delivery_session_init(struct kq_broker *b, struct kq_session *s);
/* Room on s for one more delivery: its window, and its queued output under the byte bound
 * (else on_drain is requested, and kq_delivery_conn_drained pumps its group). */
bool kq_delivery_session_has_room(struct kq_session *s);
void kq_delivery_conn_drained(struct kq_broker *b, struct kq_conn *c);
/* Once a second: log the groups' delivery timeouts since the last line (rate-limited). */
void kq_delivery_log_timeouts(struct kq_broker *b);
/* The bindings of topic (NULL: of any topic) changed: its messages whose last attempt sent
 * nothing (no route, or only offline groups) try again now. */
void kq_delivery_bindings_changed(struct kq_broker *b, const char *topic);
void kq_delivery_check_timeouts(struct kq_broker *b);
/* Tests only: while on, a copy cannot be queued for room (as when memory runs out). */
void kq_delivery_fail_waits(struct kq_broker *b, bool on);
void kq_delivery_schedule(struct kq_broker *b, struct kq_msg *m, int64_t when_ms);
void kq_delivery_drop(struct kq_broker *b, struct kq_msg *m, bool remove_from_store);
void kq_delivery_free_all(struct kq_broker *b);
/* Admin purge: group's copy of m is done without being delivered. 0 when it was done
 * already, 1 when it is now, 2 when it is now and m was removed (no routed group needs it
 * any more: m is gone), -ENOMEM / -E2BIG when the group could not be recorded. */
int kq_delivery_purge_copy(struct kq_broker *b, struct kq_msg *m, const char *group);
/* (Re)arm the retry timer for the earliest scheduled message. */
void kq_delivery_rearm(struct kq_broker *b);
struct kq_msg *kq_delivery_find(struct kq_broker *b, const char *id);
/* The flow entry of (g, topic), or NULL when no copy of that topic was offered to g yet. */
struct kq_group_rate *kq_delivery_rate_find(struct kq_group *g, const char *topic);

/* The broker's address as published in ZooKeeper and used as its kite_server in a shared
 * MySQL store: cfg->bind with the port really bound (":0" resolved). Once listening. */
void kq_broker_advertised(const struct kq_broker *b, char *out, size_t len);

/* takeover.c: deliver the pending messages of a broker that shares our MySQL store and
 * has been gone from /kiteq/alive_servers for takeoverSeconds (one survivor, through a
 * ZooKeeper lock). Started by the registry link; loop thread. */
struct kq_takeover;
int kq_takeover_start(struct kq_broker *b);
void kq_takeover_on_servers(struct kq_broker *b, char *const *alive, size_t n_alive,
                            char *const *all, size_t n_all);
void kq_takeover_on_lock(struct kq_broker *b, const char *dead, int result);
void kq_takeover_stop(struct kq_broker *b);
/* Put a message read from the store back into the index (recovery, takeover). */
void kq_broker_adopt(struct kq_broker *b, const struct kq_stored_msg *sm,
                     const struct kq_delivery_state *st);

/* backlog.c: per (group, topic) backlog from a bounded scan of the pending index (a fixed
 * number of index slots per tick; figures as of the last completed pass). Loop thread. */
struct kq_backlog_info {
    uint64_t passes;       /* completed passes */
    int64_t as_of_unix_ms; /* when the last one completed (0: none yet) */
    uint64_t age_ms;       /* how long ago */
    uint64_t pass_ms;      /* how long it took */
    uint64_t messages;     /* deliverable messages it counted */
};
struct kq_backlog_row {
    const char *group, *topic;
    uint64_t backlog;   /* copies the group has not acked (last pass), in flight included */
    int64_t oldest_sec; /* age of the oldest of them, seconds (0 when none) */
    uint32_t inflight;  /* live: copies sent, not answered yet */
    uint64_t queued;    /* live: copies waiting for room in the group's window or rate */
    uint64_t acked, acked_last_sec; /* live: acked copies, ever and in the last second */
    size_t consumers;               /* live: the group's connections */
};
typedef void (*kq_backlog_row_cb)(void *ud, const struct kq_backlog_row *row);
int kq_backlog_init(struct kq_broker *b);
void kq_backlog_free(struct kq_broker *b);
void kq_backlog_tick(struct kq_broker *b);
/* Once a second: the acked-per-second figures. */
void kq_backlog_second(struct kq_broker *b);
void kq_backlog_info(const struct kq_broker *b, struct kq_backlog_info *out);
/* Every (group, topic) that is bound or has a backlog, sorted by group then topic; the
 * strings are valid during the call. O(bindings + rows), never O(pending). 0 or -ENOMEM. */
int kq_backlog_each(struct kq_broker *b, kq_backlog_row_cb cb, void *ud);

/* history.c: what happened to each message, for GET /msg/<id> and the debug log. Pending
 * messages have their history in a side table (kq_msg.hist); a finished message's history
 * moves to a ring of the last cfg->message_history finished messages. A history keeps at
 * most KQ_HIST_MAX events (the first KQ_HIST_HEAD and the latest; repeats of an attempt
 * that found nobody are counted in one event). Every event is also logged at debug level
 * ("history: id=... event=..."). Loop thread. */
enum kq_hist_kind {
    KQ_EV_PUBLISHED = 1, /* group + connection of the producer */
    KQ_EV_RECOVERED,     /* read back from the store at start, or taken over */
    KQ_EV_REQUEUED,      /* out of the dead-letter store, by an operator */
    KQ_EV_STORED,
    KQ_EV_NOT_STORED,  /* text: why; the producer was told (final) */
    KQ_EV_COMMITTED,   /* two-phase: the producer committed */
    KQ_EV_ROLLED_BACK, /* two-phase: the producer rolled back (final) */
    KQ_EV_TX_CHECK,    /* two-phase: the producer's group was asked */
    KQ_EV_SENT,        /* a delivery attempt: group + connection + attempt number */
    KQ_EV_QUEUED,      /* waiting for room in the group's window or rate */
    KQ_EV_ACKED,
    KQ_EV_NACKED,
    KQ_EV_TIMEOUT,
    KQ_EV_LOST,          /* the copy's answer */
    KQ_EV_NO_CONSUMER,   /* the group had no connection */
    KQ_EV_WARMING,       /* the group's connections were all warming up */
    KQ_EV_SKIPPED,       /* a non-persistent group offline: it does not get the message */
    KQ_EV_NOT_SENT,      /* text: why the copy could not go out */
    KQ_EV_NO_SUBSCRIBER, /* no group bound to its (topic, messageType) */
    KQ_EV_RETRY,         /* next attempt scheduled (when) */
    KQ_EV_DEAD,          /* text: the reason (final) */
    KQ_EV_DELIVERED,     /* every group has it: removed (final) */
    KQ_EV_PURGED,        /* an operator dropped the group's backlog (POST /groups/purge) */
    KQ_EV_REMOVED,       /* no group needs it any more after a purge (final) */
};
#define KQ_HIST_MAX 12
#define KQ_HIST_HEAD 4
int kq_history_init(struct kq_broker *b);
void kq_history_free(struct kq_broker *b);
/* One event of m: group (NULL = none), s (the connection, NULL = none). */
void kq_hist(struct kq_broker *b, struct kq_msg *m, enum kq_hist_kind kind, const char *group,
             struct kq_session *s);
/* A copy's event: SENT, or its answer (ACKED, NACKED, TIMEOUT, LOST) on connection s. */
void kq_hist_copy(struct kq_broker *b, struct kq_msg *m, enum kq_hist_kind kind, struct kq_group *g,
                  struct kq_session *s);
void kq_hist_retry(struct kq_broker *b, struct kq_msg *m, int64_t when_ms);
void kq_hist_text(struct kq_broker *b, struct kq_msg *m, enum kq_hist_kind kind, const char *group,
                  const char *text);
/* m leaves the index (or never got in): its history moves to the finished ring. */
void kq_hist_finish(struct kq_broker *b, struct kq_msg *m);
const char *kq_hist_last_failure(struct kq_broker *b, const struct kq_msg *m, const char *group);
/* m (requeued) takes back the history its id left in the ring, if any. */
void kq_hist_resume(struct kq_broker *b, struct kq_msg *m);
/* A session closes: its name for histories is released. */
void kq_hist_session_closed(struct kq_session *s);
/* JSON of m's history (NULL when it has none) / of a finished id (NULL when the ring does
 * not hold it: the object has messageId, state, topic, messageType, publishGroup,
 * finishedTime and the history). final_kind (may be NULL) gets its last event. */
struct cJSON;
struct cJSON *kq_hist_json(struct kq_broker *b, const struct kq_msg *m);
struct cJSON *kq_hist_finished_json(struct kq_broker *b, const char *id,
                                    enum kq_hist_kind *final_kind);
struct kq_history_stats {
    uint64_t pending, finished; /* histories held */
    uint64_t bytes;             /* their memory (records, ring, table slots) */
    uint64_t names;             /* distinct group, peer and reason names they hold */
    uint64_t skipped;           /* messages given no history: the memory cap was reached,
                                 * or memory ran out */
};
void kq_history_stats(const struct kq_broker *b, struct kq_history_stats *out);
/* Tests only: while on, every allocation of the histories fails, as when memory runs out. */
void kq_history_fail_allocs(struct kq_broker *b, bool on);

/* registry_link.c: ZooKeeper bindings and registration (static bindings need nothing) */
int kq_registry_link_start(struct kq_broker *b, char *err, size_t errlen);
void kq_registry_link_stop(struct kq_broker *b, void (*done)(void *ud), void *ud);

/* admin_api.c: the admin HTTP handlers; stop after the store closed */
int kq_admin_api_start(struct kq_broker *b, char *err, size_t errlen);
void kq_admin_api_stop(struct kq_broker *b);

/* reload.c: SIGHUP / POST /reload (kq_broker_reload_start in broker.h). At stop: the
 * queued requests are answered -ECANCELED and a running reload is abandoned. */
void kq_reload_stop(struct kq_broker *b);

/* broker.c: connection limits from b->cfg (start, and after a reload swapped a new one) */
void kq_broker_apply_net_limits(struct kq_broker *b);

/* helpers */
uint64_t kq_broker_mono_ms(void);
void kq_session_send_flush(struct kq_session *s);
/* An answer to the client (what) could not be queued (rc, out of memory): said in the log
 * (rate-limited), as the client waits for it in vain. The session stays usable. */
void kq_session_answer_lost(struct kq_session *s, const char *what, int rc);
#endif
