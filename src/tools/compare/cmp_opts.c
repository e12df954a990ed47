/* Command-line options of the comparison load generators (see cmp.h). */
#include "tools/compare/cmp.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/common/cli_util.h"

static const char HELP[] =
    "Options (as kiteq-bench's where they mean the same):\n"
    "  --server HOST:PORT      server address (default 127.0.0.1:%ld)\n"
    "  --consumer-groups A,B   consumer groups, each receiving every message (default s-g1)\n"
    "  --producers N           producer connections (default 1)\n"
    "  --inflight N            unconfirmed messages per producer (default 1: wait for each)\n"
    "  --consumers N           consumer connections per group (default 1)\n"
    "  --prefetch N            messages a consumer may hold unacked (default 256)\n"
    "  --size BYTES            body size, at least 24 (default 1024)\n"
    "  --count N | --duration SEC   messages in total (default 100000) or publish time\n"
    "  --rate MSG/S            fixed total rate; latencies count from the scheduled time\n"
    "  --warmup-sec SEC        leave the first SEC seconds out of latency and throughput\n"
    "  --drain SEC             wait up to SEC for deliveries after publishing (default 10)\n"
    "  --server-pid PID        report the server's CPU per message and RSS (/proc/PID)\n"
    "  --json                  one JSON line on stdout (kiteq-bench's fields; else indented)\n"
    "  --quiet                 no per-error messages\n"
    "Ctrl-C stops publishing and drains (a second one skips the drain), prints the summary and\n"
    "ends the tool by SIGINT, so that a calling script stops too.\n"
    "Exit: 0 ok; 1 lost messages or refused publishes; 2 usage; 3 connect/protocol error.\n";

int cmp_parse_opts(int argc, char **argv, const struct cmp_driver *d, struct cmp_opts *o)
{
    enum {
        O_SERVER = 1000,
        O_CG,
        O_PROD,
        O_INFL,
        O_CONS,
        O_PREF,
        O_SIZE,
        O_COUNT,
        O_DUR,
        O_RATE,
        O_WARM,
        O_DRAIN,
        O_PID,
        O_JSON,
        O_QUIET
    };
    static const struct option lo[] = {
        {"server", required_argument, NULL, O_SERVER},
        {"broker", required_argument, NULL, O_SERVER},
        {"consumer-groups", required_argument, NULL, O_CG},
        {"producers", required_argument, NULL, O_PROD},
        {"inflight", required_argument, NULL, O_INFL},
        {"consumers", required_argument, NULL, O_CONS},
        {"prefetch", required_argument, NULL, O_PREF},
        {"size", required_argument, NULL, O_SIZE},
        {"count", required_argument, NULL, O_COUNT},
        {"duration", required_argument, NULL, O_DUR},
        {"rate", required_argument, NULL, O_RATE},
        {"warmup-sec", required_argument, NULL, O_WARM},
        {"drain", required_argument, NULL, O_DRAIN},
        {"server-pid", required_argument, NULL, O_PID},
        {"broker-pid", required_argument, NULL, O_PID},
        {"json", no_argument, NULL, O_JSON},
        {"quiet", no_argument, NULL, O_QUIET},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    static char def_server[64];
    snprintf(def_server, sizeof def_server, "127.0.0.1:%ld", d->default_port);
    *o = (struct cmp_opts){.server = def_server,
                           .cgroups = {"s-g1"},
                           .ncgroups = 1,
                           .producers = 1,
                           .inflight = 1,
                           .consumers = 1,
                           .prefetch = 256,
                           .size = 1024,
                           .count = -1,
                           .drain = 10};
    const char *P = d->prog;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        int bad = 0;
        switch (opt) {
        case 'h':
            printf("usage: %s [options]\n%s\n\n", P, d->about);
            printf(HELP, d->default_port);
            return 1;
        case O_SERVER: o->server = optarg; break;
        case O_CG:
            o->ncgroups = 0;
            for (char *sv = NULL, *t = strtok_r(optarg, ",", &sv); t; t = strtok_r(NULL, ",", &sv))
                if (o->ncgroups < CMP_MAX_GROUPS)
                    o->cgroups[o->ncgroups++] = t;
            bad = o->ncgroups == 0;
            break;
        case O_PROD: bad = cli_parse_long(P, "producers", optarg, 1, 4096, &o->producers); break;
        case O_INFL: bad = cli_parse_long(P, "inflight", optarg, 1, 1000000, &o->inflight); break;
        case O_CONS: bad = cli_parse_long(P, "consumers", optarg, 1, 4096, &o->consumers); break;
        case O_PREF: bad = cli_parse_long(P, "prefetch", optarg, 1, 65535, &o->prefetch); break;
        case O_SIZE: bad = cli_parse_long(P, "size", optarg, 24, 16 << 20, &o->size); break;
        case O_COUNT: bad = cli_parse_long(P, "count", optarg, 1, 1L << 40, &o->count); break;
        case O_DUR: bad = cli_parse_long(P, "duration", optarg, 1, 86400, &o->duration); break;
        case O_RATE: bad = cli_parse_long(P, "rate", optarg, 1, 100000000, &o->rate); break;
        case O_WARM: bad = cli_parse_long(P, "warmup-sec", optarg, 0, 3600, &o->warmup); break;
        case O_DRAIN: bad = cli_parse_long(P, "drain", optarg, 0, 86400, &o->drain); break;
        case O_PID:
            bad = cli_parse_long(P, "server-pid", optarg, 1, 1L << 30, &o->server_pid);
            break;
        case O_JSON: o->json = true; break;
        case O_QUIET: o->quiet = true; break;
        default: bad = 1; break;
        }
        if (bad)
            return -EINVAL;
    }
    const char *colon = strrchr(o->server, ':');
    const char *err =
        optind < argc                 ? "unexpected argument"
        : o->count > 0 && o->duration ? "give --count or --duration, not both"
        : !colon || colon == o->server || (size_t)(colon - o->server) >= sizeof o->host
            ? "--server wants HOST:PORT"
            : NULL;
    if (!err) {
        memcpy(o->host, o->server, (size_t)(colon - o->server));
        o->port = atoi(colon + 1);
        if (o->port <= 0 || o->port > 65535)
            err = "--server wants HOST:PORT";
    }
    if (err) {
        fprintf(stderr, "%s: %s (see '%s --help')\n", P, err, P);
        return -EINVAL;
    }
    if (o->count < 0 && !o->duration)
        o->count = 100000;
    return 0;
}
