/* Groups of authenticated connections and the choice of one connection per delivery. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "broker/internal.h"

struct kq_group *kq_group_get(struct kq_broker *b, const char *id, bool create)
{
    struct kq_group *g;
    HASH_FIND_STR(b->groups, id, g);
    if (g || !create)
        return g;
    if (strlen(id) >= KQ_GROUP_MAX)
        return NULL;
    g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    strcpy(g->id, id);
    g->atom = kq_atom(b, id); /* NULL (out of memory): the lists intern it themselves */
    HASH_ADD_STR(b->groups, id, g);
    return g;
}

int kq_group_join(struct kq_group *g, struct kq_session *s)
{
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 4;
        struct kq_session **p = realloc(g->members, cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        g->members = p;
        g->cap = cap;
    }
    s->group_pos = g->n;
    g->members[g->n++] = s;
    return 0;
}

void kq_group_leave(struct kq_group *g, struct kq_session *s)
{
    size_t i = s->group_pos;
    if (i >= g->n || g->members[i] != s)
        return;
    g->members[i] = g->members[--g->n];
    g->members[i]->group_pos = i;
}

/* Warm-up: a new connection takes a growing share of deliveries during warmingupSec, from
 * about 1% to 100%, like the original's ramp. */
static bool warm_enough(const struct kq_session *s, uint64_t now_ms)
{
    if (s->warmup_sec <= 0)
        return true;
    uint64_t age = now_ms - s->auth_ms;
    uint64_t rate = age * 100 / ((uint64_t)s->warmup_sec * 1000);
    if (rate >= 100)
        return true;
    return (uint64_t)(rand() % 100) <= rate;
}

struct kq_session *kq_group_pick(struct kq_group *g, uint64_t now_ms)
{
    for (size_t k = 0, start = g && g->n ? (size_t)rand() % g->n : 0; g && k < g->n; k++) {
        struct kq_session *s = g->members[(start + k) % g->n];
        if (!kq_conn_closing(s->conn) && warm_enough(s, now_ms))
            return s;
    }
    return NULL;
}

struct kq_session *kq_group_pick_delivery(struct kq_group *g, uint64_t now_ms,
                                          enum kq_pick_fail *why)
{
    *why = KQ_PICK_OFFLINE;
    if (!g || g->n == 0)
        return NULL;
    size_t start = g->n > 1 ? (size_t)rand() % g->n : 0; /* one connection: no draw */
    for (size_t k = 0; k < g->n; k++) {
        struct kq_session *s = g->members[(start + k) % g->n];
        if (kq_conn_closing(s->conn))
            continue;
        if (!warm_enough(s, now_ms)) {
            if (*why == KQ_PICK_OFFLINE)
                *why = KQ_PICK_WARMING;
            continue;
        }
        if (kq_delivery_session_has_room(s))
            return s;
        *why = KQ_PICK_FULL; /* a warm connection will have room again: wait for it */
    }
    return NULL;
}

uint64_t kq_group_warm_in_ms(const struct kq_group *g, uint64_t now_ms)
{
    uint64_t best = UINT64_MAX;
    for (size_t k = 0; g && k < g->n; k++) {
        const struct kq_session *s = g->members[k];
        uint64_t end = s->auth_ms + (uint64_t)(s->warmup_sec > 0 ? s->warmup_sec : 0) * 1000;
        uint64_t left = end > now_ms ? end - now_ms : 0;
        if (left < best)
            best = left;
    }
    return best == UINT64_MAX ? 0 : best;
}

void kq_groups_free(struct kq_broker *b)
{
    struct kq_group *g, *tmp;
    HASH_ITER (hh, b->groups, g, tmp) {
        HASH_DEL(b->groups, g);
        free(g->members);
        while (g->wait_head) {
            struct kq_wait *w = g->wait_head;
            g->wait_head = w->next;
            free(w);
        }
        for (size_t i = 0; i < g->n_rates; i++) {
            free(g->rates[i].topic);
            kq_atom_release(g->rates[i].topic_atom);
        }
        free(g->rates);
        kq_atom_release(g->atom);
        free(g);
    }
}
