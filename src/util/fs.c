/* File helpers (see fs.h). Every persistent write in vmsnap goes through these. */
#include "util/fs.h"
#include "util/cleanup.h"
#include "util/sys.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

ssize_t vmsnap_fs_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
        size_t done = 0;
        while (done < len) {
                ssize_t n = pread(fd, (uint8_t *)buf + done, len - done, (off_t)(off + done));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break;
                done += (size_t)n;
        }
        return (ssize_t)done;
}

int vmsnap_fs_pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
        size_t done = 0;
        while (done < len) {
                ssize_t n =
                        pwrite(fd, (const uint8_t *)buf + done, len - done, (off_t)(off + done));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return -EIO;
                done += (size_t)n;
        }
        return 0;
}

int vmsnap_fs_write_full(int fd, const void *buf, size_t len)
{
        size_t done = 0;
        while (done < len) {
                ssize_t n = write(fd, (const uint8_t *)buf + done, len - done);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return -EIO;
                done += (size_t)n;
        }
        return 0;
}

int vmsnap_fs_read_file(int dirfd, const char *name, size_t max, uint8_t **ret_buf,
                        size_t *ret_len)
{
        _cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        struct stat st;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EINVAL;
        if ((uint64_t)st.st_size > max)
                return -EFBIG;
        _cleanup_free_ uint8_t *buf = malloc((size_t)st.st_size + 1);
        if (!buf)
                return -ENOMEM;
        ssize_t n = vmsnap_fs_pread_full(fd, buf, (size_t)st.st_size, 0);
        if (n < 0)
                return (int)n;
        buf[n] = 0; /* convenient for text files */
        *ret_len = (size_t)n;
        *ret_buf = TAKE_PTR(buf);
        return 0;
}

int vmsnap_fs_fsync_dir(int dirfd)
{
        return vmsnap_sys.fsync(dirfd) < 0 ? -errno : 0;
}

int vmsnap_staged_open(struct vmsnap_staged *s, int dirfd, const char *name,
                       struct vmsnap_diag *d)
{
        static unsigned counter;
        s->dirfd = dirfd;
        s->fd = -1;
        snprintf(s->name, sizeof(s->name), "%s", name);
        /* pid + counter makes the name unique per writer; O_EXCL guards the rest. */
        snprintf(s->tmp, sizeof(s->tmp), ".%s.tmp.%d.%u", name, (int)getpid(),
                 __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
        s->fd = openat(dirfd, s->tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (s->fd < 0)
                return vmsnap_diag(d, -errno, "%s: cannot create temporary file: %s", name,
                                   strerror(errno));
        return 0;
}

int vmsnap_staged_commit(struct vmsnap_staged *s, struct vmsnap_diag *d)
{
        if (vmsnap_sys.fsync(s->fd) < 0)
                return vmsnap_diag(d, -errno, "%s: fsync failed: %s", s->name, strerror(errno));
        if (vmsnap_sys.renameat(s->dirfd, s->tmp, s->dirfd, s->name) < 0)
                return vmsnap_diag(d, -errno, "%s: rename into place failed: %s", s->name,
                                   strerror(errno));
        s->tmp[0] = '\0';
        close(s->fd);
        s->fd = -1;
        return 0;
}

void vmsnap_staged_abort(struct vmsnap_staged *s)
{
        if (s->fd >= 0)
                close(s->fd);
        s->fd = -1;
        if (s->tmp[0])
                unlinkat(s->dirfd, s->tmp, 0);
        s->tmp[0] = '\0';
}

int vmsnap_fs_atomic_write(int dirfd, const char *name, const void *buf, size_t len,
                           struct vmsnap_diag *d)
{
        struct vmsnap_staged s;
        int r = vmsnap_staged_open(&s, dirfd, name, d);
        if (r < 0)
                return r;
        r = vmsnap_fs_write_full(s.fd, buf, len);
        if (r < 0) {
                vmsnap_staged_abort(&s);
                return vmsnap_diag(d, r, "%s: write failed: %s", name, strerror(-r));
        }
        r = vmsnap_staged_commit(&s, d);
        if (r < 0) {
                vmsnap_staged_abort(&s);
                return r;
        }
        r = vmsnap_fs_fsync_dir(dirfd);
        if (r < 0)
                return vmsnap_diag(d, r, "%s: fsync of directory failed: %s", name,
                                   strerror(-r));
        return 0;
}

/* Plain read/write copy used when copy_file_range cannot serve (old kernels, odd files). */
static int copy_by_buffer(int in, uint64_t in_off, int out, uint64_t out_off, uint64_t len)
{
        size_t bufsize = (size_t)MIN(len, (uint64_t)4 << 20);
        _cleanup_free_ uint8_t *buf = malloc(bufsize);
        if (!buf)
                return -ENOMEM;
        while (len > 0) {
                size_t chunk = (size_t)MIN(len, (uint64_t)bufsize);
                ssize_t n = vmsnap_fs_pread_full(in, buf, chunk, in_off);
                if (n < 0)
                        return (int)n;
                if ((size_t)n != chunk)
                        return -ENODATA; /* source shorter than promised */
                int r = vmsnap_fs_pwrite_full(out, buf, chunk, out_off);
                if (r < 0)
                        return r;
                in_off += chunk;
                out_off += chunk;
                len -= chunk;
        }
        return 0;
}

int vmsnap_fs_copy_range(int in, uint64_t in_off, int out, uint64_t out_off, uint64_t len)
{
        while (len > 0) {
                off_t io = (off_t)in_off, oo = (off_t)out_off;
                ssize_t n = vmsnap_sys.copy_file_range(in, &io, out, &oo,
                                                       (size_t)MIN(len, (uint64_t)1 << 30), 0);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EXDEV || errno == EINVAL || errno == ENOSYS ||
                            errno == EOPNOTSUPP || errno == EBADF)
                                return copy_by_buffer(in, in_off, out, out_off, len);
                        return -errno;
                }
                if (n == 0)
                        return -ENODATA;
                in_off += (uint64_t)n;
                out_off += (uint64_t)n;
                len -= (uint64_t)n;
        }
        return 0;
}

static int copy_whole_file(int src_dirfd, const char *src_name, int dst_dirfd,
                           const char *dst_name, struct vmsnap_diag *d)
{
        _cleanup_close_ int in = openat(src_dirfd, src_name, O_RDONLY | O_CLOEXEC);
        if (in < 0)
                return vmsnap_diag(d, -errno, "%s: cannot open: %s", src_name, strerror(errno));
        struct stat st;
        if (fstat(in, &st) < 0)
                return vmsnap_diag(d, -errno, "%s: stat failed: %s", src_name, strerror(errno));
        struct vmsnap_staged s;
        int r = vmsnap_staged_open(&s, dst_dirfd, dst_name, d);
        if (r < 0)
                return r;
        if (ioctl(s.fd, FICLONE, in) < 0)
                r = vmsnap_fs_copy_range(in, 0, s.fd, 0, (uint64_t)st.st_size);
        if (r < 0) {
                vmsnap_staged_abort(&s);
                return vmsnap_diag(d, r, "%s: copy failed: %s", src_name, strerror(-r));
        }
        r = vmsnap_staged_commit(&s, d);
        if (r < 0)
                vmsnap_staged_abort(&s);
        return r;
}

int vmsnap_fs_link_or_copy(int src_dirfd, const char *src_name, int dst_dirfd,
                           const char *dst_name, struct vmsnap_diag *d)
{
        if (linkat(src_dirfd, src_name, dst_dirfd, dst_name, 0) == 0)
                return 0;
        if (errno == EEXIST) {
                /* Already there: fine only if it is the very same file. */
                _cleanup_close_ int a = openat(src_dirfd, src_name, O_RDONLY | O_CLOEXEC);
                _cleanup_close_ int b = openat(dst_dirfd, dst_name, O_RDONLY | O_CLOEXEC);
                if (a >= 0 && b >= 0 && vmsnap_fs_same_file(a, b))
                        return 0;
                return vmsnap_diag(d, -EEXIST, "%s: a different file of that name exists",
                                   dst_name);
        }
        if (errno != EXDEV && errno != EPERM && errno != EMLINK)
                return vmsnap_diag(d, -errno, "%s: cannot link: %s", src_name, strerror(errno));
        return copy_whole_file(src_dirfd, src_name, dst_dirfd, dst_name, d);
}

bool vmsnap_fs_set_direct(int fd, bool on)
{
        int fl = fcntl(fd, F_GETFL);
        return fl >= 0 && fcntl(fd, F_SETFL, on ? fl | O_DIRECT : fl & ~O_DIRECT) == 0;
}

bool vmsnap_fs_same_file(int a, int b)
{
        struct stat sa, sb;
        if (fstat(a, &sa) < 0 || fstat(b, &sb) < 0)
                return false;
        return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int vmsnap_fs_open_dir(const char *path)
{
        int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        return fd < 0 ? -errno : fd;
}
