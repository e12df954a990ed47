/* Static routing from the config's bindings: Direct (exact messageType), Regx (RE2-style
 * pattern, unanchored, compiled once with PCRE2) and Fanout (every messageType).
 * One route per group: several matching bindings of a group collapse into one copy. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/internal.h"
#include "core/log.h"

struct rule {
    const struct kq_binding *bind;
    pcre2_code *re; /* Regx only */
};

struct kq_routing {
    struct rule *rules;
    size_t n;
    pcre2_match_data *md;
};

struct kq_routing *kq_routing_build(const struct kq_config *cfg, char *err, size_t errlen)
{
    struct kq_routing *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->rules = calloc(cfg->n_bindings ? cfg->n_bindings : 1, sizeof *r->rules);
    r->md = pcre2_match_data_create(4, NULL);
    if (!r->rules || !r->md)
        goto fail;
    for (size_t i = 0; i < cfg->n_bindings; i++) {
        const struct kq_binding *bd = &cfg->bindings[i];
        struct rule *ru = &r->rules[r->n];
        ru->bind = bd;
        if (bd->bind_type == KQ_BIND_REGX) {
            int ec;
            PCRE2_SIZE eo;
            ru->re = pcre2_compile((PCRE2_SPTR)bd->message_type, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_NO_UTF_CHECK, &ec, &eo, NULL);
            if (!ru->re) {
                /* The original treats a bad pattern as "matches nothing"; say so loudly. */
                PCRE2_UCHAR msg[128];
                pcre2_get_error_message(ec, msg, sizeof msg);
                KQ_WARN("routing", "bad regx binding group=%s topic=%s pattern=\"%s\": %s",
                        bd->group_id, bd->topic, bd->message_type, (char *)msg);
                continue;
            }
            pcre2_jit_compile(ru->re, PCRE2_JIT_COMPLETE);
        }
        r->n++;
    }
    return r;
fail:
    snprintf(err, errlen, "routing: out of memory");
    kq_routing_free(r);
    return NULL;
}

void kq_routing_free(struct kq_routing *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        pcre2_code_free(r->rules[i].re);
    free(r->rules);
    pcre2_match_data_free(r->md);
    free(r);
}

static bool rule_matches(struct kq_routing *r, const struct rule *ru, const char *type)
{
    switch (ru->bind->bind_type) {
    case KQ_BIND_FANOUT:
        return true;
    case KQ_BIND_REGX:
        return pcre2_match(ru->re, (PCRE2_SPTR)type, strlen(type), 0, 0, r->md, NULL) >= 0;
    default:
        return strcmp(ru->bind->message_type, type) == 0;
    }
}

size_t kq_routing_match(struct kq_routing *r, const char *topic, const char *type,
                        struct kq_route *out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < r->n && n < max; i++) {
        const struct rule *ru = &r->rules[i];
        if (strcmp(ru->bind->topic, topic) != 0 || !rule_matches(r, ru, type))
            continue;
        bool seen = false;
        for (size_t k = 0; k < n; k++)
            if (strcmp(out[k].group, ru->bind->group_id) == 0) {
                /* The first binding of a group decides persistence, as in the original. */
                seen = true;
                break;
            }
        if (!seen) {
            out[n].group = ru->bind->group_id;
            out[n].persistent = ru->bind->persistent;
            out[n].watermark = ru->bind->watermark > 0 ? ru->bind->watermark : 6000;
            n++;
        }
    }
    return n;
}
