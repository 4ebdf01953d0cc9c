/* A QEMU process and its monitor (see qemu-internal.h): the handle, the start of the
 * process, QMP commands, and the explanation of a QEMU that died. */
#include "vmm/qemu-internal.h"

#include "util/cleanup.h"
#include "util/fs.h"
#include "vmm/confine.h"
#include <sys/socket.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Turns a failure on a QEMU that is exiting into "qemu (pid N) exited with status 1 (...)"
 * plus the end of its log; other failures get the pid as prefix. Returns the error. */
int qemu_explain(struct vmm_process *p, int r, struct vmsnap_diag *d)
{
        bool transport = r == -ECONNRESET || r == -ECONNREFUSED || r == -ENOENT ||
                         r == -ETIMEDOUT || r == -EPIPE || r == -ESRCH;
        for (int64_t end = now_ms() + QEMU_EXIT_WAIT_MS; transport && now_ms() < end;) {
                if (vmm_process_exited(p))
                        break;
                sleep_ms(QEMU_POLL_MS * 4);
        }
        if (!transport || !vmm_process_exited(p)) {
                vmsnap_diag_prefix(d, "qemu (pid %d)", (int)p->pid);
                return r;
        }
        char how[96], tail[600], msg[sizeof(d->msg)] = "";
        vmm_process_describe_exit(p, how, sizeof(how));
        qemu_log_tail(p->log_path, tail, sizeof(tail));
        if (d)
                memcpy(msg, d->msg, sizeof(msg));
        return vmsnap_diag(d, -ESRCH, "qemu (pid %d) %s (%.300s); its log ends: %s (%s)",
                           (int)p->pid, how, msg, tail[0] ? tail : "(empty)", p->log_path);
}

/* A handle for spec's run directory with its socket paths (no process yet). */
int qemu_vm_new(const struct vmsnap_vm_spec *spec, struct vmsnap_vm **ret, struct vmsnap_diag *d)
{
        struct vmsnap_vm *vm = calloc(1, sizeof(*vm));
        if (!vm)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        vm->proc.pidfd = -1;
        if (snprintf(vm->run_dir, sizeof(vm->run_dir), "%s", spec->run_dir) >=
                    (int)sizeof(vm->run_dir) ||
            path_join(vm->qmp_sock, sizeof(vm->qmp_sock), spec->run_dir, QEMU_QMP_SOCK) < 0 ||
            path_join(vm->agent_sock, sizeof(vm->agent_sock), spec->run_dir, QEMU_AGENT_SOCK) < 0) {
                free(vm);
                return vmsnap_diag(d, -ENAMETOOLONG,
                                   "%s: run directory path too long for a "
                                   "Unix socket (at most %zu bytes)",
                                   spec->run_dir, SUN_LEN_MAX - sizeof(QEMU_AGENT_SOCK) - 1);
        }
        *ret = vm;
        return 0;
}

/* Inside-jail paths of a launch (the strings behind a qemu_launch). */
struct jail_paths {
        char binary[PATH_MAX], kernel[PATH_MAX], initrd[PATH_MAX], memory[PATH_MAX],
            rootfs[PATH_MAX], base[PATH_MAX];
};

/* The guest RAM file in the jail, its inside path into out. A private (share=off) one is a
 * template's memory that clones share: bound read-only, root:shared_gid 0640, and the
 * jailer hands QEMU a read-only descriptor for its O_RDWR open (docs/jail.md "Read-only
 * memory"), so that no clone can write it. */
static int jail_memory(const struct qemu_launch *l, struct vmm_confine *c, char out[PATH_MAX],
                       struct vmsnap_diag *d)
{
        if (l->share)
                return vmm_confine_path(c, l->memory_file, VMM_JAIL_MEMORY, true, out, PATH_MAX,
                                        d);
        int r = vmm_confine_bind(c, l->memory_file, VMM_JAIL_MEMORY, false, d);
        if (r == 0)
                r = vmm_confine_share(c, l->memory_file, d);
        c->spec.readonly_memory = VMM_JAIL_MEMORY;
        snprintf(out, PATH_MAX, "%s", VMM_JAIL_MEMORY);
        return r;
}

/* Builds the jail of l (its template l->jail plus every file QEMU opens) and the same launch
 * with inside-jail paths. */
static int jail_launch(const struct qemu_launch *l, struct vmm_confine *c,
                       struct qemu_launch *inside, struct jail_paths *p, struct vmsnap_diag *d)
{
        int r = vmm_confine_init(c, l->jail, l->run_dir, d);
        *inside = *l;
        inside->run_dir = VMM_JAIL_RUN;
        if (r == 0)
                r = vmm_confine_binary(c, l->binary, QEMU_BINARY, p->binary, sizeof(p->binary),
                                       d);
        c->spec.system_dirs = true; /* /usr/share/qemu, whatever the binary */
        inside->binary = p->binary;
        /* The kernel and initramfs are shared read-only inputs (root:shared_gid 0640): a
         * snapshot imported from an archive brings its own 0600 copies. */
        if (r == 0)
                r = vmm_confine_path(c, l->kernel, "/vmlinuz", false, p->kernel, PATH_MAX, d);
        if (r == 0)
                r = vmm_confine_share(c, l->kernel, d);
        inside->kernel = p->kernel;
        if (r == 0 && l->machine->initrd)
                r = vmm_confine_path(c, l->initrd, "/initrd", false, p->initrd, PATH_MAX, d);
        if (r == 0 && l->machine->initrd)
                r = vmm_confine_share(c, l->initrd, d);
        inside->initrd = p->initrd;
        if (r == 0)
                r = jail_memory(l, c, p->memory, d);
        inside->memory_file = p->memory;
        if (r == 0 && l->machine->disk && l->rootfs)
                r = vmm_confine_path(c, l->rootfs, VMM_JAIL_DISK, true, p->rootfs, PATH_MAX, d);
        inside->rootfs = l->rootfs ? p->rootfs : NULL;
        if (r == 0 && l->machine->disk && l->rootfs_base)
                r = vmm_confine_path(c, l->rootfs_base, VMM_JAIL_BASE, false, p->base, PATH_MAX,
                                     d);
        inside->rootfs_base = l->rootfs_base ? p->base : NULL;
        if (r == 0 && l->machine->accel == VMM_ACCEL_KVM)
                r = vmm_confine_device(c, "/dev/kvm", d);
        if (r == 0 && l->machine->net)
                r = vmm_confine_device(c, "/dev/net/tun", d);
        return r;
}

/* Starts QEMU for l and connects to its monitor. On failure the process is killed. */
int qemu_start_process(const struct qemu_launch *l, struct vmm_process *proc,
                       struct vmm_qmp **ret_qmp, struct vmsnap_diag *d)
{
        char qmp[PATH_MAX], agent[PATH_MAX], log[PATH_MAX];
        if (path_join(qmp, sizeof(qmp), l->run_dir, QEMU_QMP_SOCK) < 0 ||
            path_join(agent, sizeof(agent), l->run_dir, QEMU_AGENT_SOCK) < 0 ||
            path_join(log, sizeof(log), l->run_dir, QEMU_LOG) < 0)
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", l->run_dir);
        unlink(qmp); /* a stale socket would look like a live monitor */
        unlink(agent);
        _cleanup_free_ struct vmm_confine *c = l->jail ? calloc(1, sizeof(*c)) : NULL;
        _cleanup_free_ struct jail_paths *p = l->jail ? calloc(1, sizeof(*p)) : NULL;
        struct qemu_launch inside;
        int r = l->jail && (!c || !p) ? -ENOMEM : 0;
        if (r == 0 && l->jail)
                r = jail_launch(l, c, &inside, p, d);
        char **argv = NULL;
        if (r == 0 && qemu_argv_build(l->jail ? &inside : l, &argv) < 0)
                r = vmsnap_diag(d, -ENOMEM, "out of memory");
        struct vmm_spawn sp = {.name = QEMU_NAME,
                               .argv = argv,
                               .log_path = log,
                               .cwd = l->run_dir,
                               .jail = l->jail ? &c->spec : NULL};
        if (r == 0)
                r = vmm_process_spawn(&sp, proc, d);
        qemu_argv_free(argv);
        if (r < 0)
                return r;
        int timeout = vmm_process_start_timeout_ms();
        r = vmm_process_wait_socket(proc, qmp, timeout, d);
        if (r == -ESRCH) /* told again with more of its log (an error can span lines) */
                r = qemu_explain(proc, vmsnap_diag(d, -ESRCH, "before creating %s", qmp), d);
        if (r == 0) {
                r = vmm_qmp_connect(qmp, timeout, ret_qmp, d);
                if (r < 0)
                        r = qemu_explain(proc, r, d);
        }
        if (r < 0)
                vmm_process_kill(proc);
        return r;
}

/* One QMP command on vm; failures on a dead QEMU are explained. */
int qemu_qmp(struct vmsnap_vm *vm, const char *command, json_t *args, int fd, int timeout_ms,
               json_t **ret, struct vmsnap_diag *d)
{
        if (!vm->qmp) {
                json_decref(args);
                return vmsnap_diag(d, -ENOTCONN, "qemu (pid %d): no monitor connection",
                                   (int)vm->proc.pid);
        }
        int r = vmm_qmp_execute(vm->qmp, command, args, fd, timeout_ms, ret, d);
        return r < 0 ? qemu_explain(&vm->proc, r, d) : 0;
}

/* The run state ("running", "paused", "inmigrate", "postmigrate", ...) into out. */
int qemu_query_status(struct vmsnap_vm *vm, char *out, size_t size, struct vmsnap_diag *d)
{
        json_t *st = NULL;
        int r = qemu_qmp(vm, "query-status", NULL, -1, VMM_QMP_TIMEOUT_MS, &st, d);
        if (r < 0)
                return r;
        const char *s = json_string_value(json_object_get(st, "status"));
        snprintf(out, size, "%s", s ? s : "");
        json_decref(st);
        return s ? 0
                 : vmsnap_diag(d, -EPROTO, "qemu (pid %d): query-status without a status",
                               (int)vm->proc.pid);
}

int qemu_set_ignore_shared(struct vmsnap_vm *vm, struct vmsnap_diag *d)
{
        json_t *args = json_pack("{s:[{s:s, s:b}]}", "capabilities", "capability",
                                 "x-ignore-shared", "state", 1);
        return qemu_qmp(vm, "migrate-set-capabilities", args, -1, VMM_QMP_TIMEOUT_MS, NULL, d);
}

/* Hands fd to QEMU under QEMU_FDNAME (for an fd: migration URI). */
int qemu_pass_fd(struct vmsnap_vm *vm, int fd, struct vmsnap_diag *d)
{
        return qemu_qmp(vm, "getfd", json_pack("{s:s}", "fdname", QEMU_FDNAME), fd, VMM_QMP_TIMEOUT_MS,
                   NULL, d);
}

void qemu_vm_free(struct vmsnap_vm *vm)
{
        vmm_qmp_close(vm->qmp);
        free(vm);
}
