/* The QEMU driver against the real QEMU and the real guest (docs/guest.md): boot, the agent,
 * save, restore from a copy of the memory file, templates (save then carry on), attach after
 * detach, destroy, a QEMU that cannot start, and the version rules.
 *
 * The tests of the group run in order and share one guest booted by the first: a TCG boot
 * takes seconds, a restore a tenth of one. The agent protocol is spoken here directly over
 * the agent socket (newline-delimited JSON). No timing assertions; timings are printed.
 *
 * Environment: VMSNAP_GUEST_DIR (else $VMSNAP_BUILD/guest, built there with guest/build.sh
 * when missing), VMSNAP_ACCEL (kvm|tcg|auto). Exit 77 when qemu-system-x86_64 is missing or
 * the guest image cannot be built. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <vmsnap/disk.h>
#include <vmsnap/jail.h>
#include <vmsnap/vmm.h>

#include "testlib.h"
#include "util/fs.h"

#define MEMORY   (256ull << 20)
#define BOOT_MS  120000 /* a TCG boot on a slow, busy CI machine */
#define AGENT_MS 60000

/* A background job that counts in guest RAM every 200 ms; each value replaces the file by
 * rename, so that a reader never sees it empty. exec returns at once (docs/guest.md §2). */
#define COUNTER_CMD                                                                                \
        "(i=0; while true; do i=$((i+1)); echo $i > /tmp/counter.new; "                            \
        "mv /tmp/counter.new /tmp/counter; usleep 200000; done) &"
#define PAYLOAD "vmsnap qemu driver test payload"
#define DIR_LEN 1024 /* directories; the paths built from them get 4096 */

static const struct vmsnap_vmm_driver *drv;

/* One VM of the test: its spec, the strings the spec points at, the handle, the agent. */
struct vm {
        char run_dir[DIR_LEN], memory[4096], rootfs[4096];
        struct vmsnap_vm_spec spec;
        struct vmsnap_vm *vm;
        int agent;
};

static struct {
        char guest[DIR_LEN];  /* vmlinuz, initramfs.cpio.gz, rootfs.ext4 */
        char parent[512];     /* the run dirs' parent (keeps the accel verdict between runs) */
        char *shm;            /* memory files */
        struct vm a, b;       /* the booted VM, then the VM restored from its snapshot */
        struct vm c;          /* a short-lived VM of one test (destroyed at the end too) */
        char snap_a[DIR_LEN]; /* snapshot of a */
        long counter_at_save; /* a's counter when it was saved */
} F;

static int64_t now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the agent protocol -------------------------------------------------------------------- */

/* Reads one line within timeout_ms into a malloc'd string; NULL on timeout or EOF. */
static char *read_line(int fd, int timeout_ms)
{
        int64_t deadline = now_ms() + timeout_ms;
        size_t len = 0, cap = 4096;
        char *buf = malloc(cap);
        while (buf) {
                struct pollfd p = {.fd = fd, .events = POLLIN};
                int64_t left = deadline - now_ms();
                if (left <= 0 || poll(&p, 1, (int)left) <= 0)
                        break;
                if (len + 1 >= cap)
                        buf = realloc(buf, cap *= 2);
                if (!buf || read(fd, buf + len, 1) != 1)
                        break;
                if (buf[len] == '\n') {
                        buf[len] = '\0';
                        return buf;
                }
                len++;
        }
        free(buf);
        return NULL;
}

/* Sends req (stolen) with a fresh id and returns the response with that id, or NULL. */
static json_t *agent_call(int fd, json_t *req, int timeout_ms)
{
        static json_int_t next_id = 1;
        json_int_t id = next_id++;
        json_object_set_new(req, "id", json_integer(id));
        char *line = json_dumps(req, JSON_COMPACT);
        json_decref(req);
        assert_non_null(line);
        bool sent = vmsnap_fs_write_full(fd, line, strlen(line)) == 0 &&
                    vmsnap_fs_write_full(fd, "\n", 1) == 0;
        free(line);
        if (!sent)
                return NULL;
        int64_t deadline = now_ms() + timeout_ms;
        for (;;) {
                char *resp = read_line(fd, (int)(deadline - now_ms()));
                if (!resp)
                        return NULL;
                json_t *o = json_loads(resp, 0, NULL);
                free(resp);
                json_t *rid = json_object_get(o, "id");
                if (json_is_integer(rid) && json_integer_value(rid) == id)
                        return o;
                json_decref(o); /* a late answer to an abandoned request */
        }
}

static void agent_connect(struct vm *v)
{
        struct vmsnap_diag d = {0};
        if (v->agent >= 0)
                close(v->agent);
        v->agent = -1;
        int r = drv->agent_connect(v->vm, AGENT_MS, &v->agent, &d);
        if (r < 0)
                fail_msg("agent_connect: %s", d.msg);
}

/* Waits until the guest agent answers health, sending the request again every second on the
 * same connection (late answers to earlier ones are skipped by id): one run saw a request on
 * a fresh connection go unanswered (docs/vmm.md "QEMU", open question). */
static void agent_wait_healthy(struct vm *v, int timeout_ms)
{
        agent_connect(v);
        int64_t deadline = now_ms() + timeout_ms;
        json_t *resp = NULL;
        while (!resp && now_ms() < deadline)
                resp = agent_call(v->agent, json_pack("{s:s}", "op", "health"), 1000);
        if (!resp)
                fail_msg("%s: the guest agent did not answer health", v->run_dir);
        assert_true(json_is_true(json_object_get(resp, "ok")));
        json_decref(resp);
}

/* Runs cmd in the guest; returns its stdout (malloc'd) and asserts exit status 0. */
static char *guest_exec(struct vm *v, const char *cmd)
{
        json_t *resp = agent_call(
                v->agent,
                json_pack("{s:s, s:s, s:i}", "op", "exec", "cmd", cmd, "timeout_ms", 20000), 30000);
        if (!resp)
                fail_msg("exec '%s': no answer", cmd);
        const char *out = json_string_value(json_object_get(resp, "stdout"));
        const char *err = json_string_value(json_object_get(resp, "stderr"));
        const char *why = err ? err : json_string_value(json_object_get(resp, "error"));
        char *ret = strdup(out ? out : ""), msg[512];
        snprintf(msg, sizeof(msg), "%s", why ? why : "(no message)");
        bool ok = json_is_true(json_object_get(resp, "ok")) &&
                  json_integer_value(json_object_get(resp, "exit")) == 0;
        json_decref(resp);
        if (!ok) {
                free(ret);
                fail_msg("exec '%s' failed: %s", cmd, msg);
        }
        return ret;
}

static long guest_counter(struct vm *v)
{
        /* 0 until the background job wrote its first value */
        char *out = guest_exec(v, "cat /tmp/counter 2>/dev/null || echo 0"), *end;
        long n = strtol(out, &end, 10);
        if (end == out)
                fail_msg("/tmp/counter holds '%s', not a number", out);
        free(out);
        return n;
}

/* Waits until the guest counter exceeds floor; returns its value. */
static long wait_counter_above(struct vm *v, long floor)
{
        for (int i = 0; i < 300; i++) {
                long n = guest_counter(v);
                if (n > floor)
                        return n;
                usleep(50 * 1000);
        }
        fail_msg("the guest counter stayed at %ld", floor);
        return 0;
}

/* The files written by test_boot_exec are still there, on the disk and in guest RAM. */
static void assert_files_intact(struct vm *v)
{
        char *disk = guest_exec(v, "cat /mnt/data/qemu-test.txt");
        char *tmp = guest_exec(v, "cat /tmp/qemu-test.txt");
        assert_string_equal(disk, PAYLOAD "\n");
        assert_string_equal(tmp, PAYLOAD "\n");
        free(disk);
        free(tmp);
}

/* ---- VMs ---------------------------------------------------------------------------------- */

static char made[32][DIR_LEN]; /* directories this run created, removed at the end */
static size_t n_made;

/* A new directory F.parent/TAG-XXXXXX into out (TAG: a short word). */
static void make_dir(char out[DIR_LEN], const char *tag)
{
        snprintf(out, DIR_LEN, "%s/%.32s-XXXXXX", F.parent, tag);
        assert_non_null(mkdtemp(out));
        assert_true(n_made < 32);
        memcpy(made[n_made++], out, DIR_LEN);
}

static void vm_destroy(struct vm *v);

static void vm_init(struct vm *v, const char *tag)
{
        if (v->vm) /* left by a failed test */
                vm_destroy(v);
        memset(v, 0, sizeof(*v));
        v->agent = -1;
        make_dir(v->run_dir, tag);
        snprintf(v->memory, sizeof(v->memory), "%s/%s.mem", F.shm, tag);
        snprintf(v->rootfs, sizeof(v->rootfs), "%s/rootfs.qcow2", v->run_dir);
        static char kernel[4096 + 16], initrd[4096 + 32], base[4096 + 16];
        snprintf(kernel, sizeof(kernel), "%s/vmlinuz", F.guest);
        snprintf(base, sizeof(base), "%s/rootfs.ext4", F.guest);
        snprintf(initrd, sizeof(initrd), "%s/initramfs.cpio.gz", F.guest);
        v->spec = (struct vmsnap_vm_spec){
                .id = tag,
                .run_dir = v->run_dir,
                .kernel = kernel,
                .initrd = initrd,
                .rootfs = v->rootfs,
                .rootfs_format = "qcow2",
                .rootfs_base = base,
                .vcpus = 1,
                .memory = MEMORY,
                .memory_file = v->memory,
        };
}

static void vm_destroy(struct vm *v)
{
        if (v->agent >= 0)
                close(v->agent);
        v->agent = -1;
        drv->destroy(v->vm);
        v->vm = NULL;
}

static void copy_file(const char *src, const char *dst)
{
        int in = open(src, O_RDONLY | O_CLOEXEC);
        int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        struct stat st;
        assert_true(in >= 0 && out >= 0 && fstat(in, &st) == 0);
        assert_int_equal(vmsnap_fs_copy_range(in, 0, out, 0, (uint64_t)st.st_size), 0);
        close(in);
        close(out);
}

/* Restores into v from state_dir with (a copy of) memory and a copy of disk. */
static int vm_restore(struct vm *v, const char *state_dir, const char *memory,
                      enum vmsnap_vm_memory_mode mode, const char *disk, struct vmsnap_diag *d)
{
        assert_int_equal(vmsnap_disk_copy(disk, v->rootfs, d), 0);
        if (mode == VMSNAP_VM_MEMORY_FILE_SHARED)
                copy_file(memory, v->memory);
        struct vmsnap_vm_restore from = {
                .state_dir = state_dir,
                .memory_mode = mode,
                .memory_path = mode == VMSNAP_VM_MEMORY_FILE_SHARED ? v->memory : memory,
        };
        int64_t t0 = now_ms();
        int r = drv->restore(&v->spec, &from, &v->vm, d);
        int64_t t1 = now_ms();
        if (r == 0)
                r = drv->resume(v->vm, d);
        if (r == 0)
                agent_wait_healthy(v, AGENT_MS);
        printf("# restore (%s): paused after %lld ms, agent health after %lld ms\n",
               mode == VMSNAP_VM_MEMORY_FILE_SHARED ? "share=on" : "share=off",
               (long long)(t1 - t0), (long long)(now_ms() - t0));
        return r;
}

static bool exists(const char *dir, const char *name)
{
        char p[8192];
        snprintf(p, sizeof(p), "%s/%s", dir, name);
        return access(p, F_OK) == 0;
}

static bool pid_gone(pid_t pid)
{
        return kill(pid, 0) < 0 && errno == ESRCH;
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_compatible(void **state)
{
        (void)state;
        assert_true(drv->compatible("7.2.22/tcg", "7.2.5/tcg"));
        assert_true(drv->compatible("7.2.22/kvm", "7.2.22/kvm"));
        assert_true(drv->compatible("7.2.22", "7.2.22/kvm")); /* accel unknown: not refused */
        assert_false(drv->compatible("7.2.22/tcg", "7.2.22/kvm"));
        assert_false(drv->compatible("7.2.22/kvm", "7.2.22/tcg"));
        assert_false(drv->compatible("7.2.22/tcg", "8.0.0/tcg"));
        assert_false(drv->compatible("7.1.0/tcg", "7.2.0/tcg"));
        assert_false(drv->compatible("7.2.22/hvf", "7.2.22/tcg"));
        assert_false(drv->compatible("", "7.2.22"));
        assert_false(drv->compatible(NULL, "7.2.22"));

        char v[64];
        struct vmsnap_diag d = {0};
        assert_int_equal(drv->probe(NULL, v, sizeof(v), &d), 0);
        assert_true(drv->compatible(v, v));
        assert_int_equal(drv->probe("/nonexistent/qemu", v, sizeof(v), &d), -ENOENT);
        assert_non_null(strstr(d.msg, "not installed"));
}

static void test_boot_exec(void **state)
{
        (void)state;
        struct vm *a = &F.a;
        struct vmsnap_diag d = {0};
        char base[8192];
        vm_init(a, "boot");
        snprintf(base, sizeof(base), "%s/rootfs.ext4", F.guest);
        assert_int_equal(vmsnap_disk_overlay_create(base, a->rootfs, &d), 0);
        int64_t t0 = now_ms();
        if (drv->boot(&a->spec, &a->vm, &d) < 0)
                fail_msg("boot: %s", d.msg);
        int64_t t1 = now_ms();
        agent_wait_healthy(a, BOOT_MS);
        char v[64];
        drv->probe(NULL, v, sizeof(v), NULL);
        printf("# boot: QEMU running in %lld ms, agent health after %lld ms (%s)\n",
               (long long)(t1 - t0), (long long)(now_ms() - t0), v);

        assert_true(drv->pid(a->vm) > 0);
        const char *files[] = {"qmp.sock",    "agent.sock", "vmm.pid", "vmm.log",
                               "console.log", "vmm.json",   "vmlinuz", "initramfs.cpio.gz"};
        for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
                if (!exists(a->run_dir, files[i]))
                        fail_msg("%s/%s is missing", a->run_dir, files[i]);

        char *out = guest_exec(a, "echo hi");
        assert_string_equal(out, "hi\n");
        free(out);
        free(guest_exec(a, "echo '" PAYLOAD "' > /mnt/data/qemu-test.txt && sync"));
        free(guest_exec(a, "echo '" PAYLOAD "' > /tmp/qemu-test.txt"));
        free(guest_exec(a, COUNTER_CMD));
        wait_counter_above(a, 1);
}

/* pause → save → destroy → restore from copies → resume: the guest carries on. */
static void test_save_restore(void **state)
{
        (void)state;
        struct vm *a = &F.a, *b = &F.b;
        struct vmsnap_diag d = {0};
        struct vmsnap_vm_saved saved;
        make_dir(F.snap_a, "snap");

        F.counter_at_save = guest_counter(a);
        assert_int_equal(drv->pause(a->vm, &d), 0);
        assert_int_equal(drv->pause(a->vm, &d), 0); /* idempotent */
        int64_t t0 = now_ms();
        if (drv->save(a->vm, F.snap_a, &saved, &d) < 0)
                fail_msg("save: %s", d.msg);
        printf("# save: %lld ms\n", (long long)(now_ms() - t0));
        assert_string_equal(saved.memory_file, a->memory);
        assert_int_equal(saved.source, VMSNAP_MEM_SOURCE_CONTENT);
        assert_false(saved.memory_file_temporary);
        assert_non_null(strchr(saved.version, '/'));
        const char *files[] = {"snapfile", "vmm.json", "vmlinuz", "initramfs.cpio.gz"};
        for (size_t i = 0; i < 4; i++)
                if (!exists(F.snap_a, files[i]))
                        fail_msg("%s/%s is missing", F.snap_a, files[i]);
        struct stat sk, gk;
        char p[8192];
        snprintf(p, sizeof(p), "%s/vmlinuz", F.snap_a);
        assert_int_equal(stat(p, &sk), 0);
        snprintf(p, sizeof(p), "%s/vmlinuz", F.guest);
        assert_int_equal(stat(p, &gk), 0);
        if (sk.st_dev == gk.st_dev)
                assert_true(sk.st_ino == gk.st_ino); /* a hard link, not a copy */
        snprintf(p, sizeof(p), "%s/snapfile", F.snap_a);
        assert_int_equal(stat(p, &sk), 0);
        printf("# snapfile: %lld bytes\n", (long long)sk.st_size);

        pid_t pid = drv->pid(a->vm);
        char disk[8192];
        snprintf(disk, sizeof(disk), "%s/disk.qcow2", F.snap_a);
        assert_int_equal(vmsnap_disk_copy(a->rootfs, disk, &d), 0);
        vm_destroy(a);
        assert_true(pid_gone(pid));
        assert_false(exists(a->run_dir, "qmp.sock"));
        assert_false(exists(a->run_dir, "agent.sock"));

        vm_init(b, "restore");
        if (vm_restore(b, F.snap_a, a->memory, VMSNAP_VM_MEMORY_FILE_SHARED, disk, &d) < 0)
                fail_msg("restore: %s", d.msg);
        long now = guest_counter(b);
        assert_true(now >= F.counter_at_save);
        wait_counter_above(b, now); /* the background job runs on */
        assert_files_intact(b);
}

/* A template: save, then the same VM carries on (cont from postmigrate); the template
 * restores into a new VM. */
static void test_template_save_resume(void **state)
{
        (void)state;
        struct vm *b = &F.b, *c = &F.c;
        struct vmsnap_diag d = {0};
        struct vmsnap_vm_saved saved;
        char snap[DIR_LEN], mem[8192], disk[8192];
        make_dir(snap, "template");

        long at_save = guest_counter(b);
        assert_int_equal(drv->pause(b->vm, &d), 0);
        int64_t t0 = now_ms();
        if (drv->save(b->vm, snap, &saved, &d) < 0)
                fail_msg("save of a restored VM: %s", d.msg);
        printf("# save of a restored (share=on) VM: %lld ms\n", (long long)(now_ms() - t0));
        char again[DIR_LEN];
        struct vmsnap_vm_saved saved2;
        make_dir(again, "again");
        assert_int_equal(drv->save(b->vm, again, &saved2, &d), -EBUSY); /* not run since */
        assert_false(exists(again, "snapfile"));
        /* What the memory layer does before the VM runs on: keep the memory as saved. */
        snprintf(mem, sizeof(mem), "%s/template.mem", F.shm);
        snprintf(disk, sizeof(disk), "%s/disk.qcow2", snap);
        copy_file(saved.memory_file, mem);
        assert_int_equal(vmsnap_disk_copy(b->rootfs, disk, &d), 0);
        if (drv->resume(b->vm, &d) < 0) /* from "postmigrate" */
                fail_msg("resume after save: %s", d.msg);
        assert_int_equal(drv->resume(b->vm, &d), 0); /* idempotent */
        /* The disk too: QEMU took back the images it released for a migration target. */
        char *out = guest_exec(b, "echo still here > /mnt/data/after.txt && sync && "
                                  "cat /mnt/data/after.txt");
        assert_string_equal(out, "still here\n");
        free(out);
        wait_counter_above(b, guest_counter(b));

        vm_init(c, "clone");
        if (vm_restore(c, snap, mem, VMSNAP_VM_MEMORY_FILE_SHARED, disk, &d) < 0)
                fail_msg("restore of the template: %s", d.msg);
        assert_true(guest_counter(c) >= at_save);
        assert_files_intact(c);
        vm_destroy(c);
        unlink(c->memory);
        unlink(mem);
}

/* A share=off restore (a clone: the template's clean pages stay shared) never writes its
 * memory file; its save splits the RAM out of the migration stream into the VM's own memory
 * file (qemu-stream.c), so the snapfile holds device state only, and a share=on restore
 * from the two goes on where the clone was. */
static void test_private_restore_save(void **state)
{
        (void)state;
        struct vm *p = &F.c;
        struct vmsnap_diag d = {0};
        struct vmsnap_vm_saved saved;
        char disk[8192], dir[DIR_LEN], clone_disk[4096], path[8192];
        struct stat before, after, sf;
        snprintf(disk, sizeof(disk), "%s/disk.qcow2", F.snap_a);
        assert_int_equal(stat(F.a.memory, &before), 0);
        vm_init(p, "private");
        if (vm_restore(p, F.snap_a, F.a.memory, VMSNAP_VM_MEMORY_FILE_PRIVATE, disk, &d) < 0)
                fail_msg("share=off restore: %s", d.msg);
        assert_files_intact(p);
        char *out = guest_exec(p, "echo clone-ram > /tmp/clone.txt && cat /tmp/clone.txt");
        assert_string_equal(out, "clone-ram\n");
        free(out);
        long counted = wait_counter_above(p, guest_counter(p));
        make_dir(dir, "private-save");
        assert_int_equal(drv->pause(p->vm, &d), 0);
        int64_t t0 = now_ms();
        if (drv->save(p->vm, dir, &saved, &d) < 0)
                fail_msg("save of a share=off VM: %s", d.msg);
        printf("# save of a share=off VM (stream split into the memory file): %lld ms\n",
               (long long)(now_ms() - t0));
        assert_string_equal(saved.memory_file, p->memory);
        assert_true(saved.memory_file_temporary);
        snprintf(path, sizeof(path), "%s/snapfile", dir);
        assert_int_equal(stat(path, &sf), 0);
        printf("# its snapfile: %lld bytes\n", (long long)sf.st_size);
        assert_true(sf.st_size < (4 << 20)); /* no guest RAM in it */
        snprintf(clone_disk, sizeof(clone_disk), "%s", p->rootfs);
        vm_destroy(p);
        assert_int_equal(stat(F.a.memory, &after), 0);
        assert_true(before.st_mtim.tv_sec == after.st_mtim.tv_sec &&
                    before.st_mtim.tv_nsec == after.st_mtim.tv_nsec); /* never written */

        char ram[4096];
        snprintf(ram, sizeof(ram), "%s", saved.memory_file);
        vm_init(p, "private-back");
        if (vm_restore(p, dir, ram, VMSNAP_VM_MEMORY_FILE_SHARED, clone_disk, &d) < 0)
                fail_msg("share=on restore of the clone's save: %s", d.msg);
        assert_files_intact(p);
        out = guest_exec(p, "cat /tmp/clone.txt");
        assert_string_equal(out, "clone-ram\n");
        free(out);
        assert_true(guest_counter(p) >= counted);
        vm_destroy(p);
        unlink(p->memory);
        unlink(ram);

        struct vmsnap_vm_restore lazy = {.state_dir = F.snap_a,
                                         .memory_mode = VMSNAP_VM_MEMORY_UFFD,
                                         .memory_path = "/nonexistent.sock"};
        struct vmsnap_vm *vm = NULL;
        assert_int_equal(drv->restore(&p->spec, &lazy, &vm, &d), -EOPNOTSUPP);
        assert_null(vm);
}

/* A daemon restart: the handle is dropped, the VM runs on, a new handle attaches by pid. */
static void test_detach_attach(void **state)
{
        (void)state;
        struct vm *b = &F.b;
        struct vmsnap_diag d = {0};
        pid_t pid = drv->pid(b->vm);
        close(b->agent);
        b->agent = -1;
        drv->detach(b->vm);
        b->vm = NULL;
        assert_false(pid_gone(pid));

        struct vmsnap_vm *wrong = NULL;
        assert_int_equal(drv->attach(&F.a.spec, pid, &wrong, &d), -EPERM); /* other run dir */
        assert_null(wrong);
        assert_true(drv->attach(&b->spec, getpid(), &wrong, &d) < 0); /* not a QEMU */

        if (drv->attach(&b->spec, pid, &b->vm, &d) < 0)
                fail_msg("attach: %s", d.msg);
        assert_int_equal(drv->pid(b->vm), pid);
        assert_int_equal(drv->pause(b->vm, &d), 0);
        assert_int_equal(drv->resume(b->vm, &d), 0);
        agent_wait_healthy(b, AGENT_MS);
        wait_counter_above(b, guest_counter(b));
}

static void test_destroy_reaps(void **state)
{
        (void)state;
        struct vm *b = &F.b;
        pid_t pid = drv->pid(b->vm);
        vm_destroy(b);
        assert_true(pid_gone(pid)); /* killed and reaped: not even a zombie */
        assert_int_equal(waitpid(pid, NULL, WNOHANG), -1);
        assert_int_equal(errno, ECHILD);
        assert_false(exists(b->run_dir, "qmp.sock"));
        assert_false(exists(b->run_dir, "agent.sock"));
        assert_false(exists(b->run_dir, "vmm.pid"));
        drv->destroy(NULL);
        drv->detach(NULL);
}

/* QEMU exits at start (its disk does not exist): a clear error quoting its log, not a hang. */
static void test_start_failure(void **state)
{
        (void)state;
        struct vm v = {.agent = -1};
        struct vmsnap_diag d = {0};
        vm_init(&v, "fail");
        snprintf(v.rootfs, sizeof(v.rootfs), "%s/missing.raw", v.run_dir);
        v.spec.rootfs_format = "raw"; /* no header check first: QEMU itself fails */
        assert_true(drv->boot(&v.spec, &v.vm, &d) < 0);
        assert_null(v.vm);
        printf("# start failure: %s\n", d.msg);
        assert_non_null(strstr(d.msg, "missing.raw"));
        assert_non_null(strstr(d.msg, "vmm.log"));

        vm_init(&v, "nokernel");
        v.spec.kernel = "/nonexistent/vmlinuz";
        assert_int_equal(drv->boot(&v.spec, &v.vm, &d), -ENOENT);
        assert_non_null(strstr(d.msg, "/nonexistent/vmlinuz"));
}

/* A qcow2 overlay only starts over the base the caller names, and never with an external
 * data file (a host file name in its header that QEMU would open for the guest's data). */
static void test_disk_refusals(void **state)
{
        (void)state;
        struct vm v = {.agent = -1};
        struct vmsnap_diag d = {0};
        char cmd[16384], base[4096 + 16];
        vm_init(&v, "nobase");
        snprintf(base, sizeof(base), "%s/rootfs.ext4", F.guest);
        assert_int_equal(vmsnap_disk_overlay_create(base, v.rootfs, &d), 0);
        v.spec.rootfs_base = NULL;
        assert_int_equal(drv->boot(&v.spec, &v.vm, &d), -EINVAL);
        assert_non_null(strstr(d.msg, "rootfs_base"));
        assert_null(v.vm);

        vm_init(&v, "datafile");
        snprintf(cmd, sizeof(cmd),
                 "qemu-img create -q -f qcow2 -o data_file=%s/data.raw,data_file_raw=on "
                 "%s 64M",
                 v.run_dir, v.rootfs);
        assert_int_equal(system(cmd), 0);
        assert_int_equal(drv->boot(&v.spec, &v.vm, &d), -EPERM);
        assert_non_null(strstr(d.msg, "external data file"));
        assert_null(v.vm);
}

/* The line of /proc/PID/status that starts with key, value only, into out. */
static void proc_status(pid_t pid, const char *key, char *out, size_t size)
{
        char path[64], line[512];
        snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
        FILE *f = fopen(path, "r");
        out[0] = '\0';
        while (f && fgets(line, sizeof(line), f))
                if (strncmp(line, key, strlen(key)) == 0 && line[strlen(key)] == ':') {
                        char *v = line + strlen(key) + 1;
                        v += strspn(v, " \t");
                        v[strcspn(v, "\n")] = '\0';
                        snprintf(out, size, "%s", v);
                }
        if (f)
                fclose(f);
}

/* Hands a file or directory we made to the jail's uid. */
static void give(const char *path, uid_t uid)
{
        assert_int_equal(chown(path, uid, uid), 0);
}

/* A VM in a jail (issue 8): QEMU runs as the jail's uid with no capabilities, no_new_privs,
 * its -sandbox seccomp filter, its own mount namespace whose root holds only its files, and
 * a daemon restart re-attaches to it by its -name (its paths differ inside the jail). */
static void test_jailed_boot(void **state)
{
        (void)state;
        struct vmsnap_jail_config cfg = {0};
        struct vmsnap_diag d = {0};
        static char jailer[4096];
        const char *build = getenv("VMSNAP_BUILD");
        snprintf(jailer, sizeof(jailer), "%s/vmsnap-jailer", build && *build ? build : ".");
        cfg.jailer = jailer;
        if (geteuid() != 0 || vmsnap_jail_probe(&cfg, &d) < 0) {
                printf("# jailed boot skipped: %s\n", geteuid() ? "not root" : d.msg);
                skip();
        }
        struct vm v = {.agent = -1};
        char root[DIR_LEN], base[4096 + 16], name[64];
        vm_init(&v, "jailed");
        make_dir(root, "jail-root");
        snprintf(name, sizeof(name), "test-vmm-qemu-%d", (int)getpid());
        uid_t uid = VMSNAP_JAIL_DEFAULT_UID_FIRST + 7;
        struct vmsnap_jail_spec jail = {.config = &cfg,
                                        .name = name,
                                        .root_dir = root,
                                        .uid = uid,
                                        .limits = {.memory_max = MEMORY + (256ull << 20),
                                                   .cpus = 1,
                                                   .pids_max = 64}};
        v.spec.jail = &jail;
        snprintf(base, sizeof(base), "%s/rootfs.ext4", F.guest);
        assert_int_equal(vmsnap_disk_overlay_create(base, v.rootfs, &d), 0);
        give(v.rootfs, uid);
        give(v.run_dir, uid);
        int fd = open(v.memory, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        close(fd);
        give(v.memory, uid);
        if (drv->boot(&v.spec, &v.vm, &d) < 0)
                fail_msg("jailed boot: %s", d.msg);
        agent_wait_healthy(&v, AGENT_MS);
        pid_t pid = drv->pid(v.vm);
        char uids[128], cap[64], nnp[16], sec[16];
        proc_status(pid, "Uid", uids, sizeof(uids));
        proc_status(pid, "CapEff", cap, sizeof(cap));
        proc_status(pid, "NoNewPrivs", nnp, sizeof(nnp));
        proc_status(pid, "Seccomp", sec, sizeof(sec));
        printf("# jailed QEMU pid %d: Uid %s, CapEff %s, NoNewPrivs %s, Seccomp %s\n", (int)pid,
               uids, cap, nnp, sec);
        assert_int_equal(atoi(uids), (int)uid);
        assert_string_equal(cap, "0000000000000000");
        assert_string_equal(nnp, "1");
        assert_string_equal(sec, "2");
        char ours[64], theirs[64], link[64];
        snprintf(link, sizeof(link), "/proc/%d/ns/mnt", (int)pid);
        assert_true(readlink("/proc/self/ns/mnt", ours, sizeof(ours)) > 0);
        ssize_t n = readlink(link, theirs, sizeof(theirs) - 1);
        assert_true(n > 0);
        theirs[n] = '\0';
        assert_string_not_equal(ours, theirs);

        drv->detach(v.vm); /* a daemon restart: known again by -name, not by a path */
        v.vm = NULL;
        close(v.agent);
        v.agent = -1;
        if (drv->attach(&v.spec, pid, &v.vm, &d) < 0)
                fail_msg("attach to the jailed QEMU: %s", d.msg);
        assert_int_equal(drv->pause(v.vm, &d), 0);
        assert_int_equal(drv->resume(v.vm, &d), 0);
        vm_destroy(&v);
        assert_true(pid_gone(pid));
        assert_int_equal(vmsnap_jail_cgroup_remove(&cfg, name, &d), 0);
}

/* ---- setup -------------------------------------------------------------------------------- */

static bool guest_complete(const char *dir)
{
        return exists(dir, "vmlinuz") && exists(dir, "initramfs.cpio.gz") &&
               exists(dir, "rootfs.ext4");
}

/* Finds the guest image, building it when missing. Returns false (with reason) when it
 * cannot be had. */
static bool find_guest(char *reason, size_t size)
{
        const char *dir = getenv("VMSNAP_GUEST_DIR");
        const char *build = getenv("VMSNAP_BUILD");
        if (dir && *dir)
                snprintf(F.guest, sizeof(F.guest), "%s", dir);
        else
                snprintf(F.guest, sizeof(F.guest), "%s/guest", build && *build ? build : ".");
        if (guest_complete(F.guest))
                return true;
        const char *src = getenv("VMSNAP_SRC");
        char cmd[9000];
        snprintf(cmd, sizeof(cmd), "'%s/guest/build.sh' '%s' >&2", src && *src ? src : "../..",
                 F.guest);
        fprintf(stderr, "# building the guest image: %s\n", cmd);
        int rc = system(cmd);
        if (rc == 0 && guest_complete(F.guest))
                return true;
        snprintf(reason, size, "the guest image in %s cannot be built (guest/build.sh exit %d)",
                 F.guest, WIFEXITED(rc) ? WEXITSTATUS(rc) : -1);
        return false;
}

static int group_setup(void **state)
{
        (void)state;
        const char *build = getenv("VMSNAP_BUILD");
        const char *tmp = getenv("TMPDIR");
        snprintf(F.parent, sizeof(F.parent), "%s/test-vmm-qemu",
                 build && *build ? build
                 : tmp && *tmp   ? tmp
                                 : "/tmp");
        if (mkdir(F.parent, 0755) < 0 && errno != EEXIST)
                return -1;
        if (access("/dev/shm", W_OK) == 0) { /* where the sandbox layer keeps memory files */
                F.shm = strdup("/dev/shm/vmsnap-test-qemu-XXXXXX");
                if (!F.shm || !mkdtemp(F.shm))
                        return -1;
        } else {
                F.shm = test_mkdtemp("qemu-mem");
        }
        F.a.agent = F.b.agent = F.c.agent = -1;
        return 0;
}

static int group_teardown(void **state)
{
        (void)state;
        vm_destroy(&F.a);
        vm_destroy(&F.b);
        vm_destroy(&F.c);
        if (getenv("VMSNAP_KEEP")) {
                printf("# kept %s and %s\n", F.parent, F.shm);
                return 0;
        }
        for (size_t i = 0; i < n_made; i++) /* the parent keeps the accelerator verdict */
                test_rmtree(made[i]);
        test_rmtree(F.shm);
        free(F.shm);
        return 0;
}

int main(void)
{
        char reason[9000];
        drv = vmsnap_vmm_find("qemu");
        if (!drv) {
                fprintf(stderr, "FAIL: no qemu driver in the registry\n");
                return 1;
        }
        char v[64];
        struct vmsnap_diag d = {0};
        if (drv->probe(NULL, v, sizeof(v), &d) < 0) {
                printf("SKIP: %s\n", d.msg);
                return 77;
        }
        if (!find_guest(reason, sizeof(reason))) {
                printf("SKIP: %s\n", reason);
                return 77;
        }
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_compatible),
                cmocka_unit_test(test_boot_exec),
                cmocka_unit_test(test_save_restore),
                cmocka_unit_test(test_template_save_resume),
                cmocka_unit_test(test_private_restore_save),
                cmocka_unit_test(test_detach_attach),
                cmocka_unit_test(test_destroy_reaps),
                cmocka_unit_test(test_start_failure),
                cmocka_unit_test(test_disk_refusals),
                cmocka_unit_test(test_jailed_boot),
        };
        return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
