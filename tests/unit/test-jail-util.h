/* Helpers shared by the jail tests (test-jail*.c): the skip rule (root, namespaces and a
 * cgroup hierarchy, or exit 77 saying which is missing), the test config (its own cgroup
 * parent, so that a real vmsnapd's groups are never touched), /proc/PID readers for the
 * checks made from outside a jail. Header-only: each test is its own program. */
#ifndef VMSNAP_TEST_JAIL_UTIL_H
#define VMSNAP_TEST_JAIL_UTIL_H

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vmsnap/jail.h>

#define TEST_CGROUP_PARENT "vmsnap-test"
/* The tests' own uid range, away from the default one a vmsnapd on this host (or another
 * engineer's test) hands to its jails: a jail sees the processes of its own uid. */
#define TEST_UID_FIRST 0x7e000000u
#define TEST_UID_COUNT 65536u
#define TEST_UID       jail_test_uid()

/* One uid per test process, so that parallel runs do not share one. */
static inline uid_t jail_test_uid(void)
{
        return TEST_UID_FIRST + 1 + (uid_t)getpid() % (TEST_UID_COUNT - 1);
}

static inline struct vmsnap_jail_config jail_test_config(void)
{
        return (struct vmsnap_jail_config){.uid_first = TEST_UID_FIRST,
                                           .uid_count = TEST_UID_COUNT,
                                           .cgroup_parent = TEST_CGROUP_PARENT,
                                           .jailer = getenv("VMSNAP_JAILER")};
}

/* Exits 77 with the reason unless this process may build jails here. */
static inline void jail_test_require(void)
{
        if (geteuid() != 0) {
                fprintf(stderr, "skipping: jails need root (euid %u)\n", (unsigned)geteuid());
                exit(77);
        }
        pid_t pid = fork();
        if (pid == 0)
                _exit(unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS) < 0 ? errno : 0);
        int st = 0;
        waitpid(pid, &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                fprintf(stderr, "skipping: no mount/IPC/UTS namespaces here (unshare: %s)\n",
                        WIFEXITED(st) ? strerror(WEXITSTATUS(st)) : "child died");
                exit(77);
        }
        struct vmsnap_jail_config c = jail_test_config();
        struct vmsnap_diag d = {0};
        if (vmsnap_jail_cgroup_version(&c, &d) < 0) {
                fprintf(stderr, "skipping: no usable cgroup hierarchy: %s\n", d.msg);
                exit(77);
        }
}

/* Removes the test cgroup parent when empty (fine to fail: in use, or absent). */
static inline void jail_test_cleanup_parent(void)
{
        rmdir("/sys/fs/cgroup/memory/" TEST_CGROUP_PARENT);
        rmdir("/sys/fs/cgroup/cpu/" TEST_CGROUP_PARENT);
        rmdir("/sys/fs/cgroup/pids/" TEST_CGROUP_PARENT);
        rmdir("/sys/fs/cgroup/" TEST_CGROUP_PARENT);
}

/* Reads /proc/<pid>/<file> into a malloc'd string (NULL when it cannot). */
static inline char *proc_read(pid_t pid, const char *file)
{
        char path[128];
        snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
        FILE *f = fopen(path, "r");
        if (!f)
                return NULL;
        char *buf = calloc(1, 65536);
        size_t n = buf ? fread(buf, 1, 65535, f) : 0;
        (void)n;
        fclose(f);
        return buf;
}

/* The value after "Key:" in /proc/<pid>/status (first word), or "" when absent. */
static inline void proc_status_field(pid_t pid, const char *key, char out[64])
{
        char *s = proc_read(pid, "status");
        char pat[64];
        snprintf(pat, sizeof(pat), "\n%s:", key);
        const char *p = s ? strstr(s, pat) : NULL;
        out[0] = '\0';
        if (p)
                sscanf(p + strlen(pat), " %63s", out);
        free(s);
}

/* The target of /proc/<pid>/ns/<ns> ("mnt:[4026531841]"), "" when unreadable. */
static inline void proc_ns(pid_t pid, const char *ns, char out[64])
{
        char path[128];
        snprintf(path, sizeof(path), "/proc/%d/ns/%s", pid ? (int)pid : (int)getpid(), ns);
        ssize_t n = readlink(path, out, 63);
        out[n > 0 ? n : 0] = '\0';
}

/* Reads a whole small file into a static buffer, trailing newline removed. */
static inline const char *file_text(const char *path)
{
        static char buf[4096];
        FILE *f = fopen(path, "r");
        size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
        if (f)
                fclose(f);
        buf[n] = '\0';
        if (n && buf[n - 1] == '\n')
                buf[n - 1] = '\0';
        return buf;
}

#endif
