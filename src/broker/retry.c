/* The built-in retry policy (the Lua retry hook falls back to this).
 * Attempts 1-3 follow each other at once; later attempts wait 5 s (attempts 3-9),
 * 10 s (10-19), 20 s (20-29), 40 s (30-39), 80 s (40-49), 160 s (50+): the original's windows
 * without its gap at attempt 3. A message past deliverLimit or its expiry is dead. */
#include <stdio.h>

#include "broker/internal.h"

static int64_t window_delay_sec(int32_t attempts)
{
    if (attempts < 3)
        return 0;
    if (attempts < 10)
        return 5;
    if (attempts < 20)
        return 10;
    if (attempts < 30)
        return 20;
    if (attempts < 40)
        return 40;
    if (attempts < 50)
        return 80;
    return 160;
}

void kq_retry_default(int32_t attempts, int32_t deliver_limit, int64_t expired_time,
                      int64_t now_sec, struct kq_retry_verdict *v)
{
    v->dead = false;
    v->reason[0] = 0;
    if (attempts >= deliver_limit) {
        v->dead = true;
        snprintf(v->reason, sizeof v->reason, "deliver limit reached (%d attempts)", attempts);
        return;
    }
    if (expired_time > 0 && expired_time <= now_sec) {
        v->dead = true;
        snprintf(v->reason, sizeof v->reason, "expired");
        return;
    }
    v->delay_ms = window_delay_sec(attempts) * 1000;
}
