/* Binding sets: copy-on-write arrays sorted by (topic, group), and the original's JSON. */
#include "registry/bindings.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every set gets a new generation, also after a reload rebuilds one from the config, so a
 * cache keyed by generation can never mistake a new set for an old one. Loop thread only. */
static uint64_t last_generation;

struct kq_binding_set {
    struct kq_binding *v; /* sorted by topic, then group; a group's bindings stay in order */
    size_t n;
    uint64_t generation;
};

static int copy_binding(struct kq_binding *dst, const struct kq_binding *src)
{
    dst->group_id = strdup(src->group_id ? src->group_id : "");
    dst->topic = strdup(src->topic ? src->topic : "");
    dst->message_type = strdup(src->message_type ? src->message_type : "");
    dst->bind_type = src->bind_type;
    dst->watermark = src->watermark;
    dst->persistent = src->persistent;
    return dst->group_id && dst->topic && dst->message_type ? 0 : -ENOMEM;
}

void kq_bindings_free(struct kq_binding *binds, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(binds[i].group_id);
        free(binds[i].topic);
        free(binds[i].message_type);
    }
    free(binds);
}

static int cmp_binding(const void *a, const void *b)
{
    const struct kq_binding *x = a, *y = b;
    int c = strcmp(x->topic, y->topic);
    return c ? c : strcmp(x->group_id, y->group_id);
}

/* Build a set from src[0..n) (copied), sorted stably, with a fresh generation. */
static struct kq_binding_set *build(const struct kq_binding *const *src, size_t n)
{
    struct kq_binding_set *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->v = calloc(n ? n : 1, sizeof *s->v);
    if (!s->v) {
        free(s);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (copy_binding(&s->v[i], src[i]) != 0) {
            s->n = i + 1;
            kq_binding_set_free(s);
            return NULL;
        }
    }
    s->n = n;
    /* insertion sort keeps equal keys in their order (qsort is not stable) */
    for (size_t i = 1; i < n; i++) {
        struct kq_binding t = s->v[i];
        size_t j = i;
        while (j > 0 && cmp_binding(&s->v[j - 1], &t) > 0) {
            s->v[j] = s->v[j - 1];
            j--;
        }
        s->v[j] = t;
    }
    s->generation = ++last_generation;
    return s;
}

struct kq_binding_set *kq_binding_set_from_config(const struct kq_config *cfg)
{
    const struct kq_binding **src = calloc(cfg->n_bindings ? cfg->n_bindings : 1, sizeof *src);
    if (!src)
        return NULL;
    for (size_t i = 0; i < cfg->n_bindings; i++)
        src[i] = &cfg->bindings[i];
    struct kq_binding_set *s = build(src, cfg->n_bindings);
    free(src);
    return s;
}

struct kq_binding_set *kq_binding_set_empty(void) { return build(NULL, 0); }

struct kq_binding_set *kq_binding_set_with_group(const struct kq_binding_set *old,
                                                 const char *topic, const char *group,
                                                 const struct kq_binding *binds, size_t n)
{
    const struct kq_binding **src = calloc(old->n + n + 1, sizeof *src);
    if (!src)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < old->n; i++)
        if (strcmp(old->v[i].topic, topic) != 0 || strcmp(old->v[i].group_id, group) != 0)
            src[k++] = &old->v[i];
    for (size_t i = 0; i < n; i++)
        src[k++] = &binds[i];
    struct kq_binding_set *s = build(src, k);
    free(src);
    return s;
}

const struct kq_binding *kq_binding_set_topic(const struct kq_binding_set *s, const char *topic,
                                              size_t *n)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) { /* first binding with v.topic >= topic */
        size_t mid = (lo + hi) / 2;
        if (strcmp(s->v[mid].topic, topic) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t end = lo;
    while (end < s->n && strcmp(s->v[end].topic, topic) == 0)
        end++;
    *n = end - lo;
    return *n ? &s->v[lo] : NULL;
}

const struct kq_binding *kq_binding_set_all(const struct kq_binding_set *s, size_t *n)
{
    *n = s->n;
    return s->v;
}

size_t kq_binding_set_topic_groups(const struct kq_binding_set *s, const char *topic)
{
    size_t n, groups = 0;
    const struct kq_binding *v = kq_binding_set_topic(s, topic, &n);
    for (size_t i = 0; i < n; i++) /* sorted by group within the topic */
        groups += i == 0 || strcmp(v[i].group_id, v[i - 1].group_id) != 0;
    return groups;
}

uint64_t kq_binding_set_generation(const struct kq_binding_set *s) { return s->generation; }

void kq_binding_set_free(struct kq_binding_set *s)
{
    if (!s)
        return;
    kq_bindings_free(s->v, s->n);
    free(s);
}

/* --- JSON, as the original clients write it ------------------------------------------- */

static const char *json_str(cJSON *o, const char *key)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

int kq_bindings_from_json(const char *json, size_t len, struct kq_binding **out, char *err,
                          size_t errlen)
{
    *out = NULL;
    cJSON *arr = cJSON_ParseWithLength(json, len);
    if (!arr || !cJSON_IsArray(arr)) {
        snprintf(err, errlen, "bindings: not a JSON array");
        cJSON_Delete(arr);
        return -EINVAL;
    }
    int n = cJSON_GetArraySize(arr);
    struct kq_binding *v = calloc(n > 0 ? (size_t)n : 1, sizeof *v);
    if (!v) {
        cJSON_Delete(arr);
        return -ENOMEM;
    }
    int k = 0;
    cJSON *o;
    cJSON_ArrayForEach(o, arr)
    {
        const char *g = json_str(o, "groupId"), *t = json_str(o, "topic"),
                   *mt = json_str(o, "messageType");
        cJSON *bt = cJSON_GetObjectItemCaseSensitive(o, "bindType");
        if (!cJSON_IsObject(o) || !g || !*g || !t || !*t || !cJSON_IsNumber(bt) ||
            bt->valueint < 0 || bt->valueint > 2) {
            snprintf(err, errlen, "bindings[%d]: needs groupId, topic and bindType 0-2", k);
            kq_bindings_free(v, (size_t)k);
            cJSON_Delete(arr);
            return -EINVAL;
        }
        struct kq_binding b = {.group_id = (char *)g,
                               .topic = (char *)t,
                               .message_type = (char *)(mt ? mt : ""),
                               .bind_type = (enum kq_bind_type)bt->valueint};
        cJSON *wm = cJSON_GetObjectItemCaseSensitive(o, "watermark");
        b.watermark = cJSON_IsNumber(wm) ? wm->valueint : 0;
        if (b.watermark <= 0)
            b.watermark = 6000; /* the original's default (its 6000 cap is not kept) */
        b.persistent = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "persistent"));
        if (b.bind_type == KQ_BIND_FANOUT)
            b.message_type = "*";
        if (copy_binding(&v[k], &b) != 0) {
            kq_bindings_free(v, (size_t)k + 1);
            cJSON_Delete(arr);
            return -ENOMEM;
        }
        k++;
    }
    cJSON_Delete(arr);
    *out = v;
    return k;
}

char *kq_bindings_to_json(const struct kq_binding *binds, size_t n)
{
    /* Field order as Go's encoding/json writes the original struct. */
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "groupId", binds[i].group_id);
        cJSON_AddStringToObject(o, "topic", binds[i].topic);
        cJSON_AddStringToObject(o, "messageType", binds[i].message_type);
        cJSON_AddNumberToObject(o, "bindType", binds[i].bind_type);
        cJSON_AddStringToObject(o, "version", "1.0.0");
        cJSON_AddNumberToObject(o, "watermark", binds[i].watermark);
        cJSON_AddBoolToObject(o, "persistent", binds[i].persistent);
        cJSON_AddItemToArray(arr, o);
    }
    char *s = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    return s;
}
