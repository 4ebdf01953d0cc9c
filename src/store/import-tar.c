/* Import of a tar stream (plain, gzip or zstd: detected). Archives are outside input: the
 * first entry must be snapshot.json; every further entry must be a regular file with a
 * plain name that the envelope lists with exactly that size, or the base image the
 * snapshot's disk stands on as images/rootfs-<hash>.ext4; links, devices, paths,
 * duplicates, oversized claims and truncated streams are refused. Data is written with zero
 * pages left as holes and counted against the cap of bytes really written. */
#include "store/import.h"
#include "util/cleanup.h"
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

static const uint8_t zero_chunk[STORE_IO_CHUNK];

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

/* Rules every entry's header follows: a regular file (no link of any kind) with a size. */
static int check_regular(struct archive_entry *e, const char *name, struct vmsnap_diag *d)
{
        if (archive_entry_hardlink(e))
                return REFUSE(d,
                              "%.200s is a hard link (to %.200s); exports hold regular files "
                              "only",
                              name, archive_entry_hardlink(e));
        if (archive_entry_filetype(e) != AE_IFREG)
                return REFUSE(d, "%.200s is %s; exports hold regular files only", name,
                              type_name(archive_entry_filetype(e)));
        if (!archive_entry_size_is_set(e) || archive_entry_size(e) < 0)
                return REFUSE(d, "%.200s has no size", name);
        return 0;
}

/* Rules for a snapshot file: a plain name, listed, first time, same size. Returns the index
 * of the envelope entry, or -EBADMSG. */
static int check_entry(struct import *im, struct archive_entry *e, const char *name,
                       struct vmsnap_diag *d)
{
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
        if ((uint64_t)archive_entry_size(e) != f->size)
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
                import_advance(im, n);
        }
}

/* Streams an entry's data blocks into fd at their offsets (holes, and pages of zeros, stay
 * holes), hashing the logical content. Blocks must come in order and inside the declared
 * size. */
static int extract_data(struct import *im, struct archive *a, int fd, const char *name,
                        uint64_t size, struct vmsnap_hash *ret, struct vmsnap_diag *d)
{
        struct vmsnap_hasher *h = vmsnap_hasher_new();
        if (!h)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        uint64_t pos = 0;
        int r = 0;
        while (r == 0) {
                const void *buf;
                size_t len;
                la_int64_t off;
                int rc = archive_read_data_block(a, &buf, &len, &off);
                if (rc == ARCHIVE_EOF)
                        break;
                if (rc != ARCHIVE_OK) {
                        r = archive_refuse(a, name, d);
                } else if (off < 0 || (uint64_t)off < pos || (uint64_t)off > size ||
                           len > size - (uint64_t)off) {
                        r = REFUSE(d, "%s: data block at %lld+%zu is out of order or past its "
                                   "size %llu", name, (long long)off, len,
                                   (unsigned long long)size);
                } else {
                        hash_zeros(im, h, pos, (uint64_t)off);
                        vmsnap_hasher_update(h, buf, len);
                        r = import_write(im, fd, name, buf, len, (uint64_t)off, d);
                        import_advance(im, len);
                        pos = (uint64_t)off + len;
                }
        }
        if (r == 0) {
                hash_zeros(im, h, pos, size);
                vmsnap_hasher_final(h, ret);
                if (ftruncate(fd, (off_t)size) < 0)
                        r = vmsnap_diag(d, -errno, "%s: %s", name, strerror(errno));
        }
        vmsnap_hasher_free(h);
        return r;
}

static int extract_file(struct import *im, struct archive *a, struct archive_entry *e,
                        const char *name, struct vmsnap_diag *d)
{
        int i = check_entry(im, e, name, d);
        if (i < 0)
                return i;
        const struct vmsnap_snapshot_file *f = &im->env.files[i];
        _cleanup_close_ int fd = vmsnap_fs_create_private(vmsnap_store_txn_dirfd(im->t), f->name,
                                                          O_WRONLY);
        if (fd < 0)
                return vmsnap_diag(d, fd, "%s: cannot create: %s", f->name, strerror(-fd));
        struct vmsnap_hash sum;
        int r = extract_data(im, a, fd, f->name, f->size, &sum, d);
        return r < 0 ? r : import_accept_file(im, f, &sum, d);
}

/* images/rootfs-<hash>.ext4: the base image, staged in <root>/images (or skipped when it is
 * pinned here already). */
static int extract_base(struct import *im, struct archive *a, struct archive_entry *e,
                        const char *name, struct vmsnap_diag *d)
{
        const char *base = name + strlen(VMSNAP_IMAGES_DIR "/");
        uint64_t size = (uint64_t)archive_entry_size(e);
        bool skip;
        int r = import_base_begin(im, base, size, &skip, d);
        if (r < 0 || skip)
                return r;
        struct vmsnap_hash sum;
        if ((r = extract_data(im, a, import_base_fd(im), name, size, &sum, d)) < 0)
                return r;
        return import_base_end(im, &sum, d);
}

static int extract_entry(struct import *im, struct archive *a, struct archive_entry *e,
                         struct vmsnap_diag *d)
{
        const char *name = archive_entry_pathname(e);
        if (!name || !name[0])
                return REFUSE(d, "an entry has no usable name");
        int r = check_regular(e, name, d);
        if (r < 0)
                return r;
        if (strncmp(name, VMSNAP_IMAGES_DIR "/", strlen(VMSNAP_IMAGES_DIR "/")) == 0)
                return extract_base(im, a, e, name, d);
        return extract_file(im, a, e, name, d);
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
        return import_check_envelope(im, d);
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
        struct import im;
        import_init(&im, s, opts ? opts : &none);
        if (!s || fd < 0)
                return vmsnap_diag(d, -EINVAL, "import: missing argument");
        if (im.o->name && !vmsnap_store_name_valid(im.o->name))
                return vmsnap_diag(d, -EINVAL, "'%s' is not a valid snapshot name", im.o->name);
        struct archive *a = open_reader(fd, d);
        if (!a)
                return d ? d->err : -EBADMSG;
        int r = read_envelope(&im, a, d);
        if (r == 0)
                r = import_begin(&im, d);
        if (r == 0)
                r = extract_all(&im, a, d);
        if (r == 0)
                r = import_finish(&im, ret, d);
        archive_read_free(a);
        import_clear(&im);
        return r;
}
