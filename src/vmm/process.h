/* VMM processes, shared by the drivers: start a VMM in its own session (so the daemon can
 * restart without killing guests) with its output in a log file, wait for its control
 * socket, watch it through a pidfd, and kill its process group and reap it. */
#ifndef VMSNAP_VMM_PROCESS_H
#define VMSNAP_VMM_PROCESS_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <vmsnap/error.h>

#define VMM_DEFAULT_START_TIMEOUT_MS 10000

/* A VMM process the driver started or attached to. Plain value; zero-init then spawn or
 * attach. */
struct vmm_process {
        pid_t pid;               /* also the process group and session id; 0 when none */
        int pidfd;               /* -1 when none */
        bool child;              /* this process is its parent (it can be reaped here) */
        bool gone;               /* exited and, when a child, reaped */
        int status;              /* wait status once gone (child only), else 0 */
        char name[32];           /* "firecracker", ...: used in messages */
        char log_path[PATH_MAX]; /* its stdout and stderr; "" when unknown (attached) */
};

struct vmsnap_jail_spec;

struct vmm_spawn {
        const char *name;     /* for messages */
        char *const *argv;    /* argv[0]: absolute path, or a name looked up in $PATH */
        const char *log_path; /* stdout and stderr are appended here (created 0640) */
        const char *cwd;      /* working directory of the VMM; NULL: inherit (unused when
                                 jailed: the VMM starts in the jail's /) */
        const struct vmsnap_jail_spec *jail; /* NULL: run argv as is. Else run it through the
                                 jailer (vmsnap_jail_argv), argv[0] and every path in argv
                                 as seen inside the jail; the pid is still the VMM's */
};

/* Starts sp->argv (jailed when sp->jail) in a new session with stdin on /dev/null, stdout and
 * stderr appended to the log, default signal handling and no inherited fds. Returns 0 and fills *ret, -ENOENT
 * when the binary does not exist, or -errno (with d). */
int vmm_process_spawn(const struct vmm_spawn *sp, struct vmm_process *ret, struct vmsnap_diag *d);

/* Waits until socket_path accepts a connection. Returns 0, -ESRCH when the process exited
 * first (d quotes its exit and the end of its log), or -ETIMEDOUT after timeout_ms. */
int vmm_process_wait_socket(struct vmm_process *p, const char *socket_path, int timeout_ms,
                            struct vmsnap_diag *d);

/* A needle for vmm_process_attach that names the VMM's cgroup instead of its command line:
 * VMM_ATTACH_CGROUP "/vmsnap/<id> " (a jailed VMM cannot leave its cgroup). */
#define VMM_ATTACH_CGROUP "cgroup:"

/* Takes hold of a running pid that leads its own process group and whose command line
 * contains `needle` (e.g. its API socket path), or whose /proc/PID/cgroup contains what
 * follows VMM_ATTACH_CGROUP (newlines read as spaces). Returns 0 and fills *ret, -ESRCH when it
 * does not run, -EPERM when it is some other process, or -errno (with d). */
int vmm_process_attach(pid_t pid, const char *name, const char *needle, struct vmm_process *ret,
                       struct vmsnap_diag *d);

/* True when the process has exited; a child that exited is reaped here and its status
 * kept for vmm_process_describe_exit (p->gone then keeps every later signal away from a
 * recycled pid). */
bool vmm_process_exited(struct vmm_process *p);

/* Waits up to ms for the process to exit (a VMM whose socket just closed is usually on its
 * way out); returns true when it has. */
bool vmm_process_wait_exit(struct vmm_process *p, int ms);

/* Writes "exited with status N" / "killed by signal N" / "exited" into buf. */
void vmm_process_describe_exit(const struct vmm_process *p, char *buf, size_t size);

/* Appends "; last log line: ...; log: PATH" for p to d's message (when there is a log). */
void vmm_process_diag_log(const struct vmm_process *p, struct vmsnap_diag *d);

/* SIGKILLs the process group, waits for the leader to exit (reaps it when a child) and
 * closes the pidfd. Safe on a zeroed or already killed process. */
void vmm_process_kill(struct vmm_process *p);

/* Closes the pidfd and forgets the process, leaving it running. */
void vmm_process_release(struct vmm_process *p);

/* Runs argv to completion (e.g. `BINARY --version`) and captures its stdout and stderr,
 * NUL-terminated and truncated to size. Returns 0 when it exited 0, -ENOENT when the binary
 * does not exist, -ETIMEDOUT (killed) after timeout_ms, or -EIO/-errno (with d). */
int vmm_process_output(char *const argv[], int timeout_ms, char *out, size_t size,
                       struct vmsnap_diag *d);

/* How long to wait for a VMM's control socket: $VMSNAP_VMM_START_TIMEOUT_MS when set to a
 * positive number, else VMM_DEFAULT_START_TIMEOUT_MS. */
int vmm_process_start_timeout_ms(void);

/* Writes the pid as a decimal line to path, atomically. Returns 0 or -errno (with d). */
int vmm_process_write_pidfile(const struct vmm_process *p, const char *path, struct vmsnap_diag *d);

#endif
