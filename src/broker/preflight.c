/* kq_broker_preflight: every check a start makes before it takes a resource, in one place.
 * `kiteq --check`, kq_broker_start and a reload all call it, so a file that --check accepts
 * is one the broker starts with (the store, registry and address parsers are the ones the
 * start uses, not look-alikes in the config module). */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "broker/internal.h"
#include "core/log.h"
#include "registry/zk_registry.h"

/* The problem lines name the key; a relative path is resolved against this. */
static const char *cwd(char *buf, size_t len) { return getcwd(buf, len) ? buf : "?"; }

static int check_addr(const struct kq_config *c, const char *key, const char *hostport, char *err,
                      size_t errlen)
{
    struct sockaddr_storage ss;
    if (kq_net_parse_addr(hostport, &ss) == 0)
        return 0;
    char why[400];
    snprintf(why, sizeof why,
             "cannot listen on \"%.300s\": the host must be an IPv4 address, "
             "an IPv6 address in brackets or localhost",
             hostport);
    return kq_config_error(c, err, errlen, key, why);
}

static int check_store(const struct kq_config *c, char *err, size_t errlen)
{
    char why[512];
    if (kq_store_check(c->db, why, sizeof why) == 0)
        return 0;
    return kq_config_error(c, err, errlen, "db", why);
}

static int check_registry(const struct kq_config *c, char *err, size_t errlen)
{
    char hosts[1024];
    if (!c->registry[0] || kq_zk_parse_uri(c->registry, hosts, sizeof hosts) == 0)
        return 0;
    return kq_config_error(c, err, errlen, "registry", "must be \"zk://host:port[,host:port...]\"");
}

/* The log is opened (appending, created if missing) before the broker starts. */
static int check_log_file(const struct kq_config *c, char *err, size_t errlen)
{
    if (!c->log_file || access(c->log_file, W_OK) == 0)
        return 0;
    int e = errno;
    char dir[1024], why[1400], wd[1024];
    snprintf(dir, sizeof dir, "%s", c->log_file);
    if (e == ENOENT) { /* created at start: its folder must take it */
        if (access(dirname(dir), W_OK | X_OK) == 0)
            return 0;
        e = errno;
    }
    snprintf(why, sizeof why, "cannot append to %.500s (working directory %.500s): %s", c->log_file,
             cwd(wd, sizeof wd), strerror(e));
    return kq_config_error(c, err, errlen, "logFile", why);
}

/* A folder named in the file must exist; the default one may be missing (quick starts from
 * flags only), which means the built-in hooks and says so. */
static int load_policies(const struct kq_config *c, struct kq_policy **out, char *err,
                         size_t errlen)
{
    char why[1024], wd[1024];
    struct kq_policy *p = NULL;
    int rc = kq_policy_load(c->policies, &p, why, sizeof why);
    if (rc == -ENOENT && !c->policies_set) {
        KQ_WARN("policy",
                "the default policies folder %s does not exist (working directory "
                "%s): built-in routing, flow and retry only; set `policies` in the config to "
                "use Lua policies",
                c->policies, cwd(wd, sizeof wd));
        rc = kq_policy_load(NULL, &p, why, sizeof why);
    }
    if (rc == -ENOENT) {
        char line[sizeof why + sizeof wd + 32];
        snprintf(line, sizeof line, "%s (working directory %s)", why, cwd(wd, sizeof wd));
        return kq_config_error(c, err, errlen, "policies", line);
    }
    if (rc)
        return kq_config_error(c, err, errlen, "policies", why);
    if (out)
        *out = p;
    else
        kq_policy_free(p);
    return 0;
}

int kq_broker_preflight(const struct kq_config *cfg, struct kq_policy **policy, char *err,
                        size_t errlen)
{
    struct kq_policy *p = NULL;
    if (policy)
        *policy = NULL;
    if (err && errlen)
        err[0] = '\0';
    int n = (check_addr(cfg, "bind", cfg->bind, err, errlen) != 0) +
            (cfg->admin && check_addr(cfg, "admin", cfg->admin, err, errlen) != 0) +
            (check_store(cfg, err, errlen) != 0) + (check_registry(cfg, err, errlen) != 0) +
            (check_log_file(cfg, err, errlen) != 0) + (load_policies(cfg, &p, err, errlen) != 0);
    if (n) {
        kq_policy_free(p);
        return -EINVAL;
    }
    if (policy)
        *policy = p;
    else
        kq_policy_free(p);
    return 0;
}
