/* Message store interface. Implementations: memory (src/store/memory), file log
 * (src/store/file), MySQL (src/store/mysql). Everything the broker asks of a store goes
 * through struct kq_store_ops: no broker file includes a back-end's header. The broker's delivery module keeps the index of pending
 * messages in memory; a store persists messages and their delivery state and gives them back
 * at start-up (recover) and on demand (load).
 *
 * Every function taking a callback returns 0 (the callback will run exactly once) or -errno
 * (the callback will never run).
 *
 * Threading: every function is called on the broker's event-loop thread and must not block
 * it (no fsync, no network I/O on the caller's stack). Completion callbacks are invoked on
 * the loop thread, possibly before the call returns (the memory store completes at once).
 *
 * Durability contract: a save/commit callback with status 0 means the record survives a
 * crash of the process (and, for the file store with fsync=group, of the machine). */
#ifndef KQ_STORE_STORE_H
#define KQ_STORE_STORE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define KQ_ID_LEN 32

/* One message as stored. Pointers are borrowed for the duration of the call. */
struct kq_stored_msg {
    char id[KQ_ID_LEN + 1];
    uint8_t cmd; /* 0x11 bytes or 0x12 string */
    const char *topic;
    const char *message_type;
    const char *publish_group; /* Header.groupId: where transaction checks go */
    bool commit;
    int64_t publish_time; /* Unix seconds */
    int64_t expired_time; /* Unix seconds, normalised (never <= 0) */
    int32_t deliver_limit;
    /* save only: Unix ms before which it is not delivered (0 = at once). The header holds it
     * too (x-kiteq-deliver-at), which is what the broker reads back; a store may also keep
     * it where its schema has room (MySQL: next_deliver_time). */
    int64_t deliver_at_ms;
    const uint8_t *header; /* packed, normalised protobuf Header */
    uint32_t header_len;
    const uint8_t *body;
    uint32_t body_len;
};

/* Delivery state of one pending message; persisted by update(). */
struct kq_delivery_state {
    char id[KQ_ID_LEN + 1];
    int32_t attempts;         /* delivery attempts so far */
    int64_t next_attempt_ms;  /* Unix ms of the next attempt (0 = now) */
    int32_t tx_checks;        /* transaction checks sent so far (commit = false) */
    const char **groups_done; /* groups that acked: never sent again */
    size_t n_done;
    const char **groups_failed; /* groups that failed the last attempt */
    size_t n_failed;
};

/* A consumer group that had not acked a dead letter, and the last reason it failed. */
struct kq_dlq_group {
    const char *group;
    const char *reason;
};

/* Who a dead letter failed for: the groups that had not acked it (a requeue delivers only
 * to them) and the groups that had. */
struct kq_dlq_groups {
    const struct kq_dlq_group *failed;
    size_t n_failed;
    const char *const *acked;
    size_t n_acked;
};

/* A dead letter as listed by the store. */
struct kq_dead_letter {
    struct kq_stored_msg msg;
    const char *reason;
    int64_t dead_time; /* Unix seconds */
    bool groups_known; /* false: dead-lettered before groups were recorded (or by the Go
                        * broker); groups is then empty */
    struct kq_dlq_groups groups;
};

typedef void (*kq_store_done_cb)(void *ud, int status); /* 0 or -errno */
/* Called once per pending message by recover(); state may be NULL for a new message. */
typedef void (*kq_store_recover_cb)(void *ud, const struct kq_stored_msg *m,
                                    const struct kq_delivery_state *state);
typedef void (*kq_store_load_cb)(void *ud, int status, const struct kq_stored_msg *m);
/* Return false to stop listing. */
typedef bool (*kq_store_dlq_cb)(void *ud, const struct kq_dead_letter *d);
/* One dead letter: status 0 and d (borrowed for the call), or -ENOENT / -errno and NULL. */
typedef void (*kq_store_dlq_one_cb)(void *ud, int status, const struct kq_dead_letter *d);
/* End of a page: status 0 or -errno; next = the cursor to continue after what this page
 * examined ("" once the end was reached). */
typedef void (*kq_store_dlq_page_cb)(void *ud, int status, const char *next);
/* A counter: per topic (group NULL) or per (topic, publishing group). */
typedef void (*kq_store_dlq_count_cb)(void *ud, const char *topic, const char *group, uint64_t n);
typedef void (*kq_store_purge_cb)(void *ud, int status, size_t purged);

#define KQ_DLQ_CURSOR_LEN 64 /* a page cursor, NUL included */

/* One figure of a back-end (stats()), exported in /metrics as kiteq_store_<name>: base
 * units (seconds, bytes), counters named ..._total. A histogram has n_bounds ascending
 * upper bounds, counts[n_bounds + 1] per bucket (not cumulative; the last one counts what
 * is above the last bound) and the sum of what it counted. */
enum kq_store_stat_kind { KQ_STORE_COUNTER, KQ_STORE_GAUGE, KQ_STORE_HISTOGRAM };
struct kq_store_stat {
    const char *name; /* "fsync_seconds" -> kiteq_store_fsync_seconds */
    const char *help;
    enum kq_store_stat_kind kind;
    double value;    /* counter, gauge */
    size_t n_bounds; /* histogram */
    const double *bounds;
    const uint64_t *counts;
    double sum;
};
typedef void (*kq_store_stat_cb)(void *ud, const struct kq_store_stat *st);
/* For back-ends: cb with a counter or gauge. */
void kq_store_stat_value(kq_store_stat_cb cb, void *ud, enum kq_store_stat_kind kind,
                         const char *name, const char *help, double value);
/* Takeover (stores shared by brokers): end of the move, with the rows moved. */
typedef void (*kq_store_takeover_done_cb)(void *ud, int status, uint64_t moved);

struct kq_store;

struct kq_store_ops {
    const char *name;
    /* Persist a new message; cb(ud, 0) once durable, cb(ud, -errno) if it could not be
     * stored (disk full, I/O error): the producer then gets status false. */
    int (*save)(struct kq_store *s, const struct kq_stored_msg *m, kq_store_done_cb cb, void *ud);
    /* Mark a two-phase message committed; cb once durable. */
    int (*commit)(struct kq_store *s, const char *id, kq_store_done_cb cb, void *ud);
    /* Record delivery state. Ordered after the message's save; not waited for. */
    int (*update)(struct kq_store *s, const struct kq_delivery_state *st);
    /* The message is finished (delivered to every group, rolled back): forget it. */
    int (*remove)(struct kq_store *s, const char *id);
    /* Move a message to the dead-letter store with a reason and the groups it failed for
     * (NULL: not known); it leaves the pending set. */
    int (*dead_letter)(struct kq_store *s, const struct kq_stored_msg *m, const char *reason,
                       const struct kq_dlq_groups *groups);
    /* Read a pending message back (header and body); cb gets borrowed pointers. */
    int (*load)(struct kq_store *s, const char *id, kq_store_load_cb cb, void *ud);
    /* At start-up: call cb for every pending message, in publish order (header and body may
     * be left out, header_len = body_len = 0: the broker keeps neither and loads them when
     * an attempt starts). Synchronous; or
     * -EINPROGRESS: the store could not finish now (server unreachable) and calls cb later,
     * from the loop, as it gets the messages (unavailable() says why meanwhile). */
    int (*recover)(struct kq_store *s, kq_store_recover_cb cb, void *ud);
    /* Dead letters. None of these may cost more than its page on the loop thread: the
     * admin API calls them while the broker serves (docs/ADMIN.md).
     *
     * dlq_counts: the counters the store keeps (never a listing): cb per topic, or per
     * (topic, publishing group) with by_group. Synchronous. 0, or -EAGAIN while the store
     * does not know them yet (a MySQL store before its first count).
     * dlq_page: the dead letters after cursor `after` ("" or NULL = from the start) in the
     * store's order (oldest first for file and memory), topic filter may be NULL: item per
     * dead letter (at most max; its return value is ignored), then done with the cursor to
     * continue from. A page may hold fewer than max although more follow (the store bounds
     * the work of one page); only next == "" means the end.
     * dlq_get: one dead letter by id (an index lookup).
     * dlq_take: the same, and it leaves the DLQ (requeue).
     * dlq_purge: delete a topic's dead letters (NULL = all); cb with the number deleted. */
    int (*dlq_counts)(struct kq_store *s, bool by_group, kq_store_dlq_count_cb cb, void *ud);
    int (*dlq_page)(struct kq_store *s, const char *topic, const char *after, size_t max,
                    kq_store_dlq_cb item, kq_store_dlq_page_cb done, void *ud);
    int (*dlq_get)(struct kq_store *s, const char *id, kq_store_dlq_one_cb cb, void *ud);
    int (*dlq_take)(struct kq_store *s, const char *id, kq_store_dlq_one_cb cb, void *ud);
    int (*dlq_purge)(struct kq_store *s, const char *topic, kq_store_purge_cb cb, void *ud);
    /* Flush what is pending and release everything. */
    void (*close)(struct kq_store *s);
    /* Optional: NULL while the store works, else why it cannot take saves now, true at all
     * times (a MySQL store whose server is down or does not answer, e.g. "mysql
     * 127.0.0.1:3306: connection refused", or whose start-up recovery is still waiting for
     * it). The broker then refuses publishes with this reason and the admin's store
     * queries answer 503 with it. The text names no password. */
    const char *(*unavailable)(struct kq_store *s);
    /* Optional: the back-end's figures (fsync latency, batches, reconnects...), one cb per
     * figure, synchronous and cheap (counters the store keeps; the loop thread). */
    void (*stats)(struct kq_store *s, kq_store_stat_cb cb, void *ud);
    /* Optional, for a store that several brokers share (MySQL), whose pending messages
     * each name the broker that owns them:
     * owner: this broker's name in the shared store (*self, borrowed) and the name of the
     * shared place ("host:port:db", into shared); 0, or -ENOTSUP when nothing is shared.
     * takeover: move the pending messages of broker `dead` to this one, page by page
     * without blocking the loop, handing each moved message to row (as recover does;
     * header and body borrowed for the call), then done(ud, status, moved) once: 0, or
     * -errno (what was moved before the failure was handed to row). Returns 0 (done will
     * run) or -errno (done will not run). */
    int (*owner)(const struct kq_store *s, const char **self, char *shared, size_t len);
    int (*takeover)(struct kq_store *s, const char *dead, kq_store_recover_cb row,
                    kq_store_takeover_done_cb done, void *ud);
};

struct kq_store {
    const struct kq_store_ops *ops;
    uv_loop_t *loop;
};

static inline const char *kq_store_unavailable(struct kq_store *s)
{
    return s->ops->unavailable ? s->ops->unavailable(s) : NULL;
}

/* Open the store named by a URI ("memory://", "file://DIR?fsync=group"). On error returns
 * -errno and writes a reason into err. */
int kq_store_open(uv_loop_t *loop, const char *uri, struct kq_store **out, char *err,
                  size_t errlen);
/* Check a store URI the way kq_store_open reads it (scheme, path, every parameter), without
 * touching disk or network: a URI this accepts is one kq_store_open parses (it may still
 * fail to open, e.g. a directory that cannot be created). 0 or -EINVAL with a reason. */
int kq_store_check(const char *uri, char *err, size_t errlen);
#endif
