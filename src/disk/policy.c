/* Which files a disk may name: base image names, the canonical backing reference,
 * rootfs.meta, and the check of a snapshot directory's disks (every import runs it). A
 * disk names exactly one other file, the pinned base image rootfs.meta names, and only in
 * the one form vmsnap writes; vmsnap resolves it by name under <root>/images and never
 * opens a path a disk holds. Rules: docs/format.md "Disk overlays". */
#include <vmsnap/disk.h>

#include "util/cleanup.h"
#include "util/fs.h"
#include "util/ids.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define META_MAX     (64u << 10)
#define HEADER_BYTES ((size_t)2 << 20) /* the largest qcow2 cluster */
#define LEGACY_DIR   "/" VMSNAP_IMAGES_DIR "/"
#define BACKING_REWRITE_MAX 1024u

/* Messages name a file as "<label>/<file>", or "<file>" alone when the label is empty. */
static const char *sep(const char *label)
{
        return label[0] ? "/" : "";
}

bool vmsnap_disk_base_name_valid(const char *name)
{
        if (!name || strlen(name) != VMSNAP_BASE_NAME_LEN || strncmp(name, "rootfs-", 7) != 0 ||
            strcmp(name + 23, ".ext4") != 0)
                return false;
        for (int i = 7; i < 23; i++)
                if (!strchr("0123456789abcdef", name[i]) || !name[i])
                        return false;
        return true;
}

void vmsnap_disk_base_name(const struct vmsnap_hash *h, char out[VMSNAP_BASE_NAME_LEN + 1])
{
        char hex[33];
        vmsnap_hash_format(h, hex);
        snprintf(out, VMSNAP_BASE_NAME_LEN + 1, "rootfs-%.16s.ext4", hex);
}

int vmsnap_disk_backing_ref(const char *base_name, char *out, size_t size)
{
        if (!vmsnap_disk_base_name_valid(base_name))
                return -EINVAL;
        int n = snprintf(out, size, VMSNAP_BACKING_PREFIX "%s", base_name);
        return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* A reference an older vmsnap wrote: an absolute path ending in /images/<valid base name>.
 * Returns the base name inside it, or NULL. */
static const char *legacy_base(const char *ref)
{
        size_t n = strlen(ref), tail = strlen(LEGACY_DIR) + VMSNAP_BASE_NAME_LEN;
        if (ref[0] != '/' || n < tail || strncmp(ref + n - tail, LEGACY_DIR, strlen(LEGACY_DIR)))
                return NULL;
        const char *name = ref + n - VMSNAP_BASE_NAME_LEN;
        return vmsnap_disk_base_name_valid(name) ? name : NULL;
}

/* ---- rootfs.meta ------------------------------------------------------------------------ */

int vmsnap_disk_meta_parse(const char *text, size_t len, const char *name,
                           struct vmsnap_disk_meta *ret, struct vmsnap_diag *d)
{
        json_error_t err;
        json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
        const char *base = json_string_value(json_object_get(o, "base"));
        const char *format = json_string_value(json_object_get(o, "format"));
        struct vmsnap_disk_meta m = {0};
        int r = 0;
        if (!json_is_object(o))
                r = vmsnap_diag(d, -EBADMSG, "%s: not a JSON object", name);
        else if (!format || (strcmp(format, "qcow2") != 0 && strcmp(format, "raw") != 0))
                r = vmsnap_diag(d, -EBADMSG, "%s: \"format\" must be \"qcow2\" or \"raw\"", name);
        else if (!base || strlen(base) != json_string_length(json_object_get(o, "base")) ||
                 (!vmsnap_disk_base_name_valid(base) && !legacy_base(base)))
                r = vmsnap_diag(d, -EBADMSG, "%s: \"base\" must name a pinned base image "
                                "(rootfs-<16 hex digits>.ext4)", name);
        if (r == 0) {
                m.legacy = !vmsnap_disk_base_name_valid(base);
                snprintf(m.base, sizeof(m.base), "%s", m.legacy ? legacy_base(base) : base);
                snprintf(m.format, sizeof(m.format), "%s", format);
                *ret = m;
        }
        json_decref(o);
        return r;
}

int vmsnap_disk_meta_read(int dirfd, const char *label, struct vmsnap_disk_meta *ret,
                          struct vmsnap_diag *d)
{
        _cleanup_free_ uint8_t *text = NULL;
        size_t len;
        char name[512];
        snprintf(name, sizeof(name), "%.400s%s" VMSNAP_ROOTFS_META, label, sep(label));
        int r = vmsnap_fs_read_file(dirfd, VMSNAP_ROOTFS_META, META_MAX, &text, &len);
        if (r == -ENOENT)
                return -ENOENT;
        if (r < 0)
                return vmsnap_diag(d, r == -EFBIG || r == -ELOOP || r == -EINVAL ? -EBADMSG : r,
                                   "%s: cannot read: %s", name,
                                   r == -EFBIG ? "too large" : vmsnap_fs_open_error(r));
        return vmsnap_disk_meta_parse((const char *)text, len, name, ret, d);
}

static int meta_text(const char *base_name, const char *format, char **ret)
{
        json_t *o = json_pack("{s:s, s:s}", "base", base_name, "format", format);
        *ret = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        return *ret ? 0 : -ENOMEM;
}

int vmsnap_disk_write_meta(const char *dir, const char *base, const char *format,
                           struct vmsnap_diag *d)
{
        const char *slash = base ? strrchr(base, '/') : NULL;
        const char *name = slash ? slash + 1 : base;
        if (!vmsnap_disk_base_name_valid(name) || !format ||
            (strcmp(format, "qcow2") != 0 && strcmp(format, "raw") != 0))
                return vmsnap_diag(d, -EINVAL, "%s: '%s' (%s) is not a pinned base image",
                                   dir, base ? base : "", format ? format : "no format");
        _cleanup_close_ int fd = vmsnap_fs_open_dir(dir);
        if (fd < 0)
                return vmsnap_diag(d, fd, "%s: cannot open: %s", dir, strerror(-fd));
        _cleanup_free_ char *text = NULL;
        if (meta_text(name, format, &text) < 0)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        return vmsnap_fs_atomic_write(fd, VMSNAP_ROOTFS_META, text, strlen(text), d);
}

/* ---- checking a directory's disks ------------------------------------------------------ */

/* Opens dirfd/name as a snapshot file; -ENOENT quietly when it is not there. */
static int open_disk(int dirfd, const char *label, const char *name, struct stat *st,
                     struct vmsnap_diag *d)
{
        int fd = vmsnap_fs_open_regular(dirfd, name, st, false);
        if (fd == -ENOENT || fd >= 0)
                return fd;
        return vmsnap_diag(d, fd == -ELOOP || fd == -EINVAL ? -EBADMSG : fd, "%s%s%s: %s", label,
                           sep(label), name, vmsnap_fs_open_error(fd));
}

/* What an overlay check found: the header, and whether its reference is a legacy one. */
struct overlay_state {
        struct vmsnap_qcow2_info q;
        bool legacy;
};

static int check_overlay(int fd, uint64_t size, const char *label, const bool has_meta,
                         const struct vmsnap_disk_meta *m, struct overlay_state *o,
                         struct vmsnap_diag *d)
{
        char name[512], want[64];
        snprintf(name, sizeof(name), "%.400s%s" VMSNAP_ROOTFS_OVERLAY, label, sep(label));
        size_t n = (size_t)MIN(size, (uint64_t)HEADER_BYTES);
        _cleanup_free_ uint8_t *buf = malloc(n ? n : 1);
        if (!buf)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        ssize_t got = vmsnap_fs_pread_full(fd, buf, n, 0);
        if (got < 0)
                return vmsnap_diag(d, (int)got, "%s: cannot read: %s", name, strerror((int)-got));
        int r = vmsnap_qcow2_parse(buf, (size_t)got, name, &o->q, d);
        if (r < 0)
                return r;
        if (!has_meta)
                return vmsnap_diag(d, -EBADMSG, "%s: no " VMSNAP_ROOTFS_META " says which base "
                                   "image it stands on", name);
        if (!o->q.has_backing)
                return vmsnap_diag(d, -EBADMSG, "%s: has no backing file (vmsnap overlays "
                                   "stand on the base image " VMSNAP_ROOTFS_META " names)",
                                   name);
        vmsnap_disk_backing_ref(m->base, want, sizeof(want));
        if (strcmp(o->q.backing, want) == 0)
                return 0;
        const char *old = legacy_base(o->q.backing);
        if (old && strcmp(old, m->base) == 0) {
                o->legacy = true;
                return 0;
        }
        return vmsnap_diag(d, -EBADMSG, "%s: names backing file '%.200s'; a vmsnap overlay "
                           "names only '%s' (the base image " VMSNAP_ROOTFS_META " names)",
                           name, o->q.backing, want);
}

/* Image formats that can name other files (a backing file, extents, a parent), which a VMM
 * that probes formats would follow: a "raw" disk must not start like one of them. */
static const struct {
        const char *magic;
        size_t len;
        const char *what;
} image_magics[] = {
        {"QFI\xfb", 4, "a qcow/qcow2 image"},
        {"QED\0", 4, "a QED image"},
        {"KDMV", 4, "a VMDK image"},
        {"# Disk DescriptorFile", 21, "a VMDK descriptor"},
        {"vhdxfile", 8, "a VHDX image"},
        {"conectix", 8, "a VHD image"},
};

static int check_raw(int fd, const char *label, struct vmsnap_diag *d)
{
        uint8_t head[64] = {0};
        ssize_t got = vmsnap_fs_pread_full(fd, head, sizeof(head), 0);
        if (got < 0)
                return vmsnap_diag(d, (int)got, "%s%s" VMSNAP_ROOTFS_RAW ": cannot read: %s",
                                   label, sep(label), strerror((int)-got));
        for (size_t i = 0; i < ARRAY_SIZE(image_magics); i++)
                if ((size_t)got >= image_magics[i].len &&
                    memcmp(head, image_magics[i].magic, image_magics[i].len) == 0)
                        return vmsnap_diag(d, -EBADMSG, "%s%s" VMSNAP_ROOTFS_RAW ": a raw disk "
                                           "that starts like %s (which can name a backing "
                                           "file) is refused",
                                           label, sep(label), image_magics[i].what);
        return 0;
}

/* Rewrites a legacy backing name in place with the canonical one: the name sits in the
 * header cluster after the header extensions, with nothing behind it. */
static int rewrite_backing(int fd, const char *label, const struct overlay_state *o,
                           const char *base, struct vmsnap_diag *d)
{
        char want[64];
        vmsnap_disk_backing_ref(base, want, sizeof(want));
        uint32_t n = (uint32_t)strlen(want), old = o->q.backing_len;
        uint64_t cluster = 1ull << o->q.cluster_bits;
        if (o->q.backing_offset + MAX(n, old) > cluster)
                return vmsnap_diag(d, -EBADMSG, "%s%s" VMSNAP_ROOTFS_OVERLAY ": no room for the "
                                   "canonical backing name", label, sep(label));
        uint8_t name[BACKING_REWRITE_MAX] = {0}, len[4] = {n >> 24, (n >> 16) & 0xff,
                                                           (n >> 8) & 0xff, n & 0xff};
        memcpy(name, want, n);
        int r = vmsnap_fs_pwrite_full(fd, name, MAX(n, old), o->q.backing_offset);
        if (r == 0)
                r = vmsnap_fs_pwrite_full(fd, len, 4, 16);
        if (r == 0 && fsync(fd) < 0)
                r = -errno;
        return r < 0 ? vmsnap_diag(d, r, "%s%s" VMSNAP_ROOTFS_OVERLAY ": rewrite failed: %s",
                                   label, sep(label), strerror(-r))
                     : 0;
}

static int normalize(int dirfd, int overlay_fd, const char *label, const struct overlay_state *o,
                     const struct vmsnap_disk_meta *m, unsigned *rewrote, struct vmsnap_diag *d)
{
        if (o && o->legacy) {
                /* the same inode, opened for writing now that it passed every check */
                _cleanup_close_ int fd = openat(dirfd, VMSNAP_ROOTFS_OVERLAY,
                                                O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
                if (fd < 0 || !vmsnap_fs_same_file(fd, overlay_fd))
                        return vmsnap_diag(d, -EBUSY, "%s%s" VMSNAP_ROOTFS_OVERLAY ": changed "
                                           "while being checked", label, sep(label));
                int r = rewrite_backing(fd, label, o, m->base, d);
                if (r < 0)
                        return r;
                *rewrote |= VMSNAP_DISK_REWROTE_OVERLAY;
        }
        if (!m->legacy)
                return 0;
        _cleanup_free_ char *text = NULL;
        if (meta_text(m->base, m->format, &text) < 0)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        int r = vmsnap_fs_atomic_write(dirfd, VMSNAP_ROOTFS_META, text, strlen(text), d);
        if (r == 0)
                *rewrote |= VMSNAP_DISK_REWROTE_META;
        return r;
}

int vmsnap_disk_check_dir(int dirfd, const char *label, unsigned flags,
                          struct vmsnap_disk_meta *ret_meta, bool *ret_has, unsigned *ret_rewrote,
                          struct vmsnap_diag *d)
{
        struct vmsnap_disk_meta m = {0};
        int r = vmsnap_disk_meta_read(dirfd, label, &m, d);
        bool has_meta = r == 0;
        if (r < 0 && r != -ENOENT)
                return r;
        struct stat st;
        struct overlay_state o = {0};
        _cleanup_close_ int qfd = open_disk(dirfd, label, VMSNAP_ROOTFS_OVERLAY, &st, d);
        if (qfd < 0 && qfd != -ENOENT)
                return qfd;
        if (qfd >= 0 && (r = check_overlay(qfd, (uint64_t)st.st_size, label, has_meta, &m, &o,
                                           d)) < 0)
                return r;
        _cleanup_close_ int rfd = open_disk(dirfd, label, VMSNAP_ROOTFS_RAW, &st, d);
        if (rfd < 0 && rfd != -ENOENT)
                return rfd;
        if (rfd >= 0 && (r = check_raw(rfd, label, d)) < 0)
                return r;
        if ((o.legacy || m.legacy) && !(flags & VMSNAP_DISK_NORMALIZE))
                return vmsnap_diag(d, -EBADMSG, "%s%sthe disk names its base image by an "
                                   "absolute path (written by an older vmsnap)", label,
                                   label[0] ? ": " : "");
        unsigned rewrote = 0;
        if (has_meta && (r = normalize(dirfd, qfd, label, qfd >= 0 ? &o : NULL, &m, &rewrote,
                                       d)) < 0)
                return r;
        if (ret_meta)
                *ret_meta = m;
        if (ret_has)
                *ret_has = has_meta;
        if (ret_rewrote)
                *ret_rewrote = rewrote;
        return 0;
}
