/* vmsnap_jail_enter: the order of the steps is the design (docs/jail.md, "step by step");
 * each step lives in its own file. */
#include "jail/internal.h"
#include "util/cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* Threads of the calling process (from /proc/self/status), or -errno. */
static int count_threads(void)
{
        _cleanup_close_ int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        char buf[4096];
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        if (n < 0)
                return -errno;
        buf[n] = '\0';
        const char *p = strstr(buf, "\nThreads:");
        int threads;
        if (!p || sscanf(p + 1, "Threads: %d", &threads) != 1)
                return -EIO;
        return threads;
}

/* Root, single-threaded (unshare(CLONE_NEWNS) refuses a process whose threads share its
 * filesystem context; setresuid would change one thread only). */
static int check_caller(const char *name, struct vmsnap_diag *d)
{
        if (geteuid() != 0)
                return vmsnap_diag(d, -EPERM, "jail %s: must be entered as root (euid is %u)", name,
                                   (unsigned)geteuid());
        int threads = count_threads();
        if (threads < 0)
                return vmsnap_diag(d, threads, "jail %s: /proc/self/status: %s", name,
                                   strerror(-threads));
        if (threads != 1)
                return vmsnap_diag(d, -EBUSY,
                                   "jail %s: the process has %d threads; a jail is "
                                   "entered single-threaded",
                                   name, threads);
        return 0;
}

/* New mount, IPC, UTS and network namespaces (or the sandbox's network namespace at
 * netns_path); nothing mounted from here on reaches the host. A new network namespace is empty (a loopback that is down): a jailed process reaches
 * no host address, no localhost service and no abstract Unix socket; its VMM's sockets are
 * filesystem paths, which a network namespace does not scope. */
static int enter_namespaces(const char *name, const char *netns_path, struct vmsnap_diag *d)
{
        /* A given namespace is joined first: its path is a host path, which no longer
         * resolves once the mount namespace is pivoted. */
        if (netns_path) {
                int r = jail_netns_join(name, netns_path, d);
                if (r < 0)
                        return r;
        }
        int flags = CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | (netns_path ? 0 : CLONE_NEWNET);
        if (unshare(flags) < 0)
                return vmsnap_diag(d, -errno,
                                   "jail %s: unshare(mount, IPC, UTS, network namespaces): "
                                   "%s",
                                   name, strerror(errno));
        if (sethostname(name, strlen(name)) < 0)
                return vmsnap_diag(d, -errno, "jail %s: sethostname: %s", name, strerror(errno));
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
                return vmsnap_diag(d, -errno, "jail %s: making / private: %s", name,
                                   strerror(errno));
        return 0;
}

/* No core file, ever: RLIMIT_CORE 0, soft and hard, so that neither this process nor the
 * VMM it execs (dumpable again after execve) can raise it; a crash must not leave a copy
 * of the guest's memory on the host (docs/jail.md, "Core dumps"). */
static int forbid_core_dumps(const char *name, struct vmsnap_diag *d)
{
        const struct rlimit none = {0, 0};
        if (setrlimit(RLIMIT_CORE, &none) < 0)
                return vmsnap_diag(d, -errno, "jail %s: RLIMIT_CORE 0: %s", name, strerror(errno));
        return 0;
}

/* Everything up to the privileges: cgroup, namespaces, the root. */
static int confine(const struct vmsnap_jail_spec *s, const struct jail_conf *c,
                   struct vmsnap_diag *d)
{
        int r = jail_cgroup_create(c, s->name, &s->limits, d);
        if (r == 0)
                r = jail_cgroup_join(c, s->name, getpid(), d);
        if (r == 0)
                r = forbid_core_dumps(s->name, d);
        if (r == 0)
                r = enter_namespaces(s->name, s->netns_path, d);
        if (r == 0)
                r = jail_build_root(s, d);
        if (r == 0 && !s->keep_fds && close_range(3, ~0u, 0) < 0)
                r = vmsnap_diag(d, -errno, "jail %s: closing inherited fds: %s", s->name,
                                strerror(errno));
        return r;
}

int vmsnap_jail_enter(const struct vmsnap_jail_spec *s, struct vmsnap_diag *d)
{
        struct jail_conf c;
        if (!s || !s->config || s->config->disabled)
                return vmsnap_diag(d, -EINVAL, "jail: no spec, no config, or jails disabled");
        int r = jail_conf_resolve(s->config, &c, d);
        if (r == 0)
                r = jail_spec_check(s, &c, d);
        if (r == 0)
                r = check_caller(s->name, d);
        if (r == 0)
                r = confine(s, &c, d);
        if (r == 0)
                r = jail_drop_privileges(s->uid, c.shared_gid, d);
        if (r < 0)
                return r;
        /* LeakSanitizer's exit-time tracer must attach to a process that goes on running
         * our code (sanitizer builds only; docs/jail.md). */
        if (JAIL_SANITIZER && s->keep_fds)
                prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                return vmsnap_diag(d, -errno, "jail %s: no_new_privs: %s", s->name,
                                   strerror(errno));
        return s->seccomp ? jail_seccomp_install(d) : 0;
}

int jail_check_inside(uid_t uid, struct vmsnap_diag *d)
{
        static const char *const host_dirs[] = {"/etc", "/home", "/root", "/var",
                                                "/tmp", "/sys",  "/run"};
        if (getuid() != uid || geteuid() != uid || getgid() != uid)
                return vmsnap_diag(d, -EPERM, "inside the jail the ids are %u/%u, not %u",
                                   (unsigned)getuid(), (unsigned)getgid(), (unsigned)uid);
        if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
                return vmsnap_diag(d, -EPERM, "inside the jail no_new_privs is not set");
        if (prctl(PR_CAPBSET_READ, 0, 0, 0, 0) != 0)
                return vmsnap_diag(d, -EPERM, "inside the jail the bounding set is not empty");
        struct rlimit core;
        if (getrlimit(RLIMIT_CORE, &core) < 0 || core.rlim_max != 0)
                return vmsnap_diag(d, -EPERM, "inside the jail core dumps are allowed");
        for (size_t i = 0; i < sizeof(host_dirs) / sizeof(host_dirs[0]); i++) {
                struct stat st;
                if (lstat(host_dirs[i], &st) == 0)
                        return vmsnap_diag(d, -EPERM, "inside the jail %s exists", host_dirs[i]);
        }
        return 0;
}
