/* SQL text building for the MySQL store. Literals are escaped here, without a connection:
 * the sessions run without NO_BACKSLASH_ESCAPES (pool.c sets that), and the escaping below
 * is the one mysql_real_escape_string applies for ASCII-compatible charsets such as utf8mb4
 * (multi-byte UTF-8 sequences never contain ASCII bytes). Blobs carry the _binary
 * introducer so that arbitrary bytes are never checked as utf8. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "store/mysql/mysql_internal.h"

static bool grow(struct my_sql *q, size_t extra)
{
    if (q->oom)
        return false;
    if (q->len + extra + 1 <= q->cap)
        return true;
    size_t cap = q->cap ? q->cap : 256;
    while (cap < q->len + extra + 1)
        cap *= 2;
    char *p = realloc(q->p, cap);
    if (!p) {
        q->oom = true;
        return false;
    }
    q->p = p;
    q->cap = cap;
    return true;
}

void my_sql_cat(struct my_sql *q, const char *s)
{
    size_t n = strlen(s);
    if (!grow(q, n))
        return;
    memcpy(q->p + q->len, s, n + 1);
    q->len += n;
}

void my_sql_printf(struct my_sql *q, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !grow(q, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(q->p + q->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    q->len += (size_t)n;
}

static void escaped(struct my_sql *q, const char *s, size_t n)
{
    if (!grow(q, 2 * n + 2))
        return;
    char *o = q->p + q->len;
    *o++ = '\'';
    for (size_t i = 0; i < n; i++) {
        char c = s[i], e = 0;
        switch (c) {
        case 0: e = '0'; break;
        case '\n': e = 'n'; break;
        case '\r': e = 'r'; break;
        case '\\': e = '\\'; break;
        case '\'': e = '\''; break;
        case '"': e = '"'; break;
        case '\032': e = 'Z'; break;
        }
        if (e) {
            *o++ = '\\';
            *o++ = e;
        } else {
            *o++ = c;
        }
    }
    *o++ = '\'';
    *o = 0;
    q->len = (size_t)(o - q->p);
}

void my_sql_strn(struct my_sql *q, const char *s, size_t n)
{
    if (!s)
        my_sql_cat(q, "NULL");
    else
        escaped(q, s, n);
}

void my_sql_str(struct my_sql *q, const char *s) { my_sql_strn(q, s, s ? strlen(s) : 0); }

void my_sql_bin(struct my_sql *q, const uint8_t *p, size_t n)
{
    my_sql_cat(q, "_binary");
    escaped(q, p ? (const char *)p : "", p ? n : 0);
}

void my_sql_free(struct my_sql *q)
{
    free(q->p);
    *q = (struct my_sql){0};
}

char *my_sql_take(struct my_sql *q)
{
    char *p = q->oom ? NULL : q->p;
    if (q->oom)
        free(q->p);
    if (!p)
        p = q->oom ? NULL : strdup("");
    *q = (struct my_sql){0};
    return p;
}

char *my_groups_json(const char **g, size_t n, size_t max)
{
    /* drop names from the end until the text fits the varchar(255) column */
    for (size_t keep = n;; keep--) {
        cJSON *a = cJSON_CreateArray();
        for (size_t i = 0; a && i < keep; i++) {
            cJSON *s = cJSON_CreateString(g[i] ? g[i] : "");
            if (!s || !cJSON_AddItemToArray(a, s)) {
                cJSON_Delete(s);
                cJSON_Delete(a);
                a = NULL;
            }
        }
        char *txt = a ? cJSON_PrintUnformatted(a) : NULL;
        cJSON_Delete(a);
        if (!txt)
            return NULL;
        if (strlen(txt) <= max || keep == 0)
            return txt;
        cJSON_free(txt);
    }
}

int my_groups_parse(const char *json, const char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    cJSON *a = json ? cJSON_Parse(json) : NULL;
    if (!cJSON_IsArray(a)) {
        cJSON_Delete(a);
        return 0;
    }
    size_t cnt = 0, bytes = 0;
    cJSON *it;
    cJSON_ArrayForEach(it, a)
    {
        if (cJSON_IsString(it)) {
            cnt++;
            bytes += strlen(it->valuestring) + 1;
        }
    }
    if (cnt == 0) {
        cJSON_Delete(a);
        return 0;
    }
    const char **v = malloc(cnt * sizeof *v + bytes);
    if (!v) {
        cJSON_Delete(a);
        return -ENOMEM;
    }
    char *str = (char *)(v + cnt);
    size_t i = 0;
    cJSON_ArrayForEach(it, a)
    {
        if (!cJSON_IsString(it))
            continue;
        size_t l = strlen(it->valuestring) + 1;
        memcpy(str, it->valuestring, l);
        v[i++] = str;
        str += l;
    }
    cJSON_Delete(a);
    *out = v;
    *n = cnt;
    return 0;
}
