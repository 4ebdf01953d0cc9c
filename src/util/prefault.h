/* Large buffers populated in one call: on a virtual machine a page fault per 4 KiB of a
 * fresh multi-megabyte array (a memory header, an extent list, a hash table) costs more
 * than the work done in it. */
#ifndef VMSNAP_UTIL_PREFAULT_H
#define VMSNAP_UTIL_PREFAULT_H

#include <stddef.h>

/* Below this many bytes a buffer is left to fault page by page. */
#define VMSNAP_PREFAULT_MIN ((size_t)256 << 10)

/* Makes the whole pages of [p, p + len) present and writable in one madvise
 * (MADV_POPULATE_WRITE, Linux 5.14); contents unchanged. Best effort: does nothing for
 * short buffers or where the kernel lacks it. */
void vmsnap_prefault(void *p, size_t len);

/* malloc(len), prefaulted when large; NULL when out of memory. Freed with free(). */
void *vmsnap_malloc_big(size_t len);

/* calloc(1, len), prefaulted when large; NULL when out of memory. Freed with free(). */
void *vmsnap_calloc_big(size_t len);

#endif
