#include "support/policy_dir.h"
#include "support/test_files.h"
#include "support/tmp_dir.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "config/config.h"
#include "core/log.h"
#include "registry/bindings.h"

char policy_tmp[64];

int policy_tmp_setup(void **state)
{
    (void)state;
    kq_log_set_level(KQ_LOG_ERROR);
    return tmp_dir_make(policy_tmp, sizeof policy_tmp, "kq-policy-");
}

int policy_tmp_teardown(void **state)
{
    (void)state;
    return tmp_dir_remove(policy_tmp);
}

const char *policy_dir(const char *name, const char *file, const char *content)
{
    return policy_dir_write(policy_tmp, name, file, content);
}

const char *policy_dir_write(const char *root, const char *name, const char *file,
                             const char *content)
{
    static char dir[256];
    char path[512];
    snprintf(dir, sizeof dir, "%s/%s", root, name);
    mkdir(dir, 0700); /* may exist: a second file in the same folder */
    snprintf(path, sizeof path, "%s/%s", dir, file);
    test_write_file(path, content);
    return dir;
}

struct kq_policy_hook_stats policy_hook_stats(const struct kq_policy *p, const char *name)
{
    struct kq_policy_hook_stats st[KQ_POLICY_HOOKS];
    size_t n = kq_policy_stats(p, st, KQ_POLICY_HOOKS);
    for (size_t i = 0; i < n; i++)
        if (strcmp(st[i].name, name) == 0)
            return st[i];
    fail_msg("no hook %s", name);
    return st[0];
}

struct kq_binding_set *policy_binding_set(struct kq_binding *b, size_t n)
{
    struct kq_config cfg = {0};
    cfg.bindings = b;
    cfg.n_bindings = n;
    struct kq_binding_set *s = kq_binding_set_from_config(&cfg);
    assert_non_null(s);
    return s;
}
