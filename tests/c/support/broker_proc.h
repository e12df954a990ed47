/* Integration-test helpers: run the real broker binary on 127.0.0.1 with a free port, talk
 * to it with raw frames, and always stop it by PID (also when a test fails: the harness
 * kills every broker it started at exit). */
#ifndef KQ_TEST_BROKER_PROC_H
#define KQ_TEST_BROKER_PROC_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto/codec.h"
#include "support/cli_proc.h" /* kiteq-cli runs, used with brokers */

struct broker_proc {
    pid_t pid;
    int port;
    char dir[256]; /* private temp dir: config, data, log */
    char config[300];
    char log[300];
    size_t log_seen; /* log bytes already read when waiting for a line */
};

/* Default groups in test configs. */
#define TEST_PRODUCER "p-trade"
#define TEST_CONSUMER "s-trade-a"
#define TEST_CONSUMER_B "s-trade-b"
#define TEST_SECRET "secret"

/* Write a config (Lua text; "%PORT%" not needed: the broker binds port 0 through -bind) and
 * start `build/kiteq CONFIG -bind=127.0.0.1:0`. extra: further argv entries, NULL-terminated
 * (may be NULL). Waits up to 15 s for the "ready port=N" log line. 0 or -1. */
int broker_start(struct broker_proc *bp, const char *config_lua, const char *const *extra);
/* The two halves of broker_start, to put files (policies) into bp->dir before starting:
 * prepare makes the private temp dir and the paths; launch writes the config and starts.
 * bind NULL = no -bind flag (the config file's bind is used). */
int broker_prepare(struct broker_proc *bp);
int broker_launch(struct broker_proc *bp, const char *config_lua, const char *bind,
                  const char *const *extra);
/* Writes text as bp->dir/policies/FILE (the folder made when missing; a config names it
 * `policies = "policies"`), between broker_prepare and broker_launch or before a SIGHUP.
 * Fails the running cmocka test when it cannot. */
void broker_write_policy(const struct broker_proc *bp, const char *file, const char *text);
/* Start again with the same dir, config and port (after a stop or kill). */
int broker_restart(struct broker_proc *bp, const char *const *extra);
/* SIGTERM and wait (10 s, then SIGKILL). Returns the exit status or -1. */
int broker_stop(struct broker_proc *bp);
void broker_kill9(struct broker_proc *bp);
/* Lines of the broker's whole log that contain needle. */
int broker_log_count(const struct broker_proc *bp, const char *needle);
/* Wait until at least n lines of the whole log contain needle. */
bool broker_wait_log_count(const struct broker_proc *bp, const char *needle, int n, int timeout_ms);
/* Wait until `needle` appears in the log (after what was seen before). */
bool broker_wait_log(struct broker_proc *bp, const char *needle, int timeout_ms);
/* Run `build/kiteq ARGS...` (args NULL-terminated) in dir until it exits (at most
 * timeout_ms, then SIGKILL); its stdout and stderr go to out (NUL-terminated, cut to len) and
 * are appended to dir/kiteq-run.out. Returns the exit status, or -1 when it did not exit by
 * itself. */
int kiteq_run(const char *dir, const char *const *args, char *out, size_t len, int timeout_ms);
/* The admin HTTP port from the broker's "listening admin=... port=N" log line, or -1. */
int broker_admin_port(const struct broker_proc *bp);
/* GET path from the admin server on 127.0.0.1:port; the body into out (NUL-terminated, cut to
 * len). Returns the HTTP status, or -1. */
int admin_get(int port, const char *path, char *out, size_t len);
/* The same with another method (e.g. "POST"; no body, no token). */
int admin_request(int port, const char *method, const char *path, char *out, size_t len);
/* The number at the dotted key path (e.g. "broker.hooks.publish.errors") of the JSON that
 * GET path answers on the admin port; NAN when the request or the key fails. */
double admin_json_number(int port, const char *path, const char *keys);
/* A config with topics trade/user-profile, groups p-trade, s-trade-a, s-trade-b (secret
 * "secret") and direct bindings of both consumer groups to trade/pay-succ; `extra_cluster`
 * is inserted into the cluster table (e.g. "deliverySeconds = 1,"), db is `db`. */
void broker_default_config(char *out, size_t len, const char *db, const char *extra_cluster);

/* The value of one sample ("name{labels}" exactly as exposed) in Prometheus text, NAN when
 * absent. */
double prom_sample(const char *text, const char *sample);

/* Raw frames. */
int raw_connect(int port); /* fd or -1 */
/* Connect and authenticate as group; fails the running cmocka test otherwise. */
int raw_connect_as(int port, const char *group, const char *secret);
int raw_send(int fd, const void *p, size_t n);
int raw_send_buf(int fd, struct kq_buf *b); /* sends and empties b */
/* Read one frame within timeout_ms. Returns 1 and fills f (body malloc'd into *body),
 * 0 on timeout, -1 when the peer closed or errored. */
int raw_read_frame(int fd, int timeout_ms, struct kq_frame *f, uint8_t **body);
/* Until a frame of cmd arrives (others are dropped); same returns. */
int raw_read_cmd(int fd, uint8_t cmd, int timeout_ms, struct kq_frame *f, uint8_t **body);
/* True when the peer closes the connection within timeout_ms (frames before are dropped). */
bool raw_wait_closed(int fd, int timeout_ms);
/* ConnMeta + ConnAuthAck; returns the ack status (1/0) or -1 on no answer. */
int raw_handshake(int fd, const char *group, const char *secret);
/* Publish a message (header fields given) and wait for its MessageStoreAck. Returns
 * 1/0 = status, -1 = no ack. feedback (optional) receives the ack's feedback. */
struct raw_msg {
    const char *id; /* NULL = generate */
    const char *topic, *type, *group, *body;
    bool commit, fly;
    int64_t expired;          /* 0 = -1 (broker default) */
    int32_t limit;            /* 0 = -1 */
    const char *const *props; /* Header.properties: key, value, ..., NULL (may be NULL) */
};
int raw_publish(int fd, uint32_t opaque, const struct raw_msg *m, char *id_out, char *feedback,
                size_t fblen);
/* The two halves of raw_publish. */
int raw_publish_nowait(int fd, uint32_t opaque, const struct raw_msg *m, char *id_out);
/* raw_publish_nowait's frame appended to b instead of sent (to send many frames in one
 * write). 0 or a negative errno. */
int raw_append_publish(struct kq_buf *b, uint32_t opaque, const struct raw_msg *m, char *id_out);
int raw_wait_store_ack(int fd, uint32_t opaque, char *feedback, size_t fblen);
/* Receive a delivery (0x11/0x12); fills id and opaque; returns 1, 0 timeout, -1 closed. */
int raw_recv_delivery(int fd, int timeout_ms, char id[33], uint32_t *opaque, char *body,
                      size_t bodylen);
/* The same, with the value of property key (malloc'd, NULL when absent) instead of the body
 * (key NULL: none); a delivery that does not decode fails the running cmocka test. */
int raw_recv_delivery_prop(int fd, int timeout_ms, char id[33], uint32_t *opaque, const char *key,
                           char **value);
int raw_deliver_ack(int fd, uint32_t opaque, const char *id, bool ok);
/* TxACKPacket for message id (topic "trade", group p-trade) with status 1 commit / 2 rollback. */
/* VmRSS of a process in kB, or -1. */
long proc_rss_kb(pid_t pid);
/* The sanitizer's name when the broker (built like the tests: one CMake build) runs under one
 * that makes RSS say nothing about memory use (ASan keeps freed memory in a quarantine; ASan
 * and TSan grow shadow memory with use), else NULL. A test skips its RSS checks then and says
 * so (LeakSanitizer checks leaks when a broker stops). */
const char *rss_blind_sanitizer(void);
int raw_send_tx(int fd, uint32_t opaque, const char *id, const char *type, int status);
/* The same frame appended to b instead of sent. */
int raw_append_tx(struct kq_buf *b, uint32_t opaque, const char *id, const char *type, int status);
/* Heartbeat round trip: everything sent before on fd has been processed by the broker.
 * Other frames arriving meanwhile are dropped. 0 or -1. */
int raw_sync(int fd);
/* Receive one delivery within timeout_ms, check that it is message id, ack it and raw_sync.
 * Fails the running cmocka test otherwise. */
void raw_take_delivery(int fd, const char *id, int timeout_ms);
/* Receive until each of ids[0..n) was delivered (each wait at most timeout_ms), ack every
 * delivery, then raw_sync. Fails the running cmocka test otherwise. */
void raw_drain_expect(int fd, char ids[][33], int n, int timeout_ms);
#endif
