/* Fuzz target: the PVH entry-note reader (src/vmm/pvh.c) on any bytes taken for a vmlinux
 * ELF (an untrusted kernel file). It must return one of its documented results, set the
 * entry only on success, and never read outside the input (ASan). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "vmm/pvh.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        uint32_t entry = 0;
        int r = vmm_pvh_entry_buf(data, size, &entry);
        if (r != 0 && r != -ENOEXEC && r != -EBADMSG && r != -ENOENT && r != -ENOMEM)
                abort();
        if ((r == 0) != (entry != 0))
                abort(); /* an entry only on success, and never 0 then */
        return 0;
}
