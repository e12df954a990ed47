/* The shares of the fair intake, one per connection that has published, reached from its
 * session (a hash lookup per publish showed in profiles). (One broker per process: the count
 * of drawing connections is this file's.) */
#include "broker/intake.h"

#include <stdlib.h>

#include "broker/internal.h"
#include "core/fair_share.h"
#include "core/log.h"

struct kq_intake_share {
    struct kq_fair_share fair;
};

static struct kq_fair drawing;

bool kq_intake_take(struct kq_broker *b, struct kq_session *s)
{
    if (b->intake.rate <= 0) /* unlimited */
        return true;
    uint64_t now = kq_mono_us();
    struct kq_intake_share *sh = s->intake_share;
    if (!sh && !(sh = s->intake_share = calloc(1, sizeof *sh))) {
        KQ_LOG_RATELIMITED(KQ_LOG_ERROR, "publish",
                           "out of memory for an intake share "
                           "peer=%s: not shared fairly",
                           kq_conn_peer(s->conn));
        return kq_token_bucket_take(&b->intake, now);
    }
    return kq_fair_take(&drawing, &b->intake, &sh->fair, now);
}

void kq_intake_forget(struct kq_session *s)
{
    free(s->intake_share);
    s->intake_share = NULL;
}
