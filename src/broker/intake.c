/* The shares of the fair intake, one per connection that has published, kept by session.
 * (One broker per process: the count of drawing connections is this file's.) */
#include "broker/intake.h"

#include <stdlib.h>

#include "broker/internal.h"
#include "core/fair_share.h"
#include "core/log.h"

struct share {
    const struct kq_session *session;
    struct kq_fair_share fair;
    UT_hash_handle hh;
};

static struct kq_fair drawing;
static struct share *shares; /* by session */

bool kq_intake_take(struct kq_broker *b, struct kq_session *s)
{
    if (b->intake.rate <= 0) /* unlimited */
        return true;
    uint64_t now = kq_mono_us();
    struct share *sh;
    HASH_FIND_PTR(shares, &s, sh);
    if (!sh) {
        if (!(sh = calloc(1, sizeof *sh))) {
            KQ_LOG_RATELIMITED(KQ_LOG_ERROR, "publish",
                               "out of memory for an intake share "
                               "peer=%s: not shared fairly",
                               kq_conn_peer(s->conn));
            return kq_token_bucket_take(&b->intake, now);
        }
        sh->session = s;
        HASH_ADD_PTR(shares, session, sh);
    }
    return kq_fair_take(&drawing, &b->intake, &sh->fair, now);
}

void kq_intake_forget(const struct kq_session *s)
{
    struct share *sh;
    HASH_FIND_PTR(shares, &s, sh);
    if (sh) {
        HASH_DEL(shares, sh);
        free(sh);
    }
}
