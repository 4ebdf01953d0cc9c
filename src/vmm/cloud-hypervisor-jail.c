/* Cloud Hypervisor in a jail (see cloud-hypervisor-jail.h). */
#include "vmm/cloud-hypervisor-jail.h"

#include "util/cleanup.h"
#include "util/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int ch_jail_build(const struct vmsnap_vm_spec *spec, const struct vmsnap_vm_restore *from,
                  const char *state_file, const char *binary, struct vmm_confine *c,
                  struct ch_jail_paths *p, struct vmsnap_diag *d)
{
        memset(p, 0, sizeof(*p));
        int r = vmm_confine_init(c, spec->jail, spec->run_dir, d);
        if (r == 0)
                r = vmm_confine_binary(c, spec->vmm_binary, binary, p->binary, PATH_MAX, d);
        if (r == 0 && spec->kernel)
                r = vmm_confine_path(c, spec->kernel, "/vmlinuz", false, p->kernel, PATH_MAX, d);
        if (r == 0 && spec->initrd && !from)
                r = vmm_confine_path(c, spec->initrd, "/initrd", false, p->initrd, PATH_MAX, d);
        if (r == 0 && spec->rootfs)
                r = vmm_confine_path(c, spec->rootfs, VMM_JAIL_DISK, true, p->rootfs, PATH_MAX,
                                     d);
        if (r == 0 && from)
                r = vmm_confine_share(c, state_file, d);
        if (r == 0 && from)
                r = vmm_confine_path(c, state_file, "/state.json", false, p->state, PATH_MAX, d);
        if (r == 0 && from)
                r = vmm_confine_share(c, from->memory_path, d);
        if (r == 0 && from)
                r = vmm_confine_path(c, from->memory_path, VMM_JAIL_MEMORY, false, p->memory,
                                     PATH_MAX, d);
        if (r == 0 && access("/dev/kvm", F_OK) == 0)
                r = vmm_confine_device(c, "/dev/kvm", d);
        if (r == 0 && spec->net) /* to open the sandbox's tap0 */
                r = vmm_confine_device(c, "/dev/net/tun", d);
        if (r == 0 && from && from->memory_mode == VMSNAP_VM_MEMORY_FILE_PRIVATE &&
            access("/dev/userfaultfd", F_OK) == 0) /* OnDemand restores fault pages in */
                r = vmm_confine_device(c, "/dev/userfaultfd", d);
        return r;
}

int ch_jail_save_dir(const char *run_dir, uid_t uid, char *out, size_t size,
                     struct vmsnap_diag *d)
{
        int n = snprintf(out, size, "%s/%s", run_dir, CH_JAIL_SAVE_DIR);
        if (n < 0 || (size_t)n >= size)
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", run_dir);
        if (mkdir(out, 0700) < 0 && errno != EEXIST)
                return vmsnap_diag(d, -errno, "%s: cannot create: %s", out, strerror(errno));
        _cleanup_close_ int fd = open(out, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 || fchown(fd, uid, uid) < 0 || fchmod(fd, 0700) < 0)
                return vmsnap_diag(d, -errno, "%s: cannot hand to uid %u: %s", out,
                                   (unsigned)uid, strerror(errno));
        return 0;
}
