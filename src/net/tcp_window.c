#include "net/tcp_window.h"

#include <linux/tcp.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>

int kq_tcp_window(int fd, struct kq_tcp_window *out)
{
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
        len < offsetof(struct tcp_info, tcpi_snd_wnd) + sizeof ti.tcpi_snd_wnd)
        return -1;
    out->peer_window = ti.tcpi_snd_wnd;
    out->segment = ti.tcpi_snd_mss;
    out->notsent = ti.tcpi_notsent_bytes;
    return 0;
}
