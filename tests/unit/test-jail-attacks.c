/* Attacks on a jail from the inside, each run by a forked child that enters a real jail and
 * then behaves like a compromised VMM (docs/jail.md, "Tests"): reaching the host's network
 * (a TCP listener on 127.0.0.1 and an abstract Unix socket the test opened), leaving a core
 * dump of its memory on the host, a fork bomb against pids.max, eating memory past the
 * memory limit, and leaving a process behind (setsid, parent gone) that would keep the
 * jail's uid once the sandbox is destroyed. Needs root and namespaces (else exit 77). */
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cmocka.h>

#include "test-jail-util.h"
#include "testlib.h"

struct fixture {
        char *dir;  /* scratch */
        char *root; /* the jail's root_dir */
        char *rw;   /* bound writable at /rw, owned by TEST_UID */
        char name[32];
        struct vmsnap_jail_config config;
};

static struct fixture fx;
static int serial;

static int setup(void **state)
{
        (void)state;
        fx.dir = test_mkdtemp("jail-attack");
        fx.root = test_path(fx.dir, "root");
        fx.rw = test_path(fx.dir, "rw");
        snprintf(fx.name, sizeof(fx.name), "attack-%d-%d", (int)getpid(), serial++);
        fx.config = jail_test_config();
        if (chmod(fx.dir, 0755) < 0 || mkdir(fx.root, 0755) < 0 || mkdir(fx.rw, 0700) < 0 ||
            chown(fx.rw, TEST_UID, TEST_UID) < 0)
                return -1;
        return 0;
}

static int teardown(void **state)
{
        (void)state;
        struct vmsnap_diag d;
        vmsnap_jail_cgroup_kill(&fx.config, fx.name, &d);
        vmsnap_jail_cgroup_remove(&fx.config, fx.name, &d);
        test_rmtree(fx.dir);
        free(fx.dir), free(fx.root), free(fx.rw);
        return 0;
}

static struct vmsnap_jail_spec spec_with(struct vmsnap_jail_bind *bind,
                                         struct vmsnap_jail_limits limits)
{
        *bind = (struct vmsnap_jail_bind){fx.rw, "/rw", true};
        return (struct vmsnap_jail_spec){
                .config = &fx.config,
                .name = fx.name,
                .root_dir = fx.root,
                .uid = TEST_UID,
                .binds = bind,
                .n_binds = 1,
                .limits = limits,
                .keep_fds = true, /* the report pipe */
        };
}

/* What the attacker in the child reports through the pipe before it (maybe) dies. */
struct report {
        int enter_err;
        char msg[512];
        long values[4];
};

/* Forks a child that enters spec and runs attack(report) (which may not return); the parent
 * gets the report and the child's wait status. */
static int run_attack(const struct vmsnap_jail_spec *spec, void (*attack)(struct report *, int),
                      struct report *r)
{
        int p[2];
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                close(p[0]);
                struct report mine = {0};
                struct vmsnap_diag d = {0};
                mine.enter_err = vmsnap_jail_enter(spec, &d);
                memcpy(mine.msg, d.msg, sizeof(mine.msg));
                if (mine.enter_err < 0) {
                        (void)!write(p[1], &mine, sizeof(mine));
                        _exit(100);
                }
                attack(&mine, p[1]); /* writes the report itself, then may die */
                _exit(0);
        }
        close(p[1]);
        memset(r, 0, sizeof(*r));
        ssize_t got = read(p[0], r, sizeof(*r));
        close(p[0]);
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        if (got != (ssize_t)sizeof(*r))
                fail_msg("the jailed child sent no report (status %#x)", st);
        if (r->enter_err)
                fail_msg("enter: %s", r->msg);
        return st;
}

/* --- the host's network --- */

static int tcp_port;
static char abstract_name[64];

static int connect_errno(int family, const struct sockaddr *sa, socklen_t len)
{
        int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return errno;
        int e = connect(fd, sa, len) < 0 ? errno : 0;
        close(fd);
        return e;
}

static void reach_host_network(struct report *r, int out)
{
        struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons((uint16_t)tcp_port)};
        in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        struct sockaddr_un un = {.sun_family = AF_UNIX};
        memcpy(un.sun_path + 1, abstract_name, strlen(abstract_name));
        r->values[0] = connect_errno(AF_INET, (struct sockaddr *)&in, sizeof(in));
        r->values[1] = connect_errno(
                AF_UNIX, (struct sockaddr *)&un,
                (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(abstract_name)));
        (void)!write(out, r, sizeof(*r));
}

/* Attack: a compromised VMM connects to a service on the host's loopback and to an abstract
 * Unix socket (both scoped by the network namespace): neither is reachable from a jail. */
static void test_no_host_network(void **state)
{
        (void)state;
        int tcp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in in = {.sin_family = AF_INET};
        in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof(in);
        assert_int_equal(bind(tcp, (struct sockaddr *)&in, sizeof(in)), 0);
        assert_int_equal(listen(tcp, 4), 0);
        assert_int_equal(getsockname(tcp, (struct sockaddr *)&in, &len), 0);
        tcp_port = ntohs(in.sin_port);
        int unx = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un un = {.sun_family = AF_UNIX};
        snprintf(abstract_name, sizeof(abstract_name), "vmsnap-jail-attack-%d", (int)getpid());
        memcpy(un.sun_path + 1, abstract_name, strlen(abstract_name));
        assert_int_equal(bind(unx, (struct sockaddr *)&un,
                              (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
                                          strlen(abstract_name))),
                         0);
        assert_int_equal(listen(unx, 4), 0);
        /* The listeners are reachable from here (the attack below is meaningful). */
        assert_int_equal(connect_errno(AF_INET, (struct sockaddr *)&in, sizeof(in)), 0);

        struct vmsnap_jail_bind b;
        struct vmsnap_jail_spec spec = spec_with(&b, (struct vmsnap_jail_limits){0});
        struct report r;
        int st = run_attack(&spec, reach_host_network, &r);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        if (r.values[0] == 0 || r.values[1] == 0)
                fail_msg("a jail reached the host: TCP 127.0.0.1:%d %s, abstract @%s %s", tcp_port,
                         r.values[0] ? strerror((int)r.values[0]) : "connected", abstract_name,
                         r.values[1] ? strerror((int)r.values[1]) : "connected");
        assert_int_equal(r.values[0], ENETUNREACH); /* an empty network namespace */
        assert_int_equal(r.values[1], ECONNREFUSED);
        close(tcp);
        close(unx);
}

/* --- core dumps --- */

/* A VMM is dumpable again after its execve; it raises its core limit as far as it may,
 * moves into its writable directory and crashes. */
static void dump_core(struct report *r, int out)
{
        struct rlimit rl;
        prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
        getrlimit(RLIMIT_CORE, &rl);
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_CORE, &rl);
        getrlimit(RLIMIT_CORE, &rl);
        r->values[0] = (long)rl.rlim_cur;
        r->values[1] = (long)rl.rlim_max;
        (void)!write(out, r, sizeof(*r));
        if (chdir("/rw") < 0)
                _exit(3);
        signal(SIGQUIT, SIG_DFL);
        raise(SIGQUIT);
        _exit(4);
}

/* Attack: a crashing jailed process writes its memory (the guest's) into a core file: into
 * its writable bind with a file core_pattern, or to the host's crash collector with a pipe
 * one. The jail forbids core files for good (RLIMIT_CORE 0, hard). */
static void test_no_core_dump(void **state)
{
        (void)state;
        struct vmsnap_jail_bind b;
        struct vmsnap_jail_spec spec = spec_with(&b, (struct vmsnap_jail_limits){0});
        struct report r;
        int st = run_attack(&spec, dump_core, &r);
        assert_true(WIFSIGNALED(st));
        assert_int_equal(WTERMSIG(st), SIGQUIT);
        char cores[256] = "";
        DIR *d = opendir(fx.rw);
        for (struct dirent *e; d && (e = readdir(d));)
                if (e->d_name[0] != '.')
                        snprintf(cores + strlen(cores), sizeof(cores) - strlen(cores), "%.64s ",
                                 e->d_name);
        if (d)
                closedir(d);
        if (r.values[1] != 0 || WCOREDUMP(st) || cores[0])
                fail_msg("a jailed process dumped core (RLIMIT_CORE %ld/%ld, core flag %d, "
                         "left '%s' in its directory)",
                         r.values[0], r.values[1], WCOREDUMP(st) ? 1 : 0, cores);
}

/* --- limits --- */

/* Forks until the kernel refuses; reports how many children it got and the errno. */
static void fork_bomb(struct report *r, int out)
{
        pid_t kids[64];
        int n = 0;
        for (; n < 64; n++) {
                kids[n] = fork();
                if (kids[n] == 0) {
                        pause();
                        _exit(0);
                }
                if (kids[n] < 0)
                        break;
        }
        r->values[0] = n;
        r->values[1] = n < 64 ? errno : 0;
        for (int i = 0; i < n; i++)
                kill(kids[i], SIGKILL);
        for (int i = 0; i < n; i++)
                waitpid(kids[i], NULL, 0);
        (void)!write(out, r, sizeof(*r));
}

/* Holds: a fork bomb stops at pids.max (the jail counts as one task, the bomb's children
 * the rest). */
static void test_fork_bomb_stops_at_pids_max(void **state)
{
        (void)state;
        struct vmsnap_jail_bind b;
        struct vmsnap_jail_spec spec = spec_with(&b, (struct vmsnap_jail_limits){.pids_max = 8});
        struct report r;
        int st = run_attack(&spec, fork_bomb, &r);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        assert_int_equal(r.values[0], 7);
        assert_int_equal(r.values[1], EAGAIN);
}

#define MEMORY_LIMIT (32ul << 20)

/* Touches twice the memory limit (mmap: the sanitizer's allocator stays out of it). */
static void eat_memory(struct report *r, int out)
{
        (void)!write(out, r, sizeof(*r));
        size_t len = 2 * MEMORY_LIMIT;
        char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
                _exit(3);
        for (size_t i = 0; i < len; i += 4096)
                p[i] = 1;
        _exit(4); /* survived: the limit did not hold */
}

/* Holds: a jail that touches more memory than its limit is killed by the OOM killer. */
static void test_memory_limit_kills(void **state)
{
        (void)state;
        struct vmsnap_jail_bind b;
        struct vmsnap_jail_spec spec =
                spec_with(&b, (struct vmsnap_jail_limits){.memory_max = MEMORY_LIMIT});
        struct report r;
        int st = run_attack(&spec, eat_memory, &r);
        if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL)
                fail_msg("a jail over its memory limit was not killed (status %#x)", st);
}

/* --- a process left behind --- */

static pid_t leftover;

/* Starts a grandchild in its own session (out of the VMM's process group, as a VMM without
 * a seccomp filter could), reports its pid and exits: the grandchild stays behind. */
static void leave_a_process(struct report *r, int out)
{
        pid_t pid = fork();
        if (pid == 0) {
                setsid();
                for (;;)
                        pause();
        }
        r->values[0] = pid;
        (void)!write(out, r, sizeof(*r));
        _exit(0);
}

/* Attack: a jail leaves a process behind once its VMM is gone; with the jail's uid it could
 * later ptrace or signal the next sandbox given that uid. The group cannot be removed while
 * it runs (-EBUSY), and vmsnap_jail_cgroup_kill ends every process of the group. */
static void test_leftover_process_killed(void **state)
{
        (void)state;
        assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0); /* to reap it */
        struct vmsnap_jail_bind b;
        struct vmsnap_jail_spec spec = spec_with(&b, (struct vmsnap_jail_limits){.pids_max = 8});
        struct report r;
        int st = run_attack(&spec, leave_a_process, &r);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        leftover = (pid_t)r.values[0];
        assert_true(leftover > 0);
        assert_int_equal(kill(leftover, 0), 0); /* still running, with the jail's uid */
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_jail_cgroup_remove(&fx.config, fx.name, &d), -EBUSY);
        assert_int_equal(vmsnap_jail_cgroup_kill(&fx.config, fx.name, &d), 0);
        assert_int_equal(waitpid(leftover, &st, 0), leftover);
        assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        assert_int_equal(vmsnap_jail_cgroup_remove(&fx.config, fx.name, &d), 0);
        /* Idempotent: an empty or missing group is fine. */
        assert_int_equal(vmsnap_jail_cgroup_kill(&fx.config, fx.name, &d), 0);
        prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
}

int main(void)
{
        jail_test_require();
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_no_host_network, setup, teardown),
                cmocka_unit_test_setup_teardown(test_no_core_dump, setup, teardown),
                cmocka_unit_test_setup_teardown(test_fork_bomb_stops_at_pids_max, setup, teardown),
                cmocka_unit_test_setup_teardown(test_memory_limit_kills, setup, teardown),
                cmocka_unit_test_setup_teardown(test_leftover_process_killed, setup, teardown),
        };
        int failed = cmocka_run_group_tests(tests, NULL, NULL);
        jail_test_cleanup_parent();
        return failed;
}
