#include "tools/bench/seqmap.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>

#define PAGE_SIZE_SEQ ((uint64_t)1 << BENCH_SEQMAP_PAGE_BITS)

static _Atomic uint8_t *page_for(struct bench_seqmap *m, uint64_t seq, int *err)
{
    uint64_t pi = seq >> BENCH_SEQMAP_PAGE_BITS;
    if (pi >= BENCH_SEQMAP_PAGES) {
        *err = -ERANGE;
        return NULL;
    }
    uint8_t *p = atomic_load(&m->pages[pi]);
    if (p)
        return (_Atomic uint8_t *)p;
    /* Two threads may race to allocate: the loser frees its page. */
    uint8_t *fresh = calloc(PAGE_SIZE_SEQ, 1);
    if (!fresh) {
        *err = -ENOMEM;
        return NULL;
    }
    uint8_t *expected = NULL;
    if (!atomic_compare_exchange_strong(&m->pages[pi], &expected, fresh)) {
        free(fresh);
        return (_Atomic uint8_t *)expected;
    }
    return (_Atomic uint8_t *)fresh;
}

int bench_seqmap_incr(struct bench_seqmap *m, uint64_t seq)
{
    int err = 0;
    _Atomic uint8_t *p = page_for(m, seq, &err);
    if (!p)
        return err;
    _Atomic uint8_t *c = &p[seq & (PAGE_SIZE_SEQ - 1)];
    uint8_t old = atomic_load(c);
    while (old < 255 && !atomic_compare_exchange_weak(c, &old, (uint8_t)(old + 1)))
        ;
    return old;
}

unsigned bench_seqmap_get(const struct bench_seqmap *m, uint64_t seq)
{
    uint64_t pi = seq >> BENCH_SEQMAP_PAGE_BITS;
    if (pi >= BENCH_SEQMAP_PAGES)
        return 0;
    uint8_t *p = atomic_load(&((struct bench_seqmap *)m)->pages[pi]);
    return p ? atomic_load(&((_Atomic uint8_t *)p)[seq & (PAGE_SIZE_SEQ - 1)]) : 0;
}

void bench_seqmap_free(struct bench_seqmap *m)
{
    for (size_t i = 0; i < BENCH_SEQMAP_PAGES; i++) {
        free(atomic_load(&m->pages[i]));
        atomic_store(&m->pages[i], NULL);
    }
}
