/* The KiteQ wire protocol in plain C: what the broker, the client library and the tools
 * read and write, without the generated protobuf-c types (those stay inside proto/; the
 * build's module check rejects them elsewhere, see scripts/check-module-edges.cmake).
 *
 * Inbound frames decode into views (views.c): plain structs whose strings point into the
 * decoded message, which lives in the arena given to the decoder (released with it). A
 * message's body may point into the frame's own bytes instead: a view is valid while both
 * the arena and the input are (every user handles a frame before consuming its input).
 * Outbound frames are appended to a kq_buf (codec.c). All append functions add one complete
 * frame (header + body) to `out` and return 0, -ENOMEM, or -EMSGSIZE when the body would
 * exceed KQ_FRAME_MAX_BODY. */
#ifndef KQ_PROTO_WIRE_H
#define KQ_PROTO_WIRE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/buf.h"
#include "proto/frame.h"

#define KQ_MESSAGE_ID_LEN 32

/* --- views ------------------------------------------------------------------------------------ */

struct kq_header_property {
    const char *key;
    const char *value;
    const void *decoded; /* proto's own: the decoded entry (keeps its unknown fields); or NULL */
};

/* A message's Header. Decoded: the strings point into the decoded message. The holder may
 * change any field (point strings and properties at its own memory that outlives the
 * encoding); kq_header_encode writes the header back out, with every field the view does not
 * show (unknown fields, snappy) as it arrived. */
struct kq_header_view {
    const char *message_id;
    const char *topic;
    const char *message_type;
    const char *group;
    int64_t expired_time;
    int32_t deliver_limit;
    bool commit;
    bool fly;
    bool has_create_time; /* createTime is optional on the wire */
    int64_t create_time;
    const struct kq_header_property *properties;
    size_t n_properties;
    /* proto's own, kept with a copy like `decoded`: Header.snappy (the original Go client
     * sends it) as a header decoded without protobuf-c carried it: 0 absent, 1 false, 2 true */
    uint8_t snappy;
    void *decoded; /* proto's own: the decoded Header; NULL for a header decoded by hand
                    * (nothing the view does not show) or built from scratch */
};

/* BytesMessage (0x11) and StringMessage (0x12): the body keeps every byte, NULs included
 * (NULL when empty). It points into the arena or into the decoded input (see the top). */
struct kq_message_frame_view {
    struct kq_header_view header;
    const uint8_t *body;
    size_t body_len;
};

struct kq_conn_meta_view {
    const char *group;
    const char *secret;
    bool has_warmup;
    int32_t warmup_sec;
};

struct kq_conn_auth_view {
    bool status;
    const char *feedback;
};

struct kq_store_ack_view {
    const char *message_id;
    bool status;
    const char *feedback;
};

struct kq_deliver_ack_view {
    const char *message_id;
    const char *topic;
    const char *message_type;
    const char *group;
    bool status;
    const char *feedback; /* NULL when absent (it is optional) */
};

struct kq_tx_ack_view {
    struct kq_header_view header;
    int32_t status;
    const char *feedback;
};

/* One decoded frame body: the member named after the command (cmd). */
struct kq_frame_view {
    uint8_t cmd;
    union {
        int64_t heartbeat_version;              /* KQ_CMD_HEARTBEAT */
        struct kq_conn_meta_view conn_meta;     /* KQ_CMD_CONN_META */
        struct kq_conn_auth_view conn_auth;     /* KQ_CMD_CONN_AUTH */
        struct kq_store_ack_view store_ack;     /* KQ_CMD_MESSAGE_STORE_ACK */
        struct kq_deliver_ack_view deliver_ack; /* KQ_CMD_DELIVER_ACK */
        struct kq_tx_ack_view tx_ack;           /* KQ_CMD_TX_ACK */
        struct kq_message_frame_view message;   /* KQ_CMD_BYTES_/STRING_MESSAGE */
    };
};

/* Decode the body of a frame of command `cmd` into v, allocating in `a` (v is valid until
 * the arena is reset). Returns 0, or -EPROTO for garbage, a missing required field, or a
 * command that carries no body we accept (v untouched). `nul`: as kq_codec_unpack_checked
 * (codec.h), *nul names a string field holding a NUL byte, or is NULL; pass NULL to skip
 * that check. */
int kq_frame_decode(struct kq_arena *a, uint8_t cmd, const uint8_t *body, size_t len,
                    const char **nul, struct kq_frame_view *v);

/* The chunk size of an arena made for decoding one stored header (kq_header_decode): the
 * usual header and its properties fit in one. */
#define KQ_HEADER_ARENA_CHUNK 4096

/* Decode packed Header bytes (as kept with a stored message) into v, allocating in `a`.
 * Returns 0 or -EPROTO (-ENOMEM when the arena is out of memory). */
int kq_header_decode(struct kq_arena *a, const uint8_t *hdr, size_t len, struct kq_header_view *v);

/* Pack v into the arena (*out, *len): a decoded view with its changes, or a fresh header
 * (v->decoded NULL). The same bytes as packing the generated Header with those values; a
 * decoded property copied with its `decoded` and its key and value pointers unchanged goes
 * out as it came (with its unknown fields). Returns 0, -EINVAL (a required string is NULL)
 * or -ENOMEM. */
int kq_header_encode(struct kq_arena *a, const struct kq_header_view *v, uint8_t **out,
                     size_t *len);

/* Header.commit read straight from packed Header bytes (no unpacking): true only when the
 * field is present and set. A malformed header reads as false. */
bool kq_header_committed(const uint8_t *hdr, size_t len);

/* --- outbound frames ------------------------------------------------------------------------ */

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

/* --- message ids ------------------------------------------------------------------------------ */

/* A message id is exactly 32 hex digits. */
bool kq_message_id_valid(const char *id);
/* 32 lowercase hex digits from a random UUID, as the original clients make them; out[32]=0. */
void kq_message_id_generate(char out[KQ_MESSAGE_ID_LEN + 1]);
#endif
