#include "tools/common/cli_util.h"

#include "core/text.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

int cli_parse_long(const char *prog, const char *opt, const char *s, long min, long max,
                   long *out)
{
    char *end = NULL;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || v < min || v > max) {
        fprintf(stderr, "%s: bad value for --%s: '%s' (expected an integer in %ld..%ld)\n", prog,
                opt, s ? s : "", min, max);
        return -EINVAL;
    }
    *out = v;
    return 0;
}

bool cli_is_printable_utf8(const uint8_t *p, size_t n) { return kq_text_printable(p, n); }

char *cli_base64(const uint8_t *p, size_t n) { return kq_base64(p, n); }
