/* VMM processes (see process.h): posix_spawn with POSIX_SPAWN_SETSID, a pidfd to watch the
 * process without reaping it, and a process-group kill that also takes any helpers the
 * VMM started. */
#include "vmm/process.h"
#include "util/cleanup.h"
#include "util/fs.h"

#include <vmsnap/jail.h>

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define POLL_STEP_MS 10

static int64_t now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int vmm_process_start_timeout_ms(void)
{
        const char *s = getenv("VMSNAP_VMM_START_TIMEOUT_MS");
        if (s && *s) {
                char *end;
                long v = strtol(s, &end, 10);
                if (*end == '\0' && v > 0 && v <= 3600 * 1000)
                        return (int)v;
        }
        return VMM_DEFAULT_START_TIMEOUT_MS;
}

/* Attributes shared by spawn and output: new session, empty signal mask, default
 * dispositions for the signals a daemon commonly handles or ignores. */
static int spawn_attr_init(posix_spawnattr_t *attr)
{
        int r = posix_spawnattr_init(attr);
        if (r)
                return -r;
        sigset_t none, dfl;
        sigemptyset(&none);
        sigemptyset(&dfl);
        int sigs[] = {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGUSR1, SIGUSR2, SIGQUIT};
        for (size_t i = 0; i < ARRAY_SIZE(sigs); i++)
                sigaddset(&dfl, sigs[i]);
        r = posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK |
                                               POSIX_SPAWN_SETSIGDEF);
        if (!r)
                r = posix_spawnattr_setsigmask(attr, &none);
        if (!r)
                r = posix_spawnattr_setsigdefault(attr, &dfl);
        if (r)
                posix_spawnattr_destroy(attr);
        return -r;
}

static int spawn_argv(pid_t *ret_pid, char *const argv[], const posix_spawn_file_actions_t *fa,
                      const posix_spawnattr_t *attr)
{
        int r = strchr(argv[0], '/') ? posix_spawn(ret_pid, argv[0], fa, attr, argv, environ)
                                     : posix_spawnp(ret_pid, argv[0], fa, attr, argv, environ);
        return -r;
}

static void process_init(struct vmm_process *p, const char *name)
{
        memset(p, 0, sizeof(*p));
        p->pidfd = -1;
        snprintf(p->name, sizeof(p->name), "%s", name ? name : "vmm");
}

/* File actions for a VMM: stdin on /dev/null, stdout and stderr on log_fd, the working
 * directory, and nothing else inherited. */
static int spawn_actions(posix_spawn_file_actions_t *fa, int log_fd, const char *cwd)
{
        int r = posix_spawn_file_actions_init(fa);
        if (r)
                return -r;
        r = posix_spawn_file_actions_addopen(fa, 0, "/dev/null", O_RDONLY, 0);
        if (!r)
                r = posix_spawn_file_actions_adddup2(fa, log_fd, 1);
        if (!r)
                r = posix_spawn_file_actions_adddup2(fa, log_fd, 2);
        if (!r && cwd)
                r = posix_spawn_file_actions_addchdir_np(fa, cwd);
        if (!r)
                r = posix_spawn_file_actions_addclosefrom_np(fa, 3);
        if (r)
                posix_spawn_file_actions_destroy(fa);
        return -r;
}

int vmm_process_spawn(const struct vmm_spawn *sp, struct vmm_process *ret, struct vmsnap_diag *d)
{
        if (!sp || !sp->argv || !sp->argv[0] || !sp->log_path || !ret)
                return vmsnap_diag(d, -EINVAL, "vmm_process_spawn: missing argument");
        /* Opened here, not in the child, so that a failure names the log or the directory
         * rather than looking like a missing binary. */
        _cleanup_close_ int log_fd =
            open(sp->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
        if (log_fd < 0)
                return vmsnap_diag(d, -errno, "%s: cannot open the log %s: %s", sp->name,
                                   sp->log_path, strerror(errno));
        if (sp->cwd && access(sp->cwd, X_OK) < 0)
                return vmsnap_diag(d, -errno, "%s: working directory %s: %s", sp->name, sp->cwd,
                                   strerror(errno));
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t attr;
        int r = spawn_attr_init(&attr);
        if (r < 0)
                return vmsnap_diag(d, r, "%s: posix_spawnattr: %s", sp->name, strerror(-r));
        char **jailed = NULL;
        if (sp->jail)
                r = vmsnap_jail_argv(sp->jail, sp->argv, &jailed, d);
        if (r == 0)
                r = spawn_actions(&fa, log_fd, sp->jail ? NULL : sp->cwd);
        pid_t pid = 0;
        if (r == 0) {
                r = spawn_argv(&pid, jailed ? jailed : sp->argv, &fa, &attr);
                posix_spawn_file_actions_destroy(&fa);
        }
        if (r < 0 && jailed)
                vmsnap_diag(d, r, "%s: cannot start the jailer %s: %s", sp->name, jailed[0],
                            strerror(-r));
        vmsnap_jail_argv_free(jailed);
        posix_spawnattr_destroy(&attr);
        if (r < 0 && sp->jail)
                return r;
        if (r == -ENOENT || r == -EACCES)
                return vmsnap_diag(d, r, "%s: cannot run %s: %s (install it or give its path)",
                                   sp->name, sp->argv[0], strerror(-r));
        if (r < 0)
                return vmsnap_diag(d, r, "%s: cannot start %s: %s", sp->name, sp->argv[0],
                                   strerror(-r));

        process_init(ret, sp->name);
        ret->pid = pid;
        ret->child = true;
        ret->pidfd = pidfd_open(pid, 0); /* -1 on kernels before 5.3: waitid(P_PID) instead */
        snprintf(ret->log_path, sizeof(ret->log_path), "%s", sp->log_path);
        return 0;
}

/* Records the exit of a child that has exited (reaps it); returns true when it is gone. */
static bool reap_if_exited(struct vmm_process *p, bool block)
{
        if (p->gone)
                return true;
        if (!p->child)
                return false;
        for (;;) {
                int status = 0;
                pid_t r = waitpid(p->pid, &status, block ? 0 : WNOHANG);
                if (r == p->pid) {
                        p->gone = true;
                        p->status = status;
                        return true;
                }
                if (r == 0)
                        return false;
                if (errno == EINTR)
                        continue;
                /* ECHILD: someone else reaped it (a SIGCHLD handler); it is gone. */
                p->gone = true;
                return true;
        }
}

bool vmm_process_exited(struct vmm_process *p)
{
        if (!p || p->pid <= 0 || p->gone)
                return true;
        if (p->child)
                return reap_if_exited(p, false);
        if (p->pidfd >= 0) {
                struct pollfd pfd = {.fd = p->pidfd, .events = POLLIN};
                return poll(&pfd, 1, 0) > 0;
        }
        return kill(p->pid, 0) < 0 && errno == ESRCH;
}

/* Sleeps up to ms, waking early when the process exits. */
static void nap(struct vmm_process *p, int ms)
{
        if (p->pidfd >= 0) {
                struct pollfd pfd = {.fd = p->pidfd, .events = POLLIN};
                poll(&pfd, 1, ms);
                return;
        }
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)ms * 1000000};
        nanosleep(&ts, NULL);
}

bool vmm_process_wait_exit(struct vmm_process *p, int ms)
{
        int64_t deadline = now_ms() + ms;
        while (!vmm_process_exited(p)) {
                int64_t left = deadline - now_ms();
                if (left <= 0)
                        return false;
                nap(p, (int)MIN(left, (int64_t)POLL_STEP_MS));
        }
        return true;
}

void vmm_process_describe_exit(const struct vmm_process *p, char *buf, size_t size)
{
        if (p->child && p->gone && WIFEXITED(p->status))
                snprintf(buf, size, "exited with status %d", WEXITSTATUS(p->status));
        else if (p->child && p->gone && WIFSIGNALED(p->status))
                snprintf(buf, size, "was killed by signal %d (%s)", WTERMSIG(p->status),
                         strsignal(WTERMSIG(p->status)));
        else
                snprintf(buf, size, "exited");
}

/* The last non-empty line of the log (at most the last 4 KiB are read). */
static void log_last_line(const char *path, char *out, size_t size)
{
        out[0] = '\0';
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return;
        off_t end = lseek(fd, 0, SEEK_END);
        if (end <= 0)
                return;
        char buf[4097];
        uint64_t off = end > 4096 ? (uint64_t)end - 4096 : 0;
        ssize_t n = vmsnap_fs_pread_full(fd, buf, sizeof(buf) - 1, off);
        if (n <= 0)
                return;
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
                n--;
        buf[n] = '\0';
        const char *line = strrchr(buf, '\n');
        line = line ? line + 1 : buf;
        size_t len = strnlen(line, size - 1); /* the end of a long line is cut */
        memcpy(out, line, len);
        out[len] = '\0';
}

void vmm_process_diag_log(const struct vmm_process *p, struct vmsnap_diag *d)
{
        if (!d || !p || !p->log_path[0])
                return;
        char last[512];
        log_last_line(p->log_path, last, sizeof(last));
        size_t n = strlen(d->msg);
        if (last[0])
                snprintf(d->msg + n, sizeof(d->msg) - n, "; last log line: %s; log: %s", last,
                         p->log_path);
        else
                snprintf(d->msg + n, sizeof(d->msg) - n, "; log: %s", p->log_path);
}

/* One connect attempt: 0 when something accepts on path, else -errno. */
static int try_connect(const char *path)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                return -errno;
        return 0;
}

int vmm_process_wait_socket(struct vmm_process *p, const char *socket_path, int timeout_ms,
                            struct vmsnap_diag *d)
{
        int64_t deadline = now_ms() + timeout_ms;
        for (;;) {
                int r = try_connect(socket_path);
                if (r == 0)
                        return 0;
                if (r != -ENOENT && r != -ECONNREFUSED && r != -EAGAIN)
                        return vmsnap_diag(d, r, "%s: cannot connect to %s: %s", p->name,
                                           socket_path, strerror(-r));
                if (vmm_process_exited(p)) {
                        char how[96];
                        vmm_process_describe_exit(p, how, sizeof(how));
                        vmsnap_diag(d, -ESRCH, "%s (pid %d) %s before creating %s", p->name,
                                    (int)p->pid, how, socket_path);
                        vmm_process_diag_log(p, d);
                        return -ESRCH;
                }
                int64_t left = deadline - now_ms();
                if (left <= 0) {
                        vmsnap_diag(d, -ETIMEDOUT,
                                    "%s (pid %d) did not create %s within %d ms "
                                    "(raise VMSNAP_VMM_START_TIMEOUT_MS on a slow host)",
                                    p->name, (int)p->pid, socket_path, timeout_ms);
                        vmm_process_diag_log(p, d);
                        return -ETIMEDOUT;
                }
                nap(p, (int)MIN(left, (int64_t)POLL_STEP_MS));
        }
}

/* Reads /proc/<pid>/<file> (cmdline: the NULs between arguments turned into spaces). */
static int read_proc(pid_t pid, const char *file, char *buf, size_t size)
{
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOENT ? -ESRCH : -errno;
        ssize_t n = vmsnap_fs_pread_full(fd, buf, size - 1, 0);
        if (n < 0)
                return (int)n;
        for (ssize_t i = 0; i < n; i++)
                if (buf[i] == '\0' || buf[i] == '\n')
                        buf[i] = ' ';
        buf[n] = '\0';
        return 0;
}

/* True when pid is a child of this process (waitable here). */
static bool is_child(pid_t pid)
{
        siginfo_t si = {0};
        return waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0;
}

int vmm_process_attach(pid_t pid, const char *name, const char *needle, struct vmm_process *ret,
                       struct vmsnap_diag *d)
{
        if (pid <= 0 || !needle || !ret)
                return vmsnap_diag(d, -EINVAL, "%s: attach needs a pid and a command line", name);
        int pidfd = pidfd_open(pid, 0);
        if (pidfd < 0 && errno == ESRCH)
                return vmsnap_diag(d, -ESRCH, "%s: pid %d does not run", name, (int)pid);
        _cleanup_close_ int fd = pidfd; /* may be -1 on old kernels */
        _cleanup_free_ char *cmd = malloc(65536);
        if (!cmd)
                return -ENOMEM;
        /* A jailed VMM is known by its cgroup, which it cannot leave (its command line holds
         * only inside-jail paths, the same in every jail). */
        bool by_cgroup = strncmp(needle, VMM_ATTACH_CGROUP, strlen(VMM_ATTACH_CGROUP)) == 0;
        const char *want = by_cgroup ? needle + strlen(VMM_ATTACH_CGROUP) : needle;
        int r = read_proc(pid, by_cgroup ? "cgroup" : "cmdline", cmd, 65536);
        if (r < 0)
                return vmsnap_diag(d, r, "%s: pid %d: cannot read its %s: %s", name, (int)pid,
                                   by_cgroup ? "cgroup" : "command line", strerror(-r));
        if (!strstr(cmd, want))
                return vmsnap_diag(d, -EPERM,
                                   "%s: pid %d is not this sandbox's VMM (its %s does not "
                                   "name %s)",
                                   name, (int)pid, by_cgroup ? "cgroup" : "command line", want);
        if (getpgid(pid) != pid)
                return vmsnap_diag(d, -EPERM, "%s: pid %d does not lead its process group", name,
                                   (int)pid);
        process_init(ret, name);
        ret->pid = pid;
        ret->pidfd = TAKE_FD(fd);
        ret->child = is_child(pid);
        return 0;
}

void vmm_process_kill(struct vmm_process *p)
{
        if (!p || p->pid <= 0)
                return;
        if (!p->gone) {
                /* The group first (helpers the VMM started), then the leader through its
                 * pidfd so a recycled pid is never signalled. While the leader is
                 * unreaped its pid (= the group id) cannot be reused. */
                if (p->child || !vmm_process_exited(p))
                        kill(-p->pid, SIGKILL);
                if (p->pidfd >= 0)
                        pidfd_send_signal(p->pidfd, SIGKILL, NULL, 0);
                if (p->child)
                        reap_if_exited(p, true);
                else if (p->pidfd >= 0) {
                        struct pollfd pfd = {.fd = p->pidfd, .events = POLLIN};
                        while (poll(&pfd, 1, -1) < 0 && errno == EINTR)
                                ;
                }
                p->gone = true;
        }
        if (p->pidfd >= 0)
                close(p->pidfd);
        p->pidfd = -1;
}

void vmm_process_release(struct vmm_process *p)
{
        if (!p)
                return;
        if (p->pidfd >= 0)
                close(p->pidfd);
        p->pidfd = -1;
        p->pid = 0;
}

/* Reads from fd into out until EOF or the deadline. Returns 0, or -ETIMEDOUT. */
static int drain_output(int fd, int64_t deadline, char *out, size_t size)
{
        size_t len = 0;
        for (;;) {
                int64_t left = deadline - now_ms();
                if (left <= 0)
                        return -ETIMEDOUT;
                struct pollfd pfd = {.fd = fd, .events = POLLIN};
                int n = poll(&pfd, 1, (int)left);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return n == 0 ? -ETIMEDOUT : -errno;
                char buf[1024];
                ssize_t got = read(fd, buf, sizeof(buf));
                if (got < 0 && errno == EINTR)
                        continue;
                if (got <= 0)
                        break;
                size_t take = MIN((size_t)got, size - 1 - len);
                memcpy(out + len, buf, take);
                len += take;
        }
        out[len] = '\0';
        return 0;
}

int vmm_process_output(char *const argv[], int timeout_ms, char *out, size_t size,
                       struct vmsnap_diag *d)
{
        if (!argv || !argv[0] || !out || size == 0)
                return vmsnap_diag(d, -EINVAL, "vmm_process_output: missing argument");
        int pipefd[2];
        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return vmsnap_diag(d, -errno, "pipe: %s", strerror(errno));
        _cleanup_close_ int rd = pipefd[0];
        _cleanup_close_ int wr = pipefd[1];
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t attr;
        int r = spawn_attr_init(&attr);
        if (r < 0)
                return vmsnap_diag(d, r, "posix_spawnattr: %s", strerror(-r));
        r = spawn_actions(&fa, wr, NULL);
        pid_t pid = 0;
        if (r == 0) {
                r = spawn_argv(&pid, argv, &fa, &attr);
                posix_spawn_file_actions_destroy(&fa);
        }
        posix_spawnattr_destroy(&attr);
        if (r < 0)
                return vmsnap_diag(d, r, "%s: %s", argv[0],
                                   r == -ENOENT ? "not found" : strerror(-r));
        closep(&wr);
        wr = -1; /* EOF on rd once the child exits */

        r = drain_output(rd, now_ms() + timeout_ms, out, size);
        if (r < 0)
                kill(-pid, SIGKILL);
        int status = 0;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
        if (r < 0)
                return vmsnap_diag(d, r, "%s did not finish within %d ms", argv[0], timeout_ms);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                return vmsnap_diag(d, -EIO, "%s %s failed (status %d): %.200s", argv[0],
                                   argv[1] ? argv[1] : "", status, out);
        return 0;
}

int vmm_process_write_pidfile(const struct vmm_process *p, const char *path, struct vmsnap_diag *d)
{
        _cleanup_free_ char *dir = strdup(path);
        _cleanup_free_ char *base = strdup(path);
        if (!dir || !base)
                return -ENOMEM;
        _cleanup_close_ int dirfd = vmsnap_fs_open_dir(dirname(dir));
        if (dirfd < 0)
                return vmsnap_diag(d, dirfd, "%s: cannot open its directory: %s", path,
                                   strerror(-dirfd));
        char line[32];
        int n = snprintf(line, sizeof(line), "%d\n", (int)p->pid);
        return vmsnap_fs_atomic_write(dirfd, basename(base), line, (size_t)n, d);
}
