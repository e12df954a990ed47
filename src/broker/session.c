/* Connection sessions: ConnMeta handshake with authentication, heartbeats, dispatch of
 * every inbound command, and closing of connections that stay silent too long. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/internal.h"
#include "core/log.h"

#define FEEDBACK_UNAUTHORIZED "Unauthorized,Connection broken!"
/* A connection must authenticate this soon (or within the heartbeat timeout if shorter):
 * unauthenticated sockets must not hold descriptors the store and real clients need. */
#define AUTH_DEADLINE_MS 5000

uint64_t kq_broker_mono_ms(void) { return kq_mono_us() / 1000; }

void kq_session_send_flush(struct kq_session *s) { kq_conn_flush_later(s->conn); }

void kq_session_answer_lost(struct kq_session *s, const char *what, int rc)
{
    KQ_LOG_RATELIMITED(KQ_LOG_ERROR, "session",
                       "%s not written peer=%s: %s (the client waits for it in vain)", what,
                       kq_conn_peer(s->conn), strerror(-rc));
}

void kq_session_open(struct kq_broker *b, struct kq_conn *c)
{
    struct kq_session *s = calloc(1, sizeof *s);
    if (!s) {
        kq_conn_close(c, "out of memory");
        return;
    }
    s->broker = b;
    s->conn = c;
    s->next_opaque = 1;
    kq_delivery_session_init(b, s);
    kq_conn_set_user(c, s);
    b->stats.connections++;
    KQ_DEBUG("session", "open peer=%s", kq_conn_peer(c));
}

void kq_session_close(struct kq_broker *b, struct kq_conn *c, const char *reason)
{
    struct kq_session *s = kq_conn_user(c);
    if (!s)
        return;
    /* Deliveries waiting on this connection fail now, not at their timeout. */
    kq_delivery_session_closed(b, s);
    kq_publish_session_closed(s);
    if (s->group) {
        kq_group_leave(s->group, s);
        if (s->group->n == 0)
            kq_delivery_group_offline(b, s->group);
    }
    KQ_INFO("session", "closed peer=%s group=%s reason=\"%s\"", kq_conn_peer(c),
            s->group ? s->group->id : "-", reason);
    b->stats.connections--;
    kq_conn_set_user(c, NULL);
    kq_hist_session_closed(s);
    free(s);
}

/* Tell the client why and close (the reply is written before the socket closes). */
static void refuse(struct kq_session *s, uint32_t opaque, const char *feedback, const char *why)
{
    kq_codec_append_conn_auth(kq_conn_out(s->conn), opaque, false, feedback);
    kq_conn_close(s->conn, why);
}

/* The auth policy's answer (policy.h: kq_policy_connect): it may refuse a connection whose
 * secret is right, never accept one whose secret is wrong. */
static bool connect_allowed(struct kq_broker *b, struct kq_session *s,
                            const struct kq_conn_meta_view *m, bool secret_ok, char *why,
                            size_t len)
{
    const char *peer = kq_conn_peer(s->conn);
    const char *colon = strrchr(peer, ':');
    char ip[64];
    snprintf(ip, sizeof ip, "%.*s", colon ? (int)(colon - peer) : (int)strlen(peer), peer);
    struct kq_group *g = kq_group_get(b, m->group, false);
    struct kq_connect_view v = {.group = m->group,
                                .peer_ip = ip,
                                .peer_port = colon ? atoi(colon + 1) : 0,
                                .secret_ok = secret_ok,
                                .warmup = m->has_warmup && m->warmup_sec > 0 ? m->warmup_sec : 0,
                                .connections = g ? (uint32_t)g->n : 0};
    return kq_policy_connect(b->policy, &v, why, len);
}

static void on_conn_meta(struct kq_broker *b, struct kq_session *s, uint32_t opaque,
                         const struct kq_conn_meta_view *m)
{
    const struct kq_config *cfg = b->cfg;
    if (s->authed) {
        /* A second handshake on one connection would register it twice (original bug);
         * answer it as the original does ("Auth Succ") but keep the first identity: a
         * different group is refused. */
        bool same = s->group && strcmp(s->group->id, m->group) == 0;
        int rc = kq_codec_append_conn_auth(kq_conn_out(s->conn), opaque, same,
                                           same ? "Auth Succ"
                                                : "Auth Failed: already authenticated "
                                                  "as another group");
        if (rc)
            kq_session_answer_lost(s, "ConnAuthAck", rc);
        kq_session_send_flush(s);
        return;
    }
    if (strlen(m->group) == 0 || strlen(m->group) >= KQ_GROUP_MAX) {
        refuse(s, opaque, "Auth Failed: invalid groupId", "invalid groupId");
        return;
    }
    const char *secret = cfg->n_groups > 0 ? kq_config_group_secret(cfg, m->group) : NULL;
    bool secret_ok = cfg->n_groups == 0 || (secret && strcmp(secret, m->secret) == 0);
    char why[KQ_POLICY_MAX_REJECT_REASON];
    if (!connect_allowed(b, s, m, secret_ok, why, sizeof why)) {
        const char *policy_why = secret_ok ? why : secret ? "wrong secret" : "unknown group";
        KQ_LOG_PER_PEER(KQ_LOG_WARN, "session", kq_conn_peer(s->conn),
                        "auth failed peer=%s group=%s reason=%s", kq_conn_peer(s->conn), m->group,
                        policy_why);
        refuse(s, opaque, secret_ok ? why : "Auth Failed: unknown groupId or wrong secretKey",
               "auth failed");
        return;
    }
    struct kq_group *g = kq_group_get(b, m->group, true);
    if (!g || kq_group_join(g, s) != 0) {
        refuse(s, opaque, "Auth Failed: broker out of memory", "out of memory");
        return;
    }
    s->authed = true;
    s->group = g;
    s->warmup_sec = m->has_warmup && m->warmup_sec > 0 ? m->warmup_sec : 0;
    s->auth_ms = kq_broker_mono_ms();
    int rc = kq_codec_append_conn_auth(kq_conn_out(s->conn), opaque, true, "Auth Succ");
    if (rc)
        kq_session_answer_lost(s, "ConnAuthAck", rc);
    kq_session_send_flush(s);
    KQ_INFO("session", "authenticated peer=%s group=%s warmup=%d", kq_conn_peer(s->conn), g->id,
            s->warmup_sec);
    /* Messages waiting for this group can go now. */
    kq_delivery_group_online(b, g);
}

void kq_session_on_frame(struct kq_broker *b, struct kq_conn *c, const struct kq_frame *f)
{
    struct kq_session *s = kq_conn_user(c);
    if (!s)
        return;
    switch (f->cmd) {
    case KQ_CMD_CONN_META:
    case KQ_CMD_HEARTBEAT:
    case KQ_CMD_DELIVER_ACK:
    case KQ_CMD_TX_ACK:
    case KQ_CMD_BYTES_MESSAGE:
    case KQ_CMD_STRING_MESSAGE: break;
    default:
        /* 0x03/0x04 and unknown commands: ignored, as the original does. */
        KQ_LOG_RATELIMITED(KQ_LOG_WARN, "session", "ignored command peer=%s cmd=0x%02x",
                           kq_conn_peer(c), f->cmd);
        return;
    }
    if (f->cmd != KQ_CMD_CONN_META && !s->authed) {
        KQ_LOG_PER_PEER(KQ_LOG_WARN, "session", kq_conn_peer(c),
                        "command before handshake peer=%s cmd=%s", kq_conn_peer(c),
                        kq_cmd_name(f->cmd));
        refuse(s, 0, FEEDBACK_UNAUTHORIZED, "not authenticated");
        return;
    }
    /* Decoded into the broker's frame arena: nothing below keeps a pointer into v. */
    /* Identities and messages are compared and stored as C strings: a NUL inside one would
     * cut it short unseen ("s-pub\0junk" authenticating as "s-pub"). (Acks only use their
     * opaque, status and a message id that a NUL would make unknown.) */
    const char *nul = NULL;
    bool ack = f->cmd == KQ_CMD_DELIVER_ACK || f->cmd == KQ_CMD_TX_ACK;
    struct kq_frame_view v;
    int rc = kq_frame_decode(&b->frame_arena, f->cmd, f->body, (size_t)f->body_len,
                             ack ? NULL : &nul, &v);
    if (rc || nul) {
        char why[96];
        if (nul)
            snprintf(why, sizeof why, "NUL byte in %s", nul);
        else
            snprintf(why, sizeof why, "%s",
                     rc == -ENOMEM ? "out of memory" : "protobuf decode failed");
        kq_arena_reset(&b->frame_arena);
        KQ_LOG_PER_PEER(KQ_LOG_WARN, "session", kq_conn_peer(c),
                        "malformed %s peer=%s opaque=%u len=%d: %s", kq_cmd_name(f->cmd),
                        kq_conn_peer(c), f->opaque, f->body_len, why);
        char fb[160];
        if (f->cmd == KQ_CMD_BYTES_MESSAGE || f->cmd == KQ_CMD_STRING_MESSAGE) {
            /* The producer waits for an ack with this opaque: tell it why. */
            snprintf(fb, sizeof fb, "Malformed Message: %s", why);
            kq_codec_append_store_ack(kq_conn_out(c), f->opaque, "", false, fb);
            kq_session_send_flush(s);
        } else if (f->cmd == KQ_CMD_CONN_META) {
            snprintf(fb, sizeof fb, "Auth Failed: malformed ConnMeta: %s", why);
            refuse(s, f->opaque, fb, "malformed ConnMeta");
        } else {
            kq_conn_close(c, "malformed frame");
        }
        return;
    }
    switch (f->cmd) {
    case KQ_CMD_CONN_META: on_conn_meta(b, s, f->opaque, &v.conn_meta); break;
    case KQ_CMD_HEARTBEAT:
        if ((rc = kq_codec_append_heartbeat(kq_conn_out(c), f->opaque, v.heartbeat_version)))
            kq_session_answer_lost(s, "heartbeat", rc);
        kq_session_send_flush(s);
        break;
    case KQ_CMD_DELIVER_ACK: kq_delivery_on_ack(b, s, f->opaque, v.deliver_ack.status); break;
    case KQ_CMD_TX_ACK: kq_tx_handle(b, s, &v.tx_ack); break;
    default: kq_publish_handle(b, s, f->opaque, f->cmd, &v.message); break;
    }
    kq_arena_reset(&b->frame_arena);
}

static void sweep_one(void *ud, struct kq_conn *c)
{
    struct kq_broker *b = ud;
    uint64_t limit = (uint64_t)b->cfg->heartbeat_timeout_seconds * 1000;
    uint64_t now = kq_broker_mono_ms();
    struct kq_session *s = kq_conn_user(c);
    uint64_t auth_deadline = limit < AUTH_DEADLINE_MS ? limit : AUTH_DEADLINE_MS;
    if (s && !s->authed && !kq_conn_closing(c) && now - kq_conn_opened_ms(c) > auth_deadline) {
        KQ_LOG_PER_PEER(KQ_LOG_WARN, "session", kq_conn_peer(c),
                        "no handshake within %llu ms, closing peer=%s",
                        (unsigned long long)auth_deadline, kq_conn_peer(c));
        kq_conn_close(c, "not authenticated in time");
        return;
    }
    /* A connection not read because its peer does not take its answers (net.h) reads
     * nothing either: it goes the same way, with the real reason. */
    if (now - kq_conn_last_read_ms(c) > limit)
        kq_conn_abort(c, kq_conn_read_paused_ms(c) ? "stuck: the peer does not read its answers"
                                                   : "idle: no heartbeat");
}

void kq_session_sweep_idle(struct kq_broker *b) { kq_net_foreach(b->net, sweep_one, b); }
