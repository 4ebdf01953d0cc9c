/* qcow2 overlays over a pinned base image (qemu-img), clones for raw-only VMMs, and durable
 * copies of disks; everything written 0600. */
#include <vmsnap/disk.h>

#include "util/cleanup.h"
#include "util/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* Splits a path into an open directory fd and its base name (written into name). */
static int open_parent(const char *path, char name[256], struct vmsnap_diag *d)
{
        _cleanup_free_ char *c1 = strdup(path), *c2 = strdup(path);
        if (!c1 || !c2)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        snprintf(name, 256, "%s", basename(c2));
        int fd = vmsnap_fs_open_dir(dirname(c1));
        return fd < 0 ? vmsnap_diag(d, fd, "%s: cannot open its directory: %s", path,
                                    strerror(-fd))
                      : fd;
}

/* Runs argv, capturing stderr into err (size bytes); returns its exit status or -errno. */
static int run_tool(char *const argv[], char *err, size_t size)
{
        int pipefd[2];
        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return -errno;
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDERR_FILENO);
        posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
        pid_t pid;
        int r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        close(pipefd[1]);
        if (r != 0) {
                close(pipefd[0]);
                return -r;
        }
        ssize_t n = read(pipefd[0], err, size - 1);
        err[n > 0 ? n : 0] = '\0';
        close(pipefd[0]);
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* Checks that what qemu-img wrote is what vmsnap means: the header reads back through the
 * same strict parser imports use, with the canonical backing reference. */
static int check_written(int fd, const char *overlay, const char *want, struct vmsnap_diag *d)
{
        uint8_t buf[4096];
        ssize_t n = vmsnap_fs_pread_full(fd, buf, sizeof(buf), 0);
        struct vmsnap_qcow2_info q;
        if (n < 0)
                return vmsnap_diag(d, (int)n, "%s: cannot read back: %s", overlay,
                                   strerror((int)-n));
        int r = vmsnap_qcow2_parse(buf, (size_t)n, overlay, &q, d);
        if (r == 0 && (!q.has_backing || strcmp(q.backing, want) != 0))
                r = vmsnap_diag(d, -EIO, "%s: qemu-img wrote backing '%s', not '%s'", overlay,
                                q.backing, want);
        return r;
}

int vmsnap_disk_overlay_create(const char *base, const char *overlay, struct vmsnap_diag *d)
{
        char name[256], tmp[PATH_MAX], err[1024], ref[PATH_MAX], size[32];
        const char *slash = strrchr(base, '/');
        /* A pinned base gets the canonical reference; any other file (a test's, a tool's) is
         * named as given, and such an overlay is refused by imports. */
        if (vmsnap_disk_backing_ref(slash ? slash + 1 : base, ref, sizeof(ref)) < 0 &&
            snprintf(ref, sizeof(ref), "%s", base) >= (int)sizeof(ref))
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: path too long", base);
        struct stat st;
        _cleanup_close_ int bfd = vmsnap_fs_open_regular(AT_FDCWD, base, &st, false);
        if (bfd < 0)
                return vmsnap_diag(d, bfd, "%s: %s", base, vmsnap_fs_open_error(bfd));
        _cleanup_close_ int dirfd = open_parent(overlay, name, d);
        if (dirfd < 0)
                return dirfd;
        snprintf(tmp, sizeof(tmp), "%s.tmp.%d", overlay, (int)getpid());
        snprintf(size, sizeof(size), "%llu", (unsigned long long)st.st_size);
        /* -u: qemu-img does not open the backing file (the reference is resolved by vmsnap,
         * not relative to wherever the overlay is made); the size is the base's. */
        char *argv[] = {"qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", ref,
                        tmp, size, NULL};
        int r = run_tool(argv, err, sizeof(err));
        if (r != 0) {
                unlink(tmp);
                return vmsnap_diag(d, r < 0 ? r : -EIO, "%s: qemu-img create failed%s%s", overlay,
                                   r < 0 ? " (is qemu-utils installed?)" : ": ", err);
        }
        _cleanup_close_ int fd = open(tmp, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        r = fd < 0 ? -errno : check_written(fd, overlay, ref, d);
        if (r == 0 && (fchmod(fd, VMSNAP_FILE_MODE) < 0 || fsync(fd) < 0 ||
                       rename(tmp, overlay) < 0 || vmsnap_fs_fsync_dir(dirfd) < 0))
                r = vmsnap_diag(d, -errno, "%s: cannot make durable: %s", overlay,
                                strerror(errno));
        else if (fd < 0)
                vmsnap_diag(d, r, "%s: cannot open: %s", tmp, strerror(-r));
        if (r < 0)
                unlink(tmp);
        return r;
}

const char *vmsnap_disk_name(const char *format)
{
        return format && strcmp(format, "raw") == 0 ? VMSNAP_ROOTFS_RAW : VMSNAP_ROOTFS_OVERLAY;
}

/* Copies the data regions of in to out (holes skipped) and sizes out like in. */
static int copy_sparse(int in, int out, uint64_t size)
{
        uint64_t off = 0;
        while (off < size) {
                off_t data = lseek(in, (off_t)off, SEEK_DATA);
                if (data < 0 && errno == ENXIO)
                        break; /* only a hole is left */
                if (data < 0)
                        return -errno;
                off_t hole = lseek(in, data, SEEK_HOLE);
                if (hole < 0)
                        hole = (off_t)size;
                int r = vmsnap_fs_copy_range(in, (uint64_t)data, out, (uint64_t)data,
                                             (uint64_t)(hole - data));
                if (r < 0)
                        return r;
                off = (uint64_t)hole;
        }
        return ftruncate(out, (off_t)size) < 0 ? -errno : 0;
}

int vmsnap_disk_clone(const char *base, const char *dst, struct vmsnap_diag *d)
{
        char dname[256];
        _cleanup_close_ int ddir = open_parent(dst, dname, d);
        if (ddir < 0)
                return ddir;
        struct vmsnap_staged s;
        int r = vmsnap_staged_open(&s, ddir, dname, d);
        if (r < 0)
                return r;
        struct stat st;
        _cleanup_close_ int in = vmsnap_fs_open_regular(AT_FDCWD, base, &st, false);
        if (in < 0)
                r = vmsnap_diag(d, in, "%s: cannot open the base image: %s", base,
                                vmsnap_fs_open_error(in));
        else if (ioctl(s.fd, FICLONE, in) < 0 && (r = copy_sparse(in, s.fd, (uint64_t)st.st_size)) < 0)
                vmsnap_diag(d, r, "%s: copy to %s failed: %s", base, dst, strerror(-r));
        if (r == 0)
                r = vmsnap_staged_commit(&s, d);
        if (r == 0 && (r = vmsnap_fs_fsync_dir(ddir)) < 0)
                vmsnap_diag(d, r, "%s: fsync of directory failed", dst);
        if (r < 0)
                vmsnap_staged_abort(&s);
        return r;
}

int vmsnap_disk_copy_fd(int in, const char *what, const char *dst, struct vmsnap_diag *d)
{
        char dname[256];
        _cleanup_close_ int ddir = open_parent(dst, dname, d);
        if (ddir < 0)
                return ddir;
        /* A copy, never a link: the destination is written while the source must not be. */
        int r = vmsnap_fs_copy_fd(in, what, ddir, dname, d);
        if (r == 0 && (r = vmsnap_fs_fsync_dir(ddir)) < 0)
                vmsnap_diag(d, r, "%s: fsync of directory failed", dst);
        return r;
}

int vmsnap_disk_copy(const char *src, const char *dst, struct vmsnap_diag *d)
{
        char sname[256];
        _cleanup_close_ int sdir = open_parent(src, sname, d);
        if (sdir < 0)
                return sdir;
        _cleanup_close_ int in = vmsnap_fs_open_regular(sdir, sname, NULL, false);
        if (in < 0)
                return vmsnap_diag(d, in, "%s: cannot open: %s", src, vmsnap_fs_open_error(in));
        return vmsnap_disk_copy_fd(in, src, dst, d);
}
