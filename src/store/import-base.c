/* The base image an archive carries (images/rootfs-<hash>.ext4): accepted only when it is
 * the one the snapshot's rootfs.meta names, staged in <root>/images under a temporary name,
 * checked against the hash in its name, and pinned (never replacing a file) just before the
 * snapshot commits. One already pinned here is used as it is: its bytes in the archive are
 * skipped. An old archive without a base imports when the base is pinned here. */
#include "store/import.h"
#include "util/cleanup.h"
#include "util/ids.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int open_images(struct import *im, struct vmsnap_diag *d)
{
        if (im->imagesfd >= 0)
                return 0;
        int fd = vmsnap_disk_images_open(im->s->root, true, d);
        if (fd < 0)
                return fd;
        im->imagesfd = fd;
        return 0;
}

/* The base rootfs.meta (already received) names; "" when there is no rootfs.meta. */
static int needed_base(struct import *im, char out[VMSNAP_BASE_NAME_LEN + 1],
                       struct vmsnap_diag *d)
{
        const struct vmsnap_snapshot_file *f = store_envelope_find(&im->env, VMSNAP_ROOTFS_META);
        out[0] = '\0';
        if (!f || !im->seen[f - im->env.files])
                return 0;
        struct vmsnap_disk_meta m;
        int r = vmsnap_disk_meta_read(vmsnap_store_txn_dirfd(im->t), "", &m, d);
        if (r < 0)
                return r == -ENOENT ? 0 : vmsnap_diag_prefix(d, "refusing the import");
        memcpy(out, m.base, sizeof(m.base));
        return 0;
}

int import_base_begin(struct import *im, const char *name, uint64_t size, bool *ret_skip,
                      struct vmsnap_diag *d)
{
        char need[VMSNAP_BASE_NAME_LEN + 1];
        if (!vmsnap_disk_base_name_valid(name))
                return REFUSE(d, "'" VMSNAP_IMAGES_DIR "/%.200s' is not a base image name "
                              "(rootfs-<16 hex digits>.ext4)", name);
        if (im->base.name[0])
                return REFUSE(d, VMSNAP_IMAGES_DIR "/%s: a second base image (an archive carries "
                              "at most one per disk, once)", name);
        int r = needed_base(im, need, d);
        if (r < 0)
                return r;
        if (strcmp(need, name) != 0)
                return REFUSE(d, VMSNAP_IMAGES_DIR "/%s is not the base image the snapshot's "
                              "disk stands on (%s " VMSNAP_ROOTFS_META " names %s)", name,
                              need[0] ? "its" : "it has no", need[0] ? need : "none");
        if ((r = import_declare(im, name, size, d)) < 0 || (r = open_images(im, d)) < 0)
                return r;
        memcpy(im->base.name, name, sizeof(im->base.name));
        im->base.present = faccessat(im->imagesfd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
        *ret_skip = im->base.present;
        if (im->base.present)
                return 0;
        return vmsnap_staged_open(&im->base.s, im->imagesfd, name, d);
}

int import_base_fd(const struct import *im)
{
        return im->base.s.fd;
}

int import_base_end(struct import *im, const struct vmsnap_hash *h, struct vmsnap_diag *d)
{
        char got[VMSNAP_BASE_NAME_LEN + 1];
        vmsnap_disk_base_name(h, got);
        if (strcmp(got, im->base.name) != 0)
                return REFUSE(d, VMSNAP_IMAGES_DIR "/%s: its content hashes to %s: the archive "
                              "is corrupted", im->base.name, got);
        im->base.staged = true;
        return 0;
}

int import_base_commit(struct import *im, const struct vmsnap_disk_meta *meta,
                       struct vmsnap_diag *d)
{
        if (im->base.name[0] && strcmp(im->base.name, meta->base) != 0)
                return REFUSE(d, VMSNAP_IMAGES_DIR "/%s is not the base image of the disk",
                              im->base.name); /* a directory import read it by meta */
        if (im->base.staged) {
                int r = vmsnap_staged_commit_new(&im->base.s, d);
                if (r == -EEXIST) /* pinned meanwhile by someone else: that one stays */
                        vmsnap_staged_abort(&im->base.s);
                else if (r < 0)
                        return r;
                if ((r = vmsnap_fs_fsync_dir(im->imagesfd)) < 0)
                        return vmsnap_diag(d, r, VMSNAP_IMAGES_DIR ": fsync failed");
                im->base.staged = false;
                import_note(im, "base image %s pinned in %s/" VMSNAP_IMAGES_DIR, meta->base,
                            im->s->root);
                return 0;
        }
        if (im->base.present)
                return 0;
        int r = open_images(im, d);
        if (r < 0)
                return r;
        if (faccessat(im->imagesfd, meta->base, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
                return 0;
        return REFUSE(d, "the snapshot's disk stands on base image %s (hash %.16s), which is "
                      "neither in the archive nor in %s/" VMSNAP_IMAGES_DIR "; export it "
                      "without --no-base, or pin that image here first",
                      meta->base, meta->base + strlen("rootfs-"), im->s->root);
}

void import_base_abort(struct import *im)
{
        if (im->base.s.fd >= 0 || im->base.s.tmp[0])
                vmsnap_staged_abort(&im->base.s);
        im->base.staged = false;
}
