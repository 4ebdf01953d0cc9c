/* `vmsnap sandbox exec` and `shell`: a command in a sandbox on a connection upgraded to
 * vmsnap-exec.v1 (docs/api.md, Exec). Its stdout and stderr are written as they come; with
 * -i our stdin goes to it; with -t it runs on a PTY and our terminal is raw (Ctrl-C and
 * Ctrl-D go to the guest, as in ssh), with window-size changes sent along; without -t,
 * SIGINT, SIGTERM, SIGHUP and SIGQUIT are passed to it (a third SIGINT ends vmsnap: the
 * command may ignore them). Exit status: the command's (128+N
 * when signal N killed it), 124 when --timeout fired, 1 when vmsnap failed. */
#include "cli/sandbox.h"
#include "util/cleanup.h"

#include "../guest/agent/protocol.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#define EXIT_TIMEOUT 124 /* as timeout(1) */
#define OUT_MAX      (FRAME_HEADER + FRAME_MAX)

struct session {
        const struct args *a;
        int fd;                  /* the upgraded connection */
        bool tty, stdin_open;
        uint8_t in[2 * OUT_MAX]; /* frames from the daemon, not yet whole */
        size_t in_len;
        uint8_t out[OUT_MAX];    /* one frame to the daemon, not yet sent */
        size_t out_len, out_off;
        bool done;
        int status;              /* our exit status once done */
        int interrupts;          /* SIGINTs passed on: the third ends vmsnap itself */
};

/* ---- the terminal ------------------------------------------------------------------------- */

static struct termios saved_termios;
static bool raw_mode;

static void restore_terminal(void)
{
        if (raw_mode)
                tcsetattr(STDIN_FILENO, TCSADRAIN, &saved_termios);
        raw_mode = false;
}

/* Raw mode on our terminal: every key goes to the guest's PTY, which does the rest. */
static void enter_raw_mode(void)
{
        struct termios t;
        if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved_termios) < 0)
                return;
        t = saved_termios;
        cfmakeraw(&t);
        if (tcsetattr(STDIN_FILENO, TCSADRAIN, &t) == 0) {
                raw_mode = true;
                atexit(restore_terminal);
        }
}

static void window_size(uint16_t *rows, uint16_t *cols)
{
        struct winsize ws = {0};
        int fd = isatty(STDIN_FILENO) ? STDIN_FILENO : STDOUT_FILENO;
        *rows = 24, *cols = 80;
        if (ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_row && ws.ws_col)
                *rows = ws.ws_row, *cols = ws.ws_col;
}

/* ---- frames out --------------------------------------------------------------------------- */

/* Queues one frame (only when nothing is pending: the caller checks). */
static void queue(struct session *s, uint8_t type, const void *p, size_t n)
{
        struct frame_header h = {.type = type, .length = (uint32_t)n};
        frame_header_put(s->out, &h);
        if (n)
                memcpy(s->out + FRAME_HEADER, p, n);
        s->out_len = FRAME_HEADER + n;
        s->out_off = 0;
}

/* Sends what the socket takes now. Returns false when the daemon is gone. */
static bool flush_out(struct session *s)
{
        while (s->out_off < s->out_len) {
                ssize_t w = send(s->fd, s->out + s->out_off, s->out_len - s->out_off,
                                 MSG_NOSIGNAL | MSG_DONTWAIT);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w < 0 && errno == EAGAIN)
                        return true;
                if (w <= 0)
                        return false;
                s->out_off += (size_t)w;
        }
        s->out_len = s->out_off = 0;
        return true;
}

/* Sends a small control frame now (blocking briefly: it is 16 bytes). */
static void send_control(struct session *s, uint8_t type, const void *p, size_t n)
{
        uint8_t f[FRAME_HEADER + 8];
        struct frame_header h = {.type = type, .length = (uint32_t)n};
        frame_header_put(f, &h);
        memcpy(f + FRAME_HEADER, p, n);
        while (s->out_off < s->out_len && flush_out(s)) /* keep frames whole */
                poll(&(struct pollfd){.fd = s->fd, .events = POLLOUT}, 1, 1000);
        if (send(s->fd, f, FRAME_HEADER + n, MSG_NOSIGNAL) < 0) {
                /* the daemon is gone: the read side says so */
        }
}

/* ---- frames in ---------------------------------------------------------------------------- */

static bool write_all(int fd, const uint8_t *p, size_t n)
{
        while (n > 0) {
                ssize_t w = write(fd, p, n);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        return false;
                p += w;
                n -= (size_t)w;
        }
        return true;
}

/* EXIT or ERROR: the status we exit with, and what to say. */
static void ended(struct session *s, uint8_t type, const uint8_t *p, size_t n)
{
        json_t *j = json_loadb((const char *)p, n, 0, NULL);
        restore_terminal();
        s->done = true;
        if (type == FRAME_ERROR || !j) {
                const char *m = json_string_value(json_object_get(j, "message"));
                fail(s->a, "%s", m ? m : "the guest agent ended the command with an error");
                s->status = CLI_FAIL;
        } else if (json_is_true(json_object_get(j, "timed_out"))) {
                fail(s->a, "timed out after %llu ms: the command was killed (exit status %d, as "
                     "timeout(1))", (unsigned long long)s->a->timeout_ms, EXIT_TIMEOUT);
                s->status = EXIT_TIMEOUT;
        } else {
                json_int_t code = json_integer_value(json_object_get(j, "exit_code"));
                s->status = code >= 0 && code <= 255 ? (int)code : CLI_FAIL;
        }
        json_decref(j);
}

/* Handles the whole frames in s->in. Returns false on something that is not a frame. */
static bool take_frames(struct session *s)
{
        size_t off = 0;
        struct frame_header h;
        while (!s->done && s->in_len - off >= FRAME_HEADER) {
                if (!frame_header_get(s->in + off, &h))
                        return false;
                if (s->in_len - off < FRAME_HEADER + h.length)
                        break;
                const uint8_t *p = s->in + off + FRAME_HEADER;
                if (h.type == FRAME_STDOUT || h.type == FRAME_STDERR)
                        write_all(h.type == FRAME_STDOUT ? STDOUT_FILENO : STDERR_FILENO, p,
                                  h.length);
                else if (h.type == FRAME_EXIT || h.type == FRAME_ERROR)
                        ended(s, h.type, p, h.length);
                off += FRAME_HEADER + h.length;
        }
        memmove(s->in, s->in + off, s->in_len - off);
        s->in_len -= off;
        return true;
}

/* ---- the loop ----------------------------------------------------------------------------- */

static int signal_fd(void)
{
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGWINCH);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGHUP);
        sigaddset(&set, SIGQUIT);
        sigprocmask(SIG_BLOCK, &set, NULL);
        return signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
}

/* A signal to us: a new window size, or one to pass on. */
static void on_signal(struct session *s, int sfd)
{
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
                uint8_t p[4];
                if (si.ssi_signo == SIGWINCH && s->tty) {
                        uint16_t rows, cols;
                        window_size(&rows, &cols);
                        wire_put16(p, rows);
                        wire_put16(p + 2, cols);
                        send_control(s, FRAME_RESIZE, p, 4);
                } else if (si.ssi_signo != SIGWINCH) {
                        wire_put32(p, si.ssi_signo);
                        send_control(s, FRAME_SIGNAL, p, 4);
                        if (si.ssi_signo == SIGINT && ++s->interrupts == 3) {
                                fail(s->a, "three interrupts: leaving; the command may still "
                                     "run (see `vmsnap sandbox ps`)");
                                s->done = true;
                                s->status = 128 + SIGINT;
                        }
                }
        }
}

/* Our stdin to the command, one frame at a time (only when the last one went out). */
static void on_stdin(struct session *s)
{
        uint8_t buf[FRAME_MAX];
        ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
                return;
        if (n <= 0) {
                s->stdin_open = false;
                queue(s, FRAME_STDIN_EOF, NULL, 0);
                return;
        }
        queue(s, FRAME_STDIN, buf, (size_t)n);
}

/* Reads from the daemon. Returns false when the connection ended. */
static bool on_socket(struct session *s)
{
        ssize_t n = read(s->fd, s->in + s->in_len, sizeof(s->in) - s->in_len);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
                return true;
        if (n <= 0)
                return false;
        s->in_len += (size_t)n;
        return take_frames(s);
}

static int session_loop(struct session *s)
{
        int sfd = signal_fd();
        while (!s->done) {
                bool pending = s->out_off < s->out_len;
                struct pollfd pfd[3] = {
                        {.fd = s->fd, .events = (short)(POLLIN | (pending ? POLLOUT : 0))},
                        {.fd = s->stdin_open && !pending ? STDIN_FILENO : -1, .events = POLLIN},
                        {.fd = sfd, .events = POLLIN},
                };
                if (poll(pfd, 3, -1) < 0 && errno != EINTR)
                        break;
                if (pfd[2].revents)
                        on_signal(s, sfd);
                if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) {
                        if (!on_socket(s))
                                break;
                }
                if (!s->done && pfd[1].revents)
                        on_stdin(s);
                if (!flush_out(s))
                        break;
        }
        if (sfd >= 0)
                close(sfd);
        restore_terminal();
        if (!s->done)
                return fail(s->a, "the connection to vmsnapd ended before the command did");
        return s->status;
}

/* ---- the request -------------------------------------------------------------------------- */

static bool utf8_valid(const char *s)
{
        json_t *j = json_string(s); /* jansson refuses bytes that are not UTF-8 */
        json_decref(j);
        return j != NULL;
}

static char *base64(const char *s)
{
        static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        size_t n = strlen(s), o = 0;
        char *out = malloc(4 * (n / 3 + 1) + 1);
        const unsigned char *p = (const unsigned char *)s;
        for (size_t i = 0; out && i < n; i += 3) {
                uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
                             (i + 2 < n ? p[i + 2] : 0);
                out[o++] = tab[v >> 18 & 63];
                out[o++] = tab[v >> 12 & 63];
                out[o++] = i + 1 < n ? tab[v >> 6 & 63] : '=';
                out[o++] = i + 2 < n ? tab[v & 63] : '=';
        }
        if (out)
                out[o] = '\0';
        return out;
}

/* The program: argv exactly (argv_b64 when a word is not UTF-8), or with --shell one shell
 * line made of the words joined with spaces. */
static json_t *program_json(const struct args *a, char **words, int n)
{
        json_t *body = json_object(), *argv = json_array();
        bool b64 = false;
        for (int i = 0; i < n; i++)
                b64 = b64 || !utf8_valid(words[i]);
        if (a->shell) {
                size_t len = 1;
                for (int i = 0; i < n; i++)
                        len += strlen(words[i]) + 1;
                _cleanup_free_ char *line = calloc(1, len);
                for (int i = 0; line && i < n; i++)
                        strcat(strcat(line, i ? " " : ""), words[i]);
                json_decref(argv);
                json_t *cmd = line ? json_string(line) : NULL;
                if (!cmd) {
                        json_decref(body);
                        return NULL; /* not UTF-8: --shell needs text */
                }
                json_object_set_new(body, "cmd", cmd);
                return body;
        }
        for (int i = 0; i < n; i++) {
                _cleanup_free_ char *enc = b64 ? base64(words[i]) : NULL;
                json_array_append_new(argv, json_string(b64 ? enc : words[i]));
        }
        json_object_set_new(body, b64 ? "argv_b64" : "argv", argv);
        return body;
}

/* The ExecRequest of the options and words. */
static json_t *exec_body(const struct args *a, char **words, int n, bool tty)
{
        json_t *body = program_json(a, words, n);
        if (!body)
                return NULL;
        json_t *env = json_object();
        for (int i = 0; i < a->nenv; i++) {
                const char *eq = strchr(a->env[i], '=');
                char name[256];
                snprintf(name, sizeof(name), "%.*s", (int)(eq - a->env[i]), a->env[i]);
                json_object_set_new(env, name, json_string(eq + 1));
        }
        const char *term = getenv("TERM");
        if (tty && term && !json_object_get(env, "TERM"))
                json_object_set_new(env, "TERM", json_string(term));
        if (json_object_size(env))
                json_object_set_new(body, "env", env);
        else
                json_decref(env);
        if (a->cwd)
                json_object_set_new(body, "cwd", json_string(a->cwd));
        if (a->timeout_ms)
                json_object_set_new(body, "timeout_ms", json_integer((json_int_t)a->timeout_ms));
        if (tty) {
                uint16_t rows, cols;
                window_size(&rows, &cols);
                json_object_set_new(body, "tty", json_true());
                json_object_set_new(body, "rows", json_integer(rows));
                json_object_set_new(body, "cols", json_integer(cols));
        }
        if (a->detach)
                json_object_set_new(body, "background", json_true());
        return body;
}

/* --detach: started in the background; its pid and log. */
static int exec_detached(struct client *c, const struct args *a, const char *path, json_t *body)
{
        json_t *res = NULL;
        int r = call(c, "POST", path, body, &res);
        if (r == CLI_OK && a->json)
                print_json(res);
        else if (r == CLI_OK)
                printf("started pid %lld in %s; its output goes to %s (see `vmsnap sandbox ps "
                       "%s`)\n", iget(res, "pid"), a->args[0], sget(res, "log"), a->args[0]);
        json_decref(res);
        return r;
}

/* --json: the collected result as the API gives it; exits with its exit code. */
static int exec_json(struct client *c, const char *path, json_t *body)
{
        json_t *res = NULL;
        int r = call(c, "POST", path, body, &res);
        if (r == CLI_OK) {
                print_json(res);
                json_int_t x = json_integer_value(json_object_get(res, "exit_code"));
                r = x >= 0 && x <= 255 ? (int)x : CLI_FAIL;
        }
        json_decref(res);
        return r;
}

static int exec_session(struct client *c, const struct args *a, const char *path, json_t *body,
                        bool tty)
{
        struct session *s = calloc(1, sizeof(*s));
        _cleanup_free_ char *extra = NULL;
        size_t extra_len = 0;
        if (!s)
                return fail(a, "out of memory");
        *s = (struct session){.a = a, .tty = tty, .stdin_open = a->interactive};
        int r = client_upgrade(c, path, body, "vmsnap-exec.v1", &s->fd, &extra, &extra_len);
        if (r == CLI_OK) {
                memcpy(s->in, extra, MIN(extra_len, sizeof(s->in)));
                s->in_len = MIN(extra_len, sizeof(s->in));
                if (!a->interactive)
                        queue(s, FRAME_STDIN_EOF, NULL, 0); /* its stdin is empty */
                if (tty && a->interactive)
                        enter_raw_mode();
                r = take_frames(s) ? session_loop(s) : fail(a, "the daemon sent no frames");
                close(s->fd);
        }
        free(s);
        return r;
}

/* exec and shell: words are the command (shell: default /bin/sh). */
static int exec_words(struct client *c, const struct args *a, char **words, int n, bool tty)
{
        char path[512];
        int r = ref_path(c, "/v1/sandboxes", a->args[0], "/exec", path, sizeof(path));
        if (r)
                return r;
        if (a->detach && (tty || a->interactive))
                return usage_error(a, "--detach runs in the background: no -i or -t");
        json_t *body = exec_body(a, words, n, tty);
        if (!body)
                return usage_error(a, "--shell needs the command line as UTF-8 text");
        if (a->detach)
                r = exec_detached(c, a, path, body);
        else if (a->json && !tty && !a->interactive)
                r = exec_json(c, path, body);
        else
                r = exec_session(c, a, path, body, tty);
        json_decref(body);
        return r;
}

int run_exec(struct client *c, const struct args *a)
{
        int r = need_args(a, 2, -1, "REF -- COMMAND [ARGS...]");
        return r ? r : exec_words(c, a, a->args + 1, a->nargs - 1, a->tty);
}

int run_shell(struct client *c, const struct args *a)
{
        static char *sh[] = {"/bin/sh", NULL};
        int r = need_args(a, 1, -1, "REF [-- COMMAND [ARGS...]]");
        if (r)
                return r;
        struct args with = *a;
        with.interactive = true;
        bool tty = isatty(STDIN_FILENO) || a->tty;
        if (a->nargs > 1)
                return exec_words(c, &with, a->args + 1, a->nargs - 1, tty);
        return exec_words(c, &with, sh, 1, tty);
}
