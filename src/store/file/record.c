#include "store/file/record.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store/file/crc32c.h"

enum fs_parse fs_rec_parse(const uint8_t *p, size_t avail, struct fs_rec *r, size_t *total)
{
    *total = 0;
    if (avail < FS_HDR)
        return FS_REC_SHORT;
    uint32_t magic, crc, len;
    memcpy(&magic, p, 4);
    memcpy(&crc, p + 4, 4);
    memcpy(&len, p + 8, 4);
    if (magic != FS_MAGIC || len > FS_MAX_PAYLOAD)
        return FS_REC_BAD;
    *total = FS_HDR + (size_t)len;
    if (avail < *total)
        return FS_REC_SHORT;
    if (kq_crc32c(0, p + 8, *total - 8) != crc)
        return FS_REC_BAD;
    r->type = p[12];
    memcpy(&r->seq, p + 13, 8);
    r->payload = p + FS_HDR;
    r->len = len;
    return FS_REC_OK;
}

int fs_rec_begin(struct kq_buf *b, uint8_t type, uint64_t seq, size_t *start)
{
    if (kq_buf_reserve(b, FS_HDR + 64))
        return -ENOMEM;
    *start = b->len;
    uint8_t *h = b->data + b->len;
    uint32_t magic = FS_MAGIC;
    memcpy(h, &magic, 4);
    memset(h + 4, 0, 8);
    h[12] = type;
    memcpy(h + 13, &seq, 8);
    b->len += FS_HDR;
    return 0;
}

int fs_rec_end(struct kq_buf *b, size_t start)
{
    size_t plen = b->len - start - FS_HDR;
    if (plen > FS_MAX_PAYLOAD) {
        b->len = start;
        return -EINVAL;
    }
    uint32_t len = (uint32_t)plen;
    uint8_t *h = b->data + start;
    memcpy(h + 8, &len, 4);
    uint32_t crc = kq_crc32c(0, h + 8, FS_HDR - 8 + plen);
    memcpy(h + 4, &crc, 4);
    return 0;
}

/* ---- little put/get helpers ------------------------------------------------------------ */

#define PUT(b, v)                                                                                  \
    do {                                                                                           \
        __typeof__(v) v_ = (v);                                                                    \
        if (kq_buf_append((b), &v_, sizeof v_))                                                    \
            return -ENOMEM;                                                                        \
    } while (0)

/* Strings: u16 length, bytes, NUL (so that decoded pointers can be used as C strings). */
static int put_str(struct kq_buf *b, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n > UINT16_MAX)
        return -EINVAL;
    PUT(b, (uint16_t)n);
    if (kq_buf_append(b, s ? s : "", n + 1))
        return -ENOMEM;
    return 0;
}

static int put_bytes(struct kq_buf *b, const uint8_t *p, uint32_t n)
{
    PUT(b, n);
    if (n && kq_buf_append(b, p, n))
        return -ENOMEM;
    return 0;
}

bool fs_id_key(const char *id, char key[KQ_ID_LEN + 1])
{
    memset(key, 0, KQ_ID_LEN + 1);
    if (!id)
        return false;
    size_t n = strnlen(id, KQ_ID_LEN + 1);
    if (n == 0 || n > KQ_ID_LEN)
        return false;
    memcpy(key, id, n);
    return true;
}

int fs_put_id(struct kq_buf *b, const char *id)
{
    char key[KQ_ID_LEN + 1];
    if (!fs_id_key(id, key))
        return -EINVAL;
    return kq_buf_append(b, key, KQ_ID_LEN) ? -ENOMEM : 0;
}

int fs_put_msg(struct kq_buf *b, const struct kq_stored_msg *m, uint64_t orig_seq)
{
    int rc;
    if ((rc = fs_put_id(b, m->id)))
        return rc;
    PUT(b, orig_seq);
    PUT(b, m->cmd);
    PUT(b, (uint8_t)(m->commit ? 1 : 0));
    PUT(b, m->publish_time);
    PUT(b, m->expired_time);
    PUT(b, m->deliver_limit);
    if ((rc = put_str(b, m->topic)) || (rc = put_str(b, m->message_type)) ||
        (rc = put_str(b, m->publish_group)) || (rc = put_bytes(b, m->header, m->header_len)) ||
        (rc = put_bytes(b, m->body, m->body_len)))
        return rc;
    return 0;
}

static int put_groups(struct kq_buf *b, const char **g, size_t n)
{
    if (n > UINT16_MAX)
        return -EINVAL;
    PUT(b, (uint16_t)n);
    for (size_t i = 0; i < n; i++) {
        int rc = put_str(b, g[i]);
        if (rc)
            return rc;
    }
    return 0;
}

int fs_put_state_body(struct kq_buf *b, const struct kq_delivery_state *st)
{
    PUT(b, st->attempts);
    PUT(b, st->next_attempt_ms);
    PUT(b, st->tx_checks);
    int rc = put_groups(b, st->groups_done, st->n_done);
    return rc ? rc : put_groups(b, st->groups_failed, st->n_failed);
}

static int put_failed(struct kq_buf *b, const struct kq_dlq_groups *g)
{
    if (g->n_failed > UINT16_MAX)
        return -EINVAL;
    PUT(b, (uint16_t)g->n_failed);
    for (size_t i = 0; i < g->n_failed; i++) {
        int rc = put_str(b, g->failed[i].group);
        if (rc || (rc = put_str(b, g->failed[i].reason)))
            return rc;
    }
    return put_groups(b, (const char **)g->acked, g->n_acked);
}

int fs_put_dead(struct kq_buf *b, const struct kq_stored_msg *m, const char *reason,
                int64_t dead_time, const struct kq_dlq_groups *groups)
{
    PUT(b, dead_time);
    int rc = put_str(b, reason);
    if (!rc && groups)
        rc = put_failed(b, groups);
    return rc ? rc : fs_put_msg(b, m, 0);
}

struct rd {
    const uint8_t *p;
    size_t n;
    bool bad;
};

static const uint8_t *take(struct rd *r, size_t n)
{
    if (r->bad || r->n < n) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    r->n -= n;
    return p;
}

#define GET(r, v)                                                                                  \
    do {                                                                                           \
        const uint8_t *q_ = take((r), sizeof(v));                                                  \
        if (q_)                                                                                    \
            memcpy(&(v), q_, sizeof(v));                                                           \
        else                                                                                       \
            memset(&(v), 0, sizeof(v));                                                            \
    } while (0)

static const char *get_str(struct rd *r)
{
    uint16_t n;
    GET(r, n);
    const uint8_t *s = take(r, (size_t)n + 1);
    if (!s || s[n] != 0) {
        r->bad = true;
        return "";
    }
    return (const char *)s;
}

static const uint8_t *get_bytes(struct rd *r, uint32_t *n)
{
    GET(r, *n);
    return take(r, *n);
}

static void get_id(struct rd *r, char id[KQ_ID_LEN + 1])
{
    const uint8_t *p = take(r, KQ_ID_LEN);
    memset(id, 0, KQ_ID_LEN + 1);
    if (p)
        memcpy(id, p, KQ_ID_LEN);
    if (!id[0])
        r->bad = true;
}

int fs_get_id(const uint8_t *p, size_t n, char id[KQ_ID_LEN + 1])
{
    struct rd r = {p, n, false};
    get_id(&r, id);
    return r.bad ? -EINVAL : 0;
}

static void get_msg(struct rd *r, struct kq_stored_msg *m, uint64_t *orig_seq)
{
    uint8_t flags;
    uint64_t os;
    memset(m, 0, sizeof *m);
    get_id(r, m->id);
    GET(r, os);
    if (orig_seq)
        *orig_seq = os;
    GET(r, m->cmd);
    GET(r, flags);
    m->commit = flags & 1;
    GET(r, m->publish_time);
    GET(r, m->expired_time);
    GET(r, m->deliver_limit);
    m->topic = get_str(r);
    m->message_type = get_str(r);
    m->publish_group = get_str(r);
    m->header = get_bytes(r, &m->header_len);
    m->body = get_bytes(r, &m->body_len);
}

int fs_get_msg(const uint8_t *p, size_t n, struct kq_stored_msg *m, uint64_t *orig_seq)
{
    struct rd r = {p, n, false};
    get_msg(&r, m, orig_seq);
    return r.bad ? -EINVAL : 0;
}

static const char **get_groups(struct rd *r, size_t *count)
{
    uint16_t n;
    GET(r, n);
    *count = 0;
    if (r->bad || n == 0)
        return NULL;
    const char **g = calloc(n, sizeof *g);
    if (!g) {
        r->bad = true;
        return NULL;
    }
    for (uint16_t i = 0; i < n; i++)
        g[i] = get_str(r);
    *count = n;
    return g;
}

int fs_get_state_body(const uint8_t *p, size_t n, struct kq_delivery_state *st)
{
    struct rd r = {p, n, false};
    GET(&r, st->attempts);
    GET(&r, st->next_attempt_ms);
    GET(&r, st->tx_checks);
    st->groups_done = get_groups(&r, &st->n_done);
    st->groups_failed = get_groups(&r, &st->n_failed);
    if (r.bad) {
        fs_state_free(st);
        return -EINVAL;
    }
    return 0;
}

void fs_state_free(struct kq_delivery_state *st)
{
    free(st->groups_done);
    free(st->groups_failed);
    st->groups_done = st->groups_failed = NULL;
    st->n_done = st->n_failed = 0;
}

/* The groups of a DLQ_ADD_GROUPS payload: into gb, or only stepped over (gb NULL). */
static void get_failed(struct rd *r, struct kq_dlq_groups *g, struct kq_dlq_groups_buf *gb)
{
    uint16_t nf, na;
    GET(r, nf);
    if (gb && kq_dlq_groups_buf_fit(gb, nf, 0))
        r->bad = true;
    for (uint16_t i = 0; i < nf && !r->bad; i++) {
        const char *group = get_str(r), *reason = get_str(r);
        if (gb)
            gb->failed[i] = (struct kq_dlq_group){group, reason};
    }
    GET(r, na);
    if (gb && !r->bad && kq_dlq_groups_buf_fit(gb, 0, na))
        r->bad = true;
    for (uint16_t i = 0; i < na && !r->bad; i++) {
        const char *group = get_str(r);
        if (gb)
            gb->acked[i] = group;
    }
    if (gb && !r->bad)
        *g = (struct kq_dlq_groups){gb->failed, nf, gb->acked, na};
}

int fs_get_dead(uint8_t type, const uint8_t *p, size_t n, struct kq_dead_letter *d,
                struct kq_dlq_groups_buf *gb)
{
    struct rd r = {p, n, false};
    memset(d, 0, sizeof *d);
    GET(&r, d->dead_time);
    d->reason = get_str(&r);
    if (type == FS_DLQ_ADD_GROUPS) {
        get_failed(&r, &d->groups, gb);
        d->groups_known = gb != NULL;
    }
    get_msg(&r, &d->msg, NULL);
    return r.bad ? -EINVAL : 0;
}
