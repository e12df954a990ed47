/* Memory store: same semantics as the file store, nothing survives a restart.
 * Every operation completes synchronously (callbacks run before the call returns).
 * Convention shared by all stores: a negative return value means the callback will not
 * be called. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include "core/clock.h"
#include "store/store_uri.h"

/* A deep copy of a message: the strings and bytes live in one allocation after it. */
struct mem_msg {
    char id[KQ_ID_LEN + 1];
    struct kq_stored_msg m;
    /* latest delivery state; groups in one strdup'ed NUL-separated block */
    bool has_state;
    struct kq_delivery_state st;
    char *reason; /* dead letters only */
    int64_t dead_time;
    UT_hash_handle hh;
};

struct mem_store {
    struct kq_store base;
    struct mem_msg *pending; /* uthash keeps insertion order = publish order */
    struct mem_msg *dead;
};

static char *dupz(const char *s) { return strdup(s ? s : ""); }

static void *dupb(const uint8_t *p, uint32_t n)
{
    uint8_t *c = malloc(n ? n : 1);
    if (c && n)
        memcpy(c, p, n);
    return c;
}

static void free_groups(const char **g, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free((char *)g[i]);
    free(g);
}

static void msg_free(struct mem_msg *e)
{
    free((char *)e->m.topic);
    free((char *)e->m.message_type);
    free((char *)e->m.publish_group);
    free((void *)e->m.header);
    free((void *)e->m.body);
    free_groups(e->st.groups_done, e->st.n_done);
    free_groups(e->st.groups_failed, e->st.n_failed);
    free(e->reason);
    free(e);
}

static struct mem_msg *msg_copy(const struct kq_stored_msg *m)
{
    struct mem_msg *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->m = *m;
    memcpy(e->id, m->id, sizeof e->id);
    e->m.topic = dupz(m->topic);
    e->m.message_type = dupz(m->message_type);
    e->m.publish_group = dupz(m->publish_group);
    e->m.header = dupb(m->header, m->header_len);
    e->m.body = dupb(m->body, m->body_len);
    if (!e->m.topic || !e->m.message_type || !e->m.publish_group || !e->m.header || !e->m.body) {
        msg_free(e);
        return NULL;
    }
    return e;
}

static int copy_groups(const char **src, size_t n, const char ***dst)
{
    *dst = NULL;
    if (!n)
        return 0;
    const char **g = calloc(n, sizeof *g);
    if (!g)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        if (!(g[i] = strdup(src[i]))) {
            free_groups(g, i);
            return -ENOMEM;
        }
    *dst = g;
    return 0;
}

static bool valid_id(const char *id) { return id && *id && strlen(id) <= KQ_ID_LEN; }

static struct mem_msg *find(struct mem_msg *h, const char *id)
{
    struct mem_msg *e = NULL;
    HASH_FIND_STR(h, id, e);
    return e;
}

static int mem_save(struct kq_store *s, const struct kq_stored_msg *m, kq_store_done_cb cb,
                    void *ud)
{
    struct mem_store *ms = (struct mem_store *)s;
    if (!valid_id(m->id))
        return -EINVAL;
    if (find(ms->pending, m->id))
        return -EEXIST;
    struct mem_msg *e = msg_copy(m);
    if (!e)
        return -ENOMEM;
    HASH_ADD_STR(ms->pending, id, e);
    if (cb)
        cb(ud, 0);
    return 0;
}

static int mem_commit(struct kq_store *s, const char *id, kq_store_done_cb cb, void *ud)
{
    struct mem_msg *e = find(((struct mem_store *)s)->pending, id);
    if (!e)
        return -ENOENT;
    e->m.commit = true;
    if (cb)
        cb(ud, 0);
    return 0;
}

static int mem_update(struct kq_store *s, const struct kq_delivery_state *st)
{
    struct mem_msg *e = find(((struct mem_store *)s)->pending, st->id);
    if (!e)
        return -ENOENT;
    const char **done, **failed;
    if (copy_groups(st->groups_done, st->n_done, &done))
        return -ENOMEM;
    if (copy_groups(st->groups_failed, st->n_failed, &failed)) {
        free_groups(done, st->n_done);
        return -ENOMEM;
    }
    free_groups(e->st.groups_done, e->st.n_done);
    free_groups(e->st.groups_failed, e->st.n_failed);
    e->st = *st;
    e->st.groups_done = done;
    e->st.groups_failed = failed;
    e->has_state = true;
    return 0;
}

static int mem_remove(struct kq_store *s, const char *id)
{
    struct mem_store *ms = (struct mem_store *)s;
    struct mem_msg *e = find(ms->pending, id);
    if (!e)
        return -ENOENT;
    HASH_DEL(ms->pending, e);
    msg_free(e);
    return 0;
}

static int mem_dead_letter(struct kq_store *s, const struct kq_stored_msg *m, const char *reason)
{
    struct mem_store *ms = (struct mem_store *)s;
    if (!valid_id(m->id))
        return -EINVAL;
    struct mem_msg *p = find(ms->pending, m->id);
    /* The caller may pass only the index fields: take header and body from the store. */
    const struct kq_stored_msg *src = (p && !m->header && !m->body) ? &p->m : m;
    struct mem_msg *d = msg_copy(src);
    if (!d || !(d->reason = strdup(reason ? reason : ""))) {
        if (d)
            msg_free(d);
        return -ENOMEM;
    }
    d->dead_time = kq_now_sec();
    struct mem_msg *old = find(ms->dead, d->id);
    if (old) {
        HASH_DEL(ms->dead, old);
        msg_free(old);
    }
    HASH_ADD_STR(ms->dead, id, d);
    if (p) {
        HASH_DEL(ms->pending, p);
        msg_free(p);
    }
    return 0;
}

static int mem_load(struct kq_store *s, const char *id, kq_store_load_cb cb, void *ud)
{
    struct mem_msg *e = find(((struct mem_store *)s)->pending, id);
    if (!e)
        return -ENOENT;
    cb(ud, 0, &e->m);
    return 0;
}

static int mem_recover(struct kq_store *s, kq_store_recover_cb cb, void *ud)
{
    /* Nothing survives a restart; after open the pending set is empty. */
    struct mem_msg *e, *tmp;
    HASH_ITER(hh, ((struct mem_store *)s)->pending, e, tmp)
    cb(ud, &e->m, e->has_state ? &e->st : NULL);
    return 0;
}

static struct kq_dead_letter as_dead(const struct mem_msg *d)
{
    return (struct kq_dead_letter){.msg = d->m, .reason = d->reason, .dead_time = d->dead_time};
}

static int mem_dlq_list(struct kq_store *s, const char *topic, kq_store_dlq_cb cb, void *ud)
{
    struct mem_msg *d, *tmp;
    HASH_ITER(hh, ((struct mem_store *)s)->dead, d, tmp)
    {
        if (topic && strcmp(topic, d->m.topic) != 0)
            continue;
        struct kq_dead_letter dl = as_dead(d);
        if (!cb(ud, &dl))
            break;
    }
    return 0;
}

static int mem_dlq_take(struct kq_store *s, const char *id, kq_store_dlq_cb cb, void *ud)
{
    struct mem_store *ms = (struct mem_store *)s;
    struct mem_msg *d = find(ms->dead, id);
    if (!d)
        return -ENOENT;
    HASH_DEL(ms->dead, d);
    struct kq_dead_letter dl = as_dead(d);
    cb(ud, &dl);
    msg_free(d);
    return 0;
}

static int mem_dlq_purge(struct kq_store *s, const char *topic, size_t *purged)
{
    struct mem_store *ms = (struct mem_store *)s;
    struct mem_msg *d, *tmp;
    size_t n = 0;
    HASH_ITER(hh, ms->dead, d, tmp)
    {
        if (topic && strcmp(topic, d->m.topic) != 0)
            continue;
        HASH_DEL(ms->dead, d);
        msg_free(d);
        n++;
    }
    if (purged)
        *purged = n;
    return 0;
}

static void mem_close(struct kq_store *s)
{
    struct mem_store *ms = (struct mem_store *)s;
    struct mem_msg *e, *tmp;
    HASH_ITER(hh, ms->pending, e, tmp)
    {
        HASH_DEL(ms->pending, e);
        msg_free(e);
    }
    HASH_ITER(hh, ms->dead, e, tmp)
    {
        HASH_DEL(ms->dead, e);
        msg_free(e);
    }
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
    .dlq_list = mem_dlq_list,
    .dlq_take = mem_dlq_take,
    .dlq_purge = mem_dlq_purge,
    .close = mem_close,
};

int kq_memory_store_open(uv_loop_t *loop, const struct kq_store_uri *u, struct kq_store **out,
                         char *err, size_t errlen)
{
    /* initcap/maxcap are accepted for URIs written for the Go broker and ignored: this
     * store never evicts (the Go one silently dropped the oldest message). */
    static const char *const allowed[] = {"initcap", "maxcap", NULL};
    int rc = kq_store_uri_check(u, allowed, err, errlen);
    if (rc)
        return rc;
    struct mem_store *ms = calloc(1, sizeof *ms);
    if (!ms)
        return -ENOMEM;
    ms->base.ops = &mem_ops;
    ms->base.loop = loop;
    *out = &ms->base;
    return 0;
}
