/* Import: a tar stream (import-tar.c) or an exported directory (here) becomes a snapshot
 * through the two-phase create; the pending directory is the staging directory. What both
 * sources share is here: the declared-size and written-bytes caps, the files' checksums,
 * and the steps before the commit — the disks name no file but the pinned base image (the
 * archive's, checked and pinned, or one already here), the memory snapshot verifies, the
 * lineage is verified. Any refusal aborts the create and leaves nothing behind. Crash
 * points store.import.{envelope,data,verified}. Rules: docs/store.md. */
#include "store/import.h"
#include "util/cleanup.h"
#include "util/ids.h"
#include "util/sys.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void import_init(struct import *im, struct vmsnap_store *s, const struct vmsnap_import_opts *o)
{
        memset(im, 0, sizeof(*im));
        im->s = s;
        im->o = o;
        im->max_bytes = o->max_bytes ? o->max_bytes : VMSNAP_IMPORT_DEFAULT_MAX;
        im->max_logical = o->max_logical ? o->max_logical : VMSNAP_IMPORT_DEFAULT_MAX_LOGICAL;
        im->imagesfd = -1;
        im->base.s.fd = -1;
}

void import_clear(struct import *im)
{
        vmsnap_store_txn_free(im->t); /* aborts when not committed: nothing left behind */
        import_base_abort(im);
        if (im->imagesfd >= 0)
                close(im->imagesfd);
        store_envelope_clear(&im->env);
        free(im->seen);
}

void import_note(struct import *im, const char *fmt, ...)
{
        if (!im->o->note || im->n_notes == IMPORT_NOTES_MAX)
                return;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(im->notes[im->n_notes++], sizeof(im->notes[0]), fmt, ap);
        va_end(ap);
}

void import_advance(struct import *im, uint64_t bytes)
{
        im->done += bytes;
        if (im->o->progress)
                im->o->progress(im->o->progress_ctx, im->done, im->total);
}

int import_write(struct import *im, int fd, const char *name, const void *buf, size_t len,
                 uint64_t off, struct vmsnap_diag *d)
{
        int r = vmsnap_fs_pwrite_sparse(fd, buf, len, off, &im->written);
        if (r < 0)
                return vmsnap_diag(d, r, "%s: write failed: %s", name, strerror(-r));
        if (im->written > im->max_bytes)
                return REFUSE(d, "more than %llu bytes of data (at %s); raise the limit with "
                              "--max-size if it is genuine", (unsigned long long)im->max_bytes,
                              name);
        return 0;
}

int import_declare(struct import *im, const char *name, uint64_t size, struct vmsnap_diag *d)
{
        im->total += size;
        if (size > im->max_logical || im->total > im->max_logical)
                return REFUSE(d, "the archive declares more than %llu bytes (%s is %llu bytes); "
                              "raise the limit with --max-logical-size if it is genuine",
                              (unsigned long long)im->max_logical, name,
                              (unsigned long long)size);
        return 0;
}

/* Checks the declared sizes against the logical cap: a huge sparse claim costs no disk, but
 * hashing its zeros would take hours. */
int import_check_envelope(struct import *im, struct vmsnap_diag *d)
{
        im->total = 0;
        for (size_t i = 0; i < im->env.n_files; i++) {
                int r = import_declare(im, im->env.files[i].name, im->env.files[i].size, d);
                if (r < 0)
                        return r;
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

int import_begin(struct import *im, struct vmsnap_diag *d)
{
        const struct vmsnap_snapshot *e = &im->env.rec;
        struct vmsnap_snapshot_spec spec = {
            .id = pick_id(im),
            .name = im->o->name ? im->o->name : e->name,
            .kind = e->kind,
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

int import_accept_file(struct import *im, const struct vmsnap_snapshot_file *f,
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

/* The disks name no file but the pinned base image rootfs.meta names, in the canonical
 * form (references an older vmsnap wrote are rewritten to it, and rehashed at commit); the
 * base is delivered or here. */
static int check_disks(struct import *im, struct vmsnap_diag *d)
{
        struct vmsnap_disk_meta meta;
        bool has_meta = false;
        unsigned rewrote = 0;
        int r = vmsnap_disk_check_dir(vmsnap_store_txn_dirfd(im->t), "",
                                      VMSNAP_DISK_NORMALIZE, &meta, &has_meta, &rewrote, d);
        if (r < 0)
                return r == -EBADMSG ? vmsnap_diag_prefix(d, "refusing the import") : r;
        if (rewrote & VMSNAP_DISK_REWROTE_META)
                store_txn_forget(im->t, VMSNAP_ROOTFS_META);
        if (rewrote & VMSNAP_DISK_REWROTE_OVERLAY)
                store_txn_forget(im->t, VMSNAP_ROOTFS_OVERLAY);
        if (rewrote)
                import_note(im, "the disk named its base image by an absolute path (an older "
                            "vmsnap); rewritten to " VMSNAP_BACKING_PREFIX "%s", meta.base);
        bool overlay = store_envelope_find(&im->env, VMSNAP_ROOTFS_OVERLAY) != NULL;
        if (!overlay && im->base.name[0])
                return REFUSE(d, VMSNAP_IMAGES_DIR "/%s: the snapshot has no overlay that "
                              "stands on it", im->base.name);
        return overlay ? import_base_commit(im, &meta, d) : 0;
}

static int check_memory(struct import *im, struct vmsnap_diag *d)
{
        if (!store_envelope_find(&im->env, VMSNAP_MEM_HEADER_NAME))
                return 0;
        int r = vmsnap_mem_verify(vmsnap_store_txn_dir(im->t), NULL, NULL, d);
        if (r < 0) {
                vmsnap_diag_prefix(d, "refusing the import: the memory snapshot does not "
                                      "verify");
                if (d)
                        d->err = -EBADMSG;
                return -EBADMSG;
        }
        return 0;
}

int import_finish(struct import *im, struct vmsnap_snapshot *ret, struct vmsnap_diag *d)
{
        for (size_t i = 0; i < im->env.n_files; i++)
                if (!im->seen[i])
                        return REFUSE(d,
                                      "%s is listed in " VMSNAP_ENVELOPE_NAME " but missing "
                                      "(truncated archive?)",
                                      im->env.files[i].name);
        int r = check_memory(im, d);
        if (r == 0)
                r = import_lineage(im, d);
        if (r == 0)
                r = check_disks(im, d); /* last: it may pin the base image */
        if (r < 0)
                return r;
        vmsnap_crashpoint("store.import.verified");
        if ((r = vmsnap_store_txn_commit(im->t, ret, d)) < 0)
                return r;
        for (unsigned i = 0; i < im->n_notes; i++)
                im->o->note(im->o->note_ctx, im->notes[i]);
        return 0;
}

/* ---- directories -------------------------------------------------------------------------- */

static void dir_advance(void *ctx, uint64_t bytes)
{
        import_advance(ctx, bytes);
}

/* A source file's allocated bytes bound what copying it can write. */
static int check_allocation(struct import *im, const struct vmsnap_snapshot_file *f,
                            const struct stat *st, struct vmsnap_diag *d)
{
        uint64_t alloc = (uint64_t)st->st_blocks * 512;
        if (alloc > im->max_bytes - MIN(im->written, im->max_bytes))
                return REFUSE(d, "more than %llu bytes of data (at %s); raise the limit with "
                              "--max-size if it is genuine", (unsigned long long)im->max_bytes,
                              f->name);
        return 0;
}

/* Copies in to out (holes and zero pages stay holes), hashing the content. */
static int copy_hashed(struct import *im, int in, int out, const char *name, uint64_t size,
                       struct vmsnap_hash *ret, struct vmsnap_diag *d)
{
        int r = store_copy_sparse(in, out, size, ret, dir_advance, im, &im->written);
        return r < 0 ? vmsnap_diag(d, r, "%s: copy failed: %s", name, strerror(-r)) : 0;
}

static int copy_in(struct import *im, int srcfd, const struct vmsnap_snapshot_file *f,
                   struct vmsnap_diag *d)
{
        struct stat st;
        _cleanup_close_ int in = vmsnap_fs_open_regular(srcfd, f->name, &st, false);
        if (in == -ELOOP || in == -EINVAL)
                return REFUSE(d, "%s %s", f->name, vmsnap_fs_open_error(in));
        if (in < 0)
                return vmsnap_diag(d, in, "%s: cannot open: %s", f->name, strerror(-in));
        if ((uint64_t)st.st_size != f->size)
                return REFUSE(d, "%s is %llu bytes, " VMSNAP_ENVELOPE_NAME " says %llu", f->name,
                              (unsigned long long)st.st_size, (unsigned long long)f->size);
        int r = check_allocation(im, f, &st, d);
        if (r < 0)
                return r;
        _cleanup_close_ int out = vmsnap_fs_create_private(vmsnap_store_txn_dirfd(im->t), f->name,
                                                           O_WRONLY);
        if (out < 0)
                return vmsnap_diag(d, out, "%s: cannot create: %s", f->name, strerror(-out));
        struct vmsnap_hash h;
        if ((r = copy_hashed(im, in, out, f->name, f->size, &h, d)) < 0)
                return r;
        return import_accept_file(im, f, &h, d);
}

/* DIR/images/<base> (export --to-dir writes it there), when the snapshot's disk needs one
 * and it is not pinned here yet. */
static int copy_base_in(struct import *im, int srcfd, struct vmsnap_diag *d)
{
        struct vmsnap_disk_meta meta;
        int r = vmsnap_disk_meta_read(vmsnap_store_txn_dirfd(im->t), "", &meta, d);
        if (r == -ENOENT || !store_envelope_find(&im->env, VMSNAP_ROOTFS_OVERLAY))
                return 0; /* no disk that stands on a base (check_disks says more) */
        if (r < 0)
                return vmsnap_diag_prefix(d, "refusing the import");
        _cleanup_close_ int idir = openat(srcfd, VMSNAP_IMAGES_DIR,
                                          O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        struct stat st;
        _cleanup_close_ int in = idir < 0 ? -ENOENT
                                          : vmsnap_fs_open_regular(idir, meta.base, &st, false);
        if (in == -ENOENT)
                return 0; /* not carried: it must be pinned here already */
        if (in < 0)
                return REFUSE(d, VMSNAP_IMAGES_DIR "/%s %s", meta.base, vmsnap_fs_open_error(in));
        bool skip;
        struct vmsnap_snapshot_file f = {.size = (uint64_t)st.st_size};
        snprintf(f.name, sizeof(f.name), VMSNAP_IMAGES_DIR "/%s", meta.base);
        if ((r = import_base_begin(im, meta.base, f.size, &skip, d)) < 0 || skip)
                return r;
        struct vmsnap_hash h;
        if ((r = check_allocation(im, &f, &st, d)) < 0 ||
            (r = copy_hashed(im, in, import_base_fd(im), f.name, f.size, &h, d)) < 0)
                return r;
        return import_base_end(im, &h, d);
}

int vmsnap_store_import_dir(struct vmsnap_store *s, const char *dir,
                            const struct vmsnap_import_opts *opts, struct vmsnap_snapshot *ret,
                            struct vmsnap_diag *d)
{
        struct vmsnap_import_opts none = {0};
        struct import im;
        import_init(&im, s, opts ? opts : &none);
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
                r = import_check_envelope(&im, d);
        if (r == 0)
                r = import_begin(&im, d);
        for (size_t i = 0; r == 0 && i < im.env.n_files; i++) {
                r = copy_in(&im, srcfd, &im.env.files[i], d);
                if (r == 0 && i == 0)
                        vmsnap_crashpoint("store.import.data");
        }
        if (r == 0)
                r = copy_base_in(&im, srcfd, d);
        if (r == 0)
                r = import_finish(&im, ret, d);
        import_clear(&im);
        return r;
}
