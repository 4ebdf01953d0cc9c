/* Cloud Hypervisor in a jail (docs/vmm.md "Jails"): the binds of its files and the
 * inside-jail paths its API calls and its restore dir name. */
#ifndef VMSNAP_VMM_CLOUD_HYPERVISOR_JAIL_H
#define VMSNAP_VMM_CLOUD_HYPERVISOR_JAIL_H

#include <limits.h>

#include <vmsnap/vmm.h>

#include "vmm/confine.h"

#define CH_JAIL_SAVE_DIR "save" /* in the run dir: where a jailed vm.snapshot writes */

/* What a jailed Cloud Hypervisor is told (inside-jail paths); "" when not needed. */
struct ch_jail_paths {
        char binary[PATH_MAX];
        char kernel[PATH_MAX], initrd[PATH_MAX], rootfs[PATH_MAX];
        char state[PATH_MAX], memory[PATH_MAX]; /* restore: state.json, memory-ranges */
};

/* Builds the jail of a Cloud Hypervisor for spec (and for a restore from `from` whose
 * state.json is state_file): the run dir at /run, the binary, kernel, initramfs, disk, state
 * file and memory file (both shared 0640 root:shared_gid: a template's are every clone's),
 * /dev/kvm and /dev/userfaultfd (OnDemand restores) when the host has them. */
int ch_jail_build(const struct vmsnap_vm_spec *spec, const struct vmsnap_vm_restore *from,
                  const char *state_file, const char *binary, struct vmm_confine *c,
                  struct ch_jail_paths *p, struct vmsnap_diag *d);

/* Makes run_dir/save, empty, owned by the jail's uid (0700): the one place a jailed
 * vm.snapshot can write. Returns 0 or -errno (with d). */
int ch_jail_save_dir(const char *run_dir, uid_t uid, char *out, size_t size,
                     struct vmsnap_diag *d);

#endif
