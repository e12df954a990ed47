/* Plain C views of decoded KiteQ messages (wire.h), and a Header written back from its view.
 * A view is a few pointer copies out of the decoded message; only the properties need an
 * array of their own (in the same arena, and only when there are some). */
#include <errno.h>

#include "proto/codec.h"
#include "proto/fast.h"

static int header_view(struct kq_arena *a, Protocol__Header *h, struct kq_header_view *v)
{
    struct kq_header_property *props = NULL;
    if (h->n_properties) {
        if (!(props = kq_arena_alloc(a, h->n_properties * sizeof *props)))
            return -ENOMEM;
        for (size_t i = 0; i < h->n_properties; i++) {
            const Protocol__Entry *e = h->properties[i];
            props[i] = (struct kq_header_property){e->key, e->value, e};
        }
    }
    *v = (struct kq_header_view){.message_id = h->messageid,
                                 .topic = h->topic,
                                 .message_type = h->messagetype,
                                 .group = h->groupid,
                                 .expired_time = h->expiredtime,
                                 .deliver_limit = h->deliverlimit,
                                 .commit = h->commit,
                                 .fly = h->fly,
                                 .has_create_time = h->has_createtime,
                                 .create_time = h->createtime,
                                 .properties = props,
                                 .n_properties = h->n_properties,
                                 .decoded = h};
    return 0;
}

int kq_frame_decode_protobuf(struct kq_arena *a, uint8_t cmd, const uint8_t *body, size_t len,
                             const char **nul, struct kq_frame_view *v)
{
    ProtobufCMessage *m = kq_codec_unpack_checked(a, cmd, body, len, nul);
    if (!m)
        return -EPROTO;
    v->cmd = cmd;
    switch (cmd) {
    case KQ_CMD_HEARTBEAT: v->heartbeat_version = ((Protocol__HeartBeat *)m)->version; return 0;
    case KQ_CMD_CONN_META: {
        const Protocol__ConnMeta *c = (Protocol__ConnMeta *)m;
        v->conn_meta = (struct kq_conn_meta_view){c->groupid, c->secretkey, c->has_warmingupsec,
                                                  c->warmingupsec};
        return 0;
    }
    case KQ_CMD_CONN_AUTH: {
        const Protocol__ConnAuthAck *c = (Protocol__ConnAuthAck *)m;
        v->conn_auth = (struct kq_conn_auth_view){c->status, c->feedback};
        return 0;
    }
    case KQ_CMD_MESSAGE_STORE_ACK: {
        const Protocol__MessageStoreAck *s = (Protocol__MessageStoreAck *)m;
        v->store_ack = (struct kq_store_ack_view){s->messageid, s->status, s->feedback};
        return 0;
    }
    case KQ_CMD_DELIVER_ACK: {
        const Protocol__DeliverAck *d = (Protocol__DeliverAck *)m;
        v->deliver_ack = (struct kq_deliver_ack_view){d->messageid, d->topic,  d->messagetype,
                                                      d->groupid,   d->status, d->feedback};
        return 0;
    }
    case KQ_CMD_TX_ACK: {
        Protocol__TxACKPacket *t = (Protocol__TxACKPacket *)m;
        v->tx_ack.status = t->status;
        v->tx_ack.feedback = t->feedback;
        return header_view(a, t->header, &v->tx_ack.header);
    }
    case KQ_CMD_BYTES_MESSAGE:
    case KQ_CMD_STRING_MESSAGE: { /* both decode as a BytesMessage (codec.h) */
        Protocol__BytesMessage *b = (Protocol__BytesMessage *)m;
        v->message.body = b->body.data;
        v->message.body_len = b->body.len;
        return header_view(a, b->header, &v->message.header);
    }
    default: return -EPROTO; /* not reached: kq_codec_unpack_checked decodes no other */
    }
}

int kq_header_decode_protobuf(struct kq_arena *a, const uint8_t *hdr, size_t len,
                              struct kq_header_view *v)
{
    Protocol__Header *h = kq_codec_unpack_header_in(a, hdr, len);
    return h ? header_view(a, h, v) : -EPROTO;
}

/* The hot frames in their common form are decoded by hand (fast_decode.c); anything else,
 * and every other command, by protobuf-c. */
int kq_frame_decode(struct kq_arena *a, uint8_t cmd, const uint8_t *body, size_t len,
                    const char **nul, struct kq_frame_view *v)
{
    if (kq_fast_frame_decode(a, cmd, body, len, nul != NULL, v)) {
        if (nul)
            *nul = NULL; /* it declines a string holding a NUL byte */
        return 0;
    }
    return kq_frame_decode_protobuf(a, cmd, body, len, nul, v);
}

int kq_header_decode(struct kq_arena *a, const uint8_t *hdr, size_t len, struct kq_header_view *v)
{
    return kq_fast_header_decode(a, hdr, len, v) ? 0 : kq_header_decode_protobuf(a, hdr, len, v);
}

/* h->properties from the view's: an entry that came decoded and is unchanged goes out as it
 * came (with its unknown fields), any other is a new entry. */
static int set_properties(struct kq_arena *a, Protocol__Header *h, const struct kq_header_view *v)
{
    Protocol__Entry **ps = NULL;
    if (v->n_properties && !(ps = kq_arena_alloc(a, v->n_properties * sizeof *ps)))
        return -ENOMEM;
    for (size_t i = 0; i < v->n_properties; i++) {
        const struct kq_header_property *p = &v->properties[i];
        Protocol__Entry *e = (Protocol__Entry *)p->decoded;
        if (!p->key || !p->value)
            return -EINVAL;
        if (!e || e->key != p->key || e->value != p->value) {
            if (!(e = kq_arena_alloc(a, sizeof *e)))
                return -ENOMEM;
            protocol__entry__init(e);
            e->key = (char *)p->key;
            e->value = (char *)p->value;
        }
        ps[i] = e;
    }
    h->properties = ps;
    h->n_properties = v->n_properties;
    return 0;
}

static bool strings_set(const struct kq_header_view *v)
{
    if (!v->message_id || !v->topic || !v->message_type || !v->group)
        return false;
    for (size_t i = 0; i < v->n_properties; i++)
        if (!v->properties[i].key || !v->properties[i].value)
            return false;
    return true;
}

int kq_header_encode_protobuf(struct kq_arena *a, const struct kq_header_view *v, uint8_t **out,
                              size_t *len)
{
    if (!strings_set(v))
        return -EINVAL;
    Protocol__Header fresh, *h = v->decoded;
    if (!h) { /* initialised only here: it is most of the cost of re-encoding a decoded one */
        fresh = (Protocol__Header)PROTOCOL__HEADER__INIT;
        fresh.has_snappy = v->snappy != 0; /* as a header decoded by hand carried it */
        fresh.snappy = v->snappy == 2;
        h = &fresh;
    }
    h->messageid = (char *)v->message_id;
    h->topic = (char *)v->topic;
    h->messagetype = (char *)v->message_type;
    h->groupid = (char *)v->group;
    h->expiredtime = v->expired_time;
    h->deliverlimit = v->deliver_limit;
    h->commit = v->commit;
    h->fly = v->fly;
    h->has_createtime = v->has_create_time;
    h->createtime = v->create_time;
    int rc = set_properties(a, h, v);
    return rc ? rc : kq_header_pack_in(a, h, out, len);
}

/* By hand (fast_encode.c) unless the header carries fields the view does not show. */
int kq_header_encode(struct kq_arena *a, const struct kq_header_view *v, uint8_t **out, size_t *len)
{
    if (!strings_set(v))
        return -EINVAL;
    if (kq_fast_header_encodable(v))
        return kq_fast_header_encode(a, v, out, len);
    return kq_header_encode_protobuf(a, v, out, len);
}
