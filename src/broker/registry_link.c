/* The broker's side of the ZooKeeper registry: bindings reported by the registry replace the
 * binding set (copy-on-write, swapped on the loop thread), the registry's state is kept for
 * the stats, and the first registration makes the broker ready (kq_broker_when_ready). With
 * static bindings (registry = "") the broker is ready once it listens. */
#include <stdio.h>
#include <string.h>

#include "broker/internal.h"
#include "core/log.h"
#include "registry/zk_registry.h"

static void on_bindings(void *ud, const char *topic, const char *group,
                        const struct kq_binding *binds, size_t n)
{
    struct kq_broker *b = ud;
    struct kq_binding_set *next = kq_binding_set_with_group(b->bindings, topic, group, binds, n);
    if (!next) {
        KQ_ERROR("registry", "out of memory applying bindings topic=%s group=%s", topic, group);
        return;
    }
    size_t groups = kq_binding_set_topic_groups(next, topic);
    if (groups > KQ_MAX_GROUPS_PER_TOPIC) {
        KQ_ERROR("registry",
                 "bindings refused topic=%s group=%s: the topic would have %zu bound "
                 "groups, the limit is %d; this group receives nothing from it",
                 topic, group, groups, KQ_MAX_GROUPS_PER_TOPIC);
        kq_binding_set_free(next);
        return;
    }
    kq_binding_set_free(b->bindings);
    b->bindings = next;
    KQ_INFO("registry", "bindings changed topic=%s group=%s bindings=%zu", topic, group, n);
    if (n > 0) /* messages of the topic that had nobody to go to may have someone now */
        kq_delivery_bindings_changed(b, topic);
}

static void on_state(void *ud, const char *state)
{
    struct kq_broker *b = ud;
    b->registry_state = state;
}

static void on_servers(void *ud, char *const *alive, size_t n_alive, char *const *all, size_t n_all)
{
    kq_takeover_on_servers(ud, alive, n_alive, all, n_all);
}

static void on_takeover(void *ud, const char *dead, int result)
{
    kq_takeover_on_lock(ud, dead, result);
}

static void fire_ready(struct kq_broker *b)
{
    void (*cb)(void *) = b->ready_cb;
    b->ready_cb = NULL;
    if (cb)
        cb(b->ready_ud);
}

static void on_registered(void *ud, size_t n_topics)
{
    struct kq_broker *b = ud;
    char bind[256];
    kq_broker_advertised(b, bind, sizeof bind);
    KQ_INFO("registry", "registered bind=%s topics=%zu: clients can find this broker", bind,
            n_topics);
    b->findable = true;
    fire_ready(b);
}

void kq_broker_when_ready(struct kq_broker *b, void (*cb)(void *ud), void *ud)
{
    b->ready_cb = cb;
    b->ready_ud = ud;
    if (b->findable)
        fire_ready(b);
    else
        KQ_INFO("registry", "waiting for the registration in ZooKeeper before ready");
}

static const struct kq_zk_events events = {.on_bindings = on_bindings,
                                           .on_state = on_state,
                                           .on_servers = on_servers,
                                           .on_takeover = on_takeover,
                                           .on_registered = on_registered};

int kq_registry_link_start(struct kq_broker *b, char *err, size_t errlen)
{
    if (!b->cfg->registry || !b->cfg->registry[0]) {
        b->registry_state = "static";
        b->findable = true; /* clients dial the configured address */
        return 0;
    }
    /* Bindings come from ZooKeeper only: start empty, the registry fills it. */
    struct kq_binding_set *empty = kq_binding_set_empty();
    if (!empty) {
        snprintf(err, errlen, "registry: out of memory");
        return -1;
    }
    kq_binding_set_free(b->bindings);
    b->bindings = empty;
    b->registry_state = "connecting";
    /* The bind value is the broker's id in ZooKeeper and the address clients dial, so a
     * listener on port 0 must publish the port it really got, not ":0". */
    char bind[256];
    kq_broker_advertised(b, bind, sizeof bind);
    int rc = kq_zk_registry_start(b->loop, b->cfg->registry, bind, b->cfg->topics, b->cfg->n_topics,
                                  &events, b, &b->zk, err, errlen);
    if (rc == 0)
        rc = kq_takeover_start(b); /* only does something for a mysql store */
    return rc;
}

void kq_registry_link_stop(struct kq_broker *b, void (*done)(void *ud), void *ud)
{
    if (!b->zk) {
        done(ud);
        return;
    }
    kq_takeover_stop(b);
    struct kq_zk_registry *zk = b->zk;
    b->zk = NULL;
    b->registry_state = "stopped";
    kq_zk_registry_stop(zk, done, ud);
}
