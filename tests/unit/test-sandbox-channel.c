/* The host end of the agent protocol (src/sandbox/channel.c, chanstream.c) against the real
 * agent built for the host (VMSNAP_AGENT_HOST, `--listen-unix`) and against a hostile
 * stand-in that breaks the protocol: output beyond the credit given, credit beyond the
 * window, an unknown frame type, an answer over 4 MiB, a connection that closes mid-stream,
 * an agent that speaks protocol 1 only. Each violation must end the streams with an error and
 * never grow memory. No VM, no timing assertions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "sandbox/channel-internal.h"
#include "testlib.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- a live sandbox stand-in -------------------------------------------------------------- */

static void live_init(struct live *l, int fd)
{
        memset(l, 0, sizeof(*l));
        snprintf(l->id, sizeof(l->id), "00000000-0000-4000-8000-00000000c0de");
        pthread_mutex_init(&l->op_lock, NULL);
        l->agent_fd = fd;
}

/* Waits (bounded) until no channel runs on l: the reader stops once nothing holds it. */
static bool channel_stops(struct live *l)
{
        for (int i = 0; i < 2000; i++) {
                struct chan *c = chan_running(l);
                if (!c)
                        return true;
                chan_put(c);
                usleep(5000);
        }
        return false;
}

/* ---- the real agent ----------------------------------------------------------------------- */

struct agent {
        pid_t pid;
        char *dir;
        int fd;
};

static bool agent_start(struct agent *a)
{
        const char *bin = getenv("VMSNAP_AGENT_HOST");
        if (!bin || access(bin, X_OK) != 0)
                return false;
        a->dir = test_mkdtemp("chan");
        char *path = test_path(a->dir, "a.sock");
        a->pid = fork();
        if (a->pid == 0) {
                setsid();
                execl(bin, bin, "--listen-unix", path, (char *)NULL);
                _exit(127);
        }
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        free(path);
        for (int i = 0; i < 1000; i++) {
                a->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (connect(a->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
                        return true;
                close(a->fd);
                usleep(10000);
        }
        return false;
}

static void agent_stop(struct agent *a)
{
        close(a->fd);
        kill(-a->pid, SIGKILL);
        kill(a->pid, SIGKILL);
        waitpid(a->pid, NULL, 0);
        test_rmtree(a->dir);
        free(a->dir);
}

/* Starts argv on c; returns the stream after STARTED, or NULL with *ret_err when START was
 * answered with an error (ret_err NULL: that fails the test). */
static struct chan_stream *start_exec_or(struct chan *c, const char *const *argv,
                                         bool with_stdin, int *ret_err)
{
        uint8_t p[4096];
        size_t n = START_FIXED, argc = 0;
        for (; argv[argc]; argc++) {
                size_t len = strlen(argv[argc]) + 1;
                memcpy(p + n, argv[argc], len);
                n += len;
        }
        p[n++] = '\0'; /* cwd "" */
        struct start_fixed f = {.kind = START_EXEC, .flags = with_stdin ? START_STDIN : 0,
                                .argc = (uint16_t)argc};
        start_fixed_put(p, &f);
        struct chan_stream *s = chan_stream_new(c, true);
        assert_non_null(s);
        struct vmsnap_diag d = {0};
        assert_int_equal(chan_stream_send(s, FRAME_START, p, n, &d), 0);
        char *started = NULL;
        int r = chan_stream_started(s, 30000, &started, &d);
        if (r < 0 && ret_err) {
                *ret_err = r;
                chan_stream_free(s);
                return NULL;
        }
        assert_int_equal(r, 0);
        assert_non_null(strstr(started, "\"pid\""));
        free(started);
        return s;
}

static struct chan_stream *start_exec(struct chan *c, const char *const *argv, bool with_stdin)
{
        return start_exec_or(c, argv, with_stdin, NULL);
}

/* Reads events to the end; returns the EXIT/ERROR event and the stdout bytes (malloc'd). */
static struct vmsnap_stream_event drain(struct chan_stream *s, uint8_t **out, size_t *out_len)
{
        struct vmsnap_stream_event ev;
        struct vmsnap_diag d = {0};
        size_t len = 0;
        uint8_t *buf = NULL;
        for (;;) {
                assert_int_equal(chan_stream_next(s, &ev, &d), 0);
                if (ev.kind != VMSNAP_STREAM_STDOUT && ev.kind != VMSNAP_STREAM_STDERR)
                        break;
                if (ev.kind == VMSNAP_STREAM_STDOUT && out) {
                        buf = realloc(buf, len + ev.len);
                        memcpy(buf + len, ev.data, ev.len);
                        len += ev.len;
                }
        }
        if (out) {
                *out = buf;
                *out_len = len;
        }
        return ev;
}

struct writer {
        struct chan_stream *s;
        uint8_t *data;
        size_t len;
        int r;
};

static void *writer_main(void *arg)
{
        struct writer *w = arg;
        struct vmsnap_diag d = {0};
        w->r = chan_stream_write(w->s, w->data, w->len, &d);
        if (w->r == 0)
                w->r = chan_stream_send(w->s, FRAME_STDIN_EOF, NULL, 0, &d);
        return NULL;
}

static void test_real_agent(void **state)
{
        (void)state;
        struct agent a = {.pid = -1, .fd = -1};
        if (!agent_start(&a))
                skip();
        struct live l;
        live_init(&l, a.fd);
        struct vmsnap_diag d = {0};
        struct chan *c;
        assert_int_equal(chan_get(&l, l.id, 10000, &c, &d), 0);

        /* argv byte-exact, binary output */
        const char *argv[] = {"printf", "%s|", "a b", "$x", "l1\nl2", "\xff\x80", NULL};
        struct chan_stream *s = start_exec(c, argv, false);
        uint8_t *out;
        size_t len;
        struct vmsnap_stream_event ev = drain(s, &out, &len);
        assert_int_equal(ev.kind, VMSNAP_STREAM_EXIT);
        assert_int_equal(ev.exit_code, 0);
        static const char want[] = "a b|$x|l1\nl2|\xff\x80|";
        assert_int_equal(len, sizeof(want) - 1);
        assert_memory_equal(out, want, len);
        free(out);
        chan_stream_free(s);

        /* 3 MiB through `cat` both ways at once: stdin written by a second thread within the
         * credit the agent gives while this one takes the output */
        const char *cat[] = {"cat", NULL};
        s = start_exec(c, cat, true);
        struct writer w = {.s = s, .len = 3u << 20};
        w.data = malloc(w.len);
        uint64_t seed = 7;
        test_fill_random(&seed, w.data, w.len);
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, writer_main, &w), 0);
        ev = drain(s, &out, &len);
        pthread_join(t, NULL);
        assert_int_equal(w.r, 0);
        assert_int_equal(ev.kind, VMSNAP_STREAM_EXIT);
        assert_int_equal(ev.exit_code, 0);
        assert_int_equal(len, w.len);
        assert_memory_equal(out, w.data, len);
        free(out);
        free(w.data);
        chan_stream_free(s);

        /* a call while the channel runs goes in a frame */
        json_t *answer = NULL;
        assert_int_equal(chan_call(c, l.id, "{\"op\":\"health\"}", 10000, &answer, &d), 0);
        assert_true(json_is_integer(json_object_get(answer, "uptime_ms")));
        json_decref(answer);
        chan_put(c);

        /* once nothing holds it, the reader stops at a message boundary: lines work again */
        assert_true(channel_stops(&l));
        json_t *req = json_pack("{s:s}", "op", "health");
        assert_int_equal(agent_call(&l, req, 10000, &answer, &d), 0);
        json_decref(req);
        json_decref(answer);
        agent_stop(&a);
}

/* ---- a hostile stand-in ------------------------------------------------------------------- */

enum misdeed {
        OLD_AGENT,        /* answers hello with an error, as protocol 1 agents do */
        OVER_CREDIT,      /* sends more output than the window after STARTED */
        CREDIT_OVERFLOW,  /* gives more stdin credit than a window */
        UNKNOWN_TYPE,     /* a frame of type 0x77 */
        HUGE_REPLY,       /* a REPLY of MORE pieces past 4 MiB */
        CLOSES,           /* closes the connection mid-stream */
        STALE,            /* not a misdeed: answers and frames left from an earlier
                           * connection come before the right ones */
};

struct peer {
        int fd;
        enum misdeed what;
        pthread_t thread;
};

static bool read_full(int fd, void *p, size_t n)
{
        uint8_t *q = p;
        while (n > 0) {
                ssize_t r = read(fd, q, n);
                if (r <= 0)
                        return false;
                q += r;
                n -= (size_t)r;
        }
        return true;
}

static void send_frame(int fd, uint8_t type, uint32_t stream, uint16_t flags, const void *p,
                       size_t n)
{
        uint8_t head[FRAME_HEADER];
        struct frame_header h = {.type = type, .flags = flags, .stream = stream,
                                 .length = (uint32_t)n};
        frame_header_put(head, &h);
        if (send(fd, head, sizeof(head), MSG_NOSIGNAL) < 0 ||
            (n && send(fd, p, n, MSG_NOSIGNAL) < 0)) {
                /* the host dropped us: that is what these tests want */
        }
}

/* Reads one frame (its payload into p, at most FRAME_MAX). */
static bool read_frame(int fd, struct frame_header *h, uint8_t *p)
{
        uint8_t head[FRAME_HEADER];
        return read_full(fd, head, sizeof(head)) && frame_header_get(head, h) &&
               read_full(fd, p, h->length);
}

static void *peer_main(void *arg)
{
        struct peer *pe = arg;
        char line[256];
        size_t n = 0;
        while (n < sizeof(line) - 1 && read_full(pe->fd, line + n, 1) && line[n] != '\n')
                n++;
        line[n] = '\0';
        if (pe->what == STALE) {
                const char *at = strstr(line, "\"id\":");
                long long id = at ? atoll(at + 5) : -1;
                char answer[160];
                /* the answer to an older hello, taken for this one it would say protocol 1 */
                int len = snprintf(answer, sizeof(answer), "{\"ok\":true,\"id\":%lld}\n", id + 7);
                send(pe->fd, answer, (size_t)len, MSG_NOSIGNAL);
                len = snprintf(answer, sizeof(answer), "{\"ok\":true,\"protocol\":2,\"id\":%lld}\n",
                               id);
                send(pe->fd, answer, (size_t)len, MSG_NOSIGNAL);
        }
        if (pe->what == OLD_AGENT) {
                static const char old[] = "{\"ok\":false,\"error\":\"unknown op \\\"hello\\\"\"}\n";
                send(pe->fd, old, sizeof(old) - 1, MSG_NOSIGNAL);
                return NULL;
        }
        static const char hello[] = "{\"ok\":true,\"protocol\":2}\n";
        if (pe->what != STALE)
                send(pe->fd, hello, sizeof(hello) - 1, MSG_NOSIGNAL);
        static uint8_t p[FRAME_MAX];
        struct frame_header h;
        if (!read_frame(pe->fd, &h, p))
                return NULL;
        uint32_t id = h.stream;
        if (pe->what == HUGE_REPLY) {
                memset(p, ' ', FRAME_MAX);
                for (int i = 0; i < 70; i++) /* 70 x 64 KiB > 4 MiB */
                        send_frame(pe->fd, FRAME_REPLY, id, FRAME_MORE, p, FRAME_MAX);
                return NULL;
        }
        if (pe->what == OVER_CREDIT) {
                /* before STARTED, so that the host cannot have consumed (and credited) any */
                memset(p, 'x', FRAME_MAX);
                for (int i = 0; i < 6; i++) /* 6 x 64 KiB > the 256 KiB window */
                        send_frame(pe->fd, FRAME_STDOUT, id, 0, p, FRAME_MAX - FRAME_COST);
        }
        if (pe->what == STALE) /* the end of a stream of the connection before */
                for (uint32_t other = 1; other <= 3; other++) {
                        send_frame(pe->fd, FRAME_STDOUT, id - other, 0, "stale", 5);
                        send_frame(pe->fd, FRAME_EXIT, id - other, 0, "{\"exit_code\":7}", 15);
                }
        send_frame(pe->fd, FRAME_STARTED, id, 0, "{\"pid\":42}", 10);
        if (pe->what == STALE) {
                send_frame(pe->fd, FRAME_STDOUT, id, 0, "fresh", 5);
                send_frame(pe->fd, FRAME_EXIT, id, 0, "{\"exit_code\":0,\"signal\":null}", 30);
        } else if (pe->what == OVER_CREDIT) {
                /* done */
        } else if (pe->what == CREDIT_OVERFLOW) {
                uint8_t credit[4];
                wire_put32(credit, 1);
                send_frame(pe->fd, FRAME_CREDIT, id, 0, credit, sizeof(credit));
        } else if (pe->what == UNKNOWN_TYPE) {
                send_frame(pe->fd, 0x77, id, 0, NULL, 0);
        } else if (pe->what == CLOSES) {
                send_frame(pe->fd, FRAME_STDOUT, id, 0, "partial", 7);
                shutdown(pe->fd, SHUT_RDWR);
        }
        /* wait until the host drops the connection */
        while (read_frame(pe->fd, &h, p))
                ;
        return NULL;
}

/* Runs one misdeed: a stream (or a call) on a channel to the stand-in must end with err. */
static void misdeed(enum misdeed what, int err)
{
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        struct peer pe = {.fd = sv[1], .what = what};
        assert_int_equal(pthread_create(&pe.thread, NULL, peer_main, &pe), 0);
        struct live l;
        live_init(&l, sv[0]);
        struct vmsnap_diag d = {0};
        struct chan *c;
        int r = chan_get(&l, l.id, 10000, &c, &d);
        if (what == OLD_AGENT) {
                assert_int_equal(r, -EPROTONOSUPPORT);
                assert_non_null(strstr(d.msg, "protocol 1"));
                goto out;
        }
        assert_int_equal(r, 0);
        if (what == STALE) {
                const char *argv[] = {"cat", NULL};
                struct chan_stream *s = start_exec(c, argv, false);
                uint8_t *out = NULL;
                size_t len = 0;
                struct vmsnap_stream_event ev = drain(s, &out, &len);
                assert_int_equal(ev.kind, VMSNAP_STREAM_EXIT);
                assert_int_equal(ev.exit_code, 0);
                assert_int_equal(len, 5);
                assert_memory_equal(out, "fresh", 5);
                free(out);
                chan_stream_free(s);
        } else if (what == HUGE_REPLY) {
                json_t *answer = NULL;
                assert_int_equal(chan_call(c, l.id, "{\"op\":\"list\"}", 30000, &answer, &d), err);
                assert_non_null(strstr(d.msg, "4 MiB"));
        } else {
                const char *argv[] = {"x", NULL};
                int start_err = 0;
                struct chan_stream *s = start_exec_or(c, argv, false, &start_err);
                if (s) {
                        struct vmsnap_stream_event ev = drain(s, NULL, NULL);
                        assert_int_equal(ev.kind, VMSNAP_STREAM_ERROR);
                        assert_int_equal(ev.err, err);
                        chan_stream_free(s);
                } else {
                        assert_int_equal(start_err, err);
                }
        }
        chan_put(c);
        assert_true(channel_stops(&l));
out:
        shutdown(sv[0], SHUT_RDWR);
        pthread_join(pe.thread, NULL);
        close(sv[0]);
        close(sv[1]);
}

static void test_old_agent(void **state)
{
        (void)state;
        misdeed(OLD_AGENT, -EPROTONOSUPPORT);
}

static void test_output_over_credit(void **state)
{
        (void)state;
        misdeed(OVER_CREDIT, -EPROTO);
}

static void test_credit_overflow(void **state)
{
        (void)state;
        misdeed(CREDIT_OVERFLOW, -EPROTO);
}

static void test_unknown_type(void **state)
{
        (void)state;
        misdeed(UNKNOWN_TYPE, -EPROTO);
}

static void test_huge_reply(void **state)
{
        (void)state;
        misdeed(HUGE_REPLY, -EPROTO);
}

/* After a restore, or a call given up on, the guest may still send what belonged to the
 * connection before: an answer to an older request (its id is not ours) and frames of older
 * streams (ids are random per channel). Neither may be taken for this request's. */
static void test_stale_answers_skipped(void **state)
{
        (void)state;
        misdeed(STALE, 0);
}

static void test_connection_closes(void **state)
{
        (void)state;
        misdeed(CLOSES, -ECONNRESET);
}

/* A guest that refuses restore_hook: answers every line with EPERM, counting them. */
struct refuser {
        int fd;
        int requests;
        pthread_t thread;
};

static void *refuser_main(void *arg)
{
        struct refuser *rf = arg;
        char line[4096];
        size_t n = 0;
        while (read_full(rf->fd, line + n, 1)) {
                if (line[n] != '\n' && n < sizeof(line) - 2) {
                        n++;
                        continue;
                }
                line[n] = '\0';
                n = 0;
                rf->requests++;
                const char *at = strstr(line, "\"id\":");
                char answer[160];
                int len = snprintf(answer, sizeof(answer),
                                   "{\"ok\":false,\"errno\":1,\"error\":\"refused\",\"id\":%lld}\n",
                                   at ? atoll(at + 5) : -1);
                send(rf->fd, answer, (size_t)len, MSG_NOSIGNAL);
        }
        return NULL;
}

/* A refusal is the guest's answer: the restore hook fails with it at once instead of asking
 * again on fresh connections for 30 s (it retries only when nothing answered). */
static void test_restore_hook_refused_once(void **state)
{
        (void)state;
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        struct refuser rf = {.fd = sv[1]};
        assert_int_equal(pthread_create(&rf.thread, NULL, refuser_main, &rf), 0);
        struct live l;
        live_init(&l, sv[0]);
        struct vmsnap_diag d = {0};
        assert_int_equal(agent_restore_hook(&l, &d), -EPERM);
        assert_non_null(strstr(d.msg, "refused"));
        shutdown(sv[0], SHUT_RDWR);
        pthread_join(rf.thread, NULL);
        assert_int_equal(rf.requests, 1);
        if (l.agent_fd >= 0)
                close(l.agent_fd);
        close(sv[1]);
}

int main(void)
{
        signal(SIGPIPE, SIG_IGN);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_real_agent),
                cmocka_unit_test(test_old_agent),
                cmocka_unit_test(test_output_over_credit),
                cmocka_unit_test(test_credit_overflow),
                cmocka_unit_test(test_unknown_type),
                cmocka_unit_test(test_huge_reply),
                cmocka_unit_test(test_connection_closes),
                cmocka_unit_test(test_stale_answers_skipped),
                cmocka_unit_test(test_restore_hook_refused_once),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
