/* Integration-test helpers for ZooKeeper: use $ZK_HOSTS when set, else start a private
 * ZooKeeper with scripts/services-up.sh in a temp BASE and always stop it by PID — at
 * zk_service_stop, at exit, and (through a watchdog process that waits for this process's
 * pipe to close) even when the test is killed. Plus a few direct C-API helpers. */
#ifndef KQ_TEST_ZK_SERVICE_H
#define KQ_TEST_ZK_SERVICE_H
#include <stdbool.h>
#include <sys/types.h>
#include <zookeeper/zookeeper.h>

struct zk_service {
    char hosts[256]; /* "127.0.0.1:PORT" */
    char uri[270];   /* "zk://127.0.0.1:PORT" */
    char base[128];  /* services BASE when we own it, else "" */
    bool owned;
    pid_t watchdog;
    int watchdog_fd;
};

/* 0, or -1 when ZooKeeper could not be started (message on stderr). */
int zk_service_start(struct zk_service *s);
void zk_service_stop(struct zk_service *s);
/* Stop / start again only ZooKeeper (same port and data). -1 when not owned or failed. */
int zk_service_down(struct zk_service *s);
int zk_service_up(struct zk_service *s);

/* zk_service_start, then a handle on it (connected within 15 s) into *zh. 0, or -1. */
int zk_service_open(struct zk_service *s, zhandle_t **zh);
/* Close *zh (when set; then NULL) and zk_service_stop. */
void zk_service_close(struct zk_service *s, zhandle_t **zh);

/* A connected handle (waits up to timeout_ms), or NULL. */
zhandle_t *zk_test_connect(const char *hosts, int timeout_ms);
/* Create path's missing parents (persistent) and the node with data, or set its data. */
int zk_test_write(zhandle_t *zh, const char *path, const char *data);
/* Fails the running cmocka test unless path is a node as KiteQ makes them: no data,
 * ephemeral or persistent as said, open to world:anyone. */
void zk_test_assert_node(zhandle_t *zh, const char *path, bool ephemeral);
/* The bindings node of a group on a topic: /kiteq/sub/TOPIC/GROUP-bind. */
void zk_test_bind_path(char *out, size_t len, const char *topic, const char *group);
/* Write that node exactly as the original clients do (Go encoding/json, spec §5.1): one
 * persistent binding of message type mtype (JSON-escaped) with bind_type (0 direct, 1 regx,
 * 2 fanout). Fails the running cmocka test when ZooKeeper refuses. */
void zk_test_write_binding(zhandle_t *zh, const char *topic, const char *group, const char *mtype,
                           int bind_type);
/* Delete it (gone already is fine). */
void zk_test_delete_binding(zhandle_t *zh, const char *topic, const char *group);
/* Poll until path exists (want=true) or not; the node's stat in st (may be NULL). */
bool zk_test_wait_node(zhandle_t *zh, const char *path, bool want, struct Stat *st, int timeout_ms);
#endif
