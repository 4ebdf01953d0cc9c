/* Firecracker in a jail (docs/vmm.md "Jails"): the binds of its files, the inside-jail paths
 * its API calls name, and the files it writes into its run dir that save takes over. */
#ifndef VMSNAP_VMM_FIRECRACKER_JAIL_H
#define VMSNAP_VMM_FIRECRACKER_JAIL_H

#include <limits.h>

#include <vmsnap/vmm.h>

#include "vmm/confine.h"

/* What a jailed Firecracker is told (inside-jail paths); empty strings when not needed. */
struct fc_jail_paths {
        char binary[PATH_MAX];
        char kernel[PATH_MAX], initrd[PATH_MAX]; /* boot */
        char rootfs[PATH_MAX];                   /* the target of <run>/rootfs.img */
        char snapfile[PATH_MAX], memory[PATH_MAX]; /* restore: state file, memory backend */
};

/* Builds the jail of a Firecracker for spec (and for a restore from `from`, whose state file
 * is snapfile): the run dir at /run, the binary, kernel, initramfs, disk, state file and
 * memory backend, /dev/kvm when the host has it. Returns 0 or -errno (with d). */
int fc_jail_build(const struct vmsnap_vm_spec *spec, const struct vmsnap_vm_restore *from,
                  const char *snapfile, const char *binary, struct vmm_confine *c,
                  struct fc_jail_paths *p, struct vmsnap_diag *d);

#endif
