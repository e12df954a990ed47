/* Admin routing: the request target (percent-decoded path and query), the admin token of
 * the mutating routes, the parameters of each route, and the call of its handler. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "admin/internal.h"
#include "core/log.h"
#include "core/text.h"

#define MAX_PARAM 512 /* a decoded path or query value */

enum route_id {
    R_STAT,
    R_BINDS,
    R_METRICS,
    R_MSG,
    R_DLQ,
    R_DLQ_REQUEUE,
    R_DLQ_PURGE,
    R_RELOAD,
    R_GROUPS,
    R_GROUPS_PURGE,
    R_DLQ_SHOW,
};

static const struct route {
    const char *path;
    bool prefix; /* path is a prefix; the rest is the argument (/msg/<id>) */
    bool post;   /* POST only (and the token when one is set); otherwise GET and HEAD */
    enum route_id id;
} routes[] = {
    {"/stat", false, false, R_STAT},
    {"/binds", false, false, R_BINDS},
    {"/metrics", false, false, R_METRICS},
    {"/msg/", true, false, R_MSG},
    {"/dlq", false, false, R_DLQ},
    {"/dlq/requeue", false, true, R_DLQ_REQUEUE},
    {"/dlq/purge", false, true, R_DLQ_PURGE},
    {"/reload", false, true, R_RELOAD},
    {"/groups", false, false, R_GROUPS},
    {"/groups/purge", false, true, R_GROUPS_PURGE},
    {"/dlq/", true, false, R_DLQ_SHOW}, /* after /dlq/requeue and /dlq/purge */
};

/* Percent-decode s[0..n) into out (NUL-terminated); '+' is a space when plus is set.
 * Returns 0, or -1 for a bad escape, an embedded NUL or an over-long result. */
static int url_decode(const char *s, size_t n, bool plus, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '%') {
            if (i + 2 >= n)
                return -1;
            int h = kq_hex_digit(s[i + 1]), l = kq_hex_digit(s[i + 2]);
            if (h < 0 || l < 0 || (h == 0 && l == 0))
                return -1;
            ch = (char)(h << 4 | l);
            i += 2;
        } else if (ch == '+' && plus) {
            ch = ' ';
        }
        if (o + 1 >= outlen)
            return -1;
        out[o++] = ch;
    }
    out[o] = 0;
    return 0;
}

/* Find `name` in the query string q[0..n). Returns 1 and the decoded value, 0 when absent,
 * -1 when the value cannot be decoded. */
static int query_get(const char *q, size_t n, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    const char *end = q + n;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(pe - q));
        const char *ke = eq ? eq : pe;
        if ((size_t)(ke - q) == nl && memcmp(q, name, nl) == 0) {
            const char *v = eq ? eq + 1 : pe;
            return url_decode(v, (size_t)(pe - v), true, out, outlen) ? -1 : 1;
        }
        q = pe + 1;
    }
    return 0;
}

/* Same cost whatever the first differing byte: the token cannot be found byte by byte. */
static bool same_secret(const char *a, size_t an, const char *b, size_t bn)
{
    unsigned char diff = an != bn;
    for (size_t i = 0; i < an && i < bn; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

/* A mutating request (every POST route) needs "Authorization: Bearer <token>" when a token
 * is set. Returns 0, or 401 (no credentials) / 403 (wrong ones) with *msg. */
static int check_token(const struct kq_admin *a, const struct admin_request *rq, const char **msg)
{
    if (!a->token)
        return 0;
    const char *v = rq->auth;
    if (strncasecmp(v, "Bearer ", 7) != 0) {
        *msg = "admin token required (Authorization: Bearer <adminToken>)";
        return 401;
    }
    v += 7;
    while (*v == ' ')
        v++;
    size_t vn = rq->auth_too_long ? 0 : strlen(v);
    while (vn && v[vn - 1] == ' ')
        vn--;
    if (!same_secret(v, vn, a->token, strlen(a->token))) {
        KQ_LOG_RATELIMITED(KQ_LOG_WARN, ADMIN_MOD, "refused a request with a wrong admin token");
        *msg = "wrong admin token";
        return 403;
    }
    return 0;
}

static int dlq_list(struct kq_admin *a, struct kq_admin_req *r, const char *q, size_t qn,
                    const char **msg)
{
    char lim[32], topic[MAX_PARAM], after[KQ_ADMIN_CURSOR_MAX];
    long limit = KQ_ADMIN_DLQ_DEFAULT_LIMIT;
    int got;
    if ((got = query_get(q, qn, "limit", lim, sizeof lim)) != 0) {
        char *end;
        errno = 0;
        limit = got > 0 ? strtol(lim, &end, 10) : -1;
        if (got < 0 || errno || *end || end == lim || limit < 1 || limit > KQ_ADMIN_DLQ_MAX_LIMIT) {
            *msg = "limit must be an integer in 1..1000 (page on with after=<next>)";
            return 400;
        }
    }
    if ((got = query_get(q, qn, "topic", topic, sizeof topic)) < 0) {
        *msg = "bad topic";
        return 400;
    }
    int has_after = query_get(q, qn, "after", after, sizeof after);
    if (has_after < 0) {
        *msg = "bad after (want the \"next\" of the previous page)";
        return 400;
    }
    if (!a->h.dlq_list)
        return 501;
    return a->h.dlq_list(a->ud, r, got > 0 && *topic ? topic : NULL, has_after ? after : "",
                         (size_t)limit, &r->body);
}

/* POST /groups/purge?group=G&topic=T: both required, so that nothing is purged by a
 * forgotten parameter. */
static int groups_purge(struct kq_admin *a, struct kq_admin_req *r, const char *q, size_t qn,
                        const char **msg)
{
    char group[MAX_PARAM], topic[MAX_PARAM];
    if (query_get(q, qn, "group", group, sizeof group) != 1 || !*group ||
        query_get(q, qn, "topic", topic, sizeof topic) != 1 || !*topic) {
        *msg = "group and topic required (the consumer group, and the topic whose backlog "
               "it drops)";
        return 400;
    }
    return a->h.groups_purge ? a->h.groups_purge(a->ud, r, group, topic, &r->body) : 501;
}

/* POST /dlq/requeue?id=ID[&groups=G1,G2]: only to those groups (else to the groups each
 * dead letter failed for). */
static int dlq_requeue(struct kq_admin *a, struct kq_admin_req *r, const char *id, const char *q,
                       size_t qn, const char **msg)
{
    char groups[MAX_PARAM];
    int got = query_get(q, qn, "groups", groups, sizeof groups);
    if (got < 0 || (got > 0 && !*groups)) {
        *msg = "bad groups (a comma-separated list of consumer groups)";
        return 400;
    }
    return a->h.dlq_requeue ? a->h.dlq_requeue(a->ud, r, id, got > 0 ? groups : NULL, &r->body)
                            : 501;
}

/* Run the route's handler. */
static int run(struct kq_admin *a, enum route_id id, const char *arg, const char *q, size_t qn,
               struct kq_admin_req *r, const char **msg)
{
    const struct kq_admin_handlers *h = &a->h;
    char p1[MAX_PARAM];
    switch (id) {
    case R_STAT: return h->stat ? h->stat(a->ud, &r->body) : 501;
    case R_BINDS: return h->binds ? h->binds(a->ud, &r->body) : 501;
    case R_METRICS: return h->metrics ? h->metrics(a->ud, &r->body) : 501;
    case R_RELOAD: return h->reload ? h->reload(a->ud, r, &r->body) : 501;
    case R_MSG:
        if (!*arg) {
            *msg = "missing message id";
            return 400;
        }
        return h->msg ? h->msg(a->ud, r, arg, &r->body) : 501;
    case R_DLQ: return dlq_list(a, r, q, qn, msg);
    case R_GROUPS: return h->groups ? h->groups(a->ud, &r->body) : 501;
    case R_GROUPS_PURGE: return groups_purge(a, r, q, qn, msg);
    case R_DLQ_REQUEUE:
        if (query_get(q, qn, "id", p1, sizeof p1) != 1 || !*p1) {
            *msg = "id required (a message id, or * for all)";
            return 400;
        }
        return dlq_requeue(a, r, p1, q, qn, msg);
    case R_DLQ_SHOW:
        if (!*arg) {
            *msg = "missing message id";
            return 400;
        }
        return h->dlq_show ? h->dlq_show(a->ud, r, arg, &r->body) : 501;
    case R_DLQ_PURGE:
        /* Required, so that a forgotten parameter cannot purge everything; "*" = all. */
        if (query_get(q, qn, "topic", p1, sizeof p1) != 1 || !*p1) {
            *msg = "topic required (a topic, or * for all)";
            return 400;
        }
        return h->dlq_purge ? h->dlq_purge(a->ud, r, strcmp(p1, "*") ? p1 : NULL, &r->body) : 501;
    }
    return 500;
}

int kq_admin_route(struct kq_admin *a, const struct admin_request *rq, struct kq_admin_req *r,
                   const char **msg)
{
    struct http_parser_url u;
    http_parser_url_init(&u);
    char path[MAX_PARAM];
    *msg = NULL;
    if (http_parser_parse_url(rq->url, rq->ulen, rq->method == HTTP_CONNECT, &u) ||
        !(u.field_set & (1 << UF_PATH)) ||
        url_decode(rq->url + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len, false, path,
                   sizeof path)) {
        *msg = "bad request target";
        return 400;
    }
    const char *q = "";
    size_t qn = 0;
    if (u.field_set & (1 << UF_QUERY)) {
        q = rq->url + u.field_data[UF_QUERY].off;
        qn = u.field_data[UF_QUERY].len;
    }
    const struct route *rt = NULL;
    const char *arg = "";
    for (size_t i = 0; i < sizeof routes / sizeof routes[0] && !rt; i++) {
        size_t pl = strlen(routes[i].path);
        if (routes[i].prefix ? strncmp(path, routes[i].path, pl) == 0
                             : !strcmp(path, routes[i].path)) {
            rt = &routes[i];
            arg = path + pl;
        }
    }
    if (!rt) {
        *msg = "not found";
        return 404;
    }
    bool ok =
        rt->post ? rq->method == HTTP_POST : rq->method == HTTP_GET || rq->method == HTTP_HEAD;
    if (!ok) {
        *msg = "method not allowed";
        r->extra = rt->post ? "Allow: POST" : "Allow: GET, HEAD";
        return 405;
    }
    int status = rt->post ? check_token(a, rq, msg) : 0;
    if (status)
        return status;
    r->metrics = rt->id == R_METRICS;
    status = run(a, rt->id, arg, q, qn, r, msg);
    if (status == KQ_ADMIN_LATER && rt->id != R_MSG && rt->id != R_DLQ && rt->id != R_DLQ_REQUEUE &&
        rt->id != R_DLQ_PURGE && rt->id != R_RELOAD && rt->id != R_GROUPS_PURGE &&
        rt->id != R_DLQ_SHOW) {
        KQ_WARN(ADMIN_MOD, "handler for %s cannot answer later", rt->path);
        return 500; /* it has no kq_admin_req to answer through */
    }
    return status;
}
