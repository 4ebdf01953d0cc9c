/* libvmsnap remote store: snapshots in S3 object storage as content-addressed chunks plus
 * one manifest per snapshot; push, pull, list, remove, GC. Design: docs/remote.md. */
#ifndef VMSNAP_REMOTE_H
#define VMSNAP_REMOTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vmsnap/error.h>
#include <vmsnap/store.h>

#define VMSNAP_REMOTE_CHUNK_SIZE   (4u << 20)
#define VMSNAP_REMOTE_MANIFEST_MAX (16u << 20) /* bytes of manifest JSON */
#define VMSNAP_REMOTE_FILES_MAX    20001
#define VMSNAP_REMOTE_PATH_MAX     (7 + VMSNAP_FILE_NAME_MAX) /* "images/" + a name */
#define VMSNAP_REMOTE_PARALLEL     8

/* ---- configuration ------------------------------------------------------------------------ */

/* Where a remote is and how to sign for it (holds the secret: wipe with _config_clear). */
struct vmsnap_remote_config {
        char endpoint[512]; /* http[s]://host[:port], no trailing slash */
        char bucket[64];
        char region[64];
        char access_key[128];
        char secret_key[128];
};

/* Loads the remote config: name != NULL reads <root>/remotes/<name>.conf (must be a regular
 * file owned by the caller, mode without group/other bits); name == NULL takes the
 * VMSNAP_S3_* environment when VMSNAP_S3_ENDPOINT is set, else <root>/remotes/default.conf.
 * Returns 0 and *ret, or -errno with d naming the file or variable (never a secret). */
int vmsnap_remote_config_load(const char *root, const char *name,
                              struct vmsnap_remote_config *ret, struct vmsnap_diag *d);

/* Zeroes c, secret included. */
void vmsnap_remote_config_clear(struct vmsnap_remote_config *c);

/* ---- manifests (values) ------------------------------------------------------------------ */

struct vmsnap_remote_chunk {
        bool zero;          /* an all-zero chunk: not stored */
        uint8_t sha256[32]; /* when !zero */
};

struct vmsnap_remote_file {
        char path[VMSNAP_REMOTE_PATH_MAX + 1]; /* a flat name or images/<flat name> */
        uint64_t size;
        size_t nchunks;                     /* ceil(size / chunk_size) */
        struct vmsnap_remote_chunk *chunks; /* owned */
};

struct vmsnap_remote_manifest {
        char id[VMSNAP_ID_LEN + 1];
        char name[VMSNAP_NAME_MAX + 1]; /* "" = unnamed */
        enum vmsnap_snapshot_kind kind;
        char parent_id[VMSNAP_ID_LEN + 1];   /* "" = none */
        char template_id[VMSNAP_ID_LEN + 1]; /* "" = none */
        int64_t created, pushed;             /* unix seconds */
        uint32_t chunk_size;
        size_t nfiles;
        struct vmsnap_remote_file *files; /* owned */
};

/* Parses and validates manifest JSON (docs/remote.md rules); expect_id (may be NULL) must
 * equal its id. Returns 0 and *ret (free with _manifest_free), or -EBADMSG with d naming
 * what names the object (what) and the rule broken. */
int vmsnap_remote_manifest_parse(const char *text, size_t len, const char *what,
                                 const char *expect_id, struct vmsnap_remote_manifest *ret,
                                 struct vmsnap_diag *d);

/* Serializes m as manifest JSON (malloc'd, NUL-terminated). Returns 0 or -ENOMEM. */
int vmsnap_remote_manifest_format(const struct vmsnap_remote_manifest *m, char **ret);

/* Logical bytes of every file of m. */
uint64_t vmsnap_remote_manifest_size(const struct vmsnap_remote_manifest *m);

/* Frees what m owns and zeroes it; accepts NULL. */
void vmsnap_remote_manifest_free(struct vmsnap_remote_manifest *m);

/* ---- the remote (opaque handle) ---------------------------------------------------------- */

struct vmsnap_remote;

/* Opens a client for config c (copied). Returns 0 and *ret, or -errno. */
int vmsnap_remote_open(const struct vmsnap_remote_config *c, struct vmsnap_remote **ret,
                       struct vmsnap_diag *d);

/* Closes r (wiping its secret); accepts NULL. */
void vmsnap_remote_close(struct vmsnap_remote *r);

/* Makes push and pull report progress to fn(ctx, done, total): bytes of chunks moved so far
 * and the total to move (the chunks the bucket lacks, or that a pull fetches), after each
 * batch. NULL: none (the default). */
void vmsnap_remote_set_progress(struct vmsnap_remote *r, vmsnap_progress_fn fn, void *ctx);

/* Sets the size limit of the chunk cache pulls go through (<store root>/chunk-cache,
 * docs/remote.md "The local chunk cache"); 0: pulls use no cache. The default is
 * VMSNAP_CHUNK_CACHE_SIZE from the environment, else 8 GiB. */
void vmsnap_remote_set_cache_size(struct vmsnap_remote *r, uint64_t bytes);

/* Counters of the last push or pull. */
struct vmsnap_remote_stats {
        uint64_t chunks;         /* non-zero chunks of the snapshot */
        uint64_t zero_chunks;    /* all-zero chunks (never transferred) */
        uint64_t chunks_sent;    /* push: uploaded (the bucket lacked them) */
        uint64_t chunks_fetched; /* pull: downloaded (GETs that brought a chunk) */
        uint64_t chunks_cached;  /* pull: taken from the local chunk cache instead */
        uint64_t cache_corrupt;  /* pull: cached files that failed their check (refetched) */
        uint64_t bytes;          /* bytes uploaded or downloaded in chunks */
        uint64_t retries;        /* requests retried */
};

/* Pushes ready snapshot id of store s: exports it, uploads the chunks the bucket lacks,
 * then writes its manifest. Returns 0 and *ret_stats (may be NULL), or -errno with d. */
int vmsnap_remote_push(struct vmsnap_remote *r, struct vmsnap_store *s, const char *id,
                       struct vmsnap_remote_stats *ret_stats, struct vmsnap_diag *d);

/* One listed manifest, or a problem with one (problem != "": the manifest is unusable). */
struct vmsnap_remote_entry {
        char key[128];     /* manifests/<id>.json */
        char problem[512]; /* "" when the manifest is sound */
        struct vmsnap_remote_manifest m; /* parsed (empty when problem) */
        uint64_t size;                   /* logical bytes */
};

/* Lists every manifest of the bucket (malloc'd array; free with _entries_free). An invalid
 * manifest is an entry with a problem, not a failure. Returns 0 or -errno with d. */
int vmsnap_remote_list(struct vmsnap_remote *r, struct vmsnap_remote_entry **ret, size_t *ret_n,
                       struct vmsnap_diag *d);

void vmsnap_remote_entries_free(struct vmsnap_remote_entry *e, size_t n);

/* Resolves ref (id, name, or unique id prefix of >= 3 characters) among the sound entries.
 * Returns the index, -ENOENT, or -ENOTUNIQ (d lists the candidates). */
int vmsnap_remote_resolve(const struct vmsnap_remote_entry *e, size_t n, const char *ref,
                          struct vmsnap_diag *d);

/* Pulls the snapshot of ref from the remote into store s: every chunk checked against its
 * hash before it is written, then imported like an archive (opts may be NULL). Returns 0
 * and *ret (may be NULL), or -errno with d naming the chunk/file/rule. */
int vmsnap_remote_pull(struct vmsnap_remote *r, struct vmsnap_store *s, const char *ref,
                       const struct vmsnap_import_opts *opts, struct vmsnap_snapshot *ret,
                       struct vmsnap_remote_stats *ret_stats, struct vmsnap_diag *d);

/* Prepares a lazy restore of ref in dir (must not exist; made 0700): every file fetched
 * and verified except the memory diff files (memfile.<uuid>), which are created sparse at
 * their sizes; the manifest is written as dir/remote-manifest.json. Nothing is imported:
 * `vmsnap uffd-serve dir --remote-lazy` fetches the memory on fault (docs/remote.md
 * "Lazy restore"). Returns 0 and *ret_stats (may be NULL), or -errno with d. */
int vmsnap_remote_pull_lazy(struct vmsnap_remote *r, struct vmsnap_store *s, const char *ref,
                            const char *dir, struct vmsnap_remote_stats *ret_stats,
                            struct vmsnap_diag *d);

/* True when a manifest path is a memory diff file (memfile.<uuid>): what a lazy restore
 * fetches on fault. */
bool vmsnap_remote_is_memory_file(const char *path);

/* GETs chunk sha256 of len bytes into buf and checks its length and SHA-256; what names
 * the file and offset for messages. Returns 0, or -EBADMSG/-errno with d naming
 * <endpoint>/<bucket>/chunks/<sha256>. */
int vmsnap_remote_fetch_chunk(struct vmsnap_remote *r, const uint8_t sha256[32], size_t len,
                              void *buf, const char *what, struct vmsnap_diag *d);

/* GETs n (<= VMSNAP_REMOTE_PARALLEL) chunks at once into bufs[i], each checked like
 * vmsnap_remote_fetch_chunk (whats[i] names it). Returns 0 when every chunk is sound, else
 * the first failure with d naming its chunk. */
int vmsnap_remote_fetch_chunks(struct vmsnap_remote *r, size_t n, const uint8_t *const *shas,
                               const size_t *lens, uint8_t *const *bufs,
                               const char *const *whats, struct vmsnap_diag *d);

#define VMSNAP_REMOTE_RM_FORCE 1u

/* Removes the manifest of ref; refuses (-EBUSY, naming them) while other manifests name it
 * as parent or template, unless forced. Chunks stay for GC. Returns 0 or -errno. */
int vmsnap_remote_rm(struct vmsnap_remote *r, const char *ref, unsigned flags,
                     char ret_id[VMSNAP_ID_LEN + 1], struct vmsnap_diag *d);

struct vmsnap_remote_gc_result {
        uint64_t chunks_seen, chunks_referenced, chunks_removed, bytes_removed;
        uint64_t chunks_young; /* unreferenced but within the grace period */
};

/* Deletes chunks no manifest references that are older than grace seconds (< 0: 3600);
 * nothing when any manifest is unreadable (-EBADMSG). dry_run only counts. Returns 0 or
 * -errno with d. */
int vmsnap_remote_gc(struct vmsnap_remote *r, int64_t grace, bool dry_run,
                     struct vmsnap_remote_gc_result *ret, struct vmsnap_diag *d);

/* Lowercase hex of a SHA-256 (65 bytes with the NUL). */
void vmsnap_remote_hex(const uint8_t sha256[32], char out[65]);

#endif
