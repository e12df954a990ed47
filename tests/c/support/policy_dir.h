/* Policy folders for the policy unit tests, and a loaded policy's per-hook figures. */
#ifndef KQ_TEST_POLICY_DIR_H
#define KQ_TEST_POLICY_DIR_H
#include "policy/policy.h"

/* The policy unit tests' temp root (/tmp/kq-policy-XXXXXX): made by policy_tmp_setup, a
 * cmocka group setup that also sets the log level to error (the failure tests warn on
 * purpose), and removed by policy_tmp_teardown. */
extern char policy_tmp[64];
int policy_tmp_setup(void **state);
int policy_tmp_teardown(void **state);
/* policy_dir_write under policy_tmp. */
const char *policy_dir(const char *name, const char *file, const char *content);

/* Writes root/<name>/<file> (one fresh policy folder per name); returns root/<name> (a
 * static buffer, good until the next call). Fails the running cmocka test when it cannot. */
const char *policy_dir_write(const char *root, const char *name, const char *file,
                             const char *content);
/* A binding set of the n bindings b (a config holding only them); fails the running cmocka
 * test when it cannot be built. The caller frees it with kq_binding_set_free. */
struct kq_binding_set *policy_binding_set(struct kq_binding *b, size_t n);
/* The statistics of hook `name` of p; fails the running cmocka test when p has no such hook. */
struct kq_policy_hook_stats policy_hook_stats(const struct kq_policy *p, const char *name);
#endif
