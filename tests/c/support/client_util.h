/* libkiteq-client helpers for integration tests that talk to a real broker on 127.0.0.1. */
#ifndef KQ_TEST_CLIENT_UTIL_H
#define KQ_TEST_CLIENT_UTIL_H
#include "client/kiteq_client.h"

/* Open a client on 127.0.0.1:port as group with the test secret; the other options (time-outs,
 * reconnect, callbacks) come from o. Returns kq_client_open's result and prints its error. */
int client_open_local(struct kq_client **c, int port, const char *group,
                      struct kq_client_options o);

/* A committed trade/pay-succ message of the test config's direct binding, without expiry or
 * delivery limit; the caller sets message_id. */
struct kq_message trade_pay_message(const void *body, size_t len);
#endif
