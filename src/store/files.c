/* Directory and file helpers for flat snapshot directories: locks, listing, removal in a
 * crash-safe order, sparse-aware hashing and copying. Private to the store; these would
 * fit util/fs.h, and can move there. */
#include "store/internal.h"
#include "util/cleanup.h"
#include "util/fs.h"
#include "util/ids.h"
#include "util/sys.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static const uint8_t zeros[STORE_IO_CHUNK];

int store_lock(int fd, bool exclusive)
{
        if (flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0)
                return 0;
        return errno == EWOULDBLOCK ? -EBUSY : -errno;
}

static bool same_inode(int fd, int dirfd, const char *name)
{
        struct stat a, b;
        return fstat(fd, &a) == 0 && fstatat(dirfd, name, &b, AT_SYMLINK_NOFOLLOW) == 0 &&
               a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

int store_lock_take(const struct vmsnap_store *s, const char *id, bool exclusive)
{
        for (int attempt = 0; attempt < 8; attempt++) {
                int fd = openat(s->lockfd, id, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW,
                                VMSNAP_FILE_MODE);
                if (fd < 0)
                        return -errno;
                fchmod(fd, VMSNAP_FILE_MODE); /* an empty file; exact mode whatever the umask */
                int r = store_lock(fd, exclusive);
                if (r < 0) {
                        close(fd);
                        return r;
                }
                /* The holder before us may have unlinked the file after we opened it: a lock
                 * on an unlinked inode guards nothing, so start over on the current one. */
                if (same_inode(fd, s->lockfd, id))
                        return fd;
                close(fd);
        }
        return -EBUSY;
}

void store_lock_release(const struct vmsnap_store *s, const char *id, int fd)
{
        if (fd < 0)
                return;
        /* Only a sole holder may unlink; others who opened the file meanwhile re-check the
         * inode after locking (store_lock_take), so removing it never loses a lock. */
        if (store_lock(fd, true) == 0 && same_inode(fd, s->lockfd, id))
                unlinkat(s->lockfd, id, 0);
        close(fd);
}

int store_open_snapdir(const struct vmsnap_store *s, const char *id)
{
        int fd = openat(s->snapfd, id, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        return fd < 0 ? -errno : fd;
}

void store_strv_free(char **v)
{
        if (!v)
                return;
        for (char **p = v; *p; p++)
                free(*p);
        free(v);
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every entry name of dirfd except . and .., sorted; a fresh open so offsets are not shared. */
static int read_names(int dirfd, char ***ret, size_t *ret_n)
{
        int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        DIR *dir = fdopendir(fd);
        if (!dir) {
                close(fd);
                return -errno;
        }
        char **v = NULL;
        size_t n = 0, cap = 0;
        int r = 0;
        struct dirent *e;
        while ((e = readdir(dir))) {
                if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                        continue;
                if (n + 2 > cap) {
                        cap = cap ? 2 * cap : 16;
                        char **nv = realloc(v, cap * sizeof(*v));
                        if (!nv) {
                                r = -ENOMEM;
                                break;
                        }
                        v = nv;
                }
                if (!(v[n] = strdup(e->d_name))) {
                        r = -ENOMEM;
                        break;
                }
                v[++n] = NULL;
        }
        closedir(dir);
        if (r == 0 && !v && !(v = calloc(1, sizeof(*v))))
                r = -ENOMEM;
        if (r < 0) {
                store_strv_free(v);
                return r;
        }
        qsort(v, n, sizeof(*v), cmp_str);
        *ret = v;
        *ret_n = n;
        return 0;
}

int store_list_names(int dirfd, char ***ret, size_t *ret_n)
{
        return read_names(dirfd, ret, ret_n);
}

int store_list_files(int dirfd, char ***ret, size_t *ret_n, struct vmsnap_diag *d)
{
        char **all;
        size_t n_all;
        int r = read_names(dirfd, &all, &n_all);
        if (r < 0)
                return vmsnap_diag(d, r, "cannot list the snapshot directory: %s", strerror(-r));
        size_t k = 0;
        for (size_t i = 0; i < n_all; i++) {
                char *name = all[i];
                struct stat st;
                if (name[0] == '.' || strcmp(name, VMSNAP_ENVELOPE_NAME) == 0) {
                        free(name);
                        continue;
                }
                if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        r = vmsnap_diag(d, -errno, "%s: stat failed: %s", name, strerror(errno));
                else if (!S_ISREG(st.st_mode))
                        r = vmsnap_diag(d, -EINVAL,
                                        "%s: not a regular file (a snapshot directory holds "
                                        "only regular files)",
                                        name);
                else if (!store_file_name_valid(name))
                        r = vmsnap_diag(d, -EINVAL, "%.80s: invalid file name for a snapshot",
                                        name);
                if (r < 0) {
                        for (size_t j = i; j < n_all; j++)
                                free(all[j]);
                        all[k] = NULL;
                        store_strv_free(all);
                        return r;
                }
                all[k++] = name;
        }
        all[k] = NULL;
        *ret = all;
        *ret_n = k;
        return 0;
}

int store_remove_temp_files(int dirfd)
{
        char **names;
        size_t n;
        if (read_names(dirfd, &names, &n) < 0)
                return 0;
        int count = 0;
        for (size_t i = 0; i < n; i++)
                if (names[i][0] == '.' && unlinkat(dirfd, names[i], 0) == 0)
                        count++;
        store_strv_free(names);
        return count;
}

/* Removes everything inside dirfd; subdirectories (never expected) recursively, without
 * following symlinks. */
static int remove_contents(int dirfd, int depth)
{
        char **names;
        size_t n;
        int r = read_names(dirfd, &names, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n && r == 0; i++) {
                if (unlinkat(dirfd, names[i], 0) == 0 || errno == ENOENT)
                        continue;
                if (errno != EISDIR || depth > 8) {
                        r = -errno;
                        break;
                }
                int sub = openat(dirfd, names[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
                if (sub < 0) {
                        r = -errno;
                        break;
                }
                r = remove_contents(sub, depth + 1);
                close(sub);
                if (r == 0 && unlinkat(dirfd, names[i], AT_REMOVEDIR) < 0 && errno != ENOENT)
                        r = -errno;
        }
        store_strv_free(names);
        return r;
}

void store_crashpoint(const char *prefix, const char *step)
{
        if (!prefix)
                return;
        char name[128];
        snprintf(name, sizeof(name), "%s.%s", prefix, step);
        vmsnap_crashpoint(name);
}

int store_remove_snapdir(const struct vmsnap_store *s, const char *name, const char *crash,
                         struct vmsnap_diag *d)
{
        _cleanup_close_ int fd = store_open_snapdir(s, name);
        if (fd < 0)
                return fd == -ENOENT ? -ENOENT
                                     : vmsnap_diag(d, fd, "snapshots/%s: cannot open: %s", name,
                                                   strerror(-fd));
        /* The envelope goes first and durably: from here on the directory is no snapshot,
         * so neither reindex nor recovery can take the remains for one. */
        if (unlinkat(fd, VMSNAP_ENVELOPE_NAME, 0) == 0)
                vmsnap_fs_fsync_dir(fd);
        else if (errno != ENOENT)
                return vmsnap_diag(d, -errno, "snapshots/%s/%s: cannot remove: %s", name,
                                   VMSNAP_ENVELOPE_NAME, strerror(errno));
        store_crashpoint(crash, "envelope");
        int r = remove_contents(fd, 0);
        if (r < 0)
                return vmsnap_diag(d, r, "snapshots/%s: cannot remove its files: %s", name,
                                   strerror(-r));
        if (unlinkat(s->snapfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
                return vmsnap_diag(d, -errno, "snapshots/%s: cannot remove: %s", name,
                                   strerror(errno));
        vmsnap_fs_fsync_dir(s->snapfd);
        store_crashpoint(crash, "files");
        return 0;
}

uint64_t store_dir_allocated(int dirfd)
{
        char **names;
        size_t n;
        struct stat self;
        if (read_names(dirfd, &names, &n) < 0)
                return 0;
        uint64_t sum = fstat(dirfd, &self) == 0 ? (uint64_t)self.st_blocks * 512 : 0;
        for (size_t i = 0; i < n; i++) {
                struct stat st;
                if (fstatat(dirfd, names[i], &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
                        sum += (uint64_t)st.st_blocks * 512;
        }
        store_strv_free(names);
        return sum;
}

static int add_region(struct store_region **v, size_t *n, size_t *cap, uint64_t off, uint64_t len)
{
        if (*n == *cap) {
                *cap = *cap ? 2 * *cap : 8;
                struct store_region *nv = realloc(*v, *cap * sizeof(**v));
                if (!nv)
                        return -ENOMEM;
                *v = nv;
        }
        (*v)[(*n)++] = (struct store_region){off, len};
        return 0;
}

int store_data_regions(int fd, uint64_t size, struct store_region **ret, size_t *ret_n)
{
        struct store_region *v = NULL;
        size_t n = 0, cap = 0;
        uint64_t off = 0;
        int r = 0;
        while (r == 0 && off < size) {
                off_t data = lseek(fd, (off_t)off, SEEK_DATA);
                if (data < 0) {
                        if (errno == EINVAL || errno == EOPNOTSUPP)
                                r = add_region(&v, &n, &cap, off, size - off);
                        else if (errno != ENXIO) /* ENXIO: the rest is a hole */
                                r = -errno;
                        break;
                }
                if ((uint64_t)data >= size)
                        break;
                off_t hole = lseek(fd, data, SEEK_HOLE);
                uint64_t end = hole < 0 ? size : MIN((uint64_t)hole, size);
                r = add_region(&v, &n, &cap, (uint64_t)data, end - (uint64_t)data);
                off = end;
        }
        if (r == 0 && !v && !(v = malloc(sizeof(*v))))
                r = -ENOMEM;
        if (r < 0) {
                free(v);
                return r;
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

/* State of one pass over the data regions of a file. */
struct walk {
        int in;
        uint64_t pos; /* logical bytes hashed so far */
        struct vmsnap_hasher *h;
        uint8_t *buf;
        store_sink_fn sink;
        void *sink_ctx;
        store_advance_fn fn;
        void *ctx;
};

static void hash_zeros(struct walk *w, uint64_t upto)
{
        while (w->pos < upto) {
                size_t n = (size_t)MIN(upto - w->pos, (uint64_t)sizeof(zeros));
                vmsnap_hasher_update(w->h, zeros, n);
                w->pos += n;
                if (w->fn)
                        w->fn(w->ctx, n);
        }
}

static int walk_region(struct walk *w, uint64_t off, uint64_t len)
{
        hash_zeros(w, off);
        while (len > 0) {
                size_t n = (size_t)MIN(len, (uint64_t)STORE_IO_CHUNK);
                ssize_t got = vmsnap_fs_pread_full(w->in, w->buf, n, off);
                if (got < 0)
                        return (int)got;
                if ((size_t)got != n)
                        return -ENODATA; /* shrank under us */
                vmsnap_hasher_update(w->h, w->buf, n);
                if (w->sink) {
                        int r = w->sink(w->sink_ctx, off, w->buf, n);
                        if (r < 0)
                                return r;
                }
                if (w->fn)
                        w->fn(w->ctx, n);
                off += n;
                len -= n;
                w->pos = off;
        }
        return 0;
}

int store_read_regions(int fd, uint64_t size, const struct store_region *regions, size_t n,
                       store_sink_fn sink, void *sink_ctx, struct vmsnap_hash *ret,
                       store_advance_fn fn, void *ctx)
{
        _cleanup_free_ uint8_t *buf = malloc(STORE_IO_CHUNK);
        struct walk w = {.in = fd,
                         .h = vmsnap_hasher_new(),
                         .buf = buf,
                         .sink = sink,
                         .sink_ctx = sink_ctx,
                         .fn = fn,
                         .ctx = ctx};
        if (!buf || !w.h) {
                vmsnap_hasher_free(w.h);
                return -ENOMEM;
        }
        posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
        int r = 0;
        for (size_t i = 0; r == 0 && i < n; i++) {
                if (regions[i].off < w.pos || regions[i].off + regions[i].len > size)
                        r = -EINVAL;
                else
                        r = walk_region(&w, regions[i].off, regions[i].len);
        }
        if (r == 0) {
                hash_zeros(&w, size);
                vmsnap_hasher_final(w.h, ret);
        }
        vmsnap_hasher_free(w.h);
        return r;
}

int store_hash_fd(int fd, uint64_t size, struct vmsnap_hash *ret, store_advance_fn fn, void *ctx)
{
        struct store_region *v;
        size_t n;
        int r = store_data_regions(fd, size, &v, &n);
        if (r < 0)
                return r;
        r = store_read_regions(fd, size, v, n, NULL, NULL, ret, fn, ctx);
        free(v);
        return r;
}

struct sparse_sink {
        int fd;
        uint64_t *written;
};

static int sink_pwrite(void *ctx, uint64_t off, const void *buf, size_t len)
{
        struct sparse_sink *s = ctx;
        return vmsnap_fs_pwrite_sparse(s->fd, buf, len, off, s->written);
}

int store_copy_sparse(int in, int out, uint64_t size, struct vmsnap_hash *ret_hash,
                      store_advance_fn fn, void *ctx, uint64_t *ret_written)
{
        struct store_region *v;
        size_t n;
        int r = store_data_regions(in, size, &v, &n);
        if (r < 0)
                return r;
        struct sparse_sink sink = {out, ret_written};
        r = store_read_regions(in, size, v, n, sink_pwrite, &sink, ret_hash, fn, ctx);
        free(v);
        if (r == 0 && ftruncate(out, (off_t)size) < 0)
                r = -errno;
        return r;
}
