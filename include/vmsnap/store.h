/* libvmsnap snapshot store: an SQLite index over self-describing snapshot directories;
 * refs, two-phase create, delete with dependency checks, export/import, GC, reindex.
 * Design, schema, envelope and archive layout: docs/store.md. */
#ifndef VMSNAP_STORE_H
#define VMSNAP_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vmsnap/disk.h>
#include <vmsnap/error.h>
#include <vmsnap/mem.h>

#define VMSNAP_STORE_DEFAULT_ROOT "/var/lib/vmsnap"
#define VMSNAP_ENVELOPE_NAME      "snapshot.json"
#define VMSNAP_ID_LEN             36 /* canonical UUID */
#define VMSNAP_NAME_MAX           64
#define VMSNAP_DESCRIPTION_MAX    1024
#define VMSNAP_LABELS_MAX         8192 /* bytes of the labels JSON text */
#define VMSNAP_FILE_NAME_MAX      255

enum vmsnap_snapshot_kind { VMSNAP_SNAPSHOT_PAUSE, VMSNAP_SNAPSHOT_TEMPLATE };

enum vmsnap_snapshot_state {
        VMSNAP_SNAPSHOT_PENDING,  /* being created; invisible */
        VMSNAP_SNAPSHOT_READY,    /* complete and visible */
        VMSNAP_SNAPSHOT_DELETING, /* being deleted; invisible */
};

/* One index row (a value; fixed-size strings, empty when unset). */
struct vmsnap_snapshot {
        char id[VMSNAP_ID_LEN + 1];
        char name[VMSNAP_NAME_MAX + 1]; /* "" = unnamed */
        enum vmsnap_snapshot_kind kind;
        enum vmsnap_snapshot_state state;
        char parent_id[VMSNAP_ID_LEN + 1];   /* "" = none */
        char template_id[VMSNAP_ID_LEN + 1]; /* "" = none */
        char vmm[33];
        char vmm_version[65];
        uint32_t vcpus;
        uint64_t memory; /* bytes of guest memory */
        uint64_t generation;
        int64_t created;       /* unix seconds */
        int64_t last_accessed; /* unix seconds */
        int64_t state_changed; /* unix seconds */
        uint64_t size_bytes;   /* allocated bytes of the directory */
        char description[VMSNAP_DESCRIPTION_MAX + 1];
        char labels[VMSNAP_LABELS_MAX + 1]; /* JSON object text, "{}" when none */
};

/* One file of a snapshot as its envelope lists it. */
struct vmsnap_snapshot_file {
        char name[VMSNAP_FILE_NAME_MAX + 1];
        uint64_t size;
        struct vmsnap_hash checksum; /* XXH3-128 of the logical content (holes as zeros) */
};

/* What a create records. Unset strings (NULL or "") are empty in the row. */
struct vmsnap_snapshot_spec {
        const char *id; /* NULL: a new random id (import passes the archive's) */
        const char *name;
        enum vmsnap_snapshot_kind kind;
        const char *parent_id;   /* must be a ready row */
        const char *template_id; /* must be a ready template row */
        const char *vmm;
        const char *vmm_version;
        uint32_t vcpus;
        uint64_t memory;     /* 0: taken from memfile.header at commit */
        uint64_t generation; /* taken from memfile.header at commit when present */
        int64_t created;     /* 0: now */
        const char *description;
        const char *labels; /* JSON object text of string values, NULL = {} */
};

/* Progress of a long operation: done and total bytes (total 0 when unknown). */
typedef void (*vmsnap_progress_fn)(void *ctx, uint64_t done, uint64_t total);

/* Called once per problem found by verify or reindex. */
typedef void (*vmsnap_store_problem_fn)(void *ctx, const char *problem);

/* ---- the store (opaque handle) ------------------------------------------------------------ */

/* A store handle is used by one thread at a time (several processes, and several handles
 * in one process, may share a root: SQLite and the store locks order them). */
struct vmsnap_store;
struct sqlite3;

/* The root to use when none is given: $VMSNAP_ROOT when set and non-empty, else
 * VMSNAP_STORE_DEFAULT_ROOT. */
const char *vmsnap_store_default_root(void);

/* Opens (creating when missing) the store at root: the directory, vmsnap.db (WAL, migrated
 * to the current schema) and snapshots/; then recovers rows left by dead processes (see
 * docs/store.md). Returns 0 and *ret, or -errno with d. */
int vmsnap_store_open(const char *root, struct vmsnap_store **ret, struct vmsnap_diag *d);

/* Closes the store; accepts NULL. */
void vmsnap_store_close(struct vmsnap_store *s);

/* The absolute root directory of the store. */
const char *vmsnap_store_root(const struct vmsnap_store *s);

/* The database connection, for layers that keep their own tables in the same file (the
 * sandbox layer). Writes must use BEGIN IMMEDIATE. */
struct sqlite3 *vmsnap_store_db(struct vmsnap_store *s);

/* Writes the directory of snapshot id into out; returns 0 or -ENAMETOOLONG. */
int vmsnap_store_snapshot_dir(const struct vmsnap_store *s, const char *id, char *out, size_t size);

/* ---- names and refs ----------------------------------------------------------------------- */

/* True when name is a valid snapshot name (and does not look like an id). */
bool vmsnap_store_name_valid(const char *name);

/* Checks the len bytes of a ref as received (a decoded URL segment may hold a NUL): -EINVAL
 * with d when it is empty or holds a NUL or another control character (0x00-0x1f, 0x7f),
 * which no id, name or prefix can contain; 0 otherwise. */
int vmsnap_store_ref_check(const char *ref, size_t len, struct vmsnap_diag *d);

/* Resolves a ref (exact id, name, or unique id prefix of >= 3 characters) among ready rows.
 * A ref holding a control character is -EINVAL (vmsnap_store_ref_check), never looked up.
 * Returns 0 and *ret, -ENOENT when nothing matches, -ENOTUNIQ when a prefix matches several
 * (d lists the candidates), or another -errno. */
int vmsnap_store_resolve(struct vmsnap_store *s, const char *ref, struct vmsnap_snapshot *ret,
                         struct vmsnap_diag *d);

/* Resolves n refs and removes duplicates, keeping first-seen order. Returns 0 with a
 * malloc'd array of *ret_n records, or the first ref's error (nothing is returned). */
int vmsnap_store_resolve_many(struct vmsnap_store *s, const char *const *refs, size_t n,
                              struct vmsnap_snapshot **ret, size_t *ret_n, struct vmsnap_diag *d);

/* Reads the row of an exact id in any state. Returns 0, -ENOENT, or -errno. */
int vmsnap_store_get(struct vmsnap_store *s, const char *id, struct vmsnap_snapshot *ret,
                     struct vmsnap_diag *d);

#define VMSNAP_LIST_ALL 1u /* include pending and deleting rows */

/* Lists rows ordered by creation time (then insertion order) as a malloc'd array. Returns 0
 * or -errno. */
int vmsnap_store_list(struct vmsnap_store *s, unsigned flags, struct vmsnap_snapshot **ret,
                      size_t *ret_n, struct vmsnap_diag *d);

/* Bumps last_accessed of id to now (templates in use stay out of GC's LRU). */
int vmsnap_store_touch(struct vmsnap_store *s, const char *id, struct vmsnap_diag *d);

/* Reads the file list of a ready snapshot's envelope (malloc'd). Returns 0 or -errno. */
int vmsnap_store_files(struct vmsnap_store *s, const char *id, struct vmsnap_snapshot_file **ret,
                       size_t *ret_n, struct vmsnap_diag *d);

/* Checks a snapshot directory against its envelope (sizes and checksums) and, when it holds
 * a memory snapshot, with vmsnap_mem_verify. Reports each problem through fn (may be NULL).
 * Returns 0 when sound, -EBADMSG when not (d holds the first problem), or -errno. */
int vmsnap_store_verify(struct vmsnap_store *s, const char *id, vmsnap_store_problem_fn fn,
                        void *ctx, struct vmsnap_diag *d);

/* ---- two-phase create --------------------------------------------------------------------- */

struct vmsnap_store_txn;

/* Begins a create: makes and locks snapshots/<id>/ and inserts a pending row (the name is
 * reserved from now on). The caller writes the snapshot's files into the directory, then
 * commits or aborts. Returns 0 and *ret, -EEXIST (name taken), -ENOENT (parent/template not
 * a ready row), -EINVAL (bad spec), or -errno; d says which. */
int vmsnap_store_create_begin(struct vmsnap_store *s, const struct vmsnap_snapshot_spec *spec,
                              struct vmsnap_store_txn **ret, struct vmsnap_diag *d);

/* Takes over the pending create of id left by a dead process (its files stay). Returns 0 and
 * *ret, -EBUSY when its owner is alive, -ENOENT when no such pending row, or -errno. */
int vmsnap_store_create_resume(struct vmsnap_store *s, const char *id,
                               struct vmsnap_store_txn **ret, struct vmsnap_diag *d);

/* The id, the pending directory's absolute path and an fd on it (owned by the txn). */
const char *vmsnap_store_txn_id(const struct vmsnap_store_txn *t);
const char *vmsnap_store_txn_dir(const struct vmsnap_store_txn *t);
int vmsnap_store_txn_dirfd(const struct vmsnap_store_txn *t);

/* Records the VMM version that wrote the state (known only once the VM was saved); the
 * envelope and the row get it at commit. Returns 0 or -EINVAL. */
int vmsnap_store_txn_set_vmm_version(struct vmsnap_store_txn *t, const char *version);

/* Lets the commit take the checksum of each pending file that is the very inode (a hard
 * link) of a file of the ready snapshot from_id from its envelope, instead of reading it
 * again: a snapshot's files are never modified. Returns 0 or -errno (nothing recorded). */
int vmsnap_store_txn_reuse_checksums(struct vmsnap_store_txn *t, const char *from_id,
                                     struct vmsnap_diag *d);

/* Makes every file in the pending directory durable now (fsync) and records its checksum,
 * so that a later commit of this txn, or of another that hard-links these files
 * (vmsnap_store_txn_reuse_pending), neither reads nor waits for them again. For files
 * that are not modified after this call. Returns 0 or -errno (with d). */
int vmsnap_store_txn_preseal(struct vmsnap_store_txn *t, struct vmsnap_diag *d);

/* Lets t's commit take the checksum vmsnap_store_txn_preseal recorded in `from` (another
 * pending create, not yet finished) for each of t's files that is the very inode of
 * from's file of that name (same size). */
void vmsnap_store_txn_reuse_pending(struct vmsnap_store_txn *t,
                                    const struct vmsnap_store_txn *from);

/* Completes the create: validates and fsyncs the files, writes the envelope, marks the row
 * ready. On success the txn is finished (free it) and *ret (may be NULL) holds the row. On
 * failure nothing is visible and the txn can still be aborted. Returns 0 or -errno. */
int vmsnap_store_txn_commit(struct vmsnap_store_txn *t, struct vmsnap_snapshot *ret,
                            struct vmsnap_diag *d);

/* Abandons the create: removes the directory and the row. Returns 0 or -errno. */
int vmsnap_store_txn_abort(struct vmsnap_store_txn *t, struct vmsnap_diag *d);

/* Frees a txn, aborting it first when neither committed nor aborted; accepts NULL. */
void vmsnap_store_txn_free(struct vmsnap_store_txn *t);

/* Makes a snapshot from a full memory file (vmsnap_mem_process), or from a memory file over
 * the parent snapshot's directory (vmsnap_mem_diff) when spec->parent_id is set, plus an
 * optional VMM state file copied in as `snapfile`. Unset vmm/vcpus/template fields are
 * inherited from the parent. Returns 0 and *ret (may be NULL), or -errno with d. */
int vmsnap_store_add(struct vmsnap_store *s, const struct vmsnap_snapshot_spec *spec,
                     const char *memfile, const char *snapfile, const struct vmsnap_mem_opts *mopts,
                     struct vmsnap_snapshot *ret, struct vmsnap_diag *d);

/* ---- delete ------------------------------------------------------------------------------- */

/* Something that depends on a snapshot (a row of the snapshot_dependents view). */
struct vmsnap_dependent {
        char kind[48];
        char id[VMSNAP_ID_LEN + 1];
        char label[VMSNAP_NAME_MAX + 1];
};

/* Lists what depends on id (malloc'd array). Returns 0 or -errno. */
int vmsnap_store_dependents(struct vmsnap_store *s, const char *id, struct vmsnap_dependent **ret,
                            size_t *ret_n, struct vmsnap_diag *d);

#define VMSNAP_DELETE_FORCE 1u /* delete even when something depends on it */

/* Deletes a ready snapshot: refuses with -EBUSY and a message naming the dependents when
 * anything depends on it (unless forced), and with -EBUSY when another process is using its
 * directory. Returns 0, -ENOENT, -EBUSY or -errno. */
int vmsnap_store_delete(struct vmsnap_store *s, const char *id, unsigned flags,
                        struct vmsnap_diag *d);

/* What a snapshot's files take on disk and what of it is shared (docs/store.md "Usage"). */
struct vmsnap_snapshot_usage {
        uint64_t allocated;        /* allocated bytes of its directory and files, as size_bytes
                                      counts them, measured now */
        uint64_t shared;           /* of those, in files with more than one link: the same inode
                                      is another snapshot's file too (or a shared input such as
                                      the guest kernel) */
        uint64_t parent_shared;    /* of those, in files that are the same inode as a file of
                                      the snapshot it stands on: parent_id, else template_id
                                      (0 without either, or when that one is gone) */
        char base[VMSNAP_BASE_NAME_LEN + 1]; /* the pinned base image its disk stands on, "" */
        uint64_t base_allocated;   /* that image's allocated bytes (every snapshot on it shares
                                      them; not in allocated) */
};

/* Measures ready snapshot snap's usage now (a stat of each file, and of its parent's or
 * template's). Returns 0 or -errno (d); a parent that is gone counts as none. */
int vmsnap_store_usage(struct vmsnap_store *s, const struct vmsnap_snapshot *snap,
                       struct vmsnap_snapshot_usage *ret, struct vmsnap_diag *d);

/* ---- export / import ---------------------------------------------------------------------- */

enum vmsnap_compression {
        VMSNAP_COMPRESSION_ZSTD, /* the default */
        VMSNAP_COMPRESSION_GZIP,
        VMSNAP_COMPRESSION_NONE,
};

/* Parses "none" | "gzip" | "zstd"; returns 0 or -EINVAL. */
int vmsnap_compression_parse(const char *s, enum vmsnap_compression *ret);

struct vmsnap_export_opts {
        enum vmsnap_compression compression;
        int level;   /* 0 = the codec's default (zstd 3, gzip 6) */
        int threads; /* zstd worker threads; 0 = one per CPU, at most 4; 1 = inline */
        bool no_base; /* leave out the base image the snapshot's disk stands on */
        vmsnap_progress_fn progress;
        void *progress_ctx;
};

/* Writes snapshot id as a (compressed) tar stream to fd: snapshot.json first, then every
 * file, holes kept as sparse entries, then (unless no_base) the pinned base image its disk
 * stands on as images/rootfs-<hash>.ext4, once; every byte checked against the envelope (the
 * base: against its name). Returns 0 or -errno (d). */
int vmsnap_store_export_fd(struct vmsnap_store *s, const char *id, int fd,
                           const struct vmsnap_export_opts *opts, struct vmsnap_diag *d);

/* Copies snapshot id into dir (created 0700; must be empty when it exists), holes kept, the
 * base image (unless no_base) into dir/images/, snapshot.json written last. Returns 0 or
 * -errno (d). */
int vmsnap_store_export_dir(struct vmsnap_store *s, const char *id, const char *dir,
                            const struct vmsnap_export_opts *opts, struct vmsnap_diag *d);

#define VMSNAP_IMPORT_DEFAULT_MAX         (256ull << 30) /* bytes of data really written */
#define VMSNAP_IMPORT_DEFAULT_MAX_LOGICAL (1ull << 40)   /* declared (logical) bytes */

struct vmsnap_import_opts {
        const char *name;        /* overrides the archive's name */
        const char *description; /* overrides the archive's description */
        uint64_t max_bytes;      /* refuse once more data than this would be written (zero
                                    runs become holes and cost nothing); 0 = the default */
        uint64_t max_logical;    /* refuse a larger declared total (bounds the time spent
                                    hashing sparse claims); 0 = the default */
        vmsnap_progress_fn progress;
        void *progress_ctx;
        vmsnap_store_problem_fn note; /* notes for the user (a lineage link dropped, a base
                                         image pinned or found); may be NULL */
        void *note_ctx;
};

/* Imports a tar stream (none/gzip/zstd, detected) from fd through a two-phase create: every
 * entry, checksum and the memory snapshot checked, disks checked so that they name no file
 * but the pinned base image (installed from the archive into <root>/images after checking
 * its hash, or found there), lineage kept only when verified; see docs/store.md. Returns 0 and *ret (may be NULL), or -errno (-EBADMSG for a
 * refused archive, -EEXIST for a name clash) with d naming the entry and the rule. */
int vmsnap_store_import_fd(struct vmsnap_store *s, int fd, const struct vmsnap_import_opts *opts,
                           struct vmsnap_snapshot *ret, struct vmsnap_diag *d);

/* Imports a directory written by export_dir. Returns as import_fd. */
int vmsnap_store_import_dir(struct vmsnap_store *s, const char *dir,
                            const struct vmsnap_import_opts *opts, struct vmsnap_snapshot *ret,
                            struct vmsnap_diag *d);

/* ---- GC and reindex ----------------------------------------------------------------------- */

#define VMSNAP_GC_DEFAULT_GRACE 3600 /* seconds */

/* One thing GC removes (or would remove). */
struct vmsnap_gc_item {
        const char *what; /* pending | orphan-dir | temp-file | unreferenced-diff |
                             template-lru | unindexed (reported, never removed) */
        const char *id;   /* snapshot id or directory name */
        const char *path; /* what is (or would be) removed */
        uint64_t bytes;   /* allocated bytes it frees */
};

typedef void (*vmsnap_gc_item_fn)(void *ctx, const struct vmsnap_gc_item *item);

struct vmsnap_gc_opts {
        int64_t grace;   /* seconds; < 0 = VMSNAP_GC_DEFAULT_GRACE */
        uint64_t budget; /* bytes of disk for the store; 0 = no LRU eviction */
        bool dry_run;
        vmsnap_gc_item_fn fn; /* may be NULL */
        void *ctx;
};

struct vmsnap_gc_result {
        uint64_t items; /* removed (or, dry run, to remove); unindexed not counted */
        uint64_t bytes;
        uint64_t usage_before, usage_after; /* real disk usage of snapshots/ */
};

/* Collects garbage as docs/store.md describes. Returns 0 (partial failures are reported
 * through fn as problems and skipped) or -errno. */
int vmsnap_store_gc(struct vmsnap_store *s, const struct vmsnap_gc_opts *opts,
                    struct vmsnap_gc_result *ret, struct vmsnap_diag *d);

#define VMSNAP_REINDEX_VERIFY 1u /* check checksums, not only sizes */

struct vmsnap_reindex_result {
        uint64_t added, removed, kept, skipped;
};

/* Rebuilds the index from the directories (docs/store.md). Returns 0 or -errno. */
int vmsnap_store_reindex(struct vmsnap_store *s, unsigned flags, vmsnap_store_problem_fn fn,
                         void *ctx, struct vmsnap_reindex_result *ret, struct vmsnap_diag *d);

/* ---- small helpers shared with the programs ----------------------------------------------- */

const char *vmsnap_snapshot_kind_name(enum vmsnap_snapshot_kind k);
int vmsnap_snapshot_kind_parse(const char *s, enum vmsnap_snapshot_kind *ret);
const char *vmsnap_snapshot_state_name(enum vmsnap_snapshot_state st);

/* Formats unix seconds as RFC 3339 UTC ("2025-11-26T08:31:00Z") into out (21 bytes). */
void vmsnap_time_format(int64_t t, char out[21]);

#endif
