/* A jail's cgroup, v1 (one hierarchy per controller) or v2 (unified): create with limits,
 * join, remove. Layout and files: docs/jail.md "cgroups". Limit files are opened without
 * O_CREAT: a kernel that lacks one is an error, never a silently created plain file. */
#include "jail/internal.h"
#include "util/cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#ifndef CGROUP_SUPER_MAGIC
#define CGROUP_SUPER_MAGIC 0x27e0eb
#endif

#define CPU_PERIOD_US 100000ull

static const char *const controllers[] = {"memory", "cpu", "pids"};
#define N_CONTROLLERS (sizeof(controllers) / sizeof(controllers[0]))

/* Reads a small file into buf (NUL-terminated); returns its length or -errno. */
static ssize_t read_small(const char *path, char *buf, size_t len)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        ssize_t n = read(fd, buf, len - 1);
        if (n < 0)
                return -errno;
        buf[n] = '\0';
        return n;
}

/* True when the whitespace-separated list holds word. */
static bool lists_word(const char *list, const char *word)
{
        size_t n = strlen(word);
        for (const char *p = list; (p = strstr(p, word)); p += n)
                if ((p == list || strchr(" \t\n", p[-1])) && strchr(" \t\n", p[n]))
                        return true;
        return false;
}

/* Writes value into dir/file (an existing file). optional: a missing file is fine. */
static int write_value(const char *dir, const char *file, const char *value, bool optional,
                       struct vmsnap_diag *d)
{
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", dir, file);
        _cleanup_close_ int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0 && errno == ENOENT && optional)
                return 0;
        size_t len = strlen(value);
        ssize_t n = fd < 0 ? -1 : write(fd, value, len);
        if (n == (ssize_t)len)
                return 0;
        int e = n < 0 ? errno : EIO; /* a short write to a cgroup file is a refusal */
        return vmsnap_diag(d, -e, "%s: cannot write '%s': %s", path, value, strerror(e));
}

static void format_limit(char out[32], uint64_t v, const char *none)
{
        if (v)
                snprintf(out, 32, "%llu", (unsigned long long)v);
        else
                snprintf(out, 32, "%s", none);
}

/* <root>/<ctl>/<parent>/<name> (v1; ctl NULL for v2: <root>/<parent>/<name>); name may be
 * NULL for the parent itself. */
static int group_path(const struct jail_conf *c, const char *ctl, const char *name,
                      char out[PATH_MAX], struct vmsnap_diag *d)
{
        int n = snprintf(out, PATH_MAX, "%s%s%s/%s%s%s", c->cgroup_root, ctl ? "/" : "",
                         ctl ? ctl : "", c->cgroup_parent, name ? "/" : "", name ? name : "");
        if (n >= PATH_MAX)
                return vmsnap_diag(d, -ENAMETOOLONG, "cgroup path of %s too long", name);
        return 0;
}

static bool is_v1_hierarchy(const char *root, const char *ctl)
{
        char path[PATH_MAX];
        struct statfs sf;
        snprintf(path, sizeof(path), "%s/%s", root, ctl);
        return statfs(path, &sf) == 0 && sf.f_type == CGROUP_SUPER_MAGIC;
}

/* Checks that the v2 root offers every controller; returns 0 or -ENOTSUP with d. */
static int check_v2_controllers(const struct jail_conf *c, struct vmsnap_diag *d)
{
        char path[PATH_MAX], list[512];
        snprintf(path, sizeof(path), "%s/cgroup.controllers", c->cgroup_root);
        ssize_t n = read_small(path, list, sizeof(list));
        if (n < 0)
                return vmsnap_diag(d, (int)n, "%s: %s (is cgroup v2 mounted at %s?)", path,
                                   strerror((int)-n), c->cgroup_root);
        for (size_t i = 0; i < N_CONTROLLERS; i++)
                if (!lists_word(list, controllers[i]))
                        return vmsnap_diag(d, -ENOTSUP,
                                           "%s does not offer the %s controller "
                                           "(it lists: %.200s)",
                                           path, controllers[i], list);
        return 0;
}

int jail_cgroup_resolve(const struct jail_conf *c, struct vmsnap_diag *d)
{
        if (c->cgroup_version != VMSNAP_CGROUP_AUTO)
                return c->cgroup_version;
        if (check_v2_controllers(c, NULL) == 0)
                return VMSNAP_CGROUP_V2;
        for (size_t i = 0; i < N_CONTROLLERS; i++)
                if (!is_v1_hierarchy(c->cgroup_root, controllers[i]))
                        return vmsnap_diag(d, -ENOENT,
                                           "no usable cgroup hierarchy at %s: no "
                                           "cgroup v2 offering memory, cpu and pids, and "
                                           "%s/%s is not a cgroup v1 mount",
                                           c->cgroup_root, c->cgroup_root, controllers[i]);
        return VMSNAP_CGROUP_V1;
}

/* Enables memory, cpu and pids for the children of the v2 group dir (unless they are). */
static int enable_subtree(const char *dir, struct vmsnap_diag *d)
{
        char path[PATH_MAX], list[512];
        snprintf(path, sizeof(path), "%s/cgroup.subtree_control", dir);
        if (read_small(path, list, sizeof(list)) >= 0 && lists_word(list, "memory") &&
            lists_word(list, "cpu") && lists_word(list, "pids"))
                return 0;
        return write_value(dir, "cgroup.subtree_control", "+memory +cpu +pids", false, d);
}

/* mkdir that accepts an existing directory. */
static int make_dir(const char *path, struct vmsnap_diag *d)
{
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
                return vmsnap_diag(d, -errno, "%s: cannot create the cgroup: %s", path,
                                   strerror(errno));
        return 0;
}

/* Creates every level of the parent under base; for v2 enables the controllers in base
 * and in each level, so that they reach the jail's group. */
static int make_parent_levels(const char *base, const char *parent, bool v2, struct vmsnap_diag *d)
{
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s", base);
        int r = v2 ? enable_subtree(path, d) : 0;
        for (const char *c = parent; r == 0 && *c;) {
                const char *slash = strchr(c, '/');
                size_t len = slash ? (size_t)(slash - c) : strlen(c);
                size_t used = strlen(path);
                if (used + 1 + len >= sizeof(path))
                        return vmsnap_diag(d, -ENAMETOOLONG, "cgroup parent path too long");
                snprintf(path + used, sizeof(path) - used, "/%.*s", (int)len, c);
                r = make_dir(path, d);
                if (r == 0 && v2)
                        r = enable_subtree(path, d);
                c = slash ? slash + 1 : c + len;
        }
        return r;
}

/* v1 memory: memsw (memory+swap) must never be below the limit, so it is lifted first and
 * set to the same value last; a kernel without swap accounting has no memsw file. */
static int write_v1_limits(const char *dir, const char *ctl, const struct vmsnap_jail_limits *l,
                           struct vmsnap_diag *d)
{
        char v[32];
        int r = 0;
        if (strcmp(ctl, "memory") == 0) {
                format_limit(v, l->memory_max, "-1");
                r = write_value(dir, "memory.memsw.limit_in_bytes", "-1", true, d);
                if (r == 0)
                        r = write_value(dir, "memory.limit_in_bytes", v, false, d);
                if (r == 0)
                        r = write_value(dir, "memory.memsw.limit_in_bytes", v, true, d);
        } else if (strcmp(ctl, "cpu") == 0) {
                format_limit(v, (uint64_t)l->cpus * CPU_PERIOD_US, "-1");
                r = write_value(dir, "cpu.cfs_period_us", "100000", false, d);
                if (r == 0)
                        r = write_value(dir, "cpu.cfs_quota_us", v, false, d);
        } else {
                format_limit(v, l->pids_max, "max");
                r = write_value(dir, "pids.max", v, false, d);
        }
        return r;
}

static int write_v2_limits(const char *dir, const struct vmsnap_jail_limits *l,
                           struct vmsnap_diag *d)
{
        char v[32], cpu[64];
        format_limit(v, l->memory_max, "max");
        int r = write_value(dir, "memory.max", v, false, d);
        if (r == 0)
                r = write_value(dir, "memory.swap.max", l->memory_max ? "0" : "max", true, d);
        if (l->cpus)
                snprintf(cpu, sizeof(cpu), "%llu %llu", (unsigned long long)l->cpus * CPU_PERIOD_US,
                         CPU_PERIOD_US);
        else
                snprintf(cpu, sizeof(cpu), "max %llu", CPU_PERIOD_US);
        if (r == 0)
                r = write_value(dir, "cpu.max", cpu, false, d);
        format_limit(v, l->pids_max, "max");
        return r == 0 ? write_value(dir, "pids.max", v, false, d) : r;
}

static int create_v1(const struct jail_conf *c, const char *name,
                     const struct vmsnap_jail_limits *l, struct vmsnap_diag *d)
{
        for (size_t i = 0; i < N_CONTROLLERS; i++) {
                char base[PATH_MAX], dir[PATH_MAX];
                snprintf(base, sizeof(base), "%s/%s", c->cgroup_root, controllers[i]);
                int r = make_parent_levels(base, c->cgroup_parent, false, d);
                if (r == 0)
                        r = group_path(c, controllers[i], name, dir, d);
                if (r == 0)
                        r = make_dir(dir, d);
                if (r == 0)
                        r = write_v1_limits(dir, controllers[i], l, d);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int create_v2(const struct jail_conf *c, const char *name,
                     const struct vmsnap_jail_limits *l, struct vmsnap_diag *d)
{
        char dir[PATH_MAX];
        int r = check_v2_controllers(c, d);
        if (r == 0)
                r = make_parent_levels(c->cgroup_root, c->cgroup_parent, true, d);
        if (r == 0)
                r = group_path(c, NULL, name, dir, d);
        if (r == 0)
                r = make_dir(dir, d);
        return r == 0 ? write_v2_limits(dir, l, d) : r;
}

int jail_cgroup_create(const struct jail_conf *c, const char *name,
                       const struct vmsnap_jail_limits *limits, struct vmsnap_diag *d)
{
        static const struct vmsnap_jail_limits none = {0};
        int v = jail_cgroup_resolve(c, d);
        if (v < 0)
                return v;
        if (!limits)
                limits = &none;
        return v == VMSNAP_CGROUP_V2 ? create_v2(c, name, limits, d)
                                     : create_v1(c, name, limits, d);
}

int jail_cgroup_join(const struct jail_conf *c, const char *name, pid_t pid, struct vmsnap_diag *d)
{
        int v = jail_cgroup_resolve(c, d);
        if (v < 0)
                return v;
        char dir[PATH_MAX], value[32];
        snprintf(value, sizeof(value), "%d", (int)pid);
        for (size_t i = 0; i < (v == VMSNAP_CGROUP_V2 ? 1 : N_CONTROLLERS); i++) {
                int r = group_path(c, v == VMSNAP_CGROUP_V2 ? NULL : controllers[i], name, dir, d);
                if (r == 0)
                        r = write_value(dir, "cgroup.procs", value, false, d);
                if (r < 0)
                        return r;
        }
        return 0;
}

int vmsnap_jail_cgroup_version(const struct vmsnap_jail_config *config, struct vmsnap_diag *d)
{
        struct jail_conf c;
        int r = jail_conf_resolve(config, &c, d);
        return r < 0 ? r : jail_cgroup_resolve(&c, d);
}

int vmsnap_jail_cgroup_create(const struct vmsnap_jail_config *config, const char *name,
                              const struct vmsnap_jail_limits *limits, struct vmsnap_diag *d)
{
        struct jail_conf c;
        int r = jail_conf_resolve(config, &c, d);
        if (r < 0)
                return r;
        if (!jail_name_ok(name))
                return vmsnap_diag(d, -EINVAL,
                                   "cgroup name '%s' must be 1 to %d of "
                                   "[A-Za-z0-9._-], not starting with '.'",
                                   name ? name : "", JAIL_NAME_MAX);
        return jail_cgroup_create(&c, name, limits, d);
}

int vmsnap_jail_cgroup_remove(const struct vmsnap_jail_config *config, const char *name,
                              struct vmsnap_diag *d)
{
        struct jail_conf c;
        int r = jail_conf_resolve(config, &c, d);
        if (r < 0)
                return r;
        if (!jail_name_ok(name))
                return vmsnap_diag(d, -EINVAL, "cgroup name '%s' is not a jail name",
                                   name ? name : "");
        int v = jail_cgroup_resolve(&c, d);
        if (v < 0)
                return v;
        int first = 0;
        for (size_t i = 0; i < (v == VMSNAP_CGROUP_V2 ? 1 : N_CONTROLLERS); i++) {
                char dir[PATH_MAX];
                r = group_path(&c, v == VMSNAP_CGROUP_V2 ? NULL : controllers[i], name, dir, d);
                if (r == 0 && rmdir(dir) < 0 && errno != ENOENT)
                        r = vmsnap_diag(d, -errno, "%s: cannot remove the cgroup: %s%s", dir,
                                        strerror(errno),
                                        errno == EBUSY ? " (a process still runs in it)" : "");
                if (r < 0 && first == 0)
                        first = r;
        }
        return first;
}

/* How long vmsnap_jail_cgroup_kill waits for SIGKILLed processes to leave the group. */
#define KILL_ROUNDS   5000
#define KILL_ROUND_NS 1000000L

/* True when /proc/<pid>/cgroup names the group (…:/<parent>/<name> on one line). */
static bool pid_in_group(pid_t pid, const struct jail_conf *c, const char *name)
{
        char path[64], buf[4096], want[PATH_MAX];
        snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
        snprintf(want, sizeof(want), ":/%s/%s\n", c->cgroup_parent, name);
        return read_small(path, buf, sizeof(buf)) > 0 && strstr(buf, want);
}

/* SIGKILL for pid, through a pidfd taken before checking that pid is still in the group:
 * a pid reused by a process outside the group is never signalled. */
static void kill_member(pid_t pid, const struct jail_conf *c, const char *name)
{
        int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
        if (pidfd < 0)
                return; /* gone already */
        if (pid_in_group(pid, c, name))
                syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
        close(pidfd);
}

/* One round: SIGKILL every process listed in dir/cgroup.procs. Returns how many were
 * listed, 0 when the group is empty or missing, or -errno. */
static int kill_round(const struct jail_conf *c, const char *dir, const char *name)
{
        char path[PATH_MAX];
        if ((size_t)snprintf(path, sizeof(path), "%s/cgroup.procs", dir) >= sizeof(path))
                return -ENAMETOOLONG;
        FILE *f = fopen(path, "re");
        if (!f)
                return errno == ENOENT ? 0 : -errno;
        int n = 0;
        for (long pid; fscanf(f, "%ld", &pid) == 1; n++)
                if (pid > 0 && pid != getpid())
                        kill_member((pid_t)pid, c, name);
        fclose(f);
        return n;
}

int vmsnap_jail_cgroup_kill(const struct vmsnap_jail_config *config, const char *name,
                            struct vmsnap_diag *d)
{
        struct jail_conf c;
        int r = jail_conf_resolve(config, &c, d);
        if (r < 0)
                return r;
        if (!jail_name_ok(name))
                return vmsnap_diag(d, -EINVAL, "cgroup name '%s' is not a jail name",
                                   name ? name : "");
        int v = jail_cgroup_resolve(&c, d);
        if (v < 0)
                return v;
        /* Every process is in each v1 hierarchy (joined together); pids is enough. */
        char dir[PATH_MAX];
        r = group_path(&c, v == VMSNAP_CGROUP_V2 ? NULL : "pids", name, dir, d);
        const struct timespec round = {0, KILL_ROUND_NS};
        for (int i = 0; r == 0 && i < KILL_ROUNDS; i++) {
                int n = kill_round(&c, dir, name);
                if (n <= 0)
                        return n < 0 ? vmsnap_diag(d, n, "%s/cgroup.procs: %s", dir, strerror(-n))
                                     : 0;
                nanosleep(&round, NULL); /* SIGKILLed tasks leave the group as they exit */
        }
        return r < 0 ? r
                     : vmsnap_diag(d, -EBUSY, "%s: processes still run after SIGKILL for %d ms",
                                   dir, KILL_ROUNDS * (int)(KILL_ROUND_NS / 1000000));
}
