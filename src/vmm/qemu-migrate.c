/* Device state of a QEMU VM (see qemu-internal.h): save = the migration stream into
 * snapfile with x-ignore-shared (guest RAM stays in the memory file), load = the same
 * stream into a QEMU started with -incoming defer. */
#include "vmm/qemu-internal.h"

#include "util/cleanup.h"
#include "util/fs.h"
#include "vmm/version.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Loads snapfile into a QEMU started with -incoming defer and waits until it is paused. */
int qemu_load_state(struct vmsnap_vm *vm, const char *state_dir, struct vmsnap_diag *d)
{
        char path[PATH_MAX];
        if (path_join(path, sizeof(path), state_dir, QEMU_SNAPFILE) < 0)
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", state_dir);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return vmsnap_diag(d, -errno, "%s: %s", path, strerror(errno));
        int r = qemu_set_ignore_shared(vm, d);
        if (r == 0)
                r = qemu_pass_fd(vm, fd, d);
        if (r == 0)
                r = qemu_qmp(vm, "migrate-incoming", json_pack("{s:s}", "uri", "fd:" QEMU_FDNAME), -1,
                        VMM_QMP_TIMEOUT_MS, NULL, d);
        int64_t deadline = now_ms() + timeout_for(vm->machine.memory);
        char status[32] = "inmigrate";
        while (r == 0 && strcmp(status, "inmigrate") == 0) {
                r = qemu_query_status(vm, status, sizeof(status), d);
                if (r == 0 && strcmp(status, "inmigrate") == 0 && now_ms() >= deadline)
                        r = vmsnap_diag(d, -ETIMEDOUT, "qemu (pid %d): %s not loaded in %d ms",
                                        (int)vm->proc.pid, path, timeout_for(vm->machine.memory));
                if (r == 0 && strcmp(status, "inmigrate") == 0)
                        sleep_ms(QEMU_POLL_MS);
        }
        if (r == 0 && strcmp(status, "paused") != 0)
                r = vmsnap_diag(d, -EIO,
                                "qemu (pid %d): after loading %s the VM is %s, not "
                                "paused",
                                (int)vm->proc.pid, path, status);
        return r;
}


/* ---- save ------------------------------------------------------------------------------------ */

/* Polls query-migrate until the outgoing migration completed. */
static int wait_migration(struct vmsnap_vm *vm, struct vmsnap_diag *d)
{
        int timeout = timeout_for(vm->machine.memory);
        int64_t deadline = now_ms() + timeout;
        for (;;) {
                json_t *info = NULL;
                int r = qemu_qmp(vm, "query-migrate", NULL, -1, VMM_QMP_TIMEOUT_MS, &info, d);
                if (r < 0)
                        return r;
                const char *st = json_string_value(json_object_get(info, "status"));
                const char *why = json_string_value(json_object_get(info, "error-desc"));
                if (st && strcmp(st, "completed") == 0)
                        r = 1;
                else if (st && (strcmp(st, "failed") == 0 || strcmp(st, "cancelled") == 0))
                        r = vmsnap_diag(d, -EIO, "qemu (pid %d): migration %s: %s",
                                        (int)vm->proc.pid, st, why ? why : "no reason given");
                else if (now_ms() >= deadline)
                        r = vmsnap_diag(d, -ETIMEDOUT,
                                        "qemu (pid %d): migration still %s after %d ms",
                                        (int)vm->proc.pid, st ? st : "?", timeout);
                json_decref(info);
                if (r == -ETIMEDOUT)
                        qemu_qmp(vm, "migrate_cancel", NULL, -1, VMM_QMP_TIMEOUT_MS, NULL, NULL);
                if (r != 0)
                        return r < 0 ? r : 0;
                sleep_ms(QEMU_POLL_MS);
        }
}

/* Writes the migration stream (devices; shared RAM skipped) into dirfd/snapfile. */
static int write_snapfile(struct vmsnap_vm *vm, int dirfd, struct vmsnap_diag *d)
{
        struct vmsnap_staged s;
        int r = vmsnap_staged_open(&s, dirfd, QEMU_SNAPFILE, d);
        if (r < 0)
                return r;
        r = qemu_set_ignore_shared(vm, d);
        if (r == 0)
                r = qemu_pass_fd(vm, s.fd, d);
        if (r == 0)
                r = qemu_qmp(vm, "migrate", json_pack("{s:s}", "uri", "fd:" QEMU_FDNAME), -1,
                        VMM_QMP_TIMEOUT_MS, NULL, d);
        if (r == 0)
                r = wait_migration(vm, d);
        if (r == 0)
                r = vmsnap_staged_commit(&s, d);
        vmsnap_staged_abort(&s);
        return r;
}

/* A VM with private RAM (share=off): the stream goes through a pipe and is split into
 * dirfd/snapfile (devices) and a fresh memory file (guest RAM), see qemu-stream.c. */
static int write_split(struct vmsnap_vm *vm, int dirfd, const char *memfile,
                       struct vmsnap_diag *d)
{
        struct vmsnap_staged s;
        int r = vmsnap_staged_open(&s, dirfd, QEMU_SNAPFILE, d);
        if (r < 0)
                return r;
        unlink(memfile); /* a leftover of a save that died */
        _cleanup_close_ int mem = open(memfile, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW |
                                                O_CLOEXEC, 0600);
        int p[2] = {-1, -1};
        if (mem < 0)
                r = vmsnap_diag(d, -errno, "%s: %s", memfile, strerror(errno));
        if (r == 0 && pipe2(p, O_CLOEXEC) < 0)
                r = vmsnap_diag(d, -errno, "pipe: %s", strerror(errno));
        if (r == 0)
                r = qemu_set_ignore_shared(vm, d);
        if (r == 0)
                r = qemu_pass_fd(vm, p[1], d);
        if (p[1] >= 0)
                close(p[1]); /* QEMU has its own: its close ends the stream */
        if (r == 0)
                r = qemu_qmp(vm, "migrate", json_pack("{s:s}", "uri", "fd:" QEMU_FDNAME), -1,
                             VMM_QMP_TIMEOUT_MS, NULL, d);
        if (r == 0)
                r = qemu_stream_split(p[0], s.fd, mem, vm->machine.memory, QEMU_RAM_BLOCK,
                                      timeout_for(vm->machine.memory), d);
        if (p[0] >= 0)
                close(p[0]); /* a split that failed: QEMU's writes fail, its migration too */
        if (r == 0)
                r = wait_migration(vm, d);
        if (r == 0)
                r = vmsnap_staged_commit(&s, d);
        vmsnap_staged_abort(&s);
        if (r < 0)
                unlink(memfile);
        return r;
}

/* Links the VM's kernel and initramfs into the snapshot and writes its vmm.json. */
static int write_machine(struct vmsnap_vm *vm, int dirfd, const char *state_dir,
                         struct vmsnap_diag *d)
{
        struct boot_files f;
        int r = qemu_boot_files_in(vm->run_dir, &f, d);
        if (r == 0)
                r = qemu_install_file(f.kernel, false, dirfd, QEMU_KERNEL, d);
        if (r == 0 && vm->machine.initrd)
                r = qemu_install_file(f.initrd, false, dirfd, QEMU_INITRD, d);
        if (r == 0)
                r = qemu_machine_write_file(dirfd, state_dir, qemu_machine_to_json(&vm->machine),
                                            d);
        char version[64]; /* the convention of all drivers: other drivers refuse this state */
        snprintf(version, sizeof(version), "%s/%s", vm->machine.qemu_version,
                 vmm_accel_name(vm->machine.accel));
        if (r == 0)
                r = vmm_version_write(state_dir, QEMU_NAME, version, d);
        return r;
}

int qemu_save(struct vmsnap_vm *vm, const char *state_dir, struct vmsnap_vm_saved *ret,
                     struct vmsnap_diag *d)
{
        struct vmsnap_diag local = {0};
        if (!d) /* vmsnap_diag_prefix(NULL, ...) returns 0: callees must see a diag */
                d = &local;
        if (!vm || !state_dir || !ret)
                return vmsnap_diag(d, -EINVAL, "qemu: save needs a VM and a state directory");
        /* x-ignore-shared skips only shared RAM: a share=off VM streams all of it, so the
         * stream is split and its RAM lands in the scratch memory file (qemu-stream.c). */
        if (!vm->memory_shared && !vm->scratch_memory[0])
                return vmsnap_diag(d, -EOPNOTSUPP,
                                   "qemu (pid %d): this VM maps %s privately (restored "
                                   "share=off) and has no memory file of its own to save its "
                                   "RAM into",
                                   (int)vm->proc.pid, vm->memory_file);
        _cleanup_close_ int dirfd = vmsnap_fs_open_dir(state_dir);
        if (dirfd < 0)
                return vmsnap_diag(d, dirfd, "%s: cannot open: %s", state_dir, strerror(-dirfd));
        char status[32] = "";
        int r = qemu_pause(vm, d);
        if (r == 0)
                r = qemu_query_status(vm, status, sizeof(status), d);
        /* QEMU refuses to migrate again before the VM ran: say why in our words. */
        if (r == 0 && strcmp(status, "postmigrate") == 0)
                r = vmsnap_diag(d, -EBUSY,
                                "qemu (pid %d): the VM was saved and has not run since; "
                                "resume it before saving it again",
                                (int)vm->proc.pid);
        if (r == 0 && vm->memory_shared)
                r = write_snapfile(vm, dirfd, d);
        else if (r == 0)
                r = write_split(vm, dirfd, vm->scratch_memory, d);
        if (r == 0)
                r = write_machine(vm, dirfd, state_dir, d);
        if (r == 0 && (r = vmsnap_fs_fsync_dir(dirfd)) < 0)
                vmsnap_diag(d, r, "%s: fsync: %s", state_dir, strerror(-r));
        if (r < 0)
                return r;
        memset(ret, 0, sizeof(*ret));
        snprintf(ret->memory_file, sizeof(ret->memory_file), "%s",
                 vm->memory_shared ? vm->memory_file : vm->scratch_memory);
        ret->source = VMSNAP_MEM_SOURCE_CONTENT;
        ret->memory_file_temporary = !vm->memory_shared;
        snprintf(ret->version, sizeof(ret->version), "%s/%s", vm->machine.qemu_version,
                 vmm_accel_name(vm->machine.accel));
        return 0;
}
