/* KiteQ framing: a 19-byte big-endian header then the protobuf body.
 *   opaque u32 | cmd u8 | version i16 | extension i64 | bodyLen i32 | body
 * We always write version = 0 and extension = 0 and ignore them on read. */
#ifndef KQ_PROTO_FRAME_H
#define KQ_PROTO_FRAME_H
#include <stddef.h>
#include <stdint.h>

#define KQ_FRAME_HEADER_LEN 19
#define KQ_FRAME_MAX_BODY 2097152 /* 2 MiB, the original's limit; header not counted */

enum kq_cmd {
    KQ_CMD_HEARTBEAT = 0x01,
    KQ_CMD_CONN_META = 0x02,
    KQ_CMD_CONN_AUTH = 0x03,
    KQ_CMD_MESSAGE_STORE_ACK = 0x04,
    KQ_CMD_DELIVER_ACK = 0x05,
    KQ_CMD_TX_ACK = 0x06,
    KQ_CMD_BYTES_MESSAGE = 0x11,
    KQ_CMD_STRING_MESSAGE = 0x12,
};

enum kq_tx_status { KQ_TX_UNKNOWN = 0, KQ_TX_COMMIT = 1, KQ_TX_ROLLBACK = 2 };

struct kq_frame {
    uint32_t opaque;
    uint8_t cmd;
    int16_t version;
    int64_t extension;
    int32_t body_len;
    const uint8_t *body; /* points into the caller's buffer */
};

void kq_frame_header_write(uint8_t out[KQ_FRAME_HEADER_LEN], uint32_t opaque, uint8_t cmd,
                           uint32_t body_len);

/* Parse one frame from buf[0..len).
 * Returns the number of bytes the frame occupies (> 0) and fills *f,
 * 0 when more bytes are needed, or -EMSGSIZE when the body length is negative or
 * larger than KQ_FRAME_MAX_BODY (the stream cannot be resynchronised: close it). */
int kq_frame_parse(const uint8_t *buf, size_t len, struct kq_frame *f);

const char *kq_cmd_name(uint8_t cmd);
#endif
