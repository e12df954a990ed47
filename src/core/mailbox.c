/* See mailbox.h. The loop takes the whole list under one lock and delivers it outside the
 * lock, so a poster waits only for a few pointer moves.
 *
 * The loop is woken through an eventfd it polls, not uv_async_t: libuv 1.44's uv_async_send
 * marks the handle busy around its write(2), and the loop, woken by that very write on the
 * other CPU, spins and then calls sched_yield until the poster is out of it (measured on the
 * file store's writer: 0.74 sched_yield per message with one waiting producer). */
#include "core/mailbox.h"
#include "core/log.h"

#include <errno.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

static void on_readable(uv_poll_t *h, int status, int events);

int kq_mailbox_init(struct kq_mailbox *mb, uv_loop_t *loop, kq_mailbox_deliver_fn deliver, void *ud)
{
    *mb = (struct kq_mailbox){.deliver = deliver, .ud = ud};
    mb->tail = &mb->head;
    pthread_condattr_t ca;
    int rc = pthread_condattr_init(&ca);
    if (rc)
        return -rc;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    rc = pthread_cond_init(&mb->posted, &ca);
    pthread_condattr_destroy(&ca);
    if (rc)
        return -rc;
    if ((rc = pthread_mutex_init(&mb->mu, NULL))) {
        pthread_cond_destroy(&mb->posted);
        return -rc;
    }
    if ((mb->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
        rc = -errno;
    else if ((rc = uv_poll_init(loop, &mb->poll, mb->wake_fd)))
        close(mb->wake_fd);
    if (rc) {
        pthread_mutex_destroy(&mb->mu);
        pthread_cond_destroy(&mb->posted);
        return rc;
    }
    mb->poll.data = mb;
    /* On Unix this only queues the watcher and returns 0 (epoll_ctl comes with the loop's
     * next poll, and libuv aborts if that fails): no failure to undo here. */
    uv_poll_start(&mb->poll, UV_READABLE, on_readable);
    return 0;
}

static void wake_loop(struct kq_mailbox *mb)
{
    uint64_t one = 1;
    while (write(mb->wake_fd, &one, sizeof one) < 0 && errno == EINTR) {
    }
}

int kq_mailbox_post(struct kq_mailbox *mb, struct kq_mail *m)
{
    m->next = NULL;
    pthread_mutex_lock(&mb->mu);
    if (mb->closed) {
        pthread_mutex_unlock(&mb->mu);
        return -EPIPE;
    }
    /* An empty list means the loop has taken everything posted before (or has been woken
     * for it and will take this too): only then does the loop need a new wake-up. */
    bool wake = !mb->head;
    *mb->tail = m;
    mb->tail = &m->next;
    if (wake) {
        mb->wakeups++;
        atomic_fetch_add(&mb->waking, 1); /* (kq_mailbox_close waits for it) */
    }
    if (mb->waiting)
        pthread_cond_signal(&mb->posted);
    pthread_mutex_unlock(&mb->mu);
    /* Written after the unlock: the loop, woken, takes the lock at once, and a system call
     * under it would make the loop wait for the poster. */
    if (wake) {
        wake_loop(mb);
        atomic_fetch_sub(&mb->waking, 1);
    }
    return 0;
}

/* Wait until something is queued or the deadline passes. Locked. */
static void wait_posted(struct kq_mailbox *mb, int wait_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += wait_ms / 1000;
    until.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    mb->waiting = true;
    while (!mb->head && pthread_cond_timedwait(&mb->posted, &mb->mu, &until) != ETIMEDOUT)
        ;
    mb->waiting = false;
}

/* Deliver the batch in hand, then whatever has been posted meanwhile, until the list is
 * empty. The batch lives in mb, not on the stack, so that a deliver callback that drains or
 * closes the mailbox continues the same sequence instead of overtaking it. */
static size_t deliver_all(struct kq_mailbox *mb, int wait_ms)
{
    size_t n = 0;
    for (;;) {
        if (!mb->batch) {
            pthread_mutex_lock(&mb->mu);
            if (!mb->head && wait_ms > 0 && n == 0)
                wait_posted(mb, wait_ms);
            mb->batch = mb->head;
            mb->head = NULL;
            mb->tail = &mb->head;
            pthread_mutex_unlock(&mb->mu);
            if (!mb->batch)
                return n;
        }
        struct kq_mail *m = mb->batch;
        mb->batch = m->next;
        m->next = NULL;
        n++;
        mb->deliver(mb->ud, m);
    }
}

static void on_readable(uv_poll_t *h, int status, int events)
{
    (void)events;
    struct kq_mailbox *mb = h->data;
    if (status < 0)
        KQ_LOG_RATELIMITED(KQ_LOG_ERROR, "mailbox", "poll: %s (draining anyway)",
                           uv_strerror(status));
    /* Read before taking the list: a post that comes after the take writes again. */
    uint64_t count;
    while (read(mb->wake_fd, &count, sizeof count) < 0 && errno == EINTR) {
    }
    deliver_all(mb, 0);
}

size_t kq_mailbox_drain(struct kq_mailbox *mb, int wait_ms) { return deliver_all(mb, wait_ms); }

static void on_handle_closed(uv_handle_t *h)
{
    struct kq_mailbox *mb = h->data;
    close(mb->wake_fd);
    pthread_mutex_destroy(&mb->mu);
    pthread_cond_destroy(&mb->posted);
    if (mb->on_closed)
        mb->on_closed(mb->ud);
}

void kq_mailbox_close(struct kq_mailbox *mb, void (*on_closed)(void *ud))
{
    pthread_mutex_lock(&mb->mu);
    mb->closed = true;
    pthread_mutex_unlock(&mb->mu);
    /* A post accepted before the close may still be writing to the eventfd: the descriptor
     * must outlive it. No new one can start now, and this one is a system call from done. */
    while (atomic_load(&mb->waking))
        sched_yield();
    deliver_all(mb, 0);
    mb->on_closed = on_closed;
    uv_close((uv_handle_t *)&mb->poll, on_handle_closed);
}

uint64_t kq_mailbox_wakeups(struct kq_mailbox *mb)
{
    pthread_mutex_lock(&mb->mu);
    uint64_t n = mb->wakeups;
    pthread_mutex_unlock(&mb->mu);
    return n;
}
