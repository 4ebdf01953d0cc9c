/* The read-only memory hand-over (docs/jail.md, "Read-only memory"): a jailed VMM that opens
 * one named path (a template's memory file, bound read-only into its jail) gets a read-only
 * descriptor of that file, whatever access it asked for. QEMU 7.2 opens mem-path O_RDWR even
 * for share=off, and the file must never be writable by a clone.
 *
 * How: before the jailer execs the VMM, it forks a supervisor and installs a seccomp filter
 * on itself whose open, openat and openat2 go to the supervisor as user notifications
 * (seccomp_unotify(2)). The supervisor reads the path the VMM passed; for exactly the named
 * path it installs its own O_RDONLY descriptor into the VMM as the syscall's result
 * (SECCOMP_IOCTL_NOTIF_ADDFD with SECCOMP_ADDFD_FLAG_SEND), every other open continues as if
 * there were no filter (SECCOMP_USER_NOTIF_FLAG_CONTINUE). The path read is only used to
 * decide to hand over a descriptor the VMM could have opened read-only itself, never trusted
 * for access: a VMM that changes it after the read gains nothing, and the kernel checks every
 * continued open as usual (the file is bound read-only and not writable by the jail's uid).
 *
 * The supervisor is a child of the VMM (the VMM keeps the jailer's pid), in the same jail
 * (uid, cgroup, process group, namespaces), not dumpable; it ends when the VMM does (its
 * listener reports POLLHUP once no filtered process is left, and PR_SET_PDEATHSIG), and
 * confines itself with a filter of its own to the few syscalls it makes. If it died first,
 * the VMM's opens would fail with ENOSYS: never a hang. */
#include "jail/internal.h"
#include "util/cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

/* The syscalls that open a path; the index of their path and flags arguments. */
static const struct {
        const char *name;
        unsigned path_arg, flags_arg;
        bool flags_in_how; /* openat2: the flags are the first field of struct open_how */
} opens[] = {
        {"open", 0, 1, false},
        {"openat", 1, 2, false},
        {"openat2", 1, 2, true},
};

/* Reads len bytes at addr of process pid into buf; true when all of them were read. */
static bool read_target(pid_t pid, uint64_t addr, void *buf, size_t len)
{
        struct iovec local = {buf, len}, remote = {(void *)(uintptr_t)addr, len};
        return process_vm_readv(pid, &local, 1, &remote, 1, 0) == (ssize_t)len;
}

/* The open flags of req when it opens exactly `path`, else -1. Reads exactly strlen(path)+1
 * bytes: a shorter string that ends before unmapped memory simply does not match. */
static int64_t matching_open(const struct seccomp_notif *req, const char *path)
{
        char buf[PATH_MAX];
        size_t len = strlen(path) + 1;
        for (size_t i = 0; i < sizeof(opens) / sizeof(opens[0]); i++) {
                if (seccomp_syscall_resolve_name(opens[i].name) != req->data.nr)
                        continue;
                if (!read_target((pid_t)req->pid, req->data.args[opens[i].path_arg], buf, len) ||
                    memcmp(buf, path, len) != 0)
                        return -1;
                uint64_t flags = req->data.args[opens[i].flags_arg];
                if (opens[i].flags_in_how &&
                    !read_target((pid_t)req->pid, flags, &flags, sizeof(flags)))
                        return -1;
                return (int64_t)(flags & 0xffffffffu);
        }
        return -1;
}

/* Answers one notification: our descriptor for the named path, else the open goes on. */
static void answer(int listener, int fd, const char *path, const struct seccomp_notif *req,
                   struct seccomp_notif_resp *resp)
{
        int64_t flags = matching_open(req, path);
        /* The read above must have been of the process still waiting in this syscall (a pid
         * reused meanwhile would be another process): seccomp_unotify(2). */
        if (flags >= 0 && seccomp_notify_id_valid(listener, req->id) == 0) {
                struct seccomp_notif_addfd add = {
                        .id = req->id,
                        .flags = SECCOMP_ADDFD_FLAG_SEND,
                        .srcfd = (uint32_t)fd,
                        .newfd_flags = (uint32_t)(flags & O_CLOEXEC),
                };
                if (ioctl(listener, SECCOMP_IOCTL_NOTIF_ADDFD, &add) >= 0 || errno == ENOENT)
                        return; /* answered (or the VMM left the syscall) */
                resp->error = -errno; /* the open fails with it: never a writable file */
                resp->flags = 0;
        } else {
                resp->error = 0;
                resp->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
        }
        resp->id = req->id;
        resp->val = 0;
        seccomp_notify_respond(listener, resp); /* ENOENT: the VMM left the syscall */
}

/* The supervisor's own filter, once it holds what it needs: it reads the VMM's memory,
 * answers on its listener and exits; anything else kills it (the VMM's opens then fail
 * with ENOSYS). Returns 0 or a negative errno. */
static int confine_supervisor(int listener)
{
        static const char *const allowed[] = {"poll", "ppoll", "process_vm_readv", "close",
                                              "exit", "exit_group", "rt_sigreturn",
                                              "restart_syscall", "write"};
        scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_KILL_PROCESS);
        if (!ctx)
                return -ENOMEM;
        int r = 0;
        for (size_t i = 0; r == 0 && i < sizeof(allowed) / sizeof(allowed[0]); i++) {
                int nr = seccomp_syscall_resolve_name(allowed[i]);
                if (nr != __NR_SCMP_ERROR && nr >= 0)
                        r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
        }
        if (r == 0) /* the seccomp ioctls, on the listener only */
                r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
                                     SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)listener));
        if (r == 0)
                r = seccomp_load(ctx);
        seccomp_release(ctx);
        return r;
}

/* The supervisor's loop; returns when no filtered process is left. */
static void serve(int listener, int fd, const char *path)
{
        struct seccomp_notif *req = NULL;
        struct seccomp_notif_resp *resp = NULL;
        if (seccomp_notify_alloc(&req, &resp) != 0 || confine_supervisor(listener) < 0)
                return;
        for (;;) {
                struct pollfd p = {.fd = listener, .events = POLLIN};
                if (poll(&p, 1, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        break;
                }
                if (p.revents & (POLLHUP | POLLERR | POLLNVAL))
                        break;
                memset(req, 0, sizeof(*req));
                if (seccomp_notify_receive(listener, req) != 0)
                        continue; /* interrupted, or the process left the syscall */
                answer(listener, fd, path, req, resp);
        }
        /* req and resp are not freed: the process exits next, and free may need a syscall
         * its filter does not allow */
}

/* Receives one descriptor over sock (SCM_RIGHTS); -1 when the peer sent none. */
static int recv_fd(int sock)
{
        char byte, ctl[CMSG_SPACE(sizeof(int))];
        struct iovec iov = {&byte, 1};
        struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl,
                           .msg_controllen = sizeof(ctl)};
        ssize_t n;
        while ((n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
                ;
        struct cmsghdr *c = n > 0 ? CMSG_FIRSTHDR(&m) : NULL;
        if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
            c->cmsg_len != CMSG_LEN(sizeof(int)))
                return -1;
        int fd;
        memcpy(&fd, CMSG_DATA(c), sizeof(fd));
        return fd;
}

static int send_fd(int sock, int fd)
{
        char byte = 0, ctl[CMSG_SPACE(sizeof(int))] = {0};
        struct iovec iov = {&byte, 1};
        struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl,
                           .msg_controllen = sizeof(ctl)};
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(fd));
        ssize_t n;
        while ((n = sendmsg(sock, &m, MSG_NOSIGNAL)) < 0 && errno == EINTR)
                ;
        return n == 1 ? 0 : -errno;
}

/* The supervisor's side after fork: waits for the listener, serves, exits. */
static void __attribute__((noreturn)) supervisor(pid_t parent, int sock, int fd, const char *path)
{
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0); /* the VMM (same uid) may not ptrace it */
        if (getppid() != parent)
                _exit(0);
        int listener = recv_fd(sock);
        close(sock);
        if (listener >= 0)
                serve(listener, fd, path);
        _exit(0); /* no exit handlers: a sanitizer's exit work cannot run in a jail */
}

/* The notification filter on open, openat and openat2; everything else (other
 * architectures too) is allowed as if there were no filter. Returns the listener or -errno. */
static int install_filter(void)
{
        scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
        if (!ctx)
                return -ENOMEM;
        int r = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_ALLOW);
        for (size_t i = 0; r == 0 && i < sizeof(opens) / sizeof(opens[0]); i++) {
                int nr = seccomp_syscall_resolve_name(opens[i].name);
                if (nr != __NR_SCMP_ERROR && nr >= 0)
                        r = seccomp_rule_add(ctx, SCMP_ACT_NOTIFY, nr, 0);
        }
        if (r == 0)
                r = seccomp_load(ctx);
        int listener = r == 0 ? seccomp_notify_fd(ctx) : r;
        seccomp_release(ctx);
        return listener;
}

int jail_handover_start(const char *path, struct vmsnap_diag *d)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return vmsnap_diag(d, -errno, "%s: cannot open it read-only in the jail: %s",
                                   path, strerror(errno));
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
                return vmsnap_diag(d, -errno, "socketpair: %s", strerror(errno));
        pid_t parent = getpid(), pid = fork();
        if (pid < 0) {
                int e = errno;
                close(sv[0]);
                close(sv[1]);
                return vmsnap_diag(d, -e, "fork of the memory supervisor: %s", strerror(e));
        }
        if (pid == 0) {
                close(sv[0]);
                supervisor(parent, sv[1], fd, path);
        }
        close(sv[1]);
        int listener = install_filter();
        int r = listener < 0 ? listener : send_fd(sv[0], listener);
        if (listener >= 0)
                close(listener);
        close(sv[0]); /* the supervisor, without a listener, ends */
        if (r < 0)
                return vmsnap_diag(d, r, "%s: the read-only hand-over filter: %s", path,
                                   strerror(-r));
        return 0;
}

/* The probe's child: the filter and supervisor for `path`, then an O_RDWR open of it must
 * come back as a read-only descriptor. Exit 0 when it did. */
static void __attribute__((noreturn)) probe_child(const char *path)
{
        struct vmsnap_diag d = {0};
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || jail_handover_start(path, &d) < 0)
                _exit(2);
        int fd = open(path, O_RDWR | O_CLOEXEC);
        _exit(fd >= 0 && (fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDONLY ? 0 : 3);
}

int jail_handover_probe(const char *path, struct vmsnap_diag *d)
{
        pid_t pid = fork();
        if (pid < 0)
                return vmsnap_diag(d, -errno, "fork: %s", strerror(errno));
        if (pid == 0)
                probe_child(path);
        int status;
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return vmsnap_diag(d, -errno, "waitpid: %s", strerror(errno));
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
                return 0;
        return vmsnap_diag(d, -EOPNOTSUPP,
                           "this kernel cannot hand a jailed VMM a read-only descriptor "
                           "(seccomp user notification with SECCOMP_ADDFD_FLAG_SEND, Linux "
                           "5.14): a jailed clone gets its own copy of a template's memory");
}
