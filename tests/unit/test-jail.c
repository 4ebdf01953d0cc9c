/* Jails, for real: a forked child enters a jail (real namespaces, real cgroup, real
 * pivot_root) and reports through a pipe what it sees from inside, while the test checks it
 * from outside (/proc/PID: namespaces, cgroup, status, root). Attacks: a bind source
 * swapped for a symlink to /etc/shadow after the spec was made, a symlink in the source's
 * path, setuid(0), mount, mknod, user namespaces, climbing out of /, fork and socket under
 * seccomp. Needs root and namespaces (else exit 77, saying which is missing). */
#include <dirent.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <termios.h>

#include <cmocka.h>

#include "test-jail-util.h"
#include "testlib.h"

struct fixture {
        char *dir;    /* the test's scratch dir: never reachable from a jail */
        char *root;   /* the jail's root_dir */
        char *ro;     /* bound read-only at /ro */
        char *rw;     /* bound writable at /rw, owned by TEST_UID */
        char *secret; /* a file in dir that is bound nowhere */
        char name[32];
        struct vmsnap_jail_config config;
};

static struct fixture fx;
static int serial;

static int setup(void **state)
{
        (void)state;
        fx.dir = test_mkdtemp("jail");
        fx.root = test_path(fx.dir, "root");
        fx.ro = test_path(fx.dir, "ro");
        fx.rw = test_path(fx.dir, "rw");
        fx.secret = test_path(fx.dir, "secret");
        snprintf(fx.name, sizeof(fx.name), "test-%d-%d", (int)getpid(), serial++);
        fx.config = jail_test_config();
        if (mkdir(fx.root, 0755) < 0 || mkdir(fx.ro, 0755) < 0 || mkdir(fx.rw, 0700) < 0 ||
            chown(fx.rw, TEST_UID, TEST_UID) < 0)
                return -1;
        char *file = test_path(fx.ro, "file");
        test_write_file(file, "read-only data", 14);
        test_write_file(fx.secret, "host secret", 11);
        free(file);
        return 0;
}

static int teardown(void **state)
{
        (void)state;
        struct vmsnap_diag d;
        vmsnap_jail_cgroup_remove(&fx.config, fx.name, &d);
        test_rmtree(fx.dir);
        free(fx.dir), free(fx.root), free(fx.ro), free(fx.rw), free(fx.secret);
        return 0;
}

/* What the jailed child saw; errnos are 0 when the call succeeded. */
struct report {
        int err;
        char msg[1024];
        uid_t uid, euid, suid;
        gid_t gid, groups[4];
        int n_groups;
        uint32_t cap_eff, cap_prm, cap_inh;
        int nnp, bounding_cap0;
        char root_list[512];
        char proc_list[256];
        char ro_content[32];
        char hostname[64];
        int e_scratch, e_shadow, e_secret, e_ro_write, e_rw_write, e_devnull, e_setuid, e_mount,
                e_mknod, e_userns, e_proc;
        bool dotdot_is_root;
};

static int errno_of(int rc)
{
        return rc < 0 ? errno : 0;
}

static void list_dir(const char *path, char *out, size_t len, bool digits_only)
{
        DIR *d = opendir(path);
        out[0] = '\0';
        char names[64][64];
        int n = 0;
        for (struct dirent *e; d && (e = readdir(d)) && n < 64;)
                if (e->d_name[0] != '.' &&
                    (!digits_only || (e->d_name[0] >= '0' && e->d_name[0] <= '9')))
                        snprintf(names[n++], 64, "%.63s", e->d_name);
        if (d)
                closedir(d);
        qsort(names, (size_t)n, 64, (int (*)(const void *, const void *))strcmp);
        for (int i = 0; i < n; i++)
                snprintf(out + strlen(out), len - strlen(out), "%s%s", i ? " " : "", names[i]);
}

static int try_open(const char *path, int flags)
{
        int fd = open(path, flags | O_CLOEXEC, 0600);
        if (fd < 0)
                return errno;
        if (flags & O_WRONLY)
                (void)!write(fd, "jailed", 6);
        close(fd);
        return 0;
}

/* Everything the child checks from inside (no seccomp: it needs readdir and the like). */
static void look_inside(struct report *r)
{
        struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
        struct __user_cap_data_struct c[2] = {0};
        getresuid(&r->uid, &r->euid, &r->suid);
        r->gid = getgid();
        r->n_groups = getgroups(4, r->groups);
        syscall(SYS_capget, &h, c);
        r->cap_eff = c[0].effective | c[1].effective;
        r->cap_prm = c[0].permitted | c[1].permitted;
        r->cap_inh = c[0].inheritable | c[1].inheritable;
        r->nnp = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0);
        r->bounding_cap0 = prctl(PR_CAPBSET_READ, 0, 0, 0, 0);
        list_dir("/", r->root_list, sizeof(r->root_list), false);
        list_dir("/proc", r->proc_list, sizeof(r->proc_list), true);
        struct stat st, root_st, up_st;
        r->e_scratch = errno_of(stat(fx.dir, &st));
        r->e_shadow = try_open("/etc/shadow", O_RDONLY);
        r->e_secret = try_open(fx.secret, O_RDONLY);
        r->e_ro_write = try_open("/ro/new", O_WRONLY | O_CREAT);
        r->e_rw_write = try_open("/rw/new", O_WRONLY | O_CREAT);
        r->e_devnull = try_open("/dev/null", O_WRONLY);
        int fd = open("/ro/file", O_RDONLY);
        if (fd >= 0) {
                (void)!read(fd, r->ro_content, sizeof(r->ro_content) - 1);
                close(fd);
        }
        gethostname(r->hostname, sizeof(r->hostname) - 1);
        r->e_setuid = errno_of(setuid(0));
        r->e_mount = errno_of(mount("none", "/rw", "tmpfs", 0, NULL));
        r->e_mknod = errno_of(mknod("/rw/null", S_IFCHR | 0666, makedev(1, 3)));
        r->e_userns = errno_of(unshare(CLONE_NEWUSER));
        r->e_proc = errno_of(stat("/proc/1/root", &st));
        r->dotdot_is_root = stat("/", &root_st) == 0 && stat("/..", &up_st) == 0 &&
                            root_st.st_ino == up_st.st_ino && root_st.st_dev == up_st.st_dev;
}

/* A jailed child: enters spec, reports (fully without seccomp; with it only the result,
 * since readdir & co. are not in the page server's list), waits for the parent's checks,
 * then runs `after` (may be NULL) and exits. */
struct child {
        pid_t pid;
        int from_child, to_child;
};

static struct child start_child(const struct vmsnap_jail_spec *spec, void (*after)(void))
{
        int up[2], down[2];
        assert_int_equal(pipe2(up, O_CLOEXEC), 0);
        assert_int_equal(pipe2(down, O_CLOEXEC), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                static struct report r;
                struct vmsnap_diag d = {0};
                close(up[0]);
                close(down[1]);
                r.err = vmsnap_jail_enter(spec, &d);
                memcpy(r.msg, d.msg, sizeof(r.msg));
                if (r.err == 0 && !spec->seccomp)
                        look_inside(&r);
                (void)!write(up[1], &r, sizeof(r));
                char c;
                (void)!read(down[0], &c, 1);
                if (after)
                        after();
                _exit(0);
        }
        close(up[1]);
        close(down[0]);
        return (struct child){pid, up[0], down[1]};
}

static void read_report(struct child *c, struct report *r)
{
        size_t got = 0;
        while (got < sizeof(*r)) {
                ssize_t n = read(c->from_child, (char *)r + got, sizeof(*r) - got);
                assert_true(n > 0);
                got += (size_t)n;
        }
}

/* Lets the child go on and returns its wait status. */
static int finish_child(struct child *c)
{
        (void)!write(c->to_child, "x", 1);
        close(c->to_child);
        close(c->from_child);
        int st;
        assert_int_equal(waitpid(c->pid, &st, 0), c->pid);
        return st;
}

/* Enters spec in a child and returns the report (the child then exits). */
static int enter_in_child(const struct vmsnap_jail_spec *spec, struct report *r)
{
        struct child c = start_child(spec, NULL);
        read_report(&c, r);
        return finish_child(&c);
}

static const char *const null_device[] = {"/dev/null", NULL};

static struct vmsnap_jail_spec base_spec(struct vmsnap_jail_bind binds[2])
{
        binds[0] = (struct vmsnap_jail_bind){fx.ro, "/ro", false};
        binds[1] = (struct vmsnap_jail_bind){fx.rw, "/rw", true};
        return (struct vmsnap_jail_spec){
                .config = &fx.config,
                .name = fx.name,
                .root_dir = fx.root,
                .uid = TEST_UID,
                .binds = binds,
                .n_binds = 2,
                .devices = null_device,
                .limits = {.memory_max = 64u << 20, .cpus = 1, .pids_max = 16},
                .keep_fds = true, /* the report pipes */
        };
}

static void check_inside(const struct report *r)
{
        assert_int_equal(r->uid, TEST_UID);
        assert_int_equal(r->euid, TEST_UID);
        assert_int_equal(r->suid, TEST_UID);
        assert_int_equal(r->gid, TEST_UID);
        assert_int_equal(r->n_groups, 1);
        assert_int_equal(r->groups[0], VMSNAP_JAIL_DEFAULT_SHARED_GID);
        assert_int_equal(r->cap_eff | r->cap_prm | r->cap_inh, 0);
        assert_int_equal(r->bounding_cap0, 0);
        assert_int_equal(r->nnp, 1);
        assert_string_equal(r->root_list, "dev ro rw"); /* nothing else: no /etc, no /proc */
        assert_string_equal(r->ro_content, "read-only data");
        assert_string_equal(r->hostname, fx.name);
        assert_int_equal(r->e_scratch, ENOENT);
        assert_int_equal(r->e_shadow, ENOENT);
        assert_int_equal(r->e_secret, ENOENT);
        assert_int_equal(r->e_ro_write, EROFS);
        assert_int_equal(r->e_rw_write, 0);
        assert_int_equal(r->e_devnull, 0);
        assert_int_equal(r->e_setuid, EPERM);
        assert_int_equal(r->e_mount, EPERM);
        assert_int_equal(r->e_mknod, EPERM);
        assert_int_equal(r->e_userns, EPERM); /* chrooted below the mount namespace's root */
        assert_int_equal(r->e_proc, ENOENT);
        assert_true(r->dotdot_is_root);
}

static void check_cgroup_from_outside(pid_t pid)
{
        char *cg = proc_read(pid, "cgroup");
        char want[128], path[512];
        assert_non_null(cg);
        struct vmsnap_diag d;
        if (vmsnap_jail_cgroup_version(&fx.config, &d) == VMSNAP_CGROUP_V1) {
                static const char *const ctl[] = {"memory", "cpu", "pids"};
                for (int i = 0; i < 3; i++) {
                        snprintf(want, sizeof(want), ":%s:/%s/%s\n", ctl[i], TEST_CGROUP_PARENT,
                                 fx.name);
                        assert_non_null(strstr(cg, want));
                }
                snprintf(path, sizeof(path), "/sys/fs/cgroup/memory/%s/%s/memory.limit_in_bytes",
                         TEST_CGROUP_PARENT, fx.name);
                assert_string_equal(file_text(path), "67108864");
                snprintf(path, sizeof(path), "/sys/fs/cgroup/cpu/%s/%s/cpu.cfs_quota_us",
                         TEST_CGROUP_PARENT, fx.name);
                assert_string_equal(file_text(path), "100000");
                snprintf(path, sizeof(path), "/sys/fs/cgroup/pids/%s/%s/pids.max",
                         TEST_CGROUP_PARENT, fx.name);
                assert_string_equal(file_text(path), "16");
        } else {
                snprintf(want, sizeof(want), "0::/%s/%s\n", TEST_CGROUP_PARENT, fx.name);
                assert_non_null(strstr(cg, want));
                snprintf(path, sizeof(path), "/sys/fs/cgroup/%s/%s/pids.max", TEST_CGROUP_PARENT,
                         fx.name);
                assert_string_equal(file_text(path), "16");
        }
        free(cg);
}

static void check_status_from_outside(pid_t pid, const char *seccomp)
{
        char v[64], uid[32], mine[64], theirs[64];
        snprintf(uid, sizeof(uid), "%u", (unsigned)TEST_UID);
        proc_status_field(pid, "Uid", v);
        assert_string_equal(v, uid);
        proc_status_field(pid, "CapEff", v);
        assert_string_equal(v, "0000000000000000");
        proc_status_field(pid, "CapBnd", v);
        assert_string_equal(v, "0000000000000000");
        proc_status_field(pid, "NoNewPrivs", v);
        assert_string_equal(v, "1");
        proc_status_field(pid, "Seccomp", v);
        assert_string_equal(v, seccomp);
        for (int i = 0; i < 3; i++) {
                const char *ns = (const char *[]){"mnt", "ipc", "uts"}[i];
                proc_ns(0, ns, mine);
                proc_ns(pid, ns, theirs);
                assert_true(mine[0] && theirs[0]);
                assert_string_not_equal(mine, theirs);
        }
}

/* The whole jail, from inside and outside, then the group's removal once it is empty. */
static void test_enter_confines(void **state)
{
        (void)state;
        struct vmsnap_jail_bind binds[2];
        struct vmsnap_jail_spec spec = base_spec(binds);
        struct child c = start_child(&spec, NULL);
        struct report r;
        read_report(&c, &r);
        if (r.err)
                fail_msg("enter: %s", r.msg);
        check_inside(&r);
        check_status_from_outside(c.pid, "0");
        check_cgroup_from_outside(c.pid);
        char root_list[512], path[64];
        snprintf(path, sizeof(path), "/proc/%d/root", (int)c.pid);
        list_dir(path, root_list, sizeof(root_list), false);
        assert_string_equal(root_list, "dev ro rw");
        struct vmsnap_diag d;
        assert_int_equal(vmsnap_jail_cgroup_remove(&fx.config, fx.name, &d), -EBUSY);
        assert_non_null(strstr(d.msg, fx.name));
        int st = finish_child(&c);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        /* The writable bind wrote through to the host; the read-only one did not. */
        char *out = test_path(fx.rw, "new");
        struct stat sb;
        assert_int_equal(stat(out, &sb), 0);
        assert_int_equal(sb.st_uid, TEST_UID);
        free(out);
        out = test_path(fx.ro, "new");
        assert_int_equal(stat(out, &sb), -1);
        free(out);
        char root_entries[64];
        list_dir(fx.root, root_entries, sizeof(root_entries), false);
        assert_string_equal(root_entries, ""); /* the tmpfs lived in the child's namespace */
        assert_int_equal(vmsnap_jail_cgroup_remove(&fx.config, fx.name, &d), 0);
        assert_int_equal(vmsnap_jail_cgroup_remove(&fx.config, fx.name, &d), 0);
}

/* The restricted /proc shows the jail's own process only; the system dirs are there. */
static void test_system_dirs_and_proc(void **state)
{
        (void)state;
        struct vmsnap_jail_bind binds[2];
        struct vmsnap_jail_spec spec = base_spec(binds);
        spec.system_dirs = true;
        spec.proc = true;
        struct child c = start_child(&spec, NULL);
        struct report r;
        read_report(&c, &r);
        if (r.err)
                fail_msg("enter: %s", r.msg);
        char pid[16];
        snprintf(pid, sizeof(pid), "%d", (int)c.pid);
        assert_string_equal(r.proc_list, pid);
        assert_non_null(strstr(r.root_list, "bin dev lib"));
        assert_non_null(strstr(r.root_list, "proc ro rw sbin usr"));
        assert_int_equal(r.e_shadow, ENOENT);
        assert_int_equal(r.e_proc, ENOENT); /* pid 1 is the host's: invisible */
        assert_int_equal(r.e_userns, EPERM);
        int st = finish_child(&c);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void open_a_socket(void)
{
        socket(AF_INET, SOCK_STREAM, 0);
}

static void fork_a_child(void)
{
        if (fork() == 0)
                _exit(0);
}

/* TCGETS answers ENOTTY (stdio asks it); any other ioctl than the uffd's kills. */
static void ioctl_not_uffd(void)
{
        struct termios t;
        int n;
        if (ioctl(STDOUT_FILENO, TCGETS, &t) == 0 || errno != ENOTTY)
                _exit(3);
        ioctl(STDIN_FILENO, FIONREAD, &n);
}

/* With seccomp (the page server's filter): Seccomp 2 from outside, and a syscall outside
 * the list kills the process. */
static void seccomp_case(void (*forbidden)(void))
{
        struct vmsnap_jail_bind binds[2];
        struct vmsnap_jail_spec spec = base_spec(binds);
        spec.seccomp = true;
        struct child c = start_child(&spec, forbidden);
        struct report r;
        read_report(&c, &r);
        if (r.err)
                fail_msg("enter: %s", r.msg);
        check_status_from_outside(c.pid, "2");
        int st = finish_child(&c);
        assert_true(WIFSIGNALED(st));
        assert_int_equal(WTERMSIG(st), SIGSYS);
}

static void test_seccomp_kills_socket(void **state)
{
        (void)state;
        seccomp_case(open_a_socket);
}

static void test_seccomp_kills_fork(void **state)
{
        (void)state;
        seccomp_case(fork_a_child);
}

static void test_seccomp_kills_other_ioctl(void **state)
{
        (void)state;
        seccomp_case(ioctl_not_uffd);
}

/* Attack: the spec names a plain file; before the jail is built it is swapped for a
 * symlink to /etc/shadow. The jail refuses it instead of binding the shadow file. */
static void test_swapped_symlink_refused(void **state)
{
        (void)state;
        char *file = test_path(fx.dir, "disk.img"), *tmp = test_path(fx.dir, "disk.tmp");
        test_write_file(file, "disk", 4);
        struct vmsnap_jail_bind binds[1] = {{file, "/disk.img", false}};
        struct vmsnap_jail_spec spec = {.config = &fx.config,
                                        .name = fx.name,
                                        .root_dir = fx.root,
                                        .uid = TEST_UID,
                                        .binds = binds,
                                        .n_binds = 1};
        assert_int_equal(symlink("/etc/shadow", tmp), 0);
        assert_int_equal(rename(tmp, file), 0);
        struct report r;
        int st = enter_in_child(&spec, &r);
        assert_true(WIFEXITED(st));
        assert_int_equal(r.err, -ELOOP);
        assert_non_null(strstr(r.msg, file));
        assert_non_null(strstr(r.msg, "symbolic link"));
        free(file), free(tmp);
}

/* Attack: a directory on the source's path is a symlink (to /etc): refused too. */
static void test_symlink_in_path_refused(void **state)
{
        (void)state;
        char *link = test_path(fx.dir, "etc-link");
        char src[512];
        snprintf(src, sizeof(src), "%s/shadow", link);
        assert_int_equal(symlink("/etc", link), 0);
        struct vmsnap_jail_bind binds[1] = {{src, "/shadow", false}};
        struct vmsnap_jail_spec spec = {.config = &fx.config,
                                        .name = fx.name,
                                        .root_dir = fx.root,
                                        .uid = TEST_UID,
                                        .binds = binds,
                                        .n_binds = 1};
        struct report r;
        enter_in_child(&spec, &r);
        assert_int_equal(r.err, -ELOOP);
        assert_non_null(strstr(r.msg, "component"));
        free(link);
}

/* Bad specs are refused before anything changes (no cgroup is created). */
static void test_bad_specs_refused(void **state)
{
        (void)state;
        static const char *const not_dev[] = {"/tmp/null", NULL};
        struct vmsnap_jail_bind nested[2] = {{"/usr", "/a", false}, {"/usr/bin", "/a/b", false}};
        struct vmsnap_jail_bind in_dev[1] = {{"/usr", "/dev/x", false}};
        struct vmsnap_jail_bind rel[1] = {{"usr", "/x", false}};
        struct vmsnap_jail_bind dots[1] = {{"/usr/../etc", "/x", false}};
        struct {
                struct vmsnap_jail_spec s;
                int err;
                const char *words;
        } cases[] = {
                {{.name = fx.name, .root_dir = fx.root, .uid = 0}, -EPERM, "uid 0"},
                {{.name = fx.name, .root_dir = fx.root, .uid = 1000}, -EPERM, "outside"},
                {{.name = fx.name, .root_dir = "tmp/root", .uid = TEST_UID}, -EINVAL, "absolute"},
                {{.name = "../x", .root_dir = fx.root, .uid = TEST_UID}, -EINVAL, "name"},
                {{.name = fx.name,
                  .root_dir = fx.root,
                  .uid = TEST_UID,
                  .binds = nested,
                  .n_binds = 2},
                 -EINVAL,
                 "nest"},
                {{.name = fx.name,
                  .root_dir = fx.root,
                  .uid = TEST_UID,
                  .binds = in_dev,
                  .n_binds = 1},
                 -EINVAL,
                 "/dev"},
                {{.name = fx.name,
                  .root_dir = fx.root,
                  .uid = TEST_UID,
                  .binds = rel,
                  .n_binds = 1},
                 -EINVAL,
                 "absolute"},
                {{.name = fx.name,
                  .root_dir = fx.root,
                  .uid = TEST_UID,
                  .binds = dots,
                  .n_binds = 1},
                 -EINVAL,
                 ".."},
                {{.name = fx.name, .root_dir = fx.root, .uid = TEST_UID, .devices = not_dev},
                 -EINVAL,
                 "under /dev"},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                cases[i].s.config = &fx.config;
                struct report r;
                enter_in_child(&cases[i].s, &r);
                if (r.err != cases[i].err || !strstr(r.msg, cases[i].words))
                        fail_msg("case %zu: %d '%s'", i, r.err, r.msg);
        }
        char path[512];
        snprintf(path, sizeof(path), "/sys/fs/cgroup/pids/%s/%s", TEST_CGROUP_PARENT, fx.name);
        struct stat st;
        assert_int_equal(stat(path, &st), -1);
}

static void *sleeper(void *arg)
{
        (void)arg;
        pause();
        return NULL;
}

static void become_nobody(void)
{
        if (setresuid(65534, 65534, 65534) < 0)
                _exit(99);
}

/* Not root, or not single-threaded: refused with a message saying so. */
static void test_caller_refused(void **state)
{
        (void)state;
        struct vmsnap_jail_bind binds[2];
        struct vmsnap_jail_spec spec = base_spec(binds);
        int up[2];
        assert_int_equal(pipe(up), 0);
        for (int k = 0; k < 2; k++) {
                pid_t pid = fork();
                if (pid == 0) {
                        pthread_t t;
                        if (k == 0)
                                become_nobody();
                        else
                                pthread_create(&t, NULL, sleeper, NULL);
                        struct report r = {0};
                        struct vmsnap_diag d = {0};
                        r.err = vmsnap_jail_enter(&spec, &d);
                        memcpy(r.msg, d.msg, sizeof(r.msg));
                        (void)!write(up[1], &r, sizeof(r));
                        _exit(0);
                }
                struct report r;
                struct child c = {pid, up[0], -1};
                read_report(&c, &r);
                waitpid(pid, NULL, 0);
                assert_int_equal(r.err, k == 0 ? -EPERM : -EBUSY);
                assert_non_null(strstr(r.msg, k == 0 ? "root" : "threads"));
        }
        close(up[0]);
        close(up[1]);
}

int main(void)
{
        jail_test_require();
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_enter_confines, setup, teardown),
                cmocka_unit_test_setup_teardown(test_system_dirs_and_proc, setup, teardown),
                cmocka_unit_test_setup_teardown(test_seccomp_kills_socket, setup, teardown),
                cmocka_unit_test_setup_teardown(test_seccomp_kills_fork, setup, teardown),
                cmocka_unit_test_setup_teardown(test_seccomp_kills_other_ioctl, setup, teardown),
                cmocka_unit_test_setup_teardown(test_swapped_symlink_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(test_symlink_in_path_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(test_bad_specs_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(test_caller_refused, setup, teardown),
        };
        int failed = cmocka_run_group_tests(tests, NULL, NULL);
        jail_test_cleanup_parent();
        return failed;
}
