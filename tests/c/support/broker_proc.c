#include "support/broker_proc.h"
#include "support/test_files.h"
#include "support/tmp_dir.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <math.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/clock.h"

#define MAX_PROCS 16
static pid_t started[MAX_PROCS];

static void kill_all(void)
{
    for (int i = 0; i < MAX_PROCS; i++)
        if (started[i] > 0) {
            kill(started[i], SIGKILL);
            waitpid(started[i], NULL, 0);
            started[i] = 0;
        }
}

static void track(pid_t pid, bool add)
{
    static bool registered;
    if (!registered) {
        atexit(kill_all);
        registered = true;
    }
    for (int i = 0; i < MAX_PROCS; i++) {
        if (add && started[i] == 0) {
            started[i] = pid;
            return;
        }
        if (!add && started[i] == pid) {
            started[i] = 0;
            return;
        }
    }
}

static uint64_t now_ms(void) { return kq_mono_us() / 1000; }

void broker_default_config(char *out, size_t len, const char *db, const char *extra_cluster)
{
    snprintf(
        out, len,
        "return {\n"
        "  default = \"test\",\n"
        "  clusters = {\n"
        "    test = {\n"
        "      bind = \"127.0.0.1:0\",\n"
        "      topics = { \"trade\", \"user-profile\" },\n"
        "      db = \"%s\",\n"
        "      deliverySeconds = 2,\n"
        "      recoverSeconds = 1,\n"
        "      groups = { [\"p-trade\"] = \"secret\", [\"s-trade-a\"] = \"secret\",\n"
        "                 [\"s-trade-b\"] = \"secret\", [\"s-user-profile\"] = \"123456\" },\n"
        "      %s\n"
        "    },\n"
        "  },\n"
        "  bindings = {\n"
        "    { groupIds = { \"s-trade-a\", \"s-trade-b\" }, topic = \"trade\",\n"
        "      messageType = \"pay-succ\", bindType = \"direct\", persistent = true },\n"
        "    { groupIds = { \"s-trade-a\" }, topic = \"trade\", messageType = \"refund-.*\",\n"
        "      bindType = \"regx\", persistent = true },\n"
        "    { groupIds = { \"s-trade-b\" }, topic = \"trade\", messageType = \"volatile\",\n"
        "      bindType = \"direct\", persistent = false },\n"
        "    { groupIds = { \"s-user-profile\" }, topic = \"user-profile\", messageType = \"*\",\n"
        "      bindType = \"fanout\", persistent = true },\n"
        "  },\n"
        "}\n",
        db, extra_cluster ? extra_cluster : "");
}

static const char *kiteq_exe(char *buf, size_t len)
{
    snprintf(buf, len, "%s/kiteq", test_build_dir());
    return buf;
}

static int spawn(struct broker_proc *bp, const char *bind, const char *const *extra)
{
    char exe[512];
    kiteq_exe(exe, sizeof exe);
    char bindarg[128];
    snprintf(bindarg, sizeof bindarg, "-bind=%s", bind ? bind : "");
    const char *argv[32] = {exe, bp->config, bindarg};
    int argc = bind ? 3 : 2; /* NULL: the config file's bind */
    for (int i = 0; extra && extra[i] && argc < 30; i++)
        argv[argc++] = extra[i];
    argv[argc] = NULL;
    struct stat st;
    bp->log_seen = stat(bp->log, &st) == 0 ? (size_t)st.st_size : 0;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(bp->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        if (chdir(bp->dir) != 0)
            _exit(126);
        execv(exe, (char *const *)argv);
        _exit(127);
    }
    bp->pid = pid;
    track(pid, true);
    if (!broker_wait_log(bp, "ready port=", 15000)) {
        broker_kill9(bp);
        return -1;
    }
    /* read the port from the log */
    FILE *f = fopen(bp->log, "r");
    char line[2048];
    int port = -1;
    if (f) {
        fseek(f, (long)0, SEEK_SET);
        while (fgets(line, sizeof line, f)) {
            char *p = strstr(line, "ready port=");
            if (p)
                port = atoi(p + strlen("ready port="));
        }
        fclose(f);
    }
    bp->port = port;
    return port > 0 ? 0 : -1;
}

int broker_prepare(struct broker_proc *bp)
{
    memset(bp, 0, sizeof *bp);
    if (tmp_dir_make(bp->dir, sizeof bp->dir, "kiteq-test-") != 0)
        return -1;
    snprintf(bp->config, sizeof bp->config, "%s/cluster.lua", bp->dir);
    snprintf(bp->log, sizeof bp->log, "%s/broker.log", bp->dir);
    return 0;
}

int broker_launch(struct broker_proc *bp, const char *config_lua, const char *bind,
                  const char *const *extra)
{
    FILE *f = fopen(bp->config, "w");
    if (!f)
        return -1;
    fputs(config_lua, f);
    fclose(f);
    return spawn(bp, bind, extra);
}

void broker_write_policy(const struct broker_proc *bp, const char *file, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/policies", bp->dir);
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        fail_msg("mkdir %s: %s", path, strerror(errno));
    snprintf(path, sizeof path, "%s/policies/%s", bp->dir, file);
    test_write_file(path, text);
}

int broker_start(struct broker_proc *bp, const char *config_lua, const char *const *extra)
{
    if (broker_prepare(bp) != 0)
        return -1;
    return broker_launch(bp, config_lua, "127.0.0.1:0", extra);
}

int broker_restart(struct broker_proc *bp, const char *const *extra)
{
    char bind[64];
    snprintf(bind, sizeof bind, "127.0.0.1:%d", bp->port);
    /* The old port may linger briefly in TIME_WAIT; the listener uses SO_REUSEADDR. */
    return spawn(bp, bind, extra);
}

int broker_stop(struct broker_proc *bp)
{
    if (bp->pid <= 0)
        return -1;
    kill(bp->pid, SIGTERM);
    uint64_t deadline = now_ms() + 10000;
    int status = 0;
    for (;;) {
        pid_t r = waitpid(bp->pid, &status, WNOHANG);
        if (r == bp->pid)
            break;
        if (now_ms() > deadline) {
            kill(bp->pid, SIGKILL);
            waitpid(bp->pid, &status, 0);
            track(bp->pid, false);
            bp->pid = 0;
            return -1;
        }
        usleep(10000);
    }
    track(bp->pid, false);
    bp->pid = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void broker_kill9(struct broker_proc *bp)
{
    if (bp->pid <= 0)
        return;
    kill(bp->pid, SIGKILL);
    waitpid(bp->pid, NULL, 0);
    track(bp->pid, false);
    bp->pid = 0;
}

int broker_log_count(const struct broker_proc *bp, const char *needle)
{
    FILE *f = fopen(bp->log, "r");
    char line[4096];
    int n = 0;
    while (f && fgets(line, sizeof line, f))
        n += strstr(line, needle) != NULL;
    if (f)
        fclose(f);
    return n;
}

bool broker_wait_log_count(const struct broker_proc *bp, const char *needle, int n, int timeout_ms)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    do {
        if (broker_log_count(bp, needle) >= n)
            return true;
        usleep(20000);
    } while (now_ms() < end);
    return false;
}

bool broker_wait_log(struct broker_proc *bp, const char *needle, int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    do {
        FILE *f = fopen(bp->log, "r");
        if (f) {
            fseek(f, (long)bp->log_seen, SEEK_SET);
            char *buf = NULL;
            size_t cap = 0;
            ssize_t n = getdelim(&buf, &cap, 0, f);
            fclose(f);
            bool found = n > 0 && strstr(buf, needle);
            free(buf);
            if (found)
                return true;
        }
        usleep(5000);
    } while (now_ms() < deadline);
    return false;
}

int kiteq_run(const char *dir, const char *const *args, char *out, size_t len, int timeout_ms)
{
    char exe[512], path[300];
    const char *argv[32] = {kiteq_exe(exe, sizeof exe)};
    for (int i = 0; args[i] && i < 30; i++)
        argv[i + 1] = args[i];
    snprintf(path, sizeof path, "%s/kiteq-run.out", dir);
    /* Appended, not truncated: the file keeps every run's output (a sanitizer report of an
     * earlier run in dir is still there for the scan of scripts/sanitize.sh). */
    struct stat st;
    long before = stat(path, &st) == 0 ? (long)st.st_size : 0;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd < 0 || chdir(dir) != 0)
            _exit(126);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(exe, (char *const *)argv);
        _exit(127);
    }
    int status = 0;
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    pid_t r;
    while ((r = waitpid(pid, &status, WNOHANG)) == 0 && now_ms() < deadline)
        usleep(5000);
    if (r != pid) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (f) {
        if (fseek(f, before, SEEK_SET) == 0)
            out[fread(out, 1, len - 1, f)] = '\0';
        fclose(f);
    }
    return r == pid && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int broker_admin_port(const struct broker_proc *bp)
{
    FILE *f = fopen(bp->log, "r");
    char line[2048];
    int port = -1;
    while (f && fgets(line, sizeof line, f)) {
        char *p = strstr(line, "listening admin=");
        if (p && (p = strstr(p, " port=")))
            port = atoi(p + 6);
    }
    if (f)
        fclose(f);
    return port;
}

int admin_get(int port, const char *path, char *out, size_t len)
{
    return admin_request(port, "GET", path, out, len);
}

int admin_request(int port, const char *method, const char *path, char *out, size_t len)
{
    int fd = raw_connect(port);
    if (fd < 0)
        return -1;
    char req[1024], buf[65536];
    snprintf(req, sizeof req,
             "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", method,
             path);
    size_t n = 0;
    uint64_t deadline = now_ms() + 5000;
    if (raw_send(fd, req, strlen(req)) == 0) {
        while (n < sizeof buf - 1 && now_ms() < deadline) {
            struct pollfd pfd = {.fd = fd, .events = POLLIN};
            if (poll(&pfd, 1, 100) <= 0)
                continue;
            ssize_t r = recv(fd, buf + n, sizeof buf - 1 - n, 0);
            if (r <= 0)
                break;
            n += (size_t)r;
        }
    }
    close(fd);
    buf[n] = '\0';
    const char *body = strstr(buf, "\r\n\r\n");
    int status = -1;
    if (!body || sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
        return -1;
    snprintf(out, len, "%s", body + 4);
    return status;
}

double prom_sample(const char *text, const char *sample)
{
    size_t n = strlen(sample);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, sample, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    return NAN;
}

double admin_json_number(int port, const char *path, const char *keys)
{
    static char body[1 << 16];
    if (admin_get(port, path, body, sizeof body) != 200)
        return NAN;
    cJSON *root = cJSON_Parse(body), *j = root;
    char key[128];
    for (const char *k = keys; j && *k;) {
        size_t n = strcspn(k, ".");
        snprintf(key, sizeof key, "%.*s", (int)n, k);
        j = cJSON_GetObjectItemCaseSensitive(j, key);
        k += n + (k[n] == '.');
    }
    double v = cJSON_IsNumber(j) ? j->valuedouble : NAN;
    cJSON_Delete(root);
    return v;
}

/* --- raw frames ------------------------------------------------------------------------- */

int raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

int raw_connect_as(int port, const char *group, const char *secret)
{
    int fd = raw_connect(port);
    assert_true(fd >= 0);
    assert_int_equal(raw_handshake(fd, group, secret), 1);
    return fd;
}

int raw_send(int fd, const void *p, size_t n)
{
    const uint8_t *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int raw_send_buf(int fd, struct kq_buf *b)
{
    int rc = raw_send(fd, b->data, b->len);
    b->len = 0;
    return rc;
}

static int read_exact(int fd, uint8_t *p, size_t n, uint64_t deadline)
{
    while (n) {
        int left = (int)(deadline > now_ms() ? deadline - now_ms() : 0);
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int pr = poll(&pfd, 1, left);
        if (pr == 0)
            return 0;
        if (pr < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        ssize_t r = recv(fd, p, n, 0);
        if (r <= 0) {
            if (r < 0 && errno == EINTR)
                continue;
            return -1;
        }
        p += r;
        n -= (size_t)r;
    }
    return 1;
}

int raw_read_frame(int fd, int timeout_ms, struct kq_frame *f, uint8_t **body)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    uint8_t h[KQ_FRAME_HEADER_LEN];
    int rc = read_exact(fd, h, sizeof h, deadline);
    if (rc <= 0)
        return rc;
    int32_t len =
        (int32_t)((uint32_t)h[15] << 24 | (uint32_t)h[16] << 16 | (uint32_t)h[17] << 8 | h[18]);
    if (len < 0 || len > KQ_FRAME_MAX_BODY)
        return -1;
    uint8_t *buf = malloc(sizeof h + (size_t)len + 1);
    memcpy(buf, h, sizeof h);
    rc = read_exact(fd, buf + sizeof h, (size_t)len, deadline + 5000);
    if (rc <= 0) {
        free(buf);
        return rc < 0 ? -1 : 0;
    }
    kq_frame_parse(buf, sizeof h + (size_t)len, f);
    /* keep the body pointer valid: hand out the whole buffer */
    *body = buf;
    f->body = buf + sizeof h;
    return 1;
}

int raw_read_cmd(int fd, uint8_t cmd, int timeout_ms, struct kq_frame *f, uint8_t **body)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        int left = (int)(deadline > now_ms() ? deadline - now_ms() : 0);
        int rc = raw_read_frame(fd, left, f, body);
        if (rc <= 0)
            return rc;
        if (f->cmd == cmd)
            return 1;
        free(*body);
    }
}

bool raw_wait_closed(int fd, int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    uint8_t buf[4096];
    while (now_ms() < deadline) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int pr = poll(&pfd, 1, (int)(deadline - now_ms()));
        if (pr <= 0)
            continue;
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN))
            return true;
    }
    return false;
}

int raw_handshake(int fd, const char *group, const char *secret)
{
    struct kq_buf b = {0};
    kq_codec_append_conn_meta(&b, 1, group, secret, 0);
    raw_send_buf(fd, &b);
    kq_buf_free(&b);
    struct kq_frame f;
    uint8_t *body;
    if (raw_read_cmd(fd, KQ_CMD_CONN_AUTH, 5000, &f, &body) != 1)
        return -1;
    Protocol__ConnAuthAck *a =
        (Protocol__ConnAuthAck *)kq_codec_unpack(f.cmd, f.body, (size_t)f.body_len);
    int st = a ? a->status : -1;
    kq_codec_free(&a->base);
    free(body);
    return st;
}

int raw_publish(int fd, uint32_t opaque, const struct raw_msg *m, char *id_out, char *feedback,
                size_t fblen)
{
    if (raw_publish_nowait(fd, opaque, m, id_out) != 0)
        return -1;
    return raw_wait_store_ack(fd, opaque, feedback, fblen);
}

/* Sends b's frame when rc (the result of appending it) is 0; frees b either way. */
static int send_appended(int fd, struct kq_buf *b, int rc)
{
    if (rc == 0)
        rc = raw_send_buf(fd, b);
    kq_buf_free(b);
    return rc;
}

int raw_publish_nowait(int fd, uint32_t opaque, const struct raw_msg *m, char *id_out)
{
    struct kq_buf b = {0};
    return send_appended(fd, &b, raw_append_publish(&b, opaque, m, id_out));
}

int raw_append_publish(struct kq_buf *b, uint32_t opaque, const struct raw_msg *m, char *id_out)
{
    char id[33];
    if (m->id)
        snprintf(id, sizeof id, "%s", m->id);
    else
        kq_message_id_generate(id);
    if (id_out)
        strcpy(id_out, id);
    Protocol__Header h = PROTOCOL__HEADER__INIT;
    h.messageid = m->id ? (char *)m->id : id;
    h.topic = (char *)m->topic;
    h.messagetype = (char *)m->type;
    h.expiredtime = m->expired ? m->expired : -1;
    h.deliverlimit = m->limit ? m->limit : -1;
    h.groupid = (char *)(m->group ? m->group : TEST_PRODUCER);
    h.commit = m->commit;
    h.fly = m->fly;
    h.has_createtime = 1;
    h.createtime = time(NULL);
    Protocol__Entry ents[16], *ptrs[16];
    for (size_t i = 0; m->props && m->props[2 * i] && i < 16; i++) {
        protobuf_c_message_init(&protocol__entry__descriptor, &ents[i]);
        ents[i].key = (char *)m->props[2 * i];
        ents[i].value = (char *)m->props[2 * i + 1];
        ptrs[i] = &ents[i];
        h.properties = ptrs;
        h.n_properties = i + 1;
    }
    Protocol__StringMessage sm = PROTOCOL__STRING_MESSAGE__INIT;
    sm.header = &h;
    sm.body = (char *)(m->body ? m->body : "hello");
    return kq_codec_append(b, opaque, KQ_CMD_STRING_MESSAGE, &sm.base);
}

int raw_wait_store_ack(int fd, uint32_t opaque, char *feedback, size_t fblen)
{
    struct kq_frame f;
    uint8_t *body;
    uint64_t deadline = now_ms() + 5000;
    for (;;) {
        int left = (int)(deadline > now_ms() ? deadline - now_ms() : 0);
        if (raw_read_cmd(fd, KQ_CMD_MESSAGE_STORE_ACK, left, &f, &body) != 1)
            return -1;
        if (f.opaque == opaque)
            break;
        free(body);
    }
    Protocol__MessageStoreAck *a =
        (Protocol__MessageStoreAck *)kq_codec_unpack(f.cmd, f.body, (size_t)f.body_len);
    int st = a ? a->status : -1;
    if (a && feedback)
        snprintf(feedback, fblen, "%s", a->feedback);
    kq_codec_free(a ? &a->base : NULL);
    free(body);
    return st;
}

/* raw_recv_delivery and raw_recv_delivery_prop: the body into out (when out), property key's
 * value into *value (when key). A delivery that does not decode returns -1, or fails the
 * running test when strict. */
static int recv_delivery(int fd, int timeout_ms, char id[33], uint32_t *opaque, char *out,
                         size_t outlen, const char *key, char **value, bool strict)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        struct kq_frame f;
        uint8_t *body;
        int left = (int)(deadline > now_ms() ? deadline - now_ms() : 0);
        int rc = raw_read_frame(fd, left, &f, &body);
        if (rc <= 0)
            return rc;
        if (f.cmd != KQ_CMD_BYTES_MESSAGE && f.cmd != KQ_CMD_STRING_MESSAGE) {
            free(body);
            continue;
        }
        ProtobufCMessage *m = kq_codec_unpack(f.cmd, f.body, (size_t)f.body_len);
        struct kq_message_view v;
        if (!m || kq_message_view(f.cmd, m, &v) != 0) {
            free(body);
            kq_codec_free(m);
            if (strict)
                fail_msg("a delivery that does not decode (cmd %d)", f.cmd);
            return -1;
        }
        snprintf(id, 33, "%s", v.header->messageid);
        if (out)
            snprintf(out, outlen, "%.*s", (int)v.body_len, (const char *)v.body);
        if (key) {
            *value = NULL;
            for (size_t i = 0; i < v.header->n_properties; i++)
                if (strcmp(v.header->properties[i]->key, key) == 0)
                    *value = strdup(v.header->properties[i]->value);
        }
        *opaque = f.opaque;
        kq_codec_free(m);
        free(body);
        return 1;
    }
}

int raw_recv_delivery(int fd, int timeout_ms, char id[33], uint32_t *opaque, char *out,
                      size_t outlen)
{
    return recv_delivery(fd, timeout_ms, id, opaque, out, outlen, NULL, NULL, false);
}

int raw_recv_delivery_prop(int fd, int timeout_ms, char id[33], uint32_t *opaque, const char *key,
                           char **value)
{
    return recv_delivery(fd, timeout_ms, id, opaque, NULL, 0, key, value, true);
}

int raw_deliver_ack(int fd, uint32_t opaque, const char *id, bool ok)
{
    struct kq_buf b = {0};
    kq_codec_append_deliver_ack(&b, opaque, id, "trade", "pay-succ", TEST_PRODUCER, ok, "");
    int rc = raw_send_buf(fd, &b);
    kq_buf_free(&b);
    return rc;
}

long proc_rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

#ifndef __has_feature /* clang spells the sanitizers this way, gcc with __SANITIZE_*__ */
#define __has_feature(x) 0
#endif
const char *rss_blind_sanitizer(void)
{
#if defined(__SANITIZE_ADDRESS__) || __has_feature(address_sanitizer)
    return "AddressSanitizer";
#elif defined(__SANITIZE_THREAD__) || __has_feature(thread_sanitizer)
    return "ThreadSanitizer";
#else
    return NULL;
#endif
}

int raw_send_tx(int fd, uint32_t opaque, const char *id, const char *type, int status)
{
    struct kq_buf b = {0};
    return send_appended(fd, &b, raw_append_tx(&b, opaque, id, type, status));
}

int raw_append_tx(struct kq_buf *b, uint32_t opaque, const char *id, const char *type, int status)
{
    Protocol__Header h = PROTOCOL__HEADER__INIT;
    h.messageid = (char *)id;
    h.topic = "trade";
    h.messagetype = (char *)type;
    h.expiredtime = -1;
    h.deliverlimit = -1;
    h.groupid = TEST_PRODUCER;
    Protocol__TxACKPacket t = PROTOCOL__TX_ACKPACKET__INIT;
    t.header = &h;
    t.status = status;
    t.feedback = "";
    return kq_codec_append(b, opaque, KQ_CMD_TX_ACK, &t.base);
}

int raw_sync(int fd)
{
    static uint32_t op = 0x7000000;
    struct kq_buf b = {0};
    kq_codec_append_heartbeat(&b, ++op, 42);
    int rc = raw_send_buf(fd, &b);
    kq_buf_free(&b);
    if (rc != 0)
        return -1;
    struct kq_frame f;
    uint8_t *body;
    for (;;) {
        if (raw_read_cmd(fd, KQ_CMD_HEARTBEAT, 5000, &f, &body) != 1)
            return -1;
        free(body);
        if (f.opaque == op)
            return 0;
    }
}

void raw_take_delivery(int fd, const char *id, int timeout_ms)
{
    char got[33];
    uint32_t op;
    assert_int_equal(raw_recv_delivery(fd, timeout_ms, got, &op, NULL, 0), 1);
    assert_string_equal(got, id);
    raw_deliver_ack(fd, op, got, true);
    assert_int_equal(raw_sync(fd), 0);
}

void raw_drain_expect(int fd, char ids[][33], int n, int timeout_ms)
{
    int seen = 0;
    bool *got = calloc((size_t)n + 1, sizeof *got);
    assert_non_null(got);
    while (seen < n) {
        char id[33];
        uint32_t op;
        if (raw_recv_delivery(fd, timeout_ms, id, &op, NULL, 0) != 1) {
            free(got);
            fail_msg("only %d of %d messages delivered", seen, n);
        }
        raw_deliver_ack(fd, op, id, true);
        for (int i = 0; i < n; i++)
            if (strcmp(ids[i], id) == 0 && !got[i]) {
                got[i] = true;
                seen++;
            }
    }
    free(got);
    assert_int_equal(raw_sync(fd), 0); /* the acks are processed before the caller goes on */
}
