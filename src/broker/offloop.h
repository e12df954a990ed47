/* Work that must not run on the loop thread, with a deadline: `work` runs on libuv's
 * threadpool while the loop keeps serving, and the loop hears back exactly once, through
 * `done`: when work has returned, or when the deadline (or kq_offloop_abandon) came first.
 * A thread cannot be killed: an abandoned work gets its `abandoned` flag raised (it should
 * check it and return early), and `drop` runs on the loop once it has returned, to free what
 * it built. */
#ifndef KQ_BROKER_OFFLOOP_H
#define KQ_BROKER_OFFLOOP_H
#include <stdatomic.h>
#include <stdbool.h>
#include <uv.h>

struct kq_offloop;

struct kq_offloop_ops {
    /* On a threadpool thread. */
    void (*work)(void *ud, const atomic_bool *abandoned);
    /* On the loop, once: abandoned = false when work returned in time (its results are the
     * caller's now), true when the deadline or kq_offloop_abandon came first. */
    void (*done)(void *ud, bool abandoned);
    /* On the loop, after done(ud, true), once work has returned: free its results (and ud).
     * returned_ms: how long work ran in all. */
    void (*drop)(void *ud, uint64_t returned_ms);
};

/* Starts work(ud) with a deadline of deadline_ms from now. The ops are copied. Returns 0,
 * or -errno (nothing started, no callback comes). Loop thread. */
int kq_offloop_start(uv_loop_t *loop, const struct kq_offloop_ops *ops, void *ud,
                     unsigned deadline_ms, struct kq_offloop **out);
/* Gives up on the work now, as if its deadline had passed (nothing when done was called
 * already). The handle stays valid until done, and until drop after an abandonment; do not
 * use it afterwards. Loop thread. */
void kq_offloop_abandon(struct kq_offloop *o);
#endif
