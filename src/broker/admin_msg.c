/* GET /msg/<id> for messages that are no longer pending: the histories of the last
 * messageHistory finished messages (history.c) answer for those delivered, rolled back,
 * removed or never stored, and add their story to a dead letter the store finds. */
#include "admin/prom.h"
#include "broker/admin_internal.h"

int kq_adm_msg_finished(struct kq_broker *b, const char *id, bool even_dead, struct kq_buf *out)
{
    enum kq_hist_kind last = 0;
    cJSON *o = kq_hist_finished_json(b, id, &last);
    if (!o)
        return 0;
    if (last == KQ_EV_DEAD && !even_dead) { /* the store has the dead letter itself */
        cJSON_Delete(o);
        return 0;
    }
    if (last == KQ_EV_DEAD)
        cJSON_AddStringToObject(o, "note", "no longer in the dead-letter store (purged)");
    return kq_adm_reply(out, o, 200);
}

void kq_adm_msg_history(struct kq_broker *b, const char *id, cJSON *o)
{
    cJSON *f = kq_hist_finished_json(b, id, NULL);
    cJSON *h = f ? cJSON_DetachItemFromObjectCaseSensitive(f, "history") : NULL;
    if (h)
        cJSON_AddItemToObject(o, "history", h);
    cJSON_Delete(f);
}

void kq_adm_history_metrics(struct kq_broker *b, struct kq_prom *p)
{
    struct kq_history_stats s;
    kq_history_stats(b, &s);
    const char *pending[] = {"state", "pending", NULL}, *finished[] = {"state", "finished", NULL};
    const char *help = "Message histories held: of pending messages, and of the last "
                       "messageHistory finished ones.";
    kq_prom_gauge(p, "kiteq_message_histories", help, pending, (double)s.pending);
    kq_prom_gauge(p, "kiteq_message_histories", help, finished, (double)s.finished);
    kq_prom_gauge(p, "kiteq_message_history_bytes",
                  "Memory of the message histories (records, "
                  "the finished ring, their tables).",
                  NULL, (double)s.bytes);
    kq_prom_counter(p, "kiteq_message_histories_skipped_total",
                    "Messages given no history (or that lost it): histories reached "
                    "their memory cap (32 MiB), or memory ran out.",
                    NULL, (double)s.skipped);
}
