/* Network namespaces pinned by bind mounts under a directory (iproute2's /run/netns
 * convention), entering and leaving them per thread, and sysctls of the current one. */
#include "net/internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/cleanup.h"

/* Makes dir a shared mount (bind-mounting it onto itself first when it is not a mount
 * point), as iproute2 does: an unmount of a pin then reaches copies of the directory in
 * mount namespaces made later, so no copy keeps a destroyed namespace alive. */
static int make_dir_shared(const char *dir, struct vmsnap_diag *d)
{
        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                return vmsnap_diag(d, -errno, "%s: mkdir: %s", dir, strerror(errno));
        if (mount("", dir, "none", MS_SHARED | MS_REC, NULL) == 0)
                return 0;
        if (errno != EINVAL)
                return vmsnap_diag(d, -errno, "%s: make shared: %s", dir, strerror(errno));
        if (mount(dir, dir, "none", MS_BIND | MS_REC, NULL) < 0)
                return vmsnap_diag(d, -errno, "%s: bind onto itself: %s", dir, strerror(errno));
        if (mount("", dir, "none", MS_SHARED | MS_REC, NULL) < 0)
                return vmsnap_diag(d, -errno, "%s: make shared: %s", dir, strerror(errno));
        return 0;
}

static int pin_path(const char *dir, const char *id, char out[PATH_MAX], struct vmsnap_diag *d)
{
        int n = snprintf(out, PATH_MAX, "%s/%s%s", dir, NET_NS_PREFIX, id);
        if (n < 0 || n >= PATH_MAX)
                return vmsnap_diag(d, -ENAMETOOLONG, "%s: namespace path too long", dir);
        return 0;
}

/* A new namespace made by this thread, bind-mounted on path; the thread then returns to
 * orig. The mount is made before the thread leaves, from /proc/thread-self (not
 * /proc/self: that is the main thread's namespace). */
static int pin_new_namespace(const char *path, int orig, struct vmsnap_diag *d)
{
        if (unshare(CLONE_NEWNET) < 0)
                return vmsnap_diag(d, -errno, "%s: unshare(CLONE_NEWNET): %s", path,
                                   strerror(errno));
        int r = 0;
        if (mount("/proc/thread-self/ns/net", path, "none", MS_BIND, NULL) < 0)
                r = vmsnap_diag(d, -errno, "%s: bind-mount the new namespace: %s", path,
                                strerror(errno));
        net_ns_leave(orig);
        return r;
}

int net_ns_pin(const char *dir, const char *id, struct vmsnap_diag *d)
{
        char path[PATH_MAX];
        int r = pin_path(dir, id, path, d);
        if (r < 0)
                return r;
        r = make_dir_shared(dir, d);
        if (r < 0)
                return r;
        _cleanup_close_ int orig = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        if (orig < 0)
                return vmsnap_diag(d, -errno, "/proc/thread-self/ns/net: %s", strerror(errno));
        int fd = open(path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return vmsnap_diag(d, -errno, "%s: create namespace pin: %s", path,
                                   strerror(errno));
        close(fd);
        r = pin_new_namespace(path, orig, d);
        if (r < 0)
                unlink(path);
        return r;
}

int net_ns_open(const char *dir, const char *id, int *ret_fd, struct vmsnap_diag *d)
{
        char path[PATH_MAX];
        int r = pin_path(dir, id, path, d);
        if (r < 0)
                return r;
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return vmsnap_diag(d, -errno, "%s: open namespace: %s", path, strerror(errno));
        *ret_fd = fd;
        return 0;
}

int net_ns_enter(int nsfd, int *ret_orig_fd, struct vmsnap_diag *d)
{
        int orig = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        if (orig < 0)
                return vmsnap_diag(d, -errno, "/proc/thread-self/ns/net: %s", strerror(errno));
        if (setns(nsfd, CLONE_NEWNET) < 0) {
                int e = errno;
                close(orig);
                return vmsnap_diag(d, -e, "setns into a sandbox namespace: %s", strerror(e));
        }
        *ret_orig_fd = orig;
        return 0;
}

/* Returning to the namespace we hold an fd of cannot fail short of a kernel bug; a thread
 * left in a sandbox namespace would do the host's work in the wrong place, so abort. */
void net_ns_leave(int orig_fd)
{
        if (setns(orig_fd, CLONE_NEWNET) < 0)
                abort();
}

int net_ns_unpin(const char *dir, const char *id, struct vmsnap_diag *d)
{
        char path[PATH_MAX];
        int r = pin_path(dir, id, path, d);
        if (r < 0)
                return r;
        if (umount2(path, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
                return vmsnap_diag(d, -errno, "%s: unmount namespace: %s", path, strerror(errno));
        if (unlink(path) < 0 && errno != ENOENT)
                return vmsnap_diag(d, -errno, "%s: remove namespace pin: %s", path,
                                   strerror(errno));
        return 0;
}

int net_ns_list(const char *dir, char ***ret_ids, size_t *ret_n, struct vmsnap_diag *d)
{
        char **ids = NULL;
        size_t n = 0;
        DIR *dh = opendir(dir);
        if (!dh && errno != ENOENT)
                return vmsnap_diag(d, -errno, "%s: list namespaces: %s", dir, strerror(errno));
        size_t prefix = strlen(NET_NS_PREFIX);
        for (struct dirent *e; dh && (e = readdir(dh));) {
                if (strncmp(e->d_name, NET_NS_PREFIX, prefix) != 0 ||
                    net_id_check(e->d_name + prefix, NULL) < 0)
                        continue;
                if (net_strv_push(&ids, &n, e->d_name + prefix) < 0) {
                        closedir(dh);
                        net_strv_free(ids);
                        return vmsnap_diag(d, -ENOMEM, "%s: out of memory", dir);
                }
        }
        if (dh)
                closedir(dh);
        *ret_ids = ids;
        *ret_n = n;
        return 0;
}

int net_sysctl_write(const char *path, const char *value, bool missing_ok, struct vmsnap_diag *d)
{
        _cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0) {
                if (errno == ENOENT && missing_ok)
                        return 0;
                return vmsnap_diag(d, -errno, "%s: %s", path, strerror(errno));
        }
        size_t len = strlen(value);
        ssize_t w = write(fd, value, len);
        if (w != (ssize_t)len)
                return vmsnap_diag(d, w < 0 ? -errno : -EIO, "%s: write %s: %s", path, value,
                                   w < 0 ? strerror(errno) : "short write");
        return 0;
}
