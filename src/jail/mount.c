/* The jail's root: a tmpfs on root_dir in the jail's private mount namespace whose
 * directory /jail is filled with the binds, devices, system dirs and /proc the spec asks
 * for; the tmpfs is pivoted into, sealed read-only, and /jail becomes / (docs/jail.md,
 * steps 5-10). Every path inside the new root is made relative to
 * its descriptor, one component at a time, never following a symlink. */
#include "jail/mount.h"
#include "util/cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

#define ROOT_TMPFS_OPTS "size=1m,nr_inodes=1024,mode=0755"
/* The jail's / inside the root tmpfs (see seal_and_enter). */
#define JAIL_DIR "jail"

int jail_open_nosymlinks(int dirfd, const char *path, int extra)
{
        struct open_how how = {
                .flags = (uint64_t)(O_PATH | O_NOFOLLOW | O_CLOEXEC | extra),
                .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        };
        if (path[0] != '/')
                how.resolve |= RESOLVE_BENEATH;
        int fd = (int)syscall(SYS_openat2, path[0] == '/' ? AT_FDCWD : dirfd, path, &how,
                              sizeof(how));
        return fd < 0 ? -errno : fd;
}

void jail_fd_path(int fd, char out[32])
{
        snprintf(out, 32, "/proc/self/fd/%d", fd);
}

int jail_make_parents(int dirfd, const char *path, const char **ret_last)
{
        while (*path == '/')
                path++;
        int cur = fcntl(dirfd, F_DUPFD_CLOEXEC, 3);
        if (cur < 0)
                return -errno;
        for (;;) {
                const char *slash = strchr(path, '/');
                if (!slash) {
                        *ret_last = path;
                        return cur;
                }
                char comp[NAME_MAX + 1];
                size_t len = (size_t)(slash - path);
                if (len > NAME_MAX) {
                        close(cur);
                        return -ENAMETOOLONG;
                }
                memcpy(comp, path, len);
                comp[len] = '\0';
                /* 0755 whatever the umask: the jail's uid must traverse to its binds. */
                int made = mkdirat(cur, comp, 0755);
                if ((made < 0 && errno != EEXIST) ||
                    (made == 0 && fchmodat(cur, comp, 0755, 0) < 0)) {
                        int e = -errno;
                        close(cur);
                        return e;
                }
                int next = openat(cur, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                int e = -errno;
                close(cur);
                if (next < 0)
                        return e;
                cur = next;
                path = slash + 1;
        }
}

/* Mounts the root tmpfs on root_dir and returns an O_PATH fd of it (checked to be that
 * tmpfs, on top of the directory that was there). */
static int mount_root_tmpfs(const struct vmsnap_jail_spec *s, struct vmsnap_diag *d)
{
        _cleanup_close_ int under = jail_open_nosymlinks(AT_FDCWD, s->root_dir, O_DIRECTORY);
        if (under < 0)
                return vmsnap_diag(d, under, "jail %s: root directory %s: %s%s", s->name,
                                   s->root_dir, strerror(-under),
                                   under == -ELOOP ? " (a component is a symbolic link)" : "");
        char magic[32];
        jail_fd_path(under, magic);
        if (mount("tmpfs", magic, "tmpfs", MS_NOSUID | MS_NODEV, ROOT_TMPFS_OPTS) < 0)
                return vmsnap_diag(d, -errno, "jail %s: cannot mount the root tmpfs on %s: %s",
                                   s->name, s->root_dir, strerror(errno));
        int fd = jail_open_nosymlinks(AT_FDCWD, s->root_dir, O_DIRECTORY);
        struct statfs sf;
        struct stat st_under, st_root;
        if (fd < 0 || fstatfs(fd, &sf) < 0 || sf.f_type != TMPFS_MAGIC ||
            fstat(under, &st_under) < 0 || fstat(fd, &st_root) < 0 ||
            st_under.st_dev == st_root.st_dev) {
                if (fd >= 0)
                        close(fd);
                return vmsnap_diag(d, -EIO, "jail %s: %s is not the tmpfs just mounted on it",
                                   s->name, s->root_dir);
        }
        return fd;
}

/* pivot_root(".", ".") from inside the new root, then detach the old root stacked on it:
 * the host's tree leaves the namespace entirely (no chroot an fd or ".." could climb). */
static int pivot_into(int root_fd, const char *name, struct vmsnap_diag *d)
{
        if (fchdir(root_fd) < 0)
                return vmsnap_diag(d, -errno, "jail %s: fchdir to the new root: %s", name,
                                   strerror(errno));
        if (syscall(SYS_pivot_root, ".", ".") < 0)
                return vmsnap_diag(d, -errno, "jail %s: pivot_root: %s", name, strerror(errno));
        if (umount2(".", MNT_DETACH) < 0)
                return vmsnap_diag(d, -errno, "jail %s: detaching the host root: %s", name,
                                   strerror(errno));
        if (chdir("/") < 0)
                return vmsnap_diag(d, -errno, "jail %s: chdir /: %s", name, strerror(errno));
        return 0;
}

/* Remounts the tmpfs (and /dev when made) read-only: the jail's uid could not write there
 * anyway (root owns them), now nobody can. Then chroot one level down into JAIL_DIR: a
 * process whose root is not its mount namespace's root may not create user namespaces
 * (create_user_ns refuses a chrooted caller), so no jailed process reaches the kernel's
 * user-namespace surface, whatever its own seccomp filter allows. */
static int seal_and_enter(const struct vmsnap_jail_spec *s, struct vmsnap_diag *d)
{
        if (mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) <
            0)
                return vmsnap_diag(d, -errno, "jail %s: remounting / read-only: %s", s->name,
                                   strerror(errno));
        if (s->devices && s->devices[0] &&
            mount(NULL, "/" JAIL_DIR "/dev", NULL,
                  MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC, NULL) < 0)
                return vmsnap_diag(d, -errno, "jail %s: remounting /dev read-only: %s", s->name,
                                   strerror(errno));
        if (chroot("/" JAIL_DIR) < 0 || chdir("/") < 0)
                return vmsnap_diag(d, -errno, "jail %s: chroot into /%s: %s", s->name, JAIL_DIR,
                                   strerror(errno));
        return 0;
}

/* The directory of the tmpfs that becomes the jail's / (0755, root's). */
static int make_jail_dir(int tmpfs_fd, const char *name, struct vmsnap_diag *d)
{
        if (mkdirat(tmpfs_fd, JAIL_DIR, 0755) < 0 || fchmodat(tmpfs_fd, JAIL_DIR, 0755, 0) < 0)
                return vmsnap_diag(d, -errno, "jail %s: mkdir /%s in the root tmpfs: %s", name,
                                   JAIL_DIR, strerror(errno));
        int fd = jail_open_nosymlinks(tmpfs_fd, JAIL_DIR, O_DIRECTORY);
        return fd < 0 ? vmsnap_diag(d, fd, "jail %s: /%s: %s", name, JAIL_DIR, strerror(-fd)) : fd;
}

int jail_build_root(const struct vmsnap_jail_spec *s, struct vmsnap_diag *d)
{
        struct jail_root root = {.root_fd = -1};
        _cleanup_close_ int tmpfs = -1;
        /* Sources first: they must be mounts of this namespace, and visible (root_dir's
         * own content is hidden by the tmpfs from the next step on). */
        int r = jail_binds_plan(s, &root, d);
        if (r == 0) {
                tmpfs = mount_root_tmpfs(s, d);
                r = tmpfs < 0 ? tmpfs : 0;
        }
        if (r == 0) {
                root.root_fd = make_jail_dir(tmpfs, s->name, d);
                r = root.root_fd < 0 ? root.root_fd : 0;
        }
        if (r == 0)
                r = jail_binds_mount(s, &root, d);
        if (r == 0)
                r = jail_make_devices(s, root.root_fd, d);
        if (r == 0)
                r = jail_mount_proc(s, root.root_fd, d);
        if (r == 0)
                r = pivot_into(tmpfs, s->name, d);
        if (r == 0)
                r = seal_and_enter(s, d);
        jail_binds_free(&root);
        if (root.root_fd >= 0)
                close(root.root_fd);
        return r;
}
