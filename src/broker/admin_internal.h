/* Shared by the admin handlers: admin_api.c (statistics, subscriptions, one message,
 * reload) and admin_dlq.c (dead letters: paged listing, requeue, purge). Loop thread. */
#ifndef KQ_BROKER_ADMIN_INTERNAL_H
#define KQ_BROKER_ADMIN_INTERNAL_H
#include <cjson/cJSON.h>

#include "admin/admin.h"
#include "broker/internal.h"

/* Print o (deleted) into out; returns status, or 500 when it cannot be printed or when a
 * cJSON allocation failed since the previous reply (o may lack keys: see below). */
int kq_adm_reply(struct kq_buf *out, cJSON *o, int status);
/* cJSON allocates through the broker from now on (process-wide, idempotent): a failed
 * allocation is noted for kq_adm_reply. */
void kq_adm_json_memory_watch(void);
/* A dead letter as the admin shows it (without "state"). */
cJSON *kq_adm_dead_json(const struct kq_dead_letter *d);
/* 503 {"error": "store unavailable: REASON"} while the store is unavailable (MySQL down,
 * not answering, or its start-up recovery pending), else 0. */
int kq_adm_store_down(struct kq_broker *b, struct kq_buf *out);
/* A store operation failed with status (-errno): 503 as above while the store is
 * unavailable (its absence is the cause), else 500 with the error. o (taken over; NULL = a
 * new object) gets "error" and "status" and is printed into out. Returns the HTTP status. */
int kq_adm_store_failed(struct kq_broker *b, int status, cJSON *o, struct kq_buf *out);
/* The store's dead-letter counters for `topic` (NULL = every topic): by_topic (topic -> n),
 * by_group (publishing group -> n) (either may be NULL) and *total (may be NULL). 0, or
 * -EAGAIN while the store does not know them yet (then nothing is filled). */
int kq_adm_dlq_tally(struct kq_broker *b, const char *topic, cJSON *by_topic, cJSON *by_group,
                     uint64_t *total);

/* admin_metrics.c: GET /metrics (struct kq_admin_handlers). */
int kq_adm_metrics(void *ud, struct kq_buf *out);

/* admin_dlq.c: the /dlq handlers (struct kq_admin_handlers) and the scheduler that pages
 * through the store a bounded number of dead letters per loop iteration. */
int kq_adm_dlq_list(void *ud, struct kq_admin_req *r, const char *topic, const char *after,
                    size_t limit, struct kq_buf *out);
int kq_adm_dlq_requeue(void *ud, struct kq_admin_req *r, const char *id, const char *groups,
                       struct kq_buf *out);
/* admin_dlq_show.c: GET /dlq/<id>, one dead letter with its body and properties. */
int kq_adm_dlq_show(void *ud, struct kq_admin_req *r, const char *id, struct kq_buf *out);
int kq_adm_dlq_purge(void *ud, struct kq_admin_req *r, const char *topic, struct kq_buf *out);
int kq_adm_jobs_start(struct kq_broker *b);

/* admin_groups.c: backlog per (consumer group, topic). kq_adm_groups_add puts
 * "consumer_groups" (rows) and "backlog_scan" (how old they are) into `into` (0 or
 * -ENOMEM); kq_adm_groups is GET /groups; kq_adm_groups_metrics writes the kiteq_group_backlog
 * and kiteq_group_oldest_seconds families. */
struct kq_prom;
int kq_adm_groups_add(struct kq_broker *b, cJSON *into);
int kq_adm_groups(void *ud, struct kq_buf *out);
void kq_adm_groups_metrics(struct kq_broker *b, struct kq_prom *p);

/* admin_msg.c: /msg/<id> of a finished message from the history ring: the answer (200),
 * or 0 when the ring does not hold it, or holds a dead letter and !even_dead (ask the
 * store). kq_adm_msg_history adds the id's finished history (if any) to o. */
int kq_adm_msg_finished(struct kq_broker *b, const char *id, bool even_dead, struct kq_buf *out);
void kq_adm_msg_history(struct kq_broker *b, const char *id, cJSON *o);
/* kiteq_message_histories{state}, kiteq_message_history_bytes */
void kq_adm_history_metrics(struct kq_broker *b, struct kq_prom *p);

/* admin_purge.c: POST /groups/purge, a job walking the pending index a slice per loop
 * iteration; started and stopped with the admin. */
int kq_adm_groups_purge(void *ud, struct kq_admin_req *r, const char *group, const char *topic,
                        struct kq_buf *out);
int kq_adm_purges_start(struct kq_broker *b);
void kq_adm_purges_stop(struct kq_broker *b);
/* After the store closed: ends the jobs left (their answers are dropped), frees the rest. */
void kq_adm_jobs_stop(struct kq_broker *b);
#endif
