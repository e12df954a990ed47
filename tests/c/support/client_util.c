#include "support/client_util.h"

#include <stdio.h>

#include "support/broker_proc.h"

int client_open_local(struct kq_client **c, int port, const char *group, struct kq_client_options o)
{
    char addr[64], err[256] = "";
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    o.broker = addr;
    o.group_id = group;
    o.secret = TEST_SECRET;
    int rc = kq_client_open(&o, c, err, sizeof err);
    if (rc)
        fprintf(stderr, "client_open %s: %d %s\n", group, rc, err);
    return rc;
}

struct kq_message trade_pay_message(const void *body, size_t len)
{
    struct kq_message m = {.topic = "trade",
                           .message_type = "pay-succ",
                           .group_id = "",
                           .expired_time = -1,
                           .deliver_limit = -1,
                           .body = body,
                           .body_len = len};
    return m;
}
