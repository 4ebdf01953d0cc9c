/* vmsnap-jailer: starts a VMM inside a jail (docs/jail.md, "The jailer"). vmsnapd builds
 * its command line with vmsnap_jail_argv(); it enters the jail with vmsnap_jail_enter() and
 * execs the VMM in the same process, so the VMM keeps the pid its driver knows. Never an
 * escalation path: it runs only for a real root, only with a uid of the configured range. */
#include "jail/internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
        "usage: vmsnap-jailer --name NAME --root DIR --uid UID [OPTIONS] -- VMM [ARG]...\n"
        "       vmsnap-jailer --probe --name NAME --root DIR --uid UID [OPTIONS]\n\n"
        "Runs VMM confined: a cgroup with limits, its own mount, IPC, UTS and (empty) network\n"
        "namespaces, no core dumps, a root holding only the given binds and devices (a tmpfs\n"
        "on DIR, pivoted into), no\n"
        "capabilities, uid and gid UID, no_new_privs; then execs VMM (a path inside the\n"
        "jail) with only the --env variables. vmsnapd writes this command line; it is not\n"
        "meant to be typed. Must be started by root; UID must lie in the range.\n\n"
        "options:\n"
        "  --name NAME              the jail's name: its cgroup and hostname\n"
        "  --root DIR               an empty host directory for the jail's root\n"
        "  --uid UID                the jail's uid and gid (never 0; inside --uids)\n"
        "  --uids FIRST:COUNT       the uid range of jails (default 1879113728:65536)\n"
        "  --gid GID                the shared supplementary group (default 1879048192)\n"
        "  --cgroup-version 1|2|auto, --cgroup-root DIR (default /sys/fs/cgroup),\n"
        "  --cgroup-parent PATH     (default vmsnap): the group is PARENT/NAME\n"
        "  --memory BYTES, --cpus N, --pids N    limits (absent: none)\n"
        "  --bind SRC:TARGET        bind host SRC (canonical, no symlink) read-only at TARGET\n"
        "  --bind-rw SRC:TARGET     the same, writable (always nosuid, nodev)\n"
        "  --dev PATH               make the device node PATH (under /dev) for UID\n"
        "  --system-dirs            bind /usr read-only with the /bin, /lib... links\n"
        "  --proc                   mount a /proc showing only the jail's processes\n"
        "  --env NAME=VALUE         put this in the VMM's (otherwise empty) environment\n"
        "  --netns PATH             join this pinned network namespace (checked to be one)\n"
        "                           instead of a new, empty one\n"
        "  --keep-fds               keep inherited fds above 2 (default: closed)\n"
        "  --memory-readonly PATH   every open of PATH (the target of a --bind) by the VMM\n"
        "                           returns a read-only descriptor of it, whatever access\n"
        "                           it asks for (a forked supervisor answers through a\n"
        "                           seccomp user-notification filter)\n"
        "  --probe-handover         check that this kernel can do that, exit 0 (no jail)\n"
        "  --probe                  enter the jail, check it from inside, exit 0\n"
        "  -h, --help               this help\n\n"
        "exit status: the VMM's own, or 125 when the jail could not be entered (one line on\n"
        "stderr says why)\n";

/* One line on stderr (the VMM's log), then exit 125 without running exit handlers: after
 * the jail is entered, sanitizer runtimes could not do their exit work anyway. */
static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void fail(const char *fmt, ...)
{
        char line[1200];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(line, sizeof(line), fmt, ap);
        va_end(ap);
        fprintf(stderr, "vmsnap-jailer: %s\n", line);
        fflush(stderr);
        _exit(VMSNAP_JAIL_JAILER_FAILED);
}

static bool wants_help(int argc, char **argv)
{
        for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
                if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
                        return true;
        return false;
}

int main(int argc, char **argv)
{
        if (wants_help(argc, argv)) {
                fputs(usage, stdout);
                return 0;
        }
        if (getuid() != 0)
                fail("must be started by root (the real uid is %u); refusing", (unsigned)getuid());
        struct jail_cmdline cl;
        struct vmsnap_diag d = {0};
        if (jail_cmdline_parse(argc, argv, &cl, &d) < 0)
                fail("%s", d.msg);
        if (cl.probe_handover) { /* /dev/null: a file root may open O_RDWR */
                if (jail_handover_probe("/dev/null", &d) < 0)
                        fail("%s", d.msg);
                _exit(0);
        }
        if (cl.spec.uid == 0)
                fail("refusing to run a jail as uid 0");
        if (!cl.probe && cl.vmm_argv[0][0] != '/')
                fail("the VMM's path '%s' must be absolute (as seen inside the jail)",
                     cl.vmm_argv[0]);
        if (vmsnap_jail_enter(&cl.spec, &d) < 0)
                fail("%s", d.msg);
        if (cl.probe) {
                if (jail_check_inside(cl.spec.uid, &d) < 0)
                        fail("%s", d.msg);
                _exit(0);
        }
        if (cl.spec.readonly_memory && jail_handover_start(cl.spec.readonly_memory, &d) < 0)
                fail("%s: %s", cl.spec.name, d.msg);
        static const char *const empty_env[] = {NULL};
        execve(cl.vmm_argv[0], cl.vmm_argv, (char *const *)(cl.env ? cl.env : empty_env));
        fail("%s: cannot execute %s: %s", cl.spec.name, cl.vmm_argv[0], strerror(errno));
}
