#include "tools/common/cli_util.h"

#include "core/text.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_parse_long(const char *prog, const char *opt, const char *s, long min, long max, long *out)
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

bool cli_is_hostport(const char *s)
{
    const char *colon = s ? strrchr(s, ':') : NULL;
    if (!colon || colon == s)
        return false;
    char *end = NULL;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    return colon[1] && !*end && !errno && port >= 1 && port <= 65535;
}

bool cli_is_printable_utf8(const uint8_t *p, size_t n) { return kq_text_printable(p, n); }

char *cli_base64(const uint8_t *p, size_t n) { return kq_base64(p, n); }

void cli_block_stop_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, set, NULL);
    signal(SIGPIPE, SIG_IGN);
}
