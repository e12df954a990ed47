/* Config struct life cycle, value checks shared by the loaders, and kq_config_validate.
 * The Lua file is read in config_lua.c, argv in config_args.c. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <ctype.h>
#include <errno.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/config_internal.h"
#include "core/addr.h"
#include "core/log.h"
#include "core/redact.h"

/* ---- memory ------------------------------------------------------------------------- */

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fputs("kiteq: out of memory while building the configuration\n", stderr);
        abort();
    }
    return q;
}

char *kq_cfg_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(xrealloc(NULL, n), s, n);
}

void kq_cfg_set_str(char **dst, const char *s)
{
    char *copy = s ? kq_cfg_strdup(s) : NULL;
    free(*dst);
    *dst = copy;
}

void kq_cfg_free_topics(struct kq_config *c)
{
    for (size_t i = 0; i < c->n_topics; i++)
        free(c->topics[i]);
    free(c->topics);
    c->topics = NULL;
    c->n_topics = 0;
}

void kq_cfg_free_groups(struct kq_config *c)
{
    for (size_t i = 0; i < c->n_groups; i++) {
        free(c->groups[i].group_id);
        free(c->groups[i].secret);
    }
    free(c->groups);
    c->groups = NULL;
    c->n_groups = 0;
}

void kq_cfg_free_bindings(struct kq_config *c)
{
    for (size_t i = 0; i < c->n_bindings; i++) {
        free(c->bindings[i].group_id);
        free(c->bindings[i].topic);
        free(c->bindings[i].message_type);
    }
    free(c->bindings);
    c->bindings = NULL;
    c->n_bindings = 0;
}

void kq_cfg_add_topic(struct kq_config *c, const char *topic)
{
    c->topics = xrealloc(c->topics, (c->n_topics + 1) * sizeof *c->topics);
    c->topics[c->n_topics++] = kq_cfg_strdup(topic);
}

void kq_cfg_add_group(struct kq_config *c, const char *group, const char *secret)
{
    c->groups = xrealloc(c->groups, (c->n_groups + 1) * sizeof *c->groups);
    c->groups[c->n_groups].group_id = kq_cfg_strdup(group);
    c->groups[c->n_groups].secret = kq_cfg_strdup(secret);
    c->n_groups++;
}

void kq_cfg_add_binding(struct kq_config *c, const struct kq_binding *b)
{
    c->bindings = xrealloc(c->bindings, (c->n_bindings + 1) * sizeof *c->bindings);
    struct kq_binding *d = &c->bindings[c->n_bindings++];
    *d = *b;
    d->group_id = kq_cfg_strdup(b->group_id);
    d->topic = kq_cfg_strdup(b->topic);
    d->message_type = kq_cfg_strdup(b->message_type);
}

void kq_config_defaults(struct kq_config *c)
{
    memset(c, 0, sizeof *c);
    c->cluster_name = kq_cfg_strdup("default");
    c->registry = kq_cfg_strdup("");
    c->env = kq_cfg_strdup("dev");
    c->bind = kq_cfg_strdup("127.0.0.1:13800");
    c->db = kq_cfg_strdup("file://./data");
    c->delivery_seconds = 5;
    c->max_deliver_workers = 8000;
    c->recover_seconds = 10;
    c->recieve_permits_per_second = 20000;
    c->dlq_exec_hour = 2;
    c->delivery_first = false;
    c->heartbeat_timeout_seconds = 90;
    c->tx_check_seconds = 5;
    c->tx_max_checks = 10;
    c->deliver_window = 1000;
    c->takeover_seconds = 30;
    c->message_history = 10000;
    c->admin = NULL;
    c->admin_token = NULL;
    c->policies = kq_cfg_strdup("lua/policies");
    c->policies_set = false;
    c->log_level = kq_cfg_strdup("info");
    c->log_file = NULL;
}

void kq_config_free(struct kq_config *c)
{
    if (!c)
        return;
    free(c->config_path);
    free(c->cluster_name);
    free(c->registry);
    free(c->env);
    free(c->bind);
    free(c->db);
    free(c->admin);
    free(c->admin_token);
    free(c->policies);
    free(c->log_level);
    free(c->log_file);
    kq_cfg_free_topics(c);
    kq_cfg_free_groups(c);
    kq_cfg_free_bindings(c);
    memset(c, 0, sizeof *c);
}

bool kq_config_has_topic(const struct kq_config *c, const char *topic)
{
    for (size_t i = 0; i < c->n_topics; i++)
        if (strcmp(c->topics[i], topic) == 0)
            return true;
    return false;
}

const char *kq_config_group_secret(const struct kq_config *c, const char *group)
{
    for (size_t i = 0; i < c->n_groups; i++)
        if (strcmp(c->groups[i].group_id, group) == 0)
            return c->groups[i].secret;
    return NULL;
}

/* ---- value checks ------------------------------------------------------------------- */

/* Host part of "host:port": a name or IPv4 address, or an IPv6 address in brackets. */
static bool host_ok(const char *h, size_t n)
{
    if (n == 0)
        return false;
    if (h[0] == '[')
        return n > 2 && h[n - 1] == ']';
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)h[i]) && h[i] != '.' && h[i] != '-' && h[i] != '_')
            return false;
    return true;
}

static bool port_ok(const char *p, size_t n)
{
    if (n == 0 || n > 5)
        return false;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)p[i]))
            return false;
        v = v * 10 + (p[i] - '0');
    }
    return v >= 0 && v <= 65535;
}

/* Checks s[0..n) as host:port. */
static bool hostport_ok(const char *s, size_t n)
{
    const char *colon = NULL;
    for (size_t i = 0; i < n; i++)
        if (s[i] == ':')
            colon = s + i;
    if (!colon)
        return false;
    return host_ok(s, (size_t)(colon - s)) && port_ok(colon + 1, n - (size_t)(colon - s) - 1);
}

const char *kq_cfg_check_hostport(const char *s)
{
    if (s[0] == ':')
        return "needs a host, e.g. \"0.0.0.0:PORT\" for every address";
    if (!hostport_ok(s, strlen(s)))
        return "must be \"host:port\" with a host and a port 0-65535 (0 = any free port)";
    return NULL;
}

/* Sent in an HTTP header, so visible ASCII only; long enough that guessing is hopeless. */
const char *kq_cfg_check_admin_token(const char *s)
{
    size_t n = strlen(s);
    if (n < 16 || n > 256)
        return "must be 16-256 characters";
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f)
            return "must be visible ASCII (no spaces or control characters)";
    return NULL;
}

const char *kq_cfg_check_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 255)
        return "must be a name of 1-255 characters";
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= ' ' || ch == 0x7f || ch == '/' || ch == ',' || ch == ':')
            return "must not contain spaces, control characters, '/', ',' or ':'";
    }
    return NULL;
}

const char *kq_cfg_check_db(const char *s)
{
    static const char *const schemes[] = {"memory://", "file://", "mysql://"};
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
        size_t n = strlen(schemes[i]);
        if (strncmp(s, schemes[i], n) != 0)
            continue;
        if (i == 1 && (s[n] == '\0' || s[n] == '?'))
            return "a file store needs a directory, e.g. \"file://./data\"";
        return NULL;
    }
    return "must be a store URI: \"memory://\", \"file://DIR[?fsync=group]\" or \"mysql://...\"";
}

const char *kq_cfg_check_registry(const char *s)
{
    if (s[0] == '\0')
        return NULL;
    if (strncmp(s, "zk://", 5) != 0)
        return "must be \"\" (static bindings from this file) or \"zk://host:port[,host:port...]\"";
    /* The original parses and ignores a query string: accept and ignore it too. */
    const char *p = s + 5, *end = p + strcspn(p, "?");
    do {
        size_t n = strcspn(p, ",?");
        if (!hostport_ok(p, n))
            return "must list ZooKeeper servers as \"zk://host:port[,host:port...]\"";
        p += n + (p[n] == ',');
    } while (p < end);
    return NULL;
}

const char *kq_cfg_check_log_level(const char *s)
{
    enum kq_log_level lvl;
    return kq_log_parse_level(s, &lvl) == 0 ? NULL
                                            : "must be \"debug\", \"info\", \"warn\" or \"error\"";
}

/* The broker matches regx bindings with PCRE2 (unanchored), so compile errors are caught now
 * rather than silently never matching as in the original. */
const char *kq_cfg_check_regex(const char *pattern, char *buf, size_t len)
{
    int code;
    PCRE2_SIZE off;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, 0, &code, &off, NULL);
    if (re) {
        pcre2_code_free(re);
        return NULL;
    }
    char msg[160];
    pcre2_get_error_message(code, (PCRE2_UCHAR *)msg, sizeof msg);
    snprintf(buf, len, "invalid regular expression at offset %zu: %s", (size_t)off, msg);
    return buf;
}

int kq_bind_type_parse(const char *s, enum kq_bind_type *out)
{
    for (int i = KQ_BIND_DIRECT; i <= KQ_BIND_FANOUT; i++)
        if (strcasecmp(s, kq_bind_type_name((enum kq_bind_type)i)) == 0) {
            *out = (enum kq_bind_type)i;
            return 0;
        }
    return -EINVAL;
}

const char *kq_bind_type_name(enum kq_bind_type t)
{
    switch (t) {
    case KQ_BIND_DIRECT: return "direct";
    case KQ_BIND_REGX: return "regx";
    case KQ_BIND_FANOUT: return "fanout";
    }
    return "?";
}

/* ---- messages ----------------------------------------------------------------------- */

int kq_cfg_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen < 8)
        return -EINVAL;
    size_t used = strnlen(err, errlen - 1);
    if (used + 4 >= errlen) /* full: the "..." below already says that more was cut */
        return -EINVAL;
    if (used)
        err[used++] = '\n';
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err + used, errlen - used, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= errlen - used) /* cut: say so rather than end mid-word */
        memcpy(err + errlen - 4, "...", 4);
    return -EINVAL;
}

const char *kq_cfg_quote(const char *s, char *buf, size_t len)
{
    size_t o = 0;
    if (len < 10) {
        buf[0] = '\0';
        return buf;
    }
    buf[o++] = '"';
    for (; *s; s++) {
        /* keep room for this character (at most 4 bytes) and for `..."` plus the NUL */
        if (o + 4 + 5 > len) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)ch;
        } else if (ch < ' ' || ch == 0x7f) {
            o += (size_t)snprintf(buf + o, len - o, "\\x%02x", ch);
        } else {
            buf[o++] = (char)ch;
        }
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

/* ---- validation --------------------------------------------------------------------- */

/* "FILE: key: reason (got VALUE)" - the file prefix only when the config came from one. */
static int fail(const struct kq_config *c, char *err, size_t errlen, const char *key,
                const char *reason, const char *got)
{
    char q[96];
    return kq_cfg_err(err, errlen, "%s%s%s: %s%s%s%s", c->config_path ? c->config_path : "",
                      c->config_path ? ": " : "", key, reason, got ? " (got " : "",
                      got ? kq_cfg_quote(got, q, sizeof q) : "", got ? ")" : "");
}

int kq_config_error(const struct kq_config *c, char *err, size_t errlen, const char *key,
                    const char *reason)
{
    return fail(c, err, errlen, key, reason, NULL);
}

/* The checks below return 1 for a problem (reported into err), else 0, so that a caller can
 * count them and report every problem of a file at once. */

static int check_int(const struct kq_config *c, char *err, size_t errlen, const char *key, int v,
                     int min, int max)
{
    if (v >= min && v <= max)
        return 0;
    char reason[96];
    if (max == 0x7fffffff)
        snprintf(reason, sizeof reason, "must be an integer >= %d (got %d)", min, v);
    else
        snprintf(reason, sizeof reason, "must be an integer %d-%d (got %d)", min, max, v);
    fail(c, err, errlen, key, reason, NULL);
    return 1;
}

static int check_str(const struct kq_config *c, char *err, size_t errlen, const char *key,
                     const char *v, const char *(*check)(const char *))
{
    const char *why = v ? check(v) : "must be set";
    if (!why)
        return 0;
    fail(c, err, errlen, key, why, v);
    return 1;
}

static const char *check_nonempty(const char *s) { return s[0] ? NULL : "must not be empty"; }

/* Distinct groups with a binding on topic. */
static size_t groups_bound_to(const struct kq_config *c, const char *topic)
{
    size_t n = 0;
    /* indexes, not pointers: with no bindings c->bindings is NULL, and NULL + 0 is UB */
    for (size_t i = 0; i < c->n_bindings; i++) {
        const struct kq_binding *b = &c->bindings[i];
        if (!b->topic || !b->group_id || strcmp(b->topic, topic) != 0)
            continue;
        bool seen = false;
        for (size_t k = 0; k < i && !seen; k++) {
            const struct kq_binding *o = &c->bindings[k];
            seen = o->topic && o->group_id && strcmp(o->topic, topic) == 0 &&
                   strcmp(o->group_id, b->group_id) == 0;
        }
        n += !seen;
    }
    return n;
}

/* Is b the first binding of its group? (a missing group is reported once, not per binding) */
static bool first_of_group(const struct kq_config *c, const struct kq_binding *b)
{
    for (const struct kq_binding *o = c->bindings; o < b; o++)
        if (o->group_id && strcmp(o->group_id, b->group_id) == 0)
            return false;
    return true;
}

static int validate_binding(const struct kq_config *c, const struct kq_binding *b, char *err,
                            size_t errlen)
{
    char key[64], rx[256];
    snprintf(key, sizeof key, "bindings (group %.40s)", b->group_id ? b->group_id : "?");
    int n = check_str(c, err, errlen, key, b->group_id, kq_cfg_check_name) +
            check_str(c, err, errlen, key, b->topic, kq_cfg_check_name) +
            check_str(c, err, errlen, key, b->message_type, check_nonempty);
    if (n)
        return n;
    if (!kq_config_has_topic(c, b->topic))
        n += fail(c, err, errlen, key, "binds a topic that is not in topics", b->topic) != 0;
    /* with authentication on, a group without a secret can never log in */
    if (c->n_groups > 0 && !kq_config_group_secret(c, b->group_id) && first_of_group(c, b))
        n += fail(c, err, errlen, key,
                  "names a group that is not in groups, so its consumers "
                  "can never log in",
                  b->group_id) != 0;
    if ((unsigned)b->bind_type > KQ_BIND_FANOUT)
        n += fail(c, err, errlen, key, "bindType must be direct, regx or fanout", NULL) != 0;
    else if (b->bind_type == KQ_BIND_FANOUT && strcmp(b->message_type, "*") != 0)
        n += fail(c, err, errlen, key, "a fanout binding's messageType must be \"*\"",
                  b->message_type) != 0;
    else if (b->bind_type == KQ_BIND_REGX && kq_cfg_check_regex(b->message_type, rx, sizeof rx))
        n += fail(c, err, errlen, key, rx, b->message_type) != 0;
    if (b->watermark <= 0)
        n += check_int(c, err, errlen, key, b->watermark, 1, 0x7fffffff);
    return n;
}

/* Beyond loopback anyone on the network reaches the admin: its mutating requests (DLQ
 * requeue and purge, reload) must then carry the token. The token is never echoed. */
static int validate_admin(const struct kq_config *c, char *err, size_t errlen)
{
    const char *why;
    if (c->admin_token && (why = kq_cfg_check_admin_token(c->admin_token)))
        return fail(c, err, errlen, "adminToken", why, NULL);
    if (c->admin && !c->admin_token && !kq_addr_is_loopback(c->admin))
        return fail(c, err, errlen, "adminToken",
                    "required when admin listens beyond loopback (set adminToken, or bind "
                    "admin to 127.0.0.1)",
                    c->admin);
    return 0;
}

#define INT_SETTING(key, member, min, max)                                                         \
    {                                                                                              \
        key, offsetof(struct kq_config, member), min, max                                          \
    }
const struct kq_config_int kq_config_ints[] = {
    INT_SETTING("deliverySeconds", delivery_seconds, 1, 0x7fffffff),
    INT_SETTING("maxDeliverWorkers", max_deliver_workers, 1, 0x7fffffff),
    INT_SETTING("recoverSeconds", recover_seconds, 1, 0x7fffffff),
    INT_SETTING("recievePermitsPerSecond", recieve_permits_per_second, 1, 0x7fffffff),
    INT_SETTING("dlqExecHour", dlq_exec_hour, 0, 23),
    INT_SETTING("heartbeatTimeoutSeconds", heartbeat_timeout_seconds, 1, 0x7fffffff),
    INT_SETTING("maxConnections", max_connections, 0, 0x7fffffff),
    INT_SETTING("txCheckSeconds", tx_check_seconds, 1, 0x7fffffff),
    INT_SETTING("txMaxChecks", tx_max_checks, 1, 1000),
    INT_SETTING("deliverWindow", deliver_window, 1, 0x7fffffff),
    INT_SETTING("takeoverSeconds", takeover_seconds, 1, 0x7fffffff),
    INT_SETTING("messageHistory", message_history, 0, 1000000),
};
const size_t kq_config_n_ints = sizeof kq_config_ints / sizeof kq_config_ints[0];

int kq_config_int_value(const struct kq_config *c, const struct kq_config_int *f)
{
    int v;
    memcpy(&v, (const char *)c + f->offset, sizeof v);
    return v;
}

const struct kq_config_int *kq_cfg_int_setting(const char *key)
{
    for (size_t i = 0; i < kq_config_n_ints; i++)
        if (!strcmp(kq_config_ints[i].key, key))
            return &kq_config_ints[i];
    return NULL;
}

int kq_config_validate(const struct kq_config *c, char *err, size_t errlen)
{
    int n = 0;
    if (err && errlen)
        err[0] = '\0';
    n += check_str(c, err, errlen, "bind", c->bind, kq_cfg_check_hostport);
    n += check_str(c, err, errlen, "db", c->db, kq_cfg_check_db);
    n += check_str(c, err, errlen, "registry", c->registry, kq_cfg_check_registry);
    n += check_str(c, err, errlen, "policies", c->policies, check_nonempty);
    n += check_str(c, err, errlen, "logLevel", c->log_level, kq_cfg_check_log_level);
    n += check_str(c, err, errlen, "env", c->env, check_nonempty);
    if (c->log_file)
        n += check_str(c, err, errlen, "logFile", c->log_file, check_nonempty);
    if (c->admin)
        n += check_str(c, err, errlen, "admin", c->admin, kq_cfg_check_hostport);
    for (size_t i = 0; i < kq_config_n_ints; i++) {
        const struct kq_config_int *f = &kq_config_ints[i];
        n += check_int(c, err, errlen, f->key, kq_config_int_value(c, f), f->min, f->max);
    }
    n += validate_admin(c, err, errlen) != 0;

    if (c->n_topics == 0)
        n += fail(c, err, errlen, "topics", "at least one topic is required", NULL) != 0;
    for (size_t i = 0; i < c->n_topics; i++) {
        n += check_str(c, err, errlen, "topics", c->topics[i], kq_cfg_check_name);
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->topics[i], c->topics[j]) == 0)
                n += fail(c, err, errlen, "topics", "duplicate topic", c->topics[i]) != 0;
    }
    for (size_t i = 0; i < c->n_groups; i++) {
        const struct kq_group_secret *g = &c->groups[i];
        n += check_str(c, err, errlen, "groups", g->group_id, kq_cfg_check_name) +
             check_str(c, err, errlen, "groups", g->secret, check_nonempty);
        for (size_t j = 0; j < i; j++)
            if (g->group_id && c->groups[j].group_id &&
                strcmp(g->group_id, c->groups[j].group_id) == 0)
                n += fail(c, err, errlen, "groups", "duplicate group", g->group_id) != 0;
    }
    for (size_t i = 0; i < c->n_bindings; i++)
        n += validate_binding(c, &c->bindings[i], err, errlen);
    _Static_assert(KQ_MAX_GROUPS_PER_TOPIC == 4096, "update the message below");
    for (size_t t = 0; t < c->n_topics; t++)
        if (c->topics[t] && groups_bound_to(c, c->topics[t]) > KQ_MAX_GROUPS_PER_TOPIC)
            n += fail(c, err, errlen, "bindings",
                      "more groups are bound to this topic than "
                      "the limit of 4096 (KQ_MAX_GROUPS_PER_TOPIC)",
                      c->topics[t]) != 0;
    return n ? -EINVAL : 0;
}

/* ---- printing ----------------------------------------------------------------------- */

/* A Lua string literal: printable ASCII as is, everything else as a decimal escape. */
static void put_lua_str(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(out, "\\%c", ch);
        else if (ch < ' ' || ch >= 0x7f)
            fprintf(out, "\\%03u", ch);
        else
            fputc(ch, out);
    }
    fputc('"', out);
}

static void put_field(FILE *out, const char *indent, const char *key, const char *value)
{
    fprintf(out, "%s%s = ", indent, key);
    put_lua_str(out, value);
    fputs(",\n", out);
}

void kq_config_print(const struct kq_config *c, FILE *out)
{
    const char *in = "      ";
    fputs("-- effective configuration", out);
    if (c->config_path)
        fprintf(out, " (from %s and flags)", c->config_path);
    fputs("\nreturn {\n  default = ", out);
    put_lua_str(out, c->cluster_name);
    fputs(",\n  registry = ", out);
    put_lua_str(out, c->registry);
    fputs(",\n  clusters = {\n    [", out);
    put_lua_str(out, c->cluster_name);
    fputs("] = {\n", out);
    put_field(out, in, "env", c->env);
    put_field(out, in, "bind", c->bind);
    fprintf(out, "%stopics = {", in);
    for (size_t i = 0; i < c->n_topics; i++) {
        fputs(i ? ", " : " ", out);
        put_lua_str(out, c->topics[i]);
    }
    fputs(" },\n", out);
    char db[1024];
    put_field(out, in, "db", kq_redact(c->db, db, sizeof db)); /* may end up in logs */
    for (size_t i = 0; i < kq_config_n_ints; i++)
        fprintf(out, "%s%s = %d,\n", in, kq_config_ints[i].key,
                kq_config_int_value(c, &kq_config_ints[i]));
    fprintf(out, "%sdeliveryFirst = %s,\n", in, c->delivery_first ? "true" : "false");
    if (c->admin)
        put_field(out, in, "admin", c->admin);
    else
        fprintf(out, "%sadmin = false,\n", in);
    if (c->admin_token) /* a secret: --check output may end up in logs */
        fprintf(out, "%s-- adminToken = (set, not shown)\n", in);
    put_field(out, in, "policies", c->policies);
    put_field(out, in, "logLevel", c->log_level);
    if (c->log_file)
        put_field(out, in, "logFile", c->log_file);
    /* secrets are not printed: --check output may end up in logs */
    fprintf(out, "%sgroups = {\n", in);
    for (size_t i = 0; i < c->n_groups; i++) {
        fprintf(out, "%s  [", in);
        put_lua_str(out, c->groups[i].group_id);
        fputs("] = \"(secret)\",\n", out);
    }
    fprintf(out, "%s},\n    },\n  },\n  bindings = {\n", in);
    for (size_t i = 0; i < c->n_bindings; i++) {
        const struct kq_binding *b = &c->bindings[i];
        fputs("    { groupIds = { ", out);
        put_lua_str(out, b->group_id);
        fputs(" }, topic = ", out);
        put_lua_str(out, b->topic);
        fputs(", messageType = ", out);
        put_lua_str(out, b->message_type);
        fprintf(out, ", bindType = \"%s\", watermark = %d, persistent = %s },\n",
                kq_bind_type_name(b->bind_type), b->watermark,
                b->persistent ? "true" : "false");
    }
    fputs("  },\n}\n", out);
}
