/* POST /groups/purge?group=G&topic=T: drop a consumer group's backlog on a topic. Every
 * pending message of T that is routed to G and that G has not acked is marked done for G
 * (kq_delivery_purge_copy): G never gets it, the other groups still do, and a message no
 * group needs any more is removed.
 *
 * A backlog can hold millions of messages, so a purge is a job that walks the pending index
 * a slice per loop iteration (TURN_SLOTS slots, at most TURN_PURGES messages changed) and
 * answers when done. Only messages published before the request's second are purged (what
 * arrives later is not the backlog the operator saw). The index moves records when others
 * leave, so a walk can miss one: walks repeat until one purges nothing (at most MAX_PASSES). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/admin_internal.h"
#include "core/log.h"

#define TURN_SLOTS 4096
#define TURN_PURGES 1024
#define MAX_PASSES 4

struct purge_job {
    struct purge_job *next;
    struct kq_admin_req *r;
    const char *topic; /* atom (a reference): messages of the topic are compared by pointer */
    int64_t before_sec;
    size_t pos, cap;
    int passes;
    uint64_t purged, removed, purged_in_pass;
    const char *memo_type; /* the last messageType looked at, and whether it routes to G */
    bool memo_routed;
    bool failed;
    char group[KQ_GROUP_MAX];
};

struct kq_purges {
    uv_idle_t idle;
    struct kq_broker *b;
    struct purge_job *head, *tail;
};

static void job_answer(struct kq_broker *b, struct purge_job *j, int status, const char *error)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "group", j->group);
    cJSON_AddStringToObject(o, "topic", j->topic);
    cJSON_AddNumberToObject(o, "purged", (double)j->purged);
    cJSON_AddNumberToObject(o, "removed", (double)j->removed);
    if (error)
        cJSON_AddStringToObject(o, "error", error);
    KQ_INFO("admin", "purge group=%s topic=%s purged=%llu removed=%llu%s%s", j->group, j->topic,
            (unsigned long long)j->purged, (unsigned long long)j->removed, error ? " error=" : "",
            error ? error : "");
    struct kq_buf out = {0};
    kq_admin_req_done(j->r, kq_adm_reply(&out, o, status), &out);
    kq_buf_free(&out);
    kq_atom_release(j->topic);
    (void)b;
    free(j);
}

/* Is m routed to the job's group? Memoised per messageType within one turn. */
static bool routed(struct kq_broker *b, struct purge_job *j, const struct kq_msg *m)
{
    if (m->type == j->memo_type)
        return j->memo_routed;
    struct kq_route *routes = b->routes;
    size_t n =
        kq_policy_route(b->policy, b->bindings, m->topic, m->type, routes, KQ_POLICY_MAX_ROUTES);
    j->memo_routed = false;
    for (size_t i = 0; i < n && !j->memo_routed; i++)
        j->memo_routed = strcmp(routes[i].group, j->group) == 0;
    j->memo_type = m->type;
    return j->memo_routed;
}

/* One slice of j's walk; true when the job is over (answered). */
static bool job_turn(struct kq_broker *b, struct purge_job *j)
{
    if (b->msgs.cap != j->cap) { /* the index grew: positions moved, walk it again */
        j->cap = b->msgs.cap;
        j->pos = 0;
    }
    j->memo_type = NULL; /* atoms may have been freed and reused since the last turn */
    size_t end = j->pos + TURN_SLOTS;
    int changed = 0;
    struct kq_msg *m;
    while (j->pos < end && changed < TURN_PURGES && (m = kq_idmap_next(&b->msgs, &j->pos))) {
        if (m->topic != j->topic || !m->commit || m->publish_time > j->before_sec ||
            !routed(b, j, m))
            continue;
        /* a removal moves later records back one slot: look at this slot again */
        size_t slot = j->pos - 1;
        int rc = kq_delivery_purge_copy(b, m, j->group);
        if (rc < 0)
            j->failed = true;
        if (rc <= 0)
            continue;
        changed++;
        j->purged++;
        j->purged_in_pass++;
        if (rc == 2) {
            j->removed++;
            j->pos = slot;
        }
    }
    if (j->pos < b->msgs.cap)
        return false;
    j->passes++;
    if (j->purged_in_pass && j->passes < MAX_PASSES) {
        j->purged_in_pass = 0;
        j->pos = 0;
        return false;
    }
    if (j->failed)
        job_answer(b, j, 500, "some copies could not be marked done (out of memory; see the log)");
    else
        job_answer(b, j, 200, NULL);
    return true;
}

static void on_turn(uv_idle_t *h)
{
    struct kq_purges *p = h->data;
    struct purge_job *j = p->head;
    struct purge_job *next = j ? j->next : NULL;
    if (j && job_turn(p->b, j)) { /* answered and freed */
        p->head = next;
        if (!p->head)
            p->tail = NULL;
    }
    if (!p->head)
        uv_idle_stop(&p->idle);
}

static bool bound(const struct kq_broker *b, const char *group, const char *topic)
{
    size_t n;
    const struct kq_binding *v = kq_binding_set_topic(b->bindings, topic, &n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].group_id, group) == 0)
            return true;
    return false;
}

static int error_reply(struct kq_buf *out, int status, const char *why)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", why);
    cJSON_AddNumberToObject(o, "status", status);
    return kq_adm_reply(out, o, status);
}

int kq_adm_groups_purge(void *ud, struct kq_admin_req *r, const char *group, const char *topic,
                        struct kq_buf *out)
{
    struct kq_broker *b = ud;
    struct kq_purges *p = b->purges;
    if (!p)
        return error_reply(out, 503, "stopping");
    if (strlen(group) >= KQ_GROUP_MAX || !bound(b, group, topic)) {
        char why[KQ_GROUP_MAX + 600];
        snprintf(why, sizeof why, "group %s is not bound to topic %s (see GET /binds)", group,
                 topic);
        return error_reply(out, 404, why);
    }
    struct purge_job *j = calloc(1, sizeof *j);
    if (!j || !(j->topic = kq_atom(b, topic))) {
        free(j);
        return error_reply(out, 500, "out of memory");
    }
    j->r = r;
    strcpy(j->group, group);
    j->before_sec = kq_now_sec();
    j->cap = b->msgs.cap;
    if (p->tail)
        p->tail->next = j;
    else
        p->head = j;
    p->tail = j;
    uv_idle_start(&p->idle, on_turn);
    return KQ_ADMIN_LATER;
}

int kq_adm_purges_start(struct kq_broker *b)
{
    struct kq_purges *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->b = b;
    uv_idle_init(b->loop, &p->idle);
    p->idle.data = p;
    b->purges = p;
    return 0;
}

static void on_closed(uv_handle_t *h) { free(h->data); }

void kq_adm_purges_stop(struct kq_broker *b)
{
    struct kq_purges *p = b->purges;
    if (!p)
        return;
    while (p->head) {
        struct purge_job *j = p->head;
        p->head = j->next;
        job_answer(b, j, 503, "the broker is stopping (the purge is incomplete)");
    }
    uv_close((uv_handle_t *)&p->idle, on_closed);
    b->purges = NULL;
}
