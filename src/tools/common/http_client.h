/* A tiny blocking HTTP/1.1 client for the admin commands of the tools: one request per
 * connection ("Connection: close"), no body sent, the whole response kept in memory. */
#ifndef KQ_TOOLS_HTTP_CLIENT_H
#define KQ_TOOLS_HTTP_CLIENT_H
#include <stddef.h>

struct cli_http_response {
    int status; /* e.g. 200 */
    char *body; /* malloc'd, NUL-terminated (also when empty) */
    size_t body_len;
};

/* Send `method target` (target like "/stat?x=1") to "host:port" and read the response,
 * taking at most timeout_ms in all. bearer (may be NULL): sent as "Authorization: Bearer
 * <bearer>" (the broker's adminToken). Returns 0 for any complete response (check r->status),
 * or -errno with a reason in err: -EINVAL bad address, -ECONNREFUSED and friends from
 * connect, -ETIMEDOUT, -EPROTO malformed or truncated response, -EMSGSIZE over 64 MiB.
 * On success free the response with cli_http_response_free. */
int cli_http_request(const char *hostport, const char *method, const char *target,
                     const char *bearer, int timeout_ms, struct cli_http_response *r, char *err,
                     size_t errlen);
void cli_http_response_free(struct cli_http_response *r);

/* Percent-encode s as a query value (unreserved characters kept) into out.
 * Returns 0, or -ENAMETOOLONG when out is too small. */
int cli_url_encode(const char *s, char *out, size_t outlen);
#endif
