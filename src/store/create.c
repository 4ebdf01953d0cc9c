/* Two-phase create: begin (locked directory + pending row), the caller writes files,
 * commit (fsync, envelope, ready) or abort. The steps and what a crash at each leaves are
 * in docs/store.md; crash points store.begin, store.commit.{files,envelope,ready}. */
#include "store/internal.h"
#include "util/cleanup.h"
#include "util/fs.h"
#include "util/ids.h"
#include "util/sys.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_VCPUS 4096

struct known_file {
        char name[VMSNAP_FILE_NAME_MAX + 1];
        uint64_t size;
        struct vmsnap_hash hash;
};

struct vmsnap_store_txn {
        struct vmsnap_store *s; /* borrowed */
        struct vmsnap_snapshot rec;
        char dir[PATH_MAX];
        int dirfd;
        int lock;        /* store lock of rec.id, LOCK_EX while the txn is open */
        int parent_lock; /* LOCK_SH on the parent: its files stay while we read them */
        bool finished;
        struct known_file *known;
        size_t n_known;
};

static int spec_ids(const struct vmsnap_snapshot_spec *spec, struct vmsnap_snapshot *r,
                    struct vmsnap_diag *d)
{
        if (spec->id) {
                if (!store_id_valid(spec->id))
                        return vmsnap_diag(d, -EINVAL, "'%s' is not a canonical lowercase UUID",
                                           spec->id);
                strcpy(r->id, spec->id);
        } else {
                struct vmsnap_uuid u;
                vmsnap_uuid_new(&u);
                vmsnap_uuid_format(&u, r->id);
        }
        if (spec->name && spec->name[0] && !vmsnap_store_name_valid(spec->name))
                return vmsnap_diag(d, -EINVAL,
                                   "'%s' is not a valid name: 1-64 characters of A-Z a-z 0-9 . _ "
                                   "-, starting with a letter or digit, and not a UUID",
                                   spec->name);
        const char *ids[2] = {spec->parent_id, spec->template_id};
        for (int i = 0; i < 2; i++)
                if (ids[i] && ids[i][0] && !store_id_valid(ids[i]))
                        return vmsnap_diag(d, -EINVAL, "%s '%s' is not a snapshot id",
                                           i ? "template" : "parent", ids[i]);
        return 0;
}

/* Fills a pending record from a spec, checking every field. */
static int spec_to_record(const struct vmsnap_snapshot_spec *spec, struct vmsnap_snapshot *r,
                          struct vmsnap_diag *d)
{
        memset(r, 0, sizeof(*r));
        int ret = spec_ids(spec, r, d);
        if (ret < 0)
                return ret;
        if (spec->kind != VMSNAP_SNAPSHOT_PAUSE && spec->kind != VMSNAP_SNAPSHOT_TEMPLATE)
                return vmsnap_diag(d, -EINVAL, "unknown snapshot kind %d", (int)spec->kind);
        if (spec->vcpus > MAX_VCPUS || spec->memory > VMSNAP_MEM_MAX_SIZE)
                return vmsnap_diag(d, -EINVAL, "vcpus or memory out of range");
        r->kind = spec->kind;
        r->state = VMSNAP_SNAPSHOT_PENDING;
        r->vcpus = spec->vcpus;
        r->memory = spec->memory;
        r->generation = spec->generation;
        r->created = spec->created > 0 ? spec->created : store_now();
        r->last_accessed = r->state_changed = store_now();
        if ((ret = store_copy_str(r->name, sizeof(r->name), spec->name, "name", d)) < 0 ||
            (ret = store_copy_str(r->parent_id, sizeof(r->parent_id), spec->parent_id, "parent",
                                  d)) < 0 ||
            (ret = store_copy_str(r->template_id, sizeof(r->template_id), spec->template_id,
                                  "template", d)) < 0 ||
            (ret = store_copy_str(r->vmm, sizeof(r->vmm), spec->vmm, "vmm", d)) < 0 ||
            (ret = store_copy_str(r->vmm_version, sizeof(r->vmm_version), spec->vmm_version,
                                  "vmm version", d)) < 0 ||
            (ret = store_copy_str(r->description, sizeof(r->description), spec->description,
                                  "description", d)) < 0)
                return ret;
        return store_labels_normalize(spec->labels, r->labels, d);
}

/* Checks, inside the write transaction, that the name and id are free and the parent and
 * template are ready rows. */
static int check_references(struct vmsnap_store *s, const struct vmsnap_snapshot *r,
                            struct vmsnap_diag *d)
{
        struct vmsnap_snapshot other;
        if (store_row_get(s, r->id, &other, NULL) == 0)
                return vmsnap_diag(d, -EEXIST, "snapshot id %s already exists", r->id);
        if (r->name[0]) {
                _cleanup_stmt_ sqlite3_stmt *st = NULL;
                int ret =
                    store_prepare(s, "SELECT id, state FROM snapshots WHERE name = ?1", &st, d);
                if (ret < 0)
                        return ret;
                sqlite3_bind_text(st, 1, r->name, -1, SQLITE_STATIC);
                if (sqlite3_step(st) == SQLITE_ROW) {
                        const char *state = (const char *)sqlite3_column_text(st, 1);
                        return vmsnap_diag(d, -EEXIST, "name '%s' is already used by snapshot %s%s",
                                           r->name, (const char *)sqlite3_column_text(st, 0),
                                           strcmp(state, "pending") == 0    ? " (being created)"
                                           : strcmp(state, "deleting") == 0 ? " (being deleted)"
                                                                            : "");
                }
        }
        if (r->parent_id[0] && (store_row_get(s, r->parent_id, &other, NULL) < 0 ||
                                other.state != VMSNAP_SNAPSHOT_READY))
                return vmsnap_diag(d, -ENOENT, "parent %s is not a ready snapshot", r->parent_id);
        if (r->template_id[0] &&
            (store_row_get(s, r->template_id, &other, NULL) < 0 ||
             other.state != VMSNAP_SNAPSHOT_READY || other.kind != VMSNAP_SNAPSHOT_TEMPLATE))
                return vmsnap_diag(d, -ENOENT, "template %s is not a ready template",
                                   r->template_id);
        return 0;
}

static int insert_pending(struct vmsnap_store *s, const struct vmsnap_snapshot *r,
                          struct vmsnap_diag *d)
{
        int ret = store_tx_begin(s, d);
        if (ret < 0)
                return ret;
        ret = check_references(s, r, d);
        if (ret == 0)
                ret = store_row_insert(s, r, d);
        if (ret < 0) {
                store_tx_rollback(s);
                return ret;
        }
        return store_tx_commit(s, d);
}

/* Takes the lock of a fresh id and makes snapshots/<id>/ (a new random id on collision
 * unless fixed). The lock comes first, so GC never sees the directory unlocked. Returns the
 * directory fd with *ret_lock, or -errno. */
static int make_dir(struct vmsnap_store *s, struct vmsnap_snapshot *r, bool fixed_id, int *ret_lock,
                    struct vmsnap_diag *d)
{
        for (int attempt = 0; attempt < 4; attempt++) {
                int lock = store_lock_take(s, r->id, true), err = lock;
                if (lock >= 0) {
                        err = vmsnap_fs_mkdir_private(s->snapfd, r->id);
                        int fd = err < 0 ? err : store_open_snapdir(s, r->id);
                        if (fd >= 0) {
                                *ret_lock = lock;
                                return fd;
                        }
                        if (err == 0) {
                                err = fd;
                                unlinkat(s->snapfd, r->id, AT_REMOVEDIR);
                        }
                }
                if (lock >= 0)
                        store_lock_release(s, r->id, lock);
                if (err != -EEXIST && err != -EBUSY)
                        return vmsnap_diag(d, err,
                                           "%s/" STORE_SNAPSHOTS_DIR "/%s: cannot create: %s",
                                           s->root, r->id, strerror(-err));
                if (fixed_id)
                        return vmsnap_diag(d, -EEXIST, "snapshot %s already exists here", r->id);
                struct vmsnap_uuid u;
                vmsnap_uuid_new(&u);
                vmsnap_uuid_format(&u, r->id);
        }
        return vmsnap_diag(d, -EAGAIN, "cannot make a snapshot directory under %s", s->root);
}

static struct vmsnap_store_txn *txn_new(struct vmsnap_store *s, const struct vmsnap_snapshot *r,
                                        int dirfd, int lock)
{
        struct vmsnap_store_txn *t = calloc(1, sizeof(*t));
        if (!t)
                return NULL;
        t->s = s;
        t->rec = *r;
        t->dirfd = dirfd;
        t->lock = lock;
        t->parent_lock = -1;
        vmsnap_store_snapshot_dir(s, r->id, t->dir, sizeof(t->dir));
        return t;
}

/* Closes every fd of the txn and releases its locks. */
static void txn_release(struct vmsnap_store_txn *t)
{
        if (t->dirfd >= 0)
                close(t->dirfd);
        t->dirfd = -1;
        store_lock_release(t->s, t->rec.id, t->lock);
        t->lock = -1;
        if (t->parent_lock >= 0)
                store_lock_release(t->s, t->rec.parent_id, t->parent_lock);
        t->parent_lock = -1;
}

int vmsnap_store_create_begin(struct vmsnap_store *s, const struct vmsnap_snapshot_spec *spec,
                              struct vmsnap_store_txn **ret, struct vmsnap_diag *d)
{
        if (!s || !spec || !ret)
                return vmsnap_diag(d, -EINVAL, "create: missing argument");
        struct vmsnap_snapshot r;
        int err = spec_to_record(spec, &r, d);
        if (err < 0)
                return err;
        int parent_lock = -1;
        if (r.parent_id[0] && (parent_lock = store_lock_take(s, r.parent_id, false)) < 0)
                return vmsnap_diag(d, parent_lock, "parent %s is being created or deleted",
                                   r.parent_id);
        int lock = -1, fd = make_dir(s, &r, spec->id != NULL, &lock, d);
        if (fd < 0) {
                store_lock_release(s, r.parent_id, parent_lock);
                return fd;
        }
        struct vmsnap_store_txn *t = txn_new(s, &r, fd, lock);
        if (!t) {
                close(fd);
                unlinkat(s->snapfd, r.id, AT_REMOVEDIR);
                store_lock_release(s, r.id, lock);
                store_lock_release(s, r.parent_id, parent_lock);
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        }
        t->parent_lock = parent_lock;
        if ((err = insert_pending(s, &r, d)) < 0) {
                unlinkat(s->snapfd, r.id, AT_REMOVEDIR); /* still empty; locked by us */
                txn_release(t);
                free(t);
                return err;
        }
        vmsnap_crashpoint("store.begin");
        *ret = t;
        return 0;
}

int vmsnap_store_create_resume(struct vmsnap_store *s, const char *id,
                               struct vmsnap_store_txn **ret, struct vmsnap_diag *d)
{
        struct vmsnap_snapshot r;
        int err = store_row_get(s, id, &r, d);
        if (err < 0)
                return err;
        if (r.state != VMSNAP_SNAPSHOT_PENDING)
                return vmsnap_diag(d, -ENOENT, "snapshot %s is %s, not pending", id,
                                   vmsnap_snapshot_state_name(r.state));
        int lock = store_lock_take(s, id, true);
        if (lock < 0)
                return vmsnap_diag(d, lock,
                                   "pending snapshot %s is being created by a running "
                                   "process",
                                   id);
        int fd = store_open_snapdir(s, id);
        struct vmsnap_store_txn *t = fd < 0 ? NULL : txn_new(s, &r, fd, lock);
        if (!t) {
                if (fd >= 0)
                        close(fd);
                store_lock_release(s, id, lock);
                return fd < 0 ? vmsnap_diag(d, fd,
                                            "pending snapshot %s: its directory is gone: "
                                            "%s",
                                            id, strerror(-fd))
                              : vmsnap_diag(d, -ENOMEM, "out of memory");
        }
        if (r.parent_id[0])
                t->parent_lock = store_lock_take(s, r.parent_id, false);
        *ret = t;
        return 0;
}

const char *vmsnap_store_txn_id(const struct vmsnap_store_txn *t)
{
        return t->rec.id;
}

const char *vmsnap_store_txn_dir(const struct vmsnap_store_txn *t)
{
        return t->dir;
}

int vmsnap_store_txn_set_vmm_version(struct vmsnap_store_txn *t, const char *version)
{
        if (!t || !version || strlen(version) >= sizeof(t->rec.vmm_version))
                return -EINVAL;
        snprintf(t->rec.vmm_version, sizeof(t->rec.vmm_version), "%s", version);
        return 0;
}

int vmsnap_store_txn_dirfd(const struct vmsnap_store_txn *t)
{
        return t->dirfd;
}

static struct known_file *known_slot(struct vmsnap_store_txn *t, const char *name)
{
        for (size_t i = 0; i < t->n_known; i++)
                if (strcmp(t->known[i].name, name) == 0)
                        return &t->known[i];
        return NULL;
}

void store_txn_forget(struct vmsnap_store_txn *t, const char *name)
{
        struct known_file *k = known_slot(t, name);
        if (k)
                *k = t->known[--t->n_known];
}

int store_txn_set_lineage(struct vmsnap_store_txn *t, const char *parent_id,
                          const char *template_id)
{
        if ((parent_id && parent_id[0] && !store_id_valid(parent_id)) ||
            (template_id && template_id[0] && !store_id_valid(template_id)))
                return -EINVAL;
        snprintf(t->rec.parent_id, sizeof(t->rec.parent_id), "%s", parent_id ? parent_id : "");
        snprintf(t->rec.template_id, sizeof(t->rec.template_id), "%s",
                 template_id ? template_id : "");
        return 0;
}

int store_txn_known(struct vmsnap_store_txn *t, const char *name, uint64_t size,
                    const struct vmsnap_hash *h, struct vmsnap_diag *d)
{
        store_txn_forget(t, name);
        struct known_file *nk = realloc(t->known, (t->n_known + 1) * sizeof(*nk));
        if (!nk)
                return vmsnap_diag(d, -ENOMEM, "out of memory");
        t->known = nk;
        struct known_file *k = &nk[t->n_known++];
        snprintf(k->name, sizeof(k->name), "%s", name);
        k->size = size;
        k->hash = *h;
        return 0;
}

/* Records the checksum of one pending file when it is the very inode of the ready
 * snapshot's file of that name (same device and inode, same size). */
static void reuse_one(struct vmsnap_store_txn *t, int from_fd,
                      const struct vmsnap_snapshot_file *f)
{
        struct stat a, b;
        if (fstatat(t->dirfd, f->name, &a, AT_SYMLINK_NOFOLLOW) < 0 ||
            fstatat(from_fd, f->name, &b, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(a.st_mode) ||
            a.st_dev != b.st_dev || a.st_ino != b.st_ino || (uint64_t)a.st_size != f->size)
                return;
        store_txn_known(t, f->name, f->size, &f->checksum, NULL);
}

int vmsnap_store_txn_reuse_checksums(struct vmsnap_store_txn *t, const char *from_id,
                                     struct vmsnap_diag *d)
{
        if (!t || t->finished || !from_id)
                return vmsnap_diag(d, -EINVAL, "checksum reuse: bad arguments");
        struct store_envelope env;
        int lock = -1, fd = store_open_ready(t->s, from_id, &env, &lock, d);
        if (fd < 0)
                return fd;
        for (size_t i = 0; i < env.n_files; i++)
                reuse_one(t, fd, &env.files[i]);
        store_envelope_clear(&env);
        close(fd);
        store_lock_release(t->s, from_id, lock);
        return 0;
}

int vmsnap_store_txn_preseal(struct vmsnap_store_txn *t, struct vmsnap_diag *d)
{
        if (!t || t->finished)
                return vmsnap_diag(d, -EINVAL, "preseal of a finished create");
        char **names;
        size_t n;
        int r = store_list_files(t->dirfd, &names, &n, d);
        if (r < 0)
                return vmsnap_diag_prefix(d, "snapshot %s", t->rec.id);
        for (size_t i = 0; r == 0 && i < n; i++) {
                struct stat st;
                _cleanup_close_ int fd = vmsnap_fs_open_regular(t->dirfd, names[i], &st, false);
                struct vmsnap_hash hash;
                if (fd < 0)
                        r = vmsnap_diag(d, fd, "%s/%s: cannot open: %s", t->dir, names[i],
                                        vmsnap_fs_open_error(fd));
                else if (vmsnap_sys.fsync(fd) < 0)
                        r = vmsnap_diag(d, -errno, "%s/%s: fsync failed: %s", t->dir, names[i],
                                        strerror(errno));
                else if ((r = store_hash_fd(fd, (uint64_t)st.st_size, &hash, NULL, NULL)) < 0)
                        r = vmsnap_diag(d, r, "%s/%s: cannot read: %s", t->dir, names[i],
                                        strerror(-r));
                else
                        r = store_txn_known(t, names[i], (uint64_t)st.st_size, &hash, d);
        }
        store_strv_free(names);
        return r;
}

void vmsnap_store_txn_reuse_pending(struct vmsnap_store_txn *t,
                                    const struct vmsnap_store_txn *from)
{
        if (!t || !from || t->finished || from->finished)
                return;
        for (size_t i = 0; i < from->n_known; i++) {
                const struct known_file *k = &from->known[i];
                struct stat a, b;
                if (fstatat(t->dirfd, k->name, &a, AT_SYMLINK_NOFOLLOW) == 0 &&
                    fstatat(from->dirfd, k->name, &b, AT_SYMLINK_NOFOLLOW) == 0 &&
                    S_ISREG(a.st_mode) && a.st_dev == b.st_dev && a.st_ino == b.st_ino &&
                    (uint64_t)a.st_size == k->size)
                        store_txn_known(t, k->name, k->size, &k->hash, NULL);
        }
}

/* Validates the memory snapshot in the pending directory and takes generation and size
 * from its header. */
static int read_mem(struct vmsnap_store_txn *t, struct vmsnap_diag *d)
{
        struct vmsnap_mem_snapshot *m;
        int r = vmsnap_mem_open(t->dir, &m, d);
        if (r < 0)
                return vmsnap_diag_prefix(d, "snapshot %s", t->rec.id);
        const struct vmsnap_mem_header *h = vmsnap_mem_header(m);
        t->rec.generation = h->generation;
        if (t->rec.memory == 0)
                t->rec.memory = h->size;
        vmsnap_mem_close(m);
        return 0;
}

/* fsyncs one file and fills its envelope entry (checksum reused from import when known). */
static int seal_file(struct vmsnap_store_txn *t, const char *name,
                     struct vmsnap_snapshot_file *out,
                     struct vmsnap_diag *d)
{
        struct stat st;
        _cleanup_close_ int fd = vmsnap_fs_open_regular(t->dirfd, name, &st, false);
        if (fd < 0)
                return vmsnap_diag(d, fd, "%s: cannot open: %s", name, vmsnap_fs_open_error(fd));
        /* Private whatever wrote it (a hard link from a run directory keeps its inode's
         * mode): the snapshot's files are 0600, except a read-only input of ours the jail
         * layer shares with the jails' group (0640, e.g. the guest kernel: its inode is
         * linked into run dirs, and tightening it would fail a jailed VMM starting now). */
        bool shared_input = (st.st_mode & 07777) == 0640 && st.st_uid == geteuid();
        if ((st.st_mode & 07777) != VMSNAP_FILE_MODE && !shared_input &&
            fchmod(fd, VMSNAP_FILE_MODE) < 0)
                return vmsnap_diag(d, -errno, "%s: chmod failed: %s", name, strerror(errno));
        if (vmsnap_sys.fsync(fd) < 0)
                return vmsnap_diag(d, -errno, "%s: fsync failed: %s", name, strerror(errno));
        snprintf(out->name, sizeof(out->name), "%s", name);
        out->size = (uint64_t)st.st_size;
        const struct known_file *k = known_slot(t, name);
        if (k && k->size == out->size) {
                out->checksum = k->hash;
                return 0;
        }
        int r = store_hash_fd(fd, out->size, &out->checksum, NULL, NULL);
        return r < 0 ? vmsnap_diag(d, r, "%s: cannot read: %s", name, strerror(-r)) : 0;
}

/* Starts the write-back of every file at once (no wait), so that the fsyncs of seal_file
 * wait for I/O already under way, mostly together, instead of one file's after another's
 * (a pause's memory layer leaves its files to this commit: vmsnap_mem_opts.defer_sync).
 * Best effort: seal_file's fsync is what makes each file durable. */
static void start_writeback(int dirfd, char *const *names, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                int fd = openat(dirfd, names[i], O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
                if (fd < 0)
                        continue;
                sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
                close(fd);
        }
}

/* Step 3: every file durable and described. */
static int seal_files(struct vmsnap_store_txn *t, struct store_envelope *env, struct vmsnap_diag *d)
{
        store_remove_temp_files(t->dirfd);
        char **names;
        size_t n;
        int r = store_list_files(t->dirfd, &names, &n, d);
        if (r < 0)
                return vmsnap_diag_prefix(d, "snapshot %s", t->rec.id);
        if (n == 0 || n > STORE_MAX_FILES) {
                store_strv_free(names);
                return vmsnap_diag(d, -EINVAL, "snapshot %s: %s", t->rec.id,
                                   n ? "too many files" : "no files were written");
        }
        env->files = calloc(n, sizeof(*env->files));
        r = env->files ? 0 : vmsnap_diag(d, -ENOMEM, "out of memory");
        bool has_mem = false;
        if (r == 0)
                start_writeback(t->dirfd, names, n);
        for (size_t i = 0; r == 0 && i < n; i++) {
                r = seal_file(t, names[i], &env->files[i], d);
                has_mem |= strcmp(names[i], VMSNAP_MEM_HEADER_NAME) == 0;
        }
        env->n_files = n;
        store_strv_free(names);
        if (r == 0 && has_mem)
                r = read_mem(t, d);
        if (r == 0 && (vmsnap_fs_fsync_dir(t->dirfd) < 0 || vmsnap_fs_fsync_dir(t->s->snapfd) < 0))
                r = vmsnap_diag(d, -EIO, "snapshot %s: fsync of its directory failed", t->rec.id);
        return r;
}

static int mark_ready(struct vmsnap_store_txn *t, struct vmsnap_diag *d)
{
        struct vmsnap_store *s = t->s;
        int r = store_tx_begin(s, d);
        if (r < 0)
                return r;
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        r = store_prepare(s,
                          "UPDATE snapshots SET state = 'ready', state_changed = ?1, "
                          "size_bytes = ?2, generation = ?3, memory = ?4, vmm_version = ?6, "
                          STORE_SET_LINEAGE("?7", "?8")
                          " WHERE id = ?5 AND state = 'pending'",
                          &st, d);
        if (r == 0) {
                sqlite3_bind_int64(st, 1, store_now());
                sqlite3_bind_int64(st, 2, (sqlite3_int64)t->rec.size_bytes);
                sqlite3_bind_int64(st, 3, (sqlite3_int64)t->rec.generation);
                sqlite3_bind_int64(st, 4, (sqlite3_int64)t->rec.memory);
                sqlite3_bind_text(st, 5, t->rec.id, -1, SQLITE_STATIC);
                sqlite3_bind_text(st, 6, t->rec.vmm_version, -1, SQLITE_STATIC);
                sqlite3_bind_text(st, 7, t->rec.parent_id, -1, SQLITE_STATIC);
                sqlite3_bind_text(st, 8, t->rec.template_id, -1, SQLITE_STATIC);
                int rc = sqlite3_step(st);
                if (rc != SQLITE_DONE)
                        r = store_sql_error(s, rc, "marking the snapshot ready", d);
                else if (sqlite3_changes(s->db) != 1)
                        r = vmsnap_diag(d, -ESTALE,
                                        "snapshot %s: its pending row is gone "
                                        "(removed by GC?)",
                                        t->rec.id);
        }
        if (r < 0) {
                store_tx_rollback(s);
                return r;
        }
        return store_tx_commit(s, d);
}

int vmsnap_store_txn_commit(struct vmsnap_store_txn *t, struct vmsnap_snapshot *ret,
                            struct vmsnap_diag *d)
{
        if (!t || t->finished)
                return vmsnap_diag(d, -EINVAL, "commit of a finished create");
        struct store_envelope env = {.rec = t->rec};
        int r = seal_files(t, &env, d);
        if (r < 0)
                goto out;
        vmsnap_crashpoint("store.commit.files");
        env.rec = t->rec; /* generation and memory from the header */
        if ((r = store_envelope_write(t->dirfd, &env, d)) < 0)
                goto out;
        vmsnap_crashpoint("store.commit.envelope");
        t->rec.size_bytes = store_dir_allocated(t->dirfd);
        if ((r = mark_ready(t, d)) < 0)
                goto out;
        vmsnap_crashpoint("store.commit.ready");
        t->finished = true;
        t->rec.state = VMSNAP_SNAPSHOT_READY;
        txn_release(t);
        if (ret && store_row_get(t->s, t->rec.id, ret, NULL) < 0) /* the lineage as kept */
                *ret = t->rec;
out:
        store_envelope_clear(&env);
        return r;
}

int vmsnap_store_txn_abort(struct vmsnap_store_txn *t, struct vmsnap_diag *d)
{
        if (!t || t->finished)
                return 0;
        t->finished = true;
        int r = store_pending_remove(t->s, t->rec.id, d);
        txn_release(t);
        return r;
}

void vmsnap_store_txn_free(struct vmsnap_store_txn *t)
{
        if (!t)
                return;
        vmsnap_store_txn_abort(t, NULL);
        free(t->known);
        free(t);
}

int store_pending_remove(struct vmsnap_store *s, const char *id, struct vmsnap_diag *d)
{
        int r = store_remove_snapdir(s, id, NULL, d);
        if (r < 0 && r != -ENOENT)
                return r;
        if ((r = store_tx_begin(s, d)) < 0)
                return r;
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        r = store_prepare(s, "DELETE FROM snapshots WHERE id = ?1 AND state = 'pending'", &st, d);
        if (r == 0) {
                sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
                if (sqlite3_step(st) != SQLITE_DONE)
                        r = store_sql_error(s, sqlite3_errcode(s->db), "removing a pending row", d);
        }
        if (r < 0) {
                store_tx_rollback(s);
                return r;
        }
        return store_tx_commit(s, d);
}
