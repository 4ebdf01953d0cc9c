/* vmsnap_jail_probe: proves every piece of the jail on this host by building a real one
 * (docs/jail.md, "The probe"), so that vmsnapd refuses to start rather than run a VMM
 * unconfined. */
#include "jail/internal.h"
#include "util/cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define PROBE_HINT "; fix it or run vmsnapd with --insecure-no-jail (VMMs then run unconfined)"

/* The daemon runs the jailer as root: it must be root's own file, writable by no one else. */
static int check_jailer(const char *path, struct vmsnap_diag *d)
{
        struct stat st;
        if (stat(path, &st) < 0)
                return vmsnap_diag(d, -errno,
                                   "jailer %s: %s (install vmsnap-jailer beside "
                                   "vmsnapd)" PROBE_HINT,
                                   path, strerror(errno));
        if (!S_ISREG(st.st_mode) || !(st.st_mode & S_IXUSR))
                return vmsnap_diag(d, -EACCES, "jailer %s is not an executable file" PROBE_HINT,
                                   path);
        if (st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH)))
                return vmsnap_diag(d, -EPERM,
                                   "jailer %s must be owned by root and writable by "
                                   "no one else (it is run as root)" PROBE_HINT,
                                   path);
        return 0;
}

/* Runs argv with stderr into a pipe; returns 0 when it exited 0, else -EPERM with `what`,
 * its first stderr line (or its status) and `hint` in d. */
static int run_probe(char **argv, const char *what, const char *hint, struct vmsnap_diag *d)
{
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
                return vmsnap_diag(d, -errno, "pipe: %s", strerror(errno));
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
        posix_spawn_file_actions_adddup2(&fa, p[1], STDERR_FILENO);
        pid_t pid;
        int e = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        close(p[1]);
        if (e != 0) {
                close(p[0]);
                return vmsnap_diag(d, -e, "cannot run the jailer %s: %s" PROBE_HINT, argv[0],
                                   strerror(e));
        }
        char msg[512];
        size_t n = 0;
        for (ssize_t got;
             n < sizeof(msg) - 1 && (got = read(p[0], msg + n, sizeof(msg) - 1 - n)) != 0;)
                if (got > 0)
                        n += (size_t)got;
                else if (errno != EINTR)
                        break;
        close(p[0]);
        msg[n] = '\0';
        msg[strcspn(msg, "\n")] = '\0';
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
                return 0;
        return vmsnap_diag(d, -EPERM, "%s: %s%s", what,
                           msg[0] ? msg : "the jailer died without a message", hint);
}

/* Builds a jail like a VMM's (every controller limited, a device, /proc, system dirs) on an
 * empty temporary root and checks it from inside (vmsnap-jailer --probe). */
static int probe_jail(const struct vmsnap_jail_config *config, const struct jail_conf *c,
                      struct vmsnap_diag *d)
{
        char root[] = "/tmp/vmsnap-jail-probe-XXXXXX", name[32];
        if (!mkdtemp(root))
                return vmsnap_diag(d, -errno, "mkdtemp %s: %s", root, strerror(errno));
        snprintf(name, sizeof(name), "probe-%d", (int)getpid());
        static const char *const devices[] = {"/dev/null", NULL};
        struct vmsnap_jail_spec spec = {
                .config = config,
                .name = name,
                .root_dir = root,
                .uid = c->uid_first,
                .devices = devices,
                .limits = {.memory_max = 64u << 20, .cpus = 1, .pids_max = 16},
                .system_dirs = true,
                .proc = true,
        };
        char **argv = NULL;
        int r = jail_argv_build(&spec, NULL, &argv, d);
        if (r == 0)
                r = run_probe(argv, "a test jail failed", PROBE_HINT, d);
        vmsnap_jail_argv_free(argv);
        struct vmsnap_diag ignored;
        vmsnap_jail_cgroup_remove(config, name, &ignored);
        rmdir(root);
        return r;
}

int vmsnap_jail_probe(const struct vmsnap_jail_config *config, struct vmsnap_diag *d)
{
        static const struct vmsnap_jail_config none = {0};
        if (!config)
                config = &none;
        if (config->disabled)
                return 0;
        struct jail_conf c;
        int r = jail_conf_resolve(config, &c, d);
        if (r < 0)
                return vmsnap_diag_prefix(d, "jail settings");
        if (geteuid() != 0)
                return vmsnap_diag(d, -EPERM, "jails need root (euid is %u)" PROBE_HINT,
                                   (unsigned)geteuid());
        r = jail_cgroup_resolve(&c, d);
        if (r < 0)
                return vmsnap_diag_prefix(d, "cgroups");
        char jailer[PATH_MAX];
        r = jail_jailer_path(&c, jailer, d);
        if (r == 0)
                r = check_jailer(jailer, d);
        if (r < 0)
                return r;
        if (!jail_seccomp_available())
                return vmsnap_diag(d, -ENOSYS,
                                   "this kernel cannot load seccomp filters (the "
                                   "page server's)" PROBE_HINT);
        return probe_jail(config, &c, d);
}

int vmsnap_jail_probe_handover(const struct vmsnap_jail_config *config, struct vmsnap_diag *d)
{
        static const struct vmsnap_jail_config none = {0};
        struct jail_conf c;
        int r = jail_conf_resolve(config ? config : &none, &c, d);
        char jailer[PATH_MAX];
        if (r == 0)
                r = jail_jailer_path(&c, jailer, d);
        if (r < 0)
                return r;
        char *argv[] = {jailer, "--probe-handover", NULL};
        return run_probe(argv, "the read-only memory hand-over failed", "", d);
}
