#include "support/golden.h"
#include "support/test_files.h"

#include "core/text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

cJSON *golden_load(const char *name)
{
    char rel[512], path[1024];
    snprintf(rel, sizeof rel, "tests/golden/%s", name);
    test_source_path(path, sizeof path, rel);
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    cJSON *arr = cJSON_CreateArray();
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        cJSON *o = cJSON_Parse(line);
        if (o)
            cJSON_AddItemToArray(arr, o);
    }
    free(line);
    fclose(f);
    return arr;
}

uint8_t *golden_hex(const char *hex, size_t *len)
{
    uint8_t *out = malloc(strlen(hex) / 2 + 1);
    if (!out)
        return NULL;
    size_t n = 0;
    int hi = -1;
    for (const char *p = hex; *p; p++) {
        if (*p == ' ' || *p == '|')
            continue;
        int v = kq_hex_digit(*p);
        if (v < 0) {
            free(out);
            return NULL;
        }
        if (hi < 0) {
            hi = v;
        } else {
            out[n++] = (uint8_t)(hi << 4 | v);
            hi = -1;
        }
    }
    if (hi >= 0) {
        free(out);
        return NULL;
    }
    *len = n;
    return out;
}

uint8_t *golden_frame(const cJSON *o, size_t *len)
{
    const char *hh = cJSON_GetStringValue(cJSON_GetObjectItem(o, "header_hex"));
    const char *bh = cJSON_GetStringValue(cJSON_GetObjectItem(o, "body_hex"));
    size_t hl, bl;
    uint8_t *h = hh ? golden_hex(hh, &hl) : NULL, *b = bh ? golden_hex(bh, &bl) : NULL;
    uint8_t *frame = h && b ? malloc(hl + bl + 1) : NULL;
    if (frame) {
        memcpy(frame, h, hl);
        memcpy(frame + hl, b, bl);
        *len = hl + bl;
    }
    free(h);
    free(b);
    return frame;
}

int golden_for_each_frame(void (*fn)(const uint8_t *frame, size_t len, void *arg), void *arg)
{
    cJSON *frames = golden_load("frames.jsonl"), *sessions = golden_load("sessions.jsonl"), *o;
    int n = frames && sessions ? 0 : -1;
    for (int file = 0; file < 2 && n >= 0; file++) {
        cJSON *list = file == 0 ? frames : sessions;
        cJSON_ArrayForEach(o, list)
        {
            size_t len;
            uint8_t *frame =
                file == 0 ? golden_frame(o, &len)
                          : golden_hex(cJSON_GetStringValue(cJSON_GetObjectItem(o, "frame_hex")),
                                       &len);
            if (!frame) {
                n = -1;
                break;
            }
            fn(frame, len, arg);
            free(frame);
            n++;
        }
    }
    cJSON_Delete(frames);
    cJSON_Delete(sessions);
    return n;
}
