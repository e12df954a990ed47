/* MySQL store: its counters through the store interface (kq_store_ops.stats) for /metrics. */
#include "store/mysql/mysql_internal.h"

static void counter(kq_store_stat_cb cb, void *ud, const char *name, const char *help, uint64_t v)
{
    kq_store_stat_value(cb, ud, KQ_STORE_COUNTER, name, help, (double)v);
}

void my_stats(struct kq_store *base, kq_store_stat_cb cb, void *ud)
{
    struct kq_mysql_stats st;
    if (kq_mysql_store_stats(base, &st) != 0)
        return;
    counter(cb, ud, "saves_total", "Saves the MySQL server confirmed.", st.saves_ok);
    counter(cb, ud, "save_failures_total", "Saves that failed (the producer got status false).",
            st.saves_failed);
    counter(cb, ud, "save_transactions_total", "Transactions that carried saves.", st.save_batches);
    counter(cb, ud, "flushes_total", "Batches of updates, commits and deletes written.",
            st.flushes);
    counter(cb, ud, "flush_failures_total",
            "Batches of updates, commits and deletes that "
            "failed.",
            st.flush_failures);
    counter(cb, ud, "reconnects_total",
            "Connections the store's workers made to the MySQL "
            "server (the first ones included).",
            st.reconnects);
    counter(cb, ud, "recover_dead_lettered_total",
            "Expired or over-limit messages start-up "
            "recovery moved to the dead-letter table.",
            st.moved_to_dlq);
}
