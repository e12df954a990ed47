/* The metric list of docs/ADMIN.md against the Grafana dashboard (docs/grafana-kiteq.json),
 * and the checker that keeps /metrics and the doc in step (test_admin_broker and
 * test_mysql_broker scrape real brokers with it): it must catch what it is there for. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "support/metrics_doc.h"

static void test_doc_table(void **state)
{
    (void)state;
    struct doc_family *doc;
    size_t n;
    assert_int_equal(metrics_doc_load(&doc, &n), 0);
    const struct doc_family *f = metrics_doc_find(doc, n, "kiteq_group_backlog");
    assert_non_null(f);
    assert_string_equal(f->type, "gauge");
    assert_string_equal(f->labels, "group,topic");
    assert_string_equal(f->scope, "broker");
    f = metrics_doc_find(doc, n, "kiteq_store_fsync_seconds");
    assert_non_null(f);
    assert_string_equal(f->type, "histogram");
    assert_string_equal(f->scope, "file");
    assert_non_null(f = metrics_doc_find(doc, n, "kiteq_store_reconnects_total"));
    assert_string_equal(f->scope, "mysql");
    for (size_t i = 0; i < n; i++) { /* the conventions */
        const char *t = doc[i].type;
        size_t len = strlen(doc[i].name);
        bool total = len > 6 && !strcmp(doc[i].name + len - 6, "_total");
        if (!strcmp(t, "counter") != total)
            fail_msg("%s (%s): counters and only counters end in _total", doc[i].name, t);
        if (strstr(doc[i].name, "micro") || strstr(doc[i].name, "milli") ||
            strstr(doc[i].name, "_ms") || strstr(doc[i].name, "_kb"))
            fail_msg("%s: not in base units", doc[i].name);
        assert_true(!strcmp(t, "gauge") || !strcmp(t, "counter") || !strcmp(t, "histogram"));
    }
    free(doc);
}

static void test_dashboard_uses_documented_metrics(void **state)
{
    (void)state;
    char *json = metrics_doc_read_source("docs/grafana-kiteq.json");
    assert_non_null(json);
    char problems[4096];
    int n = metrics_doc_check_dashboard(json, problems, sizeof problems);
    if (n)
        fail_msg("%d problems:\n%s", n, problems);
    /* what the dashboard is for */
    const char *wanted[] = {"kiteq_messages_received_total",
                            "kiteq_deliveries_acked_total",
                            "kiteq_group_backlog",
                            "kiteq_group_oldest_seconds",
                            "kiteq_store_fsync_seconds_bucket",
                            "kiteq_hook_errors_total",
                            "kiteq_store_available",
                            NULL};
    for (int i = 0; wanted[i]; i++)
        if (!strstr(json, wanted[i]))
            fail_msg("the dashboard does not show %s", wanted[i]);
    /* and the check fails on a name the doc does not list */
    assert_int_equal(metrics_doc_check_dashboard(
                         "{\"panels\":[{\"targets\":[{\"expr\":\"rate(kiteq_nope_total[5m]) + "
                         "kiteq_store_fsync_seconds_sum\"}]}]}",
                         problems, sizeof problems),
                     1);
    assert_non_null(strstr(problems, "kiteq_nope_total"));
    free(json);
}

/* The checker on made-up scrapes: each fault is found. */
static void test_checker_finds_faults(void **state)
{
    (void)state;
    char problems[4096];
    const char *good = "# TYPE kiteq_connections gauge\nkiteq_connections 1\n"
                       "# TYPE kiteq_group_backlog gauge\n"
                       "kiteq_group_backlog{group=\"a\",topic=\"t\"} 3\n";
    assert_int_equal(metrics_doc_check(good, "file", "", problems, sizeof problems), 0);
    /* interleaved: a sample after another family started */
    const char *interleaved = "# TYPE kiteq_connections gauge\nkiteq_connections 1\n"
                              "# TYPE kiteq_inflight gauge\nkiteq_inflight 0\n"
                              "kiteq_connections 2\n";
    assert_int_equal(metrics_doc_check(interleaved, "file", "", problems, sizeof problems), 1);
    /* wrong type, wrong labels, undocumented, another store's family */
    const char *wrong = "# TYPE kiteq_reload_generation counter\nkiteq_reload_generation 1\n"
                        "# TYPE kiteq_group_backlog gauge\nkiteq_group_backlog{group=\"a\"} 3\n"
                        "# TYPE kiteq_store_fsync_microseconds histogram\n"
                        "kiteq_store_fsync_microseconds_count 0\n"
                        "# TYPE kiteq_store_reconnects_total counter\n"
                        "kiteq_store_reconnects_total 1\n";
    assert_int_equal(metrics_doc_check(wrong, "file", "", problems, sizeof problems), 4);
    assert_non_null(strstr(problems, "kiteq_store_fsync_microseconds"));
    /* a documented family that does not show up */
    assert_true(metrics_doc_check(good, "file", "broker", problems, sizeof problems) > 10);
    assert_non_null(strstr(problems, "kiteq_hook_calls_total: documented"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_doc_table),
        cmocka_unit_test(test_dashboard_uses_documented_metrics),
        cmocka_unit_test(test_checker_finds_faults),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
