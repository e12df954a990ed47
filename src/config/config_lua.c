/* kq_config_load_file: runs the Lua config file in a throw-away sandboxed LuaJIT state and
 * converts the table it returns into struct kq_config.
 *
 * Sandbox: the chunk's environment holds only safe base functions plus copies of string,
 * table and math; no io, os, require, debug, ffi, load, loadstring, loadfile, dofile or
 * pcall. Text chunks only (bytecode is refused). The budgets are those of the policies
 * (sandbox/lua_budget.h): the JIT is off so that the count hook fires reliably, the hook
 * stops the file after a wall-clock deadline or an instruction budget, Lua patterns are
 * charged their worst case against the same budget before they run (a backtracking
 * string.find is refused rather than run for minutes), and the allocator caps memory. A
 * reload loads the file on a worker thread and may abandon it (its stop flag).
 *
 * Every cluster of the file is checked (so --check finds typos in all of them); only the
 * selected one is written into the caller's struct. A problem with one key does not stop the
 * check: every problem of the file is reported (one line each), except after errors that
 * leave nothing to check (Lua errors, no clusters, no cluster selected). */
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/config_internal.h"
#include "core/log.h"
#include "sandbox/sandbox.h"

#define MAX_FILE_BYTES (1 << 20)
#define MAX_MEMORY_BYTES ((size_t)64 << 20)
#define MAX_RUN_MS 1000
#define MAX_INSTRUCTIONS 50000000L
#define INF 0x7fffffff
#define KEY_LEN 320 /* key paths in messages */

/* ---- sandbox ------------------------------------------------------------------------ */

/* Pushes the environment table of the config chunk: the sandbox's (no bit), and _G. */
static void push_env(lua_State *L)
{
    kq_sandbox_push_env(L, false);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "_G");
}

/* ---- conversion helpers ------------------------------------------------------------- */

struct loader {
    const char *path;
    const char *want; /* requested cluster or NULL */
    struct kq_config *out;
    char *err;
    size_t errlen;
    const char *raw; /* file contents */
    size_t raw_len;
    struct kq_lua_budget *sb;
    struct kq_config scratch; /* clusters other than the selected one are checked here */
    bool scratch_live;
    const char **names; /* cluster names, sorted; point into Lua strings */
    size_t n_names;
    bool done; /* load_protected ran to its end */
};

/* Describes the Lua value at idx for "(got ...)". */
static const char *describe(lua_State *L, int idx, char *buf, size_t len)
{
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: return kq_cfg_quote(lua_tostring(L, idx), buf, len);
    case LUA_TNUMBER: snprintf(buf, len, "%.14g", lua_tonumber(L, idx)); return buf;
    case LUA_TBOOLEAN: return lua_toboolean(L, idx) ? "true" : "false";
    case LUA_TNIL: return "nil";
    case LUA_TTABLE: return "a table";
    default: snprintf(buf, len, "a %s", luaL_typename(L, idx)); return buf;
    }
}

/* "FILE: key: reason (got VALUE)"; idx 0 = no value. */
static const char *problem(struct loader *ld, lua_State *L, const char *key, int idx,
                           const char *reason, char *buf, size_t len)
{
    char got[96];
    snprintf(buf, len, "%s: %s: %s%s%s%s", ld->path, key, reason, idx ? " (got " : "",
             idx ? describe(L, idx, got, sizeof got) : "", idx ? ")" : "");
    return buf;
}

/* Adds the problem to the errors. Returns -EINVAL. */
static int bad(struct loader *ld, lua_State *L, const char *key, int idx, const char *reason)
{
    char line[KEY_LEN + 512];
    return kq_cfg_err(ld->err, ld->errlen, "%s",
                      problem(ld, L, key, idx, reason, line, sizeof line));
}

/* A value the broker ignores: logged, not an error. */
static void warn(struct loader *ld, lua_State *L, const char *key, int idx, const char *reason)
{
    char line[KEY_LEN + 512];
    KQ_WARN("config", "%s", problem(ld, L, key, idx, reason, line, sizeof line));
}

/* Key paths such as "clusters.dev.bindings[2].topic"; very long ones end in "...". */
static void mark_truncated(char *dst, size_t len, int n)
{
    if (n < 0 || (size_t)n >= len)
        memcpy(dst + len - 4, "...", 4);
}

static void subkey(char *dst, size_t len, const char *parent, const char *name)
{
    mark_truncated(dst, len, snprintf(dst, len, "%s%s%s", parent, parent[0] ? "." : "", name));
}

static void index_key(char *dst, size_t len, const char *parent, size_t i)
{
    mark_truncated(dst, len, snprintf(dst, len, "%s[%zu]", parent, i));
}

static int get_string(struct loader *ld, lua_State *L, int idx, const char *key,
                      const char *(*check)(const char *), const char **out)
{
    size_t n;
    if (lua_type(L, idx) != LUA_TSTRING)
        return bad(ld, L, key, idx, "must be a string");
    *out = lua_tolstring(L, idx, &n);
    if (strlen(*out) != n)
        return bad(ld, L, key, 0, "must not contain NUL bytes");
    const char *why = check ? check(*out) : NULL;
    return why ? bad(ld, L, key, idx, why) : 0;
}

static int get_int(struct loader *ld, lua_State *L, int idx, const char *key, int min, int max,
                   int *out)
{
    double d = lua_type(L, idx) == LUA_TNUMBER ? lua_tonumber(L, idx) : NAN;
    if (d == floor(d) && d >= min && d <= max) {
        *out = (int)d;
        return 0;
    }
    char reason[64];
    if (max == INF)
        snprintf(reason, sizeof reason, "must be an integer >= %d", min);
    else
        snprintf(reason, sizeof reason, "must be an integer %d-%d", min, max);
    return bad(ld, L, key, idx, reason);
}

static int get_bool(struct loader *ld, lua_State *L, int idx, const char *key, bool *out)
{
    if (lua_type(L, idx) != LUA_TBOOLEAN)
        return bad(ld, L, key, idx, "must be true or false");
    *out = lua_toboolean(L, idx);
    return 0;
}

/* A list is a table whose keys are exactly 1..n. */
static int get_list(struct loader *ld, lua_State *L, int idx, const char *key, size_t *n)
{
    if (lua_type(L, idx) != LUA_TTABLE)
        return bad(ld, L, key, idx, "must be a list { ... }");
    size_t len = lua_objlen(L, idx), count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        double k = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : 0;
        if (k != floor(k) || k < 1 || k > (double)len) {
            lua_pop(L, 1);
            return bad(ld, L, key, 0, "must be a list { ... } without named entries");
        }
        count++;
    }
    if (count != len)
        return bad(ld, L, key, 0, "must be a list without holes");
    *n = len;
    return 0;
}

/* Edit distance of short ASCII strings, for "did you mean" hints. */
static size_t distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[64];
    if (la >= 64 || lb >= 64)
        return 99;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* Rejects keys of the record at idx that are not strings listed in names (NULL-ended). */
static int check_keys(struct loader *ld, lua_State *L, int idx, const char *key,
                      const char *const *names)
{
    if (lua_type(L, idx) != LUA_TTABLE)
        return bad(ld, L, key[0] ? key : "file", idx, "must be a table { name = value, ... }");
    int rc = 0;
    bool unnamed = false;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        char path[KEY_LEN], hint[96] = "";
        if (lua_type(L, -1) != LUA_TSTRING) {
            if (!unnamed) /* once per table */
                rc = bad(ld, L, key[0] ? key : "file", 0,
                         "entries must be named (name = value), not a list");
            unnamed = true;
            continue;
        }
        const char *k = lua_tostring(L, -1);
        const char *const *n = names;
        while (*n && strcmp(*n, k) != 0)
            n++;
        if (*n)
            continue;
        for (n = names; *n; n++)
            if (strcasecmp(*n, k) == 0 || distance(*n, k) <= 2)
                snprintf(hint, sizeof hint, " (did you mean %s?)", *n);
        subkey(path, sizeof path, key, k);
        char reason[128];
        snprintf(reason, sizeof reason, "unknown key%s", hint);
        rc = bad(ld, L, path, 0, reason);
    }
    return rc;
}

/* Pushes t[name] (raw) for the table at idx. */
static int push_field(lua_State *L, int idx, const char *name)
{
    lua_pushstring(L, name);
    lua_rawget(L, idx);
    return lua_type(L, -1);
}

/* ---- sections ----------------------------------------------------------------------- */

static int read_topics(struct loader *ld, lua_State *L, int idx, const char *key,
                       struct kq_config *c)
{
    size_t n;
    int rc = get_list(ld, L, idx, key, &n);
    if (rc)
        return rc;
    kq_cfg_free_topics(c);
    for (size_t i = 1; i <= n; i++) {
        char path[KEY_LEN];
        const char *t;
        index_key(path, sizeof path, key, i);
        lua_rawgeti(L, idx, (int)i);
        int bad_item = get_string(ld, L, -1, path, kq_cfg_check_name, &t);
        if (bad_item == 0 && kq_config_has_topic(c, t))
            bad_item = bad(ld, L, path, -1, "duplicate topic");
        if (bad_item == 0)
            kq_cfg_add_topic(c, t);
        lua_pop(L, 1);
        rc = rc ? rc : bad_item;
    }
    return rc;
}

static int cmp_group(const void *a, const void *b)
{
    return strcmp(((const struct kq_group_secret *)a)->group_id,
                  ((const struct kq_group_secret *)b)->group_id);
}

static const char *check_secret(const char *s)
{
    return s[0] ? NULL : "a secret must not be empty";
}

/* groups = { ["groupId"] = "secret", ... } */
static int read_groups(struct loader *ld, lua_State *L, int idx, const char *key,
                       struct kq_config *c)
{
    if (lua_type(L, idx) != LUA_TTABLE)
        return bad(ld, L, key, idx, "must be a table { [\"groupId\"] = \"secret\", ... }");
    kq_cfg_free_groups(c);
    int rc = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        char path[KEY_LEN];
        const char *g = NULL, *secret = NULL; /* (set by get_string; -O2 cannot see it) */
        int bad_entry;
        if (lua_type(L, -2) != LUA_TSTRING) {
            bad_entry = bad(ld, L, key, 0, "entries must be [\"groupId\"] = \"secret\"");
        } else {
            subkey(path, sizeof path, key, lua_tostring(L, -2));
            bad_entry = get_string(ld, L, -2, key, kq_cfg_check_name, &g);
            if (bad_entry == 0)
                bad_entry = get_string(ld, L, -1, path, check_secret, &secret);
        }
        if (bad_entry == 0)
            kq_cfg_add_group(c, g, secret);
        rc = rc ? rc : bad_entry;
        lua_pop(L, 1);
    }
    if (c->n_groups) /* groups = {}: c->groups is NULL, which qsort must not see */
        qsort(c->groups, c->n_groups, sizeof *c->groups, cmp_group);
    return rc;
}

/* Is topic listed in the topics of any cluster of the file? (clusters table at idx) */
static bool any_cluster_has_topic(lua_State *L, int clusters, const char *topic)
{
    bool found = false;
    int top = lua_gettop(L);
    lua_pushnil(L);
    while (!found && lua_next(L, clusters)) { /* key, cluster */
        if (lua_type(L, -1) == LUA_TTABLE && push_field(L, lua_gettop(L), "topics") == LUA_TTABLE) {
            for (int i = 1; !found && i <= (int)lua_objlen(L, -1); i++) {
                lua_rawgeti(L, -1, i);
                found = lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), topic) == 0;
                lua_pop(L, 1);
            }
        }
        lua_settop(L, top + 1); /* keep only the key for lua_next */
    }
    lua_settop(L, top);
    return found;
}

static const char *const binding_keys[] = {"groupIds",  "topic",      "messageType", "bindType",
                                           "watermark", "persistent", NULL};

/* bindType = "direct" | "regx" | "fanout" (any case) or 0, 1, 2; absent = direct. */
static int read_bind_type(struct loader *ld, lua_State *L, int idx, const char *key,
                          enum kq_bind_type *out)
{
    char path[KEY_LEN];
    subkey(path, sizeof path, key, "bindType");
    int t = push_field(L, idx, "bindType");
    double d = t == LUA_TNUMBER ? lua_tonumber(L, -1) : -1;
    int rc = 0;
    if (d == 0 || d == 1 || d == 2)
        *out = (enum kq_bind_type)d;
    else if (t != LUA_TNIL &&
             (t != LUA_TSTRING || kq_bind_type_parse(lua_tostring(L, -1), out) != 0))
        rc = bad(ld, L, path, -1, "must be \"direct\", \"regx\" or \"fanout\" (or 0, 1, 2)");
    lua_pop(L, 1);
    return rc;
}

/* Checks groupIds (list at gidx): names, and no group twice. Returns the problems found. */
static int check_group_ids(struct loader *ld, lua_State *L, int gidx, const char *path, size_t n)
{
    int problems = 0;
    for (size_t i = 1; i <= n; i++) {
        char gpath[KEY_LEN];
        const char *g;
        index_key(gpath, sizeof gpath, path, i);
        lua_rawgeti(L, gidx, (int)i);
        if (get_string(ld, L, -1, gpath, kq_cfg_check_name, &g) != 0) {
            problems++;
        } else {
            bool twice = false;
            for (size_t j = 1; j < i && !twice; j++) {
                lua_rawgeti(L, gidx, (int)j);
                twice = lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), g) == 0;
                lua_pop(L, 1);
            }
            if (twice)
                problems += bad(ld, L, gpath, -1, "this group is listed twice") != 0;
        }
        lua_pop(L, 1);
    }
    return problems;
}

/* One entry of a bindings list at idx; adds one kq_binding per group id to c when the entry
 * has no problem (each is reported). clusters > 0: a top-level binding, which may belong to
 * another cluster of the file. */
static int read_binding(struct loader *ld, lua_State *L, int idx, const char *key,
                        struct kq_config *c, int clusters)
{
    char path[KEY_LEN], rx[256];
    struct kq_binding b = {
        .bind_type = KQ_BIND_DIRECT, .watermark = KQ_DEFAULT_WATERMARK, .persistent = true};
    const char *topic = NULL, *mtype = NULL;
    size_t n_groups = 0;
    int top = lua_gettop(L), gidx = 0;
    bool keep = false;

    if (lua_type(L, idx) != LUA_TTABLE)
        return check_keys(ld, L, idx, key, binding_keys); /* says it must be a table */
    int problems = check_keys(ld, L, idx, key, binding_keys) != 0;
    /* bindType first: it decides whether messageType is required */
    problems += read_bind_type(ld, L, idx, key, &b.bind_type) != 0;

    subkey(path, sizeof path, key, "topic");
    if (push_field(L, idx, "topic") == LUA_TNIL) {
        problems += bad(ld, L, path, 0, "is required") != 0;
    } else if (get_string(ld, L, -1, path, kq_cfg_check_name, &topic) != 0) {
        problems++;
    } else {
        keep = kq_config_has_topic(c, topic);
        if (!keep && (clusters == 0 || !any_cluster_has_topic(L, clusters, topic)))
            problems += bad(ld, L, path, -1,
                            clusters ? "names a topic that no cluster lists in its topics"
                                     : "names a topic that is not in this cluster's topics") != 0;
    }

    subkey(path, sizeof path, key, "messageType");
    if (push_field(L, idx, "messageType") != LUA_TNIL) {
        if (get_string(ld, L, -1, path, NULL, &mtype) != 0)
            problems++;
        else if (!mtype[0])
            problems += bad(ld, L, path, -1, "must not be empty") != 0;
        else if (b.bind_type == KQ_BIND_REGX && kq_cfg_check_regex(mtype, rx, sizeof rx))
            problems += bad(ld, L, path, -1, rx) != 0;
        else if (b.bind_type == KQ_BIND_FANOUT && strcmp(mtype, "*") != 0)
            warn(ld, L, path, -1,
                 "ignored: a fanout binding receives every message type "
                 "of its topic (\"*\")");
    } else if (b.bind_type != KQ_BIND_FANOUT) {
        problems += bad(ld, L, path, 0, "is required for direct and regx bindings") != 0;
    }
    if (b.bind_type == KQ_BIND_FANOUT)
        mtype = "*"; /* fanout means every message type of the topic */

    subkey(path, sizeof path, key, "watermark");
    if (push_field(L, idx, "watermark") != LUA_TNIL) {
        if (get_int(ld, L, -1, path, -INF, INF, &b.watermark) != 0)
            problems++;
        else if (b.watermark <= 0)
            b.watermark = KQ_DEFAULT_WATERMARK;
    }
    subkey(path, sizeof path, key, "persistent");
    if (push_field(L, idx, "persistent") != LUA_TNIL &&
        get_bool(ld, L, -1, path, &b.persistent) != 0)
        problems++;

    subkey(path, sizeof path, key, "groupIds");
    if (push_field(L, idx, "groupIds") == LUA_TNIL)
        problems += bad(ld, L, path, 0, "is required (a list of group ids)") != 0;
    else if (get_list(ld, L, lua_gettop(L), path, &n_groups) != 0)
        problems++;
    else if (n_groups == 0)
        problems += bad(ld, L, path, 0, "must list at least one group id") != 0;
    else
        gidx = lua_gettop(L);
    if (gidx)
        problems += check_group_ids(ld, L, gidx, path, n_groups);

    for (size_t i = 1; problems == 0 && keep && i <= n_groups; i++) {
        lua_rawgeti(L, gidx, (int)i);
        b.group_id = (char *)lua_tostring(L, -1);
        b.topic = (char *)topic;
        b.message_type = (char *)mtype;
        kq_cfg_add_binding(c, &b); /* copies the strings */
        lua_pop(L, 1);
    }
    lua_settop(L, top);
    return problems ? -EINVAL : 0;
}

static int read_bindings(struct loader *ld, lua_State *L, int idx, const char *key,
                         struct kq_config *c, int clusters)
{
    size_t n;
    int rc = get_list(ld, L, idx, key, &n);
    if (rc)
        return rc;
    for (size_t i = 1; i <= n; i++) { /* every entry is checked, also after a bad one */
        char path[KEY_LEN];
        index_key(path, sizeof path, key, i);
        lua_rawgeti(L, idx, (int)i);
        if (read_binding(ld, L, lua_gettop(L), path, c, clusters) != 0)
            rc = -EINVAL;
        lua_pop(L, 1);
    }
    return rc;
}

enum kind { K_STR, K_OPT_STR, K_SECRET, K_INT, K_BOOL, K_ADMIN, K_TOPICS, K_GROUPS, K_BINDINGS };

struct opt {
    const char *name;
    enum kind kind;
    size_t off;                         /* not K_INT: kq_config_ints has its member and range */
    const char *(*check)(const char *); /* K_STR */
    const char *no_effect; /* kept for the original's files only: why, logged when set */
    /* K_INT: a value that is allowed but costly: what it costs (logged), or NULL */
    const char *(*costly)(int value, char *buf, size_t len);
};

static const char *check_nonempty(const char *s) { return s[0] ? NULL : "must not be empty"; }

/* The ring of finished histories is allocated as it fills and never shrinks (docs/ADMIN.md:
 * at most ~420 bytes per entry): a large ring is allowed, but the operator hears its price. */
#define HISTORY_ENTRY_MAX_BYTES 420
#define HISTORY_RING_QUIET 100000 /* ~42 MB: above it, say what the ring will hold */

static const char *history_ring_cost(int value, char *buf, size_t len)
{
    if (value <= HISTORY_RING_QUIET)
        return NULL;
    snprintf(buf, len,
             "keeps the histories of the last %d finished messages in memory: up to ~%lld MB "
             "once the ring is full (~%d bytes each), on top of the pending messages",
             value, (long long)value * HISTORY_ENTRY_MAX_BYTES / 1000000, HISTORY_ENTRY_MAX_BYTES);
    return buf;
}

#define OFF(f) offsetof(struct kq_config, f)
/* In processing order: bindings come after topics, which they are checked against. */
static const struct opt cluster_opts[] = {
    {"env", K_STR, OFF(env), check_nonempty, NULL, NULL},
    {"registry", K_STR, OFF(registry), kq_cfg_check_registry, NULL, NULL},
    {"bind", K_STR, OFF(bind), kq_cfg_check_hostport, NULL, NULL},
    {"topics", K_TOPICS, 0, NULL, NULL, NULL},
    {"db", K_STR, OFF(db), kq_cfg_check_db, NULL, NULL},
    {"deliverySeconds", K_INT, 0, NULL, NULL, NULL},
    {"maxDeliverWorkers", K_INT, 0, NULL,
     "accepted for the original's files, has no effect: each group's deliverWindow bounds "
     "its deliveries in flight", NULL},
    {"recoverSeconds", K_INT, 0, NULL, NULL, NULL},
    {"recievePermitsPerSecond", K_INT, 0, NULL, NULL, NULL},
    {"dlqExecHour", K_INT, 0, NULL,
     "accepted for the original's files, has no effect: dead letters are kept until "
     "requeued or purged (kiteq-cli dlq)", NULL},
    {"deliveryFirst", K_BOOL, OFF(delivery_first), NULL, NULL, NULL},
    {"heartbeatTimeoutSeconds", K_INT, 0, NULL, NULL, NULL},
    {"maxConnections", K_INT, 0, NULL, NULL, NULL},
    {"txCheckSeconds", K_INT, 0, NULL, NULL, NULL},
    {"txMaxChecks", K_INT, 0, NULL, NULL, NULL},
    {"deliverWindow", K_INT, 0, NULL, NULL, NULL},
    {"takeoverSeconds", K_INT, 0, NULL, NULL, NULL},
    {"messageHistory", K_INT, 0, NULL, NULL, history_ring_cost},
    {"admin", K_ADMIN, OFF(admin), NULL, NULL, NULL},
    {"adminToken", K_SECRET, OFF(admin_token), kq_cfg_check_admin_token, NULL, NULL},
    {"policies", K_STR, OFF(policies), check_nonempty, NULL, NULL},
    {"logLevel", K_STR, OFF(log_level), kq_cfg_check_log_level, NULL, NULL},
    {"logFile", K_OPT_STR, OFF(log_file), NULL, NULL, NULL},
    {"groups", K_GROUPS, 0, NULL, NULL, NULL},
    {"bindings", K_BINDINGS, 0, NULL, NULL, NULL},
};
#define N_CLUSTER_OPTS (sizeof cluster_opts / sizeof cluster_opts[0])

static int read_option(struct loader *ld, lua_State *L, int idx, const char *path,
                       const struct opt *o, struct kq_config *c)
{
    char *base = (char *)c;
    const char *s;
    int rc = 0;
    switch (o->kind) {
    case K_STR:
        if ((rc = get_string(ld, L, idx, path, o->check, &s)) == 0)
            kq_cfg_set_str((char **)(base + o->off), s);
        return rc;
    case K_OPT_STR: /* "" or false = unset (NULL) */
        if ((lua_type(L, idx) == LUA_TBOOLEAN && !lua_toboolean(L, idx)) ||
            (lua_type(L, idx) == LUA_TSTRING && lua_tostring(L, idx)[0] == '\0')) {
            kq_cfg_set_str((char **)(base + o->off), NULL);
            return 0;
        }
        if ((rc = get_string(ld, L, idx, path, o->check, &s)) == 0)
            kq_cfg_set_str((char **)(base + o->off), s);
        return rc;
    case K_SECRET: /* like K_OPT_STR, but an error never shows the value */
        if ((lua_type(L, idx) == LUA_TBOOLEAN && !lua_toboolean(L, idx)) ||
            (lua_type(L, idx) == LUA_TSTRING && lua_tostring(L, idx)[0] == '\0')) {
            kq_cfg_set_str((char **)(base + o->off), NULL);
            return 0;
        }
        if ((rc = get_string(ld, L, idx, path, NULL, &s)) == 0) {
            const char *why = o->check(s);
            if (why)
                return bad(ld, L, path, 0, why);
            kq_cfg_set_str((char **)(base + o->off), s);
        }
        return rc;
    case K_INT: {
        const struct kq_config_int *f = kq_cfg_int_setting(o->name);
        if (!f) /* a K_INT row must name an entry of kq_config_ints */
            return bad(ld, L, path, 0, "internal error: not an integer setting");
        rc = get_int(ld, L, idx, path, f->min, f->max, (int *)(base + f->offset));
        if (rc == 0 && o->no_effect)
            warn(ld, L, path, idx, o->no_effect);
        char cost[256];
        const char *why = rc == 0 && o->costly ? o->costly(*(int *)(base + f->offset), cost,
                                                            sizeof cost)
                                               : NULL;
        if (why)
            warn(ld, L, path, idx, why);
        return rc;
    }
    case K_BOOL: return get_bool(ld, L, idx, path, (bool *)(base + o->off));
    case K_ADMIN: /* "" or false = no admin HTTP server */
        if (lua_type(L, idx) == LUA_TBOOLEAN && !lua_toboolean(L, idx)) {
            kq_cfg_set_str(&c->admin, NULL);
            return 0;
        }
        if (lua_type(L, idx) == LUA_TSTRING && lua_tostring(L, idx)[0] == '\0') {
            kq_cfg_set_str(&c->admin, NULL);
            return 0;
        }
        if ((rc = get_string(ld, L, idx, path, kq_cfg_check_hostport, &s)) == 0)
            kq_cfg_set_str(&c->admin, s);
        return rc;
    case K_TOPICS: return read_topics(ld, L, idx, path, c);
    case K_GROUPS: return read_groups(ld, L, idx, path, c);
    case K_BINDINGS: return read_bindings(ld, L, idx, path, c, 0);
    }
    return rc;
}

static int read_cluster(struct loader *ld, lua_State *L, int idx, const char *name,
                        struct kq_config *c)
{
    static const char *names[N_CLUSTER_OPTS + 1];
    char key[KEY_LEN];
    int rc;
    for (size_t i = 0; i < N_CLUSTER_OPTS; i++)
        names[i] = cluster_opts[i].name;
    subkey(key, sizeof key, "clusters", name);
    rc = check_keys(ld, L, idx, key, names);
    if (lua_type(L, idx) != LUA_TTABLE)
        return rc;
    kq_cfg_free_bindings(c);
    for (size_t i = 0; i < N_CLUSTER_OPTS; i++) { /* every option, also after a bad one */
        char path[KEY_LEN];
        const struct opt *o = &cluster_opts[i];
        subkey(path, sizeof path, key, o->name);
        if (push_field(L, idx, o->name) != LUA_TNIL) {
            if (read_option(ld, L, lua_gettop(L), path, o, c) != 0)
                rc = -EINVAL;
            if (o->off == OFF(policies))
                c->policies_set = true; /* named: it must exist */
        }
        lua_pop(L, 1);
    }
    return rc;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Fills ld->names with the sorted cluster names of the clusters table at idx. */
static int list_clusters(struct loader *ld, lua_State *L, int idx)
{
    if (lua_type(L, idx) != LUA_TTABLE)
        return bad(ld, L, "clusters", idx, "must be a table { name = { ... }, ... }");
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) {
            lua_pop(L, 1);
            return bad(ld, L, "clusters", 0, "entries must be named: clusters = { dev = { ... } }");
        }
        const char **grown = realloc(ld->names, (ld->n_names + 1) * sizeof *grown);
        if (!grown)
            return luaL_error(L, "not enough memory");
        ld->names = grown;
        ld->names[ld->n_names++] = lua_tostring(L, -1); /* kept alive by the table */
    }
    if (ld->n_names == 0)
        return bad(ld, L, "clusters", 0, "must define at least one cluster");
    qsort(ld->names, ld->n_names, sizeof *ld->names, cmp_str);
    return 0;
}

static void available(struct loader *ld, char *buf, size_t len)
{
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < ld->n_names && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%s", i ? ", " : "", ld->names[i]);
}

/* Copies the Lua error on top of the stack, prefixed with the file unless Lua already
 * names it ("FILE:LINE: message"). */
static void copy_lua_error(struct loader *ld, lua_State *L)
{
    const char *msg = lua_isstring(L, -1) ? lua_tostring(L, -1) : "error (not a string)";
    if (strncmp(msg, ld->path, strlen(ld->path)) == 0)
        kq_cfg_err(ld->err, ld->errlen, "%s", msg);
    else
        kq_cfg_err(ld->err, ld->errlen, "%s: %s", ld->path, msg);
}

static const char *const top_keys[] = {"default", "registry", "clusters", "bindings", NULL};

/* Runs inside lua_cpcall so that an out-of-memory error cannot escape. */
static int load_protected(lua_State *L)
{
    struct loader *ld = lua_touserdata(L, 1);
    int rc;
    lua_settop(L, 0);

    if (kq_sandbox_load_text(L, ld->raw, ld->raw_len, ld->path) != 0) {
        copy_lua_error(ld, L); /* "FILE:LINE: message" from the parser */
        return 0;
    }
    push_env(L);
    lua_setfenv(L, -2);
    kq_lua_budget_begin(L, ld->sb, MAX_INSTRUCTIONS, MAX_RUN_MS);
    rc = lua_pcall(L, 0, 1, 0);
    if (rc != 0) {
        if (ld->sb->tripped && ld->sb->stop && atomic_load(ld->sb->stop))
            kq_cfg_err(ld->err, ld->errlen, "%s:%d: stopped: %s", ld->path, ld->sb->trip_line,
                       ld->sb->trip_why);
        else if (ld->sb->tripped)
            kq_cfg_err(ld->err, ld->errlen,
                       "%s:%d: stopped: the file runs too long (over %d ms "
                       "or %ld Lua instructions; endless loop?)",
                       ld->path, ld->sb->trip_line, MAX_RUN_MS, MAX_INSTRUCTIONS);
        else if (rc == LUA_ERRMEM)
            kq_cfg_err(ld->err, ld->errlen, "%s: stopped: the file uses more than %zu MiB",
                       ld->path, MAX_MEMORY_BYTES >> 20);
        else
            copy_lua_error(ld, L);
        return 0;
    }
    if (lua_type(L, 1) != LUA_TTABLE) {
        bad(ld, L, "file", 1, "must end with `return { clusters = { ... } }`");
        return 0;
    }
    /* The conversion reads the tables raw, so no Lua runs; were it to, it has a budget too. */
    kq_lua_budget_begin(L, ld->sb, MAX_INSTRUCTIONS, MAX_RUN_MS);

    /* stack: 1 = root, 2 = default, 3 = registry, 4 = clusters, 5 = bindings */
    check_keys(ld, L, 1, "", top_keys); /* reported; the known keys are checked all the same */
    for (int i = 0; i < 4; i++)
        push_field(L, 1, top_keys[i]);
    const char *def = NULL, *reg = NULL;
    if (!lua_isnil(L, 2) && get_string(ld, L, 2, "default", check_nonempty, &def))
        return 0; /* which cluster to check is unknown */
    if (!lua_isnil(L, 3))
        get_string(ld, L, 3, "registry", kq_cfg_check_registry, &reg);
    if (lua_isnil(L, 4)) {
        bad(ld, L, "clusters", 0, "is required: clusters = { dev = { ... } }");
        return 0;
    }
    if (list_clusters(ld, L, 4))
        return 0;

    char list[256];
    const char *want = ld->want ? ld->want : def;
    available(ld, list, sizeof list);
    if (!want && ld->n_names > 1) {
        kq_cfg_err(ld->err, ld->errlen,
                   "%s: no cluster selected: set `default` or pass "
                   "--cluster NAME (available: %s)",
                   ld->path, list);
        return 0;
    }
    if (!want)
        want = ld->names[0];
    push_field(L, 4, want);
    bool found = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (!found) {
        kq_cfg_err(ld->err, ld->errlen, "%s: %scluster \"%s\" not found (available: %s)", ld->path,
                   ld->want ? "" : "default: ", want, list);
        return 0;
    }

    /* every cluster is checked; only the selected one lands in ld->out */
    for (size_t i = 0; i < ld->n_names; i++) {
        bool selected = strcmp(ld->names[i], want) == 0;
        struct kq_config *c = selected ? ld->out : &ld->scratch;
        if (!selected) {
            kq_config_defaults(&ld->scratch);
            ld->scratch_live = true;
        }
        if (reg)
            kq_cfg_set_str(&c->registry, reg);
        push_field(L, 4, ld->names[i]);
        read_cluster(ld, L, lua_gettop(L), ld->names[i], c); /* problems land in ld->err */
        lua_pop(L, 1);
        if (!selected) {
            kq_config_free(&ld->scratch);
            ld->scratch_live = false;
        }
    }
    if (!lua_isnil(L, 5))
        read_bindings(ld, L, 5, "bindings", ld->out, 4);
    kq_cfg_set_str(&ld->out->cluster_name, want);
    kq_cfg_set_str(&ld->out->config_path, ld->path);
    ld->done = true;
    return 0;
}

static int read_file(const char *path, char **out, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return kq_cfg_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    char *buf = malloc(MAX_FILE_BYTES + 1);
    size_t n = buf ? fread(buf, 1, MAX_FILE_BYTES + 1, f) : 0;
    int failed = !buf || ferror(f);
    fclose(f);
    if (failed || n > MAX_FILE_BYTES) {
        free(buf);
        return kq_cfg_err(err, errlen, "%s: %s", path,
                          failed ? "cannot read the file" : "larger than 1 MiB");
    }
    *out = buf;
    *len = n;
    return 0;
}

int kq_config_load_file(struct kq_config *c, const char *path, const char *cluster, char *err,
                        size_t errlen)
{
    char dummy[8], *raw = NULL;
    size_t len = 0;
    int rc;

    if (!err || errlen == 0) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = '\0';
    if ((rc = read_file(path, &raw, &len, err, errlen)))
        return rc;
    rc = kq_config_load_buffer(c, path, raw, len, cluster, err, errlen);
    free(raw);
    return rc;
}

int kq_config_load_buffer(struct kq_config *c, const char *path, const char *raw, size_t len,
                          const char *cluster, char *err, size_t errlen)
{
    char dummy[8];
    struct kq_lua_budget sb = {.max = MAX_MEMORY_BYTES};
    struct loader ld = {.path = path, .want = cluster, .out = c, .sb = &sb};

    if (!err || errlen == 0) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = '\0';
    if (len > MAX_FILE_BYTES)
        return kq_cfg_err(err, errlen, "%s: larger than 1 MiB", path);
    ld.raw = raw;
    ld.raw_len = len;
    ld.err = err;
    ld.errlen = errlen;

    lua_State *L = kq_lua_budget_newstate(&sb, false);
    if (!L)
        return kq_cfg_err(err, errlen, "%s: cannot create a Lua state", path);
    if (lua_cpcall(L, load_protected, &ld) != 0)
        kq_cfg_err(err, errlen, "%s: %s", path, lua_tostring(L, -1));
    else if (!ld.done && !err[0]) /* every early return reports why: cannot happen */
        kq_cfg_err(err, errlen, "%s: internal error", path);
    kq_lua_budget_close(L, &sb);
    if (ld.scratch_live)
        kq_config_free(&ld.scratch);
    free(ld.names);
    return err[0] ? -EINVAL : 0;
}
