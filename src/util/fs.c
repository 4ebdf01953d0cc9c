/* File helpers (see fs.h). Every persistent write in vmsnap goes through these. */
#include "util/fs.h"
#include "util/cleanup.h"
#include "util/prefault.h"
#include "util/sys.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <limits.h>
#include <unistd.h>

#define SPARSE_PAGE ((uint64_t)4096)

static bool all_zero(const uint8_t *p, size_t n)
{
        return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

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

int vmsnap_fs_pwritev_full(int fd, struct iovec *iov, int n, uint64_t off)
{
        while (n > 0) {
                ssize_t w = pwritev(fd, iov, MIN(n, IOV_MAX), (off_t)off);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (w == 0)
                        return -EIO;
                off += (uint64_t)w;
                while (n > 0 && (size_t)w >= iov->iov_len) { /* drop what was written */
                        w -= (ssize_t)iov->iov_len;
                        iov++;
                        n--;
                }
                if (n > 0) {
                        iov->iov_base = (uint8_t *)iov->iov_base + w;
                        iov->iov_len -= (size_t)w;
                }
        }
        return 0;
}

int vmsnap_fs_send_full(int fd, const void *buf, size_t len)
{
        size_t done = 0;
        while (done < len) {
                ssize_t n = send(fd, (const uint8_t *)buf + done, len - done, MSG_NOSIGNAL);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return n < 0 ? -errno : -EIO;
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

int vmsnap_fs_open_regular(int dirfd, const char *name, struct stat *ret_st, bool follow)
{
        /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever. */
        int fd = openat(dirfd, name,
                        O_RDONLY | O_CLOEXEC | O_NONBLOCK | (follow ? 0 : O_NOFOLLOW));
        if (fd < 0)
                return -errno;
        struct stat st;
        int fl = fcntl(fd, F_GETFL);
        if (fstat(fd, &st) < 0 || fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        if (!S_ISREG(st.st_mode)) {
                close(fd);
                return -EINVAL;
        }
        if (ret_st)
                *ret_st = st;
        return fd;
}

int vmsnap_fs_open_input(const char *path, struct stat *ret_st)
{
        return vmsnap_fs_open_regular(AT_FDCWD, path, ret_st, true);
}

const char *vmsnap_fs_open_error(int err)
{
        switch (err) {
        case -ELOOP:
                return "is a symlink (never followed)";
        case -EINVAL:
                return "not a regular file";
        case -ENOENT:
                return "missing";
        default:
                return strerror(-err);
        }
}

DIR *vmsnap_fs_list_dir(int fd)
{
        int dfd = fd >= 0 ? dup(fd) : -1;
        DIR *dh = dfd >= 0 ? fdopendir(dfd) : NULL;
        if (!dh && dfd >= 0) {
                int e = errno;
                close(dfd);
                errno = e;
        }
        if (fd < 0)
                errno = EBADF;
        return dh;
}

int vmsnap_fs_read_file(int dirfd, const char *name, size_t max, uint8_t **ret_buf,
                        size_t *ret_len)
{
        struct stat st = {0};
        _cleanup_close_ int fd = vmsnap_fs_open_regular(dirfd, name, &st, false);
        if (fd < 0)
                return fd;
        if ((uint64_t)st.st_size > max)
                return -EFBIG;
        _cleanup_free_ uint8_t *buf = vmsnap_malloc_big((size_t)st.st_size + 1);
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

int vmsnap_fs_create_private(int dirfd, const char *name, int flags)
{
        int fd = openat(dirfd, name, flags | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                        VMSNAP_FILE_MODE);
        if (fd < 0)
                return -errno;
        /* Exactly 0600 whatever the umask (which can only have narrowed it). */
        if (fchmod(fd, VMSNAP_FILE_MODE) < 0) {
                int r = -errno;
                close(fd);
                unlinkat(dirfd, name, 0);
                return r;
        }
        return fd;
}

int vmsnap_fs_mkdir_private(int dirfd, const char *name)
{
        if (mkdirat(dirfd, name, VMSNAP_DIR_MODE) < 0)
                return -errno;
        return vmsnap_fs_make_private_dir(dirfd, name);
}

int vmsnap_fs_make_private_dir(int dirfd, const char *name)
{
        _cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
                                                       O_CLOEXEC);
        if (fd < 0)
                return -errno;
        return fchmod(fd, VMSNAP_DIR_MODE) < 0 ? -errno : 0;
}

int vmsnap_fs_pwrite_sparse(int fd, const void *buf, size_t len, uint64_t off,
                            uint64_t *ret_written)
{
        const uint8_t *p = buf;
        uint64_t written = 0;
        while (len > 0) {
                /* Pieces end on page boundaries of the file, so a skipped piece is a whole
                 * page the filesystem can leave unallocated. */
                size_t n = (size_t)MIN((uint64_t)len, SPARSE_PAGE - off % SPARSE_PAGE);
                if (!all_zero(p, n)) {
                        int r = vmsnap_fs_pwrite_full(fd, p, n, off);
                        if (r < 0)
                                return r;
                        written += n;
                }
                p += n;
                off += n;
                len -= n;
        }
        if (ret_written)
                *ret_written += written;
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
        s->nosync = false;
        s->fd = -1;
        snprintf(s->name, sizeof(s->name), "%s", name);
        /* pid + counter makes the name unique per writer; O_EXCL guards the rest. */
        snprintf(s->tmp, sizeof(s->tmp), ".%s.tmp.%d.%u", name, (int)getpid(),
                 __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
        s->fd = vmsnap_fs_create_private(dirfd, s->tmp, O_RDWR);
        if (s->fd < 0)
                return vmsnap_diag(d, s->fd, "%s: cannot create temporary file: %s", name,
                                   strerror(-s->fd));
        return 0;
}

int vmsnap_staged_commit(struct vmsnap_staged *s, struct vmsnap_diag *d)
{
        if (!s->nosync && vmsnap_sys.fsync(s->fd) < 0)
                return vmsnap_diag(d, -errno, "%s: fsync failed: %s", s->name, strerror(errno));
        if (vmsnap_sys.renameat(s->dirfd, s->tmp, s->dirfd, s->name) < 0)
                return vmsnap_diag(d, -errno, "%s: rename into place failed: %s", s->name,
                                   strerror(errno));
        s->tmp[0] = '\0';
        close(s->fd);
        s->fd = -1;
        return 0;
}

int vmsnap_staged_commit_new(struct vmsnap_staged *s, struct vmsnap_diag *d)
{
        if (vmsnap_sys.fsync(s->fd) < 0)
                return vmsnap_diag(d, -errno, "%s: fsync failed: %s", s->name, strerror(errno));
        if (renameat2(s->dirfd, s->tmp, s->dirfd, s->name, RENAME_NOREPLACE) < 0)
                return errno == EEXIST ? -EEXIST
                                       : vmsnap_diag(d, -errno, "%s: rename into place failed: "
                                                     "%s", s->name, strerror(errno));
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

int vmsnap_staged_write(int dirfd, const char *name, const void *buf, size_t len, bool sync,
                        struct vmsnap_diag *d)
{
        struct vmsnap_staged s;
        int r = vmsnap_staged_open(&s, dirfd, name, d);
        if (r < 0)
                return r;
        s.nosync = !sync;
        r = vmsnap_fs_write_full(s.fd, buf, len);
        if (r < 0)
                r = vmsnap_diag(d, r, "%s: write failed: %s", name, strerror(-r));
        else
                r = vmsnap_staged_commit(&s, d);
        if (r < 0)
                vmsnap_staged_abort(&s);
        return r;
}

int vmsnap_fs_atomic_write(int dirfd, const char *name, const void *buf, size_t len,
                           struct vmsnap_diag *d)
{
        int r = vmsnap_staged_write(dirfd, name, buf, len, true, d);
        if (r < 0)
                return r;
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

int vmsnap_fs_copy_fd(int in, const char *what, int dst_dirfd, const char *dst_name,
                      struct vmsnap_diag *d)
{
        struct stat st;
        if (fstat(in, &st) < 0)
                return vmsnap_diag(d, -errno, "%s: %s", what, strerror(errno));
        if (!S_ISREG(st.st_mode))
                return vmsnap_diag(d, -EINVAL, "%s: not a regular file", what);
        struct vmsnap_staged s;
        int r = vmsnap_staged_open(&s, dst_dirfd, dst_name, d);
        if (r < 0)
                return r;
        if (ioctl(s.fd, FICLONE, in) < 0)
                r = vmsnap_fs_copy_range(in, 0, s.fd, 0, (uint64_t)st.st_size);
        if (r < 0) {
                vmsnap_staged_abort(&s);
                return vmsnap_diag(d, r, "%s: copy failed: %s", what, strerror(-r));
        }
        r = vmsnap_staged_commit(&s, d);
        if (r < 0)
                vmsnap_staged_abort(&s);
        return r;
}

static int copy_whole_file(int src_dirfd, const char *src_name, int dst_dirfd,
                           const char *dst_name, struct vmsnap_diag *d)
{
        _cleanup_close_ int in = vmsnap_fs_open_regular(src_dirfd, src_name, NULL, false);
        if (in < 0)
                return vmsnap_diag(d, in, "%s: cannot open: %s", src_name,
                                   vmsnap_fs_open_error(in));
        return vmsnap_fs_copy_fd(in, src_name, dst_dirfd, dst_name, d);
}

int vmsnap_fs_link_or_copy(int src_dirfd, const char *src_name, int dst_dirfd,
                           const char *dst_name, struct vmsnap_diag *d)
{
        /* linkat() would link a symlink or a FIFO as such: regular files only. */
        struct stat st;
        if (fstatat(src_dirfd, src_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return vmsnap_diag(d, -errno, "%s: %s", src_name, strerror(errno));
        if (!S_ISREG(st.st_mode))
                return vmsnap_diag(d, S_ISLNK(st.st_mode) ? -ELOOP : -EINVAL, "%s: %s", src_name,
                                   S_ISLNK(st.st_mode) ? "is a symlink (never followed)"
                                                       : "not a regular file");
        if (linkat(src_dirfd, src_name, dst_dirfd, dst_name, 0) == 0)
                return 0;
        if (errno == EEXIST) {
                /* Already there: fine only if it is the very same file. */
                _cleanup_close_ int a = vmsnap_fs_open_regular(src_dirfd, src_name, NULL, false);
                _cleanup_close_ int b = vmsnap_fs_open_regular(dst_dirfd, dst_name, NULL, false);
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
