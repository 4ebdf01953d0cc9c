/* Streams of protocol 2 (docs/guest.md §2.3): a command with its stdin, stdout and stderr, or
 * a file being read or written. Output is read from a command only while the host has
 * granted credit and the outbound buffer has room, so a slow host stalls the command on a
 * full pipe instead of growing memory; stdin is buffered up to the window the host may use. */
#include "agent.h"

#include <sys/ioctl.h>

#define CREDIT_BATCH (64u << 10) /* STDIN bytes passed on before a CREDIT is sent */

static unsigned char chunk[FRAME_MAX]; /* one read at a time: the agent is single-threaded */

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

struct stream *stream_find(struct conn *c, uint32_t id)
{
	for (struct stream *s = c->streams; s; s = s->next)
		if (s->id == id && !s->dead)
			return s;
	return NULL;
}

static struct stream *stream_new(struct conn *c, uint32_t id, const struct start_fixed *f)
{
	struct stream *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->id = id;
	s->kind = f->kind;
	s->flags = f->flags;
	s->credit = STREAM_WINDOW;
	s->out_fd = s->err_fd = s->in_fd = s->file_fd = -1;
	s->next = c->streams;
	c->streams = s;
	return s;
}

void stream_free(struct stream *s)
{
	if (s->in_fd == s->out_fd)
		s->in_fd = -1;
	close_fd(&s->in_fd);
	close_fd(&s->out_fd);
	close_fd(&s->err_fd);
	close_fd(&s->file_fd);
	if (s->tmp_path)
		unlink(s->tmp_path);
	free(s->tmp_path);
	free(s->path);
	free(s->in_buf);
	free(s);
}

/* ---- START ---- */

/* Splits the strings after the fixed part: argc argv, envc env, then the cwd or path. Each
 * must be NUL-terminated inside the payload. Returns the number found, or -1. */
static int split_strings(const unsigned char *p, size_t n, char **out, int want)
{
	size_t off = START_FIXED;

	for (int i = 0; i < want; i++) {
		const unsigned char *nul = off < n ? memchr(p + off, '\0', n - off) : NULL;
		if (!nul)
			return -1;
		out[i] = (char *)p + off;
		off = (size_t)(nul - p) + 1;
	}
	return off == n ? want : -1;
}

/* Sends STARTED {"pid"[, "log"]}. */
static void send_started(struct conn *c, uint32_t id, const struct spawned *sp)
{
	struct buf json = { 0 };

	buf_printf(&json, "{\"pid\":%d", (int)sp->pid);
	if (sp->log[0]) {
		buf_puts(&json, ",\"log\":");
		put_json_cstr(&json, sp->log);
	}
	buf_puts(&json, "}");
	conn_send_json(c, FRAME_STARTED, id, &json);
	buf_free(&json);
}

/* Makes the stream of a spawned command; without memory the command is killed (nobody
 * would read its output). */
static void adopt_process(struct conn *c, uint32_t id, const struct start_fixed *f,
			  struct spawned *sp)
{
	struct stream *s = stream_new(c, id, f);

	if (!s) {
		kill(-sp->pid, SIGKILL);
		if (sp->out_fd != sp->in_fd)
			close_fd(&sp->out_fd);
		close_fd(&sp->in_fd);
		close_fd(&sp->err_fd);
		conn_send_error(c, id, -ENOMEM, "out of memory");
		return;
	}
	s->pid = sp->pid;
	s->in_fd = sp->in_fd;
	s->out_fd = sp->out_fd;
	s->err_fd = sp->err_fd;
	if (f->arg)
		s->deadline = now_ms(CLOCK_MONOTONIC) + f->arg;
}

/* START of kind exec: spawns argv (strs: argv, env, cwd); a detached process's stream ends
 * right after STARTED. */
static void start_exec(struct conn *c, uint32_t id, const struct start_fixed *f, char **strs)
{
	struct spawn_spec spec = { .tty = f->flags & START_TTY, .with_stdin = f->flags & START_STDIN,
				   .detach = f->flags & START_DETACH, .rows = f->rows,
				   .cols = f->cols, .cwd = strs[f->argc + f->envc] };
	char **argv = malloc((f->argc + 1u) * sizeof(char *));
	char **env = malloc((f->envc + 1u) * sizeof(char *));
	char why[256];
	struct spawned sp;

	if (!argv || !env) {
		conn_send_error(c, id, -ENOMEM, "out of memory");
		goto out;
	}
	memcpy(argv, strs, f->argc * sizeof(char *));
	argv[f->argc] = NULL;
	memcpy(env, strs + f->argc, f->envc * sizeof(char *));
	env[f->envc] = NULL;
	spec.argv = argv;
	spec.env = env;
	if (spawn_process(&spec, &sp, why, sizeof(why)) < 0) {
		conn_send_error(c, id, -EAGAIN, "%s", why);
		goto out;
	}
	proc_add(sp.pid, argv, spec.detach, spec.tty, sp.log);
	send_started(c, id, &sp);
	if (!spec.detach)
		adopt_process(c, id, f, &sp);
out:
	free(argv);
	free(env);
}

/* Opens a read or write stream on the path. */
static void start_file(struct conn *c, uint32_t id, const struct start_fixed *f, const char *path)
{
	struct stream *s = stream_new(c, id, f);

	if (s)
		file_stream_start(c, s, path, f->arg);
	else
		conn_send_error(c, id, -ENOMEM, "out of memory");
}

void stream_start(struct conn *c, uint32_t id, const unsigned char *p, size_t n)
{
	struct start_fixed f;
	char **strs;
	int want;

	if (n < START_FIXED) {
		conn_send_error(c, id, -EINVAL, "START is %zu bytes, shorter than its fixed part", n);
		return;
	}
	start_fixed_get(p, &f);
	want = f.argc + f.envc + 1;
	strs = malloc((size_t)want * sizeof(char *));
	if (!strs) {
		conn_send_error(c, id, -ENOMEM, "out of memory");
		return;
	}
	if (split_strings(p, n, strs, want) != want)
		conn_send_error(c, id, -EINVAL, "START strings do not match argc %u, envc %u",
				f.argc, f.envc);
	else if (f.kind == START_EXEC && f.argc > 0)
		start_exec(c, id, &f, strs);
	else if ((f.kind == START_READ || f.kind == START_WRITE) && f.argc == 0)
		start_file(c, id, &f, strs[f.envc]);
	else
		conn_send_error(c, id, -EINVAL, "START kind %u with %u arguments is not a stream",
				f.kind, f.argc);
	free(strs);
}

/* ---- frames from the host ---- */

/* Sends CREDIT for the STDIN bytes passed on, in batches (and when nothing is left). */
static void give_credit(struct conn *c, struct stream *s, bool force)
{
	unsigned char p[4];

	if (s->uncredited == 0 || (!force && s->uncredited < CREDIT_BATCH))
		return;
	wire_put32(p, s->uncredited);
	conn_send(c, FRAME_CREDIT, s->id, 0, p, sizeof(p));
	s->uncredited = 0;
}

bool stream_stdin(struct conn *c, struct stream *s, const unsigned char *p, size_t n)
{
	if (s->kind == START_WRITE) {
		file_stream_write(c, s, p, n);
		return true;
	}
	if (s->kind != START_EXEC || s->in_len + n > STREAM_WINDOW)
		return false; /* over the window: the host ignored our credit */
	s->uncredited += FRAME_COST; /* the frame is taken apart: its bytes are credited as written */
	if (s->in_fd < 0 || s->in_eof) { /* nobody reads it any more: dropped, credited */
		s->uncredited += (uint32_t)n;
		give_credit(c, s, false);
		return true;
	}
	if (!s->in_buf && !(s->in_buf = malloc(STREAM_WINDOW))) {
		conn_send_error(c, s->id, -ENOMEM, "out of memory for stdin");
		stream_close(s);
		return true;
	}
	memcpy(s->in_buf + s->in_len, p, n);
	s->in_len += n;
	return true;
}

void stream_stdin_eof(struct conn *c, struct stream *s)
{
	if (s->kind == START_WRITE)
		file_stream_finish(c, s);
	else if (!(s->flags & START_TTY)) /* a terminal has no end of input: ^D is typed */
		s->in_eof = true;
}

void stream_resize(struct stream *s, uint16_t rows, uint16_t cols)
{
	struct winsize ws = { .ws_row = rows, .ws_col = cols };

	if ((s->flags & START_TTY) && s->out_fd >= 0 && rows && cols)
		ioctl(s->out_fd, TIOCSWINSZ, &ws); /* the kernel sends SIGWINCH to the job */
}

void stream_signal(struct stream *s, int sig)
{
	pid_t fg = 0;

	if (s->kind != START_EXEC || s->exited)
		return;
	if ((s->flags & START_TTY) && s->out_fd >= 0 && ioctl(s->out_fd, TIOCGPGRP, &fg) == 0 &&
	    fg > 0 && kill(-fg, sig) == 0)
		return;
	kill(-s->pid, sig);
}

bool stream_credit(struct stream *s, uint32_t n)
{
	if (n > STREAM_WINDOW - s->credit)
		return false;
	s->credit += n;
	return true;
}

void stream_close(struct stream *s)
{
	if (s->kind == START_EXEC) {
		if (!s->exited) {
			kill(-s->pid, SIGHUP);
			kill(-s->pid, SIGCONT);
		}
		proc_release(s->pid, !s->exited);
	}
	s->dead = true;
}

/* ---- moving data ---- */

/* Writes buffered stdin to the command; credits what it passed on. */
static void pump_stdin(struct conn *c, struct stream *s)
{
	while (s->in_fd >= 0 && s->in_len > 0) {
		ssize_t w = write(s->in_fd, s->in_buf, s->in_len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN)
			break;
		if (w <= 0) { /* it closed its stdin (EPIPE): the rest is dropped */
			w = (ssize_t)s->in_len;
			if (!(s->flags & START_TTY))
				close_fd(&s->in_fd);
		}
		memmove(s->in_buf, s->in_buf + w, s->in_len - (size_t)w);
		s->in_len -= (size_t)w;
		s->uncredited += (uint32_t)w;
	}
	give_credit(c, s, s->in_len == 0);
	if (s->in_eof && s->in_len == 0 && !(s->flags & START_TTY))
		close_fd(&s->in_fd);
}

/* Reads one of the command's outputs while credit and room allow. Returns true when the fd
 * is empty for now (EAGAIN) or closed, false when credit or room stopped it. */
static bool pump_output(struct conn *c, struct stream *s, int *fd, uint8_t type)
{
	while (*fd >= 0) {
		size_t want = s->credit > FRAME_COST ? s->credit - FRAME_COST : 0;
		ssize_t n;

		if (want > sizeof(chunk))
			want = sizeof(chunk);
		if (want == 0 || !conn_room(c, want))
			return false;
		n = read(*fd, chunk, want);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return true;
		if (n <= 0) { /* EOF, or EIO from a PTY whose slave side is all closed */
			if (fd == &s->out_fd && s->in_fd == s->out_fd)
				s->in_fd = -1;
			close_fd(fd);
			return true;
		}
		conn_send(c, type, s->id, 0, chunk, (size_t)n);
		s->credit -= (uint32_t)n + FRAME_COST;
		if (s->exited && (s->drained += (size_t)n) > DRAIN_MAX)
			return true; /* a background job keeps writing: stop waiting for it */
	}
	return true;
}

/* Sends EXIT and ends the stream. */
static void finish_exec(struct conn *c, struct stream *s)
{
	struct buf json = { 0 };
	int st = s->status;

	if (WIFSIGNALED(st))
		buf_printf(&json, "{\"exit_code\":%d,\"signal\":%d", 128 + WTERMSIG(st), WTERMSIG(st));
	else
		buf_printf(&json, "{\"exit_code\":%d,\"signal\":null", WEXITSTATUS(st));
	buf_printf(&json, ",\"timed_out\":%s}", s->timed_out ? "true" : "false");
	conn_send_json(c, FRAME_EXIT, s->id, &json);
	buf_free(&json);
	proc_release(s->pid, false);
	s->dead = true;
}

void stream_pump(struct conn *c, struct stream *s)
{
	bool out_empty, err_empty;

	if (s->dead)
		return;
	if (s->kind == START_READ) {
		file_stream_pump(c, s);
		return;
	}
	if (s->kind != START_EXEC)
		return;
	pump_stdin(c, s);
	out_empty = pump_output(c, s, &s->out_fd, FRAME_STDOUT);
	err_empty = pump_output(c, s, &s->err_fd, FRAME_STDERR);
	/* Exited, and its pipes held nothing more right now: what it wrote has been sent. */
	if (s->exited && ((out_empty && err_empty) || s->drained > DRAIN_MAX))
		finish_exec(c, s);
}

bool stream_busy(const struct conn *c, const struct stream *s)
{
	if (s->dead || s->credit <= FRAME_COST || !conn_room(c, 4096))
		return false;
	return s->kind == START_READ || (s->kind == START_EXEC && s->exited);
}

int stream_poll_fds(struct conn *c, struct stream *s, struct pollfd *pfd)
{
	short in = s->credit > FRAME_COST && conn_room(c, 4096) ? POLLIN : 0;
	int n = 0;

	if (s->dead || s->kind != START_EXEC)
		return 0;
	if (s->out_fd >= 0)
		pfd[n++] = (struct pollfd){ s->out_fd, (short)(in | (s->in_fd == s->out_fd &&
								      s->in_len ? POLLOUT : 0)), 0 };
	if (s->err_fd >= 0)
		pfd[n++] = (struct pollfd){ s->err_fd, in, 0 };
	if (s->in_fd >= 0 && s->in_fd != s->out_fd && s->in_len)
		pfd[n++] = (struct pollfd){ s->in_fd, POLLOUT, 0 };
	return n;
}

bool stream_reaped(struct stream *s, pid_t pid, int status)
{
	if (s->kind != START_EXEC || s->pid != pid || s->exited)
		return false;
	s->exited = true;
	s->status = status;
	return true;
}

int stream_check_deadline(struct stream *s, int64_t now)
{
	if (s->dead || s->exited || !s->deadline)
		return -1;
	if (now < s->deadline)
		return s->deadline - now > INT32_MAX ? INT32_MAX : (int)(s->deadline - now);
	kill(-s->pid, SIGKILL);
	kill(s->pid, SIGKILL);
	s->timed_out = true;
	s->deadline = 0;
	return -1;
}
