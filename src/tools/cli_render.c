/* kiteq-cli's tables: the admin answers (docs/ADMIN.md "JSON shapes") as a person reads
 * them on a terminal. Only known keys are shown; the JSON (--json, --pretty) has them all. */
#include "tools/cli_render.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tools/cli_groups.h"
#include "tools/common/cli_util.h"

#define PROG "kiteq-cli"

void cli_table_init(struct cli_table *t, int ncols, const char *const *heads, const char *align)
{
    *t = (struct cli_table){.ncols = ncols, .heads = heads, .align = align};
}

void cli_table_add(struct cli_table *t, const char *const *cells)
{
    if (t->rows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        char **c = realloc(t->cells, cap * (size_t)t->ncols * sizeof *c);
        if (!c) {
            fprintf(stderr, PROG ": out of memory (table row left out)\n");
            return;
        }
        t->cells = c;
        t->cap = cap;
    }
    for (int i = 0; i < t->ncols; i++)
        t->cells[t->rows * (size_t)t->ncols + (size_t)i] = strdup(cells[i] ? cells[i] : "");
    t->rows++;
}

static void print_row(const struct cli_table *t, const int *width, const char *const *cells)
{
    int last = t->ncols - 1; /* no padding after the last cell that has text */
    while (last > 0 && (!cells[last] || !*cells[last]))
        last--;
    for (int i = 0; i <= last; i++) {
        const char *c = cells[i] ? cells[i] : "";
        printf(t->align[i] == 'r' ? "%*s" : "%-*s", i == last && t->align[i] != 'r' ? 0 : width[i],
               c);
        fputs(i == last ? "\n" : "  ", stdout);
    }
}

void cli_table_print(struct cli_table *t)
{
    int *width = calloc((size_t)t->ncols, sizeof *width);
    if (!width)
        return;
    for (int i = 0; i < t->ncols; i++)
        width[i] = (int)strlen(t->heads[i]);
    for (size_t r = 0; r < t->rows; r++)
        for (int i = 0; i < t->ncols; i++) {
            const char *c = t->cells[r * (size_t)t->ncols + (size_t)i];
            int w = c ? (int)strlen(c) : 0;
            width[i] = w > width[i] ? w : width[i];
        }
    print_row(t, width, t->heads);
    for (size_t r = 0; r < t->rows; r++)
        print_row(t, width, (const char *const *)&t->cells[r * (size_t)t->ncols]);
    for (size_t k = 0; k < t->rows * (size_t)t->ncols; k++)
        free(t->cells[k]);
    free(t->cells);
    free(width);
    t->cells = NULL;
    t->rows = t->cap = 0;
}

const char *cli_json_str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

double cli_json_num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

void cli_format_ms(char *out, size_t len, double unix_ms)
{
    if (unix_ms <= 0) {
        snprintf(out, len, "-");
        return;
    }
    time_t sec = (time_t)(unix_ms / 1000);
    struct tm tm;
    localtime_r(&sec, &tm);
    size_t n = strftime(out, len, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(out + n, len - n, ".%03d", (int)((long long)unix_ms % 1000));
}

void cli_format_age(char *out, size_t len, double sec)
{
    if (sec <= 0)
        snprintf(out, len, "-");
    else if (sec < 120)
        snprintf(out, len, "%.0fs", sec);
    else if (sec < 7200)
        snprintf(out, len, "%.0fm", sec / 60);
    else
        snprintf(out, len, "%.1fh", sec / 3600);
}

/* A JSON value as a cell: strings as they are, numbers without ".0", arrays of strings
 * joined by ",", anything else as compact JSON. */
static void cell(char *out, size_t len, const cJSON *v)
{
    if (!v || cJSON_IsNull(v)) {
        snprintf(out, len, "-");
    } else if (cJSON_IsString(v)) {
        snprintf(out, len, "%s", v->valuestring);
    } else if (cJSON_IsNumber(v)) {
        snprintf(out, len, "%.15g", v->valuedouble);
    } else if (cJSON_IsBool(v)) {
        snprintf(out, len, "%s", cJSON_IsTrue(v) ? "yes" : "no");
    } else {
        char *s = cJSON_PrintUnformatted(v);
        snprintf(out, len, "%s", s ? s : "?");
        free(s);
    }
}

static const cJSON *item(const cJSON *o, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(o, key);
}

static int unexpected(const char *cmd, const char *what)
{
    fprintf(stderr, PROG " %s: unexpected answer (no %s); try --json\n", cmd, what);
    return CLI_EXIT_FAIL;
}

/* --- stat --------------------------------------------------------------------------------- */

int cli_render_stat(const cJSON *root)
{
    const cJSON *kiteq = item(root, "kiteq"), *broker = item(root, "broker");
    if (!cJSON_IsObject(kiteq) || !cJSON_IsObject(broker))
        return unexpected("stat", "kiteq or broker");
    const cJSON *totals = item(broker, "totals"), *reload = item(broker, "reload");
    char dlq[32], age[32];
    cell(dlq, sizeof dlq, item(broker, "dlq_count"));
    cli_format_age(age, sizeof age, cli_json_num(broker, "uptime_sec"));
    printf("broker %s  up %s  bind %s  store %s  registry %s\n", cli_json_str(broker, "version"),
           age, cli_json_str(broker, "bind"), cli_json_str(broker, "store"),
           cli_json_str(broker, "registry"));
    const char *unavailable = cli_json_str(broker, "store_unavailable");
    if (*unavailable)
        printf("STORE UNAVAILABLE: %s\n", unavailable);
    printf("pending %.0f  dead letters %s  connections %.0f  reload generation %.0f "
           "(failures %.0f)\n",
           cli_json_num(broker, "pending"), dlq, cli_json_num(item(root, "network"), "connections"),
           cli_json_num(reload, "generation"), cli_json_num(reload, "failures"));
    printf("since start:");
    const cJSON *t;
    cJSON_ArrayForEach(t, totals)
    {
        printf(" %s %.0f", t->string, cJSON_IsNumber(t) ? t->valuedouble : 0);
    }
    printf("\n\n");

    static const char *const heads[] = {"TOPIC", "PENDING", "RECEIVED/S", "DELIVERED/S",
                                        "DEAD LETTERS"};
    struct cli_table tab;
    cli_table_init(&tab, 5, heads, "lrrrr");
    const cJSON *topic;
    cJSON_ArrayForEach(topic, item(kiteq, "message_count"))
    {
        char pending[32], rx[32], tx[32], dead[32];
        cell(pending, sizeof pending, topic);
        cell(rx, sizeof rx, item(item(kiteq, "topics_recieve"), topic->string));
        cell(tx, sizeof tx, item(item(kiteq, "topics_deliver"), topic->string));
        cell(dead, sizeof dead, item(item(broker, "dlq_by_topic"), topic->string));
        const char *row[] = {topic->string, pending, rx, tx, dead};
        cli_table_add(&tab, row);
    }
    cli_table_print(&tab);
    printf("\n");
    return cli_groups_table(broker, NULL, NULL);
}

/* --- binds -------------------------------------------------------------------------------- */

int cli_render_binds(const cJSON *root)
{
    const cJSON *bindings = item(root, "bindings");
    if (!cJSON_IsArray(bindings))
        return unexpected("binds", "bindings");
    static const char *const heads[] = {"GROUP", "TOPIC",     "MESSAGE TYPE",
                                        "BIND",  "WATERMARK", "PERSISTENT"};
    static const char *const bind_types[] = {"direct", "regx", "fanout"};
    struct cli_table tab;
    cli_table_init(&tab, 6, heads, "llllrl");
    const cJSON *b;
    cJSON_ArrayForEach(b, bindings)
    {
        char watermark[32], persistent[8];
        int type = (int)cli_json_num(b, "bindType");
        cell(watermark, sizeof watermark, item(b, "watermark"));
        cell(persistent, sizeof persistent, item(b, "persistent"));
        const char *row[] = {cli_json_str(b, "groupId"),
                             cli_json_str(b, "topic"),
                             cli_json_str(b, "messageType"),
                             type >= 0 && type < 3 ? bind_types[type] : "?",
                             watermark,
                             persistent};
        cli_table_add(&tab, row);
    }
    cli_table_print(&tab);
    printf("(binding set generation %.0f)\n", cli_json_num(root, "generation"));
    return CLI_EXIT_OK;
}

/* --- dlq list ----------------------------------------------------------------------------- */

int cli_render_dlq(const cJSON *root)
{
    const cJSON *letters = item(root, "deadLetters");
    if (!cJSON_IsArray(letters))
        return unexpected("dlq", "deadLetters");
    static const char *const heads[] = {"MESSAGE ID", "TOPIC",      "MESSAGE TYPE",
                                        "PUBLISHER",  "DEAD SINCE", "REASON"};
    struct cli_table tab;
    cli_table_init(&tab, 6, heads, "llllll");
    const cJSON *d;
    cJSON_ArrayForEach(d, letters)
    {
        char when[40];
        cli_format_ms(when, sizeof when, cli_json_num(d, "deadTime") * 1000);
        const char *row[] = {cli_json_str(d, "messageId"),
                             cli_json_str(d, "topic"),
                             cli_json_str(d, "messageType"),
                             cli_json_str(d, "publishGroup"),
                             when,
                             cli_json_str(d, "reason")};
        cli_table_add(&tab, row);
    }
    cli_table_print(&tab);
    char count[32];
    cell(count, sizeof count, item(root, "count"));
    printf("(%d shown of %s dead letters", cJSON_GetArraySize(letters), count);
    if (cJSON_IsTrue(item(root, "more")))
        printf("; next page: --after %s", cli_json_str(root, "next"));
    printf(")\n");
    return CLI_EXIT_OK;
}

/* --- msg ---------------------------------------------------------------------------------- */

static bool is_time_key(const char *key)
{
    return !strcmp(key, "at") || !strcmp(key, "nextAttemptMs") || !strcmp(key, "finishedTime");
}

/* An event's keys other than time, event, group and connection, as "key=value ...". */
static void event_detail(char *out, size_t len, const cJSON *e)
{
    size_t n = 0;
    out[0] = 0;
    const cJSON *k;
    cJSON_ArrayForEach(k, e)
    {
        if (!strcmp(k->string, "time") || !strcmp(k->string, "event") ||
            !strcmp(k->string, "group") || !strcmp(k->string, "connection"))
            continue;
        char v[200];
        if (is_time_key(k->string))
            cli_format_ms(v, sizeof v, cJSON_IsNumber(k) ? k->valuedouble : 0);
        else
            cell(v, sizeof v, k);
        int w = snprintf(out + n, len - n, "%s%s=%s", n ? " " : "", k->string, v);
        if (w < 0 || (size_t)w >= len - n)
            break;
        n += (size_t)w;
    }
}

int cli_render_msg(const cJSON *root)
{
    if (!cJSON_IsObject(root))
        return unexpected("msg", "message");
    const cJSON *k;
    cJSON_ArrayForEach(k, root)
    { /* the message: every key but its history */
        if (!strcmp(k->string, "history"))
            continue;
        char v[512];
        if (is_time_key(k->string))
            cli_format_ms(v, sizeof v, cJSON_IsNumber(k) ? k->valuedouble : 0);
        else if (!strcmp(k->string, "expiredTime") || !strcmp(k->string, "deadTime"))
            cli_format_ms(v, sizeof v, cJSON_IsNumber(k) ? k->valuedouble * 1000 : 0);
        else
            cell(v, sizeof v, k);
        printf("%-14s %s\n", k->string, v);
    }
    const cJSON *history = item(root, "history");
    if (!cJSON_IsArray(history)) {
        printf("(no history kept for this message)\n");
        return CLI_EXIT_OK;
    }
    printf("\n");
    static const char *const heads[] = {"TIME", "EVENT", "GROUP", "CONNECTION", "DETAIL"};
    struct cli_table tab;
    cli_table_init(&tab, 5, heads, "lllll");
    const cJSON *e;
    cJSON_ArrayForEach(e, history)
    {
        char when[40], detail[512];
        cli_format_ms(when, sizeof when, cli_json_num(e, "time"));
        event_detail(detail, sizeof detail, e);
        const char *row[] = {when, cli_json_str(e, "event"), cli_json_str(e, "group"),
                             cli_json_str(e, "connection"), detail};
        cli_table_add(&tab, row);
    }
    cli_table_print(&tab);
    return CLI_EXIT_OK;
}
