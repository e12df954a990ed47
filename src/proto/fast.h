/* Hand-written wire code for the frames every message passes through (proto/ only, and the
 * tests that prove it equal to protobuf-c). protobuf-c's generic unpack and pack were the
 * broker's largest cost per message; these handle the common, canonical form of a few fixed
 * messages and leave everything else to protobuf-c, so odd input keeps protobuf-c's exact
 * behaviour (rejections, unknown fields kept, last one wins, defaults). */
#ifndef KQ_PROTO_FAST_H
#define KQ_PROTO_FAST_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "proto/wire.h"

/* Decode a Bytes/StringMessage, DeliverAck or TxACKPacket body into v when it has the
 * canonical form: every known field at most once with its wire type, no unknown field and no
 * field 0, every required field there, one-byte tags and bools.
 * Strings are copied NUL-terminated into `a` (as protobuf-c does); a message's body points
 * into `body`. check_nul: a string holding a NUL byte declines (protobuf-c's path then names
 * it). Returns true when v was filled; false when declined (v untouched): use protobuf-c.
 * The views it fills have decoded == NULL: there is nothing on the wire they do not show. */
bool kq_fast_frame_decode(struct kq_arena *a, uint8_t cmd, const uint8_t *body, size_t len,
                          bool check_nul, struct kq_frame_view *v);
/* The same for packed Header bytes (a stored header). */
bool kq_fast_header_decode(struct kq_arena *a, const uint8_t *hdr, size_t len,
                           struct kq_header_view *v);

/* Whether kq_fast_header_encode writes exactly what protobuf-c would pack for v: true unless
 * v came decoded by protobuf-c with unknown fields (in the Header or a property kept). */
bool kq_fast_header_encodable(const struct kq_header_view *v);
/* Pack v by hand into the arena, byte for byte as protobuf-c packs the generated Header with
 * those values. The strings (and property keys and values) must not be NULL. Returns 0 or
 * -ENOMEM. */
int kq_fast_header_encode(struct kq_arena *a, const struct kq_header_view *v, uint8_t **out,
                          size_t *len);

/* protobuf-c's paths alone (what the fast paths fall back to), for the tests comparing them. */
int kq_frame_decode_protobuf(struct kq_arena *a, uint8_t cmd, const uint8_t *body, size_t len,
                             const char **nul, struct kq_frame_view *v);
int kq_header_decode_protobuf(struct kq_arena *a, const uint8_t *hdr, size_t len,
                              struct kq_header_view *v);
int kq_header_encode_protobuf(struct kq_arena *a, const struct kq_header_view *v, uint8_t **out,
                              size_t *len);
#endif
