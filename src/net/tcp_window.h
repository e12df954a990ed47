/* What the kernel knows about the send side of a TCP socket (Linux TCP_INFO). Kept apart
 * from net.c because <linux/tcp.h> (which has the fields) cannot share a file with
 * <netinet/tcp.h> (which uv.h includes). */
#ifndef KQ_NET_TCP_WINDOW_H
#define KQ_NET_TCP_WINDOW_H
#include <stdint.h>

struct kq_tcp_window {
    uint32_t peer_window; /* the receive window the peer advertises, bytes */
    uint32_t segment;     /* our current maximum segment size, bytes */
    uint32_t notsent;     /* bytes written to the socket and not yet sent */
};

/* 0, or -1 when the kernel does not report these (older than Linux 5.4 / not TCP). */
int kq_tcp_window(int fd, struct kq_tcp_window *out);
#endif
