/* The compiled-in VMM drivers. */
#include <vmsnap/vmm.h>

#include <string.h>

extern const struct vmsnap_vmm_driver vmsnap_vmm_qemu;
extern const struct vmsnap_vmm_driver vmsnap_vmm_firecracker;
extern const struct vmsnap_vmm_driver vmsnap_vmm_cloud_hypervisor;

const struct vmsnap_vmm_driver *const vmsnap_vmm_drivers[] = {
        &vmsnap_vmm_qemu,
        &vmsnap_vmm_firecracker,
        &vmsnap_vmm_cloud_hypervisor,
        NULL,
};

const struct vmsnap_vmm_driver *vmsnap_vmm_find(const char *name)
{
        for (size_t i = 0; name && vmsnap_vmm_drivers[i]; i++)
                if (strcmp(vmsnap_vmm_drivers[i]->name, name) == 0)
                        return vmsnap_vmm_drivers[i];
        return NULL;
}
