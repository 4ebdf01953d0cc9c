/* The host end of protocol 2: the channel of one agent connection, its reader thread and the
 * frames it sends (channel.h). Streams' queues and credit are in chanstream.c. */
#include "sandbox/channel-internal.h"
#include "util/cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SEND_STALL_MS 30000 /* a guest that takes no frame for this long is given up */
#define INBUF_SIZE    (FRAME_HEADER + FRAME_MAX)

/* Running channels, by live sandbox. A channel is in the list exactly while its reader may
 * still read the connection. Lock order: chans_lock, then a channel's lock. */
static pthread_mutex_t chans_lock = PTHREAD_MUTEX_INITIALIZER;
static struct chan *chans;

static int64_t now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void chan_free(struct chan *c)
{
        if (c->fd >= 0)
                close(c->fd);
        if (c->wake >= 0)
                close(c->wake);
        pthread_cond_destroy(&c->cond);
        pthread_mutex_destroy(&c->lock);
        pthread_mutex_destroy(&c->write_lock);
        free(c->in);
        free(c);
}

void chan_put(struct chan *c)
{
        if (!c)
                return;
        pthread_mutex_lock(&c->lock);
        int refs = --c->refs;
        /* Under the lock: once it is released the reader may drop the last reference and
         * free c (and close the eventfd) before this write (TSan saw it). The eventfd is
         * non-blocking. */
        if (refs == 1) { /* only the reader's: let it notice */
                uint64_t one = 1;
                if (write(c->wake, &one, sizeof(one)) < 0) {
                        /* the counter is non-zero already: the reader wakes anyway */
                }
        }
        pthread_mutex_unlock(&c->lock);
        if (refs == 0)
                chan_free(c);
}

struct chan *chan_running(struct live *l)
{
        pthread_mutex_lock(&chans_lock);
        struct chan *c = chans;
        while (c && c->live != l)
                c = c->next;
        if (c) {
                pthread_mutex_lock(&c->lock);
                c->refs++;
                pthread_mutex_unlock(&c->lock);
        }
        pthread_mutex_unlock(&chans_lock);
        return c;
}

bool chan_in_use(struct live *l)
{
        struct chan *c = chan_running(l);
        chan_put(c);
        return c != NULL;
}

static void unlist(struct chan *c)
{
        struct chan **p = &chans;
        while (*p && *p != c)
                p = &(*p)->next;
        if (*p)
                *p = c->next;
}

/* ---- failing ------------------------------------------------------------------------------ */

/* Ends every stream of c with an ERROR (the connection closed or the guest broke the
 * protocol) and stops the channel. The caller holds c->lock. */
static void fail_locked(struct chan *c, int err, const char *why)
{
        if (c->dead)
                return;
        c->dead = true;
        c->dead_err = err;
        snprintf(c->dead_why, sizeof(c->dead_why), "%s", why);
        for (struct chan_stream *s = c->streams; s; s = s->next)
                stream_fail_locked(s, err, why);
        pthread_cond_broadcast(&c->cond);
}

static void fail(struct chan *c, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void fail(struct chan *c, int err, const char *fmt, ...)
{
        char why[sizeof(c->dead_why)];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, sizeof(why), fmt, ap);
        va_end(ap);
        pthread_mutex_lock(&c->lock);
        fail_locked(c, err, why);
        pthread_mutex_unlock(&c->lock);
        /* A guest that broke the protocol loses its connection: nothing it sends after that
         * can be trusted to be in step. The next user reconnects. */
        if (err == -EPROTO)
                shutdown(c->fd, SHUT_RDWR);
}

/* ---- sending ------------------------------------------------------------------------------ */

/* Writes all of p without blocking forever: a guest that stops taking frames for
 * SEND_STALL_MS fails the channel. */
static int send_all(struct chan *c, const void *p, size_t n)
{
        const char *q = p;
        int64_t deadline = now_ms() + SEND_STALL_MS;
        while (n > 0) {
                ssize_t w = send(c->fd, q, n, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (w > 0) {
                        q += w;
                        n -= (size_t)w;
                        continue;
                }
                if (w < 0 && errno == EINTR)
                        continue;
                if (w < 0 && errno != EAGAIN)
                        return -errno;
                int64_t left = deadline - now_ms();
                struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
                if (left <= 0 || poll(&pfd, 1, (int)left) == 0)
                        return -ETIMEDOUT;
        }
        return 0;
}

int chan_send(struct chan *c, uint8_t type, uint32_t stream, const void *p, size_t n,
              struct vmsnap_diag *d)
{
        if (n > FRAME_MAX)
                return vmsnap_diag(d, -EMSGSIZE, "sandbox %s: a frame of %zu bytes is over %u",
                                   c->sandbox_id, n, FRAME_MAX);
        uint8_t head[FRAME_HEADER];
        struct frame_header h = {.type = type, .stream = stream, .length = (uint32_t)n};
        frame_header_put(head, &h);
        pthread_mutex_lock(&c->write_lock);
        int r = c->dead ? c->dead_err : send_all(c, head, sizeof(head));
        if (r == 0 && n)
                r = send_all(c, p, n);
        pthread_mutex_unlock(&c->write_lock);
        if (r == -ETIMEDOUT)
                fail(c, -ETIMEDOUT, "the guest agent took no data for %d s", SEND_STALL_MS / 1000);
        if (r < 0)
                return vmsnap_diag(d, r, "sandbox %s: guest agent: %s", c->sandbox_id,
                                   c->dead ? c->dead_why : strerror(-r));
        return 0;
}

/* ---- the reader --------------------------------------------------------------------------- */

static struct chan_stream *find_stream(struct chan *c, uint32_t id)
{
        for (struct chan_stream *s = c->streams; s; s = s->next)
                if (s->id == id)
                        return s;
        return NULL;
}

/* Hands one frame to its stream. Returns 0, or -EPROTO with why. */
static int dispatch(struct chan *c, const struct frame_header *h, const uint8_t *p, char *why,
                    size_t size)
{
        switch (h->type) {
        case FRAME_REPLY:
        case FRAME_STARTED:
        case FRAME_STDOUT:
        case FRAME_STDERR:
        case FRAME_EXIT:
        case FRAME_ERROR:
        case FRAME_CREDIT:
        case FRAME_ECHO_REPLY:
                break;
        default:
                snprintf(why, size, "a frame of type 0x%02x from the guest", h->type);
                return -EPROTO;
        }
        if (h->stream == 0) {
                if (h->type == FRAME_ERROR) {
                        snprintf(why, size, "the guest agent reported a protocol error: %.*s",
                                 (int)MIN(h->length, 200u), (const char *)p);
                        return -EPROTO;
                }
                return 0;
        }
        pthread_mutex_lock(&c->lock);
        struct chan_stream *s = find_stream(c, h->stream);
        int r = s ? stream_take_frame_locked(s, h, p, why, size) : 0;
        if (s)
                pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->lock);
        return r; /* a frame for a stream we freed crossed our CLOSE: dropped */
}

/* Handles every complete message in c->in. Lines (answers to nothing we asked in frames)
 * are skipped. Returns 0 or -EPROTO with why. */
static int parse_input(struct chan *c, char *why, size_t size)
{
        size_t start = 0;
        int r = 0;
        while (r == 0 && start < c->in_len) {
                const uint8_t *p = c->in + start;
                size_t avail = c->in_len - start;
                struct frame_header h;
                if (p[0] != FRAME_MAGIC) {
                        const uint8_t *nl = memchr(p, '\n', avail);
                        if (!nl)
                                break;
                        start += (size_t)(nl - p) + 1;
                        continue;
                }
                if (avail < FRAME_HEADER)
                        break;
                if (!frame_header_get(p, &h)) {
                        snprintf(why, size, "a frame header with length %u", wire_get32(p + 8));
                        return -EPROTO;
                }
                if (avail < FRAME_HEADER + h.length)
                        break;
                r = dispatch(c, &h, p + FRAME_HEADER, why, size);
                start += FRAME_HEADER + h.length;
        }
        memmove(c->in, c->in + start, c->in_len - start);
        c->in_len -= start;
        if (r == 0 && c->in_len == INBUF_SIZE) { /* a line longer than any frame */
                snprintf(why, size, "%u bytes without a newline or a frame", INBUF_SIZE);
                return -EPROTO;
        }
        return r;
}

/* True (and the channel unlisted) when nothing but the reader holds it and no message is
 * half read: the connection is left at a message boundary for whoever comes next. */
static bool reader_may_stop(struct chan *c)
{
        pthread_mutex_lock(&chans_lock);
        pthread_mutex_lock(&c->lock);
        bool stop = c->dead || (c->refs == 1 && c->in_len == 0);
        if (stop)
                unlist(c);
        pthread_mutex_unlock(&c->lock);
        pthread_mutex_unlock(&chans_lock);
        return stop;
}

/* Reads what came. Returns 0, or -errno (the connection ended or the guest broke the
 * protocol) after failing the channel. */
static int read_some(struct chan *c)
{
        ssize_t n = read(c->fd, c->in + c->in_len, INBUF_SIZE - c->in_len);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
                return 0;
        if (n <= 0) {
                fail(c, -ECONNRESET, "the guest agent connection closed (the sandbox was "
                                     "paused, destroyed or its VM stopped)");
                return -ECONNRESET;
        }
        c->in_len += (size_t)n;
        char why[256];
        if (parse_input(c, why, sizeof(why)) < 0) {
                fail(c, -EPROTO, "the guest agent broke the protocol: %s", why);
                return -EPROTO;
        }
        return 0;
}

static void *reader_main(void *arg)
{
        struct chan *c = arg;
        while (!reader_may_stop(c)) {
                struct pollfd pfd[2] = {{.fd = c->fd, .events = POLLIN},
                                        {.fd = c->wake, .events = POLLIN}};
                if (poll(pfd, 2, -1) < 0 && errno != EINTR)
                        break;
                if (pfd[1].revents) {
                        uint64_t v;
                        if (read(c->wake, &v, sizeof(v)) < 0) {
                                /* EAGAIN: someone else drained it */
                        }
                }
                if (pfd[0].revents && read_some(c) < 0)
                        continue; /* failed: reader_may_stop says so next */
        }
        chan_put(c);
        return NULL;
}

/* ---- opening ------------------------------------------------------------------------------ */

static struct chan *chan_new(struct live *l, const char *label)
{
        struct chan *c = calloc(1, sizeof(*c));
        if (!c)
                return NULL;
        c->fd = c->wake = -1;
        c->live = l;
        snprintf(c->sandbox_id, sizeof(c->sandbox_id), "%s", label);
        pthread_mutex_init(&c->lock, NULL);
        pthread_mutex_init(&c->write_lock, NULL);
        pthread_condattr_t attr;
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&c->cond, &attr);
        pthread_condattr_destroy(&attr);
        /* Stream ids start at random: frames of an earlier connection's streams that the
         * guest still sends (it may not have seen that connection end) match none of ours. */
        if (getrandom(&c->next_id, sizeof(c->next_id), 0) != (ssize_t)sizeof(c->next_id))
                c->next_id = (uint32_t)now_ms();
        if (c->next_id == 0)
                c->next_id = 1;
        c->in = malloc(INBUF_SIZE);
        c->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        c->fd = fcntl(l->agent_fd, F_DUPFD_CLOEXEC, 3);
        if (!c->in || c->wake < 0 || c->fd < 0) {
                chan_free(c);
                return NULL;
        }
        c->refs = 2; /* the reader's and the caller's */
        return c;
}

int chan_get(struct live *l, const char *label, int timeout_ms, struct chan **ret,
             struct vmsnap_diag *d)
{
        struct chan *c = chan_running(l);
        if (c) {
                *ret = c;
                return 0;
        }
        int protocol = 0;
        int r = agent_connect_once(l, timeout_ms, d);
        if (r == 0)
                r = agent_hello(l, timeout_ms, &protocol, d);
        if (r < 0)
                return r;
        if (protocol < AGENT_PROTOCOL)
                return vmsnap_diag(d, -EPROTONOSUPPORT,
                                   "sandbox %s: its guest agent speaks protocol %d only (a "
                                   "template made before protocol %d): streaming exec and "
                                   "files need a sandbox booted from a newer guest image",
                                   label, protocol, AGENT_PROTOCOL);
        if (!(c = chan_new(l, label)))
                return vmsnap_diag(d, -ENOMEM, "sandbox %s: cannot open the agent channel: %s",
                                   label, strerror(errno ? errno : ENOMEM));
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_mutex_lock(&chans_lock);
        c->next = chans;
        chans = c;
        r = pthread_create(&t, &attr, reader_main, c);
        if (r != 0)
                unlist(c);
        pthread_mutex_unlock(&chans_lock);
        pthread_attr_destroy(&attr);
        if (r != 0) {
                chan_free(c);
                return vmsnap_diag(d, -r, "sandbox %s: cannot start the agent reader: %s", label,
                                   strerror(r));
        }
        *ret = c;
        return 0;
}

uint32_t chan_next_id(struct chan *c)
{
        uint32_t id = c->next_id++;
        if (c->next_id == 0)
                c->next_id = 1;
        return id;
}

/* ---- calls -------------------------------------------------------------------------------- */

/* The negative errno of a failed answer: the guest's when it gave one (1..4095), else EIO. */
static int answer_errno(json_t *o)
{
        json_int_t e = json_integer_value(json_object_get(o, "errno"));
        return e > 0 && e < 4096 ? -(int)e : -EIO;
}

int chan_call(struct chan *c, const char *sandbox_id, const char *request, int timeout_ms,
              json_t **ret, struct vmsnap_diag *d)
{
        struct chan_stream *s = chan_stream_new(c, false);
        if (!s)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        _cleanup_free_ char *text = NULL;
        int r = chan_stream_send(s, FRAME_CALL, request, strlen(request), d);
        if (r == 0)
                r = chan_stream_started(s, timeout_ms, &text, d);
        chan_stream_free(s);
        if (r < 0)
                return r;
        json_error_t je;
        json_t *o = json_loads(text, 0, &je);
        if (!json_is_object(o)) {
                json_decref(o);
                return vmsnap_diag(d, -EPROTO, "sandbox %s: guest agent sent malformed JSON",
                                   sandbox_id);
        }
        if (!json_is_true(json_object_get(o, "ok"))) {
                const char *e = json_string_value(json_object_get(o, "error"));
                r = vmsnap_diag(d, answer_errno(o), "sandbox %s: guest agent: %s", sandbox_id,
                                e ? e : "failed");
                json_decref(o);
                return r;
        }
        *ret = o;
        return 0;
}
