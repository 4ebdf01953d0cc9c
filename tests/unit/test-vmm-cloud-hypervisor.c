/* Cloud Hypervisor driver tests. Cloud Hypervisor needs KVM, which this machine does not
 * have, so the driver runs against tests/peer/ch-peer.c: a server that implements Cloud
 * Hypervisor's documented REST contract (request schemas, the VM state machine, 404/405
 * codes and error chains, the three snapshot files, vm.restore with memory_restore_mode)
 * over real guest memory. What is tested is the driver's side of that contract and the path
 * of guest memory: peer memory -> memory-ranges -> vmsnap_mem_process/diff -> materialize ->
 * peer memory after restore, compared byte for byte.
 *
 * The peer's test endpoints (PUT /peer/write, /peer/dump) play the guest writing and read
 * its memory back; CH_PEER_VERSION makes it play another release. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vmsnap/mem.h>
#include <vmsnap/vmm.h>

#include "testlib.h"
#include "vmm/http.h"

#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

extern const struct vmsnap_vmm_driver vmsnap_vmm_cloud_hypervisor;
static const struct vmsnap_vmm_driver *drv = &vmsnap_vmm_cloud_hypervisor;

#define MEM  (32ull << 20)
#define PAGE 4096ull

struct fx {
        char *tmp, *run, *kernel, *rootfs;
        struct vmsnap_vm_spec spec;
};

static int setup(void **state)
{
        const char *peer = getenv("VMSNAP_PEER_ch_peer");
        if (!peer) {
                fprintf(stderr, "VMSNAP_PEER_ch_peer is not set: run through ctest\n");
                return -1;
        }
        struct fx *f = calloc(1, sizeof(*f));
        f->tmp = test_mkdtemp("vmm-ch");
        f->run = test_path(f->tmp, "run");
        f->kernel = test_path(f->tmp, "vmlinux");
        f->rootfs = test_path(f->tmp, "rootfs.raw");
        assert_int_equal(mkdir(f->run, 0700), 0);
        uint8_t kernel[200 * 1024];
        uint64_t seed = 43;
        test_fill_random(&seed, kernel, sizeof(kernel));
        test_write_file(f->kernel, kernel, sizeof(kernel));
        test_write_file(f->rootfs, "\0\0\0\0raw disk", 12);
        f->spec = (struct vmsnap_vm_spec){.id = "sbx-ch",
                                          .run_dir = f->run,
                                          .vmm_binary = peer,
                                          .kernel = f->kernel,
                                          .rootfs = f->rootfs,
                                          .rootfs_format = "raw",
                                          .vcpus = 2,
                                          .memory = MEM};
        unsetenv("CH_PEER_VERSION");
        unsetenv("CH_PEER_NO_SOCKET");
        *state = f;
        return 0;
}

/* True while pid runs a command line that names this test's run directory. */
static bool runs_here(const struct fx *f, pid_t pid)
{
        char proc[64], cmd[4096];
        snprintf(proc, sizeof(proc), "/proc/%d/cmdline", (int)pid);
        int fd = open(proc, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd >= 0 ? read(fd, cmd, sizeof(cmd)) : -1;
        if (fd >= 0)
                close(fd);
        return n > 0 && memmem(cmd, (size_t)n, f->run, strlen(f->run)) != NULL;
}

/* A test that failed half-way may leave its VMM running: kill the last one started. */
static void kill_leftover(const struct fx *f)
{
        char *pidfile = test_path(f->run, "cloud-hypervisor.pid");
        size_t len = 0;
        char *text = (char *)test_read_file(pidfile, &len);
        pid_t pid = text && len ? (pid_t)atoi(text) : 0;
        if (pid > 0 && runs_here(f, pid) && kill(-pid, SIGKILL) == 0)
                waitpid(pid, NULL, 0);
        free(text);
        free(pidfile);
}

static int teardown(void **state)
{
        struct fx *f = *state;
        kill_leftover(f);
        test_rmtree(f->tmp);
        free(f->tmp);
        free(f->run);
        free(f->kernel);
        free(f->rootfs);
        free(f);
        return 0;
}

/* ---- helpers ------------------------------------------------------------------------------- */

static char *in(const struct fx *f, const char *name)
{
        return test_path(f->tmp, name);
}

static int peer_call(const struct fx *f, const char *method, const char *path, json_t *body,
                     json_t **ret, struct vmsnap_diag *d)
{
        char *sock = test_path(f->run, "cloud-hypervisor.sock");
        int r = vmm_http_call(sock, method, path, body, 10000, ret, d);
        json_decref(body);
        free(sock);
        return r;
}

static void ok_or_fail(int r, const char *what, const struct vmsnap_diag *d)
{
        if (r < 0)
                fail_msg("%s: %s (%d)", what, d->msg, r);
}

static void guest_write(const struct fx *f, uint64_t off, uint64_t len, uint64_t seed)
{
        struct vmsnap_diag d = {0};
        ok_or_fail(peer_call(f, "PUT", "/peer/write",
                             json_pack("{s:I, s:I, s:I}", "offset", (json_int_t)off, "length",
                                       (json_int_t)len, "seed", (json_int_t)seed),
                             NULL, &d),
                   "guest write", &d);
}

static void guest_fill(const struct fx *f, uint64_t off, uint64_t len, int byte)
{
        struct vmsnap_diag d = {0};
        ok_or_fail(peer_call(f, "PUT", "/peer/write",
                             json_pack("{s:I, s:I, s:i}", "offset", (json_int_t)off, "length",
                                       (json_int_t)len, "fill", byte),
                             NULL, &d),
                   "guest fill", &d);
}

static uint8_t *guest_memory(const struct fx *f, const char *name)
{
        struct vmsnap_diag d = {0};
        char *path = in(f, name);
        ok_or_fail(peer_call(f, "PUT", "/peer/dump", json_pack("{s:s}", "path", path), NULL, &d),
                   "dump", &d);
        size_t len = 0;
        uint8_t *buf = test_read_file(path, &len);
        assert_int_equal(len, MEM);
        unlink(path);
        free(path);
        return buf;
}

static void assert_state(const struct fx *f, const char *want)
{
        json_t *j = NULL;
        struct vmsnap_diag d = {0};
        ok_or_fail(peer_call(f, "GET", "/api/v1/vm.info", NULL, &j, &d), "vm.info", &d);
        assert_string_equal(json_string_value(json_object_get(j, "state")), want);
        json_decref(j);
}

static char *materialize(const struct fx *f, const char *snapdir, const char *name,
                         uint8_t **ret_buf)
{
        struct vmsnap_diag d = {0};
        char *out = in(f, name);
        ok_or_fail(vmsnap_mem_materialize(snapdir, out, NULL, &d), "materialize", &d);
        size_t len = 0;
        *ret_buf = test_read_file(out, &len);
        assert_int_equal(len, MEM);
        return out;
}

static void assert_same_memory(const uint8_t *a, const uint8_t *b)
{
        for (uint64_t off = 0; off < MEM; off += PAGE)
                if (memcmp(a + off, b + off, PAGE) != 0)
                        fail_msg("guest memory differs in page %llu",
                                 (unsigned long long)(off / PAGE));
}

static struct vmsnap_vm *boot(const struct fx *f)
{
        struct vmsnap_vm *vm = NULL;
        struct vmsnap_diag d = {0};
        ok_or_fail(drv->boot(&f->spec, &vm, &d), "boot", &d);
        return vm;
}

/* Saves into dir (created) and checks the three files Cloud Hypervisor writes. */
static void save(struct vmsnap_vm *vm, const char *dir, struct vmsnap_vm_saved *saved)
{
        struct vmsnap_diag d = {0};
        mkdir(dir, 0700);
        ok_or_fail(drv->save(vm, dir, saved, &d), "save", &d);
        assert_int_equal(saved->source, VMSNAP_MEM_SOURCE_CONTENT);
        assert_true(saved->memory_file_temporary);
        const char *names[] = {"config.json", "state.json", "memory-ranges", "vmm.version"};
        for (size_t i = 0; i < 4; i++) {
                char *p = test_path(dir, names[i]);
                struct stat st;
                assert_int_equal(stat(p, &st), 0);
                if (i == 2)
                        assert_int_equal(st.st_size, MEM);
                free(p);
        }
        char *mr = test_path(dir, "memory-ranges");
        assert_string_equal(saved->memory_file, mr);
        free(mr);
}

static bool pid_alive(pid_t pid)
{
        return kill(pid, 0) == 0;
}

static pid_t pid_from_file(const char *path)
{
        size_t len = 0;
        char *text = (char *)test_read_file(path, &len);
        assert_non_null(text);
        pid_t pid = (pid_t)atoi(text);
        free(text);
        return pid;
}

static bool log_says(const struct fx *f, const char *needle)
{
        size_t len = 0;
        char *log_path = test_path(f->run, "cloud-hypervisor.log");
        char *text = (char *)test_read_file(log_path, &len);
        bool found = false;
        if (text) {
                char *t = realloc(text, len + 1);
                t[len] = '\0';
                found = strstr(t, needle) != NULL;
                text = t;
        }
        free(text);
        free(log_path);
        return found;
}

static bool uffd_works(void)
{
        int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
        int fd = dev >= 0 ? ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK) : -1;
        if (dev >= 0)
                close(dev);
        if (fd < 0)
                fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
        if (fd >= 0)
                close(fd);
        return fd >= 0;
}

/* ---- probe, versions ----------------------------------------------------------------------- */

static void test_probe_and_rules(void **state)
{
        struct fx *f = *state;
        char v[64];
        struct vmsnap_diag d = {0};
        ok_or_fail(drv->probe(f->spec.vmm_binary, v, sizeof(v), &d), "probe", &d);
        assert_string_equal(v, "52.0.0");
        setenv("CH_PEER_VERSION", "v43.0", 1);
        ok_or_fail(drv->probe(f->spec.vmm_binary, v, sizeof(v), &d), "probe v43", &d);
        assert_string_equal(v, "43.0.0");
        unsetenv("CH_PEER_VERSION");
        char *missing = in(f, "no-cloud-hypervisor");
        assert_int_equal(drv->probe(missing, v, sizeof(v), &d), -ENOENT);
        assert_non_null(strstr(d.msg, "cloud-hypervisor/cloud-hypervisor/releases"));
        free(missing);

        assert_string_equal(drv->name, "cloud-hypervisor");
        assert_true(drv->compatible("52.0.0", "52.1.0"));
        assert_true(drv->compatible("v43.0", "43.0.0"));
        assert_false(drv->compatible("52.0.0", "53.0.0"));
        assert_false(drv->compatible("53.0.0", "52.0.0"));
        assert_false(drv->compatible("", "52.0.0"));
}

/* Raw disks only, and never one that starts like a qcow2 image: Cloud Hypervisor detects the
 * type from those bytes and would open the backing file the header names. The guest owns
 * its disk's sector zero, so it could write such a header itself. */
static void test_disk_never_qcow2(void **state)
{
        struct fx *f = *state;
        struct vmsnap_vm *vm = NULL;
        struct vmsnap_diag d = {0};
        assert_string_equal(drv->disk_format, "raw");
        f->spec.rootfs_format = "qcow2";
        assert_int_equal(drv->boot(&f->spec, &vm, &d), -EINVAL);
        assert_non_null(strstr(d.msg, "raw disks only"));
        f->spec.rootfs_format = "raw";
        test_write_file(f->rootfs, "QFI\xfb\0\0\0\3/etc/shadow", 19);
        assert_int_equal(drv->boot(&f->spec, &vm, &d), -EPERM);
        assert_non_null(strstr(d.msg, "qcow2 header"));
        assert_null(vm);
}

/* ---- boot, pause, save, restore (Copy and OnDemand), resume -------------------------------- */

static void test_boot_save_restore(void **state)
{
        struct fx *f = *state;
        struct vmsnap_diag d = {0};
        struct vmsnap_vm_saved saved;
        char *snap_a = in(f, "snapA"), *snap_b = in(f, "snapB");
        char *state1 = in(f, "state1"), *state2 = in(f, "state2");
        struct vmsnap_vm *vm = boot(f);
        pid_t pid = drv->pid(vm);
        assert_state(f, "Running");
        char proc[64], cmd[4096];
        snprintf(proc, sizeof(proc), "/proc/%d/cmdline", (int)pid);
        int cfd = open(proc, O_RDONLY | O_CLOEXEC);
        ssize_t cn = cfd >= 0 ? read(cfd, cmd, sizeof(cmd)) : -1;
        if (cfd >= 0)
                close(cfd);
        assert_true(cn > 0 && memmem(cmd, (size_t)cn, "--seccomp\0true\0", 15)); /* its filter on */
        guest_write(f, 100 * PAGE, 10 * PAGE, 1);
        guest_write(f, (5ull << 20) + 77, 3 * PAGE, 2);
        ok_or_fail(drv->pause(vm, &d), "pause", &d);
        ok_or_fail(drv->pause(vm, &d), "pause again (idempotent)", &d);
        assert_state(f, "Paused");
        save(vm, state1, &saved);
        ok_or_fail(vmsnap_mem_process(saved.memory_file, snap_a, NULL, NULL, &d), "process", &d);
        unlink(saved.memory_file); /* temporary: the memory layer has it now */
        uint8_t *live = guest_memory(f, "live"), *gen0;
        char *mem_a = materialize(f, snap_a, "memA", &gen0);
        assert_same_memory(live, gen0);
        free(live);
        drv->destroy(vm);
        assert_false(pid_alive(pid));

        /* Copy restore (the sandbox's own memory file) */
        struct vmsnap_vm_restore from = {
            .state_dir = state1, .memory_mode = VMSNAP_VM_MEMORY_FILE_SHARED, .memory_path = mem_a};
        ok_or_fail(drv->restore(&f->spec, &from, &vm, &d), "restore (Copy)", &d);
        assert_true(log_says(f, "memory_restore_mode=Copy"));
        assert_state(f, "Paused"); /* restore leaves the VM paused */
        live = guest_memory(f, "live");
        assert_same_memory(live, gen0);
        free(live);
        ok_or_fail(drv->resume(vm, &d), "resume", &d);
        ok_or_fail(drv->resume(vm, &d), "resume again (idempotent)", &d);
        assert_state(f, "Running");
        guest_write(f, 500 * PAGE, 20 * PAGE, 3);
        guest_fill(f, 100 * PAGE, 2 * PAGE, 0); /* the guest zeroes written pages */
        ok_or_fail(drv->pause(vm, &d), "pause", &d);
        save(vm, state2, &saved);
        struct vmsnap_mem_opts opts = {.source = saved.source};
        ok_or_fail(vmsnap_mem_diff(saved.memory_file, snap_b, snap_a, &opts, NULL, &d), "diff", &d);
        unlink(saved.memory_file);
        live = guest_memory(f, "live");
        uint8_t *gen1;
        char *mem_b = materialize(f, snap_b, "memB", &gen1);
        assert_same_memory(live, gen1);
        free(live);
        drv->destroy(vm);
        char *restore_dir = test_path(f->run, "restore");
        struct stat st;
        assert_int_equal(stat(restore_dir, &st), -1); /* destroy cleans the run directory */

        /* OnDemand restore (a template's file, read lazily) */
        from = (struct vmsnap_vm_restore){.state_dir = state2,
                                          .memory_mode = VMSNAP_VM_MEMORY_FILE_PRIVATE,
                                          .memory_path = mem_b};
        int r = drv->restore(&f->spec, &from, &vm, &d);
        if (!uffd_works()) { /* OnDemand is strict: no userfaultfd, no restore */
                assert_int_equal(r, -EIO);
                assert_non_null(strstr(d.msg, "userfaultfd"));
                fprintf(stderr, "OnDemand part skipped: userfaultfd unavailable\n");
        } else {
                ok_or_fail(r, "restore (OnDemand)", &d);
                assert_true(log_says(f, "memory_restore_mode=OnDemand"));
                live = guest_memory(f, "live");
                assert_same_memory(live, gen1);
                free(live);
                ok_or_fail(drv->resume(vm, &d), "resume", &d);
                drv->destroy(vm);
        }
        free(restore_dir);
        free(gen0);
        free(gen1);
        free(mem_a);
        free(mem_b);
        free(snap_a);
        free(snap_b);
        free(state1);
        free(state2);
}

/* Before v52 vm.restore has no memory_restore_mode: the driver leaves it out (the peer, like
 * a strict reading of that schema, would refuse it) and every restore copies. */
static void test_release_before_ondemand(void **state)
{
        struct fx *f = *state;
        struct vmsnap_diag d = {0};
        struct vmsnap_vm_saved saved;
        setenv("CH_PEER_VERSION", "43.0", 1);
        struct vmsnap_vm *vm = boot(f);
        guest_write(f, 0, 16 * PAGE, 4);
        ok_or_fail(drv->pause(vm, &d), "pause", &d);
        char *dir = in(f, "state43");
        save(vm, dir, &saved);
        assert_string_equal(saved.version, "43.0.0");
        uint8_t *live = guest_memory(f, "live");
        drv->destroy(vm);
        char *mem = in(f, "mem43");
        assert_int_equal(rename(saved.memory_file, mem), 0);
        struct vmsnap_vm_restore from = {
            .state_dir = dir, .memory_mode = VMSNAP_VM_MEMORY_FILE_PRIVATE, .memory_path = mem};
        ok_or_fail(drv->restore(&f->spec, &from, &vm, &d), "restore on v43", &d);
        assert_true(log_says(f, "memory_restore_mode=(default)"));
        uint8_t *back = guest_memory(f, "back");
        assert_same_memory(live, back);
        drv->destroy(vm);

        assert_int_equal(peer_call(f, "GET", "/api/v1/vmm.ping", NULL, NULL, &d), -ECONNREFUSED);
        unsetenv("CH_PEER_VERSION");
        free(live);
        free(back);
        free(mem);
        free(dir);
}

static void test_incompatible_version_refused(void **state)
{
        struct fx *f = *state;
        struct vmsnap_diag d = {0};
        struct vmsnap_vm_saved saved;
        struct vmsnap_vm *vm = boot(f);
        ok_or_fail(drv->pause(vm, &d), "pause", &d);
        char *dir = in(f, "state");
        save(vm, dir, &saved);
        drv->destroy(vm);
        vm = NULL;
        setenv("CH_PEER_VERSION", "53.0", 1);
        struct vmsnap_vm_restore from = {.state_dir = dir,
                                         .memory_mode = VMSNAP_VM_MEMORY_FILE_SHARED,
                                         .memory_path = saved.memory_file};
        assert_int_equal(drv->restore(&f->spec, &from, &vm, &d), -ENOTSUP);
        unsetenv("CH_PEER_VERSION");
        assert_null(vm);
        assert_non_null(strstr(d.msg, "52.0.0"));
        assert_non_null(strstr(d.msg, "53.0.0"));
        char *pidfile = test_path(f->run, "cloud-hypervisor.pid");
        assert_false(pid_alive(pid_from_file(pidfile)));

        /* the page server's lazy mode is Firecracker's protocol, not Cloud Hypervisor's */
        from.memory_mode = VMSNAP_VM_MEMORY_UFFD;
        assert_int_equal(drv->restore(&f->spec, &from, &vm, &d), -ENOTSUP);
        assert_non_null(strstr(d.msg, "OnDemand"));

        /* memory is fixed by the snapshot */
        struct vmsnap_vm_spec other = f->spec;
        other.memory = 2 * MEM;
        from.memory_mode = VMSNAP_VM_MEMORY_FILE_SHARED;
        assert_int_equal(drv->restore(&other, &from, &vm, &d), -EINVAL);
        assert_non_null(strstr(d.msg, "fixed by the snapshot"));
        free(pidfile);
        free(dir);
}

/* ---- errors -------------------------------------------------------------------------------- */

static void test_error_messages(void **state)
{
        struct fx *f = *state;
        struct vmsnap_diag d = {0};
        struct vmsnap_vm *vm = NULL;
        char *pidfile = test_path(f->run, "cloud-hypervisor.pid");
        struct vmsnap_vm_spec bad = f->spec;
        bad.kernel = "/nonexistent/vmlinux";
        assert_int_equal(drv->boot(&bad, &vm, &d), -EIO);
        assert_null(vm);
        assert_non_null(strstr(d.msg, "PUT /api/v1/vm.boot: 500"));
        assert_non_null(strstr(d.msg, "The VM could not boot: Cannot open kernel file"));
        assert_false(pid_alive(pid_from_file(pidfile)));

        vm = boot(f);
        struct vmsnap_vm_saved saved;
        char *dir = in(f, "running");
        mkdir(dir, 0700);
        assert_int_equal(drv->save(vm, dir, &saved, &d), -EBUSY); /* 405: not paused */
        assert_non_null(strstr(d.msg, "could not be snapshotted"));

        /* the peer rejects unknown fields and wrong types with CH's error chain */
        assert_int_equal(
            peer_call(f, "PUT", "/api/v1/vm.create",
                      json_pack("{s:{s:s}, s:b}", "payload", "kernel", "/k", "bogus", 1), NULL, &d),
            -EINVAL);
        assert_non_null(strstr(d.msg, "Failed to deserialize JSON: unknown field `bogus`"));
        assert_int_equal(peer_call(f, "PUT", "/api/v1/vm.snapshot",
                                   json_pack("{s:i}", "destination_url", 1), NULL, &d),
                         -EINVAL);
        assert_non_null(strstr(d.msg, "invalid type"));
        assert_int_equal(peer_call(f, "GET", "/api/v1/nope", NULL, NULL, &d), -ENOENT);
        ok_or_fail(drv->pause(vm, &d), "pause", &d);
        save(vm, dir, &saved);
        drv->destroy(vm);

        /* memory-ranges that does not match the saved range table */
        char *shorty = in(f, "short");
        test_write_file(shorty, "x", 1);
        struct vmsnap_vm_restore from = {
            .state_dir = dir, .memory_mode = VMSNAP_VM_MEMORY_FILE_SHARED, .memory_path = shorty};
        assert_int_equal(drv->restore(&f->spec, &from, &vm, &d), -EIO);
        assert_non_null(strstr(d.msg, "The VM could not be restored"));
        assert_non_null(strstr(d.msg, "memory range table"));
        assert_false(pid_alive(pid_from_file(pidfile)));
        free(shorty);
        free(dir);
        free(pidfile);
}

static void test_no_api_socket_times_out(void **state)
{
        struct fx *f = *state;
        struct vmsnap_diag d = {0};
        struct vmsnap_vm *vm = NULL;
        setenv("CH_PEER_NO_SOCKET", "1", 1);
        setenv("VMSNAP_VMM_START_TIMEOUT_MS", "300", 1);
        int r = drv->boot(&f->spec, &vm, &d);
        unsetenv("CH_PEER_NO_SOCKET");
        unsetenv("VMSNAP_VMM_START_TIMEOUT_MS");
        assert_int_equal(r, -ETIMEDOUT);
        assert_null(vm);
        assert_non_null(strstr(d.msg, "did not create"));
        char *pidfile = test_path(f->run, "cloud-hypervisor.pid");
        assert_false(pid_alive(pid_from_file(pidfile)));
        free(pidfile);
}

static void test_vmm_dies(void **state)
{
        struct fx *f = *state;
        struct vmsnap_diag d = {0};
        struct vmsnap_vm *vm = boot(f);
        pid_t pid = drv->pid(vm);
        assert_int_equal(kill(pid, SIGKILL), 0);
        siginfo_t si;
        while (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT) < 0 && errno == EINTR)
                ;
        assert_int_equal(drv->pause(vm, &d), -ESRCH);
        assert_non_null(strstr(d.msg, "killed by signal 9"));
        assert_non_null(strstr(d.msg, "cloud-hypervisor.log"));
        drv->destroy(vm);
        assert_false(pid_alive(pid));

        vm = boot(f);
        pid = drv->pid(vm);
        assert_int_equal(kill(pid, SIGKILL), 0);
        drv->destroy(vm); /* reaps it even unnoticed */
        assert_false(pid_alive(pid));
}

/* ---- attach, detach, agent channel --------------------------------------------------------- */

static void test_attach_and_agent(void **state)
{
        struct fx *f = *state;
        struct vmsnap_diag d = {0};
        struct vmsnap_vm *vm = boot(f);
        pid_t pid = drv->pid(vm);
        drv->detach(vm);
        assert_true(pid_alive(pid));
        ok_or_fail(drv->attach(&f->spec, pid, &vm, &d), "attach", &d);
        ok_or_fail(drv->pause(vm, &d), "pause after attach", &d);
        ok_or_fail(drv->resume(vm, &d), "resume after attach", &d);
        struct vmsnap_vm *other = NULL;
        assert_int_equal(drv->attach(&f->spec, getpid(), &other, &d), -EPERM);

        int fd = -1;
        ok_or_fail(drv->agent_connect(vm, 5000, &fd, &d), "agent_connect", &d);
        const char req[] = "{\"op\":\"health\"}\n";
        assert_int_equal(write(fd, req, sizeof(req) - 1), (ssize_t)sizeof(req) - 1);
        const char want[] = "{\"ok\":true}\n";
        char buf[64] = {0};
        size_t got = 0;
        while (got < sizeof(want) - 1) {
                ssize_t n = read(fd, buf + got, sizeof(buf) - 1 - got);
                assert_true(n > 0);
                got += (size_t)n;
        }
        assert_string_equal(buf, want);
        close(fd);
        drv->destroy(vm);
        assert_false(pid_alive(pid));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test_setup_teardown(test_probe_and_rules, setup, teardown),
            cmocka_unit_test_setup_teardown(test_disk_never_qcow2, setup, teardown),
            cmocka_unit_test_setup_teardown(test_boot_save_restore, setup, teardown),
            cmocka_unit_test_setup_teardown(test_release_before_ondemand, setup, teardown),
            cmocka_unit_test_setup_teardown(test_incompatible_version_refused, setup, teardown),
            cmocka_unit_test_setup_teardown(test_error_messages, setup, teardown),
            cmocka_unit_test_setup_teardown(test_no_api_socket_times_out, setup, teardown),
            cmocka_unit_test_setup_teardown(test_vmm_dies, setup, teardown),
            cmocka_unit_test_setup_teardown(test_attach_and_agent, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
