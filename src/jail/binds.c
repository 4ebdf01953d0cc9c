/* Bind mounts into the jail: each source is opened by root with no symlink anywhere in its
 * path (openat2 RESOLVE_NO_SYMLINKS) and mounted from /proc/self/fd/N, so the inode checked
 * is the inode mounted; a file swapped for a symlink after the spec was made is refused.
 * The system dirs (/usr and the merged-/usr links) are binds like any other. */
#include "jail/mount.h"
#include "util/cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* The top-level directories a merged-/usr host links into /usr. */
static const char *const system_tops[] = {"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"};

static int add_bind(struct jail_root *root, const char *source, const char *target, bool writable)
{
        struct jail_bind *b = realloc(root->binds, (root->n_binds + 1) * sizeof(*b));
        if (!b)
                return -ENOMEM;
        root->binds = b;
        b[root->n_binds++] = (struct jail_bind){
                .source = source, .target = target, .writable = writable, .src_fd = -1};
        return 0;
}

/* A host top-level link must point into /usr (usr/lib or /usr/lib); copied as it is. */
static int add_link(struct jail_root *root, const char *top, struct vmsnap_diag *d)
{
        struct jail_link *l = &root->links[root->n_links];
        ssize_t n = readlink(top, l->target, sizeof(l->target) - 1);
        if (n < 0)
                return vmsnap_diag(d, -errno, "system dirs: %s: %s", top, strerror(errno));
        l->target[n] = '\0';
        if (strncmp(l->target, "usr/", 4) != 0 && strncmp(l->target, "/usr/", 5) != 0)
                return vmsnap_diag(d, -ENOTSUP,
                                   "system dirs: host %s points to %s, outside "
                                   "/usr: not supported",
                                   top, l->target);
        snprintf(l->name, sizeof(l->name), "%s", top + 1);
        root->n_links++;
        return 0;
}

static int plan_system_dirs(struct jail_root *root, struct vmsnap_diag *d)
{
        struct stat st;
        if (lstat("/usr", &st) < 0 || !S_ISDIR(st.st_mode))
                return vmsnap_diag(d, -ENOTSUP,
                                   "system dirs: the host's /usr is not a "
                                   "directory");
        int r = add_bind(root, "/usr", "/usr", false);
        for (size_t i = 0; r == 0 && i < sizeof(system_tops) / sizeof(system_tops[0]); i++) {
                if (lstat(system_tops[i], &st) < 0)
                        continue; /* this host has none */
                if (S_ISLNK(st.st_mode))
                        r = add_link(root, system_tops[i], d);
                else if (S_ISDIR(st.st_mode))
                        r = add_bind(root, system_tops[i], system_tops[i], false);
        }
        return r;
}

/* The mount flags of the source's mount that the bind keeps: a read-only or noexec source
 * stays so inside the jail, whatever `writable` says. */
static unsigned long source_mount_flags(int fd)
{
        struct statvfs sv;
        if (fstatvfs(fd, &sv) < 0)
                return 0;
        unsigned long f = 0;
        f |= sv.f_flag & ST_RDONLY ? MS_RDONLY : 0;
        f |= sv.f_flag & ST_NOEXEC ? MS_NOEXEC : 0;
        f |= sv.f_flag & ST_NOATIME ? MS_NOATIME : 0;
        f |= sv.f_flag & ST_NODIRATIME ? MS_NODIRATIME : 0;
        f |= sv.f_flag & ST_RELATIME ? MS_RELATIME : 0;
        return f;
}

static int open_source(const char *name, struct jail_bind *b, struct vmsnap_diag *d)
{
        b->src_fd = jail_open_nosymlinks(AT_FDCWD, b->source, 0);
        if (b->src_fd == -ELOOP)
                return vmsnap_diag(d, -ELOOP,
                                   "jail %s: bind source %s: a component of the path "
                                   "is a symbolic link; refused (give the canonical path)",
                                   name, b->source);
        if (b->src_fd < 0)
                return vmsnap_diag(d, b->src_fd, "jail %s: bind source %s: %s", name, b->source,
                                   strerror(-b->src_fd));
        if (fstat(b->src_fd, &b->src_st) < 0)
                return vmsnap_diag(d, -errno, "jail %s: bind source %s: %s", name, b->source,
                                   strerror(errno));
        mode_t t = b->src_st.st_mode & S_IFMT;
        if (t == S_IFLNK)
                return vmsnap_diag(d, -ELOOP,
                                   "jail %s: bind source %s is a symbolic link; "
                                   "refused",
                                   name, b->source);
        if (t != S_IFDIR && t != S_IFREG && t != S_IFSOCK && t != S_IFIFO)
                return vmsnap_diag(d, -EINVAL,
                                   "jail %s: bind source %s is a device or "
                                   "special file; give devices in the spec's devices",
                                   name, b->source);
        b->keep = source_mount_flags(b->src_fd);
        return 0;
}

int jail_binds_plan(const struct vmsnap_jail_spec *s, struct jail_root *root, struct vmsnap_diag *d)
{
        int r = 0;
        for (size_t i = 0; r == 0 && i < s->n_binds; i++)
                r = add_bind(root, s->binds[i].source, s->binds[i].target, s->binds[i].writable);
        if (r == 0 && s->system_dirs)
                r = plan_system_dirs(root, d);
        if (r == -ENOMEM)
                return vmsnap_diag(d, r, "jail %s: out of memory", s->name);
        for (size_t i = 0; r == 0 && i < root->n_binds; i++)
                r = open_source(s->name, &root->binds[i], d);
        return r;
}

/* Creates the mount point of b: a directory for a directory source, else an empty file. */
static int make_target(const char *name, int root_fd, const struct jail_bind *b,
                       struct vmsnap_diag *d)
{
        const char *last;
        _cleanup_close_ int parent = jail_make_parents(root_fd, b->target, &last);
        if (parent < 0)
                return vmsnap_diag(d, parent, "jail %s: cannot create the parents of %s: %s", name,
                                   b->target, strerror(-parent));
        int r;
        if (S_ISDIR(b->src_st.st_mode)) {
                /* 0755 whatever the umask: the jail's uid must traverse it. */
                r = mkdirat(parent, last, 0755) < 0 || fchmodat(parent, last, 0755, 0) < 0 ? -errno
                                                                                           : 0;
        } else {
                int fd = openat(parent, last, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                                0600);
                r = fd < 0 ? -errno : close(fd);
        }
        if (r < 0)
                return vmsnap_diag(d, r, "jail %s: cannot create the mount point %s: %s", name,
                                   b->target, strerror(-r));
        return 0;
}

/* Binds b's source onto its target, then gives the bind its final flags (the first bind
 * takes the source mount's flags; only a remount can change them). */
static int bind_one(const char *name, int root_fd, const struct jail_bind *b, struct vmsnap_diag *d)
{
        char src[32], tgt[32];
        _cleanup_close_ int target = jail_open_nosymlinks(root_fd, b->target + 1, 0);
        if (target < 0)
                return vmsnap_diag(d, target, "jail %s: mount point %s: %s", name, b->target,
                                   strerror(-target));
        jail_fd_path(b->src_fd, src);
        jail_fd_path(target, tgt);
        if (mount(src, tgt, NULL, MS_BIND, NULL) < 0)
                return vmsnap_diag(d, -errno, "jail %s: cannot bind %s on %s: %s", name, b->source,
                                   b->target, strerror(errno));
        /* Reopened through the new mount: the remount must name the bind, not what is
         * under it; and what is mounted must be the inode that was checked. */
        _cleanup_close_ int mounted = jail_open_nosymlinks(root_fd, b->target + 1, 0);
        struct stat st;
        if (mounted < 0 || fstat(mounted, &st) < 0 || st.st_dev != b->src_st.st_dev ||
            st.st_ino != b->src_st.st_ino)
                return vmsnap_diag(d, -EIO, "jail %s: %s is not %s after the bind", name, b->target,
                                   b->source);
        jail_fd_path(mounted, tgt);
        unsigned long flags = MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | b->keep;
        if (!b->writable)
                flags |= MS_RDONLY;
        if (mount(NULL, tgt, NULL, flags, NULL) < 0)
                return vmsnap_diag(d, -errno, "jail %s: cannot remount %s %s: %s", name, b->target,
                                   b->writable ? "nosuid,nodev" : "read-only", strerror(errno));
        return 0;
}

int jail_binds_mount(const struct vmsnap_jail_spec *s, struct jail_root *root,
                     struct vmsnap_diag *d)
{
        /* Every mount point first, then every mount: no directory is ever created inside
         * a bound host directory. */
        for (size_t i = 0; i < root->n_binds; i++) {
                int r = make_target(s->name, root->root_fd, &root->binds[i], d);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < root->n_links; i++)
                if (symlinkat(root->links[i].target, root->root_fd, root->links[i].name) < 0)
                        return vmsnap_diag(d, -errno, "jail %s: cannot link /%s: %s", s->name,
                                           root->links[i].name, strerror(errno));
        for (size_t i = 0; i < root->n_binds; i++) {
                int r = bind_one(s->name, root->root_fd, &root->binds[i], d);
                if (r < 0)
                        return r;
        }
        return 0;
}

void jail_binds_free(struct jail_root *root)
{
        for (size_t i = 0; i < root->n_binds; i++)
                if (root->binds[i].src_fd >= 0)
                        close(root->binds[i].src_fd);
        free(root->binds);
        root->binds = NULL;
        root->n_binds = 0;
}
