/* Memory store: same semantics as the file store, nothing survives a restart.
 * Every operation completes synchronously (callbacks run before the call returns).
 * Convention shared by all stores: a negative return value means the callback will not
 * be called. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include "core/clock.h"
#include "core/idmap.h"
#include "store/dlq_groups.h"
#include "store/dlq_index.h"
#include "store/store_uri.h"

/* A deep copy of a message: the strings, header and body live in the same allocation,
 * right after the record, so a message costs one malloc. */
struct mem_msg {
    char id[KQ_ID_LEN + 1];
    struct kq_stored_msg m;
    /* latest delivery state; each group list is one allocation (see copy_groups) */
    bool has_state;
    struct kq_delivery_state st;
    char *reason; /* dead letters only */
    int64_t dead_time;
    struct kq_dlq_groups *groups; /* dead letters only; NULL: not known */
    uint64_t seq;                 /* save order, for recover() */
    struct kq_dlq_pos dpos;       /* dead letters only */
    UT_hash_handle hh;            /* dead letters only */
};

struct mem_store {
    struct kq_store base;
    struct kq_idmap pending; /* struct mem_msg by id */
    uint64_t next_seq;
    struct mem_msg *dead;    /* by id */
    struct kq_dlq_index dlq; /* their order and counters */
};

static void msg_free(struct mem_msg *e)
{
    free((void *)e->st.groups_done);
    free((void *)e->st.groups_failed);
    free(e->reason);
    free(e->groups);
    free(e);
}

/* Append n bytes of p at *at, return where they landed. */
static void *put(uint8_t **at, const void *p, size_t n)
{
    void *dst = *at;
    if (n)
        memcpy(dst, p, n);
    *at += n;
    return dst;
}

static const char *put_str(uint8_t **at, const char *s)
{
    s = s ? s : "";
    return put(at, s, strlen(s) + 1);
}

static struct mem_msg *msg_copy(const struct kq_stored_msg *m)
{
    size_t strings = strlen(m->topic ? m->topic : "") +
                     strlen(m->message_type ? m->message_type : "") +
                     strlen(m->publish_group ? m->publish_group : "") + 3;
    struct mem_msg *e = malloc(sizeof *e + strings + m->header_len + m->body_len);
    if (!e)
        return NULL;
    memset(e, 0, sizeof *e);
    e->m = *m;
    memcpy(e->id, m->id, sizeof e->id);
    uint8_t *at = (uint8_t *)(e + 1);
    e->m.topic = put_str(&at, m->topic);
    e->m.message_type = put_str(&at, m->message_type);
    e->m.publish_group = put_str(&at, m->publish_group);
    e->m.header = put(&at, m->header, m->header_len);
    e->m.body = put(&at, m->body, m->body_len);
    return e;
}

/* The pointer array and the strings in one allocation: one free releases it. */
static int copy_groups(const char **src, size_t n, const char ***dst)
{
    *dst = NULL;
    if (!n)
        return 0;
    size_t bytes = n * sizeof(char *);
    for (size_t i = 0; i < n; i++)
        bytes += strlen(src[i]) + 1;
    const char **g = malloc(bytes);
    if (!g)
        return -ENOMEM;
    uint8_t *at = (uint8_t *)(g + n);
    for (size_t i = 0; i < n; i++)
        g[i] = put_str(&at, src[i]);
    *dst = g;
    return 0;
}

static bool valid_id(const char *id) { return id && *id && strlen(id) <= KQ_ID_LEN; }

static struct mem_msg *find_pending(struct mem_store *ms, const char *id)
{
    return kq_idmap_find(&ms->pending, id);
}

static struct mem_msg *find_dead(struct mem_store *ms, const char *id)
{
    struct mem_msg *e = NULL;
    HASH_FIND_STR(ms->dead, id, e);
    return e;
}

static void dead_drop(struct mem_store *ms, struct mem_msg *d)
{
    kq_dlq_index_remove(&ms->dlq, &d->dpos);
    HASH_DEL(ms->dead, d);
    msg_free(d);
}

static int mem_save(struct kq_store *s, const struct kq_stored_msg *m, kq_store_done_cb cb,
                    void *ud)
{
    struct mem_store *ms = (struct mem_store *)s;
    if (!valid_id(m->id))
        return -EINVAL;
    if (find_pending(ms, m->id))
        return -EEXIST;
    struct mem_msg *e = msg_copy(m);
    if (!e)
        return -ENOMEM;
    e->seq = ms->next_seq++;
    if (kq_idmap_insert(&ms->pending, e) != 0) {
        msg_free(e);
        return -ENOMEM;
    }
    if (cb)
        cb(ud, 0);
    return 0;
}

static int mem_commit(struct kq_store *s, const char *id, kq_store_done_cb cb, void *ud)
{
    struct mem_msg *e = find_pending((struct mem_store *)s, id);
    if (!e)
        return -ENOENT;
    e->m.commit = true;
    if (cb)
        cb(ud, 0);
    return 0;
}

static int mem_update(struct kq_store *s, const struct kq_delivery_state *st)
{
    struct mem_msg *e = find_pending((struct mem_store *)s, st->id);
    if (!e)
        return -ENOENT;
    const char **done, **failed;
    if (copy_groups(st->groups_done, st->n_done, &done))
        return -ENOMEM;
    if (copy_groups(st->groups_failed, st->n_failed, &failed)) {
        free((void *)done);
        return -ENOMEM;
    }
    free((void *)e->st.groups_done);
    free((void *)e->st.groups_failed);
    e->st = *st;
    e->st.groups_done = done;
    e->st.groups_failed = failed;
    e->has_state = true;
    return 0;
}

static int mem_remove(struct kq_store *s, const char *id)
{
    struct mem_store *ms = (struct mem_store *)s;
    struct mem_msg *e = find_pending(ms, id);
    if (!e)
        return -ENOENT;
    kq_idmap_remove(&ms->pending, e);
    msg_free(e);
    return 0;
}

static int mem_dead_letter(struct kq_store *s, const struct kq_stored_msg *m, const char *reason,
                           const struct kq_dlq_groups *groups)
{
    struct mem_store *ms = (struct mem_store *)s;
    if (!valid_id(m->id))
        return -EINVAL;
    struct mem_msg *p = find_pending(ms, m->id);
    /* The caller may pass only the index fields: take header and body from the store. */
    const struct kq_stored_msg *src = (p && !m->header && !m->body) ? &p->m : m;
    struct mem_msg *d = msg_copy(src);
    if (!d || !(d->reason = strdup(reason ? reason : "")) ||
        (groups && !(d->groups = kq_dlq_groups_copy(groups)))) {
        if (d)
            msg_free(d);
        return -ENOMEM;
    }
    d->dead_time = kq_now_sec();
    if (kq_dlq_index_add(&ms->dlq, d, d->m.topic, d->m.publish_group, &d->dpos)) {
        msg_free(d);
        return -ENOMEM;
    }
    struct mem_msg *old = find_dead(ms, d->id);
    if (old)
        dead_drop(ms, old);
    HASH_ADD_STR(ms->dead, id, d);
    if (p) {
        kq_idmap_remove(&ms->pending, p);
        msg_free(p);
    }
    return 0;
}

static int mem_load(struct kq_store *s, const char *id, kq_store_load_cb cb, void *ud)
{
    struct mem_msg *e = find_pending((struct mem_store *)s, id);
    if (!e)
        return -ENOENT;
    cb(ud, 0, &e->m);
    return 0;
}

static int by_seq(const void *a, const void *b)
{
    uint64_t x = (*(struct mem_msg *const *)a)->seq, y = (*(struct mem_msg *const *)b)->seq;
    return x < y ? -1 : x > y;
}

static int mem_recover(struct kq_store *s, kq_store_recover_cb cb, void *ud)
{
    /* Nothing survives a restart, so after open this is empty; the index has no order,
     * and the contract is publish order: sort. */
    struct mem_store *ms = (struct mem_store *)s;
    struct mem_msg **all = malloc((ms->pending.len + 1) * sizeof *all), *e;
    if (!all)
        return -ENOMEM;
    size_t n = 0;
    for (size_t i = 0; (e = kq_idmap_next(&ms->pending, &i));)
        all[n++] = e;
    qsort(all, n, sizeof *all, by_seq);
    for (size_t i = 0; i < n; i++)
        cb(ud, &all[i]->m, all[i]->has_state ? &all[i]->st : NULL);
    free(all);
    return 0;
}

static struct kq_dead_letter as_dead(const struct mem_msg *d)
{
    struct kq_dead_letter dl = {.msg = d->m, .reason = d->reason, .dead_time = d->dead_time};
    if (d->groups) {
        dl.groups_known = true;
        dl.groups = *d->groups;
    }
    return dl;
}

static int mem_dlq_counts(struct kq_store *s, bool by_group, kq_store_dlq_count_cb cb, void *ud)
{
    kq_dlq_counts_each(&((struct mem_store *)s)->dlq.counts, by_group, cb, ud);
    return 0;
}

static int read_dead(void *store, void *rec, const char *topic, struct kq_dead_letter *out)
{
    const struct mem_msg *d = rec;
    if (topic && strcmp(topic, d->m.topic) != 0)
        return 0;
    *out = as_dead(d);
    return 1;
}

static int mem_dlq_page(struct kq_store *s, const char *topic, const char *after, size_t max,
                        kq_store_dlq_cb item, kq_store_dlq_page_cb done, void *ud)
{
    struct mem_store *ms = (struct mem_store *)s;
    return kq_dlq_index_page(&ms->dlq, topic, after, max, read_dead, ms, item, done, ud);
}

static int mem_dlq_get(struct kq_store *s, const char *id, kq_store_dlq_one_cb cb, void *ud)
{
    struct mem_msg *d = valid_id(id) ? find_dead((struct mem_store *)s, id) : NULL;
    if (!d)
        return -ENOENT;
    struct kq_dead_letter dl = as_dead(d);
    cb(ud, 0, &dl);
    return 0;
}

static int mem_dlq_take(struct kq_store *s, const char *id, kq_store_dlq_one_cb cb, void *ud)
{
    struct mem_store *ms = (struct mem_store *)s;
    struct mem_msg *d = valid_id(id) ? find_dead(ms, id) : NULL;
    if (!d)
        return -ENOENT;
    struct kq_dead_letter dl = as_dead(d);
    cb(ud, 0, &dl);
    dead_drop(ms, d);
    return 0;
}

static int mem_dlq_purge(struct kq_store *s, const char *topic, kq_store_purge_cb cb, void *ud)
{
    struct mem_store *ms = (struct mem_store *)s;
    struct mem_msg *d, *tmp;
    size_t n = 0;
    HASH_ITER (hh, ms->dead, d, tmp) {
        if (topic && strcmp(topic, d->m.topic) != 0)
            continue;
        dead_drop(ms, d);
        n++;
    }
    cb(ud, 0, n);
    return 0;
}

static void mem_close(struct kq_store *s)
{
    struct mem_store *ms = (struct mem_store *)s;
    struct mem_msg *e, *tmp;
    for (size_t i = 0; (e = kq_idmap_next(&ms->pending, &i));)
        msg_free(e);
    kq_idmap_free(&ms->pending);
    HASH_ITER (hh, ms->dead, e, tmp) {
        HASH_DEL(ms->dead, e);
        msg_free(e);
    }
    kq_dlq_index_free(&ms->dlq);
    free(ms);
}

static const struct kq_store_ops mem_ops = {
    .name = "memory",
    .save = mem_save,
    .commit = mem_commit,
    .update = mem_update,
    .remove = mem_remove,
    .dead_letter = mem_dead_letter,
    .load = mem_load,
    .recover = mem_recover,
    .dlq_counts = mem_dlq_counts,
    .dlq_page = mem_dlq_page,
    .dlq_get = mem_dlq_get,
    .dlq_take = mem_dlq_take,
    .dlq_purge = mem_dlq_purge,
    .close = mem_close,
};

int kq_memory_store_check(const struct kq_store_uri *u, char *err, size_t errlen)
{
    /* initcap/maxcap are accepted for URIs written for the Go broker and ignored: this
     * store never evicts (the Go one silently dropped the oldest message). */
    static const char *const allowed[] = {"initcap", "maxcap", NULL};
    return kq_store_uri_check(u, allowed, err, errlen);
}

int kq_memory_store_open(uv_loop_t *loop, const struct kq_store_uri *u, struct kq_store **out,
                         char *err, size_t errlen)
{
    int rc = kq_memory_store_check(u, err, errlen);
    if (rc)
        return rc;
    struct mem_store *ms = calloc(1, sizeof *ms);
    if (!ms)
        return -ENOMEM;
    kq_idmap_init(&ms->pending, offsetof(struct mem_msg, id));
    ms->base.ops = &mem_ops;
    ms->base.loop = loop;
    *out = &ms->base;
    return 0;
}
