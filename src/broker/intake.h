/* Fair intake: the broker's intake bucket (recievePermitsPerSecond or the flow.intake
 * policy, b->intake) shared between the connections publishing now (core/fair_share.h), so
 * that one producer far over the limit cannot take every permit from the others.
 * Loop thread only. */
#ifndef KQ_BROKER_INTAKE_H
#define KQ_BROKER_INTAKE_H
#include <stdbool.h>

struct kq_broker;
struct kq_session;
struct kq_intake_share; /* a connection's share, held by its session */

/* A permit for one publish on s, or false: over the limit ("KiteQ OverFlow"). */
bool kq_intake_take(struct kq_broker *b, struct kq_session *s);
/* s is closing: its share goes. */
void kq_intake_forget(struct kq_session *s);
#endif
