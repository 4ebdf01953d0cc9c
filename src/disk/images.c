/* Pinned base images under <root>/images: named by content hash, never replaced, private
 * (0600 in a 0700 directory) until the jail layer shares one with its group (0640). */
#include <vmsnap/disk.h>

#include "util/cleanup.h"
#include "util/fs.h"
#include "util/ids.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK ((size_t)4 << 20)

int vmsnap_disk_images_open(const char *root, bool create, struct vmsnap_diag *d)
{
        _cleanup_close_ int rootfd = vmsnap_fs_open_dir(root);
        if (rootfd < 0)
                return vmsnap_diag(d, rootfd, "%s: cannot open: %s", root, strerror(-rootfd));
        /* Made 0700; an existing one keeps its mode (the jail layer may widen it for a
         * group). */
        int r = create ? vmsnap_fs_mkdir_private(rootfd, VMSNAP_IMAGES_DIR) : 0;
        if (r < 0 && r != -EEXIST)
                return vmsnap_diag(d, r, "%s/" VMSNAP_IMAGES_DIR ": %s", root, strerror(-r));
        int fd = openat(rootfd, VMSNAP_IMAGES_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT && !create)
                return -ENOENT;
        return fd < 0 ? vmsnap_diag(d, -errno, "%s/" VMSNAP_IMAGES_DIR ": %s", root,
                                    strerror(errno))
                      : fd;
}

/* XXH3-128 of a whole file. */
static int hash_file(int fd, struct vmsnap_hash *ret)
{
        struct vmsnap_hasher *h = vmsnap_hasher_new();
        _cleanup_free_ uint8_t *buf = malloc(CHUNK);
        int r = h && buf ? 0 : -ENOMEM;
        for (uint64_t off = 0; r == 0;) {
                ssize_t n = vmsnap_fs_pread_full(fd, buf, CHUNK, off);
                if (n <= 0) {
                        r = (int)n;
                        break;
                }
                vmsnap_hasher_update(h, buf, (size_t)n);
                off += (uint64_t)n;
        }
        if (r == 0)
                vmsnap_hasher_final(h, ret);
        vmsnap_hasher_free(h);
        return r;
}

/* 1 when both files hold the same bytes, 0 when not, or -errno. */
static int same_content(int a, int b)
{
        struct stat sa, sb;
        if (fstat(a, &sa) < 0 || fstat(b, &sb) < 0)
                return -errno;
        if (sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino)
                return 1;
        if (sa.st_size != sb.st_size)
                return 0;
        _cleanup_free_ uint8_t *x = malloc(CHUNK), *y = malloc(CHUNK);
        if (!x || !y)
                return -ENOMEM;
        for (uint64_t off = 0; off < (uint64_t)sa.st_size;) {
                ssize_t n = vmsnap_fs_pread_full(a, x, CHUNK, off);
                ssize_t m = vmsnap_fs_pread_full(b, y, CHUNK, off);
                if (n < 0 || m < 0)
                        return n < 0 ? (int)n : (int)m;
                if (n != m || n == 0 || memcmp(x, y, (size_t)n) != 0)
                        return 0;
                off += (uint64_t)n;
        }
        return 1;
}

/* An image of that name is already pinned: fine only when it is the same content. */
static int check_existing(int imagesfd, const char *name, int src, struct vmsnap_diag *d)
{
        _cleanup_close_ int fd = vmsnap_fs_open_regular(imagesfd, name, NULL, false);
        if (fd < 0)
                return vmsnap_diag(d, fd, "%s/%s: %s", VMSNAP_IMAGES_DIR, name,
                                   vmsnap_fs_open_error(fd));
        int r = same_content(fd, src);
        if (r < 0)
                return vmsnap_diag(d, r, "%s/%s: cannot compare: %s", VMSNAP_IMAGES_DIR, name,
                                   strerror(-r));
        return r ? 0 : vmsnap_diag(d, -EEXIST, "%s/%s: a different image already has this "
                                   "name (a hash collision, or a planted file); refusing to "
                                   "use it", VMSNAP_IMAGES_DIR, name);
}

int vmsnap_disk_pin_base(int imagesfd, int srcdirfd, const char *srcname,
                         char ret_name[VMSNAP_BASE_NAME_LEN + 1], struct vmsnap_diag *d)
{
        _cleanup_close_ int src = vmsnap_fs_open_regular(srcdirfd, srcname, NULL, false);
        if (src < 0)
                return vmsnap_diag(d, src, "%s: cannot open: %s", srcname,
                                   vmsnap_fs_open_error(src));
        struct vmsnap_hash h;
        char name[VMSNAP_BASE_NAME_LEN + 1];
        int r = hash_file(src, &h);
        if (r < 0)
                return vmsnap_diag(d, r, "%s: cannot read: %s", srcname, strerror(-r));
        vmsnap_disk_base_name(&h, name);
        if (faccessat(imagesfd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
                r = check_existing(imagesfd, name, src, d);
        else if ((r = vmsnap_fs_link_or_copy(srcdirfd, srcname, imagesfd, name, d)) == 0) {
                _cleanup_close_ int fd = vmsnap_fs_open_regular(imagesfd, name, NULL, false);
                if (fd < 0 || fchmod(fd, VMSNAP_FILE_MODE) < 0 || vmsnap_fs_fsync_dir(imagesfd) < 0)
                        r = vmsnap_diag(d, -EIO, "%s/%s: cannot make it private and durable",
                                        VMSNAP_IMAGES_DIR, name);
        }
        if (r == 0)
                memcpy(ret_name, name, sizeof(name));
        return r;
}

int vmsnap_disk_image_share(int imagesfd, const char *name, gid_t gid, struct vmsnap_diag *d)
{
        if (!vmsnap_disk_base_name_valid(name))
                return vmsnap_diag(d, -EINVAL, "'%s' is not a pinned base image name", name);
        _cleanup_close_ int fd = vmsnap_fs_open_regular(imagesfd, name, NULL, false);
        if (fd < 0)
                return vmsnap_diag(d, fd, "%s/%s: %s", VMSNAP_IMAGES_DIR, name,
                                   vmsnap_fs_open_error(fd));
        if (fchown(fd, (uid_t)-1, gid) < 0 || fchmod(fd, 0640) < 0)
                return vmsnap_diag(d, -errno, "%s/%s: cannot share with group %u: %s",
                                   VMSNAP_IMAGES_DIR, name, (unsigned)gid, strerror(errno));
        return 0;
}
