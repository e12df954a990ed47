/* on_dead asked about a message whose header is only in the store (broker/msg_hooks.c):
 * when it cannot be read back - no memory for the request, or the store refuses it - the hook
 * still decides, without the message's properties, and the log says so (it said nothing).
 * Runs kq_dead_hook on a hand-built broker (policy, atoms, a fake store); this program is
 * linked with --wrap=calloc (CMakeLists.txt does it for the __wrap_ below). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "broker/internal.h"
#include "policy/policy.h"
#include "support/assert_text.h"
#include "support/log_capture.h"
#include "support/policy_dir.h"

/* The next callocs_to_fail callocs fail, as when memory runs out. */
void *__real_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size);
static int callocs_to_fail;

void *__wrap_calloc(size_t n, size_t size)
{
    if (callocs_to_fail > 0) {
        callocs_to_fail--;
        return NULL;
    }
    return __real_calloc(n, size);
}

static int loads; /* the fake store refuses every read */
static int refuse_load(struct kq_store *s, const char *id, kq_store_load_cb cb, void *ud)
{
    (void)s, (void)id, (void)cb, (void)ud;
    loads++;
    return -EIO;
}

static void test_on_dead_without_properties_is_logged(void **state)
{
    (void)state;
    char err[512];
    struct kq_broker b = {0};
    assert_int_equal(kq_policy_load(policy_dir("dead-memory", "retry.lua",
                                               "return { on_dead = function(m, reason)\n"
                                               "  return 'dlq'\n"
                                               "end }\n"),
                                    &b.policy, err, sizeof err),
                     0);
    static const struct kq_store_ops ops = {.load = refuse_load};
    struct kq_store store = {.ops = &ops};
    b.store = &store;
    struct kq_stored_msg sm = {.id = "0123456789abcdef0123456789abcdef",
                               .cmd = 0x11,
                               .topic = "trade",
                               .message_type = "pay-succ",
                               .publish_group = "p-trade",
                               .commit = true,
                               .deliver_limit = 10};
    struct kq_msg *m = kq_msg_new(&b, &sm, false); /* evicted: its header is in the store */
    assert_non_null(m);
    m->stored = true;

    log_capture_begin();
    /* no memory for the read-back request: the hook answers at once ('dlq') */
    callocs_to_fail = 1;
    assert_false(kq_dead_hook(&b, m, "expired"));
    assert_int_equal(loads, 0);
    assert_false(m->loading);
    assert_false(kq_dead_hook(&b, m, "expired")); /* the store refuses the read */
    assert_int_equal(loads, 1);
    assert_false(m->loading);
    char *log = log_capture_end(KQ_LOG_ERROR);
    assert_has(log, "delivery: on_dead sees id=0123456789abcdef0123456789abcdef without its "
                    "properties: out of memory to read it back from the store");
    assert_has(log, "delivery: on_dead sees id=0123456789abcdef0123456789abcdef without its "
                    "properties: the store cannot read it back: Input/output error");
    free(log);
    kq_msg_free(m);
    kq_atoms_free(&b);
    kq_policy_free(b.policy);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_on_dead_without_properties_is_logged),
    };
    return cmocka_run_group_tests(tests, policy_tmp_setup, policy_tmp_teardown);
}
