/* The page server's seccomp filter (docs/jail.md): exactly the syscalls src/uffd/ and
 * src/cli/uffd.c make once the server has opened its inputs, found by reading the code and
 * tracing a restore; everything else kills the process. Names are resolved for the native
 * architecture; one that does not exist there (epoll_wait on arm64) is skipped. */
#include "jail/internal.h"

#include <errno.h>
#include <linux/userfaultfd.h>
#include <sched.h>
#include <seccomp.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* clang-format off */
static const char *const allowed[] = {
        /* memory */
        "mmap", "munmap", "mremap", "mprotect", "madvise", "brk",
        /* threads (clone is below, with its flags) */
        "futex", "set_robust_list", "rseq", "sched_yield", "sched_getaffinity", "exit",
        "exit_group", "gettid", "getpid",
        /* signals */
        "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "restart_syscall",
        /* the event loop, the handshake, control clients */
        "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2",
        "timerfd_create", "timerfd_settime", "eventfd2", "accept4", "recvmsg", "sendto",
        "getsockopt", "fcntl", "read", "write", "close",
        /* the VMM: watched and, when it cannot be served, killed */
        "pidfd_open", "pidfd_send_signal", "kill",
        /* the snapshot's files; memfile.ws written into the --ws-dir bound into the jail */
        "pread64", "lseek", "fstat", "newfstatat", "statx", "readlink", "readlinkat", "openat",
        "fsync", "renameat", "renameat2", "unlink", "unlinkat",
        /* staged writes set their mode explicitly (0600 whatever the umask) */
        "fchmod",
        /* time, and what glibc asks for on the way */
        "clock_gettime", "clock_nanosleep", "nanosleep", "gettimeofday", "getrandom",
        "sysinfo",
};

/* What LeakSanitizer's exit-time check uses (its tracer process, ptrace, /proc/PID/task),
 * found by running a jailed restore and reading the kernel's seccomp audit lines. */
static const char *const sanitizer_allowed[] = {
        "ptrace", "wait4", "waitid", "prctl", "getppid", "getdents", "getdents64", "pipe",
        "pipe2", "tgkill", "uname", "getrlimit", "prlimit64", "open", "stat", "lstat",
        "access", "dup", "dup2", "dup3",
};
/* clang-format on */

/* glibc's pthread_create: a thread, never a process. */
#define THREAD_CLONE_FLAGS                                                                         \
        (CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM |        \
         CLONE_SETTLS | CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID)
/* LeakSanitizer's StopTheWorld tracer (sanitizer builds only). */
#define LSAN_CLONE_FLAGS (CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_UNTRACED)

static const unsigned long uffd_ioctls[] = {UFFDIO_COPY, UFFDIO_ZEROPAGE, UFFDIO_WAKE};

/* Argument `arg` equals value (all 64 bits). */
static struct scmp_arg_cmp arg_eq(unsigned arg, scmp_datum_t value)
{
        return (struct scmp_arg_cmp){.arg = arg, .op = SCMP_CMP_EQ, .datum_a = value};
}

/* The low 32 bits of argument `arg` equal value (what the kernel reads of clone flags and
 * ioctl numbers). */
static struct scmp_arg_cmp arg_eq32(unsigned arg, scmp_datum_t value)
{
        return (struct scmp_arg_cmp){
                .arg = arg, .op = SCMP_CMP_MASKED_EQ, .datum_a = 0xffffffffu, .datum_b = value};
}

static int allow_names(scmp_filter_ctx ctx, const char *const *names, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                int nr = seccomp_syscall_resolve_name(names[i]);
                if (nr < 0)
                        continue; /* not a syscall of this architecture */
                int r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Rules that look at arguments: clone's flags, the ioctl requests, tgkill's target. The
 * kernel reads clone flags and ioctl numbers as 32 bits, so only those are compared. */
static int add_argument_rules(scmp_filter_ctx ctx)
{
        int r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
                                 arg_eq32(0, THREAD_CLONE_FLAGS));
        /* clone3's flags sit behind a pointer seccomp cannot read: ENOSYS makes glibc fall
         * back to clone, whose flags are checked above. */
        if (r == 0)
                r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
        for (size_t i = 0; r == 0 && i < sizeof(uffd_ioctls) / sizeof(uffd_ioctls[0]); i++)
                r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
                                     arg_eq32(1, uffd_ioctls[i]));
        /* stdio asks whether stdout is a terminal before the --json line. */
        if (r == 0)
                r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOTTY), SCMP_SYS(ioctl), 1,
                                     arg_eq32(1, TCGETS));
        /* abort() signals its own process. */
        if (r == 0)
                r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1,
                                     arg_eq(0, (scmp_datum_t)getpid()));
        return r;
}

static int add_sanitizer_rules(scmp_filter_ctx ctx)
{
        if (!JAIL_SANITIZER)
                return 0;
        int r = allow_names(ctx, sanitizer_allowed,
                            sizeof(sanitizer_allowed) / sizeof(sanitizer_allowed[0]));
        if (r == 0)
                r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
                                     arg_eq32(0, LSAN_CLONE_FLAGS));
        return r;
}

int jail_seccomp_install(struct vmsnap_diag *d)
{
        scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_KILL_PROCESS);
        if (!ctx)
                return vmsnap_diag(d, -ENOMEM, "jail: seccomp_init failed");
        int r = allow_names(ctx, allowed, sizeof(allowed) / sizeof(allowed[0]));
        if (r == 0)
                r = add_argument_rules(ctx);
        if (r == 0)
                r = add_sanitizer_rules(ctx);
        if (r < 0) {
                seccomp_release(ctx);
                return vmsnap_diag(d, r, "jail: cannot build the seccomp filter: %s", strerror(-r));
        }
        r = seccomp_load(ctx);
        seccomp_release(ctx);
        if (r < 0)
                return vmsnap_diag(d, r, "jail: cannot load the seccomp filter: %s", strerror(-r));
        return 0;
}

bool jail_seccomp_available(void)
{
        return seccomp_api_get() >= 1;
}
