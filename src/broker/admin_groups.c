/* The admin's view of consumer groups: backlog per (group, topic) for GET /groups, /stat
 * and /metrics (figures from backlog.c: the backlog and its oldest age as of the last scan
 * pass, the rest live). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/prom.h"
#include "broker/admin_internal.h"

static void row_json(void *ud, const struct kq_backlog_row *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "group", r->group);
    cJSON_AddStringToObject(o, "topic", r->topic);
    cJSON_AddNumberToObject(o, "backlog", (double)r->backlog);
    /* the backlog is as of the last pass, in flight is live: never below 0 */
    cJSON_AddNumberToObject(o, "waiting",
                            (double)(r->backlog > r->inflight ? r->backlog - r->inflight : 0));
    cJSON_AddNumberToObject(o, "inflight", r->inflight);
    cJSON_AddNumberToObject(o, "queued", (double)r->queued);
    cJSON_AddNumberToObject(o, "acked", (double)r->acked);
    cJSON_AddNumberToObject(o, "acked_per_sec", (double)r->acked_last_sec);
    cJSON_AddNumberToObject(o, "oldest_sec", (double)r->oldest_sec);
    cJSON_AddNumberToObject(o, "consumers", (double)r->consumers);
    cJSON_AddItemToArray(ud, o);
}

static cJSON *scan_json(const struct kq_broker *b)
{
    struct kq_backlog_info in;
    kq_backlog_info(b, &in);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "passes", (double)in.passes);
    if (in.as_of_unix_ms) {
        cJSON_AddNumberToObject(o, "as_of_ms", (double)in.as_of_unix_ms);
        cJSON_AddNumberToObject(o, "age_ms", (double)in.age_ms);
    } else { /* no pass completed yet: the backlog figures are not known */
        cJSON_AddNullToObject(o, "as_of_ms");
        cJSON_AddNullToObject(o, "age_ms");
    }
    cJSON_AddNumberToObject(o, "pass_ms", (double)in.pass_ms);
    cJSON_AddNumberToObject(o, "messages", (double)in.messages);
    return o;
}

int kq_adm_groups_add(struct kq_broker *b, cJSON *into)
{
    cJSON *rows = cJSON_AddArrayToObject(into, "consumer_groups");
    cJSON_AddItemToObject(into, "backlog_scan", scan_json(b));
    return kq_backlog_each(b, row_json, rows);
}

int kq_adm_groups(void *ud, struct kq_buf *out)
{
    cJSON *root = cJSON_CreateObject();
    if (kq_adm_groups_add(ud, root) != 0) {
        cJSON_Delete(root);
        return 500;
    }
    return kq_adm_reply(out, root, 200);
}

/* --- /metrics ------------------------------------------------------------------------------ */

static void row_prom(void *ud, const struct kq_backlog_row *r)
{
    struct kq_prom *p = ud;
    const char *l[] = {"group", r->group, "topic", r->topic, NULL};
    kq_prom_gauge(p, "kiteq_group_backlog",
                  "Pending messages of the topic routed to the group and not acked by it yet, "
                  "in flight included (as of the last backlog pass).",
                  l, (double)r->backlog);
    kq_prom_gauge(p, "kiteq_group_oldest_seconds",
                  "Age of the oldest message the group has not acked on the topic (as of the "
                  "last backlog pass; 0 when none).",
                  l, (double)r->oldest_sec);
}

void kq_adm_groups_metrics(struct kq_broker *b, struct kq_prom *p)
{
    kq_backlog_each(b, row_prom, p);
    struct kq_backlog_info in;
    kq_backlog_info(b, &in);
    if (in.as_of_unix_ms) /* absent until the first pass: the backlog is not known yet */
        kq_prom_gauge(p, "kiteq_backlog_scan_age_seconds",
                      "How old the backlog figures are (since the last pass over the pending "
                      "messages completed).",
                      NULL, (double)in.age_ms / 1000.0);
    kq_prom_gauge(p, "kiteq_backlog_scan_pass_seconds",
                  "How long the last backlog pass took (it looks at a fixed number of "
                  "pending messages per tick).",
                  NULL, (double)in.pass_ms / 1000.0);
}
