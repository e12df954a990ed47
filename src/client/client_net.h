/* Blocking-socket helpers of the client library (internal, not installed).
 * All return 0 or a negative errno. */
#ifndef KQ_CLIENT_NET_H
#define KQ_CLIENT_NET_H
#include <stddef.h>

/* Split "host:port" or "[v6addr]:port" into its parts. */
int kqc_split_hostport(const char *s, char *host, size_t hostlen, char *port, size_t portlen);

/* Resolve and connect within timeout_ms (every address in turn, sharing the deadline).
 * Gives up with -ECANCELED as soon as wake_fd (may be -1) becomes readable, so that a
 * closing client does not wait for a connect. The socket is blocking, TCP_NODELAY,
 * keepalive, and has a send timeout of send_timeout_ms. */
int kqc_connect(const char *hostport, int timeout_ms, int send_timeout_ms, int wake_fd,
                int *out_fd);

/* Write all n bytes (retries partial writes and EINTR; never raises SIGPIPE). */
int kqc_send_all(int fd, const void *p, size_t n);
#endif
