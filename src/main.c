/* kiteq: load the config, start the broker on a libuv loop, stop cleanly on SIGTERM/SIGINT;
 * SIGHUP reloads, SIGUSR1 reopens the log file (logrotate). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "broker/broker.h"
#include "config/config.h"
#include "core/log.h"
#include "core/redact.h"
#include "policy_tool.h"

struct app {
    uv_loop_t *loop;
    struct kq_broker *broker;
    uv_signal_t sigterm, sigint, sighup, sigusr1;
    uv_timer_t reload_soon; /* coalesces a storm of HUPs into one reload */
    char *log_file;         /* fixed at start: a reload does not move the log */
    int exit_code;
};

/* Problems come one per line ("FILE: key: reason"): each is printed (to stderr, for --check
 * and a file that does not load) or logged (a start that fails) on its own line, without
 * secrets (kq_log redacts by itself; --check output may end up in a log too). */
static void report_problems(const char *err, bool to_log)
{
    while (*err) {
        size_t n = strcspn(err, "\n");
        char line[2048], clean[2048];
        snprintf(line, sizeof line, "%.*s", (int)n, err);
        if (to_log)
            KQ_ERROR("main", "cannot start: %s", line);
        else
            fprintf(stderr, "kiteq: %s\n", kq_redact(line, clean, sizeof clean));
        err += n + (err[n] == '\n');
    }
}

/* A line tests and scripts wait for: the broker listens and clients can find it. */
static void on_ready(void *ud)
{
    struct app *a = ud;
    KQ_INFO("main", "ready port=%d pid=%d", kq_broker_port(a->broker), (int)getpid());
}

static void on_stopped(void *ud)
{
    struct app *a = ud;
    uv_close((uv_handle_t *)&a->sigterm, NULL);
    uv_close((uv_handle_t *)&a->sigint, NULL);
    uv_close((uv_handle_t *)&a->sighup, NULL);
    uv_close((uv_handle_t *)&a->reload_soon, NULL);
    uv_close((uv_handle_t *)&a->sigusr1, NULL);
    KQ_INFO("main", "stopped");
}

static void on_stop_signal(uv_signal_t *h, int signum)
{
    struct app *a = h->data;
    KQ_INFO("main", "signal=%s: graceful shutdown", signum == SIGTERM ? "TERM" : "INT");
    uv_timer_stop(&a->reload_soon);
    uv_signal_stop(&a->sighup);
    kq_broker_stop(a->broker, on_stopped, a);
}

static void on_reload_soon(uv_timer_t *t)
{
    struct app *a = t->data;
    kq_broker_reload(a->broker);
}

static void on_hup(uv_signal_t *h, int signum)
{
    (void)signum;
    struct app *a = h->data;
    /* The broker runs one reload at a time (built off the loop, swapped in on it). The HUPs
     * of one storm that arrive before the reload starts share it; those arriving during a
     * reload share the next one, which sees the files as they are then. */
    KQ_INFO("main", "signal=HUP: reloading");
    if (!uv_is_active((uv_handle_t *)&a->reload_soon))
        uv_timer_start(&a->reload_soon, on_reload_soon, 0, 0);
}

static void on_usr1(uv_signal_t *h, int signum)
{
    (void)signum;
    struct app *a = h->data;
    int rc = a->log_file ? kq_log_open(a->log_file) : 0;
    if (rc)
        KQ_ERROR("main", "signal=USR1: cannot reopen log file=%s: %s", a->log_file, strerror(-rc));
    else
        KQ_INFO("main", "signal=USR1: log reopened file=%s", a->log_file ? a->log_file : "-");
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc >= 2 && strcmp(argv[1], "policy") == 0) /* kiteq policy check|call ... */
        return kq_policy_tool(argc - 1, argv + 1);
    struct kq_config *cfg = calloc(1, sizeof *cfg);
    char err[8192] = "";
    bool check_only = false;
    if (!cfg)
        return 1;
    int rc = kq_config_from_args(cfg, argc, argv, &check_only, err, sizeof err);
    if (rc == 1) {
        kq_config_free(cfg);
        free(cfg);
        return 0;
    }
    /* --check runs the checks of a start (policies, store, registry, addresses) too */
    if (rc == 0 && check_only)
        rc = kq_broker_preflight(cfg, NULL, err, sizeof err);
    if (rc != 0) {
        report_problems(err, false);
        kq_config_free(cfg);
        free(cfg);
        return 2;
    }
    if (check_only) {
        char db[1024];
        printf("kiteq: configuration OK (cluster %s, bind %s, db %s)\n",
               cfg->cluster_name ? cfg->cluster_name : "-", cfg->bind,
               kq_redact(cfg->db, db, sizeof db));
        kq_config_free(cfg);
        free(cfg);
        return 0;
    }
    enum kq_log_level lvl;
    if (cfg->log_level && kq_log_parse_level(cfg->log_level, &lvl) == 0)
        kq_log_set_level(lvl);
    const char *env_level = getenv("KITEQ_LOG_LEVEL");
    if (env_level && kq_log_parse_level(env_level, &lvl) == 0)
        kq_log_set_level(lvl);

    struct app a = {0};
    if (cfg->log_file) {
        a.log_file = strdup(cfg->log_file);
        if (!a.log_file || (rc = kq_log_open(a.log_file)) != 0) {
            fprintf(stderr, "kiteq: logFile %s: %s\n", cfg->log_file,
                    strerror(a.log_file ? -rc : ENOMEM));
            free(a.log_file);
            kq_config_free(cfg);
            free(cfg);
            return 1;
        }
    }
    a.loop = uv_default_loop();
    rc = kq_broker_start(a.loop, cfg, err, sizeof err, &a.broker);
    if (rc != 0) {
        report_problems(err, true);
        if (a.broker) { /* it got as far as listening: stop it the normal way */
            kq_broker_stop(a.broker, NULL, NULL);
            uv_run(a.loop, UV_RUN_DEFAULT);
            kq_broker_free(a.broker); /* frees cfg too */
        } else {
            kq_config_free(cfg);
            free(cfg);
        }
        free(a.log_file);
        return 1;
    }
    kq_broker_set_args(a.broker, argc, argv);
    uv_signal_init(a.loop, &a.sigterm);
    uv_signal_init(a.loop, &a.sigint);
    uv_signal_init(a.loop, &a.sighup);
    uv_signal_init(a.loop, &a.sigusr1);
    uv_timer_init(a.loop, &a.reload_soon);
    a.reload_soon.data = &a;
    a.sigterm.data = a.sigint.data = a.sighup.data = a.sigusr1.data = &a;
    uv_signal_start(&a.sigterm, on_stop_signal, SIGTERM);
    uv_signal_start(&a.sigint, on_stop_signal, SIGINT);
    uv_signal_start(&a.sighup, on_hup, SIGHUP);
    uv_signal_start(&a.sigusr1, on_usr1, SIGUSR1);
    kq_broker_when_ready(a.broker, on_ready, &a);
    uv_run(a.loop, UV_RUN_DEFAULT);
    kq_broker_free(a.broker); /* owns the config (a reload may have replaced it) */
    uv_loop_close(a.loop);
    free(a.log_file);
    return a.exit_code;
}
