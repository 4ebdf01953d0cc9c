/* Joining a given network namespace (docs/jail.md, "Network"): a jail with
 * spec.netns_path runs its VMM inside a sandbox's namespace (docs/network.md) instead of a
 * new, empty one. The path is checked to be a network namespace before it is joined. */
#include "jail/internal.h"
#include "util/cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/nsfs.h>
#include <linux/openat2.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

#ifndef NSFS_MAGIC
#define NSFS_MAGIC 0x6e736673
#endif

/* path opened without following any symlink, or -errno. */
static int open_ns(const char *path)
{
        struct open_how how = {
                .flags = O_RDONLY | O_CLOEXEC,
                .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        };
        int fd = (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof(how));
        return fd < 0 ? -errno : fd;
}

int jail_netns_join(const char *name, const char *path, struct vmsnap_diag *d)
{
        _cleanup_close_ int fd = open_ns(path);
        if (fd < 0)
                return vmsnap_diag(d, fd, "jail %s: network namespace %s: %s", name, path,
                                   strerror(-fd));
        struct statfs sf;
        if (fstatfs(fd, &sf) < 0)
                return vmsnap_diag(d, -errno, "jail %s: network namespace %s: fstatfs: %s", name,
                                   path, strerror(errno));
        if ((unsigned long)sf.f_type != NSFS_MAGIC)
                return vmsnap_diag(d, -EINVAL,
                                   "jail %s: %s is not a namespace file (not on nsfs; "
                                   "is the namespace pinned?)",
                                   name, path);
        int type = ioctl(fd, NS_GET_NSTYPE);
        if (type < 0)
                return vmsnap_diag(d, -errno, "jail %s: %s: NS_GET_NSTYPE: %s", name, path,
                                   strerror(errno));
        if (type != CLONE_NEWNET)
                return vmsnap_diag(d, -EINVAL, "jail %s: %s is a namespace, but not a network one",
                                   name, path);
        if (setns(fd, CLONE_NEWNET) < 0)
                return vmsnap_diag(d, -errno, "jail %s: joining network namespace %s: %s", name,
                                   path, strerror(errno));
        return 0;
}
