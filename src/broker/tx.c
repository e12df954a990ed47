/* Two-phase messages: a commit=false message is stored and not delivered. The broker asks
 * one connection of the publishing group (TxACKPacket status 0 "Server Check") after a first
 * delay, then with back-off, up to a maximum number of checks; then it is dead-lettered.
 * Commit -> delivered; rollback -> removed; late or duplicate answers, and answers from
 * connections of another group, are ignored. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "broker/internal.h"
#include "core/log.h"

#define TX_MAX_BACKOFF_MS 60000

/* txCheckSeconds, then doubling, at most a minute apart. */
static int64_t next_check_delay(const struct kq_broker *b, int32_t checks)
{
    int64_t d = (int64_t)b->cfg->tx_check_seconds * 1000;
    for (int32_t i = 0; i < checks && d < TX_MAX_BACKOFF_MS; i++)
        d *= 2;
    return d < TX_MAX_BACKOFF_MS ? d : TX_MAX_BACKOFF_MS;
}

int64_t kq_tx_next_check_ms(const struct kq_broker *b, const struct kq_msg *m)
{
    return kq_now_ms() + next_check_delay(b, m->tx_checks);
}

void kq_tx_check_due(struct kq_broker *b, struct kq_msg *m)
{
    if (m->tx_checks >= b->cfg->tx_max_checks) {
        kq_delivery_dead_letter(b, m,
                                "transaction unresolved: no commit or rollback after "
                                "the maximum number of checks");
        return;
    }
    if (m->expired_time <= kq_now_sec()) {
        kq_delivery_dead_letter(b, m, "transaction unresolved: expired");
        return;
    }
    struct kq_group *g = kq_group_get(b, m->pub_group, false);
    struct kq_session *s = kq_group_pick(g, kq_broker_mono_ms());
    if (s) {
        uint32_t op = s->next_opaque++;
        if (op == 0)
            op = s->next_opaque++;
        int rc = kq_codec_append_tx_ack(kq_conn_out(s->conn), op, KQ_MSG_HDR(m), KQ_MSG_HDR_LEN(m),
                                        KQ_TX_UNKNOWN, "Server Check");
        if (rc) /* counted all the same: the checks stay bounded */
            kq_session_answer_lost(s, "transaction check", rc);
        kq_session_send_flush(s);
        m->tx_checks++;
        kq_hist(b, m, KQ_EV_TX_CHECK, m->pub_group, s);
        KQ_DEBUG("tx", "check id=%s group=%s n=%d", m->id, m->pub_group, m->tx_checks);
    }
    int64_t next = kq_tx_next_check_ms(b, m);
    kq_delivery_persist(b, m, next);
    kq_delivery_schedule(b, m, next);
    kq_msg_evict(m);
}

struct commit_ctx {
    struct kq_broker *broker;
    char id[KQ_ID_LEN + 1];
};

/* The store did not take a producer's commit: the message stays uncommitted and its next
 * transaction check asks again. */
static void commit_failed(const char *id, int status)
{
    KQ_LOG_RATELIMITED(KQ_LOG_ERROR, "tx",
                       "commit not stored id=%s err=%d; the next check will ask again", id, status);
}

static void on_committed(void *ud, int status)
{
    struct commit_ctx *cc = ud;
    struct kq_msg *m = kq_delivery_find(cc->broker, cc->id);
    if (m && !m->commit && status == 0) {
        m->commit = true;
        kq_hist(cc->broker, m, KQ_EV_COMMITTED, m->pub_group, NULL);
        kq_msg_mark_header_committed(m);
        int64_t now = kq_now_ms(), due = kq_msg_due_ms(cc->broker, m);
        kq_delivery_schedule(cc->broker, m, due > now ? due : now); /* scheduled: when due */
    } else if (status != 0) {
        commit_failed(cc->id, status);
    }
    free(cc);
}

void kq_tx_handle(struct kq_broker *b, struct kq_session *s, const struct kq_tx_ack_view *t)
{
    struct kq_msg *m = kq_delivery_find(b, t->header.message_id);
    if (!m || m->commit) {
        KQ_DEBUG("tx", "answer for unknown or committed id=%s status=%d", t->header.message_id,
                 t->status);
        return;
    }
    if (strcmp(m->pub_group, s->group->id) != 0) {
        /* Only the publishing group decides its message (any group could before). */
        KQ_LOG_PER_PEER(KQ_LOG_WARN, "tx", kq_conn_peer(s->conn),
                        "answer ignored: id=%s belongs to group=%s, not to peer=%s group=%s "
                        "status=%d",
                        m->id, m->pub_group, kq_conn_peer(s->conn), s->group->id, t->status);
        return;
    }
    if (t->status == KQ_TX_COMMIT) {
        struct commit_ctx *cc = calloc(1, sizeof *cc);
        int rc = cc ? 0 : -ENOMEM;
        if (cc) {
            cc->broker = b;
            memcpy(cc->id, m->id, sizeof cc->id);
            if ((rc = b->store->ops->commit(b->store, m->id, on_committed, cc)) != 0)
                free(cc);
        }
        if (rc)
            commit_failed(m->id, rc);
    } else if (t->status == KQ_TX_ROLLBACK) {
        KQ_INFO("tx", "rollback id=%s group=%s", m->id, s->group->id);
        kq_hist(b, m, KQ_EV_ROLLED_BACK, s->group->id, s);
        kq_delivery_drop(b, m, true);
    }
}
