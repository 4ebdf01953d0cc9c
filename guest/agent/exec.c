/* The protocol-1 exec: a shell command line, run to completion, output captured. */
#include "agent.h"

#include <sys/syscall.h>
#include <sys/wait.h>

/* ----------------------------------------------------------------------- exec */

/* Output of one stream of the command: kept up to MAX_OUTPUT, the rest discarded
 * (but still read, so that the writer never blocks on a full pipe). */
struct capture {
	int fd;
	struct buf data;
	bool truncated;
};

/* Child side of exec: own session (so a timeout can kill the whole process group,
 * and no terminal signals reach it), pipes on stdout/stderr, /dev/null on stdin, and
 * the signal state a fresh process expects. Never returns. */
static void run_child(const char *cmd, int out, int err)
{
	sigset_t none;
	int null;

	setsid();
	null = open("/dev/null", O_RDONLY);
	if (null < 0 || dup2(null, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
		_exit(127);
	if (null > 2)
		close(null);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	signal(SIGCHLD, SIG_DFL);
	if (chdir("/") < 0)
		_exit(127);
	execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
	_exit(127);
}

/* Reads what is available on cap->fd. Returns bytes read, 0 at EOF (and closes the
 * fd), or -EAGAIN when the pipe is empty for now. */
static ssize_t capture_read(struct capture *cap)
{
	char chunk[65536];
	ssize_t n;

	do
		n = read(cap->fd, chunk, sizeof(chunk));
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		return -EAGAIN;
	if (n <= 0) {
		close(cap->fd);
		cap->fd = -1;
		return 0;
	}
	size_t keep = MAX_OUTPUT - cap->data.len;
	if ((size_t)n < keep)
		keep = (size_t)n;
	buf_put(&cap->data, chunk, keep);
	if (keep < (size_t)n)
		cap->truncated = true;
	return n;
}

/* After the shell exits, takes what its output pipes already hold, then closes them.
 * Background processes it started may keep the pipes open forever; we must not wait
 * for them (they get EPIPE/SIGPIPE if they write later). Bounded so that a chatty
 * background writer cannot keep us here. */
static void capture_finish(struct capture *cap)
{
	size_t budget = 4 * (size_t)MAX_OUTPUT;

	while (cap->fd >= 0) {
		ssize_t n = capture_read(cap);
		if (n <= 0 || (size_t)n >= budget)
			break;
		budget -= (size_t)n;
	}
	if (cap->fd >= 0)
		close(cap->fd);
	cap->fd = -1;
}

/* pidfd_open(2) via syscall(2): a pollable "this child has exited" event. */
int open_pidfd(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* How long to sleep in poll() with `left` ms to the deadline. Without a pidfd
 * (kernel < 5.3) nothing wakes us when the child exits, so waitpid is polled. */
static int poll_timeout(int64_t left, bool have_pidfd)
{
	if (!have_pidfd && left > 50)
		return 50;
	return left > INT32_MAX ? INT32_MAX : (int)left;
}

/* Pumps the child's output until it exits or the deadline passes; on timeout kills
 * its process group. Returns the wait status and whether the timeout fired. */
static void wait_child(pid_t pid, struct capture cap[2], int64_t deadline, int *ret_status,
		       bool *ret_timed_out)
{
	int pidfd = open_pidfd(pid), status = 0;
	bool timed_out = false;

	for (;;) {
		struct pollfd pfd[3] = { { cap[0].fd, POLLIN, 0 }, { cap[1].fd, POLLIN, 0 },
					 { pidfd, POLLIN, 0 } };
		int64_t left = deadline - now_ms(CLOCK_MONOTONIC);

		if (waitpid(pid, &status, WNOHANG) == pid)
			break;
		if (left <= 0) {
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
			timed_out = true;
			break;
		}
		if (poll(pfd, 3, poll_timeout(left, pidfd >= 0)) < 0 && errno != EINTR)
			sleep_ms(10);
		for (int i = 0; i < 2; i++)
			if (cap[i].fd >= 0 && pfd[i].revents)
				capture_read(&cap[i]);
	}
	if (pidfd >= 0)
		close(pidfd);
	*ret_status = status;
	*ret_timed_out = timed_out;
}

/* Creates a pipe whose read end (ours) is non-blocking and whose write end (the
 * child's) is blocking, both close-on-exec (dup2 in the child clears that). */
int make_pipe(int fds[2])
{
	if (pipe2(fds, O_CLOEXEC) < 0)
		return -errno;
	if (fcntl(fds[0], F_SETFL, O_NONBLOCK) < 0) {
		int err = -errno;
		close(fds[0]);
		close(fds[1]);
		return err;
	}
	return 0;
}

static void put_exec_result(struct reply *r, int status, bool timed_out, struct capture cap[2])
{
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);

	put_field_u64(r, "exit", (uint64_t)code);
	if (WIFSIGNALED(status))
		put_field_u64(r, "signal", (uint64_t)WTERMSIG(status));
	put_field_bool(r, "timed_out", timed_out);
	put_field_bool(r, "truncated", cap[0].truncated || cap[1].truncated);
	put_field_string(r, "stdout", cap[0].data.data ? cap[0].data.data : "", cap[0].data.len);
	put_field_string(r, "stderr", cap[1].data.data ? cap[1].data.data : "", cap[1].data.len);
}

/* Runs cmd with /bin/sh -c and returns its exit code and output. Returns as soon as
 * the shell itself exits, so `cmd &` style background jobs do not hold it up. */
int op_exec(const struct request *rq, struct reply *r)
{
	struct capture cap[2] = { { .fd = -1 }, { .fd = -1 } };
	int out[2], err[2], status, ret;
	uint64_t timeout = rq->has_timeout ? rq->timeout_ms : DEFAULT_TIMEOUT_MS;
	bool timed_out;
	pid_t pid;

	if (!rq->cmd)
		return fail(r, -EINVAL, "exec needs \"cmd\"");
	if (timeout == 0 || timeout > MAX_TIMEOUT_MS)
		return fail(r, -EINVAL, "timeout_ms must be 1..%u", MAX_TIMEOUT_MS);
	if ((ret = make_pipe(out)) < 0)
		return fail(r, ret, "pipe: %s", strerror(-ret));
	if ((ret = make_pipe(err)) < 0) {
		close(out[0]);
		close(out[1]);
		return fail(r, ret, "pipe: %s", strerror(-ret));
	}
	pid = fork();
	if (pid == 0)
		run_child(rq->cmd, out[1], err[1]);
	ret = pid < 0 ? -errno : 0;
	close(out[1]);
	close(err[1]);
	cap[0].fd = out[0];
	cap[1].fd = err[0];
	if (ret == 0) {
		wait_child(pid, cap, now_ms(CLOCK_MONOTONIC) + (int64_t)timeout, &status, &timed_out);
		capture_finish(&cap[0]);
		capture_finish(&cap[1]);
		put_exec_result(r, status, timed_out, cap);
	} else {
		capture_finish(&cap[0]);
		capture_finish(&cap[1]);
		fail(r, ret, "fork: %s", strerror(-ret));
	}
	buf_free(&cap[0].data);
	buf_free(&cap[1].data);
	return ret;
}

