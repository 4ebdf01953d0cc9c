/* Jails: everything around vmsnap_jail_enter. cgroup v1 against this host's real
 * hierarchies (create, update, remove); cgroup v2 against a temporary directory laid out like
 * a v2 root, because this host mounts v1 (its unified mount has no controllers): that case
 * checks the files the v2 code writes, not a kernel's answer to them. AUTO against both. The
 * jailer's command line written and parsed back; the config and flag parsers; the probe,
 * which builds a real jail through the real vmsnap-jailer. Needs root (else exit 77). */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "jail/internal.h"
#include "test-jail-util.h"
#include "testlib.h"

static void write_text(const char *dir, const char *name, const char *text)
{
        char *p = test_path(dir, name);
        test_write_file(p, text, strlen(text));
        free(p);
}

static const char *read_text(const char *dir, const char *name)
{
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        return file_text(path);
}

/* A directory laid out like a cgroup v2 root (what the kernel would show): the root's
 * controller lists, our parent with its subtree_control, and the group's interface files. */
static char *fake_v2_root(const char *controllers)
{
        char *root = test_mkdtemp("cgv2");
        char *parent = test_path(root, "vmsnap"), *group = test_path(parent, "g1");
        write_text(root, "cgroup.controllers", controllers);
        write_text(root, "cgroup.subtree_control", "");
        assert_int_equal(mkdir(parent, 0755), 0);
        write_text(parent, "cgroup.subtree_control", "");
        assert_int_equal(mkdir(group, 0755), 0);
        static const char *const files[] = {"memory.max", "memory.swap.max", "cpu.max", "pids.max",
                                            "cgroup.procs"};
        for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
                write_text(group, files[i], "");
        free(parent), free(group);
        return root;
}

static void test_cgroup_v2_files(void **state)
{
        (void)state;
        char *root = fake_v2_root("cpuset cpu io memory hugetlb pids rdma misc\n");
        char *group = test_path(root, "vmsnap/g1");
        struct vmsnap_jail_config c = {.cgroup_version = VMSNAP_CGROUP_V2, .cgroup_root = root};
        struct vmsnap_jail_limits l = {.memory_max = 256u << 20, .cpus = 2, .pids_max = 32};
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_jail_cgroup_create(&c, "g1", &l, &d), 0);
        assert_string_equal(read_text(root, "cgroup.subtree_control"), "+memory +cpu +pids");
        assert_string_equal(read_text(root, "vmsnap/cgroup.subtree_control"), "+memory +cpu +pids");
        assert_string_equal(read_text(group, "memory.max"), "268435456");
        assert_string_equal(read_text(group, "memory.swap.max"), "0");
        assert_string_equal(read_text(group, "cpu.max"), "200000 100000");
        assert_string_equal(read_text(group, "pids.max"), "32");
        /* An update lifts the limits (0 = none). */
        struct vmsnap_jail_limits none = {0};
        assert_int_equal(vmsnap_jail_cgroup_create(&c, "g1", &none, &d), 0);
        assert_string_equal(read_text(group, "memory.max"), "max");
        assert_string_equal(read_text(group, "memory.swap.max"), "max");
        assert_string_equal(read_text(group, "cpu.max"), "max 100000");
        assert_string_equal(read_text(group, "pids.max"), "max");
        /* Joining writes the pid into the group's one cgroup.procs. */
        struct jail_conf conf;
        assert_int_equal(jail_conf_resolve(&c, &conf, &d), 0);
        assert_int_equal(jail_cgroup_join(&conf, "g1", 4242, &d), 0);
        assert_string_equal(read_text(group, "cgroup.procs"), "4242");
        /* AUTO reads the same root as v2. */
        c.cgroup_version = VMSNAP_CGROUP_AUTO;
        assert_int_equal(vmsnap_jail_cgroup_version(&c, &d), VMSNAP_CGROUP_V2);
        test_rmtree(root);
        free(root), free(group);
}

/* A v2 root without the pids controller: refused, naming what is missing; AUTO finds no
 * usable hierarchy there at all. */
static void test_cgroup_v2_missing_controller(void **state)
{
        (void)state;
        char *root = fake_v2_root("cpu memory\n");
        struct vmsnap_jail_config c = {.cgroup_version = VMSNAP_CGROUP_V2, .cgroup_root = root};
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_jail_cgroup_create(&c, "g1", NULL, &d), -ENOTSUP);
        assert_non_null(strstr(d.msg, "pids"));
        c.cgroup_version = VMSNAP_CGROUP_AUTO;
        assert_int_equal(vmsnap_jail_cgroup_version(&c, &d), -ENOENT);
        assert_non_null(strstr(d.msg, root));
        test_rmtree(root);
        free(root);
}

/* This host's real hierarchy, whatever AUTO finds (v1 here). */
static void test_cgroup_real_create_update_remove(void **state)
{
        (void)state;
        struct vmsnap_jail_config c = jail_test_config();
        struct vmsnap_diag d = {0};
        int v = vmsnap_jail_cgroup_version(&c, &d);
        bool host_v2 = access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0 &&
                       strstr(file_text("/sys/fs/cgroup/cgroup.controllers"), "pids");
        assert_int_equal(v, host_v2 ? VMSNAP_CGROUP_V2 : VMSNAP_CGROUP_V1);
        char name[32], dir[512];
        snprintf(name, sizeof(name), "cfg-%d", (int)getpid());
        struct vmsnap_jail_limits l = {.memory_max = 32u << 20, .cpus = 3, .pids_max = 7};
        assert_int_equal(vmsnap_jail_cgroup_create(&c, name, &l, &d), 0);
        if (v == VMSNAP_CGROUP_V1) {
                snprintf(dir, sizeof(dir), "/sys/fs/cgroup/memory/%s/%s", TEST_CGROUP_PARENT, name);
                assert_string_equal(read_text(dir, "memory.limit_in_bytes"), "33554432");
                snprintf(dir, sizeof(dir), "/sys/fs/cgroup/cpu/%s/%s", TEST_CGROUP_PARENT, name);
                assert_string_equal(read_text(dir, "cpu.cfs_quota_us"), "300000");
                assert_string_equal(read_text(dir, "cpu.cfs_period_us"), "100000");
        } else {
                snprintf(dir, sizeof(dir), "/sys/fs/cgroup/%s/%s", TEST_CGROUP_PARENT, name);
                assert_string_equal(read_text(dir, "memory.max"), "33554432");
        }
        struct vmsnap_jail_limits more = {.memory_max = 64u << 20};
        assert_int_equal(vmsnap_jail_cgroup_create(&c, name, &more, &d), 0); /* idempotent */
        if (v == VMSNAP_CGROUP_V1) {
                snprintf(dir, sizeof(dir), "/sys/fs/cgroup/pids/%s/%s", TEST_CGROUP_PARENT, name);
                assert_string_equal(read_text(dir, "pids.max"), "max");
        }
        assert_int_equal(vmsnap_jail_cgroup_remove(&c, name, &d), 0);
        struct stat st;
        assert_int_equal(stat(dir, &st), -1);
        assert_int_equal(vmsnap_jail_cgroup_remove(&c, name, &d), 0); /* missing: fine */
        assert_int_equal(vmsnap_jail_cgroup_create(&c, "../escape", NULL, &d), -EINVAL);
}

static void test_config_checks(void **state)
{
        (void)state;
        struct jail_conf conf;
        struct vmsnap_diag d = {0};
        assert_int_equal(jail_conf_resolve(NULL, &conf, &d), 0);
        assert_int_equal(conf.uid_first, VMSNAP_JAIL_DEFAULT_UID_FIRST);
        assert_int_equal(conf.uid_count, VMSNAP_JAIL_DEFAULT_UID_COUNT);
        assert_int_equal(conf.shared_gid, VMSNAP_JAIL_DEFAULT_SHARED_GID);
        assert_string_equal(conf.cgroup_parent, "vmsnap");
        struct {
                struct vmsnap_jail_config c;
                const char *words;
        } bad[] = {
                {{.uid_first = 60000, .uid_count = 10000}, "65534"},
                {{.uid_first = 0x7fff0000, .uid_count = 0x20000}, "2147483648"},
                {{.uid_first = 100000, .uid_count = 100, .shared_gid = 100050}, "outside"},
                {{.cgroup_parent = "../x"}, "parent"},
                {{.cgroup_parent = "/abs"}, "parent"},
                {{.cgroup_root = "sys/fs/cgroup"}, "cgroup root"},
                {{.jailer = "vmsnap-jailer"}, "jailer"},
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                vmsnap_diag_clear(&d);
                if (jail_conf_resolve(&bad[i].c, &conf, &d) != -EINVAL ||
                    !strstr(d.msg, bad[i].words))
                        fail_msg("case %zu: '%s'", i, d.msg);
        }
        struct vmsnap_jail_config nested = {.cgroup_parent = "a/b"};
        assert_int_equal(jail_conf_resolve(&nested, &conf, &d), 0);
}

static void test_parse_flags(void **state)
{
        (void)state;
        uid_t first;
        uint32_t count;
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_jail_parse_uids("3000000:65536", &first, &count, &d), 0);
        assert_int_equal(first, 3000000);
        assert_int_equal(count, 65536);
        static const char *const bad[] = {"",    "3000000", ":5",  "5:",    "0:5",
                                          "5:0", "-1:5",    "5:x", "5:5:5", "99999999999:1"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                if (vmsnap_jail_parse_uids(bad[i], &first, &count, &d) != -EINVAL)
                        fail_msg("'%s' accepted", bad[i]);
        enum vmsnap_cgroup_version v;
        assert_int_equal(vmsnap_jail_parse_cgroup_version("auto", &v, &d), 0);
        assert_int_equal(v, VMSNAP_CGROUP_AUTO);
        assert_int_equal(vmsnap_jail_parse_cgroup_version("1", &v, &d), 0);
        assert_int_equal(v, VMSNAP_CGROUP_V1);
        assert_int_equal(vmsnap_jail_parse_cgroup_version("v2", &v, &d), 0);
        assert_int_equal(v, VMSNAP_CGROUP_V2);
        assert_int_equal(vmsnap_jail_parse_cgroup_version("3", &v, &d), -EINVAL);
        assert_non_null(strstr(d.msg, "'3'"));
}

/* vmsnap_jail_argv writes what the jailer parses back into the same spec. */
static void test_argv_round_trip(void **state)
{
        (void)state;
        struct vmsnap_jail_config c = jail_test_config();
        c.jailer = "/opt/vmsnap/vmsnap-jailer";
        static const char *const devices[] = {"/dev/null", "/dev/net/tun", NULL};
        static const char *const env[] = {"RUST_LOG=info", "A=b=c", NULL};
        struct vmsnap_jail_bind binds[] = {{"/srv/kernel", "/kernel", false},
                                           {"/srv/run/sb1", "/run", true}};
        struct vmsnap_jail_spec s = {
                .config = &c,
                .name = "sb1",
                .root_dir = "/srv/jails/sb1",
                .uid = TEST_UID,
                .binds = binds,
                .n_binds = 2,
                .devices = devices,
                .limits = {.memory_max = 1ull << 33, .cpus = 2, .pids_max = 100},
                .system_dirs = true,
                .proc = true,
                .env = env,
                .readonly_memory = "/kernel",
        };
        char *vmm[] = {"/usr/bin/qemu-system-x86_64", "-name", "--", "x", NULL};
        char **argv = NULL;
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_jail_argv(&s, vmm, &argv, &d), 0);
        assert_string_equal(argv[0], "/opt/vmsnap/vmsnap-jailer");
        int argc = 0;
        while (argv[argc])
                argc++;
        struct jail_cmdline cl;
        assert_int_equal(jail_cmdline_parse(argc, argv, &cl, &d), 0);
        assert_string_equal(cl.spec.name, "sb1");
        assert_string_equal(cl.spec.root_dir, "/srv/jails/sb1");
        assert_int_equal(cl.spec.uid, TEST_UID);
        assert_int_equal(cl.config.uid_first, TEST_UID_FIRST);
        assert_int_equal(cl.config.uid_count, TEST_UID_COUNT);
        assert_int_equal(cl.config.shared_gid, VMSNAP_JAIL_DEFAULT_SHARED_GID);
        assert_true(cl.config.cgroup_version == VMSNAP_CGROUP_V1 ||
                    cl.config.cgroup_version == VMSNAP_CGROUP_V2); /* resolved, not AUTO */
        assert_string_equal(cl.config.cgroup_parent, TEST_CGROUP_PARENT);
        assert_int_equal(cl.spec.n_binds, 2);
        assert_string_equal(cl.spec.binds[1].source, "/srv/run/sb1");
        assert_string_equal(cl.spec.binds[1].target, "/run");
        assert_true(cl.spec.binds[1].writable && !cl.spec.binds[0].writable);
        assert_string_equal(cl.spec.devices[1], "/dev/net/tun");
        assert_null(cl.spec.devices[2]);
        assert_string_equal(cl.spec.env[1], "A=b=c");
        assert_int_equal(cl.spec.limits.memory_max, 1ull << 33);
        assert_int_equal(cl.spec.limits.cpus, 2);
        assert_int_equal(cl.spec.limits.pids_max, 100);
        assert_true(cl.spec.system_dirs && cl.spec.proc && !cl.spec.keep_fds);
        assert_string_equal(cl.spec.readonly_memory, "/kernel");
        assert_ptr_equal(cl.spec.config, &cl.config);
        for (int i = 0; vmm[i]; i++)
                assert_string_equal(cl.vmm_argv[i], vmm[i]);
        assert_null(cl.vmm_argv[4]);
        jail_cmdline_free(&cl);
        vmsnap_jail_argv_free(argv);
        s.readonly_memory = "/run"; /* a writable bind: never handed over */
        assert_int_equal(vmsnap_jail_argv(&s, vmm, &argv, &d), -EINVAL);
        assert_non_null(strstr(d.msg, "not the target of a read-only bind"));
}

static void test_argv_refusals(void **state)
{
        (void)state;
        struct vmsnap_jail_config c = jail_test_config();
        struct vmsnap_jail_bind colon[] = {{"/srv/a:b", "/x", false}};
        struct vmsnap_jail_spec s = {
                .config = &c, .name = "sb1", .root_dir = "/srv/j", .uid = TEST_UID};
        char *vmm[] = {"/usr/bin/qemu", NULL}, *rel[] = {"qemu", NULL};
        char **argv = NULL;
        struct vmsnap_diag d = {0};
        assert_int_equal(vmsnap_jail_argv(&s, rel, &argv, &d), -EINVAL);
        assert_non_null(strstr(d.msg, "absolute"));
        s.seccomp = true;
        assert_int_equal(vmsnap_jail_argv(&s, vmm, &argv, &d), -EINVAL);
        assert_non_null(strstr(d.msg, "seccomp"));
        s.seccomp = false;
        s.binds = colon;
        s.n_binds = 1;
        assert_int_equal(vmsnap_jail_argv(&s, vmm, &argv, &d), -EINVAL);
        assert_non_null(strstr(d.msg, "':'"));
        s.n_binds = 0;
        s.uid = 0;
        assert_int_equal(vmsnap_jail_argv(&s, vmm, &argv, &d), -EPERM);
        assert_null(argv);
        /* The parser refuses what the writer never writes. */
        char a0[] = "j", a1[] = "--name", a2[] = "x", a3[] = "--bogus", a4[] = "--", a5[] = "/v";
        char *bad[] = {a0, a1, a2, a3, a4, a5, NULL};
        struct jail_cmdline cl;
        assert_int_equal(jail_cmdline_parse(6, bad, &cl, &d), -EINVAL);
        assert_non_null(strstr(d.msg, "--bogus"));
        char *no_dashes[] = {a0, a1, a2, a5, NULL};
        assert_int_equal(jail_cmdline_parse(4, no_dashes, &cl, &d), -EINVAL);
        assert_non_null(strstr(d.msg, "--"));
}

/* The probe builds a real jail through the real jailer; a missing or unsafe jailer is
 * named in the message. */
static void test_probe(void **state)
{
        (void)state;
        struct vmsnap_jail_config c = jail_test_config();
        struct vmsnap_diag d = {0};
        if (!c.jailer)
                skip(); /* run through ctest, which names the built jailer */
        if (vmsnap_jail_probe(&c, &d) != 0)
                fail_msg("probe: %s", d.msg);
        struct vmsnap_jail_config missing = c;
        missing.jailer = "/nonexistent/vmsnap-jailer";
        assert_int_equal(vmsnap_jail_probe(&missing, &d), -ENOENT);
        assert_non_null(strstr(d.msg, "/nonexistent/vmsnap-jailer"));
        assert_non_null(strstr(d.msg, "--insecure-no-jail"));
        char *dir = test_mkdtemp("probe"), *copy = test_path(dir, "vmsnap-jailer");
        test_write_file(copy, "#!/bin/sh\n", 10);
        assert_int_equal(chmod(copy, 0777), 0);
        struct vmsnap_jail_config writable = c;
        writable.jailer = copy;
        assert_int_equal(vmsnap_jail_probe(&writable, &d), -EPERM);
        assert_non_null(strstr(d.msg, "writable"));
        struct vmsnap_jail_config off = {.disabled = true};
        assert_int_equal(vmsnap_jail_probe(&off, &d), 0);
        test_rmtree(dir);
        free(dir), free(copy);
}

int main(void)
{
        jail_test_require();
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_cgroup_v2_files),
                cmocka_unit_test(test_cgroup_v2_missing_controller),
                cmocka_unit_test(test_cgroup_real_create_update_remove),
                cmocka_unit_test(test_config_checks),
                cmocka_unit_test(test_parse_flags),
                cmocka_unit_test(test_argv_round_trip),
                cmocka_unit_test(test_argv_refusals),
                cmocka_unit_test(test_probe),
        };
        int failed = cmocka_run_group_tests(tests, NULL, NULL);
        jail_test_cleanup_parent();
        return failed;
}
