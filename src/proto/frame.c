#include "proto/frame.h"

#include <errno.h>

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

void kq_frame_header_write(uint8_t out[KQ_FRAME_HEADER_LEN], uint32_t opaque, uint8_t cmd,
                           uint32_t body_len)
{
    put_be32(out, opaque);
    out[4] = cmd;
    for (int i = 5; i < 15; i++)
        out[i] = 0; /* version and extension */
    put_be32(out + 15, body_len);
}

int kq_frame_parse(const uint8_t *buf, size_t len, struct kq_frame *f)
{
    if (len < KQ_FRAME_HEADER_LEN)
        return 0;
    int32_t body_len = (int32_t)be32(buf + 15);
    if (body_len < 0 || body_len > KQ_FRAME_MAX_BODY)
        return -EMSGSIZE;
    if (len < KQ_FRAME_HEADER_LEN + (size_t)body_len)
        return 0;
    f->opaque = be32(buf);
    f->cmd = buf[4];
    f->version = (int16_t)((uint16_t)buf[5] << 8 | buf[6]);
    uint64_t ext = (uint64_t)be32(buf + 7) << 32 | be32(buf + 11);
    f->extension = (int64_t)ext;
    f->body_len = body_len;
    f->body = buf + KQ_FRAME_HEADER_LEN;
    return KQ_FRAME_HEADER_LEN + body_len;
}

const char *kq_cmd_name(uint8_t cmd)
{
    switch (cmd) {
    case KQ_CMD_HEARTBEAT: return "HEARTBEAT";
    case KQ_CMD_CONN_META: return "CONN_META";
    case KQ_CMD_CONN_AUTH: return "CONN_AUTH";
    case KQ_CMD_MESSAGE_STORE_ACK: return "MESSAGE_STORE_ACK";
    case KQ_CMD_DELIVER_ACK: return "DELIVER_ACK";
    case KQ_CMD_TX_ACK: return "TX_ACK";
    case KQ_CMD_BYTES_MESSAGE: return "BYTES_MESSAGE";
    case KQ_CMD_STRING_MESSAGE: return "STRING_MESSAGE";
    default: return "UNKNOWN";
    }
}
