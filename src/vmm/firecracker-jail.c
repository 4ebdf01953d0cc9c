/* Firecracker in a jail (see firecracker-jail.h). */
#include "vmm/firecracker-jail.h"

#include "util/cleanup.h"
#include "util/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fc_jail_build(const struct vmsnap_vm_spec *spec, const struct vmsnap_vm_restore *from,
                  const char *snapfile, const char *binary, struct vmm_confine *c,
                  struct fc_jail_paths *p, struct vmsnap_diag *d)
{
        memset(p, 0, sizeof(*p));
        int r = vmm_confine_init(c, spec->jail, spec->run_dir, d);
        if (r == 0)
                r = vmm_confine_binary(c, spec->vmm_binary, binary, p->binary, PATH_MAX, d);
        /* /bin/sh starts it in /run: Firecracker names its drive and vsock socket relative
         * to its working directory, and its snapshots record those names. */
        c->spec.system_dirs = true;
        if (r == 0 && spec->kernel && !from)
                r = vmm_confine_path(c, spec->kernel, "/vmlinuz", false, p->kernel, PATH_MAX, d);
        if (r == 0 && spec->initrd && !from)
                r = vmm_confine_path(c, spec->initrd, "/initrd", false, p->initrd, PATH_MAX, d);
        if (r == 0 && spec->rootfs)
                r = vmm_confine_path(c, spec->rootfs, VMM_JAIL_DISK, true, p->rootfs, PATH_MAX,
                                     d);
        if (r == 0 && from) /* a template's is read by every clone's jail */
                r = vmm_confine_share(c, snapfile, d);
        if (r == 0 && from)
                r = vmm_confine_path(c, snapfile, "/snapfile", false, p->snapfile, PATH_MAX, d);
        if (r == 0 && from && from->memory_mode != VMSNAP_VM_MEMORY_UFFD)
                r = vmm_confine_share(c, from->memory_path, d);
        if (r == 0 && from)
                r = vmm_confine_path(c, from->memory_path, VMM_JAIL_MEMORY, false, p->memory,
                                     PATH_MAX, d);
        if (r == 0 && access("/dev/kvm", F_OK) == 0)
                r = vmm_confine_device(c, "/dev/kvm", d);
        if (r == 0 && spec->net) /* to open the sandbox's tap0 */
                r = vmm_confine_device(c, "/dev/net/tun", d);
        /* A lazy restore: an unprivileged process gets a userfaultfd that also handles the
         * kernel's faults only through /dev/userfaultfd (vm.unprivileged_userfaultfd=0). */
        if (r == 0 && from && from->memory_mode == VMSNAP_VM_MEMORY_UFFD &&
            access("/dev/userfaultfd", F_OK) == 0)
                r = vmm_confine_device(c, "/dev/userfaultfd", d);
        return r;
}
