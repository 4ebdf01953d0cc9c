/* Firecracker driver tests. Firecracker needs KVM, which this machine does not have, so the
 * driver runs against tests/peer/fc-peer.c: a server that implements Firecracker's
 * documented API contract (request schemas, state machine, status codes, fault messages,
 * the snapshot files and the Uffd handshake) over real guest memory. What is tested is the
 * driver's side of that contract and the whole path of guest memory: peer memory -> FC
 * memory file -> vmsnap_mem_process/diff -> materialize or the real page server -> peer
 * memory after restore, compared byte for byte.
 *
 * The peer's test endpoints (PUT /peer/write, /peer/dump) play the guest writing and read
 * its memory back; FC_PEER_VERSION makes it play another release. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
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
#include <vmsnap/uffd.h>
#include <vmsnap/vmm.h>

#include "testlib.h"
#include "vmm/http.h"

#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

extern const struct vmsnap_vmm_driver vmsnap_vmm_firecracker;
static const struct vmsnap_vmm_driver *drv = &vmsnap_vmm_firecracker;

#define MEM  (32ull << 20)
#define PAGE 4096ull

struct fx {
        char *tmp, *run, *kernel, *rootfs;
        struct vmsnap_vm_spec spec;
};

static int setup(void **state)
{
        const char *peer = getenv("VMSNAP_PEER_fc_peer");
        if (!peer) {
                fprintf(stderr, "VMSNAP_PEER_fc_peer is not set: run through ctest\n");
                return -1;
        }
        struct fx *f = calloc(1, sizeof(*f));
        f->tmp = test_mkdtemp("vmm-fc");
        f->run = test_path(f->tmp, "run");
        f->kernel = test_path(f->tmp, "vmlinux");
        f->rootfs = test_path(f->tmp, "rootfs.raw");
        assert_int_equal(mkdir(f->run, 0700), 0);
        uint8_t kernel[200 * 1024];
        uint64_t seed = 42;
        test_fill_random(&seed, kernel, sizeof(kernel));
        test_write_file(f->kernel, kernel, sizeof(kernel));
        test_write_file(f->rootfs, "", 0);
        assert_int_equal(truncate(f->rootfs, 4 << 20), 0);
        f->spec = (struct vmsnap_vm_spec){.id = "sbx-fc",
                                          .run_dir = f->run,
                                          .vmm_binary = peer,
                                          .kernel = f->kernel,
                                          .rootfs = f->rootfs,
                                          .rootfs_format = "raw",
                                          .vcpus = 2,
                                          .memory = MEM};
        unsetenv("FC_PEER_VERSION");
        unsetenv("FC_PEER_NO_SOCKET");
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
        char *pidfile = test_path(f->run, "firecracker.pid");
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

static char *api_sock(const struct fx *f)
{
        return test_path(f->run, "firecracker.sock");
}

/* A call to the peer through the same HTTP client the driver uses. */
static int peer_call(const struct fx *f, const char *method, const char *path, json_t *body,
                     json_t **ret, struct vmsnap_diag *d)
{
        char *sock = api_sock(f);
        int r = vmm_http_call(sock, method, path, body, 10000, ret, d);
        json_decref(body);
        free(sock);
        return r;
}

static void guest_write(const struct fx *f, uint64_t off, uint64_t len, uint64_t seed)
{
        struct vmsnap_diag d = {0};
        int r = peer_call(f, "PUT", "/peer/write",
                          json_pack("{s:I, s:I, s:I}", "offset", (json_int_t)off, "length",
                                    (json_int_t)len, "seed", (json_int_t)seed),
                          NULL, &d);
        if (r < 0)
                fail_msg("guest write: %s", d.msg);
}

static void guest_fill(const struct fx *f, uint64_t off, uint64_t len, int byte)
{
        struct vmsnap_diag d = {0};
        int r = peer_call(f, "PUT", "/peer/write",
                          json_pack("{s:I, s:I, s:i}", "offset", (json_int_t)off, "length",
                                    (json_int_t)len, "fill", byte),
                          NULL, &d);
        if (r < 0)
                fail_msg("guest fill: %s", d.msg);
}

/* The guest's memory as the peer holds it now (with Uffd: served by the page server). */
static uint8_t *guest_memory(const struct fx *f, const char *name)
{
        struct vmsnap_diag d = {0};
        char *path = in(f, name);
        if (peer_call(f, "PUT", "/peer/dump", json_pack("{s:s}", "path", path), NULL, &d) < 0)
                fail_msg("dump: %s", d.msg);
        size_t len = 0;
        uint8_t *buf = test_read_file(path, &len);
        assert_non_null(buf);
        assert_int_equal(len, MEM);
        unlink(path);
        free(path);
        return buf;
}

static char *vm_state(const struct fx *f)
{
        json_t *j = NULL;
        struct vmsnap_diag d = {0};
        assert_int_equal(peer_call(f, "GET", "/", NULL, &j, &d), 0);
        char *s = strdup(json_string_value(json_object_get(j, "state")));
        json_decref(j);
        return s;
}

static void assert_state(const struct fx *f, const char *want)
{
        char *s = vm_state(f);
        assert_string_equal(s, want);
        free(s);
}

static uint8_t *materialize(const struct fx *f, const char *snapdir, const char *name)
{
        struct vmsnap_diag d = {0};
        char *out = in(f, name);
        if (vmsnap_mem_materialize(snapdir, out, NULL, &d) < 0)
                fail_msg("materialize %s: %s", snapdir, d.msg);
        size_t len = 0;
        uint8_t *buf = test_read_file(out, &len);
        assert_int_equal(len, MEM);
        free(out);
        return buf;
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
        if (drv->boot(&f->spec, &vm, &d) < 0)
                fail_msg("boot: %s", d.msg);
        return vm;
}

static void save(struct vmsnap_vm *vm, const char *dir, struct vmsnap_vm_saved *saved)
{
        struct vmsnap_diag d = {0};
        mkdir(dir, 0700);
        if (drv->save(vm, dir, saved, &d) < 0)
                fail_msg("save: %s", d.msg);
}

static void ok_or_fail(int r, const char *what, const struct vmsnap_diag *d)
{
        if (r < 0)
                fail_msg("%s: %s (%d)", what, d->msg, r);
}

/* Every data extent of a sparse file, as a page bitmap. */
static void data_pages(const char *path, uint8_t *pages, uint64_t n)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        memset(pages, 0, n);
        off_t end = lseek(fd, 0, SEEK_END);
        for (off_t off = lseek(fd, 0, SEEK_DATA); off >= 0 && off < end;) {
                off_t hole = lseek(fd, off, SEEK_HOLE);
                for (off_t p = off; p < hole; p += (off_t)PAGE)
                        pages[p / (off_t)PAGE] = 1;
                off = lseek(fd, hole, SEEK_DATA);
        }
        close(fd);
}

/* Waits until the child pid has exited, leaving it unreaped (the driver reaps it). */
static void wait_dead(pid_t pid)
{
        siginfo_t si;
        while (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT) < 0 && errno == EINTR)
                ;
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

/* ---- probe, versions, timeouts ------------------------------------------------------------- */

static void test_probe_and_rules(void **state)
{
        struct fx *f = *state;
        char v[64];
        struct vmsnap_diag d = {0};
        ok_or_fail(drv->probe(f->spec.vmm_binary, v, sizeof(v), &d), "probe", &d);
        assert_string_equal(v, "1.12.1");
        setenv("FC_PEER_VERSION", "1.7.0", 1);
        ok_or_fail(drv->probe(f->spec.vmm_binary, v, sizeof(v), &d), "probe 1.7", &d);
        assert_string_equal(v, "1.7.0");
        unsetenv("FC_PEER_VERSION");

        char *missing = in(f, "no-firecracker");
        assert_int_equal(drv->probe(missing, v, sizeof(v), &d), -ENOENT);
        assert_non_null(strstr(d.msg, "firecracker-microvm/firecracker/releases"));
        free(missing);

        assert_string_equal(drv->name, "firecracker");
        assert_true(drv->compatible("1.12.1", "1.12.0"));
        assert_true(drv->compatible("1.12.0", "1.12.9"));
        assert_false(drv->compatible("1.12.1", "1.13.0"));
        assert_false(drv->compatible("1.13.0", "1.12.1"));
        assert_false(drv->compatible("1.12.1", "2.12.1"));
        assert_false(drv->compatible("garbage", "1.12.1"));
        assert_false(drv->compatible(NULL, "1.12.1"));

        /* snapshot timeouts grow with memory: 10 s + 1 s per started 256 MiB */
        assert_int_equal(vmm_http_memory_timeout_ms(32ull << 20), 11000);
        assert_int_equal(vmm_http_memory_timeout_ms(256ull << 20), 11000);
        assert_int_equal(vmm_http_memory_timeout_ms(4ull << 30), 26000);
        assert_int_equal(vmm_http_memory_timeout_ms(64ull << 30), 266000);
}

/* ---- boot, pause, Full and Diff saves, File restore ----------------------------------------- */

/* Full save of a fresh VM: a content source; the memory layer reads it back exactly. */
static void first_generation(struct fx *f, struct vmsnap_vm *vm, char *snap)
{
        struct vmsnap_vm_saved saved;
        struct vmsnap_diag d = {0};
        char *state1 = in(f, "state1");
        save(vm, state1, &saved);
        assert_int_equal(saved.source, VMSNAP_MEM_SOURCE_CONTENT);
        assert_true(saved.memory_file_temporary);
        assert_string_equal(saved.version, "1.12.1");
        struct stat st;
        assert_int_equal(stat(saved.memory_file, &st), 0);
        assert_int_equal(st.st_size, MEM);
        char *snapfile = test_path(state1, "snapfile");
        assert_int_equal(stat(snapfile, &st), 0);
        ok_or_fail(vmsnap_mem_process(saved.memory_file, snap, NULL, NULL, &d), "process", &d);
        unlink(saved.memory_file);
        uint8_t *live = guest_memory(f, "live1"), *back = materialize(f, snap, "mat1");
        assert_same_memory(live, back);
        free(live);
        free(back);
        free(snapfile);
        free(state1);
}

/* The second save is a Diff: data exactly where the guest wrote since the first. */
static void second_generation(struct fx *f, struct vmsnap_vm *vm, const char *parent,
                              const char *snap, const char *state_name)
{
        struct vmsnap_vm_saved saved;
        struct vmsnap_diag d = {0};
        char *dir = in(f, state_name);
        save(vm, dir, &saved);
        assert_int_equal(saved.source, VMSNAP_MEM_SOURCE_SPARSE);
        uint8_t *pages = calloc(MEM / PAGE, 1);
        data_pages(saved.memory_file, pages, MEM / PAGE);
        for (uint64_t p = 0; p < MEM / PAGE; p++) {
                bool written = (p >= 500 && p < 520) || p == 100 || p == 101;
                if (pages[p] != written)
                        fail_msg("diff file: page %llu is %s", (unsigned long long)p,
                                 pages[p] ? "data but clean" : "a hole but dirty");
        }
        free(pages);
        struct vmsnap_mem_opts opts = {.source = saved.source};
        ok_or_fail(vmsnap_mem_diff(saved.memory_file, snap, parent, &opts, NULL, &d), "diff", &d);
        unlink(saved.memory_file);
        free(dir);
}

static void guest_activity(const struct fx *f)
{
        guest_write(f, 500 * PAGE, 20 * PAGE, 7);
        guest_fill(f, 100 * PAGE, 2 * PAGE, 0); /* non-zero pages the guest zeroes */
}

static void test_boot_save_restore_file(void **state)
{
        struct fx *f = *state;
        struct vmsnap_diag d = {0};
        char *snap_a = in(f, "snapA"), *snap_b = in(f, "snapB"), *snap_c = in(f, "snapC");
        struct vmsnap_vm *vm = boot(f);
        pid_t pid = drv->pid(vm);
        assert_true(pid > 0);
        assert_state(f, "Running");
        guest_write(f, 100 * PAGE, 10 * PAGE, 1);
        guest_write(f, (4ull << 20) + 123, 3 * PAGE, 2);
        ok_or_fail(drv->pause(vm, &d), "pause", &d);
        ok_or_fail(drv->pause(vm, &d), "pause again", &d);
        assert_state(f, "Paused");
        first_generation(f, vm, snap_a);

        ok_or_fail(drv->resume(vm, &d), "resume", &d);
        guest_activity(f);
        ok_or_fail(drv->pause(vm, &d), "pause", &d);
        second_generation(f, vm, snap_a, snap_b, "state2");
        uint8_t *live = guest_memory(f, "live2"), *gen1 = materialize(f, snap_b, "memB");
        assert_same_memory(live, gen1);
        free(live);
        drv->destroy(vm);
        assert_false(pid_alive(pid)); /* killed and reaped, not a zombie */

        /* restore from generation 1 with the File backend */
        char *state2 = in(f, "state2"), *mem_b = in(f, "memB");
        struct vmsnap_vm_restore from = {.state_dir = state2,
                                         .memory_mode = VMSNAP_VM_MEMORY_FILE_PRIVATE,
                                         .memory_path = mem_b};
        ok_or_fail(drv->restore(&f->spec, &from, &vm, &d), "restore", &d);
        assert_state(f, "Paused");
        live = guest_memory(f, "live3");
        assert_same_memory(live, gen1);
        free(live);
        ok_or_fail(drv->resume(vm, &d), "resume", &d);
        assert_state(f, "Running");
        guest_activity(f);
        ok_or_fail(drv->pause(vm, &d), "pause", &d);
        second_generation(f, vm, snap_b, snap_c, "state3"); /* dirty since the load */
        live = guest_memory(f, "live4");
        uint8_t *gen2 = materialize(f, snap_c, "memC");
        assert_same_memory(live, gen2);
        drv->destroy(vm);
        free(live);
        free(gen1);
        free(gen2);
        free(state2);
        free(mem_b);
        free(snap_a);
        free(snap_b);
        free(snap_c);
}

/* ---- Uffd restore through the real page server ---------------------------------------------- */

static bool uffd_works(char *why, size_t size)
{
        int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
        int fd = dev >= 0 ? ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK) : -1;
        if (dev >= 0)
                close(dev);
        if (fd < 0)
                fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
        if (fd < 0) {
                snprintf(why, size,
                         "userfaultfd unavailable (%s): /dev/userfaultfd access or "
                         "vm.unprivileged_userfaultfd=1 is needed",
                         strerror(errno));
                return false;
        }
        close(fd);
        return true;
}

struct server {
        struct vmsnap_uffd_server *s;
        pthread_t thread;
        int result;
        struct vmsnap_diag d;
};

static void *server_main(void *arg)
{
        struct server *sv = arg;
        sv->result = vmsnap_uffd_server_run(sv->s, &sv->d);
        return NULL;
}

static void start_server(struct server *sv, const char *snapdir, const char *sock)
{
        struct vmsnap_uffd_opts opts = {.accept_timeout_ms = 30000};
        memset(sv, 0, sizeof(*sv));
        ok_or_fail(vmsnap_uffd_server_new(snapdir, sock, &opts, &sv->s, &sv->d), "server", &sv->d);
        assert_int_equal(pthread_create(&sv->thread, NULL, server_main, sv), 0);
}

static void test_restore_uffd(void **state)
{
        struct fx *f = *state;
        char why[256];
        if (!uffd_works(why, sizeof(why))) {
                fprintf(stderr, "skipped: %s\n", why);
                skip();
        }
        struct vmsnap_diag d = {0};
        char *snap_a = in(f, "snapA"), *snap_b = in(f, "snapB"), *sock = in(f, "uffd.sock");
        struct vmsnap_vm *vm = boot(f);
        guest_write(f, 100 * PAGE, 10 * PAGE, 3);
        guest_write(f, 9 * (1ull << 20), 1 << 20, 4);
        ok_or_fail(drv->pause(vm, &d), "pause", &d);
        first_generation(f, vm, snap_a);
        drv->destroy(vm);

        struct server sv;
        start_server(&sv, snap_a, sock);
        char *state1 = in(f, "state1");
        struct vmsnap_vm_restore from = {
            .state_dir = state1, .memory_mode = VMSNAP_VM_MEMORY_UFFD, .memory_path = sock};
        ok_or_fail(drv->restore(&f->spec, &from, &vm, &d), "restore (Uffd)", &d);
        assert_state(f, "Paused");
        uint8_t *live = guest_memory(f, "live"), *want = materialize(f, snap_a, "matA");
        assert_same_memory(live, want); /* every page came from the page server */
        struct vmsnap_uffd_stats st;
        vmsnap_uffd_server_stats(sv.s, &st);
        assert_true(st.connected);
        assert_int_equal(st.peer_pid, drv->pid(vm));
        assert_true(st.faults > 0);

        /* pages the server installed are not dirty: the next Diff holds only guest writes */
        ok_or_fail(drv->resume(vm, &d), "resume", &d);
        guest_activity(f);
        ok_or_fail(drv->pause(vm, &d), "pause", &d);
        second_generation(f, vm, snap_a, snap_b, "state2");
        free(live);
        live = guest_memory(f, "live2");
        free(want);
        want = materialize(f, snap_b, "matB");
        assert_same_memory(live, want);

        drv->destroy(vm); /* the server sees its VMM exit and returns */
        pthread_join(sv.thread, NULL);
        if (sv.result < 0)
                fail_msg("page server: %s", sv.d.msg);
        vmsnap_uffd_server_free(sv.s);
        free(live);
        free(want);
        free(state1);
        free(sock);
        free(snap_a);
        free(snap_b);
}

/* ---- versions ------------------------------------------------------------------------------ */

/* Boot on one release, save, and return the state directory's path. */
static char *saved_on(struct fx *f, const char *release, const char *name)
{
        struct vmsnap_vm_saved saved;
        struct vmsnap_diag d = {0};
        setenv("FC_PEER_VERSION", release, 1);
        struct vmsnap_vm *vm = boot(f);
        guest_write(f, 0, 64 * PAGE, 9);
        ok_or_fail(drv->pause(vm, &d), "pause", &d);
        char *dir = in(f, name);
        save(vm, dir, &saved);
        assert_string_equal(saved.version, release);
        drv->destroy(vm);
        unsetenv("FC_PEER_VERSION");
        return dir;
}

static void test_incompatible_version_refused(void **state)
{
        struct fx *f = *state;
        struct vmsnap_diag d = {0};
        char *dir = saved_on(f, "1.11.0", "old");
        char *mem = test_path(dir, "fc-memory");
        struct vmsnap_vm_restore from = {
            .state_dir = dir, .memory_mode = VMSNAP_VM_MEMORY_FILE_PRIVATE, .memory_path = mem};
        struct vmsnap_vm *vm = NULL;
        assert_int_equal(drv->restore(&f->spec, &from, &vm, &d), -ENOTSUP);
        assert_null(vm);
        assert_non_null(strstr(d.msg, "1.11.0"));
        assert_non_null(strstr(d.msg, "1.12.1"));
        assert_non_null(strstr(d.msg, "install Firecracker 1.11.x"));
        char *pidfile = test_path(f->run, "firecracker.pid");
        assert_false(pid_alive(pid_from_file(pidfile))); /* the refused VMM is gone */

        /* Past the driver's check, Firecracker itself refuses the older state format and
         * ends; its fault message reaches the caller. */
        char *ver = test_path(dir, "vmm.version");
        test_write_file(ver, "firecracker 1.12.0\n", 19);
        assert_int_equal(drv->restore(&f->spec, &from, &vm, &d), -EINVAL);
        assert_non_null(strstr(d.msg, "PUT /snapshot/load: 400"));
        assert_non_null(strstr(d.msg, "Unsupported snapshot version 5.0.0"));
        assert_false(pid_alive(pid_from_file(pidfile)));

        /* another VMM's state is refused by name */
        test_write_file(ver, "cloud-hypervisor 52.0.0\n", 24);
        assert_int_equal(drv->restore(&f->spec, &from, &vm, &d), -EMEDIUMTYPE);
        assert_non_null(strstr(d.msg, "cloud-hypervisor"));
        free(ver);
        free(pidfile);
        free(mem);
        free(dir);
}

/* Each release gets the load flag it knows (enable_diff_snapshots before 1.13,
 * track_dirty_pages after) and its own handshake; the peer rejects the wrong one. */
static void test_releases(void **state)
{
        struct fx *f = *state;
        const char *releases[] = {"1.7.0", "1.10.1", "1.13.0", "1.16.0"};
        for (size_t i = 0; i < sizeof(releases) / sizeof(releases[0]); i++) {
                struct vmsnap_diag d = {0};
                struct vmsnap_vm_saved saved;
                char *dir = saved_on(f, releases[i], releases[i]);
                char *mem = test_path(dir, "fc-memory");
                size_t len;
                uint8_t *full = test_read_file(mem, &len);
                assert_int_equal(len, MEM);
                setenv("FC_PEER_VERSION", releases[i], 1);
                struct vmsnap_vm_restore from = {.state_dir = dir,
                                                 .memory_mode = VMSNAP_VM_MEMORY_FILE_SHARED,
                                                 .memory_path = mem};
                struct vmsnap_vm *vm = NULL;
                ok_or_fail(drv->restore(&f->spec, &from, &vm, &d), releases[i], &d);
                uint8_t *live = guest_memory(f, "live");
                assert_same_memory(live, full);
                ok_or_fail(drv->resume(vm, &d), "resume", &d);
                guest_write(f, 0, PAGE, 5);
                ok_or_fail(drv->pause(vm, &d), "pause", &d);
                char *dir2 = in(f, "again");
                save(vm, dir2, &saved);
                assert_int_equal(saved.source, VMSNAP_MEM_SOURCE_SPARSE);
                drv->destroy(vm);
                unsetenv("FC_PEER_VERSION");
                test_rmtree(dir2);
                free(dir2);
                free(live);
                free(full);
                free(mem);
                free(dir);
        }
}

/* ---- errors -------------------------------------------------------------------------------- */

static void test_fault_messages(void **state)
{
        struct fx *f = *state;
        struct vmsnap_diag d = {0};
        struct vmsnap_vm *vm = NULL;
        char *pidfile = test_path(f->run, "firecracker.pid");
        struct vmsnap_vm_spec bad = f->spec;
        bad.kernel = "/nonexistent/vmlinux";
        assert_int_equal(drv->boot(&bad, &vm, &d), -EINVAL);
        assert_null(vm);
        assert_non_null(strstr(d.msg, "PUT /boot-source: 400"));
        assert_non_null(strstr(d.msg, "The kernel file cannot be opened"));
        assert_false(pid_alive(pid_from_file(pidfile)));

        bad = f->spec;
        bad.rootfs_format = "qcow2";
        assert_int_equal(drv->boot(&bad, &vm, &d), -ENOTSUP);
        bad = f->spec;
        bad.memory = 3 << 20;
        assert_int_equal(drv->boot(&bad, &vm, &d), -EINVAL);

        vm = boot(f);
        struct vmsnap_vm_saved saved;
        char *dir = in(f, "running");
        mkdir(dir, 0700);
        assert_int_equal(drv->save(vm, dir, &saved, &d), -EINVAL); /* not paused */
        assert_non_null(strstr(d.msg, "pause it first"));

        /* the peer rejects what Firecracker rejects: unknown fields, wrong types */
        assert_int_equal(
            peer_call(f, "PUT", "/machine-config",
                      json_pack("{s:i, s:i, s:b}", "vcpu_count", 1, "mem_size_mib", 32, "bogus", 1),
                      NULL, &d),
            -EINVAL);
        assert_non_null(strstr(d.msg, "unknown field `bogus`"));
        assert_int_equal(peer_call(f, "PATCH", "/vm", json_pack("{s:i}", "state", 1), NULL, &d),
                         -EINVAL);
        assert_non_null(strstr(d.msg, "invalid type"));
        assert_int_equal(
            peer_call(f, "PUT", "/snapshot/load",
                      json_pack("{s:s, s:b}", "snapshot_path", "/x", "track_dirty_pages", 1), NULL,
                      &d),
            -EINVAL);
        assert_non_null(strstr(d.msg, "unknown field `track_dirty_pages`")); /* 1.12 */
        drv->destroy(vm);

        /* a load that fails ends Firecracker; the message names the missing file */
        char *nostate = in(f, "nostate");
        mkdir(nostate, 0700);
        char *ver = test_path(nostate, "vmm.version");
        test_write_file(ver, "firecracker 1.12.1\n", 19);
        struct vmsnap_vm_restore from = {.state_dir = nostate,
                                         .memory_mode = VMSNAP_VM_MEMORY_FILE_PRIVATE,
                                         .memory_path = "/nonexistent"};
        assert_int_equal(drv->restore(&f->spec, &from, &vm, &d), -EINVAL);
        assert_non_null(strstr(d.msg, "Failed to open snapshot file"));
        assert_false(pid_alive(pid_from_file(pidfile)));
        free(ver);
        free(nostate);
        free(dir);
        free(pidfile);
}

static void test_no_api_socket_times_out(void **state)
{
        struct fx *f = *state;
        struct vmsnap_diag d = {0};
        struct vmsnap_vm *vm = NULL;
        setenv("FC_PEER_NO_SOCKET", "1", 1);
        setenv("VMSNAP_VMM_START_TIMEOUT_MS", "300", 1);
        int r = drv->boot(&f->spec, &vm, &d);
        unsetenv("FC_PEER_NO_SOCKET");
        unsetenv("VMSNAP_VMM_START_TIMEOUT_MS");
        assert_int_equal(r, -ETIMEDOUT);
        assert_null(vm);
        assert_non_null(strstr(d.msg, "did not create"));
        assert_non_null(strstr(d.msg, "firecracker.log"));
        char *pidfile = test_path(f->run, "firecracker.pid");
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
        wait_dead(pid);
        assert_int_equal(drv->pause(vm, &d), -ESRCH);
        assert_non_null(strstr(d.msg, "killed by signal 9"));
        drv->destroy(vm);
        assert_false(pid_alive(pid));

        vm = boot(f); /* dies unnoticed: destroy still reaps it */
        pid = drv->pid(vm);
        assert_int_equal(kill(pid, SIGKILL), 0);
        drv->destroy(vm);
        assert_false(pid_alive(pid));
}

/* ---- attach, detach, agent channel --------------------------------------------------------- */

static void test_attach_detach(void **state)
{
        struct fx *f = *state;
        struct vmsnap_diag d = {0};
        struct vmsnap_vm *vm = boot(f);
        pid_t pid = drv->pid(vm);
        drv->detach(vm);
        assert_true(pid_alive(pid)); /* a daemon restart leaves the guest running */
        ok_or_fail(drv->attach(&f->spec, pid, &vm, &d), "attach", &d);
        assert_int_equal(drv->pid(vm), pid);
        ok_or_fail(drv->pause(vm, &d), "pause after attach", &d);
        struct vmsnap_vm_saved saved;
        char *dir = in(f, "attached");
        save(vm, dir, &saved);
        assert_int_equal(saved.source, VMSNAP_MEM_SOURCE_CONTENT); /* no known base: Full */

        /* a Diff into a directory that still holds the Full memory file: Firecracker would
         * merge into it, so the driver starts a new file whose holes are the clean pages */
        ok_or_fail(drv->resume(vm, &d), "resume", &d);
        guest_write(f, 7 * PAGE, PAGE, 11);
        ok_or_fail(drv->pause(vm, &d), "pause", &d);
        save(vm, dir, &saved);
        assert_int_equal(saved.source, VMSNAP_MEM_SOURCE_SPARSE);
        uint8_t pages[MEM / PAGE];
        data_pages(saved.memory_file, pages, MEM / PAGE);
        for (uint64_t p = 0; p < MEM / PAGE; p++)
                assert_int_equal(pages[p], p == 7);

        struct vmsnap_vm *other = NULL;
        assert_int_equal(drv->attach(&f->spec, getpid(), &other, &d), -EPERM);
        drv->destroy(vm);
        assert_false(pid_alive(pid));
        assert_int_equal(drv->attach(&f->spec, pid, &other, &d), -ESRCH);
        drv->destroy(NULL);
        drv->detach(NULL);
        free(dir);
}

static void test_agent_channel(void **state)
{
        struct fx *f = *state;
        struct vmsnap_diag d = {0};
        struct vmsnap_vm *vm = boot(f);
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
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test_setup_teardown(test_probe_and_rules, setup, teardown),
            cmocka_unit_test_setup_teardown(test_boot_save_restore_file, setup, teardown),
            cmocka_unit_test_setup_teardown(test_restore_uffd, setup, teardown),
            cmocka_unit_test_setup_teardown(test_incompatible_version_refused, setup, teardown),
            cmocka_unit_test_setup_teardown(test_releases, setup, teardown),
            cmocka_unit_test_setup_teardown(test_fault_messages, setup, teardown),
            cmocka_unit_test_setup_teardown(test_no_api_socket_times_out, setup, teardown),
            cmocka_unit_test_setup_teardown(test_vmm_dies, setup, teardown),
            cmocka_unit_test_setup_teardown(test_attach_detach, setup, teardown),
            cmocka_unit_test_setup_teardown(test_agent_channel, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
