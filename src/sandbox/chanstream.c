/* Streams on a channel (channel.h): what the reader hands them (kept in a ring of one window,
 * so a stream never holds more than the guest may send unacknowledged), the events a
 * consumer takes out of them, the credit returned as it does, and stdin sent within the
 * credit the guest gives. */
#include "sandbox/channel-internal.h"
#include "util/cleanup.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CREDIT_BATCH (64u << 10) /* credit returned in batches of at least this much */

struct chan_stream *chan_stream_new(struct chan *c, bool with_data)
{
        struct chan_stream *s = calloc(1, sizeof(*s));
        if (!s)
                return NULL;
        if (with_data && (!(s->ring = malloc(STREAM_WINDOW)) ||
                          !(s->segs = malloc(SEGS_MAX * sizeof(*s->segs))))) {
                free(s->ring);
                free(s);
                return NULL;
        }
        s->c = c;
        s->send_credit = STREAM_WINDOW;
        pthread_mutex_lock(&c->lock);
        s->id = chan_next_id(c);
        c->refs++;
        s->next = c->streams;
        c->streams = s;
        if (c->dead)
                stream_fail_locked(s, c->dead_err, c->dead_why);
        pthread_mutex_unlock(&c->lock);
        return s;
}

int chan_stream_send(struct chan_stream *s, uint8_t type, const void *p, size_t n,
                     struct vmsnap_diag *d)
{
        return chan_send(s->c, type, s->id, p, n, d);
}

/* ---- what the reader hands over (c->lock held) -------------------------------------------- */

void stream_fail_locked(struct chan_stream *s, int err, const char *why)
{
        if (s->ended)
                return;
        free(s->end);
        s->end = strdup(why);
        s->end_type = FRAME_ERROR;
        s->end_err = err;
        s->ended = true;
}

static int violation(char *why, size_t size, const char *what, uint32_t id)
{
        snprintf(why, size, "%s (stream %u)", what, id);
        return -EPROTO;
}

/* Appends a data frame to the ring: same-type frames in a row share a run (and give their
 * frame cost back at once); a new run keeps its cost until it is consumed. */
static int take_data(struct chan_stream *s, const struct frame_header *h, const uint8_t *p,
                     char *why, size_t size)
{
        uint32_t cost = h->length + FRAME_COST;
        if (!s->ring)
                return violation(why, size, "output for a stream that has none", s->id);
        if (h->length == 0 || cost > STREAM_WINDOW - s->outstanding)
                return violation(why, size, "output beyond the credit given", s->id);
        s->outstanding += cost;
        size_t tail = (s->ring_head + s->ring_len) % STREAM_WINDOW;
        size_t first = MIN((size_t)h->length, STREAM_WINDOW - tail);
        memcpy(s->ring + tail, p, first);
        memcpy(s->ring, p + first, h->length - first);
        s->ring_len += h->length;
        struct chan_seg *last =
                s->seg_len ? &s->segs[(s->seg_head + s->seg_len - 1) % SEGS_MAX] : NULL;
        if (last && last->type == h->type && s->handed == 0) {
                last->len += h->length;
                s->to_credit += FRAME_COST;
        } else {
                s->segs[(s->seg_head + s->seg_len++) % SEGS_MAX] =
                        (struct chan_seg){.type = h->type, .len = h->length};
        }
        return 0;
}

/* STARTED, REPLY (pieces joined up to REPLY_MAX) or ECHO_REPLY: the stream's first answer. */
static int take_first(struct chan_stream *s, const struct frame_header *h, const uint8_t *p,
                      char *why, size_t size)
{
        if (s->first_done || s->ended)
                return violation(why, size, "a second answer", s->id);
        if (s->first_len + h->length > REPLY_MAX)
                return violation(why, size, "an answer over 4 MiB", s->id);
        char *grown = realloc(s->first, s->first_len + h->length + 1);
        if (!grown)
                return violation(why, size, "no memory for an answer", s->id);
        memcpy(grown + s->first_len, p, h->length);
        s->first = grown;
        s->first_len += h->length;
        s->first[s->first_len] = '\0';
        s->first_done = !(h->type == FRAME_REPLY && (h->flags & FRAME_MORE));
        return 0;
}

int stream_take_frame_locked(struct chan_stream *s, const struct frame_header *h,
                             const uint8_t *p, char *why, size_t size)
{
        switch (h->type) {
        case FRAME_STDOUT:
        case FRAME_STDERR:
                return s->ended ? 0 : take_data(s, h, p, why, size);
        case FRAME_STARTED:
        case FRAME_REPLY:
        case FRAME_ECHO_REPLY:
                return take_first(s, h, p, why, size);
        case FRAME_EXIT:
        case FRAME_ERROR:
                if (s->ended)
                        return 0; /* we failed it already */
                if (!(s->end = strndup((const char *)p, h->length)))
                        return violation(why, size, "no memory for an end", s->id);
                s->end_type = h->type;
                s->ended = true;
                return 0;
        case FRAME_CREDIT:
                if (h->length != 4 || wire_get32(p) > STREAM_WINDOW - s->send_credit)
                        return violation(why, size, "credit beyond the window", s->id);
                s->send_credit += wire_get32(p);
                return 0;
        }
        return violation(why, size, "an unexpected frame", s->id);
}

/* ---- the consumer's side ------------------------------------------------------------------ */

/* Parses an EXIT or ERROR end into ev. */
static void end_event(const struct chan_stream *s, struct vmsnap_stream_event *ev)
{
        ev->kind = s->end_type == FRAME_EXIT ? VMSNAP_STREAM_EXIT : VMSNAP_STREAM_ERROR;
        if (s->end_err) {
                ev->err = s->end_err;
                snprintf(ev->message, sizeof(ev->message), "%s", s->end);
                return;
        }
        json_t *o = json_loads(s->end, 0, NULL);
        if (ev->kind == VMSNAP_STREAM_EXIT) {
                ev->exit_code = (int)json_integer_value(json_object_get(o, "exit_code"));
                ev->signal = (int)json_integer_value(json_object_get(o, "signal"));
                ev->timed_out = json_is_true(json_object_get(o, "timed_out"));
                ev->size = (uint64_t)json_integer_value(json_object_get(o, "size"));
        } else {
                json_int_t e = json_integer_value(json_object_get(o, "errno"));
                const char *m = json_string_value(json_object_get(o, "message"));
                ev->err = e > 0 && e < 4096 ? -(int)e : -EIO;
                snprintf(ev->message, sizeof(ev->message), "%s", m ? m : "failed");
        }
        if (!o) {
                ev->kind = VMSNAP_STREAM_ERROR;
                ev->err = -EPROTO;
                snprintf(ev->message, sizeof(ev->message), "an unreadable end from the agent");
        }
        json_decref(o);
}

/* Releases what the last event handed out; returns the credit to send now (0: none). */
static uint32_t release_locked(struct chan_stream *s)
{
        if (s->handed) {
                struct chan_seg *seg = &s->segs[s->seg_head];
                s->ring_head = (s->ring_head + s->handed) % STREAM_WINDOW;
                s->ring_len -= s->handed;
                seg->len -= (uint32_t)s->handed;
                s->to_credit += (uint32_t)s->handed;
                if (seg->len == 0) {
                        s->seg_head = (s->seg_head + 1) % SEGS_MAX;
                        s->seg_len--;
                        s->to_credit += FRAME_COST;
                }
                s->handed = 0;
        }
        if (s->ended || s->to_credit == 0 || (s->to_credit < CREDIT_BATCH && s->ring_len))
                return 0;
        uint32_t credit = s->to_credit;
        s->to_credit = 0;
        s->outstanding -= credit; /* before sending: the guest may use it as soon as it arrives */
        return credit;
}

static int send_credit(struct chan_stream *s, uint32_t credit, struct vmsnap_diag *d)
{
        uint8_t p[4];
        wire_put32(p, credit);
        return chan_send(s->c, FRAME_CREDIT, s->id, p, sizeof(p), d);
}

int chan_stream_next(struct chan_stream *s, struct vmsnap_stream_event *ev,
                     struct vmsnap_diag *d)
{
        struct chan *c = s->c;
        memset(ev, 0, sizeof(*ev));
        pthread_mutex_lock(&c->lock);
        for (;;) {
                uint32_t credit = release_locked(s);
                if (credit) {
                        pthread_mutex_unlock(&c->lock);
                        send_credit(s, credit, d); /* a failure fails the channel: seen below */
                        pthread_mutex_lock(&c->lock);
                        continue;
                }
                if (s->seg_len || s->ended)
                        break;
                pthread_cond_wait(&c->cond, &c->lock);
        }
        if (s->seg_len) {
                const struct chan_seg *seg = &s->segs[s->seg_head];
                ev->kind = seg->type == FRAME_STDOUT ? VMSNAP_STREAM_STDOUT : VMSNAP_STREAM_STDERR;
                ev->data = s->ring + s->ring_head;
                ev->len = MIN((size_t)seg->len, STREAM_WINDOW - s->ring_head);
                s->handed = ev->len;
        } else {
                end_event(s, ev);
        }
        pthread_mutex_unlock(&c->lock);
        return 0;
}

int chan_stream_started(struct chan_stream *s, int timeout_ms, char **ret, struct vmsnap_diag *d)
{
        struct chan *c = s->c;
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += timeout_ms / 1000;
        until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
        if (until.tv_nsec >= 1000000000) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000;
        }
        int r = 0;
        pthread_mutex_lock(&c->lock);
        while (!s->first_done && !s->ended && r == 0)
                r = pthread_cond_timedwait(&c->cond, &c->lock, &until);
        if (s->first_done) {
                *ret = TAKE_PTR(s->first);
                s->first_len = 0;
                pthread_mutex_unlock(&c->lock);
                return 0;
        }
        struct vmsnap_stream_event ev = {0};
        if (s->ended)
                end_event(s, &ev);
        pthread_mutex_unlock(&c->lock);
        if (!s->ended)
                return vmsnap_diag(d, -ETIMEDOUT, "sandbox %s: the guest agent did not answer in "
                                   "%d ms", c->sandbox_id, timeout_ms);
        return vmsnap_diag(d, ev.err ? ev.err : -EPROTO, "sandbox %s: guest agent: %s",
                           c->sandbox_id, ev.message);
}

int chan_stream_write(struct chan_stream *s, const void *p, size_t n, struct vmsnap_diag *d)
{
        struct chan *c = s->c;
        const uint8_t *q = p;
        while (n > 0) {
                pthread_mutex_lock(&c->lock);
                while (s->send_credit <= FRAME_COST && !s->ended)
                        pthread_cond_wait(&c->cond, &c->lock);
                bool ended = s->ended;
                size_t k = MIN(n, MIN((size_t)(s->send_credit - FRAME_COST), (size_t)FRAME_MAX));
                if (!ended)
                        s->send_credit -= (uint32_t)k + FRAME_COST;
                pthread_mutex_unlock(&c->lock);
                if (ended)
                        return vmsnap_diag(d, -EPIPE, "sandbox %s: the stream has ended",
                                           c->sandbox_id);
                int r = chan_send(c, FRAME_STDIN, s->id, q, k, d);
                if (r < 0)
                        return r;
                q += k;
                n -= k;
        }
        return 0;
}

void chan_stream_cancel(struct chan_stream *s)
{
        struct chan *c = s->c;
        pthread_mutex_lock(&c->lock);
        if (!s->ended) {
                s->cancelled = true;
                stream_fail_locked(s, -ECANCELED, "the stream was cancelled");
        }
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->lock);
}

void chan_stream_free(struct chan_stream *s)
{
        if (!s)
                return;
        struct chan *c = s->c;
        pthread_mutex_lock(&c->lock);
        bool abandon = (!s->ended || s->cancelled) && !c->dead;
        struct chan_stream **p = &c->streams;
        while (*p && *p != s)
                p = &(*p)->next;
        if (*p)
                *p = s->next;
        pthread_mutex_unlock(&c->lock);
        if (abandon)
                chan_send(c, FRAME_CLOSE, s->id, NULL, 0, NULL);
        free(s->ring);
        free(s->segs);
        free(s->first);
        free(s->end);
        free(s);
        chan_put(c);
}
