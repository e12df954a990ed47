/* The inside of a policy generation, shared by policy.c (loading, the original hooks) and
 * hooks_message.c (route_message, on_connect, on_dead, the kq.now_ms / kq.log helpers).
 * Policy module only. */
#ifndef KQ_POLICY_GENERATION_H
#define KQ_POLICY_GENERATION_H
#include <lua.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy/internal.h"
#include "sandbox/lua_budget.h"

enum hook_id {
    H_ROUTE,
    H_RETRY,
    H_INTAKE,
    H_GROUP,
    H_PUBLISH,
    H_ROUTE_MESSAGE,
    H_CONNECT,
    H_DEAD, /* hooks_message.c */
    H_COUNT
};
_Static_assert(H_COUNT <= KQ_STRIKES_HOOKS, "every hook needs its strikes");
_Static_assert(H_COUNT == KQ_POLICY_HOOKS, "kq_policy_stats answers one entry per hook");

struct hook {
    int ref; /* LUA_NOREF: not defined, the default answers */
    uint64_t calls, errors, fallbacks, cache_hits, total_us, rejects;
};

struct memo;

struct kq_policy {
    lua_State *L;
    struct kq_lua_budget budget; /* memory, and the guard of the call in progress */
    struct hook hooks[H_COUNT];
    struct kq_strikes *strikes; /* failures in a row per (hook, subject) */
    struct kq_regex_cache *rc;
    struct memo *memo;
    size_t n_memo;
    struct memo *memo_last; /* the latest hit or addition: a message is routed twice in a
                              * row (intake, then its attempt), a burst has one type */
    const struct kq_binding_set *memo_set;
    uint64_t memo_gen;
    struct kq_route *scratch; /* KQ_POLICY_MAX_ROUTES routes: one routing answer being built */
    /* on_publish answers being built (allocated only when the hook is defined) */
    struct kq_property_kv *publish_props;             /* KQ_POLICY_MAX_PROPERTIES */
    char *publish_strings;                            /* PUBLISH_SCRATCH_BYTES */
    const char **publish_groups;                      /* KQ_POLICY_MAX_ROUTES: an answer's groups */
    char last_failure[400];                           /* kq_policy_last_failure */
    struct kq_policy_file files[KQ_POLICY_MAX_FILES]; /* the files loaded, in FILES order */
    size_t n_files;
    /* kq.log's rate limit: lines written in log_sec, and those held back since the last */
    int64_t log_sec;
    unsigned log_lines, log_suppressed;
    /* registry refs: the C function every call runs in, the builders of the
     * per-message hooks' arguments, and their cache of each topic's bindings (marshal.c) */
    int protected_call;
    int build_message, build_publish, build_route, binds_protos;
    int changes_meta; /* registry ref: the metatable of kq.changes' answers (publish_answer.c) */
    const void *changes_meta_at; /* its address: what a value's metatable is compared with */
    const struct kq_binding_set *protos_set; /* binds_protos holds this set's bindings */
    uint64_t protos_gen;
    const char *message_id; /* the message of the call running: m.message_id (marshal.c) */
    struct kq_policy_marshal *marshal; /* strings and tables reused across calls (marshal.c) */
};

/* Shared by the per-hook protected functions: which hook, what about (the subject whose
 * strikes a failure counts to), and why a result was refused. */
struct call {
    struct kq_policy *p;
    enum hook_id id;
    const char *subject[2];
    bool use_default; /* the hook returned nil: "no opinion" */
    char why[200];
};

/* Sets up c for a call (why is cleared by the run) without clearing the rest of its text:
 * an initializer would clear hundreds of bytes per message. */
static inline void kq_policy_call_init(struct call *c, struct kq_policy *p, enum hook_id id,
                                       const char *subject0, const char *subject1)
{
    c->p = p;
    c->id = id;
    c->subject[0] = subject0;
    c->subject[1] = subject1;
    c->use_default = false;
    c->why[0] = 0;
}

/* One on_publish call being answered (policy.c runs it, publish_answer.c reads the answer). */
struct publish_call {
    struct call c;
    const struct kq_publish_view *m;
    struct kq_publish_verdict v; /* copied to the caller's only when the answer is valid */
    size_t used;                 /* bytes of p->publish_strings taken */
};

/* Room for the strings of one on_publish answer: every property it may leave, copied. */
#define PUBLISH_SCRATCH_BYTES                                                                      \
    (KQ_POLICY_MAX_PROPERTIES * (KQ_POLICY_MAX_PROPERTY_KEY + KQ_POLICY_MAX_PROPERTY_VALUE + 2))

enum outcome {
    CALL_OK,     /* answered (c->use_default may still ask for the built-in answer) */
    CALL_SLOW,   /* answered, but over the time budget: counts as a strike */
    CALL_FAILED, /* error, stopped, or an invalid result (reason in c->why) */
};

/* A list of group names being read from a hook's answer into routes. */
struct route_call {
    struct call c;
    const struct kq_binding *binds;
    size_t n;
    const char *topic, *type;
    struct kq_route *out;
    size_t max, found, dropped;
    char first_dropped[64];
};

/* A protected function: runs inside lua_pcall with an empty stack, arg is the call struct. */
typedef int (*kq_policy_fn)(lua_State *L, void *arg);
/* Runs fn under the budgets. */
enum outcome kq_policy_invoke(struct call *c, kq_policy_fn fn, bool selftest);
/* Bookkeeping after a traffic call; true when its answer may be used. */
bool kq_policy_settle(struct call *c, enum outcome o);
/* The hook is defined and not switched off for the call's subject. */
bool kq_policy_hook_live(const struct kq_policy *p, const struct call *c);
/* "FILE: HOOK: self-test failed: why" into err; returns -EINVAL. */
int kq_policy_selftest_fail(struct call *c, char *err, size_t errlen, const char *dir);
/* marshal.c: the way into Lua. Loads its functions into p->L (0, or -1 when out of memory). */
int kq_policy_marshal_init(struct kq_policy *p);
/* Frees what kq_policy_marshal_init allocated outside the Lua state. */
void kq_policy_marshal_free(struct kq_policy *p);
/* As lua_cpcall(p->L, fn, arg), without making a closure per call. */
int kq_policy_pcall(struct kq_policy *p, kq_policy_fn fn, void *arg);
/* Pushes a message as on_publish sees it (a new table). */
void kq_policy_push_message(lua_State *L, struct kq_policy *p, const struct kq_publish_view *m);
/* Pushes the list of bindings as route sees it (a new table). */
void kq_policy_push_binds(lua_State *L, const struct kq_binding *binds, size_t n);
/* Calls on_publish(m) leaving 2 results; route_message(m, binds) leaving 1 (binds: the
 * topic's bindings in set, cached per set; set NULL: built for this call only). */
void kq_policy_call_publish(lua_State *L, struct kq_policy *p, const struct kq_publish_view *m);
void kq_policy_call_route_message(lua_State *L, struct kq_policy *p,
                                  const struct kq_binding_set *set, const struct kq_publish_view *m,
                                  const struct kq_binding *binds, size_t n);
/* publish_answer.c: on_publish's answer (results at stack 1 and 2) read into pc:
 * c.use_default for nil, c.why for an invalid answer, else pc->v. */
void kq_policy_read_publish_answer(lua_State *L, struct publish_call *pc);
/* publish_answer.c: kq.changes into the kq table at the top of L's stack. */
void kq_policy_add_changes(lua_State *L, struct kq_policy *p);

/* Reads the list of group names at idx into rc->out (dropping groups without a binding,
 * collapsing duplicates); false with rc->c.why when it is not a list of names. `what` names
 * the answer in that reason ("route", "on_dead: groups"). */
bool kq_policy_read_routes(lua_State *L, int idx, struct route_call *rc, const char *what);

/* hooks_message.c: the kq.now_ms and kq.log helpers into the kq table at the top of L's
 * stack; the self-tests of route_message, on_connect and on_dead (0, or -EINVAL + err). */
void kq_hooks_add_helpers(lua_State *L, struct kq_policy *p);
int kq_hooks_selftest(struct kq_policy *p, const char *dir, char *err, size_t errlen);
#endif
