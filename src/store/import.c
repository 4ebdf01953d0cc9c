/* Import: a tar stream (compression detected) or an exported directory becomes a snapshot
 * through the two-phase create; the pending directory is the staging directory. Archives
 * are outside input: every entry must be a regular file with a plain name that the
 * envelope lists with exactly that size; links, devices, paths, duplicates, oversized
 * claims and truncated streams are refused; every checksum (and the memory snapshot) is
 * verified before commit. Any refusal aborts the create and leaves nothing behind. Crash
 * points store.import.{envelope,data,verified}. Rules: docs/store.md. */
#include "store/internal.h"
#include "util/cleanup.h"
#include "util/fs.h"
#include "util/ids.h"
#include "util/sys.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define REFUSE(d, ...) vmsnap_diag(d, -EBADMSG, "refusing the import: " __VA_ARGS__)

static const uint8_t zero_chunk[STORE_IO_CHUNK];

struct import {
        struct vmsnap_store *s;
        const struct vmsnap_import_opts *o;
        struct store_envelope env; /* as the archive declares it */
        bool *seen;
        size_t n_seen;
        struct vmsnap_store_txn *t;
        uint64_t done, total;
};

static void advance(struct import *im, uint64_t bytes)
{
        im->done += bytes;
        if (im->o->progress)
                im->o->progress(im->o->progress_ctx, im->done, im->total);
}

/* Checks the declared sizes against the limit (a huge sparse claim costs no disk, but hashing
 * its zeros would take hours). */
static int check_envelope(struct import *im, struct vmsnap_diag *d)
{
        uint64_t max = im->o->max_bytes ? im->o->max_bytes : VMSNAP_IMPORT_DEFAULT_MAX;
        im->total = 0;
        for (size_t i = 0; i < im->env.n_files; i++) {
                im->total += im->env.files[i].size;
                if (im->total > max)
                        return REFUSE(d,
                                      "the snapshot declares more than %llu bytes (%s is %llu "
                                      "bytes); raise the limit with --max-size if it is genuine",
                                      (unsigned long long)max, im->env.files[i].name,
                                      (unsigned long long)im->env.files[i].size);
        }
        im->seen = calloc(im->env.n_files, sizeof(*im->seen));
        return im->seen ? 0 : vmsnap_diag(d, -ENOMEM, "out of memory");
}

/* The id to keep: the archive's when it is free here, else a new one. */
static const char *pick_id(struct import *im)
{
        struct vmsnap_snapshot other;
        struct stat st;
        if (store_row_get(im->s, im->env.rec.id, &other, NULL) == 0 ||
            fstatat(im->s->snapfd, im->env.rec.id, &st, AT_SYMLINK_NOFOLLOW) == 0)
                return NULL;
        return im->env.rec.id;
}

/* A lineage reference is kept only when it names a ready row here. */
static const char *local_ref(struct import *im, const char *id, bool template)
{
        struct vmsnap_snapshot r;
        if (!id[0] || store_row_get(im->s, id, &r, NULL) < 0 || r.state != VMSNAP_SNAPSHOT_READY)
                return NULL;
        if (template && r.kind != VMSNAP_SNAPSHOT_TEMPLATE)
                return NULL;
        return id;
}

/* Begins the pending create from the archive's envelope and the caller's overrides. */
static int begin(struct import *im, struct vmsnap_diag *d)
{
        const struct vmsnap_snapshot *e = &im->env.rec;
        struct vmsnap_snapshot_spec spec = {
            .id = pick_id(im),
            .name = im->o->name ? im->o->name : e->name,
            .kind = e->kind,
            .parent_id = local_ref(im, e->parent_id, false),
            .template_id = local_ref(im, e->template_id, true),
            .vmm = e->vmm,
            .vmm_version = e->vmm_version,
            .vcpus = e->vcpus,
            .memory = e->memory,
            .generation = e->generation,
            .created = e->created,
            .description = im->o->description ? im->o->description : e->description,
            .labels = e->labels,
        };
        int r = vmsnap_store_create_begin(im->s, &spec, &im->t, d);
        if (r == -EEXIST && !im->o->name && d) {
                char msg[sizeof(d->msg)];
                memcpy(msg, d->msg, sizeof(msg));
                return vmsnap_diag(d, r, "%.900s; import it under another name with --name NAME",
                                   msg);
        }
        if (r == 0)
                vmsnap_crashpoint("store.import.envelope");
        return r;
}

/* The commit-side checks shared by both sources: every listed file arrived, the memory
 * snapshot verifies; then commit. */
static int finish(struct import *im, struct vmsnap_snapshot *ret, struct vmsnap_diag *d)
{
        for (size_t i = 0; i < im->env.n_files; i++)
                if (!im->seen[i])
                        return REFUSE(d,
                                      "%s is listed in " VMSNAP_ENVELOPE_NAME " but missing "
                                      "(truncated archive?)",
                                      im->env.files[i].name);
        if (store_envelope_find(&im->env, VMSNAP_MEM_HEADER_NAME)) {
                int r = vmsnap_mem_verify(vmsnap_store_txn_dir(im->t), NULL, NULL, d);
                if (r < 0) {
                        vmsnap_diag_prefix(d, "refusing the import: the memory snapshot does "
                                              "not verify");
                        if (d)
                                d->err = -EBADMSG;
                        return -EBADMSG;
                }
        }
        vmsnap_crashpoint("store.import.verified");
        return vmsnap_store_txn_commit(im->t, ret, d);
}

static void import_clear(struct import *im)
{
        vmsnap_store_txn_free(im->t); /* aborts when not committed: nothing left behind */
        store_envelope_clear(&im->env);
        free(im->seen);
}

/* ---- tar streams -------------------------------------------------------------------------- */

static int archive_refuse(struct archive *a, const char *what, struct vmsnap_diag *d)
{
        const char *msg = archive_error_string(a);
        return REFUSE(d, "%s: %s", what, msg ? msg : "damaged or truncated archive");
}

static const char *type_name(mode_t type)
{
        switch (type) {
        case AE_IFLNK:
                return "a symlink";
        case AE_IFDIR:
                return "a directory";
        case AE_IFCHR:
        case AE_IFBLK:
                return "a device file";
        case AE_IFIFO:
                return "a FIFO";
        case AE_IFSOCK:
                return "a socket";
        default:
                return "not a regular file";
        }
}

/* Rules for one entry header: a regular file, a plain name, listed, first time, same size.
 * Returns the index of the envelope entry, or -EBADMSG. */
static int check_entry(struct import *im, struct archive_entry *e, struct vmsnap_diag *d)
{
        const char *name = archive_entry_pathname(e);
        if (!name || !name[0])
                return REFUSE(d, "an entry has no usable name");
        if (archive_entry_hardlink(e))
                return REFUSE(d,
                              "%.200s is a hard link (to %.200s); exports hold regular files "
                              "only",
                              name, archive_entry_hardlink(e));
        if (archive_entry_filetype(e) != AE_IFREG)
                return REFUSE(d, "%.200s is %s; exports hold regular files only", name,
                              type_name(archive_entry_filetype(e)));
        if (!store_file_name_valid(name))
                return REFUSE(d,
                              "'%.200s' is not a plain file name (no directories, '..' or "
                              "absolute paths)",
                              name);
        const struct vmsnap_snapshot_file *f = store_envelope_find(&im->env, name);
        if (!f)
                return REFUSE(d, "%s is not listed in " VMSNAP_ENVELOPE_NAME, name);
        size_t i = (size_t)(f - im->env.files);
        if (im->seen[i])
                return REFUSE(d, "%s appears twice in the archive", name);
        if (!archive_entry_size_is_set(e) || archive_entry_size(e) < 0 ||
            (uint64_t)archive_entry_size(e) != f->size)
                return REFUSE(d,
                              "%s is %lld bytes in the archive, " VMSNAP_ENVELOPE_NAME " says %llu",
                              name, (long long)archive_entry_size(e), (unsigned long long)f->size);
        return (int)i;
}

static void hash_zeros(struct import *im, struct vmsnap_hasher *h, uint64_t from, uint64_t to)
{
        while (from < to) {
                size_t n = (size_t)MIN(to - from, (uint64_t)sizeof(zero_chunk));
                vmsnap_hasher_update(h, zero_chunk, n);
                from += n;
                advance(im, n);
        }
}

/* Streams an entry's data blocks into fd at their offsets (holes stay holes), hashing the
 * logical content. Blocks must come in order and inside the declared size. */
static int extract_data(struct import *im, struct archive *a, int fd,
                        const struct vmsnap_snapshot_file *f, struct vmsnap_hasher *h,
                        struct vmsnap_diag *d)
{
        uint64_t pos = 0;
        for (;;) {
                const void *buf;
                size_t len;
                la_int64_t off;
                int rc = archive_read_data_block(a, &buf, &len, &off);
                if (rc == ARCHIVE_EOF)
                        break;
                if (rc != ARCHIVE_OK)
                        return archive_refuse(a, f->name, d);
                if (off < 0 || (uint64_t)off < pos || (uint64_t)off > f->size ||
                    len > f->size - (uint64_t)off)
                        return REFUSE(d,
                                      "%s: data block at %lld+%zu is out of order or past "
                                      "its size %llu",
                                      f->name, (long long)off, len, (unsigned long long)f->size);
                hash_zeros(im, h, pos, (uint64_t)off);
                vmsnap_hasher_update(h, buf, len);
                int r = len ? vmsnap_fs_pwrite_full(fd, buf, len, (uint64_t)off) : 0;
                if (r < 0)
                        return vmsnap_diag(d, r, "%s: write failed: %s", f->name, strerror(-r));
                advance(im, len);
                pos = (uint64_t)off + len;
        }
        hash_zeros(im, h, pos, f->size);
        return ftruncate(fd, (off_t)f->size) < 0
                   ? vmsnap_diag(d, -errno, "%s: %s", f->name, strerror(errno))
                   : 0;
}

/* Records a file's computed checksum after comparing it with the envelope's. */
static int accept_file(struct import *im, const struct vmsnap_snapshot_file *f,
                       const struct vmsnap_hash *h, struct vmsnap_diag *d)
{
        if (memcmp(h, &f->checksum, sizeof(*h)) != 0) {
                char want[42], got[42];
                store_hash_format(&f->checksum, want);
                store_hash_format(h, got);
                return REFUSE(d,
                              "%s: checksum mismatch (content is %s, " VMSNAP_ENVELOPE_NAME
                              " says %s): the archive is corrupted",
                              f->name, got, want);
        }
        im->seen[f - im->env.files] = true;
        return store_txn_known(im->t, f->name, f->size, h, d);
}

static int extract_entry(struct import *im, struct archive *a, struct archive_entry *e,
                         struct vmsnap_diag *d)
{
        int i = check_entry(im, e, d);
        if (i < 0)
                return i;
        const struct vmsnap_snapshot_file *f = &im->env.files[i];
        _cleanup_close_ int fd = openat(vmsnap_store_txn_dirfd(im->t), f->name,
                                        O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0)
                return vmsnap_diag(d, -errno, "%s: cannot create: %s", f->name, strerror(errno));
        struct vmsnap_hasher *h = vmsnap_hasher_new();
        if (!h)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        struct vmsnap_hash sum;
        int r = extract_data(im, a, fd, f, h, d);
        vmsnap_hasher_final(h, &sum);
        vmsnap_hasher_free(h);
        return r < 0 ? r : accept_file(im, f, &sum, d);
}

/* Reads the first entry, which must be the envelope, and parses it. */
static int read_envelope(struct import *im, struct archive *a, struct vmsnap_diag *d)
{
        struct archive_entry *e;
        int rc = archive_read_next_header(a, &e);
        if (rc == ARCHIVE_EOF)
                return REFUSE(d, "the archive is empty");
        if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN)
                return archive_refuse(a, "not a readable tar stream (none, gzip or zstd)", d);
        const char *name = archive_entry_pathname(e);
        if (!name || strcmp(name, VMSNAP_ENVELOPE_NAME) != 0)
                return REFUSE(
                    d,
                    "not a vmsnap export: the first entry is '%.200s', not " VMSNAP_ENVELOPE_NAME,
                    name ? name : "");
        if (archive_entry_filetype(e) != AE_IFREG || archive_entry_hardlink(e) ||
            archive_entry_size(e) < 0 || archive_entry_size(e) > STORE_ENVELOPE_MAX)
                return REFUSE(d,
                              VMSNAP_ENVELOPE_NAME " must be a regular file of at most %u "
                                                   "bytes",
                              STORE_ENVELOPE_MAX);
        size_t len = (size_t)archive_entry_size(e);
        _cleanup_free_ char *buf = malloc(len + 1);
        if (!buf)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        size_t got = 0;
        while (got < len) {
                la_ssize_t n = archive_read_data(a, buf + got, len - got);
                if (n <= 0)
                        return archive_refuse(a, VMSNAP_ENVELOPE_NAME, d);
                got += (size_t)n;
        }
        int r = store_envelope_parse(buf, len, &im->env, d);
        if (r < 0)
                return vmsnap_diag_prefix(d, "refusing the import");
        return check_envelope(im, d);
}

static int extract_all(struct import *im, struct archive *a, struct vmsnap_diag *d)
{
        for (size_t count = 0;; count++) {
                struct archive_entry *e;
                int rc = archive_read_next_header(a, &e);
                if (rc == ARCHIVE_EOF)
                        return 0;
                if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN)
                        return archive_refuse(a, "reading the next entry", d);
                int r = extract_entry(im, a, e, d);
                if (r < 0)
                        return r;
                if (count == 0)
                        vmsnap_crashpoint("store.import.data");
        }
}

static struct archive *open_reader(int fd, struct vmsnap_diag *d)
{
        struct archive *a = archive_read_new();
        if (!a) {
                vmsnap_diag(d, -ENOMEM, "out of memory");
                return NULL;
        }
        /* Only what an export can be: tar, plain or gzip or zstd. No other formats or
         * filters (no external programs, less parser surface). */
        archive_read_support_format_tar(a);
        archive_read_support_filter_none(a);
        archive_read_support_filter_gzip(a);
        archive_read_support_filter_zstd(a);
        if (archive_read_open_fd(a, fd, 1 << 16) != ARCHIVE_OK) {
                archive_refuse(a, "not a tar stream (plain, gzip or zstd)", d);
                archive_read_free(a);
                return NULL;
        }
        return a;
}

int vmsnap_store_import_fd(struct vmsnap_store *s, int fd, const struct vmsnap_import_opts *opts,
                           struct vmsnap_snapshot *ret, struct vmsnap_diag *d)
{
        struct vmsnap_import_opts none = {0};
        struct import im = {.s = s, .o = opts ? opts : &none};
        if (!s || fd < 0)
                return vmsnap_diag(d, -EINVAL, "import: missing argument");
        if (im.o->name && !vmsnap_store_name_valid(im.o->name))
                return vmsnap_diag(d, -EINVAL, "'%s' is not a valid snapshot name", im.o->name);
        struct archive *a = open_reader(fd, d);
        if (!a)
                return d ? d->err : -EBADMSG;
        int r = read_envelope(&im, a, d);
        if (r == 0)
                r = begin(&im, d);
        if (r == 0)
                r = extract_all(&im, a, d);
        if (r == 0)
                r = finish(&im, ret, d);
        archive_read_free(a);
        import_clear(&im);
        return r;
}

/* ---- directories -------------------------------------------------------------------------- */

static void dir_advance(void *ctx, uint64_t bytes)
{
        advance(ctx, bytes);
}

static int copy_in(struct import *im, int srcfd, const struct vmsnap_snapshot_file *f,
                   struct vmsnap_diag *d)
{
        _cleanup_close_ int in = openat(srcfd, f->name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        struct stat st;
        if (in < 0)
                return errno == ELOOP ? REFUSE(d, "%s is a symlink", f->name)
                                      : vmsnap_diag(d, -errno, "%s: cannot open: %s", f->name,
                                                    strerror(errno));
        if (fstat(in, &st) < 0)
                return vmsnap_diag(d, -errno, "%s: %s", f->name, strerror(errno));
        if (!S_ISREG(st.st_mode))
                return REFUSE(d, "%s is %s", f->name, type_name(st.st_mode & S_IFMT));
        if ((uint64_t)st.st_size != f->size)
                return REFUSE(d, "%s is %llu bytes, " VMSNAP_ENVELOPE_NAME " says %llu", f->name,
                              (unsigned long long)st.st_size, (unsigned long long)f->size);
        _cleanup_close_ int out =
            openat(vmsnap_store_txn_dirfd(im->t), f->name,
                   O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (out < 0)
                return vmsnap_diag(d, -errno, "%s: cannot create: %s", f->name, strerror(errno));
        struct vmsnap_hash h;
        int r = store_copy_sparse(in, out, f->size, &h, dir_advance, im);
        if (r < 0)
                return vmsnap_diag(d, r, "%s: copy failed: %s", f->name, strerror(-r));
        return accept_file(im, f, &h, d);
}

int vmsnap_store_import_dir(struct vmsnap_store *s, const char *dir,
                            const struct vmsnap_import_opts *opts, struct vmsnap_snapshot *ret,
                            struct vmsnap_diag *d)
{
        struct vmsnap_import_opts none = {0};
        struct import im = {.s = s, .o = opts ? opts : &none};
        if (!s || !dir)
                return vmsnap_diag(d, -EINVAL, "import: missing argument");
        if (im.o->name && !vmsnap_store_name_valid(im.o->name))
                return vmsnap_diag(d, -EINVAL, "'%s' is not a valid snapshot name", im.o->name);
        _cleanup_close_ int srcfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (srcfd < 0)
                return vmsnap_diag(d, -errno, "%s: %s", dir, strerror(errno));
        int r = store_envelope_load(srcfd, &im.env, d);
        if (r < 0)
                vmsnap_diag_prefix(d, "%s", dir);
        if (r == 0)
                r = check_envelope(&im, d);
        if (r == 0)
                r = begin(&im, d);
        for (size_t i = 0; r == 0 && i < im.env.n_files; i++) {
                r = copy_in(&im, srcfd, &im.env.files[i], d);
                if (r == 0 && i == 0)
                        vmsnap_crashpoint("store.import.data");
        }
        if (r == 0)
                r = finish(&im, ret, d);
        import_clear(&im);
        return r;
}
