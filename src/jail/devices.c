/* The jail's /dev and /proc. Device nodes are made (mknod), never bound: the jail cannot
 * reach the host's /dev. /proc, when asked for, is a new procfs instance that shows only
 * what the jail's uid may ptrace (its own processes) and none of /proc/sys & co. */
#include "jail/mount.h"
#include "util/cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEV_TMPFS_OPTS "size=64k,nr_inodes=64,mode=0755"
#define PROC_OPTS      "hidepid=invisible,subset=pid"

/* Mounts a fresh filesystem on root_fd/name (created as a 0755 directory). */
static int mount_on(int root_fd, const char *name, const char *fstype, unsigned long flags,
                    const char *opts)
{
        if (mkdirat(root_fd, name, 0755) < 0 || fchmodat(root_fd, name, 0755, 0) < 0)
                return -errno;
        _cleanup_close_ int fd = jail_open_nosymlinks(root_fd, name, O_DIRECTORY);
        if (fd < 0)
                return fd;
        char magic[32];
        jail_fd_path(fd, magic);
        return mount(fstype, magic, fstype, flags, opts) < 0 ? -errno : 0;
}

/* Makes the node for the host device path inside dev_fd (path starts with "/dev/"). */
static int make_node(const struct vmsnap_jail_spec *s, int dev_fd, const char *path,
                     struct vmsnap_diag *d)
{
        struct stat st;
        if (lstat(path, &st) < 0)
                return vmsnap_diag(d, -errno, "jail %s: device %s: %s", s->name, path,
                                   strerror(errno));
        if (!S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode))
                return vmsnap_diag(d, -EINVAL, "jail %s: %s is not a device node", s->name, path);
        const char *last;
        _cleanup_close_ int parent = jail_make_parents(dev_fd, path + strlen("/dev/"), &last);
        if (parent < 0)
                return vmsnap_diag(d, parent, "jail %s: cannot create the parents of %s: %s",
                                   s->name, path, strerror(-parent));
        if (mknodat(parent, last, (st.st_mode & S_IFMT) | 0600, st.st_rdev) < 0 ||
            fchmodat(parent, last, 0600, 0) < 0 ||
            fchownat(parent, last, s->uid, s->uid, AT_SYMLINK_NOFOLLOW) < 0)
                return vmsnap_diag(d, -errno, "jail %s: cannot make the node %s: %s", s->name, path,
                                   strerror(errno));
        return 0;
}

int jail_make_devices(const struct vmsnap_jail_spec *s, int root_fd, struct vmsnap_diag *d)
{
        if (!s->devices || !s->devices[0])
                return 0;
        int r = mount_on(root_fd, "dev", "tmpfs", MS_NOSUID | MS_NOEXEC, DEV_TMPFS_OPTS);
        if (r < 0)
                return vmsnap_diag(d, r, "jail %s: cannot mount the /dev tmpfs: %s", s->name,
                                   strerror(-r));
        _cleanup_close_ int dev = jail_open_nosymlinks(root_fd, "dev", O_DIRECTORY);
        if (dev < 0)
                return vmsnap_diag(d, dev, "jail %s: /dev: %s", s->name, strerror(-dev));
        for (size_t i = 0; s->devices[i]; i++) {
                r = make_node(s, dev, s->devices[i], d);
                if (r < 0)
                        return r;
        }
        return 0;
}

int jail_mount_proc(const struct vmsnap_jail_spec *s, int root_fd, struct vmsnap_diag *d)
{
        if (!s->proc)
                return 0;
        int r = mount_on(root_fd, "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, PROC_OPTS);
        if (r < 0)
                return vmsnap_diag(d, r, "jail %s: cannot mount /proc (%s): %s", s->name, PROC_OPTS,
                                   strerror(-r));
        return 0;
}
