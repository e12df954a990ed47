/* The admin's dead-letter handlers: GET /dlq (a page of up to KQ_ADMIN_DLQ_MAX_LIMIT, with
 * the counters), POST /dlq/requeue (one id, or all) and POST /dlq/purge.
 *
 * Listing and requeueing all go through a small scheduler: each request is a job that asks
 * the store for a page of dead letters at a time, and one loop iteration hands out at most
 * TURN_BUDGET dead letters over every job together. So however many operators list or
 * requeue, and however long the DLQ, the broker's other connections wait at most one such
 * slice (docs/ADMIN.md). A store that answers later (MySQL) holds up only its own job. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/admin_internal.h"
#include "core/log.h"

#define PAGE 100        /* dead letters asked of the store at a time */
#define TURN_BUDGET 200 /* dead letters per loop iteration, all jobs together (~3 ms) */

enum job_kind { J_LIST, J_REQUEUE_ALL };

struct job {
    struct job *next;
    struct kq_adm_jobs *s;
    struct kq_broker *b;
    struct kq_admin_req *r;
    enum job_kind kind;
    char *topic;                    /* list: the filter, NULL = all */
    char cursor[KQ_DLQ_CURSOR_LEN]; /* where the next page starts */
    bool from_start;
    size_t limit, n;        /* list: wanted, listed */
    struct kq_buf items;    /* list: the JSON array so far, printed page by page */
    struct kq_msg **copies; /* requeue: this page's dead letters, to save */
    size_t n_copies, cap_copies;
    size_t requeued;
    size_t skipped;        /* requeue: nobody it may go to is bound now */
    bool failed;           /* requeue: a copy could not be made */
    struct picked *picked; /* requeue: the groups asked for (NULL: who failed) */
};

struct kq_adm_jobs {
    uv_idle_t idle;
    struct kq_broker *b;
    struct job *head, *tail;
    size_t busy; /* jobs waiting for a page from the store */
    bool stopping;
};

/* --- requeue: saved as a fresh pending message, then taken out of the DLQ ------------------ */

/* The groups= of a requeue, split at the commas. */
struct picked {
    size_t n;
    const char **names; /* into text */
    char text[];
};

static struct picked *picked_parse(const char *list)
{
    size_t len = strlen(list), n = 1;
    for (const char *p = list; *p; p++)
        n += *p == ',';
    struct picked *g = malloc(sizeof *g + len + 1);
    const char **names = g ? malloc(n * sizeof *names) : NULL;
    if (!names) {
        free(g);
        return NULL;
    }
    memcpy(g->text, list, len + 1);
    g->names = names;
    g->n = 0;
    for (char *save = NULL, *t = strtok_r(g->text, ",", &save); t; t = strtok_r(NULL, ",", &save))
        g->names[g->n++] = t;
    return g;
}

static void picked_free(struct picked *g)
{
    if (g)
        free(g->names);
    free(g);
}

struct requeue_ctx {
    struct kq_broker *broker;
    struct kq_msg *msg;
};

static void drop_taken(void *ud, int status, const struct kq_dead_letter *d)
{
    (void)ud;
    (void)d;
    if (status)
        KQ_WARN("dlq", "requeued dead letter not taken out of the DLQ: %s", strerror(-status));
}

/* Saved as a pending message again: only now leave the DLQ (a crash in between gives a
 * duplicate, never a loss). */
static void on_requeued(void *ud, int status)
{
    struct requeue_ctx *rc = ud;
    struct kq_broker *b = rc->broker;
    struct kq_msg *m = rc->msg;
    free(rc);
    if (status != 0) {
        KQ_ERROR("dlq", "requeue of id=%s not stored: %s", m->id, strerror(-status));
        kq_msg_free(m);
        return;
    }
    int rc2 = b->store->ops->dlq_take(b->store, m->id, drop_taken, NULL);
    if (rc2 < 0)
        drop_taken(NULL, rc2, NULL);
    m->stored = true;
    if (m->n_done) /* the groups it is not for: kept across a restart */
        kq_delivery_persist(b, m, kq_now_ms());
    KQ_INFO("dlq", "requeued id=%s topic=%s groups_skipped=%u", m->id, m->topic, m->n_done);
    kq_hist_resume(b, m); /* its story goes on */
    kq_hist(b, m, KQ_EV_REQUEUED, NULL, NULL);
    kq_delivery_add(b, m, kq_now_ms());
}

/* A copy of a dead letter to requeue, for the picked groups (NULL: those it failed for);
 * NULL when it is pending again already, or *err (-ENOMEM, or why it may go to none of the
 * groups: -EINVAL, -ENOENT) with why. The copy is saved later, never while the store is
 * listing. */
static struct kq_msg *requeue_copy(struct kq_broker *b, const struct kq_dead_letter *d,
                                   const struct picked *picked, int *err, char *why, size_t whylen)
{
    if (kq_delivery_find(b, d->msg.id))
        return NULL;
    struct kq_msg *m = kq_msg_new(b, &d->msg, true);
    if (!m) {
        *err = -ENOMEM;
        snprintf(why, whylen, "out of memory");
        return NULL;
    }
    if ((*err = kq_requeue_targets(b, m, d, picked ? picked->names : NULL, picked ? picked->n : 0,
                                   why, whylen))) {
        kq_msg_free(m);
        return NULL;
    }
    /* A fresh start: the operator asked for it to be delivered. */
    m->commit = true;
    int64_t min_expiry = kq_now_sec() + 24 * 3600;
    if (m->expired_time < min_expiry)
        m->expired_time = min_expiry;
    return m;
}

/* Save m (taken over); true when the save was submitted. */
static bool requeue_save(struct kq_broker *b, struct kq_msg *m)
{
    struct requeue_ctx *rc = calloc(1, sizeof *rc);
    if (!rc) {
        kq_msg_free(m);
        return false;
    }
    rc->broker = b;
    rc->msg = m;
    struct kq_stored_msg sm;
    kq_msg_to_stored(m, &sm);
    int st = b->store->ops->save(b->store, &sm, on_requeued, rc);
    if (st != 0) {
        KQ_ERROR("dlq", "requeue of id=%s not stored: %s", m->id, strerror(-st));
        kq_msg_free(m);
        free(rc);
        return false;
    }
    return true;
}

/* --- jobs ---------------------------------------------------------------------------------- */

static void job_free(struct job *j)
{
    for (size_t i = 0; i < j->n_copies; i++)
        kq_msg_free(j->copies[i]);
    free(j->copies);
    picked_free(j->picked);
    kq_buf_free(&j->items);
    free(j->topic);
    free(j);
}

static int error_reply(struct kq_buf *out, int status, const char *why)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", why);
    cJSON_AddNumberToObject(o, "status", status);
    return kq_adm_reply(out, o, status);
}

/* {"topic", "limit", "count" (all matching, from the counters; null while unknown),
 * "byTopic", "byGroup" (publishing group), "deadLetters" (this page, in the store's
 * order), "more", "next" (the cursor for after=, null at the end)} */
static int list_reply(struct job *j, struct kq_buf *out)
{
    cJSON *root = cJSON_CreateObject();
    if (j->topic)
        cJSON_AddStringToObject(root, "topic", j->topic);
    else
        cJSON_AddNullToObject(root, "topic");
    cJSON_AddNumberToObject(root, "limit", (double)j->limit);
    cJSON *by_topic = cJSON_CreateObject(), *by_group = cJSON_CreateObject();
    uint64_t total = 0;
    bool known = kq_adm_dlq_tally(j->b, j->topic, by_topic, by_group, &total) == 0;
    if (known)
        cJSON_AddNumberToObject(root, "count", (double)total);
    else
        cJSON_AddNullToObject(root, "count");
    cJSON_AddItemToObject(root, "byTopic", by_topic);
    cJSON_AddItemToObject(root, "byGroup", by_group);
    if (kq_buf_append(&j->items, "]", 2)) { /* with the NUL */
        cJSON_Delete(root);
        return error_reply(out, 500, "out of memory");
    }
    cJSON_AddRawToObject(root, "deadLetters", (const char *)j->items.data);
    /* The counters settle it when the whole DLQ fitted in this page. */
    bool more = j->cursor[0] && !(known && j->from_start && j->n >= total);
    cJSON_AddBoolToObject(root, "more", more);
    if (more)
        cJSON_AddStringToObject(root, "next", j->cursor);
    else
        cJSON_AddNullToObject(root, "next");
    return kq_adm_reply(out, root, 200);
}

static void job_finish(struct job *j, int status)
{
    struct kq_buf out = {0};
    if (status == -EINVAL && j->kind == J_LIST)
        status = error_reply(&out, 400, "bad after: not a \"next\" this store gave");
    else if (status == -ESHUTDOWN) /* the broker stops: the store is closed (b->store NULL) */
        status = error_reply(&out, 503, "broker shutting down");
    else if (status)
        status = kq_adm_store_failed(j->b, status, NULL, &out);
    else if (j->kind == J_LIST && j->failed)
        status = error_reply(&out, 500, "out of memory");
    else if (j->kind == J_LIST)
        status = list_reply(j, &out);
    else {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "requeued", (double)j->requeued);
        if (j->skipped) /* they stay in the DLQ */
            cJSON_AddNumberToObject(o, "skipped", (double)j->skipped);
        if (j->failed)
            cJSON_AddStringToObject(o, "error",
                                    "some dead letters could not be requeued (see the log)");
        status = kq_adm_reply(&out, o, j->failed ? 500 : 200);
    }
    kq_admin_req_done(j->r, status, &out);
    kq_buf_free(&out);
    job_free(j);
}

static void on_turn(uv_idle_t *h);

static void enqueue(struct kq_adm_jobs *s, struct job *j)
{
    j->next = NULL;
    if (s->tail)
        s->tail->next = j;
    else
        s->head = j;
    s->tail = j;
    uv_idle_start(&s->idle, on_turn);
}

static bool job_item(void *ud, const struct kq_dead_letter *d)
{
    struct job *j = ud;
    if (j->kind == J_LIST) { /* printed now: the cost is spread over the pages */
        cJSON *o = kq_adm_dead_json(d);
        char *txt = o ? cJSON_PrintUnformatted(o) : NULL;
        cJSON_Delete(o);
        if (!txt || kq_buf_append(&j->items, j->n ? "," : "", j->n ? 1 : 0) ||
            kq_buf_append(&j->items, txt, strlen(txt)))
            j->failed = true;
        free(txt);
        j->n++;
        return true;
    }
    int err = 0;
    char why[256];
    struct kq_msg *m = requeue_copy(j->b, d, j->picked, &err, why, sizeof why);
    bool oom = err == -ENOMEM;
    if (err && !oom) {
        j->skipped++;
        KQ_WARN("dlq", "dead letter id=%s not requeued: %s", d->msg.id, why);
    }
    if (m && j->n_copies == j->cap_copies) {
        size_t cap = j->cap_copies ? j->cap_copies * 2 : PAGE;
        struct kq_msg **v = realloc(j->copies, cap * sizeof *v);
        if (!v) {
            kq_msg_free(m);
            m = NULL;
            oom = true;
        } else {
            j->copies = v;
            j->cap_copies = cap;
        }
    }
    if (m)
        j->copies[j->n_copies++] = m;
    if (oom) {
        KQ_ERROR("dlq", "requeue of id=%s: out of memory", d->msg.id);
        j->failed = true;
    }
    return true;
}

static void job_page_done(void *ud, int status, const char *next)
{
    struct job *j = ud;
    struct kq_adm_jobs *s = j->s;
    s->busy--;
    snprintf(j->cursor, sizeof j->cursor, "%s", status ? "" : next);
    /* the store is done listing: now the copies may be saved */
    for (size_t i = 0; i < j->n_copies; i++)
        j->requeued += requeue_save(j->b, j->copies[i]);
    j->n_copies = 0;
    if (status || !j->cursor[0] || (j->kind == J_LIST && j->n >= j->limit) || s->stopping)
        job_finish(j, status);
    else
        enqueue(s, j);
}

static void on_turn(uv_idle_t *h)
{
    struct kq_adm_jobs *s = h->data;
    struct kq_store *st = s->b->store;
    size_t budget = TURN_BUDGET;
    while (s->head && budget > 0) {
        struct job *j = s->head;
        s->head = j->next;
        if (!s->head)
            s->tail = NULL;
        size_t ask = PAGE < budget ? PAGE : budget;
        if (j->kind == J_LIST && j->limit - j->n < ask)
            ask = j->limit - j->n;
        budget -= ask;
        s->busy++;
        int rc = st->ops->dlq_page(st, j->topic, j->cursor, ask, job_item, job_page_done, j);
        if (rc < 0)
            job_page_done(j, rc, "");
    }
    if (!s->head)
        uv_idle_stop(&s->idle);
}

static struct job *job_new(struct kq_broker *b, struct kq_admin_req *r, enum job_kind kind,
                           const char *topic, const char *after)
{
    struct job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->s = b->admin_jobs;
    j->b = b;
    j->r = r;
    j->kind = kind;
    j->from_start = !after || !*after;
    snprintf(j->cursor, sizeof j->cursor, "%s", after ? after : "");
    if ((topic && !(j->topic = strdup(topic))) ||
        (kind == J_LIST && kq_buf_append(&j->items, "[", 1))) {
        job_free(j);
        return NULL;
    }
    return j;
}

/* --- the handlers ---------------------------------------------------------------------------- */

int kq_adm_dlq_list(void *ud, struct kq_admin_req *r, const char *topic, const char *after,
                    size_t limit, struct kq_buf *out)
{
    struct kq_broker *b = ud;
    int down = kq_adm_store_down(b, out);
    if (down)
        return down;
    if (strlen(after) >= KQ_DLQ_CURSOR_LEN)
        return error_reply(out, 400, "bad after (want the \"next\" of the previous page)");
    struct job *j = job_new(b, r, J_LIST, topic, after);
    if (!j)
        return error_reply(out, 500, "out of memory");
    j->limit = limit;
    enqueue(b->admin_jobs, j);
    return KQ_ADMIN_LATER;
}

struct one_ctx {
    struct kq_broker *b;
    struct kq_admin_req *r;
    struct picked *picked;
};

static void on_requeue_found(void *ud, int status, const struct kq_dead_letter *d)
{
    struct one_ctx *c = ud;
    struct kq_buf out = {0};
    size_t n = 0;
    int err = 0;
    bool refused = false;
    char why[256];
    if (status == 0) {
        struct kq_msg *m = requeue_copy(c->b, d, c->picked, &err, why, sizeof why);
        n = m && requeue_save(c->b, m); /* d is not used after the copy */
        refused = m && !n;
    }
    if (status && status != -ENOENT) {
        status = kq_adm_store_failed(c->b, status, NULL, &out);
    } else if (err) {
        status = error_reply(&out, err == -ENOMEM ? 500 : err == -EINVAL ? 400 : 409, why);
    } else if (refused) {
        status = error_reply(&out, 500, "the store refused the copy (see the log)");
    } else {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "requeued", (double)n);
        if (!n) /* say why nothing was requeued */
            cJSON_AddStringToObject(o, "error",
                                    status == -ENOENT ? "no dead letter with this id"
                                                      : "pending again already");
        status = kq_adm_reply(&out, o, n ? 200 : 404);
    }
    kq_admin_req_done(c->r, status, &out);
    kq_buf_free(&out);
    picked_free(c->picked);
    free(c);
}

int kq_adm_dlq_requeue(void *ud, struct kq_admin_req *r, const char *id, const char *groups,
                       struct kq_buf *out)
{
    struct kq_broker *b = ud;
    int down = kq_adm_store_down(b, out);
    if (down)
        return down;
    struct picked *picked = groups ? picked_parse(groups) : NULL;
    if (groups && !picked)
        return error_reply(out, 500, "out of memory");
    if (picked && picked->n == 0) {
        picked_free(picked);
        return error_reply(out, 400, "groups: a comma-separated list of consumer groups");
    }
    if (strcmp(id, "*") == 0) {
        struct job *j = job_new(b, r, J_REQUEUE_ALL, NULL, NULL);
        if (!j) {
            picked_free(picked);
            return error_reply(out, 500, "out of memory");
        }
        j->picked = picked;
        enqueue(b->admin_jobs, j);
        return KQ_ADMIN_LATER;
    }
    struct one_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        picked_free(picked);
        return error_reply(out, 500, "out of memory");
    }
    *c = (struct one_ctx){b, r, picked};
    int rc = b->store->ops->dlq_get(b->store, id, on_requeue_found, c);
    if (rc < 0)
        on_requeue_found(c, rc, NULL);
    return KQ_ADMIN_LATER;
}

struct purge_ctx {
    struct kq_broker *b;
    struct kq_admin_req *r;
    char topic[];
};

static void on_purged(void *ud, int status, size_t purged)
{
    struct purge_ctx *c = ud;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "purged", (double)purged);
    KQ_INFO("dlq", "purged topic=%s count=%zu%s%s", c->topic, purged, status ? " error=" : "",
            status ? strerror(-status) : "");
    struct kq_buf out = {0};
    int code = status ? kq_adm_store_failed(c->b, status, o, &out) : kq_adm_reply(&out, o, 200);
    kq_admin_req_done(c->r, code, &out);
    kq_buf_free(&out);
    free(c);
}

int kq_adm_dlq_purge(void *ud, struct kq_admin_req *r, const char *topic, struct kq_buf *out)
{
    struct kq_broker *b = ud;
    int down = kq_adm_store_down(b, out);
    if (down)
        return down;
    uint64_t held = 0;
    if (topic && !kq_config_has_topic(b->cfg, topic) &&
        kq_adm_dlq_tally(b, topic, NULL, NULL, &held) == 0 && held == 0) {
        char why[600];
        snprintf(why, sizeof why, "unknown topic %.500s: not a configured topic, no dead letters",
                 topic);
        return error_reply(out, 404, why);
    }
    const char *name = topic ? topic : "*";
    struct purge_ctx *c = malloc(sizeof *c + strlen(name) + 1);
    if (!c)
        return error_reply(out, 500, "out of memory");
    c->b = b;
    c->r = r;
    strcpy(c->topic, name);
    int rc = b->store->ops->dlq_purge(b->store, topic, on_purged, c);
    if (rc < 0)
        on_purged(c, rc, 0);
    return KQ_ADMIN_LATER;
}

/* --- the scheduler ------------------------------------------------------------------------- */

int kq_adm_jobs_start(struct kq_broker *b)
{
    struct kq_adm_jobs *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->b = b;
    uv_idle_init(b->loop, &s->idle);
    s->idle.data = s;
    b->admin_jobs = s;
    return 0;
}

static void on_jobs_closed(uv_handle_t *h) { free(h->data); }

void kq_adm_jobs_stop(struct kq_broker *b)
{
    struct kq_adm_jobs *s = b->admin_jobs;
    if (!s)
        return;
    s->stopping = true;
    while (s->head) {
        struct job *j = s->head;
        s->head = j->next;
        job_finish(j, -ESHUTDOWN);
    }
    s->tail = NULL;
    if (s->busy) /* a store that did not complete its pages on close: keep s for them */
        KQ_ERROR("admin", "%zu dead-letter pages still pending at stop", s->busy);
    else
        uv_close((uv_handle_t *)&s->idle, on_jobs_closed);
    b->admin_jobs = NULL;
}
