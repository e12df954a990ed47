#include "support/log_capture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path[64];

void log_capture_begin(void)
{
    strcpy(path, "/tmp/kq-log-XXXXXX");
    int fd = mkstemp(path);
    if (fd >= 0)
        close(fd);
    kq_log_open(fd >= 0 ? path : NULL);
    kq_log_set_level(KQ_LOG_INFO);
}

char *log_capture_end(enum kq_log_level restore)
{
    kq_log_open(NULL);
    kq_log_set_level(restore);
    char *text = NULL;
    size_t cap = 0;
    FILE *f = fopen(path, "r");
    if (!f || getdelim(&text, &cap, '\0', f) < 0) {
        free(text);
        text = strdup("");
    }
    if (f)
        fclose(f);
    unlink(path);
    return text;
}
