/* Loading the captured frames of the original broker and client (tests/golden/). */
#ifndef KQ_TEST_GOLDEN_H
#define KQ_TEST_GOLDEN_H
#include <stddef.h>
#include <stdint.h>
#include <cjson/cJSON.h>

/* Read tests/golden/NAME (under $KITEQ_SOURCE_DIR) as an array of JSON objects, one per line.
 * Returns a cJSON array (free with cJSON_Delete) or NULL. */
cJSON *golden_load(const char *name);
/* Decode hex (spaces ignored) into a malloc'd buffer; *len gets its size. NULL on bad hex. */
uint8_t *golden_hex(const char *hex, size_t *len);
/* A captured frame of frames.jsonl (its "header_hex" then its "body_hex") in one malloc'd
 * buffer; *len gets its size. NULL on bad hex or a missing field. */
uint8_t *golden_frame(const cJSON *o, size_t *len);
/* Calls fn(frame, len, arg) for every captured whole frame: those of frames.jsonl, then the
 * "frame_hex" of sessions.jsonl. Returns how many, or -1 when a file or a frame cannot be
 * read (after calling fn for the frames before it). */
int golden_for_each_frame(void (*fn)(const uint8_t *frame, size_t len, void *arg), void *arg);
#endif
