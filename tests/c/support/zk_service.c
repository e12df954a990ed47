/* See zk_service.h. */
#include "support/zk_service.h"
#include "support/test_files.h"
#include "support/tmp_dir.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct zk_service *g_owned; /* stopped at exit if the test did not */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static const char *script_dir(void)
{
    static char dir[512];
    return test_source_path(dir, sizeof dir, "scripts");
}

/* Run "scripts/NAME BASE args..." and return its exit status (-1 on spawn failure). */
static int run_script(const char *name, const char *base, const char *a1, const char *a2)
{
    char exe[600];
    snprintf(exe, sizeof exe, "%s/%s", script_dir(), name);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        execl("/bin/bash", "bash", exe, base, a1, a2, (char *)NULL);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void at_exit_stop(void)
{
    if (g_owned)
        zk_service_stop(g_owned);
}

/* A child that blocks on a pipe and runs services-down when the pipe closes: that happens
 * when we exit in any way, including SIGKILL from a test timeout. */
static void start_watchdog(struct zk_service *s)
{
    int p[2];
    /* close-on-exec: a server started by the script must not keep the pipe open */
    if (pipe2(p, O_CLOEXEC) != 0)
        return;
    pid_t pid = fork();
    if (pid == 0) {
        close(p[1]);
        setsid(); /* not killed with our process group */
        char c;
        for (;;) {
            ssize_t n = read(p[0], &c, 1);
            if (n == 0 || (n < 0 && errno != EINTR))
                break;
        }
        char exe[600];
        snprintf(exe, sizeof exe, "%s/services-down.sh", script_dir());
        execl("/bin/bash", "bash", exe, s->base, "--purge", (char *)NULL);
        _exit(127);
    }
    close(p[0]);
    s->watchdog = pid > 0 ? pid : 0;
    s->watchdog_fd = pid > 0 ? p[1] : -1;
    if (pid <= 0)
        close(p[1]);
}

int zk_service_start(struct zk_service *s)
{
    memset(s, 0, sizeof *s);
    s->watchdog_fd = -1;
    const char *env = getenv("ZK_HOSTS");
    if (env && *env) {
        snprintf(s->hosts, sizeof s->hosts, "%s", env);
        snprintf(s->uri, sizeof s->uri, "zk://%s", s->hosts);
        const char *base = getenv("KQ_SERVICES_BASE"); /* lets restart tests run too */
        if (base)
            snprintf(s->base, sizeof s->base, "%s", base);
        return 0;
    }
    if (tmp_dir_make(s->base, sizeof s->base, "kqzk.") != 0)
        return -1;
    s->owned = true;
    g_owned = s;
    atexit(at_exit_stop);
    start_watchdog(s);
    if (run_script("services-up.sh", s->base, "zk", NULL) != 0) {
        fprintf(stderr, "zk_service: services-up.sh %s zk failed\n", s->base);
        zk_service_stop(s);
        return -1;
    }
    char path[300], line[512];
    snprintf(path, sizeof path, "%s/services.env", s->base);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "ZK_HOSTS=", 9) == 0)
            snprintf(s->hosts, sizeof s->hosts, "%.*s", (int)strcspn(line + 9, "\n"), line + 9);
    if (f)
        fclose(f);
    if (!s->hosts[0]) {
        fprintf(stderr, "zk_service: no ZK_HOSTS in %s\n", path);
        zk_service_stop(s);
        return -1;
    }
    snprintf(s->uri, sizeof s->uri, "zk://%s", s->hosts);
    return 0;
}

void zk_service_stop(struct zk_service *s)
{
    if (!s->owned)
        return;
    run_script("services-down.sh", s->base, "--purge", NULL);
    if (s->watchdog_fd >= 0)
        close(s->watchdog_fd); /* the watchdog's second services-down finds nothing to do */
    if (s->watchdog > 0)
        waitpid(s->watchdog, NULL, 0);
    s->watchdog_fd = -1;
    s->watchdog = 0;
    s->owned = false;
    if (g_owned == s)
        g_owned = NULL;
}

int zk_service_down(struct zk_service *s)
{
    if (!s->base[0])
        return -1;
    return run_script("services-down.sh", s->base, "zk", NULL) == 0 ? 0 : -1;
}

int zk_service_up(struct zk_service *s)
{
    if (!s->base[0])
        return -1;
    return run_script("services-up.sh", s->base, "zk", NULL) == 0 ? 0 : -1;
}

static void on_test_watch(zhandle_t *zh, int type, int state, const char *path, void *ctx) {}

zhandle_t *zk_test_connect(const char *hosts, int timeout_ms)
{
    zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR);
    zhandle_t *zh = zookeeper_init(hosts, on_test_watch, 10000, NULL, NULL, 0);
    for (int t = 0; zh && t < timeout_ms; t += 20) {
        if (zoo_state(zh) == ZOO_CONNECTED_STATE)
            return zh;
        sleep_ms(20);
    }
    if (zh)
        zookeeper_close(zh);
    return NULL;
}

int zk_test_write(zhandle_t *zh, const char *path, const char *data)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = strchr(buf + 1, '/'); p; p = strchr(p + 1, '/')) {
        *p = '\0';
        zoo_create(zh, buf, NULL, -1, &ZOO_OPEN_ACL_UNSAFE, ZOO_PERSISTENT, NULL, 0);
        *p = '/';
    }
    int len = data ? (int)strlen(data) : -1;
    int rc = zoo_create(zh, path, data, len, &ZOO_OPEN_ACL_UNSAFE, ZOO_PERSISTENT, NULL, 0);
    if (rc == ZNODEEXISTS)
        rc = zoo_set(zh, path, data, len, -1);
    return rc;
}

void zk_test_bind_path(char *out, size_t len, const char *topic, const char *group)
{
    snprintf(out, len, "/kiteq/sub/%s/%s-bind", topic, group);
}

void zk_test_write_binding(zhandle_t *zh, const char *topic, const char *group, const char *mtype,
                           int bind_type)
{
    char json[512], path[256];
    snprintf(json, sizeof json,
             "[{\"groupId\":\"%s\",\"topic\":\"%s\",\"messageType\":\"%s\",\"bindType\":%d,"
             "\"version\":\"1.0.0\",\"watermark\":1000,\"persistent\":true}]",
             group, topic, mtype, bind_type);
    zk_test_bind_path(path, sizeof path, topic, group);
    assert_int_equal(zk_test_write(zh, path, json), ZOK);
}

void zk_test_delete_binding(zhandle_t *zh, const char *topic, const char *group)
{
    char path[256];
    zk_test_bind_path(path, sizeof path, topic, group);
    int rc = zoo_delete(zh, path, -1);
    assert_true(rc == ZOK || rc == ZNONODE);
}

bool zk_test_wait_node(zhandle_t *zh, const char *path, bool want, struct Stat *st, int timeout_ms)
{
    struct Stat tmp;
    for (int t = 0; t <= timeout_ms; t += 20) {
        int rc = zoo_exists(zh, path, 0, st ? st : &tmp);
        if ((rc == ZOK) == want && (rc == ZOK || rc == ZNONODE))
            return true;
        sleep_ms(20);
    }
    return false;
}

int zk_service_open(struct zk_service *s, zhandle_t **zh)
{
    if (zk_service_start(s) != 0)
        return -1;
    if (!(*zh = zk_test_connect(s->hosts, 15000))) {
        fprintf(stderr, "zk_service: no session with %s within 15 s\n", s->hosts);
        return -1;
    }
    return 0;
}

void zk_service_close(struct zk_service *s, zhandle_t **zh)
{
    if (*zh)
        zookeeper_close(*zh);
    *zh = NULL;
    zk_service_stop(s);
}

void zk_test_assert_node(zhandle_t *zh, const char *path, bool ephemeral)
{
    struct Stat st;
    char buf[16];
    int len = sizeof buf;
    int rc = zoo_get(zh, path, 0, buf, &len, &st);
    if (rc != ZOK)
        fail_msg("%s: %s", path, zerror(rc));
    assert_int_equal(st.dataLength, 0);
    assert_int_equal(st.ephemeralOwner != 0, ephemeral);
    struct ACL_vector acl;
    assert_int_equal(zoo_get_acl(zh, path, &acl, &st), ZOK);
    assert_int_equal(acl.count, 1);
    assert_string_equal(acl.data[0].id.scheme, "world");
    assert_string_equal(acl.data[0].id.id, "anyone");
    assert_int_equal(acl.data[0].perms, ZOO_PERM_ALL);
    deallocate_ACL_vector(&acl);
}
