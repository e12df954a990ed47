/* The publish pipeline: intake limit -> checks and normalisation (spec §3.3, with an exact
 * topic test) -> store (the ack waits until the store says the message is durable) ->
 * MessageStoreAck -> delivery. Fly messages skip the store. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/intake.h"
#include "broker/internal.h"
#include "core/log.h"
#include "core/redact.h"

static void ack(struct kq_session *s, uint32_t opaque, const char *id, bool ok,
                const char *feedback)
{
    int rc = kq_codec_append_store_ack(kq_conn_out(s->conn), opaque, id, ok, feedback);
    if (rc)
        kq_session_answer_lost(s, "MessageStoreAck", rc);
    kq_session_send_flush(s);
}

static void reject(struct kq_broker *b, struct kq_session *s, uint32_t opaque, const char *id,
                   const char *feedback)
{
    b->stats.rejected++;
    ack(s, opaque, id, false, feedback);
}

/* Normalise the header in place; returns NULL or the rejection feedback. */
static const char *check_header(struct kq_broker *b, struct kq_header_view *h, int64_t now)
{
    if (!kq_config_has_topic(b->cfg, h->topic))
        return "UnSupport Topic Message!";
    if (!kq_message_id_valid(h->message_id))
        return "Invalid MessageId For UUID!";
    if (!h->has_create_time || h->create_time <= 0) {
        h->has_create_time = 1;
        h->create_time = now;
    }
    if (h->deliver_limit <= 0 || h->deliver_limit > KQ_PUBLISH_MAX_DELIVER_LIMIT)
        h->deliver_limit = KQ_PUBLISH_MAX_DELIVER_LIMIT;
    if (h->expired_time <= 0 || h->expired_time > now + KQ_PUBLISH_MAX_EXPIRED_SEC)
        h->expired_time = now + KQ_PUBLISH_MAX_EXPIRED_SEC;
    else if (h->expired_time <= now)
        return "Expired Message!";
    if (h->fly && !h->commit)
        return "FLY MUST BE COMMITTED !";
    return NULL;
}

/* The publish policy's answer (policy.h: on_publish), applied to the header before it is
 * packed and stored. Returns NULL (accept, maybe changed) or the rejection feedback. Costs
 * nothing when the policy has no on_publish. */
static const char *apply_publish_policy(struct kq_broker *b, struct kq_session *s,
                                        struct kq_header_view *h, size_t body_len, int64_t now,
                                        struct kq_publish_verdict *v)
{
    if (!kq_policy_has_publish(b->policy))
        return NULL;
    struct kq_property_kv *props = NULL;
    if (h->n_properties &&
        !(props = kq_arena_alloc(&b->frame_arena, h->n_properties * sizeof *props)))
        return "Store Result false: out of memory";
    for (size_t i = 0; i < h->n_properties; i++)
        props[i] = (struct kq_property_kv){h->properties[i].key, h->properties[i].value};
    struct kq_publish_view m = {.message_id = h->message_id,
                                .topic = h->topic,
                                .message_type = h->message_type,
                                .group = h->group,
                                .peer = kq_conn_peer(s->conn),
                                .properties = props,
                                .n_properties = h->n_properties,
                                .body_size = body_len,
                                .fly = h->fly,
                                .commit = h->commit,
                                .expired_time = h->expired_time,
                                .deliver_limit = h->deliver_limit,
                                .now_sec = now};
    m.bind_set = b->bindings; /* for `groups`: looked up only when the answer has some */
    kq_policy_publish(b->policy, &m, v);
    if (v->action == KQ_PUBLISH_REJECT) {
        KQ_LOG_RATELIMITED(KQ_LOG_INFO, "publish",
                           "rejected by on_publish topic=%s type=%s "
                           "id=%s: %s",
                           h->topic, h->message_type, h->message_id, v->reason);
        return v->reason;
    }
    if (v->action != KQ_PUBLISH_CHANGE)
        return NULL;
    /* the verdict's strings live until the next call: the header is packed right after */
    struct kq_header_property *changed = NULL;
    if (v->n_properties &&
        !(changed = kq_arena_alloc(&b->frame_arena, v->n_properties * sizeof *changed)))
        return "Store Result false: out of memory";
    for (size_t i = 0; i < v->n_properties; i++)
        changed[i] = (struct kq_header_property){.key = v->properties[i].key,
                                                 .value = v->properties[i].value};
    h->n_properties = v->n_properties;
    h->properties = changed;
    h->expired_time = v->expired_time;
    h->deliver_limit = v->deliver_limit;
    return NULL;
}

/* A message no group is bound to is accepted (as the original does) and kept until it
 * expires, so that a consumer group bound later still gets it. But it is never silent:
 * counted per topic and logged once a second per (topic, messageType). */
static void note_if_unrouted(struct kq_broker *b, struct kq_msg *m, const struct kq_header_view *h)
{
    struct kq_route r;
    /* the policy's answer (kept for the first attempt), then the groups on_publish chose */
    if (kq_route_published(b, m, h, &r, 1) > 0 || kq_msg_route(b, m, &r, 1) > 0)
        return;
    b->stats.unrouted++;
    kq_msg_topic_stats(b, m)->unrouted++;
    char key[256];
    size_t tl = strnlen(m->topic, 127), yl = strnlen(m->type, sizeof key - tl - 1);
    memcpy(key, m->topic, tl);
    key[tl] = 0;
    memcpy(key + tl + 1, m->type, yl);
    KQ_LOG_RATELIMITED_BY(KQ_LOG_WARN, "publish", key, tl + 1 + yl,
                          "unrouted: no group is bound to topic=%s type=%s (accepted, kept "
                          "until it expires) id=%s",
                          m->topic, m->type, m->id);
}

/* The publishing connection's authenticated group is the message's group: it receives the
 * transaction checks and alone may commit or roll back (tx.c). The original clients put
 * their own group in the header; an empty one is filled in, another group is refused.
 * Returns false after refusing. */
static bool own_group(struct kq_broker *b, struct kq_session *s, uint32_t opaque,
                      struct kq_header_view *h)
{
    const char *own = s->group->id;
    if (!h->group[0]) {
        h->group = own; /* packed into the stored header right after */
        return true;
    }
    if (strcmp(h->group, own) == 0)
        return true;
    char fb[160 + KQ_GROUP_MAX];
    snprintf(fb, sizeof fb,
             "Invalid GroupId: the header's groupId \"%.64s\" is not the "
             "publishing connection's group \"%s\"",
             h->group, own);
    KQ_LOG_PER_PEER(KQ_LOG_WARN, "publish", kq_conn_peer(s->conn),
                    "refused peer=%s group=%s: header groupId=%.64s id=%s", kq_conn_peer(s->conn),
                    own, h->group, h->message_id);
    reject(b, s, opaque, h->message_id, fb);
    return false;
}

/* "Store Result false: ..." naming the cause: the store's reason while it is unavailable
 * (e.g. "store unavailable: mysql 127.0.0.1:3306: connection refused"), else the error. */
static void store_failed_feedback(struct kq_broker *b, int status, char *fb, size_t len)
{
    const char *why = kq_store_unavailable(b->store);
    char clean[400];
    if (why)
        snprintf(fb, len, "Store Result false: store unavailable: %s",
                 kq_redact(why, clean, sizeof clean));
    else
        snprintf(fb, len, "Store Result false: %s", strerror(-status));
}

static void detach(struct kq_pending_save *ps)
{
    struct kq_session *s = ps->session;
    if (!s)
        return;
    if (ps->prev)
        ps->prev->next = ps->next;
    else
        s->saves = ps->next;
    if (ps->next)
        ps->next->prev = ps->prev;
    ps->session = NULL;
}

void kq_publish_session_closed(struct kq_session *s)
{
    while (s->saves)
        detach(s->saves);
    kq_intake_forget(s);
}

static void ack_stored(struct kq_pending_save *ps, struct kq_session *s)
{
    /* The original's text with the store time in ms. Built by hand: snprintf was a
     * measurable share of the broker's instructions per message. */
    static const char prefix[] = "Store Result true Cost:";
    char feedback[sizeof prefix + 20], digits[20];
    uint64_t ms = kq_broker_mono_ms() - ps->start_ms;
    size_t n = 0;
    do
        digits[n++] = (char)('0' + ms % 10);
    while ((ms /= 10) > 0);
    memcpy(feedback, prefix, sizeof prefix - 1);
    for (size_t i = 0; i < n; i++)
        feedback[sizeof prefix - 1 + i] = digits[n - 1 - i];
    feedback[sizeof prefix - 1 + n] = 0;
    if (s)
        ack(s, ps->opaque, ps->msg->id, true, feedback);
}

static void on_saved(void *ud, int status)
{
    struct kq_pending_save *ps = ud;
    struct kq_broker *b = ps->broker;
    struct kq_msg *m = ps->msg;
    char feedback[512];
    struct kq_session *s = ps->session;
    detach(ps);
    if (status == 0) {
        m->stored = true;
        b->stats.stored++;
        kq_msg_topic_stats(b, m)->stored++;
        kq_hist(b, m, KQ_EV_STORED, NULL, NULL);
        ack_stored(ps, s);
        int64_t now = kq_now_ms(), due = kq_msg_due_ms(b, m);
        if (due - now >= 1000)
            kq_msg_evict(m); /* scheduled: the store keeps header and body until it is due */
        kq_delivery_add(b, m, !m->commit ? kq_tx_next_check_ms(b, m) : due > now ? due : now);
    } else {
        store_failed_feedback(b, status, feedback, sizeof feedback);
        KQ_LOG_RATELIMITED(KQ_LOG_ERROR, "publish", "store failed id=%s: %s", m->id, feedback);
        if (s)
            reject(b, s, ps->opaque, m->id, feedback);
        kq_hist_text(b, m, KQ_EV_NOT_STORED, NULL, strerror(-status));
        kq_hist_finish(b, m);
        kq_msg_extra_drop(b, m);
        kq_msg_free(m);
    }
    free(ps);
}

static struct kq_pending_save *pending_new(struct kq_broker *b, struct kq_session *s,
                                           struct kq_msg *m, uint32_t opaque)
{
    struct kq_pending_save *ps = calloc(1, sizeof *ps);
    if (!ps)
        return NULL;
    ps->broker = b;
    ps->session = s;
    ps->msg = m;
    ps->opaque = opaque;
    ps->start_ms = kq_broker_mono_ms();
    ps->next = s->saves;
    if (s->saves)
        s->saves->prev = ps;
    s->saves = ps;
    return ps;
}

/* deliveryFirst, after the save of what the first attempt did not deliver. */
static void on_saved_after_first(void *ud, int status)
{
    struct kq_pending_save *ps = ud;
    struct kq_broker *b = ps->broker;
    struct kq_msg *m = ps->msg;
    struct kq_session *s = ps->session;
    detach(ps);
    if (status == 0) {
        m->stored = true;
        b->stats.stored++;
        kq_hist(b, m, KQ_EV_STORED, NULL, NULL);
        ack_stored(ps, s);
        kq_delivery_finish(b, m); /* persist the first attempt's state, schedule the retry */
    } else {
        char feedback[512];
        store_failed_feedback(b, status, feedback, sizeof feedback);
        if (s)
            reject(b, s, ps->opaque, m->id, feedback);
        kq_hist_text(b, m, KQ_EV_NOT_STORED, NULL, strerror(-status));
        kq_delivery_drop(b, m, false); /* the producer was told: it sends again */
    }
    free(ps);
}

void kq_publish_first_attempt_done(struct kq_broker *b, struct kq_msg *m, bool all_done)
{
    struct kq_pending_save *ps = m->first_ack;
    m->first_ack = NULL;
    if (all_done) {
        /* Delivered everywhere before it needed storing: ack true (the original said false). */
        struct kq_session *s = ps->session;
        detach(ps);
        ack_stored(ps, s);
        free(ps);
        b->stats.delivered++;
        kq_hist(b, m, KQ_EV_DELIVERED, NULL, NULL);
        kq_delivery_drop(b, m, false);
        return;
    }
    struct kq_stored_msg sm;
    kq_msg_to_stored(m, &sm);
    int rc = b->store->ops->save(b->store, &sm, on_saved_after_first, ps);
    if (rc != 0)
        on_saved_after_first(ps, rc);
}

void kq_publish_handle(struct kq_broker *b, struct kq_session *s, uint32_t opaque, uint8_t cmd,
                       struct kq_message_frame_view *v)
{
    struct kq_header_view *h = &v->header;
    int64_t now = kq_now_sec();
    b->stats.received++;

    if (!kq_intake_take(b, s)) {
        char fb[160];
        snprintf(fb, sizeof fb, "Store Result KiteQ OverFlow [%s]", b->cfg->bind);
        reject(b, s, opaque, h->message_id, fb);
        goto out;
    }
    const char *bad = check_header(b, h, now);
    if (bad) {
        reject(b, s, opaque, h->message_id, bad);
        goto out;
    }
    if (!own_group(b, s, opaque, h))
        goto out;
    kq_topic_stats(b, h->topic)->received++;
    if (kq_delivery_find(b, h->message_id)) {
        /* A producer retrying a publish whose ack it missed: it is already safe here. */
        ack(s, opaque, h->message_id, true, "Store Result true Cost:0");
        goto out;
    }
    if (!h->fly && kq_store_unavailable(b->store)) { /* a clear answer now, not a timeout later */
        char fb[512];
        store_failed_feedback(b, -EAGAIN, fb, sizeof fb);
        reject(b, s, opaque, h->message_id, fb);
        goto out;
    }

    int64_t delay_ms, due_ms;
    char fb[256];
    if ((bad = kq_msg_intake_delay(h, &delay_ms, fb, sizeof fb))) {
        reject(b, s, opaque, h->message_id, bad);
        goto out;
    }
    struct kq_publish_verdict verdict;
    verdict.action = KQ_PUBLISH_ACCEPT; /* what apply_publish_policy leaves without a hook */
    bad = apply_publish_policy(b, s, h, v->body_len, now, &verdict);
    if (bad) {
        reject(b, s, opaque, h->message_id, bad);
        goto out;
    }
    bool changed = verdict.action == KQ_PUBLISH_CHANGE;
    if (changed && verdict.delay_ms >= 0)
        delay_ms = verdict.delay_ms; /* the policy's delay replaces the producer's */
    const char *const *groups = changed ? verdict.groups : NULL;
    size_t n_groups = changed ? verdict.n_groups : 0;
    if ((bad = kq_msg_intake_apply(b, h, delay_ms, groups, n_groups, kq_now_ms(), &due_ms, fb,
                                   sizeof fb))) {
        reject(b, s, opaque, h->message_id, bad);
        goto out;
    }

    struct kq_stored_msg sm = {0};
    memcpy(sm.id, h->message_id, KQ_ID_LEN + 1);
    sm.cmd = cmd;
    sm.topic = h->topic;
    sm.message_type = h->message_type;
    sm.publish_group = h->group;
    sm.commit = h->commit;
    sm.publish_time = now;
    sm.expired_time = h->expired_time;
    sm.deliver_limit = h->deliver_limit;
    sm.body = v->body;
    sm.body_len = (uint32_t)v->body_len;
    uint8_t *hdr;
    size_t hdr_len;
    int rc = kq_header_encode(&b->frame_arena, h, &hdr, &hdr_len);
    if (rc != 0) {
        snprintf(fb, sizeof fb, "Store Result false: %s",
                 rc == -ENOMEM ? "out of memory" : "the header cannot be encoded");
        reject(b, s, opaque, h->message_id, fb);
        goto out;
    }
    size_t frame = kq_codec_message_size(hdr_len, v->body_len);
    if (frame > KQ_FRAME_MAX_BODY) {
        /* The header the broker completed (create time, expiry) can push a publish that
         * just fitted over the limit: it could be stored but never delivered. */
        snprintf(fb, sizeof fb,
                 "Message Too Large: the delivery would be %zu bytes, the "
                 "frame limit is %d (body %zu bytes)",
                 frame, KQ_FRAME_MAX_BODY, v->body_len);
        reject(b, s, opaque, h->message_id, fb);
        goto out;
    }
    sm.header = hdr;
    sm.header_len = (uint32_t)hdr_len;
    struct kq_msg *m = kq_msg_new(b, &sm, true);
    if (m && (due_ms || n_groups) && kq_msg_extra_set(b, m, due_ms, groups, n_groups) != 0) {
        kq_msg_free(m);
        m = NULL;
    }
    if (!m) {
        reject(b, s, opaque, h->message_id, "Store Result false: out of memory");
        goto out;
    }
    m->fly = h->fly;
    m->hdr_committed = m->commit;
    kq_hist(b, m, KQ_EV_PUBLISHED, s->group->id, s);
    kq_msg_to_stored(m, &sm); /* from here on the store reads the index's copy */
    sm.deliver_at_ms = due_ms;
    note_if_unrouted(b, m, h);

    if (m->fly) {
        /* Acked first, never stored; still retried while this broker runs. */
        ack(s, opaque, m->id, true, "FLY NO NEED SAVE");
        kq_delivery_add(b, m, due_ms ? due_ms : kq_now_ms());
        goto out;
    }

    struct kq_pending_save *ps = pending_new(b, s, m, opaque);
    if (!ps) {
        kq_hist_text(b, m, KQ_EV_NOT_STORED, NULL, "out of memory");
        kq_hist_finish(b, m);
        kq_msg_extra_drop(b, m);
        kq_msg_free(m);
        reject(b, s, opaque, h->message_id, "Store Result false: out of memory");
        goto out;
    }
    if (b->cfg->delivery_first && m->commit && !due_ms) {
        /* Deliver first; store only what the first attempt does not finish (then ack). */
        m->first_ack = ps;
        kq_delivery_add(b, m, kq_now_ms());
        goto out;
    }
    rc = b->store->ops->save(b->store, &sm, on_saved, ps);
    if (rc != 0)
        on_saved(ps, rc); /* refused at once: the store never calls back then */
out:
    return; /* v lives in the broker's frame arena: the caller releases it */
}
