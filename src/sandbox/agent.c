/* The guest agent client: newline-delimited JSON over the VM's agent channel (docs/guest.md
 * §2.1). One request at a time per sandbox (the caller holds the sandbox's operation lock).
 * While a protocol-2 channel runs on the connection (channel.c), its reader owns the
 * connection and requests go through it as CALL frames. */
#include "sandbox/channel-internal.h"
#include "util/cleanup.h"
#include "util/fs.h"

#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define MAX_RESPONSE (4u << 20) /* exec output is capped at 1 MiB per stream in the guest */

static int64_t now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until fd is readable or the deadline passes. Returns 0 or -errno. */
static int wait_readable(int fd, int64_t deadline)
{
        for (;;) {
                int64_t left = deadline - now_ms();
                struct pollfd p = {.fd = fd, .events = POLLIN};
                if (left <= 0)
                        return -ETIMEDOUT;
                int pr = poll(&p, 1, (int)left);
                if (pr < 0 && errno == EINTR)
                        continue;
                if (pr <= 0)
                        return pr < 0 ? -errno : -ETIMEDOUT;
                return 0;
        }
}

/* Reads exactly n bytes (or into NULL: skips them) before the deadline. */
static int read_exact(int fd, uint8_t *buf, size_t n, int64_t deadline)
{
        uint8_t sink[4096];
        while (n > 0) {
                int r = wait_readable(fd, deadline);
                if (r < 0)
                        return r;
                ssize_t got = read(fd, buf ? buf : sink, buf ? n : MIN(n, sizeof(sink)));
                if (got < 0 && errno == EINTR)
                        continue;
                if (got <= 0)
                        return got < 0 ? -errno : -ECONNRESET;
                if (buf)
                        buf += got;
                n -= (size_t)got;
        }
        return 0;
}

/* Reads one line (without the newline) into a malloc'd buffer before the deadline. Frames
 * that come first are skipped: they belong to streams of a channel that has ended (they
 * crossed its CLOSE). Reads byte by byte so that nothing after the line is consumed. */
static int read_line(int fd, int64_t deadline, char **ret)
{
        size_t cap = 4096, len = 0;
        _cleanup_free_ char *buf = malloc(cap);
        if (!buf)
                return -ENOMEM;
        for (;;) {
                if (len + 1 >= cap) {
                        if (cap >= MAX_RESPONSE)
                                return -EMSGSIZE;
                        char *nb = realloc(buf, cap * 2);
                        if (!nb)
                                return -ENOMEM;
                        buf = nb;
                        cap *= 2;
                }
                int r = read_exact(fd, (uint8_t *)buf + len, 1, deadline);
                if (r < 0)
                        return r;
                if (len == 0 && (uint8_t)buf[0] == FRAME_MAGIC) {
                        uint8_t head[FRAME_HEADER] = {FRAME_MAGIC};
                        struct frame_header h;
                        if ((r = read_exact(fd, head + 1, FRAME_HEADER - 1, deadline)) < 0)
                                return r;
                        if (!frame_header_get(head, &h))
                                return -EPROTO;
                        if ((r = read_exact(fd, NULL, h.length, deadline)) < 0)
                                return r;
                        continue;
                }
                if (buf[len] == '\n') {
                        buf[len] = '\0';
                        *ret = TAKE_PTR(buf);
                        return 0;
                }
                len++;
        }
}

int agent_connect_once(struct live *l, int timeout_ms, struct vmsnap_diag *d)
{
        if (l->agent_fd >= 0)
                return 0;
        if (!l->vm)
                return vmsnap_diag(d, -ENOTCONN, "sandbox %s has no running VM", l->id);
        return l->driver->agent_connect(l->vm, timeout_ms, &l->agent_fd, d);
}

/* A request id never used before by this daemon: a random start, then counting (below 2^53,
 * exact in any JSON reader). */
static json_int_t next_request_id(void)
{
        static _Atomic uint64_t next;
        uint64_t id = atomic_fetch_add(&next, 1);
        if (id == 0) { /* the first call: start somewhere no earlier daemon likely was */
                uint32_t seed = 0;
                if (getrandom(&seed, sizeof(seed), 0) != (ssize_t)sizeof(seed))
                        seed = (uint32_t)now_ms();
                uint64_t zero = 1;
                atomic_compare_exchange_strong(&next, &zero, ((uint64_t)seed << 8) + 2);
                id = atomic_fetch_add(&next, 1);
        }
        return (json_int_t)(id & ((1ull << 53) - 1));
}

/* True when answer o belongs to the request with this id: it echoes it, or carries none (an
 * agent or stand-in that echoes no ids). An answer with another id is a stale one: to a
 * request whose caller gave up (a timeout, a connection dropped and reopened before the
 * guest noticed), and taking it would answer this request with another's result. */
static bool answers(json_t *o, json_int_t id)
{
        json_t *v = json_object_get(o, "id");
        return !v || (json_is_integer(v) && json_integer_value(v) == id);
}

#define STALE_MAX 64 /* stale answers skipped before the connection is given up */

/* One request/response exchange on the current connection; answers to earlier requests
 * still in the connection are skipped. */
static int exchange(struct live *l, const char *line, json_int_t id, int64_t deadline,
                    json_t **ret, struct vmsnap_diag *d)
{
        int r = vmsnap_fs_write_full(l->agent_fd, line, strlen(line));
        if (r == 0)
                r = vmsnap_fs_write_full(l->agent_fd, "\n", 1);
        for (int stale = 0; r == 0 && stale <= STALE_MAX; stale++) {
                _cleanup_free_ char *resp = NULL;
                r = read_line(l->agent_fd, deadline, &resp);
                if (r < 0)
                        break;
                json_error_t je;
                json_t *o = json_loads(resp, 0, &je);
                if (!json_is_object(o)) {
                        json_decref(o);
                        return vmsnap_diag(d, -EPROTO, "sandbox %s: guest agent sent "
                                           "malformed JSON", l->id);
                }
                if (answers(o, id)) {
                        *ret = o;
                        return 0;
                }
                json_decref(o);
        }
        if (r == 0)
                r = -EPROTO;
        return vmsnap_diag(d, r, "sandbox %s: guest agent: %s", l->id,
                           r == -EPROTO ? "only answers to other requests" : strerror(-r));
}

/* The negative errno of a failed answer: the guest's when it gave one, else EIO. */
static int answer_errno(json_t *o)
{
        json_int_t e = json_integer_value(json_object_get(o, "errno"));
        return e > 0 && e < 4096 ? -(int)e : -EIO;
}

/* agent_call, and *ret_answered: whether the guest answered (ok or a refusal), as opposed
 * to the connection failing or timing out. */
static int call_answered(struct live *l, json_t *req, int timeout_ms, json_t **ret,
                         bool *ret_answered, struct vmsnap_diag *d)
{
        *ret_answered = false;
        int64_t deadline = now_ms() + timeout_ms;
        json_int_t id = next_request_id();
        if (json_object_set_new(req, "id", json_integer(id)) < 0)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        _cleanup_free_ char *line = json_dumps(req, JSON_COMPACT);
        if (!line)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        struct chan *c = chan_running(l);
        if (c) { /* its reader owns the connection: ask in a frame */
                int r = chan_call(c, l->id, line, timeout_ms, ret, d);
                chan_put(c);
                *ret_answered = r == 0;
                return r;
        }
        json_t *o = NULL;
        int r = -ENOTCONN;
        for (int attempt = 0; attempt < 2 && r < 0 && now_ms() < deadline; attempt++) {
                r = agent_connect_once(l, (int)(deadline - now_ms()), d);
                if (r == 0)
                        r = exchange(l, line, id, deadline, &o, d);
                if (r < 0 && l->agent_fd >= 0) { /* stale connection (e.g. after restore) */
                        close(l->agent_fd);
                        l->agent_fd = -1;
                }
        }
        if (r < 0)
                return r;
        *ret_answered = true;
        if (!json_is_true(json_object_get(o, "ok"))) {
                const char *e = json_string_value(json_object_get(o, "error"));
                r = vmsnap_diag(d, answer_errno(o), "sandbox %s: guest agent: %s", l->id,
                                e ? e : "failed");
                json_decref(o);
                return r;
        }
        *ret = o;
        return 0;
}

int agent_call(struct live *l, json_t *req, int timeout_ms, json_t **ret, struct vmsnap_diag *d)
{
        bool answered;
        return call_answered(l, req, timeout_ms, ret, &answered, d);
}

static int simple_call(struct live *l, json_t *req, int timeout_ms, struct vmsnap_diag *d)
{
        json_t *resp = NULL;
        int r = agent_call(l, req, timeout_ms, &resp, d);
        json_decref(req);
        json_decref(resp);
        return r;
}

int agent_hello(struct live *l, int timeout_ms, int *ret_protocol, struct vmsnap_diag *d)
{
        json_t *req = json_pack("{s:s}", "op", "hello"), *resp = NULL;
        struct vmsnap_diag ignore = {0};
        int r = agent_call(l, req, timeout_ms, &resp, &ignore);
        json_decref(req);
        if (r == -EIO || r == -EINVAL) { /* an old agent: "unknown op" */
                *ret_protocol = 1;
                return 0;
        }
        if (r < 0)
                return vmsnap_diag(d, r, "%s", ignore.msg);
        json_int_t p = json_integer_value(json_object_get(resp, "protocol"));
        *ret_protocol = p >= 2 && p < 1000 ? (int)p : 1; /* a stand-in says only ok */
        json_decref(resp);
        return 0;
}

int agent_wait_healthy(struct live *l, int timeout_ms, struct vmsnap_diag *d)
{
        int64_t deadline = now_ms() + timeout_ms;
        int r;
        do {
                r = simple_call(l, json_pack("{s:s}", "op", "health"), 2000, d);
                if (r == 0)
                        return 0;
                usleep(100 * 1000);
        } while (now_ms() < deadline);
        return vmsnap_diag_prefix(d, "guest agent not healthy after %d ms", timeout_ms);
}

int agent_sync(struct live *l, struct vmsnap_diag *d)
{
        return simple_call(l, json_pack("{s:s}", "op", "sync"), 30000, d);
}

int agent_restore_hook(struct live *l, struct vmsnap_diag *d)
{
        uint8_t seed[32];
        if (getrandom(seed, sizeof(seed), 0) != (ssize_t)sizeof(seed))
                return vmsnap_diag(d, -EIO, "getrandom failed");
        static const char b64[] =
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        char enc[48] = {0};
        size_t k = 0;
        for (size_t i = 0; i < sizeof(seed); i += 3) {
                uint32_t v = (uint32_t)seed[i] << 16 |
                             (i + 1 < sizeof(seed) ? (uint32_t)seed[i + 1] << 8 : 0) |
                             (i + 2 < sizeof(seed) ? seed[i + 2] : 0);
                enc[k++] = b64[(v >> 18) & 63];
                enc[k++] = b64[(v >> 12) & 63];
                enc[k++] = i + 1 < sizeof(seed) ? b64[(v >> 6) & 63] : '=';
                enc[k++] = i + 2 < sizeof(seed) ? b64[v & 63] : '=';
        }
        /* Retried on a fresh connection: right after a restore the guest's port may miss
         * the first request. Setting the clock and adding entropy twice is harmless. A guest
         * that answers with a refusal is not asked again: waiting would not change it. */
        int64_t deadline = now_ms() + 30000;
        int r;
        bool answered = false;
        do {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                json_int_t ns = (json_int_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
                json_t *req = json_pack("{s:s, s:I, s:s}", "op", "restore_hook", "time_ns", ns,
                                        "seed_b64", enc), *resp = NULL;
                r = req ? call_answered(l, req, 3000, &resp, &answered, d)
                        : vmsnap_diag(d, -ENOMEM, "out of memory");
                json_decref(req);
                json_decref(resp);
                if (r < 0 && !answered && l->agent_fd >= 0) {
                        close(l->agent_fd);
                        l->agent_fd = -1;
                }
        } while (r < 0 && !answered && now_ms() < deadline);
        return r;
}
