/* kq_config_from_args: `kiteq [CONFIG] [--cluster NAME] [--check] [--help]` plus the
 * original's quick-start flags, which override the file. Flags are accepted as `-name=value`,
 * `--name=value` and `-name value` (Go's flag package accepts all three); boolean flags take
 * no separate value (`-deliveryFirst` or `-deliveryFirst=false`). The last repeat wins. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_internal.h"

enum flag_id {
    F_CONFIG,
    F_CLUSTER,
    F_CHECK,
    F_HELP,
    F_BIND,
    F_PPORT,
    F_DB,
    F_TOPICS,
    F_ZKHOST,
    F_DELIVERY_FIRST,
    F_LOG_LEVEL,
    F_LOG_FILE,
    F_GROUPS,
    F_COUNT
};

static const struct flag {
    const char *name;
    enum flag_id id;
    bool is_bool;
} flags[] = {
    {"configPath", F_CONFIG, false},
    {"cluster", F_CLUSTER, false},
    {"clusterName", F_CLUSTER, false},
    {"check", F_CHECK, true},
    {"help", F_HELP, true},
    {"h", F_HELP, true},
    {"bind", F_BIND, false},
    {"pport", F_PPORT, false},
    {"db", F_DB, false},
    {"topics", F_TOPICS, false},
    {"zkhost", F_ZKHOST, false},
    {"deliveryFirst", F_DELIVERY_FIRST, true},
    {"logLevel", F_LOG_LEVEL, false},
    {"groups", F_GROUPS, false},
    {"logFile", F_LOG_FILE, false},
};

static const char usage[] =
    "usage: kiteq [CONFIG] [--cluster NAME] [--check] [flags]\n"
    "       kiteq policy check|call ...   (try a policies folder: kiteq policy --help)\n"
    "\n"
    "  CONFIG                  Lua config file (also -configPath=FILE), e.g. "
    "lua/config/cluster.lua\n"
    "  --cluster NAME          cluster section to run (also -clusterName=NAME);\n"
    "                          default: the file's `default`, or its only cluster\n"
    "  --check                 load and validate the configuration, print it, exit\n"
    "  --help                  this text\n"
    "\n"
    "flags override the file (-name=value, --name=value or -name value):\n"
    "  -bind=HOST:PORT         listen address and broker id (default 127.0.0.1:13800)\n"
    "  -pport=N|HOST:PORT      admin HTTP port (on 127.0.0.1) or address; -1 = off (default)\n"
    "  -db=URI                 store: memory://, file://DIR[?fsync=group], mysql://...\n"
    "  -topics=a,b             topics served by this broker\n"
    "  -zkhost=H:P[,H:P]       ZooKeeper registry (registry = zk://H:P,...); empty = static\n"
    "  -deliveryFirst[=BOOL]   deliver before the message is stored (default false)\n"
    "  -logLevel=LEVEL         debug, info, warn or error (default info)\n"
    "  -logFile=PATH           append the log to PATH (SIGUSR1 reopens it); \"\" = stderr\n"
    "  -groups=g1:s1,g2:s2     group ids and their secrets (replaces the file's groups)\n"
    "\n"
    "Without a config file the options start from their defaults, e.g.\n"
    "  kiteq -bind=127.0.0.1:13800 -db=memory:// -topics=trade\n";

static const struct flag *find_flag(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        if (strlen(flags[i].name) == len && strncmp(flags[i].name, name, len) == 0)
            return &flags[i];
    return NULL;
}

static int parse_bool(const char *s, bool *out)
{
    if (!strcmp(s, "true") || !strcmp(s, "1") || !strcmp(s, "t") || !strcmp(s, "TRUE"))
        *out = true;
    else if (!strcmp(s, "false") || !strcmp(s, "0") || !strcmp(s, "f") || !strcmp(s, "FALSE"))
        *out = false;
    else
        return -EINVAL;
    return 0;
}

/* "-flag: reason (got "value")" */
static int bad_flag(char *err, size_t errlen, const char *flag, const char *reason,
                    const char *value)
{
    char q[96];
    return kq_cfg_err(err, errlen, "-%s: %s (got %s)", flag, reason,
                      kq_cfg_quote(value, q, sizeof q));
}

/* Splits "a,b,c" and calls fn on each item; an empty list or item is an error. */
static int each_item(const char *list, int (*fn)(void *ud, const char *item), void *ud)
{
    char *copy = kq_cfg_strdup(list);
    int rc = 0;
    if (!copy[0])
        rc = -EINVAL;
    /* strtok_r would skip empty items such as "a,,b"; those are mistakes, so split by hand */
    for (char *p = copy; rc == 0 && p;) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        rc = fn(ud, p);
        p = comma ? comma + 1 : NULL;
    }
    free(copy);
    return rc;
}

static int add_topic(void *ud, const char *t)
{
    struct kq_config *c = ud;
    if (kq_cfg_check_name(t) || kq_config_has_topic(c, t))
        return -EINVAL;
    kq_cfg_add_topic(c, t);
    return 0;
}

static int add_group(void *ud, const char *item)
{
    struct kq_config *c = ud;
    const char *colon = strchr(item, ':');
    if (!colon || !colon[1])
        return -EINVAL;
    char *g = kq_cfg_strdup(item);
    g[colon - item] = '\0';
    int rc = kq_cfg_check_name(g) || kq_config_group_secret(c, g) ? -EINVAL : 0;
    if (rc == 0)
        kq_cfg_add_group(c, g, colon + 1);
    free(g);
    return rc;
}

/* Applies the override flags (values already collected) to c. */
static int apply_flags(struct kq_config *c, const char *const *val, char *err, size_t errlen)
{
    const char *why;
    if (val[F_BIND]) {
        if ((why = kq_cfg_check_hostport(val[F_BIND])))
            return bad_flag(err, errlen, "bind", why, val[F_BIND]);
        kq_cfg_set_str(&c->bind, val[F_BIND]);
    }
    if (val[F_PPORT]) {
        /* A bare port is on loopback (the original used the bind host, which put an
         * unauthenticated admin on every interface with -bind=0.0.0.0:P); another address
         * must be spelled out, HOST:PORT, and then needs adminToken. */
        const char *v = val[F_PPORT];
        if (strchr(v, ':')) {
            if ((why = kq_cfg_check_hostport(v)))
                return bad_flag(err, errlen, "pport", why, v);
            kq_cfg_set_str(&c->admin, v);
        } else {
            char *end;
            errno = 0;
            long port = strtol(v, &end, 10);
            if (errno || end == v || *end || port < -1 || port > 65535)
                return bad_flag(err, errlen, "pport",
                                "must be a port 1-65535 (on 127.0.0.1), HOST:PORT, or -1/0 "
                                "for off",
                                v);
            char admin[32];
            snprintf(admin, sizeof admin, "127.0.0.1:%ld", port);
            kq_cfg_set_str(&c->admin, port <= 0 ? NULL : admin);
        }
    }
    if (val[F_DB]) {
        if ((why = kq_cfg_check_db(val[F_DB])))
            return bad_flag(err, errlen, "db", why, val[F_DB]);
        kq_cfg_set_str(&c->db, val[F_DB]);
    }
    if (val[F_TOPICS]) {
        kq_cfg_free_topics(c);
        if (each_item(val[F_TOPICS], add_topic, c))
            return bad_flag(err, errlen, "topics",
                            "must be a comma-separated list of distinct topic names",
                            val[F_TOPICS]);
    }
    if (val[F_ZKHOST]) {
        char reg[1024];
        snprintf(reg, sizeof reg, "%s%s", val[F_ZKHOST][0] ? "zk://" : "", val[F_ZKHOST]);
        if (kq_cfg_check_registry(reg))
            return bad_flag(err, errlen, "zkhost", "must be \"host:port[,host:port...]\"",
                            val[F_ZKHOST]);
        kq_cfg_set_str(&c->registry, reg);
    }
    if (val[F_DELIVERY_FIRST] && parse_bool(val[F_DELIVERY_FIRST], &c->delivery_first))
        return bad_flag(err, errlen, "deliveryFirst", "must be true or false",
                        val[F_DELIVERY_FIRST]);
    if (val[F_LOG_LEVEL]) {
        if ((why = kq_cfg_check_log_level(val[F_LOG_LEVEL])))
            return bad_flag(err, errlen, "logLevel", why, val[F_LOG_LEVEL]);
        kq_cfg_set_str(&c->log_level, val[F_LOG_LEVEL]);
    }
    if (val[F_LOG_FILE]) /* "" = back to stderr */
        kq_cfg_set_str(&c->log_file, val[F_LOG_FILE][0] ? val[F_LOG_FILE] : NULL);
    if (val[F_GROUPS]) {
        kq_cfg_free_groups(c);
        if (each_item(val[F_GROUPS], add_group, c))
            return bad_flag(err, errlen, "groups",
                            "must be \"group:secret[,group:secret...]\" with distinct groups",
                            val[F_GROUPS]);
    }
    return 0;
}

int kq_config_from_args(struct kq_config *c, int argc, char **argv, bool *check_only, char *err,
                        size_t errlen)
{
    const char *val[F_COUNT] = {0};
    const char *positional = NULL;
    bool only_positional = false;
    char dummy[8];
    int rc;

    if (!err || errlen == 0) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = '\0';
    kq_config_defaults(c);
    if (check_only)
        *check_only = false;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_positional || a[0] != '-' || a[1] == '\0') {
            if (positional)
                return kq_cfg_err(err, errlen,
                                  "unexpected argument \"%s\": only one config "
                                  "file may be given (see --help)",
                                  a);
            positional = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_positional = true;
            continue;
        }
        const char *name = a + 1 + (a[1] == '-');
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const struct flag *f = find_flag(name, len);
        if (!f)
            return kq_cfg_err(err, errlen, "unknown flag -%.*s (see --help)", (int)len, name);
        if (f->is_bool) {
            bool b;
            const char *v = eq ? eq + 1 : "true";
            if (parse_bool(v, &b))
                return bad_flag(err, errlen, f->name, "must be true or false", v);
            val[f->id] = b ? "true" : "false";
        } else if (eq) {
            val[f->id] = eq + 1;
        } else if (i + 1 < argc) {
            val[f->id] = argv[++i];
        } else {
            return kq_cfg_err(err, errlen, "-%s needs a value (see --help)", f->name);
        }
    }

    if (val[F_HELP] && strcmp(val[F_HELP], "true") == 0) {
        fputs(usage, stdout);
        return 1;
    }
    if (check_only)
        *check_only = val[F_CHECK] && strcmp(val[F_CHECK], "true") == 0;
    if (positional && val[F_CONFIG] && strcmp(positional, val[F_CONFIG]) != 0)
        return kq_cfg_err(err, errlen, "two config files given: \"%s\" and -configPath=\"%s\"",
                          positional, val[F_CONFIG]);
    const char *path = positional ? positional : val[F_CONFIG];
    if (path && path[0]) {
        if ((rc = kq_config_load_file(c, path, val[F_CLUSTER], err, errlen)))
            return rc;
    } else if (val[F_CLUSTER]) {
        kq_cfg_set_str(&c->cluster_name, val[F_CLUSTER]);
    }
    if ((rc = apply_flags(c, val, err, errlen)))
        return rc;
    return kq_config_validate(c, err, errlen);
}
