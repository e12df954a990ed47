/* MySQL store: what a kite_msg_dlq row says about its dead letter.
 *
 * The original's columns keep their meaning: fail_groups is the JSON array of the groups
 * that had not acked, succ_groups that of the groups that had (both cut to fit
 * varchar(255)). What the schema has no column for (the reason, the time, each group's last
 * reason, the full group lists) travels in the row's header: a protobuf field the Header
 * message does not define (number 100, bytes) appended to the packed header, holding
 * {"reason","dead_time","failed":{group: reason},"acked":[group]}. Protobuf readers (the
 * Go broker and its tools) skip an unknown field; reading a row strips it again, so a
 * requeued message goes out with the header it was published with.
 *
 * Rows written otherwise are still read: fail_groups = {"reason","dead_time"} (this store
 * before the groups were recorded) and the Go broker's rows (expired at expired_time). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "store/mysql/mysql_internal.h"

#define DEAD_FIELD_KEY ((100u << 3) | 2u) /* field 100, length-delimited: 0xA2 0x06 */

static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    do {
        p[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return n;
}

static bool get_varint(const uint8_t *p, size_t len, size_t *i, uint64_t *v)
{
    *v = 0;
    for (unsigned shift = 0; *i < len && shift < 64; shift += 7) {
        uint8_t c = p[(*i)++];
        *v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80))
            return true;
    }
    return false;
}

/* Where the dead-letter field starts (always the last bytes of the header), else len.
 * Found from its end rather than by walking the header's fields, so that a header which is
 * not valid protobuf keeps its own bytes too. The JSON holds no raw 0x06 byte (cJSON escapes
 * control characters), so the tag cannot be matched inside it. */
static size_t dead_field_at(const uint8_t *h, size_t len)
{
    for (size_t p = len >= 3 ? len - 3 : 0; len >= 3; p--) {
        size_t i = p + 2;
        uint64_t n;
        if (h[p] == 0xA2 && h[p + 1] == 0x06 && get_varint(h, len, &i, &n) && i < len &&
            n == len - i && h[i] == '{')
            return p;
        if (p == 0)
            break;
    }
    return len;
}

char *my_dead_field(const char *reason, int64_t dead_time, const struct kq_dlq_groups *g,
                    size_t *len)
{
    cJSON *o = cJSON_CreateObject(), *failed = NULL, *acked = NULL;
    bool ok = o && cJSON_AddStringToObject(o, "reason", reason ? reason : "") &&
              cJSON_AddNumberToObject(o, "dead_time", (double)dead_time);
    if (ok && g) {
        ok = (failed = cJSON_AddObjectToObject(o, "failed")) &&
             (acked = cJSON_AddArrayToObject(o, "acked"));
        for (size_t i = 0; ok && i < g->n_failed; i++)
            ok = cJSON_AddStringToObject(failed, g->failed[i].group,
                                         g->failed[i].reason ? g->failed[i].reason : "") != NULL;
        for (size_t i = 0; ok && i < g->n_acked; i++) {
            cJSON *s = cJSON_CreateString(g->acked[i]);
            ok = s && cJSON_AddItemToArray(acked, s);
            if (!ok)
                cJSON_Delete(s);
        }
    }
    char *json = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!json)
        return NULL;
    size_t jl = strlen(json);
    char *field = malloc(jl + 12);
    if (field) {
        size_t n = put_varint((uint8_t *)field, DEAD_FIELD_KEY);
        n += put_varint((uint8_t *)field + n, jl);
        memcpy(field + n, json, jl);
        *len = n + jl;
    }
    cJSON_free(json);
    return field;
}

/* The per-group reasons of the header field into the buffer (groups_known). */
static int read_field_groups(struct my_dead *x, cJSON *failed, cJSON *acked)
{
    size_t nf = (size_t)cJSON_GetArraySize(failed), na = (size_t)cJSON_GetArraySize(acked);
    if (kq_dlq_groups_buf_fit(&x->gb, nf, na))
        return -ENOMEM;
    size_t i = 0;
    cJSON *it;
    cJSON_ArrayForEach(it, failed) x->gb.failed[i++] =
        (struct kq_dlq_group){it->string, cJSON_IsString(it) ? it->valuestring : ""};
    nf = i;
    i = 0;
    cJSON_ArrayForEach(it, acked) if (cJSON_IsString(it)) x->gb.acked[i++] = it->valuestring;
    x->d.groups = (struct kq_dlq_groups){x->gb.failed, nf, x->gb.acked, i};
    x->d.groups_known = true;
    return 0;
}

/* Rows without the header field: the columns are all there is. */
static int read_columns(struct my_dead *x, const struct my_rows *r, size_t i)
{
    const char *fail = my_cell(r, i, C_FAIL)->p;
    cJSON *old = cJSON_Parse(fail ? fail : "");
    if (cJSON_IsObject(old)) { /* {"reason","dead_time"}: this store, before the groups */
        cJSON *rs = cJSON_GetObjectItemCaseSensitive(old, "reason");
        cJSON *dt = cJSON_GetObjectItemCaseSensitive(old, "dead_time");
        if (cJSON_IsString(rs))
            snprintf(x->reason, sizeof x->reason, "%s", rs->valuestring);
        if (cJSON_IsNumber(dt))
            x->d.dead_time = (int64_t)dt->valuedouble;
        fail = NULL;
    }
    cJSON_Delete(old);
    size_t nf = 0, na = 0;
    if (my_groups_parse(fail, &x->fail, &nf) ||
        my_groups_parse(my_cell(r, i, C_SUCC)->p, &x->succ, &na) ||
        kq_dlq_groups_buf_fit(&x->gb, nf, 0))
        return -ENOMEM;
    for (size_t k = 0; k < nf; k++) /* the groups of the last attempt: shown, not binding */
        x->gb.failed[k] = (struct kq_dlq_group){x->fail[k], x->reason};
    x->d.groups = (struct kq_dlq_groups){x->gb.failed, nf, x->succ, na};
    return 0;
}

int my_dead_row(const struct my_rows *r, size_t i, struct my_dead *x)
{
    memset(&x->d, 0, sizeof x->d);
    x->json = NULL;
    x->fail = x->succ = NULL;
    my_row_msg(r, i, &x->d.msg);
    snprintf(x->reason, sizeof x->reason, "expired"); /* the Go broker moves expired rows */
    x->d.dead_time = x->d.msg.expired_time;
    x->d.reason = x->reason;
    const uint8_t *h = x->d.msg.header;
    size_t at = dead_field_at(h, x->d.msg.header_len);
    if (at < x->d.msg.header_len) {
        size_t p = at;
        uint64_t key, len;
        get_varint(h, x->d.msg.header_len, &p, &key);
        get_varint(h, x->d.msg.header_len, &p, &len);
        x->json = cJSON_ParseWithLength((const char *)h + p, (size_t)len);
        x->d.msg.header_len = (uint32_t)at; /* the message's own header */
    }
    if (!cJSON_IsObject(x->json))
        return read_columns(x, r, i);
    cJSON *rs = cJSON_GetObjectItemCaseSensitive(x->json, "reason");
    cJSON *dt = cJSON_GetObjectItemCaseSensitive(x->json, "dead_time");
    cJSON *failed = cJSON_GetObjectItemCaseSensitive(x->json, "failed");
    if (cJSON_IsString(rs))
        snprintf(x->reason, sizeof x->reason, "%s", rs->valuestring);
    if (cJSON_IsNumber(dt))
        x->d.dead_time = (int64_t)dt->valuedouble;
    if (!cJSON_IsObject(failed)) /* moved by the recovery: the columns name the groups */
        return read_columns(x, r, i);
    return read_field_groups(x, failed, cJSON_GetObjectItemCaseSensitive(x->json, "acked"));
}

void my_dead_release(struct my_dead *x)
{
    cJSON_Delete(x->json);
    free(x->fail);
    free(x->succ);
    x->json = NULL;
    x->fail = x->succ = NULL;
}

void my_dead_free(struct my_dead *x)
{
    my_dead_release(x);
    kq_dlq_groups_buf_free(&x->gb);
}
