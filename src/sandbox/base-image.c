/* Base images under the sandboxes' disks: pinning the guest image's rootfs.ext4 by content
 * hash (create), and resolving which pinned image a disk stands on (restore) from
 * rootfs.meta, confined to <root>/images/ (docs/sandbox.md "Base images are pinned"). */
#include "sandbox/internal.h"
#include "util/cleanup.h"
#include "util/fs.h"
#include "util/ids.h"

#include <vmsnap/disk.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BASE_HASH_HEX 16 /* rootfs-<16 hex digits>.ext4 */

/* XXH3-128 of a whole file (the base image: tens of MiB, read once per image). */
static int hash_file(int fd, struct vmsnap_hash *ret)
{
        struct vmsnap_hasher *hs = vmsnap_hasher_new();
        _cleanup_free_ uint8_t *buf = malloc((size_t)8 << 20);
        int r = hs && buf ? 0 : -ENOMEM;
        for (uint64_t off = 0; r == 0;) {
                ssize_t n = vmsnap_fs_pread_full(fd, buf, (size_t)8 << 20, off);
                if (n < 0)
                        r = (int)n;
                else if (n == 0)
                        break;
                else
                        vmsnap_hasher_update(hs, buf, (size_t)n);
                off += n > 0 ? (uint64_t)n : 0;
        }
        if (r == 0)
                vmsnap_hasher_final(hs, ret);
        vmsnap_hasher_free(hs);
        return r;
}

/* The base image a new disk stands on, pinned: a hard link (or copy) of the guest's
 * rootfs.ext4 under <root>/images/, named by its content hash and never replaced. Rebuilding
 * the guest image later cannot change a disk that existing overlays read through (the seed
 * rewrote origins under live copy-on-write disks: wrenn W23). */
int base_image_pin(struct vmsnap_host *h, char out[PATH_LEN], struct vmsnap_diag *d)
{
        char images[PATH_LEN], name[64], hex[33];
        struct vmsnap_hash hash;
        snprintf(images, sizeof(images), "%.4000s/images", h->root);
        if (mkdir(images, 0700) < 0 && errno != EEXIST)
                return vmsnap_diag(d, -errno, "%s: cannot create: %s", images, strerror(errno));
        _cleanup_close_ int gdir = vmsnap_fs_open_dir(h->guest_dir);
        _cleanup_close_ int idir = vmsnap_fs_open_dir(images);
        _cleanup_close_ int fd = gdir >= 0 ? openat(gdir, "rootfs.ext4", O_RDONLY | O_CLOEXEC)
                                           : -1;
        if (fd < 0 || idir < 0)
                return vmsnap_diag(d, -ENOENT, "%s/rootfs.ext4: no guest disk image; build it "
                                   "with guest/build.sh %s", h->guest_dir, h->guest_dir);
        int r = hash_file(fd, &hash);
        if (r < 0)
                return vmsnap_diag(d, r, "%s/rootfs.ext4: cannot read: %s", h->guest_dir,
                                   strerror(-r));
        vmsnap_hash_format(&hash, hex);
        snprintf(name, sizeof(name), "rootfs-%.16s.ext4", hex);
        snprintf(out, PATH_LEN, "%.4000s/%s", images, name);
        if (faccessat(idir, name, F_OK, 0) == 0)
                return 0;
        r = vmsnap_fs_link_or_copy(gdir, "rootfs.ext4", idir, name, d);
        return r < 0 ? r : vmsnap_fs_fsync_dir(idir);
}

/* True when name is a pinned base image's file name: rootfs-<16 lowercase hex>.ext4. */
static bool is_base_name(const char *name)
{
        if (strncmp(name, "rootfs-", 7) != 0 || strlen(name) != 7 + BASE_HASH_HEX + 5 ||
            strcmp(name + 7 + BASE_HASH_HEX, ".ext4") != 0)
                return false;
        for (int i = 0; i < BASE_HASH_HEX; i++)
                if (!strchr("0123456789abcdef", name[7 + i]))
                        return false;
        return true;
}

int base_image_of(const struct vmsnap_host *h, const char *disk_dir, char out[PATH_LEN],
                  struct vmsnap_diag *d)
{
        _cleanup_close_ int dfd = vmsnap_fs_open_dir(disk_dir);
        if (dfd < 0)
                return vmsnap_diag(d, dfd, "%s: cannot open: %s", disk_dir, strerror(-dfd));
        _cleanup_free_ uint8_t *text = NULL;
        size_t len;
        int r = vmsnap_fs_read_file(dfd, VMSNAP_ROOTFS_META, 64 << 10, &text, &len);
        if (r < 0)
                return vmsnap_diag(d, r, "%s/%s: cannot read (which base image the disk stands "
                                   "on): %s", disk_dir, VMSNAP_ROOTFS_META, strerror(-r));
        json_t *o = json_loadb((const char *)text, len, 0, NULL);
        const char *base = json_string_value(json_object_get(o, "base"));
        const char *name = base ? strrchr(base, '/') : NULL;
        name = name ? name + 1 : base;
        char images[PATH_LEN];
        snprintf(images, sizeof(images), "%.4000s/images", h->root);
        if (!name || !is_base_name(name)) {
                json_decref(o);
                return vmsnap_diag(d, -EBADMSG, "%s/%s: names no pinned base image "
                                   "(rootfs-<hash>.ext4 under %s)", disk_dir,
                                   VMSNAP_ROOTFS_META, images);
        }
        snprintf(out, PATH_LEN, "%.4000s/%s", images, name);
        json_decref(o);
        struct stat st;
        if (lstat(out, &st) < 0 || !S_ISREG(st.st_mode))
                return vmsnap_diag(d, -ENOENT, "%s: the disk's base image is missing or not a "
                                   "regular file (named by %s/%s)", out, disk_dir,
                                   VMSNAP_ROOTFS_META);
        return 0;
}
