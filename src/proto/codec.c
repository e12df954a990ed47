#include "proto/codec.h"
#include "proto/varint.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static const ProtobufCMessageDescriptor *descriptor_for(uint8_t cmd)
{
    switch (cmd) {
    case KQ_CMD_HEARTBEAT: return &protocol__heart_beat__descriptor;
    case KQ_CMD_CONN_META: return &protocol__conn_meta__descriptor;
    case KQ_CMD_CONN_AUTH: return &protocol__conn_auth_ack__descriptor;
    case KQ_CMD_MESSAGE_STORE_ACK: return &protocol__message_store_ack__descriptor;
    case KQ_CMD_DELIVER_ACK: return &protocol__deliver_ack__descriptor;
    case KQ_CMD_TX_ACK: return &protocol__tx_ackpacket__descriptor;
    case KQ_CMD_BYTES_MESSAGE: return &protocol__bytes_message__descriptor;
    /* Same wire as BytesMessage; decoded as bytes so that a body with NUL bytes keeps its
     * length (protobuf-c hands `string` fields over as C strings). */
    case KQ_CMD_STRING_MESSAGE: return &protocol__bytes_message__descriptor;
    default: return NULL;
    }
}

/* protobuf-c takes a field number 0 written as a multi-byte varint (80 00) for an unknown
 * field and keeps it, but packs it back as the one byte 00, which no decoder (protobuf-c, Go)
 * accepts: a Header carrying one would be stored and then be undeliverable. Found by
 * tests/fuzz/fuzz_frame.c; the message and every nested one are checked. */
/* How deep the wire walk follows nested messages (ours nest two deep). */
#define SCAN_DEPTH 4

static bool has_field_zero(const ProtobufCMessage *m)
{
    for (unsigned i = 0; i < m->n_unknown_fields; i++)
        if (m->unknown_fields[i].tag == 0)
            return true;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const char *field = (const char *)m + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
            ProtobufCMessage *const *items = *(ProtobufCMessage *const *const *)field;
            for (size_t k = 0; k < n; k++)
                if (items[k] && has_field_zero(items[k]))
                    return true;
        } else {
            const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)field;
            if (sub && has_field_zero(sub))
                return true;
        }
    }
    return false;
}

/* What one walk of a body's wire found (scan_wire). */
struct wire_scan {
    const char *nul; /* the first string field holding a NUL byte, or NULL */
    bool field_zero; /* a field numbered 0 (see has_field_zero) */
    bool partial;    /* not every decoded message was walked (malformed, or too deep) */
};

static void scan_wire(const ProtobufCMessageDescriptor *d, const uint8_t *p, const uint8_t *end,
                      int depth, struct wire_scan *ws);

/* A caller that asks for NUL bytes in strings (nul != NULL: every publish) gets both checks
 * from one walk of the wire (walking the decoded message for field 0 as well cost ~200
 * instructions a message); the decoded message is walked only when the wire walk could not
 * see everything protobuf-c decoded. Other frames (acks: flat, their strings unchecked) only
 * have the decoded message walked. */
static ProtobufCMessage *unpack(uint8_t cmd, ProtobufCAllocator *al, const uint8_t *body,
                                size_t len, const char **nul)
{
    if (nul)
        *nul = NULL; /* every NULL return below leaves it so (codec.h) */
    const ProtobufCMessageDescriptor *d = descriptor_for(cmd);
    if (!d)
        return NULL;
    struct wire_scan ws = {.partial = !nul};
    if (nul && body)
        scan_wire(d, body, body + len, SCAN_DEPTH, &ws);
    if (ws.field_zero)
        return NULL;
    /* protobuf-c rejects truncated input and missing required fields (recursively). */
    ProtobufCMessage *m = protobuf_c_message_unpack(d, al, len, body);
    if (m && ws.partial && has_field_zero(m)) {
        protobuf_c_message_free_unpacked(m, al);
        return NULL;
    }
    if (nul)
        *nul = m ? ws.nul : NULL;
    return m;
}

ProtobufCMessage *kq_codec_unpack(uint8_t cmd, const uint8_t *body, size_t len)
{
    return unpack(cmd, NULL, body, len, NULL);
}

static void *arena_alloc(void *a, size_t n) { return kq_arena_alloc(a, n); }
static void arena_free(void *a, void *p)
{
    (void)a; /* released with the whole arena */
    (void)p;
}

ProtobufCMessage *kq_codec_unpack_in(struct kq_arena *a, uint8_t cmd, const uint8_t *body,
                                     size_t len)
{
    return kq_codec_unpack_checked(a, cmd, body, len, NULL);
}

ProtobufCMessage *kq_codec_unpack_checked(struct kq_arena *a, uint8_t cmd, const uint8_t *body,
                                          size_t len, const char **nul)
{
    ProtobufCAllocator al = {.alloc = arena_alloc, .free = arena_free, .allocator_data = a};
    return unpack(cmd, &al, body, len, nul);
}

Protocol__Header *kq_codec_unpack_header_in(struct kq_arena *a, const uint8_t *hdr, size_t len)
{
    ProtobufCAllocator al = {.alloc = arena_alloc, .free = arena_free, .allocator_data = a};
    return protocol__header__unpack(&al, len, hdr);
}

void kq_codec_free(ProtobufCMessage *m)
{
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
}

static int append_header(struct kq_buf *out, uint32_t opaque, uint8_t cmd, size_t body_len)
{
    if (body_len > KQ_FRAME_MAX_BODY)
        return -EMSGSIZE;
    int rc = kq_buf_reserve(out, KQ_FRAME_HEADER_LEN + body_len);
    if (rc)
        return rc;
    kq_frame_header_write(out->data + out->len, opaque, cmd, (uint32_t)body_len);
    out->len += KQ_FRAME_HEADER_LEN;
    return 0;
}

int kq_codec_append(struct kq_buf *out, uint32_t opaque, uint8_t cmd, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    int rc = append_header(out, opaque, cmd, n);
    if (rc)
        return rc;
    protobuf_c_message_pack(m, out->data + out->len);
    out->len += n;
    return 0;
}

/* --- hand-built frames for the hot path ---------------------------------------------------- */

size_t kq_codec_message_size(size_t header_len, size_t body_len)
{
    return kq_len_field_size(header_len) + kq_len_field_size(body_len);
}

int kq_codec_append_message(struct kq_buf *out, uint32_t opaque, uint8_t cmd, const uint8_t *header,
                            size_t header_len, const uint8_t *body, size_t body_len)
{
    size_t n = kq_codec_message_size(header_len, body_len);
    int rc = append_header(out, opaque, cmd, n);
    if (rc)
        return rc;
    uint8_t *p = out->data + out->len;
    p = kq_put_len_field(p, 0x0a, header, header_len); /* field 1, wire type 2 */
    p = kq_put_len_field(p, 0x12, body, body_len);     /* field 2, wire type 2 */
    out->len = (size_t)(p - out->data);
    return 0;
}

int kq_codec_append_tx_ack(struct kq_buf *out, uint32_t opaque, const uint8_t *header,
                           size_t header_len, int32_t status, const char *feedback)
{
    size_t flen = strlen(feedback);
    /* int32 negatives are sign-extended to 10-byte varints, as in every proto encoder */
    uint64_t st = (uint64_t)(int64_t)status;
    size_t n = kq_len_field_size(header_len) + 1 + kq_varint_size(st) + kq_len_field_size(flen);
    int rc = append_header(out, opaque, KQ_CMD_TX_ACK, n);
    if (rc)
        return rc;
    uint8_t *p = out->data + out->len;
    p = kq_put_len_field(p, 0x0a, header, header_len);
    *p++ = 0x10; /* field 2, varint */
    p = kq_put_varint(p, st);
    p = kq_put_len_field(p, 0x1a, feedback, flen);
    out->len = (size_t)(p - out->data);
    return 0;
}

/* The answer to every publish: built by hand as protobuf-c packs it (its generic pack cost
 * ~480 instructions a message). */
int kq_codec_append_store_ack(struct kq_buf *out, uint32_t opaque, const char *message_id,
                              bool status, const char *feedback)
{
    size_t id_len = strlen(message_id), flen = strlen(feedback);
    size_t n = kq_len_field_size(id_len) + 2 + kq_len_field_size(flen);
    int rc = append_header(out, opaque, KQ_CMD_MESSAGE_STORE_ACK, n);
    if (rc)
        return rc;
    uint8_t *p = out->data + out->len;
    p = kq_put_len_field(p, 0x0a, message_id, id_len); /* field 1 */
    *p++ = 0x10;                                       /* field 2, varint */
    *p++ = status ? 1 : 0;
    p = kq_put_len_field(p, 0x1a, feedback, flen);
    out->len = (size_t)(p - out->data);
    return 0;
}

/* --- small messages --------------------------------------------------------------------------- */

int kq_codec_append_conn_meta(struct kq_buf *out, uint32_t opaque, const char *group,
                              const char *secret, int32_t warmingup_sec)
{
    Protocol__ConnMeta m = PROTOCOL__CONN_META__INIT;
    m.groupid = (char *)group;
    m.secretkey = (char *)secret;
    m.has_warmingupsec = 1; /* always sent, like the original clients */
    m.warmingupsec = warmingup_sec;
    return kq_codec_append(out, opaque, KQ_CMD_CONN_META, &m.base);
}

int kq_codec_append_conn_auth(struct kq_buf *out, uint32_t opaque, bool status,
                              const char *feedback)
{
    Protocol__ConnAuthAck m = PROTOCOL__CONN_AUTH_ACK__INIT;
    m.status = status;
    m.feedback = (char *)feedback;
    return kq_codec_append(out, opaque, KQ_CMD_CONN_AUTH, &m.base);
}

int kq_codec_append_heartbeat(struct kq_buf *out, uint32_t opaque, int64_t version)
{
    Protocol__HeartBeat m = PROTOCOL__HEART_BEAT__INIT;
    m.version = version;
    return kq_codec_append(out, opaque, KQ_CMD_HEARTBEAT, &m.base);
}

int kq_codec_append_deliver_ack(struct kq_buf *out, uint32_t opaque, const char *message_id,
                                const char *topic, const char *message_type, const char *group,
                                bool status, const char *feedback)
{
    Protocol__DeliverAck m = PROTOCOL__DELIVER_ACK__INIT;
    m.messageid = (char *)message_id;
    m.topic = (char *)topic;
    m.messagetype = (char *)message_type;
    m.groupid = (char *)group;
    m.status = status;
    m.feedback = (char *)(feedback ? feedback : ""); /* the Go client always sends it */
    return kq_codec_append(out, opaque, KQ_CMD_DELIVER_ACK, &m.base);
}

int kq_message_view(uint8_t cmd, ProtobufCMessage *m, struct kq_message_view *v)
{
    if (!m)
        return -EINVAL;
    if ((cmd == KQ_CMD_BYTES_MESSAGE || cmd == KQ_CMD_STRING_MESSAGE) &&
        m->descriptor == &protocol__bytes_message__descriptor) {
        Protocol__BytesMessage *b = (Protocol__BytesMessage *)m;
        v->header = b->header;
        v->body = b->body.data;
        v->body_len = b->body.len;
        return 0;
    }
    return -EINVAL;
}

/* --- strings with NUL bytes ------------------------------------------------------------------ */

static inline bool get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    if (*p < end && !(**p & 0x80)) { /* tags and short lengths: one byte */
        *v = *(*p)++;
        return true;
    }
    *v = 0;
    for (int shift = 0; *p < end && shift < 64; shift += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return true;
    }
    return false;
}

/* Our messages number their fields 1..n in order: index directly, search otherwise. */
static const ProtobufCFieldDescriptor *field_of(const ProtobufCMessageDescriptor *d, unsigned id)
{
    if (id >= 1 && id <= d->n_fields && d->fields[id - 1].id == id)
        return &d->fields[id - 1];
    return protobuf_c_message_descriptor_get_field(d, id);
}

/* Walks the wire of one message and of the nested messages protobuf-c decodes (depth bounds
 * the recursion); stops at a field 0, and where the wire makes no sense (protobuf-c judges). */
static void scan_wire(const ProtobufCMessageDescriptor *d, const uint8_t *p, const uint8_t *end,
                      int depth, struct wire_scan *ws)
{
    while (p < end) {
        uint64_t tag, n;
        if (!get_varint(&p, end, &tag)) {
            ws->partial = true;
            return;
        }
        if (tag >> 3 == 0) {
            ws->field_zero = true;
            return;
        }
        const ProtobufCFieldDescriptor *fd = field_of(d, (unsigned)(tag >> 3));
        switch (tag & 7) {
        case 0: /* varint */
            if (!get_varint(&p, end, &n)) {
                ws->partial = true;
                return;
            }
            break;
        case 1: /* fixed 64 */
        case 5: /* fixed 32 */
            n = (tag & 7) == 1 ? 8 : 4;
            if (n > (uint64_t)(end - p)) {
                ws->partial = true;
                return;
            }
            p += n;
            break;
        case 2: /* length-delimited */
            if (!get_varint(&p, end, &n) || n > (uint64_t)(end - p)) {
                ws->partial = true;
                return;
            }
            if (fd && fd->type == PROTOBUF_C_TYPE_STRING && !ws->nul && memchr(p, 0, (size_t)n))
                ws->nul = fd->name;
            if (fd && fd->type == PROTOBUF_C_TYPE_MESSAGE) {
                if (depth > 0)
                    scan_wire(fd->descriptor, p, p + n, depth - 1, ws);
                else
                    ws->partial = true;
                if (ws->field_zero)
                    return;
            }
            p += n;
            break;
        default: /* groups: not in our protocol, nothing to tell */ ws->partial = true; return;
        }
    }
}

const char *kq_codec_nul_string_field(uint8_t cmd, const uint8_t *body, size_t len)
{
    const ProtobufCMessageDescriptor *d = descriptor_for(cmd);
    struct wire_scan ws = {0};
    if (d && body)
        scan_wire(d, body, body + len, SCAN_DEPTH, &ws);
    return ws.nul;
}

int kq_header_pack(const Protocol__Header *h, uint8_t **out, size_t *len)
{
    size_t n = protocol__header__get_packed_size(h);
    uint8_t *p = malloc(n ? n : 1);
    if (!p)
        return -ENOMEM;
    protocol__header__pack(h, p);
    *out = p;
    *len = n;
    return 0;
}

int kq_header_pack_in(struct kq_arena *a, const Protocol__Header *h, uint8_t **out, size_t *len)
{
    size_t n = protocol__header__get_packed_size(h);
    uint8_t *p = kq_arena_alloc(a, n ? n : 1);
    if (!p)
        return -ENOMEM;
    protocol__header__pack(h, p);
    *out = p;
    *len = n;
    return 0;
}

/* One base-128 varint at *p (not past end); false when cut short or over 10 bytes. */
static bool read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; *p < end && shift < 70; shift += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return true;
    }
    return false;
}

bool kq_header_committed(const uint8_t *hdr, size_t len)
{
    const uint8_t *p = hdr, *end = hdr + len;
    bool commit = false;
    while (p < end) {
        uint64_t key, v;
        if (!read_varint(&p, end, &key))
            return false;
        switch (key & 7) {
        case 0: /* varint */
            if (!read_varint(&p, end, &v))
                return false;
            if (key >> 3 == 7)
                commit = v != 0; /* the last occurrence wins, as in protobuf */
            break;
        case 1: p += 8; break;
        case 5: p += 4; break;
        case 2:
            if (!read_varint(&p, end, &v) || v > (uint64_t)(end - p))
                return false;
            p += v;
            break;
        default: return false;
        }
    }
    return p == end && commit;
}

bool kq_message_id_valid(const char *id)
{
    /* Checked for every publish and delivery ack: a table instead of three range tests. */
    static const bool hex[256] = {
        ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
        ['8'] = 1, ['9'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1,
        ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1,
    };
    if (!id)
        return false;
    for (size_t i = 0; i < KQ_MESSAGE_ID_LEN; i++)
        if (!hex[(uint8_t)id[i]])
            return false; /* also stops at the NUL of a short id */
    return id[KQ_MESSAGE_ID_LEN] == 0;
}

/* splitmix64: a fast generator; ids must be unique, not secret. Each thread seeds its own
 * state once from the kernel, so an id costs no system call. */
static uint64_t next_random(void)
{
    static _Thread_local uint64_t state;
    if (state == 0 && getrandom(&state, sizeof state, 0) != (ssize_t)sizeof state)
        state = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)&state;
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void kq_message_id_generate(char out[KQ_MESSAGE_ID_LEN + 1])
{
    uint8_t u[16];
    uint64_t a = next_random(), b = next_random();
    memcpy(u, &a, 8);
    memcpy(u + 8, &b, 8);
    u[6] = (uint8_t)((u[6] & 0x0f) | 0x40); /* version 4 */
    u[8] = (uint8_t)((u[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[u[i] >> 4];
        out[2 * i + 1] = hex[u[i] & 15];
    }
    out[KQ_MESSAGE_ID_LEN] = 0;
}
