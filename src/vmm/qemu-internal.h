/* The QEMU driver's parts (internal to src/vmm): the VM handle, and the functions the files
 * of the driver share. qemu.c holds the driver table, boot, restore, attach and teardown;
 * qemu-files.c the files a VM runs from; qemu-launch.c the process and its QMP monitor;
 * qemu-migrate.c save and load of device state; qemu-kvm-probe.c the accelerator choice.
 * docs/vmm.md "QEMU". */
#ifndef VMSNAP_VMM_QEMU_INTERNAL_H
#define VMSNAP_VMM_QEMU_INTERNAL_H

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/un.h>
#include <time.h>

#include <jansson.h>
#include <vmsnap/error.h>
#include <vmsnap/vmm.h>

#include "vmm/accel.h"
#include "vmm/process.h"
#include "vmm/qemu-machine.h"
#include "vmm/qmp.h"

#define QEMU_NAME         "qemu"
#define QEMU_HINT         "apt-get install qemu-system-x86 (QEMU 7.2 or later)"
#define QEMU_FDNAME       "vmsnap-migration" /* getfd name of the migration stream's fd */
#define QEMU_RAM_BLOCK    "mem"              /* RAM block of -object memory-backend-file,id=mem */
#define QEMU_POLL_MS      5
#define QEMU_EXIT_WAIT_MS 2000 /* how long a failing QEMU gets to exit, for its status */

#define SUN_LEN_MAX sizeof(((struct sockaddr_un *)0)->sun_path)

struct vmsnap_vm {
        struct vmm_process proc;
        struct vmm_qmp *qmp;
        struct qemu_machine machine;
        char run_dir[PATH_MAX];
        char memory_file[PATH_MAX];
        bool memory_shared; /* share=on: the memory file holds guest RAM */
        char scratch_memory[PATH_MAX]; /* share=off: where a save puts the RAM it splits
                                          out of the stream (the spec's memory_file) */
        char qmp_sock[SUN_LEN_MAX];
        char agent_sock[SUN_LEN_MAX];
};

/* The kernel and initramfs a VM starts from, in a run or snapshot directory. */
struct boot_files {
        char kernel[PATH_MAX], initrd[PATH_MAX];
};

static inline int64_t now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void sleep_ms(int ms)
{
        struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
        nanosleep(&ts, NULL);
}

/* Timeouts of state transfers: 10 s plus 1 s per 128 MiB of guest memory. */
static inline int timeout_for(uint64_t memory)
{
        return 10000 + (int)(memory / (128ull << 20)) * 1000;
}

/* dir/name into out; -ENAMETOOLONG when it does not fit. */
static inline int path_join(char *out, size_t size, const char *dir, const char *name)
{
        int n = snprintf(out, size, "%s/%s", dir, name);
        return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* ---- qemu-stream.c ---- */

/* Reads a migration stream from in_fd until its end (at most timeout_ms), writing every page
 * record of RAM block `block` (mem_size bytes) to its offset in mem_fd (sized to mem_size,
 * zero pages left as holes) and every other byte to snap_fd unchanged. Returns 0, or
 * -EPROTO (a stream it does not understand) or -errno, with d saying where. */
int qemu_stream_split(int in_fd, int snap_fd, int mem_fd, uint64_t mem_size, const char *block,
                      int timeout_ms, struct vmsnap_diag *d);

/* ---- qemu.c ---- */

/* "X.Y.Z" of binary (NULL: qemu-system-x86_64 from $PATH), run once per binary. */
int qemu_version(const char *binary, char out[32], struct vmsnap_diag *d);

/* Stops the vCPUs (idempotent). */
int qemu_pause(struct vmsnap_vm *vm, struct vmsnap_diag *d);

/* ---- qemu-files.c ---- */

/* The paths of the kernel and initramfs in dir (a run or snapshot directory). */
int qemu_boot_files_in(const char *dir, struct boot_files *ret, struct vmsnap_diag *d);

/* Writes run_dir/vmm.json: the machine plus this run's memory file and mapping. */
int qemu_write_run_config(const struct vmsnap_vm *vm, struct vmsnap_diag *d);

/* Reads vm->run_dir/vmm.json into vm->machine, memory_file and memory_shared. */
int qemu_read_run_config(struct vmsnap_vm *vm, struct vmsnap_diag *d);

/* Makes dst_dirfd/name the same file as src_path (hard link, else reflink or copy), replacing
 * an older file of that name atomically. src_path must be a regular file; a final symlink is
 * followed only when `follow` (the admin's guest dir, never a run or snapshot dir, which a
 * jailed VMM or an archive could have filled). Returns 0, -EPERM or -errno (with d). */
int qemu_install_file(const char *src_path, bool follow, int dst_dirfd, const char *name,
                      struct vmsnap_diag *d);

/* The kernel file a boot starts: with VMSNAP_PVH=1, the uncompressed `vmlinux` beside kernel
 * (into buf) when it has a PVH entry note, so that QEMU enters it directly (docs/guest.md
 * §3.7); otherwise, or when that file is missing or bad (a warning says why), kernel. */
const char *qemu_boot_kernel(const char *kernel, char *buf, size_t size);

/* Links the kernel and initramfs (NULL: none) into run_dir; `follow` as for
 * qemu_install_file. Returns 0 or -errno (with d). */
int qemu_install_boot_files(const char *run_dir, const char *kernel, const char *initrd,
                            bool follow, struct vmsnap_diag *d);

/* Creates the memory file of a boot (create: sparse, size bytes) or checks that an existing
 * one has size bytes. Returns 0 or -errno (with d). */
int qemu_prepare_memory_file(const char *path, uint64_t size, bool create,
                             struct vmsnap_diag *d);

/* Refuses a qcow2 overlay whose header names an external data file (a host file QEMU would
 * open for the guest's data) or is not qcow2 at all. Returns 0, -EPERM or -EBADMSG (with d). */
int qemu_check_overlay(const char *path, struct vmsnap_diag *d);

/* Removes the regular files of a scratch directory we made, then the directory. */
void qemu_remove_scratch(const char *dir);

/* The last lines (up to 3) of a log, joined with "|", into out. */
void qemu_log_tail(const char *path, char *out, size_t size);

/* ---- qemu-launch.c ---- */

/* A handle for spec's run directory with its socket paths (no process yet). */
int qemu_vm_new(const struct vmsnap_vm_spec *spec, struct vmsnap_vm **ret,
                struct vmsnap_diag *d);

/* Closes the monitor and frees the handle (the process is the caller's business). */
void qemu_vm_free(struct vmsnap_vm *vm);

/* Starts QEMU for l and connects to its monitor. On failure the process is killed. */
int qemu_start_process(const struct qemu_launch *l, struct vmm_process *proc,
                       struct vmm_qmp **ret_qmp, struct vmsnap_diag *d);

/* Turns a failure on a QEMU that is exiting into "qemu (pid N) exited with status 1 (...)"
 * plus the end of its log; other failures get the pid as prefix. Returns the error. */
int qemu_explain(struct vmm_process *p, int r, struct vmsnap_diag *d);

/* One QMP command on vm (args stolen); failures on a dead QEMU are explained. */
int qemu_qmp(struct vmsnap_vm *vm, const char *command, json_t *args, int fd, int timeout_ms,
             json_t **ret, struct vmsnap_diag *d);

/* The run state ("running", "paused", "inmigrate", "postmigrate", ...) into out. */
int qemu_query_status(struct vmsnap_vm *vm, char *out, size_t size, struct vmsnap_diag *d);

/* Turns on x-ignore-shared: shared RAM stays out of the migration stream. */
int qemu_set_ignore_shared(struct vmsnap_vm *vm, struct vmsnap_diag *d);

/* Hands fd to QEMU under QEMU_FDNAME (for an fd: migration URI). */
int qemu_pass_fd(struct vmsnap_vm *vm, int fd, struct vmsnap_diag *d);

/* ---- qemu-migrate.c ---- */

/* Loads state_dir/snapfile into a QEMU started with -incoming defer; waits until paused. */
int qemu_load_state(struct vmsnap_vm *vm, const char *state_dir, struct vmsnap_diag *d);

/* The driver's save(): device state into state_dir, guest RAM stays in the memory file. */
int qemu_save(struct vmsnap_vm *vm, const char *state_dir, struct vmsnap_vm_saved *ret,
              struct vmsnap_diag *d);

/* ---- qemu-kvm-probe.c ---- */

/* The run directories' parent, where the accelerator verdict is remembered. */
int qemu_verdict_dir(const char *run_dir, char out[PATH_MAX], struct vmsnap_diag *d);

/* The accelerator for a new VM of spec, probing KVM once per host when it must. */
int qemu_choose_accel(const struct vmsnap_vm_spec *spec, const char *kernel,
                      const char *initrd, const char *version, struct vmm_accel_status *ret,
                      struct vmsnap_diag *d);

#endif
