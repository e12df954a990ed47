/* bench/mysql_save: acked saves per second of the MySQL store with many saves in flight
 * (moved out of test_store_mysql: a throughput figure is no test on a shared machine).
 * bench/mysql-save starts a private MariaDB and runs it; by hand, against a database whose
 * schema `kiteq-cli mysql init --shardnum 4` made:
 *
 *   build/bench_mysql_save 'mysql://127.0.0.1:PORT?db=kite&username=U&password=P&shardnum=4&maxConn=4' [TOTAL]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "core/clock.h"
#include "core/log.h"
#include "store/mysql/mysql_store.h"
#include "store/store.h"

struct saves {
    int done, ok;
};

static void on_saved(void *ud, int status)
{
    struct saves *w = ud;
    w->done++;
    w->ok += status == 0;
}

static const uint8_t HEADER[] = {0x0a, 0x02, 'h', 0}; /* stored as is: any bytes do */

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_mysql_save MYSQL_URI [TOTAL]\n");
        return 2;
    }
    const int total = argc > 2 ? atoi(argv[2]) : 20000, window = 2000;
    kq_log_set_level(KQ_LOG_ERROR);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct kq_store *s = NULL;
    char err[256];
    if (total <= 0 || kq_store_open(&loop, argv[1], &s, err, sizeof err)) {
        fprintf(stderr, "bench_mysql_save: %s\n", total <= 0 ? "TOTAL must be > 0" : err);
        return 1;
    }
    uint8_t body[512];
    memset(body, 'b', sizeof body);
    struct saves w = {0};
    uint64_t t0 = kq_mono_us();
    for (int sent = 0; w.done < total;) {
        while (sent < total && sent - w.done < window) {
            struct kq_stored_msg m = {.cmd = 0x11,
                                      .topic = "bench",
                                      .message_type = "pay-succ",
                                      .publish_group = "p-trade",
                                      .commit = true,
                                      .publish_time = kq_now_sec(),
                                      .expired_time = kq_now_sec() + 3600,
                                      .deliver_limit = 10,
                                      .header = HEADER,
                                      .header_len = sizeof HEADER,
                                      .body = body,
                                      .body_len = sizeof body};
            snprintf(m.id, sizeof m.id, "%08x%024x", (unsigned)getpid(), (unsigned)sent);
            if (s->ops->save(s, &m, on_saved, &w)) {
                fprintf(stderr, "bench_mysql_save: save %d refused\n", sent);
                return 1;
            }
            sent++;
        }
        uv_run(&loop, UV_RUN_ONCE);
    }
    double sec = (double)(kq_mono_us() - t0) / 1e6;
    struct kq_mysql_stats ms;
    kq_mysql_store_stats(s, &ms);
    printf("mysql store: %d saves (%d acked, 512 B body, %d in flight) in %.2f s = %.0f/s, "
           "%llu transactions\n",
           total, w.ok, window, sec, total / sec, (unsigned long long)ms.save_batches);
    s->ops->close(s);
    uv_run(&loop, UV_RUN_NOWAIT);
    return w.ok == total ? 0 : 1;
}
