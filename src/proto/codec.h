/* The protobuf-level codec: the generated kite_remoting.pb-c.h types, for proto/ itself and
 * the tests (golden bytes, hand-made frames). Everything else uses the plain C of
 * proto/wire.h; the build's module check rejects this header and the generated types outside
 * src/proto/. */
#ifndef KQ_PROTO_CODEC_H
#define KQ_PROTO_CODEC_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/buf.h"
#include "kite_remoting.pb-c.h"
#include "proto/wire.h"

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

/* Packed Header bytes (as stored with a message) decoded into the arena; NULL when they do
 * not parse. */
Protocol__Header *kq_codec_unpack_header_in(struct kq_arena *a, const uint8_t *hdr, size_t len);

/* protobuf-c hands `string` fields over as C strings, so a NUL byte inside one silently
 * cuts it short (a groupId "s-pub\0junk" would read "s-pub"). Returns the name of the first
 * string field of the body (nested messages too) holding a NUL byte, or NULL. Meant for
 * bodies that decoded: it does not judge garbage. */
const char *kq_codec_nul_string_field(uint8_t cmd, const uint8_t *body, size_t len);

int kq_codec_append(struct kq_buf *out, uint32_t opaque, uint8_t cmd, const ProtobufCMessage *m);

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
#endif
