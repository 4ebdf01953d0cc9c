/* Private pieces shared by the files of src/store (not part of the public API). */
#ifndef VMSNAP_STORE_INTERNAL_H
#define VMSNAP_STORE_INTERNAL_H

#include <jansson.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include <vmsnap/store.h>

#define STORE_DB_NAME       "vmsnap.db"
#define STORE_SNAPSHOTS_DIR "snapshots"
#define STORE_LOCKS_DIR     "locks"
#define STORE_ENVELOPE_MAX  (16u << 20)
#define STORE_MAX_FILES     20000u
#define STORE_MAX_FILE_SIZE (1ull << 50)
#define STORE_BUSY_TIMEOUT  10000 /* ms */
#define STORE_IO_CHUNK      (1u << 20)

struct vmsnap_store {
        char *root; /* absolute */
        int rootfd;
        int snapfd; /* <root>/snapshots */
        int lockfd; /* <root>/locks */
        sqlite3 *db;
};

/* ---- values.c: names, kinds, times, hex ---------------------------------------------------- */

int64_t store_now(void);
bool store_file_name_valid(const char *name);
bool store_id_valid(const char *id); /* canonical lowercase UUID */
int store_time_parse(const char *s, int64_t *ret);
int store_hash_parse(const char *s, struct vmsnap_hash *ret); /* "xxh3-128:<32 hex>" */
void store_hash_format(const struct vmsnap_hash *h, char out[42]);
/* Validates a labels JSON object text and writes its normalized (sorted, compact) form. */
int store_labels_normalize(const char *labels, char out[VMSNAP_LABELS_MAX + 1],
                           struct vmsnap_diag *d);
/* The same for a parsed JSON object. */
int store_labels_from_json(json_t *o, char out[VMSNAP_LABELS_MAX + 1], struct vmsnap_diag *d);
/* Copies src into a fixed buffer; -ENAMETOOLONG (with d naming what) when it does not fit. */
int store_copy_str(char *dst, size_t size, const char *src, const char *what,
                   struct vmsnap_diag *d);

/* ---- files.c: directory and file helpers (flat snapshot directories) ---------------------- */

/* flock with LOCK_NB; returns 0, -EBUSY when another process holds it, or -errno. */
int store_lock(int fd, bool exclusive);
/* Takes the store lock of a snapshot: flock on <root>/locks/<id> (created on demand). The
 * holder of LOCK_EX is the process creating or deleting the snapshot; LOCK_SH holders need
 * its files to stay. Locks live beside, not on, the directory, because the mem layer flocks
 * the directory itself while writing into it. Returns the fd holding the lock, -EBUSY, or
 * -errno. */
int store_lock_take(const struct vmsnap_store *s, const char *id, bool exclusive);
/* Releases a lock from store_lock_take (accepts -1), removing the lock file when no one
 * else holds it. */
void store_lock_release(const struct vmsnap_store *s, const char *id, int fd);
/* Opens snapshots/<id> as a directory fd; returns the fd or -errno. */
int store_open_snapdir(const struct vmsnap_store *s, const char *id);
/* Removes snapshots/<name>: the envelope first (fsync), then every entry, then the directory,
 * then fsyncs snapshots/. -ENOENT when it is not there. crash (may be NULL) names the crash
 * points "<crash>.envelope" and "<crash>.files" passed on the way. */
int store_remove_snapdir(const struct vmsnap_store *s, const char *name, const char *crash,
                         struct vmsnap_diag *d);
/* Crash point "<prefix>.<step>" (util/sys.h); nothing when prefix is NULL. */
void store_crashpoint(const char *prefix, const char *step);
/* Lists the regular files of a snapshot directory (not dot-files, not the envelope), sorted.
 * Any other kind of entry is an error. Returns 0 with a malloc'd NULL-terminated array. */
int store_list_files(int dirfd, char ***ret, size_t *ret_n, struct vmsnap_diag *d);
void store_strv_free(char **v);
/* Every entry name of dirfd (dot-files too), sorted; NULL-terminated malloc'd array. */
int store_list_names(int dirfd, char ***ret, size_t *ret_n);
/* Removes dot-files (staged-write leftovers) from dirfd; returns how many. */
int store_remove_temp_files(int dirfd);
/* Progress: bytes (logical) just processed. */
typedef void (*store_advance_fn)(void *ctx, uint64_t bytes);
/* Receives the data of a file region by region, in order. */
typedef int (*store_sink_fn)(void *ctx, uint64_t off, const void *buf, size_t len);

struct store_region {
        uint64_t off, len;
};

/* The data regions of fd within [0, size), from SEEK_DATA/SEEK_HOLE (one region covering
 * everything when the filesystem cannot tell). Returns 0 with a malloc'd array, or -errno. */
int store_data_regions(int fd, uint64_t size, struct store_region **ret, size_t *ret_n);
/* Reads the given regions of fd in order, handing each chunk to sink (may be NULL), and
 * computes the XXH3-128 of the logical content (holes as zeros, hashed without reading).
 * Returns 0 or -errno (-EINVAL for regions out of order or bounds). */
int store_read_regions(int fd, uint64_t size, const struct store_region *regions, size_t n,
                       store_sink_fn sink, void *sink_ctx, struct vmsnap_hash *ret,
                       store_advance_fn fn, void *ctx);
/* XXH3-128 of the logical content of fd (size bytes). Returns 0 or -errno. */
int store_hash_fd(int fd, uint64_t size, struct vmsnap_hash *ret, store_advance_fn fn, void *ctx);
/* Copies size bytes of in to out (a new file; both from offset 0), holes and all-zero pages
 * left as holes, hashing the logical content into *ret_hash; out ends at size. Adds the
 * bytes really written to *ret_written (may be NULL). Returns 0 or -errno. */
int store_copy_sparse(int in, int out, uint64_t size, struct vmsnap_hash *ret_hash,
                      store_advance_fn fn, void *ctx, uint64_t *ret_written);
/* Allocated bytes (st_blocks * 512) of dirfd itself and the regular files in it. */
uint64_t store_dir_allocated(int dirfd);

/* ---- envelope.c --------------------------------------------------------------------------- */

struct store_envelope {
        struct vmsnap_snapshot rec; /* id, name, kind, parent, template, vmm, vcpus, memory,
                                       generation, created, description, labels */
        struct vmsnap_snapshot_file *files;
        size_t n_files;
};

void store_envelope_clear(struct store_envelope *e);
int store_envelope_parse(const char *buf, size_t len, struct store_envelope *ret,
                         struct vmsnap_diag *d);
int store_envelope_serialize(const struct store_envelope *e, char **ret, size_t *ret_len,
                             struct vmsnap_diag *d);
/* Reads dirfd/snapshot.json (no symlink, at most STORE_ENVELOPE_MAX bytes) into a malloc'd
 * NUL-terminated buffer. -ENOENT when missing. */
int store_envelope_read(int dirfd, char **ret, size_t *ret_len, struct vmsnap_diag *d);
/* Reads and parses dirfd/snapshot.json. -ENOENT when missing. */
int store_envelope_load(int dirfd, struct store_envelope *ret, struct vmsnap_diag *d);
/* Writes e as dirfd/snapshot.json atomically. */
int store_envelope_write(int dirfd, const struct store_envelope *e, struct vmsnap_diag *d);
/* Checks every listed file of e in dirfd: a regular file with the listed size, and (when
 * checksums) content matching. Reports each problem through fn; returns 0 or -EBADMSG (d
 * holds the first problem). */
int store_envelope_check(int dirfd, const struct store_envelope *e, bool checksums,
                         vmsnap_store_problem_fn fn, void *ctx, struct vmsnap_diag *d);
const struct vmsnap_snapshot_file *store_envelope_find(const struct store_envelope *e,
                                                       const char *name);

/* ---- store.c ------------------------------------------------------------------------------ */

/* Takes the shared store lock of a ready snapshot, opens its directory and loads its
 * envelope (checked to name id). Returns the directory fd with *ret_lock holding the lock
 * (release with store_lock_release), or -errno with d. */
int store_open_ready(struct vmsnap_store *s, const char *id, struct store_envelope *env,
                     int *ret_lock, struct vmsnap_diag *d);

/* ---- db.c / schema.c ---------------------------------------------------------------------- */

int store_schema_migrate(struct vmsnap_store *s, struct vmsnap_diag *d);
/* Maps an SQLite failure to -errno with d: "<what>: <sqlite message>". */
int store_sql_error(struct vmsnap_store *s, int rc, const char *what, struct vmsnap_diag *d);
int store_exec(struct vmsnap_store *s, const char *sql, struct vmsnap_diag *d);
int store_prepare(struct vmsnap_store *s, const char *sql, sqlite3_stmt **ret,
                  struct vmsnap_diag *d);
int store_tx_begin(struct vmsnap_store *s, struct vmsnap_diag *d); /* BEGIN IMMEDIATE */
int store_tx_commit(struct vmsnap_store *s, struct vmsnap_diag *d);
void store_tx_rollback(struct vmsnap_store *s);
/* The column list every record query selects, and the reader of one such row. */
#define STORE_COLUMNS                                                                              \
        "id, name, kind, state, parent_id, template_id, vmm, vmm_version, vcpus, memory, "         \
        "generation, created, last_accessed, state_changed, size_bytes, description, labels"
void store_row_read(sqlite3_stmt *st, struct vmsnap_snapshot *r);
/* Reads the row of id (any state) while the caller holds a transaction or not. */
int store_row_get(struct vmsnap_store *s, const char *id, struct vmsnap_snapshot *ret,
                  struct vmsnap_diag *d);
/* Inserts r in r->state (with r->size_bytes); -EEXIST on a taken id or name. */
int store_row_insert(struct vmsnap_store *s, const struct vmsnap_snapshot *r,
                     struct vmsnap_diag *d);
int store_row_delete(struct vmsnap_store *s, const char *id, struct vmsnap_diag *d);
int store_row_set_state(struct vmsnap_store *s, const char *id, enum vmsnap_snapshot_state from,
                        enum vmsnap_snapshot_state to, struct vmsnap_diag *d);
static inline void store_stmtp(sqlite3_stmt **st)
{
        sqlite3_finalize(*st);
}
#define _cleanup_stmt_ __attribute__((cleanup(store_stmtp)))

/* ---- create.c / delete.c / recover.c ------------------------------------------------------- */

/* SQL setting parent_id and template_id to the given ids only when they name a ready row
 * (a ready template): lineage never points at a row that is not there. */
#define STORE_SET_LINEAGE(parent, template)                                                        \
        "parent_id = (SELECT id FROM snapshots WHERE id = " parent " AND state = 'ready'), "       \
        "template_id = (SELECT id FROM snapshots WHERE id = " template " AND state = 'ready' "     \
        "AND kind = 'template')"

/* Sets the lineage the commit records (import: decided once the files arrived); ids are
 * kept only if still ready then. Returns 0 or -EINVAL. */
int store_txn_set_lineage(struct vmsnap_store_txn *t, const char *parent_id,
                          const char *template_id);
/* Drops a checksum recorded with store_txn_known (the file changed: commit hashes it). */
void store_txn_forget(struct vmsnap_store_txn *t, const char *name);
/* Records the checksum the import computed for a file, so commit does not hash it again. */
int store_txn_known(struct vmsnap_store_txn *t, const char *name, uint64_t size,
                    const struct vmsnap_hash *h, struct vmsnap_diag *d);
/* Finishes deleting id (row already 'deleting', directory lock held or free); crash names
 * the crash points passed (NULL: none). */
int store_delete_finish(struct vmsnap_store *s, const char *id, const char *crash,
                        struct vmsnap_diag *d);
/* Removes a dead pending create (directory then row). */
int store_pending_remove(struct vmsnap_store *s, const char *id, struct vmsnap_diag *d);
int store_recover(struct vmsnap_store *s, struct vmsnap_diag *d);
/* Counts rows of snapshot_dependents for id (and fills d with the list when any). */
int store_dependents_check(struct vmsnap_store *s, const char *id, struct vmsnap_diag *d);

#endif
