/* The broker's inbound path: split a byte stream into frames and decode each body as its
 * command (protobuf-c, plain and into an arena), check string fields for NUL bytes, view
 * messages (and as proto/wire.h's views: the same header bytes re-encoded). Whatever decodes
 * must encode again into a frame that decodes. The hand-written decoder and Header encoder
 * (src/proto/fast.h) are checked against protobuf-c on every body, read as its command and
 * as a stored Header: declined, or the same view and the same bytes; and the hand-built
 * MessageStoreAck against protobuf-c's packing of every one that decodes. */
#include <string.h>

#include "fast_wire_check.h"
#include "fuzz.h"
#include "proto/codec.h"

static struct kq_arena arena;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    kq_arena_init(&arena, 4096);
    return 0;
}

/* Encode m again and decode the result: the frame must parse whole and its body decode. */
static void round_trip(uint8_t cmd, const ProtobufCMessage *m)
{
    struct kq_buf out = {0};
    if (kq_codec_append(&out, 7, cmd, m) == 0) {
        struct kq_frame f;
        FUZZ_CHECK(kq_frame_parse(out.data, out.len, &f) == (int)out.len);
        FUZZ_CHECK(f.opaque == 7 && f.cmd == cmd);
        ProtobufCMessage *again = kq_codec_unpack(cmd, f.body, (size_t)f.body_len);
        FUZZ_CHECK(again != NULL);
        kq_codec_free(again);
    }
    kq_buf_free(&out);
}

/* The hand-built MessageStoreAck (codec.c) is the frame protobuf-c packs from the same s. */
static void store_ack_alike(const Protocol__MessageStoreAck *s)
{
    struct kq_buf fast = {0}, slow = {0};
    int rc = kq_codec_append_store_ack(&fast, 7, s->messageid, s->status, s->feedback);
    FUZZ_CHECK(rc == kq_codec_append(&slow, 7, KQ_CMD_MESSAGE_STORE_ACK, &s->base));
    FUZZ_CHECK(fast.len == slow.len && (!fast.len || memcmp(fast.data, slow.data, fast.len) == 0));
    kq_buf_free(&fast);
    kq_buf_free(&slow);
}

static void decode(uint8_t cmd, const uint8_t *body, size_t len)
{
    FUZZ_CHECK(fast_frame_check(&arena, cmd, body, len) != FAST_DIFFERS);
    FUZZ_CHECK(fast_header_check(&arena, body, len) != FAST_DIFFERS);
    ProtobufCMessage *m = kq_codec_unpack(cmd, body, len);
    ProtobufCMessage *in_arena = kq_codec_unpack_in(&arena, cmd, body, len);
    FUZZ_CHECK((m == NULL) == (in_arena == NULL)); /* both decoders agree */
    if (m) {
        (void)kq_codec_nul_string_field(cmd, body, len);
        struct kq_frame_view fv;
        FUZZ_CHECK(kq_frame_decode(&arena, cmd, body, len, NULL, &fv) == 0);
        struct kq_message_view v;
        if (kq_message_view(cmd, m, &v) == 0) {
            FUZZ_CHECK(v.header != NULL);
            uint8_t *packed;
            size_t packed_len;
            if (kq_header_pack(v.header, &packed, &packed_len) == 0) {
                uint8_t *again;
                size_t again_len;
                FUZZ_CHECK(kq_header_encode(&arena, &fv.message.header, &again, &again_len) == 0);
                FUZZ_CHECK(again_len == packed_len && memcmp(again, packed, packed_len) == 0);
                free(packed);
            }
            (void)kq_message_id_valid(v.header->messageid);
        }
        if (cmd == KQ_CMD_MESSAGE_STORE_ACK && m->n_unknown_fields == 0) /* those pack too */
            store_ack_alike((const Protocol__MessageStoreAck *)m);
        round_trip(cmd, m);
        kq_codec_free(m);
    }
    kq_arena_reset(&arena);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    struct kq_frame f;
    int n;
    while (off < size && (n = kq_frame_parse(data + off, size - off, &f)) > 0) {
        FUZZ_CHECK(f.body_len >= 0 && f.body_len <= KQ_FRAME_MAX_BODY);
        FUZZ_CHECK((size_t)n == KQ_FRAME_HEADER_LEN + (size_t)f.body_len &&
                   (size_t)n <= size - off);
        (void)kq_cmd_name(f.cmd);
        decode(f.cmd, f.body, (size_t)f.body_len);
        off += (size_t)n;
    }
    return 0;
}
