#include "core/addr.h"

#include <arpa/inet.h>
#include <string.h>

bool kq_addr_is_loopback(const char *hostport)
{
    const char *colon = hostport ? strrchr(hostport, ':') : NULL;
    char host[64];
    size_t n = colon ? (size_t)(colon - hostport) : 0;
    if (n >= 2 && hostport[0] == '[' && hostport[n - 1] == ']') {
        hostport++;
        n -= 2;
    }
    if (n == 0 || n >= sizeof host)
        return false;
    memcpy(host, hostport, n);
    host[n] = 0;
    if (strcmp(host, "localhost") == 0)
        return true;
    struct in_addr v4;
    if (inet_pton(AF_INET, host, &v4) == 1)
        return (ntohl(v4.s_addr) >> 24) == 127;
    struct in6_addr v6;
    if (inet_pton(AF_INET6, host, &v6) != 1)
        return false;
    if (IN6_IS_ADDR_LOOPBACK(&v6))
        return true;
    return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
}
