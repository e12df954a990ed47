/* kiteq-bench-rabbitmq: kiteq-bench's scenarios against RabbitMQ quorum queues.
 *
 * A durable fanout exchange "kiteq-bench" bound to one durable quorum queue per
 * --consumer-groups name (queue "kqb-NAME"; every group sees every message, like KiteQ's
 * fan-out). Producers publish persistent messages with publisher confirms (confirm.select;
 * the broker's basic.ack / basic.nack, possibly "multiple", possibly out of order) and keep
 * up to --inflight unconfirmed. A quorum queue confirms once the message is in its Raft log,
 * fsynced. Consumers use basic.qos --prefetch and acknowledge each delivery with basic.ack. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <amqp.h>
#include <amqp_tcp_socket.h>

#include "tools/compare/cmp.h"

#define EXCHANGE "kiteq-bench"
#define CH 1

/* false (after cmp_fail) unless r is a normal reply */
static bool rpc_ok(struct cmp_bench *b, const char *what, amqp_rpc_reply_t r)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL: return true;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        cmp_fail(b, "%s: %s", what, amqp_error_string2(r.library_error));
        return false;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD || r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            /* both start with reply_code, reply_text */
            amqp_channel_close_t *m = r.reply.decoded;
            cmp_fail(b, "%s: server closed: %u %.*s", what, m->reply_code, (int)m->reply_text.len,
                     (char *)m->reply_text.bytes);
        } else {
            cmp_fail(b, "%s: server exception (method 0x%08x)", what, r.reply.id);
        }
        return false;
    default: cmp_fail(b, "%s: no reply", what); return false;
    }
}

static amqp_connection_state_t open_conn(struct cmp_bench *b)
{
    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *sock = conn ? amqp_tcp_socket_new(conn) : NULL;
    int rc = sock ? amqp_socket_open(sock, b->o.host, b->o.port) : AMQP_STATUS_NO_MEMORY;
    if (rc != AMQP_STATUS_OK) {
        cmp_fail(b, "cannot connect to %s: %s", b->o.server, amqp_error_string2(rc));
    } else if (rpc_ok(
                   b, "login",
                   amqp_login(conn, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest"))) {
        amqp_channel_open(conn, CH);
        if (rpc_ok(b, "channel.open", amqp_get_rpc_reply(conn)))
            return conn;
    }
    if (conn)
        amqp_destroy_connection(conn);
    return NULL;
}

/* connection.close alone: channel.close could meet deliveries still arriving */
static void close_conn(amqp_connection_state_t conn)
{
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
}

static void queue_name(char *out, size_t n, const char *group)
{
    snprintf(out, n, "kqb-%s", group);
}

/* A fresh exchange and fresh quorum queues (leftovers of an earlier run deleted). */
static int setup(struct cmp_bench *b)
{
    amqp_connection_state_t conn = open_conn(b);
    if (!conn)
        return -1;
    amqp_table_entry_t quorum = {
        .key = amqp_cstring_bytes("x-queue-type"),
        .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes("quorum")}};
    amqp_table_t qargs = {.num_entries = 1, .entries = &quorum};
    amqp_exchange_delete(conn, CH, amqp_cstring_bytes(EXCHANGE), 0);
    bool ok = rpc_ok(b, "exchange.delete", amqp_get_rpc_reply(conn));
    if (ok) {
        amqp_exchange_declare(conn, CH, amqp_cstring_bytes(EXCHANGE), amqp_cstring_bytes("fanout"),
                              0, 1, 0, 0, amqp_empty_table);
        ok = rpc_ok(b, "exchange.declare", amqp_get_rpc_reply(conn));
    }
    for (size_t i = 0; ok && i < b->o.ncgroups; i++) {
        char q[300];
        queue_name(q, sizeof q, b->o.cgroups[i]);
        amqp_queue_delete(conn, CH, amqp_cstring_bytes(q), 0, 0);
        ok = rpc_ok(b, "queue.delete", amqp_get_rpc_reply(conn));
        if (ok) {
            amqp_queue_declare(conn, CH, amqp_cstring_bytes(q), 0, 1, 0, 0, qargs);
            ok = rpc_ok(b, "queue.declare", amqp_get_rpc_reply(conn));
        }
        if (ok) {
            amqp_queue_bind(conn, CH, amqp_cstring_bytes(q), amqp_cstring_bytes(EXCHANGE),
                            amqp_empty_bytes, amqp_empty_table);
            ok = rpc_ok(b, "queue.bind", amqp_get_rpc_reply(conn));
        }
    }
    close_conn(conn);
    return ok ? 0 : -1;
}

/* --- producer: publish with confirms -------------------------------------------------------- */

struct slot {
    uint64_t seq, t_ns;
    bool pending;
};

struct window {
    struct cmp_producer *p;
    struct slot *slots;
    uint64_t size, low, next; /* delivery tags: [low, next) may be unconfirmed; the first is 1 */
};

#define SLOT(w, tag) (&(w)->slots[((tag)-1) % (w)->size])

static void confirm_one(struct window *w, uint64_t tag, bool ok)
{
    struct slot *s = SLOT(w, tag);
    if (tag < w->low || tag >= w->next || !s->pending)
        return;
    s->pending = false;
    cmp_acked(w->p, s->seq, s->t_ns, ok);
}

static void confirm(struct window *w, uint64_t tag, bool multiple, bool ok)
{
    if (multiple)
        for (uint64_t t = w->low; t <= tag && t < w->next; t++)
            confirm_one(w, t, ok);
    else
        confirm_one(w, tag, ok);
    while (w->low < w->next && !SLOT(w, w->low)->pending)
        w->low++;
}

static void *producer(void *arg)
{
    struct cmp_producer *p = arg;
    struct cmp_bench *b = p->b;
    struct window w = {.p = p, .size = (uint64_t)b->o.inflight, .low = 1, .next = 1};
    amqp_connection_state_t conn = open_conn(b);
    w.slots = calloc(w.size, sizeof *w.slots);
    bool done = !conn || !w.slots;
    if (!done) {
        amqp_confirm_select(conn, CH);
        done = !rpc_ok(b, "confirm.select", amqp_get_rpc_reply(conn));
    }
    amqp_basic_properties_t props = {._flags = AMQP_BASIC_DELIVERY_MODE_FLAG,
                                     .delivery_mode = AMQP_DELIVERY_PERSISTENT};
    amqp_bytes_t body = {.len = (size_t)b->o.size, .bytes = p->body};
    while ((!done || w.low < w.next) && !atomic_load(&b->failed)) {
        int64_t wait = -1;
        while (!done && w.next - w.low < w.size) {
            uint64_t seq, t;
            if (!cmp_next_body(p, &seq, &t, &wait, &done))
                break;
            *SLOT(&w, w.next) = (struct slot){seq, t, true};
            w.next++;
            cmp_sent(p);
            int rc = amqp_basic_publish(conn, CH, amqp_cstring_bytes(EXCHANGE), amqp_empty_bytes, 0,
                                        0, &props, body);
            if (rc != AMQP_STATUS_OK) {
                cmp_fail(b, "basic.publish: %s", amqp_error_string2(rc));
                goto out;
            }
        }
        if (w.low == w.next) {
            if (!done)
                cmp_sleep_ns((uint64_t)wait);
            continue;
        }
        amqp_maybe_release_buffers(conn);
        struct timeval tv = {0, 100000};
        if (wait >= 0 && w.next - w.low < w.size)
            tv = (struct timeval){wait / 1000000000, wait % 1000000000 / 1000};
        amqp_frame_t f;
        int rc = amqp_simple_wait_frame_noblock(conn, &f, &tv);
        if (rc == AMQP_STATUS_TIMEOUT)
            continue;
        if (rc != AMQP_STATUS_OK) {
            cmp_fail(b, "waiting for confirms: %s", amqp_error_string2(rc));
            break;
        }
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        if (f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
            amqp_basic_ack_t *a = f.payload.method.decoded;
            confirm(&w, a->delivery_tag, a->multiple, true);
        } else if (f.payload.method.id == AMQP_BASIC_NACK_METHOD) {
            amqp_basic_nack_t *a = f.payload.method.decoded;
            confirm(&w, a->delivery_tag, a->multiple, false);
        } else if (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
                   f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_channel_close_t *m = f.payload.method.decoded;
            cmp_fail(b, "producer: server closed: %u %.*s", m->reply_code, (int)m->reply_text.len,
                     (char *)m->reply_text.bytes);
            break;
        }
    }
out:
    free(w.slots);
    if (conn)
        close_conn(conn);
    return NULL;
}

/* --- consumer: prefetch, manual acks -------------------------------------------------------- */

static void *consumer(void *arg)
{
    struct cmp_consumer *cs = arg;
    struct cmp_bench *b = cs->b;
    amqp_connection_state_t conn = open_conn(b);
    if (!conn)
        return NULL;
    char q[300];
    queue_name(q, sizeof q, cs->g->name);
    amqp_basic_qos(conn, CH, 0, (uint16_t)b->o.prefetch, 0);
    if (!rpc_ok(b, "basic.qos", amqp_get_rpc_reply(conn)))
        goto out;
    amqp_basic_consume(conn, CH, amqp_cstring_bytes(q), amqp_empty_bytes, 0, 0, 0,
                       amqp_empty_table);
    if (!rpc_ok(b, "basic.consume", amqp_get_rpc_reply(conn)))
        goto out;
    cmp_ready(cs);
    while (!atomic_load(&b->stop_cons)) {
        amqp_envelope_t env;
        struct timeval tv = {0, 200000};
        amqp_maybe_release_buffers(conn);
        amqp_rpc_reply_t r = amqp_consume_message(conn, &env, &tv, 0);
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_TIMEOUT)
            continue;
        if (!rpc_ok(b, "consume", r))
            break;
        cmp_delivered(cs, env.message.body.bytes, env.message.body.len);
        int rc = amqp_basic_ack(conn, CH, env.delivery_tag, 0);
        amqp_destroy_envelope(&env);
        if (rc != AMQP_STATUS_OK) {
            cmp_fail(b, "basic.ack: %s", amqp_error_string2(rc));
            break;
        }
    }
out:
    close_conn(conn);
    return NULL;
}

int main(int argc, char **argv)
{
    static const struct cmp_driver d = {
        .prog = "kiteq-bench-rabbitmq",
        .about = "kiteq-bench's scenarios against RabbitMQ: a fanout exchange to one quorum queue\n"
                 "per --consumer-groups name, publisher confirms (up to --inflight unconfirmed),\n"
                 "consumers with basic.qos --prefetch and a manual basic.ack per message.",
        .default_port = 5672,
        .setup = setup,
        .producer = producer,
        .consumer = consumer,
    };
    return cmp_main(argc, argv, &d);
}
