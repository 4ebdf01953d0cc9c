/* Export: a snapshot as a pax tar stream (snapshot.json first, sparse files as GNU sparse
 * 1.0 entries, zstd/gzip/none), or as a plain directory. The snapshot is held under the
 * shared store lock, and every byte read is hashed and compared with the envelope, so a
 * corrupted snapshot fails the export instead of travelling. Layout: docs/store.md. */
#include "store/internal.h"
#include "util/cleanup.h"
#include "util/fs.h"
#include "util/ids.h"

#include <vmsnap/disk.h>

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const uint8_t zero_chunk[STORE_IO_CHUNK];

int vmsnap_compression_parse(const char *s, enum vmsnap_compression *ret)
{
        if (!s)
                return -EINVAL;
        if (strcmp(s, "zstd") == 0)
                *ret = VMSNAP_COMPRESSION_ZSTD;
        else if (strcmp(s, "gzip") == 0 || strcmp(s, "gz") == 0)
                *ret = VMSNAP_COMPRESSION_GZIP;
        else if (strcmp(s, "none") == 0)
                *ret = VMSNAP_COMPRESSION_NONE;
        else
                return -EINVAL;
        return 0;
}

/* Progress over the whole export (logical bytes, holes included). */
struct progress {
        uint64_t done, total;
        vmsnap_progress_fn fn;
        void *ctx;
};

static void advance(void *ctx, uint64_t bytes)
{
        struct progress *p = ctx;
        p->done += bytes;
        if (p->fn)
                p->fn(p->ctx, p->done, p->total);
}

static int archive_fail(struct archive *a, const char *what, struct vmsnap_diag *d)
{
        int err = archive_errno(a);
        return vmsnap_diag(d, err > 0 ? -err : -EIO, "%s: %s", what,
                           archive_error_string(a) ? archive_error_string(a) : "archive error");
}

/* zstd workers: what was asked, else one per online CPU up to 4 (compression, not reading
 * and hashing, is what limits an export). */
static int zstd_threads(const struct vmsnap_export_opts *o)
{
        if (o->threads > 0)
                return o->threads;
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        return n < 1 ? 1 : n > 4 ? 4 : (int)n;
}

static int set_filter(struct archive *a, const struct vmsnap_export_opts *o, struct vmsnap_diag *d)
{
        const char *name = NULL;
        int r = ARCHIVE_OK;
        switch (o->compression) {
        case VMSNAP_COMPRESSION_ZSTD:
                name = "zstd";
                r = archive_write_add_filter_zstd(a);
                if (r == ARCHIVE_OK && zstd_threads(o) > 1) {
                        char n[16];
                        snprintf(n, sizeof(n), "%d", zstd_threads(o));
                        archive_write_set_filter_option(a, "zstd", "threads", n);
                }
                break;
        case VMSNAP_COMPRESSION_GZIP:
                name = "gzip";
                r = archive_write_add_filter_gzip(a);
                /* no timestamp in the gzip header: the same snapshot, the same bytes */
                if (r == ARCHIVE_OK)
                        archive_write_set_filter_option(a, "gzip", "timestamp", NULL);
                break;
        case VMSNAP_COMPRESSION_NONE:
                return 0;
        }
        if (r != ARCHIVE_OK)
                return archive_fail(a, "compression", d);
        if (o->level > 0) {
                char level[16];
                snprintf(level, sizeof(level), "%d", o->level);
                if (archive_write_set_filter_option(a, name, "compression-level", level) !=
                    ARCHIVE_OK)
                        return archive_fail(a, "compression level", d);
        }
        /* A compressed stream needs no tar block padding at its end. */
        archive_write_set_bytes_in_last_block(a, 1);
        return 0;
}

static int open_archive(int fd, const struct vmsnap_export_opts *o, struct archive **ret,
                        struct vmsnap_diag *d)
{
        struct archive *a = archive_write_new();
        if (!a)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        int r = archive_write_set_format_pax_restricted(a) == ARCHIVE_OK
                    ? set_filter(a, o, d)
                    : archive_fail(a, "tar format", d);
        if (r == 0 && archive_write_open_fd(a, fd) != ARCHIVE_OK)
                r = archive_fail(a, "export", d);
        if (r < 0) {
                archive_write_free(a);
                return r;
        }
        *ret = a;
        return 0;
}

static struct archive_entry *new_entry(const char *name, uint64_t size, int64_t mtime)
{
        struct archive_entry *e = archive_entry_new();
        if (!e)
                return NULL;
        archive_entry_set_pathname(e, name);
        archive_entry_set_size(e, (la_int64_t)size);
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0644);
        archive_entry_set_mtime(e, (time_t)mtime, 0);
        archive_entry_set_uid(e, 0);
        archive_entry_set_gid(e, 0);
        return e;
}

static int write_all(struct archive *a, const void *buf, size_t len)
{
        while (len > 0) {
                la_ssize_t n = archive_write_data(a, buf, len);
                if (n <= 0)
                        return -EIO;
                buf = (const uint8_t *)buf + n;
                len -= (size_t)n;
        }
        return 0;
}

static int write_envelope(struct archive *a, const char *text, size_t len, int64_t mtime,
                          struct vmsnap_diag *d)
{
        struct archive_entry *e = new_entry(VMSNAP_ENVELOPE_NAME, len, mtime);
        if (!e)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        int r = archive_write_header(a, e) == ARCHIVE_OK && write_all(a, text, len) == 0
                    ? 0
                    : archive_fail(a, VMSNAP_ENVELOPE_NAME, d);
        archive_entry_free(e);
        return r;
}

/* Where the next byte of the current entry goes; holes are fed as zeros, which the pax
 * writer skips for the ranges its sparse map declares as holes. */
struct entry_sink {
        struct archive *a;
        uint64_t pos;
};

static int feed_zeros(struct entry_sink *s, uint64_t upto)
{
        while (s->pos < upto) {
                size_t n = (size_t)MIN(upto - s->pos, (uint64_t)sizeof(zero_chunk));
                if (write_all(s->a, zero_chunk, n) < 0)
                        return -EIO;
                s->pos += n;
        }
        return 0;
}

static int sink_archive(void *ctx, uint64_t off, const void *buf, size_t len)
{
        struct entry_sink *s = ctx;
        if (feed_zeros(s, off) < 0 || write_all(s->a, buf, len) < 0)
                return -EIO;
        s->pos = off + len;
        return 0;
}

/* Declares the holes of a file in its entry: one data region covering the file means dense. */
static void add_sparse_map(struct archive_entry *e, uint64_t size, const struct store_region *v,
                           size_t n)
{
        if (size == 0 || (n == 1 && v[0].off == 0 && v[0].len == size))
                return;
        for (size_t i = 0; i < n; i++)
                archive_entry_sparse_add_entry(e, (la_int64_t)v[i].off, (la_int64_t)v[i].len);
        if (n == 0 || v[n - 1].off + v[n - 1].len < size)
                archive_entry_sparse_add_entry(e, (la_int64_t)size, 0); /* trailing hole */
}

/* Writes fd (size bytes) as the entry `name`, holes declared as sparse, and hashes what it
 * read into *ret. */
static int write_entry(struct archive *a, int fd, const char *name, uint64_t size, int64_t mtime,
                       struct progress *p, struct vmsnap_hash *ret, struct vmsnap_diag *d)
{
        _cleanup_free_ struct store_region *v = NULL;
        size_t n;
        int r = store_data_regions(fd, size, &v, &n);
        if (r < 0)
                return vmsnap_diag(d, r, "%s: cannot map its data: %s", name, strerror(-r));
        struct archive_entry *e = new_entry(name, size, mtime);
        if (!e)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        add_sparse_map(e, size, v, n);
        r = archive_write_header(a, e) == ARCHIVE_OK ? 0 : archive_fail(a, name, d);
        archive_entry_free(e);
        if (r < 0)
                return r;
        struct entry_sink sink = {.a = a};
        r = store_read_regions(fd, size, v, n, sink_archive, &sink, ret, advance, p);
        if (r == 0)
                r = feed_zeros(&sink, size);
        if (r == -EIO)
                return archive_fail(a, name, d);
        return r < 0 ? vmsnap_diag(d, r, "%s: cannot read: %s", name, strerror(-r)) : 0;
}

/* Opens a listed file of the snapshot and checks its size against the envelope. */
static int open_listed(int dirfd, const struct vmsnap_snapshot_file *f, struct vmsnap_diag *d)
{
        struct stat st;
        int fd = vmsnap_fs_open_regular(dirfd, f->name, &st, false);
        if (fd < 0)
                return vmsnap_diag(d, fd, "%s: cannot open: %s", f->name,
                                   vmsnap_fs_open_error(fd));
        if ((uint64_t)st.st_size == f->size)
                return fd;
        close(fd);
        return vmsnap_diag(d, -EBADMSG, "%s: size %llu, the envelope says %llu: the snapshot is "
                           "corrupted", f->name, (unsigned long long)st.st_size,
                           (unsigned long long)f->size);
}

static int check_sum(const struct vmsnap_snapshot_file *f, const struct vmsnap_hash *h,
                     struct vmsnap_diag *d)
{
        return memcmp(h, &f->checksum, sizeof(*h)) == 0
                   ? 0
                   : vmsnap_diag(d, -EBADMSG, "%s: checksum mismatch: the snapshot is corrupted "
                                 "(run `vmsnap snapshot verify`)", f->name);
}

static int write_file(struct archive *a, int dirfd, const struct vmsnap_snapshot_file *f,
                      int64_t mtime, struct progress *p, struct vmsnap_diag *d)
{
        _cleanup_close_ int fd = open_listed(dirfd, f, d);
        if (fd < 0)
                return fd;
        struct vmsnap_hash h;
        int r = write_entry(a, fd, f->name, f->size, mtime, p, &h, d);
        return r < 0 ? r : check_sum(f, &h, d);
}

/* ---- the base image --------------------------------------------------------------------- */

/* The base image an export carries: the pinned image the snapshot's overlay stands on. */
struct base_out {
        char name[VMSNAP_BASE_NAME_LEN + 1]; /* "" = none to carry */
        int fd;
        uint64_t size;
};

/* Finds and opens the base image to carry (none when no_base or no overlay). */
static int base_open(struct vmsnap_store *s, int dirfd, const struct store_envelope *env,
                     const struct vmsnap_export_opts *o, struct base_out *b,
                     struct vmsnap_diag *d)
{
        *b = (struct base_out){.fd = -1};
        if (o->no_base || !store_envelope_find(env, VMSNAP_ROOTFS_OVERLAY))
                return 0;
        struct vmsnap_disk_meta m;
        int r = vmsnap_disk_meta_read(dirfd, env->rec.id, &m, d);
        if (r == -ENOENT)
                return vmsnap_diag(d, -ENOENT, "snapshot %s has a disk overlay but no "
                                   VMSNAP_ROOTFS_META ": its base image is unknown; export it "
                                   "with --no-base", env->rec.id);
        _cleanup_close_ int images = r < 0 ? r : vmsnap_disk_images_open(s->root, false, d);
        struct stat st;
        int fd = images < 0 ? images : vmsnap_fs_open_regular(images, m.base, &st, false);
        if (r < 0)
                return r;
        if (fd < 0)
                return vmsnap_diag(d, fd, "%s/" VMSNAP_IMAGES_DIR "/%s: %s: the base image of "
                                   "snapshot %s; export it with --no-base to leave it out",
                                   s->root, m.base, vmsnap_fs_open_error(fd), env->rec.id);
        memcpy(b->name, m.base, sizeof(b->name));
        b->fd = fd;
        b->size = (uint64_t)st.st_size;
        return 0;
}

/* What was read of the base matches the hash in its name: a damaged base does not travel. */
static int base_check(const struct base_out *b, const struct vmsnap_hash *h,
                      struct vmsnap_diag *d)
{
        char got[VMSNAP_BASE_NAME_LEN + 1];
        vmsnap_disk_base_name(h, got);
        return strcmp(got, b->name) == 0
                   ? 0
                   : vmsnap_diag(d, -EBADMSG, VMSNAP_IMAGES_DIR "/%s: its content hashes to %s: "
                                 "the pinned image is corrupted", b->name, got);
}

static void base_close(struct base_out *b)
{
        if (b->fd >= 0)
                close(b->fd);
        b->fd = -1;
}

static int write_base(struct archive *a, const struct base_out *b, int64_t mtime,
                      struct progress *p, struct vmsnap_diag *d)
{
        if (!b->name[0])
                return 0;
        char name[64];
        snprintf(name, sizeof(name), VMSNAP_IMAGES_DIR "/%s", b->name);
        struct vmsnap_hash h;
        int r = write_entry(a, b->fd, name, b->size, mtime, p, &h, d);
        return r < 0 ? r : base_check(b, &h, d);
}

static int export_entries(struct archive *a, int dirfd, const struct store_envelope *env,
                          const struct base_out *b, const char *raw, size_t raw_len,
                          struct progress *p, struct vmsnap_diag *d)
{
        int r = write_envelope(a, raw, raw_len, env->rec.created, d);
        for (size_t i = 0; r == 0 && i < env->n_files; i++)
                r = write_file(a, dirfd, &env->files[i], env->rec.created, p, d);
        if (r == 0) /* after the files: the importer has read rootfs.meta by then */
                r = write_base(a, b, env->rec.created, p, d);
        if (r == 0 && archive_write_close(a) != ARCHIVE_OK)
                r = archive_fail(a, "finishing the archive", d);
        return r;
}

int vmsnap_store_export_fd(struct vmsnap_store *s, const char *id, int fd,
                           const struct vmsnap_export_opts *opts, struct vmsnap_diag *d)
{
        struct vmsnap_export_opts none = {0};
        const struct vmsnap_export_opts *o = opts ? opts : &none;
        struct store_envelope env;
        int lock = -1, dirfd = store_open_ready(s, id, &env, &lock, d);
        if (dirfd < 0)
                return dirfd;
        _cleanup_free_ char *raw = NULL;
        size_t raw_len;
        struct archive *a = NULL;
        struct progress p = {.fn = o->progress, .ctx = o->progress_ctx};
        struct base_out b;
        int r = base_open(s, dirfd, &env, o, &b, d);
        for (size_t i = 0; i < env.n_files; i++)
                p.total += env.files[i].size;
        p.total += b.size;
        if (r == 0)
                r = store_envelope_read(dirfd, &raw, &raw_len, d);
        if (r == 0)
                r = open_archive(fd, o, &a, d);
        if (r == 0)
                r = export_entries(a, dirfd, &env, &b, raw, raw_len, &p, d);
        if (a)
                archive_write_free(a);
        base_close(&b);
        store_envelope_clear(&env);
        close(dirfd);
        if (r == 0)
                vmsnap_store_touch(s, id, NULL);
        store_lock_release(s, id, lock);
        return r;
}

/* Opens dir for an export: created when missing (*ret_created), else it must be empty. */
static int open_target(const char *dir, bool *ret_created, struct vmsnap_diag *d)
{
        int r = vmsnap_fs_mkdir_private(AT_FDCWD, dir);
        *ret_created = r == 0;
        if (r < 0 && r != -EEXIST)
                return vmsnap_diag(d, r, "%s: cannot create: %s", dir, strerror(-r));
        int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return vmsnap_diag(d, -errno, "%s: cannot open: %s", dir, strerror(errno));
        char **names;
        size_t n;
        r = store_list_files(fd, &names, &n, NULL);
        if (r == 0) {
                store_strv_free(names);
                struct stat st;
                if (n > 0 || fstatat(fd, VMSNAP_ENVELOPE_NAME, &st, AT_SYMLINK_NOFOLLOW) == 0)
                        r = -ENOTEMPTY;
        }
        if (r < 0) {
                close(fd);
                return vmsnap_diag(d, r == -ENOTEMPTY ? r : -ENOTEMPTY,
                                   "%s: the export directory must be empty or not exist", dir);
        }
        return fd;
}

/* Copies in (size bytes) to dstfd/name through a staged file, holes kept; *ret gets the
 * content's hash and the caller's check decides before the file takes its name. */
static int copy_staged(int in, int dstfd, const char *name, uint64_t size, struct progress *p,
                       int (*check)(const void *what, const struct vmsnap_hash *h,
                                    struct vmsnap_diag *d),
                       const void *what, struct vmsnap_diag *d)
{
        struct vmsnap_staged out;
        int r = vmsnap_staged_open(&out, dstfd, name, d);
        if (r < 0)
                return r;
        struct vmsnap_hash h;
        r = store_copy_sparse(in, out.fd, size, &h, advance, p, NULL);
        if (r < 0)
                r = vmsnap_diag(d, r, "%s: copy failed: %s", name, strerror(-r));
        else
                r = check(what, &h, d);
        if (r == 0)
                r = vmsnap_staged_commit(&out, d);
        if (r < 0)
                vmsnap_staged_abort(&out);
        return r;
}

static int check_file_sum(const void *what, const struct vmsnap_hash *h, struct vmsnap_diag *d)
{
        return check_sum(what, h, d);
}

static int check_base_sum(const void *what, const struct vmsnap_hash *h, struct vmsnap_diag *d)
{
        return base_check(what, h, d);
}

static int copy_out(int srcfd, int dstfd, const struct vmsnap_snapshot_file *f, struct progress *p,
                    struct vmsnap_diag *d)
{
        _cleanup_close_ int in = open_listed(srcfd, f, d);
        return in < 0 ? in : copy_staged(in, dstfd, f->name, f->size, p, check_file_sum, f, d);
}

/* DIR/images/<base>, when the export carries one. */
static int copy_base_out(int dstfd, const struct base_out *b, struct progress *p,
                         struct vmsnap_diag *d)
{
        if (!b->name[0])
                return 0;
        int r = vmsnap_fs_mkdir_private(dstfd, VMSNAP_IMAGES_DIR);
        _cleanup_close_ int idir = r < 0 ? r
                                         : openat(dstfd, VMSNAP_IMAGES_DIR,
                                                  O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (idir < 0)
                return vmsnap_diag(d, r < 0 ? r : -errno, VMSNAP_IMAGES_DIR ": cannot create: %s",
                                   strerror(r < 0 ? -r : errno));
        r = copy_staged(b->fd, idir, b->name, b->size, p, check_base_sum, b, d);
        if (r == 0 && (r = vmsnap_fs_fsync_dir(idir)) < 0)
                vmsnap_diag(d, r, VMSNAP_IMAGES_DIR ": fsync failed");
        return r;
}

/* Removes what a failed export wrote (the directory was empty before). */
static void undo_target(int fd, const char *dir, bool created)
{
        char **names;
        size_t n;
        unlinkat(fd, VMSNAP_ENVELOPE_NAME, 0);
        int idir = openat(fd, VMSNAP_IMAGES_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (idir >= 0) {
                store_remove_temp_files(idir);
                if (store_list_files(idir, &names, &n, NULL) == 0) {
                        for (size_t i = 0; i < n; i++)
                                unlinkat(idir, names[i], 0);
                        store_strv_free(names);
                }
                close(idir);
                unlinkat(fd, VMSNAP_IMAGES_DIR, AT_REMOVEDIR);
        }
        store_remove_temp_files(fd);
        if (store_list_files(fd, &names, &n, NULL) == 0) {
                for (size_t i = 0; i < n; i++)
                        unlinkat(fd, names[i], 0);
                store_strv_free(names);
        }
        if (created)
                rmdir(dir);
}

int vmsnap_store_export_dir(struct vmsnap_store *s, const char *id, const char *dir,
                            const struct vmsnap_export_opts *opts, struct vmsnap_diag *d)
{
        struct vmsnap_export_opts none = {0};
        const struct vmsnap_export_opts *o = opts ? opts : &none;
        struct store_envelope env;
        int lock = -1, srcfd = store_open_ready(s, id, &env, &lock, d);
        if (srcfd < 0)
                return srcfd;
        bool created = false;
        _cleanup_free_ char *raw = NULL;
        size_t raw_len;
        struct progress p = {.fn = o->progress, .ctx = o->progress_ctx};
        struct base_out b;
        int r = base_open(s, srcfd, &env, o, &b, d);
        for (size_t i = 0; i < env.n_files; i++)
                p.total += env.files[i].size;
        p.total += b.size;
        int dstfd = r < 0 ? -1 : open_target(dir, &created, d);
        if (r == 0)
                r = dstfd < 0 ? dstfd : store_envelope_read(srcfd, &raw, &raw_len, d);
        for (size_t i = 0; r == 0 && i < env.n_files; i++)
                r = copy_out(srcfd, dstfd, &env.files[i], &p, d);
        if (r == 0)
                r = copy_base_out(dstfd, &b, &p, d);
        base_close(&b);
        if (r == 0 && vmsnap_fs_fsync_dir(dstfd) < 0)
                r = vmsnap_diag(d, -EIO, "%s: fsync failed", dir);
        /* The envelope last: a directory with one is complete. */
        if (r == 0)
                r = vmsnap_fs_atomic_write(dstfd, VMSNAP_ENVELOPE_NAME, raw, raw_len, d);
        if (r < 0 && dstfd >= 0)
                undo_target(dstfd, dir, created);
        if (dstfd >= 0)
                close(dstfd);
        store_envelope_clear(&env);
        close(srcfd);
        if (r == 0)
                vmsnap_store_touch(s, id, NULL);
        store_lock_release(s, id, lock);
        return r;
}
