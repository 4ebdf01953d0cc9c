/* A VMM's jail (shared by the drivers): the sandbox layer hands a driver a jail template
 * (config, name, root dir, uid, limits: vmsnap_vm_spec.jail); the driver adds the files its
 * VMM needs as binds, the devices, and whether the VMM needs the system dirs, and puts the
 * inside-jail paths on the VMM's command line. docs/vmm.md "Jails". */
#ifndef VMSNAP_VMM_CONFINE_H
#define VMSNAP_VMM_CONFINE_H

#include <limits.h>
#include <stdbool.h>

#include <vmsnap/error.h>
#include <vmsnap/jail.h>

/* Inside-jail paths every driver uses. */
#define VMM_JAIL_RUN    "/run"    /* the run dir (writable): sockets, logs, pid file */
#define VMM_JAIL_MEMORY "/memory" /* the guest RAM file, when it is outside the run dir */
#define VMM_JAIL_DISK   "/disk"   /* the disk, when it is outside the run dir */
#define VMM_JAIL_BASE   "/base"   /* a qcow2 overlay's base image (read-only) */
#define VMM_JAIL_VMM    "/vmm"    /* a static VMM binary (Firecracker, Cloud Hypervisor) */

#define VMM_CONFINE_MAX_BINDS   8
#define VMM_CONFINE_MAX_DEVICES 6

/* A jail spec under construction; plain value, vmm_confine_init then add. Holds copies of
 * every path, so the caller's strings may go away. */
struct vmm_confine {
        struct vmsnap_jail_spec spec;
        struct vmsnap_jail_bind binds[VMM_CONFINE_MAX_BINDS];
        char sources[VMM_CONFINE_MAX_BINDS][PATH_MAX];
        char targets[VMM_CONFINE_MAX_BINDS][PATH_MAX];
        char library_path[PATH_MAX + 32]; /* LD_LIBRARY_PATH of a relocatable VMM */
        const char *env[2];
        const char *devices[VMM_CONFINE_MAX_DEVICES + 1];
        char run_dir[PATH_MAX]; /* host path of VMM_JAIL_RUN */
};

/* Starts c from the sandbox's template (copied) with run_dir bound writable at /run. */
int vmm_confine_init(struct vmm_confine *c, const struct vmsnap_jail_spec *tmpl,
                     const char *run_dir, struct vmsnap_diag *d);

/* Adds host file `source` at `target` (an absolute name in the jail's root). */
int vmm_confine_bind(struct vmm_confine *c, const char *source, const char *target,
                     bool writable, struct vmsnap_diag *d);

/* Adds a device node ("/dev/kvm"); the string must outlive c. */
int vmm_confine_device(struct vmm_confine *c, const char *dev, struct vmsnap_diag *d);

/* The VMM binary as the jail sees it, into out: `binary` (a path, or a name looked up in
 * $PATH; NULL: default_name) under /usr is reached through the system dirs, any other is
 * bound at /vmm. A dynamically linked binary (an ELF with an interpreter) turns the system
 * dirs on (its loader and libraries). Returns 0, -ENOENT or -errno (with d). */
int vmm_confine_binary(struct vmm_confine *c, const char *binary, const char *default_name,
                       char *out, size_t size, struct vmsnap_diag *d);

/* Makes a read-only input several jails may share (a template's state file) root:shared_gid
 * 0640, never through a symlink. Returns 0 or -errno (with d). */
int vmm_confine_share(const struct vmm_confine *c, const char *path, struct vmsnap_diag *d);

/* Moves from_dir/name, which a jailed VMM wrote, to to_dir/name as root's 0600 regular file
 * (a symlink, FIFO or anything else the VMM put there instead is refused and removed).
 * Returns 0 or -errno (with d). */
int vmm_confine_take_file(const char *from_dir, const char *name, const char *to_dir,
                          struct vmsnap_diag *d);

/* The vmm_process_attach needle of a jailed VMM: its cgroup, "cgroup:/<parent>/<name> ". */
void vmm_confine_attach_needle(const struct vmsnap_jail_spec *jail, char *out, size_t size);

/* Where host path `host` is seen inside the jail: under /run when it lies in the run dir,
 * else it is bound at `target` (read-only unless writable) and that is the answer. The
 * result is written to out (size bytes). */
int vmm_confine_path(struct vmm_confine *c, const char *host, const char *target,
                     bool writable, char *out, size_t size, struct vmsnap_diag *d);

#endif
