#include "support/metrics_doc.h"
#include "support/test_files.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

char *metrics_doc_read_source(const char *rel)
{
    char path[1024];
    return test_read_file(test_source_path(path, sizeof path, rel));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Label names (in place, at most 16) sorted and joined by ',' into out. */
static void join_sorted(char **names, size_t n, char *out, size_t len)
{
    qsort(names, n, sizeof *names, cmp_str);
    out[0] = '\0';
    for (size_t i = 0; i < n; i++)
        snprintf(out + strlen(out), len - strlen(out), "%s%s", i ? "," : "", names[i]);
}

/* "group, topic" (a table cell, spaces and backquotes allowed) -> "group,topic". */
static void normalise_labels(const char *cell, char *out, size_t len)
{
    char buf[256], *names[16];
    size_t n = 0;
    snprintf(buf, sizeof buf, "%s", cell);
    char *save;
    for (char *tok = strtok_r(buf, ", `", &save); tok && n < 16; tok = strtok_r(NULL, ", `", &save))
        names[n++] = tok;
    join_sorted(names, n, out, len);
}

static void trim(char *s)
{
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    size_t k = strspn(s, " \t");
    memmove(s, s + k, strlen(s + k) + 1);
}

int metrics_doc_load(struct doc_family **out, size_t *n)
{
    char *doc = metrics_doc_read_source("docs/ADMIN.md");
    if (!doc)
        return -1;
    char *sec = strstr(doc, "\n## Metrics\n");
    char *end = sec ? strstr(sec + 1, "\n## ") : NULL;
    if (end)
        *end = '\0';
    size_t cap = 128;
    struct doc_family *v = calloc(cap, sizeof *v);
    *n = 0;
    const char *scope = "broker";
    char *save;
    for (char *line = sec ? strtok_r(sec + 1, "\n", &save) : NULL; line;
         line = strtok_r(NULL, "\n", &save)) {
        if (!strncmp(line, "### ", 4))
            scope = strstr(line, "File store")    ? "file"
                    : strstr(line, "MySQL store") ? "mysql"
                                                  : "broker";
        if (strncmp(line, "| `kiteq_", 9) != 0 || *n == cap)
            continue;
        char cells[3][256] = {{0}};
        const char *p = line + 1;
        for (int c = 0; c < 3 && p; c++) {
            const char *bar = strchr(p, '|');
            if (!bar)
                break;
            snprintf(cells[c], sizeof cells[c], "%.*s", (int)(bar - p), p);
            trim(cells[c]);
            p = bar + 1;
        }
        struct doc_family *f = &v[(*n)++];
        snprintf(f->name, sizeof f->name, "%.*s", (int)strcspn(cells[0] + 1, "`"), cells[0] + 1);
        snprintf(f->type, sizeof f->type, "%.15s", cells[1]);
        normalise_labels(cells[2], f->labels, sizeof f->labels);
        snprintf(f->scope, sizeof f->scope, "%s", scope);
    }
    free(doc);
    *out = v;
    return *n ? 0 : -1;
}

const struct doc_family *metrics_doc_find(const struct doc_family *v, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(v[i].name, name))
            return &v[i];
    return NULL;
}

__attribute__((format(printf, 3, 4))) static int problem(char *out, size_t len, const char *fmt,
                                                         ...)
{
    size_t used = strlen(out);
    va_list ap;
    va_start(ap, fmt);
    if (used < len)
        vsnprintf(out + used, len - used, fmt, ap);
    va_end(ap);
    used = strlen(out);
    if (used + 1 < len)
        strcat(out, "\n");
    return 1;
}

/* The label names of a sample line ("name{a=\"x\",le=\"1\"} v"), le left out. */
static void sample_labels(const char *line, char *out, size_t len)
{
    char *names[16];
    char buf[16][64];
    size_t n = 0;
    const char *p = strchr(line, '{');
    const char *stop = strchr(line, ' ');
    while (p && (!stop || p < stop) && *p != '}' && n < 16) {
        p++;
        size_t k = strcspn(p, "=");
        snprintf(buf[n], sizeof buf[n], "%.*s", (int)k, p);
        p += k + 2; /* ="  */
        while (*p && *p != '"')
            p += *p == '\\' ? 2 : 1;
        p++; /* closing quote: ',' or '}' follows */
        if (strcmp(buf[n], "le") != 0) {
            names[n] = buf[n];
            n++;
        }
        if (*p != ',')
            break;
    }
    join_sorted(names, n, out, len);
}

static bool in_list(const char *list, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = list; (p = strstr(p, word)); p += n)
        if ((p == list || p[-1] == ',') && (p[n] == ',' || p[n] == '\0'))
            return true;
    return false;
}

int metrics_doc_check(const char *text, const char *store, const char *must_appear, char *out,
                      size_t len)
{
    struct doc_family *doc;
    size_t n_doc;
    out[0] = '\0';
    if (metrics_doc_load(&doc, &n_doc))
        return problem(out, len, "docs/ADMIN.md: no metric table under ## Metrics");
    bool *seen = calloc(n_doc, sizeof *seen);
    int bad = 0;
    char *copy = strdup(text);
    const struct doc_family *cur = NULL;
    char cur_name[96] = "", cur_type[16] = "";
    char *save;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (!strncmp(line, "# HELP ", 7))
            continue;
        if (!strncmp(line, "# TYPE ", 7)) {
            sscanf(line + 7, "%95s %15s", cur_name, cur_type);
            cur = metrics_doc_find(doc, n_doc, cur_name);
            if (!cur) {
                bad += problem(out, len, "%s (%s): not in docs/ADMIN.md", cur_name, cur_type);
                continue;
            }
            if (seen[cur - doc])
                bad += problem(out, len, "%s: TYPE twice (family not in one block)", cur_name);
            seen[cur - doc] = true;
            if (strcmp(cur->type, cur_type))
                bad +=
                    problem(out, len, "%s: type %s, documented %s", cur_name, cur_type, cur->type);
            if (strcmp(cur->scope, "broker") && strcmp(cur->scope, store))
                bad +=
                    problem(out, len, "%s: documented for the %s store only", cur_name, cur->scope);
            continue;
        }
        size_t k = strcspn(line, "{ ");
        bool ours = k == strlen(cur_name) && !strncmp(line, cur_name, k);
        if (!ours && !strcmp(cur_type, "histogram"))
            for (const char *suf = "_bucket\0_sum\0_count\0"; *suf; suf += strlen(suf) + 1)
                ours |= k == strlen(cur_name) + strlen(suf) &&
                        !strncmp(line, cur_name, strlen(cur_name)) &&
                        !strncmp(line + strlen(cur_name), suf, strlen(suf));
        if (!ours) {
            bad += problem(out, len, "sample outside its family's block: %.80s", line);
            continue;
        }
        char labels[96];
        sample_labels(line, labels, sizeof labels);
        if (cur && strcmp(labels, cur->labels))
            bad += problem(out, len, "%s: labels {%s}, documented {%s}", cur_name, labels,
                           cur->labels);
    }
    for (size_t i = 0; i < n_doc; i++)
        if (!seen[i] && in_list(must_appear, doc[i].scope))
            bad += problem(out, len, "%s: documented (%s) but not in /metrics", doc[i].name,
                           doc[i].scope);
    free(copy);
    free(seen);
    free(doc);
    return bad;
}

static int check_expr(const char *expr, const struct doc_family *doc, size_t n_doc, char *out,
                      size_t len)
{
    int bad = 0;
    for (const char *p = expr; (p = strstr(p, "kiteq_"));) {
        size_t k = strspn(p, "abcdefghijklmnopqrstuvwxyz0123456789_");
        char name[96];
        snprintf(name, sizeof name, "%.*s", (int)k, p);
        p += k;
        if (metrics_doc_find(doc, n_doc, name))
            continue;
        bool ok = false;
        for (const char *suf = "_bucket\0_sum\0_count\0"; *suf && !ok; suf += strlen(suf) + 1) {
            size_t ls = strlen(suf), ln = strlen(name);
            if (ln > ls && !strcmp(name + ln - ls, suf)) {
                char base[96];
                snprintf(base, sizeof base, "%.*s", (int)(ln - ls), name);
                const struct doc_family *f = metrics_doc_find(doc, n_doc, base);
                ok = f && !strcmp(f->type, "histogram");
            }
        }
        if (!ok)
            bad += problem(out, len, "dashboard uses %s: not in docs/ADMIN.md", name);
    }
    return bad;
}

static int walk(const cJSON *j, const struct doc_family *doc, size_t n_doc, char *out, size_t len,
                int *exprs)
{
    int bad = 0;
    for (const cJSON *c = j ? j->child : NULL; c; c = c->next) {
        if (cJSON_IsString(c) && c->string &&
            (!strcmp(c->string, "expr") || !strcmp(c->string, "definition"))) {
            (*exprs)++;
            bad += check_expr(c->valuestring, doc, n_doc, out, len);
        }
        bad += walk(c, doc, n_doc, out, len, exprs);
    }
    return bad;
}

int metrics_doc_check_dashboard(const char *json, char *out, size_t len)
{
    out[0] = '\0';
    struct doc_family *doc;
    size_t n_doc;
    if (metrics_doc_load(&doc, &n_doc))
        return problem(out, len, "docs/ADMIN.md: no metric table under ## Metrics");
    cJSON *j = cJSON_Parse(json);
    int exprs = 0,
        bad = j ? walk(j, doc, n_doc, out, len, &exprs) : problem(out, len, "dashboard: not JSON");
    if (j && exprs == 0)
        bad += problem(out, len, "dashboard: no queries");
    cJSON_Delete(j);
    free(doc);
    return bad;
}
