/* Takeover of a dead broker's messages (beyond the original). Brokers sharing one store (MySQL:
 * kq_store_ops.owner/takeover) and one ZooKeeper see each other in /kiteq/alive_servers; each one's rows carry its
 * kite_server (= its advertised "host:port"). A broker missing from alive_servers (but
 * listed in all_servers) for takeoverSeconds is taken over by exactly one survivor: the one
 * that creates the ephemeral lock node; it moves the rows to itself, delivers them, and
 * leaves a .done marker (deleted again by the dead broker when it registers anew).
 *
 * The store moves the rows page by page on its workers (500 rows per transaction) and hands
 * each page to the loop, where the rows are adopted: nothing waits for the server. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "broker/internal.h"
#include "core/clock.h"
#include "core/log.h"
#include "registry/zk_registry.h"

#define MOD "takeover"
#define CHECK_MS 1000

enum peer_state { PEER_ALIVE, PEER_GONE, PEER_ASKED, PEER_MOVING, PEER_DONE };

struct peer {
    char *name;
    enum peer_state state;
    uint64_t gone_since_ms; /* PEER_GONE: monotonic ms it was first seen missing */
};

/* One takeover in progress; outlives kq_takeover_stop (the store still calls back). */
struct run {
    struct kq_broker *b;
    bool cancelled; /* the broker stops: adopt nothing more */
    size_t before;  /* pending messages at the start */
    uint64_t t0_us;
    struct run *next;
    char dead[];
};

struct kq_takeover {
    struct kq_broker *b;
    uv_timer_t timer;
    char self[256];
    struct peer *peers;
    size_t n;
    struct run *runs;
};

static void on_timer_closed(uv_handle_t *h) { free(h->data); }

static struct peer *peer_get(struct kq_takeover *t, const char *name, bool add)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->peers[i].name, name) == 0)
            return &t->peers[i];
    if (!add)
        return NULL;
    struct peer *p = realloc(t->peers, (t->n + 1) * sizeof *p);
    if (!p)
        return NULL;
    t->peers = p;
    p = &t->peers[t->n];
    if (!(p->name = strdup(name)))
        return NULL;
    t->n++;
    p->state = PEER_ALIVE;
    p->gone_since_ms = 0;
    return p;
}

static bool listed(char *const *v, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], name) == 0)
            return true;
    return false;
}

void kq_takeover_on_servers(struct kq_broker *b, char *const *alive, size_t n_alive,
                            char *const *all, size_t n_all)
{
    struct kq_takeover *t = b->takeover;
    if (!t)
        return;
    uint64_t now = kq_broker_mono_ms();
    for (size_t i = 0; i < n_alive; i++) {
        struct peer *p = peer_get(t, alive[i], true);
        if (p && p->state != PEER_ALIVE) {
            KQ_INFO(MOD, "server=%s is alive again", p->name);
            p->state = PEER_ALIVE; /* back (restarted): a later death counts anew */
        }
    }
    for (size_t i = 0; i < n_all; i++) {
        if (strcmp(all[i], t->self) == 0 || listed(alive, n_alive, all[i]))
            continue;
        struct peer *p = peer_get(t, all[i], true);
        if (p && p->state == PEER_ALIVE) {
            p->state = PEER_GONE;
            p->gone_since_ms = now;
            KQ_INFO(MOD,
                    "server=%s is gone; taking over its messages in %d s unless it "
                    "comes back",
                    p->name, b->cfg->takeover_seconds);
        }
    }
}

static void on_row(void *ud, const struct kq_stored_msg *m, const struct kq_delivery_state *st)
{
    struct run *r = ud;
    if (r->cancelled)
        return;
    kq_broker_adopt(r->b, m, st);
    kq_delivery_rearm(r->b); /* delivered while the next pages are moved */
}

static void on_moved(void *ud, int rc, uint64_t moved)
{
    struct run *r = ud;
    struct kq_broker *b = r->b;
    struct kq_takeover *t = r->cancelled ? NULL : b->takeover;
    if (t) {
        for (struct run **p = &t->runs; *p; p = &(*p)->next)
            if (*p == r) {
                *p = r->next;
                break;
            }
        KQ_INFO(MOD, "server=%s taken over: moved=%llu adopted=%zu ms=%llu%s%s", r->dead,
                (unsigned long long)moved, b->msgs.len - r->before,
                (unsigned long long)((kq_mono_us() - r->t0_us) / 1000), rc ? " error=" : "",
                rc ? strerror(-rc) : "");
        if (b->zk)
            kq_zk_registry_takeover_finish(b->zk, r->dead, rc == 0);
        struct peer *p = peer_get(t, r->dead, false);
        if (p && rc == 0) {
            p->state = PEER_DONE;
        } else if (p) { /* what is left stays under the dead name: try again after the grace */
            p->state = PEER_GONE;
            p->gone_since_ms = kq_broker_mono_ms();
        }
    }
    free(r);
}

void kq_takeover_on_lock(struct kq_broker *b, const char *dead, int result)
{
    struct kq_takeover *t = b->takeover;
    struct peer *p = t ? peer_get(t, dead, false) : NULL;
    if (!p || p->state != PEER_ASKED) {
        if (result == KQ_TAKEOVER_LOCKED && b->zk) /* not wanted any more: release */
            kq_zk_registry_takeover_finish(b->zk, dead, false);
        return;
    }
    if (result == KQ_TAKEOVER_NOT_NEEDED) {
        p->state = PEER_DONE;
        KQ_INFO(MOD, "server=%s: nothing to do (taken over already, or alive)", dead);
        return;
    }
    if (result != KQ_TAKEOVER_LOCKED) { /* another broker works on it: look again later */
        p->state = PEER_GONE;
        p->gone_since_ms = kq_broker_mono_ms();
        return;
    }
    struct run *r = calloc(1, sizeof *r + strlen(dead) + 1);
    int rc = r ? 0 : -ENOMEM;
    if (r) {
        r->b = b;
        r->before = b->msgs.len;
        r->t0_us = kq_mono_us();
        strcpy(r->dead, dead);
        rc = b->store->ops->takeover(b->store, dead, on_row, on_moved, r);
    }
    if (rc) {
        KQ_ERROR(MOD, "server=%s: takeover not started: %s", dead, strerror(-rc));
        free(r);
        if (b->zk)
            kq_zk_registry_takeover_finish(b->zk, dead, false);
        p->state = PEER_GONE;
        p->gone_since_ms = kq_broker_mono_ms();
        return;
    }
    p->state = PEER_MOVING;
    r->next = t->runs;
    t->runs = r;
}

static void on_timer(uv_timer_t *h)
{
    struct kq_takeover *t = h->data;
    struct kq_broker *b = t->b;
    if (b->stopping || !b->zk)
        return;
    uint64_t now = kq_broker_mono_ms(), grace = (uint64_t)b->cfg->takeover_seconds * 1000;
    for (size_t i = 0; i < t->n; i++) {
        struct peer *p = &t->peers[i];
        if (p->state == PEER_GONE && now - p->gone_since_ms >= grace) {
            p->state = PEER_ASKED;
            kq_zk_registry_takeover_lock(b->zk, p->name);
        }
    }
}

int kq_takeover_start(struct kq_broker *b)
{
    char key[512];
    const char *self = NULL;
    const struct kq_store_ops *ops = b->store->ops;
    if (!b->zk || !ops->owner || !ops->takeover || ops->owner(b->store, &self, key, sizeof key))
        return 0; /* a store of this broker alone (file, memory): nothing to take over */
    for (char *c = key; *c; c++)
        if (*c == '/')
            *c = '_';
    struct kq_takeover *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    t->b = b;
    snprintf(t->self, sizeof t->self, "%s", self);
    uv_timer_init(b->loop, &t->timer);
    t->timer.data = t;
    uv_timer_start(&t->timer, on_timer, CHECK_MS, CHECK_MS);
    b->takeover = t;
    char bind[256];
    kq_broker_advertised(b, bind, sizeof bind);
    if (strcmp(bind, self) != 0)
        KQ_WARN(MOD,
                "store server=%s differs from the registered address %s: takeover "
                "of this broker's messages by others will not find them",
                self, bind);
    kq_zk_registry_watch_servers(b->zk, key);
    KQ_INFO(MOD, "watching brokers of %s (takeoverSeconds=%d)", key, b->cfg->takeover_seconds);
    return 0;
}

void kq_takeover_stop(struct kq_broker *b)
{
    struct kq_takeover *t = b->takeover;
    if (!t)
        return;
    b->takeover = NULL;
    for (struct run *r = t->runs; r; r = r->next)
        r->cancelled = true; /* freed by on_moved, when the store is done with it */
    for (size_t i = 0; i < t->n; i++)
        free(t->peers[i].name);
    free(t->peers);
    t->peers = NULL;
    t->n = 0;
    uv_timer_stop(&t->timer);
    uv_close((uv_handle_t *)&t->timer, on_timer_closed);
}
