/* The QEMU driver: qemu-system-x86_64 -machine microvm, guest RAM in a memory-backend-file
 * (share=on) that the memory layer diffs, device state through the migration stream with
 * x-ignore-shared (QMP `getfd` + an `fd:` URI), restore = the same command line plus
 * -incoming defer. docs/vmm.md "QEMU" has the command lines, the QMP sequences, the files and
 * the rules; docs/guest.md the guest they run.
 *
 * Everything a restore needs to rebuild the exact command line is in the snapshot directory:
 * vmm.json (the machine: accel, cpu, vcpus, memory, kernel command line, QEMU version), the
 * kernel and initramfs (hard links), and snapfile (the device state). A running VM's run
 * directory holds the same vmm.json plus the paths that belong to that run, so that attach
 * after a daemon restart knows the VM as well as boot did.
 *
 * This file: the driver table, versions, boot, restore, attach, pause/resume, teardown; the
 * other parts are listed in qemu-internal.h. */

#include "vmm/qemu-internal.h"

#include "util/cleanup.h"
#include "util/fs.h"
#include "vmm/version.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- versions -------------------------------------------------------------------------------- */

static pthread_mutex_t version_lock = PTHREAD_MUTEX_INITIALIZER;
static char version_binary[PATH_MAX] = "\1"; /* the binary version_text belongs to */
static char version_text[32];

/* "X.Y.Z" of binary (NULL: qemu-system-x86_64 from $PATH), run once per binary. */
int qemu_version(const char *binary, char out[32], struct vmsnap_diag *d)
{
        const char *key = binary ? binary : "";
        pthread_mutex_lock(&version_lock);
        int r = 0;
        if (strcmp(version_binary, key) != 0) {
                r = vmm_version_probe(binary, QEMU_BINARY, QEMU_HINT, version_text,
                                      sizeof(version_text), d);
                if (r == 0)
                        snprintf(version_binary, sizeof(version_binary), "%s", key);
        }
        if (r == 0)
                memcpy(out, version_text, 32);
        pthread_mutex_unlock(&version_lock);
        return r;
}

/* Splits "X.Y.Z[/accel]". */
static bool parse_full_version(const char *s, struct vmm_version *v, enum vmm_accel *accel)
{
        if (!s || vmm_version_parse(s, v) < 0)
                return false;
        const char *slash = strchr(s, '/');
        *accel = slash ? vmm_accel_parse(slash + 1) : VMM_ACCEL_UNKNOWN;
        return !slash || *accel != VMM_ACCEL_UNKNOWN;
}

static int qemu_probe(const char *binary, char *ret_version, size_t size, struct vmsnap_diag *d)
{
        char v[32];
        int r = qemu_version(binary, v, d);
        if (r < 0)
                return r;
        enum vmm_accel a = vmm_accel_known();
        if (ret_version && a != VMM_ACCEL_UNKNOWN)
                snprintf(ret_version, size, "%s/%s", v, vmm_accel_name(a));
        else if (ret_version)
                snprintf(ret_version, size, "%s", v);
        return 0;
}

/* Same QEMU major.minor (the migration stream format of one release series) and, when both
 * sides name one, the same accelerator (CPU state saved under KVM does not load under TCG and
 * the reverse). */
static bool qemu_compatible(const char *saved_version, const char *running_version)
{
        struct vmm_version s, r;
        enum vmm_accel sa, ra;
        if (!parse_full_version(saved_version, &s, &sa) ||
            !parse_full_version(running_version, &r, &ra))
                return false;
        if (s.major != r.major || s.minor != r.minor)
                return false;
        return sa == VMM_ACCEL_UNKNOWN || ra == VMM_ACCEL_UNKNOWN || sa == ra;
}


/* ---- boot ------------------------------------------------------------------------------------ */

/* Validates what boot (boot = true) or restore needs from a spec. */
static int check_spec(const struct vmsnap_vm_spec *spec, bool boot, struct vmsnap_diag *d)
{
        if (!spec || !spec->id || !spec->run_dir || !spec->memory_file)
                return vmsnap_diag(d, -EINVAL,
                                   "qemu: the spec needs an id, a run_dir and a "
                                   "memory_file");
        /* A restore takes vcpus and memory from the snapshot; non-zero ones must match it. */
        if ((boot || spec->vcpus) && (spec->vcpus < 1 || spec->vcpus > QEMU_MAX_VCPUS))
                return vmsnap_diag(d, -EINVAL, "qemu: %u vCPUs (1..%u)", spec->vcpus,
                                   QEMU_MAX_VCPUS);
        if ((boot || spec->memory) && (spec->memory == 0 || spec->memory % (2u << 20)))
                return vmsnap_diag(d, -EINVAL,
                                   "qemu: memory %llu is not a non-zero multiple "
                                   "of 2 MiB",
                                   (unsigned long long)spec->memory);
        if (boot && (!spec->kernel || spec->kernel[0] != '/'))
                return vmsnap_diag(d, -EINVAL, "qemu: boot needs an absolute kernel path");
        if (spec->rootfs_format && strcmp(spec->rootfs_format, "qcow2") != 0 &&
            strcmp(spec->rootfs_format, "raw") != 0)
                return vmsnap_diag(d, -EINVAL, "qemu: disk format '%s' (qcow2 or raw)",
                                   spec->rootfs_format);
        if (spec->net && (!spec->jail || !spec->jail->netns_path))
                return vmsnap_diag(d, -EINVAL,
                                   "qemu: a network card needs the sandbox's network "
                                   "namespace (a jail with netns_path)");
        return 0;
}

/* The disk of a start: a qcow2 overlay needs the base image its caller chose (absolute),
 * and a header without an external data file (another file name QEMU would open). */
static int check_disk(const struct qemu_machine *m, const struct vmsnap_vm_spec *spec,
                      struct vmsnap_diag *d)
{
        if (!m->disk || strcmp(m->disk_format, "qcow2") != 0)
                return 0;
        if (!spec->rootfs_base || spec->rootfs_base[0] != '/')
                return vmsnap_diag(d, -EINVAL,
                                   "qemu: %s is a qcow2 overlay and the spec names no base "
                                   "image for it (rootfs_base): its header's backing file "
                                   "name is never used",
                                   spec->rootfs);
        return qemu_check_overlay(spec->rootfs, d);
}

/* Starts the process of vm (boot or restore) from its config and run directory. */
static int start(struct vmsnap_vm *vm, const struct vmsnap_vm_spec *spec, bool incoming,
                 struct vmsnap_diag *d)
{
        struct boot_files f;
        int r = qemu_boot_files_in(vm->run_dir, &f, d);
        if (r == 0)
                r = check_disk(&vm->machine, spec, d);
        if (r == 0)
                r = qemu_write_run_config(vm, d); /* before the process: attach needs it */
        if (r < 0)
                return r;
        struct qemu_launch l = {.machine = &vm->machine,
                                .binary = spec->vmm_binary,
                                .run_dir = vm->run_dir,
                                .kernel = f.kernel,
                                .initrd = f.initrd,
                                .memory_file = vm->memory_file,
                                .share = vm->memory_shared,
                                .rootfs = spec->rootfs,
                                .rootfs_base = spec->rootfs_base,
                                .incoming = incoming,
                                .name = spec->id,
                                .jail = spec->jail};
        return qemu_start_process(&l, &vm->proc, &vm->qmp, d);
}

static int qemu_boot(const struct vmsnap_vm_spec *spec, struct vmsnap_vm **ret,
                     struct vmsnap_diag *d)
{
        int r = check_spec(spec, true, d);
        if (r < 0)
                return r;
        char version[32];
        struct vmm_accel_status accel;
        struct vmsnap_vm *vm = NULL;
        r = qemu_version(spec->vmm_binary, version, d);
        if (r == 0)
                r = qemu_vm_new(spec, &vm, d);
        if (r < 0)
                return r;
        snprintf(vm->memory_file, sizeof(vm->memory_file), "%s", spec->memory_file);
        vm->memory_shared = true;
        /* Checked here so that a missing file is not taken for a KVM failure by the probe. */
        const char *missing = access(spec->kernel, R_OK) < 0                   ? spec->kernel
                              : spec->initrd && access(spec->initrd, R_OK) < 0 ? spec->initrd
                                                                               : NULL;
        if (missing)
                r = vmsnap_diag(d, -errno, "qemu: %s: %s", missing, strerror(errno));
        char pvh[PATH_MAX];
        const char *kernel = qemu_boot_kernel(spec->kernel, pvh, sizeof(pvh));
        if (r == 0)
                r = qemu_choose_accel(spec, kernel, spec->initrd, version, &accel, d);
        if (r == 0)
                r = qemu_machine_init(spec, &accel, version, &vm->machine, d);
        if (r == 0)
                r = qemu_prepare_memory_file(vm->memory_file, spec->memory, true, d);
        if (r == 0)
                r = qemu_install_boot_files(vm->run_dir, kernel, spec->initrd, true, d);
        if (r == 0)
                r = start(vm, spec, false, d);
        char status[32] = "";
        if (r == 0)
                r = qemu_query_status(vm, status, sizeof(status), d);
        if (r == 0 && strcmp(status, "running") != 0)
                r = vmsnap_diag(d, -EIO, "qemu (pid %d) is %s after boot, not running",
                                (int)vm->proc.pid, status);
        if (r < 0) {
                vmm_process_kill(&vm->proc);
                qemu_vm_free(vm);
                return r;
        }
        *ret = vm;
        return 0;
}

/* ---- restore --------------------------------------------------------------------------------- */

/* Checks that this host and spec can run the machine a snapshot describes. */
static int check_restorable(const struct vmsnap_vm_spec *spec, const char *state_dir,
                            const struct qemu_machine *c, const struct boot_files *f,
                            struct vmsnap_diag *d)
{
        char running[32];
        int r = qemu_version(spec->vmm_binary, running, d);
        if (r < 0)
                return r;
        if (!qemu_compatible(c->qemu_version, running))
                return vmsnap_diag(d, -EPROTONOSUPPORT,
                                   "%s: state of QEMU %s; the installed "
                                   "QEMU %s cannot load it (the major.minor must match)",
                                   state_dir, c->qemu_version, running);
        if ((spec->vcpus && spec->vcpus != c->vcpus) || (spec->memory && spec->memory != c->memory))
                return vmsnap_diag(d, -EINVAL,
                                   "%s: the snapshot has %u vCPUs and %llu MiB; the "
                                   "spec asks for %u and %llu MiB",
                                   state_dir, c->vcpus, (unsigned long long)(c->memory >> 20),
                                   spec->vcpus, (unsigned long long)(spec->memory >> 20));
        if (c->disk && !spec->rootfs)
                return vmsnap_diag(d, -EINVAL, "%s: the snapshot has a disk; the spec gives none",
                                   state_dir);
        if (c->net != spec->net)
                return vmsnap_diag(d, -EINVAL,
                                   "%s: the snapshot's VM has %s network card; this restore %s "
                                   "network",
                                   state_dir, c->net ? "a" : "no",
                                   spec->net ? "asks for a" : "gives it no");
        if (c->accel != VMM_ACCEL_KVM)
                return 0; /* TCG runs anywhere */
        struct vmm_accel_status host;
        r = qemu_choose_accel(spec, f->kernel, c->initrd ? f->initrd : NULL, running, &host, d);
        if (r == 0 && host.accel != VMM_ACCEL_KVM)
                r = vmsnap_diag(d, -EPROTONOSUPPORT,
                                "%s: the snapshot was taken under KVM and "
                                "KVM does not work on this host (%s: %s)",
                                state_dir, vmm_accel_name(host.accel), host.reason);
        return r;
}


/* The memory file of a restore and how it is mapped. */
static int restore_memory(struct vmsnap_vm *vm, const struct vmsnap_vm_spec *spec,
                          const struct vmsnap_vm_restore *from, struct vmsnap_diag *d)
{
        if (from->memory_mode == VMSNAP_VM_MEMORY_UFFD)
                return vmsnap_diag(d, -EOPNOTSUPP,
                                   "qemu: lazy (userfaultfd) restore needs "
                                   "QEMU postcopy from a live source; QEMU 7.2 cannot load RAM "
                                   "lazily from a file: use a memory file");
        if (from->memory_mode != VMSNAP_VM_MEMORY_FILE_SHARED &&
            from->memory_mode != VMSNAP_VM_MEMORY_FILE_PRIVATE)
                return vmsnap_diag(d, -EINVAL, "qemu: unknown memory mode %d",
                                   (int)from->memory_mode);
        const char *path = from->memory_path ? from->memory_path : spec->memory_file;
        if (!path || snprintf(vm->memory_file, sizeof(vm->memory_file), "%s", path) >=
                             (int)sizeof(vm->memory_file))
                return vmsnap_diag(d, -EINVAL, "qemu: restore needs a memory file path");
        vm->memory_shared = from->memory_mode == VMSNAP_VM_MEMORY_FILE_SHARED;
        if (!vm->memory_shared && spec->memory_file && strcmp(spec->memory_file, path) != 0)
                snprintf(vm->scratch_memory, sizeof(vm->scratch_memory), "%s", spec->memory_file);
        return qemu_prepare_memory_file(vm->memory_file, vm->machine.memory, false, d);
}

static int qemu_restore(const struct vmsnap_vm_spec *spec, const struct vmsnap_vm_restore *from,
                        struct vmsnap_vm **ret, struct vmsnap_diag *d)
{
        if (!from || !from->state_dir)
                return vmsnap_diag(d, -EINVAL, "qemu: restore needs a state directory");
        int r = check_spec(spec, false, d);
        struct vmsnap_vm *vm = NULL;
        json_t *o = NULL;
        if (r == 0)
                r = qemu_vm_new(spec, &vm, d);
        if (r < 0)
                return r;
        struct boot_files f;
        r = qemu_boot_files_in(from->state_dir, &f, d);
        if (r == 0) { /* refuses another driver's state with a clear message */
                char saved_by[64];
                r = vmm_version_read(from->state_dir, QEMU_NAME, saved_by, sizeof(saved_by), d);
        }
        if (r == 0)
                r = qemu_machine_read_file(from->state_dir, &o, d);
        if (r == 0)
                r = qemu_machine_from_json(o, from->state_dir, &vm->machine, d);
        json_decref(o);
        if (r == 0)
                r = check_restorable(spec, from->state_dir, &vm->machine, &f, d);
        if (r == 0) /* CPU state loads only under the accelerator that saved it */
                snprintf(vm->machine.accel_reason, sizeof(vm->machine.accel_reason),
                         "restored from a snapshot taken under %s",
                         vm->machine.accel == VMM_ACCEL_KVM ? "KVM (KVM works on this host)"
                                                            : "TCG");
        if (r == 0)
                r = restore_memory(vm, spec, from, d);
        if (r == 0)
                r = qemu_install_boot_files(vm->run_dir, f.kernel,
                                            vm->machine.initrd ? f.initrd : NULL, false, d);
        if (r == 0)
                r = start(vm, spec, true, d);
        if (r == 0)
                r = qemu_load_state(vm, from->state_dir, d);
        if (r < 0) {
                vmm_process_kill(&vm->proc);
                qemu_vm_free(vm);
                return r;
        }
        *ret = vm;
        return 0;
}

/* ---- attach, pause, resume ------------------------------------------------------------------- */

static int qemu_attach(const struct vmsnap_vm_spec *spec, pid_t pid, struct vmsnap_vm **ret,
                       struct vmsnap_diag *d)
{
        if (!spec || !spec->run_dir)
                return vmsnap_diag(d, -EINVAL, "qemu: attach needs the run directory");
        struct vmsnap_vm *vm = NULL;
        int r = qemu_vm_new(spec, &vm, d);
        if (r < 0)
                return r;
        /* -name vmsnap-<id> is the same inside and outside a jail (paths are not); a QEMU
         * started before -name existed is known by its monitor's host path. */
        _cleanup_free_ char *esc = qemu_opt_escape(vm->qmp_sock);
        char needle[PATH_MAX + 16], old_needle[PATH_MAX + 16];
        snprintf(needle, sizeof(needle), "-name vmsnap-%s ", spec->id ? spec->id : "");
        snprintf(old_needle, sizeof(old_needle), "path=%s,", esc ? esc : vm->qmp_sock);
        r = spec->id ? qemu_read_run_config(vm, d)
                     : vmsnap_diag(d, -EINVAL, "qemu: attach needs the sandbox id");
        if (r == 0 && !vm->memory_shared && spec->memory_file &&
            strcmp(spec->memory_file, vm->memory_file) != 0) /* share=off: never written */
                snprintf(vm->scratch_memory, sizeof(vm->scratch_memory), "%s", spec->memory_file);
        else if (r == 0 && spec->memory_file && strcmp(spec->memory_file, vm->memory_file) != 0)
                r = vmsnap_diag(d, -EPERM, "%s/%s: names memory file %s, the sandbox's is %s",
                                vm->run_dir, QEMU_CONFIG, vm->memory_file, spec->memory_file);
        if (r == 0)
                r = vmm_process_attach(pid, QEMU_NAME, needle, &vm->proc, d);
        if (r == -EPERM)
                r = vmm_process_attach(pid, QEMU_NAME, old_needle, &vm->proc, d);
        if (r == 0 &&
            path_join(vm->proc.log_path, sizeof(vm->proc.log_path), vm->run_dir, QEMU_LOG) < 0)
                r = vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", vm->run_dir);
        if (r == 0) {
                r = vmm_qmp_connect(vm->qmp_sock, vmm_process_start_timeout_ms(), &vm->qmp, d);
                if (r < 0)
                        r = qemu_explain(&vm->proc, r, d);
        }
        if (r < 0) {
                vmm_process_release(&vm->proc);
                qemu_vm_free(vm);
                return r;
        }
        char vdir[PATH_MAX];
        struct vmm_accel_choice c = {.verdict_dir = vdir, .qemu_version = vm->machine.qemu_version};
        struct vmm_accel_status ignore;
        if (qemu_verdict_dir(vm->run_dir, vdir, NULL) == 0) /* learns the verdict, never probes */
                vmm_accel_choose(&c, &ignore, NULL);
        *ret = vm;
        return 0;
}

int qemu_pause(struct vmsnap_vm *vm, struct vmsnap_diag *d)
{
        if (!vm)
                return vmsnap_diag(d, -EINVAL, "qemu: no VM");
        return qemu_qmp(vm, "stop", NULL, -1, VMM_QMP_TIMEOUT_MS, NULL, d);
}

/* `cont` also leaves "postmigrate" (after a save of a VM that carries on): QEMU then takes
 * back the disk images it released for a migration target. */
static int qemu_resume(struct vmsnap_vm *vm, struct vmsnap_diag *d)
{
        if (!vm)
                return vmsnap_diag(d, -EINVAL, "qemu: no VM");
        return qemu_qmp(vm, "cont", NULL, -1, VMM_QMP_TIMEOUT_MS, NULL, d);
}


/* ---- agent, teardown ------------------------------------------------------------------------- */

static int qemu_agent_connect(struct vmsnap_vm *vm, int timeout_ms, int *ret_fd,
                              struct vmsnap_diag *d)
{
        if (!vm || !ret_fd)
                return vmsnap_diag(d, -EINVAL, "qemu: no VM");
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        memcpy(sa.sun_path, vm->agent_sock, sizeof(sa.sun_path));
        int64_t deadline = now_ms() + timeout_ms;
        for (;;) {
                _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        return vmsnap_diag(d, -errno, "socket: %s", strerror(errno));
                if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
                        *ret_fd = TAKE_FD(fd);
                        return 0;
                }
                int e = errno;
                if ((e != ENOENT && e != ECONNREFUSED && e != EAGAIN) || now_ms() >= deadline ||
                    vmm_process_exited(&vm->proc)) {
                        vmsnap_diag(d, -e, "%s: cannot connect to the guest agent: %s",
                                    vm->agent_sock, strerror(e));
                        return qemu_explain(&vm->proc, -e, d);
                }
                sleep_ms(20);
        }
}

/* Removes what a dead QEMU leaves in its run directory (sockets, pid file). */
static void unlink_run_files(const char *run_dir)
{
        static const char *const names[] = {QEMU_QMP_SOCK, QEMU_AGENT_SOCK, QEMU_PIDFILE};
        char p[PATH_MAX];
        for (size_t i = 0; i < ARRAY_SIZE(names); i++)
                if (path_join(p, sizeof(p), run_dir, names[i]) == 0)
                        unlink(p);
}

static void qemu_destroy(struct vmsnap_vm *vm)
{
        if (!vm)
                return;
        vmm_qmp_close(vm->qmp);
        vm->qmp = NULL;
        vmm_process_kill(&vm->proc);
        unlink_run_files(vm->run_dir);
        qemu_vm_free(vm);
}

static void qemu_detach(struct vmsnap_vm *vm)
{
        if (!vm)
                return;
        vmm_process_release(&vm->proc);
        qemu_vm_free(vm);
}

static pid_t qemu_pid(const struct vmsnap_vm *vm)
{
        return vm ? vm->proc.pid : 0;
}

static void put_accel(enum vmm_accel a, const char *why, char *name, size_t name_size,
                      char *reason, size_t reason_size)
{
        snprintf(name, name_size, "%s", vmm_accel_name(a));
        snprintf(reason, reason_size, "%s", why);
}

static void qemu_accel(const struct vmsnap_vm *vm, char *name, size_t name_size, char *reason,
                       size_t reason_size)
{
        const char *why = vm->machine.accel_reason;
        put_accel(vm->machine.accel, *why ? why : "chosen by a vmsnap that did not record why",
                  name, name_size, reason, reason_size);
}

static void qemu_host_accel(const char *binary, const char *run_parent, char *name,
                            size_t name_size, char *reason, size_t reason_size)
{
        char v[32];
        struct vmm_accel_status s;
        if (qemu_version(binary, v, NULL) < 0)
                v[0] = '\0';
        vmm_accel_host_status(run_parent, v, &s);
        put_accel(s.accel, s.reason, name, name_size, reason, reason_size);
}

/* The saved machine's vmm.json says whether it has a NIC (absent: made before NICs). */
static int qemu_saved_net(const char *state_dir, struct vmsnap_diag *d)
{
        json_t *o = NULL;
        int r = qemu_machine_read_file(state_dir, &o, d);
        if (r < 0)
                return r;
        r = json_is_true(json_object_get(o, "net")) ? 1 : 0;
        json_decref(o);
        return r;
}

const struct vmsnap_vmm_driver vmsnap_vmm_qemu = {
        .disk_format = "qcow2",
    .name = QEMU_NAME,
        .private_save = true,
        .probe = qemu_probe,
        .compatible = qemu_compatible,
        .boot = qemu_boot,
        .restore = qemu_restore,
        .attach = qemu_attach,
        .pause = qemu_pause,
        .resume = qemu_resume,
        .save = qemu_save,
        .agent_connect = qemu_agent_connect,
        .destroy = qemu_destroy,
        .detach = qemu_detach,
        .pid = qemu_pid,
        .accel = qemu_accel,
        .host_accel = qemu_host_accel,
        .saved_net = qemu_saved_net,
};
