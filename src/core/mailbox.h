/* The one way from another thread to the loop: a FIFO of items that any thread posts and the
 * libuv loop thread drains (the MySQL store's workers hand back finished jobs, the ZooKeeper
 * registry's worker its events, the file store's writer its written batches). A mutex guards an intrusive list: posting never allocates,
 * so it fails only when the mailbox is closed. One eventfd wakes the loop, and only when a
 * post finds the list empty: a burst of posts costs one wake-up and is delivered in one
 * loop turn, in the order posted.
 *
 * Closing (loop thread): later posts are refused with -EPIPE (the poster still owns its item
 * and must deal with it); what is queued at that moment is delivered, in order, before
 * kq_mailbox_close returns - nothing is lost or handed back. The owner typically stops its
 * threads first, so that no post can come after the close.
 *
 * Threads: kq_mailbox_post from any thread; everything else on the loop thread. */
#ifndef KQ_CORE_MAILBOX_H
#define KQ_CORE_MAILBOX_H
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Embedded in each item; the item's own struct is found with offsetof. */
struct kq_mail {
    struct kq_mail *next;
};

/* Runs on the loop thread once for every item, in posting order; owns m from then on. It may
 * post, drain or close this mailbox. */
typedef void (*kq_mailbox_deliver_fn)(void *ud, struct kq_mail *m);

struct kq_mailbox {
    pthread_mutex_t mu;
    pthread_cond_t posted;        /* for kq_mailbox_drain's wait */
    struct kq_mail *head, **tail; /* under mu */
    bool closed;                  /* under mu */
    bool waiting;                 /* under mu: a drain waits on posted */
    uint64_t wakeups;             /* under mu: wake-ups written so far */
    atomic_int waking;            /* posters between the unlock and their write's end */
    struct kq_mail *batch;        /* loop thread: taken from the list, not yet delivered */
    int wake_fd;                  /* eventfd the loop polls (mailbox.c: why not uv_async) */
    uv_poll_t poll;
    kq_mailbox_deliver_fn deliver;
    void *ud;
    void (*on_closed)(void *ud);
};

/* Set up mb on loop (mb must stay put until on_closed of kq_mailbox_close). 0 or -errno
 * (then nothing is to be closed). Loop thread. */
int kq_mailbox_init(struct kq_mailbox *mb, uv_loop_t *loop, kq_mailbox_deliver_fn deliver,
                    void *ud);
/* Queue m (its link is overwritten). 0, or -EPIPE after kq_mailbox_close (m stays the
 * caller's); never after on_closed (mb is gone then). Any thread. */
int kq_mailbox_post(struct kq_mailbox *mb, struct kq_mail *m);
/* Deliver what is queued now, without waiting for the loop's wake-up; when nothing is queued,
 * first wait up to wait_ms for a post (a blocking wait: for shutdown paths only). Returns how
 * many items were delivered. Loop thread. */
size_t kq_mailbox_drain(struct kq_mailbox *mb, int wait_ms);
/* Refuse later posts, deliver what is queued, close the handle; on_closed(ud) (may be NULL)
 * runs on a later loop turn, when mb may be freed. Loop thread, once. */
void kq_mailbox_close(struct kq_mailbox *mb, void (*on_closed)(void *ud));
/* How many times a post woke the loop (diagnostics: fewer than the posts under load). */
uint64_t kq_mailbox_wakeups(struct kq_mailbox *mb);
#endif
