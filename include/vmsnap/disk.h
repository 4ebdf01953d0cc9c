/* libvmsnap rootfs copy-on-write: a qcow2 overlay per sandbox over the read-only base image,
 * moved into a pause snapshot and copied back out on resume. */
#ifndef VMSNAP_DISK_H
#define VMSNAP_DISK_H

#include <vmsnap/error.h>

#define VMSNAP_ROOTFS_OVERLAY "rootfs.qcow2" /* QEMU, Cloud Hypervisor */
#define VMSNAP_ROOTFS_RAW     "rootfs.raw"   /* Firecracker: raw drives only */
#define VMSNAP_ROOTFS_META    "rootfs.meta"

/* The file name of a sandbox's disk in `format` ("qcow2" or "raw"). */
const char *vmsnap_disk_name(const char *format);

/* Makes dst a private copy of base for a VMM without overlay support: a reflink where the
 * filesystem can (no data copied), else a sparse copy (holes stay holes). Atomic. */
int vmsnap_disk_clone(const char *base, const char *dst, struct vmsnap_diag *d);

/* Creates overlay (qcow2, written atomically) whose backing file is base (raw). Returns 0 or
 * -errno with d (qemu-img's message included). */
int vmsnap_disk_overlay_create(const char *base, const char *overlay, struct vmsnap_diag *d);

/* Copies src to dst (reflink when the filesystem can, else an in-kernel copy), atomically
 * and durably. Returns 0 or -errno with d. */
int vmsnap_disk_copy(const char *src, const char *dst, struct vmsnap_diag *d);

/* Writes rootfs.meta ({"base": BASE, "format": FORMAT}) into dir, atomically. */
int vmsnap_disk_write_meta(const char *dir, const char *base, const char *format,
                           struct vmsnap_diag *d);

#endif
