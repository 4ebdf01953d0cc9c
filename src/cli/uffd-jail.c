/* The page server's own jail (see uffd-jail.h): options, and the step between opening the
 * inputs and serving the first byte. Its root holds nothing but /proc (restricted: the
 * handshake checks the userfaultfd through /proc/self/fd) and the --ws-dir it writes. */
#include "cli/uffd-jail.h"
#include "cli/cli.h"
#include "util/cleanup.h"

#include <vmsnap/uffd.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Tasks the server needs: main, workers, prefetch; the rest is headroom (and the
 * LeakSanitizer tracer in sanitizer builds). */
#define PAGER_PIDS_HEADROOM 8u

const char uffd_jail_usage[] =
        "jail (root only; docs/jail.md):\n"
        "  --jail-uid UID         after opening the snapshot and the socket, confine this\n"
        "                         process: uid and gid UID (its VMM's), no capabilities,\n"
        "                         a private root on --jail-root, seccomp; the socket is\n"
        "                         given to UID (0600). With --ws-record, --ws-dir is\n"
        "                         required and bound writable at the same path\n"
        "  --jail-root DIR        empty directory for the jail's root (required)\n"
        "  --jail-cgroup NAME     the jail's cgroup, e.g. <sandbox>.pager (required)\n"
        "  --jail-uids FIRST:COUNT, --jail-gid GID, --jail-cgroup-version auto|1|2,\n"
        "  --jail-cgroup-root DIR, --jail-cgroup-parent PATH\n"
        "                         the host's jail settings (vmsnapd's; defaults as docs)\n"
        "  --jail-memory BYTES    memory limit (default none)\n"
        "  --jail-pids N          task limit (default workers + 8)\n";

static int usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage(const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "vmsnap uffd-serve: ");
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, " (see --help)\n");
        va_end(ap);
        return CLI_USAGE;
}

static bool parse_number(const char *s, uint64_t max, uint64_t *ret)
{
        char *end;
        errno = 0;
        unsigned long long v = s[0] >= '0' && s[0] <= '9' ? strtoull(s, &end, 10) : 0;
        if (s[0] < '0' || s[0] > '9' || errno || *end || v > max)
                return false;
        *ret = v;
        return true;
}

int uffd_jail_option(int opt, const char *arg, struct uffd_jail_args *j)
{
        struct vmsnap_diag d = {0};
        uint64_t v;
        switch (opt) {
        case UFFD_OPT_JAIL_ROOT:
                j->root = arg;
                return CLI_OK;
        case UFFD_OPT_JAIL_CGROUP:
                j->name = arg;
                return CLI_OK;
        case UFFD_OPT_JAIL_CGROUP_ROOT:
                j->config.cgroup_root = arg;
                return CLI_OK;
        case UFFD_OPT_JAIL_CGROUP_PARENT:
                j->config.cgroup_parent = arg;
                return CLI_OK;
        case UFFD_OPT_JAIL_UIDS:
                return vmsnap_jail_parse_uids(arg, &j->config.uid_first, &j->config.uid_count, &d) <
                                       0
                               ? usage("%s", d.msg)
                               : CLI_OK;
        case UFFD_OPT_JAIL_CGROUP_VERSION:
                return vmsnap_jail_parse_cgroup_version(arg, &j->config.cgroup_version, &d) < 0
                               ? usage("%s", d.msg)
                               : CLI_OK;
        case UFFD_OPT_JAIL_MEMORY:
                if (!parse_number(arg, UINT64_MAX, &v))
                        return usage("--jail-memory '%s': give a number of bytes", arg);
                j->limits.memory_max = v;
                return CLI_OK;
        default: /* uid, gid, pids: 32-bit numbers */
                if (!parse_number(arg, 0xfffffffeu, &v))
                        return usage("'%s' is not a valid uid, gid or count", arg);
                if (opt == UFFD_OPT_JAIL_UID) {
                        j->on = true;
                        j->uid = (uid_t)v;
                } else if (opt == UFFD_OPT_JAIL_GID)
                        j->config.shared_gid = (gid_t)v;
                else
                        j->limits.pids_max = (uint32_t)v;
                return CLI_OK;
        }
}

int uffd_jail_check(const struct uffd_jail_args *j, bool ws_record, const char *ws_dir)
{
        bool any = j->root || j->name || j->config.uid_first || j->config.shared_gid ||
                   j->config.cgroup_version || j->config.cgroup_root || j->config.cgroup_parent ||
                   j->limits.memory_max || j->limits.pids_max;
        if (!j->on)
                return any ? usage("%s", "the --jail-* options need --jail-uid") : CLI_OK;
        if (!j->root || !j->name)
                return usage("%s", "--jail-uid needs --jail-root DIR and --jail-cgroup NAME");
        if (ws_record && !ws_dir)
                return usage("%s", "--jail-uid with --ws-record needs --ws-dir (the snapshot "
                                   "directory is not the jail's to write)");
        if (ws_dir && ws_dir[0] != '/')
                return usage("--ws-dir '%s' must be absolute with --jail-uid", ws_dir);
        return CLI_OK;
}

/* The socket becomes UID's, 0600: its VMM (same uid) may connect, the daemon (root) too,
 * nobody else. The path is opened without following a symlink and must be a socket. */
static int give_socket(const char *socket, uid_t uid, struct vmsnap_diag *d)
{
        _cleanup_close_ int fd = open(socket, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0)
                return vmsnap_diag(d, -errno, "%s: %s", socket, strerror(errno));
        if (!S_ISSOCK(st.st_mode))
                return vmsnap_diag(d, -EINVAL, "%s is no longer a socket", socket);
        char magic[32];
        snprintf(magic, sizeof(magic), "/proc/self/fd/%d", fd);
        if (fchownat(fd, "", uid, uid, AT_EMPTY_PATH) < 0 || chmod(magic, 0600) < 0)
                return vmsnap_diag(d, -errno, "%s: cannot give it to uid %u: %s", socket,
                                   (unsigned)uid, strerror(errno));
        return 0;
}

int uffd_jail_enter(const struct uffd_jail_args *j, const char *socket, const char *ws_dir,
                    unsigned workers, struct vmsnap_diag *d)
{
        int r = give_socket(socket, j->uid, d);
        if (r < 0)
                return r;
        struct vmsnap_jail_bind ws_bind = {.source = ws_dir, .target = ws_dir, .writable = true};
        struct vmsnap_jail_spec spec = {
                .config = &j->config,
                .name = j->name,
                .root_dir = j->root,
                .uid = j->uid,
                .binds = ws_dir ? &ws_bind : NULL,
                .n_binds = ws_dir ? 1 : 0,
                .limits = j->limits,
                .seccomp = true,
                .proc = true,
                .keep_fds = true,
        };
        if (!spec.limits.pids_max)
                spec.limits.pids_max =
                        (workers ? workers : VMSNAP_UFFD_DEFAULT_WORKERS) + PAGER_PIDS_HEADROOM;
        return vmsnap_jail_enter(&spec, d);
}
