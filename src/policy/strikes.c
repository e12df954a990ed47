/* Failures in a row per (hook, subject), so that one bad subject (a messageType whose routing
 * raises) switches the hook off for that subject only. Subjects are kept by a 64-bit hash
 * (no copy of the names: memory is bounded whatever producers put in a messageType), and at
 * most KQ_POLICY_MAX_SUBJECTS of them: when the table is full and a new subject fails, it
 * starts over. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include "policy/internal.h"

struct strike {
    uint64_t key;
    int strikes;
    bool disabled;
    UT_hash_handle hh;
};

struct kq_strikes {
    struct strike *by_key;
    size_t n;
    size_t disabled[KQ_STRIKES_HOOKS]; /* subjects switched off, per hook */
};

static uint64_t fnv(uint64_t h, const char *s)
{
    uint64_t len = 0;
    for (; s && s[len]; len++)
        h = (h ^ (uint8_t)s[len]) * 1099511628211ull;
    return (h ^ len) * 1099511628211ull; /* the length ends the field: ("ab","c") != ("a","bc") */
}

uint64_t kq_strikes_key(int hook, const char *a, const char *b)
{
    uint64_t h = (14695981039346656037ull ^ (uint64_t)hook) * 1099511628211ull;
    return fnv(fnv(h, a), b);
}

struct kq_strikes *kq_strikes_new(void) { return calloc(1, sizeof(struct kq_strikes)); }

static void clear(struct kq_strikes *t)
{
    struct strike *e, *tmp;
    HASH_ITER (hh, t->by_key, e, tmp) {
        HASH_DEL(t->by_key, e);
        free(e);
    }
    t->n = 0;
    memset(t->disabled, 0, sizeof t->disabled);
}

void kq_strikes_free(struct kq_strikes *t)
{
    if (!t)
        return;
    clear(t);
    free(t);
}

static struct strike *find(const struct kq_strikes *t, uint64_t key)
{
    struct strike *e = NULL;
    HASH_FIND(hh, t->by_key, &key, sizeof key, e);
    return e;
}

bool kq_strikes_disabled(const struct kq_strikes *t, int hook, const char *a, const char *b)
{
    if (!t || !t->n)
        return false; /* the common case: nothing ever failed */
    struct strike *e = find(t, kq_strikes_key(hook, a, b));
    return e && e->disabled;
}

void kq_strikes_ok(struct kq_strikes *t, int hook, const char *a, const char *b)
{
    if (!t || !t->n)
        return;
    struct strike *e = find(t, kq_strikes_key(hook, a, b));
    if (e && !e->disabled) {
        HASH_DEL(t->by_key, e);
        free(e);
        t->n--;
    }
}

int kq_strikes_fail(struct kq_strikes *t, int hook, const char *a, const char *b,
                    bool *switched_off, bool *started_over)
{
    *switched_off = *started_over = false;
    if (!t || hook < 0 || hook >= KQ_STRIKES_HOOKS)
        return -EINVAL;
    uint64_t key = kq_strikes_key(hook, a, b);
    struct strike *e = find(t, key);
    if (!e) {
        if (t->n >= KQ_POLICY_MAX_SUBJECTS) {
            clear(t);
            *started_over = true;
        }
        if (!(e = calloc(1, sizeof *e)))
            return -ENOMEM;
        e->key = key;
        HASH_ADD(hh, t->by_key, key, sizeof key, e);
        t->n++;
    }
    if (e->strikes < KQ_POLICY_MAX_STRIKES && ++e->strikes == KQ_POLICY_MAX_STRIKES) {
        e->disabled = true;
        t->disabled[hook]++;
        *switched_off = true;
    }
    return e->strikes;
}

size_t kq_strikes_disabled_count(const struct kq_strikes *t, int hook)
{
    return t && hook >= 0 && hook < KQ_STRIKES_HOOKS ? t->disabled[hook] : 0;
}
