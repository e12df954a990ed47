/* The subscriptions the broker routes by: bindings grouped by topic and group.
 * A set is immutable once built. A change (a ZooKeeper bind node changed, a reload) builds a
 * new set with generation + 1 and the broker swaps the pointer on the loop thread, so
 * anything memoised from a set (routing answers) is valid while the generation matches. */
#ifndef KQ_REGISTRY_BINDINGS_H
#define KQ_REGISTRY_BINDINGS_H
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

struct kq_binding_set;

/* The static bindings of the config (registry = ""). NULL on OOM. Every set built by
 * these functions has a generation greater than any earlier set's. */
struct kq_binding_set *kq_binding_set_from_config(const struct kq_config *cfg);
/* An empty set (ZooKeeper registry before the first read). */
struct kq_binding_set *kq_binding_set_empty(void);
/* A copy of `old` where the bindings of (topic, group) are replaced by binds[0..n);
 * n == 0 removes that group from the topic (other groups keep theirs). NULL on OOM. */
struct kq_binding_set *kq_binding_set_with_group(const struct kq_binding_set *old,
                                                 const char *topic, const char *group,
                                                 const struct kq_binding *binds, size_t n);
/* Every binding of a topic (any group), in a stable order; *n = 0 when none. */
const struct kq_binding *kq_binding_set_topic(const struct kq_binding_set *s, const char *topic,
                                              size_t *n);
/* How many distinct groups have bindings on a topic. */
size_t kq_binding_set_topic_groups(const struct kq_binding_set *s, const char *topic);
/* Every binding of the set (for /binds and tests). */
const struct kq_binding *kq_binding_set_all(const struct kq_binding_set *s, size_t *n);
uint64_t kq_binding_set_generation(const struct kq_binding_set *s);
void kq_binding_set_free(struct kq_binding_set *s);

/* Parse the original's binding JSON (a ZooKeeper `<group>-bind` node): an array of
 * {"groupId","topic","messageType","bindType":0|1|2,"version","watermark","persistent"}.
 * Returns the number of bindings (>= 0) in a malloc'd array *out (free with
 * kq_bindings_free), or -EINVAL with a reason in err. */
int kq_bindings_from_json(const char *json, size_t len, struct kq_binding **out, char *err,
                          size_t errlen);
/* Serialise bindings as the original clients write them. Returns a malloc'd string. */
char *kq_bindings_to_json(const struct kq_binding *binds, size_t n);
void kq_bindings_free(struct kq_binding *binds, size_t n);
#endif
