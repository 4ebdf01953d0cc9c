/* Large buffers populated in one call (prefault.h). */
#include "util/prefault.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

void vmsnap_prefault(void *p, size_t len)
{
        if (!p || len < VMSNAP_PREFAULT_MIN)
                return;
        uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
        uintptr_t lo = ((uintptr_t)p + page - 1) & ~(page - 1);
        uintptr_t hi = ((uintptr_t)p + len) & ~(page - 1);
        if (hi > lo)
                (void)madvise((void *)lo, hi - lo, MADV_POPULATE_WRITE);
}

void *vmsnap_malloc_big(size_t len)
{
        void *p = malloc(len ? len : 1);
        vmsnap_prefault(p, len);
        return p;
}

void *vmsnap_calloc_big(size_t len)
{
        void *p = calloc(1, len ? len : 1);
        vmsnap_prefault(p, len);
        return p;
}
