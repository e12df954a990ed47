#include "tools/bench/procstat.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int bench_procstat_read(pid_t pid, struct bench_procstat *out)
{
    char path[64], buf[4096];
    memset(out, 0, sizeof *out);
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -errno;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    /* comm (field 2) may hold spaces and parentheses: fields resume after the last ')'.
     * After it come state (3) ... utime (14) and stime (15). */
    char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    if (!p ||
        sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -EINVAL;
    long tck = sysconf(_SC_CLK_TCK);
    out->cpu_sec = (double)(ut + st) / (double)(tck > 0 ? tck : 100);

    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    if (!f)
        return -errno;
    while (fgets(buf, sizeof buf, f)) {
        if (!strncmp(buf, "VmRSS:", 6))
            out->rss_kb = strtol(buf + 6, NULL, 10);
        else if (!strncmp(buf, "VmHWM:", 6))
            out->hwm_kb = strtol(buf + 6, NULL, 10);
    }
    fclose(f);
    return 0;
}
