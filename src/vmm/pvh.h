/* The PVH entry point of an uncompressed x86-64 Linux kernel (vmlinux, an ELF file): the
 * 32-bit physical address in its Xen ELF note XEN_ELFNOTE_PHYS32_ENTRY (type 18), through
 * which QEMU can start the kernel directly, without the bzImage decompressor. The file is
 * untrusted input: every offset and size is checked before it is used (docs/guest.md §3.7;
 * fuzzed by tests/fuzz/fuzz-pvh.c). */
#ifndef VMSNAP_VMM_PVH_H
#define VMSNAP_VMM_PVH_H

#include <stddef.h>
#include <stdint.h>

#include <vmsnap/error.h>

#define PVH_NOTE_TYPE       18u       /* XEN_ELFNOTE_PHYS32_ENTRY */
#define PVH_MAX_PHDRS       64u       /* more program headers than a kernel has: refused */
#define PVH_MAX_NOTE_BYTES  (1u << 16) /* a larger PT_NOTE segment: refused */

/* Reads len bytes at off of the ELF into buf; returns 0, or -errno (short: -EBADMSG). */
typedef int (*pvh_read_fn)(void *ctx, uint64_t off, void *buf, size_t len);

/* Finds the PVH entry through read. Returns 0 and *entry; -ENOEXEC when this is not a
 * little-endian ELF64 x86-64 executable; -EBADMSG when a header, offset or note is out of
 * bounds or malformed; -ENOENT when the ELF has no PVH note; or read's -errno. */
int vmm_pvh_entry(pvh_read_fn read, void *ctx, uint32_t *entry);

/* vmm_pvh_entry over len bytes in memory. */
int vmm_pvh_entry_buf(const void *buf, size_t len, uint32_t *entry);

/* vmm_pvh_entry over the file at path (opened O_NOFOLLOW; only the headers and note segments
 * are read). The error names the file and what is wrong with it. */
int vmm_pvh_entry_file(const char *path, uint32_t *entry, struct vmsnap_diag *d);

#endif
