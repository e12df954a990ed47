/* GET /dlq/<id> (kiteq-cli dlq show): one dead letter as /dlq lists it, plus what it
 * carries: the body (as text when it is printable UTF-8, else base64) and the header's
 * properties. One index lookup in the store. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "broker/admin_internal.h"
#include "core/text.h"

struct show_ctx {
    struct kq_admin_req *r;
    struct kq_broker *b;
};

/* "body" or "bodyBase64", and "properties" (an object; absent when the header has none or
 * cannot be read). 0 or -ENOMEM. */
static int add_payload(cJSON *o, const struct kq_stored_msg *m)
{
    if (kq_text_printable(m->body, m->body_len)) {
        char *text = malloc((size_t)m->body_len + 1);
        if (!text)
            return -ENOMEM;
        memcpy(text, m->body, m->body_len);
        text[m->body_len] = 0;
        cJSON *s = cJSON_AddStringToObject(o, "body", text);
        free(text);
        if (!s)
            return -ENOMEM;
    } else {
        char *b64 = kq_base64(m->body, m->body_len);
        cJSON *s = b64 ? cJSON_AddStringToObject(o, "bodyBase64", b64) : NULL;
        free(b64);
        if (!s)
            return -ENOMEM;
    }
    struct kq_arena a;
    kq_arena_init(&a, KQ_HEADER_ARENA_CHUNK);
    struct kq_header_view h;
    if (kq_header_decode(&a, m->header, m->header_len, &h) == 0 && h.n_properties) {
        cJSON *props = cJSON_AddObjectToObject(o, "properties");
        for (size_t i = 0; props && i < h.n_properties; i++)
            cJSON_AddStringToObject(props, h.properties[i].key, h.properties[i].value);
    }
    kq_arena_free(&a);
    return 0;
}

static void on_found(void *ud, int status, const struct kq_dead_letter *d)
{
    struct show_ctx *c = ud;
    struct kq_buf out = {0};
    cJSON *o = status == 0 ? kq_adm_dead_json(d) : cJSON_CreateObject();
    if (status == 0 && add_payload(o, &d->msg)) {
        cJSON_Delete(o);
        o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "error", "out of memory");
        status = kq_adm_reply(&out, o, 500);
    } else if (status == 0) {
        status = kq_adm_reply(&out, o, 200);
    } else if (status == -ENOENT || status == -EINVAL) { /* -EINVAL: no store holds such an id */
        cJSON_AddStringToObject(o, "error", "no dead letter with this id");
        status = kq_adm_reply(&out, o, 404);
    } else {
        status = kq_adm_store_failed(c->b, status, o, &out);
    }
    kq_admin_req_done(c->r, status, &out);
    kq_buf_free(&out);
    free(c);
}

int kq_adm_dlq_show(void *ud, struct kq_admin_req *r, const char *id, struct kq_buf *out)
{
    struct kq_broker *b = ud;
    int down = kq_adm_store_down(b, out);
    if (down)
        return down;
    struct show_ctx *c = malloc(sizeof *c);
    if (!c)
        return 500;
    *c = (struct show_ctx){r, b};
    int rc = b->store->ops->dlq_get(b->store, id, on_found, c);
    if (rc < 0)
        on_found(c, rc, NULL);
    return KQ_ADMIN_LATER;
}
