/* Protobuf glue for the KiteQ commands. The only header that includes the generated
 * kite_remoting.pb-c.h; everything else reaches the message types through it.
 * All append functions add one complete frame (header + body) to `out` and return
 * 0, -ENOMEM, or -EMSGSIZE when the body would exceed KQ_FRAME_MAX_BODY. */
#ifndef KQ_PROTO_CODEC_H
#define KQ_PROTO_CODEC_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/buf.h"
#include "kite_remoting.pb-c.h"
#include "proto/frame.h"

#define KQ_MESSAGE_ID_LEN 32

/* Decode the body of a frame of command `cmd`. Returns NULL for garbage, a missing
 * required field, or a command that carries no body we accept. Free with kq_codec_free.
 * A StringMessage (0x12) decodes as a Protocol__BytesMessage (the same wire): its body keeps
 * every byte, NULs included; read it with kq_message_view. */
ProtobufCMessage *kq_codec_unpack(uint8_t cmd, const uint8_t *body, size_t len);
void kq_codec_free(ProtobufCMessage *m);
/* The same, decoding into the arena: the result lives until the arena is reset (never pass
 * it to kq_codec_free). One bump allocation per field instead of one malloc each. */
ProtobufCMessage *kq_codec_unpack_in(struct kq_arena *a, uint8_t cmd, const uint8_t *body,
                                     size_t len);
/* kq_codec_unpack_in that also tells (*nul, as kq_codec_nul_string_field) whether a string
 * field holds a NUL byte, from the same walk of the wire (*nul is NULL when it returns NULL;
 * nul NULL: no such check, as kq_codec_unpack_in). */
ProtobufCMessage *kq_codec_unpack_checked(struct kq_arena *a, uint8_t cmd, const uint8_t *body,
                                          size_t len, const char **nul);

/* protobuf-c hands `string` fields over as C strings, so a NUL byte inside one silently
 * cuts it short (a groupId "s-pub\0junk" would read "s-pub"). Returns the name of the first
 * string field of the body (nested messages too) holding a NUL byte, or NULL. Meant for
 * bodies that decoded: it does not judge garbage. */
const char *kq_codec_nul_string_field(uint8_t cmd, const uint8_t *body, size_t len);

int kq_codec_append(struct kq_buf *out, uint32_t opaque, uint8_t cmd, const ProtobufCMessage *m);

/* Bytes/StringMessage from an already packed Header: no re-encoding of the header on
 * every delivery, and the header bytes (with unknown fields) pass through unchanged. */
int kq_codec_append_message(struct kq_buf *out, uint32_t opaque, uint8_t cmd, const uint8_t *header,
                            size_t header_len, const uint8_t *body, size_t body_len);
/* The body size of that frame (a delivery must stay within KQ_FRAME_MAX_BODY). */
size_t kq_codec_message_size(size_t header_len, size_t body_len);
/* TxACKPacket from an already packed Header. */
int kq_codec_append_tx_ack(struct kq_buf *out, uint32_t opaque, const uint8_t *header,
                           size_t header_len, int32_t status, const char *feedback);

int kq_codec_append_conn_meta(struct kq_buf *out, uint32_t opaque, const char *group,
                              const char *secret, int32_t warmingup_sec);
int kq_codec_append_conn_auth(struct kq_buf *out, uint32_t opaque, bool status,
                              const char *feedback);
int kq_codec_append_store_ack(struct kq_buf *out, uint32_t opaque, const char *message_id,
                              bool status, const char *feedback);
int kq_codec_append_heartbeat(struct kq_buf *out, uint32_t opaque, int64_t version);
int kq_codec_append_deliver_ack(struct kq_buf *out, uint32_t opaque, const char *message_id,
                                const char *topic, const char *message_type, const char *group,
                                bool status, const char *feedback);

/* Header of a Bytes/StringMessage and its body, whatever the command. */
struct kq_message_view {
    Protocol__Header *header;
    const uint8_t *body;
    size_t body_len;
};
/* m must come from kq_codec_unpack(_in) with cmd 0x11 or 0x12. Returns 0 or -EINVAL. */
int kq_message_view(uint8_t cmd, ProtobufCMessage *m, struct kq_message_view *v);

/* Pack a Header into a fresh malloc'd buffer (*out, *len). Returns 0 or -ENOMEM. */
int kq_header_pack(const Protocol__Header *h, uint8_t **out, size_t *len);
/* The same into the arena (released with it). */
int kq_header_pack_in(struct kq_arena *a, const Protocol__Header *h, uint8_t **out, size_t *len);

/* Header.commit read straight from packed Header bytes (no unpacking): true only when the
 * field is present and set. A malformed header reads as false. */
bool kq_header_committed(const uint8_t *hdr, size_t len);

/* A message id is exactly 32 hex digits. */
bool kq_message_id_valid(const char *id);
/* 32 lowercase hex digits from a random UUID, as the original clients make them; out[32]=0. */
void kq_message_id_generate(char out[KQ_MESSAGE_ID_LEN + 1]);
#endif
