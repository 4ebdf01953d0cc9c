/* Processes the agent starts for exec streams (docs/guest.md §2.3): argv exactly as given,
 * each in its own session, on pipes or a PTY; and the process table `ps` lists and `kill`
 * signals: every running process the agent started, and detached ones until their exit has
 * been listed once. */
#include "agent.h"

#include <sys/ioctl.h>
#include <termios.h>

#define PROCS_MAX 256

struct proc {
	pid_t pid;
	char command[200]; /* argv joined with spaces, for display */
	int64_t started;   /* unix seconds */
	bool detached, tty, running;
	int status;
	char log[64];
};

static struct proc procs[PROCS_MAX];
static size_t n_procs;

/* ---- the child ---- */

/* Child side: the environment asked for on top of ours, and the defaults a shell expects. */
static void child_env(const struct spawn_spec *s)
{
	if (!getenv("HOME"))
		setenv("HOME", "/root", 1);
	if (s->tty && !getenv("TERM"))
		setenv("TERM", "xterm", 1);
	for (char **e = s->env; e && *e; e++)
		putenv(*e);
}

/* Child side: stdio in place (fds 0-2 from the pipes, the PTY slave or the log), a fresh
 * session, default signal state, the cwd, then exec. Never returns. */
static void child_run(const struct spawn_spec *s, const int stdio[3])
{
	sigset_t none;

	setsid();
	for (int i = 0; i < 3; i++)
		if (dup2(stdio[i], i) < 0)
			_exit(126);
	if (s->tty && ioctl(0, TIOCSCTTY, 0) < 0)
		_exit(126);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (int sig = 1; sig < NSIG; sig++) /* whatever we ignore or inherited ignored */
		if (sig != SIGKILL && sig != SIGSTOP)
			signal(sig, SIG_DFL);
	child_env(s);
	if (chdir(s->cwd && s->cwd[0] ? s->cwd : "/") < 0) {
		dprintf(2, "vmsnap-agent: cwd %s: %s\n", s->cwd, strerror(errno));
		_exit(126);
	}
	execvp(s->argv[0], s->argv);
	dprintf(2, "vmsnap-agent: exec %s: %s\n", s->argv[0], strerror(errno));
	_exit(errno == ENOENT ? 127 : 126);
}

/* ---- the parent ---- */

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* A pipe for the child's stdin: our (write) end non-blocking, both close-on-exec. */
static int make_stdin_pipe(int fds[2])
{
	if (pipe2(fds, O_CLOEXEC) < 0)
		return -errno;
	if (fcntl(fds[1], F_SETFL, O_NONBLOCK) < 0) {
		int err = -errno;
		close(fds[0]);
		close(fds[1]);
		return err;
	}
	return 0;
}

/* Opens a PTY pair: the master (ours, non-blocking) and the slave, sized rows x cols. */
static int open_pty(const struct spawn_spec *s, int *ret_master, int *ret_slave)
{
	struct winsize ws = { .ws_row = s->rows ? s->rows : 24, .ws_col = s->cols ? s->cols : 80 };
	char name[64];
	int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK), slave, err;

	if (master < 0)
		return -errno;
	if (grantpt(master) < 0 || unlockpt(master) < 0 || ptsname_r(master, name, sizeof(name)))
		goto fail;
	slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (slave < 0)
		goto fail;
	ioctl(master, TIOCSWINSZ, &ws);
	*ret_master = master;
	*ret_slave = slave;
	return 0;
fail:
	err = -errno;
	close(master);
	return err;
}

/* The fds of a detached process: /dev/null in, its log file out. */
static int open_detached_stdio(int child[3], char *log, size_t size)
{
	static unsigned seq;

	mkdir(LOG_DIR, 0700);
	snprintf(log, size, LOG_DIR "/%u-%u.log", (unsigned)now_ms(CLOCK_BOOTTIME), ++seq);
	child[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
	child[1] = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	child[2] = child[1];
	if (child[0] < 0 || child[1] < 0) {
		int err = -errno;
		close_fd(&child[0]);
		close_fd(&child[1]);
		return err;
	}
	return 0;
}

/* Makes the fds for the child (child[]) and ours (ret). */
static int make_stdio(const struct spawn_spec *s, int child[3], struct spawned *ret)
{
	int in[2] = { -1, -1 }, out[2] = { -1, -1 }, err[2] = { -1, -1 }, r;

	if (s->detach)
		return open_detached_stdio(child, ret->log, sizeof(ret->log));
	if (s->tty) {
		if ((r = open_pty(s, &ret->out_fd, &child[0])) < 0)
			return r;
		ret->in_fd = s->with_stdin ? ret->out_fd : -1;
		child[1] = child[2] = child[0];
		return 0;
	}
	if ((r = s->with_stdin ? make_stdin_pipe(in) : 0) < 0 || (r = make_pipe(out)) < 0 ||
	    (r = make_pipe(err)) < 0)
		goto fail;
	if (!s->with_stdin && (in[0] = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) {
		r = -errno;
		goto fail;
	}
	fcntl(out[1], F_SETPIPE_SZ, 256 << 10); /* fewer wake-ups for bulk output */
	child[0] = in[0], child[1] = out[1], child[2] = err[1];
	ret->in_fd = in[1], ret->out_fd = out[0], ret->err_fd = err[0];
	return 0;
fail:
	for (int i = 0; i < 2; i++) {
		close_fd(&in[i]);
		close_fd(&out[i]);
		close_fd(&err[i]);
	}
	return r;
}

int spawn_process(const struct spawn_spec *s, struct spawned *ret, char *why, size_t size)
{
	struct spawned sp = { .pid = -1, .in_fd = -1, .out_fd = -1, .err_fd = -1 };
	int child[3] = { -1, -1, -1 }, r;
	pid_t pid;

	if ((r = make_stdio(s, child, &sp)) < 0) {
		snprintf(why, size, "cannot make the command's stdio: %s", strerror(-r));
		return r;
	}
	pid = fork();
	if (pid == 0)
		child_run(s, child);
	r = pid < 0 ? -errno : 0;
	close_fd(&child[0]);
	if (child[1] != child[0])
		close_fd(&child[1]);
	if (child[2] != child[1] && child[2] != child[0])
		close_fd(&child[2]);
	if (r < 0) {
		snprintf(why, size, "fork: %s", strerror(-r));
		close_fd(&sp.in_fd);
		if (sp.out_fd != sp.in_fd)
			close_fd(&sp.out_fd);
		close_fd(&sp.err_fd);
		return r;
	}
	sp.pid = pid;
	*ret = sp;
	return 0;
}

/* ---- the process table ---- */

static struct proc *proc_find(pid_t pid)
{
	for (size_t i = 0; i < n_procs; i++)
		if (procs[i].pid == pid)
			return &procs[i];
	return NULL;
}

static void proc_drop(struct proc *p)
{
	*p = procs[--n_procs];
}

/* Makes room: forgets the oldest exited detached process. */
static bool proc_make_room(void)
{
	if (n_procs < PROCS_MAX)
		return true;
	for (size_t i = 0; i < n_procs; i++)
		if (!procs[i].running) {
			proc_drop(&procs[i]);
			return true;
		}
	return false;
}

void proc_add(pid_t pid, char **argv, bool detached, bool tty, const char *log)
{
	struct proc *p;
	size_t len = 0;

	if (!proc_make_room())
		return; /* 256 running processes: the rest are not listed */
	p = &procs[n_procs++];
	*p = (struct proc){ .pid = pid, .started = now_ms(CLOCK_REALTIME) / 1000,
			    .detached = detached, .tty = tty, .running = true };
	for (char **a = argv; *a && len + 1 < sizeof(p->command); a++)
		len += (size_t)snprintf(p->command + len, sizeof(p->command) - len, "%s%s",
					a == argv ? "" : " ", *a);
	snprintf(p->log, sizeof(p->log), "%s", log ? log : "");
}

bool proc_exited(pid_t pid, int status)
{
	struct proc *p = proc_find(pid);

	if (!p)
		return false;
	p->running = false;
	p->status = status;
	return true;
}

void proc_release(pid_t pid, bool still_running)
{
	struct proc *p = proc_find(pid);

	if (!p)
		return;
	if (still_running && p->running)
		p->detached = true;
	else
		proc_drop(p);
}

static void put_proc(struct buf *b, const struct proc *p)
{
	buf_printf(b, "{\"pid\":%d,\"command\":", (int)p->pid);
	put_json_cstr(b, p->command);
	buf_printf(b, ",\"started\":%" PRId64 ",\"detached\":%s,\"tty\":%s,\"running\":%s",
		   p->started, p->detached ? "true" : "false", p->tty ? "true" : "false",
		   p->running ? "true" : "false");
	if (p->running)
		buf_puts(b, ",\"exit_code\":null,\"signal\":null");
	else if (WIFSIGNALED(p->status))
		buf_printf(b, ",\"exit_code\":%d,\"signal\":%d", 128 + WTERMSIG(p->status),
			   WTERMSIG(p->status));
	else
		buf_printf(b, ",\"exit_code\":%d,\"signal\":null", WEXITSTATUS(p->status));
	buf_puts(b, ",\"log\":");
	if (p->log[0])
		put_json_cstr(b, p->log);
	else
		buf_puts(b, "null");
	buf_puts(b, "}");
}

int op_ps(const struct request *rq, struct reply *r)
{
	(void)rq;
	buf_puts(&r->fields, ",\"processes\":[");
	for (size_t i = 0; i < n_procs; i++) {
		if (i)
			buf_puts(&r->fields, ",");
		put_proc(&r->fields, &procs[i]);
	}
	buf_puts(&r->fields, "]");
	/* An exited detached process is listed once more, with its exit status, then dropped. */
	for (size_t i = n_procs; i-- > 0;)
		if (procs[i].detached && !procs[i].running)
			proc_drop(&procs[i]);
	return 0;
}

int op_kill(const struct request *rq, struct reply *r)
{
	int sig = SIGTERM;
	struct proc *p;

	if (!rq->has_pid || rq->pid == 0 || rq->pid > INT32_MAX)
		return fail(r, -EINVAL, "kill needs \"pid\"");
	if (rq->has_signal && (rq->signal == 0 || rq->signal > 64))
		return fail(r, -EINVAL, "signal must be 1..64");
	if (rq->has_signal)
		sig = (int)rq->signal;
	p = proc_find((pid_t)rq->pid);
	if (!p)
		return fail(r, -ESRCH, "process %" PRIu64 " was not started by the agent (see ps)",
			    rq->pid);
	if (!p->running)
		return fail(r, -ESRCH, "process %d has exited", (int)p->pid);
	if (kill(-p->pid, sig) < 0 && kill(p->pid, sig) < 0)
		return fail(r, -errno, "kill %d: %s", (int)p->pid, strerror(errno));
	return 0;
}
