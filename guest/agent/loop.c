/* The event loop of one host connection: one poll over the connection, SIGCHLD (a
 * signalfd) and every stream's pipes; input handled as it comes; queued frames written as
 * the host takes them; children reaped and their exits given to their streams. Host
 * disconnects (read() returning 0, POLLHUP) are normal on the virtio-serial port: a restore
 * always causes one; the host comes back on the same fd. */
#include "agent.h"

#include <sys/signalfd.h>

static int sigchld_fd = -1;

/* Blocks SIGCHLD and makes the signalfd the loop waits on (once per process). */
static void sigchld_setup(void)
{
	sigset_t set;

	if (sigchld_fd >= 0)
		return;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, NULL);
	sigchld_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sigchld_fd < 0)
		logmsg("signalfd: %s; exits are noticed once a second", strerror(errno));
}

/* Reaps every exited child: a stream's command, a detached process or an orphan (as PID 1,
 * or subreaper, every background job ends up ours). */
static void reap(struct conn *c)
{
	struct signalfd_siginfo si;
	pid_t pid;
	int status;

	while (sigchld_fd >= 0 && read(sigchld_fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
		;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		proc_exited(pid, status);
		for (struct stream *s = c->streams; s; s = s->next)
			if (stream_reaped(s, pid, status))
				break;
	}
}

static size_t pending(const struct conn *c)
{
	return c->out.len - c->out_off;
}

/* Writes what the fd takes now. Returns false on a write error other than EAGAIN. */
static bool flush_some(struct conn *c)
{
	while (pending(c) > 0) {
		ssize_t w = write(c->fd, c->out.data + c->out_off, pending(c));
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return errno == EAGAIN;
		c->out_off += (size_t)w;
	}
	c->out.len = c->out_off = 0;
	return true;
}

bool conn_flush_blocking(struct conn *c)
{
	while (pending(c) > 0) {
		struct pollfd pfd = { c->fd, POLLOUT, 0 };
		if (!flush_some(c))
			break;
		if (pending(c) == 0)
			return true;
		if (poll(&pfd, 1, WRITE_STALL_MS) <= 0 ||
		    ((pfd.revents & (POLLHUP | POLLERR | POLLNVAL)) && !(pfd.revents & POLLOUT)))
			break;
	}
	if (pending(c) == 0)
		return true;
	c->out.len = c->out_off = 0; /* the host stopped reading: what it missed is dropped */
	return false;
}

void conn_close_streams(struct conn *c)
{
	for (struct stream *s = c->streams; s; s = s->next)
		if (!s->dead)
			stream_close(s); /* freed by the sweep at the end of the iteration */
}

void conn_reset(struct conn *c)
{
	for (struct stream *s = c->streams, *next; s; s = next) {
		next = s->next;
		if (!s->dead)
			stream_close(s);
		stream_free(s);
	}
	c->streams = NULL;
	c->out.len = c->out_off = 0;
	c->in.len = c->in.scanned = 0;
	c->in.discarding = false;
}

/* Frees the streams that ended in this iteration. */
static void sweep(struct conn *c)
{
	struct stream **p = &c->streams;

	while (*p) {
		struct stream *s = *p;
		if (s->dead) {
			*p = s->next;
			stream_free(s);
		} else {
			p = &s->next;
		}
	}
}

/* Reads and handles what the host sent. Returns 1 (go on), 0 (the host closed its side) or
 * -1 (the fd failed). Reading stops while too much output waits for the host. */
static int read_input(struct conn *c, short revents)
{
	ssize_t n = 0;

	while (pending(c) <= OUT_HARD &&
	       (n = read(c->fd, c->in.data + c->in.len, MAX_LINE - c->in.len)) > 0) {
		c->host_gone = false;
		c->in.len += (size_t)n;
		if (!conn_handle_input(c)) {
			conn_reset(c);
			conn_send_error(c, 0, -EPROTO, "protocol error: every stream was closed");
		}
	}
	if (n == 0 || (n < 0 && errno == EAGAIN && (revents & POLLHUP)))
		return 0;
	if (n < 0 && errno != EAGAIN && errno != EINTR)
		return -1;
	return 1;
}

/* Grows the poll array to hold n entries. */
static struct pollfd *poll_array(size_t n)
{
	static struct pollfd *pfd;
	static size_t cap;

	if (n > cap) {
		struct pollfd *p = realloc(pfd, n * sizeof(*p));
		if (!p)
			return NULL;
		pfd = p;
		cap = n;
	}
	return pfd;
}

/* Fills the poll set; returns its size and the poll timeout in *timeout. */
static size_t build_poll(struct conn *c, struct pollfd *pfd, int *timeout)
{
	int64_t now = now_ms(CLOCK_MONOTONIC);
	size_t n = 0;

	pfd[n++] = (struct pollfd){ c->fd, (short)((pending(c) <= OUT_HARD ? POLLIN : 0) |
						   (pending(c) ? POLLOUT : 0)), 0 };
	pfd[n++] = (struct pollfd){ sigchld_fd, POLLIN, 0 };
	*timeout = sigchld_fd < 0 ? 1000 : -1;
	for (struct stream *s = c->streams; s; s = s->next) {
		int left = stream_check_deadline(s, now);
		if (left >= 0 && (*timeout < 0 || left < *timeout))
			*timeout = left;
		if (stream_busy(c, s))
			*timeout = 0;
		n += (size_t)stream_poll_fds(c, s, pfd + n);
	}
	return n;
}

static size_t count_streams(const struct conn *c)
{
	size_t n = 0;

	for (const struct stream *s = c->streams; s; s = s->next)
		n++;
	return n;
}

void conn_serve(struct conn *c)
{
	sigchld_setup();
	for (;;) {
		struct pollfd *pfd = poll_array(2 + 3 * count_streams(c));
		int timeout, r;
		size_t n;

		if (!pfd) {
			sleep_ms(100); /* out of memory: wait for some */
			continue;
		}
		n = build_poll(c, pfd, &timeout);
		if (c->host_gone)
			timeout = IDLE_RETRY_MS; /* a closed port polls readable-with-HUP at once */
		if (poll(pfd, (nfds_t)n, timeout) < 0 && errno != EINTR)
			sleep_ms(10);
		reap(c);
		if (pfd[0].revents & POLLNVAL)
			return;
		r = pfd[0].revents ? read_input(c, pfd[0].revents) : 1;
		if (r < 0)
			return;
		if (r == 0) { /* host side closed: its streams end; wait for the next host */
			conn_reset(c);
			if (!c->is_port)
				return;
			c->host_gone = true;
			sleep_ms(IDLE_RETRY_MS);
			continue;
		}
		for (struct stream *s = c->streams; s; s = s->next)
			stream_pump(c, s);
		flush_some(c);
		sweep(c);
	}
}
