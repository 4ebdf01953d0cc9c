/* libvmsnap rootfs copy-on-write: a qcow2 overlay per sandbox over a read-only base image
 * pinned under <root>/images/, moved into a pause snapshot and copied back out on resume;
 * and the checks that keep a disk from naming any file vmsnap did not choose (imports).
 * Design: docs/sandbox.md (Files, "Base images are pinned"); formats: docs/format.md. */
#ifndef VMSNAP_DISK_H
#define VMSNAP_DISK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <vmsnap/error.h>
#include <vmsnap/mem.h>

#define VMSNAP_ROOTFS_OVERLAY "rootfs.qcow2" /* QEMU, Cloud Hypervisor */
#define VMSNAP_ROOTFS_RAW     "rootfs.raw"   /* Firecracker: raw drives only */
#define VMSNAP_ROOTFS_META    "rootfs.meta"
#define VMSNAP_IMAGES_DIR     "images"       /* <root>/images: pinned base images */
#define VMSNAP_BASE_NAME_LEN  28             /* "rootfs-" + 16 hex digits + ".ext4" */
#define VMSNAP_BACKING_PREFIX "../../" VMSNAP_IMAGES_DIR "/"

/* The file name of a sandbox's disk in `format` ("qcow2" or "raw"). */
const char *vmsnap_disk_name(const char *format);

/* ---- base image names and the canonical backing reference ------------------------------ */

/* True when name is a pinned base image's file name: rootfs-<16 lowercase hex>.ext4. */
bool vmsnap_disk_base_name_valid(const char *name);

/* The pinned name of an image whose content hashes (XXH3-128) to h: rootfs-<first 16 hex
 * digits>.ext4. */
void vmsnap_disk_base_name(const struct vmsnap_hash *h, char out[VMSNAP_BASE_NAME_LEN + 1]);

/* The backing file name vmsnap writes into an overlay over base image `base_name`:
 * "../../images/<base_name>". vmsnap never opens it (it resolves the base by name under
 * <root>/images and hands QEMU that file); a tool that follows it from a snapshot or sandbox
 * directory reaches the same pinned file. Returns 0, or -EINVAL for an invalid name. */
int vmsnap_disk_backing_ref(const char *base_name, char *out, size_t size);

/* ---- rootfs.meta ------------------------------------------------------------------------ */

/* What rootfs.meta says: {"base": "rootfs-<hash>.ext4", "format": "qcow2"|"raw"}. */
struct vmsnap_disk_meta {
        char base[VMSNAP_BASE_NAME_LEN + 1];
        char format[8];
        bool legacy; /* "base" was an absolute ".../images/rootfs-<hash>.ext4" (older vmsnap) */
};

/* Parses rootfs.meta text strictly (name is for messages). Returns 0 or -EBADMSG with d. */
int vmsnap_disk_meta_parse(const char *text, size_t len, const char *name,
                           struct vmsnap_disk_meta *ret, struct vmsnap_diag *d);

/* Reads and parses dirfd/rootfs.meta (a regular file, never a symlink). Returns 0, -ENOENT
 * when there is none, or -errno/-EBADMSG with d. */
int vmsnap_disk_meta_read(int dirfd, const char *label, struct vmsnap_disk_meta *ret,
                          struct vmsnap_diag *d);

/* Writes rootfs.meta ({"base": NAME, "format": FORMAT}) into dir, atomically; base may be a
 * path, whose file name (a valid base name) is what is written. Returns 0 or -errno. */
int vmsnap_disk_write_meta(const char *dir, const char *base, const char *format,
                           struct vmsnap_diag *d);

/* ---- qcow2 headers ---------------------------------------------------------------------- */

/* What a checked qcow2 header holds (docs/format.md "Disk overlays"). */
struct vmsnap_qcow2_info {
        uint32_t version, cluster_bits, header_length;
        uint64_t size; /* virtual disk size */
        uint64_t incompatible, compatible, autoclear;
        bool has_backing;
        uint64_t backing_offset;
        uint32_t backing_len;
        char backing[1024];      /* the backing file name, "" when none */
        char backing_format[16]; /* "raw" whenever there is a backing file */
};

/* Parses the qcow2 header in buf (the file's first cluster, or the whole file when shorter)
 * and refuses anything that could name another file or that vmsnap does not write: external
 * data files, encryption, internal snapshots, unknown incompatible features or header
 * extensions, a backing file without an explicit raw format. Does not judge the backing
 * name. Returns 0 and *ret, or -EBADMSG with d naming `name` and the problem. */
int vmsnap_qcow2_parse(const uint8_t *buf, size_t len, const char *name,
                       struct vmsnap_qcow2_info *ret, struct vmsnap_diag *d);

/* ---- the disks of a snapshot directory ------------------------------------------------- */

#define VMSNAP_DISK_NORMALIZE 1u /* rewrite legacy (absolute) references in place */

#define VMSNAP_DISK_REWROTE_META    1u
#define VMSNAP_DISK_REWROTE_OVERLAY 2u

/* Checks the disk files of the snapshot directory dirfd (label names it in messages):
 * rootfs.meta names a valid base image; rootfs.qcow2 passes vmsnap_qcow2_parse and its
 * backing name is the canonical reference to that base; rootfs.raw is not an image format
 * that can name another file. With VMSNAP_DISK_NORMALIZE, the absolute references an older
 * vmsnap wrote (".../images/rootfs-<hash>.ext4") are rewritten to the canonical ones and
 * *ret_rewrote says which files changed. *ret_meta (may be NULL) gets rootfs.meta; *ret_has
 * tells whether there is one. Returns 0, or -EBADMSG/-errno with d; a refused directory is
 * left unchanged (a failed rewrite may leave it half rewritten: imports then abort). */
int vmsnap_disk_check_dir(int dirfd, const char *label, unsigned flags,
                          struct vmsnap_disk_meta *ret_meta, bool *ret_has, unsigned *ret_rewrote,
                          struct vmsnap_diag *d);

/* ---- pinned base images (<root>/images) ----------------------------------------------- */

/* Opens <root>/images (made with mode 0700 when create and missing; an existing one keeps
 * its mode). Returns the fd, or -ENOENT (not create) / -errno with d. */
int vmsnap_disk_images_open(const char *root, bool create, struct vmsnap_diag *d);

/* Pins srcdirfd/srcname (a regular file) into imagesfd under its content name: a hard link
 * (or a copy), mode 0600, never replacing anything. A file of that name already there must
 * have the same content byte for byte (XXH3 is no defence against a planted collision),
 * else -EEXIST. Writes the name into ret_name. Returns 0 or -errno with d. */
int vmsnap_disk_pin_base(int imagesfd, int srcdirfd, const char *srcname,
                         char ret_name[VMSNAP_BASE_NAME_LEN + 1], struct vmsnap_diag *d);

/* Shares the pinned image imagesfd/name read-only with the jails' group: group gid, mode
 * 0640 (for the jail layer; vmsnap itself keeps 0600). Returns 0 or -errno with d. */
int vmsnap_disk_image_share(int imagesfd, const char *name, gid_t gid, struct vmsnap_diag *d);

/* ---- making and copying disks ---------------------------------------------------------- */

/* Makes dst a private copy of base for a VMM without overlay support: a reflink where the
 * filesystem can (no data copied), else a sparse copy (holes stay holes). Atomic; 0600. */
int vmsnap_disk_clone(const char *base, const char *dst, struct vmsnap_diag *d);

/* Creates overlay (qcow2, written atomically, mode 0600) over the raw image `base`, with an
 * explicit raw backing format; qemu-img never opens the base. When base is a pinned base
 * image (its file name a valid base name) the header gets the canonical reference
 * (vmsnap_disk_backing_ref), as every sandbox disk must; any other path is written as given
 * (tests, tools: such an overlay is refused by imports). Returns 0 or -errno with d
 * (qemu-img's message included). */
int vmsnap_disk_overlay_create(const char *base, const char *overlay, struct vmsnap_diag *d);

/* Copies src to dst (reflink when the filesystem can, else an in-kernel copy), atomically
 * and durably; 0600. Returns 0 or -errno with d. */
int vmsnap_disk_copy(const char *src, const char *dst, struct vmsnap_diag *d);

/* The same copy from a regular file already opened (and checked) as `in`, named `what` in
 * messages: the caller's inode, whatever its name points at now. */
int vmsnap_disk_copy_fd(int in, const char *what, const char *dst, struct vmsnap_diag *d);

#endif
