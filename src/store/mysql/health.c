/* MySQL store, availability: whether the server answers, true at all times. Every finished
 * job says what it showed (pool.c: the server answered, or could not be reached and why),
 * and the store is unavailable from the first failure until a job that started after the
 * latest failure got an answer. A probe (SELECT 1, connecting even while the workers back
 * off) runs every second while the server is down, and while nothing else showed it up
 * within the last second, so that an idle broker finds out too. Each change is logged.
 * Loop thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "store/mysql/mysql_internal.h"

#define PROBE_MS 1000

void my_health_up(struct my_store *s)
{
    struct my_availability *a = &s->avail;
    if (!a->down)
        return;
    a->down = false;
    KQ_INFO(MY_MOD, "store available again: mysql %s:%u answers (unavailable for %llu ms)",
            s->conf.host, s->conf.port,
            (unsigned long long)((kq_mono_us() - a->down_since_us) / 1000));
}

void my_health_note(struct my_store *s, const struct my_job *j)
{
    struct my_availability *a = &s->avail;
    if (j->health == MY_HEALTH_UP) {
        if (j->finished_us > a->up_at_us)
            a->up_at_us = j->finished_us;
        if (a->down && j->started_us > a->down_at_us) /* not an answer from before */
            my_health_up(s);
        return;
    }
    if (j->health != MY_HEALTH_DOWN)
        return;
    if (j->why)
        snprintf(a->why, sizeof a->why, "%s", j->why);
    else /* (out of memory for the text) */
        snprintf(a->why, sizeof a->why, "mysql %s:%u: unreachable", s->conf.host, s->conf.port);
    if (j->finished_us > a->down_at_us)
        a->down_at_us = j->finished_us;
    if (!a->down) {
        a->down = true;
        a->down_since_us = kq_mono_us();
        KQ_ERROR(MY_MOD, "store unavailable: %s; publishes are refused until it answers again",
                 a->why);
    }
}

static void probe_done(struct my_store *s, struct my_job *j)
{
    s->avail.probing = false;
    my_job_free(j);
}

static void on_probe(uv_timer_t *t)
{
    struct my_store *s = t->data;
    struct my_availability *a = &s->avail;
    /* a recovery that waits for the server tries by itself */
    if (a->probing || s->closing || s->rec.state == REC_BACKGROUND)
        return;
    if (!a->down && kq_mono_us() - a->up_at_us < PROBE_MS * 1000ull)
        return; /* the traffic showed it up lately */
    char *sql = strdup("SELECT 1");
    struct my_job *j = my_job_script(false, probe_done, 1, &sql);
    if (!j)
        return; /* the next tick tries again */
    j->force_connect = true;
    a->probing = true;
    my_submit(s, j);
}

void my_health_start(struct my_store *s)
{
    uv_timer_init(s->base.loop, &s->avail.probe);
    s->avail.probe.data = s;
    uv_timer_start(&s->avail.probe, on_probe, PROBE_MS, PROBE_MS);
    uv_unref((uv_handle_t *)&s->avail.probe);
}

const char *my_store_unavailable(struct kq_store *base)
{
    struct my_store *s = (struct my_store *)base;
    if (s->rec.state == REC_BACKGROUND)
        return s->rec.why;
    return s->avail.down ? s->avail.why : NULL;
}
