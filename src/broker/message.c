/* The broker's in-memory record of one pending message (struct kq_msg), kept small because
 * a backlog can hold millions: names are interned atoms shared by every message, and a
 * stored message's header and body are dropped while it waits for a later attempt (the
 * store has them; they are loaded back for the attempt). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "broker/internal.h"

/* 152 bytes is a 160-byte glibc chunk; one byte more costs 16 per pending message. */
_Static_assert(sizeof(struct kq_msg) <= 152, "struct kq_msg grew past 152 bytes");

/* An interned name, counted: it lives while a message, a group list or a group (its own
 * name) refers to it, so a stream of distinct messageTypes does not grow memory for good. */
struct kq_atom {
    UT_hash_handle hh;
    struct kq_atom **table; /* the broker's b->atoms, to leave it on the last release */
    uint32_t refs;
    char s[];
};

#define ATOM_OF(str) ((struct kq_atom *)((char *)(str)-offsetof(struct kq_atom, s)))

const char *kq_atom(struct kq_broker *b, const char *s) { return kq_atom_in(&b->atoms, s); }

const char *kq_atom_in(struct kq_atom **table, const char *s)
{
    if (!s)
        s = "";
    struct kq_atom *a;
    HASH_FIND_STR(*table, s, a);
    if (a) {
        a->refs++;
        return a->s;
    }
    size_t n = strlen(s);
    a = malloc(sizeof *a + n + 1);
    if (!a)
        return NULL;
    memcpy(a->s, s, n + 1);
    a->table = table;
    a->refs = 1;
    HASH_ADD_KEYPTR(hh, *table, a->s, n, a);
    return a->s;
}

const char *kq_atom_ref(const char *atom)
{
    if (atom)
        ATOM_OF(atom)->refs++;
    return atom;
}

const char *kq_atom_find(struct kq_broker *b, const char *s)
{
    struct kq_atom *a;
    HASH_FIND_STR(b->atoms, s ? s : "", a);
    return a ? a->s : NULL;
}

void kq_atom_release(const char *atom)
{
    if (!atom)
        return;
    struct kq_atom *a = ATOM_OF(atom);
    if (--a->refs == 0) {
        HASH_DEL(*a->table, a);
        free(a);
    }
}

size_t kq_atoms_count(const struct kq_broker *b) { return kq_atoms_count_table(b->atoms); }

size_t kq_atoms_count_table(const struct kq_atom *table) { return HASH_COUNT(table); }

void kq_atoms_free(struct kq_broker *b) { kq_atoms_free_table(&b->atoms); }

void kq_atoms_free_table(struct kq_atom **table)
{
    struct kq_atom *a, *tmp;
    HASH_ITER (hh, *table, a, tmp) {
        HASH_DEL(*table, a);
        free(a);
    }
}

int kq_msg_set_block(struct kq_msg *m, const uint8_t *header, uint32_t header_len,
                     const uint8_t *body, uint32_t body_len)
{
    struct kq_msg_block *blk = malloc(sizeof *blk + (size_t)header_len + body_len);
    if (!blk)
        return -ENOMEM;
    blk->header_len = header_len;
    blk->body_len = body_len;
    memcpy(blk->data, header, header_len);
    if (body_len)
        memcpy(blk->data + header_len, body, body_len);
    free(m->block);
    m->block = blk;
    return 0;
}

void kq_msg_evict(struct kq_msg *m)
{
    if (!m->stored || !m->block)
        return;
    free(m->block);
    m->block = NULL;
}

/* Consumers should see commit=true in the header of a committed message (the original
 * delivered commit=false). No-op while the message is evicted: it is applied on load. */
void kq_msg_mark_header_committed(struct kq_msg *m)
{
    if (!m->block || m->hdr_committed || kq_header_committed(KQ_MSG_HDR(m), KQ_MSG_HDR_LEN(m)))
        return; /* nothing to do for every message published committed (the usual case) */
    struct kq_arena a;
    kq_arena_init(&a, KQ_HEADER_ARENA_CHUNK);
    struct kq_header_view h;
    uint8_t *hdr;
    size_t len;
    if (kq_header_decode(&a, KQ_MSG_HDR(m), KQ_MSG_HDR_LEN(m), &h) == 0 && !h.commit) {
        h.commit = true;
        if (kq_header_encode(&a, &h, &hdr, &len) == 0) {
            uint8_t *body = malloc(KQ_MSG_BODY_LEN(m) + 1);
            if (body) {
                memcpy(body, KQ_MSG_BODY(m), KQ_MSG_BODY_LEN(m));
                kq_msg_set_block(m, hdr, (uint32_t)len, body, KQ_MSG_BODY_LEN(m));
                free(body);
            }
        }
    }
    kq_arena_free(&a);
}

static const char *const failures[] = {
    NULL, "nack", "timeout", "connection lost", "no consumer online", "over flow"};
_Static_assert(sizeof failures / sizeof failures[0] <= 8, "kq_msg.failure has 3 bits");

const char *kq_msg_failure(const struct kq_msg *m)
{
    return m->failure < sizeof failures / sizeof failures[0] ? failures[m->failure] : NULL;
}

void kq_msg_set_failure(struct kq_msg *m, const char *why)
{
    for (uint8_t i = 1; i < sizeof failures / sizeof failures[0]; i++)
        if (strcmp(failures[i], why) == 0) {
            m->failure = i;
            return;
        }
    m->failure = 1; /* anything else counts as a refusal */
}

struct kq_msg *kq_msg_new(struct kq_broker *b, const struct kq_stored_msg *sm, bool with_body)
{
    struct kq_msg *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    memcpy(m->id, sm->id, sizeof m->id);
    m->cmd = sm->cmd;
    m->commit = sm->commit;
    m->topic = kq_atom(b, sm->topic);
    m->type = kq_atom(b, sm->message_type);
    m->pub_group = kq_atom(b, sm->publish_group);
    m->publish_time = sm->publish_time;
    m->expired_time = sm->expired_time;
    m->deliver_limit = sm->deliver_limit;
    m->timer.pos = KQ_HEAP_NONE;
    if (!m->topic || !m->type || !m->pub_group ||
        (with_body && kq_msg_set_block(m, sm->header, sm->header_len, sm->body, sm->body_len))) {
        kq_msg_free(m);
        return NULL;
    }
    return m;
}

void kq_msg_free(struct kq_msg *m)
{
    if (!m)
        return;
    free(m->block);
    kq_names_clear(&m->done, &m->n_done);
    kq_names_clear(&m->failed, &m->n_failed);
    kq_atom_release(m->topic);
    kq_atom_release(m->type);
    kq_atom_release(m->pub_group);
    free(m);
}

void kq_msg_to_stored(const struct kq_msg *m, struct kq_stored_msg *sm)
{
    memset(sm, 0, sizeof *sm);
    memcpy(sm->id, m->id, sizeof sm->id);
    sm->cmd = m->cmd;
    sm->topic = m->topic;
    sm->message_type = m->type;
    sm->publish_group = m->pub_group;
    sm->commit = m->commit;
    sm->publish_time = m->publish_time;
    sm->expired_time = m->expired_time;
    sm->deliver_limit = m->deliver_limit;
    if (m->block) { /* NULL while evicted: the store fills in its copy */
        sm->header = KQ_MSG_HDR(m);
        sm->header_len = KQ_MSG_HDR_LEN(m);
        sm->body = KQ_MSG_BODY(m);
        sm->body_len = KQ_MSG_BODY_LEN(m);
    }
}

/* Group lists: a list of one is its name (no allocation), a longer one an array. */
const char *const *kq_names_view(const union kq_names *v, uint16_t n)
{
    return n > 1 ? v->many : &v->one;
}

bool kq_names_has(const union kq_names *v, uint16_t n, const char *atom)
{
    const char *const *names = kq_names_view(v, n);
    for (uint16_t i = 0; i < n; i++)
        if (names[i] == atom)
            return true;
    return false;
}

/* Append atom (a reference the list takes over). The array has room for at least 4 names
 * and grows by doubling: for the next power of two of n (removing never shrinks it), so a
 * fan-out to up to 4 groups allocates once, not three times. */
static int names_append(union kq_names *v, uint16_t *n, const char *atom)
{
    if (*n == 0) {
        v->one = atom;
        *n = 1;
        return 0;
    }
    const char **p = *n > 1 ? v->many : NULL;
    if (*n == 1 || (*n >= 4 && (*n & (*n - 1u)) == 0)) { /* full: 1, 4, 8, 16, ... names */
        p = realloc(p, (*n == 1 ? 4u : 2u * *n) * sizeof *p);
        if (!p) {
            kq_atom_release(atom);
            return -ENOMEM;
        }
    }
    if (*n == 1)
        p[0] = v->one;
    p[(*n)++] = atom;
    v->many = p;
    return 0;
}

int kq_names_add(struct kq_broker *b, union kq_names *v, uint16_t *n, const char *name)
{
    const char *known = kq_atom_find(b, name);
    if (known)
        return kq_names_add_atom(v, n, known);
    if (*n == UINT16_MAX)
        return -E2BIG;
    const char *atom = kq_atom(b, name);
    if (!atom)
        return -ENOMEM;
    return names_append(v, n, atom);
}

int kq_names_add_atom(union kq_names *v, uint16_t *n, const char *atom)
{
    if (kq_names_has(v, *n, atom))
        return 0;
    if (*n == UINT16_MAX)
        return -E2BIG;
    return names_append(v, n, kq_atom_ref(atom));
}

void kq_names_remove(union kq_names *v, uint16_t *n, const char *atom)
{
    if (!atom || !kq_names_has(v, *n, atom))
        return;
    kq_atom_release(atom);
    if (*n == 1) {
        v->one = NULL;
        *n = 0;
        return;
    }
    const char **p = v->many;
    uint16_t i = 0;
    while (p[i] != atom)
        i++;
    memmove(&p[i], &p[i + 1], (size_t)(*n - i - 1) * sizeof *p);
    if (--*n == 1) { /* back to the inline form */
        const char *last = p[0];
        free(p);
        v->one = last;
    }
}

void kq_names_clear(union kq_names *v, uint16_t *n)
{
    const char *const *names = kq_names_view(v, *n);
    for (uint16_t i = 0; i < *n; i++)
        kq_atom_release(names[i]);
    if (*n > 1)
        free(v->many);
    v->many = NULL;
    *n = 0;
}
