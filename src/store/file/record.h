/* Record framing and payload codecs of the file store (layout in docs/STORAGE.md).
 *
 *   magic u32 | crc32c u32 | len u32 | type u8 | seq u64 | payload[len]
 *
 * All integers little-endian; the CRC covers len, type, seq and the payload. */
#ifndef KQ_STORE_FILE_RECORD_H
#define KQ_STORE_FILE_RECORD_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "store/dlq_groups.h"
#include "store/store.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the file store encodes with memcpy and assumes a little-endian host"
#endif

#define FS_MAGIC 0x3151454Bu /* "KEQ1" as bytes on disk */
#define FS_HDR 21u
#define FS_MAX_PAYLOAD (32u << 20) /* bodies are <= 2 MiB; anything bigger is garbage */

enum fs_rtype {
    FS_SAVE = 1,
    FS_COMMIT = 2,
    FS_STATE = 3,
    FS_REMOVE = 4,
    FS_DEAD = 5,
    FS_DLQ_ADD = 16,        /* dlq.log only; written before the groups were recorded */
    FS_DLQ_DEL = 17,        /* dlq.log only */
    FS_DLQ_ADD_GROUPS = 18, /* dlq.log only: DLQ_ADD with the groups it failed for */
};

struct fs_rec {
    uint8_t type;
    uint64_t seq;
    const uint8_t *payload;
    uint32_t len;
};

enum fs_parse { FS_REC_OK, FS_REC_SHORT, FS_REC_BAD };

/* Validate the record at p given `avail` bytes: FS_REC_OK (r filled, *total = its size),
 * FS_REC_SHORT (not enough bytes yet; *total = bytes needed, 0 if unknown) or FS_REC_BAD. */
enum fs_parse fs_rec_parse(const uint8_t *p, size_t avail, struct fs_rec *r, size_t *total);

/* Encoding: fs_rec_begin reserves the header, the caller appends the payload with the
 * fs_put_* helpers, fs_rec_end fills length and CRC. Return 0 or -ENOMEM / -EINVAL. */
int fs_rec_begin(struct kq_buf *b, uint8_t type, uint64_t seq, size_t *start);
int fs_rec_end(struct kq_buf *b, size_t start);

int fs_put_id(struct kq_buf *b, const char *id);
int fs_put_msg(struct kq_buf *b, const struct kq_stored_msg *m, uint64_t orig_seq);
int fs_put_state_body(struct kq_buf *b, const struct kq_delivery_state *st);
/* A DLQ_ADD_GROUPS payload, or a DLQ_ADD one when groups is NULL. */
int fs_put_dead(struct kq_buf *b, const struct kq_stored_msg *m, const char *reason,
                int64_t dead_time, const struct kq_dlq_groups *groups);

/* Decoding: pointers borrow the payload (strings are stored NUL-terminated). 0 or -EINVAL. */
int fs_get_id(const uint8_t *p, size_t n, char id[KQ_ID_LEN + 1]);
/* orig_seq may be NULL. */
int fs_get_msg(const uint8_t *p, size_t n, struct kq_stored_msg *m, uint64_t *orig_seq);
/* The group arrays are malloc'ed; release with fs_state_free(). */
int fs_get_state_body(const uint8_t *p, size_t n, struct kq_delivery_state *st);
void fs_state_free(struct kq_delivery_state *st);
/* A DLQ_ADD or DLQ_ADD_GROUPS payload (type); the group arrays go into gb (NULL: groups
 * not read). */
int fs_get_dead(uint8_t type, const uint8_t *p, size_t n, struct kq_dead_letter *d,
                struct kq_dlq_groups_buf *gb);

/* Copy a message id into a zero-padded key; false if empty or longer than KQ_ID_LEN. */
bool fs_id_key(const char *id, char key[KQ_ID_LEN + 1]);
#endif
