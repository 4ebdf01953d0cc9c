/* tar in and out for `vmsnap sandbox cp` (tarx.h). The archive a guest sends is untrusted:
 * each entry's name is checked as text first (relative, no "..", under the expected top),
 * then created by walking its directories one component at a time with O_NOFOLLOW from the
 * destination's fd, so that a symlink the guest sent (or one already there) is never
 * followed, and nothing can be written outside the destination. */
#include "cli/tarx.h"
#include "util/cleanup.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define PATH_MAX_REL 4096
#define DIRS_MAX     65536 /* directories whose mode and time are set at the end */

static int say(char *err, size_t size, int r, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int say(char *err, size_t size, int r, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, size, fmt, ap);
        va_end(ap);
        return r;
}

/* ---- names -------------------------------------------------------------------------------- */

/* Appends "/part" to rel (of length *n). Returns false when it does not fit. */
static bool append(char rel[PATH_MAX_REL], size_t *n, const char *part)
{
        int w = snprintf(rel + *n, PATH_MAX_REL - *n, "/%s", part);
        if (w < 0 || (size_t)w >= PATH_MAX_REL - *n)
                return false;
        *n += (size_t)w;
        return true;
}

/* Rewrites the entry name into rel: top_to, then what follows top_from (top_from "." takes
 * every name). Refuses absolute names, ".." anywhere, and anything not under top_from. */
static int map_name(const char *name, const struct tarx_opts *o, char rel[PATH_MAX_REL],
                    char *err, size_t size)
{
        char copy[PATH_MAX_REL];
        bool any = strcmp(o->top_from, ".") == 0, first = true;
        if (!name || !name[0] || name[0] == '/' || strlen(name) >= sizeof(copy))
                return say(err, size, -EPERM, "refused entry '%.200s': an absolute or empty name",
                           name ? name : "");
        snprintf(copy, sizeof(copy), "%s", name);
        size_t n = (size_t)snprintf(rel, PATH_MAX_REL, "%s", o->top_to);
        for (char *save = NULL, *c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
                if (strcmp(c, ".") == 0)
                        continue;
                if (strcmp(c, "..") == 0)
                        return say(err, size, -EPERM, "refused entry '%.200s': it climbs out "
                                   "with '..'", name);
                if (first && !any && strcmp(c, o->top_from) != 0)
                        return say(err, size, -EPERM, "refused entry '%.200s': it is not under "
                                   "'%s', what was asked for", name, o->top_from);
                if (!(first && !any) && !append(rel, &n, c))
                        return say(err, size, -ENAMETOOLONG, "refused entry '%.200s': too long",
                                   name);
                first = false;
        }
        if (first && !any)
                return say(err, size, -EPERM, "refused entry '%.200s': it is not under '%s'",
                           name, o->top_from);
        return 0;
}

/* ---- walking without following ------------------------------------------------------------ */

/* Opens the directory holding rel (creating missing ones, mode 0700 until the end), walking
 * one component at a time from root with O_NOFOLLOW: a symlink or a file in the way is
 * refused. Sets *ret_leaf to rel's last component. Returns the fd or -errno. */
static int open_parent(int root, char *rel, const char **ret_leaf, bool create, char *err,
                       size_t size)
{
        char *slash = strrchr(rel, '/');
        *ret_leaf = slash ? slash + 1 : rel;
        int fd = fcntl(root, F_DUPFD_CLOEXEC, 3);
        if (fd < 0 || !slash)
                return fd < 0 ? -errno : fd;
        *slash = '\0';
        for (char *save = NULL, *c = strtok_r(rel, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
                int next = openat(fd, c, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (next < 0 && errno == ENOENT && create && mkdirat(fd, c, 0700) == 0)
                        next = openat(fd, c, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (next < 0) {
                        int e = errno;
                        close(fd);
                        *slash = '/';
                        return say(err, size, e == ENOTDIR || e == ELOOP ? -EPERM : -e,
                                   "refused entry '%.200s': '%s' on its way is %s", rel, c,
                                   e == ENOTDIR || e == ELOOP ? "a symlink or not a directory"
                                                              : strerror(e));
                }
                close(fd);
                fd = next;
        }
        *slash = '/';
        return fd;
}

/* A temporary name in a directory, unlikely to exist. */
static void temp_name(char out[40])
{
        uint64_t r = 0;
        if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
                r = (uint64_t)getpid() << 32 ^ (uint64_t)(uintptr_t)out;
        snprintf(out, 40, ".vmsnap-cp-%016llx", (unsigned long long)r);
}

/* Moves tmp over leaf in dir and makes the rename durable. */
static int commit(int dir, const char *tmp, const char *leaf, const char *rel, char *err,
                  size_t size)
{
        if (renameat(dir, tmp, dir, leaf) < 0) {
                int e = errno;
                unlinkat(dir, tmp, 0);
                return say(err, size, -e, "%s: %s%s", rel, strerror(e),
                           e == EISDIR ? " (a directory is in the way)" : "");
        }
        int dfd = openat(dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        int r = dfd >= 0 && fsync(dfd) == 0 ? 0 : -errno;
        if (dfd >= 0)
                close(dfd);
        return r < 0 ? say(err, size, r, "%s: fsync of its directory: %s", rel, strerror(-r)) : 0;
}

/* ---- entries ------------------------------------------------------------------------------ */

struct dir_fix {
        char *rel;
        mode_t mode;
        struct timespec mtime;
};

struct extract {
        struct archive *a;
        const struct tarx_opts *o;
        struct tarx_stats *st;
        struct dir_fix *dirs;
        size_t n_dirs;
        char *err;
        size_t size;
};

static int make_dir(struct extract *x, int parent, const char *leaf, char *rel,
                    struct archive_entry *e)
{
        struct stat sb;
        if (mkdirat(parent, leaf, 0700) < 0 && errno != EEXIST)
                return say(x->err, x->size, -errno, "%s: %s", rel, strerror(errno));
        if (fstatat(parent, leaf, &sb, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(sb.st_mode))
                return say(x->err, x->size, -EPERM, "refused entry '%.200s': something that is "
                           "not a directory is in its place", rel);
        if (x->n_dirs < DIRS_MAX) {
                struct dir_fix *d = realloc(x->dirs, (x->n_dirs + 1) * sizeof(*d));
                if (!d || !(d[x->n_dirs].rel = strdup(rel)))
                        return say(x->err, x->size, -ENOMEM, "out of memory");
                d[x->n_dirs].mode = archive_entry_perm(e);
                d[x->n_dirs].mtime = (struct timespec){archive_entry_mtime(e),
                                                       archive_entry_mtime_nsec(e)};
                x->dirs = d;
                x->n_dirs++;
        }
        x->st->dirs++;
        return 0;
}

/* Copies what src_fd holds (a hard link's target) into fd. */
static int copy_fd(int src_fd, int fd, uint64_t *ret)
{
        char buf[65536];
        ssize_t n;
        *ret = 0;
        while ((n = read(src_fd, buf, sizeof(buf))) > 0) {
                for (ssize_t o = 0; o < n;) {
                        ssize_t w = write(fd, buf + o, (size_t)(n - o));
                        if (w < 0)
                                return -errno;
                        o += w;
                }
                *ret += (uint64_t)n;
        }
        return n < 0 ? -errno : 0;
}

/* A hard link: a copy of its target, which must be a file already unpacked under the top. */
static int link_source(struct extract *x, const char *target, char *err, size_t size)
{
        char rel[PATH_MAX_REL];
        const char *leaf;
        int r = map_name(target, x->o, rel, err, size);
        if (r < 0)
                return r;
        int dir = open_parent(x->o->dest_fd, rel, &leaf, false, err, size);
        if (dir < 0)
                return dir;
        int fd = openat(dir, leaf, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        close(dir);
        return fd < 0 ? say(err, size, -EPERM, "refused hard link to '%.200s': not a file "
                            "unpacked before it", target)
                      : fd;
}

static int make_file(struct extract *x, int parent, const char *leaf, const char *rel,
                     struct archive_entry *e)
{
        char tmp[40];
        temp_name(tmp);
        const char *target = archive_entry_hardlink(e);
        _cleanup_close_ int src = target ? link_source(x, target, x->err, x->size) : -1;
        if (target && src < 0)
                return src;
        _cleanup_close_ int fd = openat(parent, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
                                                     O_CLOEXEC, 0600);
        if (fd < 0)
                return say(x->err, x->size, -errno, "%s: %s", rel, strerror(errno));
        uint64_t copied = 0;
        int r = target ? copy_fd(src, fd, &copied)
                       : archive_read_data_into_fd(x->a, fd) == ARCHIVE_OK ? 0 : -EIO;
        struct timespec times[2] = {{0, UTIME_OMIT},
                                    {archive_entry_mtime(e), archive_entry_mtime_nsec(e)}};
        if (r == 0 && (fchmod(fd, archive_entry_perm(e) & 07777) < 0 || futimens(fd, times) < 0 ||
                       fsync(fd) < 0))
                r = -errno;
        if (r < 0) {
                unlinkat(parent, tmp, 0);
                return say(x->err, x->size, r, "%s: %s", rel,
                           r == -EIO ? archive_error_string(x->a) : strerror(-r));
        }
        x->st->files++;
        x->st->bytes += target ? copied : (uint64_t)archive_entry_size(e);
        return commit(parent, tmp, leaf, rel, x->err, x->size);
}

static int make_symlink(struct extract *x, int parent, const char *leaf, const char *rel,
                        struct archive_entry *e)
{
        char tmp[40];
        const char *target = archive_entry_symlink(e);
        temp_name(tmp);
        if (!target || symlinkat(target, parent, tmp) < 0)
                return say(x->err, x->size, -EINVAL, "%s: a symlink without a target", rel);
        x->st->symlinks++;
        return commit(parent, tmp, leaf, rel, x->err, x->size);
}

static int one_entry(struct extract *x, struct archive_entry *e)
{
        char rel[PATH_MAX_REL];
        const char *leaf;
        int r = map_name(archive_entry_pathname(e), x->o, rel, x->err, x->size);
        if (r < 0)
                return r;
        mode_t type = archive_entry_filetype(e);
        bool hardlink = archive_entry_hardlink(e) != NULL;
        if (!hardlink && type != AE_IFDIR && type != AE_IFREG && type != AE_IFLNK) {
                x->st->skipped++; /* devices, fifos, sockets: not copied */
                return 0;
        }
        _cleanup_close_ int parent = open_parent(x->o->dest_fd, rel, &leaf, true, x->err, x->size);
        if (parent < 0)
                return parent;
        if (type == AE_IFDIR && !hardlink)
                return make_dir(x, parent, leaf, rel, e);
        if (type == AE_IFLNK && !hardlink)
                return make_symlink(x, parent, leaf, rel, e);
        return make_file(x, parent, leaf, rel, e);
}

/* Directories get their modes and times last (a read-only one still took its children). */
static void fix_dirs(struct extract *x)
{
        for (size_t i = x->n_dirs; i-- > 0;) {
                const char *leaf;
                char err[16];
                int parent = open_parent(x->o->dest_fd, x->dirs[i].rel, &leaf, false, err,
                                         sizeof(err));
                int fd = parent >= 0 ? openat(parent, leaf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
                                                                O_CLOEXEC)
                                     : -1;
                struct timespec times[2] = {{0, UTIME_OMIT}, x->dirs[i].mtime};
                if (fd >= 0 && (fchmod(fd, x->dirs[i].mode & 07777) < 0 ||
                                futimens(fd, times) < 0)) {
                        /* best effort: the contents are in place */
                }
                if (fd >= 0)
                        close(fd);
                if (parent >= 0)
                        close(parent);
                free(x->dirs[i].rel);
        }
        free(x->dirs);
}

int tarx_extract(int in_fd, const struct tarx_opts *o, struct tarx_stats *st, char *err,
                 size_t size)
{
        struct extract x = {.a = archive_read_new(), .o = o, .st = st, .err = err, .size = size};
        struct archive_entry *e;
        int r = 0;
        *st = (struct tarx_stats){0};
        if (!x.a)
                return say(err, size, -ENOMEM, "out of memory");
        archive_read_support_format_tar(x.a);
        archive_read_support_format_gnutar(x.a);
        if (archive_read_open_fd(x.a, in_fd, 65536) != ARCHIVE_OK)
                r = say(err, size, -EIO, "%s", archive_error_string(x.a));
        while (r == 0) {
                int h = archive_read_next_header(x.a, &e);
                if (h == ARCHIVE_EOF)
                        break;
                if (h != ARCHIVE_OK && h != ARCHIVE_WARN) {
                        r = say(err, size, -EIO, "the archive from the guest: %s",
                                archive_error_string(x.a));
                        break;
                }
                r = one_entry(&x, e);
        }
        fix_dirs(&x);
        archive_read_free(x.a);
        return r;
}

/* ---- creating ----------------------------------------------------------------------------- */

/* The name of a walked path: top plus what follows the source path. */
static int entry_name(const char *src, const char *walked, const char *top, char out[PATH_MAX_REL])
{
        size_t n = strlen(src);
        if (strncmp(walked, src, n) != 0 || (walked[n] && walked[n] != '/'))
                return -EINVAL;
        int w = snprintf(out, PATH_MAX_REL, "%s%s", top, walked + n);
        return w < 0 || w >= PATH_MAX_REL ? -ENAMETOOLONG : 0;
}

/* Copies one regular file's data from the disk reader to the writer. */
static int copy_data(struct archive *disk, struct archive *w)
{
        const void *buf;
        size_t len;
        la_int64_t off;
        int h;
        while ((h = archive_read_data_block(disk, &buf, &len, &off)) == ARCHIVE_OK)
                if (archive_write_data(w, buf, len) < 0)
                        return -EIO;
        return h == ARCHIVE_EOF ? 0 : -EIO;
}

static int write_entry(struct archive *disk, struct archive *w, struct archive_entry *e,
                       const char *path, const char *top, struct tarx_stats *st, char *err,
                       size_t size)
{
        char name[PATH_MAX_REL];
        if (entry_name(path, archive_entry_pathname(e), top, name) < 0)
                return say(err, size, -ENAMETOOLONG, "%s: a name too long for the archive",
                           archive_entry_pathname(e));
        archive_entry_set_pathname(e, name);
        archive_entry_set_uid(e, 0);
        archive_entry_set_gid(e, 0);
        archive_entry_set_uname(e, "root");
        archive_entry_set_gname(e, "root");
        if (archive_write_header(w, e) != ARCHIVE_OK)
                return say(err, size, -EIO, "%s: %s", name, archive_error_string(w));
        mode_t type = archive_entry_filetype(e);
        st->files += type == AE_IFREG;
        st->dirs += type == AE_IFDIR;
        st->symlinks += type == AE_IFLNK;
        if (type != AE_IFREG || archive_entry_size(e) == 0)
                return 0;
        st->bytes += (uint64_t)archive_entry_size(e);
        return copy_data(disk, w) < 0 ? say(err, size, -EIO, "%s: %s", path,
                                            archive_error_string(disk))
                                      : 0;
}

int tarx_create(const char *path, const char *top, int out_fd, struct tarx_stats *st, char *err,
                size_t size)
{
        struct archive *disk = archive_read_disk_new(), *w = archive_write_new();
        struct archive_entry *e = archive_entry_new();
        int r = disk && w && e ? 0 : say(err, size, -ENOMEM, "out of memory");
        *st = (struct tarx_stats){0};
        if (r == 0) {
                archive_read_disk_set_symlink_physical(disk); /* symlinks as symlinks */
                archive_write_set_format_gnutar(w);
                archive_write_set_bytes_in_last_block(w, 1);
                if (archive_read_disk_open(disk, path) != ARCHIVE_OK)
                        r = say(err, size, -ENOENT, "%s", archive_error_string(disk));
                else if (archive_write_open_fd(w, out_fd) != ARCHIVE_OK)
                        r = say(err, size, -EIO, "%s", archive_error_string(w));
        }
        while (r == 0) {
                int h = archive_read_next_header2(disk, e);
                if (h == ARCHIVE_EOF)
                        break;
                if (h != ARCHIVE_OK && h != ARCHIVE_WARN) {
                        r = say(err, size, -EIO, "%s", archive_error_string(disk));
                        break;
                }
                archive_read_disk_descend(disk);
                r = write_entry(disk, w, e, path, top, st, err, size);
                archive_entry_clear(e);
        }
        if (w && r == 0 && archive_write_close(w) != ARCHIVE_OK)
                r = say(err, size, -EIO, "%s", archive_error_string(w));
        archive_entry_free(e);
        archive_write_free(w);
        archive_read_free(disk);
        return r;
}
