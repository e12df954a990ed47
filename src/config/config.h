/* Broker configuration: a declarative Lua file (lua/config/cluster.lua) and the original's
 * command-line flags, validated into one plain C struct. Nothing else reads the file.
 *
 * File format: a Lua chunk that ends with `return { default = "dev", registry = "",
 * clusters = { dev = { bind = ..., topics = {...}, ... } }, bindings = { ... } }`, run in a
 * sandbox (string/table/math only, time and memory limits); see lua/config/cluster.lua for
 * every key and its default. Error messages are ready to print as-is, one problem per line
 * (every problem of a file is reported, not only the first; a full buffer ends in "..."):
 * "FILE: clusters.dev.deliverySeconds: must be an integer >= 1 (got "abc")",
 * "FILE:LINE: <Lua error>", "-bind: must be ... (got "x")". Warnings (a value that is
 * ignored) are logged as "FILE: key: reason" and do not fail the load.
 *
 * Ownership: every string and array in struct kq_config is malloc'd and owned by it;
 * release with kq_config_free (also after a failed load/from_args). Not thread-safe per
 * struct; different structs may be used from different threads. */
#ifndef KQ_CONFIG_CONFIG_H
#define KQ_CONFIG_CONFIG_H
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

enum kq_bind_type { KQ_BIND_DIRECT = 0, KQ_BIND_REGX = 1, KQ_BIND_FANOUT = 2 };
/* Parses "direct"/"regx"/"fanout" (any case); 0 or -EINVAL. */
int kq_bind_type_parse(const char *s, enum kq_bind_type *out);
/* "direct", "regx" or "fanout" (the config's and the policies' spelling). */
const char *kq_bind_type_name(enum kq_bind_type t);

/* The most consumer groups one topic can have bindings for. Routing, delivery and the
 * checks of config and registry all use this one limit: a binding past it is refused with a
 * clear error where it comes in, never cut off silently at delivery. */
#define KQ_MAX_GROUPS_PER_TOPIC 4096

struct kq_binding {
    char *group_id;
    char *topic;
    char *message_type; /* exact type (direct), pattern (regx), "*" (fanout) */
    enum kq_bind_type bind_type;
    int watermark; /* msgs/s per (group, topic); <= 0 in the file means the default 6000 */
    bool persistent;
};

struct kq_group_secret {
    char *group_id;
    char *secret;
};

struct kq_config {
    char *config_path;  /* NULL when running from flags only */
    char *cluster_name; /* the cluster section in use */
    char *registry;     /* "" (static bindings from the file) or "zk://h:p,h:p" */
    char *env;
    char *bind; /* "host:port", default "127.0.0.1:13800" */
    char **topics;
    size_t n_topics;
    char *db;                       /* store URI, default "file://./data" */
    int delivery_seconds;           /* wait for a DeliverAck, default 5 */
    int max_deliver_workers;        /* concurrent deliveries, default 8000 */
    int recover_seconds;            /* retry/recovery scan period, default 10 (>= 1) */
    int recieve_permits_per_second; /* broker intake rate, default 20000 (original spelling) */
    int dlq_exec_hour;              /* 0-23, kept for compatibility, default 2 */
    bool delivery_first;            /* default false */
    int heartbeat_timeout_seconds;  /* close connections silent this long, default 90 */
    int max_connections;  /* client connections at once; 0 = from RLIMIT_NOFILE (default) */
    int tx_check_seconds; /* first transaction check after this, default 5 */
    int tx_max_checks;    /* then dead-lettered, default 10 */
    int deliver_window;   /* deliveries in flight per group, default 1000 */
    int takeover_seconds; /* mysql + zk: take over a broker gone this long, default 30 */
    int message_history;  /* finished messages whose history is kept, default 10000;
                                      * 0 = no message histories (restart to change) */
    char *admin;          /* admin HTTP "host:port", NULL = off */
    char *admin_token;    /* adminToken: mutating admin requests must carry it
                                      * (Authorization: Bearer); required when admin listens
                                      * beyond loopback; NULL = none */
    char *policies;       /* Lua policies folder, default "lua/policies" */
    bool policies_set;    /* named in the file: it must exist (the default may not) */
    char *log_level;      /* "info" */
    char *log_file;       /* log to this file (append; SIGUSR1 reopens); NULL = stderr */
    struct kq_group_secret *groups; /* groupId -> secret (authentication) */
    size_t n_groups;
    struct kq_binding *bindings; /* static registry: one entry per (group, binding) */
    size_t n_bindings;
};

/* Set every option to its default (ignores and overwrites any previous content). */
void kq_config_defaults(struct kq_config *c);
/* Load cluster `cluster` (NULL = the file's `default`, else the only cluster) from a Lua
 * config file into c (which holds defaults). Returns 0, or -EINVAL with
 * "FILE: KEY: reason" in err. Every cluster of the file is checked, only the selected one is
 * stored; c->config_path and c->cluster_name are set. Per-key rules are checked here; call
 * kq_config_validate before using c (a cluster may rely on flags for its topics). */
int kq_config_load_file(struct kq_config *c, const char *path, const char *cluster, char *err,
                        size_t errlen);
/* The same from the file's contents raw[0..len) (not NUL-terminated); path only names it
 * in errors and in c->config_path. Used by the fuzzer. */
int kq_config_load_buffer(struct kq_config *c, const char *path, const char *raw, size_t len,
                          const char *cluster, char *err, size_t errlen);
/* Parse argv: `kiteq [CONFIG] [--cluster NAME] [--check] [-bind=..] [-pport=..] [-db=..]
 * [-topics=a,b] [-zkhost=..] [-deliveryFirst] [-clusterName=..] [-configPath=..]`.
 * Loads the file if one is given, then applies the flags over it, then validates.
 * *check_only is set for --check. Returns 0 or -EINVAL with a reason in err;
 * 1 when --help was printed (to stdout). Also accepts --flag=value and -flag value, and
 * -logLevel=.., -logFile=PATH and -groups=g1:secret1,g2:secret2 (replaces the file's groups).
 * c is initialised with kq_config_defaults first (its previous content is not freed). */
int kq_config_from_args(struct kq_config *c, int argc, char **argv, bool *check_only, char *err,
                        size_t errlen);
/* Checks cross-field rules (bindings name configured topics and groups, ranges). 0 or
 * -EINVAL with every problem in err, one per line. */
int kq_config_validate(const struct kq_config *c, char *err, size_t errlen);
/* Appends the line "FILE: key: reason" (no "FILE: " for a flags-only config) to err, for
 * checks of c made outside this module (policies, store, addresses). Returns -EINVAL. */
int kq_config_error(const struct kq_config *c, char *err, size_t errlen, const char *key,
                    const char *reason);
bool kq_config_has_topic(const struct kq_config *c, const char *topic);
/* The secret of a group, or NULL when the group is unknown. */
const char *kq_config_group_secret(const struct kq_config *c, const char *group);
/* Frees everything c owns and zeroes it; safe on a zeroed or defaulted struct. */
void kq_config_free(struct kq_config *c);
/* The integer settings of a cluster: key as in the file, where it is in struct kq_config, and
 * the range kq_config_validate allows. One list for validating, printing and the policies'
 * kq.config, in the file's order. */
struct kq_config_int {
    const char *key;
    size_t offset;
    int min, max;
};
extern const struct kq_config_int kq_config_ints[];
extern const size_t kq_config_n_ints;
/* The value of setting f in c. */
int kq_config_int_value(const struct kq_config *c, const struct kq_config_int *f);
/* Writes c as a Lua config file (group secrets replaced by "(secret)", passwords in the db
 * URI by "***"). */
void kq_config_print(const struct kq_config *c, FILE *out);
#endif
